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

use super::page::{read_page, PageLimits, PageSink, QueryPage};
use super::transfer::{Op, Output};
use super::{
    cursor, unexpected, AlwaysCommit, Limits, QueryEngine, QueryError, Rows, SqlParams, WireSize,
};
use crate::policy::Restrictions;
use crate::pool::ManagedConnection;
use crate::sqlite::access::Access;
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
    #[schemars(range(min = 1))]
    pub max_rows: Option<u32>,
    /// `next_cursor` from a previous truncated result of the same query, to continue it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The database to run it on (read by the MCP layer, which picks the
    /// engine; the engine itself serves one database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// A query result: column names once, rows of typed cells.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct QueryOutput {
    pub columns: Vec<String>,
    pub rows: Rows,
    pub row_count: usize,
    /// More rows exist (or a value was cut); continue with `next_cursor`.
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The bytes each cell of `rows` takes in the row format that counted
    /// them, row after row, so its encoder need not measure again; empty
    /// when nobody counted.
    #[serde(skip)]
    #[schemars(skip)]
    pub cell_bytes: Vec<usize>,
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
        // Zero would answer no rows and a cursor that never moves on.
        if request.max_rows == Some(0) {
            return Err(QueryError::InvalidArgument(
                "`max_rows` must be at least 1".into(),
            ));
        }
        let op = Op::Query {
            request,
            format: wire.name().to_string(),
        };
        match self
            .call(cancel, restrictions, op, Arc::new(AlwaysCommit))
            .await?
        {
            Output::Query(output) => Ok(output),
            other => Err(unexpected(other)),
        }
    }
}

/// Runs a `query` call in the worker: the statement under the caller's
/// restrictions, a busy read retried (`on_retry` counts each retry), its
/// rows into a sink `sink` makes for rows of a given width.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<S: PageSink>(
    conn: &ManagedConnection,
    restrictions: &Arc<Restrictions>,
    request: &QueryRequest,
    limits: Limits,
    policy: crate::retry::RetryPolicy,
    wire: &dyn WireSize,
    on_retry: impl FnMut(),
    mut sink: impl FnMut(usize) -> S,
) -> Result<QueryPage<S>, QueryError> {
    conn.with_restrictions(restrictions, |conn| {
        QueryEngine::retry_read(policy, on_retry, || {
            read(conn, request, limits, wire, &mut sink)
        })
    })
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

/// Under nulled columns, refuses a statement whose plan walks an index
/// holding one of them (or an expression, which may be of one): rows come
/// out of an index in its order, so the order of the answer, and which
/// rows a LIMIT keeps, would show the values the caller reads as NULL.
/// (Full scans through a covering index are off under restrictions, see
/// [`crate::sqlite::access::set_covering_index_scans`]; this catches searches, such
/// as `WHERE status = ?` on an index of `(status, email)`, and the scans
/// that remain, such as `count(*)` over the smallest index: refused too,
/// with the way around it, `NOT INDEXED`.)
pub(crate) fn refuse_index_order_leaks(
    conn: &ManagedConnection,
    access: Access,
    sql: &str,
    restrictions: &Restrictions,
) -> Result<(), QueryError> {
    let mut plan = conn.prepare_untrusted(access, &format!("EXPLAIN QUERY PLAN {sql}"))?;
    let details = plan
        .query_map([], |row| row.get::<_, String>(3))?
        .collect::<Result<Vec<_>, _>>()?;
    for detail in &details {
        let Some(index) = index_in_plan(detail) else {
            continue;
        };
        if let Some(column) = nulled_column_in_index(conn, index, restrictions)? {
            return Err(QueryError::Denied(format!(
                "this query walks the index {index}, whose order follows {column}, which this \
                 caller reads as NULL: the order of the rows would show it. Write the table as \
                 `table NOT INDEXED`, or filter and sort on other columns"
            )));
        }
    }
    Ok(())
}

/// The index a line of `EXPLAIN QUERY PLAN` walks (`SEARCH t USING INDEX i
/// (a=?)`, `... USING COVERING INDEX i ...`); automatic indexes are built
/// from the values as read, nulls included, and name none.
fn index_in_plan(detail: &str) -> Option<&str> {
    let (_, rest) = detail
        .split_once("USING COVERING INDEX ")
        .or_else(|| detail.split_once("USING INDEX "))?;
    rest.split([' ', '('])
        .next()
        .filter(|name| !name.is_empty())
}

/// The nulled column `index` orders by, if any (`"an expression"` for an
/// expression on a table with a nulled column).
fn nulled_column_in_index(
    conn: &ManagedConnection,
    index: &str,
    restrictions: &Restrictions,
) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    let table: Option<String> = conn
        .prepare_cached("SELECT tbl_name FROM sqlite_schema WHERE type = 'index' AND name = ?1")?
        .query_row([index], |row| row.get(0))
        .optional()?;
    let Some(table) = table else {
        return Ok(None);
    };
    let mut columns =
        conn.prepare_cached("SELECT cid, name FROM pragma_index_xinfo(?1) WHERE key = 1")?;
    let columns = columns
        .query_map([index], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (cid, name) in columns {
        match name {
            Some(name) if restrictions.nulls_column(&table, &name) => return Ok(Some(name)),
            None if cid == -2 && restrictions.nulls_a_column_of(&table) => {
                return Ok(Some("an expression".into()))
            }
            _ => {}
        }
    }
    Ok(None)
}

fn read<S: PageSink>(
    conn: &ManagedConnection,
    request: &QueryRequest,
    limits: Limits,
    wire: &dyn WireSize,
    sink: &mut impl FnMut(usize) -> S,
) -> Result<QueryPage<S>, QueryError> {
    let mut stmt = prepare_read(conn, &request.sql)?;
    let restrictions = conn.restrictions();
    if restrictions.nulls_columns() && stmt.is_explain() == 0 {
        refuse_index_order_leaks(conn, Access::ReadOnly, &request.sql, &restrictions)?;
    }
    SqlParams::bind(request.params.as_ref(), &mut stmt)?;
    let fingerprint = cursor::fingerprint(&request.sql, request.params.as_ref());
    let offset = match &request.cursor {
        Some(token) => cursor::decode(token, fingerprint)?,
        None => 0,
    };
    let max_rows = request
        .max_rows
        .map_or(limits.max_rows, |n| (n as usize).min(limits.max_rows));
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
    let page = read_page(&mut rows, &columns, page_limits, wire, sink(columns.len()))?;
    let next_cursor = page
        .more
        .then(|| cursor::encode(offset + page.len as u64, fingerprint));
    Ok(QueryPage {
        columns,
        row_count: page.len,
        rows: page.rows,
        truncated: page.more || page.value_cut,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::index_in_plan;

    #[test]
    fn the_index_a_plan_line_walks_is_read_from_it() {
        assert_eq!(
            index_in_plan("SEARCH creators USING INDEX creators_status_email (status=?)"),
            Some("creators_status_email")
        );
        assert_eq!(
            index_in_plan("SCAN creators USING COVERING INDEX sqlite_autoindex_creators_1"),
            Some("sqlite_autoindex_creators_1")
        );
        assert_eq!(index_in_plan("SCAN creators"), None);
        assert_eq!(
            index_in_plan("SEARCH creators USING INTEGER PRIMARY KEY (rowid=?)"),
            None
        );
        assert_eq!(
            index_in_plan("SEARCH t USING AUTOMATIC COVERING INDEX (a=?)"),
            None
        );
    }
}
