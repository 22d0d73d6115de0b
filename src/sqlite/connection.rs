//! Opening one SQLite connection: the PRAGMAs every connection gets and the
//! hardening that untrusted SQL needs.
//!
//! r2d2_sqlite's [`SqliteConnectionManager`] opens the file with our flags
//! and runs our setup as its init hook ([`factory`]); the pool's own
//! manager ([`crate::pool::SqliteManager`]) wraps it with the QueuePool
//! rules, and direct connections (migrations) come from the same factory.
//! The init hook can only return a `rusqlite::Error`: our [`ConnectError`]
//! travels inside one (`ToSqlConversionFailure`, the variant that holds any error) and is unwrapped again in
//! [`ConnectError::from_factory`], so every failure keeps its plain words.
//!
//! Order matters: `busy_timeout` comes before `journal_mode = WAL` (switching
//! the journal needs a lock), and nothing here runs after a caller installs an
//! authorizer, because the authorizer judges statements at prepare time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2::ManageConnection;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags};

use crate::sqlite::health::FileIdentity;

/// Why a connection could not be opened, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot create the database directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {reason} ({source})")]
    Open {
        path: PathBuf,
        reason: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "refused to open {path}: it is no longer the database file the server opened at \
         startup (deleted, renamed or replaced)"
    )]
    NotTheOpenedFile { path: PathBuf },
    /// A replica's file is not there (yet, or while its follower re-restores).
    #[error(transparent)]
    ReplicaFile(#[from] crate::sqlite::health::FileFault),
    /// The worker process that holds the connection could not start, or
    /// reported this failure (its words, and whether it may pass).
    #[error("{message}")]
    Worker { message: String, transient: bool },
    #[error("cannot prepare database {path} (PRAGMA {pragma}): {reason} ({source})")]
    Setup {
        path: PathBuf,
        pragma: &'static str,
        reason: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed (a lock), as opposed to a file
    /// that is not a database or a directory that cannot be written.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::CreateDir { .. }
            | ConnectError::NotTheOpenedFile { .. }
            | ConnectError::ReplicaFile(_) => false,
            ConnectError::Open { source, .. } | ConnectError::Setup { source, .. } => {
                is_busy(source)
            }
            ConnectError::Worker { transient, .. } => *transient,
        }
    }

    /// The error the factory returned for `path`: ours, carried through the
    /// init hook, or SQLite's own refusal to open the file.
    pub fn from_factory(err: rusqlite::Error, path: &Path) -> Self {
        match err {
            rusqlite::Error::ToSqlConversionFailure(inner) => {
                match inner.downcast::<ConnectError>() {
                    Ok(ours) => *ours,
                    Err(other) => {
                        Self::opening(path, rusqlite::Error::ToSqlConversionFailure(other))
                    }
                }
            }
            source => Self::opening(path, source),
        }
    }

    fn opening(path: &Path, source: rusqlite::Error) -> Self {
        ConnectError::Open {
            path: path.to_path_buf(),
            reason: describe(&source),
            source,
        }
    }

    /// Carries this error through r2d2_sqlite's init hook, in the one
    /// `rusqlite::Error` variant that holds any error (and that opening a
    /// file never returns on its own).
    fn into_hook_error(self) -> rusqlite::Error {
        rusqlite::Error::ToSqlConversionFailure(Box::new(self))
    }
}

