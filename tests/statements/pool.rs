//! The pool behaves like SQLAlchemy's QueuePool, and its counters are
//! exact. Its items are worker processes, each holding one connection
//! opened as [`Pool::open_local`] opens one here (the hardening tests use
//! that); statements reach workers through the engine (tests/statements/engine.rs).

use crate::common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::TestDb;
use eros_mcp::pool::{ManagedConnection, Pool, PoolError};
use eros_mcp::sqlite::access::Access;
use rusqlite::limits::Limit;

/// Runs the server's own SQL (not an agent's) on a connection.
fn trusted(conn: &ManagedConnection, sql: &str) {
    conn.with_access(Access::Trusted, |c| c.execute_batch(sql))
        .unwrap()
        .unwrap();
}

#[test]
fn prewarm_opens_the_configured_connections_and_keeps_them_idle() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let stats = pool.stats();
    assert_eq!(stats.total_connections, 3);
    assert_eq!(stats.available, 3);
    assert_eq!(stats.active_connections, 0);
    assert_eq!(stats.connections_created, 3);
}

#[test]
fn an_opened_pool_serves_after_one_connection_and_opens_the_other_prewarmed_ones_in_the_background()
{
    let db = TestDb::new();
    let pool = Pool::open(
        &db.config.pool_settings(),
        db.config.connection_options(),
        Arc::new(eros_mcp::pool::NoObserver),
    )
    .unwrap();
    // The control: all three opened before `open` returned would read 3.
    assert_eq!(pool.stats().total_connections, 1, "{:?}", pool.stats());
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().total_connections < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.total_connections, stats.available),
        (3, 3),
        "{stats:?}"
    );
    assert_eq!(stats.connections_created, 3);
}

#[test]
fn sequential_checkouts_reuse_connections_instead_of_growing_the_pool() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    for _ in 0..10_000 {
        drop(pool.get().unwrap());
    }
    let stats = pool.stats();
    assert_eq!(stats.total_connections, 3);
    assert_eq!(stats.connections_created, 3);
    assert_eq!(stats.overflow_in_use, 0);
}

#[test]
fn a_burst_grows_into_overflow_and_shrinks_back_to_pool_size() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let held: Vec<_> = (0..15).map(|_| pool.get().unwrap()).collect();
    let busy = pool.stats();
    assert_eq!(busy.total_connections, 15);
    assert_eq!(busy.active_connections, 15);
    assert_eq!(busy.overflow_in_use, 5);
    assert_eq!(busy.available, 0);
    drop(held);
    let calm = pool.stats();
    assert_eq!(calm.total_connections, 10);
    assert_eq!(calm.available, 10);
    assert_eq!(calm.overflow_in_use, 0);
    assert_eq!(calm.overflow_closed, 5);
    assert_eq!(calm.connections_created, 15);
}

/// The worker processes of the connections checked out in a burst of 15.
fn pids_of_a_burst(pool: &Pool) -> std::collections::BTreeSet<u32> {
    let held: Vec<_> = (0..15).map(|_| pool.get().unwrap()).collect();
    held.iter().map(|conn| conn.control().pid()).collect()
}

#[test]
fn an_overflow_connection_reopened_at_once_reuses_the_closed_ones_worker_process() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let first = pids_of_a_burst(&pool);
    // QueuePool's counts: the five overflow connections closed...
    assert_eq!(pool.stats().overflow_closed, 5);
    let again = pids_of_a_burst(&pool);
    // ...and five opened again, on the processes the closed ones left.
    assert_eq!(pool.stats().connections_created, 20);
    assert_eq!(
        again, first,
        "no worker process started for the second burst"
    );
    // The control: past the linger the spares are gone, and a burst starts
    // processes again.
    std::thread::sleep(Duration::from_millis(2500));
    let later = pids_of_a_burst(&pool);
    assert_eq!(
        later.difference(&first).count(),
        5,
        "five new worker processes after the linger"
    );
}

