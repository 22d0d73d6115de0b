//! What the HTTP transport is built with: its address, allow-lists and
//! client caps (who may call is its [`super::auth::Authenticator`]). Built once from the MCP configuration at the edge
//! ([`crate::config::McpConfig::http_settings`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::unauthenticated::UnauthenticatedLimits;

/// The HTTP transport's settings.
#[derive(Clone, PartialEq)]
pub struct HttpSettings {
    /// Where `/mcp` is served.
    pub http_addr: SocketAddr,
    /// `Host` header values accepted (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// `Origin` header values accepted; requests without `Origin` pass.
    pub allowed_origins: Vec<String>,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Serve every request statelessly (no legacy sessions).
    pub stateless: bool,
    /// How long in-flight calls may run after shutdown starts.
    pub shutdown_grace: Duration,
    /// Requests being served at once; beyond it 503.
    pub max_in_flight: usize,
    /// Open sessions; a new one beyond it gets 503.
    pub max_sessions: usize,
    /// Open sessions of one principal; its next one gets 503.
    pub max_sessions_per_principal: usize,
    /// A session with no request for this long is closed.
    pub session_idle_timeout: Duration,
    /// Open TCP connections (already lowered to fit the open-file limit).
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
    /// What connections without a token may take (with authentication).
    pub unauthenticated: UnauthenticatedLimits,
}

impl std::fmt::Debug for HttpSettings {
    /// The settings worth a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("http_addr", &self.http_addr)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_sessions", &self.max_sessions)
            .field(
                "max_sessions_per_principal",
                &self.max_sessions_per_principal,
            )
            .field("max_connections", &self.max_connections)
            .field("unauthenticated", &self.unauthenticated)
            .finish_non_exhaustive()
    }
}
