//! The query engine: runs agent SQL and schema questions on pooled
//! connections, off the async workers, with a deadline, cancellation,
//! result caps and retries of transient read failures.
//!
//! Each operation lives in its own file: [`read`] for `query`, [`schema`]
//! for tables, DDL and query plans, [`write`] for `execute`. This file owns
//! how a piece of blocking work is run.

mod cursor;
mod error;
mod read;
mod schema;
mod values;
mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use error::{Outcome, QueryError};
pub use read::{QueryOutput, QueryRequest};
pub use schema::{
    ColumnInfo, ExplainOutput, ForeignKeyInfo, IndexInfo, PlanStep, TableDescription, TableDetail,
    TableList, TableSummary,
};
pub use values::{SqlParam, SqlParams};
pub use write::{ExecuteOutput, ExecuteRequest};

use crate::config::DatabaseConfig;
use crate::pool::{ManagedConnection, Pool};
use crate::retry::RetryPolicy;

/// SQLite virtual-machine steps between two checks of the deadline and
/// the cancellation flag: frequent enough to stop within a millisecond,
/// rare enough to cost nothing measurable.
const PROGRESS_STEPS: i32 = 4000;

/// How long a read may run on the calling (async) thread before it is
/// interrupted and handed to a blocking thread instead. See
/// [`QueryEngine::try_inline`].
const INLINE_BUDGET: Duration = Duration::from_micros(500);

/// VM steps between budget checks on the inline path.
const INLINE_PROGRESS_STEPS: i32 = 200;

/// Caps on what one call may cost and return.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub query_timeout: Duration,
    pub max_blob_bytes: usize,
}

impl Limits {
    pub fn from_config(config: &DatabaseConfig) -> Self {
        let max_bytes = usize::try_from(config.max_bytes).unwrap_or(usize::MAX);
        Self {
            max_rows: config.max_rows as usize,
            max_bytes,
            query_timeout: config.query_timeout,
            max_blob_bytes: max_bytes.min(64 * 1024),
        }
    }
}

/// Runs SQL for the tools.
pub struct QueryEngine {
    pool: Arc<Pool>,
    limits: Limits,
    read_retry: RetryPolicy,
}

impl QueryEngine {
    pub fn new(pool: Arc<Pool>) -> Self {
        let config = pool.config();
        let limits = Limits::from_config(config);
        let read_retry = RetryPolicy {
            max_retries: config.max_retries,
            first_delay: config.retry_delay,
        };
        Self {
            pool,
            limits,
            read_retry,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs `work` on a pooled connection on a blocking thread. The
    /// statement is interrupted (not merely abandoned) when the query
    /// timeout passes or `cancel` fires; the connection then goes back to
    /// the pool healthy.
    pub async fn run<T, F>(
        &self,
        cancel: Option<&CancellationToken>,
        work: F,
    ) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(&ManagedConnection) -> Result<T, QueryError> + Send + 'static,
    {
        let pool = Arc::clone(&self.pool);
        let timeout = self.limits.query_timeout;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let mut job = tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            if stop_flag.load(Ordering::Relaxed) {
                return Err(QueryError::Cancelled);
            }
            let deadline = Instant::now() + timeout;
            let flag = Arc::clone(&stop_flag);
            conn.progress_handler(
                PROGRESS_STEPS,
                Some(move || flag.load(Ordering::Relaxed) || Instant::now() >= deadline),
            )?;
            let result = work(&conn);
            conn.progress_handler(0, None::<fn() -> bool>)?;
            result
        });
        let joined = match cancel {
            Some(cancel) => tokio::select! {
                joined = &mut job => joined,
                _ = cancel.cancelled() => {
                    stop.store(true, Ordering::Relaxed);
                    // The flag makes SQLite stop within a few thousand steps;
                    // wait so the connection is back in the pool on return.
                    job.await
                }
            },
            None => job.await,
        };
        let result =
            joined.map_err(|err| QueryError::Internal(format!("query task failed: {err}")))?;
        result.map_err(|err| match err {
            QueryError::Sql { ref code, .. } if code == "SQLITE_INTERRUPT" => {
                if stop.load(Ordering::Relaxed) {
                    QueryError::Cancelled
                } else {
                    QueryError::Timeout(timeout)
                }
            }
            other => other,
        })
    }

