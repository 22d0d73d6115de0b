//! The shutdown signal: one [`Shutdown`] is created at startup, every part
//! that must stop holds a clone and awaits [`Shutdown::wait`]. Also the
//! one owner of the process's signals: SIGTERM and SIGINT trigger it, and
//! each SIGHUP is counted for whatever re-reads its files then
//! ([`Shutdown::hangups`]).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A cloneable handle that is triggered once, by a signal or by a caller.
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
    /// SIGHUPs received so far.
    hangups: Arc<watch::Sender<u64>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            token: CancellationToken::new(),
            hangups: Arc::new(watch::Sender::new(0)),
        }
    }
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

    /// Changes on every SIGHUP (see [`Shutdown::trigger_on_signals`]).
    pub fn hangups(&self) -> watch::Receiver<u64> {
        self.hangups.subscribe()
    }

    /// Records a SIGHUP for every [`Shutdown::hangups`] receiver.
    pub fn hang_up(&self) {
        self.hangups.send_modify(|count| *count += 1);
    }

    /// The underlying token, for libraries that take one (rmcp, axum).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Triggers shutdown on SIGTERM or SIGINT (Ctrl-C), in whatever state
    /// the server is; hands SIGHUP, whose default action would kill the
    /// process without the drain, to [`Shutdown::hangups`]. The handlers are installed
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
                        tracing::info!("SIGHUP received: not a shutdown");
                        this.hang_up();
                    }
                    else => return,
                }
            }
        });
        Ok(())
    }
}
