//! The query engine: runs agent SQL and schema questions on pooled
//! connections, off the async workers, with a deadline, cancellation,
//! result caps and retries of transient read failures.
//!
//! Each operation lives in its own file: [`read`] for `query`, [`schema`]
//! for tables, DDL and query plans, [`write`] for `execute`. This file owns
//! how a call is run: its deadline and cancellation here, its exchange with
//! the worker in `exchange` (on a task when a read finds a connection idle,
//! else on a statement thread, [`threads`]).

mod cell;
mod commit_gate;
mod cursor;
mod deadlines;
pub mod dictionary;
mod error;
mod exchange;
pub mod host;
mod page;
mod read;
mod rows;
mod schema;
pub mod threads;
mod transfer;
mod values;
pub mod watch;
mod wire_size;
mod write;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::ErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use cell::{Cell, CellRef, Text};
pub use commit_gate::{AlwaysCommit, CommitGate};
pub use cursor::TOKEN_LEN as CURSOR_LEN;
pub use error::{Outcome, QueryError, SqliteCode};
pub use read::{QueryOutput, QueryRequest};
pub use rows::Rows;
pub use schema::{
    ColumnInfo, ExplainOutput, ForeignKeyInfo, IndexInfo, PlanStep, TableDescription, TableDetail,
    TableList, TableSummary,
};
pub use values::{SqlParam, SqlParams};
pub use watch::Watch;
pub use wire_size::WireSize;
pub use write::{ExecuteOutput, ExecuteRequest};

use crate::policy::Restrictions;
use crate::pool::Pool;
use crate::retry::RetryPolicy;

/// SQLite virtual-machine steps between two looks at the stop flag (the
/// interrupt lands sooner; this catches a stop that arrived between two
/// statements of one call, which SQLite's interrupt would miss).
pub(crate) const PROGRESS_STEPS: i32 = 1000;

/// The target of the spans traces export (see [`crate::telemetry`]).
const TRACE: &str = crate::telemetry::TARGET;

/// How often a stopped call is interrupted again while it has not returned.
const REINTERRUPT_EVERY: Duration = Duration::from_millis(5);

/// Caps on what one call may cost and return.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub query_timeout: Duration,
    pub max_blob_bytes: usize,
    /// For error messages: the value and memory ceilings SQLite enforces.
    pub max_value_bytes: u64,
    pub hard_heap_limit_bytes: u64,
    pub max_sql_bytes: u32,
}

/// What the engine is built with, from the configuration at the edge.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    pub limits: Limits,
    /// How a read that met `SQLITE_BUSY` is retried.
    pub read_retry: RetryPolicy,
    /// Only reads are served; `execute` is not offered.
    pub read_only: bool,
}

impl Limits {
    /// How long past its deadline a call waits for SQLite to stop before
    /// it is answered anyway: a tenth of the timeout, at least 50 ms so a
    /// short timeout on a busy machine still lets an interrupted statement
    /// return (and its connection with it) rather than be abandoned.
    pub fn stop_slack(&self) -> Duration {
        (self.query_timeout / 10).max(Duration::from_millis(50))
    }
}

/// Runs SQL for the tools.
pub struct QueryEngine {
    pool: Arc<Pool>,
    limits: Limits,
    read_retry: RetryPolicy,
    read_only: bool,
    overrunning: Arc<AtomicUsize>,
    abandoned: AtomicU64,
    killed: AtomicU64,
    /// Numbers each call, so a late stop signal cannot stop the next one.
    calls: AtomicU64,
    threads: threads::SqlThreads,
    deadlines: deadlines::Deadlines,
}

/// Statement threads per connection the pool may hand out: calls beyond
/// that many would wait past the checkout timeout anyway, so they are
/// refused at once instead of queued.
const THREADS_PER_CONNECTION: usize = 4;

/// Why the async side stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Deadline,
    Cancelled,
}

