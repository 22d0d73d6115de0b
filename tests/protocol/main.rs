//! The MCP protocol over both transports: handshakes, tools and their answers, row formats, malformed and oversized input, client limits, and the command line.
//!
//! One test binary per area (cargo runs binaries one after another and the
//! tests inside one in parallel); each file below is one subject.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod client_limits;
mod databases;
mod fuzz_arguments;
mod in_process;
mod list_tables;
mod mcp_http;
mod mcp_stdio;
mod protocol_edges;
mod reload;
mod row_format;
mod tool_list;
