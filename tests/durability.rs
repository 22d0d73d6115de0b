//! Every acknowledged write survives the server being killed with SIGKILL
//! in the middle of a write workload, and the database stays intact.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mcp::{call, HttpServer, ERAS};
use common::TestDb;
use serde_json::json;

const ROUNDS: usize = 4;
const WRITERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let db = TestDb::new().with_demo_data();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    for round in 0..ROUNDS {
        let server = HttpServer::start(db.path(), &[("EROS_DB_READ_ONLY", "false")]);
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let client = server.client(None, &ERAS[writer % 2]).await;
            let acknowledged = Arc::clone(&acknowledged);
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    let handle = format!("durable-{round}-{writer}-{i}");
                    let arguments = json!({
                        "sql": "INSERT INTO creators (handle, display_name, email) VALUES (:h, 'D', :h || '@example.org')",
                        "params": {"h": handle},
                    });
                    let request = rmcp::model::CallToolRequestParams::new("execute")
                        .with_arguments(arguments.as_object().unwrap().clone());
                    match client.call_tool(request).await {
                        Ok(result) if result.is_error != Some(true) => acknowledged.lock().unwrap().push(handle),
                        // The server died mid-call: the write is not acknowledged.
                        _ => break,
                    }
                }
            }));
        }
        // Let the workload run, then kill the server without warning.
        tokio::time::sleep(Duration::from_millis(300 + 150 * round as u64)).await;
        let before_kill = acknowledged.lock().unwrap().len();
        let mut server = server;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        // A call in flight at the kill may never be answered: it is not acknowledged.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for writer in writers {
            writer.abort();
            let _ = writer.await;
        }
        assert!(acknowledged.lock().unwrap().len() > before_kill.saturating_sub(1));
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 50,
        "the workload wrote too little to mean anything: {}",
        acknowledged.len()
    );

    // Reopen after the last kill, through the server itself, then check the file.
    let server = HttpServer::start(db.path(), &[]);
    let client = server.client(None, &ERAS[0]).await;
    let result = call(
        &client,
        "query",
        json!({"sql": "SELECT count(*) FROM creators WHERE handle LIKE 'durable-%'"}),
    )
    .await;
    let stored = result.structured_content.unwrap()["rows"][0][0]
        .as_i64()
        .unwrap() as usize;
    assert!(
        stored >= acknowledged.len(),
        "{stored} stored < {} acknowledged",
        acknowledged.len()
    );
    client.cancel().await.unwrap();
    drop(server);

    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let mut present = conn
        .prepare("SELECT 1 FROM creators WHERE handle = ?")
        .unwrap();
    for handle in &acknowledged {
        assert!(
            present.exists([handle]).unwrap(),
            "acknowledged write {handle} was lost"
        );
    }
}
