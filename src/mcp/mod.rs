//! The MCP server agents talk to: the tools, the schema resource, and the
//! server's identity. Transports (stdio, HTTP) live in [`crate::transport`];
//! this module is the same for both.
//!
//! - [`catalog`]: the databases served, by name; a call runs against one.
//! - [`tools`]: the built-in tools and their descriptions.
//! - [`declared`]: operator-declared tools from a TOML file.
//! - [`respond`]: engine results to tool results, and metrics per call.
//! - [`rows`]: the row formats (typed CSV, the default, and JSON).
//! - [`calls`]: in-flight calls, refused and drained on shutdown.
//! - [`crate::rmcp_gaps::tool_schema`]: every tool schema in standard, compact JSON Schema.

pub mod calls;
pub mod catalog;
pub mod declared;
pub mod observer;
mod prompts;
pub mod respond;
pub mod rows;
mod tools;
pub mod trace;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use rmcp::handler::server::tool::{ToolCallContext, ToolRouter};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorCode, GetPromptRequestParams,
    GetPromptResponse, Implementation, ListPromptsResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::{AlwaysCommit, CommitGate, QueryError};
use crate::identity::{self, Principal, ScopeRules};
use crate::policy::Restrictions;
use crate::quota::fair::{FairShares, SharePermit};
use crate::quota::{Admission, Quotas};
pub use calls::CallTracker;
pub use catalog::{Catalog, ServedDatabase};
pub use declared::{DeclaredTool, DeclaredTools, DeclaredToolsError};
pub use observer::{Caller, NoToolObserver, ToolCall, ToolObserver, ToolObservers};
use respond::{answer, respond, ToolOutput};
use rows::RowEncoder;
use rows::RowFormat;

/// URI of the resource holding a database's DDL: `schema://NAME`.
pub fn schema_resource(database: &str) -> String {
    format!("schema://{database}")
}

const INSTRUCTIONS: &str = "SQLite database server. Start with list_tables (detail=columns for \
column names; column=NAME finds the tables having a column) or read the schema resource, then \
describe_table for keys and indexes. query runs one read-only statement; bind values with params \
instead of pasting them into SQL.";

