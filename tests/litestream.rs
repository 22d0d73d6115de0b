//! Backups and read replicas with the real Litestream binary: a primary
//! under `litestream replicate` to a `file://` replica, a follower
//! (`litestream restore -f`) keeping a copy current, and a replica server
//! (`EROS_DB_ROLE=replica`) reading it; `eros-mcp restore` bringing back the
//! latest state and a point in time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mcp::{call, free_port, http_command, http_get, rows, text, Client, HttpServer};
use common::ops::tools::tool;
use rmcp::model::ProtocolVersion;
use serde_json::json;

/// A child process killed on drop, so a failing test leaves nothing running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn litestream() -> String {
    tool("litestream").display().to_string()
}

fn replica_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// `litestream replicate DB URL`, one sync a second (Litestream's default).
fn replicate(db: &Path, replica: &Path) -> Process {
    Process(
        Command::new(litestream())
            .arg("replicate")
            .arg(db)
            .arg(replica_url(replica))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start litestream replicate"),
    )
}

/// Whether Litestream has written any file under `dir` yet.
fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                has_files(&path)
            } else {
                path.extension().is_some_and(|ext| ext == "ltx")
            }
        })
    })
}

/// `litestream restore -f`: the first restore, then every new transaction.
/// It refuses to start before the replica holds its first LTX file, so
/// this waits for one.
fn follow(replica: &Path, copy: &Path) -> Process {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has_files(replica) {
        assert!(Instant::now() < deadline, "Litestream wrote no LTX file");
        std::thread::sleep(Duration::from_millis(100));
    }
    Process(
        Command::new(litestream())
            .args(["restore", "-f", "-follow-interval", "100ms", "-o"])
            .arg(copy)
            .arg(replica_url(replica))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start litestream restore -f"),
    )
}

/// Polls `check` until it holds or a deadline generous for a loaded CI
/// machine passes.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The primary: HTTP, writes on, replicated by Litestream.
fn primary(dir: &Path, replica: &Path) -> HttpServer {
    let url = replica_url(replica);
    let bin = litestream();
    HttpServer::start_observed(
        &dir.join("primary.db"),
        &[
            ("EROS_DB_READ_ONLY", "false"),
            ("EROS_DB_REPLICATION", "litestream"),
            ("EROS_DB_REPLICA_URL", &url),
            ("EROS_DB_LITESTREAM_BIN", &bin),
            ("EROS_DB_HEARTBEAT_INTERVAL", "0.2"),
        ],
    )
}

/// A replica server on `copy`, with its sidecar; returns at once (it may
/// be waiting for the first restore).
fn replica_server(copy: &Path) -> (Process, u16, u16) {
    let port = free_port();
    let metrics = free_port();
    let child = http_command(
        copy,
        &[
            ("EROS_DB_ROLE", "replica"),
            ("EROS_DB_REPLICA_MAX_LAG", "5"),
        ],
        port,
        Some(metrics),
    )
    .spawn()
    .expect("spawn the replica");
    (Process(child), port, metrics)
}

async fn client(port: u16) -> Client {
    eros_bench::client::http(
        &format!("http://127.0.0.1:{port}/mcp"),
        None,
        &common::mcp::handshake(&ProtocolVersion::V_2025_11_25),
    )
    .await
    .expect("MCP handshake over HTTP")
}

async fn execute(client: &Client, sql: &str) {
    let result = call(client, "execute", json!({ "sql": sql })).await;
    assert_ne!(result.is_error, Some(true), "{sql}: {}", text(&result));
}

async fn select(client: &Client, sql: &str) -> serde_json::Value {
    rows(&call(client, "query", json!({ "sql": sql })).await)["rows"].clone()
}

