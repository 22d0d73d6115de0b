//! Migrations own the default schema; the demo data makes it queryable at once.

use crate::common;

use common::TestDb;
use eros_mcp::database;
use eros_mcp::sqlite::migrations::{self, MigrationError};

#[test]
fn a_new_database_is_migrated_to_the_latest_version() {
    let db = TestDb::new();
    let mut conn = database::open_direct(&db.config).unwrap();
    assert_eq!(
        migrations::migrate(&mut conn).unwrap(),
        migrations::latest_version()
    );
    assert_eq!(
        migrations::current_version(&conn).unwrap(),
        migrations::latest_version()
    );
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in [
        "content",
        "creators",
        "schedules",
        "subscribers",
        "subscriptions",
        "transactions",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
}

#[test]
fn migrating_twice_changes_nothing() {
    let db = TestDb::new();
    let mut conn = database::open_direct(&db.config).unwrap();
    migrations::migrate(&mut conn).unwrap();
    let schema = |c: &rusqlite::Connection| -> String {
        c.query_row(
            "SELECT group_concat(sql, ';') FROM sqlite_schema",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let before = schema(&conn);
    migrations::migrate(&mut conn).unwrap();
    assert_eq!(schema(&conn), before);
}

#[test]
fn a_database_newer_than_the_migrations_is_refused() {
    let db = TestDb::new();
    let mut conn = database::open_direct(&db.config).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    let err = migrations::migrate(&mut conn).unwrap_err();
    assert!(
        matches!(err, MigrationError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("EROS_DB_MIGRATE=false"), "{err}");
}

#[test]
fn with_migration_off_a_foreign_schema_is_served_untouched() {
    let mut db = TestDb::new();
    {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute_batch(
            "CREATE TABLE inventory (sku TEXT PRIMARY KEY); PRAGMA user_version = 42;",
        )
        .unwrap();
    }
    db.config.migrate = false;
    assert_eq!(database::prepare_schema(&db.config).unwrap(), 42);
    let conn = database::open_direct(&db.config).unwrap();
    let creators: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'creators'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(creators, 0);
}

#[test]
fn the_demo_data_loads_related_rows_that_satisfy_every_foreign_key() {
    let db = TestDb::new().with_demo_data();
    let conn = database::open_direct(&db.config).unwrap();
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("creators"), 40);
    assert_eq!(count("transactions"), 20_000);
    let violations: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(violations, 0);
    let top: String = conn
        .query_row(
            "SELECT handle FROM creator_revenue ORDER BY revenue_cents DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(top.starts_with("creator"));
}

#[test]
fn the_demo_data_is_not_loaded_twice() {
    let db = TestDb::new().with_demo_data();
    let mut conn = database::open_direct(&db.config).unwrap();
    let err = migrations::load_demo_data(&mut conn).unwrap_err();
    assert!(
        err.to_string().contains("already holds 40 creators"),
        "{err}"
    );
}

#[test]
fn every_migration_directory_has_an_up_script() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        assert!(
            entry.path().join("up.sql").is_file(),
            "{:?} has no up.sql",
            entry.path()
        );
        count += 1;
    }
    assert_eq!(count, migrations::latest_version());
}