/// True for `SQLITE_BUSY` and `SQLITE_LOCKED`: another connection holds a lock.
pub fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// What every connection is opened with.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConnectionOptions {
    pub path: PathBuf,
    pub busy_timeout: Duration,
    /// Most KiB of pages one connection may cache; 0 keeps SQLite's 2 MB.
    pub cache_kib: u64,
    /// Largest string or BLOB a statement may build or read.
    pub max_value_bytes: u64,
    /// Longest SQL text a statement may have. Agent SQL is short (values
    /// travel as parameters), and parts of SQLite's parser and code
    /// generator grow with the square of a statement's terms (a `CASE` of
    /// 40,000 `WHEN`s takes seconds to prepare, uninterruptibly); at the
    /// default 100 KB the worst statement prepares in about 50 ms.
    pub max_sql_bytes: u32,
    /// SQLite's soft heap limit for the whole process (see [`limit_sqlite_heap`]).
    pub soft_heap_limit_bytes: u64,
    /// SQLite's hard heap ceiling for the whole process.
    pub hard_heap_limit_bytes: u64,
    /// Whether a missing file is created. Only before the server records
    /// the file's identity: afterwards a missing file means it was deleted,
    /// and an empty new one would silently take its place.
    pub create: bool,
    /// The file the connection must open; checked right after opening,
    /// before any PRAGMA could write to another file.
    pub identity: Option<FileIdentity>,
    /// Who owns the file's journal and checkpoints.
    pub mode: FileMode,
}

/// Who owns the database file's journal and checkpoints, which decides the
/// open flags and the PRAGMAs a connection gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileMode {
    /// The server's own WAL database: SQLite checkpoints it automatically,
    /// and the server truncates the WAL at shutdown.
    #[default]
    Primary,
    /// A primary Litestream replicates: Litestream owns checkpoints, so no
    /// connection checkpoints automatically or on close.
    Replicated,
    /// A copy a Litestream follower keeps current: opened read-only, with
    /// no PRAGMA that writes and the journal mode the follower left.
    Replica,
}

impl FileMode {
    /// Whether the server checkpoints the WAL itself (automatically, and
    /// with `TRUNCATE` at shutdown). Only its own unreplicated file: under
    /// Litestream a checkpoint that restarts or truncates the WAL behind
    /// Litestream's back makes it take a fresh snapshot of the whole
    /// database (`verify` in Litestream's db.go), and a `TRUNCATE` waits
    /// for its long read transaction and fails with `SQLITE_BUSY`.
    pub fn server_checkpoints(self) -> bool {
        self == FileMode::Primary
    }
}

/// The connection factory for `options`: r2d2_sqlite opens the file
/// read-write (creating it only when `options.create`), then the init hook
/// checks it is the expected file and applies the PRAGMAs and hardening.
///
/// A [`FileMode::Replica`] file is opened read-only and never created (it
/// is the follower's), with [`apply_replica_settings`] instead.
pub fn factory(options: &ConnectionOptions) -> SqliteConnectionManager {
    let base = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let flags = match options.mode {
        FileMode::Replica => base | OpenFlags::SQLITE_OPEN_READ_ONLY,
        FileMode::Primary | FileMode::Replicated if options.create => {
            base | OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        }
        FileMode::Primary | FileMode::Replicated => base | OpenFlags::SQLITE_OPEN_READ_WRITE,
    };
    let setup = options.clone();
    SqliteConnectionManager::file(target(options))
        .with_flags(flags)
        .with_init(move |conn| {
            ensure_identity(conn, &setup)
                .and_then(|()| set_up(conn, &setup, Purpose::Pool))
                .map_err(ConnectError::into_hook_error)
        })
}

/// What SQLite is asked to open: the path, or for a replica the URI that
/// reads the follower's copy through [`crate::sqlite::replica_vfs`]
/// (registered here, once; should that fail, the open fails naming the VFS).
fn target(options: &ConnectionOptions) -> PathBuf {
    // First: the replica's VFS wraps the default one, which must be this.
    let _ = crate::sqlite::memory_temp::register();
    match options.mode {
        FileMode::Replica => {
            let _ = crate::sqlite::replica_vfs::register();
            PathBuf::from(crate::sqlite::replica_vfs::uri(&options.path))
        }
        FileMode::Primary | FileMode::Replicated => options.path.clone(),
    }
}

