//! MCP over streamable HTTP at `/mcp`: rmcp's service nested in axum, with
//! `Host`/`Origin` checks against DNS rebinding, the bearer token in front
//! and a request-body limit (413). 2025-11-25 clients get sessions;
//! 2026-07-28 requests are served statelessly, so replicas can sit behind a
//! load balancer (`EROS_MCP_STATELESS=true` makes every request stateless).
//!
//! Clients that do not keep up are bounded: a body must arrive within
//! `EROS_MCP_BODY_TIMEOUT` (408), at most `EROS_MCP_MAX_IN_FLIGHT` requests
//! are served at once (503 with `Retry-After` beyond, never queued),
//! sessions are capped and expire when idle ([`super::sessions`]), and
//! connections are capped and must send their headers in time
//! ([`super::accept`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::accept::{self, ConnectionLimits};
use super::auth::{require_bearer, BearerToken};
use super::observer::{Rejection, TransportObserver};
use super::sessions::LimitedSessions;
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

/// The request limits the middleware enforces.
#[derive(Clone)]
struct RequestLimits {
    in_flight: Arc<Semaphore>,
    sessions: Arc<LimitedSessions>,
    body_timeout: Duration,
    max_body_bytes: usize,
    observer: Arc<dyn TransportObserver>,
}

/// The axum router serving MCP at `/mcp`. `stop` ends open streams.
fn router<S>(
    server: S,
    config: &McpConfig,
    sessions: Arc<LimitedSessions>,
    observer: Arc<dyn TransportObserver>,
    stop: tokio_util::sync::CancellationToken,
) -> Router
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
        Arc::clone(&sessions),
        http_config,
    );
    let limits = RequestLimits {
        in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        sessions,
        body_timeout: config.body_timeout,
        max_body_bytes: config.max_body_bytes,
        observer,
    };
    // Layers run outside in: the token first, then the body (a slow body
    // holds a connection, never an in-flight slot), then the in-flight cap.
    let mcp = Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(
            limits.clone(),
            limit_in_flight,
        ))
        .layer(axum::middleware::from_fn_with_state(limits, read_body));
    match &config.auth_token {
        Some(token) => mcp.layer(axum::middleware::from_fn_with_state(
            BearerToken::new(token),
            require_bearer,
        )),
        None => mcp,
    }
}

/// `503 Service Unavailable` with `Retry-After: 1`.
fn unavailable(message: &'static str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
        message,
    )
        .into_response()
}

/// Reads a POST body within the body timeout and the size limit, and
/// refuses a new session when the cap is reached.
async fn read_body(State(limits): State<RequestLimits>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
    let bytes = match tokio::time::timeout(limits.body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
        }
        Ok(Err(_)) => return (StatusCode::BAD_REQUEST, "unreadable request body").into_response(),
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, HeaderValue::from_static("close"))],
                "the request body did not arrive in time (EROS_MCP_BODY_TIMEOUT)",
            )
                .into_response();
        }
    };
    let new_session = !parts.headers.contains_key("mcp-session-id");
    if new_session && limits.sessions.is_full() && is_initialize(&bytes) {
        limits.observer.session_rejected();
        return unavailable("too many open sessions (EROS_MCP_MAX_SESSIONS)");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Whether a JSON-RPC body is an `initialize` request (which opens a
/// session); anything unreadable is left to rmcp to refuse.
fn is_initialize(body: &Bytes) -> bool {
    #[derive(serde::Deserialize)]
    struct Method<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Method<'_>>(body)
        .is_ok_and(|m| m.method.as_deref() == Some("initialize"))
}

/// Serves a POST only with a free in-flight slot, held until its answer has
/// been sent (an SSE answer streams while the call runs).
async fn limit_in_flight(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Ok(permit) = Arc::clone(&limits.in_flight).try_acquire_owned() else {
        limits.observer.request_rejected(Rejection::InFlight);
        return unavailable("too many requests in flight (EROS_MCP_MAX_IN_FLIGHT)");
    };
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(PermitBody {
            inner: body,
            _permit: permit,
        }),
    )
}

/// A response body that holds an in-flight slot until it is dropped.
struct PermitBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves until shutdown: then refuses new calls, lets running ones finish
/// within the grace period, closes open streams and returns.
/// `config.max_connections` is the cap that fits the open-file limit.
pub async fn serve<S>(
    listener: tokio::net::TcpListener,
    server: S,
    config: &McpConfig,
    calls: Arc<CallTracker>,
    shutdown: Shutdown,
    observer: Arc<dyn TransportObserver>,
) -> Result<(), TransportError>
where
    S: rmcp::ServerHandler + Clone + Send + Sync + 'static,
{
    let stop = tokio_util::sync::CancellationToken::new();
    let sessions = Arc::new(LimitedSessions::new(
        config.max_sessions,
        config.session_idle_timeout,
        Arc::clone(&observer),
    ));
    let expiry = sessions.spawn_expiry(stop.clone());
    let app = router(
        server,
        config,
        sessions,
        Arc::clone(&observer),
        stop.clone(),
    );
    let grace = config.shutdown_grace;
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
    };
    tracing::info!(
        addr = %config.http_addr,
        auth = config.auth_token.is_some(),
        max_connections = limits.max_connections,
        max_in_flight = config.max_in_flight,
        max_sessions = config.max_sessions,
        "serving MCP over HTTP at /mcp"
    );
    accept::serve(listener, app, limits, observer, async move {
        shutdown.wait().await;
        calls.drain(grace).await;
        stop.cancel();
    })
    .await;
    let _ = expiry.await;
    Ok(())
}
