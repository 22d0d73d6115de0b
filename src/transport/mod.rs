//! How agents reach the MCP server: [`stdio`] for one local client (JSON
//! lines framed by [`lines`], on the [`pipes`] the client spawned us with,
//! tool answers written by [`crate::rmcp_gaps::answer_line`]), [`http`] for streamable HTTP at `/mcp` (with
//! [`auth`] in front, served by the hardened [`accept`] loop, with
//! [`sessions`] capped and expiring, and connections without a token held
//! to their own [`unauthenticated`] budget). Both judge what arrives with
//! [`crate::rmcp_gaps::jsonrpc`] before rmcp sees it.
//! Both stop the same way: refuse new calls, let running ones finish within
//! the grace period, then close. Both bound what a client that does not
//! keep up may cost, and report it to an [`observer`].

pub mod accept;
pub mod auth;
pub mod http;
pub mod lines;
pub mod observer;
pub mod operation;
pub mod pipes;
pub mod request_ids;
pub mod sessions;
pub mod settings;
pub mod stdio;
pub mod unauthenticated;

pub use observer::{NoTransportObserver, Rejection, TransportObserver, TransportObservers};
pub use settings::HttpSettings;

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
}
