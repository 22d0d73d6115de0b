//! Paced runs: one call in flight, as an agent makes them. Each call is sent
//! only after the previous answer has been read, decoded and its content
//! extracted and checked, then an optional think time passes. Reports what
//! one call costs the server (CPU from `/proc`, divided by calls), what the
//! client waited (p50/p99), what the answer weighs against the raw values,
//! and, when the database file is given, what SQLite alone spends stepping
//! through the same SQL in this process. Over the whole run: the server's
//! peak RSS and the time from start to the first answer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::load::{connect, request};
use crate::sqlite_cost::{self, SqliteCost};
use crate::stats::{ms, percentile};
use crate::workload::{self, Workload};
use crate::{procfs, LoadError, Target, ToolSpec};

/// What a paced run does.
#[derive(Debug, Clone)]
pub struct PacedPlan {
    pub workloads: Vec<Workload>,
    /// Rows in each benchmark table.
    pub rows: u64,
    /// Unmeasured calls before each workload.
    pub warmup: u64,
    /// Measured calls of each workload.
    pub calls: u64,
    /// Pause after each answer is handled, before the next call.
    pub think: Duration,
    /// The benchmark file, to measure SQLite's own cost on it.
    pub db: Option<PathBuf>,
}

/// What one workload measured.
#[derive(Debug, Clone, Serialize)]
pub struct PacedWorkload {
    pub workload: String,
    pub calls: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Server CPU (user + system) per call, in milliseconds, its worker
    /// processes' included; None without a pid.
    pub server_cpu_ms_per_call: Option<f64>,
    /// The same for the server's own process alone, its workers left out.
    pub server_process_cpu_ms_per_call: Option<f64>,
    /// The answer's content as the client reads it (text and structured content).
    pub content_bytes_per_call: f64,
    /// The tool result as JSON, about what crossed the transport.
    pub result_json_bytes_per_call: f64,
    /// SQLite alone, same SQL and calls, in this process (with `db`).
    pub sqlite_cpu_ms_per_call: Option<f64>,
    pub sqlite_rows_per_call: Option<f64>,
    pub raw_value_bytes_per_call: Option<f64>,
    /// Server CPU per call over SQLite's CPU per call.
    pub server_over_sqlite_cpu: Option<f64>,
    /// Content bytes over raw value bytes.
    pub content_over_raw_bytes: Option<f64>,
}

/// What a whole paced run measured.
#[derive(Debug, Clone, Serialize)]
pub struct PacedReport {
    pub transport: &'static str,
    pub think_ms: f64,
    /// From starting the server (stdio) or connecting (HTTP) to the first
    /// verified tools/call answer.
    pub first_answer_ms: f64,
    /// The server's peak RSS (VmHWM) at the end of the whole run, in MiB.
    pub server_peak_rss_mib: Option<f64>,
    pub workloads: Vec<PacedWorkload>,
}

impl std::fmt::Display for PacedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        writeln!(
            f,
            "paced over {}, one call in flight, think {:.1} ms; first answer after {:.1} ms; server peak RSS {} MiB",
            self.transport,
            self.think_ms,
            self.first_answer_ms,
            opt(self.server_peak_rss_mib, 1)
        )?;
        writeln!(
            f,
            "{:<11} {:>6} {:>9} {:>9} {:>13} {:>13} {:>8} {:>11} {:>11} {:>8}",
            "workload",
            "calls",
            "p50 ms",
            "p99 ms",
            "server CPU ms",
            "SQLite CPU ms",
            "CPU x",
            "answer B",
            "raw B",
            "bytes x"
        )?;
        for w in &self.workloads {
            writeln!(
                f,
                "{:<11} {:>6} {:>9.3} {:>9.3} {:>13} {:>13} {:>8} {:>11.0} {:>11} {:>8}",
                w.workload,
                w.calls,
                w.p50_ms,
                w.p99_ms,
                opt(w.server_cpu_ms_per_call, 4),
                opt(w.sqlite_cpu_ms_per_call, 4),
                opt(w.server_over_sqlite_cpu, 2),
                w.content_bytes_per_call,
                opt(w.raw_value_bytes_per_call, 0),
                opt(w.content_over_raw_bytes, 2),
            )?;
        }
        Ok(())
    }
}

/// The ratio `a / b`, when both are known and `b` is not zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// What one handled answer weighed.
struct Handled {
    content_bytes: usize,
    json_bytes: usize,
}

