//! Whether the server can serve queries right now, as `/readyz` reports it:
//! the schema at the expected version, the pool open and handing out a
//! connection that answers `SELECT 1`, and no shutdown under way.
//!
//! The check never waits long: a pool whose every connection is busy is
//! saturated, not broken, so it stays ready (no flapping under load), and
//! the answer comes well within a probe's one-second timeout.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::pool::{Pool, PoolError};
use crate::shutdown::Shutdown;

/// How long the probe waits for a connection before calling the pool saturated.
const PROBE_CHECKOUT: Duration = Duration::from_millis(250);

/// The answer `/readyz` gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyStatus {
    pub ready: bool,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ReadyStatus {
    fn ready(status: &'static str) -> Self {
        Self {
            ready: true,
            status,
            reason: None,
        }
    }

    fn not_ready(reason: impl Into<String>) -> Self {
        Self {
            ready: false,
            status: "not ready",
            reason: Some(reason.into()),
        }
    }
}

pub struct Readiness {
    pool: OnceLock<Arc<Pool>>,
    /// The schema version the migrations lead to; `None` when migration is off.
    expected_version: Option<usize>,
    shutdown: Shutdown,
}

impl Readiness {
    pub fn new(expected_version: Option<usize>, shutdown: Shutdown) -> Self {
        Self {
            pool: OnceLock::new(),
            expected_version,
            shutdown,
        }
    }

    /// Marks the pool open and pre-warmed.
    pub fn pool_ready(&self, pool: Arc<Pool>) {
        let _ = self.pool.set(pool);
    }

    /// A cheap verdict for the `mcp_ready` gauge: open, warmed, not stopping.
    pub fn is_ready_cheap(&self) -> bool {
        !self.shutdown.is_triggered()
            && self
                .pool
                .get()
                .is_some_and(|pool| !pool.is_closed() && pool.stats().total_connections > 0)
    }

    /// The full check `/readyz` runs.
    pub async fn check(&self) -> ReadyStatus {
        if self.shutdown.is_triggered() {
            return ReadyStatus::not_ready("shutting down");
        }
        let Some(pool) = self.pool.get().cloned() else {
            return ReadyStatus::not_ready("starting: the database is not open yet");
        };
        let expected = self.expected_version;
        let probe = tokio::task::spawn_blocking(move || probe(&pool, expected));
        match tokio::time::timeout(Duration::from_millis(800), probe).await {
            Ok(Ok(status)) => status,
            Ok(Err(err)) => ReadyStatus::not_ready(format!("readiness probe failed: {err}")),
            // The blocking pool itself is saturated: busy, not broken.
            Err(_) => ReadyStatus::ready("ready (saturated)"),
        }
    }
}

fn probe(pool: &Pool, expected_version: Option<usize>) -> ReadyStatus {
    if pool.is_closed() {
        return ReadyStatus::not_ready("shutting down");
    }
    let conn = match pool.get_timeout(PROBE_CHECKOUT) {
        Ok(conn) => conn,
        Err(PoolError::Exhausted { .. }) => return ReadyStatus::ready("ready (saturated)"),
        Err(err) => return ReadyStatus::not_ready(err.to_string()),
    };
    if let Err(err) = conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)) {
        return ReadyStatus::not_ready(format!("SELECT 1 failed: {err}"));
    }
    if let Some(expected) = expected_version {
        match crate::migrations::current_version(&conn) {
            Ok(version) if version == expected => {}
            Ok(version) => {
                return ReadyStatus::not_ready(format!(
                    "schema version is {version}, expected {expected}"
                ))
            }
            Err(err) => {
                return ReadyStatus::not_ready(format!("cannot read the schema version: {err}"))
            }
        }
    }
    ReadyStatus::ready("ready")
}
