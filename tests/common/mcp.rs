//! A real MCP client (rmcp's, set up by `eros_bench::client`, the same code
//! the load generator uses) driving the real `eros-mcp` binary over stdio or
//! streamable HTTP, in both protocol eras.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use eros_bench::client::{self as mcp_client, Handshake};
use rmcp::model::{CallToolRequestParams, CallToolResult, ProtocolVersion};
use serde_json::{Map, Value};

pub type Client = eros_bench::Session;

/// The two protocol eras the server serves.
pub const ERAS: [ProtocolVersion; 2] =
    [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28];

/// The tests' client identity, speaking `version`.
pub fn handshake(version: &ProtocolVersion) -> Handshake {
    Handshake::new("eros-mcp-tests", "0.1.0", version.clone())
}

/// Starts `eros-mcp serve` on `db` over stdio with `env`, connected in `version`'s era.
pub async fn stdio_client(db: &Path, env: &[(&str, &str)], version: &ProtocolVersion) -> Client {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_eros-mcp"));
    command
        .arg("serve")
        .arg("--db")
        .arg(db)
        .current_dir(db.parent().unwrap())
        .env_clear()
        .env("EROS_METRICS_ADDR", "off")
        .env("EROS_LOG", "warn")
        .envs(env.iter().copied());
    let (client, _pid) = mcp_client::stdio(command, Stdio::inherit(), &handshake(version))
        .await
        .expect("MCP handshake over stdio");
    client
}

/// The longest a test waits for one tool call's answer before it fails.
pub const CALL_GIVE_UP: Duration = Duration::from_secs(120);

/// The tests' HTTP client for raw requests: a connection that cannot be
/// made in ten seconds, or an answer that stops for a minute, is an error
/// the test reports, never a hang (a dropped SYN on a loaded runner is
/// retried for two minutes by the kernel otherwise).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .expect("the tests' HTTP client builds")
}

/// A free loopback port for a server to listen on. It is taken below
/// Linux's ephemeral range (32768 and up), where the kernel never puts the
/// local end of an outgoing connection: a port handed out here could
/// otherwise be taken by one of the many client sockets these tests open
/// before its server binds it. It is never one this test process handed
/// out before, since the tests of one binary run side by side.
pub fn free_port() -> u16 {
    free_ports(&[0])
}

/// A base port such that `base + offset` is free for every offset (a
/// script that derives its ports from one), all of them reserved as
/// [`free_port`] reserves one.
pub fn free_ports(offsets: &[u16]) -> u16 {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let widest = offsets.iter().copied().max().unwrap_or(0);
    // Spread out: test binaries run one after another (each starts at its
    // own place), and one call's ports are not the next call's neighbours.
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start =
        ((std::process::id() as u16).wrapping_mul(7919)).wrapping_add(call.wrapping_mul(97)) % SPAN;
    for step in 0..SPAN {
        let base = FIRST + (start + step) % SPAN;
        if base + widest >= FIRST + SPAN {
            continue;
        }
        let ports: Vec<u16> = offsets.iter().map(|offset| base + offset).collect();
        let free = ports.iter().all(|port| {
            !given.contains(port) && std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok()
        });
        if free {
            given.extend(ports);
            return base;
        }
    }
    panic!("no free ports from {FIRST} to {}", FIRST + SPAN);
}

/// `eros-mcp serve` over HTTP on `port`, the sidecar on `metrics_port` (or
/// off), in a clean environment plus `env`, logging warnings to the test's
/// stderr. Callers may adjust it (stderr, limits) before spawning.
pub fn http_command(
    db: &Path,
    env: &[(&str, &str)],
    port: u16,
    metrics_port: Option<u16>,
) -> std::process::Command {
    http_command_of(
        Path::new(env!("CARGO_BIN_EXE_eros-mcp")),
        db,
        env,
        port,
        metrics_port,
    )
}

