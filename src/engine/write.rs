//! The `execute` operation: one INSERT, UPDATE, DELETE or DDL statement in
//! its own `BEGIN IMMEDIATE` transaction (SQLite has one writer; taking the
//! lock up front avoids a deadlock on upgrade). Writes are never retried:
//! the agent decides whether to send it again.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::page::{read_page, ExecutePage, PageLimits, PageSink};
use super::transfer::{Op, Output};
use super::{
    unexpected, AlwaysCommit, CommitGate, Limits, QueryEngine, QueryError, Rows, SqlParams,
    WireSize,
};
use crate::policy::Restrictions;
use crate::pool::ManagedConnection;
use crate::sqlite::access::Access;
use crate::sqlite::health::DatabaseHealth;
use std::sync::Arc;

/// Arguments of the `execute` tool.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ExecuteRequest {
    /// One INSERT, UPDATE, DELETE, REPLACE or CREATE/ALTER/DROP statement.
    pub sql: String,
    /// Values for `?` placeholders (a list) or `:name` placeholders (an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<SqlParams>,
    /// The database to run it on (read by the MCP layer, which picks the
    /// engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ExecuteOutput {
    /// Rows inserted, updated or deleted.
    pub changes: u64,
    /// Rowid of the last inserted row on this connection (0 if none).
    pub last_insert_rowid: i64,
    /// Column names of a RETURNING clause.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Rows of a RETURNING clause (capped like query results).
    #[serde(default, skip_serializing_if = "Rows::is_empty")]
    pub rows: Rows,
    /// RETURNING rows were left out, or a value cut, to stay within the caps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl QueryEngine {
    /// Runs one write statement in its own transaction and commits it;
    /// `wire` counts what RETURNING rows will cost in the format that
    /// sends them.
    pub async fn execute(
        &self,
        request: ExecuteRequest,
        wire: &'static dyn WireSize,
        cancel: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<ExecuteOutput, QueryError> {
        self.execute_for(
            &Restrictions::none(),
            request,
            wire,
            cancel,
            Arc::new(AlwaysCommit),
        )
        .await
    }

    /// As [`QueryEngine::execute`], for a caller who may not read what
    /// `restrictions` withhold (nor write a denied table), with `gate`
    /// asked before the write commits.
    pub async fn execute_for(
        &self,
        restrictions: &Arc<Restrictions>,
        request: ExecuteRequest,
        wire: &'static dyn WireSize,
        cancel: Option<&tokio_util::sync::CancellationToken>,
        gate: Arc<dyn CommitGate>,
    ) -> Result<ExecuteOutput, QueryError> {
        // A file already known to be gone: refuse before starting.
        if let Some(fault) = self.pool().health().file_fault() {
            return Err(fault.into());
        }
        let op = Op::Execute {
            request,
            format: wire.name().to_string(),
        };
        match self.call(cancel, restrictions, op, gate).await? {
            Output::Execute(output) => Ok(output),
            other => Err(unexpected(other)),
        }
    }
}

/// Runs an `execute` call in the worker, under the caller's restrictions;
/// `may_commit` asks the server whether the call may still commit; the
/// RETURNING rows go to the sink `sink` makes for rows of a given width.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<S: PageSink>(
    conn: &ManagedConnection,
    restrictions: &Arc<Restrictions>,
    health: &DatabaseHealth,
    request: &ExecuteRequest,
    limits: Limits,
    wire: &dyn WireSize,
    may_commit: &mut dyn FnMut() -> bool,
    sink: impl FnOnce(usize) -> S,
) -> Result<ExecutePage<S>, QueryError> {
    let limits = PageLimits {
        max_rows: limits.max_rows,
        max_bytes: limits.max_bytes,
        max_blob_bytes: limits.max_blob_bytes,
    };
    conn.with_restrictions(restrictions, |conn| {
        conn.with_access(Access::Trusted, |conn| {
            write(conn, may_commit, health, request, limits, wire, sink)
        })
    })?
}

