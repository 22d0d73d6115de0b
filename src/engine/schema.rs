//! Schema questions: which tables exist, what one table looks like, the
//! database's DDL, and a statement's query plan. Names are always bound as
//! parameters, never pasted into SQL.
//!
//! Every schema view reads `sqlite_schema` through [`VISIBLE`], the one
//! filter that keeps replication's tables
//! ([`crate::sqlite::access::HIDDEN_TABLES`]) and their indexes and triggers
//! out of what agents see.
//!
//! A caller's [`Restrictions`] (the policy file) filter these answers here,
//! in Rust: a denied table, with its indexes and triggers, is left out of
//! every list and DDL and described as if it did not exist. The schema
//! statements themselves are the server's own, cached, and never prepared
//! under restrictions (the authorizer's verdicts are fixed at prepare time,
//! so a cached statement must not carry one caller's into another's call).
//! `explain` runs agent SQL, so it runs under them.

use std::sync::LazyLock;

use rusqlite::OptionalExtension;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::read::prepare_read;
use super::transfer::{Op, Output};
use super::{unexpected, AlwaysCommit, QueryEngine, QueryError, SqlParams};
use crate::policy::Restrictions;
use crate::pool::ManagedConnection;

/// How much `list_tables` says about each table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TableDetail {
    /// Name, kind and row count only.
    #[default]
    Names,
    /// Also each column as `name TYPE` with flags.
    Columns,
    /// Also the full CREATE statement.
    Ddl,
}

/// Most entries one `list_tables` answer carries.
const MAX_LISTED: usize = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TableList {
    pub tables: Vec<TableSummary>,
    /// More tables matched than were listed; narrow `pattern` or `column`.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TableSummary {
    pub name: String,
    /// `table` or `view`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What the operator says it holds (the data dictionary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Exact row count (tables only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// `name TYPE [PK] [NOT NULL]` per column, with `detail` = columns or ddl;
    /// only the matching columns when `list_tables` searched by column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ddl: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TableDescription {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// What the operator says it holds (the data dictionary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub columns: Vec<ColumnInfo>,
    pub foreign_keys: Vec<ForeignKeyInfo>,
    pub indexes: Vec<IndexInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub declared_type: String,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Position in the primary key (1-based); absent when not part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<i64>,
    /// What the operator says it means, and its unit (the data dictionary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ForeignKeyInfo {
    pub column: String,
    pub references_table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references_column: Option<String>,
    pub on_update: String,
    pub on_delete: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IndexInfo {
    pub name: String,
    pub unique: bool,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExplainOutput {
    /// The plan as an indented tree, one step per line.
    pub plan: String,
    pub steps: Vec<PlanStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanStep {
    pub id: i64,
    pub parent: i64,
    pub detail: String,
}

/// The condition on `sqlite_schema AS s` that keeps a row agents may see:
/// not SQLite's own, and not replication's (by `tbl_name`, so a hidden
/// table's indexes and triggers go with it). Names compare as SQLite
/// compares identifiers, without regard to ASCII case.
static VISIBLE: LazyLock<String> = LazyLock::new(|| {
    let hidden = crate::sqlite::access::HIDDEN_TABLES
        .iter()
        .map(|name| {
            // Constants of ours; a quote in one would break this SQL.
            assert!(!name.contains('\''), "hidden table names are plain");
            format!("'{}'", name.to_ascii_lowercase())
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("s.name NOT LIKE 'sqlite_%' AND lower(s.tbl_name) NOT IN ({hidden})")
});

static LIST_TABLES_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT s.name, s.type, s.sql FROM sqlite_schema AS s \
         WHERE s.type IN ('table', 'view') AND {} AND s.name LIKE ?1 \
         AND (?3 IS NULL OR EXISTS (SELECT 1 FROM pragma_table_xinfo(s.name) AS c \
                                    WHERE c.hidden IN (0, 2, 3) AND c.name LIKE ?3)) \
         ORDER BY s.name LIMIT ?2",
        *VISIBLE
    )
});

static DESCRIBE_TABLE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT s.name, s.type FROM sqlite_schema AS s \
         WHERE s.type IN ('table', 'view') AND {} AND s.name = ?1 COLLATE NOCASE",
        *VISIBLE
    )
});

static SCHEMA_DDL_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT s.tbl_name, s.sql || ';' FROM sqlite_schema AS s WHERE s.sql IS NOT NULL AND {} \
         ORDER BY CASE s.type WHEN 'table' THEN 0 WHEN 'view' THEN 1 WHEN 'index' THEN 2 ELSE 3 END, s.name",
        *VISIBLE
    )
});

impl QueryEngine {
    /// Tables and views whose name matches `pattern` and, when `column` is
    /// given, that have a column whose name matches it (each a substring, or
    /// an SQL LIKE pattern when it holds `%` or `_`), with as much detail as
    /// asked. With `column`, each table's `columns` are the matching ones.
    /// Denied tables of `restrictions` are left out.
    pub async fn list_tables_for(
        &self,
        restrictions: &Arc<Restrictions>,
        pattern: Option<String>,
        column: Option<String>,
        detail: TableDetail,
    ) -> Result<TableList, QueryError> {
        let op = Op::ListTables {
            pattern,
            column,
            detail,
        };
        match self
            .call(None, restrictions, op, Arc::new(AlwaysCommit))
            .await?
        {
            Output::Tables(output) => Ok(output),
            other => Err(unexpected(other)),
        }
    }

