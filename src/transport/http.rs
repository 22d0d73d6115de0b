//! MCP over streamable HTTP at `/mcp`: rmcp's service nested in axum, with
//! `Host`/`Origin` checks against DNS rebinding ([`super::rebinding`]), the
//! bearer token in front and a request-body limit (413). A body that is not
//! JSON gets 400 with the JSON-RPC `-32700` answer, one that is not a
//! message 400 with `-32600`, and a known method with params that do not
//! fit it `-32602` ([`crate::rmcp_gaps::jsonrpc`]); a session `DELETE` answers 204.
//! An SSE answer goes out in one write when the call is quick: its head
//! waits briefly for the answer instead of leaving alone.
//! 2025-11-25 clients get sessions;
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
use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use rmcp::transport::streamable_http_server::session::{SessionId, SessionManager};
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::accept::{self, ConnectionLimits};
use super::auth::{authenticate, require_scope, Authenticator};
use super::observer::{Rejection, TransportObserver};
use super::operation::Operation;
use super::sessions::{LimitedSessions, OpeningSession, SessionAccess};
use super::settings::HttpSettings;
use super::TransportError;
use crate::identity::Principal;
use crate::mcp::{AssignedSession, CallTracker};
use crate::rmcp_gaps::jsonrpc::{self, ErrorAnswer, Screened};
use crate::rmcp_gaps::rebinding::{refuse_rebinding, RebindingGuard};
use crate::shutdown::Shutdown;

/// Binds the MCP port; fails fast with a clear error if it is taken.
pub async fn bind(config: &HttpSettings) -> Result<tokio::net::TcpListener, TransportError> {
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

/// The axum router serving MCP at `/mcp`. `stop` ends open streams;
/// `in_flight` holds a permit per POST until its answer has been sent.
fn router<S>(
    server: S,
    config: &HttpSettings,
    in_flight: Arc<Semaphore>,
    auth: Option<Authenticator>,
    sessions: Arc<LimitedSessions>,
    observer: Arc<dyn TransportObserver>,
    stop: tokio_util::sync::CancellationToken,
) -> Router
where
    S: rmcp::ServerHandler + Clone + Send + Sync + 'static,
{
    let owners = Arc::clone(&sessions);
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
        in_flight,
        sessions,
        body_timeout: config.body_timeout,
        max_body_bytes: config.max_body_bytes,
        observer,
    };
    // Layers run outside in: Host and Origin first, then the token, then
    // the body (a slow body holds a connection, never an in-flight slot),
    // then the in-flight cap, then the scope of what the body asks.
    let mcp = Router::new().nest_service("/mcp", service);
    let mcp = match &auth {
        Some(auth) => mcp.layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            require_scope,
        )),
        None => mcp,
    };
    let mcp = mcp
        .layer(axum::middleware::from_fn(coalesce_sse_answer))
        .layer(axum::middleware::from_fn(end_session_with_no_content))
        .layer(axum::middleware::from_fn_with_state(
            limits.clone(),
            limit_in_flight,
        ))
        .layer(axum::middleware::from_fn_with_state(limits, read_body))
        .layer(axum::middleware::from_fn_with_state(owners, bind_sessions));
    let mcp = match &auth {
        Some(auth) => mcp.layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            authenticate,
        )),
        None => mcp,
    };
    // The Protected Resource Metadata is public: it is what a client
    // without a token reads first (RFC 9728).
    let mcp = match auth
        .as_ref()
        .and_then(|auth| Some((auth.oauth()?.clone(), auth.scopes_supported())))
    {
        Some((oauth, scopes)) => {
            let document = axum::Json(oauth.metadata(&scopes));
            let metadata = axum::routing::get(move || std::future::ready(document.clone()));
            oauth
                .metadata_paths()
                .iter()
                .fold(mcp, |mcp, path| mcp.route(path, metadata.clone()))
        }
        None => mcp,
    };
    let guard = RebindingGuard::new(&config.allowed_hosts, &config.allowed_origins);
    mcp.layer(axum::middleware::from_fn_with_state(
        Arc::new(guard),
        refuse_rebinding,
    ))
}

