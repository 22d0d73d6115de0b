//! The built-in tools. Names and arguments are part of the interface.
//! Descriptions are written for a model: what the tool is for, what comes
//! back, and what to do next, in as few words as that takes (every session
//! pays for the tool list). Only results a client can check against a schema
//! declare one: the schema tools answer JSON that is read, not validated.

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, RoleServer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rows::{self, RowEncoder};
use super::ErosServer;
use crate::engine::{
    ExecuteOutput, ExecuteRequest, QueryOutput, QueryRequest, SqlParams, TableDetail,
};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListTablesRequest {
    /// Table names containing this text, or an SQL LIKE pattern if it has % or _.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Only tables with a column named like this (rules as for pattern), listing those columns.
    #[serde(default)]
    pub column: Option<String>,
    /// names (default), columns (every column), or ddl (also CREATE).
    #[serde(default)]
    pub detail: Option<TableDetail>,
    /// The database (one of list_databases' names).
    // Declared for the schema; the server reads it from the raw arguments
    // (`ErosServer::caller`) before the tool runs, to pick the engine.
    #[allow(dead_code)]
    #[serde(default)]
    pub database: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DescribeTableRequest {
    /// Name of the table or view.
    pub table: String,
    /// The database (one of list_databases' names).
    // Declared for the schema; the server reads it from the raw arguments
    // (`ErosServer::caller`) before the tool runs, to pick the engine.
    #[allow(dead_code)]
    #[serde(default)]
    pub database: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExplainRequest {
    /// One read-only SQL statement to plan (it is not run).
    pub sql: String,
    /// Values for its placeholders, as for query.
    #[serde(default)]
    pub params: Option<SqlParams>,
    /// The database (one of list_databases' names).
    // Declared for the schema; the server reads it from the raw arguments
    // (`ErosServer::caller`) before the tool runs, to pick the engine.
    #[allow(dead_code)]
    #[serde(default)]
    pub database: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct OnDatabase {
    /// The database (one of list_databases' names).
    // Declared for the schema; the server reads it from the raw arguments
    // (`ErosServer::caller`) before the tool runs, to pick the engine.
    #[allow(dead_code)]
    #[serde(default)]
    pub database: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NoArguments {}

/// One database, as `list_databases` shows it.
#[derive(Debug, Serialize)]
pub struct DatabaseEntry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub read_only: bool,
}

/// The databases a caller may use.
#[derive(Debug, Serialize)]
pub struct DatabaseList {
    pub databases: Vec<DatabaseEntry>,
}

impl super::respond::ToolOutput for DatabaseList {}

/// The tool that names the databases (offered only when there are several).
pub(crate) const LIST_DATABASES: &str = "list_databases";

#[tool_router(vis = "pub(crate)", router = builtin_tools)]
impl ErosServer {
    #[tool(
        name = "query",
        // Completed for the row format by `describe_query`.
        description = QUERY,
        output_schema = schema_for_output::<QueryOutput>(),
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn query(
        &self,
        Parameters(request): Parameters<QueryRequest>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let rows = self.inner.rows;
        self.call(
            "query",
            &ctx,
            |db, restrictions, cancel, _gate| async move {
                db.engine
                    .query_for(&restrictions, request, rows, Some(&cancel))
                    .await
            },
        )
        .await
    }

    #[tool(
        name = "list_tables",
        description = "Start here: tables and views with row counts, filtered by table name (pattern) or \
column name (column).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_tables(
        &self,
        Parameters(request): Parameters<ListTablesRequest>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("list_tables", &ctx, |db, restrictions, _, _| async move {
            db.engine
                .list_tables_for(
                    &restrictions,
                    request.pattern,
                    request.column,
                    request.detail.unwrap_or_default(),
                )
                .await
                .map(|list| db.dictionary.annotate_list(list))
        })
        .await
    }

    #[tool(
        name = "describe_table",
        description = "One table or view: columns (type, nullable, default, primary key), foreign keys, \
indexes.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn describe_table(
        &self,
        Parameters(request): Parameters<DescribeTableRequest>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call(
            "describe_table",
            &ctx,
            |db, restrictions, _, _| async move {
                db.engine
                    .describe_table_for(&restrictions, request.table)
                    .await
                    .map(|table| db.dictionary.annotate_description(table))
            },
        )
        .await
    }

    #[tool(
        name = "explain_query",
        description = "EXPLAIN QUERY PLAN of a read-only statement, not run: which indexes it uses, which \
tables it scans.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn explain_query(
        &self,
        Parameters(request): Parameters<ExplainRequest>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("explain_query", &ctx, |db, restrictions, _, _| async move {
            db.engine
                .explain_for(&restrictions, request.sql, request.params)
                .await
        })
        .await
    }

    #[tool(
        name = "execute",
        description = "Run one INSERT, UPDATE, DELETE or CREATE/ALTER/DROP statement in its own transaction \
and commit it. Returns changes and last_insert_rowid (and rows of a RETURNING clause). Bind values with params.",
        output_schema = schema_for_output::<ExecuteOutput>(),
        annotations(read_only_hint = false, destructive_hint = true,
                    idempotent_hint = false, open_world_hint = false)
    )]
    async fn execute(
        &self,
        Parameters(request): Parameters<ExecuteRequest>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call(
            "execute",
            &ctx,
            |db, restrictions, cancel, gate| async move {
                db.engine
                    .execute_for(&restrictions, request, rows::RETURNING, Some(&cancel), gate)
                    .await
            },
        )
        .await
    }

    #[tool(
        name = "pool_stats",
        description = "Connection pool state and counters: in use, idle, overflow, waiters, connections \
created and failed.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn pool_stats(
        &self,
        Parameters(_): Parameters<OnDatabase>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.call("pool_stats", &ctx, |db, _, _, _| async move {
            Ok(db.engine.pool().stats())
        })
        .await
    }

    #[tool(
        name = "list_databases",
        description = "The databases this server serves: name (what every tool's database takes), \
description, and whether it takes writes. Start here.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_databases(
        &self,
        Parameters(_): Parameters<NoArguments>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.list_databases_for(&ctx)
    }
}

