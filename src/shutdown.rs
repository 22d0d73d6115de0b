//! The shutdown signal: one [`Shutdown`] is created at startup, every part
//! that must stop holds a clone and awaits [`Shutdown::wait`].

use tokio_util::sync::CancellationToken;

/// A cloneable handle that is triggered once, by a signal or by a caller.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts shutting down; every waiter wakes.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has started.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// The underlying token, for libraries that take one (rmcp, axum).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Triggers shutdown on SIGINT (Ctrl-C) or SIGTERM.
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut sig) => {
                        sig.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let term = std::future::pending::<()>();
            tokio::select! {
                _ = ctrl_c => tracing::info!("received SIGINT, shutting down"),
                _ = term => tracing::info!("received SIGTERM, shutting down"),
            }
            this.trigger();
        });
    }
}
