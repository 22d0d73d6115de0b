//! Named principals over HTTP with static tokens (`EROS_AUTH_TOKENS_FILE`):
//! each token's scopes decide which tools it is shown and may call, a call
//! outside them is refused before any SQL runs, and the file is re-read on
//! SIGHUP. A call outside its scopes gets 403 `insufficient_scope` before
//! any SQL runs. The real binary, a real MCP client.

use crate::common;

use common::token_entry;

use common::mcp::{call, post_json, rows, text, tools_call, Client, HttpServer};
use common::TestDb;
use rmcp::model::ProtocolVersion;
use serde_json::json;

const READER: &str = "reader-token-0123456789";
const WRITER: &str = "writer-token-0123456789";
const AUDITOR: &str = "auditor-token-0123456789";

/// A tool of its own scope, beside the example file's tools.
const PII_TOOL: &str = r#"
[[tools]]
name = "creator_emails"
description = "Every creator's email."
scope = "eros:pii"
sql = "SELECT handle, email FROM creators ORDER BY id"
"#;

/// A server with writes on, three principals (reader: eros:read; writer:
/// eros:read and eros:write; auditor: eros:read and eros:pii) and a
/// declared tool needing eros:pii.
fn server(db: &TestDb) -> HttpServer {
    start(db, false)
}

/// As [`server`], with the metrics sidecar.
fn server_observed(db: &TestDb) -> HttpServer {
    start(db, true)
}

fn start(db: &TestDb, observed: bool) -> HttpServer {
    start_with(db, observed, &[])
}

fn start_with(db: &TestDb, observed: bool, extra: &[(&str, &str)]) -> HttpServer {
    let tokens = db.file("tokens.toml");
    std::fs::write(
        &tokens,
        token_entry("reporting-agent", READER, &["eros:read"])
            + &token_entry("etl", WRITER, &["eros:read", "eros:write"])
            + &token_entry("auditor", AUDITOR, &["eros:read", "eros:pii"]),
    )
    .unwrap();
    let tools = db.file("tools.toml");
    std::fs::write(&tools, PII_TOOL).unwrap();
    let mut env = vec![
        ("EROS_DB_READ_ONLY", "false"),
        ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
        ("EROS_MCP_TOOLS_FILE", tools.to_str().unwrap()),
    ];
    env.extend_from_slice(extra);
    if observed {
        HttpServer::start_observed(db.path(), &env)
    } else {
        HttpServer::start(db.path(), &env)
    }
}

async fn client(server: &HttpServer, token: &str) -> Client {
    server
        .client(Some(token), &ProtocolVersion::V_2025_11_25)
        .await
}

async fn tool_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect();
    names.sort();
    names
}

async fn creators(client: &Client) -> serde_json::Value {
    rows(
        &call(
            client,
            "query",
            json!({ "sql": "SELECT count(*) FROM creators" }),
        )
        .await,
    )["rows"]
        .clone()
}

#[tokio::test]
async fn each_principal_is_shown_only_the_tools_its_scopes_allow() {
    let db = TestDb::new().with_demo_data();
    let server = server(&db);
    let reader = tool_names(&client(&server, READER).await).await;
    assert!(reader.contains(&"query".to_string()), "{reader:?}");
    assert!(!reader.contains(&"execute".to_string()), "{reader:?}");
    assert!(
        !reader.contains(&"creator_emails".to_string()),
        "{reader:?}"
    );
    let writer = tool_names(&client(&server, WRITER).await).await;
    assert!(writer.contains(&"execute".to_string()), "{writer:?}");
    assert!(
        !writer.contains(&"creator_emails".to_string()),
        "{writer:?}"
    );
    let auditor = tool_names(&client(&server, AUDITOR).await).await;
    assert!(
        auditor.contains(&"creator_emails".to_string()),
        "{auditor:?}"
    );
    assert!(!auditor.contains(&"execute".to_string()), "{auditor:?}");
}

