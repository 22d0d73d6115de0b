//! The r2d2 `ManageConnection` that gives r2d2 QueuePool semantics. It
//! wraps r2d2_sqlite's manager (the connection factory, which opens the
//! file and applies our PRAGMAs, see [`crate::connection::factory`]) and
//! adds the rules: each connection carries its birth and expiry; a file
//! replaced since startup is never opened; checkout checks age and health;
//! return rolls back leaked transactions, retires expired connections and
//! closes overflow connections when `pool_size` are already idle. On a read
//! replica, whose follower may rename a new file over the path, each
//! connection remembers the file it opened, and one left on a replaced file
//! is recycled at checkout and on return.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use super::counters::PoolCounters;
use super::observer::PoolObserver;
use super::settings::PoolSettings;
use crate::access::{self, Access, AccessLevel};
use crate::connection::{self, ConnectError, ConnectionOptions};
use crate::health::{DatabaseHealth, FileIdentity, WriteFault};
use crate::retry::RetryPolicy;

/// Share of `max_age` by which a connection's expiry is brought forward at
/// random, so connections opened together do not all expire together.
const MAX_AGE_JITTER: f64 = 0.1;

/// Why r2d2 should not hand out (or keep) a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionFault {
    #[error(transparent)]
    Open(#[from] ConnectError),
    #[error("connection reached its maximum age after {0:?}")]
    Expired(Duration),
    #[error("connection failed its health check: {0}")]
    Unhealthy(#[source] rusqlite::Error),
    #[error("connection reads a database file the replica's follower has since replaced")]
    Superseded,
}

/// Attempts at opening a replica's file while its follower renames a new
/// one over it (each attempt is two `stat`s and an open).
const FOLLOW_OPEN_ATTEMPTS: u32 = 3;

/// State the manager, the event handler and the pool share.
pub(crate) struct Shared {
    pub counters: PoolCounters,
    pub observer: Arc<dyn PoolObserver>,
    pub pool_size: u64,
    /// Serialises the keep-or-close decision on return, so two returns at
    /// once cannot both see room for one more idle connection.
    return_gate: Mutex<()>,
    /// The last reason a connection could not be opened, cleared on success.
    pub last_connect_failure: Mutex<Option<String>>,
    /// Set by `Pool::close`: every returned connection is closed.
    pub closed: std::sync::atomic::AtomicBool,
    /// The database file's identity, corruption and writability.
    pub health: DatabaseHealth,
}

impl Shared {
    pub fn new(pool_size: u32, observer: Arc<dyn PoolObserver>, health: DatabaseHealth) -> Self {
        Self {
            health,
            counters: PoolCounters::default(),
            observer,
            pool_size: u64::from(pool_size),
            return_gate: Mutex::new(()),
            last_connect_failure: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// A pooled SQLite connection with its birth time. Dereferences to
/// [`rusqlite::Connection`].
pub struct ManagedConnection {
    conn: Connection,
    born: Instant,
    expires_at: Instant,
    shared: Arc<Shared>,
    access: AccessLevel,
    /// On a replica, the file this connection opened.
    file: Option<FileIdentity>,
    /// Set when the connection could not be put back at rest; it is closed
    /// on return.
    unsettled: std::cell::Cell<bool>,
    /// Already taken off the `open` count by the return gate.
    retired: bool,
}

impl ManagedConnection {
    /// How long ago the connection was opened.
    pub fn age(&self) -> Duration {
        self.born.elapsed()
    }

    /// The access level SQL prepared now runs under.
    pub fn access(&self) -> Access {
        self.access.get()
    }

    /// Runs `work` with the connection at `access`, then puts it back at
    /// rest (read-only, `query_only` on) whatever `work` did. Do not nest.
    pub fn with_access<T>(
        &self,
        access: Access,
        work: impl FnOnce(&ManagedConnection) -> T,
    ) -> rusqlite::Result<T> {
        if access == Access::ReadOnly {
            // The resting state: nothing to switch or restore.
            return Ok(work(self));
        }
        struct Rest<'a>(&'a ManagedConnection);
        impl Drop for Rest<'_> {
            fn drop(&mut self) {
                let this = self.0;
                this.access.set(Access::Trusted);
                if this.conn.pragma_update(None, "query_only", true).is_err() {
                    this.unsettled.set(true);
                }
                this.access.set(Access::ReadOnly);
            }
        }
        let rest = Rest(self);
        self.access.set(Access::Trusted);
        self.conn.pragma_update(None, "query_only", false)?;
        self.access.set(access);
        let result = work(self);
        drop(rest);
        Ok(result)
    }

    /// Runs `work` (agent SQL: preparing and stepping it) with the
    /// authorizer withholding what `restrictions` deny, then takes them off
    /// again whatever `work` did, also when it panics. Statements prepared
    /// inside must not be cached: the verdicts are fixed at prepare time.
    /// The server's own statements (the schema tools') never run under
    /// restrictions; their answers are filtered instead.
    pub fn with_restrictions<T>(
        &self,
        restrictions: &Arc<crate::policy::Restrictions>,
        work: impl FnOnce(&ManagedConnection) -> T,
    ) -> T {
        if restrictions.is_empty() {
            return work(self);
        }
        struct Lift<'a>(&'a ManagedConnection);
        impl Drop for Lift<'_> {
            fn drop(&mut self) {
                let this = self.0;
                this.access
                    .set_restrictions(crate::policy::Restrictions::none());
                access::set_covering_index_scans(&this.conn, true);
            }
        }
        let lift = Lift(self);
        access::set_covering_index_scans(&self.conn, false);
        self.access.set_restrictions(Arc::clone(restrictions));
        let result = work(self);
        drop(lift);
        result
    }

    /// What the authorizer withholds from untrusted SQL now.
    pub fn restrictions(&self) -> Arc<crate::policy::Restrictions> {
        self.access.restrictions()
    }

    /// Prepares untrusted SQL judged at `access` by the authorizer, whatever
    /// level the connection is at (used inside a trusted transaction). The
    /// statement cache is bypassed so no statement prepared at another
    /// level is ever reused. SQL holding a NUL character is refused: SQLite
    /// stops reading at the first NUL and would run only what comes before
    /// it (`DELETE FROM t\0 WHERE id = 1` deletes every row).
    pub fn prepare_untrusted(
        &self,
        access: Access,
        sql: &str,
    ) -> rusqlite::Result<rusqlite::Statement<'_>> {
        if let Some(at) = memchr::memchr(0, sql.as_bytes()) {
            return Err(rusqlite::Error::SqlInputError {
                error: rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                msg: "the SQL holds a NUL character, where SQLite would stop reading; \
                      nothing was run"
                    .into(),
                sql: sql.into(),
                offset: i32::try_from(at).unwrap_or(i32::MAX),
            });
        }
        let previous = self.access.get();
        let _ = self.access.take_refused_hidden();
        self.access.set(access);
        let stmt = self.conn.prepare(sql);
        self.access.set(previous);
        match (stmt, self.access.take_refused_hidden()) {
            (Err(_), Some(table)) => Err(access::hidden_table_refusal(table)),
            (stmt, _) => stmt,
        }
    }

    fn is_expired(&self) -> bool {
        Instant::now() >= self.expires_at
    }

    /// On a replica: the follower has put another file at the path since
    /// this connection opened (it still reads the old one).
    fn is_superseded(&self) -> bool {
        let health = &self.shared.health;
        health.follows() && health.verify_file().is_ok() && health.identity() != self.file
    }

    fn retire(&mut self) {
        if !self.retired {
            self.retired = true;
            PoolCounters::drop_one(&self.shared.counters.open);
        }
    }
}

