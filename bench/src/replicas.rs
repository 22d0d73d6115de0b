//! The replication benchmark (issue 12): a primary eros-mcp under
//! `litestream replicate` to a `file://` directory, N followers
//! (`litestream restore -f`) each feeding an eros-mcp replica, all started
//! here from the binaries given. It measures how long a write acknowledged
//! by the primary's `execute` takes to become visible on each replica (a
//! steady write every `write_interval`, each stamping its time), then the
//! read throughput of one replica against all of them with paced clients
//! (one call in flight each) for a fixed duration. Last, a node dying: under
//! the same steady writes, the primary and `litestream replicate` are
//! SIGKILLed together, the database is restored from the replica with
//! `eros-mcp restore --output`, and the restored file gives the RPO (how much
//! acknowledged work was lost) and the restore time. See BENCHMARKS.md,
//! "Replication".

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rmcp::model::{CallToolRequestParams, CallToolResult, ProtocolVersion};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::client::{self, Handshake, Session};
use crate::stats::{ms, percentile};

/// What to start and how hard to drive it.
#[derive(Debug, Clone)]
pub struct ReplicasPlan {
    pub eros_mcp: PathBuf,
    pub litestream: PathBuf,
    /// Where the databases, the replica and the logs go (kept afterwards).
    pub dir: PathBuf,
    /// Read replicas (each with its follower).
    pub replicas: usize,
    /// First loopback port: the primary uses it and the next, replica N
    /// `base + 10 N` and the next.
    pub base_port: u16,
    /// Time between writes on the primary.
    pub write_interval: Duration,
    /// Writes measured.
    pub writes: u64,
    /// How often each replica is asked for the newest write it has.
    pub poll_interval: Duration,
    /// Paced read clients in each read measurement.
    pub read_clients: usize,
    /// How long each read measurement runs.
    pub read_duration: Duration,
    /// Rows of the table the reads look up.
    pub read_rows: u64,
    /// Write intervals of steady writes before the node dies (the kill
    /// lands a third of an interval later, between two writes' starts).
    pub kill_after_writes: u64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplicasError {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Client {
        what: String,
        source: client::ClientError,
    },
    #[error("{what}: {message}")]
    Call { what: String, message: String },
}

/// Lag figures of one replica, or of all together.
#[derive(Debug, Clone, Serialize)]
pub struct LagStats {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LagStats {
    fn of(mut lags: Vec<Duration>) -> Self {
        lags.sort();
        Self {
            samples: lags.len(),
            p50_ms: ms(percentile(&lags, 0.5)),
            p99_ms: ms(percentile(&lags, 0.99)),
            max_ms: ms(lags.last().copied().unwrap_or_default()),
        }
    }
}

/// One read measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ReadStats {
    pub replicas: usize,
    pub clients: usize,
    pub calls: u64,
    pub errors: u64,
    pub calls_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The node's death: what the restore from the replica holds, and how long
/// it took.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDeathStats {
    /// Writes the primary acknowledged before it was killed.
    pub acknowledged: u64,
    /// Acknowledged writes the restored database lacks.
    pub missing: u64,
    /// Writes the restore holds that were never acknowledged (committed,
    /// the answer lost with the process): not a loss.
    pub unacknowledged_present: u64,
    /// Kill time minus the acknowledgement of the newest acknowledged write
    /// the restore holds; None when it holds none of them.
    pub rpo_ms: Option<f64>,
    /// Wall time of `eros-mcp restore --output`, spawn to exit.
    pub restore_ms: f64,
    /// Size of the restored database file.
    pub restored_bytes: u64,
    /// `PRAGMA integrity_check` of the restored file ("ok" when sound).
    pub integrity: String,
}

impl fmt::Display for NodeDeathStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rpo = self
            .rpo_ms
            .map_or("none of them restored".to_string(), |ms| {
                format!("{ms:.0} ms")
            });
        write!(
            f,
            "node death (SIGKILL primary + litestream): {} acknowledged writes, {} missing from the restore ({} unacknowledged present); RPO {rpo}; restore {:.0} ms, {} bytes, integrity_check {}",
            self.acknowledged,
            self.missing,
            self.unacknowledged_present,
            self.restore_ms,
            self.restored_bytes,
            self.integrity
        )
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicasReport {
    pub replicas: usize,
    pub writes: u64,
    pub write_interval_ms: f64,
    pub poll_interval_ms: f64,
    /// From the primary's acknowledgement to the first poll that saw the
    /// write, per replica, then over all replicas.
    pub lag_per_replica: Vec<LagStats>,
    pub lag: LagStats,
    /// Reads against replica 1 alone, then spread over every replica.
    pub reads_one: ReadStats,
    pub reads_all: ReadStats,
    /// The primary's node dying, then a restore from the replica.
    pub node_death: NodeDeathStats,
}

impl fmt::Display for ReplicasReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} writes, one every {:.0} ms; replicas polled every {:.0} ms",
            self.writes, self.write_interval_ms, self.poll_interval_ms
        )?;
        for (n, lag) in self.lag_per_replica.iter().enumerate() {
            writeln!(
                f,
                "replica {}: lag p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms ({} writes)",
                n + 1,
                lag.p50_ms,
                lag.p99_ms,
                lag.max_ms,
                lag.samples
            )?;
        }
        writeln!(
            f,
            "all replicas: lag p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
            self.lag.p50_ms, self.lag.p99_ms, self.lag.max_ms
        )?;
        for reads in [&self.reads_one, &self.reads_all] {
            writeln!(
                f,
                "reads on {} replica(s), {} paced clients: {:.0} calls/s  p50 {:.2} ms  p99 {:.2} ms  ({} errors)",
                reads.replicas,
                reads.clients,
                reads.calls_per_second,
                reads.p50_ms,
                reads.p99_ms,
                reads.errors
            )?;
        }
        writeln!(f, "{}", self.node_death)
    }
}

