//! The query engine: typed compact results, caps and cursors, interrupts,
//! schema questions and writes, on a real SQLite file.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use eros_mcp::engine::{
    Cell, ExecuteRequest, QueryEngine, QueryError, QueryRequest, SqlParam, SqlParams, TableDetail,
};
use eros_mcp::mcp::rows::JsonRows;
use tokio_util::sync::CancellationToken;

fn engine(db: &TestDb) -> QueryEngine {
    QueryEngine::new(db.warm_pool(), db.config.engine_settings())
}

fn request(sql: &str) -> QueryRequest {
    QueryRequest {
        sql: sql.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn values_keep_their_type_in_compact_rows() {
    let db = TestDb::new();
    let engine = engine(&db);
    let out = engine
        .query(
            request("SELECT 9223372036854775807 AS big, 1.5 AS real, NULL AS none, 'text' AS t, x'00ff' AS b"),
            &JsonRows,
            None)
        .await
        .unwrap();
    assert_eq!(out.columns, ["big", "real", "none", "t", "b"]);
    assert_eq!(
        out.rows,
        vec![vec![
            Cell::Integer(9223372036854775807),
            Cell::Real(1.5),
            Cell::Null,
            Cell::text("text"),
            Cell::blob([0x00, 0xff]),
        ]]
    );
    assert_eq!(out.row_count, 1);
    assert!(!out.truncated);
    assert!(out.next_cursor.is_none());
    assert_eq!(
        serde_json::to_string(&out.rows[0][0]).unwrap(),
        "9223372036854775807",
        "64-bit integers are exact in the JSON text"
    );
}

#[tokio::test]
async fn positional_and_named_parameters_are_bound() {
    let db = TestDb::new();
    let engine = engine(&db);
    let positional = QueryRequest {
        params: Some(SqlParams::Positional(vec![
            SqlParam::Integer(2),
            SqlParam::Text("x".into()),
        ])),
        ..request("SELECT ? * 10, ?")
    };
    assert_eq!(
        engine
            .query(positional, &JsonRows, None)
            .await
            .unwrap()
            .rows,
        vec![vec![Cell::Integer(20), Cell::text("x")]]
    );
    let named = QueryRequest {
        params: Some(SqlParams::Named(
            [("n".to_string(), SqlParam::Real(0.5))].into(),
        )),
        ..request("SELECT :n * 2")
    };
    assert_eq!(
        engine.query(named, &JsonRows, None).await.unwrap().rows,
        vec![vec![Cell::Real(1.0)]]
    );
}

#[tokio::test]
async fn a_parameter_count_mismatch_is_an_invalid_argument() {
    let db = TestDb::new();
    let err = engine(&db)
        .query(request("SELECT ?"), &JsonRows, None)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::InvalidArgument(_)), "{err:?}");
}

#[tokio::test]
async fn rows_beyond_max_rows_are_truncated_with_a_cursor_that_continues() {
    let db = TestDb::new();
    let engine = engine(&db);
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 25) SELECT x FROM c";
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let out = engine
            .query(
                QueryRequest {
                    max_rows: Some(10),
                    cursor: cursor.clone(),
                    ..request(sql)
                },
                &JsonRows,
                None,
            )
            .await
            .unwrap();
        pages += 1;
        seen.extend(out.rows.iter().map(|r| r[0].as_integer().unwrap()));
        assert_eq!(out.truncated, out.next_cursor.is_some());
        match out.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (1..=25).collect::<Vec<i64>>());
}

#[tokio::test]
async fn max_rows_of_zero_is_refused_with_the_reason() {
    let db = TestDb::new();
    let err = engine(&db)
        .query(
            QueryRequest {
                max_rows: Some(0),
                ..request("SELECT 1")
            },
            &JsonRows,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueryError::InvalidArgument(m) if m.contains("at least 1")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_server_row_limit_caps_what_an_agent_asks_for() {
    let mut db = TestDb::new();
    db.config.max_rows = 5;
    let out = engine(&db)
        .query(
            QueryRequest {
                max_rows: Some(1000),
                ..request("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) SELECT x FROM c")
            },
            &JsonRows,
            None)
        .await
        .unwrap();
    assert_eq!(out.row_count, 5);
    assert!(out.truncated);
}

#[tokio::test]
async fn results_beyond_max_bytes_are_truncated() {
    let mut db = TestDb::new();
    db.config.max_bytes = 4096;
    let out = engine(&db)
        .query(
            request("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) SELECT x, printf('%.100c', 'a') FROM c"),
            &JsonRows,
            None)
        .await
        .unwrap();
    assert!(out.truncated);
    assert!(
        out.row_count > 10 && out.row_count < 50,
        "{}",
        out.row_count
    );
    assert!(serde_json::to_string(&out.rows).unwrap().len() <= 4096);
}

#[tokio::test]
async fn a_cursor_from_another_query_is_refused() {
    let db = TestDb::new();
    let engine = engine(&db);
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 25) SELECT x FROM c";
    let first = engine
        .query(
            QueryRequest {
                max_rows: Some(10),
                ..request(sql)
            },
            &JsonRows,
            None,
        )
        .await
        .unwrap();
    let err = engine
        .query(
            QueryRequest {
                cursor: first.next_cursor,
                ..request("SELECT 1")
            },
            &JsonRows,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::InvalidArgument(_)), "{err:?}");
}

