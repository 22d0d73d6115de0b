//! A write workload through the `execute` tool, and the check that every
//! write the server acknowledged is in the database file.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::mcp::Client;

/// Handles of the creators whose INSERT the server acknowledged.
pub type Acknowledged = Arc<Mutex<Vec<String>>>;

/// Inserts creators `{prefix}-0`, `{prefix}-1`, ... until a call fails (the
/// server stopped), recording each acknowledged one.
pub fn spawn_writer(
    client: Client,
    prefix: String,
    acknowledged: Acknowledged,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0.. {
            let handle = format!("{prefix}-{i}");
            let arguments = json!({
                "sql": "INSERT INTO creators (handle, display_name, email) VALUES (:h, 'W', :h || '@example.org')",
                "params": {"h": handle},
            });
            let request = rmcp::model::CallToolRequestParams::new("execute")
                .with_arguments(arguments.as_object().unwrap().clone());
            match client.call_tool(request).await {
                Ok(result) if result.is_error != Some(true) => {
                    acknowledged.lock().unwrap().push(handle)
                }
                // The server stopped mid-call: that write is not acknowledged.
                _ => break,
            }
        }
    })
}

/// Panics unless the database is intact and holds every acknowledged write.
pub fn assert_every_write_present(db: &Path, acknowledged: &[String]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let mut present = conn
        .prepare("SELECT 1 FROM creators WHERE handle = ?")
        .unwrap();
    for handle in acknowledged {
        assert!(
            present.exists([handle]).unwrap(),
            "acknowledged write {handle} was lost"
        );
    }
}
