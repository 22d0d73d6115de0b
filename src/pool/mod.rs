//! The connection pool: r2d2 with QueuePool semantics.
//!
//! `pool_size` connections are kept; up to `max_overflow` more open under load
//! and close again when returned while `pool_size` are idle; a checkout waits
//! at most `checkout_timeout`; connections are recycled after
//! `connection_max_age` and pinged on checkout. r2d2's own `min_idle`,
//! `idle_timeout` and `max_lifetime` are off: they do not give these
//! semantics. The rules live in [`manager`] (around r2d2_sqlite's manager,
//! which opens each connection), the exact counters in [`counters`], the
//! background work in [`maintenance`]. The pool is handed its own
//! [`PoolSettings`] and the connection factory's
//! [`ConnectionOptions`](crate::sqlite::connection::ConnectionOptions), nothing more.
//!
//! Each connection is a worker process ([`worker`], its socket framed in
//! [`socket`]); a closed overflow connection's process is kept a moment as
//! a spare (`spares`).
//!
//! `Pool::get` blocks: call it from a blocking thread, never an async
//! worker; `Pool::try_get` never waits.

mod counters;
mod events;
pub mod frames;
pub mod heap;
pub mod local;
mod maintenance;
mod manager;
mod observer;
mod settings;
mod slots;
pub mod socket;
mod spares;
pub mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use counters::PoolStats;
pub use local::ManagedConnection;
pub use manager::{
    Checkpointed, ConnectionFault, HeapShare, Ready, SqliteManager, Worker, WorkerSetup,
};
pub use observer::{NoObserver, PoolObserver};
pub use settings::PoolSettings;
pub use slots::Slot;

use counters::PoolCounters;
use events::{PoolErrorLog, PoolEvents, SharedEvents};
use maintenance::Maintenance;
use manager::Shared;
use slots::Slots;

use crate::sqlite::connection::ConnectionOptions;
use crate::sqlite::health::DatabaseHealth;

/// The least hard heap ceiling a worker gets, whatever the share.
pub const WORKER_HEAP_FLOOR: u64 = 16 * 1024 * 1024;

/// The longest [`Pool::close`] waits for a connection, and for readers to
/// let the final checkpoint through.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// A connection checked out of the pool, holding its slot under the cap;
/// both are returned when it is dropped (the connection first).
pub struct PooledConnection {
    // Fields drop in this order: the connection goes back to r2d2 before
    // the slot frees, so a waiter woken by the slot finds it idle instead
    // of opening another.
    conn: r2d2::PooledConnection<SqliteManager>,
    slot: Option<Slot>,
}

impl PooledConnection {
    /// Hands the slot to the caller, who gives it back by dropping it: a
    /// statement abandoned at its deadline frees its place under the cap
    /// while the connection stays with SQLite (see [`slots`]). The caller
    /// must drop the slot after this connection when not abandoning it.
    pub fn take_slot(&mut self) -> Option<Slot> {
        self.slot.take()
    }
}

impl std::fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConnection")
            .field("age", &self.conn.age())
            .field("holds_slot", &self.slot.is_some())
            .finish()
    }
}

impl std::ops::Deref for PooledConnection {
    type Target = Worker;
    fn deref(&self) -> &Worker {
        &self.conn
    }
}

impl std::ops::DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut Worker {
        &mut self.conn
    }
}

/// A caller counted among the pool's waiters; uncounted when dropped.
#[derive(Debug)]
pub struct Waiting<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        PoolCounters::drop_one(self.0);
    }
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(
        "connection pool exhausted: all {in_use} connections in use (pool size {pool_size}, \
         overflow {max_overflow}) and none came free within {timeout:?}; retry later or raise \
         EROS_DB_POOL_SIZE / EROS_DB_POOL_OVERFLOW / EROS_DB_POOL_TIMEOUT"
    )]
    Exhausted {
        in_use: u64,
        pool_size: u32,
        max_overflow: u32,
        timeout: Duration,
    },
    #[error("database unavailable: no connection could be opened within {timeout:?}: {reason}")]
    Unavailable { reason: String, timeout: Duration },
    #[error("the connection pool is closed")]
    Closed,
    #[error("cannot build the connection pool: {0}")]
    Build(String),
}