/// Sends call `n` of `workload`, waits for the answer, and handles it as a
/// client would: decoded (rmcp decodes the JSON-RPC frame), content
/// extracted and checked, its size taken from the result re-encoded.
async fn call_and_handle(
    session: &crate::Session,
    spec: &ToolSpec,
    workload: Workload,
    n: u64,
    rows: u64,
) -> Result<(Duration, Handled), LoadError> {
    let call = workload.call(n, rows);
    let sent = Instant::now();
    let result = session
        .peer()
        .call_tool(request(spec, call.sql.clone()))
        .await
        .map_err(|err| LoadError::Protocol(err.to_string()))?;
    let latency = sent.elapsed();
    let (content_bytes, verdict) = workload::check(&result, &call);
    verdict.map_err(|first| LoadError::WrongAnswers {
        failed: 1,
        calls: n + 1,
        first,
    })?;
    let json_bytes = serde_json::to_vec(&result).map_or(0, |json| json.len());
    Ok((
        latency,
        Handled {
            content_bytes,
            json_bytes,
        },
    ))
}

/// Runs `plan` against `target`, which this starts (stdio) or connects to (HTTP).
pub async fn run(
    target: &Target,
    spec: &ToolSpec,
    plan: &PacedPlan,
) -> Result<PacedReport, LoadError> {
    let first_workload = *plan.workloads.first().unwrap_or(&Workload::Point);
    let started = Instant::now();
    let (sessions, pid) = connect(target, 1).await?;
    let session = &sessions[0];
    call_and_handle(session, spec, first_workload, 0, plan.rows).await?;
    let first_answer_ms = ms(started.elapsed());

    let mut workloads = Vec::with_capacity(plan.workloads.len());
    for &workload in &plan.workloads {
        for n in 0..plan.warmup {
            call_and_handle(session, spec, workload, n, plan.rows).await?;
        }
        let first = plan.warmup;
        let mut latencies = Vec::with_capacity(usize::try_from(plan.calls).unwrap_or(0));
        let (mut content, mut json) = (0u64, 0u64);
        let before = pid.and_then(procfs::sample);
        for n in first..first + plan.calls {
            let (latency, handled) = call_and_handle(session, spec, workload, n, plan.rows).await?;
            latencies.push(latency);
            content += handled.content_bytes as u64;
            json += handled.json_bytes as u64;
            if !plan.think.is_zero() {
                tokio::time::sleep(plan.think).await;
            }
        }
        let after = pid.and_then(procfs::sample);
        let calls = plan.calls.max(1) as f64;
        let server_cpu = match (before, after) {
            (Some(b), Some(a)) => Some((a.cpu_seconds - b.cpu_seconds) * 1000.0 / calls),
            _ => None,
        };
        let process_cpu = match (before, after) {
            (Some(b), Some(a)) => Some((a.own_cpu_seconds - b.own_cpu_seconds) * 1000.0 / calls),
            _ => None,
        };
        let sqlite = match &plan.db {
            Some(path) => Some(sqlite_on_the_side(path.clone(), workload, plan, first).await?),
            None => None,
        };
        let content_per_call = content as f64 / calls;
        let total: Duration = latencies.iter().sum();
        latencies.sort_unstable();
        let sqlite_cpu = sqlite.map(|s| s.cpu_ms_per_call);
        let raw = sqlite.map(|s| s.raw_value_bytes_per_call);
        workloads.push(PacedWorkload {
            workload: workload.name(),
            calls: plan.calls,
            p50_ms: ms(percentile(&latencies, 0.50)),
            p99_ms: ms(percentile(&latencies, 0.99)),
            mean_ms: ms(total) / calls,
            server_cpu_ms_per_call: server_cpu,
            server_process_cpu_ms_per_call: process_cpu,
            content_bytes_per_call: content_per_call,
            result_json_bytes_per_call: json as f64 / calls,
            sqlite_cpu_ms_per_call: sqlite_cpu,
            sqlite_rows_per_call: sqlite.map(|s| s.rows_per_call),
            raw_value_bytes_per_call: raw,
            server_over_sqlite_cpu: ratio(server_cpu, sqlite_cpu),
            content_over_raw_bytes: ratio(Some(content_per_call), raw),
        });
    }
    let peak = pid
        .and_then(procfs::sample)
        .map(|s| s.peak_rss_bytes as f64 / (1024.0 * 1024.0));
    for session in sessions {
        let _ = session.cancel().await;
    }
    Ok(PacedReport {
        transport: match target {
            Target::Stdio { .. } => "stdio",
            Target::Http { .. } => "http",
        },
        think_ms: ms(plan.think),
        first_answer_ms,
        server_peak_rss_mib: peak,
        workloads,
    })
}

/// SQLite's own cost for the measured calls, on a blocking thread.
async fn sqlite_on_the_side(
    path: PathBuf,
    workload: Workload,
    plan: &PacedPlan,
    first: u64,
) -> Result<SqliteCost, LoadError> {
    let (rows, calls) = (plan.rows, plan.calls);
    tokio::task::spawn_blocking(move || {
        sqlite_cost::measure(&path, workload, rows, first, calls)
            .map_err(|err| LoadError::Sqlite(format!("{}: {err}", path.display())))
    })
    .await
    .map_err(|err| LoadError::Protocol(err.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_needs_both_sides_and_a_nonzero_divisor() {
        assert_eq!(ratio(Some(3.0), Some(1.5)), Some(2.0));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
    }
}
