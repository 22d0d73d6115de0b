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
//! pool whose every connection is busy is reported `ready (saturated)`;
//! one that has also failed a checkout within the checkout timeout cannot
//! serve a new call in time, and is not ready until a connection is free
//! again ([`Pool::exhausted`]).
//!
//! On a server that takes writes, the probe also tries the write lock
//! (`BEGIN IMMEDIATE` without waiting, then `ROLLBACK`, on a connection of
//! its own). Held every time for longer than the call timeout and its
//! grace (our own statements give it back by then, their worker killed if
//! need be), it is stuck in another process: writes cannot succeed, and
//! the server is not ready until it is released.
//!
//! A read replica is also not ready before its follower's first restore
//! has produced the file, while no heartbeat has reached it, and while its
//! lag exceeds `EROS_DB_REPLICA_MAX_LAG` (read from [`ReplicaLag`], which
//! its own thread keeps current, so the probe stays cheap).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pool::Pool;
use crate::replication::lag::ReplicaLag;
use crate::shutdown::Shutdown;
use crate::sqlite::connection;
use crate::sqlite::health::FileIdentity;

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
    /// With several databases: each one's own answer, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub databases: Option<std::collections::BTreeMap<String, ReadyStatus>>,
}

impl ReadyStatus {
    fn ready(status: &'static str, write_blocker: Option<String>) -> Self {
        Self {
            ready: true,
            status,
            reason: None,
            writable: write_blocker.is_none(),
            write_blocker,
            databases: None,
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
            databases: None,
        }
    }
}

/// Readiness of every database served: with one, its own answer; with
/// several, ready while every required one is (an optional one that cannot
/// serve is reported, not fatal), and each one's answer by name.
pub struct ReadinessSet {
    databases: std::sync::RwLock<Vec<ReadinessEntry>>,
}

/// `(name, required, readiness)` of one database.
pub type ReadinessEntry = (String, bool, Arc<Readiness>);

impl ReadinessSet {
    /// `(name, required, readiness)` of each database, in order.
    pub fn new(databases: Vec<ReadinessEntry>) -> Self {
        Self {
            databases: std::sync::RwLock::new(databases),
        }
    }

    /// The databases of a reloaded configuration.
    pub fn replace(&self, databases: Vec<ReadinessEntry>) {
        *self.databases.write().unwrap_or_else(|p| p.into_inner()) = databases;
    }

    fn entries(&self) -> Vec<ReadinessEntry> {
        self.databases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The cheap verdict of `mcp_ready`: every required database ready.
    pub fn is_ready_cheap(&self) -> bool {
        self.entries()
            .iter()
            .filter(|(_, required, _)| *required)
            .all(|(_, _, readiness)| readiness.is_ready_cheap())
    }

    /// What `/readyz` answers.
    pub async fn check(&self) -> ReadyStatus {
        let databases = self.entries();
        if let [(_, _, only)] = databases.as_slice() {
            return only.check().await;
        }
        // All at once: each probe has its own time limit.
        let checks: Vec<_> = databases
            .iter()
            .map(|(_, _, readiness)| {
                let readiness = Arc::clone(readiness);
                tokio::spawn(async move { readiness.check().await })
            })
            .collect();
        let mut answers = Vec::with_capacity(checks.len());
        for check in checks {
            answers.push(
                check.await.unwrap_or_else(|err| {
                    ReadyStatus::not_ready(format!("the probe failed: {err}"))
                }),
            );
        }
        let mut reason = None;
        let mut write_blocker = None;
        let mut by_name = std::collections::BTreeMap::new();
        for ((name, required, _), answer) in databases.iter().zip(answers) {
            if *required && !answer.ready && reason.is_none() {
                reason = Some(format!(
                    "database {name}: {}",
                    answer.reason.as_deref().unwrap_or("not ready")
                ));
            }
            if !answer.writable && write_blocker.is_none() {
                write_blocker = Some(format!(
                    "database {name}: {}",
                    answer.write_blocker.as_deref().unwrap_or("not writable")
                ));
            }
            by_name.insert(name.clone(), answer);
        }
        let mut status = match reason {
            Some(reason) => ReadyStatus::not_ready(reason),
            None => ReadyStatus::ready("ready", None),
        };
        status.writable = write_blocker.is_none();
        status.write_blocker = write_blocker;
        status.databases = Some(by_name);
        status
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
    /// The write-lock probe's connection and since when every probe found
    /// the lock taken.
    write_lock: Arc<Mutex<WriteLockProbe>>,
    write_lock_patience: Duration,
    shutdown: Shutdown,
}

/// What the write-lock probe keeps between probes.
#[derive(Default)]
struct WriteLockProbe {
    conn: Option<crate::pool::ManagedConnection>,
    held_since: Option<Instant>,
}

impl Readiness {
    /// Readiness expecting the schema at `expected_version`; a write lock
    /// held longer than `write_lock_patience` makes the server unready.
    pub fn new(
        expected_version: Option<usize>,
        write_lock_patience: Duration,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            pool: OnceLock::new(),
            probe_conn: Arc::new(Mutex::new(None)),
            waiting: Mutex::new(None),
            lag: OnceLock::new(),
            expected_version,
            write_lock: Arc::new(Mutex::new(WriteLockProbe::default())),
            write_lock_patience,
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
        let write_lock = Arc::clone(&self.write_lock);
        let patience = self.write_lock_patience;
        let probe = tokio::task::spawn_blocking(move || {
            let status = probe(&pool, &conn, expected);
            if !status.ready {
                return status;
            }
            if let Some(reason) = pool.exhausted() {
                return ReadyStatus::not_ready(reason);
            }
            // Only where writes are possible at all is the lock worth a try.
            if status.write_blocker.is_some() {
                return status;
            }
            match probe_write_lock(&pool, &write_lock, patience) {
                Some(reason) => ReadyStatus::not_ready(reason),
                None => status,
            }
        });
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

/// Why writes cannot succeed because the write lock has been held past
/// `patience`, if so. Tries the lock without waiting on a connection of its
/// own; a connection that fails is reopened next time.
fn probe_write_lock(
    pool: &Pool,
    state: &Mutex<WriteLockProbe>,
    patience: Duration,
) -> Option<String> {
    use crate::sqlite::access::Access;
    let mut state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if state.conn.is_none() {
        state.conn = pool.open_local().ok();
    }
    let conn = state.conn.as_ref()?;
    let tried = conn.with_access(Access::Trusted, |c| {
        c.busy_timeout(Duration::ZERO)?;
        c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
    });
    match tried {
        Ok(Ok(())) => {
            state.held_since = None;
            None
        }
        Ok(Err(err)) if connection::is_busy(&err) => {
            let _ = conn.with_access(Access::Trusted, |c| c.execute_batch("ROLLBACK"));
            let since = *state.held_since.get_or_insert_with(Instant::now);
            let held = since.elapsed();
            (held > patience).then(|| {
                format!(
                    "the database's write lock has been held by another connection for {:.0}s, \
                     longer than a call may take ({patience:?}): writes cannot succeed until it \
                     is released (a process with an open write transaction?)",
                    held.as_secs_f64()
                )
            })
        }
        // Not the lock: the file's other probes report what is wrong.
        _ => {
            state.conn = None;
            None
        }
    }
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
        match crate::sqlite::migrations::current_version(conn) {
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
