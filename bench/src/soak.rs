//! The soak: a long mixed run (reads, writes when enabled, SQL errors,
//! timeouts, cancellations) against an eros-mcp server, comparing the
//! server's memory, file descriptors and pool counters at the start and
//! the end. Growth or a leaked connection fails the run.

use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use serde::Serialize;

use crate::{procfs, LoadError, Session, Workload};

/// Descriptors the server holds for one pooled connection (its worker's
/// socket and process handle, with room to spare).
/// Descriptors the server holds for each worker process (its socket and
/// process handle, with room to spare).
const SERVER_FDS_PER_WORKER: u64 = 4;

/// Descriptors one worker may hold: its standard streams, its socket, the
/// database, WAL and shared memory, SQLite's temporary files (11 seen).
const WORKER_FDS_MAX: u64 = 24;

const RUNAWAY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

#[derive(Debug, Default, Clone, Serialize)]
pub struct SoakReport {
    pub seconds: f64,
    pub reads: u64,
    pub writes: u64,
    pub sql_errors: u64,
    pub timeouts: u64,
    pub cancellations: u64,
    pub rss_start_mib: f64,
    pub rss_end_mib: f64,
    pub fds_start: u64,
    pub fds_end: u64,
    pub pool_start: serde_json::Value,
    pub pool_end: serde_json::Value,
    pub problems: Vec<String>,
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "soak {:.0}s: {} reads, {} writes, {} SQL errors, {} timeouts, {} cancellations",
            self.seconds,
            self.reads,
            self.writes,
            self.sql_errors,
            self.timeouts,
            self.cancellations
        )?;
        writeln!(
            f,
            "RSS {:.1} -> {:.1} MiB, open fds {} -> {}",
            self.rss_start_mib, self.rss_end_mib, self.fds_start, self.fds_end
        )?;
        writeln!(f, "pool at start: {}", self.pool_start)?;
        write!(f, "pool at end:   {}", self.pool_end)?;
        for problem in &self.problems {
            write!(f, "\nPROBLEM: {problem}")?;
        }
        Ok(())
    }
}

