//! What the server process costs, read from `/proc` with the `procfs` crate
//! (which asks the system for its clock-tick rate instead of assuming 100):
//! CPU time, peak and current resident memory, open file descriptors.

use procfs::process::Process;

/// A reading of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM), in bytes.
    pub peak_rss_bytes: u64,
    /// Current resident set size (VmRSS), in bytes.
    pub rss_bytes: u64,
    pub open_fds: u64,
}

/// Reads `/proc/<pid>`; `None` when the process is gone or not readable.
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    let status = process.status().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    Some(ProcessSample {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        // status reports these in KiB.
        peak_rss_bytes: status.vmhwm.unwrap_or(0) * 1024,
        rss_bytes: status.vmrss.unwrap_or(0) * 1024,
        open_fds: process.fd_count().map_or(0, |n| n as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_and_memory() {
        // Burn a little CPU so the tick counter has moved.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let me = sample(std::process::id()).expect("our own /proc entry");
        assert!(me.cpu_seconds > 0.0, "{me:?}");
        assert!(
            me.rss_bytes > 0 && me.peak_rss_bytes >= me.rss_bytes,
            "{me:?}"
        );
        assert!(me.open_fds >= 3, "{me:?}");
    }

    #[test]
    fn a_process_that_does_not_exist_reads_as_none() {
        // pid_max is at most 2^22 on Linux.
        assert_eq!(sample(u32::MAX / 2), None);
    }
}