fn ready(metrics_port: u16) -> bool {
    http_get(metrics_port, "/readyz").0 == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_the_primary_reaches_a_replica_that_takes_no_writes() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let copy = dir.path().join("copy.db");
    let primary = primary(dir.path(), &replica);
    let _replicate = replicate(&dir.path().join("primary.db"), &replica);
    let (_server, port, metrics) = replica_server(&copy);
    // Before the follower's first restore there is nothing to serve.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        http_get(metrics, "/readyz").0,
        503,
        "ready before any restore"
    );
    assert_eq!(http_get(metrics, "/livez").0, 200);

    let _follower = follow(&replica, &copy);
    eventually("the replica to be ready", async || ready(metrics)).await;
    let writer = primary.client(None, &ProtocolVersion::V_2025_11_25).await;
    execute(&writer, "CREATE TABLE notes (body TEXT)").await;
    execute(
        &writer,
        "INSERT INTO notes VALUES ('hello from the primary')",
    )
    .await;

    let reader = client(port).await;
    eventually("the write on the replica", async || {
        let result = call(&reader, "query", json!({ "sql": "SELECT body FROM notes" })).await;
        result.is_error != Some(true)
            && rows(&result)["rows"] == json!([["hello from the primary"]])
    })
    .await;

    let tools = reader.list_all_tools().await.unwrap();
    assert!(
        tools.iter().all(|t| t.name != "execute"),
        "a replica offers execute"
    );
    for sql in [
        "INSERT INTO notes VALUES ('smuggled')",
        "DELETE FROM notes",
        "CREATE TABLE t (x)",
        "PRAGMA query_only = OFF",
    ] {
        let result = call(&reader, "query", json!({ "sql": sql })).await;
        assert_eq!(result.is_error, Some(true), "{sql} was not refused");
    }
    assert_eq!(
        select(&reader, "SELECT count(*) FROM notes").await,
        json!([[1]])
    );
    let (_, exposition) = http_get(metrics, "/metrics");
    assert!(
        exposition.contains("mcp_db_replica_lag_seconds "),
        "no lag gauge in {exposition}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_brings_back_the_latest_state_and_a_point_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let copy = dir.path().join("copy.db");
    let primary = primary(dir.path(), &replica);
    let _replicate = replicate(&dir.path().join("primary.db"), &replica);
    let _follower = follow(&replica, &copy);
    let writer = primary.client(None, &ProtocolVersion::V_2025_11_25).await;
    execute(&writer, "CREATE TABLE events (name TEXT)").await;
    execute(&writer, "INSERT INTO events VALUES ('before')").await;
    let replicated = |name: &'static str| {
        let copy = copy.clone();
        move || {
            rusqlite::Connection::open_with_flags(&copy, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM events WHERE name = ?1",
                        [name],
                        |row| row.get::<_, i64>(0),
                    )
                })
                .is_ok_and(|n| n == 1)
        }
    };
    let before = replicated("before");
    eventually("the first write replicated", async || before()).await;
    // Litestream places a point in time by its files' times: keep the
    // chosen instant clear of both writes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let instant = chrono_free_rfc3339(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    execute(&writer, "INSERT INTO events VALUES ('after')").await;
    let after = replicated("after");
    eventually("the second write replicated", async || after()).await;

    let latest = dir.path().join("restored/latest.db");
    restore(&replica, &latest, &[]).success_or_panic();
    assert_eq!(names(&latest), ["before", "after"]);
    assert_eq!(integrity(&latest), "ok");

    let point = dir.path().join("point.db");
    let live = dir.path().join("primary.db");
    let out = restore(
        &replica,
        &live,
        &["--timestamp", &instant, "--output", point.to_str().unwrap()],
    );
    out.success_or_panic();
    assert_eq!(names(&point), ["before"], "restored at {instant}");

    // Never over an existing file, never over the live database.
    let refused = restore(&replica, &live, &["--output", live.to_str().unwrap()]);
    assert!(!refused.status.success(), "restored over the live database");
}

/// `eros-mcp restore` with the replica at `replica` and EROS_DB_PATH `db`.
fn restore(replica: &Path, db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .arg("restore")
        .args(args)
        .env_clear()
        .env("EROS_DB_PATH", db)
        .env("EROS_DB_REPLICA_URL", replica_url(replica))
        .env("EROS_DB_LITESTREAM_BIN", litestream())
        .env("EROS_LOG", "warn")
        .output()
        .expect("run eros-mcp restore")
}

trait Succeeded {
    fn success_or_panic(&self);
}

impl Succeeded for std::process::Output {
    fn success_or_panic(&self) {
        assert!(
            self.status.success(),
            "eros-mcp restore failed: {}{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        );
    }
}

fn names(db: &PathBuf) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM events ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn integrity(db: &PathBuf) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. 2026-12-02T10:30:00.123Z.
fn chrono_free_rfc3339(time: std::time::SystemTime) -> String {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}
