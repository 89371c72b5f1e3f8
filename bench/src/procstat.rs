//! CPU time and peak memory of a process tree, read from /proc.
//!
//! CPU is `utime + stime` (fields 14 and 15 of `/proc/<pid>/stat`, all threads included) in
//! clock ticks; peak memory is `VmHWM` of `/proc/<pid>/status`. Shared mappings (the
//! forwarder's rings in /dev/shm) count in every process that touched them.

use std::fs;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// (state, ppid, utime + stime ticks) of `pid`, or None when it is gone.
pub fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
    let after = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ')': [0]=state [1]=ppid ... [11]=utime [12]=stime
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((state, ppid, ticks))
}

/// `pid` and all its live descendants.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut all: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((state, ppid, _)) = stat(p) {
                if state != 'Z' {
                    all.push((p, ppid));
                }
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Sum of utime + stime over `pids`, in microseconds.
pub fn cpu_us(pids: &[i32]) -> u64 {
    let ticks: u64 = pids.iter().filter_map(|&p| stat(p)).map(|s| s.2).sum();
    ticks * 1_000_000 / clock_ticks()
}

/// A `kB` field of /proc/<pid>/status, in bytes.
fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Sum of VmHWM (peak resident set) over `pids`, in bytes.
pub fn peak_rss(pids: &[i32]) -> u64 {
    pids.iter().filter_map(|&p| status_kb(p, "VmHWM:")).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_process_has_cpu_and_memory() {
        let me = std::process::id() as i32;
        assert!(super::stat(me).is_some());
        assert!(super::peak_rss(&[me]) > 0);
        assert!(super::tree(me).contains(&me));
    }
}
