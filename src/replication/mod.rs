//! Replication with Litestream: what the server does differently when a
//! Litestream process streams its database elsewhere (the primary), or when
//! it serves a copy a Litestream follower keeps current (a replica).
//!
//! eros-mcp does not replicate anything itself. Litestream
//! (`litestream replicate`, `litestream restore -f`) does; this module holds
//! the typed settings the other layers are handed, and the parts of the
//! server that cooperate with it.

pub mod follower;
pub mod heartbeat;
pub mod lag;
pub mod restore;

use std::path::PathBuf;
use std::time::Duration;

/// Whether something replicates the database this server writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Replication {
    /// Nothing does: the server owns the WAL and its checkpoints.
    #[default]
    None,
    /// A `litestream replicate` process does: it holds a read transaction
    /// and owns checkpoints, so the server never checkpoints or truncates
    /// the WAL, and writes a heartbeat replicas measure their lag by.
    Litestream,
}

/// Which copy of the database this server serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// The one writable database.
    #[default]
    Primary,
    /// A read-only copy kept current by `litestream restore -f`: opened
    /// read-only, never migrated, no write tools, HTTP served statelessly.
    Replica,
}

/// What the replication parts of the server are handed (built once in
/// [`crate::config::DatabaseConfig::replication_settings`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationSettings {
    pub replication: Replication,
    pub role: Role,
    /// Litestream's replica URL (`file:///dir`, `s3://bucket/path?...`):
    /// where a fresh primary restores from before serving.
    pub replica_url: Option<String>,
    /// The `litestream` binary the restore runs.
    pub litestream_bin: PathBuf,
    /// A replica that runs its follower itself ([`follower`]), from
    /// `replica_url`.
    pub follow: bool,
    /// How often the primary writes its heartbeat row.
    pub heartbeat_interval: Duration,
    /// A replica whose newest heartbeat is older than this is not ready.
    pub max_lag: Duration,
}

/// The replication tables the schema views hide and agents may not write
/// (owned by the authorizer, [`crate::sqlite::access`]).
pub use crate::sqlite::access::{HEARTBEAT_TABLE, HIDDEN_TABLES};