/// What `query` does, in either row format.
const QUERY: &str = "Run one read-only SQL statement; bind values with params.";

const QUERY_CONTINUE: &str =
    "Rows are capped: given a next_cursor, call again with it as cursor to continue.";

/// Describes `query` for the rows' format (CSV rows have no output schema).
pub(crate) fn describe_query(router: &mut ToolRouter<ErosServer>, rows: &dyn RowEncoder) {
    let Some(route) = router.map.get_mut("query") else {
        return;
    };
    route.attr.output_schema = rows.output_schema();
    route.attr.description =
        Some(format!("{QUERY} {} {QUERY_CONTINUE}", rows.describe_rows()).into());
}

/// Gives each built-in tool's `database` argument its place: gone when the
/// server has one database (the tool list stays as it was), and with
/// several, required and one of their names.
pub(crate) fn describe_database_argument(
    router: &mut ToolRouter<ErosServer>,
    catalog: &super::Catalog,
) {
    let names: Vec<serde_json::Value> = catalog
        .names()
        .into_iter()
        .map(|name| serde_json::Value::String(name.to_string()))
        .collect();
    for route in router.map.values_mut() {
        let mut schema = (*route.attr.input_schema).clone();
        let Some(serde_json::Value::Object(properties)) = schema.get_mut("properties") else {
            continue;
        };
        if !properties.contains_key("database") {
            continue;
        }
        if catalog.single().is_some() {
            properties.remove("database");
        } else {
            properties.insert(
                "database".into(),
                serde_json::json!({
                    "type": "string",
                    "enum": names,
                    "description": "The database (list_databases describes them).",
                    // 2026-07-28: clients copy it into an Mcp-Param-Database
                    // header, so a gateway can route on it; rmcp refuses a
                    // call whose header is missing or disagrees with the body.
                    "x-mcp-header": "Database",
                }),
            );
            let required = schema
                .entry("required")
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(required) = required {
                required.push("database".into());
            }
        }
        route.attr.input_schema = std::sync::Arc::new(schema);
    }
}
