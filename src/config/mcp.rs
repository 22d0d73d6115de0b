//! `EROS_MCP_*`: how agents reach the server (the transport, its address,
//! auth and allow-lists, the client caps) and how rows reach them, declared
//! once.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::mcp::rows::RowFormat;
use crate::transport::stdio::StdioOptions;
use crate::transport::unauthenticated::UnauthenticatedLimits;
use crate::transport::{HttpSettings, TransportObserver};

use super::setting::{named, settings, ConfigError, List, OptionalPath, Parsed, Seconds, Secret};

/// How agents reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One client over standard input and output (Claude Desktop, Claude Code).
    Stdio,
    /// Streamable HTTP at `/mcp`.
    Http,
}

named!(Transport { Stdio = "stdio", Http = "http" });
named!(RowFormat { Csv = "csv", Json = "json" });

/// Largest value of the client caps (in-flight requests, sessions,
/// connections): more than any one process can hold.
const MAX_CLIENT_LIMIT: usize = 1_000_000;

settings! {
    /// Validated MCP settings: the transport's and the rows' format.
    pub struct McpConfig;
    /// `EROS_MCP_*` as `envy` reads them: one text per variable, unset if absent.
    pub struct McpEnv;
    /// One [`super::Setting`] per `EROS_MCP_*` variable.
    pub mod mcp_vars;
    prefix = "EROS_MCP_";

    /// stdio (one local client) or streamable HTTP at `/mcp`.
    transport <- transport: Parsed<Transport> = "stdio", "stdio or http";
    /// Where the HTTP transport listens.
    http_addr <- http_addr: Parsed<SocketAddr> = "127.0.0.1:8080",
        "an address such as 127.0.0.1:8080";
    /// Bearer token every HTTP request must carry; `None` means no auth.
    auth_token <- auth_token: Secret = "", "any text (empty: no auth)";
    /// `Host` header values accepted (DNS-rebinding protection).
    allowed_hosts <- allowed_hosts: List = "localhost,127.0.0.1,::1",
        "host names, comma-separated";
    /// `Origin` header values accepted; requests without `Origin` pass.
    allowed_origins <- allowed_origins: List = "http://localhost:*,http://127.0.0.1:*,http://[::1]:*",
        "origins, comma-separated";
    /// Allow a non-loopback HTTP address without a token.
    allow_insecure <- allow_insecure: Parsed<bool> = "false", "true or false";
    /// Largest HTTP request body; larger ones get 413.
    max_body_bytes <- max_body_bytes: Parsed<usize> = "1048576",
        "a whole number of bytes, at least 1024",
        if |n| *n >= 1024;
    /// TOML file of operator-declared tools.
    tools_file <- tools_file: OptionalPath = "", "a path to a TOML file (empty: none)";
    /// Serve every HTTP request statelessly (no legacy sessions).
    stateless <- stateless: Parsed<bool> = "false", "true or false";
    /// How long in-flight calls may run after shutdown starts.
    shutdown_grace <- shutdown_grace: Seconds = "10",
        "a number of seconds from 0 to 86400 (fractions allowed)";
    /// How query rows are sent to agents.
    row_format <- row_format: Parsed<RowFormat> = "csv", "csv or json";
    /// Requests being served or whose answers are not yet written: beyond
    /// it stdio stops reading and HTTP answers 503.
    max_in_flight <- max_in_flight: Parsed<usize> = "32", "a whole number from 1 to 1000000",
        if |n| (1..=MAX_CLIENT_LIMIT).contains(n);
    /// Open HTTP sessions; a new one beyond it gets 503.
    max_sessions <- max_sessions: Parsed<usize> = "256", "a whole number from 1 to 1000000",
        if |n| (1..=MAX_CLIENT_LIMIT).contains(n);
    /// Open HTTP sessions of one principal; its next one gets 503.
    max_sessions_per_principal <- max_sessions_per_principal: Parsed<usize> = "32",
        "a whole number from 1 to 1000000",
        if |n| (1..=MAX_CLIENT_LIMIT).contains(n);
    /// An HTTP session with no request for this long is closed.
    session_idle_timeout <- session_idle_timeout: Seconds = "300",
        "a number of seconds from 1 to 86400 (fractions allowed)",
        if |d| d.as_secs_f64() >= 1.0;
    /// Open MCP TCP connections (lowered at startup to what the open-file
    /// limit allows, see [`crate::transport::accept`]).
    max_connections <- max_connections: Parsed<usize> = "512", "a whole number from 1 to 1000000",
        if |n| (1..=MAX_CLIENT_LIMIT).contains(n);
    /// With authentication: TCP connections open that have not yet
    /// authenticated, from every address together (within the cap above).
    max_unauthenticated <- max_unauthenticated: Parsed<usize> = "128",
        "a whole number from 1 to 1000000",
        if |n| (1..=MAX_CLIENT_LIMIT).contains(n);
    /// With authentication: connections not yet authenticated from one
    /// source address.
    max_unauthenticated_per_address <- max_unauthenticated_per_address: Parsed<usize> = "16",
        "a whole number from 1 to 1000000",
        if |n| (1..=MAX_CLIENT_LIMIT).contains(n);
    /// With authentication: time a connection has to authenticate.
    auth_timeout <- auth_timeout: Seconds = "10",
        "a number of seconds from 0.1 to 86400 (fractions allowed)",
        if |d| d.as_secs_f64() >= 0.1;
    /// Time a client has to send a request's headers.
    header_timeout <- header_timeout: Seconds = "10",
        "a number of seconds from 0.1 to 86400 (fractions allowed)",
        if |d| d.as_secs_f64() >= 0.1;
    /// Time a client has to send a request's body.
    body_timeout <- body_timeout: Seconds = "30",
        "a number of seconds from 0.1 to 86400 (fractions allowed)",
        if |d| d.as_secs_f64() >= 0.1;
}