impl PoolError {
    /// Whether the same request may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PoolError::Exhausted { .. } | PoolError::Unavailable { .. }
        )
    }
}

/// What each worker opens with. The hard ceiling is the whole server's,
/// kept in shared counters ([`heap`]) when `shared_ceiling`, so a worker's
/// own is off, and so is the soft limit at which page caches shrink: the
/// worker sets it before each call to what the other workers leave of the
/// server's (see `engine::host`), so one busy connection may cache as much
/// as one connection could in a single process. Without shared counters
/// each worker gets a share of both, the ceiling at least
/// [`WORKER_HEAP_FLOOR`].
pub fn worker_options(
    options: &ConnectionOptions,
    workers: u32,
    shared_ceiling: bool,
) -> ConnectionOptions {
    let mut options = options.clone();
    if shared_ceiling {
        options.hard_heap_limit_bytes = 0;
        return options;
    }
    let workers = u64::from(workers.max(1));
    let ceiling = (options.hard_heap_limit_bytes / workers).max(WORKER_HEAP_FLOOR);
    options.hard_heap_limit_bytes = ceiling;
    options.soft_heap_limit_bytes = (options.soft_heap_limit_bytes / workers)
        // At least a mebibyte of page cache each.
        .max(1 << 20)
        .min(ceiling / 2);
    options
}