/// A failed write's error: a full disk, a read-only file or directory or an
/// I/O error is recorded in `health` (readiness reports writes as
/// impossible) and named as such; anything else is the statement's error.
fn write_error(health: &DatabaseHealth, err: rusqlite::Error) -> QueryError {
    match (health.classify_write_error(&err), &err) {
        (Some(fault), rusqlite::Error::SqliteFailure(failure, _)) => {
            health.write_failed(fault.clone());
            QueryError::NotWritable {
                code: (*failure).into(),
                message: fault.to_string(),
            }
        }
        _ => err.into(),
    }
}

fn write<S: PageSink>(
    conn: &ManagedConnection,
    may_commit: &mut dyn FnMut() -> bool,
    health: &DatabaseHealth,
    request: &ExecuteRequest,
    limits: PageLimits,
    wire: &dyn WireSize,
    sink: impl FnOnce(usize) -> S,
) -> Result<ExecutePage<S>, QueryError> {
    if request.sql.trim().is_empty() {
        return Err(QueryError::InvalidArgument("`sql` is empty".into()));
    }
    // A file already known to be gone: refuse before taking the lock.
    if let Some(fault) = health.file_fault() {
        return Err(fault.into());
    }
    // Prepare first: a statement that does not compile takes no lock.
    let mut stmt = conn.prepare_untrusted(Access::ReadWrite, &request.sql)?;
    let restrictions = conn.restrictions();
    if restrictions.nulls_columns() {
        // What a write copies in index order could be read back in it.
        super::read::refuse_index_order_leaks(
            conn,
            Access::ReadWrite,
            &request.sql,
            &restrictions,
        )?;
    }
    SqlParams::bind(request.params.as_ref(), &mut stmt)?;
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|err| write_error(health, err))?;
    let outcome = (|| -> Result<ExecutePage<S>, QueryError> {
        let columns: Vec<String> = stmt
            .column_names()
            .into_iter()
            .map(str::to_string)
            .collect();
        // SQLite's change count and last row id belong to the connection
        // and outlive a statement: a `SELECT` or `CREATE` after a `DELETE`
        // would report the delete's count, and a pooled connection would
        // hand one caller's row id to the next. Counted from here instead.
        let changed_before = conn.total_changes();
        // SAFETY: the handle is this open connection's, used on the thread
        // that holds it; setting the row id has no other precondition.
        unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(conn.handle(), 0) };
        // RETURNING rows are capped like query results; the statement
        // still runs to its end.
        let page = {
            let mut rows = stmt.raw_query();
            let page = read_page(&mut rows, &columns, limits, wire, sink(columns.len()))
                .map_err(|err| write_error(health, err))?;
            while rows
                .next()
                .map_err(|err| write_error(health, err))?
                .is_some()
            {}
            page
        };
        Ok(ExecutePage {
            changes: if conn.total_changes() == changed_before {
                0
            } else {
                conn.changes()
            },
            last_insert_rowid: conn.last_insert_rowid(),
            columns: if page.len == 0 { Vec::new() } else { columns },
            rows: page.rows,
            truncated: page.more || page.value_cut,
        })
    })();
    drop(stmt);
    match outcome {
        Ok(_) if !may_commit() => {
            // The caller was told the call timed out: it must not commit.
            let _ = conn.execute_batch("ROLLBACK");
            Err(super::interrupted())
        }
        Ok(output) => {
            // The last moment to notice the file at the path is no longer
            // the one this connection writes to: after COMMIT the write is
            // acknowledged, and it would be in a file nobody can reach.
            if let Err(fault) = health.verify_file() {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(fault.into());
            }
            if let Err(err) = conn.execute_batch("COMMIT") {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(write_error(health, err));
            }
            health.write_succeeded();
            Ok(output)
        }
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}
