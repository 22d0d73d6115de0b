//! MCP over streamable HTTP at `/mcp`: rmcp's service nested in axum, with
//! `Host`/`Origin` checks against DNS rebinding, the bearer token in front
//! and a request-body limit (413). 2025-11-25 clients get sessions;
//! 2026-07-28 requests are served statelessly, so replicas can sit behind a
//! load balancer (`EROS_MCP_STATELESS=true` makes every request stateless).

use std::sync::Arc;

use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

use super::auth::{require_bearer, BearerToken};
use super::TransportError;
use crate::config::McpConfig;
use crate::mcp::CallTracker;
use crate::shutdown::Shutdown;

/// Binds the MCP port; fails fast with a clear error if it is taken.
pub async fn bind(config: &McpConfig) -> Result<tokio::net::TcpListener, TransportError> {
    tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| TransportError::Bind {
            addr: config.http_addr,
            source,
        })
}

/// The axum router serving MCP at `/mcp`. `stop` ends open streams.
pub fn router<S>(server: S, config: &McpConfig, stop: tokio_util::sync::CancellationToken) -> Router
where
    S: rmcp::ServerHandler + Clone + Send + Sync + 'static,
{
    let http_config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(!config.stateless)
        .with_json_response(config.stateless)
        .with_allowed_hosts(config.allowed_hosts.clone())
        .with_allowed_origins(config.allowed_origins.clone())
        .with_max_request_body_bytes(config.max_body_bytes)
        .with_cancellation_token(stop);
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        http_config,
    );
    let mcp = Router::new().nest_service("/mcp", service);
    match &config.auth_token {
        Some(token) => mcp.layer(axum::middleware::from_fn_with_state(
            BearerToken::new(token),
            require_bearer,
        )),
        None => mcp,
    }
}

/// Serves until shutdown: then refuses new calls, lets running ones finish
/// within the grace period, closes open streams and returns.
pub async fn serve<S>(
    listener: tokio::net::TcpListener,
    server: S,
    config: &McpConfig,
    calls: Arc<CallTracker>,
    shutdown: Shutdown,
) -> Result<(), TransportError>
where
    S: rmcp::ServerHandler + Clone + Send + Sync + 'static,
{
    let stop = tokio_util::sync::CancellationToken::new();
    let app = router(server, config, stop.clone());
    let grace = config.shutdown_grace;
    tracing::info!(addr = %config.http_addr, auth = config.auth_token.is_some(), "serving MCP over HTTP at /mcp");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.wait().await;
            calls.drain(grace).await;
            stop.cancel();
        })
        .await
        .map_err(TransportError::Serve)
}
