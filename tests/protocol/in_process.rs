//! The protocol's edges driven in-process, with no server process and no
//! socket: the HTTP router through `tower::ServiceExt::oneshot`, and the
//! stdio loop over an in-memory duplex stream. The server behind them is
//! the real one (`app::build` on a real SQLite file).

use crate::common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::TestDb;
use eros_mcp::app::{self, Observers};
use eros_mcp::config::Config;
use eros_mcp::mcp::{CallTracker, ErosServer};
use eros_mcp::shutdown::Shutdown;
use eros_mcp::transport::{http, stdio, NoTransportObserver};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tower::ServiceExt;

/// The configuration of a server on `db`, with `vars` set.
fn config(db: &TestDb, vars: &[(&str, &str)]) -> Config {
    let mut all = vec![("EROS_DB_PATH".to_string(), db.path().display().to_string())];
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_vars(all).unwrap()
}

async fn server(config: &Config) -> ErosServer {
    app::build(config, &Observers::default(), CallTracker::new())
        .await
        .unwrap()
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"in-process","version":"0"}}}"#;

/// A POST to `/mcp` with `body`, from `host`.
fn post(host: &str, body: &str) -> Request<Body> {
    Request::post("/mcp")
        .header("host", host)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn router(db: &TestDb, vars: &[(&str, &str)]) -> axum::Router {
    let config = config(db, vars);
    http::mcp_router(
        server(&config).await,
        &config.mcp.http_settings(),
        None,
        Arc::new(NoTransportObserver),
    )
}

async fn body_text(response: axum::response::Response) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).to_string()
}

#[tokio::test]
async fn an_initialize_over_http_opens_a_session() {
    let db = TestDb::new().with_demo_data();
    let app = router(&db, &[]).await;
    let response = app.oneshot(post("localhost", INITIALIZE)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("mcp-session-id"));
    let text = body_text(response).await;
    assert!(text.contains("\"protocolVersion\""), "{text}");
}

#[tokio::test]
async fn a_host_not_allowed_is_refused_before_anything_else() {
    let db = TestDb::new().with_demo_data();
    let app = router(&db, &[]).await;
    let response = app.oneshot(post("evil.example", INITIALIZE)).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The control: the same request from an allowed host is served.
    let app = router(&db, &[]).await;
    let response = app.oneshot(post("127.0.0.1", INITIALIZE)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn text_that_is_not_json_is_a_parse_error_with_a_null_id() {
    let db = TestDb::new().with_demo_data();
    let app = router(&db, &[]).await;
    let response = app.oneshot(post("localhost", "{not json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(answer["error"]["code"], -32700);
    assert_eq!(answer["id"], Value::Null);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let db = TestDb::new().with_demo_data();
    let app = router(&db, &[("EROS_MCP_MAX_BODY_BYTES", "1024")]).await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(2048)
    );
    let response = app.oneshot(post("localhost", &big)).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// One JSON-RPC line written to the server's stdin side, one read back.
async fn exchange(
    to_server: &mut tokio::io::DuplexStream,
    from_server: &mut BufReader<tokio::io::DuplexStream>,
    message: &Value,
) -> Value {
    to_server
        .write_all(format!("{message}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    from_server.read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"))
}

#[tokio::test]
async fn a_query_over_stdio_in_memory_answers_rows() {
    let db = TestDb::new().with_demo_data();
    let config = config(&db, &[]);
    let server = server(&config).await;
    let (mut to_server, server_input) = tokio::io::duplex(1 << 16);
    let (server_output, from_server) = tokio::io::duplex(1 << 16);
    let shutdown = Shutdown::new();
    let options = config.mcp.stdio_options(Arc::new(NoTransportObserver));
    let served = tokio::spawn(stdio::serve_on(
        server,
        CallTracker::new(),
        shutdown.clone(),
        options,
        server_input,
        server_output,
    ));
    let mut from_server = BufReader::new(from_server);
    let init: Value = serde_json::from_str(INITIALIZE).unwrap();
    let answer = exchange(&mut to_server, &mut from_server, &init).await;
    assert!(answer["result"]["serverInfo"].is_object(), "{answer}");
    to_server
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await
        .unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "query", "arguments": {"sql": "SELECT count(*) AS n FROM creators"}}});
    let answer = exchange(&mut to_server, &mut from_server, &call).await;
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("40"), "{answer}");
    // A client that leaves ends the session, and the loop returns.
    drop(to_server);
    served.await.unwrap().unwrap();
    assert!(shutdown.is_triggered());
}
