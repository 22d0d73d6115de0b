//! r2d2's event and error hooks: they keep `in_use` exact, feed the observer,
//! log connection errors and warn when utilization stays high.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use r2d2::event::{CheckinEvent, CheckoutEvent};

use super::counters::PoolCounters;
use super::manager::{ConnectionFault, Shared};

/// Utilization above which the pool warns.
const HIGH_UTILIZATION: f64 = 0.8;
/// How long utilization must stay high before a warning.
const HIGH_UTILIZATION_GRACE: Duration = Duration::from_secs(10);
/// At most one warning per this interval.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

thread_local! {
    /// Set on the maintenance thread: its checkouts are bookkeeping, not
    /// traffic, so they stay out of the timing histograms.
    pub(crate) static MAINTENANCE: Cell<bool> = const { Cell::new(false) };
}

pub(crate) struct PoolEvents {
    shared: Arc<Shared>,
    max_connections: u64,
    epoch: Instant,
    /// Milliseconds since `epoch` when utilization went above the line; 0 if below.
    high_since_ms: AtomicU64,
    last_warning_ms: AtomicU64,
}

impl std::fmt::Debug for PoolEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolEvents").finish_non_exhaustive()
    }
}

impl PoolEvents {
    pub fn new(shared: Arc<Shared>, max_connections: u32) -> Self {
        Self {
            shared,
            max_connections: u64::from(max_connections),
            epoch: Instant::now(),
            high_since_ms: AtomicU64::new(0),
            last_warning_ms: AtomicU64::new(0),
        }
    }

    /// A checkout that took an idle connection without waiting
    /// (`Pool::try_checkout`): r2d2 fires no event for it.
    pub fn checked_out_at_once(&self) {
        let in_use = self.shared.counters.in_use.load(Relaxed);
        self.shared
            .observer
            .checkout_waited(std::time::Duration::ZERO);
        self.watch_utilization(in_use);
    }

    fn watch_utilization(&self, in_use: u64) {
        let now_ms = (self.epoch.elapsed().as_millis() as u64).max(1);
        if let Some(high_for_ms) = self.high_for_too_long(in_use, now_ms) {
            tracing::warn!(
                in_use,
                max_connections = self.max_connections,
                "connection pool utilization has stayed above 80% for {}s; consider raising \
                 EROS_DB_POOL_SIZE or EROS_DB_POOL_OVERFLOW",
                high_for_ms / 1000
            );
        }
    }

    /// Whether to warn now, at `now_ms` with `in_use` connections checked
    /// out: `Some(how long utilization has been high)` once it has stayed
    /// above 80% for the grace period, at most once per warning interval.
    fn high_for_too_long(&self, in_use: u64, now_ms: u64) -> Option<u64> {
        if (in_use as f64) <= HIGH_UTILIZATION * self.max_connections as f64 {
            self.high_since_ms.store(0, Relaxed);
            return None;
        }
        let since = match self
            .high_since_ms
            .compare_exchange(0, now_ms, Relaxed, Relaxed)
        {
            Ok(_) => now_ms,
            Err(since) => since,
        };
        let last = self.last_warning_ms.load(Relaxed);
        let grace_over = now_ms - since >= HIGH_UTILIZATION_GRACE.as_millis() as u64;
        let quiet_long_enough = last == 0 || now_ms - last >= WARNING_INTERVAL.as_millis() as u64;
        let claimed = grace_over
            && quiet_long_enough
            && self
                .last_warning_ms
                .compare_exchange(last, now_ms, Relaxed, Relaxed)
                .is_ok();
        claimed.then_some(now_ms - since)
    }
}

/// r2d2 owns its event handler; the pool keeps the same events too.
pub(crate) struct SharedEvents(pub Arc<PoolEvents>);

impl std::fmt::Debug for SharedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedEvents")
    }
}

impl r2d2::HandleEvent for SharedEvents {
    fn handle_checkout(&self, event: CheckoutEvent) {
        self.0.handle_checkout(event);
    }

    fn handle_checkin(&self, event: CheckinEvent) {
        self.0.handle_checkin(event);
    }
}

impl r2d2::HandleEvent for PoolEvents {
    fn handle_checkout(&self, event: CheckoutEvent) {
        let in_use = self.shared.counters.in_use.fetch_add(1, Relaxed) + 1;
        if !MAINTENANCE.get() {
            self.shared.observer.checkout_waited(event.duration());
            self.watch_utilization(in_use);
        }
    }

    fn handle_checkin(&self, event: CheckinEvent) {
        PoolCounters::drop_one(&self.shared.counters.in_use);
        if !MAINTENANCE.get() {
            self.shared.observer.connection_held(event.duration());
        }
    }
}

/// Logs what r2d2 reports: open failures loudly, routine recycling quietly.
#[derive(Debug)]
pub(crate) struct PoolErrorLog;

impl r2d2::HandleError<ConnectionFault> for PoolErrorLog {
    fn handle_error(&self, error: ConnectionFault) {
        match error {
            ConnectionFault::Expired(age) => {
                tracing::debug!(?age, "recycled a connection past its maximum age")
            }
            ConnectionFault::Superseded => {
                tracing::debug!("reopened a connection on the replica's re-restored file")
            }
            ConnectionFault::WorkerGone => {
                tracing::warn!("replaced a connection whose worker process had exited")
            }
            ConnectionFault::Open(err) => {
                tracing::error!(error = %err, "could not open a database connection")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::NoObserver;

    fn events() -> PoolEvents {
        PoolEvents::new(
            Arc::new(Shared::new(
                8,
                0,
                Arc::new(NoObserver),
                crate::sqlite::health::DatabaseHealth::unwatched(std::path::Path::new("t.db")),
            )),
            10,
        )
    }

    #[test]
    fn a_short_spike_above_80_percent_does_not_warn() {
        let events = events();
        assert_eq!(events.high_for_too_long(9, 1_000), None);
        assert_eq!(events.high_for_too_long(9, 5_000), None);
        assert_eq!(events.high_for_too_long(3, 6_000), None);
        assert_eq!(
            events.high_for_too_long(9, 12_000),
            None,
            "the spike ended; the clock restarts"
        );
    }

    #[test]
    fn utilization_that_stays_high_warns_once_per_interval() {
        let events = events();
        assert_eq!(events.high_for_too_long(9, 1_000), None);
        assert_eq!(events.high_for_too_long(9, 11_000), Some(10_000));
        assert_eq!(events.high_for_too_long(10, 30_000), None, "rate-limited");
        assert_eq!(events.high_for_too_long(10, 71_000), Some(70_000));
    }

    #[test]
    fn exactly_80_percent_is_not_high() {
        let events = events();
        assert_eq!(events.high_for_too_long(8, 1_000), None);
        assert_eq!(events.high_for_too_long(8, 20_000), None);
    }
}