/// A session belongs to the principal that opened it: a request (or a
/// `DELETE`) naming another principal's session is answered 404, as if the
/// session did not exist, and never reaches it. Without authentication
/// there is one principal and nothing to check.
async fn bind_sessions(
    State(sessions): State<Arc<LimitedSessions>>,
    mut request: Request,
    next: Next,
) -> Response {
    let owner = request
        .extensions()
        .get::<Arc<Principal>>()
        .map(|principal| principal.identity_key());
    let named = request
        .headers()
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    if let Some(id) = &named {
        if let Some(owner) = &owner {
            if sessions.access(id, owner) == SessionAccess::Unknown {
                return (StatusCode::NOT_FOUND, "session not found").into_response();
            }
        }
        // Only a session this server assigned is the call's session (the
        // audit log's); a header naming none is a client's say-so.
        if sessions.is_open(id) {
            request.extensions_mut().insert(AssignedSession(id.clone()));
        }
    }
    let Some(owner) = owner else {
        return next.run(request).await;
    };
    // Where the body's reader leaves the place of a session being opened,
    // kept until the session is claimed below.
    let opening = OpeningHolder::default();
    request.extensions_mut().insert(opening.clone());
    let response = next.run(request).await;
    if named.is_none() {
        if let Some(id) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
        {
            if !sessions.claim(id, &owner) {
                // Two opened at once past the principal's cap: the later
                // one is closed before its id is handed out.
                let id = SessionId::from(id);
                let _ = sessions.close_session(&id).await;
                return unavailable(TOO_MANY_SESSIONS_OF_PRINCIPAL);
            }
        }
    }
    drop(opening);
    response
}

/// The [`OpeningSession`] of a request that opens a session, between the
/// layer that reads its body and the one that claims the session.
#[derive(Debug, Clone, Default)]
struct OpeningHolder(Arc<std::sync::Mutex<Option<OpeningSession>>>);

/// The 503 for a principal at `EROS_MCP_MAX_SESSIONS_PER_PRINCIPAL`.
const TOO_MANY_SESSIONS_OF_PRINCIPAL: &str =
    "this principal has as many sessions open as one may (EROS_MCP_MAX_SESSIONS_PER_PRINCIPAL); \
     end one (DELETE /mcp) or wait for one to expire";

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
    let mut parts = parts;
    // The body is parsed here once (rmcp parses it again: its service
    // takes bytes); what it asks for is read from that one parse.
    let mut initialize = false;
    if is_json(&parts.headers) {
        match jsonrpc::screen(&bytes) {
            Screened::Message(message) => {
                initialize = is_initialize(&message);
                if let Some(operation) = Operation::of(&message) {
                    parts.extensions.insert(operation);
                }
            }
            Screened::Refused(answer) => return json_rpc_error(&answer),
            // Over HTTP even a notification is answered: with 400.
            Screened::Ignored => {
                return json_rpc_error(&ErrorAnswer::invalid_request(
                    None,
                    "not a JSON-RPC message",
                ))
            }
        }
    }
    let new_session = !parts.headers.contains_key("mcp-session-id");
    if new_session && initialize {
        if limits.sessions.is_full() {
            limits.observer.session_rejected();
            return unavailable("too many open sessions (EROS_MCP_MAX_SESSIONS)");
        }
        let owner = parts
            .extensions
            .get::<Arc<Principal>>()
            .map(|principal| principal.identity_key());
        if let (Some(owner), Some(holder)) = (owner, parts.extensions.get::<OpeningHolder>()) {
            match limits.sessions.open_for(&owner) {
                Some(place) => *holder.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(place),
                None => {
                    limits.observer.session_rejected();
                    return unavailable(TOO_MANY_SESSIONS_OF_PRINCIPAL);
                }
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Whether the body is declared JSON; others are left to rmcp (415).
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let essence = value.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json")
        })
}

/// A JSON-RPC error as the whole answer: 400 when the body could not be
/// read as a request, 200 when a request was read and its params refused
/// (the answer to a request, like any other).
fn json_rpc_error(answer: &ErrorAnswer) -> Response {
    let status = if answer.error.code == rmcp::model::ErrorCode::INVALID_PARAMS {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.to_json(),
    )
        .into_response()
}

/// rmcp answers a session `DELETE` with 202 Accepted; the session is gone
/// by then, and clients (the Python SDK) expect 200 or 204.
async fn end_session_with_no_content(request: Request, next: Next) -> Response {
    let delete = request.method() == Method::DELETE;
    let response = next.run(request).await;
    if delete && response.status() == StatusCode::ACCEPTED {
        return StatusCode::NO_CONTENT.into_response();
    }
    response
}

/// How long an SSE answer's head waits for the answer itself. A quick call
/// then costs one write (head, priming event and answer together) instead
/// of two; a slower one loses nothing, its answer follows as before.
const COALESCE_WINDOW: Duration = Duration::from_millis(50);

/// Holds an SSE answer to a POST until its first JSON-RPC message is ready
/// (or [`COALESCE_WINDOW`] passes), so that hyper writes the head and the
/// events ready so far in one go.
async fn coalesce_sse_answer(request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    if !is_sse {
        return response;
    }
    let (parts, mut body) = response.into_parts();
    let mut ready = Vec::new();
    let mut end = BodyEnd::Open;
    let window = tokio::time::sleep(COALESCE_WINDOW);
    tokio::pin!(window);
    // Until a message arrives: every event so far.
    while end == BodyEnd::Open && !carries_message(&ready) {
        tokio::select! {
            frame = body.frame() => end = take_frame(frame, &mut ready),
            () = &mut window => break,
        }
    }
    // Then whatever is ready at once, such as the end of the stream.
    while end == BodyEnd::Open {
        match tokio::time::timeout(Duration::ZERO, body.frame()).await {
            Ok(frame) => end = take_frame(frame, &mut ready),
            Err(_) => break,
        }
    }
    let body = Coalesced {
        ready: (!ready.is_empty()).then(|| Bytes::from(ready)),
        rest: (end == BodyEnd::Open).then_some(body),
    };
    Response::from_parts(parts, Body::new(body))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    Open,
    Ended,
}