#[test]
fn a_checkout_that_does_not_wait_never_takes_a_connection_from_one_that_waits() {
    let mut db = TestDb::new();
    db.config.pool_size = 1;
    db.config.max_overflow = 0;
    db.config.prewarm = 1;
    let pool = db.warm_pool();
    let held = pool.get().unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let waiter = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || {
            let conn = pool.get_timeout(Duration::from_secs(30));
            // Held until the checks below are done.
            let _ = released.recv();
            conn.map(drop)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.stats().waiters == 0 {
        assert!(Instant::now() < deadline, "the waiter never waited");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The connection comes back while the other checkout waits: it is the
    // waiter's, even though this one asks before the waiter wakes.
    drop(held);
    assert!(pool.try_checkout().is_none());
    release.send(()).unwrap();
    waiter.join().unwrap().unwrap();
    // The control: with nobody waiting, the idle connection is taken.
    assert!(pool.try_checkout().is_some());
}

#[test]
fn concurrent_returns_keep_exactly_pool_size_connections() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let barrier = Arc::new(Barrier::new(15));
    let threads: Vec<_> = (0..15)
        .map(|_| {
            let pool = Arc::clone(&pool);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                // Every thread reaches the barrier, failed or not, so a
                // checkout that fails (12 worker processes to start on a
                // loaded runner) fails the test instead of hanging it.
                let conn = pool.get_timeout(std::time::Duration::from_secs(60));
                barrier.wait();
                drop(conn.unwrap());
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.total_connections, 10);
    assert_eq!(stats.overflow_closed, stats.connections_created - 10);
}

#[test]
fn an_exhausted_pool_fails_after_the_checkout_timeout_with_a_clear_error() {
    let mut db = TestDb::new();
    db.config.pool_size = 2;
    db.config.max_overflow = 1;
    db.config.prewarm = 0;
    db.config.checkout_timeout = Duration::from_millis(500);
    let pool = db.pool();
    let _held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    let started = Instant::now();
    let err = pool.get().unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited <= Duration::from_millis(550),
        "waited {waited:?}"
    );
    assert!(
        matches!(err, PoolError::Exhausted { in_use: 3, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let message = err.to_string();
    for part in ["exhausted", "pool size 2", "overflow 1", "500ms"] {
        assert!(message.contains(part), "{message}");
    }
    let stats = pool.stats();
    assert_eq!(stats.checkout_timeouts, 1);
    assert_eq!(stats.waiters, 0);
}

#[test]
fn a_waiting_checkout_gets_the_first_connection_returned() {
    let mut db = TestDb::new();
    db.config.pool_size = 1;
    db.config.max_overflow = 0;
    let pool = Arc::new(db.pool());
    let held = pool.get().unwrap();
    let waiter = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || pool.get().map(|_| ()))
    };
    while pool.stats().waiters == 0 {
        std::thread::yield_now();
    }
    drop(held);
    waiter.join().unwrap().unwrap();
    assert_eq!(pool.stats().connections_created, 1);
}

#[test]
fn connections_past_their_max_age_are_recycled_on_checkout() {
    let mut db = TestDb::new();
    db.config.connection_max_age = Duration::from_millis(50);
    let pool = db.warm_pool();
    std::thread::sleep(Duration::from_millis(60));
    let conn = pool.get().unwrap();
    let stats = pool.stats();
    // Every idle connection it tried was too old; the one handed out is new.
    assert!(stats.connections_recycled >= 1);
    assert_eq!(
        stats.connections_created,
        3 + 1,
        "exactly one replacement was opened: {stats:?}"
    );
    assert!(conn.age() < Duration::from_millis(50));
}

#[test]
fn an_expired_connection_is_closed_on_return_not_kept() {
    let mut db = TestDb::new();
    db.config.connection_max_age = Duration::from_millis(50);
    db.config.prewarm = 0;
    let pool = db.pool();
    let conn = pool.get().unwrap();
    std::thread::sleep(Duration::from_millis(60));
    drop(conn);
    let stats = pool.stats();
    assert_eq!(stats.connections_recycled, 1);
    assert_eq!(stats.total_connections, 0);
}

#[test]
fn a_connection_whose_worker_died_is_replaced_by_the_health_check() {
    let mut db = TestDb::new();
    db.config.prewarm = 1;
    let pool = db.warm_pool();
    let pid = pool.get().unwrap().control().pid();
    // Killed from outside while idle in the pool (an OOM kill, an operator).
    // SAFETY: the pid is our own child's, not yet reaped.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(100));
    let conn = pool.get().unwrap();
    assert_ne!(conn.control().pid(), pid);
    drop(conn);
    let stats = pool.stats();
    assert_eq!(stats.health_check_failures, 1);
    assert_eq!(stats.connections_created, 2);
    assert_eq!(stats.total_connections, 1);
}

#[test]
fn a_transaction_left_open_is_rolled_back_when_the_connection_settles() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let conn = pool.open_local().unwrap();
    trusted(
        &conn,
        "CREATE TABLE t (x); BEGIN; INSERT INTO t VALUES (1);",
    );
    assert!(!conn.is_autocommit());
    assert_eq!(conn.settle(), (true, true), "rolled back, at rest");
    assert!(conn.is_autocommit());
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

#[test]
fn no_connection_leaks_after_ten_thousand_mixed_checkouts() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for i in 0..2_500 {
                    let conn = pool.get().unwrap();
                    match (thread + i) % 5 {
                        0 => drop(pool.try_get()),
                        1 => drop(pool.get().unwrap()),
                        _ => {}
                    }
                    drop(conn);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // A connection r2d2 opened for a waiter that a returned connection
    // served first joins the idle ones without being returned, so only a
    // maintenance pass trims it back to `pool_size`.
    pool.run_maintenance();
    let stats = pool.stats();
    assert_eq!(stats.active_connections, 0);
    assert_eq!(stats.waiters, 0);
    assert_eq!(stats.available, stats.total_connections);
    assert!(stats.total_connections <= 10, "{stats:?}");
    // Every connection ever opened is either still open or was closed for a counted reason.
    assert_eq!(
        stats.connections_created,
        stats.total_connections
            + stats.overflow_closed
            + stats.connections_recycled
            + stats.health_check_failures
    );
}

#[test]
fn maintenance_trims_idle_connections_and_restores_the_prewarmed_minimum() {
    let mut db = TestDb::new();
    db.config.connection_max_age = Duration::from_millis(80);
    let pool = db.warm_pool();
    std::thread::sleep(Duration::from_millis(100));
    pool.run_maintenance();
    let stats = pool.stats();
    assert_eq!(stats.connections_recycled, 3, "{stats:?}");
    assert_eq!(stats.total_connections, 3, "{stats:?}");
    assert_eq!(stats.connections_created, 6);
    assert_eq!(stats.active_connections, 0);
}

#[test]
fn background_maintenance_runs_on_its_interval_and_stops_with_the_pool() {
    let mut db = TestDb::new();
    db.config.connection_max_age = Duration::from_millis(50);
    db.config.maintenance_interval = Duration::from_millis(20);
    let pool = Pool::open(
        &db.config.pool_settings(),
        db.config.connection_options(),
        Arc::new(eros_mcp::pool::NoObserver),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().connections_recycled < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pool.stats().connections_recycled >= 3);
    let weak = Arc::downgrade(&pool);
    drop(pool);
    let deadline = Instant::now() + Duration::from_secs(2);
    while weak.upgrade().is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        weak.upgrade().is_none(),
        "maintenance must not keep the pool alive"
    );
}

#[test]
fn every_connection_gets_the_pragmas_and_the_hardening() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let held: Vec<_> = (0..3).map(|_| pool.open_local().unwrap()).collect();
    for conn in &held {
        let pragma = |name: &str| -> String {
            conn.with_access(Access::Trusted, |c| {
                c.query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
            })
            .unwrap()
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
        };
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("secure_delete"), "1");
        assert_eq!(pragma("busy_timeout"), "5000");
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "1", "NORMAL");
        assert_eq!(pragma("trusted_schema"), "0");
        assert_eq!(
            pragma("cache_size"),
            "-8192",
            "one connection may cache the whole 8 MiB heap limit"
        );
        use rusqlite::config::DbConfig;
        assert!(conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE).unwrap());
        assert!(!conn
            .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE)
            .unwrap());
        assert_eq!(conn.limit(Limit::SQLITE_LIMIT_ATTACHED).unwrap(), 0);
        let query_only: i64 = conn
            .query_row("PRAGMA query_only", [], |r| r.get(0))
            .unwrap();
        assert_eq!(query_only, 1, "connections rest read-only");
        assert_eq!(conn.access(), Access::ReadOnly);
    }
}

