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

use std::net::SocketAddr;
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
use super::auth::{authenticate, scope_refusal, Authenticator};
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
    listen(config.http_addr).await
}

/// Binds `addr` with deferred accept ([`defer_accept`]).
async fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, TransportError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TransportError::Bind { addr, source })?;
    defer_accept(&listener);
    Ok(listener)
}

/// Asks the kernel to hand over a connection once its first bytes have
/// arrived (`TCP_DEFER_ACCEPT`, on Linux): accepting it and reading its
/// request then take one wake-up of the server instead of two. Clients
/// that open a connection for every call (rmcp's own client does) pay that
/// on every call. A connection that sends nothing is still handed over,
/// after about a second (when the kernel resends its SYN-ACK and the
/// client acknowledges it), and meets the header timeout as before.
fn defer_accept(listener: &tokio::net::TcpListener) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // Seconds the kernel holds a connection that has sent nothing.
        let seconds: libc::c_int = 1;
        // SAFETY: an int option on a listening socket we own; a failure
        // leaves accepts as they were.
        unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = listener;
}

/// What the gate in front of rmcp's service checks requests against.
struct Gate {
    auth: Option<Authenticator>,
    sessions: Arc<LimitedSessions>,
    in_flight: Arc<Semaphore>,
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
    let http_config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(!config.stateless)
        .with_json_response(config.stateless)
        // `refuse_rebinding` checks Host and Origin first on every route,
        // more strictly; rmcp clones its configuration for every request,
        // so lists kept there cost allocations and a second check each time.
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(config.max_body_bytes)
        .with_cancellation_token(stop);
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::clone(&sessions),
        http_config,
    );
    let gate = Arc::new(Gate {
        auth: auth.clone(),
        sessions,
        in_flight,
        body_timeout: config.body_timeout,
        max_body_bytes: config.max_body_bytes,
        observer,
    });
    // One layer with every check in order (see `gate`), rather than a layer
    // each: a request then pays for one boxed future, not five to seven.
    let mcp = Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(gate, self::gate));
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

/// Every check a request to `/mcp` passes before rmcp's service, in order
/// (the token first, as nothing else may run for an unknown caller; then
/// the cheap header checks before the body is read), and what its answer
/// needs on the way back:
/// 1. the bearer token names a principal (401);
/// 2. a session it names is its principal's (404 otherwise, as if the
///    session did not exist; without authentication there is one
///    principal and nothing to check);
/// 3. a POST's body arrives within the body timeout and the size limit
///    (408, 413, 400 when unreadable; a slow body holds a connection,
///    never an in-flight slot),
///    and is screened once: what is not a JSON-RPC message is answered here
///    (400 `-32700`/`-32600`, or `-32602` for params that do not fit);
/// 4. what the body asks is within the principal's scopes (403);
/// 5. an `initialize` without a session id finds room for a session (503),
///    and a POST a free
///    in-flight slot (503), held until its answer has been sent;
/// 6. on the way back: an SSE answer's head waits briefly for the answer
///    ([`coalesce_sse_answer`]), a session `DELETE` answers 204, and a
///    session just opened is claimed for its principal (503 past its cap).
async fn gate(State(gate): State<Arc<Gate>>, mut request: Request, next: Next) -> Response {
    if let Some(auth) = &gate.auth {
        if let Some(refused) = authenticate(auth, &mut request).await {
            return refused;
        }
    }
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
            if gate.sessions.access(id, owner) == SessionAccess::Unknown {
                return (StatusCode::NOT_FOUND, "session not found").into_response();
            }
        }
        // Only a session this server assigned is the call's session (the
        // audit log's); a header naming none is a client's say-so.
        if gate.sessions.is_open(id) {
            request.extensions_mut().insert(AssignedSession(id.clone()));
        }
    }
    match *request.method() {
        Method::POST => {
            let (response, opening) = post(&gate, request, next, named.is_none()).await;
            let response = match (&owner, &named) {
                (Some(owner), None) => claim_session(&gate.sessions, owner, response).await,
                _ => response,
            };
            // The place of a session being opened is kept until it is claimed.
            drop(opening);
            response
        }
        Method::DELETE => {
            // rmcp answers a session `DELETE` with 202 Accepted; the session
            // is gone by then, and clients (the Python SDK) expect 200 or 204.
            let response = next.run(request).await;
            if response.status() == StatusCode::ACCEPTED {
                StatusCode::NO_CONTENT.into_response()
            } else {
                response
            }
        }
        _ => next.run(request).await,
    }
}

