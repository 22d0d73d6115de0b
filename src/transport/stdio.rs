//! MCP over standard input and output: one client, nothing but protocol on
//! stdout (logs go to stderr). The session ends when the client closes
//! stdin or shutdown is triggered.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;

use super::TransportError;
use crate::mcp::{CallTracker, ErosServer};
use crate::shutdown::Shutdown;

/// Serves `server` on stdin/stdout until the client leaves or shutdown.
pub async fn serve(
    server: ErosServer,
    calls: Arc<CallTracker>,
    shutdown: Shutdown,
    grace: Duration,
) -> Result<(), TransportError> {
    // The handshake waits for the client's first message: a signal or a
    // client that leaves before it is an ordinary end, not a failure.
    let running = tokio::select! {
        started = server.serve(rmcp::transport::io::stdio_pipes()) => match started {
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
