//! eros-mcp as an OAuth 2.1 resource server, the real binary in front of a
//! real authorization server (npm's oidc-provider on loopback): a request
//! without a valid token gets 401 naming the Protected Resource Metadata,
//! which names the issuer and the scopes; a token's scopes decide what its
//! client may do; a token for another resource is refused; the official
//! MCP Python SDK connects with a token it was issued.

use crate::common;

use std::process::Command;

use common::mcp::{call, free_port, post_json, rows, text, tools_call, HttpServer};
use common::oauth::{AuthServer, AGENT};
use common::TestDb;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

/// A server with writes on, trusting `issuer`; its audience is its own URL.
fn server(db: &TestDb, issuer: &AuthServer) -> HttpServer {
    let port = free_port();
    let audience = audience(port);
    HttpServer::start_at(
        port,
        db.path(),
        &[
            ("EROS_DB_READ_ONLY", "false"),
            ("EROS_AUTH_ISSUER", &issuer.issuer()),
            ("EROS_AUTH_AUDIENCE", &audience),
        ],
    )
}

fn audience(port: u16) -> String {
    format!("http://127.0.0.1:{port}/mcp")
}

/// A raw `tools/call` POST with `token`: (status, WWW-Authenticate, body).
async fn post(server: &HttpServer, token: Option<&str>, body: Value) -> (u16, String, String) {
    let answer = post_json(server, token, &body).await;
    (answer.status, answer.challenge, answer.body)
}

fn metadata_url(server: &HttpServer) -> String {
    format!(
        "http://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp",
        server.port
    )
}

