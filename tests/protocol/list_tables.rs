//! `list_tables` as a schema search: by table name, by column name, or both,
//! on the demo database. Search text is untrusted: it is bound as a LIKE
//! pattern, never written into SQL.

use crate::common;

use common::TestDb;
use eros_mcp::engine::{QueryEngine, QueryError, TableDetail, TableList};

fn engine(db: &TestDb) -> QueryEngine {
    QueryEngine::new(db.warm_pool(), db.config.engine_settings())
}

fn listed(list: &TableList) -> Vec<(&str, Vec<&str>)> {
    list.tables
        .iter()
        .map(|t| {
            let columns = t.columns.iter().flatten().map(String::as_str).collect();
            (t.name.as_str(), columns)
        })
        .collect()
}

async fn by_column(engine: &QueryEngine, column: &str) -> TableList {
    engine
        .list_tables(None, Some(column.into()), TableDetail::Names)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_column_name_lists_only_the_tables_having_it_with_the_matching_columns() {
    let db = TestDb::new().with_demo_data();
    let found = by_column(&engine(&db), "creator_id").await;
    assert_eq!(
        listed(&found),
        [
            ("content", vec!["creator_id INTEGER NOT NULL"]),
            ("creator_revenue", vec!["creator_id INTEGER"]),
            ("schedules", vec!["creator_id INTEGER NOT NULL"]),
            ("subscriptions", vec!["creator_id INTEGER NOT NULL"]),
            ("transactions", vec!["creator_id INTEGER NOT NULL"]),
        ]
    );
    assert!(!found.truncated);
    assert_eq!(found.tables[0].rows, Some(4000), "row counts stay");
}

#[tokio::test]
async fn a_column_search_follows_the_rules_of_pattern() {
    let db = TestDb::new().with_demo_data();
    let engine = engine(&db);
    // Plain text matches anywhere in the name, in any case.
    let substring = by_column(&engine, "SUBSCRIBER").await;
    assert_eq!(
        listed(&substring),
        [
            ("subscriptions", vec!["subscriber_id INTEGER NOT NULL"]),
            ("transactions", vec!["subscriber_id INTEGER"]),
        ]
    );
    // With % or _ it is a LIKE pattern over the whole name.
    let like = by_column(&engine, "%_cents").await;
    let names: Vec<_> = like.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "content",
            "creator_revenue",
            "subscriptions",
            "transactions"
        ]
    );
    assert_eq!(listed(&like)[3].1, ["amount_cents INTEGER NOT NULL"]);
}

#[tokio::test]
async fn column_and_pattern_together_must_both_match() {
    let db = TestDb::new().with_demo_data();
    let found = engine(&db)
        .list_tables(Some("sub".into()), Some("status".into()), TableDetail::Ddl)
        .await
        .unwrap();
    assert_eq!(
        listed(&found),
        [("subscriptions", vec!["status TEXT NOT NULL"])]
    );
    assert!(found.tables[0]
        .ddl
        .as_deref()
        .unwrap()
        .starts_with("CREATE TABLE subscriptions"));
}

#[tokio::test]
async fn a_column_nobody_has_lists_nothing() {
    let db = TestDb::new().with_demo_data();
    let found = by_column(&engine(&db), "no_such_column").await;
    assert!(found.tables.is_empty() && !found.truncated, "{found:?}");
}

#[tokio::test]
async fn sql_in_a_column_search_is_only_text_to_match() {
    let db = TestDb::new().with_demo_data();
    let engine = engine(&db);
    for hostile in [
        "x' OR '1'='1",
        "id\") UNION SELECT sql, 1, 1 FROM sqlite_schema --",
        "'; DROP TABLE creators; --",
    ] {
        let found = by_column(&engine, hostile).await;
        assert!(found.tables.is_empty(), "{hostile}: {found:?}");
    }
    let all = engine.list_tables(None, None, TableDetail::Names).await;
    assert_eq!(all.unwrap().tables.len(), 7, "nothing was dropped");
}

#[tokio::test]
async fn an_overlong_column_pattern_is_an_error_not_a_scan() {
    let db = TestDb::new().with_demo_data();
    let engine = engine(&db);
    let long = format!("%{}%", "_%".repeat(200));
    let err = engine
        .list_tables(None, Some(long), TableDetail::Names)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Sql { .. }), "{err:?}");
    assert!(err.to_string().contains("pattern too complex"), "{err}");
    assert!(
        by_column(&engine, "id").await.tables.len() > 1,
        "still serving"
    );
}
