//! The operations sidecar: an axum server on its own address
//! (`EROS_METRICS_ADDR`), outside MCP auth, whatever the MCP transport is,
//! on its own thread and runtime so MCP work never starves the probes.
//!
//! - `GET /metrics`: Prometheus text exposition ([`metrics`]).
//! - `GET /livez`: the process is alive; never touches the database.
//! - `GET /readyz`: 200 when queries can be served, else 503 with a JSON
//!   reason ([`readiness`]).
//! - `GET /stats`: the pool's `stats()` snapshot as JSON.

pub mod metrics;
pub mod readiness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::transport::accept::{self, ConnectionLimits};
use crate::transport::NoTransportObserver;

pub use metrics::Metrics;
pub use readiness::{Readiness, ReadinessSet, ReadyStatus};

/// What the handlers read.
#[derive(Clone)]
pub struct SidecarState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<ReadinessSet>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for metrics and probes: {source} (set EROS_METRICS_ADDR, or off)")]
pub struct SidecarBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

pub fn router(state: SidecarState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/stats", get(stats))
        .with_state(state)
}

async fn metrics_text(State(state): State<SidecarState>) -> Response {
    let body = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<SidecarState>) -> Response {
    let status = state.readiness.check().await;
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(status)).into_response()
}

async fn stats(State(state): State<SidecarState>) -> Response {
    let mut stats = state.metrics.pool_stats();
    match stats.len() {
        // One database: its pool's statistics, as they always were.
        1 => Json(stats.remove(0).1).into_response(),
        2.. => Json(
            stats
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .into_response(),
        0 => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "starting"})),
        )
            .into_response(),
    }
}

/// Connections the sidecar serves at once: probes and a scraper need few.
const MAX_CONNECTIONS: usize = crate::transport::accept::SIDECAR_MAX_CONNECTIONS;
/// Probes send their headers at once; anything slower is not a probe.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound sidecar, ready to serve.
pub struct Sidecar {
    listener: std::net::TcpListener,
    pub addr: SocketAddr,
}

impl Sidecar {
    pub fn bind(addr: SocketAddr) -> Result<Self, SidecarBindError> {
        let bind_error = |source| SidecarBindError { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Self { listener, addr })
    }

    /// Serves until `stop` is cancelled, on its own OS thread with its own
    /// single-threaded runtime: however busy MCP work keeps the main
    /// runtime, probes are answered.
    pub fn spawn(
        self,
        state: SidecarState,
        stop: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        tracing::info!(addr = %self.addr, "serving /metrics, /livez, /readyz and /stats");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("eros-sidecar".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(self.listener) {
                        Ok(listener) => listener,
                        Err(err) => {
                            tracing::error!(error = %err, "the metrics sidecar failed");
                            return;
                        }
                    };
                    let limits = ConnectionLimits {
                        max_connections: MAX_CONNECTIONS,
                        header_timeout: HEADER_TIMEOUT,
                        unauthenticated: None,
                    };
                    accept::serve(
                        listener,
                        router(state),
                        limits,
                        Arc::new(NoTransportObserver),
                        async move { stop.cancelled().await },
                    )
                    .await;
                });
            })
    }
}
