//! How agents reach the MCP server: [`stdio`] for one local client,
//! [`http`] for streamable HTTP at `/mcp` (with [`auth`] in front).
//! Both stop the same way: refuse new calls, let running ones finish within
//! the grace period, then close.

pub mod auth;
pub mod http;
pub mod stdio;

/// Why a transport could not run.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on {addr}: {source} (is another process using the port? set EROS_MCP_HTTP_ADDR)")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the MCP session failed to start: {0}")]
    Start(String),
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}
