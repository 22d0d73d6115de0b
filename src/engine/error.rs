//! Why a tool call failed, in terms an agent can act on, and the outcome
//! label the metrics use. SQLite's result codes stay typed
//! ([`SqliteCode`]); their symbolic names (`SQLITE_CONSTRAINT_UNIQUE`) are
//! made only where an error becomes text.

use std::borrow::Cow;
use std::ffi::c_int;
use std::fmt;
use std::time::Duration;

use rusqlite::{ffi, ErrorCode};

use crate::pool::PoolError;
use crate::sqlite::health::FileFault;

/// A failed query or tool call.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// SQLite rejected or failed the statement.
    #[error("{message} (SQLite {code})")]
    Sql { code: SqliteCode, message: String },
    /// The statement tried something the access level forbids.
    #[error("{0}")]
    Denied(String),
    #[error(
        "the call ran longer than the {0:?} limit (EROS_DB_QUERY_TIMEOUT) and its statement \
         was interrupted"
    )]
    Timeout(Duration),
    /// The statement went over a resource ceiling (value size, memory);
    /// the message names the setting that raises it.
    #[error("{message} ({code})")]
    Limit { code: SqliteCode, message: String },
    #[error("the call was cancelled and the statement interrupted")]
    Cancelled,
    #[error(
        "the database is busy (locked by a writer) after {retries} retries; try again shortly"
    )]
    Busy { retries: u32 },
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The database file was deleted, renamed or replaced: writes are
    /// refused. On a replica, also: its copy cannot be served now (no
    /// restore yet, or its follower stopped), which passes.
    #[error(transparent)]
    FileChanged(#[from] FileFault),
    /// A write failed for a reason of the file or disk (full, read-only,
    /// I/O), which the message names; reads may still work.
    #[error("{message} ({code})")]
    NotWritable { code: SqliteCode, message: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The call named no database the server serves (or none, when it
    /// serves several); the message lists them.
    #[error("{0}")]
    UnknownDatabase(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Too many calls already wait for a connection: refused at once
    /// rather than queued past the checkout timeout.
    #[error(
        "the server is at capacity: {waiting} calls already wait for or hold a database \
         connection; retry shortly"
    )]
    Overloaded { waiting: usize },
    /// The write's record (the audit log's line) could not be made
    /// durable, and the operator wants no write without one: it was
    /// rolled back.
    #[error(
        "the write was rolled back, nothing was changed: {0}. The server records every write \
         before it commits (EROS_AUDIT_FAIL_CLOSED); retry once the audit log can be written"
    )]
    NotRecorded(String),
    /// The caller lacks the scope the tool needs; nothing ran.
    #[error("the caller may not use {tool}: it needs the scope {scope}")]
    Forbidden { tool: String, scope: String },
    /// A quota of the caller's refused the call; nothing ran.
    #[error(transparent)]
    Quota(#[from] crate::quota::QuotaExceeded),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The outcome of a tool call, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    SqlError,
    Denied,
    Timeout,
    Busy,
    Cancelled,
    Invalid,
    Limit,
    Forbidden,
    Quota,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::Ok,
        Outcome::SqlError,
        Outcome::Denied,
        Outcome::Timeout,
        Outcome::Busy,
        Outcome::Cancelled,
        Outcome::Invalid,
        Outcome::Limit,
        Outcome::Forbidden,
        Outcome::Quota,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::SqlError => "sql_error",
            Outcome::Denied => "denied",
            Outcome::Timeout => "timeout",
            Outcome::Busy => "busy",
            Outcome::Cancelled => "cancelled",
            Outcome::Invalid => "invalid",
            Outcome::Limit => "limit",
            Outcome::Forbidden => "forbidden",
            Outcome::Quota => "quota",
        }
    }
}

impl QueryError {
    pub fn outcome(&self) -> Outcome {
        match self {
            QueryError::FileChanged(fault) if fault.is_passing() => Outcome::Busy,
            QueryError::Sql { .. }
            | QueryError::Internal(_)
            | QueryError::FileChanged(_)
            | QueryError::NotWritable { .. }
            | QueryError::NotRecorded(_) => Outcome::SqlError,
            QueryError::Denied(_) => Outcome::Denied,
            QueryError::Timeout(_) => Outcome::Timeout,
            QueryError::Cancelled => Outcome::Cancelled,
            QueryError::Busy { .. }
            | QueryError::Pool(_)
            | QueryError::ShuttingDown
            | QueryError::Overloaded { .. } => Outcome::Busy,
            QueryError::InvalidArgument(_) | QueryError::UnknownDatabase(_) => Outcome::Invalid,
            QueryError::Limit { .. } => Outcome::Limit,
            QueryError::Forbidden { .. } => Outcome::Forbidden,
            QueryError::Quota(_) => Outcome::Quota,
        }
    }

