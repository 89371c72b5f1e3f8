//! CPU time and memory of a process tree, read from /proc.
//!
//! CPU is `utime + stime` (fields 14 and 15 of `/proc/<pid>/stat`, all threads included) in
//! clock ticks. Memory, two ways:
//! - peak RSS: `VmHWM` of `/proc/<pid>/status`, summed. Shared mappings (the forwarder's
//!   rings in /dev/shm) count in every process that touched them, and every page the process
//!   ever had resident counts, even one given back since.
//! - peak PSS: `Pss` of `/proc/<pid>/smaps_rollup` (each shared page divided among the
//!   processes that map it, so a ring counts once), summed over the tree, sampled by a
//!   [`MemorySampler`] every 50 ms; the peak of the sums.
//!
//! The sampler also records the peak of the bytes allocated to the files of a directory (the
//! forwarder's rings in /dev/shm: RAM whether or not a process maps those pages right now).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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

/// When `pid` started (field 22 of `/proc/<pid>/stat`, clock ticks after boot), or None when
/// it is gone: with the pid, it names one process (a pid can be reused once its process died).
pub fn start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    // after ')': [0]=state (field 3) ... [19]=starttime (field 22)
    after.split_whitespace().nth(19)?.parse().ok()
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

/// A `kB` field (`VmHWM:`, `Pss:`, ...) of a /proc file such as `/proc/<pid>/status`, in
/// bytes.
fn kb_field(path: &str, field: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
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
    pids.iter()
        .filter_map(|&p| kb_field(&format!("/proc/{p}/status"), "VmHWM:"))
        .sum()
}

/// Sum of PSS (proportional set size) over `pids`, in bytes, now.
pub fn pss(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|&p| kb_field(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
        .sum()
}

/// Bytes allocated to the files under `dir` (blocks, not sizes), now.
pub fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Peaks, from a [`MemorySampler`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryPeaks {
    /// Largest Σ Pss of the tree seen.
    pub pss: u64,
    /// Largest allocation of the watched directory seen (0 without one).
    pub shm: u64,
}

/// Samples Σ Pss of a process tree (and a directory's allocation) every 50 ms until stopped,
/// the first time 50 ms after the start.
pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<MemoryPeaks>>,
}

impl MemorySampler {
    pub fn start(pids: Vec<i32>, shm_dir: Option<PathBuf>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = MemoryPeaks::default();
            loop {
                // First sample 50 ms into the load, so the peaks are the load's.
                std::thread::sleep(Duration::from_millis(50));
                peaks.pss = peaks.pss.max(pss(&pids));
                if let Some(d) = &shm_dir {
                    peaks.shm = peaks.shm.max(allocated_bytes(d));
                }
                if flag.load(Ordering::Relaxed) {
                    return peaks;
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Takes a last sample and returns the peaks.
    pub fn finish(mut self) -> MemoryPeaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_process_has_cpu_and_memory() {
        let me = std::process::id() as i32;
        assert!(super::stat(me).is_some());
        assert!(super::peak_rss(&[me]) > 0);
        assert!(super::tree(me).contains(&me));
        assert!(super::pss(&[me]) > 0);
        let peaks = super::MemorySampler::start(vec![me], None).finish();
        assert!(peaks.pss > 0);
    }
}
