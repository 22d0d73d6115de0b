//! The shutdown signal: one [`Shutdown`] is created at startup, every part
//! that must stop holds a clone and awaits [`Shutdown::wait`]. Also the
//! process's signal handling: SIGTERM and SIGINT trigger it, SIGHUP is
//! logged (what is re-read on SIGHUP listens for it itself).

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

    /// Triggers shutdown on SIGTERM or SIGINT (Ctrl-C), in whatever state
    /// the server is; logs and ignores SIGHUP, whose default action would
    /// kill the process without the drain. The handlers are installed
    /// before this returns, so no signal slips past them.
    pub fn trigger_on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let this = self.clone();
        // Runs until the runtime stops: a SIGHUP during the drain must be
        // ignored too.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = terminate.recv() => {
                        tracing::info!("received SIGTERM, shutting down");
                        this.trigger();
                    }
                    Some(()) = interrupt.recv() => {
                        tracing::info!("received SIGINT, shutting down");
                        this.trigger();
                    }
                    Some(()) = hangup.recv() => {
                        // Files that are re-read on SIGHUP (the tokens
                        // file) listen for it themselves.
                        tracing::info!("SIGHUP received: not a shutdown");
                    }
                    else => return,
                }
            }
        });
        Ok(())
    }
}
