//! HTTP sessions with a cap and idle expiry: rmcp's in-memory session
//! manager, wrapped. At `EROS_MCP_MAX_SESSIONS` a new session is refused; a
//! session that has had no request for `EROS_MCP_SESSION_IDLE_TIMEOUT`, and
//! is not answering one, is closed and its memory handed back.
//!
//! rmcp's own keep-alive is off: since rmcp 3.11 it does free an idle
//! session, but its timer ignores requests in flight, so a call longer
//! than it would lose its session; and rmcp has no cap
//! ([`crate::rmcp_gaps`], gap 8).
//!
//! A request reusing the id of one still in flight in its session is
//! refused with `-32600` and not run: rmcp would run both and route one
//! answer.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use rmcp::model::{ClientJsonRpcMessage, JsonRpcMessage, RequestId, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};
use tokio_util::sync::CancellationToken;

use super::observer::TransportObserver;
use super::request_ids::{answered, RequestIds};
use crate::rmcp_gaps::jsonrpc::ErrorAnswer;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionLimitError {
    #[error("{max} sessions are open (EROS_MCP_MAX_SESSIONS)")]
    Full { max: usize },
    #[error(transparent)]
    Session(#[from] LocalSessionManagerError),
}

/// When a session last had a request, how many answers it is streaming,
/// the ids of the requests it has in flight, and who opened it.
#[derive(Debug, Clone)]
struct Activity {
    last: Instant,
    answering: usize,
    requests: RequestIds,
    /// The principal that opened the session (see [`LimitedSessions::claim`]);
    /// `None` until claimed, and always on a server without auth.
    owner: Option<String>,
}

impl Activity {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            answering: 0,
            requests: RequestIds::default(),
            owner: None,
        }
    }
}

/// Whether a principal may use a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAccess {
    /// No such session (or another principal's: told apart from none).
    Unknown,
    /// The session is the principal's own.
    Own,
}

type ActivityMap = Arc<Mutex<HashMap<SessionId, Activity>>>;

fn lock(map: &ActivityMap) -> std::sync::MutexGuard<'_, HashMap<SessionId, Activity>> {
    map.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// rmcp's [`LocalSessionManager`] with a cap and idle expiry.
pub struct LimitedSessions {
    inner: LocalSessionManager,
    max_sessions: usize,
    max_per_principal: usize,
    idle_timeout: Duration,
    activity: ActivityMap,
    /// Per principal, sessions being opened and not yet claimed.
    opening: Arc<Mutex<HashMap<String, usize>>>,
    observer: Arc<dyn TransportObserver>,
}

/// A principal's place for one session being opened, held from the moment
/// its `initialize` is read until the session is claimed (or refused), so
/// that sessions opened at once count against the principal's cap too.
#[derive(Debug)]
pub struct OpeningSession {
    opening: Arc<Mutex<HashMap<String, usize>>>,
    owner: String,
}

impl Drop for OpeningSession {
    fn drop(&mut self) {
        let mut opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = opening.get_mut(&self.owner) {
            *count -= 1;
            if *count == 0 {
                opening.remove(&self.owner);
            }
        }
    }
}

impl LimitedSessions {
    pub fn new(
        max_sessions: usize,
        max_per_principal: usize,
        idle_timeout: Duration,
        observer: Arc<dyn TransportObserver>,
    ) -> Self {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = None;
        Self {
            inner,
            max_sessions,
            max_per_principal,
            idle_timeout,
            activity: Arc::default(),
            opening: Arc::default(),
            observer,
        }
    }

    /// Records `owner` as the principal that opened session `id`; a
    /// session already claimed keeps its owner. False when `owner`
    /// already has its most sessions: the caller closes the new one.
    pub fn claim(&self, id: &str, owner: &str) -> bool {
        let mut activity = lock(&self.activity);
        let owned = activity
            .values()
            .filter(|a| a.owner.as_deref() == Some(owner))
            .count();
        match activity.get_mut(id) {
            Some(session) if session.owner.is_none() => {
                if owned >= self.max_per_principal {
                    return false;
                }
                session.owner = Some(owner.to_string());
                true
            }
            _ => true,
        }
    }