/// As [`http_command`], running `program` (a copy of the binary).
pub fn http_command_of(
    program: &Path,
    db: &Path,
    env: &[(&str, &str)],
    port: u16,
    metrics_port: Option<u16>,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.arg("serve")
        .arg("--db")
        .arg(db)
        .current_dir(db.parent().unwrap())
        .env_clear()
        .env("EROS_MCP_TRANSPORT", "http")
        .env("EROS_MCP_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "EROS_METRICS_ADDR",
            metrics_port.map_or("off".to_string(), |p| format!("127.0.0.1:{p}")),
        )
        .env("EROS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// An `eros-mcp` process serving HTTP; killed on drop.
pub struct HttpServer {
    pub child: std::process::Child,
    pub port: u16,
    /// The sidecar's port, when started with [`HttpServer::start_observed`].
    pub metrics_port: Option<u16>,
}

impl HttpServer {
    /// Starts a server without the sidecar and waits until it serves MCP.
    pub fn start(db: &Path, env: &[(&str, &str)]) -> Self {
        let server = Self::spawn(db, env, None);
        server.wait_until_listening();
        server
    }

    /// Starts a server with the sidecar on a free port and waits until it serves MCP.
    pub fn start_observed(db: &Path, env: &[(&str, &str)]) -> Self {
        let server = Self::spawn(db, env, Some(free_port()));
        server.wait_until_listening();
        server
    }

    /// Starts a server on `port` (one a setting must name, such as the
    /// OAuth audience) with the sidecar, and waits until it serves MCP.
    pub fn start_at(port: u16, db: &Path, env: &[(&str, &str)]) -> Self {
        let server = Self::spawn_at(port, db, env, Some(free_port()));
        server.wait_until_listening();
        server
    }

    /// Starts a server with the sidecar and returns at once.
    pub fn spawn(db: &Path, env: &[(&str, &str)], metrics_port: Option<u16>) -> Self {
        Self::spawn_at(free_port(), db, env, metrics_port)
    }

    fn spawn_at(port: u16, db: &Path, env: &[(&str, &str)], metrics_port: Option<u16>) -> Self {
        let mut cmd = http_command(db, env, port, metrics_port);
        let child = cmd.spawn().expect("spawn eros-mcp");
        Self {
            child,
            port,
            metrics_port,
        }
    }

    /// GET on the sidecar: (status, body); status 0 when nothing answers.
    pub fn sidecar(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port.expect("started with the sidecar"), path)
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // The port is bound before the database opens; wait for /mcp to answer.
                if http_get_status(self.port, "/mcp") != 0 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("eros-mcp did not start listening on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub async fn client(&self, token: Option<&str>, version: &ProtocolVersion) -> Client {
        mcp_client::http(&self.url(), token, &handshake(version))
            .await
            .expect("MCP handshake over HTTP")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        // A server that does not stop fails the test (and is killed by
        // the drop) instead of hanging it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "eros-mcp did not exit within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        std::mem::forget(self);
        status
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status of a plain GET (0 when the connection fails).
pub fn http_get_status(port: u16, path: &str) -> u16 {
    http_get(port, path).0
}

/// A plain HTTP/1.0 GET on loopback (1.0: never a chunked body): (status, body); status 0 when nothing answers.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Calls `tool` with `arguments` (a JSON object).
pub async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let arguments: Map<String, Value> = match arguments {
        Value::Object(map) => map,
        other => panic!("arguments must be an object, got {other}"),
    };
    // A server that stalls fails the test in bounded time.
    tokio::time::timeout(
        CALL_GIVE_UP,
        client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments)),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} call got no answer in {CALL_GIVE_UP:?}"))
    .unwrap_or_else(|err| panic!("{tool} call failed at the protocol level: {err}"))
}

/// The structured content of a successful result.
pub fn structured(result: &CallToolResult) -> &Value {
    assert_ne!(result.is_error, Some(true), "tool error: {}", text(result));
    result
        .structured_content
        .as_ref()
        .expect("structured content")
}

/// A query result in the default row format (typed CSV, then a line of
/// metadata), read back into the shape the `json` row format sends:
/// `{columns, rows, row_count, truncated, next_cursor?}`.
pub fn rows(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "tool error: {}", text(result));
    assert!(
        result.structured_content.is_none(),
        "CSV rows come without structured content"
    );
    let blocks: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    let [csv, about] = blocks[..] else {
        panic!("expected the CSV and the metadata line, got {blocks:?}");
    };
    let table = super::csv::decode(csv).expect("typed CSV");
    let mut out: Value = serde_json::from_str(about).expect("the metadata is JSON");
    out["columns"] = serde_json::json!(table.columns);
    out["rows"] = Value::Array(table.rows.into_iter().map(Value::Array).collect());
    out
}

/// The text content of a result.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a raw HTTP answer said: its status, its `WWW-Authenticate`
/// challenge (empty when none) and its body.
pub struct RawAnswer {
    pub status: u16,
    pub challenge: String,
    pub body: String,
}

/// A raw JSON-RPC POST of `body` to the server's `/mcp`, as a 2026-07-28
/// request (no session), with `Authorization: Bearer token` when given.
pub async fn post_json(server: &HttpServer, token: Option<&str>, body: &Value) -> RawAnswer {
    let mut request = http_client()
        .post(server.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", body["method"].as_str().unwrap_or_default())
        .header(
            "mcp-name",
            body["params"]["name"].as_str().unwrap_or_default(),
        )
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    RawAnswer {
        status,
        challenge,
        body: response.text().await.unwrap_or_default(),
    }
}

/// A `tools/call` request of `tool` with `arguments`.
pub fn tools_call(tool: &str, arguments: Value) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}
    })
}

/// The value of the metric `name` in a Prometheus text `exposition`: the
/// sum of its series, whatever their labels (per-database metrics carry a
/// `database` label); `None` when it has no series.
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
