//! `EROS_MCP_*`: how agents reach the server (the transport, its address,
//! auth and allow-lists, the client caps) and how rows reach them, declared
//! once.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::mcp::rows::RowFormat;
use crate::transport::stdio::StdioOptions;
use crate::transport::unauthenticated::UnauthenticatedLimits;
use crate::transport::{HttpSettings, TransportObserver};

use super::setting::{
    named, settings, Bytes, ConfigError, List, OptionalPath, Parsed, Seconds, Secret,
};

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
    /// Where the HTTP transport listens; a non-loopback address needs authentication.
    http_addr <- http_addr: Parsed<SocketAddr> = "127.0.0.1:8080",
        "an address such as 127.0.0.1:8080";
    /// A bearer token every HTTP request must carry, as one principal with every scope; empty:
    /// none.
    auth_token <- auth_token: Secret = "", "any text (empty: no auth)";
    /// `Host` header values accepted (DNS-rebinding protection).
    allowed_hosts <- allowed_hosts: List = "localhost,127.0.0.1,::1",
        "host names, comma-separated";
    /// `Origin` header values accepted; requests without `Origin` pass.
    allowed_origins <- allowed_origins: List = "http://localhost:*,http://127.0.0.1:*,http://[::1]:*",
        "origins, comma-separated";
    /// Allow a non-loopback HTTP address without authentication (exposes the database to anyone
    /// who can connect).
    allow_insecure <- allow_insecure: Parsed<bool> = "false", "true or false";
    /// Largest HTTP request body; larger ones get 413.
    max_body_bytes <- max_body_bytes: Bytes<usize> = "1048576", AtLeast(1024);
    /// TOML file of operator-declared tools (see `examples/tools.toml`); empty: none.
    tools_file <- tools_file: OptionalPath = "", "a path to a TOML file (empty: none)";
    /// Serve every HTTP request statelessly (no sessions, JSON responses), for replicas behind
    /// a load balancer.
    stateless <- stateless: Parsed<bool> = "false", "true or false";
    /// Seconds running calls may take to finish after SIGTERM before they are interrupted.
    shutdown_grace <- shutdown_grace: Seconds = "10", AtLeast(0.0);
    /// How query rows reach agents: `csv` (one text block of typed CSV) or `json`
    /// (`structuredContent` with an output schema plus the same JSON as text).
    row_format <- row_format: Parsed<RowFormat> = "csv", "csv or json";
    /// Requests being served or whose answers are not yet written: beyond
    /// it stdio stops reading and HTTP answers 503.
    max_in_flight <- max_in_flight: Parsed<usize> = "32", Between(1, MAX_CLIENT_LIMIT);
    /// Open HTTP sessions; a new one beyond it gets 503.
    max_sessions <- max_sessions: Parsed<usize> = "256", Between(1, MAX_CLIENT_LIMIT);
    /// Open HTTP sessions of one principal (with authentication); its next one gets 503.
    max_sessions_per_principal <- max_sessions_per_principal: Parsed<usize> = "32", Between(1, MAX_CLIENT_LIMIT);
    /// Seconds after which an HTTP session with no request is closed and its memory freed.
    session_idle_timeout <- session_idle_timeout: Seconds = "300", AtLeast(1.0);
    /// Open MCP TCP connections; one more gets 503 and is closed (lowered at startup to what
    /// the open-file limit holds beside the database and the sidecar).
    max_connections <- max_connections: Parsed<usize> = "512", Between(1, MAX_CLIENT_LIMIT);
    /// With authentication: TCP connections open that have not yet
    /// authenticated, from every address together (within the cap above).
    max_unauthenticated <- max_unauthenticated: Parsed<usize> = "128", Between(1, MAX_CLIENT_LIMIT);
    /// With authentication: connections not yet authenticated from one
    /// source address.
    max_unauthenticated_per_address <- max_unauthenticated_per_address: Parsed<usize> = "16", Between(1, MAX_CLIENT_LIMIT);
    /// With authentication: seconds a connection has to authenticate before it is closed.
    auth_timeout <- auth_timeout: Seconds = "10", AtLeast(0.1);
    /// Seconds a client has to send a request's headers before the connection is closed.
    header_timeout <- header_timeout: Seconds = "10", AtLeast(0.1);
    /// Seconds a client has to send a request's body before it gets 408.
    body_timeout <- body_timeout: Seconds = "30", AtLeast(0.1);
    /// Threads of the async runtime serving HTTP; 0: one per CPU. Statements run in worker
    /// processes, so one thread serves thousands of calls a second, without the cross-thread
    /// wake-ups that cost a multi-threaded runtime a third more CPU a call.
    http_threads <- http_threads: Parsed<usize> = "1", Between(0, 1024);
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
                format!(
                    "a loopback address unless {} or {} is set (or {}=true, which exposes the \
                     database to anyone who can reach the port)",
                    mcp_vars::auth_token.variable(),
                    super::auth::auth_vars::tokens_file.variable(),
                    mcp_vars::allow_insecure.variable(),
                ),
            ));
        }
        Ok(())
    }
}

impl McpConfig {
    /// Every layer's settings, built in one place: the configuration is
    /// taken apart field by field (no `..`), so a new setting fails to
    /// compile until it is handed to a layer, and one handed nowhere is an
    /// unused variable, which `clippy -D warnings` refuses.
    pub fn layers(&self) -> McpLayers {
        let McpConfig {
            transport,
            http_addr,
            auth_token,
            allowed_hosts,
            allowed_origins,
            allow_insecure: _checked_in_refuse_exposure_without_auth,
            max_body_bytes,
            tools_file,
            stateless,
            shutdown_grace,
            row_format,
            max_in_flight,
            max_sessions,
            max_sessions_per_principal,
            session_idle_timeout,
            max_connections,
            max_unauthenticated,
            max_unauthenticated_per_address,
            auth_timeout,
            header_timeout,
            body_timeout,
            http_threads,
        } = self.clone();
        McpLayers {
            transport,
            http: HttpSettings {
                http_addr,
                allowed_hosts,
                allowed_origins,
                max_body_bytes,
                stateless,
                shutdown_grace,
                max_in_flight,
                max_sessions,
                max_sessions_per_principal,
                session_idle_timeout,
                max_connections,
                header_timeout,
                body_timeout,
                unauthenticated: UnauthenticatedLimits {
                    max_connections: max_unauthenticated,
                    per_address: max_unauthenticated_per_address,
                    timeout: auth_timeout,
                },
            },
            auth_token,
            tools_file,
            row_format,
            http_threads,
        }
    }

    /// What the HTTP transport needs.
    pub fn http_settings(&self) -> HttpSettings {
        self.layers().http
    }

    /// What the stdio transport needs, reporting to `observer`: the same
    /// grace and in-flight cap as HTTP.
    pub fn stdio_options(&self, observer: std::sync::Arc<dyn TransportObserver>) -> StdioOptions {
        let http = self.layers().http;
        StdioOptions {
            grace: http.shutdown_grace,
            max_in_flight: http.max_in_flight,
            observer,
        }
    }
}

/// The settings of each part `EROS_MCP_*` configures (no `Debug`: it
/// holds the token).
#[derive(Clone)]
pub struct McpLayers {
    pub transport: Transport,
    pub http: HttpSettings,
    /// The one principal with every scope (`None`: no such token).
    pub auth_token: Option<String>,
    /// Operator-declared tools.
    pub tools_file: Option<std::path::PathBuf>,
    pub row_format: RowFormat,
    /// The HTTP runtime's threads (0: one per CPU).
    pub http_threads: usize,
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