/// The QueuePool-style SQLite connection pool.
pub struct Pool {
    inner: r2d2::Pool<SqliteManager>,
    events: Arc<PoolEvents>,
    slots: Arc<Slots>,
    shared: Arc<Shared>,
    settings: PoolSettings,
    connection: ConnectionOptions,
    reaper: worker::Reaper,
    maintenance: Mutex<Option<Maintenance>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pool {
    /// Builds the pool without opening any connection (see [`Pool::prewarm`])
    /// and without starting maintenance (see [`Pool::start_maintenance`]).
    /// The file is not watched: connections may create it.
    pub fn new(
        settings: &PoolSettings,
        connection: ConnectionOptions,
        observer: Arc<dyn PoolObserver>,
    ) -> Result<Self, PoolError> {
        let health = DatabaseHealth::unwatched(&connection.path);
        Self::with_health(settings, connection, observer, health)
    }

    /// [`Pool::new`] reporting to `health`: when it watches the file,
    /// connections open only that file and never create one.
    pub fn with_health(
        settings: &PoolSettings,
        mut connection: ConnectionOptions,
        observer: Arc<dyn PoolObserver>,
        health: DatabaseHealth,
    ) -> Result<Self, PoolError> {
        // This process's own connections (startup checks, the final
        // checkpoint) share the whole ceiling; each worker gets its share.
        crate::sqlite::connection::limit_sqlite_heap(
            connection.soft_heap_limit_bytes,
            connection.hard_heap_limit_bytes,
        );
        let local = connection.clone();
        if health.follows() {
            // A replica's file changes identity by design: each connection
            // records the one it opened instead (see `SqliteManager`).
            connection.create = false;
        } else if let Some(identity) = health.identity() {
            connection.create = false;
            connection.identity = Some(identity);
        }
        let shared = Arc::new(Shared::new(
            settings.pool_size,
            settings.max_overflow as usize,
            observer,
            health,
        ));
        let workers = settings.max_connections() + settings.abandoned_reserve();
        let heap = match heap::SharedHeap::new(connection.hard_heap_limit_bytes, workers as usize) {
            Ok(heap) => Some(heap),
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    "cannot share SQLite's heap ceiling between workers; each gets a share of it"
                );
                None
            }
        };
        let reaper = worker::Reaper::start();
        let manager = SqliteManager::new(
            worker_options(&connection, settings.max_connections(), heap.is_some()),
            heap,
            reaper.clone(),
            settings,
            Arc::clone(&shared),
        );
        // r2d2 may open the abandoned reserve beyond the cap; the slots
        // keep what callers hold at the cap.
        let events = Arc::new(PoolEvents::new(
            Arc::clone(&shared),
            settings.max_connections(),
        ));
        let inner = r2d2::Pool::builder()
            .max_size(settings.max_connections() + settings.abandoned_reserve())
            .min_idle(Some(0))
            .idle_timeout(None)
            .max_lifetime(None)
            .test_on_check_out(true)
            .connection_timeout(settings.checkout_timeout)
            .event_handler(Box::new(SharedEvents(Arc::clone(&events))))
            .error_handler(Box::new(PoolErrorLog))
            .build_unchecked(manager);
        Ok(Self {
            inner,
            events,
            slots: Slots::new(settings.max_connections()),
            shared,
            settings: settings.clone(),
            connection: local,
            reaper,
            maintenance: Mutex::new(None),
        })
    }

    /// Opens a connection in this process, outside the pool, as every
    /// worker opens its own: for the server's trusted work (startup checks,
    /// the final checkpoint, `eros-mcp check`), never for agent SQL.
    pub fn open_local(&self) -> Result<ManagedConnection, crate::sqlite::connection::ConnectError> {
        local::open(&self.connection, &self.shared.health).map(|(conn, _)| conn)
    }

    /// Builds the pool, opens its first connection and starts background
    /// maintenance, which opens the rest of the pre-warmed ones at its first
    /// wake (within a second). Opening them all before serving
    /// made the first answer wait: on two cores three worker processes
    /// starting at once took the CPU it needed (13 ms to the first answer
    /// against 7 ms with one, `eros-bench startup`).
    pub fn open(
        settings: &PoolSettings,
        connection: ConnectionOptions,
        observer: Arc<dyn PoolObserver>,
    ) -> Result<Arc<Self>, PoolError> {
        let health = DatabaseHealth::unwatched(&connection.path);
        Self::open_with_health(settings, connection, observer, health)
    }

    /// [`Pool::open`] reporting to (and guarded by) `health`.
    pub fn open_with_health(
        settings: &PoolSettings,
        connection: ConnectionOptions,
        observer: Arc<dyn PoolObserver>,
        health: DatabaseHealth,
    ) -> Result<Arc<Self>, PoolError> {
        let pool = Arc::new(Self::with_health(settings, connection, observer, health)?);
        pool.prewarm_up_to(1)?;
        pool.start_maintenance();
        Ok(pool)
    }

    /// The database file's health, shared with the engine and readiness.
    pub fn health(&self) -> &DatabaseHealth {
        &self.shared.health
    }

    /// How this pool's connections are opened (the file, its identity once
    /// watched, the PRAGMAs' settings): what the readiness probe opens with.
    pub fn connection_options(&self) -> &ConnectionOptions {
        &self.connection
    }

    /// Most connections callers hold at once (`pool_size + max_overflow`).
    pub fn max_connections(&self) -> u32 {
        self.settings.max_connections()
    }

    /// How long a checkout waits at most.
    pub fn checkout_timeout(&self) -> Duration {
        self.settings.checkout_timeout
    }

    /// Why a new call cannot be served within the checkout timeout now, if
    /// it cannot: every connection is in use, and a checkout has timed out
    /// within the last checkout timeout (so waiting has not been enough).
    pub fn exhausted(&self) -> Option<String> {
        let stats = self.stats();
        if stats.available > 0 || stats.active_connections < stats.max_connections {
            return None;
        }
        let timeout = self.settings.checkout_timeout;
        let last = (*self.shared.last_checkout_timeout.lock().unwrap())?;
        (last.elapsed() <= timeout).then(|| {
            format!(
                "connection pool exhausted: all {} connections in use, {} calls waiting, and a \
                 checkout timed out {:.1}s ago after waiting {:?} (EROS_DB_POOL_TIMEOUT)",
                stats.active_connections,
                stats.waiters,
                last.elapsed().as_secs_f64(),
                timeout
            )
        })
    }

    /// Counts a caller waiting for a connection in front of the pool (the
    /// fair-share gate, [`crate::quota::fair`]) among the pool's waiters
    /// until the guard is dropped.
    pub fn waiting(&self) -> Waiting<'_> {
        PoolCounters::bump(&self.shared.counters.waiters);
        Waiting(&self.shared.counters.waiters)
    }

    /// A caller in front of the pool got a place after `wait`.
    pub fn waited_in_front(&self, wait: Duration) {
        self.shared.observer.share_waited(wait);
    }

    /// A caller in front of the pool waited `timeout` for a place in vain:
    /// counted as a checkout timeout, and explained as one.
    pub fn timed_out_in_front(&self, timeout: Duration) -> PoolError {
        PoolCounters::bump(&self.shared.counters.checkout_timeouts);
        *self.shared.last_checkout_timeout.lock().unwrap() = Some(std::time::Instant::now());
        self.explain_timeout(timeout)
    }

    /// Checks out a connection, waiting at most the checkout timeout.
    pub fn get(&self) -> Result<PooledConnection, PoolError> {
        self.get_timeout(self.settings.checkout_timeout)
    }

    /// Checks out a connection, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledConnection, PoolError> {
        if self.is_closed() {
            return Err(PoolError::Closed);
        }
        let counters = &self.shared.counters;
        counters
            .waiters
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = self.slots.acquire(timeout).and_then(|slot| {
            let left = timeout.saturating_sub(started.elapsed());
            // r2d2 waits only when the abandoned reserve is used up too.
            let conn = self.inner.get_timeout(left.max(Duration::from_millis(1)));
            conn.ok().map(|conn| PooledConnection {
                conn,
                slot: Some(slot),
            })
        });
        PoolCounters::drop_one(&counters.waiters);
        result.ok_or_else(|| {
            PoolCounters::bump(&counters.checkout_timeouts);
            *self.shared.last_checkout_timeout.lock().unwrap() = Some(std::time::Instant::now());
            self.explain_timeout(timeout)
        })
    }

    /// Checks out an idle connection if one is ready, without waiting or
    /// opening a new one.
    pub fn try_get(&self) -> Option<PooledConnection> {
        if self.is_closed() {
            return None;
        }
        let slot = self.slots.try_acquire()?;
        let conn = self.take_idle()?;
        Some(PooledConnection {
            conn,
            slot: Some(slot),
        })
    }

    /// A call's checkout of an idle connection, without waiting or opening
    /// one: `None` also while other checkouts wait (they were first), so a
    /// stream of calls that never wait cannot starve one that does. Counted
    /// as a checkout that waited nothing.
    pub fn try_checkout(&self) -> Option<PooledConnection> {
        let waiting = self
            .shared
            .counters
            .waiters
            .load(std::sync::atomic::Ordering::Relaxed);
        if waiting > 0 {
            return None;
        }
        let conn = self.try_get()?;
        self.events.checked_out_at_once();
        Some(conn)
    }

    /// r2d2's `try_get`, counted: unlike `get`, it fires no checkout event,
    /// but its return fires a checkin event like any other.
    fn take_idle(&self) -> Option<r2d2::PooledConnection<SqliteManager>> {
        let conn = self.inner.try_get()?;
        self.shared
            .counters
            .in_use
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(conn)
    }

    fn explain_timeout(&self, timeout: Duration) -> PoolError {
        let open = PoolCounters::get(&self.shared.counters.open);
        let failure = self.shared.last_connect_failure.lock().unwrap().clone();
        match failure {
            Some(reason) if open < u64::from(self.settings.max_connections()) => {
                PoolError::Unavailable { reason, timeout }
            }
            _ => PoolError::Exhausted {
                in_use: PoolCounters::get(&self.shared.counters.in_use),
                pool_size: self.settings.pool_size,
                max_overflow: self.settings.max_overflow,
                timeout,
            },
        }
    }

    /// Opens connections until `prewarm` are open, holding each until the
    /// last is open so that r2d2 opens a new one instead of handing back an
    /// idle one; all stay in the pool.
    pub fn prewarm(&self) -> Result<(), PoolError> {
        self.prewarm_up_to(self.settings.prewarm)
    }

    /// [`Pool::prewarm`], opening at most `most` connections in all.
    fn prewarm_up_to(&self, most: u32) -> Result<(), PoolError> {
        let want = u64::from(self.settings.prewarm.min(self.settings.pool_size).min(most));
        let open = || PoolCounters::get(&self.shared.counters.open);
        // An idle connection is handed out before a new one is opened, so
        // the idle ones are held too; `want` checkouts always suffice.
        let mut held = Vec::new();
        while open() < want && (held.len() as u64) < want {
            held.push(self.get()?);
        }
        Ok(())
    }

    /// Starts the background maintenance thread (idempotent).
    pub fn start_maintenance(self: &Arc<Self>) {
        let mut slot = self.maintenance.lock().unwrap();
        if slot.is_none() {
            *slot = Some(Maintenance::start(
                Arc::downgrade(self),
                self.settings.maintenance_interval,
            ));
        }
    }

    /// Lets go of spare worker processes past their linger.
    pub fn prune_spares(&self) {
        self.shared.spares.prune();
    }

    /// One maintenance pass: checks the database file is still the one
    /// opened (a fault is recorded and logged even when no call comes),
    /// checks every idle connection (age, health) by checking it out, trims
    /// idle connections above `pool_size` by returning them, and restores
    /// the pre-warmed minimum. Once the file has changed, restoring fails
    /// at once (no connection may open on another file) and is counted in
    /// `connections_failed`, which is what the operator's alert watches.
    pub fn run_maintenance(&self) {
        self.shared.spares.prune();
        let _ = self.shared.health.verify_file();
        events::MAINTENANCE.set(true);
        let idle = self.stats().available;
        let held: Vec<_> = (0..idle).map_while(|_| self.try_get()).collect();
        drop(held);
        if let Err(err) = self.prewarm() {
            tracing::warn!(error = %err, "could not restore the pre-warmed connections");
        }
        events::MAINTENANCE.set(false);
    }

    /// A snapshot of the pool's gauges and counters.
    pub fn stats(&self) -> PoolStats {
        let c = &self.shared.counters;
        let total = PoolCounters::get(&c.open);
        let in_use = PoolCounters::get(&c.in_use).min(total);
        let pool_size = u64::from(self.settings.pool_size);
        PoolStats {
            pool_size,
            max_overflow: u64::from(self.settings.max_overflow),
            max_connections: u64::from(self.settings.max_connections()),
            available: total - in_use,
            total_connections: total,
            overflow_in_use: total.saturating_sub(pool_size),
            active_connections: in_use,
            waiters: PoolCounters::get(&c.waiters),
            connections_created: PoolCounters::get(&c.created),
            connections_recycled: PoolCounters::get(&c.recycled),
            connections_failed: PoolCounters::get(&c.failed),
            health_check_failures: PoolCounters::get(&c.health_check_failures),
            checkout_timeouts: PoolCounters::get(&c.checkout_timeouts),
            overflow_closed: PoolCounters::get(&c.overflow_closed),
            rollbacks: PoolCounters::get(&c.rollbacks),
            retries: PoolCounters::get(&c.retries),
            connection_max_age: self.settings.connection_max_age.as_secs_f64(),
        }
    }

    /// Records a retry of a transient failure made by a caller (a read that
    /// met `SQLITE_BUSY`), so `stats().retries` covers every retry.
    pub fn record_retry(&self) {
        PoolCounters::bump(&self.shared.counters.retries);
    }

    pub fn is_closed(&self) -> bool {
        self.shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops maintenance, refuses new checkouts, checkpoints the WAL into
    /// the database file and closes every idle connection; connections still
    /// in use close when they are returned. Once the last one closes, SQLite
    /// removes the WAL file.
    ///
    /// A file the server does not checkpoint itself
    /// ([`crate::sqlite::connection::FileMode::server_checkpoints`]: Litestream
    /// replicates it, or it is a replica) is closed without any checkpoint:
    /// the WAL stays as it is, for Litestream to checkpoint.
    pub fn close(&self) -> Result<(), rusqlite::Error> {
        if let Some(maintenance) = self.maintenance.lock().unwrap().take() {
            maintenance.stop();
        }
        self.shared.spares.close();
        if !self.connection.mode.server_checkpoints() {
            self.shared
                .closed
                .store(true, std::sync::atomic::Ordering::Release);
            while let Some(idle) = self.take_idle() {
                drop(idle);
            }
            self.reaper.wait_until_reaped(CLOSE_WAIT);
            return Ok(());
        }
        // At shutdown every call has ended or its worker was killed. The
        // checkpoint goes through a worker: its connection was opened on the
        // file the server wrote, whatever has happened at the path since.
        let conn = match self.take_idle() {
            Some(conn) => Ok(conn),
            None => self.inner.get_timeout(CLOSE_WAIT),
        };
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        let checkpointed = match conn {
            Ok(mut conn) => conn
                .checkpoint(CLOSE_WAIT)
                .or_else(|err| self.checkpoint_failed(err)),
            Err(err) => {
                tracing::warn!(error = %err, "no connection for the final WAL checkpoint");
                Ok(())
            }
        };
        // Returned connections are discarded now that the pool is closed,
        // one at a time: each worker closes its connection and exits before
        // the next is let go. SQLite removes the WAL only when the
        // connection closing sees no other open, and two closing at once
        // each see the other.
        self.reaper.wait_until_reaped(CLOSE_WAIT);
        while let Some(idle) = self.take_idle() {
            drop(idle);
            self.reaper.wait_until_reaped(CLOSE_WAIT);
        }
        checkpointed
    }
}

