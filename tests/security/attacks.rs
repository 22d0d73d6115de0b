//! Every known read-only bypass is refused by SQLite itself through the
//! query tool's engine, with a clear error, and the database files are
//! unchanged afterwards.

use crate::common;

use common::attacks::{fingerprint, ALLOWED_READS, ATTACKS};
use common::TestDb;
use eros_mcp::engine::{Cell, QueryEngine, QueryError, QueryRequest};
use eros_mcp::mcp::rows::JsonRows;
use eros_mcp::sqlite::access::Access;

fn prepared_db() -> (TestDb, QueryEngine) {
    let db = TestDb::new();
    let pool = db.warm_pool();
    pool.open_local()
        .unwrap()
        .with_access(Access::Trusted, |c| {
            c.execute_batch(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
                 INSERT INTO users (name) VALUES ('ada'), ('grace');
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
        })
        .unwrap()
        .unwrap();
    let settings = db.config.engine_settings();
    (db, QueryEngine::new(pool, settings))
}

#[tokio::test]
async fn every_attack_is_refused_and_changes_nothing() {
    let (db, engine) = prepared_db();
    let before = fingerprint(db.dir.path());
    let dir = db.dir.path().display().to_string();
    for (name, sql) in ATTACKS {
        let sql = sql.replace("ATTACKDIR", &dir);
        let result = engine
            .query(
                QueryRequest {
                    sql,
                    ..Default::default()
                },
                &JsonRows,
                None,
            )
            .await;
        let err = match result {
            Ok(out) => panic!("{name} was not refused: {out:?}"),
            Err(err) => err,
        };
        assert!(
            matches!(
                err,
                QueryError::Denied(_) | QueryError::InvalidArgument(_) | QueryError::Sql { .. }
            ),
            "{name}: unexpected error kind {err:?}"
        );
        assert!(!err.to_string().is_empty());
        assert_eq!(
            fingerprint(db.dir.path()),
            before,
            "{name} changed the database files"
        );
    }
    let stats = engine.pool().stats();
    assert_eq!(stats.active_connections, 0);
    let rows = engine
        .query(
            QueryRequest {
                sql: "SELECT id, name FROM users ORDER BY id".into(),
                ..Default::default()
            },
            &JsonRows,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        rows.rows,
        vec![
            vec![Cell::Integer(1), Cell::text("ada")],
            vec![Cell::Integer(2), Cell::text("grace")]
        ]
    );
}

#[tokio::test]
async fn write_attempts_are_reported_as_denied_not_as_sql_errors() {
    let (_db, engine) = prepared_db();
    for sql in [
        "DELETE FROM users",
        "SELECT 1; DROP TABLE users",
        "VACUUM INTO '/tmp/x.db'",
        "PRAGMA query_only = OFF",
    ] {
        let err = engine
            .query(
                QueryRequest {
                    sql: sql.into(),
                    ..Default::default()
                },
                &JsonRows,
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::Denied(_)), "{sql}: {err:?}");
    }
}

#[tokio::test]
async fn ordinary_reads_still_work_under_the_same_rules() {
    let (_db, engine) = prepared_db();
    for (name, sql) in ALLOWED_READS {
        let result = engine
            .query(
                QueryRequest {
                    sql: sql.to_string(),
                    ..Default::default()
                },
                &JsonRows,
                None,
            )
            .await;
        assert!(result.is_ok(), "{name}: {result:?}");
    }
}
