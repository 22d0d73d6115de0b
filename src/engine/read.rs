//! The `query` operation: one read-only statement, its rows capped by count
//! and by the bytes they take on the wire ([`page`](super::page)), with a
//! cursor to continue.
//!
//! Read-only is enforced by SQLite: the connection is at rest
//! (`query_only`, the read-only authorizer), `prepare` refuses a second
//! statement, and a statement SQLite itself does not call read-only
//! (`VACUUM INTO`, a journal-mode change) is refused before it runs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::page::{read_page, PageLimits};
use super::{cursor, Cell, Limits, QueryEngine, QueryError, SqlParams, WireSize};
use crate::access::Access;
use crate::policy::Restrictions;
use crate::pool::ManagedConnection;
use std::sync::Arc;

/// Arguments of the `query` tool.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct QueryRequest {
    /// One read-only SQL statement (SELECT, WITH ... SELECT, read-only PRAGMA, EXPLAIN).
    pub sql: String,
    /// Values for `?` placeholders (a list) or `:name` placeholders (an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<SqlParams>,
    /// Most rows to return (capped by the server's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u32>,
    /// `next_cursor` from a previous truncated result of the same query, to continue it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A query result: column names once, rows of typed cells.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct QueryOutput {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    pub row_count: usize,
    /// More rows exist (or a value was cut); continue with `next_cursor`.
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl QueryEngine {
    /// Runs one read-only statement with no restriction (the local user);
    /// `wire` counts what its rows will cost in the row format that sends
    /// them.
    pub async fn query(
        &self,
        request: QueryRequest,
        wire: &'static dyn WireSize,
        cancel: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<QueryOutput, QueryError> {
        self.query_for(&Restrictions::none(), request, wire, cancel)
            .await
    }

    /// As [`QueryEngine::query`], for a caller who may not read what
    /// `restrictions` withhold.
    pub async fn query_for(
        &self,
        restrictions: &Arc<Restrictions>,
        request: QueryRequest,
        wire: &'static dyn WireSize,
        cancel: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<QueryOutput, QueryError> {
        let limits = self.limits;
        let policy = self.read_retry;
        let pool = Arc::clone(&self.pool);
        let restrictions = Arc::clone(restrictions);
        self.run(cancel, move |conn, _| {
            conn.with_restrictions(&restrictions, |conn| {
                Self::retry_read(&pool, policy, || read(conn, &request, limits, wire))
            })
        })
        .await
    }
}

/// Prepares `sql` as untrusted read-only SQL, refusing anything SQLite
/// does not consider read-only.
pub(crate) fn prepare_read<'c>(
    conn: &'c ManagedConnection,
    sql: &str,
) -> Result<rusqlite::Statement<'c>, QueryError> {
    if sql.trim().is_empty() {
        return Err(QueryError::InvalidArgument("`sql` is empty".into()));
    }
    let stmt = conn.prepare_untrusted(Access::ReadOnly, sql)?;
    if !stmt.readonly() {
        return Err(QueryError::Denied(
            "this statement would change the database; this tool may only read".into(),
        ));
    }
    if stmt.column_count() == 0 {
        return Err(QueryError::InvalidArgument(
            "the SQL holds no statement that returns rows".into(),
        ));
    }
    Ok(stmt)
}

fn read(
    conn: &ManagedConnection,
    request: &QueryRequest,
    limits: Limits,
    wire: &dyn WireSize,
) -> Result<QueryOutput, QueryError> {
    let mut stmt = prepare_read(conn, &request.sql)?;
    SqlParams::bind(request.params.as_ref(), &mut stmt)?;
    let fingerprint = cursor::fingerprint(&request.sql, request.params.as_ref());
    let offset = match &request.cursor {
        Some(token) => cursor::decode(token, fingerprint)?,
        None => 0,
    };
    let max_rows = request
        .max_rows
        .map_or(limits.max_rows, |n| (n as usize).clamp(1, limits.max_rows));
    let columns: Vec<String> = stmt
        .column_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut rows = stmt.raw_query();
    for _ in 0..offset {
        if rows.next()?.is_none() {
            break;
        }
    }
    let page_limits = PageLimits {
        max_rows,
        max_bytes: limits.max_bytes,
        max_blob_bytes: limits.max_blob_bytes,
    };
    let page = read_page(&mut rows, &columns, page_limits, wire)?;
    let next_cursor = page
        .more
        .then(|| cursor::encode(offset + page.rows.len() as u64, fingerprint));
    Ok(QueryOutput {
        columns,
        row_count: page.rows.len(),
        rows: page.rows,
        truncated: page.more || page.value_cut,
        next_cursor,
    })
}
