//! Read replicas under load, with the real Litestream binary: a primary
//! under `litestream replicate` and three replicas, each a follower
//! (`litestream restore -f`) and an eros-mcp replica. A write through the
//! primary reaches all three; readers never see half of a transaction the
//! follower is applying; any replica answers any request (no sessions);
//! and no route the attack suite knows writes through a replica.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::attacks::{fingerprint, ATTACKS};
use common::litestream::{eventually, execute, select, try_select, Cluster};
use common::mcp::{call, rows, text};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_the_primary_reaches_three_replicas() {
    let cluster = Cluster::start(3).await;
    let writer = cluster.writer().await;
    execute(&writer, "CREATE TABLE notes (body TEXT)").await;
    execute(&writer, "INSERT INTO notes VALUES ('to every replica')").await;
    for (i, replica) in cluster.replicas.iter().enumerate() {
        let reader = replica.client().await;
        eventually(&format!("the write on replica {i}"), async || {
            try_select(&reader, "SELECT body FROM notes").await
                == Some(json!([["to every replica"]]))
        })
        .await;
    }
}

/// Two accounts of 500 each, on different pages (each row carries 3,000
/// bytes of padding), so a transfer changes two pages in one transaction.
const ACCOUNTS: &str =
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB);
     INSERT INTO accounts VALUES (1, 500, zeroblob(3000)), (2, 500, zeroblob(3000))";
const TOTAL: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_three_replicas_never_see_half_a_transfer() {
    // A sync every 50 ms: each transfer reaches the followers in its own
    // apply, or nearly, so the readers race many applies.
    let cluster = Cluster::start_syncing_every(3, Duration::from_millis(50)).await;
    let writer = cluster.writer().await;
    for statement in ACCOUNTS.split(';') {
        execute(&writer, statement).await;
    }
    let pages: i64 = select(
        &writer,
        "SELECT count(DISTINCT pageno) FROM dbstat WHERE name = 'accounts'",
    )
    .await[0][0]
        .as_i64()
        .unwrap_or(0);
    assert!(pages >= 2, "both accounts on one page ({pages})");
    let mut readers = Vec::new();
    for (i, replica) in cluster.replicas.iter().enumerate() {
        let reader = replica.client().await;
        eventually(&format!("the accounts on replica {i}"), async || {
            try_select(&reader, "SELECT count(*) FROM accounts").await == Some(json!([[2]]))
        })
        .await;
        readers.push(reader);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let checks: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, reader)| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move { check_transfers(i, reader, stop).await })
        })
        .collect();
    // Move amounts back and forth for a while: every transfer is one
    // statement, so one transaction touching both rows.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut transfers = 0u64;
    while Instant::now() < deadline {
        let amount = 1 + transfers % 97;
        let sql = format!(
            "UPDATE accounts SET balance = balance + CASE id WHEN 1 THEN -{amount} ELSE {amount} END"
        );
        execute(&writer, &sql).await;
        transfers += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last transfer reaches every replica while the readers go on.
    let last = select(&writer, "SELECT balance FROM accounts WHERE id = 1").await;
    for (i, replica) in cluster.replicas.iter().enumerate() {
        let reader = replica.client().await;
        eventually(&format!("the last transfer on replica {i}"), async || {
            try_select(&reader, "SELECT balance FROM accounts WHERE id = 1").await
                == Some(last.clone())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for check in checks {
        let seen = check.await.unwrap();
        eprintln!(
            "replica {}: {} reads, {} states of {transfers} transfers",
            seen.replica, seen.reads, seen.states
        );
        assert!(
            seen.states >= 3,
            "replica {}: {} reads saw {} states of {transfers} transfers: the follower applied nothing while it was read",
            seen.replica,
            seen.reads,
            seen.states
        );
    }
}

/// What one reader saw.
struct Seen {
    replica: usize,
    reads: u64,
    /// Distinct balances of account 1 observed.
    states: usize,
}

/// Reads both accounts until `stop`, panicking at the first read that fails
/// or whose sum is not [`TOTAL`].
async fn check_transfers(
    replica: usize,
    reader: common::mcp::Client,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut balances = std::collections::BTreeSet::new();
    let mut reads = 0;
    while !stop.load(Ordering::Relaxed) {
        let result = call(
            &reader,
            "query",
            json!({ "sql": "SELECT sum(balance), min(CASE id WHEN 1 THEN balance END) FROM accounts" }),
        )
        .await;
        assert_ne!(
            result.is_error,
            Some(true),
            "replica {replica}: a read failed during an apply: {}",
            text(&result)
        );
        let row = &rows(&result)["rows"][0];
        assert_eq!(
            row[0],
            json!(TOTAL),
            "replica {replica}: a read saw half a transfer: {row}"
        );
        balances.insert(row[1].as_i64().unwrap());
        reads += 1;
    }
    Seen {
        replica,
        reads,
        states: balances.len(),
    }
}

/// A JSON-RPC POST to `url` without a session: (status, session id header, body).
async fn post(url: &str, body: Value) -> (u16, Option<String>, String) {
    let response = crate::common::mcp::http_client()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    (status, session, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_answers_a_call_without_a_session() {
    let cluster = Cluster::start(2).await;
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    });
    let (status, session, body) = post(&cluster.replicas[0].url(), initialize).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(session, None, "a replica handed out a session: {body}");

    // The next call goes to the other replica, which never saw the client.
    let call = json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "query", "arguments": {"sql": "SELECT 40 + 2 AS answer"}}
    });
    let (status, _, body) = post(&cluster.replicas[1].url(), call).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("42"),
        "no answer from the second replica: {body}"
    );
}

