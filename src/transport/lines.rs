//! Newline-delimited JSON-RPC over a reader and a writer (stdin and stdout),
//! our own rather than rmcp's `AsyncRwTransport`: every line that cannot be
//! served gets its JSON-RPC error answer ([`crate::rmcp_gaps::jsonrpc`]), and a request
//! that reuses the id of one still in flight is refused instead of run a
//! second time.
//!
//! A tool answer's line is written by [`crate::rmcp_gaps::answer_line`], every other
//! message's by serde_json.
//!
//! One writer task owns the output and writes whole lines from a short
//! queue, so answers from rmcp and refusals from the reader never
//! interleave, and a client that stops reading stops the reader (the queue
//! fills), so refusals cost bounded memory just as answers do.

use std::future::Future;

use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::RoleServer;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::request_ids::RequestIds;
use crate::rmcp_gaps::answer_line;
use crate::rmcp_gaps::jsonrpc::{self, ErrorAnswer, Screened};

/// The longest line read; a longer one is discarded and answered with an
/// error (rmcp 3.11 has the same bound but drops such a line unanswered).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Lines waiting for the writer. Small: answers are already bounded by the
/// in-flight cap, and a client that does not read should stop us soon.
const QUEUED_LINES: usize = 16;

/// The most a serde-written line's buffer is sized ahead from the last
/// line. Larger messages grow from there: sizing every buffer from the last
/// 350 KB answer doubled peak RSS, glibc then keeping the freed buffers in
/// its per-thread arenas. (A tool answer's line is sized to its own texts
/// by [`answer_line`].)
const MAX_PRESIZE: usize = 64 * 1024;

/// One line for the writer, and whom to tell once it is written.
struct Outgoing {
    bytes: Vec<u8>,
    written: Option<oneshot::Sender<std::io::Result<()>>>,
}

/// How reading one line ended.
enum LineRead {
    Line,
    Oversized,
    Eof,
    Io(std::io::Error),
}

/// A server transport reading JSON-RPC lines from `R` and writing them to
/// the writer given to [`JsonLines::new`].
pub struct JsonLines<R> {
    read: BufReader<R>,
    line: Vec<u8>,
    /// The rest of an oversized line is being skipped.
    discarding: bool,
    max_line_bytes: usize,
    /// `None` once closed.
    outbox: Option<mpsc::Sender<Outgoing>>,
    /// A refusal not yet queued. Kept here, not in a local, because rmcp
    /// drops `receive` whenever another branch of its `select!` is ready.
    refusal: Option<Vec<u8>>,
    /// The ids of requests read and not yet answered.
    in_flight: RequestIds,
    /// The length of the last message read, for the byte budget of
    /// requests in flight ([`super::stdio`]).
    last_read_bytes: usize,
    /// The length of the last line sent: the next one serde writes goes into
    /// a buffer a quarter larger (up to [`MAX_PRESIZE`]), so a small answer
    /// is not copied at each doubling of a buffer grown from nothing.
    last_len: usize,
}

impl<R: AsyncRead + Unpin + Send> JsonLines<R> {
    /// Starts the writer task on `write` (call inside a Tokio runtime).
    pub fn new<W: AsyncWrite + Unpin + Send + 'static>(read: R, write: W) -> Self {
        let (outbox, queued) = mpsc::channel(QUEUED_LINES);
        tokio::spawn(write_lines(write, queued));
        Self {
            read: BufReader::new(read),
            line: Vec::new(),
            discarding: false,
            max_line_bytes: MAX_LINE_BYTES,
            outbox: Some(outbox),
            refusal: None,
            last_read_bytes: 0,
            last_len: 0,
            in_flight: RequestIds::default(),
        }
    }

    fn refuse(&mut self, answer: &ErrorAnswer) {
        tracing::debug!(
            code = answer.error.code.0,
            id = ?answer.id,
            message = %answer.error.message,
            "refused a JSON-RPC message"
        );
        let mut bytes = answer.to_json();
        bytes.push(b'\n');
        self.refusal = Some(bytes);
    }

    /// Records a request as in flight, or refuses it when its id already is.
    fn claim(&self, message: &RxJsonRpcMessage<RoleServer>) -> Option<ErrorAnswer> {
        self.in_flight.received(message).err()
    }

    /// Queues the pending refusal, if any; `None` when the writer is gone.
    async fn flush_refusal(&mut self) -> Option<()> {
        if self.refusal.is_none() {
            return Some(());
        }
        let permit = self.outbox.as_ref()?.reserve().await.ok()?;
        if let Some(bytes) = self.refusal.take() {
            permit.send(Outgoing {
                bytes,
                written: None,
            });
        }
        Some(())
    }

    /// Reads up to the next newline into `self.line`; cancel-safe (what was
    /// read stays in `self.line`).
    async fn read_line(&mut self) -> LineRead {
        loop {
            let available = match self.read.fill_buf().await {
                Ok(available) => available,
                Err(err) => return LineRead::Io(err),
            };
            if available.is_empty() {
                return LineRead::Eof;
            }
            let newline = memchr::memchr(b'\n', available);
            let take = newline.map_or(available.len(), |at| at + 1);
            let oversized = !self.discarding && self.line.len() + take > self.max_line_bytes;
            if !self.discarding && !oversized {
                self.line.extend_from_slice(&available[..take]);
            }
            self.read.consume(take);
            if oversized {
                self.line.clear();
                self.discarding = newline.is_none();
                return LineRead::Oversized;
            }
            if newline.is_some() {
                if self.discarding {
                    self.discarding = false;
                    continue;
                }
                return LineRead::Line;
            }
        }
    }
}