    /// [`QueryEngine::list_tables_for`] with no restriction.
    pub async fn list_tables(
        &self,
        pattern: Option<String>,
        column: Option<String>,
        detail: TableDetail,
    ) -> Result<TableList, QueryError> {
        self.list_tables_for(&Restrictions::none(), pattern, column, detail)
            .await
    }

    /// Columns, keys and indexes of one table or view; a table denied by
    /// `restrictions` is answered as if it did not exist.
    pub async fn describe_table_for(
        &self,
        restrictions: &Arc<Restrictions>,
        table: String,
    ) -> Result<TableDescription, QueryError> {
        match self
            .call(
                None,
                restrictions,
                Op::DescribeTable { table },
                Arc::new(AlwaysCommit),
            )
            .await?
        {
            Output::Description(output) => Ok(output),
            other => Err(unexpected(other)),
        }
    }

    /// [`QueryEngine::describe_table_for`] with no restriction.
    pub async fn describe_table(&self, table: String) -> Result<TableDescription, QueryError> {
        self.describe_table_for(&Restrictions::none(), table).await
    }

    /// The CREATE statements of every table, view, index and trigger, but
    /// those of tables denied by `restrictions` (and of their indexes and
    /// triggers).
    pub async fn schema_ddl_for(
        &self,
        restrictions: &Arc<Restrictions>,
    ) -> Result<String, QueryError> {
        match self
            .call(None, restrictions, Op::SchemaDdl, Arc::new(AlwaysCommit))
            .await?
        {
            Output::Ddl(output) => Ok(output),
            other => Err(unexpected(other)),
        }
    }

    /// [`QueryEngine::schema_ddl_for`] with no restriction.
    pub async fn schema_ddl(&self) -> Result<String, QueryError> {
        self.schema_ddl_for(&Restrictions::none()).await
    }

    /// `EXPLAIN QUERY PLAN` for one read-only statement, judged under
    /// `restrictions` like the query itself.
    pub async fn explain_for(
        &self,
        restrictions: &Arc<Restrictions>,
        sql: String,
        params: Option<SqlParams>,
    ) -> Result<ExplainOutput, QueryError> {
        match self
            .call(
                None,
                restrictions,
                Op::Explain { sql, params },
                Arc::new(AlwaysCommit),
            )
            .await?
        {
            Output::Explain(output) => Ok(output),
            other => Err(unexpected(other)),
        }
    }

    /// [`QueryEngine::explain_for`] with no restriction.
    pub async fn explain(
        &self,
        sql: String,
        params: Option<SqlParams>,
    ) -> Result<ExplainOutput, QueryError> {
        self.explain_for(&Restrictions::none(), sql, params).await
    }
}

/// The CREATE statements `schema_ddl_for` answers, read in the worker.
pub(crate) fn schema_ddl(
    conn: &ManagedConnection,
    restrictions: &Restrictions,
) -> Result<String, QueryError> {
    let mut stmt = conn.prepare_cached(&SCHEMA_DDL_SQL)?;
    let ddl: Vec<String> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .filter(|found| !matches!(found, Ok((table, _)) if restrictions.denies_table(table)))
        .map(|found| found.map(|(_, sql)| sql))
        .collect::<Result<_, _>>()?;
    Ok(ddl.join("\n\n"))
}

pub(crate) fn explain(
    conn: &ManagedConnection,
    sql: &str,
    params: Option<&SqlParams>,
) -> Result<ExplainOutput, QueryError> {
    // Validate the statement as the query tool would, then plan it.
    drop(prepare_read(conn, sql)?);
    let mut stmt = prepare_read(conn, &format!("EXPLAIN QUERY PLAN {sql}"))?;
    if let Some(params) = params {
        SqlParams::bind(Some(params), &mut stmt)?;
    }
    let mut rows = stmt.raw_query();
    let mut steps = Vec::new();
    while let Some(row) = rows.next()? {
        steps.push(PlanStep {
            id: row.get(0)?,
            parent: row.get(1)?,
            detail: row.get(3)?,
        });
    }
    let plan = render_plan(&steps);
    Ok(ExplainOutput { plan, steps })
}

