//! Litestream: the primary, replicas and their followers, faults, and the quick start.
//!
//! One test binary per area (cargo runs binaries one after another and the
//! tests inside one in parallel); each file below is one subject.

#[path = "../common/mod.rs"]
mod common;

mod databases;
mod litestream;
mod litestream_faults;
mod litestream_follower_kill;
mod litestream_primary;
mod litestream_replicas;
mod replicas_quickstart;
