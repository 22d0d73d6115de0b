//! A follower (`litestream restore -f`) SIGKILLed while it applies a large
//! transaction to a replica's copy, and what README "Backups and read
//! replicas" tells operators to do then: delete the copy and its `-txid`
//! file and start the follower again. The copy must end whole (every row
//! of the transaction, `integrity_check` ok) and the eros-mcp replica,
//! which kept running, must serve it.
//!
//! The primary writes its heartbeat every 30 s here, so the first change to
//! the copy after the UPDATE is the UPDATE's own apply, and the kill lands
//! inside it (its thousands of page writes take milliseconds; the file is
//! polled every 0.2 ms). What a reader of the copy sees then is printed,
//! not asserted, as it depends on where the signal lands: Litestream 0.5.17
//! writes the pages in place, without a journal, so it usually shows part
//! of the transaction.
//!
//! Restarting the follower on the torn copy is not the remedy: Litestream
//! 0.5.17 resumes from its `-txid` file only when the replica's latest
//! snapshot is at or past that TXID, and otherwise exits ("cannot resume
//! follow mode: saved TXID ... is ahead of latest snapshot"), which is the
//! usual case between two snapshots (one a day in deploy/kubernetes).

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::litestream::{eventually, execute, try_select, Cluster};
use serde_json::json;

const ROWS: i64 = 50_000;

/// The copy read as it is on disk, with no follower running (`immutable`
/// takes no locks).
fn on_disk(copy: &Path) -> rusqlite::Connection {
    let uri = format!("file:{}?immutable=1", copy.display());
    rusqlite::Connection::open_with_flags(
        uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap()
}

/// `PRAGMA integrity_check` of the copy on disk.
fn integrity_on_disk(copy: &Path) -> String {
    on_disk(copy)
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// What a reader of the copy on disk sees now: the rows by `v`, or the error.
fn seen_on_disk(copy: &Path) -> String {
    let conn = on_disk(copy);
    let seen = conn
        .prepare("SELECT v, count(*) FROM t GROUP BY v")
        .and_then(|mut s| {
            s.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        });
    format!("{seen:?}, integrity_check {:?}", integrity_on_disk(copy))
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_apply_is_replaced_by_a_fresh_restore_the_replica_serves() {
    let mut cluster = Cluster::start_with(
        1,
        &[("EROS_DB_HEARTBEAT_INTERVAL", "30")],
        &[("EROS_DB_REPLICA_MAX_LAG", "300")],
    )
    .await;
    let writer = cluster.writer().await;
    execute(
        &writer,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, b BLOB NOT NULL)",
    )
    .await;
    execute(
        &writer,
        &format!(
            "INSERT INTO t WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
             WHERE i < {ROWS}) SELECT i, 1, randomblob(200) FROM n"
        ),
    )
    .await;
    let reader = cluster.replicas[0].client().await;
    eventually("the rows on the replica", async || {
        try_select(&reader, "SELECT count(*) FROM t WHERE v = 1").await == Some(json!([[ROWS]]))
    })
    .await;

    // One transaction rewriting every page of the table (about 12 MB).
    let copy = cluster.replicas[0].copy.clone();
    let before = modified(&copy);
    execute(&writer, "UPDATE t SET v = 2, b = randomblob(200)").await;
    // SIGKILL as soon as the follower starts writing the copy.
    let deadline = Instant::now() + Duration::from_secs(60);
    while modified(&copy) == before {
        assert!(
            Instant::now() < deadline,
            "the follower never applied the UPDATE"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    cluster.replicas[0].kill_follower();
    eprintln!(
        "the copy after the kill (v = 1 before the UPDATE, 2 after): {}",
        seen_on_disk(&copy)
    );

    // The remedy: the copy and its -txid file deleted, a new follower.
    std::fs::remove_file(&copy).unwrap();
    std::fs::remove_file(format!("{}-txid", copy.display())).unwrap();
    cluster.replicas[0].start_follower();
    eventually("the whole UPDATE on the replica", async || {
        try_select(&reader, "SELECT v, count(*) FROM t GROUP BY v").await
            == Some(json!([[2, ROWS]]))
    })
    .await;
    assert!(
        cluster.replicas[0].follower.as_mut().unwrap().running(),
        "the new follower exited"
    );
    cluster.replicas[0].kill_follower();
    assert_eq!(integrity_on_disk(&copy), "ok");
}