impl Pool {
    /// The final checkpoint failed. A full disk or an I/O error leaves every
    /// committed transaction in the WAL, which the next start applies, and a
    /// read-only file took no writes: that is logged with the reason and is
    /// not a failed shutdown. Anything else is returned.
    fn checkpoint_failed(&self, err: rusqlite::Error) -> Result<(), rusqlite::Error> {
        use rusqlite::ErrorCode::{DiskFull, ReadOnly, SystemIoFailure};
        let path = self.connection_options().path.display();
        match err.sqlite_error_code() {
            // Nothing could have been written to a read-only file.
            Some(ReadOnly) => {
                tracing::warn!(
                    error = %err,
                    "no final WAL checkpoint: the database file {path} is read-only"
                );
                Ok(())
            }
            Some(DiskFull | SystemIoFailure) => {
                tracing::error!(
                    error = %err,
                    "the final WAL checkpoint failed: {} the disk holding {path} is full or \
                     failing; every committed write stays in {path}-wal and is applied on the \
                     next start once there is room: do not delete the -wal file",
                    if err.sqlite_error_code() == Some(DiskFull) { "SQLITE_FULL:" } else { "I/O error:" }
                );
                Ok(())
            }
            _ => Err(err),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(maintenance) = self.maintenance.get_mut().unwrap().take() {
            maintenance.stop();
        }
    }
}
