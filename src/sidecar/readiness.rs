//! Whether the server can serve queries right now, as `/readyz` reports it:
//! the schema at the expected version, the pool open, the database file the
//! one opened at startup and answering `SELECT 1`, no corruption reported
//! since the last passing `quick_check`, and no shutdown under way. The
//! body also says whether writes are possible (`writable`, with the
//! reason when not): a full disk or a read-only file stops writes while
//! reads still serve, so it does not make the server unready.
//!
//! The probe never touches the pool: it runs on its own read-only
//! connection (opened without CREATE, on the file recorded at startup), so
//! no probe counts as a checkout, a timeout or a wait in the pool's
//! counters and histograms, and a saturated pool cannot make it wait. A
//! pool whose every connection is busy is reported `ready (saturated)`:
//! saturation is not unreadiness.
//!
//! A read replica is also not ready before its follower's first restore
//! has produced the file, while no heartbeat has reached it, and while its
//! lag exceeds `EROS_DB_REPLICA_MAX_LAG` (read from [`ReplicaLag`], which
//! its own thread keeps current, so the probe stays cheap).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::connection;
use crate::health::FileIdentity;
use crate::pool::Pool;
use crate::replication::lag::ReplicaLag;
use crate::shutdown::Shutdown;

/// The longest a `quick_check` after reported corruption may take in a probe.
const QUICK_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// The answer `/readyz` gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyStatus {
    pub ready: bool,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether a write can succeed now.
    pub writable: bool,
    /// Why not, when `writable` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_blocker: Option<String>,
}

impl ReadyStatus {
    fn ready(status: &'static str, write_blocker: Option<String>) -> Self {
        Self {
            ready: true,
            status,
            reason: None,
            writable: write_blocker.is_none(),
            write_blocker,
        }
    }

    fn not_ready(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self {
            ready: false,
            status: "not ready",
            write_blocker: Some(reason.clone()),
            reason: Some(reason),
            writable: false,
        }
    }
}

/// The probe's connection and the file identity it was opened on.
type ProbeConnection = (rusqlite::Connection, Option<FileIdentity>);

pub struct Readiness {
    pool: OnceLock<Arc<Pool>>,
    /// The probe's own read-only connection and the file it opened,
    /// opened on first use, again after it fails, and on a replica again
    /// when the follower puts a new file at the path.
    probe_conn: Arc<Mutex<Option<ProbeConnection>>>,
    /// Why the database is not open yet, when the server knows.
    waiting: Mutex<Option<String>>,
    /// A replica's lag, once it is measured.
    lag: OnceLock<Arc<ReplicaLag>>,
    /// The schema version the migrations lead to; `None` when migration is off.
    expected_version: Option<usize>,
    shutdown: Shutdown,
}

impl Readiness {
    pub fn new(expected_version: Option<usize>, shutdown: Shutdown) -> Self {
        Self {
            pool: OnceLock::new(),
            probe_conn: Arc::new(Mutex::new(None)),
            waiting: Mutex::new(None),
            lag: OnceLock::new(),
            expected_version,
            shutdown,
        }
    }

    /// Marks the pool open and pre-warmed.
    pub fn pool_ready(&self, pool: Arc<Pool>) {
        let _ = self.pool.set(pool);
        *self.waiting.lock().unwrap() = None;
    }

    /// Says why the database is not open yet (a replica waiting for its
    /// first restore), until [`Readiness::pool_ready`].
    pub fn waiting_for(&self, reason: String) {
        *self.waiting.lock().unwrap() = Some(reason);
    }

    /// Makes readiness depend on a replica's lag.
    pub fn watch_lag(&self, lag: Arc<ReplicaLag>) {
        let _ = self.lag.set(lag);
    }

    fn lag_verdict(&self) -> Result<(), String> {
        match self.lag.get() {
            Some(lag) => lag.verdict().map(drop),
            None => Ok(()),
        }
    }

