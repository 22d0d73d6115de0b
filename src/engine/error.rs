//! Why a tool call failed, in terms an agent can act on, and the outcome
//! label the metrics use.

use std::time::Duration;

use crate::health::FileFault;
use crate::pool::PoolError;

/// A failed query or tool call.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// SQLite rejected or failed the statement.
    #[error("{message} (SQLite {code})")]
    Sql { code: String, message: String },
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
    Limit { code: &'static str, message: String },
    #[error("the call was cancelled and the statement interrupted")]
    Cancelled,
    #[error(
        "the database is busy (locked by a writer) after {retries} retries; try again shortly"
    )]
    Busy { retries: u32 },
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The database file was deleted, renamed or replaced: writes are refused.
    #[error(transparent)]
    FileChanged(#[from] FileFault),
    /// A write failed for a reason of the file or disk (full, read-only,
    /// I/O), which the message names; reads may still work.
    #[error("{message} ({code})")]
    NotWritable { code: String, message: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the server is shutting down")]
    ShuttingDown,
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
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::SqlError,
        Outcome::Denied,
        Outcome::Timeout,
        Outcome::Busy,
        Outcome::Cancelled,
        Outcome::Invalid,
        Outcome::Limit,
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
        }
    }
}

impl QueryError {
    pub fn outcome(&self) -> Outcome {
        match self {
            QueryError::Sql { .. }
            | QueryError::Internal(_)
            | QueryError::FileChanged(_)
            | QueryError::NotWritable { .. } => Outcome::SqlError,
            QueryError::Denied(_) => Outcome::Denied,
            QueryError::Timeout(_) => Outcome::Timeout,
            QueryError::Cancelled => Outcome::Cancelled,
            QueryError::Busy { .. } | QueryError::Pool(_) | QueryError::ShuttingDown => {
                Outcome::Busy
            }
            QueryError::InvalidArgument(_) => Outcome::Invalid,
            QueryError::Limit { .. } => Outcome::Limit,
        }
    }

    /// Whether the same call may succeed if the agent tries again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueryError::Busy { .. } | QueryError::ShuttingDown => true,
            QueryError::Pool(err) => err.is_retryable(),
            _ => false,
        }
    }

    /// A short machine-readable code: the SQLite code name, or the kind.
    pub fn code(&self) -> &str {
        match self {
            QueryError::Sql { code, .. } => code,
            QueryError::Limit { code, .. } => code,
            QueryError::NotWritable { code, .. } => code,
            QueryError::FileChanged(_) => "DATABASE_FILE_CHANGED",
            QueryError::Denied(_) => "DENIED",
            QueryError::Timeout(_) => "TIMEOUT",
            QueryError::Cancelled => "CANCELLED",
            QueryError::Busy { .. } => "SQLITE_BUSY",
            QueryError::Pool(PoolError::Exhausted { .. }) => "POOL_EXHAUSTED",
            QueryError::Pool(_) => "DATABASE_UNAVAILABLE",
            QueryError::InvalidArgument(_) => "INVALID_ARGUMENT",
            QueryError::ShuttingDown => "SHUTTING_DOWN",
            QueryError::Internal(_) => "INTERNAL",
        }
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
                        code: "SQLITE_ERROR".into(),
                        message: err.to_string(),
                    }
                }
            };
        // `query_only` refuses with plain SQLITE_READONLY; the extended
        // READONLY codes (directory, cannot lock, moved...) are the file's.
        let refused = failure.code == rusqlite::ErrorCode::AuthorizationForStatementDenied
            || (failure.code == rusqlite::ErrorCode::ReadOnly && failure.extended_code == 8)
            // A denied function is reported by SQLite as a plain error.
            || message.starts_with("not authorized");
        if refused {
            QueryError::Denied(format!(
                "{message}: refused by the database's access controls (reads only, one statement, no PRAGMA writes, ATTACH, transactions or extensions)"
            ))
        } else {
            QueryError::Sql {
                code: sqlite_code_name(failure.extended_code),
                message,
            }
        }
    }
}

/// SQLite's symbolic name for a (possibly extended) result code.
pub(crate) fn sqlite_code_name(extended: std::ffi::c_int) -> String {
    // sqlite3_errstr gives prose; the symbolic names are what agents search for.
    let primary = extended & 0xff;
    let name = match primary {
        1 => "SQLITE_ERROR",
        2 => "SQLITE_INTERNAL",
        3 => "SQLITE_PERM",
        4 => "SQLITE_ABORT",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        11 => "SQLITE_CORRUPT",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        21 => "SQLITE_MISUSE",
        23 => "SQLITE_AUTH",
        25 => "SQLITE_RANGE",
        26 => "SQLITE_NOTADB",
        _ => return format!("SQLITE_{extended}"),
    };
    if extended == 2067 {
        "SQLITE_CONSTRAINT_UNIQUE".into()
    } else if extended == 787 {
        "SQLITE_CONSTRAINT_FOREIGNKEY".into()
    } else if extended == 1299 {
        "SQLITE_CONSTRAINT_NOTNULL".into()
    } else if extended == 275 {
        "SQLITE_CONSTRAINT_CHECK".into()
    } else if extended == 1555 {
        "SQLITE_CONSTRAINT_PRIMARYKEY".into()
    } else {
        name.into()
    }
}
