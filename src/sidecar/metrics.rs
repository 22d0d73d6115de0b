//! The Prometheus metrics: a private registry, pool gauges and counters read
//! from `Pool::stats()` at scrape time (exact, not sampled), timing
//! histograms fed by the pool and tool observers, per-tool call metrics,
//! database file sizes, build info and process metrics; on a read replica,
//! its replication lag and the most it may lag.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::engine::{Outcome, QueryEngine};
use crate::mcp::{ToolCall, ToolObserver};
use crate::pool::{Pool, PoolObserver, PoolStats};
use crate::replication::follower::FollowerGate;
use crate::replication::lag::ReplicaLag;
use crate::transport::{Rejection, TransportObserver};

/// Pool waits and connection lifetimes: from a microsecond to a minute.
const POOL_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Tool calls: from 50 microseconds to a minute.
const TOOL_BUCKETS: &[f64] = &[
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// Every metric the sidecar exposes.
pub struct Metrics {
    registry: Registry,
    checkout_wait: Histogram,
    connection_held: Histogram,
    connection_create: Histogram,
    tool_calls: IntCounterVec,
    tool_duration: HistogramVec,
    tool_rows: IntCounterVec,
    tool_bytes: IntCounterVec,
    tool_truncations: IntCounterVec,
    clients: ClientMetrics,
    auth: AuthMetrics,
    pool: Arc<PoolSource>,
    replica: Arc<ReplicaSource>,
    audit: Arc<OnceLock<Arc<crate::audit::AuditLog>>>,
}

/// What the client limits did (sessions, refusals, stdio backpressure).
struct ClientMetrics {
    sessions_open: IntGauge,
    sessions_expired: IntCounter,
    sessions_rejected: IntCounter,
    requests_rejected: IntCounterVec,
    connections_open: IntGauge,
    stdio_backpressure_waits: IntCounter,
}

impl ClientMetrics {
    fn register(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid gauge");
            registry
                .register(Box::new(gauge.clone()))
                .expect("unique metric");
            gauge
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid counter");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
            counter
        };
        let requests_rejected = IntCounterVec::new(
            Opts::new(
                "mcp_http_requests_rejected_total",
                "HTTP requests and connections refused with 503, by the cap reached.",
            ),
            &["reason"],
        )
        .expect("valid counter");
        for reason in Rejection::ALL {
            requests_rejected.with_label_values(&[reason.as_str()]);
        }
        registry
            .register(Box::new(requests_rejected.clone()))
            .expect("unique metric");
        Self {
            sessions_open: gauge("mcp_http_sessions_open", "Open MCP HTTP sessions."),
            sessions_expired: counter(
                "mcp_http_sessions_expired_total",
                "HTTP sessions closed because they sat idle.",
            ),
            sessions_rejected: counter(
                "mcp_http_sessions_rejected_total",
                "New HTTP sessions refused at the session cap.",
            ),
            requests_rejected,
            connections_open: gauge(
                "mcp_http_connections_open",
                "Open MCP HTTP connections being served.",
            ),
            stdio_backpressure_waits: counter(
                "mcp_stdio_backpressure_waits_total",
                "Times the stdio transport stopped reading until an answer was written.",
            ),
        }
    }
}

/// Who was refused over HTTP: 401s by reason, 403s by the scope missing.
struct AuthMetrics {
    failures: IntCounterVec,
    scope_refusals: IntCounterVec,
}