    /// Whether the same call may succeed if the agent tries again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueryError::Busy { .. }
            | QueryError::ShuttingDown
            | QueryError::Overloaded { .. }
            | QueryError::NotRecorded(_)
            | QueryError::Quota(_) => true,
            QueryError::Pool(err) => err.is_retryable(),
            QueryError::FileChanged(fault) => fault.is_passing(),
            _ => false,
        }
    }

    /// A short machine-readable code: the SQLite code name, or the kind.
    pub fn code(&self) -> Cow<'static, str> {
        let kind = match self {
            QueryError::Sql { code, .. }
            | QueryError::Limit { code, .. }
            | QueryError::NotWritable { code, .. } => return code.name(),
            QueryError::FileChanged(fault) if fault.is_passing() => "REPLICA_RESTORING",
            QueryError::FileChanged(_) => "DATABASE_FILE_CHANGED",
            QueryError::Denied(_) => "DENIED",
            QueryError::Timeout(_) => "TIMEOUT",
            QueryError::Cancelled => "CANCELLED",
            QueryError::Busy { .. } => return SqliteCode::new(ffi::SQLITE_BUSY).name(),
            QueryError::Pool(PoolError::Exhausted { .. }) => "POOL_EXHAUSTED",
            QueryError::Pool(_) => "DATABASE_UNAVAILABLE",
            QueryError::InvalidArgument(_) => "INVALID_ARGUMENT",
            QueryError::UnknownDatabase(_) => "UNKNOWN_DATABASE",
            QueryError::ShuttingDown => "SHUTTING_DOWN",
            QueryError::Overloaded { .. } => "OVERLOADED",
            QueryError::Forbidden { .. } => "FORBIDDEN",
            QueryError::NotRecorded(_) => "AUDIT_UNAVAILABLE",
            QueryError::Quota(_) => "QUOTA_EXCEEDED",
            QueryError::Internal(_) => "INTERNAL",
        };
        Cow::Borrowed(kind)
    }
}

impl From<rusqlite::Error> for QueryError {
    fn from(err: rusqlite::Error) -> Self {
        let (failure, message) =
            match &err {
                rusqlite::Error::MultipleStatement => return QueryError::Denied(
                    "only one SQL statement per call is allowed; send the statements separately"
                        .into(),
                ),
                rusqlite::Error::SqliteFailure(failure, message) => (
                    *failure,
                    message.clone().unwrap_or_else(|| failure.to_string()),
                ),
                rusqlite::Error::SqlInputError {
                    error, msg, offset, ..
                } => (*error, format!("{msg} (at offset {offset})")),
                rusqlite::Error::InvalidParameterName(name) => {
                    return QueryError::InvalidArgument(format!("unknown parameter name {name:?}"))
                }
                rusqlite::Error::InvalidParameterCount(given, expected) => {
                    return QueryError::InvalidArgument(format!(
                        "the statement has {expected} parameter(s) but {given} were given"
                    ))
                }
                _ => {
                    return QueryError::Sql {
                        code: SqliteCode::new(ffi::SQLITE_ERROR),
                        message: err.to_string(),
                    }
                }
            };
        // `query_only` refuses with plain SQLITE_READONLY; the extended
        // READONLY codes (directory, cannot lock, moved...) are the file's.
        let refused = failure.code == ErrorCode::AuthorizationForStatementDenied
            || failure.extended_code == ffi::SQLITE_READONLY
            // A denied function is reported by SQLite as a plain error.
            || message.starts_with("not authorized");
        if refused && message.starts_with("not authorized: ") {
            // The authorizer's own explanation (a replication table).
            QueryError::Denied(message)
        } else if refused {
            QueryError::Denied(format!(
                "{message}: refused by the database's access controls (reads only, one statement, no PRAGMA writes, ATTACH, transactions or extensions)"
            ))
        } else {
            QueryError::Sql {
                code: failure.into(),
                message,
            }
        }
    }
}

/// A result code as SQLite reported it: the primary kind to act on
/// (busy, corrupt, too big) and the extended code that says more
/// (`SQLITE_CONSTRAINT_UNIQUE` rather than `SQLITE_CONSTRAINT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteCode {
    pub kind: ErrorCode,
    pub extended: c_int,
}

impl SqliteCode {
    /// The code for a (primary or extended) SQLite result code number.
    pub fn new(extended: c_int) -> Self {
        ffi::Error::new(extended).into()
    }

