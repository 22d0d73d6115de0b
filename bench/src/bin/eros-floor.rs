//! The floor of this stack: a bare rmcp server whose one `query` tool runs
//! the SQL inline, on one rusqlite connection, on the async thread, and
//! answers naive CSV. No pool, no worker processes, no bounds, no metrics,
//! no auth: what any server built on rmcp and SQLite pays at least. It
//! speaks stdio, or streamable HTTP with `--http ADDR` (rmcp's service with
//! its default configuration, nested in axum). `eros-bench floor` runs it
//! and eros-mcp interleaved with the same clients, so a claim about
//! eros-mcp's cost is a ratio to this (BENCHMARKS.md).
//!
//! Never serve real data with it: one slow statement stalls it, and
//! nothing stops one.

use std::sync::{Arc, Mutex};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{tool, tool_handler, tool_router, ServerHandler, ServiceExt};
use rusqlite::types::ValueRef;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
struct QueryRequest {
    /// One SQL statement.
    sql: String,
}

#[derive(Clone)]
struct Floor {
    conn: Arc<Mutex<rusqlite::Connection>>,
    tool_router: ToolRouter<Self>,
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Floor {}

#[tool_router(router = tool_router)]
impl Floor {
    /// Runs one SQL statement and answers its rows as CSV.
    #[tool(name = "query")]
    async fn query(&self, Parameters(request): Parameters<QueryRequest>) -> Result<String, String> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn.prepare(&request.sql).map_err(|e| e.to_string())?;
        let width = stmt.column_count();
        let mut out = stmt.column_names().join(",");
        out.push('\n');
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            for i in 0..width {
                if i > 0 {
                    out.push(',');
                }
                match row.get_ref(i).map_err(|e| e.to_string())? {
                    ValueRef::Null => {}
                    ValueRef::Integer(n) => out.push_str(&n.to_string()),
                    ValueRef::Real(r) => out.push_str(&r.to_string()),
                    ValueRef::Text(t) => {
                        out.push('"');
                        out.push_str(&String::from_utf8_lossy(t).replace('"', "\"\""));
                        out.push('"');
                    }
                    ValueRef::Blob(b) => out.push_str(&format!("<{} bytes>", b.len())),
                }
            }
            out.push('\n');
        }
        Ok(out)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server's command line where it matters: `--db FILE`, and
    // `--http ADDR` for streamable HTTP (anything else is ignored).
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let db = value("--db").ok_or("usage: eros-floor --db FILE [--http ADDR]")?;
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let floor = Floor {
        conn: Arc::new(Mutex::new(conn)),
        tool_router: Floor::tool_router(),
    };
    match value("--http") {
        None => {
            let service = floor.serve(rmcp::transport::stdio()).await?;
            service.waiting().await?;
        }
        Some(addr) => {
            use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
            use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
            let service = StreamableHttpService::new(
                move || Ok(floor.clone()),
                Arc::new(LocalSessionManager::default()),
                StreamableHttpServerConfig::default(),
            );
            let router = axum::Router::new().nest_service("/mcp", service);
            let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
            axum::serve(listener, router).await?;
        }
    }
    Ok(())
}