impl AuthMetrics {
    /// Reasons counted from the start, so a dashboard sees zeros.
    const REASONS: [&'static str; 2] = ["missing_token", "unknown_token"];

    fn register(registry: &Registry) -> Self {
        let vec = |name: &str, help: &str, label: &str| {
            let counter =
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid counter");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
            counter
        };
        let failures = vec(
            "mcp_auth_failures_total",
            "HTTP requests refused with 401, by why the token failed.",
            "reason",
        );
        for reason in Self::REASONS
            .into_iter()
            .chain(crate::auth::TokenRejected::REASONS)
        {
            failures.with_label_values(&[reason]);
        }
        Self {
            failures,
            scope_refusals: vec(
                "mcp_auth_scope_refusals_total",
                "HTTP requests refused with 403 insufficient_scope, by the scope missing.",
                "scope",
            ),
        }
    }
}

/// The pool the scrape-time collectors read, set once it is open.
#[derive(Default)]
pub struct PoolSource {
    pool: OnceLock<Arc<Pool>>,
    ready: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    engine: OnceLock<Arc<QueryEngine>>,
}

impl Metrics {
    /// Builds the registry. `db_path` is the database whose file and WAL
    /// sizes are reported.
    pub fn new(db_path: PathBuf) -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let histogram =
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                    .expect("valid histogram");
            registry
                .register(Box::new(histogram.clone()))
                .expect("unique metric");
            histogram
        };
        let checkout_wait = histogram(
            "mcp_db_pool_checkout_wait_seconds",
            "Time a successful checkout waited for a connection.",
            POOL_BUCKETS,
        );
        let connection_held = histogram(
            "mcp_db_connection_held_seconds",
            "Time a connection was checked out before it was returned.",
            POOL_BUCKETS,
        );
        let connection_create = histogram(
            "mcp_db_connection_create_seconds",
            "Time to open a connection and apply its PRAGMAs.",
            POOL_BUCKETS,
        );
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry
                .register(Box::new(vec.clone()))
                .expect("unique metric");
            vec
        };
        let tool_calls = counter_vec(
            "mcp_tool_calls_total",
            "Tool calls by tool and outcome.",
            &["tool", "outcome"],
        );
        let tool_rows = counter_vec(
            "mcp_tool_rows_returned_total",
            "Rows returned by tool calls.",
            &["tool"],
        );
        let tool_bytes = counter_vec(
            "mcp_tool_bytes_returned_total",
            "Bytes of text returned by tool calls.",
            &["tool"],
        );
        let tool_truncations = counter_vec(
            "mcp_tool_truncations_total",
            "Tool results cut at the row or byte limit.",
            &["tool"],
        );
        let tool_duration = HistogramVec::new(
            HistogramOpts::new("mcp_tool_call_duration_seconds", "Tool call latency.")
                .buckets(TOOL_BUCKETS.to_vec()),
            &["tool"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(tool_duration.clone()))
            .expect("unique metric");

        let build_info = IntGaugeVec::new(
            Opts::new(
                "mcp_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("valid gauge");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(build_info))
            .expect("unique metric");

        let clients = ClientMetrics::register(&registry);
        let auth = AuthMetrics::register(&registry);
        let pool = Arc::new(PoolSource::default());
        registry
            .register(Box::new(PoolCollector::new(Arc::clone(&pool))))
            .expect("unique metric");
        registry
            .register(Box::new(DatabaseFileCollector::new(db_path)))
            .expect("unique metric");
        let replica = Arc::new(ReplicaSource::default());
        registry
            .register(Box::new(ReplicaLagCollector::new(Arc::clone(&replica))))
            .expect("unique metric");
        let audit = Arc::new(OnceLock::new());
        registry
            .register(Box::new(AuditCollector::new(Arc::clone(&audit))))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");

        Self {
            registry,
            checkout_wait,
            connection_held,
            connection_create,
            tool_calls,
            tool_duration,
            tool_rows,
            tool_bytes,
            tool_truncations,
            clients,
            auth,
            pool,
            replica,
            audit,
        }
    }

    /// Marks this server a read replica that may lag at most `max_lag`
    /// (`mcp_db_replica_max_lag_seconds`, from now on). Called before the
    /// first restore, so a replica that never gets one is still told from
    /// a primary: alerts find it by this gauge without its lag.
    pub fn replica(&self, max_lag: Duration) {
        let _ = self.replica.max_lag.set(max_lag);
    }

    /// Starts reporting the audit log's lost lines
    /// (`mcp_audit_write_failures_total`).
    pub fn watch_audit(&self, audit: Arc<crate::audit::AuditLog>) {
        let _ = self.audit.set(audit);
    }

    /// Starts reporting the restarts of the follower a replica runs
    /// (`mcp_replica_follower_restarts_total`).
    pub fn watch_follower(&self, follower: FollowerGate) {
        let _ = self.replica.follower.set(follower);
    }

    /// Starts reporting a replica's lag (`mcp_db_replica_lag_seconds`).
    pub fn watch_lag(&self, lag: Arc<ReplicaLag>) {
        let _ = self.replica.lag.set(lag);
    }

    /// Starts reporting `pool`, and readiness as `ready` says.
    pub fn watch(&self, pool: Arc<Pool>, ready: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.pool.pool.set(pool);
        let _ = self.pool.ready.set(Box::new(ready));
    }

    /// Reads the engine's abandoned statements at scrape time.
    pub fn watch_engine(&self, engine: Arc<QueryEngine>) {
        let _ = self.pool.engine.set(engine);
    }

    /// Creates the series of every tool and outcome at zero, so dashboards
    /// and rate() see them before the first call.
    pub fn register_tools(&self, tools: &[String]) {
        for tool in tools {
            for outcome in Outcome::ALL {
                self.tool_calls
                    .with_label_values(&[tool.as_str(), outcome.as_str()]);
            }
            self.tool_duration.with_label_values(&[tool.as_str()]);
            self.tool_rows.with_label_values(&[tool.as_str()]);
            self.tool_bytes.with_label_values(&[tool.as_str()]);
            self.tool_truncations.with_label_values(&[tool.as_str()]);
        }
    }

    /// The pool's statistics, once it is open.
    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.pool.pool.get().map(|pool| pool.stats())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl PoolObserver for Metrics {
    fn checkout_waited(&self, wait: Duration) {
        self.checkout_wait.observe(wait.as_secs_f64());
    }
    fn connection_held(&self, held: Duration) {
        self.connection_held.observe(held.as_secs_f64());
    }
    fn connection_opened(&self, took: Duration) {
        self.connection_create.observe(took.as_secs_f64());
    }
}

impl ToolObserver for Metrics {
    fn unknown_tool_called(&self, _name: &str, _caller: &crate::mcp::Caller) {
        // One label for every name a client made up: labels stay bounded.
        self.tool_calls
            .with_label_values(&["unknown", Outcome::Invalid.as_str()])
            .inc();
    }

    fn tool_called(&self, call: &ToolCall<'_>) {
        self.tool_calls
            .with_label_values(&[call.tool, call.outcome.as_str()])
            .inc();
        self.tool_duration
            .with_label_values(&[call.tool])
            .observe(call.duration.as_secs_f64());
        if call.rows > 0 {
            self.tool_rows
                .with_label_values(&[call.tool])
                .inc_by(call.rows);
        }
        if call.bytes > 0 {
            self.tool_bytes
                .with_label_values(&[call.tool])
                .inc_by(call.bytes);
        }
        if call.truncated {
            self.tool_truncations.with_label_values(&[call.tool]).inc();
        }
    }
}

impl TransportObserver for Metrics {
    fn stdio_backpressure_waited(&self) {
        self.clients.stdio_backpressure_waits.inc();
    }
    fn session_opened(&self) {
        self.clients.sessions_open.inc();
    }
    fn session_closed(&self) {
        self.clients.sessions_open.dec();
    }
    fn session_expired(&self) {
        self.clients.sessions_expired.inc();
    }
    fn session_rejected(&self) {
        self.clients.sessions_rejected.inc();
    }
    fn request_rejected(&self, reason: Rejection) {
        self.clients
            .requests_rejected
            .with_label_values(&[reason.as_str()])
            .inc();
    }
    fn connection_opened(&self) {
        self.clients.connections_open.inc();
    }
    fn connection_closed(&self) {
        self.clients.connections_open.dec();
    }
    fn authentication_failed(&self, reason: &'static str) {
        self.auth.failures.with_label_values(&[reason]).inc();
    }
    fn scope_refused(
        &self,
        _principal: &crate::identity::Principal,
        _operation: &crate::transport::operation::Operation,
        scope: &str,
    ) {
        self.auth.scope_refusals.with_label_values(&[scope]).inc();
    }
}

/// Reads one number out of the pool's statistics.
type StatField = fn(&PoolStats) -> u64;

/// Reads `Pool::stats()` at scrape time into gauges and counters.
struct PoolCollector {
    source: Arc<PoolSource>,
    gauges: Vec<(IntGauge, StatField)>,
    counters: Mutex<Vec<(IntCounter, StatField)>>,
    ready: IntGauge,
    overrunning: IntGauge,
    abandoned: IntCounter,
    killed: IntCounter,
    threads: IntGauge,
    file: FileHealthMetrics,
    descs: Vec<Desc>,
}

/// The database file's health (see [`crate::sqlite::health`]), read at scrape time.
struct FileHealthMetrics {
    writable: IntGauge,
    file_changed: IntGauge,
    corruption_detected: IntGauge,
    corruption_errors: IntCounter,
}

impl FileHealthMetrics {
    fn new() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid gauge");
        Self {
            writable: gauge(
                "mcp_db_writable",
                "1 when a write can succeed now; 0 when the server is read-only, the file is \
                 read-only, the disk was full on the last write, or the file changed.",
            ),
            file_changed: gauge(
                "mcp_db_file_changed",
                "1 when the database file at the path was deleted, renamed or replaced while \
                 open (writes refused until restart).",
            ),
            corruption_detected: gauge(
                "mcp_db_corruption_detected",
                "1 from an SQLITE_CORRUPT or SQLITE_NOTADB answer until PRAGMA quick_check \
                 passes again.",
            ),
            corruption_errors: IntCounter::new(
                "mcp_db_corruption_errors_total",
                "SQLITE_CORRUPT and SQLITE_NOTADB answers.",
            )
            .expect("valid counter"),
        }
    }

    fn descs(&self) -> Vec<Desc> {
        [
            self.writable.desc(),
            self.file_changed.desc(),
            self.corruption_detected.desc(),
            self.corruption_errors.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    fn collect(&self, health: &crate::sqlite::health::DatabaseHealth) -> Vec<MetricFamily> {
        self.writable
            .set(i64::from(health.write_blocker().is_none()));
        self.file_changed
            .set(i64::from(health.file_fault().is_some()));
        self.corruption_detected
            .set(i64::from(health.corruption().is_some()));
        let delta = health
            .corruption_errors()
            .saturating_sub(self.corruption_errors.get());
        self.corruption_errors.inc_by(delta);
        let mut families = self.writable.collect();
        families.extend(self.file_changed.collect());
        families.extend(self.corruption_detected.collect());
        families.extend(self.corruption_errors.collect());
        families
    }
}

impl PoolCollector {
    fn new(source: Arc<PoolSource>) -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid gauge");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid counter");
        let gauges: Vec<(IntGauge, StatField)> = vec![
            (
                gauge("mcp_db_pool_size", "Configured number of kept connections."),
                |s| s.pool_size,
            ),
            (
                gauge(
                    "mcp_db_pool_available",
                    "Idle connections ready to hand out.",
                ),
                |s| s.available,
            ),
            (
                gauge("mcp_db_pool_in_use", "Connections checked out right now."),
                |s| s.active_connections,
            ),
            (
                gauge(
                    "mcp_db_pool_overflow",
                    "Open connections above the configured size.",
                ),
                |s| s.overflow_in_use,
            ),
            (
                gauge(
                    "mcp_db_pool_max_connections",
                    "Most connections open at once (size + overflow).",
                ),
                |s| s.max_connections,
            ),
            (
                gauge(
                    "mcp_db_pool_waiters",
                    "Callers waiting for a connection right now.",
                ),
                |s| s.waiters,
            ),
        ];
        let counters: Vec<(IntCounter, StatField)> = vec![
            (
                counter("mcp_db_connections_created_total", "Connections opened."),
                |s| s.connections_created,
            ),
            (
                counter(
                    "mcp_db_connections_recycled_total",
                    "Connections closed because they reached their maximum age.",
                ),
                |s| s.connections_recycled,
            ),
            (
                counter(
                    "mcp_db_connections_failed_total",
                    "Failed attempts to open a connection.",
                ),
                |s| s.connections_failed,
            ),
            (
                counter(
                    "mcp_db_pool_checkout_timeouts_total",
                    "Checkouts that timed out.",
                ),
                |s| s.checkout_timeouts,
            ),
            (
                counter(
                    "mcp_db_pool_health_check_failures_total",
                    "Connections that failed their health check.",
                ),
                |s| s.health_check_failures,
            ),
            (
                counter(
                    "mcp_db_pool_overflow_closed_total",
                    "Overflow connections closed on return.",
                ),
                |s| s.overflow_closed,
            ),
            (
                counter(
                    "mcp_db_pool_rollbacks_total",
                    "Transactions left open and rolled back on return.",
                ),
                |s| s.rollbacks,
            ),
            (
                counter(
                    "mcp_db_retries_total",
                    "Retries of transient failures (open errors, busy reads).",
                ),
                |s| s.retries,
            ),
        ];
        let ready = gauge("mcp_ready", "1 when the server can serve queries, else 0.");
        let overrunning = gauge(
            "mcp_db_statements_overrunning",
            "Statements past their deadline whose worker is being killed, each holding a \
             connection until the kill lands.",
        );
        let abandoned = counter(
            "mcp_db_statements_abandoned_total",
            "Statements whose caller was answered at the deadline before SQLite stopped.",
        );
        let killed = counter(
            "mcp_db_statements_killed_total",
            "Statements whose worker process was killed because SQLite did not return within \
             the grace after their deadline (its connection, locks, memory and CPU came back).",
        );
        let threads = gauge(
            "mcp_db_statement_threads",
            "Statement threads alive: calls waiting for a connection or on their worker, and \
             idle threads kept for the next call.",
        );
        let mut descs = Vec::new();
        for (g, _) in &gauges {
            descs.extend(g.desc().into_iter().cloned());
        }
        for (c, _) in &counters {
            descs.extend(c.desc().into_iter().cloned());
        }
        descs.extend(ready.desc().into_iter().cloned());
        descs.extend(overrunning.desc().into_iter().cloned());
        descs.extend(abandoned.desc().into_iter().cloned());
        descs.extend(killed.desc().into_iter().cloned());
        descs.extend(threads.desc().into_iter().cloned());
        let file = FileHealthMetrics::new();
        descs.extend(file.descs());
        Self {
            file,
            source,
            gauges,
            counters: Mutex::new(counters),
            ready,
            overrunning,
            abandoned,
            killed,
            threads,
            descs,
        }
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let ready = self.source.ready.get().is_some_and(|ready| ready());
        self.ready.set(i64::from(ready));
        let mut families = self.ready.collect();
        if let Some(engine) = self.source.engine.get() {
            self.overrunning.set(engine.overrunning() as i64);
            let delta = engine.abandoned().saturating_sub(self.abandoned.get());
            self.abandoned.inc_by(delta);
            let delta = engine.killed().saturating_sub(self.killed.get());
            self.killed.inc_by(delta);
            self.threads.set(engine.threads() as i64);
            families.extend(self.overrunning.collect());
            families.extend(self.abandoned.collect());
            families.extend(self.killed.collect());
            families.extend(self.threads.collect());
        }
        let Some(pool) = self.source.pool.get() else {
            return families;
        };
        families.extend(self.file.collect(pool.health()));
        let stats = pool.stats();
        for (gauge, read) in &self.gauges {
            gauge.set(read(&stats) as i64);
            families.extend(gauge.collect());
        }
        let counters = self.counters.lock().unwrap();
        for (counter, read) in counters.iter() {
            let delta = read(&stats).saturating_sub(counter.get());
            counter.inc_by(delta);
            families.extend(counter.collect());
        }
        families
    }
}

/// Sizes of the database file and its WAL, read at scrape time.
struct DatabaseFileCollector {
    path: PathBuf,
    wal: PathBuf,
    file: IntGauge,
    wal_size: IntGauge,
    descs: Vec<Desc>,
}

impl DatabaseFileCollector {
    fn new(path: PathBuf) -> Self {
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let file = IntGauge::new("mcp_db_file_size_bytes", "Size of the database file.")
            .expect("valid gauge");
        let wal_size = IntGauge::new(
            "mcp_db_wal_size_bytes",
            "Size of the write-ahead log (0 when absent).",
        )
        .expect("valid gauge");
        let descs = file
            .desc()
            .into_iter()
            .chain(wal_size.desc())
            .cloned()
            .collect();
        Self {
            path,
            wal: wal.into(),
            file,
            wal_size,
            descs,
        }
    }
}

impl Collector for DatabaseFileCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let size = |path: &PathBuf| std::fs::metadata(path).map(|m| m.len() as i64).unwrap_or(0);
        self.file.set(size(&self.path));
        self.wal_size.set(size(&self.wal));
        let mut families = self.file.collect();
        families.extend(self.wal_size.collect());
        families
    }
}