fn call(tool: &str, arguments: serde_json::Value) -> CallToolRequestParams {
    let arguments = match arguments {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    CallToolRequestParams::new(tool.to_string()).with_arguments(arguments)
}

async fn pool_stats(session: &Session) -> Result<serde_json::Value, LoadError> {
    let result = session
        .peer()
        .call_tool(call("pool_stats", serde_json::json!({})))
        .await
        .map_err(|e| LoadError::Protocol(e.to_string()))?;
    Ok(result.structured_content.unwrap_or_default())
}

/// Runs the soak for `duration` with `concurrency` workers on `sessions`.
pub async fn run(
    sessions: &[Session],
    pid: u32,
    rows: u64,
    concurrency: usize,
    duration: Duration,
    writes: bool,
) -> Result<SoakReport, LoadError> {
    let mut report = SoakReport {
        pool_start: pool_stats(&sessions[0]).await?,
        ..SoakReport::default()
    };
    if writes {
        let result = sessions[0]
            .peer()
            .call_tool(call(
                "execute",
                serde_json::json!({"sql": "CREATE TABLE IF NOT EXISTS soak_writes (id INTEGER PRIMARY KEY, note TEXT)"}),
            ))
            .await
            .map_err(|e| LoadError::Protocol(e.to_string()))?;
        if result.is_error == Some(true) {
            return Err(LoadError::Protocol(
                "writes are not enabled on the server (EROS_DB_READ_ONLY=false)".into(),
            ));
        }
    }
    // A warm-up minute's worth of allocations happens in the first seconds;
    // measure the start after them.
    let warm = Instant::now() + duration.mul_f64(0.1).min(Duration::from_secs(10));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency.max(1) {
        let peer = sessions[worker % sessions.len()].peer().clone();
        tasks.push(tokio::spawn(async move {
            let mut counts = [0u64; 5]; // reads, writes, sql errors, timeouts, cancellations
            let mut n = worker as u64 * 1_000_000;
            while Instant::now() < deadline {
                n += 1;
                let pick = n % 20;
                let outcome = match pick {
                    0 => {
                        // A cancellation: the call is dropped mid-flight.
                        let _ = tokio::time::timeout(
                            Duration::from_millis(20),
                            peer.call_tool(call("query", serde_json::json!({"sql": RUNAWAY}))),
                        )
                        .await;
                        4
                    }
                    1 => {
                        let result = peer
                            .call_tool(call("query", serde_json::json!({"sql": RUNAWAY})))
                            .await
                            .map_err(|e| LoadError::Protocol(e.to_string()))?;
                        if result.is_error != Some(true) {
                            return Err(LoadError::Protocol("a runaway query was not stopped".into()));
                        }
                        3
                    }
                    2 => {
                        let result = peer
                            .call_tool(call("query", serde_json::json!({"sql": "SELECT no_such_column FROM bench_items"})))
                            .await
                            .map_err(|e| LoadError::Protocol(e.to_string()))?;
                        if result.is_error != Some(true) {
                            return Err(LoadError::Protocol("a bad statement succeeded".into()));
                        }
                        2
                    }
                    3 | 4 if writes => {
                        let result = peer
                            .call_tool(call(
                                "execute",
                                serde_json::json!({"sql": "INSERT INTO soak_writes (note) VALUES (?)", "params": [format!("w{n}")]}),
                            ))
                            .await
                            .map_err(|e| LoadError::Protocol(e.to_string()))?;
                        if result.is_error == Some(true) {
                            return Err(LoadError::Protocol(format!("a write failed: {:?}", result.content)));
                        }
                        1
                    }
                    _ => {
                        let workload = if pick == 5 { Workload::Rows1000 } else { Workload::Point };
                        let planned = workload.call(n, rows);
                        let result = peer
                            .call_tool(call("query", serde_json::json!({"sql": planned.sql})))
                            .await
                            .map_err(|e| LoadError::Protocol(e.to_string()))?;
                        crate::workload::check(&result, &planned)
                            .1
                            .map_err(|first| LoadError::WrongAnswers { failed: 1, calls: 1, first })?;
                        0
                    }
                };
                counts[outcome] += 1;
            }
            Ok::<_, LoadError>(counts)
        }));
    }
    tokio::time::sleep_until(warm.into()).await;
    let start = procfs::sample(pid).unwrap_or_default();
    let started = Instant::now();
    for task in tasks {
        let counts = task
            .await
            .map_err(|e| LoadError::Protocol(e.to_string()))??;
        report.reads += counts[0];
        report.writes += counts[1];
        report.sql_errors += counts[2];
        report.timeouts += counts[3];
        report.cancellations += counts[4];
    }
    report.seconds = started.elapsed().as_secs_f64();
    // Let interrupted statements finish returning their connections, and
    // killed workers be reaped.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = procfs::sample(pid).unwrap_or_default();
    report.pool_end = pool_stats(&sessions[0]).await?;
    report.rss_start_mib = start.rss_bytes as f64 / 1048576.0;
    report.rss_end_mib = end.rss_bytes as f64 / 1048576.0;
    report.fds_start = start.open_fds;
    report.fds_end = end.open_fds;
    let stat = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    // Each pooled connection is a worker process: the server holds a few
    // descriptors for it (its socket, its process handle), the worker its
    // own (the database, WAL and shared memory, a temporary file). A pool
    // that grew under load is not a leak; the server's descriptors beyond
    // its workers' count are, and so is a worker holding more than a
    // connection ever needs. Workers are counted in /proc, at the moment
    // the descriptors are, not from the pool's statistics a call later.
    let added = end.children.saturating_sub(start.children);
    if end.own_fds > start.own_fds + 4 + SERVER_FDS_PER_WORKER * added {
        report.problems.push(format!(
            "the server's own open file descriptors grew from {} to {} ({added} more workers \
             account for at most {})",
            start.own_fds,
            end.own_fds,
            SERVER_FDS_PER_WORKER * added
        ));
    }
    if end.max_child_fds > WORKER_FDS_MAX {
        report.problems.push(format!(
            "a worker holds {} open file descriptors, more than the {WORKER_FDS_MAX} a \
             connection needs",
            end.max_child_fds
        ));
    }
    if report.rss_end_mib > report.rss_start_mib * 1.25 + 4.0 {
        report.problems.push(format!(
            "RSS grew from {:.1} to {:.1} MiB",
            report.rss_start_mib, report.rss_end_mib
        ));
    }
    if stat(&report.pool_end, "active_connections") != 0 || stat(&report.pool_end, "waiters") != 0 {
        report
            .problems
            .push("connections are still checked out after the run".into());
    }
    if stat(&report.pool_end, "total_connections") > stat(&report.pool_end, "max_connections") {
        report
            .problems
            .push("more connections open than the pool allows".into());
    }
    Ok(report)
}
