//! HTTP sessions with a cap and idle expiry: rmcp's in-memory session
//! manager, wrapped. At `EROS_MCP_MAX_SESSIONS` a new session is refused; a
//! session that has had no request for `EROS_MCP_SESSION_IDLE_TIMEOUT`, and
//! is not answering one, is closed and its memory handed back.
//!
//! rmcp's own keep-alive is off: it ends the session's worker but knows
//! nothing of the cap, and one clock is easier to reason about.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};
use tokio_util::sync::CancellationToken;

use super::observer::TransportObserver;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionLimitError {
    #[error("{max} sessions are open (EROS_MCP_MAX_SESSIONS)")]
    Full { max: usize },
    #[error(transparent)]
    Session(#[from] LocalSessionManagerError),
}

/// When a session last had a request, and how many answers it is streaming.
#[derive(Debug, Clone, Copy)]
struct Activity {
    last: Instant,
    answering: usize,
}

type ActivityMap = Arc<Mutex<HashMap<SessionId, Activity>>>;

fn lock(map: &ActivityMap) -> std::sync::MutexGuard<'_, HashMap<SessionId, Activity>> {
    map.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// rmcp's [`LocalSessionManager`] with a cap and idle expiry.
pub struct LimitedSessions {
    inner: LocalSessionManager,
    max_sessions: usize,
    idle_timeout: Duration,
    activity: ActivityMap,
    observer: Arc<dyn TransportObserver>,
}

impl LimitedSessions {
    pub fn new(
        max_sessions: usize,
        idle_timeout: Duration,
        observer: Arc<dyn TransportObserver>,
    ) -> Self {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = None;
        Self {
            inner,
            max_sessions,
            idle_timeout,
            activity: Arc::default(),
            observer,
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

    /// Counts an answer being streamed until the stream is dropped.
    fn answering(&self, id: &SessionId) -> Answering {
        if let Some(activity) = lock(&self.activity).get_mut(id) {
            activity.answering += 1;
            activity.last = Instant::now();
        }
        Answering {
            activity: Arc::clone(&self.activity),
            id: id.clone(),
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

/// Marks a session as answering while alive; the session's idle clock
/// starts again when it is dropped.
struct Answering {
    activity: ActivityMap,
    id: SessionId,
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(activity) = lock(&self.activity).get_mut(&self.id) {
            activity.answering = activity.answering.saturating_sub(1);
            activity.last = Instant::now();
        }
    }
}

/// A response stream that keeps its session from expiring.
struct AnsweringStream<S> {
    inner: Pin<Box<S>>,
    _answering: Answering,
}

impl<S: Stream> Stream for AnsweringStream<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
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
                activity.insert(
                    id.clone(),
                    Activity {
                        last: Instant::now(),
                        answering: 0,
                    },
                );
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
        let answering = self.answering(id);
        let inner = self.inner.create_stream(id, message).await?;
        Ok(AnsweringStream {
            inner: Box::pin(inner),
            _answering: answering,
        })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.touch(id);
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
