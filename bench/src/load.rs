//! Throughput runs: a chosen tool and SQL argument called by `concurrency`
//! workers as fast as answers come, every answer verified; reports calls/s,
//! latency percentiles, response bytes, and the server's CPU time per call
//! and peak RSS read from `/proc`. Also the startup measurement. Where the
//! server is ([`Target`]) and how its SQL tool is called ([`ToolSpec`]) are
//! shared by every mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::Peer;
use rmcp::RoleClient;
use serde::Serialize;

use crate::client::{self, ClientError, Handshake, Session};
use crate::procfs;
use crate::stats::{ms, percentile};
use crate::workload::{self, Workload};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot start the server command {command:?}: {reason}")]
    Spawn { command: String, reason: String },
    #[error("cannot connect to the server: {0}")]
    Connect(String),
    #[error("{failed} of {calls} answers were wrong; first: {first}")]
    WrongAnswers {
        failed: u64,
        calls: u64,
        first: String,
    },
    #[error("a call failed at the protocol level: {0}")]
    Protocol(String),
    #[error("cannot measure SQLite on the benchmark file: {0}")]
    Sqlite(String),
}

/// Where the server under test is.
#[derive(Debug, Clone)]
pub enum Target {
    /// A command line started as a child process speaking MCP on stdio.
    Stdio {
        command: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// A streamable HTTP endpoint; `pid` names the server process to measure.
    Http {
        url: String,
        token: Option<String>,
        pid: Option<u32>,
    },
}

/// How the tool under test is called.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub tool: String,
    pub sql_argument: String,
    /// Arguments sent with every call beside the SQL (eros-mcp's
    /// `database` when it serves several).
    pub extra: Vec<(String, String)>,
}

/// What one load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub concurrency: usize,
    pub calls: u64,
    pub seconds: f64,
    pub calls_per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_response_bytes: f64,
    /// Server CPU time per call, in milliseconds, its worker processes'
    /// included (None without a pid).
    pub server_cpu_ms_per_call: Option<f64>,
    /// The same for the server's own process alone, its workers left out.
    pub server_process_cpu_ms_per_call: Option<f64>,
    /// Peak resident set size of the server, in MiB.
    pub server_peak_rss_mib: Option<f64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<10} c={:<3} {:>8.0} calls/s  p50 {:>7.3} ms  p95 {:>7.3} ms  p99 {:>7.3} ms  {:>9.0} B/call",
            self.workload, self.concurrency, self.calls_per_second, self.p50_ms, self.p95_ms, self.p99_ms,
            self.mean_response_bytes
        )?;
        if let Some(cpu) = self.server_cpu_ms_per_call {
            write!(f, "  server CPU {cpu:.4} ms/call")?;
        }
        if let Some(rss) = self.server_peak_rss_mib {
            write!(f, "  peak RSS {rss:.1} MiB")?;
        }
        Ok(())
    }
}

/// eros-bench speaks 2025-11-25, the era every peer server serves.
fn handshake() -> Handshake {
    Handshake::new(
        "eros-bench",
        env!("CARGO_PKG_VERSION"),
        ProtocolVersion::V_2025_11_25,
    )
}

fn connect_error(err: ClientError) -> LoadError {
    LoadError::Connect(err.to_string())
}

/// Opens sessions: one for stdio (its calls run concurrently), `count` for HTTP.
pub async fn connect(
    target: &Target,
    count: usize,
) -> Result<(Vec<Session>, Option<u32>), LoadError> {
    match target {
        Target::Stdio { command, env } => {
            let (program, args) = command.split_first().ok_or_else(|| LoadError::Spawn {
                command: String::new(),
                reason: "empty command".into(),
            })?;
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
            let (session, pid) = client::stdio(cmd, std::process::Stdio::null(), &handshake())
                .await
                .map_err(|err| match err {
                    ClientError::Spawn(reason) => LoadError::Spawn {
                        command: command.join(" "),
                        reason: reason.to_string(),
                    },
                    other => connect_error(other),
                })?;
            Ok((vec![session], pid))
        }
        Target::Http { url, token, pid } => {
            let mut sessions = Vec::with_capacity(count);
            for _ in 0..count.max(1) {
                let session = client::http(url, token.as_deref(), &handshake())
                    .await
                    .map_err(connect_error)?;
                sessions.push(session);
            }
            Ok((sessions, *pid))
        }
    }
}

/// The tools/call request that sends `sql` to the spec's tool.
pub fn request(spec: &ToolSpec, sql: String) -> CallToolRequestParams {
    let mut arguments = serde_json::Map::new();
    arguments.insert(spec.sql_argument.clone(), serde_json::Value::String(sql));
    for (key, value) in &spec.extra {
        arguments.insert(key.clone(), serde_json::Value::String(value.clone()));
    }
    CallToolRequestParams::new(spec.tool.clone()).with_arguments(arguments)
}