/// Creates the database's directory when it is missing and `options.create`
/// (never for a replica: its directory is the follower's).
pub fn ensure_directory(options: &ConnectionOptions) -> Result<(), ConnectError> {
    let dir = options
        .path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty());
    match dir {
        Some(dir) if options.create && options.mode != FileMode::Replica && !dir.exists() => {
            std::fs::create_dir_all(dir).map_err(|source| ConnectError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Opens one connection outside any pool, from the same factory the pool
/// uses: read-write (creating the file and its directory when missing and
/// `options.create`), checked to be the expected file, with the PRAGMAs
/// and hardening applied.
pub fn open(options: &ConnectionOptions) -> Result<Connection, ConnectError> {
    ensure_directory(options)?;
    factory(options)
        .connect()
        .map_err(|err| ConnectError::from_factory(err, &options.path))
}

/// Opens `options.path` read-only, never creating it, for the readiness
/// probe: hardened like every connection, with a small cache, and no
/// PRAGMA that could write.
pub fn open_probe(options: &ConnectionOptions) -> Result<Connection, ConnectError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let setup = options.clone();
    SqliteConnectionManager::file(target(options))
        .with_flags(flags)
        .with_init(move |conn| {
            ensure_identity(conn, &setup)
                .and_then(|()| set_up(conn, &setup, Purpose::Probe))
                .map_err(ConnectError::into_hook_error)
        })
        .connect()
        .map_err(|err| ConnectError::from_factory(err, &options.path))
}

/// The error for a PRAGMA (or other setup step) that failed on `path`.
fn setup_failed<'p>(
    path: &'p Path,
    pragma: &'static str,
) -> impl FnOnce(rusqlite::Error) -> ConnectError + 'p {
    move |source| ConnectError::Setup {
        path: path.to_path_buf(),
        pragma,
        reason: describe(&source),
        source,
    }
}

/// The file SQLite just opened (its descriptor is open from
/// `sqlite3_open_v2` on) must be the one recorded at startup: comparing the
/// path's identity now, before any PRAGMA runs, refuses a file that was
/// replaced. The refused connection is closed without the checkpoint a
/// closing connection would otherwise run: the WAL beside the path belongs
/// to the old file, and checkpointing it into the new one corrupts it.
fn ensure_identity(conn: &Connection, options: &ConnectionOptions) -> Result<(), ConnectError> {
    let Some(expected) = options.identity else {
        return Ok(());
    };
    if FileIdentity::of(&options.path).is_ok_and(|now| now == expected) {
        return Ok(());
    }
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    Err(ConnectError::NotTheOpenedFile {
        path: options.path.clone(),
    })
}

/// Which connection [`set_up`] prepares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A pool connection: what `options.mode` calls for.
    Pool,
    /// The readiness probe's: read-only, a small cache, nothing that writes.
    Probe,
}

/// PRAGMAs every connection gets; none of them writes the file.
///
/// `temp_store` stays the default (files): sorts, DISTINCT, GROUP BY,
/// window partitions and materialized subqueries spill to temporary files,
/// which [`crate::sqlite::memory_temp`] keeps in SQLite's heap, under the
/// hard heap ceiling (see `limit_sqlite_heap`), never on disk.
const READING_PRAGMAS: [(&str, &str); 3] = [
    ("trusted_schema", "OFF"),
    ("cell_size_check", "ON"),
    ("mmap_size", "0"),
];

