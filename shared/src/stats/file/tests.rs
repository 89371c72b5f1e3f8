use super::*;
use chrono::TimeZone;

fn lines(n: usize, len: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:0len$}")).collect()
}

#[test]
fn appends_stamped_lines_and_creates_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/stats.log");
    let mut f = StatsFile::new(&path, ROTATE_AT);
    f.append("T", &["{ \"a\": 1 }".to_string()]).unwrap();
    f.append("U", &["x".to_string(), "y".to_string()]).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "T: { \"a\": 1 }\nU: x\nU: y\n"
    );
    let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
}

#[test]
fn rotates_at_the_size_limit_and_keeps_three_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.log");
    // Each append is 3 lines of "T: " + 7 bytes + "\n" = 33 bytes; 70 bytes hold two.
    let mut f = StatsFile::new(&path, 70);
    for round in 0..7 {
        f.append(&format!("{round}"), &lines(3, 7)).unwrap();
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let first_stamp = |p: &Path| read(p).chars().next().unwrap();
    assert_eq!(read(&path).len(), 33, "round 6 alone");
    assert_eq!(first_stamp(&path), '6');
    assert_eq!(first_stamp(&numbered(&path, 1)), '4');
    assert_eq!(read(&numbered(&path, 1)).len(), 66);
    assert_eq!(first_stamp(&numbered(&path, 2)), '2');
    assert!(!numbered(&path, 3).exists(), "only three files are kept");
    for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
        assert!(std::fs::metadata(&p).unwrap().len() <= 70);
    }
}

#[test]
fn refuses_a_symbolic_link_and_a_hard_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    let link = dir.path().join("stats.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut f = StatsFile::new(&link, ROTATE_AT);
    assert!(f.append("T", &["x".into()]).is_err());
    std::fs::remove_file(&link).unwrap();
    std::fs::hard_link(&target, &link).unwrap();
    let err = f.append("T", &["x".into()]).unwrap_err();
    assert!(err.to_string().contains("hard links"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

#[test]
fn refuses_a_fifo_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.log");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut f = StatsFile::new(&path, ROTATE_AT);
    assert!(f.append("T", &["x".into()]).is_err());
}

#[test]
fn a_loose_mode_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.log");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    StatsFile::new(&path, ROTATE_AT)
        .append("T", &["x".into()])
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn stamps_like_ctime() {
    let t = chrono::Local
        .with_ymd_and_hms(2026, 12, 1, 1, 23, 37)
        .unwrap();
    assert_eq!(ctime_stamp(t), "Tue Dec  1 01:23:37 2026");
}
