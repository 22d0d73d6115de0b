//! The `query` operation: one read-only statement, its rows capped by count
//! and bytes, with a cursor to continue.
//!
//! Read-only is enforced by SQLite: the connection is at rest
//! (`query_only`, the read-only authorizer), `prepare` refuses a second
//! statement, and a statement SQLite itself does not call read-only
//! (`VACUUM INTO`, a journal-mode change) is refused before it runs.

use rusqlite::types::ValueRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::values::{to_json, ValueLimits};
use super::{cursor, Limits, QueryEngine, QueryError, SqlParams};
use crate::access::Access;
use crate::pool::ManagedConnection;

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

/// A query result: column names once, rows as arrays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueryOutput {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Json>>,
    pub row_count: usize,
    /// More rows exist (or a value was cut); continue with `next_cursor`.
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl QueryEngine {
    /// Runs one read-only statement.
    pub async fn query(
        &self,
        request: QueryRequest,
        cancel: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<QueryOutput, QueryError> {
        let limits = self.limits;
        let policy = self.read_retry;
        let pool = std::sync::Arc::clone(&self.pool);
        self.run(cancel, move |conn, _| {
            Self::retry_read(&pool, policy, || read(conn, &request, limits))
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
    let value_limits = ValueLimits {
        max_blob_bytes: limits.max_blob_bytes,
        max_text_bytes: limits.max_bytes,
    };
    let width = columns.len();
    let mut budget = limits
        .max_bytes
        .saturating_sub(columns.iter().map(|c| c.len() + 3).sum());
    let mut rows_out = Vec::with_capacity(max_rows.min(256));
    let mut value_cut = false;
    let mut rows = stmt.raw_query();
    for _ in 0..offset {
        if rows.next()?.is_none() {
            break;
        }
    }
    let mut more = false;
    'rows: while let Some(row) = rows.next()? {
        if rows_out.len() >= max_rows {
            more = true;
            break;
        }
        let mut values = Vec::with_capacity(width);
        let mut size = 2;
        for i in 0..width {
            // No value may be copied beyond what is left of the byte
            // budget: a row of many multi-megabyte values must not become
            // gigabytes of memory before it is found not to fit.
            let room = budget.saturating_sub(size);
            let limits = ValueLimits {
                max_blob_bytes: value_limits.max_blob_bytes.min(room / 2),
                max_text_bytes: value_limits.max_text_bytes.min(room),
            };
            let (value, bytes, cut) = to_json(row.get_ref(i).unwrap_or(ValueRef::Null), limits);
            let cut_for_room = cut
                && (limits.max_blob_bytes < value_limits.max_blob_bytes
                    || limits.max_text_bytes < value_limits.max_text_bytes);
            if cut_for_room && !rows_out.is_empty() {
                // The row does not fit this page; the next page starts with it.
                more = true;
                break 'rows;
            }
            value_cut |= cut;
            size += bytes + 1;
            values.push(value);
        }
        if size > budget && !rows_out.is_empty() {
            more = true;
            break;
        }
        budget = budget.saturating_sub(size);
        rows_out.push(values);
    }
    let next_cursor = more.then(|| cursor::encode(offset + rows_out.len() as u64, fingerprint));
    Ok(QueryOutput {
        columns,
        row_count: rows_out.len(),
        rows: rows_out,
        truncated: more || value_cut,
        next_cursor,
    })
}