    /// The fast path for reads: most agent reads (a lookup by key, a small
    /// page) finish in microseconds, less than the two thread hand-offs a
    /// blocking thread costs. So a read first runs right here, under strict
    /// limits that keep the async thread from ever waiting: only an idle
    /// connection is taken (never a wait for one), SQLite's busy wait is off,
    /// and the statement is interrupted after [`INLINE_BUDGET`]. A read that
    /// needs more (no idle connection, a lock, a longer scan) returns `None`
    /// and is run again, from the start, on a blocking thread; reads have no
    /// side effects, so running one twice is safe. Writes never come here.
    pub(crate) fn try_inline<T>(
        &self,
        work: impl FnOnce(&ManagedConnection) -> Result<T, QueryError>,
    ) -> Option<Result<T, QueryError>> {
        let conn = self.pool.try_get()?;
        let deadline = Instant::now() + INLINE_BUDGET;
        let over_budget = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&over_budget);
        let handler = move || {
            let over = Instant::now() >= deadline;
            if over {
                flag.store(true, Ordering::Relaxed);
            }
            over
        };
        if conn
            .progress_handler(INLINE_PROGRESS_STEPS, Some(handler))
            .is_err()
            || conn.busy_timeout(Duration::ZERO).is_err()
        {
            return None;
        }
        let result = work(&conn);
        let restored = conn.progress_handler(0, None::<fn() -> bool>).is_ok()
            && conn.busy_timeout(self.pool.config().busy_timeout).is_ok();
        if !restored {
            return Some(Err(QueryError::Internal(
                "could not reset a connection after a read".into(),
            )));
        }
        match result {
            Err(QueryError::Sql { ref code, .. })
                if (code == "SQLITE_INTERRUPT" && over_budget.load(Ordering::Relaxed))
                    || code == "SQLITE_BUSY"
                    || code == "SQLITE_LOCKED" =>
            {
                None
            }
            other => Some(other),
        }
    }

    /// Retries `attempt` while SQLite reports the database busy (reads only).
    fn retry_read<T>(
        pool: &Pool,
        policy: RetryPolicy,
        mut attempt: impl FnMut() -> Result<T, QueryError>,
    ) -> Result<T, QueryError> {
        policy
            .run(
                |err: &QueryError| matches!(err, QueryError::Sql { code, .. } if code == "SQLITE_BUSY" || code == "SQLITE_LOCKED"),
                |_| pool.record_retry(),
                &mut attempt,
            )
            .map_err(|exhausted| match exhausted.last {
                QueryError::Sql { ref code, .. } if code == "SQLITE_BUSY" || code == "SQLITE_LOCKED" => {
                    QueryError::Busy {
                        retries: exhausted.retries,
                    }
                }
                other => other,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::NoObserver;

    fn busy() -> QueryError {
        QueryError::Sql {
            code: "SQLITE_BUSY".into(),
            message: "database is locked".into(),
        }
    }

    fn pool() -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().unwrap();
        let config = DatabaseConfig {
            path: dir.path().join("t.db"),
            ..DatabaseConfig::default()
        };
        let pool = Pool::new(&config, Arc::new(NoObserver)).unwrap();
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
        let result = QueryEngine::retry_read(&pool, POLICY, || {
            attempts += 1;
            if attempts < 3 {
                Err(busy())
            } else {
                Ok(attempts)
            }
        });
        assert_eq!(result.unwrap(), 3);
        assert_eq!(pool.stats().retries, 2);
    }

    #[test]
    fn a_read_still_busy_after_its_retries_is_reported_as_busy() {
        let (_dir, pool) = pool();
        let err = QueryEngine::retry_read(&pool, POLICY, || Err::<(), _>(busy())).unwrap_err();
        assert!(matches!(err, QueryError::Busy { retries: 2 }), "{err:?}");
        assert!(err.is_retryable());
    }

    #[test]
    fn other_read_errors_are_not_retried() {
        let (_dir, pool) = pool();
        let err = QueryEngine::retry_read(&pool, POLICY, || {
            Err::<(), _>(QueryError::Denied("no".into()))
        })
        .unwrap_err();
        assert!(matches!(err, QueryError::Denied(_)));
        assert_eq!(pool.stats().retries, 0);
    }
}
