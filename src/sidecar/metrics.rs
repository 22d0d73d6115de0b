//! The Prometheus metrics: a private registry, pool gauges and counters read
//! from `Pool::stats()` at scrape time (exact, not sampled), timing
//! histograms fed by the pool and tool observers, per-tool call metrics,
//! database file sizes, build info and process metrics; on a read replica,
//! its replication lag and the most it may lag. Everything about one
//! database carries its name in the `database` label, whose values come
//! only from the configuration.

use crate::quota::{Quota, QuotaObserver};
use crate::telemetry::ExportCounters;
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
use crate::pool::{PoolObserver, PoolStats};
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
    checkout_wait: HistogramVec,
    share_wait: HistogramVec,
    quota_rejections: IntCounterVec,
    connection_held: HistogramVec,
    connection_create: HistogramVec,
    tool_calls: IntCounterVec,
    tool_duration: HistogramVec,
    tool_rows: IntCounterVec,
    tool_bytes: IntCounterVec,
    tool_truncations: IntCounterVec,
    clients: ClientMetrics,
    auth: AuthMetrics,
    pool: Arc<PoolSource>,
    audit: Arc<OnceLock<Arc<crate::audit::AuditLog>>>,
    reload_failures: IntCounter,
    generation: IntGauge,
    trace_exports: OnceLock<Arc<ExportCounters>>,
    trace_export_failures: IntCounter,
    trace_spans_dropped: IntCounter,
}

