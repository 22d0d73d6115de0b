//! How much memory the server takes: its own resident set plus the
//! proportional share of each worker process it runs (a worker's code
//! pages are the server's, counted once).
#![allow(dead_code)]

/// The worker processes of `pid` (its children).
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

/// A `kB` field of a /proc file, in bytes (0 when absent).
fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Proportional set size of `pid` in bytes (0 when it is gone).
pub fn pss(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    field(&rollup, "Pss:")
}

/// Resident bytes of `pid` (0 when it is gone).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    field(&status, "VmRSS:")
}

/// The server's memory with its workers: its own resident set plus each
/// worker's proportional set size, in bytes.
pub fn with_workers(pid: u32) -> u64 {
    rss(pid) + children(pid).into_iter().map(pss).sum::<u64>()
}

/// [`with_workers`] in MB.
pub fn with_workers_mb(pid: u32) -> f64 {
    with_workers(pid) as f64 / (1024.0 * 1024.0)
}
