//! The operations sidecar of the real binary: probes tell the truth before
//! warm-up, under saturation and during shutdown; SIGTERM loses no
//! acknowledged write; a taken port is handled as each transport's users
//! expect; probes never count as pool checkouts.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mcp::{call, free_port, http_get, rows, HttpServer, ERAS};
use common::writes::{assert_every_write_present, spawn_writer};
use common::TestDb;
use serde_json::json;

const RUNAWAY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn not_ready_until_the_database_is_open_but_live_throughout() {
    let db = TestDb::new().with_demo_data();
    // Another process holds the database: startup waits in its migrations.
    let locker = rusqlite::Connection::open(db.path()).unwrap();
    locker
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; UPDATE creators SET tier = tier WHERE id = 1;")
        .unwrap();
    let server = HttpServer::spawn(
        db.path(),
        &[
            ("EROS_DB_BUSY_TIMEOUT", "1"),
            ("EROS_DB_MAX_RETRIES", "8"),
            ("EROS_DB_RETRY_DELAY", "0.2"),
        ],
        Some(free_port()),
    );
    wait_for("the sidecar", || server.sidecar("/livez").0 == 200);
    let (status, body) = server.sidecar("/readyz");
    assert_eq!(status, 503, "{body}");
    let reason: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reason["ready"], json!(false));
    assert!(
        reason["reason"].as_str().unwrap().starts_with("starting"),
        "{body}"
    );
    locker
        .execute_batch("COMMIT; PRAGMA locking_mode = NORMAL;")
        .unwrap();
    drop(locker);
    wait_for("readiness", || server.sidecar("/readyz").0 == 200);
    assert_eq!(server.sidecar("/livez"), (200, "ok".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_fast_and_stays_ready_when_every_connection_is_busy() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(
        db.path(),
        &[
            ("EROS_DB_POOL_SIZE", "1"),
            ("EROS_DB_POOL_OVERFLOW", "0"),
            ("EROS_DB_POOL_PREWARM", "1"),
            ("EROS_DB_QUERY_TIMEOUT", "4"),
        ],
    );
    let client = Arc::new(server.client(None, &ERAS[0]).await);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { call(&client, "query", json!({"sql": RUNAWAY})).await })
        })
        .collect();
    let metrics_port = server.metrics_port.unwrap();
    let in_use = move || {
        let (_, body) = http_get(metrics_port, "/metrics");
        body.lines()
            .any(|l| l == "mcp_db_pool_in_use{database=\"main\"} 1")
            && body
                .lines()
                .any(|l| l == "mcp_db_pool_waiters{database=\"main\"} 1")
    };
    tokio::task::spawn_blocking(move || wait_for("a saturated pool", in_use))
        .await
        .unwrap();
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = tokio::task::spawn_blocking(move || http_get(metrics_port, "/readyz"))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "readyz took {:?}",
            started.elapsed()
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("saturated"), "{body}");
    }
    for task in busy {
        let result = task.await.unwrap();
        assert_eq!(result.is_error, Some(true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_turns_readyz_503_at_once_and_interrupts_calls_after_the_grace() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(
        db.path(),
        &[
            ("EROS_MCP_SHUTDOWN_GRACE", "1"),
            ("EROS_DB_QUERY_TIMEOUT", "60"),
        ],
    );
    let client = Arc::new(server.client(None, &ERAS[1]).await);
    let running = {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            let request = rmcp::model::CallToolRequestParams::new("query")
                .with_arguments(json!({"sql": RUNAWAY}).as_object().unwrap().clone());
            client.call_tool(request).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics_port = server.metrics_port.unwrap();
    let started = Instant::now();
    server.signal_term();
    let (status, body) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let answer = http_get(metrics_port, "/readyz");
            if answer.0 == 503 || Instant::now() > deadline {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        http_get(metrics_port, "/livez").0,
        200,
        "alive while draining"
    );
    let mut server = server;
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    // The runaway statement was interrupted after the grace period, not left behind.
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
    assert!(
        !db.file("test.db-wal").exists()
            || std::fs::metadata(db.file("test.db-wal")).unwrap().len() == 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_writes_keeps_every_acknowledged_write_and_empties_the_wal() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(db.path(), &[("EROS_DB_READ_ONLY", "false")]);
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let client = server.client(None, &ERAS[writer % 2]).await;
        writers.push(spawn_writer(
            client,
            format!("term-{writer}"),
            Arc::clone(&acknowledged),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.signal_term();
    let mut server = server;
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    for writer in writers {
        writer.abort();
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "too few writes to mean anything: {}",
        acknowledged.len()
    );
    let wal = db.file("test.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL left behind"
    );
    assert_every_write_present(db.path(), &acknowledged);
}

#[test]
fn an_http_server_fails_fast_when_the_metrics_port_is_taken() {
    let db = TestDb::new().with_demo_data();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let mut server = HttpServer::spawn(db.path(), &[], Some(taken));
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
}

#[tokio::test]
async fn a_stdio_server_serves_without_metrics_when_the_port_is_taken() {
    let db = TestDb::new().with_demo_data();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let client =
        common::mcp::stdio_client(db.path(), &[("EROS_METRICS_ADDR", &taken)], &ERAS[0]).await;
    let result = call(&client, "query", json!({"sql": "SELECT 1"})).await;
    assert_eq!(rows(&result)["rows"], json!([[1]]));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn stats_and_metrics_report_the_pool() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(db.path(), &[("EROS_DB_POOL_SIZE", "4")]);
    let client = server.client(None, &ERAS[0]).await;
    call(&client, "query", json!({"sql": "SELECT * FROM creators"})).await;
    call(&client, "query", json!({"sql": "DELETE FROM creators"})).await;
    let (status, body) = server.sidecar("/stats");
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["pool_size"], json!(4));
    let (_, metrics) = server.sidecar("/metrics");
    for line in [
        "mcp_db_pool_size{database=\"main\"} 4",
        "mcp_db_pool_max_connections{database=\"main\"} 9",
        "mcp_ready 1",
        "mcp_tool_calls_total{outcome=\"ok\",tool=\"query\"} 1",
        "mcp_tool_calls_total{outcome=\"denied\",tool=\"query\"} 1",
        "mcp_tool_rows_returned_total{tool=\"query\"} 40",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    client.cancel().await.unwrap();
}

/// The lines of the exposition that the pool's counters and histograms make.
fn pool_series(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter(|l| l.starts_with("mcp_db_pool") || l.starts_with("mcp_db_connection"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_on_a_saturated_pool_leave_every_pool_counter_and_histogram_unchanged() {
    use eros_mcp::sidecar::{Metrics, Readiness};
    let db = TestDb::new().with_demo_data();
    let config = eros_mcp::config::DatabaseConfig {
        pool_size: 2,
        max_overflow: 0,
        prewarm: 2,
        checkout_timeout: Duration::from_millis(100),
        ..db.config.clone()
    };
    let metrics = Arc::new(Metrics::new());
    let pool = eros_mcp::database::open(&config, metrics.pool_observer("main")).unwrap();
    metrics.watch_database(
        "main",
        Arc::new(eros_mcp::engine::QueryEngine::new(
            Arc::clone(&pool),
            config.engine_settings(),
        )),
    );
    metrics.watch_ready(|| true);
    let readiness = Readiness::new(
        Some(eros_mcp::sqlite::migrations::latest_version()),
        Duration::from_secs(30),
        eros_mcp::shutdown::Shutdown::new(),
    );
    readiness.pool_ready(Arc::clone(&pool));
    let held: Vec<_> = (0..2).map(|_| pool.get().unwrap()).collect();
    let stats = pool.stats();
    let series = pool_series(&metrics.render());
    for _ in 0..10 {
        let status = readiness.check().await;
        assert!(status.ready, "{status:?}");
        assert_eq!(status.status, "ready (saturated)");
    }
    assert_eq!(pool.stats(), stats, "a probe touched the pool's counters");
    assert_eq!(pool_series(&metrics.render()), series);
    drop(held);
    pool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_while_the_pool_cannot_serve_within_its_checkout_timeout() {
    use eros_mcp::sidecar::Readiness;
    let db = TestDb::new().with_demo_data();
    let config = eros_mcp::config::DatabaseConfig {
        pool_size: 1,
        max_overflow: 0,
        prewarm: 1,
        checkout_timeout: Duration::from_millis(100),
        ..db.config.clone()
    };
    let pool = eros_mcp::database::open(&config, Arc::new(eros_mcp::pool::NoObserver)).unwrap();
    let readiness = Readiness::new(
        Some(eros_mcp::sqlite::migrations::latest_version()),
        Duration::from_secs(30),
        eros_mcp::shutdown::Shutdown::new(),
    );
    readiness.pool_ready(Arc::clone(&pool));
    let held = pool.get().unwrap();
    // Saturated but not yet failing anyone: still ready.
    assert!(readiness.check().await.ready);
    assert!(pool.get().is_err(), "the checkout times out");
    let status = readiness.check().await;
    assert!(!status.ready, "{status:?}");
    assert!(
        status
            .reason
            .as_deref()
            .unwrap()
            .contains("EROS_DB_POOL_TIMEOUT"),
        "{status:?}"
    );
    drop(held);
    let status = readiness.check().await;
    assert!(
        status.ready,
        "ready again once a connection is free: {status:?}"
    );
    pool.close().unwrap();
}