/// A raw `tools/call` POST with `token`: (status, WWW-Authenticate, body).
async fn post(server: &HttpServer, token: &str, body: serde_json::Value) -> (u16, String, String) {
    let answer = post_json(server, Some(token), &body).await;
    (answer.status, answer.challenge, answer.body)
}

#[tokio::test]
async fn a_read_only_principal_calling_execute_gets_403_and_nothing_is_written() {
    let db = TestDb::new().with_demo_data();
    let server = server(&db);
    let reader = client(&server, READER).await;
    let before = creators(&reader).await;
    let (status, challenge, body) = post(
        &server,
        READER,
        tools_call("execute", json!({ "sql": "DELETE FROM creators" })),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        challenge,
        r#"Bearer error="insufficient_scope", scope="eros:write""#
    );
    assert_eq!(creators(&reader).await, before);
    let refused = call_error(&reader, "execute", json!({ "sql": "DELETE FROM creators" })).await;
    assert!(refused.contains("Insufficient scope"), "{refused}");
    assert_eq!(creators(&reader).await, before);
}

/// The error of a call the server refuses at the HTTP level.
async fn call_error(client: &Client, tool: &str, arguments: serde_json::Value) -> String {
    let request = rmcp::model::CallToolRequestParams::new(tool.to_string())
        .with_arguments(arguments.as_object().unwrap().clone());
    match client.call_tool(request).await {
        Ok(result) => panic!("{tool} was not refused: {}", text(&result)),
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn a_principal_with_the_write_scope_writes() {
    let db = TestDb::new().with_demo_data();
    let server = server(&db);
    let writer = client(&server, WRITER).await;
    let result = call(
        &writer,
        "execute",
        json!({ "sql": "UPDATE creators SET display_name = 'x' WHERE id = 1" }),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
}

#[tokio::test]
async fn a_declared_tool_of_its_own_scope_runs_only_for_its_holders() {
    let db = TestDb::new().with_demo_data();
    let server = server(&db);
    let (status, challenge, _) =
        post(&server, READER, tools_call("creator_emails", json!({}))).await;
    assert_eq!(status, 403);
    assert!(challenge.contains(r#"scope="eros:pii""#), "{challenge}");
    let allowed = call(&client(&server, AUDITOR).await, "creator_emails", json!({})).await;
    assert_ne!(allowed.is_error, Some(true), "{}", text(&allowed));
}

#[tokio::test]
async fn refusals_are_counted_by_reason_and_by_scope() {
    let db = TestDb::new().with_demo_data();
    let server = server_observed(&db);
    let count = |name: &str| {
        let (_, metrics) = server.sidecar("/metrics");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let unknown = r#"mcp_auth_failures_total{reason="unknown_token"}"#;
    let missing = r#"mcp_auth_failures_total{reason="missing_token"}"#;
    let write = r#"mcp_auth_scope_refusals_total{scope="eros:write"}"#;
    let before = (count(unknown), count(missing), count(write));
    let _ = post(
        &server,
        "not-a-listed-token-0123",
        tools_call("query", json!({})),
    )
    .await;
    let _ = post(
        &server,
        READER,
        tools_call("execute", json!({ "sql": "SELECT 1" })),
    )
    .await;
    assert_eq!(count(unknown), before.0 + 1);
    assert_eq!(count(missing), before.1);
    assert_eq!(count(write), before.2 + 1);
}

#[tokio::test]
async fn a_token_not_in_the_file_is_refused_with_401() {
    let db = TestDb::new().with_demo_data();
    let server = server(&db);
    let outsider = eros_bench::client::http(
        &server.url(),
        Some("not-a-listed-token-0123"),
        &common::mcp::handshake(&ProtocolVersion::V_2025_11_25),
    )
    .await;
    let Err(err) = outsider else {
        panic!("an unlisted token was let in");
    };
    assert!(err.to_string().contains("Auth required"), "{err}");
}

#[tokio::test]
async fn sighup_rereads_the_tokens_file_so_tokens_rotate_without_a_restart() {
    let db = TestDb::new().with_demo_data();
    let mut server = server(&db);
    let rotated = "rotated-reader-token-0123";
    std::fs::write(
        db.file("tokens.toml"),
        token_entry("reporting-agent", rotated, &["eros:read"]),
    )
    .unwrap();
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: kill(2) on the server this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let url = server.url();
    let handshake = common::mcp::handshake(&ProtocolVersion::V_2025_11_25);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let old = eros_bench::client::http(&url, Some(READER), &handshake).await;
        if old.is_err() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removed token still works after SIGHUP"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let new = client(&server, rotated).await;
    assert_eq!(creators(&new).await, json!([[40]]));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the server"
    );
}

/// A raw request to `/mcp` in a 2025-11-25 session: `method` with `body`,
/// `token` as the bearer, `session` as `Mcp-Session-Id`. (status, session
/// id answered, body).
async fn raw(
    server: &HttpServer,
    method: reqwest::Method,
    token: &str,
    session: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, Option<String>, String) {
    let mut request = crate::common::mcp::http_client()
        .request(method, server.url())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("authorization", format!("Bearer {token}"));
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    (status, session, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_belongs_to_the_principal_that_opened_it() {
    let db = TestDb::new().with_demo_data();
    let server = server(&db);
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "owner", "version": "0"}}});
    let (status, session, _) = raw(
        &server,
        reqwest::Method::POST,
        WRITER,
        None,
        Some(initialize),
    )
    .await;
    assert_eq!(status, 200);
    let session = session.expect("a session id");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    // The control: its owner uses it.
    raw(
        &server,
        reqwest::Method::POST,
        WRITER,
        Some(&session),
        Some(initialized),
    )
    .await;
    let (status, _, body) = raw(
        &server,
        reqwest::Method::POST,
        WRITER,
        Some(&session),
        Some(list.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("execute"), "{body}");
    // Another principal holding the id: no such session, for calls and DELETE.
    let (status, _, body) = raw(
        &server,
        reqwest::Method::POST,
        READER,
        Some(&session),
        Some(list.clone()),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = raw(
        &server,
        reqwest::Method::DELETE,
        READER,
        Some(&session),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // The owner's session is untouched.
    let (status, _, body) = raw(
        &server,
        reqwest::Method::POST,
        WRITER,
        Some(&session),
        Some(list),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = raw(
        &server,
        reqwest::Method::DELETE,
        WRITER,
        Some(&session),
        None,
    )
    .await;
    assert!(status == 200 || status == 204, "{status}");
}

fn initialize() -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "opener", "version": "0"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_take_every_session() {
    let db = TestDb::new().with_demo_data();
    let server = start_with(
        &db,
        false,
        &[
            ("EROS_MCP_MAX_SESSIONS", "8"),
            ("EROS_MCP_MAX_SESSIONS_PER_PRINCIPAL", "3"),
            ("EROS_MCP_MAX_UNAUTHENTICATED_PER_ADDRESS", "64"),
        ],
    );
    // Twelve at once, so the cap holds against a race, not only in turn.
    let opened = futures::future::join_all((0..12).map(|_| {
        raw(
            &server,
            reqwest::Method::POST,
            READER,
            None,
            Some(initialize()),
        )
    }))
    .await;
    let sessions: Vec<String> = opened
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .filter_map(|(_, session, _)| session.clone())
        .collect();
    assert_eq!(sessions.len(), 3, "{opened:?}");
    for (status, _, body) in &opened {
        assert!(*status == 200 || *status == 503, "{status} {body}");
        if *status == 503 {
            assert!(
                body.contains("EROS_MCP_MAX_SESSIONS_PER_PRINCIPAL"),
                "{body}"
            );
        }
    }
    // Every session handed out is open and usable.
    for session in &sessions {
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        let (status, _, body) = raw(
            &server,
            reqwest::Method::POST,
            READER,
            Some(session),
            Some(list),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // Other principals still open sessions.
    let (status, session, body) = raw(
        &server,
        reqwest::Method::POST,
        WRITER,
        None,
        Some(initialize()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(session.is_some());
    // Ending one of its sessions gives the principal one back.
    let (status, _, _) = raw(
        &server,
        reqwest::Method::DELETE,
        READER,
        Some(&sessions[0]),
        None,
    )
    .await;
    assert!(status == 200 || status == 204, "{status}");
    let (status, _, body) = raw(
        &server,
        reqwest::Method::POST,
        READER,
        None,
        Some(initialize()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Keeps up to `connections` idle connections from `source` open to the
/// server, reopening each the server closes, until `stop`; returns how
/// many it opened. Each sends the first byte of a request and no more:
/// the kernel hands the server a connection once its first bytes arrive
/// (TCP_DEFER_ACCEPT). A connect that is not answered in 300 ms (a full
/// accept queue drops SYNs, which the kernel retries for two minutes) is
/// given up, and `stop` is heard between connects, so the flood always
/// ends when told.
fn flood(
    port: u16,
    source: std::net::Ipv4Addr,
    connections: usize,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);
    tokio::spawn(async move {
        let mut opened = 0;
        let mut held = Vec::new();
        while !stop.is_cancelled() {
            held.retain(|stream: &tokio::net::TcpStream| {
                let mut byte = [0u8; 1];
                // Closed by the server (EOF or a 503 already read): reopen.
                stream.try_read(&mut byte).is_err()
            });
            while held.len() < connections && !stop.is_cancelled() {
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                    break;
                };
                if socket
                    .bind(std::net::SocketAddr::from((source, 0)))
                    .is_err()
                {
                    break;
                }
                let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(server)).await {
                    Ok(Ok(stream)) => {
                        opened += 1;
                        let _ = stream.try_write(b"P");
                        held.push(stream);
                    }
                    _ => break,
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        opened
    })
}

/// A 2026-07-28 `tools/call`, served without a session.
fn stateless_call() -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
    "name": "query", "arguments": {"sql": "SELECT 1"},
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    }}})
}

/// A `tools/call` on a connection of its own from 127.0.0.1: its status,
/// 0 when the connection was refused before the request was answered (the
/// server's 503 arrives before the request is sent).
async fn fresh_connection_call(server: &HttpServer) -> u16 {
    let body = stateless_call();
    let answer = crate::common::mcp::http_client()
        .post(server.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "query")
        .header("authorization", format!("Bearer {READER}"))
        .timeout(std::time::Duration::from_secs(10))
        .body(body.to_string())
        .send()
        .await;
    answer.map_or(0, |answer| answer.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_token_cannot_crowd_out_authenticated_clients() {
    let db = TestDb::new().with_demo_data();
    let server = start_with(
        &db,
        false,
        &[
            ("EROS_MCP_MAX_CONNECTIONS", "64"),
            ("EROS_MCP_MAX_UNAUTHENTICATED", "32"),
            ("EROS_MCP_MAX_UNAUTHENTICATED_PER_ADDRESS", "8"),
            ("EROS_MCP_AUTH_TIMEOUT", "1"),
        ],
    );
    let stop = tokio_util::sync::CancellationToken::new();
    // Another address opens five hundred connections and reopens them.
    let attacker = flood(server.port, [127, 0, 0, 2].into(), 500, stop.clone());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(fresh_connection_call(&server).await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // The control: the same flood from the clients' own address takes the
    // budget they need too, so the flood is real.
    let same = flood(server.port, [127, 0, 0, 1].into(), 500, stop.clone());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut crowded = Vec::new();
    for _ in 0..10 {
        crowded.push(fresh_connection_call(&server).await);
    }
    stop.cancel();
    assert!(
        attacker.await.unwrap() > 500,
        "the server never closed a flood connection"
    );
    same.await.unwrap();
    assert!(crowded.iter().any(|status| *status != 200), "{crowded:?}");
}