/// The audit log's lines that could not be written, read at scrape time
/// from the log's own count; absent when there is no audit log.
struct AuditCollector {
    source: Arc<OnceLock<Arc<crate::audit::AuditLog>>>,
    failures: IntCounter,
}

impl AuditCollector {
    fn new(source: Arc<OnceLock<Arc<crate::audit::AuditLog>>>) -> Self {
        let failures = IntCounter::new(
            "mcp_audit_write_failures_total",
            "Audit log lines that could not be written (disk full, file gone); the calls went on.",
        )
        .expect("valid counter");
        Self { source, failures }
    }
}

impl Collector for AuditCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.failures.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(audit) = self.source.get() else {
            return Vec::new();
        };
        let lost = audit.write_failures();
        let counted = self.failures.get();
        if lost > counted {
            self.failures.inc_by(lost - counted);
        }
        self.failures.collect()
    }
}

/// What a read replica reports: the most it may lag, known from startup,
/// its lag, once its lag thread runs, and the restarts of the follower it
/// runs, if it runs one. All unset on a primary.
#[derive(Default)]
struct ReplicaSource {
    max_lag: OnceLock<Duration>,
    lag: OnceLock<Arc<ReplicaLag>>,
    follower: OnceLock<FollowerGate>,
}

/// A replica's lag, read at scrape time from what its lag thread last
/// measured, and its `EROS_DB_REPLICA_MAX_LAG`. No lag sample before a
/// replica has seen its first heartbeat (and none on a primary): an absent
/// series, not a made-up number. The maximum is there from startup, so
/// "a replica without a lag" is a query (`max unless lag`), and the lag can
/// be compared with each replica's own maximum.
struct ReplicaLagCollector {
    source: Arc<ReplicaSource>,
    gauge: prometheus::Gauge,
    max_gauge: prometheus::Gauge,
    follower_restarts: IntCounter,
    descs: Vec<Desc>,
}