impl McpConfig {
    /// No rules between these settings alone; the one about exposing the
    /// database without authentication spans layers
    /// ([`McpConfig::refuse_exposure_without_auth`]).
    fn relate(&mut self, _raw: &McpEnv) -> Result<(), ConfigError> {
        Ok(())
    }

    /// A database reachable from other hosts needs authentication (the
    /// token here, or `others` such as a tokens file), unless the operator
    /// insists.
    pub(super) fn refuse_exposure_without_auth(&self, others: bool) -> Result<(), ConfigError> {
        if self.transport == Transport::Http
            && !self.http_addr.ip().is_loopback()
            && self.auth_token.is_none()
            && !others
            && !self.allow_insecure
        {
            return Err(mcp_vars::http_addr.invalid_because(
                &self.http_addr.to_string(),
                "a loopback address unless EROS_MCP_AUTH_TOKEN or EROS_AUTH_TOKENS_FILE is set \
                 (or EROS_MCP_ALLOW_INSECURE=true, which exposes the database to anyone who can \
                 reach the port)"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl McpConfig {
    /// What the HTTP transport needs.
    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            http_addr: self.http_addr,
            allowed_hosts: self.allowed_hosts.clone(),
            allowed_origins: self.allowed_origins.clone(),
            max_body_bytes: self.max_body_bytes,
            stateless: self.stateless,
            shutdown_grace: self.shutdown_grace,
            max_in_flight: self.max_in_flight,
            max_sessions: self.max_sessions,
            max_sessions_per_principal: self.max_sessions_per_principal,
            session_idle_timeout: self.session_idle_timeout,
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            unauthenticated: UnauthenticatedLimits {
                max_connections: self.max_unauthenticated,
                per_address: self.max_unauthenticated_per_address,
                timeout: self.auth_timeout,
            },
        }
    }

    /// What the stdio transport needs, reporting to `observer`.
    pub fn stdio_options(&self, observer: std::sync::Arc<dyn TransportObserver>) -> StdioOptions {
        StdioOptions {
            grace: self.shutdown_grace,
            max_in_flight: self.max_in_flight,
            observer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_hidden_from_debug_output() {
        let config =
            McpConfig::from_vars([("EROS_MCP_AUTH_TOKEN".to_string(), "s3cret".to_string())])
                .unwrap();
        assert_eq!(config.auth_token.as_deref(), Some("s3cret"));
        let shown = format!("{config:?} {config}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
    }

    #[test]
    fn names_of_transports_and_row_formats_read_back() {
        for transport in [Transport::Stdio, Transport::Http] {
            assert_eq!(transport.to_string().parse(), Ok(transport));
        }
        for format in [RowFormat::Csv, RowFormat::Json] {
            assert_eq!(format.to_string().parse(), Ok(format));
        }
    }

    #[test]
    fn an_empty_allow_list_stays_empty() {
        let config =
            McpConfig::from_vars([("EROS_MCP_ALLOWED_HOSTS".to_string(), String::new())]).unwrap();
        assert!(config.allowed_hosts.is_empty());
    }
}
