//! Operator-declared tools: a TOML file (`EROS_MCP_TOOLS_FILE`) names tools,
//! each one SQL statement with typed, named parameters. Each becomes an MCP
//! tool with an exact input schema; arguments are checked against it and
//! bound, never interpolated. A bad file stops startup with the line and
//! the reason.
//!
//! ```toml
//! [[tools]]
//! name = "get_creator_profile"
//! description = "A creator's profile and subscriber count."
//! access = "read"            # or "write"
//! # scope = "eros:pii"        # who may call it (default: eros:read, or
//! #                           # eros:write for a write tool)
//! sql = "SELECT ... WHERE c.id = :creator_id"
//!
//! [tools.params.creator_id]
//! type = "integer"           # string, integer, number or boolean
//! description = "The creator's id."
//! # required = true (the default unless a default is given)
//! # default = 1
//! # allowed = [1, 2, 3]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::rows::{self, RowEncoder};
use super::ErosServer;
use crate::engine::{ExecuteOutput, ExecuteRequest, QueryRequest, SqlParam, SqlParams};
use crate::pool::ManagedConnection;
use crate::sqlite::access::Access;

/// Why a tools file was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeclaredToolsError {
    #[error("cannot read the tools file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolsFile {
    #[serde(default)]
    tools: Vec<toml::Spanned<ToolEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolEntry {
    name: String,
    description: String,
    sql: String,
    #[serde(default)]
    access: ToolAccess,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, ParamEntry>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolAccess {
    #[default]
    Read,
    Write,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamEntry {
    #[serde(rename = "type")]
    kind: ParamType,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    required: Option<bool>,
    #[serde(default)]
    default: Option<toml::Value>,
    #[serde(default)]
    allowed: Option<Vec<toml::Value>>,
}

/// The type of a declared parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
}

impl ParamType {
    fn json_type(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
        }
    }

    /// The bound value for `value`, if it has this type.
    fn accept(self, value: &Json) -> Option<SqlParam> {
        match (self, value) {
            (ParamType::String, Json::String(s)) => Some(SqlParam::Text(s.clone())),
            (ParamType::Integer, Json::Number(n)) => n.as_i64().map(SqlParam::Integer),
            (ParamType::Number, Json::Number(n)) => n.as_f64().map(SqlParam::Real),
            (ParamType::Boolean, Json::Bool(b)) => Some(SqlParam::Bool(*b)),
            _ => None,
        }
    }
}

/// One validated parameter.
#[derive(Debug, Clone)]
pub struct DeclaredParam {
    pub name: String,
    pub kind: ParamType,
    pub description: Option<String>,
    pub required: bool,
    pub default: Option<Json>,
    pub allowed: Option<Vec<Json>>,
}

/// One validated tool.
#[derive(Debug, Clone)]
pub struct DeclaredTool {
    pub name: String,
    pub description: String,
    pub sql: String,
    pub access: ToolAccess,
    /// The scope a principal needs to see and call it.
    pub scope: String,
    pub params: Vec<DeclaredParam>,
}

/// The declared tools, validated against the database.
#[derive(Debug, Clone, Default)]
pub struct DeclaredTools(Vec<DeclaredTool>);

/// Names the built-in tools use.
const RESERVED: &[&str] = &[
    "query",
    "list_tables",
    "describe_table",
    "explain_query",
    "execute",
    "pool_stats",
    "list_databases",
];

impl DeclaredTools {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn into_tools(self) -> Vec<DeclaredTool> {
        self.0
    }

    pub fn tools(&self) -> &[DeclaredTool] {
        &self.0
    }

