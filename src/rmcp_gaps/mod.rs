//! Where eros-mcp works around rmcp. Checked against rmcp 3.11.0 (the
//! version in `Cargo.lock`); when rmcp moves, read each entry again and
//! delete what it no longer needs.
//!
//! The modules here stand on their own (they import only rmcp, serde and
//! axum's types), so the transports and the MCP layer both use them:
//!
//! - [`jsonrpc`]: judges what a client sent as JSON-RPC before rmcp does.
//! - [`answer_line`]: writes a `tools/call` answer's JSON line by hand.
//! - [`rebinding`]: a stricter `Host`/`Origin` check in front of rmcp's.
//! - [`tool_schema`]: standard, compact JSON Schema for every tool.
//!
//! GAPS

pub mod answer_line;
pub mod jsonrpc;
pub mod rebinding;
pub mod tool_schema;
