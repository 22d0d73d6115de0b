//! In-flight tool calls: counted so shutdown can wait for them, refused once
//! shutdown starts, and interrupted together when the grace period ends.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct CallTracker {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
    abort: CancellationToken,
}

/// Held for the duration of one call.
#[derive(Debug)]
pub struct CallGuard(Arc<CallTracker>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl CallTracker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a new call, or `None` once shutdown has started.
    pub fn begin(self: &Arc<Self>) -> Option<CallGuard> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = CallGuard(Arc::clone(self));
        if self.draining.load(Ordering::Acquire) {
            return None;
        }
        Some(guard)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A token cancelled when the grace period ends; calls derive theirs from it.
    pub fn abort_token(&self) -> &CancellationToken {
        &self.abort
    }

    /// Refuses new calls, waits up to `grace` for the running ones, then
    /// interrupts whatever still runs and waits for it to stop.
    pub async fn drain(&self, grace: Duration) {
        self.draining.store(true, Ordering::Release);
        if tokio::time::timeout(grace, self.wait_idle()).await.is_err() {
            tracing::warn!(
                in_flight = self.in_flight(),
                "shutdown grace period over; interrupting running calls"
            );
            self.abort.cancel();
            // Interrupted calls answer within their stop slack; a statement
            // stuck inside one long SQLite step is abandoned, so shutdown
            // never waits more than a tenth of the grace for it.
            let after = (grace / 10).max(Duration::from_millis(100));
            let _ = tokio::time::timeout(after, self.wait_idle()).await;
        }
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}