/// Whether a call was refused: a tool error, or an error at the protocol
/// level (a tool the replica does not offer).
async fn refused(client: &common::mcp::Client, tool: &str, arguments: Value) -> bool {
    let request = rmcp::model::CallToolRequestParams::new(tool.to_string())
        .with_arguments(arguments.as_object().unwrap().clone());
    match client.call_tool(request).await {
        Ok(result) => result.is_error == Some(true),
        Err(_) => true,
    }
}

/// The `users` table of the attack suite, on the primary.
const USERS: &str = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
     INSERT INTO users (name) VALUES ('ada'), ('grace')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_every_write_the_attack_suite_knows() {
    // The example tools: three reads and `pause_creator`, a write.
    let tools_file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tools.toml");
    let mut cluster = Cluster::start_with(1, &[], &[("EROS_MCP_TOOLS_FILE", tools_file)]).await;
    let writer = cluster.writer().await;
    for statement in USERS.split(';') {
        execute(&writer, statement).await;
    }
    let replica = &mut cluster.replicas[0];
    let reader = replica.client().await;
    eventually("the users on the replica", async || {
        try_select(&reader, "SELECT count(*) FROM users").await == Some(json!([[2]]))
    })
    .await;
    // With the follower stopped nothing but a write through the replica
    // could change its files.
    replica.kill_follower();
    let copy_dir = replica.copy.parent().unwrap().to_path_buf();
    let before = fingerprint(&copy_dir);
    // Attacks that would create files aim at the replica's directory.
    let attack_dir = copy_dir.display().to_string();

    let tools = reader.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"get_creator_profile"),
        "declared read tool missing: {names:?}"
    );
    assert!(!names.contains(&"execute"), "execute offered: {names:?}");
    assert!(
        !names.contains(&"pause_creator"),
        "declared write tool offered: {names:?}"
    );

    for (name, sql) in ATTACKS {
        let sql = sql.replace("ATTACKDIR", &attack_dir);
        for tool in ["query", "explain_query"] {
            assert!(
                refused(&reader, tool, json!({ "sql": sql })).await,
                "{name} through {tool} was not refused"
            );
        }
    }
    assert!(
        refused(&reader, "execute", json!({ "sql": "DELETE FROM users" })).await,
        "execute ran on a replica"
    );
    assert!(
        refused(&reader, "pause_creator", json!({ "creator_id": 1 })).await,
        "the declared write tool ran on a replica"
    );
    let injected = json!({ "table": "users); DROP TABLE users; --" });
    assert!(refused(&reader, "describe_table", injected).await);

    assert_eq!(
        fingerprint(&copy_dir),
        before,
        "a write reached the replica's files"
    );
    assert_eq!(
        select(&reader, "SELECT id, name FROM users ORDER BY id").await,
        json!([[1, "ada"], [2, "grace"]])
    );
    assert_eq!(
        select(&writer, "SELECT id, name FROM users ORDER BY id").await,
        json!([[1, "ada"], [2, "grace"]])
    );
}