/// The label every per-database metric carries.
const DATABASE: &str = "database";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
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
/// The databases watched, and the server's readiness.
#[derive(Default)]
pub struct PoolSource {
    databases: Mutex<Vec<Watched>>,
    ready: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

/// One database's sources, by its name.
#[derive(Default)]
struct Watched {
    name: String,
    engine: Option<Arc<QueryEngine>>,
    max_lag: Option<Duration>,
    lag: Option<Arc<ReplicaLag>>,
    follower: Option<FollowerGate>,
}

impl PoolSource {
    /// Changes the entry of `name`, making it first if need be.
    fn with(&self, name: &str, change: impl FnOnce(&mut Watched)) {
        let mut databases = self.databases.lock().unwrap();
        match databases.iter_mut().find(|db| db.name == name) {
            Some(db) => change(db),
            None => {
                let mut db = Watched {
                    name: name.to_string(),
                    ..Watched::default()
                };
                change(&mut db);
                databases.push(db);
            }
        }
    }
}

impl Metrics {
    /// Builds the registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let histogram = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &[DATABASE],
            )
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
        let share_wait = histogram(
            "mcp_db_fair_share_wait_seconds",
            "Time a call waited for its principal's turn at the database's connections \
             (EROS_DB_FAIR_SHARES), before its checkout.",
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
        let quota_rejections = counter_vec(
            "mcp_quota_rejections_total",
            "Tool calls refused by a principal's quota, by principal (the names of the quotas \
             file; every other principal is `other`) and quota.",
            &["principal", "quota"],
        );
        for quota in Quota::ALL {
            quota_rejections.with_label_values(&[crate::quota::OTHER, quota.as_str()]);
        }
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

        let trace_export_failures = IntCounter::new(
            "mcp_trace_export_failures_total",
            "Batches of trace spans the OTLP collector did not take (unreachable, refused, too \
             slow); their spans are dropped, no call waits for them.",
        )
        .expect("valid counter");
        let trace_spans_dropped = IntCounter::new(
            "mcp_trace_spans_dropped_total",
            "Trace spans lost with the batches the OTLP collector did not take.",
        )
        .expect("valid counter");
        let reload_failures = IntCounter::new(
            "mcp_config_reload_failures_total",
            "Reloads (SIGHUP) of the databases file, declared tools and policies that were \
             refused; the configuration in force served on.",
        )
        .expect("valid counter");
        let generation = IntGauge::new(
            "mcp_config_generation",
            "The configuration in force: 1 at startup, one more at each reload that took effect.",
        )
        .expect("valid gauge");
        generation.set(1);
        for metric in [
            Box::new(reload_failures.clone()) as Box<dyn Collector>,
            Box::new(generation.clone()),
            Box::new(trace_export_failures.clone()),
            Box::new(trace_spans_dropped.clone()),
        ] {
            registry.register(metric).expect("unique metric");
        }
        let clients = ClientMetrics::register(&registry);
        let auth = AuthMetrics::register(&registry);
        let pool = Arc::new(PoolSource::default());
        registry
            .register(Box::new(PoolCollector::new(Arc::clone(&pool))))
            .expect("unique metric");
        registry
            .register(Box::new(DatabaseFileCollector::new(Arc::clone(&pool))))
            .expect("unique metric");
        registry
            .register(Box::new(ReplicaLagCollector::new(Arc::clone(&pool))))
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
            share_wait,
            quota_rejections,
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
            audit,
            reload_failures,
            generation,
            trace_exports: OnceLock::new(),
            trace_export_failures,
            trace_spans_dropped,
        }
    }

    /// Marks the database `name` a read replica that may lag at most
    /// `max_lag` (`mcp_db_replica_max_lag_seconds`, from now on). Called
    /// before the first restore, so a replica that never gets one is still
    /// told from a primary: alerts find it by this gauge without its lag.
    pub fn replica(&self, name: &str, max_lag: Duration) {
        self.pool.with(name, |db| db.max_lag = Some(max_lag));
    }

    /// Starts reporting the audit log's lost lines
    /// (`mcp_audit_write_failures_total`).
    pub fn watch_audit(&self, audit: Arc<crate::audit::AuditLog>) {
        let _ = self.audit.set(audit);
    }

    /// Starts reporting the restarts of the follower a replica runs
    /// (`mcp_replica_follower_restarts_total`).
    pub fn watch_follower(&self, name: &str, follower: FollowerGate) {
        self.pool.with(name, |db| db.follower = Some(follower));
    }

    /// Starts reporting a replica's lag (`mcp_db_replica_lag_seconds`).
    pub fn watch_lag(&self, name: &str, lag: Arc<ReplicaLag>) {
        self.pool.with(name, |db| db.lag = Some(lag));
    }

    /// Starts reporting the database `name`: its pool, file and
    /// statements (read from its engine at scrape time).
    pub fn watch_database(&self, name: &str, engine: Arc<QueryEngine>) {
        self.pool.with(name, |db| db.engine = Some(engine));
    }

    /// Stops reporting the database `name` (a reload removed it).
    pub fn forget_database(&self, name: &str) {
        self.pool
            .databases
            .lock()
            .unwrap()
            .retain(|db| db.name != name);
        for histogram in [
            &self.checkout_wait,
            &self.share_wait,
            &self.connection_held,
            &self.connection_create,
        ] {
            let _ = histogram.remove_label_values(&[name]);
        }
    }

    /// A reload of the configuration was refused; the old one serves on.
    pub fn reload_failed(&self) {
        self.reload_failures.inc();
    }

    /// The configuration generation in force (1 at startup).
    pub fn generation(&self, number: u64) {
        self.generation.set(number as i64);
    }

    /// Reports readiness (`mcp_ready`) as `ready` says.
    pub fn watch_ready(&self, ready: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.pool.ready.set(Box::new(ready));
    }

    /// What the pool of the database `name` reports to: the timing
    /// histograms, labelled with its name.
    pub fn pool_observer(&self, name: &str) -> Arc<dyn PoolObserver> {
        Arc::new(PoolTimings {
            checkout_wait: self.checkout_wait.with_label_values(&[name]),
            share_wait: self.share_wait.with_label_values(&[name]),
            connection_held: self.connection_held.with_label_values(&[name]),
            connection_create: self.connection_create.with_label_values(&[name]),
        })
    }

    /// Creates the quota refusal series of each principal the quotas file
    /// names at zero.
    pub fn register_quota_principals(&self, names: &[String]) {
        for name in names {
            for quota in Quota::ALL {
                self.quota_rejections
                    .with_label_values(&[name.as_str(), quota.as_str()]);
            }
        }
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

    /// Each open pool's statistics, by database.
    pub fn pool_stats(&self) -> Vec<(String, PoolStats)> {
        self.pool
            .databases
            .lock()
            .unwrap()
            .iter()
            .filter_map(|db| Some((db.name.clone(), db.engine.as_ref()?.pool().stats())))
            .collect()
    }

    /// Starts reporting what became of the trace batches
    /// (`mcp_trace_export_failures_total`, `mcp_trace_spans_dropped_total`).
    pub fn watch_trace_exports(&self, exports: Arc<ExportCounters>) {
        let _ = self.trace_exports.set(exports);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(exports) = self.trace_exports.get() {
            for (counter, now) in [
                (&self.trace_export_failures, exports.failed_batches()),
                (&self.trace_spans_dropped, exports.dropped_spans()),
            ] {
                counter.inc_by(now.saturating_sub(counter.get()));
            }
        }
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// One database's pool timings.
struct PoolTimings {
    checkout_wait: Histogram,
    share_wait: Histogram,
    connection_held: Histogram,
    connection_create: Histogram,
}

impl PoolObserver for PoolTimings {
    fn checkout_waited(&self, wait: Duration) {
        self.checkout_wait.observe(wait.as_secs_f64());
    }
    fn connection_held(&self, held: Duration) {
        self.connection_held.observe(held.as_secs_f64());
    }
    fn connection_opened(&self, took: Duration) {
        self.connection_create.observe(took.as_secs_f64());
    }
    fn share_waited(&self, wait: Duration) {
        self.share_wait.observe(wait.as_secs_f64());
    }
}

impl QuotaObserver for Metrics {
    fn refused(&self, principal: &str, quota: Quota) {
        self.quota_rejections
            .with_label_values(&[principal, quota.as_str()])
            .inc();
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

/// A gauge by database.
fn gauge_vec(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &[DATABASE]).expect("valid gauge")
}

/// A counter by database.
fn counter_vec(name: &str, help: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[DATABASE]).expect("valid counter")
}

/// Moves the counter of `name` up to `total` (the source's own count).
fn count_up_to(counter: &IntCounterVec, name: &str, total: u64) {
    let counter = counter.with_label_values(&[name]);
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// Reads each database's `Pool::stats()`, file health and statements at
/// scrape time into gauges and counters labelled with its name; and the
/// server's readiness.
struct PoolCollector {
    source: Arc<PoolSource>,
    gauges: Vec<(IntGaugeVec, StatField)>,
    counters: Vec<(IntCounterVec, StatField)>,
    ready: IntGauge,
    overrunning: IntGaugeVec,
    abandoned: IntCounterVec,
    killed: IntCounterVec,
    threads: IntGaugeVec,
    writable: IntGaugeVec,
    file_changed: IntGaugeVec,
    corruption_detected: IntGaugeVec,
    corruption_errors: IntCounterVec,
    descs: Vec<Desc>,
}

impl PoolCollector {
    fn new(source: Arc<PoolSource>) -> Self {
        let gauges: Vec<(IntGaugeVec, StatField)> = vec![
            (
                gauge_vec("mcp_db_pool_size", "Configured number of kept connections."),
                |s| s.pool_size,
            ),
            (
                gauge_vec(
                    "mcp_db_pool_available",
                    "Idle connections ready to hand out.",
                ),
                |s| s.available,
            ),
            (
                gauge_vec("mcp_db_pool_in_use", "Connections checked out right now."),
                |s| s.active_connections,
            ),
            (
                gauge_vec(
                    "mcp_db_pool_overflow",
                    "Open connections above the configured size.",
                ),
                |s| s.overflow_in_use,
            ),
            (
                gauge_vec(
                    "mcp_db_pool_max_connections",
                    "Most connections open at once (size + overflow).",
                ),
                |s| s.max_connections,
            ),
            (
                gauge_vec(
                    "mcp_db_pool_waiters",
                    "Callers waiting for a connection right now.",
                ),
                |s| s.waiters,
            ),
        ];
        let counters: Vec<(IntCounterVec, StatField)> = vec![
            (
                counter_vec("mcp_db_connections_created_total", "Connections opened."),
                |s| s.connections_created,
            ),
            (
                counter_vec(
                    "mcp_db_connections_recycled_total",
                    "Connections closed because they reached their maximum age.",
                ),
                |s| s.connections_recycled,
            ),
            (
                counter_vec(
                    "mcp_db_connections_failed_total",
                    "Failed attempts to open a connection.",
                ),
                |s| s.connections_failed,
            ),
            (
                counter_vec(
                    "mcp_db_pool_checkout_timeouts_total",
                    "Checkouts that timed out.",
                ),
                |s| s.checkout_timeouts,
            ),
            (
                counter_vec(
                    "mcp_db_pool_health_check_failures_total",
                    "Connections that failed their health check.",
                ),
                |s| s.health_check_failures,
            ),
            (
                counter_vec(
                    "mcp_db_pool_overflow_closed_total",
                    "Overflow connections closed on return.",
                ),
                |s| s.overflow_closed,
            ),
            (
                counter_vec(
                    "mcp_db_pool_rollbacks_total",
                    "Transactions left open and rolled back on return.",
                ),
                |s| s.rollbacks,
            ),
            (
                counter_vec(
                    "mcp_db_retries_total",
                    "Retries of transient failures (open errors, busy reads).",
                ),
                |s| s.retries,
            ),
        ];
        let ready = IntGauge::new(
            "mcp_ready",
            "1 when the server can serve queries (every required database), else 0.",
        )
        .expect("valid gauge");
        let overrunning = gauge_vec(
            "mcp_db_statements_overrunning",
            "Statements past their deadline whose worker is being killed, each holding a \
             connection until the kill lands.",
        );
        let abandoned = counter_vec(
            "mcp_db_statements_abandoned_total",
            "Statements whose caller was answered at the deadline before SQLite stopped.",
        );
        let killed = counter_vec(
            "mcp_db_statements_killed_total",
            "Statements whose worker process was killed because SQLite did not return within \
             the grace after their deadline (its connection, locks, memory and CPU came back).",
        );
        let threads = gauge_vec(
            "mcp_db_statement_threads",
            "Statement threads alive: calls waiting for a connection or on their worker, and \
             idle threads kept for the next call.",
        );
        let writable = gauge_vec(
            "mcp_db_writable",
            "1 when a write can succeed now; 0 when the server is read-only, the file is \
             read-only, the disk was full on the last write, or the file changed.",
        );
        let file_changed = gauge_vec(
            "mcp_db_file_changed",
            "1 when the database file at the path was deleted, renamed or replaced while \
             open (writes refused until restart).",
        );
        let corruption_detected = gauge_vec(
            "mcp_db_corruption_detected",
            "1 from an SQLITE_CORRUPT or SQLITE_NOTADB answer until PRAGMA quick_check \
             passes again.",
        );
        let corruption_errors = counter_vec(
            "mcp_db_corruption_errors_total",
            "SQLITE_CORRUPT and SQLITE_NOTADB answers.",
        );
        let mut descs: Vec<Desc> = Vec::new();
        for (g, _) in &gauges {
            descs.extend(g.desc().into_iter().cloned());
        }
        for (c, _) in &counters {
            descs.extend(c.desc().into_iter().cloned());
        }
        for collector in [
            &ready as &dyn Collector,
            &overrunning,
            &abandoned,
            &killed,
            &threads,
            &writable,
            &file_changed,
            &corruption_detected,
            &corruption_errors,
        ] {
            descs.extend(collector.desc().into_iter().cloned());
        }
        Self {
            source,
            gauges,
            counters,
            ready,
            overrunning,
            abandoned,
            killed,
            threads,
            writable,
            file_changed,
            corruption_detected,
            corruption_errors,
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
        // Only the databases served now have series: one a reload removed
        // loses its own (each value is read afresh from its source).
        for (gauge, _) in &self.gauges {
            gauge.reset();
        }
        for (counter, _) in &self.counters {
            counter.reset();
        }
        for vec in [
            &self.overrunning,
            &self.threads,
            &self.writable,
            &self.file_changed,
            &self.corruption_detected,
        ] {
            vec.reset();
        }
        for vec in [&self.abandoned, &self.killed, &self.corruption_errors] {
            vec.reset();
        }
        let databases = self.source.databases.lock().unwrap();
        let open: Vec<(&str, &Arc<QueryEngine>)> = databases
            .iter()
            .filter_map(|db| Some((db.name.as_str(), db.engine.as_ref()?)))
            .collect();
        if open.is_empty() {
            return families;
        }
        for (name, engine) in &open {
            let label = [*name];
            self.overrunning
                .with_label_values(&label)
                .set(engine.overrunning() as i64);
            count_up_to(&self.abandoned, name, engine.abandoned());
            count_up_to(&self.killed, name, engine.killed());
            self.threads
                .with_label_values(&label)
                .set(engine.threads() as i64);
            let pool = engine.pool();
            let health = pool.health();
            self.writable
                .with_label_values(&label)
                .set(i64::from(health.write_blocker().is_none()));
            self.file_changed
                .with_label_values(&label)
                .set(i64::from(health.file_fault().is_some()));
            self.corruption_detected
                .with_label_values(&label)
                .set(i64::from(health.corruption().is_some()));
            count_up_to(&self.corruption_errors, name, health.corruption_errors());
            let stats = pool.stats();
            for (gauge, read) in &self.gauges {
                gauge.with_label_values(&label).set(read(&stats) as i64);
            }
            for (counter, read) in &self.counters {
                count_up_to(counter, name, read(&stats));
            }
        }
        for collector in [
            &self.overrunning as &dyn Collector,
            &self.abandoned,
            &self.killed,
            &self.threads,
            &self.writable,
            &self.file_changed,
            &self.corruption_detected,
            &self.corruption_errors,
        ] {
            families.extend(collector.collect());
        }
        for (gauge, _) in &self.gauges {
            families.extend(gauge.collect());
        }
        for (counter, _) in &self.counters {
            families.extend(counter.collect());
        }
        families
    }
}

/// Sizes of each database file and its WAL, read at scrape time.
struct DatabaseFileCollector {
    source: Arc<PoolSource>,
    file: IntGaugeVec,
    wal_size: IntGaugeVec,
    descs: Vec<Desc>,
}

impl DatabaseFileCollector {
    fn new(source: Arc<PoolSource>) -> Self {
        let file = gauge_vec("mcp_db_file_size_bytes", "Size of the database file.");
        let wal_size = gauge_vec(
            "mcp_db_wal_size_bytes",
            "Size of the write-ahead log (0 when absent).",
        );
        let descs = file
            .desc()
            .into_iter()
            .chain(wal_size.desc())
            .cloned()
            .collect();
        Self {
            source,
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
        let size =
            |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len() as i64).unwrap_or(0);
        self.file.reset();
        self.wal_size.reset();
        let databases = self.source.databases.lock().unwrap();
        let mut any = false;
        for db in databases.iter() {
            let Some(engine) = &db.engine else { continue };
            any = true;
            let path = &engine.pool().connection_options().path;
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            self.file.with_label_values(&[&db.name]).set(size(path));
            self.wal_size
                .with_label_values(&[&db.name])
                .set(size(std::path::Path::new(&wal)));
        }
        if !any {
            return Vec::new();
        }
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

/// What a read replica reports, by database: the most it may lag, known
/// from startup, its lag, once its lag thread runs, and the restarts of the
/// follower it runs, if it runs one. No lag sample before a replica has seen
/// its first heartbeat (and none on a primary): an absent series, not a
/// made-up number. The maximum is there from startup, so "a replica without
/// a lag" is a query (`max unless lag`), and the lag can be compared with
/// each replica's own maximum.
struct ReplicaLagCollector {
    source: Arc<PoolSource>,
    gauge: prometheus::GaugeVec,
    max_gauge: prometheus::GaugeVec,
    follower_restarts: IntCounterVec,
    descs: Vec<Desc>,
}

impl ReplicaLagCollector {
    fn new(source: Arc<PoolSource>) -> Self {
        let float_gauge = |name: &str, help: &str| {
            prometheus::GaugeVec::new(Opts::new(name, help), &[DATABASE]).expect("valid gauge")
        };
        let gauge = float_gauge(
            "mcp_db_replica_lag_seconds",
            "Read replicas: now minus the newest primary heartbeat this replica's copy holds. \
             The primary writes one every EROS_DB_HEARTBEAT_INTERVAL, so it reads up to one \
             interval high; absent until the first heartbeat arrives.",
        );
        let max_gauge = float_gauge(
            "mcp_db_replica_max_lag_seconds",
            "Read replicas: EROS_DB_REPLICA_MAX_LAG, the lag above which /readyz answers 503; \
             present from startup, before the first restore.",
        );
        let follower_restarts = counter_vec(
            "mcp_replica_follower_restarts_total",
            "Read replicas running their follower: followers started again after one stopped \
             (each time, queries were refused until a fresh restore was in place).",
        );
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
        self.gauge.reset();
        self.max_gauge.reset();
        self.follower_restarts.reset();
        let databases = self.source.databases.lock().unwrap();
        let (mut max, mut lag, mut follower) = (false, false, false);
        for db in databases.iter() {
            let label = [db.name.as_str()];
            if let Some(max_lag) = db.max_lag {
                max = true;
                self.max_gauge
                    .with_label_values(&label)
                    .set(max_lag.as_secs_f64());
            }
            if let Some(now) = db.lag.as_ref().and_then(|lag| lag.lag()) {
                lag = true;
                self.gauge.with_label_values(&label).set(now.as_secs_f64());
            }
            if let Some(gate) = &db.follower {
                follower = true;
                count_up_to(&self.follower_restarts, &db.name, gate.restarts());
            }
        }
        let mut families = Vec::new();
        if max {
            families.extend(self.max_gauge.collect());
        }
        if lag {
            families.extend(self.gauge.collect());
        }
        if follower {
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
        let metrics = Metrics::new();
        assert!(samples(&metrics, "mcp_audit_write_failures_total").is_empty());
        // /dev/full fails every write with ENOSPC.
        let audit = Arc::new(
            AuditLog::open(AuditSettings {
                sink: AuditSink::File(std::path::PathBuf::from("/dev/full")),
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
        let metrics = Metrics::new();
        assert!(samples(&metrics, "mcp_db_replica_max_lag_seconds").is_empty());
        assert!(samples(&metrics, "mcp_db_replica_lag_seconds").is_empty());
    }

    #[test]
    fn a_replica_exports_its_max_lag_before_any_lag() {
        let metrics = Metrics::new();
        metrics.replica("main", Duration::from_secs(45));
        assert_eq!(
            samples(&metrics, "mcp_db_replica_max_lag_seconds"),
            ["mcp_db_replica_max_lag_seconds{database=\"main\"} 45"]
        );
        // Its lag thread has not seen a heartbeat: no lag sample yet.
        metrics.watch_lag("main", Arc::new(ReplicaLag::new(Duration::from_secs(45))));
        assert!(samples(&metrics, "mcp_db_replica_lag_seconds").is_empty());
    }
}
