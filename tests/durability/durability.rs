//! Every acknowledged write survives the server being killed with SIGKILL
//! in the middle of a write workload, and the database stays intact.

use crate::common;

use std::sync::{Arc, Mutex};

use std::time::Duration;

use common::mcp::{call, rows, HttpServer, ERAS};
use common::writes::{assert_every_write_present, spawn_writer};
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
            writers.push(spawn_writer(
                client,
                format!("durable-{round}-{writer}"),
                Arc::clone(&acknowledged),
            ));
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
    let stored = rows(&result)["rows"][0][0].as_i64().unwrap() as usize;
    assert!(
        stored >= acknowledged.len(),
        "{stored} stored < {} acknowledged",
        acknowledged.len()
    );
    client.cancel().await.unwrap();
    drop(server);

    assert_every_write_present(db.path(), &acknowledged);
}
