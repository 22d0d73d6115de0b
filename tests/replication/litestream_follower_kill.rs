//! A replica's follower (`litestream restore -f`, run by the replica
//! server itself) SIGKILLed while it applies a 50,000-row UPDATE. Litestream
//! 0.5.17 writes the pages in place, without a journal, so the copy it
//! leaves is usually torn. The replica must never serve it: from the kill
//! on, every query is refused with a retryable error or sees the whole
//! transaction, `/readyz` turns 503 at once and stays so until a fresh
//! restore is in place, and then the replica serves all of the UPDATE.
//!
//! The primary writes its heartbeat every 30 s here, so the first change to
//! the copy after the UPDATE is the UPDATE's own apply, and the kill lands
//! inside it (its thousands of page writes take milliseconds; the file is
//! polled every 0.2 ms). Readers query the replica all along. As a control
//! that the danger is real, the copy the dead follower left (kept by a hard
//! link, as the replica removes its own name at once) is read directly and
//! printed: it usually shows part of the transaction.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::litestream::{eventually, execute, try_select, Cluster};
use common::mcp::{call, rows, text};
use serde_json::{json, Value};

const ROWS: i64 = 50_000;
const COUNT_BY_GENERATION: &str = "SELECT v, count(*) FROM t GROUP BY v";

/// What a reader of the file at `path` sees now, read as it is on disk
/// (`immutable` takes no locks): the rows by `v`, or the error, and
/// `PRAGMA integrity_check`.
fn seen_on_disk(path: &Path) -> String {
    let uri = format!("file:{}?immutable=1", path.display());
    let conn = rusqlite::Connection::open_with_flags(
        uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let seen = conn.prepare(COUNT_BY_GENERATION).and_then(|mut s| {
        s.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()
    });
    let integrity: rusqlite::Result<String> =
        conn.query_row("PRAGMA integrity_check", [], |row| row.get(0));
    format!("{seen:?}, integrity_check {integrity:?}")
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// `mcp_replica_follower_restarts_total` on the replica's sidecar.
fn follower_restarts(replica: &common::litestream::Replica) -> u64 {
    let (_, exposition) = replica.sidecar("/metrics");
    common::mcp::sample(&exposition, "mcp_replica_follower_restarts_total")
        .map(|value| value as u64)
        .unwrap_or_else(|| panic!("no mcp_replica_follower_restarts_total in {exposition}"))
}

/// One query a reader made: when it was sent, and what came back (the rows,
/// or the error's text).
#[derive(Debug)]
struct Answer {
    sent: Instant,
    got: Result<Value, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_apply_never_has_its_copy_served_and_a_fresh_restore_is() {
    let cluster = Cluster::start_supervising(
        1,
        &[("EROS_DB_HEARTBEAT_INTERVAL", "30")],
        &[("EROS_DB_REPLICA_MAX_LAG", "300")],
    )
    .await;
    let replica = &cluster.replicas[0];
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
    let probe = replica.client().await;
    eventually("the rows on the replica", async || {
        try_select(&probe, "SELECT count(*) FROM t WHERE v = 1").await == Some(json!([[ROWS]]))
    })
    .await;
    let follower = replica
        .supervised_follower()
        .expect("the replica server runs its follower");
    let restarts_before = follower_restarts(replica);

    // Readers query the replica from now until the fresh copy is served.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let client = replica.client().await;
        let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let result = call(&client, "query", json!({ "sql": COUNT_BY_GENERATION })).await;
                let got = if result.is_error == Some(true) {
                    Err(text(&result))
                } else {
                    Ok(rows(&result)["rows"].clone())
                };
                answers.lock().unwrap().push(Answer { sent, got });
            }
        }));
    }

    // One transaction rewriting every page of the table (about 12 MB); the
    // follower is SIGKILLed as soon as it starts writing the copy. A hard
    // link keeps the file it writes for the control below.
    let copy = replica.copy.clone();
    let torn: PathBuf = copy.with_file_name("left-by-the-dead-follower.db");
    std::fs::hard_link(&copy, &torn).unwrap();
    let before = modified(&copy);
    execute(&writer, "UPDATE t SET v = 2, b = randomblob(200)").await;
    let killed_at = tokio::task::spawn_blocking({
        let copy = copy.clone();
        move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while modified(&copy) == before {
                assert!(
                    Instant::now() < deadline,
                    "the follower never applied the UPDATE"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            // SAFETY: a signal to a process of this test's making.
            assert_eq!(unsafe { libc::kill(follower, libc::SIGKILL) }, 0);
            Instant::now()
        }
    })
    .await
    .unwrap();
    eprintln!(
        "the copy the dead follower left (v = 1 before the UPDATE, 2 after): {}",
        seen_on_disk(&torn)
    );

    // Not ready at once, saying why.
    let deadline = Instant::now() + Duration::from_secs(2);
    let (status, body) = loop {
        let (status, body) = replica.sidecar("/readyz");
        if status == 503 || Instant::now() >= deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status, 503, "/readyz after the follower was killed: {body}");
    assert!(body.contains("follower"), "{body}");

    // Then a fresh copy, by a new follower, served whole.
    eventually(
        "the whole UPDATE served by the replica, ready",
        async || {
            replica.ready()
                && try_select(&probe, COUNT_BY_GENERATION).await == Some(json!([[2, ROWS]]))
        },
    )
    .await;
    let ready_at = Instant::now();
    let restarted = replica.supervised_follower().expect("a new follower runs");
    assert_ne!(restarted, follower);
    assert!(
        follower_restarts(replica) > restarts_before,
        "mcp_replica_follower_restarts_total did not count the restart"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let mut refused = 0;
    for answer in &answers {
        match &answer.got {
            Ok(rows) if *rows == json!([[2, ROWS]]) => {}
            // The old generation, whole, only from a query sent before the kill.
            Ok(rows) if *rows == json!([[1, ROWS]]) && answer.sent < killed_at => {}
            Err(error)
                if error.starts_with("REPLICA_RESTORING:")
                    && error.contains("follower")
                    && error.ends_with("[retryable]") =>
            {
                refused += 1;
                assert!(
                    answer.sent < ready_at,
                    "refused after the fresh copy was served: {error}"
                );
            }
            other => panic!(
                "a reader sent a query {:?} after the kill and got {other:?}",
                answer.sent.saturating_duration_since(killed_at)
            ),
        }
    }
    eprintln!(
        "{} queries, {refused} refused while the fresh copy was restored",
        answers.len()
    );
    assert!(
        refused > 0,
        "no query was refused between the kill and the fresh copy"
    );
    let after_kill = answers.iter().filter(|a| a.sent > killed_at).count();
    assert!(after_kill > refused, "no query was answered after the kill");
}
