//! A connection opened in this process, with its access controls: what a
//! worker process serves its calls from ([`super::worker`]), and what the
//! server's own trusted work (startup checks, the final checkpoint, tools)
//! uses through [`super::Pool::open_local`].
//!
//! Every connection, here or in a worker, is opened the same way: through
//! r2d2_sqlite's manager with our PRAGMAs (see
//! [`crate::sqlite::connection::factory`]). Once the file is watched, only the file
//! recorded at startup is opened, never created; on a read replica, whose
//! follower may rename a new file over the path, the open is retried until
//! the identity before and after it agree.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use rusqlite::Connection;

use crate::sqlite::access::{self, Access, AccessLevel};
use crate::sqlite::connection::{self, ConnectError, ConnectionOptions};
use crate::sqlite::health::{DatabaseHealth, FileIdentity, WriteFault};

/// Attempts at opening a replica's file while its follower renames a new
/// one over it (each attempt is two `stat`s and an open).
const FOLLOW_OPEN_ATTEMPTS: u32 = 3;

/// Opens a connection on `options` under `health`'s watch and installs its
/// access controls; on a replica, also returns the identity of the file it
/// opened. A file SQLite could open only read-only is reported to `health`.
pub fn open(
    options: &ConnectionOptions,
    health: &DatabaseHealth,
) -> Result<(ManagedConnection, Option<FileIdentity>), ConnectError> {
    let factory = connection::factory(options);
    let (conn, file) = if health.follows() {
        open_followed(&factory, options, health)?
    } else {
        (open_guarded(&factory, options, health)?, None)
    };
    match access::install(&conn) {
        Ok(level) => Ok((
            ManagedConnection {
                conn,
                access: level,
                unsettled: std::cell::Cell::new(false),
            },
            file,
        )),
        Err(source) => Err(ConnectError::Setup {
            path: options.path.clone(),
            pragma: "query_only",
            reason: "SQLite refused the access controls",
            source,
        }),
    }
}

fn open_guarded(
    factory: &r2d2_sqlite::SqliteConnectionManager,
    options: &ConnectionOptions,
    health: &DatabaseHealth,
) -> Result<Connection, ConnectError> {
    let not_the_file = || ConnectError::NotTheOpenedFile {
        path: options.path.clone(),
    };
    health.verify_file().map_err(|_| not_the_file())?;
    connection::ensure_directory(options)?;
    let conn = r2d2::ManageConnection::connect(factory)
        .map_err(|err| ConnectError::from_factory(err, &options.path))
        .inspect_err(|err| {
            if matches!(err, ConnectError::NotTheOpenedFile { .. }) {
                // Records (and logs once) what happened to the file.
                let _ = health.verify_file();
            }
        })?;
    if health.is_watched() && conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
        health.write_failed(WriteFault::ReadOnlyFile {
            path: options.path.clone(),
        });
    }
    Ok(conn)
}

/// Opens a replica's current file: the identity before and after the open
/// must agree, else the follower renamed a new file over the path in
/// between and the open is tried again on the new one.
fn open_followed(
    factory: &r2d2_sqlite::SqliteConnectionManager,
    options: &ConnectionOptions,
    health: &DatabaseHealth,
) -> Result<(Connection, Option<FileIdentity>), ConnectError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        health.verify_file()?;
        let before = health.identity();
        let conn = r2d2::ManageConnection::connect(factory)
            .map_err(|err| ConnectError::from_factory(err, &options.path))?;
        health.verify_file()?;
        if health.identity() == before {
            return Ok((conn, before));
        }
        if attempt >= FOLLOW_OPEN_ATTEMPTS {
            return Err(ConnectError::NotTheOpenedFile {
                path: options.path.clone(),
            });
        }
    }
}

/// An SQLite connection with its access controls installed. Dereferences
/// to [`rusqlite::Connection`].
pub struct ManagedConnection {
    conn: Connection,
    access: AccessLevel,
    /// Set when the connection could not be put back at rest; it must be
    /// closed.
    unsettled: std::cell::Cell<bool>,
}

impl ManagedConnection {
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
        let _ = self.access.take_refusal();
        self.access.set(access);
        let stmt = self.conn.prepare(sql);
        self.access.set(previous);
        match (stmt, self.access.take_refusal()) {
            (Err(_), Some(reason)) => Err(access::refusal_error(reason)),
            (stmt, _) => stmt,
        }
    }

    /// Puts the connection back at rest after a call, as a pool does on
    /// return: a transaction left open is rolled back (true when one was),
    /// and a connection that cannot be brought back to read-only with no
    /// restriction is unsettled. Returns `(rolled_back, settled)`.
    pub fn settle(&self) -> (bool, bool) {
        if self.unsettled.get()
            || self.access() != Access::ReadOnly
            || !self.restrictions().is_empty()
        {
            return (false, false);
        }
        if self.conn.is_autocommit() {
            return (false, true);
        }
        let rolled_back = self.with_access(Access::Trusted, |c| c.execute_batch("ROLLBACK"));
        let settled = matches!(rolled_back, Ok(Ok(()))) && self.conn.is_autocommit();
        if !settled {
            self.unsettled.set(true);
        }
        (true, settled)
    }
}

impl std::fmt::Debug for ManagedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedConnection")
            .field("access", &self.access())
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