impl std::fmt::Debug for ManagedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedConnection")
            .field("age", &self.age())
            .finish_non_exhaustive()
    }
}

impl Deref for ManagedConnection {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for ManagedConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for ManagedConnection {
    fn drop(&mut self) {
        self.retire();
    }
}

/// Opens, checks and judges connections for r2d2. Built by [`super::Pool`].
pub struct SqliteManager {
    /// r2d2_sqlite's manager: opens the file and runs our setup.
    factory: SqliteConnectionManager,
    options: ConnectionOptions,
    max_age: Duration,
    health_check: bool,
    retry: RetryPolicy,
    shared: Arc<Shared>,
}

impl SqliteManager {
    pub(crate) fn new(
        options: ConnectionOptions,
        settings: &PoolSettings,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            factory: connection::factory(&options),
            options,
            max_age: settings.connection_max_age,
            health_check: settings.health_check,
            retry: settings.connect_retry,
            shared,
        }
    }

    /// Opens a connection and installs its access controls. Once the file
    /// is watched, a connection is opened only on the file recorded at
    /// startup, never created, and a file that SQLite could open only
    /// read-only is reported as such.
    fn open_guarded(
        &self,
    ) -> Result<(Connection, AccessLevel, Option<FileIdentity>), ConnectError> {
        let health = &self.shared.health;
        if health.follows() {
            return self.open_followed();
        }
        let not_the_file = || ConnectError::NotTheOpenedFile {
            path: self.options.path.clone(),
        };
        health.verify_file().map_err(|_| not_the_file())?;
        connection::ensure_directory(&self.options)?;
        let conn = r2d2::ManageConnection::connect(&self.factory)
            .map_err(|err| ConnectError::from_factory(err, &self.options.path))
            .inspect_err(|err| {
                if matches!(err, ConnectError::NotTheOpenedFile { .. }) {
                    // Records (and logs once) what happened to the file.
                    let _ = health.verify_file();
                }
            })?;
        if health.is_watched() && conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            health.write_failed(WriteFault::ReadOnlyFile {
                path: self.options.path.clone(),
            });
        }
        self.install_access(conn)
            .map(|(conn, level)| (conn, level, None))
    }

    /// Opens a replica's current file: the identity before and after the
    /// open must agree, else the follower renamed a new file over the path
    /// in between and the open is tried again on the new one.
    fn open_followed(
        &self,
    ) -> Result<(Connection, AccessLevel, Option<FileIdentity>), ConnectError> {
        let health = &self.shared.health;
        let mut attempt = 0;
        loop {
            attempt += 1;
            health.verify_file()?;
            let before = health.identity();
            let conn = r2d2::ManageConnection::connect(&self.factory)
                .map_err(|err| ConnectError::from_factory(err, &self.options.path))?;
            health.verify_file()?;
            if health.identity() == before {
                return self
                    .install_access(conn)
                    .map(|(conn, level)| (conn, level, before));
            }
            if attempt >= FOLLOW_OPEN_ATTEMPTS {
                return Err(ConnectError::NotTheOpenedFile {
                    path: self.options.path.clone(),
                });
            }
        }
    }

    fn install_access(&self, conn: Connection) -> Result<(Connection, AccessLevel), ConnectError> {
        match access::install(&conn) {
            Ok(level) => Ok((conn, level)),
            Err(source) => Err(ConnectError::Setup {
                path: self.options.path.clone(),
                pragma: "query_only",
                reason: "SQLite refused the access controls",
                source,
            }),
        }
    }

    fn expiry(&self, born: Instant) -> Instant {
        let jitter = self.max_age.mul_f64(MAX_AGE_JITTER * fastrand::f64());
        born + self.max_age.saturating_sub(jitter)
    }
}