    /// Reads and validates `path`. Each statement is prepared on `conn`
    /// (under the access its tool will have) so SQL errors and parameter
    /// mismatches surface now, not on the first call. Write tools are
    /// skipped with a warning when the server is read-only.
    pub fn load(
        path: &Path,
        conn: &ManagedConnection,
        read_only: bool,
    ) -> Result<Self, DeclaredToolsError> {
        let text = std::fs::read_to_string(path).map_err(|source| DeclaredToolsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, conn, read_only)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        conn: &ManagedConnection,
        read_only: bool,
    ) -> Result<Self, DeclaredToolsError> {
        let invalid = |line: usize, reason: String| DeclaredToolsError::Invalid {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let file: ToolsFile = toml::from_str(text).map_err(|err| {
            let line = err.span().map_or(1, |span| line_of(text, span.start));
            invalid(line, err.message().to_string())
        })?;
        let mut tools: Vec<DeclaredTool> = Vec::new();
        for spanned in file.tools {
            let line = line_of(text, spanned.span().start);
            let entry = spanned.into_inner();
            let tool = validate(entry, conn).map_err(|reason| invalid(line, reason))?;
            if tools.iter().any(|t| t.name == tool.name) {
                return Err(invalid(
                    line,
                    format!("tool {:?} is declared twice", tool.name),
                ));
            }
            if tool.access == ToolAccess::Write && read_only {
                tracing::warn!(
                    tool = %tool.name,
                    "skipping a write tool: the server is read-only (set EROS_DB_READ_ONLY=false to offer it)"
                );
                continue;
            }
            tools.push(tool);
        }
        Ok(Self(tools))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn validate(entry: ToolEntry, conn: &ManagedConnection) -> Result<DeclaredTool, String> {
    let name_ok = entry.name.len() <= 64
        && entry.name.starts_with(|c: char| c.is_ascii_alphabetic())
        && entry
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        return Err(format!(
            "tool name {:?} must start with a letter and hold only letters, digits, _ and - (at most 64)",
            entry.name
        ));
    }
    if RESERVED.contains(&entry.name.as_str()) {
        return Err(format!(
            "tool name {:?} is taken by a built-in tool",
            entry.name
        ));
    }
    if entry.description.trim().is_empty() {
        return Err(format!("tool {:?} needs a description", entry.name));
    }
    let scope = match entry.scope {
        None => match entry.access {
            ToolAccess::Read => crate::identity::READ.to_string(),
            ToolAccess::Write => crate::identity::WRITE.to_string(),
        },
        Some(scope) if crate::identity::is_valid_scope(&scope) => scope,
        Some(scope) => {
            return Err(format!(
                "tool {:?}: scope {scope:?} must be one word of printable ASCII without quotes or backslashes",
                entry.name
            ))
        }
    };
    let mut params = Vec::with_capacity(entry.params.len());
    for (name, param) in entry.params {
        params.push(validate_param(&entry.name, name, param)?);
    }
    check_statement(&entry.name, &entry.sql, entry.access, &params, conn)?;
    Ok(DeclaredTool {
        name: entry.name,
        description: entry.description.trim().to_string(),
        sql: entry.sql,
        access: entry.access,
        scope,
        params,
    })
}

fn validate_param(tool: &str, name: String, param: ParamEntry) -> Result<DeclaredParam, String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "tool {tool:?}: parameter name {name:?} may hold only letters, digits and _"
        ));
    }
    let to_json = |value: toml::Value| -> Result<Json, String> {
        let json = serde_json::to_value(&value).map_err(|e| e.to_string())?;
        match param.kind.accept(&json) {
            Some(_) => Ok(json),
            None => Err(format!(
                "tool {tool:?}: parameter {name:?} is {} but {value} is not",
                param.kind.json_type()
            )),
        }
    };
    let default = param.default.map(to_json).transpose()?;
    let allowed = param
        .allowed
        .map(|values| {
            values
                .into_iter()
                .map(to_json)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if let (Some(default), Some(allowed)) = (&default, &allowed) {
        if !allowed.contains(default) {
            return Err(format!(
                "tool {tool:?}: the default of {name:?} is not among its allowed values"
            ));
        }
    }
    let required = param.required.unwrap_or(default.is_none());
    if required && default.is_some() {
        return Err(format!(
            "tool {tool:?}: parameter {name:?} cannot be required and have a default"
        ));
    }
    Ok(DeclaredParam {
        name,
        kind: param.kind,
        description: param.description,
        required,
        default,
        allowed,
    })
}

fn check_statement(
    tool: &str,
    sql: &str,
    access: ToolAccess,
    params: &[DeclaredParam],
    conn: &ManagedConnection,
) -> Result<(), String> {
    let level = match access {
        ToolAccess::Read => Access::ReadOnly,
        ToolAccess::Write => Access::ReadWrite,
    };
    let stmt = conn
        .prepare_untrusted(level, sql)
        .map_err(|err| format!("tool {tool:?}: the SQL does not prepare: {err}"))?;
    if access == ToolAccess::Read && (!stmt.readonly() || stmt.column_count() == 0) {
        return Err(format!(
            "tool {tool:?}: a read tool needs one read-only statement that returns rows (declare access = \"write\" for writes)"
        ));
    }
    let mut in_sql = Vec::new();
    for index in 1..=stmt.parameter_count() {
        match stmt.parameter_name(index) {
            Some(name) if name.len() > 1 => in_sql.push(name[1..].to_string()),
            _ => {
                return Err(format!(
                    "tool {tool:?}: use named parameters (:name) in the SQL, not ? placeholders"
                ))
            }
        }
    }
    for name in &in_sql {
        if !params.iter().any(|p| &p.name == name) {
            return Err(format!(
                "tool {tool:?}: the SQL uses :{name} but no parameter {name:?} is declared"
            ));
        }
    }
    for param in params {
        if !in_sql.contains(&param.name) {
            return Err(format!(
                "tool {tool:?}: parameter {:?} is declared but the SQL never uses it",
                param.name
            ));
        }
    }
    Ok(())
}

impl DeclaredTool {
    /// The exact JSON Schema of the tool's arguments.
    pub fn input_schema(&self) -> JsonObject {
        let mut properties = serde_json::Map::new();
        for param in &self.params {
            let mut schema = json!({ "type": param.kind.json_type() });
            if let Some(description) = &param.description {
                schema["description"] = json!(description);
            }
            if let Some(default) = &param.default {
                schema["default"] = default.clone();
            }
            if let Some(allowed) = &param.allowed {
                schema["enum"] = json!(allowed);
            }
            properties.insert(param.name.clone(), schema);
        }
        let required: Vec<&str> = self
            .params
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name.as_str())
            .collect();
        let schema = json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        });
        match schema {
            Json::Object(object) => object,
            _ => unreachable!("built as an object"),
        }
    }

    /// Checks `arguments` against the declared parameters and binds them.
    pub fn bind(&self, arguments: Option<&JsonObject>) -> Result<SqlParams, String> {
        let empty = JsonObject::new();
        let arguments = arguments.unwrap_or(&empty);
        if let Some(unknown) = arguments
            .keys()
            .find(|key| !self.params.iter().any(|p| &p.name == *key))
        {
            return Err(format!("unknown argument {unknown:?}"));
        }
        let mut bound = BTreeMap::new();
        for param in &self.params {
            let value = match arguments.get(&param.name).or(param.default.as_ref()) {
                Some(value) => value,
                None if param.required => {
                    return Err(format!("missing required argument {:?}", param.name))
                }
                None => &Json::Null,
            };
            let sql_value = if value.is_null() && !param.required {
                SqlParam::Null
            } else {
                param.kind.accept(value).ok_or_else(|| {
                    format!(
                        "argument {:?} must be {}, got {value}",
                        param.name,
                        param.kind.json_type()
                    )
                })?
            };
            if let Some(allowed) = &param.allowed {
                if !value.is_null() && !allowed.contains(value) {
                    return Err(format!(
                        "argument {:?} must be one of {}",
                        param.name,
                        Json::Array(allowed.clone())
                    ));
                }
            }
            bound.insert(format!(":{}", param.name), sql_value);
        }
        Ok(SqlParams::Named(bound))
    }

    fn annotations(&self) -> ToolAnnotations {
        let read = self.access == ToolAccess::Read;
        ToolAnnotations::new()
            .read_only(read)
            .destructive(!read)
            .idempotent(read)
            .open_world(false)
    }
}