    /// A place for a session `owner` is opening, or `None` when its open
    /// and opening sessions already reach the principal's cap.
    pub fn open_for(&self, owner: &str) -> Option<OpeningSession> {
        let owned = lock(&self.activity)
            .values()
            .filter(|a| a.owner.as_deref() == Some(owner))
            .count();
        let mut opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        let pending = opening.entry(owner.to_string()).or_insert(0);
        if owned + *pending >= self.max_per_principal {
            if *pending == 0 {
                opening.remove(owner);
            }
            return None;
        }
        *pending += 1;
        Some(OpeningSession {
            opening: Arc::clone(&self.opening),
            owner: owner.to_string(),
        })
    }

    /// The most sessions one principal may have open.
    pub fn max_per_principal(&self) -> usize {
        self.max_per_principal
    }

    /// Whether session `id` is open (one this server assigned).
    pub fn is_open(&self, id: &str) -> bool {
        lock(&self.activity).contains_key(id)
    }

    /// Whether `principal` may use session `id`: a session another
    /// principal opened is, to it, a session that does not exist. A
    /// session nobody claimed (none of this server's own) is left to rmcp.
    pub fn access(&self, id: &str, principal: &str) -> SessionAccess {
        match lock(&self.activity).get(id).map(|a| a.owner.as_deref()) {
            Some(Some(owner)) if owner != principal => SessionAccess::Unknown,
            _ => SessionAccess::Own,
        }
    }

    /// Whether a new session would be refused now.
    pub fn is_full(&self) -> bool {
        lock(&self.activity).len() >= self.max_sessions
    }

    /// Closes idle sessions every so often until `stop` is cancelled.
    pub fn spawn_expiry(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let sessions = Arc::clone(self);
        // A quarter of the timeout: a session lives at most 25% longer
        // than it may sit idle.
        let every =
            (self.idle_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => sessions.close_idle().await,
                    () = stop.cancelled() => return,
                }
            }
        })
    }

    /// Closes every session idle for the timeout and not answering.
    pub async fn close_idle(&self) {
        let idle: Vec<SessionId> = lock(&self.activity)
            .iter()
            .filter(|(_, a)| a.answering == 0 && a.last.elapsed() >= self.idle_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        if idle.is_empty() {
            return;
        }
        for id in &idle {
            self.observer.session_expired();
            if let Err(err) = self.close_session(id).await {
                tracing::warn!(session = %id, error = %err, "closing an idle session failed");
            }
        }
        tracing::debug!(closed = idle.len(), "closed idle HTTP sessions");
        return_freed_memory();
    }

    fn touch(&self, id: &SessionId) {
        if let Some(activity) = lock(&self.activity).get_mut(id) {
            activity.last = Instant::now();
        }
    }

    /// Counts an answer being streamed until the stream is dropped, and
    /// holds `request`'s id in flight until its answer passes; the id back
    /// as the error when it already is in flight.
    fn answering(
        &self,
        id: &SessionId,
        request: Option<RequestId>,
    ) -> Result<Answering, ErrorAnswer> {
        let mut requests = None;
        if let Some(activity) = lock(&self.activity).get_mut(id) {
            if let Some(request) = &request {
                activity.requests.begin(request)?;
            }
            activity.answering += 1;
            activity.last = Instant::now();
            requests = Some(activity.requests.clone());
        }
        Ok(Answering {
            activity: Arc::clone(&self.activity),
            id: id.clone(),
            request,
            requests,
        })
    }

    /// A cancelled request's answer is never sent: its id is free again.
    fn forget_cancelled(&self, id: &SessionId, message: &ClientJsonRpcMessage) {
        if matches!(message, JsonRpcMessage::Notification(_)) {
            if let Some(activity) = lock(&self.activity).get(id) {
                let _ = activity.requests.received(message);
            }
        }
    }
}

