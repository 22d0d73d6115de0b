//! Exact pool counters, kept in atomics, and the `stats()` snapshot built
//! from them.
//!
//! `open` is changed only by the connection wrapper (birth and drop) and by
//! the return gate; `in_use` only by r2d2's checkout and checkin events. Every
//! other number is a monotonic counter.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct PoolCounters {
    pub open: AtomicU64,
    pub in_use: AtomicU64,
    pub waiters: AtomicU64,
    pub created: AtomicU64,
    pub recycled: AtomicU64,
    pub failed: AtomicU64,
    pub health_check_failures: AtomicU64,
    pub checkout_timeouts: AtomicU64,
    pub overflow_closed: AtomicU64,
    pub rollbacks: AtomicU64,
    pub retries: AtomicU64,
}

impl PoolCounters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn drop_one(counter: &AtomicU64) {
        // Never wraps below zero even if a bug double-counts a release.
        let _ = counter.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

/// A point-in-time view of the pool, as the monitoring tool and the
/// `/stats` endpoint report it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PoolStats {
    /// Configured number of kept connections.
    pub pool_size: u64,
    /// Configured extra connections allowed under load.
    pub max_overflow: u64,
    /// `pool_size + max_overflow`.
    pub max_connections: u64,
    /// Idle connections ready to hand out.
    pub available: u64,
    /// Open connections, idle or in use.
    pub total_connections: u64,
    /// Open connections above `pool_size`.
    pub overflow_in_use: u64,
    /// Connections checked out right now.
    pub active_connections: u64,
    /// Callers waiting for a connection right now.
    pub waiters: u64,
    pub connections_created: u64,
    /// Closed because they reached `connection_max_age`.
    pub connections_recycled: u64,
    /// Failed attempts to open a connection.
    pub connections_failed: u64,
    pub health_check_failures: u64,
    pub checkout_timeouts: u64,
    /// Overflow connections closed on return.
    pub overflow_closed: u64,
    /// Transactions left open by a caller and rolled back on return.
    pub rollbacks: u64,
    /// Retries of transient failures.
    pub retries: u64,
    /// Configured maximum age, in seconds.
    pub connection_max_age: f64,
}