const RUNAWAY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

#[tokio::test]
async fn a_runaway_query_is_interrupted_at_the_timeout_and_the_connection_stays_healthy() {
    let mut db = TestDb::new();
    db.config.query_timeout = Duration::from_millis(200);
    let engine = engine(&db);
    let before = engine.pool().stats();
    let started = Instant::now();
    let err = engine
        .query(request(RUNAWAY), &JsonRows, None)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, QueryError::Timeout(_)), "{err:?}");
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    // On a busy machine the interrupted statement may return after the
    // answer (abandoned); either way its connection comes back.
    until_no_statement_overruns(&engine).await;
    let after = engine.pool().stats();
    assert_eq!(after.active_connections, 0);
    assert_eq!(
        after.connections_created, before.connections_created,
        "no connection was lost"
    );
    engine
        .query(request("SELECT 1"), &JsonRows, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn cancelling_a_call_interrupts_its_query() {
    let db = TestDb::new();
    let engine = Arc::new(engine(&db));
    let cancel = CancellationToken::new();
    let task = {
        let engine = Arc::clone(&engine);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            engine
                .query(request(RUNAWAY), &JsonRows, Some(&cancel))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    cancel.cancel();
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, QueryError::Cancelled), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(engine.pool().stats().active_connections, 0);
}

#[tokio::test]
async fn list_tables_filters_by_pattern_and_counts_rows() {
    let db = TestDb::new().with_demo_data();
    let engine = engine(&db);
    let all = engine
        .list_tables(None, None, TableDetail::Names)
        .await
        .unwrap();
    let names: Vec<_> = all.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "content",
            "creator_revenue",
            "creators",
            "schedules",
            "subscribers",
            "subscriptions",
            "transactions"
        ]
    );
    let creators = all.tables.iter().find(|t| t.name == "creators").unwrap();
    assert_eq!((creators.kind.as_str(), creators.rows), ("table", Some(40)));
    assert!(creators.columns.is_none() && creators.ddl.is_none());

    let subs = engine
        .list_tables(Some("subscri".into()), None, TableDetail::Columns)
        .await
        .unwrap();
    assert_eq!(subs.tables.len(), 2);
    assert!(subs.tables[0]
        .columns
        .as_ref()
        .unwrap()
        .contains(&"id INTEGER PK".to_string()));

    let ddl = engine
        .list_tables(Some("creat_rs".into()), None, TableDetail::Ddl)
        .await
        .unwrap();
    assert_eq!(ddl.tables.len(), 1);
    assert!(ddl.tables[0]
        .ddl
        .as_ref()
        .unwrap()
        .starts_with("CREATE TABLE creators"));
}

#[tokio::test]
async fn describe_table_reports_columns_keys_and_indexes() {
    let db = TestDb::new().with_demo_data();
    let description = engine(&db)
        .describe_table("subscriptions".into())
        .await
        .unwrap();
    assert_eq!(description.kind, "table");
    let id = &description.columns[0];
    assert_eq!(
        (id.name.as_str(), id.declared_type.as_str(), id.primary_key),
        ("id", "INTEGER", Some(1))
    );
    let status = description
        .columns
        .iter()
        .find(|c| c.name == "status")
        .unwrap();
    assert!(!status.nullable);
    assert_eq!(status.default.as_deref(), Some("'active'"));
    assert!(description
        .foreign_keys
        .iter()
        .any(|fk| fk.column == "creator_id"
            && fk.references_table == "creators"
            && fk.on_delete == "CASCADE"));
    assert!(
        description
            .indexes
            .iter()
            .any(|i| i.name == "subscriptions_creator_status"
                && i.columns == ["creator_id", "status"])
    );
}

