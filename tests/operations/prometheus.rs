//! The sidecar against a real Prometheus server (Debian's `prometheus`
//! package): Prometheus scrapes the real binary while a workload runs, and
//! the test reads the seven pool metrics back through Prometheus's HTTP API
//! after known events. Every PromQL expression of the dashboard and the
//! alert rules must evaluate and return data against a primary and real
//! read replicas (tests/common/litestream.rs: a primary under Litestream, a
//! follower and a replica), and every metric they name must be in the
//! exposition of a primary or a replica. The dashboard and the rules are read
//! through tests/common/ops (serde_yaml_ng), promtool and Prometheus are
//! found by its tools module (`.ci/provision` installs them).

use crate::common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::litestream::{Cluster, Replica};
use common::mcp::{call, free_port, http_get, Client, HttpServer, ERAS};
use common::ops::promql::{self, selectors};
use common::ops::tools::{run, tool};
use common::ops::{dashboard, yaml, RULES};
use common::TestDb;
use serde_json::{json, Value};

const RUNAWAY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

/// A Prometheus server scraping its targets every 500 ms (a debug build on a
/// busy two-core machine can take longer than 150 ms to answer); killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target_port: u16) -> Self {
        Self::scraping_all(&[target_port])
    }

    /// Scrapes every sidecar port in `target_ports` as job eros-mcp, and
    /// returns once each has been scraped.
    fn scraping_all(target_ports: &[u16]) -> Self {
        let binary = tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = target_ports
            .iter()
            .map(|port| format!("'127.0.0.1:{port}'"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 450ms\n  evaluation_interval: 500ms\n\
                 scrape_configs:\n  - job_name: eros-mcp\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Self {
            child,
            port,
            _dir: dir,
        };
        prometheus.wait_until("up{job=\"eros-mcp\"} == 1", |v| {
            v.len() == target_ports.len()
        });
        prometheus
    }

    /// Evaluates `expr` now: `Ok(result vector)` or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = format!("/api/v1/query?query={}", urlencode(expr));
        let (status, body) = http_get(self.port, &url);
        let answer: Value =
            serde_json::from_str(&body).map_err(|_| format!("HTTP {status}: {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{expr}: {}", answer["error"]));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The single value of `expr` (panics when there is not exactly one series).
    fn value(&self, expr: &str) -> f64 {
        let result = self.query(expr).unwrap();
        assert_eq!(result.len(), 1, "{expr}: {result:?}");
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    }

    fn wait_until(&self, expr: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.query(expr);
            if let Ok(result) = &last {
                if done(result) {
                    return result.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {expr}; last answer: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_value(&self, expr: &str, expected: f64) {
        self.wait_until(expr, |r| {
            r.len() == 1
                && r[0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    == Some(expected)
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn observed(db: &TestDb, env: &[(&str, &str)]) -> (HttpServer, Prometheus) {
    let server = HttpServer::start_observed(db.path(), env);
    let prometheus = Prometheus::scraping(server.metrics_port.unwrap());
    (server, prometheus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_above_the_pool_size_shows_overflow_that_shrinks_back() {
    let db = TestDb::new().with_demo_data();
    let (server, prometheus) = observed(
        &db,
        &[
            ("EROS_DB_POOL_SIZE", "2"),
            ("EROS_DB_POOL_OVERFLOW", "2"),
            ("EROS_DB_POOL_PREWARM", "2"),
            ("EROS_DB_QUERY_TIMEOUT", "1.5"),
        ],
    );
    prometheus.wait_for_value("mcp_db_pool_size", 2.0);
    let client = Arc::new(server.client(None, &ERAS[0]).await);
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { call(&client, "query", json!({"sql": RUNAWAY})).await })
        })
        .collect();
    let prometheus = Arc::new(prometheus);
    let p = Arc::clone(&prometheus);
    tokio::task::spawn_blocking(move || {
        p.wait_for_value("mcp_db_pool_in_use", 4.0);
        p.wait_for_value("mcp_db_pool_overflow", 2.0);
    })
    .await
    .unwrap();
    for task in burst {
        task.await.unwrap();
    }
    let p = Arc::clone(&prometheus);
    tokio::task::spawn_blocking(move || {
        p.wait_for_value("mcp_db_pool_overflow", 0.0);
        p.wait_for_value("mcp_db_pool_in_use", 0.0);
        assert_eq!(p.value("mcp_db_pool_available"), 2.0);
        assert_eq!(p.value("mcp_db_connections_created_total"), 4.0);
        assert_eq!(p.value("mcp_db_pool_overflow_closed_total"), 2.0);
        assert_eq!(p.value("max_over_time(mcp_db_pool_overflow[1m])"), 2.0);
    })
    .await
    .unwrap();
}

#[test]
fn a_short_maximum_age_produces_recycles() {
    let db = TestDb::new().with_demo_data();
    let (_server, prometheus) = observed(
        &db,
        &[
            ("EROS_DB_CONN_MAX_AGE", "0.3"),
            ("EROS_DB_HEALTH_CHECK_INTERVAL", "0.2"),
        ],
    );
    prometheus.wait_until("mcp_db_connections_recycled_total >= 3", |r| !r.is_empty());
    // Recycled connections are replaced: the pre-warmed minimum holds.
    prometheus.wait_until("mcp_db_pool_available >= 3", |r| !r.is_empty());
    assert!(prometheus.value("mcp_db_connections_created_total") >= 6.0);
}

#[test]
fn a_database_that_cannot_be_opened_counts_failures() {
    let db = TestDb::new().with_demo_data();
    let (_server, prometheus) = observed(
        &db,
        &[
            ("EROS_DB_CONN_MAX_AGE", "0.3"),
            ("EROS_DB_HEALTH_CHECK_INTERVAL", "0.2"),
            ("EROS_DB_MAX_RETRIES", "0"),
        ],
    );
    prometheus.wait_for_value("mcp_db_connections_failed_total", 0.0);
    // The file is replaced by something that is not a database: every new
    // connection (recycling replaces them all) fails to open.
    std::fs::rename(db.path(), db.file("moved-away.db")).unwrap();
    std::fs::write(db.path(), vec![b'x'; 8192]).unwrap();
    prometheus.wait_until("mcp_db_connections_failed_total > 0", |r| !r.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_counts_checkout_timeouts() {
    let db = TestDb::new().with_demo_data();
    let (server, prometheus) = observed(
        &db,
        &[
            ("EROS_DB_POOL_SIZE", "1"),
            ("EROS_DB_POOL_OVERFLOW", "0"),
            ("EROS_DB_POOL_PREWARM", "1"),
            ("EROS_DB_POOL_TIMEOUT", "0.3"),
            ("EROS_DB_QUERY_TIMEOUT", "2"),
        ],
    );
    prometheus.wait_for_value("mcp_db_pool_checkout_timeouts_total", 0.0);
    let client = Arc::new(server.client(None, &ERAS[1]).await);
    let hog = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { call(&client, "query", json!({"sql": RUNAWAY})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let starved = call(&client, "query", json!({"sql": "SELECT 1"})).await;
    assert_eq!(starved.is_error, Some(true));
    let text = common::mcp::text(&starved);
    assert!(
        text.starts_with("POOL_EXHAUSTED") && text.ends_with("[retryable]"),
        "{text}"
    );
    hog.await.unwrap();
    tokio::task::spawn_blocking(move || {
        prometheus.wait_for_value("mcp_db_pool_checkout_timeouts_total", 1.0);
        prometheus.wait_until(
            "mcp_tool_calls_total{tool=\"query\",outcome=\"busy\"} == 1",
            |r| !r.is_empty(),
        );
    })
    .await
    .unwrap();
}

/// Every PromQL expression of the dashboard and the alert rules, with
/// Grafana's variables substituted.
fn ops_expressions() -> Vec<String> {
    promql::expressions(&dashboard(), &yaml(RULES))
        .unwrap_or_else(|err| panic!("{err}"))
        .into_iter()
        .map(|e| e.expr)
        .collect()
}

/// `a > 0.8` becomes `a > bool 0.8`, and `a > b` `a > bool b`: an alert
/// condition that returns a series whether or not it fires (for `a > bool
/// b`, one for each pair of series whose labels match, so an empty answer
/// still means the two sides never match).
fn as_bool_comparison(expr: &str) -> String {
    for op in [" >= ", " <= ", " == ", " != ", " > ", " < "] {
        if let Some(at) = expr.rfind(op) {
            let (left, right) = expr.split_at(at);
            let right = right[op.len()..].trim();
            if right.parse::<f64>().is_ok() || is_metric_name(right) {
                return format!("{left}{}bool {right}", op.trim_end().to_string() + " ");
            }
        }
    }
    expr.to_string()
}

/// Whether `text` is a bare metric name (a vector selector without matchers).
fn is_metric_name(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[test]
fn a_comparison_becomes_a_bool_comparison_of_a_threshold_or_a_metric() {
    assert_eq!(as_bool_comparison("a / b > 0.8"), "a / b > bool 0.8");
    assert_eq!(
        as_bool_comparison("up{job=\"x\"} == 0"),
        "up{job=\"x\"} == bool 0"
    );
    assert_eq!(as_bool_comparison("lag > max_lag"), "lag > bool max_lag");
    // Anything else on the right is left alone.
    assert_eq!(as_bool_comparison("a > rate(b[5m])"), "a > rate(b[5m])");
    assert_eq!(as_bool_comparison("a unless b"), "a unless b");
}

/// Calls that give every tool series the dashboard shows a sample: rows,
/// a truncated result, a refused write, an SQL error, an introspection
/// call, and a cancelled session.
async fn exercise_every_outcome(client: Client) {
    for args in [
        json!({"sql": "SELECT * FROM creators"}),
        json!({"sql": "DELETE FROM creators"}),
        json!({"sql": "SELECT nope"}),
    ] {
        call(&client, "query", args).await;
    }
    call(&client, "list_tables", json!({})).await;
    client.cancel().await.unwrap();
}

/// What the dashboard and the alerts are shown against: a primary with the
/// demo data, and a replicated deployment whose one replica is current,
/// beside a second replica that waits for a first restore that never
/// comes (no follower), so "a replica without a lag" has a real instance.
struct Observed {
    primary: HttpServer,
    cluster: Cluster,
    waiting: Replica,
    prometheus: Prometheus,
    _db: TestDb,
}

impl Observed {
    async fn start(primary_env: &[(&str, &str)]) -> Self {
        let db = TestDb::new().with_demo_data();
        let primary = HttpServer::start_observed(db.path(), primary_env);
        let cluster = Cluster::start(1).await;
        let waiting = Replica::serve(
            &cluster.dir.path().join("never-restored/replica.db"),
            &cluster.target,
            &[],
        );
        let prometheus = Prometheus::scraping_all(&[
            primary.metrics_port.unwrap(),
            cluster.replicas[0].metrics_port,
            waiting.metrics_port,
        ]);
        Self {
            primary,
            cluster,
            waiting,
            prometheus,
            _db: db,
        }
    }
}

/// The `instance` label Prometheus gives the sidecar on `port`.
fn instance(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// The `instance` labels of a query's result, sorted.
fn instances(result: &[Value]) -> Vec<String> {
    let mut found: Vec<String> = result
        .iter()
        .filter_map(|series| series["metric"]["instance"].as_str().map(str::to_string))
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_evaluates_and_returns_data() {
    let observed = Observed::start(&[("EROS_DB_MAX_ROWS", "5")]).await;
    exercise_every_outcome(observed.primary.client(None, &ERAS[0]).await).await;
    tokio::task::spawn_blocking(move || {
        let prometheus = &observed.prometheus;
        // Enough scrapes for rate() over every series.
        prometheus.wait_until(
            "count_over_time(mcp_tool_calls_total{tool=\"query\",outcome=\"ok\"}[1m]) >= 4",
            |r| !r.is_empty(),
        );
        prometheus.wait_until("mcp_db_replica_lag_seconds", |r| !r.is_empty());
        let expressions = ops_expressions();
        assert!(expressions.len() >= 30, "{expressions:?}");
        for expr in expressions {
            let result = prometheus
                .query(&expr)
                .unwrap_or_else(|err| panic!("{err}"));
            let shown = as_bool_comparison(&expr);
            let result = if result.is_empty() {
                prometheus.query(&shown).unwrap()
            } else {
                result
            };
            assert!(!result.is_empty(), "no data for {expr} (nor {shown})");
        }
    })
    .await
    .unwrap();
}

/// The expression of the alert named `name`.
fn alert_expr(name: &str) -> String {
    common::ops::alert(name)
        .and_then(|rule| rule["expr"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no alert {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_alerts_tell_a_current_replica_from_one_without_a_heartbeat() {
    let observed = Observed::start(&[]).await;
    let current = instance(observed.cluster.replicas[0].metrics_port);
    let waiting = instance(observed.waiting.metrics_port);
    tokio::task::spawn_blocking(move || {
        let prometheus = &observed.prometheus;
        prometheus.wait_until("mcp_db_replica_lag_seconds", |r| !r.is_empty());
        prometheus.wait_until("mcp_db_replica_max_lag_seconds", |r| r.len() == 2);
        // The lag is compared on the current replica only (the one with
        // both gauges), and is within its maximum (5 s in the test cluster).
        let lagging = alert_expr("EROSReplicaLagging");
        let compared = prometheus.query(&as_bool_comparison(&lagging)).unwrap();
        assert_eq!(instances(&compared), [current], "{lagging}: {compared:?}");
        assert_eq!(compared[0]["value"][1], "0", "{lagging}: {compared:?}");
        assert_eq!(prometheus.query(&lagging).unwrap(), Vec::<Value>::new());
        // The replica still waiting for its first restore, and only it.
        let no_heartbeat = alert_expr("EROSReplicaNoHeartbeat");
        let found = prometheus.query(&no_heartbeat).unwrap();
        assert_eq!(instances(&found), [waiting], "{no_heartbeat}: {found:?}");
        assert_eq!(
            found[0]["value"][1], "5",
            "its EROS_DB_REPLICA_MAX_LAG: {found:?}"
        );
    })
    .await
    .unwrap();
}

#[test]
fn the_exposition_passes_promtool_check_metrics() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(db.path(), &[]);
    let (status, body) = server.sidecar("/metrics");
    assert_eq!(status, 200);
    for name in [
        "mcp_db_connections_created_total",
        "mcp_db_connections_recycled_total",
        "mcp_db_connections_failed_total",
        "mcp_db_pool_size",
        "mcp_db_pool_available",
        "mcp_db_pool_in_use",
        "mcp_db_pool_overflow",
    ] {
        assert!(common::mcp::sample(&body, name).is_some(), "{name} missing");
    }
    let report = run("promtool", &["check", "metrics"], Some(&body));
    assert!(
        report.success && report.text.trim().is_empty(),
        "promtool: {}",
        report.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_exposition_passes_promtool_check_metrics() {
    let cluster = Cluster::start(1).await;
    let (status, body) = cluster.replicas[0].sidecar("/metrics");
    assert_eq!(status, 200);
    for name in [
        "mcp_db_replica_lag_seconds",
        "mcp_db_replica_max_lag_seconds",
    ] {
        assert!(common::mcp::sample(&body, name).is_some(), "{name} missing");
    }
    let report = run("promtool", &["check", "metrics"], Some(&body));
    assert!(
        report.success && report.text.trim().is_empty(),
        "promtool: {}",
        report.text
    );
}

/// The metric names with a sample in an exposition.
fn exported(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_in_the_exposition() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(db.path(), &[("EROS_DB_MAX_ROWS", "5")]);
    exercise_every_outcome(server.client(None, &ERAS[0]).await).await;
    let (status, body) = server.sidecar("/metrics");
    assert_eq!(status, 200);
    // And a read replica's (ready, so it holds a heartbeat).
    let cluster = Cluster::start(1).await;
    let (replica_status, replica_body) = cluster.replicas[0].sidecar("/metrics");
    assert_eq!(replica_status, 200);
    let exported: BTreeSet<String> = exported(&body)
        .into_iter()
        .chain(exported(&replica_body))
        .collect();
    let used: BTreeSet<String> = ops_expressions()
        .iter()
        .flat_map(|e| selectors(e))
        .map(|s| s.metric)
        .collect();
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts use metrics neither a primary nor a replica exports: {missing:?}"
    );
    // The check looks at the names it should: the pool, the tools, the
    // process, the replicas.
    assert!(used.len() >= 27, "{used:?}");
}

/// Two databases in one server: a real Prometheus scrapes a series of each
/// per-database metric for each database, told apart by the `database`
/// label, and the exposition stays valid for promtool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_database_has_its_own_series_labelled_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["shop", "archive"] {
        let conn = rusqlite::Connection::open(dir.path().join(format!("{name}.db"))).unwrap();
        conn.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY);")
            .unwrap();
    }
    let file = dir.path().join("databases.toml");
    std::fs::write(
        &file,
        "[databases.shop]\npath = \"shop.db\"\nmigrate = false\npool_size = 3\n\
         [databases.archive]\npath = \"archive.db\"\nmigrate = false\npool_size = 2\n",
    )
    .unwrap();
    let metrics_port = free_port();
    let addr = format!("127.0.0.1:{metrics_port}");
    let server = common::in_process::InProcessServer::start(
        &dir.path().join("unused.db"),
        &[
            ("EROS_DATABASES_FILE", file.to_str().unwrap()),
            ("EROS_METRICS_ADDR", &addr),
        ],
    );
    let client = server.client(None, &ERAS[0]).await;
    call(
        &client,
        "query",
        json!({"sql": "SELECT count(*) FROM items", "database": "archive"}),
    )
    .await;
    tokio::task::spawn_blocking(move || {
        let prometheus = Prometheus::scraping(metrics_port);
        let sizes = prometheus.wait_until("mcp_db_pool_size", |r| r.len() == 2);
        let mut by_name: Vec<(String, String)> = sizes
            .iter()
            .map(|series| {
                (
                    series["metric"]["database"].as_str().unwrap().to_string(),
                    series["value"][1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        by_name.sort();
        assert_eq!(
            by_name,
            [
                ("archive".to_string(), "2".to_string()),
                ("shop".to_string(), "3".to_string())
            ]
        );
        for metric in [
            "mcp_db_file_size_bytes",
            "mcp_db_writable",
            "mcp_db_connections_created_total",
            "mcp_db_statement_threads",
        ] {
            let result = prometheus.query(metric).unwrap();
            assert_eq!(result.len(), 2, "{metric}: {result:?}");
        }
        let (_, body) = http_get(metrics_port, "/metrics");
        let report = run("promtool", &["check", "metrics"], Some(&body));
        assert!(
            report.success && report.text.trim().is_empty(),
            "promtool: {}",
            report.text
        );
    })
    .await
    .unwrap();
    client.cancel().await.unwrap();
}
