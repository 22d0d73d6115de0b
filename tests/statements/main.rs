//! Statements and their bounds: the engine, the pool, migrations, the SQLite build, hostile load, statements taken back at their deadline and bounded shutdown.
//!
//! One test binary per area (cargo runs binaries one after another and the
//! tests inside one in parallel); each file below is one subject.

#[path = "../common/mod.rs"]
mod common;

mod bounded_shutdown;
mod engine;
mod fair_shares;
mod hostile_load;
mod migrations;
mod pool;
mod soak;
mod sqlite_build;
mod taken_back;
