//! The audit log (`EROS_AUDIT_*`) of the real binary: over HTTP with static
//! tokens, the line of a read, of a write (in the file by the time the
//! client has the write's result), of a forbidden `execute` (403, nothing
//! written), of an unknown token (its text nowhere in the log), the SQL as
//! a hash with parameter values, rotation by rename and SIGHUP, a log that
//! cannot be opened, every line kept through SIGTERM; and over stdio, where
//! the local user is the principal.

use crate::common;

use common::token_entry;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mcp::{call, post_json, rows, stdio_client, text, tools_call, Client, HttpServer};
use common::TestDb;
use eros_mcp::identity::tokens::digest_hex;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const READER: &str = "reader-token-0123456789";
const WRITER: &str = "writer-token-0123456789";

/// A declared write tool, audited like `execute`.
const RENAME_TOOL: &str = r#"
[[tools]]
name = "rename_creator"
description = "Set a creator's display name."
access = "write"
sql = "UPDATE creators SET display_name = :name WHERE id = :id"

[tools.params.id]
type = "integer"
description = "The creator's id."

[tools.params.name]
type = "string"
description = "The new display name."
"#;

/// A server with writes on, a reader (eros:read) and a writer (eros:read,
/// eros:write), auditing to `audit.log` in the database's directory, with
/// `extra` settings; the sidecar on when `observed`.
fn start(db: &TestDb, extra: &[(&str, &str)], observed: bool) -> (HttpServer, PathBuf) {
    let tokens = db.file("tokens.toml");
    std::fs::write(
        &tokens,
        token_entry("reporting-agent", READER, &["eros:read"])
            + &token_entry("etl", WRITER, &["eros:read", "eros:write"]),
    )
    .unwrap();
    let tools = db.file("tools.toml");
    std::fs::write(&tools, RENAME_TOOL).unwrap();
    let log = db.file("audit.log");
    let mut env = vec![
        ("EROS_DB_READ_ONLY", "false"),
        ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
        ("EROS_MCP_TOOLS_FILE", tools.to_str().unwrap()),
        ("EROS_AUDIT_LOG", log.to_str().unwrap()),
    ];
    env.extend_from_slice(extra);
    let server = if observed {
        HttpServer::start_observed(db.path(), &env)
    } else {
        HttpServer::start(db.path(), &env)
    };
    (server, log)
}

async fn client(server: &HttpServer, token: &str) -> Client {
    server
        .client(Some(token), &ProtocolVersion::V_2025_11_25)
        .await
}

/// Every line of the log, parsed (each line must be one JSON object).
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: not JSON: {line}"))
        })
        .collect()
}

/// The lines of `event` (and of `tool`, when given).
fn events(path: &Path, event: &str, tool: Option<&str>) -> Vec<Value> {
    lines(path)
        .into_iter()
        .filter(|line| line["event"] == event)
        .filter(|line| tool.is_none_or(|tool| line["tool"] == tool))
        .collect()
}

