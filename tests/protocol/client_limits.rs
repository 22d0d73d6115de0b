//! Clients that do not keep up, against the real binary: a stdio client
//! that never reads its answers, floods of HTTP sessions, slow and idle
//! HTTP clients, file-descriptor pressure and the in-flight cap. Each
//! asserts that memory stays bounded and the sidecar keeps answering.
//! Timed bounds are generous: these run on a busy two-core machine.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mcp::{call, free_port, http_command, http_get, HttpServer, ERAS};
use common::TestDb;
use serde_json::json;

/// A statement that runs until `EROS_DB_QUERY_TIMEOUT` interrupts it.
const RUNAWAY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"client-limits-test","version":"0"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

fn query_call(id: u64, sql: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "query", "arguments": {"sql": sql}}})
    .to_string()
}

/// Memory of the server and its workers in MB (see `common::memory`).
fn rss_mb(pid: u32) -> f64 {
    common::memory::with_workers_mb(pid)
}

/// GETs a sidecar path and asserts it answered 200 within a second.
fn assert_probe_answers(metrics_port: u16, path: &str) {
    let started = Instant::now();
    let (status, body) = http_get(metrics_port, path);
    let took = started.elapsed();
    assert_eq!(status, 200, "{path}: {body}");
    assert!(took < Duration::from_secs(1), "{path} took {took:?}");
}

/// The value of one series (`name` with its labels) in the exposition.
fn metric(metrics_port: u16, series: &str) -> f64 {
    let (_, text) = http_get(metrics_port, "/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} is not in the exposition"))
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

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
}

fn parse_response(raw: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    RawResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A POST to `/mcp` over a fresh connection, read to its end.
fn post(port: u16, headers: &[(&str, &str)], body: &str) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Opens a 2025-11-25 session; its id, or the refusal.
fn open_session(port: u16) -> Result<String, RawResponse> {
    let response = post(port, &[], INITIALIZE);
    match response.header("mcp-session-id") {
        Some(id) if response.status == 200 => Ok(id),
        _ => Err(response),
    }
}

fn fresh_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.db");
    (dir, path)
}

