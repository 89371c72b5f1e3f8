//! Running the workers as an unprivileged user (`--user NAME` / `RUN_AS_USER`).
//!
//! Started as root with a user named, the supervisor stays root (it holds the bound ports
//! and restarts workers on them) and:
//! - gives its two top folders (the spool folder and `SHM_DIR`) to the user, creating them
//!   when missing. It changes the owner of nothing else: a spool folder that still holds
//!   files of another owner (a previous run as root) stops start-up and `check` with the
//!   path and the `chown -R` that fixes it, because following a tree the user could have
//!   changed (links planted in it) as root would give the user root's files;
//! - does its own file work (instance folder, rings, doorbell, disk budget, configuration,
//!   the stop-time save) with the user's effective uid and gid and no supplementary group
//!   ([`RunAs::as_user`]), so every private file is created by, owned by and open only to
//!   that user (0600 files, 0700 folders), and the ownership checks of
//!   `queue::shared_file` hold for supervisor and workers alike;
//! - starts every worker with the user's uid and primary gid (`CommandExt::uid` / `gid`).
//!   std clears the supplementary groups (`setgroups(0)`) in the child before `setuid`
//!   when the real uid is 0 and no groups were given, and fails the spawn if that fails.
//!
//! `check` and start-up verify, as the user, that it can read the TLS key pairs and the
//! uplink CA file and reach the spool folder; each refusal names the path and the fix.
//! Without the setting nothing changes: every process keeps the user it was started as.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::unistd::{getegid, geteuid, getgroups, setegid, seteuid, setgroups, Gid, Uid, User};
use sekoia_shared::config::Problem;

/// The setting as operators name it in problems.
pub const SETTING: &str = "--user / RUN_AS_USER";
/// Offending entries named in a problem before "and N more".
const NAMED_OFFENDERS: usize = 3;

/// The user the workers run as, when it differs from the user the forwarder started as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

impl RunAs {
    /// Reads the setting. `Ok(None)`: unset, or already running as that user (nothing to
    /// switch). A user that does not exist, or a switch this process may not make (it is not
    /// root), is a configuration problem.
    pub fn resolve(name: Option<&str>) -> Result<Option<Self>, Problem> {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let user = match User::from_name(name) {
            Ok(Some(user)) => user,
            Ok(None) => {
                return Err(Problem::setting(
                    SETTING,
                    format!("there is no user named \"{name}\" on this machine"),
                    format!("create it (`useradd --system --no-create-home {name}`) or name an existing user; leave RUN_AS_USER unset to keep the user the forwarder starts as"),
                ))
            }
            Err(e) => {
                return Err(Problem::setting(
                    SETTING,
                    format!("cannot look up user \"{name}\": {e}"),
                    "check the user database (/etc/passwd, NSS)",
                ))
            }
        };
        let euid = geteuid();
        if user.uid == euid {
            return Ok(None);
        }
        if !euid.is_root() {
            return Err(Problem::setting(
                SETTING,
                format!("the forwarder runs as uid {euid} and only root can switch its workers to \"{name}\" (uid {})", user.uid),
                format!("start it as root (it binds the ports, then runs its workers as {name}), or as {name} itself, or leave RUN_AS_USER unset"),
            ));
        }
        Ok(Some(Self {
            name: name.to_string(),
            uid: user.uid,
            gid: user.gid,
        }))
    }

