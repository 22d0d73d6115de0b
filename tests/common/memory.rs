//! How much memory the server takes: its own resident set plus the
//! proportional share of each worker process it runs (a worker's code
//! pages are the server's, counted once). Read by `eros_bench::procfs`,
//! the load generator's own reading of a server.
#![allow(dead_code)]

/// The server's memory with its workers, in bytes (0 when it is gone).
pub fn with_workers(pid: u32) -> u64 {
    eros_bench::procfs::sample(pid).map_or(0, |sample| sample.rss_bytes)
}

/// [`with_workers`] in MB.
pub fn with_workers_mb(pid: u32) -> f64 {
    with_workers(pid) as f64 / (1024.0 * 1024.0)
}
