//! `resource-usage` (origin `impstats`): what the forwarder's processes use. rsyslog is one
//! process and reports its own `getrusage`; the forwarder is a supervisor and its workers, so
//! the figures are the sum over the supervisor, its live workers (read from `/proc/<pid>`)
//! and its workers that already exited (`RUSAGE_CHILDREN`):
//!
//! - `utime`, `stime`: CPU time in user and system mode, microseconds, since start;
//! - `maxrss`: the sum of each live process's peak resident set (kB; shared memory a
//!   process touched, the rings, counts in each such process);
//! - `openfiles`: file descriptors open now in those processes.

use std::path::Path;

use nix::sys::resource::{getrusage, UsageWho};

use super::impstats::StatsObject;

/// The `resource-usage` figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    pub utime_us: u64,
    pub stime_us: u64,
    pub maxrss_kb: u64,
    pub openfiles: u64,
}

impl ResourceUsage {
    /// Measures this process, the workers `pids` (live children) and the reaped ones.
    pub fn measure(pids: impl IntoIterator<Item = u32>) -> Self {
        let mut total = Self::default();
        let us = |t: nix::sys::time::TimeVal| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_usec()).unwrap_or(0)
        };
        for who in [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN] {
            if let Ok(u) = getrusage(who) {
                total.utime_us += us(u.user_time());
                total.stime_us += us(u.system_time());
            }
        }
        total.add_proc(Path::new("/proc/self"), false);
        for pid in pids {
            total.add_proc(&Path::new("/proc").join(pid.to_string()), true);
        }
        total
    }

    /// Adds what `/proc/<pid>` says; CPU time only for another process (ours came from
    /// `getrusage`). A process that just exited adds nothing.
    fn add_proc(&mut self, dir: &Path, cpu: bool) {
        if cpu {
            if let Some((user, system)) = std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|s| cpu_ticks(&s))
            {
                let per_tick = 1_000_000 / ticks_per_second();
                self.utime_us += user * per_tick;
                self.stime_us += system * per_tick;
            }
        }
        if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
            self.maxrss_kb += peak_rss_kb(&status).unwrap_or(0);
        }
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            self.openfiles += fds.count() as u64;
        }
    }

    pub fn object(&self) -> StatsObject {
        StatsObject::new("resource-usage", "impstats")
            .with("utime", self.utime_us)
            .with("stime", self.stime_us)
            .with("maxrss", self.maxrss_kb)
            .with("openfiles", self.openfiles)
    }
}

fn ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => u64::try_from(t).unwrap_or(100),
        _ => 100,
    }
}

/// `(utime, stime)` in clock ticks from `/proc/<pid>/stat` (fields 14 and 15; the command
/// name before them may hold spaces and parentheses, so fields count from the last `)`).
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// `VmHWM` (peak resident set, kB) from `/proc/<pid>/status`.
fn peak_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_after_a_command_name_with_spaces() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 10";
        assert_eq!(cpu_ticks(stat), Some((7, 3)));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_the_peak_resident_set() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\n";
        assert_eq!(peak_rss_kb(status), Some(1234));
    }

    #[test]
    fn measures_this_process() {
        let u = ResourceUsage::measure([]);
        assert!(u.maxrss_kb > 0 && u.openfiles > 0, "{u:?}");
        let o = u.object();
        let names: Vec<_> = o.fields.iter().map(|(f, _)| *f).collect();
        assert_eq!(names, ["utime", "stime", "maxrss", "openfiles"]);
    }
}