/// Steps 3 to 5 of [`gate`] and the SSE coalescing, for a POST; with the
/// place of the session it opens, if it opens one for a principal.
async fn post(
    gate: &Gate,
    request: Request,
    next: Next,
    new_session: bool,
) -> (Response, Option<OpeningSession>) {
    let (mut parts, body) = request.into_parts();
    let bytes = match read_body(gate, body).await {
        Ok(bytes) => bytes,
        Err(refused) => return (refused, None),
    };
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
            Screened::Refused(answer) => return (json_rpc_error(&answer), None),
            // Over HTTP even a notification is answered: with 400.
            Screened::Ignored => {
                let answer = ErrorAnswer::invalid_request(None, "not a JSON-RPC message");
                return (json_rpc_error(&answer), None);
            }
        }
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    if let Some(auth) = &gate.auth {
        if let Some(refused) = scope_refusal(auth, &request) {
            return (refused, None);
        }
    }
    let mut opening = None;
    if new_session && initialize {
        if gate.sessions.is_full() {
            gate.observer.session_rejected();
            return (
                unavailable("too many open sessions (EROS_MCP_MAX_SESSIONS)"),
                None,
            );
        }
        let owner = request
            .extensions()
            .get::<Arc<Principal>>()
            .map(|principal| principal.identity_key());
        if let Some(owner) = owner {
            match gate.sessions.open_for(&owner) {
                Some(place) => opening = Some(place),
                None => {
                    gate.observer.session_rejected();
                    return (unavailable(TOO_MANY_SESSIONS_OF_PRINCIPAL), None);
                }
            }
        }
    }
    let Ok(permit) = Arc::clone(&gate.in_flight).try_acquire_owned() else {
        gate.observer.request_rejected(Rejection::InFlight);
        let refused = unavailable("too many requests in flight (EROS_MCP_MAX_IN_FLIGHT)");
        return (refused, opening);
    };
    let response = coalesce_sse_answer(next.run(request).await).await;
    let (parts, body) = response.into_parts();
    let body = Body::new(PermitBody {
        inner: body,
        _permit: permit,
    });
    (Response::from_parts(parts, body), opening)
}

/// Claims the session a response opened for `owner`; two opened at once
/// past the principal's cap: the later one is closed before its id is
/// handed out.
async fn claim_session(sessions: &LimitedSessions, owner: &str, response: Response) -> Response {
    let Some(id) = response
        .headers()
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
    else {
        return response;
    };
    if sessions.claim(id, owner) {
        return response;
    }
    let id = SessionId::from(id);
    let _ = sessions.close_session(&id).await;
    unavailable(TOO_MANY_SESSIONS_OF_PRINCIPAL)
}

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

/// A POST body, read within the body timeout and the size limit.
async fn read_body(gate: &Gate, body: Body) -> Result<Bytes, Response> {
    let limited = http_body_util::Limited::new(body, gate.max_body_bytes);
    match tokio::time::timeout(gate.body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
            Err((StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response())
        }
        Ok(Err(_)) => Err((StatusCode::BAD_REQUEST, "unreadable request body").into_response()),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, HeaderValue::from_static("close"))],
            "the request body did not arrive in time (EROS_MCP_BODY_TIMEOUT)",
        )
            .into_response()),
    }
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

/// How long an SSE answer's head waits for the answer itself. A quick call
/// then costs one write (head, priming event and answer together) instead
/// of two; a slower one loses nothing, its answer follows as before.
const COALESCE_WINDOW: Duration = Duration::from_millis(50);

/// Holds an SSE answer to a POST until its first JSON-RPC message is ready
/// (or [`COALESCE_WINDOW`] passes), so that hyper writes the head and the
/// events ready so far in one go.
async fn coalesce_sse_answer(response: Response) -> Response {
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::listen;

    /// Whether `listener` hands over a connection within `within`.
    async fn accepts_within(listener: &TcpListener, within: Duration) -> bool {
        tokio::time::timeout(within, listener.accept())
            .await
            .is_ok()
    }

    async fn listening() -> TcpListener {
        listen("127.0.0.1:0".parse().unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_handed_over_once_its_first_bytes_arrive() {
        let listener = listening().await;
        let started = Instant::now();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let held = !accepts_within(&listener, Duration::from_millis(300)).await;
        // A stall past the kernel's second would hand it over silent, as
        // the next test shows: then this one says nothing.
        if started.elapsed() < Duration::from_millis(900) {
            assert!(held, "handed over before any byte");
        }
        client.write_all(b"P").await.unwrap();
        assert!(
            !held || accepts_within(&listener, Duration::from_secs(5)).await,
            "not handed over with a byte"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_is_handed_over_after_about_a_second() {
        let listener = listening().await;
        let started = Instant::now();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(accepts_within(&listener, Duration::from_secs(10)).await);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(5),
            "handed over after {took:?}"
        );
    }

    #[tokio::test]
    async fn without_deferring_a_silent_connection_is_handed_over_at_once() {
        // The control: the silence above is the option's doing.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let started = Instant::now();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(accepts_within(&listener, Duration::from_secs(10)).await);
        assert!(started.elapsed() < Duration::from_millis(700));
    }
}
