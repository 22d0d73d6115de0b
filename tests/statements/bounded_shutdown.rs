//! Shutdown is bounded like a call: SIGTERM while a statement is inside one
//! long SQLite step (where no interrupt reaches) still exits within the
//! grace period plus a tenth, the final checkpoint's short waits, and
//! process teardown, instead of waiting for SQLite.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mcp::{call, HttpServer, ERAS};
use common::TestDb;
use serde_json::json;

/// One SQLite step of many seconds: a 250-byte LIKE pattern compared at each
/// of eight million positions.
const ONE_LONG_STEP: &str =
    "SELECT hex(zeroblob(4000000)) LIKE '%' || substr(hex(zeroblob(200)), 1, 250) || '1%'";

#[tokio::test]
async fn sigterm_during_one_long_step_exits_within_the_grace_period() {
    let db = TestDb::new();
    let server = HttpServer::start(
        db.path(),
        &[
            ("EROS_MCP_SHUTDOWN_GRACE", "1"),
            ("EROS_DB_QUERY_TIMEOUT", "120"),
        ],
    );
    let client = server.client(None, &ERAS[0]).await;
    let stuck = tokio::spawn(async move {
        let _ = call(&client, "query", json!({ "sql": ONE_LONG_STEP })).await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let took = started.elapsed();
    stuck.abort();
    assert!(status.success(), "exit status {status}");
    // Grace 1 s, a tenth more for interrupted calls, up to 1 s of waits in
    // the final checkpoint: well under the minutes the step itself takes.
    assert!(took < Duration::from_secs(4), "exited after {took:?}");
}

/// A write that takes a moment (a count to 300,000 before the row goes in),
/// so that SIGTERM finds writes running and waiting for the lock.
const SLOW_INSERT: &str = "INSERT INTO creators (handle, display_name, email) \
    SELECT :h, 'W', :h || '@example.org' WHERE (WITH RECURSIVE c(i) AS \
    (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000) SELECT count(*) FROM c) > 0";

/// What one write's caller was told.
#[derive(Debug, Clone, PartialEq)]
enum Told {
    Committed,
    Refused(String),
    /// No answer: the stream or the process went away.
    Nothing(String),
}

/// One writer: slow inserts until one is not acknowledged; each attempt
/// with when it started and ended, relative to `epoch`.
fn spawn_slow_writer(
    client: Arc<common::mcp::Client>,
    prefix: &'static str,
    epoch: Instant,
) -> tokio::task::JoinHandle<Vec<(String, Duration, Duration, Told)>> {
    tokio::spawn(async move {
        let mut attempts = Vec::new();
        for i in 0.. {
            let handle = format!("{prefix}-{i}");
            let arguments = json!({ "sql": SLOW_INSERT, "params": { "h": handle } });
            let request = rmcp::model::CallToolRequestParams::new("execute")
                .with_arguments(arguments.as_object().unwrap().clone());
            let started = epoch.elapsed();
            // Past the grace period, no answer is an answer of silence.
            let answer = tokio::time::timeout(Duration::from_secs(20), client.call_tool(request));
            let told = match answer.await {
                Ok(Ok(result)) if result.is_error != Some(true) => Told::Committed,
                Ok(Ok(result)) => Told::Refused(common::mcp::text(&result)),
                Ok(Err(err)) => Told::Nothing(err.to_string()),
                Err(_) => Told::Nothing("no answer within 20 s".into()),
            };
            let done = told == Told::Committed;
            attempts.push((handle, started, epoch.elapsed(), told));
            if !done {
                break;
            }
        }
        attempts
    })
}

/// Every write is in the file exactly when its caller was told it
/// committed; and at least one write running at SIGTERM was answered
/// with its success (the control: the test saw shutdown answer one).
fn assert_answers_match_the_file(
    db: &std::path::Path,
    attempts: &[(String, Duration, Duration, Told)],
    sigterm_at: Duration,
) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut present = conn
        .prepare("SELECT 1 FROM creators WHERE handle = ?")
        .unwrap();
    for (handle, _, _, told) in attempts {
        let in_file = present.exists([handle]).unwrap();
        assert_eq!(
            in_file,
            *told == Told::Committed,
            "{handle}: in the file {in_file}, its caller was told {told:?}"
        );
    }
    assert!(
        attempts
            .iter()
            .any(|(_, started, ended, told)| *started < sigterm_at
                && *ended > sigterm_at
                && *told == Told::Committed),
        "no write running at SIGTERM was answered: {attempts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_writes_over_http_answers_every_committed_write() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start(
        db.path(),
        &[
            ("EROS_DB_READ_ONLY", "false"),
            ("EROS_MCP_SHUTDOWN_GRACE", "10"),
        ],
    );
    let epoch = Instant::now();
    let mut writers = Vec::new();
    for prefix in ["a", "b", "c"] {
        let client = Arc::new(server.client(None, &ERAS[0]).await);
        writers.push(spawn_slow_writer(client, prefix, epoch));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sigterm_at = epoch.elapsed();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let mut attempts = Vec::new();
    for writer in writers {
        attempts.extend(writer.await.unwrap());
    }
    assert_answers_match_the_file(db.path(), &attempts, sigterm_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_writes_over_stdio_answers_every_committed_write() {
    let db = TestDb::new().with_demo_data();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_eros-mcp"));
    command
        .arg("serve")
        .arg("--db")
        .arg(db.path())
        .env_clear()
        .env("EROS_METRICS_ADDR", "off")
        .env("EROS_LOG", "warn")
        .env("EROS_DB_READ_ONLY", "false")
        .env("EROS_MCP_SHUTDOWN_GRACE", "10");
    let (client, pid) = eros_bench::client::stdio(
        command,
        std::process::Stdio::inherit(),
        &common::mcp::handshake(&ERAS[0]),
    )
    .await
    .unwrap();
    let client = Arc::new(client);
    let epoch = Instant::now();
    let writers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|prefix| spawn_slow_writer(Arc::clone(&client), prefix, epoch))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sigterm_at = epoch.elapsed();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid.unwrap() as i32, libc::SIGTERM) };
    let mut attempts = Vec::new();
    for writer in writers {
        attempts.extend(writer.await.unwrap());
    }
    assert_answers_match_the_file(db.path(), &attempts, sigterm_at);
}