fn instructions(rows: &dyn RowEncoder, catalog: &Catalog) -> String {
    let mut text = format!(
        "{INSTRUCTIONS} {}; when an answer has a next_cursor, call query again with it to continue.",
        rows.instructions()
    );
    let scoped = catalog.iter().any(|db| db.scope.is_some());
    if catalog.single().is_none() && scoped {
        // Which databases a caller may use depends on its scopes: the names
        // are for list_databases to give, not for every session.
        text.push_str(
            " Several databases: every tool takes database; list_databases names and \
             describes those you may use, each with its schema://NAME resource.",
        );
    } else if catalog.single().is_none() {
        text.push_str(
            " Several databases: every tool takes database (one of the names below; \
             list_databases describes them), and each has its schema://NAME resource.",
        );
        for db in catalog.iter() {
            text.push_str(&format!(
                "\n- {}{}",
                db.name,
                db.description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        }
    }
    text
}

/// What a tool asks of its callers (the scope it needs is in the
/// server's [`ScopeRules`]).
struct ToolRule {
    /// A declared tool's statement (built-in tools take the agent's SQL).
    sql: Option<String>,
    /// Whether it writes (`execute`, a declared tool with access = "write").
    writes: bool,
    /// A declared tool's database (built-in tools take a `database` argument).
    database: Option<String>,
}

/// What a reload replaces at once: the databases and the tools built on
/// them. A call runs under the generation it started with to its end.
pub struct Generation {
    /// 1 at startup, one more at each reload that took effect.
    pub number: u64,
    /// The databases served; each call runs against one.
    catalog: Catalog,
    router: ToolRouter<ErosServer>,
    rules: HashMap<String, ToolRule>,
    /// The scope each tool needs (put in [`Inner::scopes`] on a swap).
    scopes: HashMap<String, String>,
}

impl Generation {
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The tools a principal sees, by name.
    fn visible_tools(&self, principal: &Principal) -> Vec<Tool> {
        let mut tools = self.router.list_all();
        tools.retain(|tool| {
            let own_database = self
                .rules
                .get(tool.name.as_ref())
                .and_then(|rule| rule.database.as_deref());
            self.scopes
                .get(tool.name.as_ref())
                .is_none_or(|scope| principal.may(scope))
                && own_database.is_none_or(|name| {
                    self.catalog
                        .find(Some(name))
                        .is_ok_and(|db| db.admits(principal))
                })
        });
        // The `database` argument lists only the databases this principal
        // may use.
        if self.catalog.single().is_none() && self.catalog.iter().any(|db| db.scope.is_some()) {
            let names: Vec<serde_json::Value> = self
                .catalog
                .iter()
                .filter(|db| db.admits(principal))
                .map(|db| serde_json::Value::String(db.name.clone()))
                .collect();
            for tool in &mut tools {
                let mut schema = (*tool.input_schema).clone();
                if let Some(serde_json::Value::Object(properties)) = schema.get_mut("properties") {
                    if let Some(serde_json::Value::Object(database)) =
                        properties.get_mut("database")
                    {
                        database.insert("enum".into(), serde_json::Value::Array(names.clone()));
                        tool.input_schema = Arc::new(schema);
                    }
                }
            }
        }
        tools
    }
}

/// Who the server tells that its tool list changed.
enum Listener {
    /// A session (2025-11-25 and earlier), told when the tools its
    /// principal sees changed.
    Session {
        peer: rmcp::Peer<RoleServer>,
        principal: Arc<Principal>,
    },
    /// A `subscriptions/listen` stream (2026-07-28), told when any tool
    /// changed; its notifications carry its subscription id.
    Subscription(rmcp::service::SubscriptionSink),
}

impl Listener {
    fn is_closed(&self) -> bool {
        match self {
            Listener::Session { peer, .. } => peer.is_transport_closed(),
            Listener::Subscription(_) => false,
        }
    }
}

struct Inner {
    /// The databases and tools in force (see [`ErosServer::replace`]).
    generation: std::sync::RwLock<Arc<Generation>>,
    /// The scope each tool needs: the one rule, shared with the HTTP
    /// transport, replaced with each generation.
    scopes: ScopeRules,
    /// Sessions to tell when their tool list changes.
    listeners: std::sync::Mutex<Vec<Listener>>,
    /// Over stdio: the user who started the process.
    local: Arc<Principal>,
    /// Over HTTP with authentication off.
    anonymous: Arc<Principal>,
    observer: Arc<dyn ToolObserver>,
    /// Asked of the observer once: whether each call copies its parameter values.
    copy_param_values: bool,
    calls: Arc<CallTracker>,
    /// The row format, picked once from the configuration.
    rows: &'static dyn RowEncoder,
    /// Per-principal quotas, when a file gives them.
    quotas: Option<Quotas>,
    /// Traces carry the SQL's SHA-256 instead of its text (as the audit log).
    hash_sql_in_traces: bool,
}

/// Why the tools of the databases cannot be served together.
#[derive(Debug, thiserror::Error)]
#[error("the declared tool {tool:?} of the database {database:?} {why}")]
pub struct ToolClash {
    pub tool: String,
    pub database: String,
    pub why: &'static str,
}

/// The MCP server. Cheap to clone: the HTTP transport makes one per session.
#[derive(Clone)]
pub struct ErosServer {
    inner: Arc<Inner>,
}

impl ErosServer {
    /// Builds the tool list: the built-in tools (`execute` only when some
    /// database takes writes, `list_databases` only when there are several,
    /// a `database` argument only then) and each database's declared tools,
    /// described for the rows' format.
    pub fn new(
        databases: Vec<(ServedDatabase, DeclaredTools)>,
        observer: Arc<dyn ToolObserver>,
        calls: Arc<CallTracker>,
        row_format: RowFormat,
        quotas: Option<Quotas>,
        hash_sql_in_traces: bool,
    ) -> Result<Self, ToolClash> {
        let rows = rows::encoder(row_format);
        let generation = Self::generation(1, databases, rows)?;
        let scopes = ScopeRules::new(generation.scopes.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                generation: std::sync::RwLock::new(Arc::new(generation)),
                scopes,
                listeners: std::sync::Mutex::new(Vec::new()),
                local: Principal::local(),
                anonymous: Principal::anonymous(),
                copy_param_values: observer.wants_param_values(),
                observer,
                calls,
                rows,
                quotas,
                hash_sql_in_traces,
            }),
        })
    }

    /// The quotas calls are admitted against, for a reload to re-read.
    pub fn quotas(&self) -> Option<Quotas> {
        self.inner.quotas.clone()
    }

    /// The generation in force now.
    pub fn current(&self) -> Arc<Generation> {
        Arc::clone(
            &self
                .inner
                .generation
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Puts a new generation of databases and tools in place at once:
    /// calls already running finish under the old one, every later call
    /// runs under the new one. Sessions whose tool list changed are told.
    /// Returns the generation replaced, whose databases the caller closes
    /// once no call holds them.
    pub async fn replace(
        &self,
        databases: Vec<(ServedDatabase, DeclaredTools)>,
    ) -> Result<Arc<Generation>, ToolClash> {
        let rows = self.inner.rows;
        let number = self.current().number + 1;
        let next = Arc::new(Self::generation(number, databases, rows)?);
        let previous = {
            let mut slot = self
                .inner
                .generation
                .write()
                .unwrap_or_else(|p| p.into_inner());
            self.inner.scopes.replace(next.scopes.clone());
            std::mem::replace(&mut *slot, Arc::clone(&next))
        };
        // Told on a task of their own: a client that does not read must not
        // hold up the reload (nor, through it, the shutdown).
        let server = self.clone();
        let before = Arc::clone(&previous);
        tokio::spawn(async move {
            let telling = server.tell_listeners(&before, &next);
            if tokio::time::timeout(std::time::Duration::from_secs(10), telling)
                .await
                .is_err()
            {
                tracing::warn!("some sessions were not told of the new tools within 10 s");
            }
        });
        Ok(previous)
    }

    /// `notifications/tools/list_changed` to each open session whose
    /// tools differ between `before` and `after`.
    async fn tell_listeners(&self, before: &Generation, after: &Generation) {
        let mut sessions = Vec::new();
        let mut subscriptions = Vec::new();
        {
            let mut listeners = self
                .inner
                .listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            listeners.retain(|listener| !listener.is_closed());
            for listener in listeners.iter() {
                match listener {
                    Listener::Session { peer, principal } => {
                        sessions.push((peer.clone(), Arc::clone(principal)))
                    }
                    Listener::Subscription(sink) => subscriptions.push(sink.clone()),
                }
            }
        }
        for (peer, principal) in sessions {
            let old = before.visible_tools(&principal);
            let new = after.visible_tools(&principal);
            if old != new {
                if let Err(err) = peer.notify_tool_list_changed().await {
                    tracing::debug!(error = %err, "a session left before hearing of the new tools");
                }
            }
        }
        if before.router.list_all() != after.router.list_all() {
            for sink in subscriptions {
                let changed = rmcp::model::ServerNotification::ToolListChangedNotification(
                    Default::default(),
                );
                if let Err(err) = sink.send(changed).await {
                    tracing::debug!(error = %err, "a subscription ended before hearing of the new tools");
                }
            }
        }
    }

    fn generation(
        number: u64,
        databases: Vec<(ServedDatabase, DeclaredTools)>,
        rows: &'static dyn RowEncoder,
    ) -> Result<Generation, ToolClash> {
        let mut router = Self::builtin_tools();
        let (served, declared): (Vec<_>, Vec<_>) = databases
            .into_iter()
            .map(|(db, tools)| {
                let name = db.name.clone();
                (db, (name, tools))
            })
            .unzip();
        let catalog = Catalog::new(served);
        if catalog.iter().all(|db| db.engine.read_only()) {
            router.remove_route("execute");
        }
        if catalog.single().is_some() {
            router.remove_route(tools::LIST_DATABASES);
        }
        tools::describe_query(&mut router, rows);
        tools::describe_database_argument(&mut router, &catalog);
        let mut rules: HashMap<String, ToolRule> = HashMap::new();
        let mut scopes: HashMap<String, String> = HashMap::new();
        for tool in router.list_all() {
            let writes = tool.name == "execute";
            let scope = if writes {
                identity::WRITE
            } else {
                identity::READ
            };
            scopes.insert(tool.name.to_string(), scope.to_string());
            rules.insert(
                tool.name.into_owned(),
                ToolRule {
                    sql: None,
                    writes,
                    database: None,
                },
            );
        }
        for (database, tools) in declared {
            for tool in tools.into_tools() {
                if rules.contains_key(&tool.name) {
                    return Err(ToolClash {
                        tool: tool.name,
                        database,
                        why: "has the name of another tool (built-in or another database's); \
                              declared tool names are unique across the server",
                    });
                }
                let rule = ToolRule {
                    sql: Some(tool.sql.clone()),
                    writes: tool.access == declared::ToolAccess::Write,
                    database: Some(database.clone()),
                };
                scopes.insert(tool.name.clone(), tool.scope.clone());
                rules.insert(tool.name.clone(), rule);
                router.add_route(declared::route(Arc::new(tool), rows));
            }
        }
        for route in router.map.values_mut() {
            let tool = &mut route.attr;
            tool.input_schema = Arc::new(crate::rmcp_gaps::tool_schema::standardize(
                &tool.input_schema,
            ));
            if let Some(output) = &tool.output_schema {
                tool.output_schema =
                    Some(Arc::new(crate::rmcp_gaps::tool_schema::standardize(output)));
            }
        }
        Ok(Generation {
            number,
            catalog,
            router,
            rules,
            scopes,
        })
    }

    /// The generation a request runs under: the one its call started with
    /// (put in its context by [`ServerHandler::call_tool`]), else the
    /// current one.
    fn generation_of(&self, context: &RequestContext<RoleServer>) -> Arc<Generation> {
        context
            .extensions
            .get::<Arc<Generation>>()
            .cloned()
            .unwrap_or_else(|| self.current())
    }

    /// The database a resource or prompt request names (`None`: the only
    /// one), if the principal of `context` may use it, with what that
    /// principal may not read there.
    fn database_for(
        &self,
        name: Option<&str>,
        context: &RequestContext<RoleServer>,
    ) -> Result<(Arc<ServedDatabase>, Arc<Restrictions>), ErrorData> {
        let generation = self.generation_of(context);
        let principal = self.principal(context);
        let db = generation
            .catalog
            .find_for(name, &principal)
            .map_err(|err| ErrorData::invalid_params(err.to_string(), None))?;
        let restrictions = db.policy.restrictions_for(&principal.scopes);
        Ok((Arc::clone(db), restrictions))
    }

    /// The databases served now.
    pub fn catalog(&self) -> Catalog {
        self.current().catalog.clone()
    }

    /// The scope each request needs (for the HTTP transport's 403 before
    /// a call reaches the server).
    pub fn scope_rules(&self) -> ScopeRules {
        self.inner.scopes.clone()
    }

    /// Names of the tools this server offers.
    pub fn tool_names(&self) -> Vec<String> {
        self.current()
            .router
            .list_all()
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect()
    }

    /// Runs one tool call: refused during shutdown, interrupted when the
    /// client cancels or the shutdown grace ends, measured and turned into
    /// a tool result. `work` is handed what the caller may not read (the
    /// policy file's restrictions for its scopes) to pass to the engine.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        tool: &str,
        context: &RequestContext<RoleServer>,
        work: F,
    ) -> CallToolResult
    where
        T: Serialize + ToolOutput,
        F: FnOnce(
            Arc<ServedDatabase>,
            Arc<Restrictions>,
            CancellationToken,
            Arc<dyn CommitGate>,
        ) -> Fut,
        Fut: Future<Output = Result<T, QueryError>>,
    {
        let started = Instant::now();
        let caller = self.caller_of(context);
        let client_cancel = &context.ct;
        let Some(_guard) = self.inner.calls.begin() else {
            return respond::refuse(
                tool,
                &caller,
                QueryError::ShuttingDown,
                &*self.inner.observer,
            );
        };
        let generation = self.generation_of(context);
        let found = generation
            .catalog
            .find_for(caller.database.as_deref(), &caller.principal);
        let db = match found {
            Ok(db) => Arc::clone(db),
            Err(err) => return respond::refuse(tool, &caller, err, &*self.inner.observer),
        };
        let observer = &*self.inner.observer;
        // Quotas before anything else runs: a refused call costs nothing.
        let admission = match &self.inner.quotas {
            Some(quotas) => match quotas.admit(&caller.principal) {
                Ok(admission) => admission,
                Err(exceeded) => return respond::refuse(tool, &caller, exceeded.into(), observer),
            },
            None => Admission::unlimited(),
        };
        // The principal's turn at the database's connections.
        let permit = match &db.shares {
            Some(shares) => match take_turn(&db, shares, &caller.principal, client_cancel).await {
                Ok(permit) => Some(permit),
                Err(err) => return respond::refuse(tool, &caller, err, observer),
            },
            None => None,
        };
        let holding = Instant::now();
        let cancel = self.inner.calls.abort_token().child_token();
        let restrictions = db.policy.restrictions_for(&caller.principal.scopes);
        let gate: Arc<dyn CommitGate> = if caller.writes {
            Arc::new(observer::RecordedWrite {
                tool: tool.to_string(),
                caller: caller.clone(),
                observer: Arc::clone(&self.inner.observer),
            })
        } else {
            Arc::new(AlwaysCommit)
        };
        let work = work(Arc::clone(&db), restrictions, cancel.clone(), gate);
        tokio::pin!(work);
        let result = tokio::select! {
            result = &mut work => result,
            _ = client_cancel.cancelled() => {
                cancel.cancel();
                work.await
            }
        };
        let database_time = holding.elapsed();
        drop(permit);
        let answered = answer(tool, &caller, started, result, self.inner.rows, observer);
        admission.charge(database_time, answered.rows, answered.bytes);
        answered.result
    }
}

