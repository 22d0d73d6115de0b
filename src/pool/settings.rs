//! What the pool is built with: its sizes, waits, recycling and upkeep.
//! Built once from the configuration at the edge; how each connection is
//! opened is the connection factory's, not the pool's (see
//! [`crate::sqlite::connection::ConnectionOptions`]).

use std::time::Duration;

use crate::retry::RetryPolicy;

/// The pool's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// Connections the pool keeps open.
    pub pool_size: u32,
    /// Extra connections opened under load and closed again when returned.
    pub max_overflow: u32,
    /// How long a checkout waits before failing as exhausted.
    pub checkout_timeout: Duration,
    /// Connections older than this (less a little jitter) are recycled.
    pub connection_max_age: Duration,
    /// Connections kept open as a minimum (one opened before serving).
    pub prewarm: u32,
    /// Ping every connection on checkout.
    pub health_check: bool,
    /// How often the background maintenance runs.
    pub maintenance_interval: Duration,
    /// Retries of a connection that could not be opened for a passing reason.
    pub connect_retry: RetryPolicy,
    /// The program each connection's worker process runs: this server's
    /// binary. `None` finds it (see [`super::worker::resolve_program`]).
    pub worker_program: Option<std::path::PathBuf>,
}

impl PoolSettings {
    /// Most connections callers hold at once: the kept ones plus the overflow.
    pub fn max_connections(&self) -> u32 {
        self.pool_size + self.max_overflow
    }

    /// Connections r2d2 may open beyond the cap to replace ones held by
    /// statements abandoned at their deadline: as many as the pool keeps, so
    /// that many stuck statements leave full capacity to everyone else.
    pub(crate) fn abandoned_reserve(&self) -> u32 {
        self.pool_size
    }
}