fn render_plan(steps: &[PlanStep]) -> String {
    fn depth(steps: &[PlanStep], step: &PlanStep) -> usize {
        let mut depth = 0;
        let mut parent = step.parent;
        while parent != 0 && depth < 64 {
            depth += 1;
            parent = steps
                .iter()
                .find(|s| s.id == parent)
                .map_or(0, |s| s.parent);
        }
        depth
    }
    steps
        .iter()
        .map(|s| format!("{}{}", "  ".repeat(depth(steps, s)), s.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn list_tables(
    conn: &ManagedConnection,
    restrictions: &Restrictions,
    pattern: Option<&str>,
    column: Option<&str>,
    detail: TableDetail,
) -> Result<TableList, QueryError> {
    let like = like_pattern(pattern).unwrap_or_else(|| "%".to_string());
    let column_like = like_pattern(column);
    // Both patterns are bound parameters; table names reach
    // pragma_table_xinfo as values, never as SQL text.
    let mut stmt = conn.prepare_cached(&LIST_TABLES_SQL)?;
    // Room for the denied tables, which are dropped below.
    let limit = (MAX_LISTED + 1 + restrictions.denied_tables().count()) as i64;
    let mut found: Vec<(String, String, Option<String>)> = stmt
        .query_map(rusqlite::params![like, limit, column_like], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    found.retain(|(name, _, _)| !restrictions.denies_table(name));
    let truncated = found.len() > MAX_LISTED;
    found.truncate(MAX_LISTED);
    let mut tables = Vec::with_capacity(found.len());
    for (name, kind, ddl) in found {
        let rows = if kind == "table" {
            Some(count_rows(conn, &name)?)
        } else {
            None
        };
        let columns = match (detail, &column_like) {
            (TableDetail::Names, None) => None,
            _ => Some(
                columns(conn, &name, column_like.as_deref())?
                    .into_iter()
                    .map(|c| {
                        let mut text = format!("{} {}", c.name, c.declared_type);
                        if c.primary_key.is_some() {
                            text.push_str(" PK");
                        }
                        if !c.nullable && c.primary_key.is_none() {
                            text.push_str(" NOT NULL");
                        }
                        text.trim_end().to_string()
                    })
                    .collect(),
            ),
        };
        tables.push(TableSummary {
            name,
            kind,
            description: None,
            rows,
            columns,
            ddl: (detail == TableDetail::Ddl).then_some(ddl).flatten(),
        });
    }
    Ok(TableList { tables, truncated })
}

/// A name filter as an SQL LIKE pattern: text with `%` or `_` is one
/// already, other text matches anywhere in the name. Blank means no filter.
fn like_pattern(filter: Option<&str>) -> Option<String> {
    match filter.map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(p) if p.contains(['%', '_']) => Some(p.to_string()),
        Some(p) => Some(format!("%{p}%")),
    }
}

fn count_rows(conn: &ManagedConnection, table: &str) -> Result<i64, QueryError> {
    // A name cannot be a parameter here; it comes from sqlite_schema and is
    // quoted as an identifier.
    let sql = format!("SELECT COUNT(*) FROM {}", quote_identifier(table));
    Ok(conn.prepare_cached(&sql)?.query_row([], |r| r.get(0))?)
}

/// Quotes `name` as an SQL identifier ("a""b").
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns of `table`, or only those whose name is `LIKE` `matching`.
fn columns(
    conn: &ManagedConnection,
    table: &str,
    matching: Option<&str>,
) -> Result<Vec<ColumnInfo>, QueryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_xinfo(?1) \
         WHERE hidden IN (0, 2, 3) AND (?2 IS NULL OR name LIKE ?2)",
    )?;
    let columns = stmt
        .query_map(rusqlite::params![table, matching], |r| {
            let pk: i64 = r.get(4)?;
            Ok(ColumnInfo {
                name: r.get(0)?,
                declared_type: r.get(1)?,
                nullable: r.get::<_, i64>(2)? == 0,
                default: r.get(3)?,
                primary_key: (pk > 0).then_some(pk),
                description: None,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(columns)
}

pub(crate) fn describe_table(
    conn: &ManagedConnection,
    restrictions: &Restrictions,
    table: &str,
) -> Result<TableDescription, QueryError> {
    let found: Option<(String, String)> = conn
        .prepare_cached(&DESCRIBE_TABLE_SQL)?
        .query_row([table], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?
        .filter(|(name, _)| !restrictions.denies_table(name));
    let Some((name, kind)) = found else {
        return Err(QueryError::InvalidArgument(format!(
            "no table or view named {table:?}; list_tables shows what exists"
        )));
    };
    let columns = columns(conn, &name, None)?;
    let foreign_keys = conn
        .prepare_cached(
            "SELECT \"from\", \"table\", \"to\", on_update, on_delete FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )?
        .query_map([&name], |r| {
            Ok(ForeignKeyInfo {
                column: r.get(0)?,
                references_table: r.get(1)?,
                references_column: r.get(2)?,
                on_update: r.get(3)?,
                on_delete: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let index_names: Vec<(String, bool)> = conn
        .prepare_cached("SELECT name, \"unique\" FROM pragma_index_list(?1) ORDER BY name")?
        .query_map([&name], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))?
        .collect::<Result<_, _>>()?;
    let mut indexes = Vec::with_capacity(index_names.len());
    for (index, unique) in index_names {
        let columns = conn
            .prepare_cached(
                "SELECT coalesce(name, '<expression>') FROM pragma_index_info(?1) ORDER BY seqno",
            )?
            .query_map([&index], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        indexes.push(IndexInfo {
            name: index,
            unique,
            columns,
        });
    }
    Ok(TableDescription {
        name,
        kind,
        description: None,
        columns,
        foreign_keys,
        indexes,
    })
}