#[test]
fn attaching_another_database_is_refused() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let other = db.file("other.db");
    let err = pool
        .open_local()
        .unwrap()
        .execute_batch(&format!("ATTACH DATABASE '{}' AS other", other.display()))
        .unwrap_err();
    assert!(err.to_string().contains("not authorized"), "{err}");
    assert!(!other.exists());
}

#[test]
fn extension_loading_is_refused() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let err = pool
        .open_local()
        .unwrap()
        .query_row(
            "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libm.so.6')",
            [],
            |_| Ok(()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("not authorized"), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_counted_and_explained() {
    let mut db = TestDb::new();
    std::fs::write(db.path(), vec![b'x'; 4096]).unwrap();
    db.config.prewarm = 0;
    db.config.max_retries = 0;
    db.config.checkout_timeout = Duration::from_millis(200);
    let pool = db.pool();
    let err = pool.get().unwrap_err();
    assert!(matches!(err, PoolError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("not an SQLite database"), "{err}");
    assert!(pool.stats().connections_failed >= 1);
    assert_eq!(pool.stats().total_connections, 0);
}

#[test]
fn a_database_under_a_path_that_cannot_be_a_directory_is_explained() {
    let mut db = TestDb::new();
    let blocker = db.file("not-a-dir");
    std::fs::write(&blocker, b"file").unwrap();
    db.config.path = blocker.join("db.sqlite");
    db.config.prewarm = 1;
    db.config.max_retries = 0;
    db.config.checkout_timeout = Duration::from_millis(200);
    let err = db.pool().prewarm().unwrap_err();
    assert!(
        err.to_string().contains("its directory cannot be opened"),
        "{err}"
    );
}

#[test]
fn a_broken_database_recovers_once_the_file_is_fixed() {
    let mut db = TestDb::new();
    std::fs::write(db.path(), vec![b'x'; 4096]).unwrap();
    db.config.prewarm = 0;
    db.config.checkout_timeout = Duration::from_millis(200);
    let pool = db.pool();
    assert!(pool.get().is_err());
    std::fs::remove_file(db.path()).unwrap();
    db.config.checkout_timeout = Duration::from_secs(5);
    pool.get_timeout(Duration::from_secs(5)).unwrap();
}

#[test]
fn closing_checkpoints_the_wal_and_refuses_new_checkouts() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    trusted(
        &pool.open_local().unwrap(),
        "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);",
    );
    let wal = db.file("test.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    pool.close().unwrap();
    assert!(matches!(pool.get(), Err(PoolError::Closed)));
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
    drop(pool);
    // The connections live in worker processes, which exit (closing them)
    // just after the pool lets them go.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while wal.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !wal.exists(),
        "the WAL file is removed when the last connection closes"
    );
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
}

#[test]
fn a_connection_returns_to_read_only_after_a_write_scope() {
    let mut db = TestDb::new();
    db.config.pool_size = 1;
    db.config.max_overflow = 0;
    let pool = db.warm_pool();
    let conn = pool.open_local().unwrap();
    conn.with_access(Access::ReadWrite, |c| c.execute_batch("CREATE TABLE t (x)"))
        .unwrap()
        .unwrap();
    let err = conn.execute_batch("INSERT INTO t VALUES (1)").unwrap_err();
    assert!(err.to_string().contains("not authorized"), "{err}");
    assert_eq!(
        conn.settle(),
        (false, true),
        "the same connection, at rest again"
    );
}

#[test]
fn connections_taken_without_waiting_are_counted_in_use() {
    let db = TestDb::new();
    let pool = db.warm_pool();
    let idle = pool.try_get().expect("an idle connection");
    assert_eq!(pool.stats().active_connections, 1);
    assert_eq!(pool.stats().available, 2);
    drop(idle);
    let stats = pool.stats();
    assert_eq!(stats.active_connections, 0);
    assert_eq!(stats.available, 3);
    assert_eq!(
        stats.overflow_closed, 0,
        "a returned idle connection is kept"
    );
}

#[test]
fn closing_a_replicated_file_leaves_its_wal_to_litestream() {
    let mut db = TestDb::new();
    db.config.replication = eros_mcp::replication::Replication::Litestream;
    db.config.replica_url = Some("file:///unused".into());
    let pool = db.warm_pool();
    trusted(
        &pool.open_local().unwrap(),
        "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);",
    );
    let wal = db.file("test.db-wal");
    let before = std::fs::metadata(&wal).unwrap().len();
    assert!(before > 0);
    pool.close().unwrap();
    assert!(matches!(pool.get(), Err(PoolError::Closed)));
    drop(pool);
    // Neither a TRUNCATE checkpoint nor the last connection's close touched
    // the WAL: every commit is still in it, for Litestream to copy.
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), before);
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
}