/// glibc keeps freed memory for reuse instead of returning it; after a
/// batch of sessions is closed, hand the free pages back so RSS falls.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Marks a session as answering while alive, and its request's id as in
/// flight until [`Answering::answered`]; the session's idle clock starts
/// again when it is dropped.
struct Answering {
    activity: ActivityMap,
    id: SessionId,
    request: Option<RequestId>,
    /// The session's ids in flight (none for a session already gone).
    requests: Option<RequestIds>,
}

impl Answering {
    /// Frees the request's id. Called as its answer leaves the stream,
    /// before the client can read it and reuse the id.
    fn answered(&mut self) {
        if let (Some(request), Some(requests)) = (self.request.take(), &self.requests) {
            requests.end(&request);
        }
    }

    /// Whether `message` is the answer to this request.
    fn is_answer(&self, message: &ServerJsonRpcMessage) -> bool {
        let answered = answered(message);
        answered.is_some() && answered == self.request.as_ref()
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.answered();
        if let Some(activity) = lock(&self.activity).get_mut(&self.id) {
            activity.answering = activity.answering.saturating_sub(1);
            activity.last = Instant::now();
        }
    }
}

/// The answer stream of one POSTed request.
enum AnswerStream<S> {
    /// rmcp's stream, which keeps its session from expiring.
    Answering {
        inner: Pin<Box<S>>,
        answering: Answering,
    },
    /// The request was refused: this one error is the whole answer.
    Refused(Option<ServerSseMessage>),
}

impl<S: Stream<Item = ServerSseMessage>> Stream for AnswerStream<S> {
    type Item = ServerSseMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Self::Answering { inner, answering } => {
                let next = inner.as_mut().poll_next(cx);
                if let Poll::Ready(Some(event)) = &next {
                    if event
                        .message
                        .as_deref()
                        .is_some_and(|message| answering.is_answer(message))
                    {
                        answering.answered();
                    }
                }
                next
            }
            Self::Refused(refusal) => Poll::Ready(refusal.take()),
        }
    }
}

impl SessionManager for LimitedSessions {
    type Error = SessionLimitError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let full = SessionLimitError::Full {
            max: self.max_sessions,
        };
        if self.is_full() {
            self.observer.session_rejected();
            return Err(full);
        }
        let (id, transport) = self.inner.create_session().await?;
        {
            // Checked again under the lock: sessions created at the same
            // moment must not pass the cap together.
            let mut activity = lock(&self.activity);
            if activity.len() < self.max_sessions {
                activity.insert(id.clone(), Activity::new());
                drop(activity);
                self.observer.session_opened();
                return Ok((id, transport));
            }
        }
        self.observer.session_rejected();
        let _ = self.inner.close_session(&id).await;
        Err(full)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.touch(id);
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        // Called again by rmcp when the session's worker ends: count once.
        if lock(&self.activity).remove(id).is_some() {
            self.observer.session_closed();
        }
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let request = match &message {
            JsonRpcMessage::Request(request) => Some(request.id.clone()),
            _ => None,
        };
        let answering = match self.answering(id, request) {
            Ok(answering) => answering,
            Err(refusal) => {
                tracing::debug!(session = %id, "{}", refusal.error.message);
                let refusal = ServerJsonRpcMessage::error(refusal.error, refusal.id);
                return Ok(AnswerStream::Refused(Some(ServerSseMessage::from_message(
                    refusal,
                ))));
            }
        };
        let inner = self.inner.create_stream(id, message).await?;
        Ok(AnswerStream::Answering {
            inner: Box::pin(inner),
            answering,
        })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.touch(id);
        self.forget_cancelled(id, &message);
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        Ok(self.inner.resume(id, last_event_id).await?)
    }
}
