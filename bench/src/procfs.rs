//! What the server process costs, read from `/proc` with the `procfs` crate
//! (which asks the system for its clock-tick rate instead of assuming 100):
//! CPU time, peak and current resident memory, open file descriptors, of
//! the process and the worker processes it runs (a server that runs its
//! statements in child processes is charged for them).

use procfs::process::Process;

/// A reading of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, in seconds, the children's included.
    pub cpu_seconds: f64,
    /// User plus system CPU time of the process alone, in seconds: what
    /// its worker processes add is `cpu_seconds` less this.
    pub own_cpu_seconds: f64,
    /// Peak resident set size (VmHWM), in bytes.
    pub peak_rss_bytes: u64,
    /// Current resident set size (VmRSS), in bytes.
    pub rss_bytes: u64,
    /// Open descriptors, the children's included.
    pub open_fds: u64,
    /// The process's own open descriptors.
    pub own_fds: u64,
    /// Live children (a server's worker processes).
    pub children: u64,
    /// The most descriptors any one child holds.
    pub max_child_fds: u64,
}

/// Reads `/proc/<pid>` and its children's; `None` when the process is gone
/// or not readable. CPU counts the children, live (read directly) and
/// reaped (through the process's cutime and cstime); memory adds each
/// child's proportional set size (its code pages are the parent's, counted
/// once); open descriptors add the children's.
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    let status = process.status().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let own_ticks = |stat: &procfs::process::Stat| stat.utime as f64 + stat.stime as f64;
    let cpu_ticks =
        |stat: &procfs::process::Stat| own_ticks(stat) + stat.cutime as f64 + stat.cstime as f64;
    let mut sample = ProcessSample {
        cpu_seconds: cpu_ticks(&stat) / ticks,
        own_cpu_seconds: own_ticks(&stat) / ticks,
        // status reports these in KiB.
        peak_rss_bytes: status.vmhwm.unwrap_or(0) * 1024,
        rss_bytes: status.vmrss.unwrap_or(0) * 1024,
        open_fds: process.fd_count().map_or(0, |n| n as u64),
        ..ProcessSample::default()
    };
    sample.own_fds = sample.open_fds;
    for child in children(pid) {
        let Ok(process) = Process::new(child as i32) else {
            continue;
        };
        if let Ok(stat) = process.stat() {
            sample.cpu_seconds += cpu_ticks(&stat) / ticks;
        }
        let pss = proportional_set_bytes(child);
        sample.rss_bytes += pss;
        sample.peak_rss_bytes += pss;
        let fds = process.fd_count().map_or(0, |n| n as u64);
        sample.open_fds += fds;
        sample.children += 1;
        sample.max_child_fds = sample.max_child_fds.max(fds);
    }
    Some(sample)
}

/// The children of `pid` (of any of its threads): a server's workers.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| {
            std::fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `Pss` of `/proc/<pid>/smaps_rollup`, in bytes (0 when unreadable).
pub fn proportional_set_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The whole machine's CPU time so far, in clock ticks: (busy, total),
/// from `/proc/stat`, busy being all but idle and I/O wait.
pub fn machine_ticks() -> Option<(u64, u64)> {
    use procfs::CurrentSI;
    let cpu = procfs::KernelStats::current().ok()?.total;
    let idle = cpu.idle + cpu.iowait.unwrap_or(0);
    let total = cpu.user
        + cpu.nice
        + cpu.system
        + idle
        + cpu.irq.unwrap_or(0)
        + cpu.softirq.unwrap_or(0)
        + cpu.steal.unwrap_or(0);
    Some((total - idle, total))
}

/// The share of the machine's CPU that was busy over `window`, measured
/// while this thread sleeps: what other work takes before a benchmark's
/// turn.
pub fn machine_busy_share(window: std::time::Duration) -> Option<f64> {
    let (busy0, total0) = machine_ticks()?;
    std::thread::sleep(window);
    let (busy1, total1) = machine_ticks()?;
    let total = total1.checked_sub(total0)?;
    (total > 0).then(|| busy1.saturating_sub(busy0) as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_spinning_shows_in_the_machines_busy_ticks() {
        // This thread's own CPU time, so a busy machine cannot shorten the
        // spin.
        let thread_cpu = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: writes into the timespec we own.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let (busy0, total0) = machine_ticks().expect("/proc/stat");
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - start < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let (busy1, total1) = machine_ticks().unwrap();
        // 200 ms of one core's time is 20 ticks at 100 a second; others'
        // work only adds to it.
        assert!(busy1 - busy0 >= 10, "{busy0} -> {busy1}");
        assert!(total1 - total0 >= busy1 - busy0);
        let share = machine_busy_share(std::time::Duration::from_millis(100)).unwrap();
        assert!((0.0..=1.0).contains(&share), "{share}");
    }

    #[test]
    fn this_process_has_used_cpu_and_memory() {
        // Burn a little CPU so the tick counter has moved.
        let mut x = 0u64;
        // (`black_box` in the loop: an optimized build would otherwise
        // fold it away.)
        for i in 0..50_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
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
    fn a_childs_cpu_and_descriptors_are_counted_with_its_parents() {
        let before = sample(std::process::id()).unwrap();
        // A child that burns CPU for a while, then sleeps, still alive.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let during = sample(std::process::id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            during.cpu_seconds >= before.cpu_seconds + 0.05,
            "{before:?} then {during:?}"
        );
        // The child's CPU is not this process's own (other tests may burn
        // some of that meanwhile): what the children add holds it.
        let children = (during.cpu_seconds - during.own_cpu_seconds)
            - (before.cpu_seconds - before.own_cpu_seconds);
        assert!(children >= 0.05, "{before:?} then {during:?}");
        assert!(
            during.open_fds > before.open_fds,
            "{before:?} then {during:?}"
        );
    }

    #[test]
    fn a_process_that_does_not_exist_reads_as_none() {
        // pid_max is at most 2^22 on Linux.
        assert_eq!(sample(u32::MAX / 2), None);
    }
}