impl r2d2::ManageConnection for SqliteManager {
    type Connection = ManagedConnection;
    type Error = ConnectionFault;

    fn connect(&self) -> Result<ManagedConnection, ConnectionFault> {
        let counters = &self.shared.counters;
        let started = Instant::now();
        let opened = self.retry.run(
            ConnectError::is_transient,
            |_| PoolCounters::bump(&counters.retries),
            || {
                self.open_guarded()
                    .inspect_err(|_| PoolCounters::bump(&counters.failed))
            },
        );
        match opened {
            Ok((conn, access, file)) => {
                self.shared.observer.connection_opened(started.elapsed());
                PoolCounters::bump(&counters.created);
                counters.open.fetch_add(1, Relaxed);
                *self.shared.last_connect_failure.lock().unwrap() = None;
                let born = Instant::now();
                Ok(ManagedConnection {
                    conn,
                    born,
                    expires_at: self.expiry(born),
                    shared: Arc::clone(&self.shared),
                    access,
                    file,
                    unsettled: std::cell::Cell::new(false),
                    retired: false,
                })
            }
            Err(exhausted) => {
                *self.shared.last_connect_failure.lock().unwrap() =
                    Some(exhausted.last.to_string());
                Err(exhausted.last.into())
            }
        }
    }

    fn is_valid(&self, conn: &mut ManagedConnection) -> Result<(), ConnectionFault> {
        if conn.is_expired() {
            PoolCounters::bump(&self.shared.counters.recycled);
            return Err(ConnectionFault::Expired(conn.age()));
        }
        if conn.is_superseded() {
            PoolCounters::bump(&self.shared.counters.recycled);
            return Err(ConnectionFault::Superseded);
        }
        if self.health_check {
            let ping = conn
                .prepare_cached("SELECT 1")
                .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)));
            if let Err(err) = ping {
                PoolCounters::bump(&self.shared.counters.health_check_failures);
                return Err(ConnectionFault::Unhealthy(err));
            }
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut ManagedConnection) -> bool {
        let counters = &self.shared.counters;
        let closing = self
            .shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire);
        if closing
            || conn.unsettled.get()
            || conn.access() != Access::ReadOnly
            || !conn.restrictions().is_empty()
        {
            conn.retire();
            return true;
        }
        if !conn.is_autocommit() {
            // A caller returned the connection inside a transaction.
            PoolCounters::bump(&counters.rollbacks);
            let rolled_back = conn.with_access(Access::Trusted, |c| c.execute_batch("ROLLBACK"));
            if !matches!(rolled_back, Ok(Ok(()))) || !conn.is_autocommit() {
                conn.retire();
                return true;
            }
        }
        if conn.is_expired() || conn.is_superseded() {
            PoolCounters::bump(&counters.recycled);
            conn.retire();
            return true;
        }
        let _gate = self.shared.return_gate.lock().unwrap();
        // The checkin event has already taken this connection off `in_use`,
        // so `open - in_use` counts it among the idle ones.
        let idle_including_this =
            PoolCounters::get(&counters.open).saturating_sub(PoolCounters::get(&counters.in_use));
        if idle_including_this > self.shared.pool_size {
            PoolCounters::bump(&counters.overflow_closed);
            conn.retire();
            return true;
        }
        false
    }
}