/// The started processes, stopped (SIGTERM, then SIGKILL) newest first.
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn start(
        &mut self,
        what: &str,
        command: &mut Command,
        log: &Path,
    ) -> Result<(), ReplicasError> {
        let spawn = |source| ReplicasError::Spawn {
            what: what.to_string(),
            source,
        };
        let log = std::fs::File::create(log).map_err(spawn)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(spawn)?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        self.0.push((what.to_string(), child));
        Ok(())
    }

    /// Whether the newest process is still running.
    fn newest_runs(&mut self) -> bool {
        self.0
            .last_mut()
            .is_some_and(|(_, child)| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILLs the processes named `names` back to back, as when their
    /// machine dies (none gets to flush, sync or answer), and reaps them.
    /// Returns the moment just before the first signal.
    async fn kill_together(&mut self, names: &[&str]) -> Result<Instant, ReplicasError> {
        let mut victims = Vec::new();
        for name in names {
            let at = self
                .0
                .iter()
                .position(|(what, _)| what == name)
                .ok_or_else(|| ReplicasError::Setup(format!("no process {name} to kill")))?;
            victims.push(self.0.remove(at));
        }
        let mut pids = Vec::new();
        for (what, child) in &victims {
            let pid = child
                .id()
                .ok_or_else(|| ReplicasError::Setup(format!("{what} exited before the kill")))?;
            pids.push(pid);
        }
        let killed_at = Instant::now();
        for pid in pids {
            // SAFETY: kill(2) on a child this process started and has not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        for (_, mut child) in victims {
            let _ = child.wait().await;
        }
        Ok(killed_at)
    }

    async fn stop(&mut self) {
        while let Some((_, mut child)) = self.0.pop() {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) on a child this process started and has not reaped.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// The status of `GET path` on loopback `port`, or None when nothing answers.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await.ok()?;
    std::str::from_utf8(&head[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits until `/readyz` on `metrics_port` answers 200.
async fn wait_ready(what: &str, metrics_port: u16, within: Duration) -> Result<(), ReplicasError> {
    let deadline = Instant::now() + within;
    while http_status(metrics_port, "/readyz").await != Some(200) {
        if Instant::now() > deadline {
            return Err(ReplicasError::Setup(format!(
                "{what} not ready on :{metrics_port}/readyz after {within:?} (see its log)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// An eros-mcp command with `env`, HTTP on `port`, its sidecar on `port + 1`.
fn eros_mcp(plan: &ReplicasPlan, port: u16, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(&plan.eros_mcp);
    command
        .arg("serve")
        .current_dir(&plan.dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EROS_MCP_TRANSPORT", "http")
        .env("EROS_MCP_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("EROS_METRICS_ADDR", format!("127.0.0.1:{}", port + 1))
        // Structured rows: the benchmark reads values, not CSV.
        .env("EROS_MCP_ROW_FORMAT", "json")
        .env("EROS_DB_HEARTBEAT_INTERVAL", "1")
        .env("EROS_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command
}

fn handshake() -> Handshake {
    Handshake::new(
        "eros-bench-replicas",
        "0.1.0",
        ProtocolVersion::V_2025_11_25,
    )
}

async fn connect(url: &str) -> Result<Session, ReplicasError> {
    client::http(url, None, &handshake())
        .await
        .map_err(|source| ReplicasError::Client {
            what: format!("connect to {url}"),
            source,
        })
}

/// Calls `tool` with `sql`; a tool error is an error here.
async fn sql_call(session: &Session, tool: &str, sql: String) -> Result<CallToolResult, String> {
    let mut arguments = serde_json::Map::new();
    arguments.insert("sql".into(), serde_json::Value::String(sql));
    let result = session
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments))
        .await
        .map_err(|err| err.to_string())?;
    if result.is_error == Some(true) {
        let text: Vec<String> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        return Err(text.join(" "));
    }
    Ok(result)
}

/// The first value of the first row of a `query` answer (json row format).
fn first_value(result: &CallToolResult) -> Option<serde_json::Value> {
    result.structured_content.as_ref()?["rows"][0][0]
        .clone()
        .into()
}

fn mcp_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/mcp")
}

/// Runs the whole benchmark; every process it started is stopped before it
/// returns, whatever the outcome.
pub async fn run(plan: &ReplicasPlan) -> Result<ReplicasReport, ReplicasError> {
    if plan.replicas == 0
        || plan.writes == 0
        || plan.read_clients == 0
        || plan.kill_after_writes == 0
    {
        return Err(ReplicasError::Setup(
            "--replicas, --writes, --read-clients and --kill-after-writes must be at least 1"
                .into(),
        ));
    }
    let plan = &absolute(plan)?;
    let mut processes = Processes(Vec::new());
    let outcome = measure(plan, &mut processes).await;
    processes.stop().await;
    outcome
}

/// The plan with its binaries and directory as absolute paths: the
/// processes run in the directory, where a relative path given on the
/// command line (`target/release/eros-mcp`) means something else. A bare
/// program name is left to PATH.
fn absolute(plan: &ReplicasPlan) -> Result<ReplicasPlan, ReplicasError> {
    let resolve = |what: &str, path: &Path| {
        std::fs::canonicalize(path)
            .map_err(|err| ReplicasError::Setup(format!("{what} {}: {err}", path.display())))
    };
    let program = |what: &str, path: &PathBuf| {
        if path.components().count() > 1 {
            resolve(what, path)
        } else {
            Ok(path.clone())
        }
    };
    std::fs::create_dir_all(&plan.dir)
        .map_err(|err| ReplicasError::Setup(format!("--dir {}: {err}", plan.dir.display())))?;
    Ok(ReplicasPlan {
        eros_mcp: program("--eros-mcp", &plan.eros_mcp)?,
        litestream: program("--litestream", &plan.litestream)?,
        dir: resolve("--dir", &plan.dir)?,
        ..plan.clone()
    })
}

async fn measure(
    plan: &ReplicasPlan,
    processes: &mut Processes,
) -> Result<ReplicasReport, ReplicasError> {
    let setup = |what: &str, err: std::io::Error| ReplicasError::Setup(format!("{what}: {err}"));
    std::fs::create_dir_all(plan.dir.join("primary"))
        .map_err(|e| setup("create the directory", e))?;
    let primary_db = plan.dir.join("primary").join("bench.db");
    if primary_db.exists() {
        return Err(ReplicasError::Setup(format!(
            "{} exists: give an empty --dir",
            plan.dir.display()
        )));
    }
    let url = format!("file://{}", plan.dir.join("replica").display());
    let litestream_bin = plan.litestream.display().to_string();

    // The primary, then Litestream streaming its database.
    let port = plan.base_port;
    processes.start(
        "primary",
        &mut eros_mcp(
            plan,
            port,
            &[
                ("EROS_DB_PATH", primary_db.display().to_string()),
                ("EROS_DB_READ_ONLY", "false".into()),
                ("EROS_DB_REPLICATION", "litestream".into()),
                ("EROS_DB_REPLICA_URL", url.clone()),
                ("EROS_DB_LITESTREAM_BIN", litestream_bin),
            ],
        ),
        &plan.dir.join("primary.log"),
    )?;
    wait_ready("the primary", port + 1, Duration::from_secs(60)).await?;
    processes.start(
        "litestream replicate",
        Command::new(&plan.litestream)
            .arg("replicate")
            .arg(&primary_db)
            .arg(&url),
        &plan.dir.join("litestream.log"),
    )?;

    // The tables: the writes' stamps, and what the reads look up.
    let writer = connect(&mcp_url(port)).await?;
    let call_err = |what: &str| {
        let what = what.to_string();
        move |message| ReplicasError::Call { what, message }
    };
    sql_call(
        &writer,
        "execute",
        "CREATE TABLE bench_replication (id INTEGER PRIMARY KEY, written_at REAL NOT NULL)".into(),
    )
    .await
    .map_err(call_err("create bench_replication"))?;
    sql_call(
        &writer,
        "execute",
        "CREATE TABLE bench_reads (id INTEGER PRIMARY KEY, body TEXT NOT NULL)".into(),
    )
    .await
    .map_err(call_err("create bench_reads"))?;
    sql_call(
        &writer,
        "execute",
        "CREATE TABLE bench_rpo (id INTEGER PRIMARY KEY, written_at REAL NOT NULL)".into(),
    )
    .await
    .map_err(call_err("create bench_rpo"))?;
    sql_call(
        &writer,
        "execute",
        format!(
            "INSERT INTO bench_reads (id, body) WITH RECURSIVE n(i) AS \
             (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
             SELECT i, printf('row %d of the read benchmark', i) FROM n",
            plan.read_rows
        ),
    )
    .await
    .map_err(call_err("fill bench_reads"))?;

    // The followers and the replicas. A follower exits while the replica
    // has no snapshot yet: it is started again until it stays up.
    let mut replica_ports = Vec::new();
    for n in 1..=plan.replicas {
        let dir = plan.dir.join(format!("replica-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| setup("create a replica directory", e))?;
        let db = dir.join("bench.db");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            processes.start(
                &format!("follower {n}"),
                Command::new(&plan.litestream)
                    .args(["restore", "-f", "-o"])
                    .arg(&db)
                    .arg(&url),
                &plan.dir.join(format!("follower-{n}.log")),
            )?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            if processes.newest_runs() {
                break;
            }
            processes.0.pop();
            if Instant::now() > deadline {
                return Err(ReplicasError::Setup(format!(
                    "follower {n} cannot restore {url} (see follower-{n}.log)"
                )));
            }
        }
        let replica_port = plan.base_port + 10 * n as u16;
        processes.start(
            &format!("replica {n}"),
            &mut eros_mcp(
                plan,
                replica_port,
                &[
                    ("EROS_DB_PATH", db.display().to_string()),
                    ("EROS_DB_ROLE", "replica".into()),
                    // The bench runs and times the followers itself.
                    ("EROS_DB_REPLICA_FOLLOW", "false".into()),
                    ("EROS_DB_READ_ONLY", "true".into()),
                ],
            ),
            &plan.dir.join(format!("replica-{n}.log")),
        )?;
        replica_ports.push(replica_port);
    }
    for (n, port) in replica_ports.iter().enumerate() {
        wait_ready(
            &format!("replica {}", n + 1),
            port + 1,
            Duration::from_secs(120),
        )
        .await?;
    }

    let lag_per_replica = measure_lag(plan, &writer, &replica_ports).await?;
    let _ = writer.cancel().await;
    let lag = LagStats::of(lag_per_replica.iter().flatten().copied().collect());
    let reads_one = measure_reads(plan, &replica_ports[..1]).await?;
    let reads_all = measure_reads(plan, &replica_ports).await?;
    let node_death = measure_node_death(plan, processes, port, &primary_db, &url).await?;
    Ok(ReplicasReport {
        replicas: plan.replicas,
        writes: plan.writes,
        write_interval_ms: ms(plan.write_interval),
        poll_interval_ms: ms(plan.poll_interval),
        lag_per_replica: lag_per_replica.into_iter().map(LagStats::of).collect(),
        lag,
        reads_one,
        reads_all,
        node_death,
    })
}

/// The steady writes, and when each replica first showed each of them:
/// the lags (acknowledgement to first sight) of each replica.
async fn measure_lag(
    plan: &ReplicasPlan,
    writer: &Session,
    replica_ports: &[u16],
) -> Result<Vec<Vec<Duration>>, ReplicasError> {
    let writes = plan.writes as usize;
    // When the primary acknowledged write i (index i - 1).
    let acknowledged: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; writes]));
    let mut pollers = Vec::new();
    for port in replica_ports {
        let session = connect(&mcp_url(*port)).await?;
        let poll = plan.poll_interval;
        // Writes of the whole run plus a minute to catch up.
        let deadline =
            Instant::now() + plan.write_interval * plan.writes as u32 + Duration::from_secs(60);
        pollers.push(tokio::spawn(async move {
            let mut seen_at: Vec<Option<Instant>> = vec![None; writes];
            let mut newest = 0usize;
            while newest < writes && Instant::now() < deadline {
                let answer = sql_call(
                    &session,
                    "query",
                    "SELECT coalesce(max(id), 0) FROM bench_replication".into(),
                )
                .await;
                let now = Instant::now();
                // A replica between restores may not have the table yet.
                if let Some(max) = answer
                    .ok()
                    .and_then(|r| first_value(&r))
                    .and_then(|v| v.as_u64())
                {
                    let max = (max as usize).min(writes);
                    for slot in seen_at.iter_mut().take(max).skip(newest) {
                        *slot = Some(now);
                    }
                    newest = newest.max(max);
                }
                tokio::time::sleep(poll).await;
            }
            let _ = session.cancel().await;
            seen_at
        }));
    }

    // One write every interval, on a fixed schedule (a slow answer does not
    // push the later writes back).
    let mut ticks = tokio::time::interval(plan.write_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for id in 1..=plan.writes {
        ticks.tick().await;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        sql_call(
            writer,
            "execute",
            format!("INSERT INTO bench_replication (id, written_at) VALUES ({id}, {stamp:.6})"),
        )
        .await
        .map_err(|message| ReplicasError::Call {
            what: format!("write {id}"),
            message,
        })?;
        acknowledged.lock().unwrap()[id as usize - 1] = Some(Instant::now());
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut per_replica = Vec::new();
    for (n, poller) in pollers.into_iter().enumerate() {
        let seen_at = poller
            .await
            .map_err(|err| ReplicasError::Setup(format!("replica {} poller: {err}", n + 1)))?;
        let missing = seen_at.iter().filter(|s| s.is_none()).count();
        if missing > 0 {
            return Err(ReplicasError::Setup(format!(
                "replica {} never showed {missing} of the {writes} writes (see its follower's log)",
                n + 1
            )));
        }
        per_replica.push(
            seen_at
                .iter()
                .zip(&acknowledged)
                .filter_map(|(seen, acked)| {
                    Some(seen.as_ref()?.saturating_duration_since((*acked)?))
                })
                .collect(),
        );
    }
    Ok(per_replica)
}

/// Paced clients (one call in flight each) spread round-robin over the
/// replicas on `ports`, for the plan's read duration.
async fn measure_reads(plan: &ReplicasPlan, ports: &[u16]) -> Result<ReadStats, ReplicasError> {
    let mut sessions = Vec::new();
    for client in 0..plan.read_clients {
        sessions.push(connect(&mcp_url(ports[client % ports.len()])).await?);
    }
    let started = Instant::now();
    let until = started + plan.read_duration;
    let rows = plan.read_rows.max(1);
    let mut tasks = Vec::new();
    for (client, session) in sessions.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = client as u64;
            while Instant::now() < until {
                n += 7919;
                let id = n % rows + 1;
                let call_started = Instant::now();
                match sql_call(
                    &session,
                    "query",
                    format!("SELECT body FROM bench_reads WHERE id = {id}"),
                )
                .await
                {
                    Ok(result) if first_value(&result).is_some_and(|v| v.is_string()) => {
                        latencies.push(call_started.elapsed())
                    }
                    _ => errors += 1,
                }
            }
            let _ = session.cancel().await;
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut l, e) = task
            .await
            .map_err(|err| ReplicasError::Setup(format!("read client: {err}")))?;
        latencies.append(&mut l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok(ReadStats {
        replicas: ports.len(),
        clients: plan.read_clients,
        calls: latencies.len() as u64,
        errors,
        calls_per_second: latencies.len() as f64 / elapsed,
        p50_ms: ms(percentile(&latencies, 0.5)),
        p99_ms: ms(percentile(&latencies, 0.99)),
    })
}

/// The last phase: steady writes to `bench_rpo` on the primary (HTTP on
/// `port`), the primary and `litestream replicate` SIGKILLed together in
/// the middle of them, then `eros-mcp restore --output` from the replica
/// into a new file, and what that file holds.
async fn measure_node_death(
    plan: &ReplicasPlan,
    processes: &mut Processes,
    port: u16,
    primary_db: &Path,
    url: &str,
) -> Result<NodeDeathStats, ReplicasError> {
    let writer = connect(&mcp_url(port)).await?;
    let killed = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn(write_until_killed(
        writer,
        plan.write_interval,
        Arc::clone(&killed),
    ));
    // A third of an interval after a write's start: the kill lands while
    // writes go on, not right after an acknowledgement; and anywhere in
    // Litestream's one-second sync cycle (a fixed delay would land at the
    // same point of it every run and measure one RPO only).
    let anywhere_in_the_cycle = Duration::from_millis(fastrand::u64(0..1000));
    tokio::time::sleep(
        plan.write_interval * plan.kill_after_writes as u32
            + plan.write_interval / 3
            + anywhere_in_the_cycle,
    )
    .await;
    killed.store(true, Ordering::SeqCst);
    let killed_at = processes
        .kill_together(&["primary", "litestream replicate"])
        .await?;
    // The writer's next call fails at once (the sockets died with the
    // process); the bound only keeps a bug from hanging the benchmark.
    let acknowledged = tokio::time::timeout(Duration::from_secs(60), writes)
        .await
        .map_err(|_| ReplicasError::Setup("the writer did not stop after the kill".into()))?
        .map_err(|err| ReplicasError::Setup(format!("writer: {err}")))??;

    let restored = plan.dir.join("restored").join("bench.db");
    let restore_time = restore_copy(plan, primary_db, url, &restored).await?;
    let (restored_bytes, integrity, present) = inspect_restored(&restored)?;
    let loss = loss(&acknowledged, &present, killed_at);
    Ok(NodeDeathStats {
        acknowledged: acknowledged.len() as u64,
        missing: loss.missing,
        unacknowledged_present: loss.unacknowledged_present,
        rpo_ms: loss.rpo.map(ms),
        restore_ms: ms(restore_time),
        restored_bytes,
        integrity,
    })
}

/// One write to `bench_rpo` every `interval` on a fixed schedule, until a
/// write fails after `killed` is set: each acknowledged id with the moment
/// its acknowledgement arrived. A failure before the kill is an error.
async fn write_until_killed(
    writer: Session,
    interval: Duration,
    killed: Arc<AtomicBool>,
) -> Result<Vec<(u64, Instant)>, ReplicasError> {
    let mut acknowledged = Vec::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for id in 1.. {
        ticks.tick().await;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let answer = sql_call(
            &writer,
            "execute",
            format!("INSERT INTO bench_rpo (id, written_at) VALUES ({id}, {stamp:.6})"),
        )
        .await;
        match answer {
            Ok(_) => acknowledged.push((id, Instant::now())),
            Err(_) if killed.load(Ordering::SeqCst) => break,
            Err(message) => {
                return Err(ReplicasError::Call {
                    what: format!("write {id} to bench_rpo before the kill"),
                    message,
                })
            }
        }
    }
    Ok(acknowledged)
}

/// `eros-mcp restore --output` from the replica at `url` into `output` (a
/// new file in a new directory), timed from spawn to exit: Litestream's
/// start, the download, the checks eros-mcp runs before putting it there.
async fn restore_copy(
    plan: &ReplicasPlan,
    primary_db: &Path,
    url: &str,
    output: &Path,
) -> Result<Duration, ReplicasError> {
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|err| ReplicasError::Setup(format!("create {}: {err}", dir.display())))?;
    }
    let started = Instant::now();
    let done = Command::new(&plan.eros_mcp)
        .arg("restore")
        .arg("--output")
        .arg(output)
        .current_dir(&plan.dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EROS_DB_PATH", primary_db)
        .env("EROS_DB_REPLICA_URL", url)
        .env("EROS_DB_LITESTREAM_BIN", &plan.litestream)
        .env("EROS_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ReplicasError::Spawn {
            what: "eros-mcp restore".into(),
            source,
        })?;
    let elapsed = started.elapsed();
    if !done.status.success() {
        return Err(ReplicasError::Setup(format!(
            "eros-mcp restore --output {} failed ({}): {}{}",
            output.display(),
            done.status,
            String::from_utf8_lossy(&done.stdout),
            String::from_utf8_lossy(&done.stderr)
        )));
    }
    Ok(elapsed)
}

/// The restored file: its size (before anything opens it),
/// `PRAGMA integrity_check`, and the ids of `bench_rpo` it holds.
fn inspect_restored(path: &Path) -> Result<(u64, String, BTreeSet<u64>), ReplicasError> {
    let fail = |what: &str, err: &dyn fmt::Display| {
        ReplicasError::Setup(format!("restored {}: {what}: {err}", path.display()))
    };
    let bytes = std::fs::metadata(path)
        .map_err(|err| fail("stat", &err))?
        .len();
    let conn = rusqlite::Connection::open(path).map_err(|err| fail("open", &err))?;
    let integrity = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|err| fail("integrity_check", &err))?
        .join("; ");
    let present = conn
        .prepare("SELECT id FROM bench_rpo")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, i64>(0))?
                .map(|id| id.map(|id| id as u64))
                .collect::<Result<BTreeSet<_>, _>>()
        })
        .map_err(|err| fail("read bench_rpo", &err))?;
    Ok((bytes, integrity, present))
}

/// What a node's death lost, from the restore's point of view.
#[derive(Debug, Clone, PartialEq)]
struct Loss {
    /// Acknowledged writes the restore lacks.
    missing: u64,
    /// Writes the restore holds that were never acknowledged.
    unacknowledged_present: u64,
    /// The kill time minus the acknowledgement of the newest acknowledged
    /// write the restore holds (zero if that acknowledgement came in just
    /// after the signal went out); None when it holds none.
    rpo: Option<Duration>,
}

/// Compares the writes `acknowledged` (id, when) with the ids `present` in
/// the restore of a primary killed at `killed_at`.
fn loss(acknowledged: &[(u64, Instant)], present: &BTreeSet<u64>, killed_at: Instant) -> Loss {
    let acked: BTreeSet<u64> = acknowledged.iter().map(|(id, _)| *id).collect();
    let newest_present = acknowledged
        .iter()
        .filter(|(id, _)| present.contains(id))
        .map(|(_, at)| *at)
        .max();
    Loss {
        missing: acked.difference(present).count() as u64,
        unacknowledged_present: present.difference(&acked).count() as u64,
        rpo: newest_present.map(|at| killed_at.saturating_duration_since(at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_stats_of_no_samples_are_zero() {
        let stats = LagStats::of(Vec::new());
        assert_eq!(stats.samples, 0);
        assert_eq!(stats.max_ms, 0.0);
    }

    #[test]
    fn lag_stats_take_percentiles_of_the_sorted_lags() {
        let lags = (1..=100).rev().map(Duration::from_millis).collect();
        let stats = LagStats::of(lags);
        assert_eq!(stats.samples, 100);
        assert_eq!(stats.p50_ms.round(), 51.0);
        assert_eq!(stats.p99_ms.round(), 99.0);
        assert_eq!(stats.max_ms.round(), 100.0);
    }

    /// Writes 1..=n acknowledged 100 ms apart from `start`.
    fn acks(start: Instant, n: u64) -> Vec<(u64, Instant)> {
        (1..=n)
            .map(|id| (id, start + Duration::from_millis(100 * id)))
            .collect()
    }

    #[test]
    fn the_rpo_runs_from_the_newest_acknowledged_write_restored_to_the_kill() {
        let start = Instant::now();
        // Acknowledged 1..=10 (at 100..=1000 ms), killed at 1050 ms, the
        // restore holds 1..=7 and 11 (committed, never acknowledged).
        let present: BTreeSet<u64> = (1..=7).chain([11]).collect();
        let loss = loss(
            &acks(start, 10),
            &present,
            start + Duration::from_millis(1050),
        );
        assert_eq!(
            loss,
            Loss {
                missing: 3,
                unacknowledged_present: 1,
                rpo: Some(Duration::from_millis(350)),
            }
        );
    }

    #[test]
    fn a_restore_with_every_write_loses_nothing_but_the_time_since_the_last() {
        let start = Instant::now();
        let present: BTreeSet<u64> = (1..=10).collect();
        let loss = loss(
            &acks(start, 10),
            &present,
            start + Duration::from_millis(1030),
        );
        assert_eq!(loss.missing, 0);
        assert_eq!(loss.rpo, Some(Duration::from_millis(30)));
    }

    #[test]
    fn a_restore_without_any_acknowledged_write_has_no_rpo() {
        let start = Instant::now();
        let loss = loss(
            &acks(start, 4),
            &BTreeSet::new(),
            start + Duration::from_secs(1),
        );
        assert_eq!(loss.missing, 4);
        assert_eq!(loss.rpo, None);
    }

    #[test]
    fn an_acknowledgement_just_after_the_signal_counts_as_no_loss_of_time() {
        let start = Instant::now();
        let present: BTreeSet<u64> = [1].into();
        let loss = loss(&acks(start, 1), &present, start + Duration::from_millis(50));
        assert_eq!(loss.rpo, Some(Duration::ZERO));
    }

    #[test]
    fn the_node_death_line_says_when_nothing_was_restored() {
        let stats = NodeDeathStats {
            acknowledged: 4,
            missing: 4,
            unacknowledged_present: 0,
            rpo_ms: None,
            restore_ms: 120.0,
            restored_bytes: 8192,
            integrity: "ok".into(),
        };
        let line = stats.to_string();
        assert!(line.contains("RPO none of them restored"), "{line}");
        assert!(line.contains("4 missing"), "{line}");
    }
}
