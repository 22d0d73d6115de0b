//! MCP over standard input and output: one client, nothing but protocol on
//! stdout (logs go to stderr). The session ends when the client closes
//! stdin or shutdown is triggered.
//!
//! Backpressure: [`Backpressured`] stops reading stdin while
//! `EROS_MCP_MAX_IN_FLIGHT` requests are being served or their answers are
//! not yet written, or while the requests in flight together take
//! [`REQUEST_BYTES_IN_FLIGHT`] (a request keeps everything it was sent,
//! `_meta` and unused fields included, until it is answered), so a client
//! that writes calls and never reads the answers holds the server at a
//! bounded size instead of growing it.
//! Framing, malformed lines and duplicate ids are [`super::lines`]' work.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{ClientNotification, JsonRpcMessage, RequestId};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::{RoleServer, ServiceExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::lines::JsonLines;
use super::observer::TransportObserver;
use super::TransportError;
use crate::mcp::{CallTracker, ErosServer};
use crate::shutdown::Shutdown;

/// What the stdio transport is given besides the server.
pub struct StdioOptions {
    pub grace: Duration,
    pub max_in_flight: usize,
    pub observer: Arc<dyn TransportObserver>,
}

/// Serves `server` on stdin/stdout until the client leaves or shutdown.
pub async fn serve(
    server: ErosServer,
    calls: Arc<CallTracker>,
    shutdown: Shutdown,
    options: StdioOptions,
) -> Result<(), TransportError> {
    let (stdin, stdout) = super::pipes::stdio();
    serve_on(server, calls, shutdown, options, stdin, stdout).await
}

/// As [`serve`], on any byte streams: the process's pipes, or an in-memory
/// duplex stream in tests.
pub async fn serve_on<R, W>(
    server: ErosServer,
    calls: Arc<CallTracker>,
    shutdown: Shutdown,
    options: StdioOptions,
    input: R,
    output: W,
) -> Result<(), TransportError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let transport = Backpressured::new(
        JsonLines::new(input, output),
        options.max_in_flight,
        options.observer,
    );
    // The handshake waits for the client's first message: a signal or a
    // client that leaves before it is an ordinary end, not a failure.
    let running = tokio::select! {
        started = server.serve(transport) => match started {
            Ok(running) => running,
            Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
                tracing::info!("the stdio client left before starting a session");
                shutdown.trigger();
                return Ok(());
            }
            Err(err) => return Err(TransportError::Start(err.to_string())),
        },
        _ = shutdown.wait() => return Ok(()),
    };
    let stop = running.cancellation_token();
    let grace = options.grace;
    let stopper = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            calls.drain(grace).await;
            stop.cancel();
        })
    };
    let reason = running.waiting().await;
    tracing::info!(?reason, "stdio session ended");
    if !shutdown.is_triggered() {
        // The client went away: there is nobody left to serve.
        shutdown.trigger();
    }
    let _ = stopper.await;
    Ok(())
}

/// Bytes of request messages that may be in flight at once: two of the
/// largest message a line may carry ([`super::lines::MAX_LINE_BYTES`]).
/// A request larger than what is left waits, and stdin is not read
/// meanwhile.
pub const REQUEST_BYTES_IN_FLIGHT: usize = 2 * super::lines::MAX_LINE_BYTES;

/// The byte budget counts in units of this many bytes.
const BYTES_PER_PERMIT: usize = 1024;

/// What a request in flight holds until its answer is written: its place
/// among the requests and its share of the byte budget.
type Held = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// Permits held by requests until their answers are written, by request id
/// (a list: a careless client may reuse an id).
type HeldPermits = Arc<Mutex<HashMap<RequestId, Vec<Held>>>>;

/// A transport that says how large the message it last returned was.
pub trait MessageBytes {
    fn last_message_bytes(&self) -> usize;
}

impl<R> MessageBytes for JsonLines<R> {
    fn last_message_bytes(&self) -> usize {
        self.last_read_bytes()
    }
}

