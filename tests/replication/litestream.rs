//! Backups and read replicas with the real Litestream binary: a primary
//! under `litestream replicate` to a `file://` replica, a follower
//! (`litestream restore -f`) keeping a copy current, and a replica server
//! (`EROS_DB_ROLE=replica`) reading it; `eros-mcp restore` bringing back the
//! latest state and a point in time.

use crate::common;

use std::time::Duration;

use common::litestream::{
    assert_succeeded, eventually, execute, follow, integrity, primary, replicate, restore, rfc3339,
    select, try_select, Replica, Target,
};
use common::mcp::{call, http_get};
use rmcp::model::ProtocolVersion;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_the_primary_reaches_a_replica_that_takes_no_writes() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::directory(&dir.path().join("replica"));
    let db = dir.path().join("primary.db");
    let primary = primary(&db, &target, &[]);
    let _replicate = replicate(&db, &target);
    let mut replica = Replica::serve(&dir.path().join("copy.db"), &target, &[]);
    // Before the follower's first restore there is nothing to serve.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        replica.sidecar("/readyz").0,
        503,
        "ready before any restore"
    );
    assert_eq!(replica.sidecar("/livez").0, 200);

    replica.start_follower();
    eventually("the replica to be ready", async || replica.ready()).await;
    let writer = primary.client(None, &ProtocolVersion::V_2025_11_25).await;
    execute(&writer, "CREATE TABLE notes (body TEXT)").await;
    execute(
        &writer,
        "INSERT INTO notes VALUES ('hello from the primary')",
    )
    .await;

    let reader = replica.client().await;
    eventually("the write on the replica", async || {
        try_select(&reader, "SELECT body FROM notes").await
            == Some(json!([["hello from the primary"]]))
    })
    .await;

    let tools = reader.list_all_tools().await.unwrap();
    assert!(
        tools.iter().all(|t| t.name != "execute"),
        "a replica offers execute"
    );
    for sql in [
        "INSERT INTO notes VALUES ('smuggled')",
        "DELETE FROM notes",
        "CREATE TABLE t (x)",
        "PRAGMA query_only = OFF",
    ] {
        let result = call(&reader, "query", json!({ "sql": sql })).await;
        assert_eq!(result.is_error, Some(true), "{sql} was not refused");
    }
    assert_eq!(
        select(&reader, "SELECT count(*) FROM notes").await,
        json!([[1]])
    );
    let (_, exposition) = http_get(replica.metrics_port, "/metrics");
    assert!(
        common::mcp::sample(&exposition, "mcp_db_replica_lag_seconds").is_some(),
        "no lag gauge in {exposition}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_brings_back_the_latest_state_and_a_point_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::directory(&dir.path().join("replica"));
    let live = dir.path().join("primary.db");
    let copy = dir.path().join("copy.db");
    let primary = primary(&live, &target, &[]);
    let _replicate = replicate(&live, &target);
    let _follower = follow(&target, &copy);
    let writer = primary.client(None, &ProtocolVersion::V_2025_11_25).await;
    execute(&writer, "CREATE TABLE events (name TEXT)").await;
    execute(&writer, "INSERT INTO events VALUES ('before')").await;
    let replicated = |name: &'static str| {
        let copy = copy.clone();
        move || {
            rusqlite::Connection::open_with_flags(&copy, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM events WHERE name = ?1",
                        [name],
                        |row| row.get::<_, i64>(0),
                    )
                })
                .is_ok_and(|n| n == 1)
        }
    };
    let before = replicated("before");
    eventually("the first write replicated", async || before()).await;
    // Litestream places a point in time by its files' times: keep the
    // chosen instant clear of both writes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let instant = rfc3339(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    execute(&writer, "INSERT INTO events VALUES ('after')").await;
    let after = replicated("after");
    eventually("the second write replicated", async || after()).await;

    let latest = dir.path().join("restored/latest.db");
    assert_succeeded(&restore(&target, &latest, &[]));
    assert_eq!(names(&latest), ["before", "after"]);
    assert_eq!(integrity(&latest), "ok");

    let point = dir.path().join("point.db");
    assert_succeeded(&restore(
        &target,
        &live,
        &["--timestamp", &instant, "--output", point.to_str().unwrap()],
    ));
    assert_eq!(names(&point), ["before"], "restored at {instant}");

    // Never over an existing file, never over the live database.
    let refused = restore(&target, &live, &["--output", live.to_str().unwrap()]);
    assert!(!refused.status.success(), "restored over the live database");
}

fn names(db: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM events ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}
