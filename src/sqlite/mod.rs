//! Everything that talks to SQLite directly, below the pool: opening one
//! connection with its PRAGMAs and limits, what SQL it may run, the
//! built-ins replaced so no call runs unbounded, the replica's VFS, the
//! file's identity and health, and the schema's migrations.
//!
//! - [`connection`]: opening one SQLite connection with its PRAGMAs, hardening and limits.
//! - [`access`]: what SQL a connection may run (the authorizer and `query_only`), and the
//!   safe entry point for untrusted SQL's tables.
//! - [`bounded_functions`]: SQLite built-ins replaced so no single call runs unbounded.
//! - [`replica_vfs`]: the VFS a replica reads its follower's copy through.
//! - [`page_cache`]: a worker's page cache sized apart from its sorter's runs.
//! - [`memory_temp`]: the default VFS, which keeps temporary files in SQLite's heap.
//! - `wrapped_vfs`: registering a VFS that wraps the default one (both of the above).
//! - [`copy_gate`]: whether a replica's copy may be read (its follower runs).
//! - [`file_fault`]: what can be wrong with the database file.
//! - [`health`]: the database file's identity, corruption and writability, shared.
//! - [`migrations`]: the versioned schema of the default database, and demo data.

pub mod access;
pub mod bounded_functions;
pub mod connection;
pub mod copy_gate;
pub mod file_fault;
pub mod health;
pub mod memory_temp;
pub mod migrations;
pub mod page_cache;
pub mod replica_vfs;
mod wrapped_vfs;
