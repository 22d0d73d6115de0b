//! Streamable HTTP: both protocol eras, auth, DNS rebinding protection,
//! body limits and malformed requests against the server run in-process
//! (the same assembly as the binary's); startup refusals and SIGTERM
//! against the binary itself.

use crate::common;

use common::in_process::InProcessServer;
use common::mcp::{call, rows, structured, HttpServer, ERAS};
use common::TestDb;
use serde_json::json;

const TOKEN: &str = "test-token-0123456789";

fn initialize_body() -> String {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    })
    .to_string()
}

async fn post(server: &InProcessServer, headers: &[(&str, &str)], body: String) -> (u16, String) {
    let client = crate::common::mcp::http_client();
    let mut request = client
        .post(server.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn both_protocol_eras_are_served_over_http() {
    let db = TestDb::new().with_demo_data();
    let server = InProcessServer::start(db.path(), &[]);
    for era in ERAS {
        let client = server.client(None, &era).await;
        assert_eq!(client.peer_info().unwrap().protocol_version, era);
        let result = call(
            &client,
            "query",
            json!({"sql": "SELECT count(*) AS n FROM creators"}),
        )
        .await;
        assert_eq!(rows(&result)["rows"], json!([[40]]));
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn stateless_mode_serves_both_eras() {
    let db = TestDb::new().with_demo_data();
    let server = InProcessServer::start(db.path(), &[("EROS_MCP_STATELESS", "true")]);
    for era in ERAS {
        let client = server.client(None, &era).await;
        let result = call(&client, "list_tables", json!({"pattern": "creator"})).await;
        assert_eq!(structured(&result)["tables"].as_array().unwrap().len(), 2);
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn with_a_token_requests_without_it_get_401() {
    let db = TestDb::new().with_demo_data();
    let server = InProcessServer::start(db.path(), &[("EROS_MCP_AUTH_TOKEN", TOKEN)]);
    let (status, body) = post(&server, &[], initialize_body()).await;
    assert_eq!(status, 401);
    assert_eq!(body, "unauthorized", "a refusal says nothing more");
    let (status, _) = post(
        &server,
        &[("authorization", "Bearer wrong-token-0123456789")],
        initialize_body(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &server,
        &[("authorization", &format!("Bearer {TOKEN}"))],
        initialize_body(),
    )
    .await;
    assert_eq!(status, 200);
    for era in ERAS {
        let client = server.client(Some(TOKEN), &era).await;
        let result = call(&client, "query", json!({"sql": "SELECT 1"})).await;
        assert_eq!(rows(&result)["rows"], json!([[1]]));
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn a_foreign_origin_or_host_is_refused() {
    let db = TestDb::new().with_demo_data();
    let server = InProcessServer::start(db.path(), &[]);
    let (status, _) = post(
        &server,
        &[("origin", "http://evil.example")],
        initialize_body(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post(&server, &[("host", "evil.example")], initialize_body()).await;
    assert_eq!(status, 403);
    let origin = format!("http://127.0.0.1:{}", server.port);
    let (status, _) = post(&server, &[("origin", &origin)], initialize_body()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let db = TestDb::new().with_demo_data();
    let server = InProcessServer::start(db.path(), &[("EROS_MCP_MAX_BODY_BYTES", "4096")]);
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"padding": "x".repeat(10_000)}});
    let (status, _) = post(&server, &[], big.to_string()).await;
    assert_eq!(status, 413);
    let (status, _) = post(&server, &[], initialize_body()).await;
    assert_eq!(status, 200, "the server lives on");
}

#[tokio::test]
async fn malformed_json_rpc_gets_an_error_and_the_server_lives_on() {
    let db = TestDb::new().with_demo_data();
    let server = InProcessServer::start(db.path(), &[]);
    for body in [
        "{not json",
        "[]",
        "{\"jsonrpc\":\"2.0\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":42}",
        "",
    ] {
        let (status, _) = post(&server, &[], body.to_string()).await;
        assert!((400..500).contains(&status), "{body:?} got {status}");
    }
    let client = server.client(None, &ERAS[0]).await;
    let result = call(&client, "query", json!({"sql": "SELECT 2"})).await;
    assert_eq!(rows(&result)["rows"], json!([[2]]));
    client.cancel().await.unwrap();
}

#[test]
fn a_public_address_without_a_token_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .current_dir(dir.path())
        .env_clear()
        .env("EROS_MCP_TRANSPORT", "http")
        .env("EROS_MCP_HTTP_ADDR", "0.0.0.0:0")
        .env("EROS_METRICS_ADDR", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("EROS_MCP_HTTP_ADDR") && stderr.contains("EROS_MCP_AUTH_TOKEN"),
        "{stderr}"
    );
}

#[test]
fn a_taken_port_fails_fast_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .current_dir(dir.path())
        .env_clear()
        .env("EROS_MCP_TRANSPORT", "http")
        .env("EROS_MCP_HTTP_ADDR", &addr)
        .env("EROS_METRICS_ADDR", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_http_server_cleanly() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start(db.path(), &[]);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!db.file("test.db-wal").exists());
}
