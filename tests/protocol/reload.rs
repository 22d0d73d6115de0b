//! Live reload (SIGHUP): the databases file, the declared tools, the
//! policies and the descriptions are re-read, checked completely, and put
//! in place at once; a bad file keeps the configuration in force, says why
//! and is counted; a session whose tools changed hears of it; calls running
//! while it happens never fail because of it. The server runs in-process
//! (its SIGHUP is the same `Shutdown::hang_up` the signal handler calls).

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::in_process::InProcessServer;
use common::mcp::{call, free_port, http_get, sample, text, ERAS};
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::json;

/// A database `items.db` with one row, and a databases file declaring it
/// with the tools file `tools.toml`.
fn setup(dir: &Path) -> std::path::PathBuf {
    let conn = rusqlite::Connection::open(dir.join("items.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT); \
         INSERT INTO items VALUES (1, 'kettle');",
    )
    .unwrap();
    drop(conn);
    write_tools(dir, "A");
    let file = dir.join("databases.toml");
    std::fs::write(
        &file,
        "[databases.shop]\npath = \"items.db\"\nmigrate = false\ntools_file = \"tools.toml\"\n\
         description = \"before\"\n",
    )
    .unwrap();
    file
}

/// A tools file whose one tool `which` answers `version`.
fn write_tools(dir: &Path, version: &str) {
    std::fs::write(
        dir.join("tools.toml"),
        format!(
            "[[tools]]\nname = \"which\"\ndescription = \"Which configuration: {version}.\"\n\
             sql = \"SELECT '{version}' AS version, count(*) AS n FROM items\"\n"
        ),
    )
    .unwrap();
}

/// The server on the databases `file`, reloading on SIGHUP alone (each
/// test says when it reloads).
fn start(dir: &Path, file: &Path) -> (InProcessServer, u16) {
    start_watching(dir, file, false)
}

fn start_watching(dir: &Path, file: &Path, watch: bool) -> (InProcessServer, u16) {
    let metrics_port = free_port();
    let addr = format!("127.0.0.1:{metrics_port}");
    let server = InProcessServer::start(
        &dir.join("unused.db"),
        &[
            ("EROS_DATABASES_FILE", file.to_str().unwrap()),
            ("EROS_METRICS_ADDR", &addr),
            ("EROS_DATABASES_WATCH", if watch { "true" } else { "false" }),
        ],
    );
    (server, metrics_port)
}

async fn metric(port: u16, name: &'static str) -> f64 {
    let (_, body) = tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
        .await
        .unwrap();
    sample(&body, name).unwrap_or_else(|| panic!("no {name}"))
}

/// Waits until the configuration generation reaches `generation`.
async fn wait_for_generation(port: u16, generation: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(port, "mcp_config_generation").await < generation {
        assert!(
            Instant::now() < deadline,
            "generation {generation} never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes one bad configuration.
type BadFile<'a> = Box<dyn Fn() + 'a>;

/// A client that counts `notifications/tools/list_changed`.
#[derive(Clone)]
struct Listening(Arc<AtomicUsize>);

impl ClientHandler for Listening {
    async fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("listening", "0"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_new_tools_in_place_and_tells_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path());
    let (server, port) = start(dir.path(), &file);
    let heard = Arc::new(AtomicUsize::new(0));
    let client = Listening(Arc::clone(&heard))
        .serve(StreamableHttpClientTransport::from_uri(server.url()))
        .await
        .unwrap();
    let before = client
        .call_tool(rmcp::model::CallToolRequestParams::new("which"))
        .await
        .unwrap();
    assert!(text(&before).contains('A'), "{}", text(&before));

    write_tools(dir.path(), "B");
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("before", "after"),
    )
    .unwrap();
    server.hang_up();
    wait_for_generation(port, 2.0).await;
    let after = client
        .call_tool(rmcp::model::CallToolRequestParams::new("which"))
        .await
        .unwrap();
    assert!(text(&after).contains('B'), "{}", text(&after));
    let tools = client.list_all_tools().await.unwrap();
    let which = tools.iter().find(|t| t.name == "which").unwrap();
    assert!(which
        .description
        .as_deref()
        .unwrap_or_default()
        .contains("B."));
    let deadline = Instant::now() + Duration::from_secs(5);
    while heard.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no tools/list_changed arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_the_configuration_in_force_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path());
    let good = std::fs::read_to_string(&file).unwrap();
    let (server, port) = start(dir.path(), &file);
    let client = server.client(None, &ERAS[0]).await;
    let bad_files: [(&str, BadFile); 4] = [
        (
            "a syntax error",
            Box::new(|| std::fs::write(&file, "[databases.shop\npath = 1").unwrap()),
        ),
        (
            "a policy naming an unknown column",
            Box::new(|| {
                std::fs::write(
                    dir.path().join("policy.toml"),
                    "[scopes.\"eros:pii\"]\nnull_columns = [\"items.nope\"]\n",
                )
                .unwrap();
                std::fs::write(&file, format!("{good}policy_file = \"policy.toml\"\n")).unwrap();
            }),
        ),
        (
            "a declared statement that does not prepare",
            Box::new(|| {
                std::fs::write(
                    dir.path().join("tools.toml"),
                    "[[tools]]\nname = \"which\"\ndescription = \"x\"\nsql = \"SELECT FROM nowhere\"\n",
                )
                .unwrap();
                std::fs::write(&file, &good).unwrap();
            }),
        ),
        (
            "a path that does not exist",
            Box::new(|| {
                write_tools(dir.path(), "A");
                std::fs::write(&file, good.replace("items.db", "no-such.db")).unwrap();
            }),
        ),
    ];
    for (failures, (what, write_bad_file)) in bad_files.iter().enumerate() {
        write_bad_file();
        server.hang_up();
        let deadline = Instant::now() + Duration::from_secs(20);
        while metric(port, "mcp_config_reload_failures_total").await < (failures + 1) as f64 {
            assert!(Instant::now() < deadline, "{what}: no failure counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metric(port, "mcp_config_generation").await, 1.0, "{what}");
        let which = call(&client, "which", json!({})).await;
        assert!(text(&which).contains('A'), "{what}: {}", text(&which));
    }
    assert!(
        !dir.path().join("no-such.db").exists(),
        "a reload created a file"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_calls_fail_no_call() {
    const RELOADS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path());
    let (server, port) = start(dir.path(), &file);
    let client = Arc::new(server.client(None, &ERAS[0]).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let client = Arc::clone(&client);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeMap::new();
            while !stop.load(Ordering::SeqCst) {
                let answer = call(&client, "which", json!({})).await;
                assert_ne!(answer.is_error, Some(true), "{}", text(&answer));
                let version = if text(&answer).contains("\nA,") {
                    'A'
                } else {
                    'B'
                };
                assert!(text(&answer).contains(",1"), "{}", text(&answer));
                *seen.entry(version).or_insert(0) += 1;
            }
            seen
        })
    };
    for reload in 0..RELOADS {
        write_tools(dir.path(), if reload % 2 == 0 { "B" } else { "A" });
        server.hang_up();
        wait_for_generation(port, (reload + 2) as f64).await;
    }
    stop.store(true, Ordering::SeqCst);
    let seen = caller.await.unwrap();
    eprintln!("answers by configuration during {RELOADS} reloads: {seen:?}");
    assert!(seen.len() == 2, "{seen:?}");
    assert_eq!(metric(port, "mcp_config_reload_failures_total").await, 0.0);
    Arc::try_unwrap(client)
        .ok()
        .unwrap()
        .cancel()
        .await
        .unwrap();
}

/// The official MCP Python SDK, connected before a reload, hears
/// `notifications/tools/list_changed` and then lists the new tools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_hears_that_the_tool_list_changed() {
    use std::io::BufRead;
    let python = common::ops::repo().join("target/ops-tools/venv/bin/python");
    assert!(
        python.exists(),
        "run .ci/provision: it installs the MCP Python SDK into target/ops-tools/venv"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path());
    let (server, port) = start(dir.path(), &file);
    let script = common::ops::repo().join("tests/fixtures/python_list_changed.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .arg(server.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::task::block_in_place(|| lines.next())
        .unwrap()
        .unwrap();
    assert!(ready.contains("which"), "{ready}");
    write_tools(dir.path(), "B");
    server.hang_up();
    wait_for_generation(port, 2.0).await;
    let after = tokio::task::block_in_place(|| lines.next())
        .unwrap()
        .unwrap();
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(after["heard"], true, "{after}");
    let description = after["descriptions"]["which"].as_str().unwrap();
    assert!(
        description.starts_with("Which configuration: B."),
        "{after}"
    );
    assert!(child.wait().unwrap().success());
}

/// A reload that removes a database: calls naming it are refused with the
/// names left, its readiness and metrics go, and its pool is closed once
/// no call holds it (its WAL checkpointed away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_a_reload_removes_is_drained_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path());
    let conn = rusqlite::Connection::open(dir.path().join("old.db")).unwrap();
    conn.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);")
        .unwrap();
    drop(conn);
    let both = format!(
        "{}\n[databases.old]\npath = \"old.db\"\nmigrate = false\nread_only = false\n",
        std::fs::read_to_string(&file).unwrap()
    );
    std::fs::write(&file, &both).unwrap();
    let (server, port) = start(dir.path(), &file);
    let client = server.client(None, &ERAS[0]).await;
    let wrote = call(
        &client,
        "execute",
        json!({"sql": "INSERT INTO items (name) VALUES ('x')", "database": "old"}),
    )
    .await;
    assert_ne!(wrote.is_error, Some(true), "{}", text(&wrote));
    assert!(
        dir.path().join("old.db-wal").exists(),
        "the write sits in the WAL"
    );

    std::fs::write(&file, both.split("[databases.old]").next().unwrap()).unwrap();
    server.hang_up();
    wait_for_generation(port, 2.0).await;
    let refused = call(
        &client,
        "query",
        json!({"sql": "SELECT 1", "database": "old"}),
    )
    .await;
    assert_eq!(refused.is_error, Some(true));
    assert!(text(&refused).contains("shop"), "{}", text(&refused));
    let (_, body) = tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
        .await
        .unwrap();
    assert!(!body.contains("database=\"old\""), "{body}");
    // Closed: its WAL checkpointed into the file and removed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.path().join("old.db-wal").exists() {
        assert!(
            Instant::now() < deadline,
            "the removed database was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: i64 = rusqlite::Connection::open(dir.path().join("old.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "the acknowledged write is in the file");
    client.cancel().await.unwrap();
}

/// 2026-07-28: a `subscriptions/listen` stream hears of the new tool list,
/// tagged with its subscription id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_subscription_hears_that_the_tool_list_changed() {
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path());
    let (server, port) = start(dir.path(), &file);
    let body = json!({
        "jsonrpc": "2.0", "id": 41, "method": "subscriptions/listen",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            },
            "notifications": {"toolsListChanged": true}
        }
    });
    let mut response = crate::common::mcp::http_client()
        .post(server.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = String::new();
    let read_until = async |stream: &mut String, response: &mut reqwest::Response, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stream.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {what} in {stream}"))
                .unwrap()
                .unwrap_or_else(|| panic!("the stream ended without {what}: {stream}"));
            stream.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_until(
        &mut stream,
        &mut response,
        "notifications/subscriptions/acknowledged",
    )
    .await;
    write_tools(dir.path(), "B");
    server.hang_up();
    wait_for_generation(port, 2.0).await;
    read_until(
        &mut stream,
        &mut response,
        "notifications/tools/list_changed",
    )
    .await;
    let changed = stream
        .lines()
        .find(|line| line.contains("notifications/tools/list_changed"))
        .unwrap();
    assert!(changed.contains("subscriptionId"), "{changed}");
    assert!(changed.contains("41"), "{changed}");
}