/// A line's fields that vary from run to run are shaped right; the rest
/// is returned for an exact comparison.
fn stable_fields(line: &Value) -> Value {
    let mut line = line.clone();
    let fields = line.as_object_mut().unwrap();
    let time = fields.remove("time").expect("a time");
    let time = time.as_str().unwrap();
    // 2026-03-01T12:34:56.789Z
    assert_eq!(time.len(), 24, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
    if let Some(duration) = fields.remove("duration_ms") {
        assert!(duration.as_f64().unwrap() >= 0.0, "{duration}");
    }
    if let Some(bytes) = fields.remove("bytes") {
        assert!(bytes.as_u64().is_some(), "{bytes}");
    }
    if let Some(session) = fields.remove("session") {
        assert!(!session.as_str().unwrap().is_empty());
    }
    line
}

async fn creator_count(client: &Client) -> Value {
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

/// A raw JSON-RPC `tools/call` POST with `token`: its status.
async fn post_call(server: &HttpServer, token: Option<&str>, tool: &str, arguments: Value) -> u16 {
    post_json(server, token, &tools_call(tool, arguments))
        .await
        .status
}

#[tokio::test]
async fn a_read_is_one_line_naming_the_principal_the_session_and_the_sql() {
    let db = TestDb::new().with_demo_data();
    let (server, log) = start(&db, &[], false);
    let reader = client(&server, READER).await;
    let sql = "SELECT handle FROM creators WHERE id = ?";
    let result = call(&reader, "query", json!({ "sql": sql, "params": [1] })).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let reads = events(&log, "tool_call", Some("query"));
    let [read] = &reads[..] else {
        panic!("one query line expected: {reads:?}");
    };
    assert!(read["session"].is_string(), "an HTTP session: {read}");
    assert_eq!(
        stable_fields(read),
        json!({
            "event": "tool_call",
            "principal": "reporting-agent",
            "tool": "query",
            "database": "main",
            "sql": sql,
            "params": 1,
            "outcome": "ok",
            "rows": 1,
        })
    );
    assert!(read["bytes"].as_u64().unwrap() > 0, "{read}");
}

#[tokio::test]
async fn a_writes_line_is_in_the_file_when_the_client_has_its_result() {
    let db = TestDb::new().with_demo_data();
    let (server, log) = start(&db, &[], false);
    let writer = client(&server, WRITER).await;
    let sql = "UPDATE creators SET display_name = 'audited' WHERE id = 1";
    let result = call(&writer, "execute", json!({ "sql": sql })).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    // Read at once: no waiting, no polling.
    let writes = events(&log, "tool_call", Some("execute"));
    let [write] = &writes[..] else {
        panic!("the write's line is not in the file yet: {:?}", lines(&log));
    };
    assert_eq!(
        stable_fields(write),
        json!({
            "event": "tool_call",
            "principal": "etl",
            "tool": "execute",
            "database": "main",
            "sql": sql,
            "params": 0,
            "outcome": "ok",
            "rows": 0,
        })
    );

    let result = call(
        &writer,
        "rename_creator",
        json!({ "id": 2, "name": "also audited" }),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let declared = events(&log, "tool_call", Some("rename_creator"));
    let [declared] = &declared[..] else {
        panic!("the declared write's line is not in the file yet");
    };
    assert_eq!(declared["principal"], "etl");
    assert_eq!(declared["outcome"], "ok");
    assert_eq!(declared["params"], 2);
    assert_eq!(
        declared["sql"],
        "UPDATE creators SET display_name = :name WHERE id = :id"
    );
    // Values only when EROS_AUDIT_PARAMS=true.
    assert!(declared.get("param_values").is_none(), "{declared}");
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("also audited"));
}

#[tokio::test]
async fn a_read_only_principal_calling_execute_gets_403_a_scope_refused_line_and_no_write() {
    let db = TestDb::new().with_demo_data();
    let (server, log) = start(&db, &[], false);
    let reader = client(&server, READER).await;
    let before = creator_count(&reader).await;
    let status = post_call(
        &server,
        Some(READER),
        "execute",
        json!({ "sql": "DELETE FROM creators" }),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(creator_count(&reader).await, before);
    let refused = events(&log, "scope_refused", None);
    let [refused] = &refused[..] else {
        panic!("one scope_refused line expected: {:?}", lines(&log));
    };
    assert_eq!(
        stable_fields(refused),
        json!({
            "event": "scope_refused",
            "principal": "reporting-agent",
            "method": "tools/call",
            "tool": "execute",
            "scope": "eros:write",
        })
    );
    // Refused before the MCP server: no tool_call line for it.
    assert!(events(&log, "tool_call", Some("execute")).is_empty());
}

#[tokio::test]
async fn an_unknown_token_is_logged_by_its_reason_and_never_by_its_text() {
    let db = TestDb::new().with_demo_data();
    let (server, log) = start(&db, &[], true);
    let outsider = "outsider-secret-token-7f3a9c";
    // The test's wait for the server probed /mcp without a token already.
    let earlier = events(&log, "authentication_failed", None).len();
    assert_eq!(
        post_call(
            &server,
            Some(outsider),
            "query",
            json!({ "sql": "SELECT 1" })
        )
        .await,
        401
    );
    assert_eq!(
        post_call(&server, None, "query", json!({ "sql": "SELECT 1" })).await,
        401
    );
    let failures = events(&log, "authentication_failed", None);
    let reasons: Vec<Value> = failures[earlier..].iter().map(stable_fields).collect();
    assert_eq!(
        reasons,
        [
            json!({ "event": "authentication_failed", "reason": "unknown_token" }),
            json!({ "event": "authentication_failed", "reason": "missing_token" }),
        ]
    );
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(!raw.contains(outsider), "{raw}");
    assert!(!raw.contains(&digest_hex(outsider)), "{raw}");
    assert!(!raw.contains("outsider"), "{raw}");
    // The metrics still count it: both observers get every refusal.
    let (_, metrics) = server.sidecar("/metrics");
    assert!(
        metrics.contains(r#"mcp_auth_failures_total{reason="unknown_token"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn hash_mode_writes_the_sqls_sha256_and_params_mode_the_values() {
    let db = TestDb::new().with_demo_data();
    let (server, log) = start(
        &db,
        &[("EROS_AUDIT_SQL", "hash"), ("EROS_AUDIT_PARAMS", "true")],
        false,
    );
    let reader = client(&server, READER).await;
    let sql = "SELECT handle FROM creators WHERE id = :id AND handle <> 'secret-literal'";
    let result = call(
        &reader,
        "query",
        json!({ "sql": sql, "params": { "id": 3 } }),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let reads = events(&log, "tool_call", Some("query"));
    let [read] = &reads[..] else {
        panic!("one query line expected: {reads:?}");
    };
    assert!(read.get("sql").is_none(), "{read}");
    assert_eq!(
        read["sql_sha256"],
        hex::encode(Sha256::digest(sql)).as_str()
    );
    assert_eq!(read["params"], 1);
    assert_eq!(read["param_values"], json!({ "id": 3 }));
    let raw = std::fs::read_to_string(&log).unwrap();
    assert!(!raw.contains("secret-literal"), "{raw}");

    // A declared tool: its statement hashed, its arguments the values.
    let writer = client(&server, WRITER).await;
    let result = call(&writer, "rename_creator", json!({ "id": 2, "name": "x" })).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let declared = events(&log, "tool_call", Some("rename_creator"));
    let statement = "UPDATE creators SET display_name = :name WHERE id = :id";
    assert_eq!(
        declared[0]["sql_sha256"],
        hex::encode(Sha256::digest(statement)).as_str()
    );
    assert_eq!(declared[0]["param_values"], json!({ "id": 2, "name": "x" }));
}

#[tokio::test]
async fn after_a_rename_and_sighup_the_next_line_goes_to_a_new_file_at_the_path() {
    let db = TestDb::new().with_demo_data();
    let (mut server, log) = start(&db, &[], false);
    let reader = client(&server, READER).await;
    call(&reader, "query", json!({ "sql": "SELECT 'before'" })).await;
    let rotated = db.file("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: kill(2) on the server this test started.
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGHUP) };
    // The reopen creates the file at the path.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.exists() {
        assert!(Instant::now() < deadline, "no new audit log after SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call(&reader, "query", json!({ "sql": "SELECT 'after'" })).await;
    let sql_of = |path: &Path| -> Vec<Value> {
        events(path, "tool_call", Some("query"))
            .into_iter()
            .map(|line| line["sql"].clone())
            .collect()
    };
    assert_eq!(sql_of(&rotated), [json!("SELECT 'before'")]);
    assert_eq!(sql_of(&log), [json!("SELECT 'after'")]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // The tokens file is still re-read by the same SIGHUP handler, and the
    // server is still up.
    assert!(server.child.try_wait().unwrap().is_none());
    assert_eq!(creator_count(&reader).await, json!([[40]]));
}

#[test]
fn an_audit_log_that_cannot_be_opened_stops_startup_naming_its_path() {
    let db = TestDb::new();
    let log = db.file("no-such-directory/audit.log");
    let mut command = common::mcp::http_command(
        db.path(),
        &[("EROS_AUDIT_LOG", log.to_str().unwrap())],
        common::mcp::free_port(),
        None,
    );
    let output = command
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot open the audit log {}", log.display())),
        "{stderr}"
    );
}

#[tokio::test]
async fn over_stdio_the_local_user_is_the_principal() {
    let db = TestDb::new().with_demo_data();
    let log = db.file("audit.log");
    let client = stdio_client(
        db.path(),
        &[
            ("EROS_AUDIT_LOG", log.to_str().unwrap()),
            ("USER", "audit-tester"),
        ],
        &ProtocolVersion::V_2025_11_25,
    )
    .await;
    call(&client, "query", json!({ "sql": "SELECT 1" })).await;
    let reads = events(&log, "tool_call", Some("query"));
    let [read] = &reads[..] else {
        panic!("one query line expected: {reads:?}");
    };
    assert!(
        read.get("session").is_none(),
        "no session over stdio: {read}"
    );
    assert_eq!(
        stable_fields(read),
        json!({
            "event": "tool_call",
            "principal": "audit-tester",
            "tool": "query",
            "database": "main",
            "sql": "SELECT 1",
            "params": 0,
            "outcome": "ok",
            "rows": 1,
        })
    );
}

#[tokio::test]
async fn every_reads_line_is_in_the_file_after_sigterm() {
    let db = TestDb::new().with_demo_data();
    let (server, log) = start(&db, &[], false);
    let reader = client(&server, READER).await;
    for n in 0..20 {
        call(&reader, "query", json!({ "sql": format!("SELECT {n}") })).await;
    }
    drop(reader);
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let sql: Vec<Value> = events(&log, "tool_call", Some("query"))
        .into_iter()
        .map(|line| line["sql"].clone())
        .collect();
    let expected: Vec<Value> = (0..20).map(|n| json!(format!("SELECT {n}"))).collect();
    assert_eq!(sql, expected);
}

#[test]
fn a_symbolic_link_at_the_audit_path_stops_startup_naming_it() {
    let db = TestDb::new();
    let target = db.file("elsewhere.log");
    std::fs::write(&target, b"").unwrap();
    let log = db.file("audit.log");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    let mut command = common::mcp::http_command(
        db.path(),
        &[("EROS_AUDIT_LOG", log.to_str().unwrap())],
        common::mcp::free_port(),
        None,
    );
    let mut child = command
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that followed the link would start and serve: not for long.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("the server started with a symbolic link at its audit path");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot open the audit log {}", log.display()))
            && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"",
        "a line went through the link"
    );
}

#[tokio::test]
async fn unicode_line_breaks_in_the_sql_are_escaped_so_each_record_is_one_line() {
    let db = TestDb::new().with_demo_data();
    let (server, log) = start(&db, &[], false);
    let reader = client(&server, READER).await;
    let sql = "SELECT 1 /* \u{2028} \u{2029} \u{85} */";
    call(&reader, "query", json!({ "sql": sql })).await;
    let text = std::fs::read_to_string(&log).unwrap();
    for raw in ['\u{2028}', '\u{2029}', '\u{85}'] {
        assert!(!text.contains(raw), "{raw:?} written raw: {text}");
    }
    // Split as a Unicode-aware reader would: still whole records.
    let records: Vec<&str> = text
        .split(['\n', '\u{2028}', '\u{2029}', '\u{85}'])
        .filter(|l| !l.is_empty())
        .collect();
    let parsed: Vec<Value> = records
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(parsed.iter().any(|r| r["sql"] == sql), "{parsed:?}");
}

#[tokio::test]
async fn every_tools_call_is_recorded_also_one_refused_for_its_arguments_or_naming_no_tool() {
    let db = TestDb::new().with_demo_data();
    let (server, log) = start(&db, &[], false);
    let reader = client(&server, READER).await;
    for arguments in [
        json!({ "sql": 5 }),
        json!({ "sql": "SELECT 1", "params": "not a list" }),
        json!({}),
    ] {
        let result = call(&reader, "query", arguments.clone()).await;
        assert_eq!(result.is_error, Some(true), "{arguments} was run");
    }
    let bare = reader
        .call_tool(rmcp::model::CallToolRequestParams::new("query"))
        .await;
    assert!(
        bare.map_or(true, |result| result.is_error == Some(true)),
        "a call with no arguments was run"
    );
    let unknown = reader
        .call_tool(rmcp::model::CallToolRequestParams::new("drop_everything"))
        .await;
    assert!(
        unknown.map_or(true, |result| result.is_error == Some(true)),
        "an unknown tool was run"
    );
    let refused: Vec<Value> = events(&log, "tool_call", Some("query"))
        .into_iter()
        .filter(|line| line["outcome"] == "invalid")
        .collect();
    assert_eq!(refused.len(), 4, "{:?}", lines(&log));
    for line in &refused {
        assert_eq!(line["principal"], "reporting-agent", "{line}");
    }
    let [named] = &events(&log, "tool_call", Some("drop_everything"))[..] else {
        panic!("no line for the unknown tool: {:?}", lines(&log));
    };
    assert_eq!(named["outcome"], "invalid");
    assert_eq!(named["principal"], "reporting-agent");
    // The control: a call that is run is recorded as run.
    creator_count(&reader).await;
    assert_eq!(
        events(&log, "tool_call", Some("query"))
            .iter()
            .filter(|line| line["outcome"] == "ok")
            .count(),
        1
    );
    reader.cancel().await.unwrap();
}

#[tokio::test]
async fn a_call_naming_a_session_the_server_did_not_assign_is_recorded_without_it() {
    let db = TestDb::new().with_demo_data();
    let (server, log) = start(&db, &[], false);
    let answer = crate::common::mcp::http_client()
        .post(server.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-session-id", "someone-elses-session")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "query")
        .header("authorization", format!("Bearer {READER}"))
        .body(
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "query", "arguments": {"sql": "SELECT 1"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    // Served without a session: a session the server never assigned is
    // only the client's say-so.
    assert_eq!(status, 200, "{text}");
    let recorded = events(&log, "tool_call", Some("query"));
    let [line] = &recorded[..] else {
        panic!("{status} {text}: {:?}", lines(&log));
    };
    assert!(line.get("session").is_none(), "{line}");
    // The control: a call in a session the server assigned names it.
    let reader = client(&server, READER).await;
    creator_count(&reader).await;
    let in_session = events(&log, "tool_call", Some("query"));
    let last = in_session.last().unwrap();
    assert!(
        last["session"].as_str().is_some_and(|s| !s.is_empty()),
        "{last}"
    );
    reader.cancel().await.unwrap();
}

/// A tmpfs of `size` on a new directory, unmounted on drop; `None` where
/// mounting is not allowed.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then_some(Self(dir))
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 512];
        while file.write_all(&chunk).is_ok() {}
        let mut byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {
            byte[0] = byte[0].wrapping_add(1);
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// The display names of creators 1 to 40, in order.
async fn names(client: &Client) -> Vec<Value> {
    rows(
        &call(
            client,
            "query",
            json!({ "sql": "SELECT display_name FROM creators WHERE id <= 40 ORDER BY id" }),
        )
        .await,
    )["rows"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_no_write_is_acknowledged_without_its_record_and_no_records_join() {
    let Some(disk) = SmallDisk::mount("256k") else {
        panic!("cannot mount a tmpfs here (not root?): this test needs one to fill the audit disk");
    };
    let log = disk.0.path().join("audit.log");
    for fail_closed in [true, false] {
        let _ = std::fs::remove_file(&log);
        let db = TestDb::new().with_demo_data();
        let (server, _) = start(
            &db,
            &[
                ("EROS_AUDIT_LOG", log.to_str().unwrap()),
                (
                    "EROS_AUDIT_FAIL_CLOSED",
                    if fail_closed { "true" } else { "false" },
                ),
            ],
            false,
        );
        let writer = client(&server, WRITER).await;
        let before = names(&writer).await;
        let filler = disk.fill();
        // The log's last page still has room for a few records; 40
        // writes run past it.
        let mut acknowledged = Vec::new();
        for id in 1..=40 {
            let sql =
                format!("UPDATE creators SET display_name = 'unrecorded-{id}' WHERE id = {id}");
            let result = call(&writer, "execute", json!({ "sql": sql })).await;
            if result.is_error == Some(true) {
                assert!(
                    text(&result).contains("AUDIT_UNAVAILABLE"),
                    "{}",
                    text(&result)
                );
            } else {
                acknowledged.push((id, sql));
            }
        }
        let after = names(&writer).await;
        // The write records that are whole lines (a torn one is not).
        let records: Vec<Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|line: &Value| line["event"] == "write")
            .collect();
        let unrecorded = acknowledged
            .iter()
            .filter(|(_, sql)| !records.iter().any(|record| record["sql"] == sql.as_str()))
            .count();
        if fail_closed {
            assert!(
                acknowledged.len() < 40,
                "no write was refused on a full disk"
            );
            assert_eq!(unrecorded, 0, "a write was acknowledged without its record");
            for id in 1..=40usize {
                let committed = after[id - 1] != before[id - 1];
                let acked = acknowledged.iter().any(|(a, _)| *a == id);
                assert_eq!(
                    committed, acked,
                    "creator {id}: committed {committed}, acknowledged {acked}"
                );
            }
        } else {
            // The control: the same writes on the same full disk commit
            // when the operator chose writes over their records, and some
            // then have none.
            assert_eq!(acknowledged.len(), 40);
            assert!(unrecorded > 0, "the disk never filled up");
        }
        std::fs::remove_file(filler).unwrap();
        let sql = "UPDATE creators SET display_name = 'recorded' WHERE id = 1";
        let result = call(&writer, "execute", json!({ "sql": sql })).await;
        assert_ne!(result.is_error, Some(true), "{}", text(&result));
        let text = std::fs::read_to_string(&log).unwrap();
        for line in text.lines() {
            assert!(
                line.matches("{\"time\"").count() <= 1,
                "two records joined on one line: {line}"
            );
        }
        // Whole records once the disk has room again.
        let last: Vec<Value> = text
            .lines()
            .rev()
            .take(2)
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(last[0]["event"], "tool_call", "{text}");
        assert_eq!(last[1]["event"], "write", "{text}");
        assert_eq!(last[1]["sql"], sql);
        writer.cancel().await.unwrap();
    }
}