/// Prepares a connection SQLite just opened. Hardening first: it does not
/// touch the file, so it cannot fail on a broken one, and everything after
/// runs under it. Then, by file mode:
///
/// - a primary's (or replicated primary's) file is put in WAL mode, with
///   the PRAGMAs that change how it is written;
/// - a replica's copy gets none that writes: no `journal_mode = WAL` (the
///   follower keeps it in rollback-journal mode and writes pages in place
///   under SQLite's locks), no `synchronous`. `busy_timeout` is what waits
///   out an apply: while the follower holds its locks a read meets
///   `SQLITE_BUSY` and SQLite's busy handler retries until it is done.
fn set_up(
    conn: &Connection,
    options: &ConnectionOptions,
    purpose: Purpose,
) -> Result<(), ConnectError> {
    let path = options.path.as_path();
    let setup = |pragma: &'static str| setup_failed(path, pragma);
    conn.busy_timeout(options.busy_timeout)
        .map_err(setup("busy_timeout"))?;
    harden(conn, options).map_err(setup("defensive"))?;
    let writes_file = purpose == Purpose::Pool && options.mode != FileMode::Replica;
    if purpose == Purpose::Pool {
        crate::sqlite::bounded_functions::install(conn).map_err(setup("functions"))?;
        if writes_file {
            enable_wal(conn, path)?;
        } else {
            // Reading the schema proves the file is a database (opening does not).
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
                row.get::<_, i64>(0)
            })
            .map_err(setup("schema"))?;
        }
    }
    let own: &[(&str, &str)] = match purpose {
        Purpose::Probe => &[("query_only", "ON")],
        Purpose::Pool if writes_file => &[
            ("synchronous", "NORMAL"),
            ("foreign_keys", "ON"),
            ("secure_delete", "ON"),
        ],
        Purpose::Pool => &[("foreign_keys", "ON")],
    };
    for &(pragma, value) in own.iter().chain(&READING_PRAGMAS) {
        conn.pragma_update(None, pragma, value)
            .map_err(setup(pragma))?;
    }
    if crate::sqlite::memory_temp::register().is_err() {
        // Without the VFS, temporary files would go to disk unbounded:
        // keep temporary data in memory, under the ceiling, the slow way.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(setup("temp_store"))?;
    }
    if writes_file && options.mode == FileMode::Replicated {
        leave_checkpoints_to_litestream(conn).map_err(setup("wal_autocheckpoint"))?;
    }
    let cache_kib = match purpose {
        Purpose::Probe => 1024,
        Purpose::Pool => crate::sqlite::page_cache::cache_size_kib(options.cache_kib),
    };
    if cache_kib > 0 {
        // Negative: a size in KiB rather than a number of pages.
        let kib = i64::try_from(cache_kib).unwrap_or(i64::MAX);
        conn.pragma_update(None, "cache_size", -kib)
            .map_err(setup("cache_size"))?;
    }
    Ok(())
}

/// `journal_mode = WAL`, which answers with a row: a file that is not a
/// database fails here.
fn enable_wal(conn: &Connection, path: &Path) -> Result<(), ConnectError> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(setup_failed(path, "journal_mode"))?;
    if mode.eq_ignore_ascii_case("wal") || mode.eq_ignore_ascii_case("memory") {
        return Ok(());
    }
    Err(ConnectError::Setup {
        path: path.to_path_buf(),
        pragma: "journal_mode",
        reason: "the database refused write-ahead logging",
        source: rusqlite::Error::InvalidQuery,
    })
}

/// Litestream owns the checkpoints of a file it replicates (it runs its
/// own PASSIVE ones between syncs): no commit on this connection starts
/// one, and closing it (the last connection of the process, at shutdown)
/// does not checkpoint or delete the WAL either.
fn leave_checkpoints_to_litestream(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    Ok(())
}

/// Longest LIKE or GLOB pattern (SQLite's default is 50,000). Matching
/// costs up to the pattern's length times the text's, in one step no
/// interrupt reaches; agents' patterns are a few words.
pub const MAX_LIKE_PATTERN_LENGTH: i32 = 256;

/// The sqlite.org/security.html measures that do not depend on the caller,
/// and the cap on any one value.
fn harden(conn: &Connection, options: &ConnectionOptions) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, false)?;
    // No ATTACH at all: untrusted SQL must not reach another file.
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    // Every string and BLOB a statement builds or reads is at most this
    // long: `zeroblob(1e9)`, a doubling CTE or `printf('%.*c', ...)` fail at
    // once with SQLITE_TOOBIG instead of spending seconds and gigabytes in
    // steps no interrupt reaches.
    let max_value = i32::try_from(options.max_value_bytes).unwrap_or(i32::MAX);
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, max_value)?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_SQL_LENGTH,
        i32::try_from(options.max_sql_bytes)
            .unwrap_or(i32::MAX)
            .min(max_value),
    )?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH,
        MAX_LIKE_PATTERN_LENGTH,
    )?;
    Ok(())
}