/// Waits for `principal`'s turn at `db`'s connections (see
/// [`crate::quota::fair`]), as long as a checkout would wait; counted among
/// the pool's waiters, and a wait in vain as a checkout timeout.
async fn take_turn(
    db: &ServedDatabase,
    shares: &FairShares,
    principal: &Principal,
    client_cancel: &CancellationToken,
) -> Result<SharePermit, QueryError> {
    let pool = db.engine.pool();
    let timeout = pool
        .checkout_timeout()
        .min(db.engine.limits().query_timeout);
    let key: Arc<str> = Arc::from(crate::quota::principal_key(principal));
    let waiting = pool.waiting();
    let started = Instant::now();
    let wait = tracing::info_span!(target: crate::telemetry::TARGET, "fair_share.wait");
    let turn = tokio::select! {
        turn = shares.acquire(&key, timeout).instrument(wait) => turn,
        _ = client_cancel.cancelled() => return Err(QueryError::Cancelled),
    };
    drop(waiting);
    match turn {
        Ok(permit) => {
            pool.waited_in_front(started.elapsed());
            Ok(permit)
        }
        Err(_) => Err(QueryError::Pool(pool.timed_out_in_front(timeout))),
    }
}

impl ErosServer {
    /// `list_databases`: the databases the caller may use. It runs no SQL,
    /// so it needs no database of its own.
    fn list_databases_for(&self, context: &RequestContext<RoleServer>) -> CallToolResult {
        let started = Instant::now();
        let caller = Caller {
            database: None,
            ..self.caller_of(context)
        };
        let databases = self
            .generation_of(context)
            .catalog
            .iter()
            .filter(|db| db.admits(&caller.principal))
            .map(|db| tools::DatabaseEntry {
                name: db.name.clone(),
                description: db.description.clone(),
                read_only: db.engine.read_only(),
            })
            .collect();
        respond(
            tools::LIST_DATABASES,
            &caller,
            started,
            Ok(tools::DatabaseList { databases }),
            self.inner.rows,
            &*self.inner.observer,
        )
    }

