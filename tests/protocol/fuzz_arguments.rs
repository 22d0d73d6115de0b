//! Property tests: whatever arguments an agent sends, the query tool's
//! engine answers with a result or an error, never a panic, and read calls
//! never change the database.

use crate::common;

use common::TestDb;
use eros_mcp::engine::{QueryEngine, QueryRequest, SqlParam, SqlParams};
use eros_mcp::mcp::rows::JsonRows;
use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "SELECT",
    "*",
    "FROM",
    "creators",
    "content",
    "WHERE",
    "id",
    "=",
    "?",
    ":x",
    "1",
    "'a'",
    ";",
    "--",
    "/*",
    "*/",
    "DELETE",
    "INSERT",
    "INTO",
    "VALUES",
    "(",
    ")",
    ",",
    "PRAGMA",
    "query_only",
    "ATTACH",
    "'x.db'",
    "AS",
    "WITH",
    "RECURSIVE",
    "UNION",
    "ALL",
    "ORDER BY",
    "LIMIT",
    "json_object",
    "x'00'",
    "NULL",
    "CREATE",
    "TEMP",
    "TABLE",
    "DROP",
    "VACUUM",
    "INTO",
    "BEGIN",
    "COMMIT",
    "load_extension",
    "\"",
    "`",
    "\u{0}",
    "é",
    "\n",
];

fn sql() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..12).prop_map(|parts| parts.join(" "))
}

fn param() -> impl Strategy<Value = SqlParam> {
    prop_oneof![
        Just(SqlParam::Null),
        any::<bool>().prop_map(SqlParam::Bool),
        any::<i64>().prop_map(SqlParam::Integer),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(SqlParam::Real),
        ".{0,20}".prop_map(SqlParam::Text),
    ]
}

fn params() -> impl Strategy<Value = Option<SqlParams>> {
    prop_oneof![
        Just(None),
        prop::collection::vec(param(), 0..4).prop_map(|p| Some(SqlParams::Positional(p))),
        prop::collection::btree_map("[:@$]?[a-z]{1,3}", param(), 0..3)
            .prop_map(|p| Some(SqlParams::Named(p))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn any_query_arguments_get_an_answer_and_change_nothing(
        sql in sql(),
        params in params(),
        max_rows in prop::option::of(0u32..5000),
        cursor in prop::option::of("[A-Za-z0-9_-]{0,30}"),
    ) {
        let fx = fixture();
        let request = QueryRequest { sql, params, max_rows, cursor, database: None };
        let result = fx.runtime.block_on(fx.engine.query(request, &JsonRows, None));
        if let Err(err) = &result {
            prop_assert!(!err.to_string().is_empty());
        }
        prop_assert_eq!(&logical_content(fx.db.path()), &fx.before);
    }
}

/// Everything the database holds as SQLite reads it, the WAL included
/// (a stray write would sit there, not in the main file): the schema and
/// every row of every table, in rowid or key order.
fn logical_content(path: &std::path::Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut content = Vec::new();
    let schema: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY type, name")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (kind, name, sql) in schema {
        content.push(format!("{kind} {name} {sql:?}"));
        if kind != "table" || sql.as_deref().is_some_and(|sql| sql.contains("VIRTUAL")) {
            continue;
        }
        let mut stmt = conn
            .prepare(&format!(
                "SELECT * FROM \"{}\" ORDER BY 1",
                name.replace('"', "\"\"")
            ))
            .unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let values: Vec<rusqlite::types::Value> =
                (0..columns).map(|i| row.get(i).unwrap()).collect();
            content.push(format!("{name} {values:?}"));
        }
    }
    content
}

/// One database and engine for every case: the property is that nothing changes it.
struct Fixture {
    db: TestDb,
    engine: QueryEngine,
    runtime: tokio::runtime::Runtime,
    before: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let db = TestDb::new().with_demo_data();
        let before = logical_content(db.path());
        let engine = QueryEngine::new(db.warm_pool(), db.config.engine_settings());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        Fixture {
            db,
            engine,
            runtime,
            before,
        }
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn declared_tools() -> &'static eros_mcp::mcp::DeclaredTools {
    static TOOLS: std::sync::OnceLock<eros_mcp::mcp::DeclaredTools> = std::sync::OnceLock::new();
    TOOLS.get_or_init(|| {
        let fx = fixture();
        let conn = fx.engine.pool().open_local().unwrap();
        let path =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tools.toml"));
        eros_mcp::mcp::DeclaredTools::load(path, &conn, false).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn declared_tools_accept_only_arguments_that_fit_their_schema(
        arguments in prop::collection::btree_map(
            prop_oneof![Just("creator_id".to_string()), Just("kind".to_string()), Just("limit".to_string()), "[a-z]{1,8}"],
            json_value(),
            0..4,
        ),
    ) {
        let arguments: serde_json::Map<String, serde_json::Value> = arguments.into_iter().collect();
        for tool in declared_tools().tools() {
            if let Ok(SqlParams::Named(bound)) = tool.bind(Some(&arguments)) {
                // Whatever was accepted has exactly the declared parameters, typed.
                prop_assert_eq!(bound.len(), tool.params.len());
                for name in arguments.keys() {
                    prop_assert!(tool.params.iter().any(|p| &p.name == name));
                }
            }
        }
    }
}
