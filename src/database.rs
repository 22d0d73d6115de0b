//! Opening the served database: migrate it on a dedicated connection (or
//! check it is usable when migration is off), then build and pre-warm the pool.

use std::sync::Arc;

use crate::config::DatabaseConfig;
use crate::connection::{self, ConnectError, ConnectionOptions};
use crate::migrations::{self, MigrationError};
use crate::pool::{Pool, PoolError, PoolObserver};

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
}

/// Opens one connection with the pool's settings, outside the pool.
pub fn open_direct(config: &DatabaseConfig) -> Result<rusqlite::Connection, ConnectError> {
    connection::open(&ConnectionOptions::from(config))
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

/// Migrates, then opens, pre-warms and starts maintaining the pool.
pub fn open(
    config: &DatabaseConfig,
    observer: Arc<dyn PoolObserver>,
) -> Result<Arc<Pool>, StartupError> {
    prepare_schema(config)?;
    Ok(Pool::open(config, observer)?)
}