/// Writes queued lines until the queue closes or a write fails; flushes
/// when nothing more is queued.
async fn write_lines<W: AsyncWrite + Unpin>(mut write: W, mut queued: mpsc::Receiver<Outgoing>) {
    while let Some(line) = queued.recv().await {
        let mut written = write.write_all(&line.bytes).await;
        if written.is_ok() && queued.is_empty() {
            written = write.flush().await;
        }
        let failed = written.is_err();
        if let Err(err) = &written {
            tracing::debug!(error = %err, "writing to the stdio client failed");
        }
        if let Some(waiter) = line.written {
            let _ = waiter.send(written);
        }
        if failed {
            return;
        }
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the stdio output is closed")
}

impl<R> JsonLines<R> {
    /// The length in bytes of the message [`Transport::receive`] last
    /// returned.
    pub fn last_read_bytes(&self) -> usize {
        self.last_read_bytes
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> Transport<RoleServer> for JsonLines<R> {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        // Released before the answer is written, so a client that reads
        // it and reuses the id at once is never refused.
        self.in_flight.sending(&item);
        let mut bytes = Vec::new();
        let written = if answer_line::write_tool_answer(&item, &mut bytes) {
            Ok(())
        } else {
            bytes.reserve((self.last_len + self.last_len / 4).clamp(256, MAX_PRESIZE));
            serde_json::to_writer(&mut bytes, &item)
        };
        let bytes = written.map(|()| {
            bytes.push(b'\n');
            self.last_len = bytes.len();
            bytes
        });
        let outbox = self.outbox.clone();
        async move {
            let bytes = bytes.map_err(std::io::Error::other)?;
            let outbox = outbox.ok_or_else(closed)?;
            let (written, done) = oneshot::channel();
            outbox
                .send(Outgoing {
                    bytes,
                    written: Some(written),
                })
                .await
                .map_err(|_| closed())?;
            done.await.map_err(|_| closed())?
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            self.flush_refusal().await?;
            match self.read_line().await {
                LineRead::Line => {}
                LineRead::Oversized => {
                    let why = format!("message longer than {} bytes", self.max_line_bytes);
                    self.refuse(&ErrorAnswer::invalid_request(None, why));
                    continue;
                }
                LineRead::Eof => return None,
                LineRead::Io(err) => {
                    tracing::error!(error = %err, "reading from the stdio client failed");
                    return None;
                }
            }
            let text = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.is_empty() {
                self.line.clear();
                continue;
            }
            self.last_read_bytes = text.len();
            let screened = jsonrpc::screen(text);
            self.line.clear();
            match screened {
                Screened::Message(message) => match self.claim(&message) {
                    Some(refusal) => self.refuse(&refusal),
                    None => return Some(*message),
                },
                Screened::Refused(answer) => self.refuse(&answer),
                Screened::Ignored => tracing::debug!("ignored an unreadable notification"),
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        // The writer finishes what is queued, then ends.
        self.outbox = None;
        std::future::ready(Ok(()))
    }
}