/// Starts an HTTP server with the sidecar and `env`, optionally with the
/// open-file limit (soft and hard) set to `open_files`.
fn start_http(db: &std::path::Path, env: &[(&str, &str)], open_files: Option<u64>) -> HttpServer {
    let port = free_port();
    let metrics_port = free_port();
    let mut cmd = http_command(db, env, port, Some(metrics_port));
    if let Some(limit) = open_files {
        // SAFETY: setrlimit is async-signal-safe; it runs in the child
        // between fork and exec and touches nothing else.
        unsafe {
            cmd.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().expect("spawn eros-mcp");
    let server = HttpServer {
        child,
        port,
        metrics_port: Some(metrics_port),
    };
    wait_for("readiness", Duration::from_secs(30), || {
        server.sidecar("/readyz").0 == 200
    });
    server
}

/// A stdio server with the sidecar, its pipes in the test's hands.
fn start_stdio(db: &std::path::Path, metrics_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .arg("serve")
        .arg("--db")
        .arg(db)
        .current_dir(db.parent().unwrap())
        .env_clear()
        .env("EROS_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("EROS_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn eros-mcp")
}

#[test]
fn a_stdio_client_that_never_reads_keeps_the_server_small_and_the_probes_answering() {
    const CALLS: u64 = 50_000;
    let (_dir, db) = fresh_db();
    let metrics_port = free_port();
    let mut child = start_stdio(&db, metrics_port);
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, "{INITIALIZE}").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"id\":0"), "{line}");
    writeln!(stdin, "{INITIALIZED}").unwrap();
    wait_for("the sidecar", Duration::from_secs(30), || {
        http_get(metrics_port, "/livez").0 == 200
    });
    let baseline = rss_mb(pid);

    // The writer blocks once the server stops reading: that is the point.
    let writer = std::thread::spawn(move || {
        let mut batch = String::new();
        for id in 1..=CALLS {
            batch.push_str(&query_call(id, "SELECT 1"));
            batch.push('\n');
            if batch.len() > 64 * 1024 {
                stdin.write_all(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        stdin.write_all(batch.as_bytes()).unwrap();
        stdin
    });

    let mut peak = baseline;
    let flood = Instant::now();
    while flood.elapsed() < Duration::from_secs(10) {
        peak = peak.max(rss_mb(pid));
        assert_probe_answers(metrics_port, "/livez");
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("stdio flood: RSS {baseline:.1} MB at rest, peak {peak:.1} MB while unread");
    assert!(peak < 100.0, "RSS reached {peak:.1} MB");
    assert!(
        metric(metrics_port, "mcp_stdio_backpressure_waits_total") >= 1.0,
        "the transport never held back"
    );

    // Now read: every call is answered.
    let mut answered = 0u64;
    let reading = Instant::now();
    while answered < CALLS {
        assert!(
            reading.elapsed() < Duration::from_secs(300),
            "only {answered} answers"
        );
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains("\"result\"") {
            answered += 1;
        }
        if answered.is_multiple_of(5_000) {
            peak = peak.max(rss_mb(pid));
        }
    }
    assert_eq!(answered, CALLS);
    eprintln!("stdio flood: all {CALLS} answered; peak RSS {peak:.1} MB");
    assert!(peak < 100.0, "RSS reached {peak:.1} MB");
    drop(writer.join().unwrap());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn a_new_session_beyond_the_cap_gets_503_with_retry_after() {
    let (_dir, db) = fresh_db();
    let server = start_http(&db, &[("EROS_MCP_MAX_SESSIONS", "20")], None);
    let metrics_port = server.metrics_port.unwrap();
    for n in 0..20 {
        open_session(server.port).unwrap_or_else(|r| panic!("session {n}: {}", r.status));
    }
    let refused = open_session(server.port).expect_err("a 21st session was opened");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!(metric(metrics_port, "mcp_http_sessions_open"), 20.0);
    assert_eq!(
        metric(metrics_port, "mcp_http_sessions_rejected_total"),
        1.0
    );
}

#[test]
fn idle_sessions_expire_and_give_their_memory_back() {
    const SESSIONS: usize = 1_000;
    let (_dir, db) = fresh_db();
    let server = start_http(
        &db,
        &[
            ("EROS_MCP_MAX_SESSIONS", "1000"),
            // Long enough that a busy machine opens all 1,000 sessions
            // before the first of them expires.
            ("EROS_MCP_SESSION_IDLE_TIMEOUT", "10"),
        ],
        None,
    );
    let metrics_port = server.metrics_port.unwrap();
    let pid = server.child.id();
    let mut rounds = Vec::new();
    for round in 0..3 {
        let before = rss_mb(pid);
        for n in 0..SESSIONS {
            open_session(server.port).unwrap_or_else(|r| panic!("session {n}: {}", r.status));
        }
        let full = rss_mb(pid);
        assert_eq!(
            metric(metrics_port, "mcp_http_sessions_open"),
            SESSIONS as f64
        );
        wait_for("idle sessions to expire", Duration::from_secs(60), || {
            metric(metrics_port, "mcp_http_sessions_open") == 0.0
        });
        let expired = metric(metrics_port, "mcp_http_sessions_expired_total");
        assert_eq!(expired, ((round + 1) * SESSIONS) as f64);
        std::thread::sleep(Duration::from_millis(500));
        let after = rss_mb(pid);
        eprintln!(
            "session flood round {round}: RSS {before:.1} MB, {full:.1} MB with {SESSIONS} sessions, {after:.1} MB after expiry"
        );
        rounds.push((before, full, after));
    }
    // Memory comes back after each round, so rounds do not add up.
    let (first_before, _, _) = rounds[0];
    let (_, _, last_after) = rounds[2];
    assert!(
        last_after < first_before + 30.0,
        "RSS grew from {first_before:.1} to {last_after:.1} MB over three rounds"
    );
    assert_probe_answers(metrics_port, "/readyz");
}

/// How long a server with a one-second header timeout keeps a connection
/// that sends `first` and nothing more.
fn closed_after_sending(first: &[u8]) -> Duration {
    let (_dir, db) = fresh_db();
    let server = start_http(&db, &[("EROS_MCP_HEADER_TIMEOUT", "1")], None);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    stream.write_all(first).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    started.elapsed()
}

#[test]
fn a_client_that_stalls_in_its_headers_is_disconnected_after_the_header_timeout() {
    let took = closed_after_sending(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl");
    eprintln!("half-sent headers: closed after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "closed after {took:?}"
    );
}

#[test]
fn a_client_that_sends_nothing_is_disconnected_after_the_header_timeout() {
    let took = closed_after_sending(b"");
    eprintln!("silent connection: closed after {took:?}");
    // The kernel hands a silent connection over after about a second
    // (deferred accept), then the header timeout runs.
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(10),
        "closed after {took:?}"
    );
}

#[test]
fn a_client_that_stalls_in_its_body_gets_408_after_the_body_timeout() {
    let (_dir, db) = fresh_db();
    let server = start_http(&db, &[("EROS_MCP_BODY_TIMEOUT", "1")], None);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: 200\r\n\r\n{{\"jsonrpc\":",
        server.port
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let took = started.elapsed();
    let response = parse_response(&raw);
    eprintln!("stalled body: {} after {took:?}", response.status);
    assert_eq!(response.status, 408, "{}", response.head);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "answered after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_open_file_pressure_the_probes_answer_and_mcp_recovers() {
    let (_dir, db) = fresh_db();
    let server = tokio::task::spawn_blocking(move || {
        let server = start_http(&db, &[("EROS_MCP_HEADER_TIMEOUT", "5")], Some(256));
        (server, db)
    })
    .await
    .unwrap()
    .0;
    let port = server.port;
    let metrics_port = server.metrics_port.unwrap();
    let refused = tokio::task::spawn_blocking(move || {
        // Far more stalled sockets than 256 descriptors can hold. Each
        // sends the first byte of a request: the kernel hands the server a
        // connection once its first bytes arrive (TCP_DEFER_ACCEPT), and
        // one that sends nothing only after a second.
        let mut idle = Vec::new();
        let mut refused = 0;
        for _ in 0..300 {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(mut stream) => {
                    let _ = stream.write_all(b"P");
                    idle.push(stream);
                }
                Err(_) => refused += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        for path in ["/livez", "/readyz", "/metrics"] {
            assert_probe_answers(metrics_port, path);
        }
        for stream in &idle {
            stream.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            if let Ok(n) = (&*stream).read(&mut buf) {
                let answer = parse_response(&buf[..n]);
                if answer.status == 503 {
                    assert_eq!(answer.header("retry-after").as_deref(), Some("1"));
                    refused += 1;
                }
            }
        }
        refused
    })
    .await
    .unwrap();
    assert!(refused > 0, "no connection was refused");
    assert!(
        metric(
            metrics_port,
            "mcp_http_requests_rejected_total{reason=\"connections\"}"
        ) >= 1.0
    );
    // The idle sockets are gone (dropped above); MCP serves again.
    let client = server.client(None, &ERAS[0]).await;
    let result = call(&client, "query", json!({"sql": "SELECT 1 AS one"})).await;
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert_probe_answers(metrics_port, "/readyz");
}

#[test]
fn a_request_over_the_in_flight_cap_gets_503_with_retry_after() {
    let db = TestDb::new().with_demo_data();
    let server = start_http(
        db.path(),
        &[
            ("EROS_MCP_MAX_IN_FLIGHT", "1"),
            ("EROS_DB_QUERY_TIMEOUT", "4"),
        ],
        None,
    );
    let port = server.port;
    let metrics_port = server.metrics_port.unwrap();
    let session = open_session(port).unwrap_or_else(|r| panic!("{}", r.status));
    let headers = [
        ("Mcp-Session-Id", session.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let initialized = post(port, &headers, INITIALIZED);
    assert_eq!(initialized.status, 202, "{}", initialized.body);
    let slow = {
        let session = session.clone();
        std::thread::spawn(move || {
            let headers = [
                ("Mcp-Session-Id", session.as_str()),
                ("MCP-Protocol-Version", "2025-11-25"),
            ];
            post(port, &headers, &query_call(1, RUNAWAY))
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let started = Instant::now();
    let refused = post(port, &headers, &query_call(2, "SELECT 1"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the refusal waited"
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        metric(
            metrics_port,
            "mcp_http_requests_rejected_total{reason=\"in_flight\"}"
        ),
        1.0
    );
    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 200, "{}", slow.body);
    // The slot is free again.
    let after = post(port, &headers, &query_call(3, "SELECT 1"));
    assert_eq!(after.status, 200, "{}", after.body);
}

#[test]
fn a_stdio_client_sending_megabytes_of_meta_and_never_reading_stays_within_its_budget() {
    // A client that never reads, writing without pause requests the
    // server holds for ten seconds (each runs to its deadline), each
    // carrying 15 MiB of junk in `_meta`. What requests in flight hold is
    // bounded by the stdio byte budget, not by EROS_MCP_MAX_IN_FLIGHT times
    // the line limit.
    const JUNK_BYTES: usize = 15 * 1024 * 1024;
    let (_dir, db) = fresh_db();
    let metrics_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .arg("serve")
        .arg("--db")
        .arg(&db)
        .current_dir(db.parent().unwrap())
        .env_clear()
        .env("EROS_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("EROS_LOG", "error")
        .env("EROS_DB_QUERY_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn eros-mcp");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, "{INITIALIZE}").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    writeln!(stdin, "{INITIALIZED}").unwrap();
    wait_for("the sidecar", Duration::from_secs(30), || {
        http_get(metrics_port, "/livez").0 == 200
    });
    std::thread::sleep(Duration::from_millis(300));
    let baseline = rss_mb(pid);
    let junk = "j".repeat(JUNK_BYTES);
    let writer = std::thread::spawn(move || {
        for id in 1..=100u64 {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "query", "arguments": {"sql": RUNAWAY},
                           "_meta": {"junk": junk}}});
            if writeln!(stdin, "{call}").is_err() {
                break;
            }
        }
        stdin
    });
    let mut peak = baseline;
    let flood = Instant::now();
    while flood.elapsed() < Duration::from_secs(10) {
        peak = peak.max(rss_mb(pid));
        assert_probe_answers(metrics_port, "/livez");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two requests' worth of budget, each as read and parsed, the one read
    // and waiting, the reader's buffer: under 100 MB. Without the budget,
    // the in-flight cap let 32 such requests hold half a gigabyte.
    eprintln!("_meta flood: {baseline:.1} MB at rest, peak {peak:.1} MB");
    assert!(
        peak - baseline < 140.0,
        "grew from {baseline:.1} MB to {peak:.1} MB"
    );
    assert!(
        metric(metrics_port, "mcp_stdio_backpressure_waits_total") >= 1.0,
        "the transport never held back"
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(writer.join());
}