#[tokio::test]
async fn describe_table_never_pastes_the_name_into_sql() {
    let db = TestDb::new().with_demo_data();
    let engine = engine(&db);
    for name in [
        "creators); DROP TABLE creators; --",
        "creators' UNION SELECT sql FROM sqlite_master--",
    ] {
        let err = engine.describe_table(name.into()).await.unwrap_err();
        assert!(
            matches!(err, QueryError::InvalidArgument(_)),
            "{name}: {err:?}"
        );
    }
    assert!(engine.describe_table("creators".into()).await.is_ok());
}

#[tokio::test]
async fn explain_shows_the_query_plan() {
    let db = TestDb::new().with_demo_data();
    let out = engine(&db)
        .explain(
            "SELECT * FROM content WHERE creator_id = ? AND status = 'published'".into(),
            None,
        )
        .await
        .unwrap();
    assert!(
        out.plan.contains("USING INDEX content_creator_status"),
        "{}",
        out.plan
    );
}

#[tokio::test]
async fn explain_refuses_what_query_would_refuse() {
    let db = TestDb::new().with_demo_data();
    let err = engine(&db)
        .explain("DELETE FROM creators".into(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Denied(_)), "{err:?}");
}

#[tokio::test]
async fn the_schema_ddl_lists_tables_before_indexes() {
    let db = TestDb::new().with_demo_data();
    let ddl = engine(&db).schema_ddl().await.unwrap();
    let table = ddl.find("CREATE TABLE creators").unwrap();
    let index = ddl.find("CREATE INDEX").unwrap();
    assert!(table < index);
}

#[tokio::test]
async fn execute_commits_one_write_and_reports_changes() {
    let db = TestDb::new().with_demo_data();
    let engine = engine(&db);
    let out = engine
        .execute(
            ExecuteRequest {
                sql: "INSERT INTO creators (handle, display_name, email) VALUES (:h, 'New', 'new@example.com')".into(),
                params: Some(SqlParams::Named([("h".to_string(), SqlParam::Text("newbie".into()))].into())), database: None, },
            &JsonRows,
            None)
        .await
        .unwrap();
    assert_eq!(out.changes, 1);
    assert_eq!(out.last_insert_rowid, 41);
    let check = engine
        .query(
            request("SELECT handle FROM creators WHERE id = 41"),
            &JsonRows,
            None,
        )
        .await
        .unwrap();
    assert_eq!(check.rows, vec![vec![Cell::text("newbie")]]);
}

#[tokio::test]
async fn execute_returns_returning_rows() {
    let db = TestDb::new().with_demo_data();
    let out = engine(&db)
        .execute(
            ExecuteRequest {
                sql: "UPDATE creators SET status = 'paused' WHERE id IN (1, 2) RETURNING id".into(),
                params: None,
                database: None,
            },
            &JsonRows,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.changes, 2);
    assert_eq!(out.columns, ["id"]);
    assert_eq!(out.rows.len(), 2);
}

#[tokio::test]
async fn a_failed_write_is_rolled_back_and_names_the_constraint() {
    let db = TestDb::new().with_demo_data();
    let engine = engine(&db);
    let err = engine
        .execute(
            ExecuteRequest {
                sql: "INSERT INTO content (creator_id, title, kind) VALUES (9999, 't', 'video')"
                    .into(),
                params: None,
                database: None,
            },
            &JsonRows,
            None,
        )
        .await
        .unwrap_err();
    match &err {
        QueryError::Sql { code, message } => {
            assert_eq!(code.extended, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY);
            assert_eq!(code.name(), "SQLITE_CONSTRAINT_FOREIGNKEY");
            assert!(message.contains("FOREIGN KEY"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.pool().stats().active_connections, 0);
    let out = engine
        .query(request("SELECT count(*) FROM content"), &JsonRows, None)
        .await
        .unwrap();
    assert_eq!(out.rows, vec![vec![Cell::Integer(4000)]]);
}

#[tokio::test]
async fn execute_refuses_connection_level_statements() {
    let db = TestDb::new().with_demo_data();
    let engine = engine(&db);
    for sql in [
        "ATTACH DATABASE ':memory:' AS m",
        "PRAGMA foreign_keys = OFF",
        "PRAGMA query_only = OFF",
        "BEGIN",
        "COMMIT",
        "CREATE TEMP TABLE t (x)",
        "CREATE TEMP TRIGGER t AFTER INSERT ON creators BEGIN DELETE FROM creators; END",
        "SELECT load_extension('x')",
        "INSERT INTO creators (handle, display_name, email) VALUES ('a', 'b', 'c'); DROP TABLE creators",
    ] {
        let err = engine
            .execute(ExecuteRequest { sql: sql.into(), params: None, database: None }, &JsonRows, None)
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::Denied(_)), "{sql}: {err:?}");
    }
    let out = engine
        .query(request("SELECT count(*) FROM creators"), &JsonRows, None)
        .await
        .unwrap();
    assert_eq!(out.rows, vec![vec![Cell::Integer(40)]]);
}

#[tokio::test]
async fn execute_can_change_the_schema() {
    let db = TestDb::new().with_demo_data();
    let engine = engine(&db);
    engine
        .execute(
            ExecuteRequest {
                sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)".into(),
                params: None,
                database: None,
            },
            &JsonRows,
            None,
        )
        .await
        .unwrap();
    let tables = engine
        .list_tables(Some("notes".into()), None, TableDetail::Names)
        .await
        .unwrap();
    assert_eq!(tables.tables.len(), 1);
}

