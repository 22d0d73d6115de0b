//! The versioned schema of the default database, applied with
//! `rusqlite_migration` from the `migrations/` directory (embedded at build
//! time), plus the optional demo data set.
//!
//! The schema version lives in `PRAGMA user_version`, so readiness can check
//! it cheaply.

use include_dir::{include_dir, Dir};
use rusqlite::Connection;
use rusqlite_migration::{Migrations, SchemaVersion};

static MIGRATIONS_DIR: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// Deterministic demo rows for the default schema.
const DEMO_DATA: &str = include_str!("demo_data.sql");

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "database schema version {found} is newer than this build knows ({known}); \
         upgrade eros-mcp, or set EROS_DB_MIGRATE=false to serve it without migrating"
    )]
    TooNew { found: usize, known: usize },
    #[error("migration failed: {0}")]
    Failed(#[from] rusqlite_migration::Error),
    #[error("the demo data needs an empty, migrated database: {0}")]
    DemoRefused(String),
    #[error("loading the demo data failed: {0}")]
    Demo(#[from] rusqlite::Error),
}

fn migrations() -> Migrations<'static> {
    Migrations::from_directory(&MIGRATIONS_DIR).expect("the embedded migrations are well formed")
}

/// The schema version the embedded migrations lead to.
pub fn latest_version() -> usize {
    MIGRATIONS_DIR.dirs().count()
}

/// The schema version stored in the database (`PRAGMA user_version`).
pub fn current_version(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
        .map(|v| v.max(0) as usize)
}

/// Brings the database to the latest version; a no-op when it is there.
/// Refuses a database whose version is newer than the migrations.
pub fn migrate(conn: &mut Connection) -> Result<usize, MigrationError> {
    let migrations = migrations();
    if let SchemaVersion::Outside(found) = migrations.current_version(conn)? {
        return Err(MigrationError::TooNew {
            found: found.get(),
            known: latest_version(),
        });
    }
    migrations.to_latest(conn)?;
    Ok(latest_version())
}

/// Loads the demo data set into a freshly migrated, empty database.
pub fn load_demo_data(conn: &mut Connection) -> Result<(), MigrationError> {
    let version = current_version(conn)?;
    if version != latest_version() {
        return Err(MigrationError::DemoRefused(format!(
            "schema version is {version}, expected {}",
            latest_version()
        )));
    }
    let creators: i64 = conn.query_row("SELECT COUNT(*) FROM creators", [], |row| row.get(0))?;
    if creators > 0 {
        return Err(MigrationError::DemoRefused(format!(
            "it already holds {creators} creators"
        )));
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(DEMO_DATA)?;
    tx.commit()?;
    Ok(())
}
