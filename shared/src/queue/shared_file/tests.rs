use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn private_root() -> (tempfile::TempDir, PrivateDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = PrivateDir::create(&tmp.path().join("root")).unwrap();
    (tmp, dir)
}

#[test]
fn creates_folders_0700_and_files_0600() {
    let (_tmp, root) = private_root();
    assert_eq!(mode(root.path()), 0o700);
    let sub = root.subdir("journal-tcp-1", Create::IfMissing).unwrap();
    assert_eq!(mode(sub.path()), 0o700);
    sub.file("state", Create::IfMissing).unwrap();
    assert_eq!(mode(&sub.join("state")), 0o600);
    sub.write_atomically("checkpoint", b"abc").unwrap();
    assert_eq!(mode(&sub.join("checkpoint")), 0o600);
    assert_eq!(std::fs::read(sub.join("checkpoint")).unwrap(), b"abc");
    assert!(!sub.join("checkpoint.tmp").exists());
}

#[test]
fn tightens_our_own_files_and_folders_that_others_can_only_read() {
    let (_tmp, root) = private_root();
    let file = root.join("config.json");
    std::fs::write(&file, b"{}").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sub = root.join("saved-tcp-1");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    root.file("config.json", Create::No).unwrap();
    root.subdir("saved-tcp-1", Create::No).unwrap();
    assert_eq!((mode(&file), mode(&sub)), (0o600, 0o700));
}

#[test]
fn a_planted_symlink_is_refused_and_its_target_untouched() {
    let (tmp, root) = private_root();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, root.join("intake-tcp-1.ring")).unwrap();
    let err = root
        .file("intake-tcp-1.ring", Create::IfMissing)
        .unwrap_err();
    assert!(matches!(err, SharedFileError::Symlink { .. }), "{err}");
    let err = open_for_creation(&root.join("intake-tcp-1.ring")).unwrap_err();
    assert!(matches!(err, SharedFileError::Symlink { .. }), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("journal-tcp-1")).unwrap();
    let err = root.subdir("journal-tcp-1", Create::IfMissing).unwrap_err();
    assert!(matches!(err, SharedFileError::Symlink { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn a_world_writable_folder_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("shm");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = PrivateDir::create(&open).unwrap_err();
    assert!(
        matches!(err, SharedFileError::WritableByOthers { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod go-w"), "{err}");
    let err = open_private_file(&open.join("config.json"), Create::IfMissing).unwrap_err();
    assert!(
        matches!(err, SharedFileError::WritableByOthers { .. }),
        "{err}"
    );
    assert!(!open.join("config.json").exists());
}

#[test]
fn a_folder_owned_by_another_user_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = if geteuid().is_root() {
        let dir = tmp.path().join("foreign");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(54321), Some(54321)).unwrap();
        dir
    } else {
        // Not root: a folder of root's stands for another user's.
        PathBuf::from("/")
    };
    let err = PrivateDir::create(&foreign).unwrap_err();
    assert!(matches!(err, SharedFileError::ForeignOwner { .. }), "{err}");
    assert!(err.to_string().contains("chown"), "{err}");
}

#[test]
fn a_fifo_or_a_hard_link_is_refused_without_blocking() {
    let (tmp, root) = private_root();
    nix::unistd::mkfifo(&root.join("doorbell"), Mode::from_bits_truncate(0o600)).unwrap();
    let err = root.file("doorbell", Create::IfMissing).unwrap_err();
    assert!(matches!(err, SharedFileError::WrongType { .. }), "{err}");

    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"x").unwrap();
    std::fs::hard_link(&outside, root.join("disk.budget")).unwrap();
    let err = root.file("disk.budget", Create::IfMissing).unwrap_err();
    assert!(matches!(err, SharedFileError::HardLinked { .. }), "{err}");
}

#[test]
fn names_that_leave_the_folder_are_refused() {
    let (_tmp, root) = private_root();
    for name in ["", ".", "..", "../x", "a/b"] {
        let err = root.file(name, Create::IfMissing).unwrap_err();
        assert!(
            matches!(err, SharedFileError::BadName { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_shared_page_maps_atomic_words_and_its_magic() {
    let (_tmp, root) = private_root();
    let path = root.join("page");
    let (file, _lock, len) = open_for_creation(&path).unwrap();
    assert_eq!(len, 0);
    file.set_len(4096).unwrap();
    let page = SharedPage::map(&file, 4096, &path).unwrap();
    page.write_magic(*b"SKFTEST\0");
    page.u64_at(64).store(7, Ordering::Relaxed);
    let again = SharedPage::map(&file, 4096, &path).unwrap();
    assert_eq!(again.magic(), *b"SKFTEST\0");
    assert_eq!(again.u64_at(64).load(Ordering::Relaxed), 7);
    assert_eq!(&std::fs::read(&path).unwrap()[..8], b"SKFTEST\0");
}