    /// The principal of a request: the one the HTTP transport
    /// authenticated, anonymous over HTTP without authentication, the local
    /// user over stdio.
    fn principal(&self, context: &RequestContext<RoleServer>) -> Arc<Principal> {
        match http_parts(&context.extensions) {
            Some(parts) => parts
                .extensions
                .get::<Arc<Principal>>()
                .cloned()
                .unwrap_or_else(|| Arc::clone(&self.inner.anonymous)),
            None => Arc::clone(&self.inner.local),
        }
    }

    /// Who is calling `request` and what it asks to run.
    fn caller(
        &self,
        generation: &Generation,
        context: &RequestContext<RoleServer>,
        request: &CallToolRequestParams,
    ) -> Caller {
        let arguments = request.arguments.as_ref();
        let rule = generation.rules.get(request.name.as_ref());
        // Copied only when an observer reads them: the cost of a call
        // stays what it was without the audit log's EROS_AUDIT_PARAMS.
        let copy_values = self.inner.copy_param_values;
        let (sql, params, param_values) = match rule.and_then(|rule| rule.sql.clone()) {
            // A declared tool's arguments are its parameters.
            Some(sql) => (
                Some(sql),
                arguments.map_or(0, |a| a.len()),
                arguments
                    .filter(|_| copy_values)
                    .map(|a| serde_json::Value::Object(a.clone())),
            ),
            None => {
                let sql = arguments
                    .and_then(|a| a.get("sql"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                let values = arguments.and_then(|a| a.get("params"));
                let params = match values {
                    Some(serde_json::Value::Object(map)) => map.len(),
                    Some(serde_json::Value::Array(list)) => list.len(),
                    _ => 0,
                };
                (sql, params, values.filter(|_| copy_values).cloned())
            }
        };
        // A declared tool's own database; a built-in tool's argument; the
        // only database when the argument is left out.
        let database = rule
            .and_then(|rule| rule.database.clone())
            .or_else(|| {
                arguments
                    .and_then(|a| a.get("database"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .or_else(|| generation.catalog.single().map(|db| db.name.clone()));
        Caller {
            session: session_id(context),
            sql,
            params,
            param_values,
            writes: rule.is_some_and(|rule| rule.writes),
            database,
            ..Caller::new(self.principal(context))
        }
    }

    /// The caller [`ServerHandler::call_tool`] recorded for this request.
    fn caller_of(&self, context: &RequestContext<RoleServer>) -> Caller {
        context
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller {
                session: session_id(context),
                ..Caller::new(self.principal(context))
            })
    }

    /// Refuses a resource or prompt request from a principal without `eros:read`.
    fn require_read(&self, context: &RequestContext<RoleServer>) -> Result<(), ErrorData> {
        // Listing them needs what reading them needs (the one rule).
        let scope = self
            .inner
            .scopes
            .for_request("resources/read", None)
            .unwrap_or_else(|| identity::READ.to_string());
        if self.principal(context).may(&scope) {
            return Ok(());
        }
        Err(ErrorData::invalid_request(
            format!("the caller needs the scope {scope} for this"),
            None,
        ))
    }
}

/// The HTTP session a request was served in, as the transport found it
/// among the sessions it assigned (never the header as the client sent it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedSession(pub String);

/// The head of the HTTP request a call came in, when it came over HTTP: as
/// rmcp put it in the context, or shared once the call is under way (see
/// `call_tool_in`).
pub(crate) fn http_parts(
    extensions: &rmcp::model::Extensions,
) -> Option<&axum::http::request::Parts> {
    extensions.get::<axum::http::request::Parts>().or_else(|| {
        extensions
            .get::<Arc<axum::http::request::Parts>>()
            .map(|parts| &**parts)
    })
}

/// The request's HTTP session id, when it has one.
fn session_id(context: &RequestContext<RoleServer>) -> Option<String> {
    http_parts(&context.extensions)
        .and_then(|parts| parts.extensions.get::<AssignedSession>())
        .map(|session| session.0.clone())
}

impl ServerHandler for ErosServer {
    // `enable_logging` is deprecated for 2026-07-28 clients; 2025-11-25 ones use it.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_prompts()
                .enable_completions()
                .enable_logging()
                .build(),
        )
        .with_server_info(
            Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                .with_title("eros-mcp SQLite server"),
        )
        .with_instructions(instructions(self.inner.rows, &self.current().catalog))
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(&[
            ProtocolVersion::V_2025_03_26,
            ProtocolVersion::V_2025_06_18,
            ProtocolVersion::V_2025_11_25,
            ProtocolVersion::V_2026_07_28,
        ])
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let principal = self.principal(&context);
        Ok(ListToolsResult::with_all_items(
            self.current().visible_tools(&principal),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let span = trace::call_span(&request, &context);
        self.call_tool_in(request, context, &span)
            .instrument(span.clone())
            .await
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.current().router.get(name).cloned()
    }

    /// Remembers the session, to tell it when a reload changes its tools.
    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        let principal = match http_parts(&context.extensions) {
            Some(parts) => parts
                .extensions
                .get::<Arc<Principal>>()
                .cloned()
                .unwrap_or_else(|| Arc::clone(&self.inner.anonymous)),
            None => Arc::clone(&self.inner.local),
        };
        let mut listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        listeners.retain(|listener| !listener.is_closed());
        listeners.push(Listener::Session {
            peer: context.peer,
            principal,
        });
    }

    /// 2026-07-28 `subscriptions/listen`: the tool list's changes, the only
    /// notification this server sends.
    fn accepted_subscription_filter(
        &self,
        _requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        Some(
            rmcp::model::SubscriptionFilter::builder()
                .tools_list_changed()
                .build(),
        )
    }

    /// Keeps the stream until the client ends it, telling it of each new
    /// tool list.
    async fn listen(&self, context: rmcp::service::SubscriptionContext) -> Result<(), ErrorData> {
        let id = context.sink().id().clone();
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Listener::Subscription(context.sink().clone()));
        context.cancelled().await;
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(
                |listener| !matches!(listener, Listener::Subscription(sink) if *sink.id() == id),
            );
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        if self.require_read(&context).is_err() {
            return Ok(ListPromptsResult::with_all_items(Vec::new()));
        }
        Ok(ListPromptsResult::with_all_items(vec![
            prompts::answer_question(),
        ]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.require_read(&context)?;
        let database = request
            .arguments
            .as_ref()
            .and_then(|args| args.get("database"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let (db, restrictions) = self.database_for(database.as_deref(), &context)?;
        prompts::get(&db, &restrictions, request)
            .await
            .map(Into::into)
    }

    /// Accepted for clients of 2025-11-25 and earlier; the server sends no
    /// log notifications (its logs go to stderr).
    // Deprecated by SEP-2577 in 2026-07-28, still part of 2025-11-25.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        _request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        if self.require_read(&context).is_err() {
            return Ok(ListResourcesResult::with_all_items(Vec::new()));
        }
        let principal = self.principal(&context);
        let generation = self.current();
        let resources = generation
            .catalog
            .iter()
            .filter(|db| db.admits(&principal))
            .map(|db| {
                let about = match (&db.description, generation.catalog.single()) {
                    (_, Some(_)) => "the database".to_string(),
                    (Some(description), None) => {
                        format!("the database {} ({description})", db.name)
                    }
                    (None, None) => format!("the database {}", db.name),
                };
                Resource::new(schema_resource(&db.name), format!("schema of {}", db.name))
                    .with_description(format!(
                        "CREATE statements of every table, view, index and trigger in {about}"
                    ))
                    .with_mime_type("application/sql")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.require_read(&context)?;
        let generation = self.current();
        let named = request
            .uri
            .strip_prefix("schema://")
            .filter(|name| generation.catalog.names().contains(name));
        let Some(name) = named else {
            let principal = self.principal(&context);
            let known: Vec<String> = generation
                .catalog
                .iter()
                .filter(|db| db.admits(&principal))
                .map(|db| schema_resource(&db.name))
                .collect();
            return Err(ErrorData::resource_not_found(
                format!(
                    "no resource {:?}; this server's are {}",
                    request.uri,
                    known.join(", ")
                ),
                Some(serde_json::json!({ "uri": request.uri })),
            ));
        };
        let (db, restrictions) = self.database_for(Some(name), &context)?;
        match db
            .engine
            .schema_ddl_for(&restrictions)
            .await
            .map(|ddl| db.dictionary.annotate_ddl(ddl))
        {
            Ok(ddl) => Ok(ReadResourceResult::new(vec![ResourceContents::text(
                ddl,
                request.uri.clone(),
            )
            .with_mime_type("application/sql")])
            .into()),
            Err(err) => Err(ErrorData::internal_error(
                format!("cannot read the schema: {err}"),
                None,
            )),
        }
    }
}

impl ErosServer {
    /// [`ServerHandler::call_tool`] inside the call's span.
    async fn call_tool_in(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
        span: &tracing::Span,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.clone();
        let generation = self.current();
        if !generation.router.has_route(&name) {
            let mut cut = name.len().min(observer::MAX_UNKNOWN_TOOL_NAME);
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            self.inner
                .observer
                .unknown_tool_called(&name[..cut], &self.caller(&generation, &context, &request));
            // rmcp's own answer ("tool not found") does not say which.
            return Err(ErrorData::invalid_params(
                format!("no tool named {name:?}; tools/list names this server's tools"),
                None,
            ));
        }
        let mut caller = self.caller(&generation, &context, &request);
        caller.trace_id = trace::trace_id(span);
        trace::describe(span, &caller, self.inner.hash_sql_in_traces);
        if let Some(scope) = generation.scopes.get(name.as_ref()) {
            if !caller.principal.may(scope) {
                let forbidden = QueryError::Forbidden {
                    tool: name.to_string(),
                    scope: scope.to_string(),
                };
                return Ok(
                    respond::refuse(&name, &caller, forbidden, &*self.inner.observer).into(),
                );
            }
        }
        // rmcp clones the context for a tool that takes it, every one of
        // ours: the request's head (its headers and extensions) is shared
        // rather than copied (a seventh of an HTTP call's allocations).
        if let Some(parts) = context.extensions.remove::<axum::http::request::Parts>() {
            context.extensions.insert(Arc::new(parts));
        }
        context.extensions.insert(caller.clone());
        context.extensions.insert(Arc::clone(&generation));
        match generation
            .router
            .call(ToolCallContext::new(self, request, context))
            .await
        {
            // Arguments that do not fit the schema are the agent's to fix:
            // report them as a tool error it can read, and count them.
            Err(err) if err.code == ErrorCode::INVALID_PARAMS => {
                let invalid = QueryError::InvalidArgument(err.message.to_string());
                Ok(respond::refuse(&name, &caller, invalid, &*self.inner.observer).into())
            }
            // rmcp answered without running the tool (arguments it could
            // not read into the tool's type): every call is on the record.
            Ok(CallToolResponse::Complete(result))
                if !caller.reported.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                let why = result
                    .content
                    .iter()
                    .find_map(|block| block.as_text().map(|text| text.text.clone()))
                    .unwrap_or_else(|| "the arguments do not fit the tool".into());
                let invalid = QueryError::InvalidArgument(why);
                Ok(respond::refuse(&name, &caller, invalid, &*self.inner.observer).into())
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(session: &str) -> axum::http::request::Parts {
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        parts
            .extensions
            .insert(AssignedSession(session.to_string()));
        parts
    }

    #[test]
    fn the_request_head_is_found_as_rmcp_puts_it_and_once_shared() {
        let mut extensions = rmcp::model::Extensions::new();
        assert!(http_parts(&extensions).is_none(), "stdio: no head");
        extensions.insert(head_with("as-given"));
        let found = http_parts(&extensions).and_then(|p| p.extensions.get::<AssignedSession>());
        assert_eq!(found, Some(&AssignedSession("as-given".into())));
        let mut extensions = rmcp::model::Extensions::new();
        extensions.insert(Arc::new(head_with("shared")));
        let found = http_parts(&extensions).and_then(|p| p.extensions.get::<AssignedSession>());
        assert_eq!(found, Some(&AssignedSession("shared".into())));
    }
}
