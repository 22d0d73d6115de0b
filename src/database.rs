//! Opening the served database: migrate it on a dedicated connection (or
//! check it is usable when migration is off), then build and pre-warm the
//! pool. The database layer's configuration is split here, once, into the
//! connection factory's settings and the pool's. A read replica's file is
//! its follower's: never migrated, opened read-only, and followed through
//! re-restores rather than pinned to one inode.

use std::sync::Arc;

use crate::config::DatabaseConfig;
use crate::pool::{Pool, PoolError, PoolObserver};
use crate::replication::follower::FollowerGate;
use crate::replication::Role;
use crate::sqlite::connection::{self, ConnectError};
use crate::sqlite::health::DatabaseHealth;
use crate::sqlite::migrations::{self, MigrationError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("cannot read the schema version of {path}: {source}")]
    SchemaVersion {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("cannot record the identity of the database file {path}: {source}")]
    Identity {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Opens one connection with the pool's settings, outside the pool.
pub fn open_direct(config: &DatabaseConfig) -> Result<rusqlite::Connection, ConnectError> {
    connection::open(&config.connection_options())
}

/// Migrates the database (when `config.migrate`) and returns its schema version.
pub fn prepare_schema(config: &DatabaseConfig) -> Result<usize, StartupError> {
    let mut conn = open_direct(config)?;
    if config.migrate {
        let version = migrations::migrate(&mut conn)?;
        tracing::info!(version, path = %config.path.display(), "database schema is up to date");
        Ok(version)
    } else {
        // Reading the version also proves the file is a readable database.
        migrations::current_version(&conn).map_err(|source| StartupError::SchemaVersion {
            path: config.path.display().to_string(),
            source,
        })
    }
}

/// Migrates, records the identity of the file (from now on the pool opens
/// that file only, and never creates one), then opens, pre-warms and starts
/// maintaining the pool. A replica's pool opens on the file its follower
/// has produced (the caller waits for the first restore).
pub fn open(
    config: &DatabaseConfig,
    observer: Arc<dyn PoolObserver>,
) -> Result<Arc<Pool>, StartupError> {
    open_following(config, observer, None)
}

/// [`open`] for a replica whose follower the server runs: its copy is
/// served only while `follower` lets it (see [`crate::replication::follower`]).
pub fn open_following(
    config: &DatabaseConfig,
    observer: Arc<dyn PoolObserver>,
    follower: Option<FollowerGate>,
) -> Result<Arc<Pool>, StartupError> {
    let health = match config.role {
        Role::Primary => {
            prepare_schema(config)?;
            DatabaseHealth::watch(&config.path, !config.read_only).map_err(|source| {
                StartupError::Identity {
                    path: config.path.display().to_string(),
                    source,
                }
            })?
        }
        // A replica's file is its follower's: never migrated, followed
        // when the follower replaces it; its setup reads the schema.
        Role::Replica => {
            let health = match follower {
                Some(gate) => DatabaseHealth::follow_supervised(&config.path, gate),
                None => DatabaseHealth::follow(&config.path),
            };
            health.verify_file().map_err(ConnectError::from)?;
            health
        }
    };
    Ok(Pool::open_with_health(
        &config.pool_settings(),
        config.connection_options(),
        observer,
        health,
    )?)
}

/// Runs `PRAGMA quick_check` (bounded by `timeout`) on `conn`.
pub fn quick_check(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    timeout: std::time::Duration,
) -> Result<(), IntegrityError> {
    let deadline = std::time::Instant::now() + timeout;
    let _ = conn.progress_handler(10_000, Some(move || std::time::Instant::now() >= deadline));
    let result = conn.prepare("PRAGMA quick_check(20)").and_then(|mut stmt| {
        stmt.query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()
    });
    let _ = conn.progress_handler(0, None::<fn() -> bool>);
    let path = path.display().to_string();
    match result {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Ok(()),
        Ok(lines) => Err(IntegrityError::Corrupt {
            path,
            found: lines.join("; "),
        }),
        Err(err) if err.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
            Err(IntegrityError::TooSlow { path, timeout })
        }
        Err(err) => Err(IntegrityError::Corrupt {
            path,
            found: err.to_string(),
        }),
    }
}

/// What `PRAGMA quick_check` found.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error(
        "the database file {path} is corrupt: PRAGMA quick_check found: {found}; restore it \
         from a backup"
    )]
    Corrupt { path: String, found: String },
    #[error("PRAGMA quick_check on {path} did not finish within {timeout:?}")]
    TooSlow {
        path: String,
        timeout: std::time::Duration,
    },
}
