//! Protocol edges and signals: what a client that sends malformed JSON,
//! misfit params or a reused id gets back over stdio (raw JSON lines to the
//! binary) and HTTP (raw requests on a socket to the server run
//! in-process), the HTTP checks on `Host`, `Origin` and session `DELETE`,
//! and what SIGHUP and SIGTERM do to the binary. One behaviour per test.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::in_process::InProcessServer;
use common::mcp::{call, HttpServer};
use serde_json::{json, Value};

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"protocol-edges-test","version":"0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// A statement that takes a moment (a few hundred milliseconds), long
/// enough for a second request to arrive while it runs.
const SLOW_INSERT: &str = "INSERT INTO marks SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) SELECT x FROM c)";

fn fresh_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edges.db");
    (dir, db)
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
}

/// An `eros-mcp` over stdio, spoken to in raw JSON lines; killed on drop.
struct StdioServer {
    child: Child,
    stdin: ChildStdin,
    /// Lines from stdout, read on a thread so a missing answer fails the
    /// test instead of hanging it.
    lines: std::sync::mpsc::Receiver<String>,
}

/// Forwards the lines of `stdout` until it closes.
fn read_lines(stdout: ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

impl StdioServer {
    fn start(db: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let mut command = binary();
        command
            .arg("serve")
            .arg("--db")
            .arg(db)
            .current_dir(db.parent().unwrap())
            .env_clear()
            .env("EROS_METRICS_ADDR", "off")
            .env("EROS_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn eros-mcp");
        let stdin = child.stdin.take().unwrap();
        let lines = read_lines(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Started and past the handshake.
    fn ready(db: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let mut server = Self::start(db, env);
        server.send(INITIALIZE.as_bytes());
        let answer = server.answer();
        assert_eq!(answer["id"], 0, "{answer}");
        server.send(INITIALIZED.as_bytes());
        server
    }

    /// Writes one line (a newline is added).
    fn send(&mut self, line: &[u8]) {
        self.stdin.write_all(line).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line the server writes, as JSON (fails after 30 s).
    fn answer(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("an answer within 30 s");
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"))
    }

    fn call_line(id: u64, tool: &str, arguments: Value) -> Vec<u8> {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": tool, "arguments": arguments}})
        .to_string()
        .into_bytes()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit` for the process to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn error_code(answer: &Value) -> i64 {
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {answer}"))
}

// ---------------------------------------------------------------- stdio

#[test]
fn stdio_invalid_json_gets_a_parse_error_with_a_null_id_and_the_server_keeps_serving() {
    let (_dir, db) = fresh_db();
    let mut server = StdioServer::ready(&db, &[]);
    server.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":");
    let answer = server.answer();
    assert_eq!(error_code(&answer), -32700, "{answer}");
    assert!(answer["id"].is_null(), "{answer}");
    assert!(answer.as_object().unwrap().contains_key("id"), "{answer}");
    server.send(br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
    assert_eq!(server.answer()["id"], 2);
}

#[test]
fn stdio_invalid_utf8_gets_a_parse_error_and_the_server_keeps_serving() {
    let (_dir, db) = fresh_db();
    let mut server = StdioServer::ready(&db, &[]);
    server.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\xc3\x28\"}");
    let answer = server.answer();
    assert_eq!(error_code(&answer), -32700, "{answer}");
    assert!(answer["id"].is_null(), "{answer}");
    server.send(br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
    assert_eq!(server.answer()["id"], 2);
}

#[test]
fn stdio_invalid_json_before_the_handshake_gets_a_parse_error() {
    let (_dir, db) = fresh_db();
    let mut server = StdioServer::start(&db, &[]);
    server.send(b"not json at all");
    assert_eq!(error_code(&server.answer()), -32700);
    server.send(INITIALIZE.as_bytes());
    assert_eq!(server.answer()["id"], 0);
}

#[test]
fn stdio_tools_call_with_a_non_string_name_gets_invalid_params() {
    let (_dir, db) = fresh_db();
    let mut server = StdioServer::ready(&db, &[]);
    server.send(
        br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":42,"arguments":{}}}"#,
    );
    let answer = server.answer();
    assert_eq!(error_code(&answer), -32602, "{answer}");
    assert_eq!(answer["id"], 5);
}

#[test]
fn stdio_tools_call_with_non_object_arguments_gets_invalid_params() {
    let (_dir, db) = fresh_db();
    let mut server = StdioServer::ready(&db, &[]);
    server.send(&StdioServer::call_line(6, "query", json!("SELECT 1")));
    let answer = server.answer();
    assert_eq!(error_code(&answer), -32602, "{answer}");
    assert_eq!(answer["id"], 6);
}

#[test]
fn stdio_a_duplicate_in_flight_id_is_refused_and_not_run() {
    let (_dir, db) = fresh_db();
    let mut server = StdioServer::ready(&db, &[("EROS_DB_READ_ONLY", "false")]);
    server.send(&StdioServer::call_line(
        1,
        "execute",
        json!({"sql": "CREATE TABLE marks(n INTEGER)"}),
    ));
    assert_eq!(server.answer()["result"]["isError"], false);
    let slow = StdioServer::call_line(7, "execute", json!({ "sql": SLOW_INSERT }));
    // Three lines with one id in one write: the second and third arrive
    // while the first runs.
    let mut three = Vec::new();
    for _ in 0..3 {
        three.extend_from_slice(&slow);
        three.push(b'\n');
    }
    server.stdin.write_all(&three).unwrap();
    server.stdin.flush().unwrap();
    let answers: Vec<Value> = (0..3).map(|_| server.answer()).collect();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("error").is_some())
        .collect();
    assert_eq!(refused.len(), 2, "{answers:?}");
    for answer in refused {
        assert_eq!(error_code(answer), -32600, "{answer}");
        assert_eq!(answer["id"], 7);
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("duplicate request id 7 still in flight"),
            "{message}"
        );
    }
    server.send(&StdioServer::call_line(
        8,
        "query",
        json!({"sql": "SELECT count(*) AS n FROM marks"}),
    ));
    let count = server.answer();
    let text = count["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.lines().nth(1), Some("1"), "one insert ran: {count}");
}

#[test]
fn stdio_an_id_can_be_reused_once_its_answer_is_written() {
    let (_dir, db) = fresh_db();
    let mut server = StdioServer::ready(&db, &[]);
    for _ in 0..3 {
        server.send(br#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#);
        let answer = server.answer();
        assert_eq!(answer["id"], 9);
        assert!(answer.get("result").is_some(), "{answer}");
    }
}

// ---------------------------------------------------------------- signals

#[test]
fn sighup_is_ignored_and_the_stdio_server_keeps_serving() {
    let (_dir, db) = fresh_db();
    let mut server = StdioServer::ready(&db, &[]);
    server.signal("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    server.send(br#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#);
    assert_eq!(server.answer()["id"], 3);
    assert!(server.child.try_wait().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_ignored_and_the_http_server_keeps_serving() {
    let (_dir, db) = fresh_db();
    let server = HttpServer::start(&db, &[]);
    let client = server
        .client(None, &rmcp::model::ProtocolVersion::V_2025_11_25)
        .await;
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let result = call(&client, "query", json!({"sql": "SELECT 1 AS one"})).await;
    assert_ne!(result.is_error, Some(true));
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_before_the_handshake_with_stdin_open_exits_0() {
    let (_dir, db) = fresh_db();
    let mut server = StdioServer::start(&db, &[]);
    // The server is up once it answers a line; stdin stays open.
    server.send(b"{}");
    assert_eq!(error_code(&server.answer()), -32600);
    server.signal("-TERM");
    let status = wait_exit(&mut server.child, Duration::from_secs(5)).expect("exited");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_before_the_handshake_with_a_socket_as_stdin_exits_0() {
    // Clients built on libuv (Node) give their children sockets, not
    // pipes: the server then reads stdin on a blocking thread.
    let (_dir, db) = fresh_db();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut child = binary()
        .arg("serve")
        .arg("--db")
        .arg(&db)
        .current_dir(db.parent().unwrap())
        .env_clear()
        .env("EROS_METRICS_ADDR", "off")
        .env("EROS_LOG", "warn")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = read_lines(child.stdout.take().unwrap());
    (&ours).write_all(b"{}\n").unwrap();
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("an answer within 30 s");
    assert!(line.contains("-32600"), "{line}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(5));
    if status.is_none() {
        let _ = child.kill();
    }
    let status = status.expect("exited within 5 s");
    assert!(status.success(), "{status:?}");
    drop(ours);
}

// ---------------------------------------------------------------- HTTP

/// An HTTP answer read off a raw socket.
struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }

    /// The JSON-RPC messages in the body (plain JSON or SSE `data:` lines).
    fn messages(&self) -> Vec<Value> {
        if let Ok(value) = serde_json::from_str::<Value>(&self.body) {
            return vec![value];
        }
        self.body
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str(data.trim()).ok())
            .collect()
    }
}

/// Sends raw request bytes on a fresh connection and reads the answer to
/// its end (the request asks to close). Chunked bodies are kept as sent:
/// the tests look for JSON inside them line by line.
fn raw(port: u16, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    RawResponse {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A POST to `/mcp` with `headers` (which must include Host if wanted).
fn post_with(port: u16, headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    raw(port, &request)
}

fn post(port: u16, extra: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let host = format!("127.0.0.1:{port}");
    let mut headers = vec![("Host", host.as_str())];
    headers.extend_from_slice(extra);
    post_with(port, &headers, body)
}

/// Opens a 2025-11-25 session; returns its id.
fn open_session(port: u16) -> String {
    let answer = post(port, &[], INITIALIZE.as_bytes());
    assert_eq!(answer.status, 200, "{}", answer.body);
    let session = answer.header("mcp-session-id").expect("a session id");
    let done = post(
        port,
        &[
            ("Mcp-Session-Id", &session),
            ("Mcp-Protocol-Version", "2025-11-25"),
        ],
        INITIALIZED.as_bytes(),
    );
    assert_eq!(done.status, 202, "{}", done.body);
    session
}

fn in_session(port: u16, session: &str, body: &[u8]) -> RawResponse {
    post(
        port,
        &[
            ("Mcp-Session-Id", session),
            ("Mcp-Protocol-Version", "2025-11-25"),
        ],
        body,
    )
}

#[test]
fn http_malformed_json_gets_400_with_a_parse_error_body() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    let answer = post(server.port, &[], b"{\"jsonrpc\":\"2.0\",");
    assert_eq!(answer.status, 400, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("a JSON body");
    assert_eq!(error_code(&body), -32700, "{body}");
    assert!(body["id"].is_null());
}

#[test]
fn http_invalid_utf8_gets_400_with_a_parse_error_body() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    let answer = post(
        server.port,
        &[],
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\xff\"}",
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(error_code(&answer.messages()[0]), -32700);
}

#[test]
fn http_tools_call_with_a_non_string_name_gets_invalid_params() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    let session = open_session(server.port);
    let answer = in_session(
        server.port,
        &session,
        br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":[1],"arguments":{}}}"#,
    );
    let messages = answer.messages();
    assert_eq!(error_code(&messages[0]), -32602, "{}", answer.body);
    assert_eq!(messages[0]["id"], 4);
}

#[test]
fn http_tools_call_with_non_object_arguments_gets_invalid_params() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    let session = open_session(server.port);
    let answer = in_session(
        server.port,
        &session,
        br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"query","arguments":"SELECT 1"}}"#,
    );
    assert_eq!(error_code(&answer.messages()[0]), -32602, "{}", answer.body);
}

#[test]
fn http_a_duplicate_in_flight_id_in_one_session_is_refused_and_not_run() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[("EROS_DB_READ_ONLY", "false")]);
    let port = server.port;
    let session = open_session(port);
    let create = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "execute", "arguments": {"sql": "CREATE TABLE marks(n INTEGER)"}}});
    let created = in_session(port, &session, create.to_string().as_bytes());
    assert_eq!(created.messages()[0]["result"]["isError"], false);
    let slow = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "execute", "arguments": {"sql": SLOW_INSERT}}})
    .to_string();
    let first = {
        let (session, slow) = (session.clone(), slow.clone());
        std::thread::spawn(move || in_session(port, &session, slow.as_bytes()))
    };
    std::thread::sleep(Duration::from_millis(100));
    let second = in_session(port, &session, slow.as_bytes());
    let refusal = &second.messages()[0];
    assert_eq!(error_code(refusal), -32600, "{}", second.body);
    assert_eq!(refusal["id"], 7);
    let first = first.join().unwrap();
    assert!(
        first.messages().iter().any(|m| m.get("result").is_some()),
        "{}",
        first.body
    );
    let count = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "query", "arguments": {"sql": "SELECT count(*) AS n FROM marks"}}});
    let counted = in_session(port, &session, count.to_string().as_bytes());
    let text = counted.messages()[0]["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(text.lines().nth(1), Some("1"), "one insert ran: {text}");
}

#[test]
fn http_a_request_without_host_is_refused_with_400() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    let answer = post_with(server.port, &[], INITIALIZE.as_bytes());
    assert_eq!(answer.status, 400, "{}", answer.body);
    let http10 = format!(
        "POST /mcp HTTP/1.0\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{INITIALIZE}",
        INITIALIZE.len()
    );
    assert_eq!(raw(server.port, http10.as_bytes()).status, 400);
}

#[test]
fn http_a_host_that_only_starts_with_an_allowed_host_is_refused() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    for host in ["127.0.0.1.evil.com", "localhost.evil.com:8080"] {
        let answer = post_with(server.port, &[("Host", host)], INITIALIZE.as_bytes());
        assert_eq!(answer.status, 403, "{host}: {}", answer.body);
    }
    let malformed = post_with(
        server.port,
        &[("Host", "127.0.0.1:80.evil.com")],
        INITIALIZE.as_bytes(),
    );
    assert_eq!(malformed.status, 400, "{}", malformed.body);
}

#[test]
fn http_an_allowed_host_passes_with_or_without_its_port() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    let with_port = format!("localhost:{}", server.port);
    for host in ["127.0.0.1", with_port.as_str()] {
        let answer = post_with(server.port, &[("Host", host)], INITIALIZE.as_bytes());
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
    }
}

#[test]
fn http_an_origin_whose_port_is_not_a_port_is_refused_with_403() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    let answer = post(
        server.port,
        &[("Origin", "http://127.0.0.1:80.evil.com")],
        INITIALIZE.as_bytes(),
    );
    assert_eq!(answer.status, 403, "{}", answer.body);
}

#[test]
fn http_an_allowed_origin_with_any_port_passes() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    let answer = post(
        server.port,
        &[("Origin", "http://127.0.0.1:5173")],
        INITIALIZE.as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[test]
fn http_a_session_delete_answers_204() {
    let (_dir, db) = fresh_db();
    let server = InProcessServer::start(&db, &[]);
    let session = open_session(server.port);
    let request = format!(
        "DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nMcp-Session-Id: {session}\r\n\
         Mcp-Protocol-Version: 2025-11-25\r\nConnection: close\r\n\r\n",
        server.port
    );
    assert_eq!(raw(server.port, request.as_bytes()).status, 204);
    let after = in_session(
        server.port,
        &session,
        br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
    );
    assert_eq!(after.status, 404, "the session is gone: {}", after.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_keep_alive_calls_have_no_delayed_ack_floor() {
    // Sequential calls over one connection: with an answer in two writes
    // and Nagle's algorithm on, every call took about 44 ms.
    let (_dir, db) = fresh_db();
    eros_bench::dataset::create(&db, 1_000).unwrap();
    let server = InProcessServer::start(&db, &[]);
    let spec = eros_bench::ToolSpec {
        tool: "query".into(),
        sql_argument: "sql".into(),
        extra: Vec::new(),
    };
    let plan = eros_bench::keepalive::KeepAlivePlan {
        workload: eros_bench::Workload::Point,
        rows: 1_000,
        warmup: 20,
        calls: 200,
    };
    let report = eros_bench::keepalive::run(&server.url(), None, &spec, plan)
        .await
        .expect("keep-alive run");
    assert!(report.p50_ms < 20.0, "{report}");
}