    /// A cheap verdict for the `mcp_ready` gauge: open, warmed, not
    /// stopping, the file unchanged and no corruption reported.
    pub fn is_ready_cheap(&self) -> bool {
        !self.shutdown.is_triggered()
            && self.pool.get().is_some_and(|pool| {
                let health = pool.health();
                !pool.is_closed()
                    && pool.stats().total_connections > 0
                    && health.file_fault().is_none()
                    && health.corruption().is_none()
            })
            && self.lag_verdict().is_ok()
    }

    /// The full check `/readyz` runs.
    pub async fn check(&self) -> ReadyStatus {
        if self.shutdown.is_triggered() {
            return ReadyStatus::not_ready("shutting down");
        }
        let Some(pool) = self.pool.get().cloned() else {
            let waiting = self.waiting.lock().unwrap().clone();
            return ReadyStatus::not_ready(
                waiting.unwrap_or_else(|| "starting: the database is not open yet".into()),
            );
        };
        let expected = self.expected_version;
        let conn = Arc::clone(&self.probe_conn);
        let probe = tokio::task::spawn_blocking(move || probe(&pool, &conn, expected));
        match tokio::time::timeout(Duration::from_millis(800), probe).await {
            Ok(Ok(status)) if status.ready => match self.lag_verdict() {
                Ok(()) => status,
                Err(reason) => ReadyStatus::not_ready(reason),
            },
            Ok(Ok(status)) => status,
            Ok(Err(err)) => ReadyStatus::not_ready(format!("readiness probe failed: {err}")),
            // The blocking pool itself is saturated: busy, not broken.
            Err(_) => ReadyStatus::ready("ready (saturated)", None),
        }
    }
}

fn probe(
    pool: &Pool,
    slot: &Mutex<Option<ProbeConnection>>,
    expected_version: Option<usize>,
) -> ReadyStatus {
    if pool.is_closed() {
        return ReadyStatus::not_ready("shutting down");
    }
    let health = pool.health();
    if let Err(fault) = health.verify_file() {
        return ReadyStatus::not_ready(fault.to_string());
    }
    // One probe at a time on the probe's connection; a second waits here,
    // bounded by the caller's timeout.
    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if health.corruption().is_some() {
        // The quick_check must read the file, not pages this connection
        // cached before the damage.
        *slot = None;
    }
    let identity = health.identity();
    if slot.as_ref().is_some_and(|(_, opened)| *opened != identity) {
        // A replica's follower put a new file at the path.
        *slot = None;
    }
    if slot.is_none() {
        let mut options = pool.connection_options().clone();
        options.create = false;
        options.identity = identity;
        match connection::open_probe(&options) {
            Ok(conn) => *slot = Some((conn, identity)),
            Err(err) => {
                let _ = health.verify_file();
                return ReadyStatus::not_ready(err.to_string());
            }
        }
    }
    let (conn, _) = slot.as_ref().expect("opened above");
    let status = probe_on(conn, pool, expected_version);
    if !status.ready {
        // Reopen next time: the connection may be what failed.
        *slot = None;
    }
    status
}

fn probe_on(
    conn: &rusqlite::Connection,
    pool: &Pool,
    expected_version: Option<usize>,
) -> ReadyStatus {
    let health = pool.health();
    if let Err(err) = conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)) {
        return ReadyStatus::not_ready(format!("SELECT 1 failed: {err}"));
    }
    if let Some(expected) = expected_version {
        match crate::migrations::current_version(conn) {
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
    if let Some(corruption) = health.corruption() {
        match crate::database::quick_check(conn, health.path(), QUICK_CHECK_TIMEOUT) {
            Ok(()) => health.clear_corruption(),
            Err(check) => {
                return ReadyStatus::not_ready(format!(
                    "database corruption detected (SQLITE_CORRUPT: {corruption}); {check}"
                ))
            }
        }
    }
    let stats = pool.stats();
    let status = if stats.available == 0 && stats.total_connections >= stats.max_connections {
        "ready (saturated)"
    } else {
        "ready"
    };
    ReadyStatus::ready(status, health.write_blocker())
}