/// One call and its check: (latency, bytes, verdict).
async fn one_call(
    peer: &Peer<RoleClient>,
    spec: &ToolSpec,
    workload: Workload,
    n: u64,
    rows: u64,
) -> Result<(Duration, usize, Result<(), String>), LoadError> {
    let call = workload.call(n, rows);
    let started = Instant::now();
    let result = peer
        .call_tool(request(spec, call.sql.clone()))
        .await
        .map_err(|err| LoadError::Protocol(err.to_string()))?;
    let latency = started.elapsed();
    let (bytes, verdict) = workload::check(&result, &call);
    Ok((latency, bytes, verdict))
}

/// One measurement: which workload, how hard, how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub workload: Workload,
    /// Rows in the benchmark table.
    pub rows: u64,
    /// Calls in flight.
    pub concurrency: usize,
    /// Unmeasured calls first.
    pub warmup: u64,
    pub duration: Duration,
}

/// Runs `plan` and reports what it measured.
pub async fn run(
    sessions: &[Session],
    pid: Option<u32>,
    spec: &ToolSpec,
    plan: Plan,
) -> Result<Report, LoadError> {
    let Plan {
        workload,
        rows,
        concurrency,
        warmup,
        duration,
    } = plan;
    let peers: Vec<Peer<RoleClient>> = sessions.iter().map(|s| s.peer().clone()).collect();
    for n in 0..warmup {
        let peer = &peers[(n as usize) % peers.len()];
        let (_, _, verdict) = one_call(peer, spec, workload, n, rows).await?;
        verdict.map_err(|first| LoadError::WrongAnswers {
            failed: 1,
            calls: 1,
            first,
        })?;
    }
    let before = pid.and_then(procfs::sample);
    let counter = Arc::new(AtomicU64::new(warmup));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency.max(1) {
        let peer = peers[worker % peers.len()].clone();
        let spec = spec.clone();
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(16 * 1024);
            let mut bytes = 0u64;
            let mut failures = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let (latency, size, verdict) = one_call(&peer, &spec, workload, n, rows).await?;
                latencies.push(latency);
                bytes += size as u64;
                if let Err(reason) = verdict {
                    failures.push(reason);
                }
            }
            Ok::<_, LoadError>((latencies, bytes, failures))
        }));
    }
    let mut latencies = Vec::new();
    let mut bytes = 0u64;
    let mut failures = Vec::new();
    for task in tasks {
        let (l, b, f) = task
            .await
            .map_err(|err| LoadError::Protocol(err.to_string()))??;
        latencies.extend(l);
        bytes += b;
        failures.extend(f);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = pid.and_then(procfs::sample);
    let calls = latencies.len() as u64;
    if !failures.is_empty() {
        return Err(LoadError::WrongAnswers {
            failed: failures.len() as u64,
            calls,
            first: failures.swap_remove(0),
        });
    }
    latencies.sort_unstable();
    let cpu = match (before, after) {
        (Some(b), Some(a)) if calls > 0 => {
            Some((a.cpu_seconds - b.cpu_seconds) * 1000.0 / calls as f64)
        }
        _ => None,
    };
    let process_cpu = match (before, after) {
        (Some(b), Some(a)) if calls > 0 => {
            Some((a.own_cpu_seconds - b.own_cpu_seconds) * 1000.0 / calls as f64)
        }
        _ => None,
    };
    Ok(Report {
        workload: workload.name(),
        concurrency,
        calls,
        seconds,
        calls_per_second: calls as f64 / seconds,
        p50_ms: ms(percentile(&latencies, 0.50)),
        p95_ms: ms(percentile(&latencies, 0.95)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        mean_response_bytes: if calls > 0 {
            bytes as f64 / calls as f64
        } else {
            0.0
        },
        server_cpu_ms_per_call: cpu,
        server_process_cpu_ms_per_call: process_cpu,
        server_peak_rss_mib: after.map(|a| a.peak_rss_bytes as f64 / (1024.0 * 1024.0)),
    })
}

/// Milliseconds from starting the server command to the first verified
/// answer (the handshake, then `probe`), median of `runs`.
pub async fn startup_ms(
    target: &Target,
    spec: &ToolSpec,
    probe: &workload::Call,
    runs: usize,
) -> Result<f64, LoadError> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let (sessions, _) = connect(target, 1).await?;
        let result = sessions[0]
            .peer()
            .call_tool(request(spec, probe.sql.clone()))
            .await
            .map_err(|err| LoadError::Protocol(err.to_string()))?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        workload::check(&result, probe)
            .1
            .map_err(|first| LoadError::WrongAnswers {
                failed: 1,
                calls: 1,
                first,
            })?;
        for session in sessions {
            let _ = session.cancel().await;
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