/// The MCP route for one declared tool: a read tool answers in the rows'
/// format, a write tool as `execute` does.
pub(crate) fn route(
    tool: Arc<DeclaredTool>,
    rows: &'static dyn RowEncoder,
) -> ToolRoute<ErosServer> {
    let output_schema = match tool.access {
        ToolAccess::Read => rows.output_schema(),
        ToolAccess::Write => Some(schema_for_output::<ExecuteOutput>()),
    };
    // Rows without a schema say in words how they read.
    let description = match output_schema {
        None => format!("{} {}", tool.description, rows.describe_rows()),
        Some(_) => tool.description.clone(),
    };
    let mut attr = Tool::new(
        tool.name.clone(),
        description,
        Arc::new(tool.input_schema()),
    )
    .with_annotations(tool.annotations());
    if let Some(schema) = output_schema {
        attr = attr.with_raw_output_schema(schema);
    }
    ToolRoute::new_dyn(attr, move |ctx: ToolCallContext<'_, ErosServer>| {
        let tool = Arc::clone(&tool);
        Box::pin(async move {
            let server = ctx.service;
            let context = ctx.request_context.clone();
            let bound = tool.bind(ctx.arguments.as_ref());
            let sql = tool.sql.clone();
            let result = match (tool.access, bound) {
                (_, Err(reason)) => super::respond::refuse(
                    &tool.name,
                    &server.caller_of(&context),
                    crate::engine::QueryError::InvalidArgument(reason),
                    &*server.inner.observer,
                ),
                (ToolAccess::Read, Ok(params)) => {
                    server
                        .call(
                            &tool.name,
                            &context,
                            |db, restrictions, cancel, _| async move {
                                let request = QueryRequest {
                                    sql,
                                    params: Some(params),
                                    ..Default::default()
                                };
                                db.engine
                                    .query_for(&restrictions, request, rows, Some(&cancel))
                                    .await
                            },
                        )
                        .await
                }
                (ToolAccess::Write, Ok(params)) => {
                    server
                        .call(
                            &tool.name,
                            &context,
                            |db, restrictions, cancel, gate| async move {
                                db.engine
                                    .execute_for(
                                        &restrictions,
                                        ExecuteRequest {
                                            sql,
                                            params: Some(params),
                                            database: None,
                                        },
                                        rows::RETURNING,
                                        Some(&cancel),
                                        gate,
                                    )
                                    .await
                            },
                        )
                        .await
                }
            };
            Ok(result.into())
        })
    })
}