/// Caps the memory all of SQLite's connections in this process use.
/// Above `soft_bytes`, page caches give pages back instead of growing; an
/// allocation that would pass `hard_bytes` fails, and SQLite fails that
/// statement with `SQLITE_NOMEM` and carries on. Process-wide; setting them
/// again replaces the limits (0: no limit).
pub fn limit_sqlite_heap(soft_bytes: u64, hard_bytes: u64) {
    let soft = i64::try_from(soft_bytes).unwrap_or(i64::MAX);
    let hard = i64::try_from(hard_bytes).unwrap_or(i64::MAX);
    // SAFETY: both functions are thread-safe and take any value. The hard
    // limit goes first: SQLite lowers the soft limit to stay under it.
    unsafe {
        rusqlite::ffi::sqlite3_hard_heap_limit64(hard);
        rusqlite::ffi::sqlite3_soft_heap_limit64(soft);
    }
}

/// A short human explanation of an open or setup error.
fn describe(err: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::*;
    match err.sqlite_error_code() {
        Some(CannotOpen) => {
            "the file or its directory cannot be opened (missing, or not readable and writable)"
        }
        Some(NotADatabase) => "the file is not an SQLite database",
        Some(DatabaseCorrupt) => "the database file is corrupt",
        Some(DatabaseBusy | DatabaseLocked) => "the database is locked by another connection",
        Some(ReadOnly) => "the database or its directory is read-only",
        Some(PermissionDenied) => "permission denied",
        Some(DiskFull) => "the disk is full",
        Some(SystemIoFailure) => "an I/O error occurred",
        _ => "SQLite refused it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(path: PathBuf) -> ConnectionOptions {
        ConnectionOptions {
            path,
            busy_timeout: Duration::from_secs(1),
            cache_kib: 0,
            max_value_bytes: 1 << 20,
            max_sql_bytes: 100_000,
            soft_heap_limit_bytes: 0,
            hard_heap_limit_bytes: 0,
            create: true,
            identity: None,
            mode: FileMode::Primary,
        }
    }

    #[test]
    fn the_factory_creates_the_file_and_its_directory_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&options(dir.path().join("new/db.sqlite"))).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_setup_failure_keeps_its_own_words_through_the_init_hook() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.db");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let err = open(&options(path)).unwrap_err();
        assert!(
            matches!(
                err,
                ConnectError::Setup {
                    pragma: "journal_mode",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("not an SQLite database"), "{err}");
    }

    #[test]
    fn a_missing_file_is_not_created_once_creating_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.db");
        let err = open(&ConnectionOptions {
            create: false,
            ..options(path.clone())
        })
        .unwrap_err();
        assert!(matches!(err, ConnectError::Open { .. }), "{err:?}");
        assert!(!path.exists());
    }

    #[test]
    fn a_replicated_file_is_never_checkpointed_by_its_connections() {
        let dir = tempfile::tempdir().unwrap();
        let replicated = ConnectionOptions {
            mode: FileMode::Replicated,
            ..options(dir.path().join("db.sqlite"))
        };
        let conn = open(&replicated).unwrap();
        let autocheckpoint: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
            .unwrap();
        assert_eq!(autocheckpoint, 0);
        assert!(conn
            .db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE)
            .unwrap());
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(conn);
        // The last connection closed without checkpointing: the WAL is still
        // there, with the commit in it.
        let wal = dir.path().join("db.sqlite-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    }

    #[test]
    fn the_servers_own_file_keeps_sqlites_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&options(dir.path().join("db.sqlite"))).unwrap();
        let autocheckpoint: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
            .unwrap();
        assert_eq!(autocheckpoint, 1000);
        assert!(!conn
            .db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE)
            .unwrap());
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(conn);
        assert!(!dir.path().join("db.sqlite-wal").exists());
    }

    #[test]
    fn a_file_other_than_the_recorded_one_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.db");
        let second = dir.path().join("second.db");
        drop(open(&options(first.clone())).unwrap());
        drop(open(&options(second.clone())).unwrap());
        let err = open(&ConnectionOptions {
            create: false,
            identity: Some(FileIdentity::of(&first).unwrap()),
            ..options(second)
        })
        .unwrap_err();
        assert!(
            matches!(err, ConnectError::NotTheOpenedFile { .. }),
            "{err:?}"
        );
    }
}