    /// SQLite's symbolic name, e.g. `SQLITE_BUSY`, or
    /// `SQLITE_CONSTRAINT_NOTNULL` for an extended code. A code newer than
    /// this table is named by its primary code.
    pub fn name(&self) -> Cow<'static, str> {
        // sqlite3_errstr gives prose ("database is locked"); the symbolic
        // names are what agents and operators search for.
        let named = |code: c_int| {
            CODE_NAMES
                .iter()
                .find(|(number, _)| *number == code)
                .map(|(_, name)| Cow::Borrowed(*name))
        };
        named(self.extended)
            .or_else(|| named(self.extended & 0xff))
            .unwrap_or_else(|| Cow::Owned(format!("SQLITE_{}", self.extended)))
    }
}

impl From<ffi::Error> for SqliteCode {
    fn from(error: ffi::Error) -> Self {
        SqliteCode {
            kind: error.code,
            extended: error.extended_code,
        }
    }
}

impl fmt::Display for SqliteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// `(code, "NAME")` for each of SQLite's result codes, from the constants
/// of the SQLite headers themselves.
macro_rules! code_names {
    ($($name:ident),* $(,)?) => {
        &[$((ffi::$name, stringify!($name))),*]
    };
}

const CODE_NAMES: &[(c_int, &str)] = code_names![
    SQLITE_ERROR,
    SQLITE_INTERNAL,
    SQLITE_PERM,
    SQLITE_ABORT,
    SQLITE_BUSY,
    SQLITE_LOCKED,
    SQLITE_NOMEM,
    SQLITE_READONLY,
    SQLITE_INTERRUPT,
    SQLITE_IOERR,
    SQLITE_CORRUPT,
    SQLITE_NOTFOUND,
    SQLITE_FULL,
    SQLITE_CANTOPEN,
    SQLITE_PROTOCOL,
    SQLITE_EMPTY,
    SQLITE_SCHEMA,
    SQLITE_TOOBIG,
    SQLITE_CONSTRAINT,
    SQLITE_MISMATCH,
    SQLITE_MISUSE,
    SQLITE_NOLFS,
    SQLITE_AUTH,
    SQLITE_FORMAT,
    SQLITE_RANGE,
    SQLITE_NOTADB,
    SQLITE_NOTICE,
    SQLITE_WARNING,
    SQLITE_ERROR_MISSING_COLLSEQ,
    SQLITE_ERROR_RETRY,
    SQLITE_ERROR_SNAPSHOT,
    SQLITE_IOERR_READ,
    SQLITE_IOERR_SHORT_READ,
    SQLITE_IOERR_WRITE,
    SQLITE_IOERR_FSYNC,
    SQLITE_IOERR_DIR_FSYNC,
    SQLITE_IOERR_TRUNCATE,
    SQLITE_IOERR_FSTAT,
    SQLITE_IOERR_UNLOCK,
    SQLITE_IOERR_RDLOCK,
    SQLITE_IOERR_DELETE,
    SQLITE_IOERR_BLOCKED,
    SQLITE_IOERR_NOMEM,
    SQLITE_IOERR_ACCESS,
    SQLITE_IOERR_CHECKRESERVEDLOCK,
    SQLITE_IOERR_LOCK,
    SQLITE_IOERR_CLOSE,
    SQLITE_IOERR_DIR_CLOSE,
    SQLITE_IOERR_SHMOPEN,
    SQLITE_IOERR_SHMSIZE,
    SQLITE_IOERR_SHMLOCK,
    SQLITE_IOERR_SHMMAP,
    SQLITE_IOERR_SEEK,
    SQLITE_IOERR_DELETE_NOENT,
    SQLITE_IOERR_MMAP,
    SQLITE_IOERR_GETTEMPPATH,
    SQLITE_IOERR_CONVPATH,
    SQLITE_IOERR_VNODE,
    SQLITE_IOERR_AUTH,
    SQLITE_IOERR_BEGIN_ATOMIC,
    SQLITE_IOERR_COMMIT_ATOMIC,
    SQLITE_IOERR_ROLLBACK_ATOMIC,
    SQLITE_IOERR_DATA,
    SQLITE_IOERR_CORRUPTFS,
    SQLITE_LOCKED_SHAREDCACHE,
    SQLITE_LOCKED_VTAB,
    SQLITE_BUSY_RECOVERY,
    SQLITE_BUSY_SNAPSHOT,
    SQLITE_BUSY_TIMEOUT,
    SQLITE_CANTOPEN_NOTEMPDIR,
    SQLITE_CANTOPEN_ISDIR,
    SQLITE_CANTOPEN_FULLPATH,
    SQLITE_CANTOPEN_CONVPATH,
    SQLITE_CANTOPEN_SYMLINK,
    SQLITE_CORRUPT_VTAB,
    SQLITE_CORRUPT_SEQUENCE,
    SQLITE_CORRUPT_INDEX,
    SQLITE_READONLY_RECOVERY,
    SQLITE_READONLY_CANTLOCK,
    SQLITE_READONLY_ROLLBACK,
    SQLITE_READONLY_DBMOVED,
    SQLITE_READONLY_CANTINIT,
    SQLITE_READONLY_DIRECTORY,
    SQLITE_ABORT_ROLLBACK,
    SQLITE_CONSTRAINT_CHECK,
    SQLITE_CONSTRAINT_COMMITHOOK,
    SQLITE_CONSTRAINT_FOREIGNKEY,
    SQLITE_CONSTRAINT_FUNCTION,
    SQLITE_CONSTRAINT_NOTNULL,
    SQLITE_CONSTRAINT_PRIMARYKEY,
    SQLITE_CONSTRAINT_TRIGGER,
    SQLITE_CONSTRAINT_UNIQUE,
    SQLITE_CONSTRAINT_VTAB,
    SQLITE_CONSTRAINT_ROWID,
    SQLITE_CONSTRAINT_PINNED,
    SQLITE_CONSTRAINT_DATATYPE,
    SQLITE_NOTICE_RECOVER_WAL,
    SQLITE_NOTICE_RECOVER_ROLLBACK,
    SQLITE_WARNING_AUTOINDEX,
    SQLITE_AUTH_USER,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_code_is_named_symbolically() {
        assert_eq!(SqliteCode::new(ffi::SQLITE_BUSY).name(), "SQLITE_BUSY");
        assert_eq!(
            SqliteCode::new(ffi::SQLITE_BUSY).kind,
            ErrorCode::DatabaseBusy
        );
    }

    #[test]
    fn an_extended_code_keeps_its_kind_and_its_own_name() {
        let code = SqliteCode::new(ffi::SQLITE_CONSTRAINT_UNIQUE);
        assert_eq!(code.kind, ErrorCode::ConstraintViolation);
        assert_eq!(code.name(), "SQLITE_CONSTRAINT_UNIQUE");
        assert_eq!(
            SqliteCode::new(ffi::SQLITE_READONLY_DIRECTORY).name(),
            "SQLITE_READONLY_DIRECTORY"
        );
    }

    #[test]
    fn an_extended_code_unknown_to_the_table_is_named_by_its_primary_code() {
        // Extended codes are the primary code plus a multiple of 256.
        let newer = ffi::SQLITE_IOERR | (200 << 8);
        assert_eq!(SqliteCode::new(newer).name(), "SQLITE_IOERR");
        assert_eq!(SqliteCode::new(4000).name(), "SQLITE_4000");
    }

    #[test]
    fn every_name_in_the_table_belongs_to_its_number_once() {
        for (number, name) in CODE_NAMES {
            let same: Vec<_> = CODE_NAMES.iter().filter(|(n, _)| n == number).collect();
            assert_eq!(same.len(), 1, "{name} shares its number");
            let primary = CODE_NAMES
                .iter()
                .find(|(n, _)| *n == number & 0xff)
                .unwrap();
            assert!(name.starts_with(primary.1), "{name} is not a {}", primary.1);
        }
    }

    #[test]
    fn a_sqlite_failure_keeps_its_typed_code_and_names_it_in_the_message() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER UNIQUE)")
            .unwrap();
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let err: QueryError = conn
            .execute("INSERT INTO t VALUES (1)", [])
            .unwrap_err()
            .into();
        let QueryError::Sql { code, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(code.kind, ErrorCode::ConstraintViolation);
        assert_eq!(code.extended, ffi::SQLITE_CONSTRAINT_UNIQUE);
        assert_eq!(err.code(), "SQLITE_CONSTRAINT_UNIQUE");
        assert_eq!(
            err.to_string(),
            "UNIQUE constraint failed: t.id (SQLite SQLITE_CONSTRAINT_UNIQUE)"
        );
    }

    #[test]
    fn plain_readonly_is_a_refusal_and_the_files_readonly_codes_are_not() {
        let failure = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        let refused: QueryError = failure(ffi::SQLITE_READONLY).into();
        assert!(matches!(refused, QueryError::Denied(_)), "{refused:?}");
        let moved: QueryError = failure(ffi::SQLITE_READONLY_DBMOVED).into();
        assert_eq!(moved.code(), "SQLITE_READONLY_DBMOVED");
    }
}