impl ReplicaLagCollector {
    fn new(source: Arc<ReplicaSource>) -> Self {
        let gauge = prometheus::Gauge::new(
            "mcp_db_replica_lag_seconds",
            "Read replicas: now minus the newest primary heartbeat this replica's copy holds. \
             The primary writes one every EROS_DB_HEARTBEAT_INTERVAL, so it reads up to one \
             interval high; absent until the first heartbeat arrives.",
        )
        .expect("valid gauge");
        let max_gauge = prometheus::Gauge::new(
            "mcp_db_replica_max_lag_seconds",
            "Read replicas: EROS_DB_REPLICA_MAX_LAG, the lag above which /readyz answers 503; \
             present from startup, before the first restore.",
        )
        .expect("valid gauge");
        let follower_restarts = IntCounter::new(
            "mcp_replica_follower_restarts_total",
            "Read replicas running their follower: followers started again after one stopped \
             (each time, queries were refused until a fresh restore was in place).",
        )
        .expect("valid counter");
        let descs = gauge
            .desc()
            .into_iter()
            .chain(max_gauge.desc())
            .chain(follower_restarts.desc())
            .cloned()
            .collect();
        Self {
            source,
            gauge,
            max_gauge,
            follower_restarts,
            descs,
        }
    }
}

impl Collector for ReplicaLagCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        if let Some(max_lag) = self.source.max_lag.get() {
            self.max_gauge.set(max_lag.as_secs_f64());
            families.extend(self.max_gauge.collect());
        }
        if let Some(lag) = self.source.lag.get().and_then(|lag| lag.lag()) {
            self.gauge.set(lag.as_secs_f64());
            families.extend(self.gauge.collect());
        }
        if let Some(follower) = self.source.follower.get() {
            let delta = follower
                .restarts()
                .saturating_sub(self.follower_restarts.get());
            self.follower_restarts.inc_by(delta);
            families.extend(self.follower_restarts.collect());
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of `name` in the exposition.
    fn samples(metrics: &Metrics, name: &str) -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|line| line.split([' ', '{']).next() == Some(name))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn lost_audit_lines_are_counted_and_absent_without_an_audit_log() {
        use crate::audit::{AuditLog, AuditSettings, AuditSink, SqlInAudit};
        use crate::transport::TransportObserver;
        let metrics = Metrics::new(PathBuf::from("/nonexistent/eros.db"));
        assert!(samples(&metrics, "mcp_audit_write_failures_total").is_empty());
        // /dev/full fails every write with ENOSPC.
        let audit = Arc::new(
            AuditLog::open(AuditSettings {
                sink: AuditSink::File(PathBuf::from("/dev/full")),
                sql: SqlInAudit::Text,
                param_values: false,
                fail_closed: true,
            })
            .unwrap(),
        );
        metrics.watch_audit(Arc::clone(&audit));
        assert_eq!(
            samples(&metrics, "mcp_audit_write_failures_total"),
            ["mcp_audit_write_failures_total 0"]
        );
        audit.authentication_failed("missing_token");
        audit.authentication_failed("unknown_token");
        assert_eq!(
            samples(&metrics, "mcp_audit_write_failures_total"),
            ["mcp_audit_write_failures_total 2"]
        );
    }

    #[test]
    fn a_primary_exports_no_replica_gauges() {
        let metrics = Metrics::new(PathBuf::from("/nonexistent/eros.db"));
        assert!(samples(&metrics, "mcp_db_replica_max_lag_seconds").is_empty());
        assert!(samples(&metrics, "mcp_db_replica_lag_seconds").is_empty());
    }

    #[test]
    fn a_replica_exports_its_max_lag_before_any_lag() {
        let metrics = Metrics::new(PathBuf::from("/nonexistent/eros.db"));
        metrics.replica(Duration::from_secs(45));
        assert_eq!(
            samples(&metrics, "mcp_db_replica_max_lag_seconds"),
            ["mcp_db_replica_max_lag_seconds 45"]
        );
        // Its lag thread has not seen a heartbeat: no lag sample yet.
        metrics.watch_lag(Arc::new(ReplicaLag::new(Duration::from_secs(45))));
        assert!(samples(&metrics, "mcp_db_replica_lag_seconds").is_empty());
    }
}
