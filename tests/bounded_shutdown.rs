//! Shutdown is bounded like a call: SIGTERM while a statement is inside one
//! long SQLite step (where no interrupt reaches) still exits within the
//! grace period plus a tenth, the final checkpoint's short waits, and
//! process teardown, instead of waiting for SQLite.

mod common;

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