    /// Runs `f` with the user's effective uid and gid and no supplementary group, then
    /// returns to the ids this process had. Every thread switches (glibc's set*id apply to
    /// the whole process).
    pub fn as_user<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let (euid, egid) = (geteuid(), getegid());
        let groups = getgroups().context("cannot read the supplementary groups")?;
        setgroups(&[]).context("cannot clear the supplementary groups")?;
        setegid(self.gid).with_context(|| format!("cannot switch to group {}", self.gid))?;
        seteuid(self.uid).with_context(|| format!("cannot switch to user {}", self.name))?;
        let result = f();
        let back = seteuid(euid)
            .and_then(|()| setegid(egid))
            .and_then(|()| setgroups(&groups));
        if let Err(e) = back {
            bail!(
                "cannot return to uid {euid} after working as {}: {e}",
                self.name
            );
        }
        result
    }

    /// Gives the top folder `dir` to the user (creating it, and its missing parents, when
    /// needed). `dir` itself is never followed if it is a link; only a folder owned by root
    /// or already by the user is accepted.
    pub fn give_folder(&self, dir: &Path, setting: &str) -> Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} ({setting})", dir.display()))?;
        let folder = open_folder_nofollow(dir)
            .with_context(|| format!("cannot open {} ({setting})", dir.display()))?;
        let meta = folder
            .metadata()
            .with_context(|| format!("cannot stat {}", dir.display()))?;
        let owner = meta.uid();
        if owner == self.uid.as_raw() {
            return Ok(());
        }
        if owner != 0 {
            bail!(
                "{} ({setting}) is owned by uid {owner}, neither root nor {} (uid {}); fix: `chown {}: {}` or choose another folder",
                dir.display(), self.name, self.uid, self.name, dir.display()
            );
        }
        std::os::unix::fs::fchown(&folder, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
            .with_context(|| format!("cannot give {} to {}", dir.display(), self.name))?;
        // A folder of root's may be open to others; the user's private folder is 0700.
        folder
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
        tracing::info!(folder = %dir.display(), user = %self.name, "gave the folder to the workers' user");
        Ok(())
    }

    /// Problems with the spool folder for this user: unreachable, or holding entries the
    /// user does not own (the folder itself may still be root's: start-up gives it).
    pub fn spool_problems(&self, spool: &Path) -> Vec<Problem> {
        let mut problems = Vec::new();
        // Looked up as the user: "not found" means every existing folder on the way was
        // searchable (start-up creates the rest and gives it to the user); "permission
        // denied" means one was not. Nothing is created (`check` changes nothing on disk).
        let reach = self.as_user(|| match std::fs::metadata(spool) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(anyhow::Error::from(e)).with_context(|| format!("{}", spool.display()))
            }
            _ => Ok(()),
        });
        if let Err(e) = reach {
            problems.push(Problem::setting(
                "--spool-dir / SPOOL_DIR",
                format!("user {} cannot reach the spool folder {}: {e:#}", self.name, spool.display()),
                format!("give {} search permission (x) on every parent folder, or choose a spool folder it can reach", self.name),
            ));
        }
        let mut foreign = Vec::new();
        let mut count = 0;
        if spool.is_dir() {
            foreign_entries(spool, self.uid.as_raw(), &mut foreign, &mut count);
        }
        if !foreign.is_empty() {
            let more = count.saturating_sub(foreign.len());
            problems.push(Problem::setting(
                "--spool-dir / SPOOL_DIR",
                format!(
                    "{count} entries in {} are not owned by {} (for example {}{}), so its workers could not use them",
                    spool.display(),
                    self.name,
                    foreign.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                    if more > 0 { format!(", and {more} more") } else { String::new() },
                ),
                format!("`chown -R {}: {}` (left by a run as another user), then start again", self.name, spool.display()),
            ));
        }
        problems
    }

    /// Why the user cannot open `path` for reading (a TLS key pair, the CA file), if it cannot.
    pub fn unreadable(&self, path: &Path) -> Option<String> {
        let opened = self.as_user(|| File::open(path).map_err(anyhow::Error::from));
        let e = opened.err()?;
        Some(format!(
            "user {} cannot read {}: {e:#}",
            self.name,
            path.display()
        ))
    }

    /// How to make `path` readable by the user.
    pub fn read_fix(&self, path: &Path) -> String {
        format!(
            "let {} read it (for a key: `chown {}: {}`, keeping it 0600) and search (x) every parent folder",
            self.name, self.name, path.display()
        )
    }
}

fn open_folder_nofollow(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

/// Collects (up to [`NAMED_OFFENDERS`]) and counts the entries under `dir` not owned by
/// `uid`. Reads only: links are reported, never followed.
fn foreign_entries(dir: &Path, uid: u32, found: &mut Vec<PathBuf>, count: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != uid {
            *count += 1;
            if found.len() < NAMED_OFFENDERS {
                found.push(path.clone());
            }
        }
        if meta.is_dir() {
            foreign_entries(&path, uid, found, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_setting_keeps_the_current_user() {
        assert_eq!(RunAs::resolve(None).ok(), Some(None));
        assert_eq!(RunAs::resolve(Some("")).ok(), Some(None));
    }

    #[test]
    fn unknown_user_is_a_problem_naming_it_and_the_fix() {
        let p = RunAs::resolve(Some("no-such-user-sekoia")).expect_err("unknown user");
        assert!(
            p.what.contains("no user named \"no-such-user-sekoia\""),
            "{}",
            p.what
        );
        assert!(p.fix.contains("useradd"), "{}", p.fix);
    }

    #[test]
    fn naming_the_current_user_switches_nothing() {
        let me = User::from_uid(geteuid())
            .ok()
            .flatten()
            .expect("current user in passwd");
        assert_eq!(RunAs::resolve(Some(&me.name)).ok(), Some(None));
    }
}