impl QueryEngine {
    pub fn new(pool: Arc<Pool>, settings: EngineSettings) -> Self {
        let max_threads = THREADS_PER_CONNECTION * pool.max_connections() as usize;
        Self {
            pool,
            limits: settings.limits,
            read_retry: settings.read_retry,
            read_only: settings.read_only,
            threads: threads::SqlThreads::new(max_threads),
            overrunning: Arc::new(AtomicUsize::new(0)),
            abandoned: AtomicU64::new(0),
            killed: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            deadlines: deadlines::Deadlines::new(),
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether only reads are served.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Statements whose caller was answered at the deadline while SQLite
    /// was still inside one long step, whose worker is being killed; each
    /// holds a connection for the moments until the kill lands.
    pub fn overrunning(&self) -> usize {
        self.overrunning.load(Ordering::Relaxed)
    }

    /// Statements abandoned at their deadline since startup.
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Statements whose worker process was killed because SQLite did not
    /// return within the grace after their deadline, since startup.
    pub fn killed(&self) -> u64 {
        self.killed.load(Ordering::Relaxed)
    }

    /// Statement threads alive now (each waits on one call).
    pub fn threads(&self) -> usize {
        self.threads.threads()
    }

    /// Runs `op` on a pooled connection (a worker process, see
    /// [`crate::pool::worker`]), waited for on a statement thread
    /// ([`threads`]), never on an async worker. The whole call, from
    /// waiting for a connection to the last row, has `query_timeout`; at
    /// the deadline (or when `cancel` fires) the statement is interrupted
    /// inside SQLite, and if SQLite does not return within
    /// [`Limits::stop_slack`] the worker is killed and the caller answered
    /// (see [`watch`]): its connection, locks, memory and CPU come back at
    /// once.
    pub(crate) async fn call(
        &self,
        cancel: Option<&CancellationToken>,
        restrictions: &Arc<Restrictions>,
        op: transfer::Op,
        gate: Arc<dyn CommitGate>,
    ) -> Result<transfer::Output, QueryError> {
        // Kept by the engine's deadline thread, not a Tokio timer per call
        // (see [`deadlines`]).
        let armed = self.deadlines.arm(self.limits.query_timeout);
        let watch = Arc::new(Watch::default());
        let seq = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let op_kind = match &op {
            transfer::Op::Execute { .. } => OpKind::Write,
            _ => OpKind::Read,
        };
        let frame = transfer::call_frame(&transfer::Call {
            seq,
            limits: self.limits,
            read_retry: self.read_retry,
            restrictions: transfer::restrictions_for_call(restrictions),
            op,
        });
        // A read that finds a connection idle runs on a task of its own
        // (no statement thread to wake); anything else waits on a thread.
        // A replica admits the call before the checkout, as on a thread;
        // a refusal is reported by the thread path.
        let idle = match &op_kind {
            OpKind::Read => match self.pool.health().admit() {
                Ok(admitted) => self.pool.try_checkout().map(|conn| (admitted, conn)),
                Err(_) => None,
            },
            OpKind::Write => None,
        };
        let mut job = match idle {
            Some((admitted, conn)) => {
                // The checkout, which took no wait: in traces as on a thread.
                drop(tracing::info_span!(target: TRACE, "pool.checkout").entered());
                let (tx, rx) = tokio::sync::oneshot::channel();
                let pool = Arc::clone(&self.pool);
                let watch = Arc::clone(&watch);
                let overrunning = Arc::clone(&self.overrunning);
                let execute = tracing::info_span!(target: TRACE, "sqlite.execute");
                // Spawned, so that the exchange ends in step with the worker
                // even if this call's future is dropped.
                tokio::spawn(
                    async move {
                        let result =
                            exchange::on_task(&pool, &watch, seq, frame, &*gate, admitted, conn)
                                .await;
                        if watch.finish() {
                            overrunning.fetch_sub(1, Ordering::Relaxed);
                        }
                        let _ = tx.send(result);
                    }
                    .instrument(execute),
                );
                rx
            }
            None => self
                .threads
                .spawn({
                    let pool = Arc::clone(&self.pool);
                    let watch = Arc::clone(&watch);
                    let overrunning = Arc::clone(&self.overrunning);
                    let deadline = armed.deadline();
                    // The call's span (traces on): the checkout and the
                    // statement become its children on this other thread.
                    let span = tracing::Span::current();
                    move || {
                        let result =
                            exchange::on_thread(&pool, &watch, deadline, seq, frame, &*gate, &span);
                        if watch.finish() {
                            overrunning.fetch_sub(1, Ordering::Relaxed);
                        }
                        result
                    }
                })
                .map_err(|full| QueryError::Overloaded {
                    waiting: full.threads,
                })?,
        };
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        let reason = tokio::select! {
            joined = &mut job => return self.finish(joined, None),
            _ = armed.passed() => StopReason::Deadline,
            _ = cancel.cancelled() => StopReason::Cancelled,
        };
        watch.stop();
        let give_up = tokio::time::Instant::now() + self.limits.stop_slack();
        loop {
            tokio::select! {
                joined = &mut job => return self.finish(joined, Some(reason)),
                _ = tokio::time::sleep(REINTERRUPT_EVERY) => {
                    if tokio::time::Instant::now() >= give_up {
                        if let Some(killed) = watch.abandon() {
                            self.overrunning.fetch_add(1, Ordering::Relaxed);
                            self.abandoned.fetch_add(1, Ordering::Relaxed);
                            if killed {
                                self.killed.fetch_add(1, Ordering::Relaxed);
                            }
                            tracing::warn!(
                                ?reason,
                                killed,
                                "a statement did not stop within {:?} of being interrupted; \
                                 its worker process was killed, which gives back its \
                                 connection, locks, memory and CPU",
                                self.limits.stop_slack()
                            );
                            return Err(self.stopped_error(reason));
                        }
                    }
                    watch.stop();
                }
            }
        }
    }

    fn stopped_error(&self, reason: StopReason) -> QueryError {
        match reason {
            StopReason::Deadline => QueryError::Timeout(self.limits.query_timeout),
            StopReason::Cancelled => QueryError::Cancelled,
        }
    }

    /// The call's answer: an interrupt becomes a timeout or a cancellation,
    /// and a resource limit names the setting that raises it.
    fn finish<T>(
        &self,
        joined: Result<Result<T, QueryError>, tokio::sync::oneshot::error::RecvError>,
        stopped: Option<StopReason>,
    ) -> Result<T, QueryError> {
        let result =
            joined.map_err(|_| QueryError::Internal("the statement's thread panicked".into()))?;
        if let Err(QueryError::Sql { code, message }) = &result {
            if matches!(
                code.kind,
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase
            ) {
                self.pool.health().record_corruption(message);
            }
        }
        result.map_err(|err| match err {
            QueryError::Sql { code, .. } if code.kind == ErrorCode::OperationInterrupted => {
                self.stopped_error(stopped.unwrap_or(StopReason::Deadline))
            }
            QueryError::Sql { code, ref message }
                if code.kind == ErrorCode::TooBig && message.contains("statement too long") =>
            {
                QueryError::Limit {
                    code,
                    message: format!(
                        "the SQL text is longer than {} bytes, the most this server accepts \
                         (EROS_DB_MAX_SQL_BYTES); pass values as params instead of writing them \
                         into the SQL",
                        self.limits.max_sql_bytes
                    ),
                }
            }
            QueryError::Sql { code, .. } if code.kind == ErrorCode::TooBig => QueryError::Limit {
                code,
                message: format!(
                    "a string or BLOB would exceed {} bytes, the largest value this server \
                     allows (EROS_DB_MAX_VALUE_BYTES)",
                    self.limits.max_value_bytes
                ),
            },
            QueryError::Sql { code, .. } if code.kind == ErrorCode::OutOfMemory => {
                QueryError::Limit {
                    code,
                    message: format!(
                        "the statement needed more memory than the server's {} MiB SQLite heap \
                     ceiling allows (EROS_DB_HARD_HEAP_LIMIT_MIB); it counts sorts, DISTINCT, \
                     GROUP BY and temporary tables, and is shared by all running calls",
                        self.limits.hard_heap_limit_bytes / (1024 * 1024)
                    ),
                }
            }
            other => other,
        })
    }

    /// Retries `attempt` while SQLite reports the database busy (reads
    /// only), calling `on_retry` before each retry.
    fn retry_read<T>(
        policy: RetryPolicy,
        mut on_retry: impl FnMut(),
        mut attempt: impl FnMut() -> Result<T, QueryError>,
    ) -> Result<T, QueryError> {
        policy
            .run(
                |err: &QueryError| matches!(err, QueryError::Sql { code, .. } if is_lock_conflict(code)),
                |_| on_retry(),
                &mut attempt,
            )
            .map_err(|exhausted| match exhausted.last {
                QueryError::Sql { code, .. } if is_lock_conflict(&code) => {
                    QueryError::Busy {
                        retries: exhausted.retries,
                    }
                }
                other => other,
            })
    }
}

/// Whether a call may commit (and so asks the commit gate, which may block).
enum OpKind {
    Read,
    Write,
}

/// A worker answered a call with another call's kind of output.
fn unexpected(output: transfer::Output) -> QueryError {
    QueryError::Internal(format!(
        "a worker answered with the wrong output: {output:?}"
    ))
}

/// What a statement stopped by the watch reports, before [`QueryEngine::run`]
/// turns it into a timeout or a cancellation.
pub(crate) fn interrupted() -> QueryError {
    QueryError::Sql {
        code: SqliteCode::new(rusqlite::ffi::SQLITE_INTERRUPT),
        message: "interrupted".into(),
    }
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED`: another connection holds a lock, and
/// the same read may succeed in a moment.
fn is_lock_conflict(code: &SqliteCode) -> bool {
    matches!(
        code.kind,
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::NoObserver;

    fn busy() -> QueryError {
        QueryError::Sql {
            code: SqliteCode::new(rusqlite::ffi::SQLITE_BUSY),
            message: "database is locked".into(),
        }
    }

    fn pool() -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::DatabaseConfig {
            path: dir.path().join("t.db"),
            ..Default::default()
        };
        let pool = Pool::new(
            &config.pool_settings(),
            config.connection_options(),
            Arc::new(NoObserver),
        )
        .unwrap();
        (dir, pool)
    }

    const POLICY: RetryPolicy = RetryPolicy {
        max_retries: 2,
        first_delay: Duration::from_millis(1),
    };

    #[test]
    fn a_busy_read_is_retried_and_counted() {
        let (_dir, pool) = pool();
        let mut attempts = 0;
        let result = QueryEngine::retry_read(
            POLICY,
            || pool.record_retry(),
            || {
                attempts += 1;
                if attempts < 3 {
                    Err(busy())
                } else {
                    Ok(attempts)
                }
            },
        );
        assert_eq!(result.unwrap(), 3);
        assert_eq!(pool.stats().retries, 2);
    }

    #[test]
    fn a_read_still_busy_after_its_retries_is_reported_as_busy() {
        let (_dir, pool) = pool();
        let err = QueryEngine::retry_read(POLICY, || pool.record_retry(), || Err::<(), _>(busy()))
            .unwrap_err();
        assert!(matches!(err, QueryError::Busy { retries: 2 }), "{err:?}");
        assert!(err.is_retryable());
    }

    #[test]
    fn other_read_errors_are_not_retried() {
        let (_dir, pool) = pool();
        let err = QueryEngine::retry_read(
            POLICY,
            || pool.record_retry(),
            || Err::<(), _>(QueryError::Denied("no".into())),
        )
        .unwrap_err();
        assert!(matches!(err, QueryError::Denied(_)));
        assert_eq!(pool.stats().retries, 0);
    }
}