/// Appends a data frame to `ready`; says whether the body has ended (an
/// error ends it: the client sees the stream stop, as it would have).
fn take_frame(frame: Option<Result<Frame<Bytes>, axum::Error>>, ready: &mut Vec<u8>) -> BodyEnd {
    match frame {
        Some(Ok(frame)) => {
            if let Ok(data) = frame.into_data() {
                ready.extend_from_slice(&data);
            }
            BodyEnd::Open
        }
        Some(Err(err)) => {
            tracing::debug!(error = %err, "an SSE answer failed while it was gathered");
            BodyEnd::Ended
        }
        None => BodyEnd::Ended,
    }
}

/// Whether SSE text holds a JSON-RPC message (priming events carry no data).
fn carries_message(events: &[u8]) -> bool {
    memchr::memmem::find(events, b"data: {").is_some()
        || memchr::memmem::find(events, b"data:{").is_some()
}

/// An SSE body whose first events were gathered by [`coalesce_sse_answer`].
struct Coalesced {
    ready: Option<Bytes>,
    rest: Option<Body>,
}

impl http_body::Body for Coalesced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(ready) = self.ready.take() {
            return Poll::Ready(Some(Ok(Frame::data(ready))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }
}

/// Whether a message is an `initialize` request (which opens a session).
fn is_initialize(message: &ClientJsonRpcMessage) -> bool {
    matches!(
        message,
        ClientJsonRpcMessage::Request(request)
            if matches!(request.request, ClientRequest::InitializeRequest(_))
    )
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

/// The router [`serve`] serves at `/mcp`, on its own: its sessions, its
/// in-flight cap, no accept loop. For driving the HTTP layer in-process
/// (`tower::ServiceExt::oneshot`); its sessions expire only with it.
pub fn mcp_router<S>(
    server: S,
    config: &HttpSettings,
    auth: Option<Authenticator>,
    observer: Arc<dyn TransportObserver>,
) -> Router
where
    S: rmcp::ServerHandler + Clone + Send + Sync + 'static,
{
    let sessions = Arc::new(LimitedSessions::new(
        config.max_sessions,
        config.max_sessions_per_principal,
        config.session_idle_timeout,
        Arc::clone(&observer),
    ));
    router(
        server,
        config,
        Arc::new(Semaphore::new(config.max_in_flight)),
        auth,
        sessions,
        observer,
        tokio_util::sync::CancellationToken::new(),
    )
}

/// Serves until shutdown: then refuses new calls, lets running ones finish
/// within the grace period, closes open streams and returns.
/// `config.max_connections` is the cap that fits the open-file limit.
pub async fn serve<S>(
    listener: tokio::net::TcpListener,
    server: S,
    config: &HttpSettings,
    auth: Option<Authenticator>,
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
        config.max_sessions_per_principal,
        config.session_idle_timeout,
        Arc::clone(&observer),
    ));
    let expiry = sessions.spawn_expiry(stop.clone());
    let authenticated = auth.is_some();
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let app = router(
        server,
        config,
        Arc::clone(&in_flight),
        auth,
        sessions,
        Arc::clone(&observer),
        stop.clone(),
    );
    let grace = config.shutdown_grace;
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
        // Without authentication every connection is as good as any other.
        unauthenticated: authenticated.then_some(config.unauthenticated),
    };
    tracing::info!(
        addr = %config.http_addr,
        auth = authenticated,
        max_connections = limits.max_connections,
        max_in_flight = config.max_in_flight,
        max_sessions = config.max_sessions,
        "serving MCP over HTTP at /mcp"
    );
    let max_in_flight = u32::try_from(config.max_in_flight).unwrap_or(u32::MAX);
    accept::serve(listener, app, limits, observer, async move {
        shutdown.wait().await;
        let started = tokio::time::Instant::now();
        calls.drain(grace).await;
        // A call that has returned may not have been sent yet: its answer
        // travels through rmcp's stream to the response body, and closing
        // the streams now would drop it (a committed write answered with
        // silence). Every POST holds an in-flight permit until its answer
        // body has been sent, so wait for all of them, within the grace.
        let left = grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        if tokio::time::timeout(left, in_flight.acquire_many(max_in_flight))
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace over with answers still being sent; closing them");
        }
        stop.cancel();
    })
    .await;
    let _ = expiry.await;
    Ok(())
}