/// One SQLite step that no interrupt reaches: a LIKE pattern of 250 bytes
/// compared at each of two million positions (about half a second in a
/// release build, several seconds in a debug one).
const ONE_LONG_STEP: &str =
    "SELECT hex(zeroblob(1000000)) LIKE '%' || substr(hex(zeroblob(200)), 1, 250) || '1%'";

/// Waits until no statement overruns its deadline any more: a killed
/// worker's thread ends its wait at once, so this is moments, not the
/// statement's own length.
async fn until_no_statement_overruns(engine: &QueryEngine) {
    let give_up = Instant::now() + Duration::from_secs(2);
    while engine.overrunning() > 0 {
        assert!(
            Instant::now() < give_up,
            "the killed statement's call never ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_statement_inside_one_long_step_is_answered_at_its_deadline() {
    let mut db = TestDb::new();
    db.config.query_timeout = Duration::from_millis(100);
    let engine = engine(&db);
    let started = Instant::now();
    let err = engine
        .query(request(ONE_LONG_STEP), &JsonRows, None)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, QueryError::Timeout(_)), "{err:?}");
    // The deadline plus the stop slack (50 ms here), plus scheduling.
    assert!(took < Duration::from_millis(400), "answered after {took:?}");
    assert_eq!(engine.abandoned(), 1);
    assert_eq!(engine.killed(), 1, "its worker was killed");
    until_no_statement_overruns(&engine).await;
    assert_eq!(engine.pool().stats().active_connections, 0);
    engine
        .query(request("SELECT 1"), &JsonRows, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_abandoned_write_is_rolled_back_not_committed() {
    let mut db = TestDb::new();
    db.config.query_timeout = Duration::from_millis(100);
    let engine = engine(&db);
    let execute = |sql: &str| ExecuteRequest {
        sql: sql.into(),
        params: None,
        database: None,
    };
    engine
        .execute(execute("CREATE TABLE t (v)"), &JsonRows, None)
        .await
        .unwrap();
    let err = engine
        .execute(
            execute(&format!("INSERT INTO t (v) {ONE_LONG_STEP}")),
            &JsonRows,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Timeout(_)), "{err:?}");
    until_no_statement_overruns(&engine).await;
    let out = engine
        .query(request("SELECT count(*) FROM t"), &JsonRows, None)
        .await
        .unwrap();
    assert_eq!(
        out.rows,
        vec![vec![Cell::Integer(0)]],
        "the caller was told it timed out"
    );
}

#[tokio::test]
async fn a_value_past_the_value_limit_is_refused_naming_the_variable() {
    let db = TestDb::new();
    let engine = engine(&db);
    let err = engine
        .query(
            request("SELECT length(zeroblob(100000000))"),
            &JsonRows,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            QueryError::Limit { code, .. } if code.kind == rusqlite::ErrorCode::TooBig
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("EROS_DB_MAX_VALUE_BYTES"), "{err}");
    engine
        .query(request("SELECT 1"), &JsonRows, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn sql_longer_than_the_limit_is_refused_naming_the_variable() {
    let db = TestDb::new();
    let engine = engine(&db);
    let long = format!("SELECT 1 /* {} */", "x".repeat(200_000));
    let err = engine
        .query(request(&long), &JsonRows, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("EROS_DB_MAX_SQL_BYTES"), "{err}");
}

#[tokio::test]
async fn a_row_of_huge_values_is_cut_to_the_byte_budget_while_it_is_read() {
    let db = TestDb::new();
    let engine = engine(&db);
    // Fifty 2 MB values: 100 MB if each were copied up to its own cap.
    let columns = vec!["v"; 50].join(", ");
    let sql = format!("WITH t(v) AS (SELECT hex(zeroblob(1000000))) SELECT {columns} FROM t");
    let out = engine.query(request(&sql), &JsonRows, None).await.unwrap();
    let bytes: usize = out.rows[0]
        .iter()
        .map(|v| v.as_text().map_or(0, str::len))
        .sum();
    assert!(out.truncated);
    assert!(
        bytes <= engine.limits().max_bytes,
        "{bytes} bytes of values kept"
    );
}

#[tokio::test]
async fn a_sort_past_the_heap_ceiling_is_refused_as_out_of_memory_naming_the_variable() {
    // Its runs spill to temporary files, which live in SQLite's heap: the
    // ceiling counts them, and the refusal is SQLite's out-of-memory, not
    // an I/O error.
    let mut db = TestDb::new();
    db.config.hard_heap_limit_bytes = 16 * 1024 * 1024;
    let engine = engine(&db);
    let err = engine
        .query(
            request(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT 200000) \
                 SELECT count(*) FROM (SELECT hex(randomblob(100)) AS k FROM c ORDER BY k)",
            ),
            &JsonRows,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            QueryError::Limit { code, .. } if code.kind == rusqlite::ErrorCode::OutOfMemory
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("EROS_DB_HARD_HEAP_LIMIT_MIB"),
        "{err}"
    );
    // The control: the same sort of a tenth the rows fits.
    let out = engine
        .query(
            request(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT 20000) \
                 SELECT count(*) FROM (SELECT hex(randomblob(100)) AS k FROM c ORDER BY k)",
            ),
            &JsonRows,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.rows, vec![vec![Cell::Integer(20000)]]);
}

#[tokio::test]
async fn a_sort_larger_than_the_page_cache_spills_to_temporary_files_in_memory() {
    let db = TestDb::new();
    let engine = engine(&db);
    // Far more than the page cache holds: SQLite's sorter would spill.
    let out = engine
        .query(
            request(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT 300000) \
                 SELECT count(*) FROM (SELECT DISTINCT hex(i) || hex(randomblob(16)) FROM c ORDER BY 1)",
            ),
            &JsonRows,
            None)
        .await
        .unwrap();
    assert_eq!(out.rows, vec![vec![Cell::Integer(300000)]]);
    // Temporary storage in files (0, the default), so the sorter sorts runs
    // of the cache's size and merges them, on a connection opened as every
    // worker opens its own. The files are memory (src/sqlite/memory_temp.rs
    // tests that with a control); tests/statements/hostile_load.rs watches
    // the binary's TMPDIR.
    let conn = engine.pool().open_local().unwrap();
    let temp_store: i64 = conn
        .with_access(eros_mcp::sqlite::access::Access::Trusted, |c| {
            c.query_row("PRAGMA temp_store", [], |row| row.get(0))
        })
        .unwrap()
        .unwrap();
    assert_eq!(temp_store, 0, "0 is the default: files");
}

#[tokio::test]
async fn statements_stuck_past_their_deadline_leave_the_pool_to_everyone_else() {
    let mut db = TestDb::new();
    db.config.query_timeout = Duration::from_millis(100);
    db.config.pool_size = 2;
    db.config.max_overflow = 0;
    db.config.prewarm = 2;
    let engine = Arc::new(engine(&db));
    // As many stuck statements as the pool has connections.
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let engine = Arc::clone(&engine);
            tokio::spawn(async move { engine.query(request(ONE_LONG_STEP), &JsonRows, None).await })
        })
        .collect();
    for call in stuck {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, QueryError::Timeout(_)), "{err:?}");
    }
    assert_eq!(engine.killed(), 2);
    // Their workers were killed; a plain query gets a fresh one.
    engine
        .query(request("SELECT 1"), &JsonRows, None)
        .await
        .unwrap();
    until_no_statement_overruns(&engine).await;
    let stats = engine.pool().stats();
    assert_eq!(stats.active_connections, 0, "{stats:?}");
    assert!(stats.total_connections <= 2, "{stats:?}");
}
