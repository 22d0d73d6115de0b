//! eros-bench: the load generator for MCP database servers (ours or a peer),
//! and the MCP client the eros-mcp integration tests drive the server with.
//! It talks to a server over stdio (a command line) or streamable HTTP (a
//! URL) and never links the server itself.
//!
//! - [`client`]: opening an rmcp client session, stdio or HTTP, either era.
//! - [`load`]: concurrent throughput runs and the startup measurement.
//! - [`paced`]: one call in flight, each answer read before the next call.
//! - [`sqlite_cost`]: what SQLite alone spends stepping through a query.
//! - [`dataset`]: the deterministic benchmark database.
//! - [`workload`]: what each call asks and how its answer is checked.
//! - [`stats`]: latency percentiles.
//! - [`procfs`]: the server process's CPU, memory and descriptors.
//! - [`soak`]: the long mixed run that looks for leaks.
//! - [`replicas`]: replication lag and replica read throughput (Litestream).
//! - [`keepalive`]: sequential calls over one HTTP connection (latency floor).
//! - [`floor`]: eros-mcp against a bare rmcp server, interleaved, as ratios.
//! - [`neighbours`]: one principal's paced calls beside another's flood.

pub mod client;
pub mod dataset;
pub mod floor;
pub mod keepalive;
pub mod load;
pub mod neighbours;
pub mod paced;
pub mod procfs;
pub mod replicas;
pub mod soak;
pub mod sqlite_cost;
pub mod stats;
pub mod workload;

pub use client::Session;
pub use load::{LoadError, Target, ToolSpec};
pub use workload::Workload;
