//! The hardened HTTP accept loop both HTTP servers use (MCP at `/mcp` and
//! the operations sidecar): a cap on open connections (one more is answered
//! `503` with `Retry-After: 1` and closed at once), a separate budget for
//! connections that have not authenticated ([`super::unauthenticated`]), a
//! deadline for a request's headers (idle and half-sent connections are
//! closed), and `TCP_NODELAY`. Also the open-file arithmetic that keeps descriptors in
//! reserve for the database and the sidecar.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::observer::{Rejection, TransportObserver};
use super::unauthenticated::{UnauthenticatedBudget, UnauthenticatedLimits};

/// What one server allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from the
    /// moment the connection is ready for the next request.
    pub header_timeout: Duration,
    /// What connections without a token may take; `None` where nobody
    /// authenticates (the sidecar, HTTP without authentication).
    pub unauthenticated: Option<UnauthenticatedLimits>,
}

/// The whole answer to a connection over the cap: written in one
/// non-blocking call into an empty socket buffer, so it never waits.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n\r\ntoo many open connections";

/// How long to pause accepting when the process is out of descriptors:
/// the pending connection stays in the backlog until one is freed.
const OUT_OF_FILES_PAUSE: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and waits for open connections to finish their requests.
///
/// HTTP/1.1 only: hyper has no header deadline for HTTP/2 without TLS, so a
/// slow h2c client could hold a connection for ever; MCP clients speak 1.1.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    observer: Arc<dyn TransportObserver>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let unauthenticated = limits.unauthenticated.map(UnauthenticatedBudget::new);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    pause_after_accept_error(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A connection without a token first takes a place in its own
        // budget, so it never takes one authenticated clients need.
        let gate = match &unauthenticated {
            Some(budget) => match budget.admit(peer.ip()) {
                Some(gate) => Some(gate),
                None => {
                    observer.request_rejected(Rejection::Unauthenticated);
                    refuse(stream);
                    continue;
                }
            },
            None => None,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            observer.request_rejected(Rejection::Connections);
            refuse(stream);
            continue;
        };
        // Small answers (probes, JSON-RPC results) must not wait for
        // Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        observer.connection_opened();
        let io = TokioIo::new(stream);
        let connection = match &gate {
            // Each request carries the gate, for authentication to open.
            Some(gate) => {
                let gate = gate.clone();
                let service = tower::ServiceBuilder::new()
                    .map_request(
                        move |mut request: axum::http::Request<hyper::body::Incoming>| {
                            request.extensions_mut().insert(gate.clone());
                            request
                        },
                    )
                    .service(app.clone());
                tokio_util::either::Either::Left(
                    graceful.watch(http.serve_connection(io, TowerToHyperService::new(service))),
                )
            }
            None => tokio_util::either::Either::Right(
                graceful.watch(http.serve_connection(io, TowerToHyperService::new(app.clone()))),
            ),
        };
        let observer = Arc::clone(&observer);
        tokio::spawn(async move {
            let expired = async {
                match &gate {
                    Some(gate) => gate.expired().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ended = connection => {
                    if let Err(err) = ended {
                        tracing::debug!(error = %err, "HTTP connection ended with an error");
                    }
                }
                () = expired => {
                    // Dropping the connection closes it.
                    observer.request_rejected(Rejection::Unauthenticated);
                    tracing::debug!(%peer, "closed a connection that did not authenticate in time");
                }
            }
            drop(gate);
            drop(permit);
            observer.connection_closed();
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection over the cap with [`REFUSAL`] and closes it,
/// without waiting on the client.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSAL);
    // Reading what already arrived makes the close a FIN rather than a
    // reset, so the client can read the 503.
    let mut discard = [0u8; 4096];
    let _ = stream.try_read(&mut discard);
}

/// Accept errors are about one connection (reset before it was accepted)
/// or about the process (out of descriptors): only the second needs a pause,
/// else the loop would spin.
async fn pause_after_accept_error(err: &std::io::Error) {
    let out_of_files = matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    if out_of_files {
        tracing::warn!(error = %err, "out of file descriptors; pausing accept");
        tokio::time::sleep(OUT_OF_FILES_PAUSE).await;
    } else {
        tracing::debug!(error = %err, "accept failed");
    }
}

/// Descriptors kept out of the MCP connection cap for everything else:
/// the sidecar's connections, and stdio, logs, listeners and the runtime.
pub const SIDECAR_MAX_CONNECTIONS: usize = 64;
const OTHER_FILES: u64 = 32;
/// Each database connection holds the file, its WAL and shared memory, and
/// a temporary file at times.
const FILES_PER_DB_CONNECTION: u64 = 4;

/// The open-file budget of the process, worked out at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileBudget {
    /// The soft `RLIMIT_NOFILE` after raising it.
    pub open_files: u64,
    /// Descriptors held back for the database, the sidecar and the rest.
    pub reserve: u64,
    /// The MCP connection cap that fits: at most the configured one.
    pub max_connections: usize,
}

impl FileBudget {
    /// The cap that fits `open_files` beside `db_connections` database
    /// connections (never below 1: a server that takes no connection at all
    /// would only look alive).
    pub fn new(open_files: u64, db_connections: u32, configured: usize) -> Self {
        let reserve = SIDECAR_MAX_CONNECTIONS as u64
            + OTHER_FILES
            + FILES_PER_DB_CONNECTION * u64::from(db_connections);
        let fits = open_files.saturating_sub(reserve).max(1);
        let max_connections = usize::try_from(fits).unwrap_or(usize::MAX).min(configured);
        Self {
            open_files,
            reserve,
            max_connections,
        }
    }
}

/// Raises the soft open-file limit to the hard one and returns it (the
/// soft limit as it is when it cannot be read or raised).
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_cap_is_kept_when_files_are_plenty() {
        let budget = FileBudget::new(1_048_576, 15, 512);
        assert_eq!(budget.max_connections, 512);
        assert_eq!(budget.reserve, 64 + 32 + 60);
    }

    #[test]
    fn a_low_open_file_limit_lowers_the_cap_and_keeps_the_reserve() {
        let budget = FileBudget::new(256, 15, 512);
        assert_eq!(budget.max_connections, 256 - 156);
    }

    #[test]
    fn the_cap_never_falls_to_zero() {
        assert_eq!(FileBudget::new(64, 15, 512).max_connections, 1);
    }
}