/// Without a signal: a changed tools file (written whole, then renamed into
/// place, as editors and deploy tools do) is reloaded within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tools_file_is_reloaded_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path());
    let (server, port) = start_watching(dir.path(), &file, true);
    let client = server.client(None, &ERAS[0]).await;
    assert!(text(&call(&client, "which", json!({})).await).contains('A'));
    write_tools(dir.path(), "B");
    let staged = dir.path().join("tools.toml");
    std::fs::rename(&staged, dir.path().join("tools.next")).unwrap();
    std::fs::rename(dir.path().join("tools.next"), &staged).unwrap();
    wait_for_generation(port, 2.0).await;
    let after = call(&client, "which", json!({})).await;
    assert!(text(&after).contains('B'), "{}", text(&after));
    client.cancel().await.unwrap();
}

/// The binary itself: a real SIGHUP reloads the databases file, and the
/// second database it now declares is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_a_real_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let file = setup(dir.path());
    let conn = rusqlite::Connection::open(dir.path().join("more.db")).unwrap();
    conn.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO items VALUES (1, 'added');")
        .unwrap();
    drop(conn);
    let port = free_port();
    let metrics_port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("EROS_DATABASES_FILE", &file)
        .env("EROS_DATABASES_WATCH", "false")
        .env("EROS_MCP_TRANSPORT", "http")
        .env("EROS_MCP_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("EROS_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("EROS_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = move || http_get(metrics_port, "/readyz").0 == 200;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tokio::task::spawn_blocking(ready).await.unwrap() {
        assert!(Instant::now() < deadline, "the binary never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(
        &file,
        format!(
            "{}\n[databases.more]\npath = \"more.db\"\nmigrate = false\n",
            std::fs::read_to_string(&file).unwrap()
        ),
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_generation(metrics_port, 2.0).await;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let client = eros_bench::client::http(&url, None, &common::mcp::handshake(&ERAS[0]))
        .await
        .unwrap();
    let added = call(
        &client,
        "query",
        json!({"sql": "SELECT name FROM items", "database": "more"}),
    )
    .await;
    assert!(text(&added).contains("added"), "{}", text(&added));
    client.cancel().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
}
