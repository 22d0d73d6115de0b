//! The operations sidecar: an axum server on its own address
//! (`EROS_METRICS_ADDR`), outside MCP auth, whatever the MCP transport is.
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

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;
pub use readiness::{Readiness, ReadyStatus};

/// What the handlers read.
#[derive(Clone)]
pub struct SidecarState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
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
    match state.metrics.pool_stats() {
        Some(stats) => Json(stats).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "starting"})),
        )
            .into_response(),
    }
}

/// A bound sidecar, ready to serve.
pub struct Sidecar {
    listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
}

impl Sidecar {
    pub async fn bind(addr: SocketAddr) -> Result<Self, SidecarBindError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| SidecarBindError { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Self { listener, addr })
    }

    /// Serves until `stop` is cancelled.
    pub fn spawn(
        self,
        state: SidecarState,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tracing::info!(addr = %self.addr, "serving /metrics, /livez, /readyz and /stats");
        tokio::spawn(async move {
            let served = axum::serve(self.listener, router(state))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "the metrics sidecar failed");
            }
        })
    }
}