/// A server transport that reads the next message only with a free permit:
/// a request keeps its permit until the answer carrying its id has been
/// written (or the client cancels it); other messages give theirs back.
pub struct Backpressured<T> {
    inner: T,
    permits: Arc<Semaphore>,
    /// The permit for the next message. Kept here, not in a local, because
    /// rmcp polls `receive` inside a `select!` and drops it whenever another
    /// branch is ready: the permit must survive that.
    next: Option<OwnedSemaphorePermit>,
    /// Whether the current wait for a permit has been counted, so a
    /// dropped and restarted `receive` counts one wait once.
    wait_counted: bool,
    held: HeldPermits,
    /// The byte budget of requests in flight, in [`BYTES_PER_PERMIT`] units.
    bytes: Arc<Semaphore>,
    /// A message read whose bytes wait for room in the budget (kept here
    /// for the same reason as `next`), and the units it needs.
    pending: Option<(RxJsonRpcMessage<RoleServer>, u32)>,
    observer: Arc<dyn TransportObserver>,
}

impl<T> Backpressured<T> {
    pub fn new(inner: T, max_in_flight: usize, observer: Arc<dyn TransportObserver>) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            next: None,
            wait_counted: false,
            held: Arc::default(),
            bytes: Arc::new(Semaphore::new(REQUEST_BYTES_IN_FLIGHT / BYTES_PER_PERMIT)),
            pending: None,
            observer,
        }
    }

    async fn permit(&mut self) -> Option<()> {
        if self.next.is_some() {
            return Some(());
        }
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !self.wait_counted {
                    self.wait_counted = true;
                    self.observer.stdio_backpressure_waited();
                }
                Arc::clone(&self.permits).acquire_owned().await.ok()?
            }
        };
        self.wait_counted = false;
        self.next = Some(permit);
        Some(())
    }
}

/// Gives back one permit held for `id`, if any.
fn release(held: &HeldPermits, id: &RequestId) {
    let mut held = held.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(permits) = held.get_mut(id) {
        permits.pop();
        if permits.is_empty() {
            held.remove(id);
        }
    }
}

impl<T> Transport<RoleServer> for Backpressured<T>
where
    T: Transport<RoleServer> + MessageBytes,
{
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let answered = match &item {
            JsonRpcMessage::Response(response) => Some(response.id.clone()),
            JsonRpcMessage::Error(error) => error.id.clone(),
            _ => None,
        };
        let held = Arc::clone(&self.held);
        let send = self.inner.send(item);
        async move {
            let sent = send.await;
            // Written, or the write failed and nothing more will be
            // written: either way the answer no longer occupies memory.
            if let Some(id) = answered {
                release(&held, &id);
            }
            sent
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        if self.pending.is_none() {
            self.permit().await?;
            let message = self.inner.receive().await?;
            let units = self
                .inner
                .last_message_bytes()
                .div_ceil(BYTES_PER_PERMIT)
                .clamp(1, REQUEST_BYTES_IN_FLIGHT / BYTES_PER_PERMIT);
            self.pending = Some((message, units as u32));
        }
        let units = self.pending.as_ref().map_or(1, |(_, units)| *units);
        let bytes = match Arc::clone(&self.bytes).try_acquire_many_owned(units) {
            Ok(bytes) => bytes,
            Err(_) => {
                self.observer.stdio_backpressure_waited();
                Arc::clone(&self.bytes)
                    .acquire_many_owned(units)
                    .await
                    .ok()?
            }
        };
        let (message, _) = self.pending.take()?;
        match &message {
            JsonRpcMessage::Request(request) => {
                if let Some(permit) = self.next.take() {
                    self.held
                        .lock()
                        .unwrap_or_else(|poison| poison.into_inner())
                        .entry(request.id.clone())
                        .or_default()
                        .push((permit, bytes));
                }
            }
            // rmcp drops the answer of a cancelled request: its permit
            // would never come back otherwise.
            JsonRpcMessage::Notification(notification) => {
                if let ClientNotification::CancelledNotification(cancelled) =
                    &notification.notification
                {
                    if let Some(id) = &cancelled.params.request_id {
                        release(&self.held, id);
                    }
                }
            }
            JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_) => {}
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