#[tokio::test]
async fn a_request_without_a_token_gets_401_naming_the_resource_metadata() {
    let issuer = AuthServer::start();
    let db = TestDb::new().with_demo_data();
    let server = server(&db, &issuer);
    let (status, challenge, _) = post(&server, None, tools_call("query", json!({}))).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge,
        format!("Bearer resource_metadata=\"{}\"", metadata_url(&server))
    );
    let metadata: Value = reqwest::get(metadata_url(&server))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], json!(audience(server.port)));
    assert_eq!(metadata["authorization_servers"], json!([issuer.issuer()]));
    let scopes = metadata["scopes_supported"].as_array().unwrap();
    assert!(scopes.contains(&json!("eros:read")), "{metadata}");
    assert!(scopes.contains(&json!("eros:write")), "{metadata}");
    // The unsuffixed form answers too.
    let plain = format!(
        "http://127.0.0.1:{}/.well-known/oauth-protected-resource",
        server.port
    );
    assert_eq!(reqwest::get(plain).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_read_token_reads_and_its_execute_gets_403_with_nothing_written() {
    let issuer = AuthServer::start();
    let db = TestDb::new().with_demo_data();
    let server = server(&db, &issuer);
    let token = issuer
        .token(AGENT, "eros:read", &audience(server.port))
        .await;
    let reader = server
        .client(Some(&token), &ProtocolVersion::V_2025_11_25)
        .await;
    let tools: Vec<String> = reader
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect();
    assert!(!tools.contains(&"execute".to_string()), "{tools:?}");
    let count = rows(
        &call(
            &reader,
            "query",
            json!({"sql": "SELECT count(*) FROM creators"}),
        )
        .await,
    )["rows"]
        .clone();
    assert_eq!(count, json!([[40]]));

    let (status, challenge, _) = post(
        &server,
        Some(&token),
        tools_call("execute", json!({"sql": "DELETE FROM creators"})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        challenge,
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"eros:write\", resource_metadata=\"{}\"",
            metadata_url(&server)
        )
    );
    let after = rows(
        &call(
            &reader,
            "query",
            json!({"sql": "SELECT count(*) FROM creators"}),
        )
        .await,
    )["rows"]
        .clone();
    assert_eq!(after, json!([[40]]), "a refused execute wrote");
}

#[tokio::test]
async fn a_write_token_executes() {
    let issuer = AuthServer::start();
    let db = TestDb::new().with_demo_data();
    let server = server(&db, &issuer);
    let token = issuer
        .token(AGENT, "eros:read eros:write", &audience(server.port))
        .await;
    let writer = server
        .client(Some(&token), &ProtocolVersion::V_2025_11_25)
        .await;
    let result = call(
        &writer,
        "execute",
        json!({"sql": "UPDATE creators SET display_name = 'renamed' WHERE id = 1"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
}

#[tokio::test]
async fn a_token_for_another_resource_is_refused_and_counted() {
    let issuer = AuthServer::start();
    let db = TestDb::new().with_demo_data();
    let server = server(&db, &issuer);
    let token = issuer
        .token(AGENT, "eros:read", "https://another.example.com/mcp")
        .await;
    let (status, challenge, _) = post(&server, Some(&token), tools_call("query", json!({}))).await;
    assert_eq!(status, 401);
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", resource_metadata="),
        "{challenge}"
    );
    let (_, metrics) = server.sidecar("/metrics");
    assert!(
        metrics.contains(r#"mcp_auth_failures_total{reason="wrong_audience"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_python_sdk_connects_with_an_issued_token() {
    let issuer = AuthServer::start();
    let db = TestDb::new().with_demo_data();
    let server = server(&db, &issuer);
    let token = issuer
        .token(AGENT, "eros:read", &audience(server.port))
        .await;
    let python = common::ops::repo().join("target/ops-tools/venv/bin/python");
    assert!(
        python.is_file(),
        "run .ci/provision: it installs the MCP Python SDK into target/ops-tools/venv"
    );
    let script = common::ops::repo().join("tests/fixtures/oauth/python_client.py");
    let output = Command::new(python)
        .arg(script)
        .arg(server.url())
        .arg(&token)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the Python SDK failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["is_error"], json!(false), "{line}");
    assert!(line["text"][0].as_str().unwrap().contains("40"), "{line}");
    let tools = line["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("query")), "{line}");
    assert!(!tools.contains(&json!("execute")), "{line}");
}

/// The audit log's lines, parsed.
fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn oauth_callers_and_refusals_are_in_the_audit_log() {
    use base64::Engine as _;
    let issuer = AuthServer::start();
    let db = TestDb::new().with_demo_data();
    let audit = db.file("audit.log");
    let port = free_port();
    let server = HttpServer::start_at(
        port,
        db.path(),
        &[
            ("EROS_DB_READ_ONLY", "false"),
            ("EROS_AUTH_ISSUER", &issuer.issuer()),
            ("EROS_AUTH_AUDIENCE", &audience(port)),
            ("EROS_AUDIT_LOG", audit.to_str().unwrap()),
        ],
    );
    let read = issuer.token(AGENT, "eros:read", &audience(port)).await;
    let elsewhere = issuer
        .token(AGENT, "eros:read", "https://another.example.com/mcp")
        .await;
    let b64 = |text: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "at+jwt"}).to_string()),
        b64(json!({"iss": issuer.issuer(), "aud": audience(port), "sub": "mallory", "scope": "eros:write", "exp": 4_000_000_000u64}).to_string())
    );

    let first = rows(&call_query(&server, &read).await)["rows"].clone();
    assert_eq!(first, json!([[40]]));
    // Refused for its scope, for its audience, for its missing signature.
    for (token, tool, sql, refusal) in [
        (&read, "execute", "DELETE FROM creators", 403),
        (&elsewhere, "query", "SELECT 1", 401),
        (&unsigned, "execute", "DELETE FROM creators", 401),
    ] {
        let (status, _, _) =
            post(&server, Some(token), tools_call(tool, json!({"sql": sql}))).await;
        assert_eq!(status, refusal, "{tool} with {token}");
    }

    let lines = audit_lines(&audit);
    let call = lines
        .iter()
        .find(|l| l["event"] == "tool_call")
        .unwrap_or_else(|| panic!("no tool_call line in {lines:?}"));
    assert_eq!(call["tool"], "query");
    assert_eq!(call["client_id"], AGENT, "{call}");
    assert_eq!(call["outcome"], "ok");
    let refused = lines
        .iter()
        .find(|l| l["event"] == "scope_refused")
        .unwrap_or_else(|| panic!("no scope_refused line in {lines:?}"));
    assert_eq!(refused["scope"], "eros:write");
    assert_eq!(refused["tool"], "execute");
    let reasons: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "authentication_failed")
        .map(|l| &l["reason"])
        .collect();
    assert!(reasons.contains(&&json!("wrong_audience")), "{lines:?}");
    assert!(
        reasons.contains(&&json!("unsupported_algorithm")),
        "{lines:?}"
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    for token in [&read, &elsewhere, &unsigned] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !text.contains(token.as_str()),
            "a token is in the audit log"
        );
        assert!(
            signature.is_empty() || !text.contains(signature),
            "a token's signature is in the audit log"
        );
    }
    let count = rows(&call_query(&server, &read).await)["rows"].clone();
    assert_eq!(count, json!([[40]]), "a refused call wrote");
}

async fn call_query(server: &HttpServer, token: &str) -> rmcp::model::CallToolResult {
    let client = server
        .client(Some(token), &ProtocolVersion::V_2025_11_25)
        .await;
    call(
        &client,
        "query",
        json!({"sql": "SELECT count(*) FROM creators"}),
    )
    .await
}
