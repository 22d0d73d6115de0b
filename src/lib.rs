//! eros-mcp: a production SQLite database server for AI agents, over MCP.
//!
//! The layers, from the edge inwards:
//!
//! - [`app`]: the running server assembled, and its shutdown sequence.
//! - [`sidecar`]: Prometheus metrics and Kubernetes probes on their own port.
//! - [`transport`]: stdio and streamable HTTP (with auth) for the MCP server.
//! - [`audit`]: the audit log: a JSON line per tool call and refused request.
//! - [`auth`]: OAuth 2.1 access tokens (JWTs) validated against the issuer's published keys.
//! - [`config`]: typed settings read once from the environment.
//! - [`budget`]: the peak memory the settings allow, as a formula.
//! - [`identity`]: who is calling: principals, scopes, static tokens.
//! - [`database`]: opening the served database: migrations, then the pool.
//! - [`mcp`]: the MCP server: tools, declared tools, the schema resource.
//! - [`engine`]: the query engine the tools call: reads, schema, writes.
//! - [`pool`]: the QueuePool-style r2d2 connection pool and its counters.
//! - [`sqlite`]: everything that talks to SQLite directly: opening a connection, the
//!   authorizer, bounded built-ins, the replica's VFS, the file's health, migrations.
//! - [`policy`]: column and table policies: what a principal lacking a scope may not read.
//! - [`quota`]: what one principal may take over time: quotas, and fair shares of the connections.
//! - [`replication`]: cooperating with Litestream: the primary's checkpoints and heartbeat, replicas.
//! - [`retry`]: backoff for transient SQLite failures.
//! - [`rmcp_gaps`]: where the server works around rmcp, each gap with its rmcp version and reason.
//! - [`shutdown`]: the signal that tells every part to stop.
//! - [`telemetry`]: OpenTelemetry traces of each call, over OTLP.

pub mod app;
pub mod audit;
pub mod auth;
pub mod budget;
pub mod config;
pub mod database;
pub mod engine;
pub mod identity;
pub mod mcp;
pub mod policy;
pub mod pool;
pub mod quota;
pub mod replication;
pub mod retry;
pub mod rmcp_gaps;
pub mod shutdown;
pub mod sidecar;
pub mod sqlite;
pub mod telemetry;
pub mod transport;
