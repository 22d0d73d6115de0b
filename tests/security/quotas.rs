//! Per-principal quotas (`EROS_AUTH_QUOTAS_FILE`) through the real binary
//! over HTTP with static tokens: each quota refuses at its limit before any
//! SQL runs, with a retryable error naming the quota and the wait, and
//! admits again once the wait is over; a quota belongs to the principal,
//! not its session; refusals are counted and audited; the file is re-read
//! on SIGHUP; a bad file stops startup.

use std::time::{Duration, Instant};

use crate::common;

use common::mcp::{call, sample, text, Client, HttpServer};
use common::{token_entry, TestDb};
use rmcp::model::{CallToolResult, ProtocolVersion};
use serde_json::{json, Value};

const READER: &str = "reader-token-0123456789";
const OTHER: &str = "other-token-0123456789";

/// A server with two principals, `reporting-agent` (named in the quotas
/// file) and `other-agent` (not named), the quotas `quotas`, and `extra`.
fn start(db: &TestDb, quotas: &str, extra: &[(&str, &str)]) -> HttpServer {
    let tokens = db.file("tokens.toml");
    std::fs::write(
        &tokens,
        token_entry("reporting-agent", READER, &["eros:read"])
            + &token_entry("other-agent", OTHER, &["eros:read"]),
    )
    .unwrap();
    let file = db.file("quotas.toml");
    std::fs::write(&file, quotas).unwrap();
    let log = db.file("audit.log");
    let mut env = vec![
        ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
        ("EROS_AUTH_QUOTAS_FILE", file.to_str().unwrap()),
        ("EROS_AUDIT_LOG", log.to_str().unwrap()),
    ];
    env.extend_from_slice(extra);
    HttpServer::start_observed(db.path(), &env)
}

async fn client(server: &HttpServer, token: &str) -> Client {
    server
        .client(Some(token), &ProtocolVersion::V_2025_11_25)
        .await
}

async fn query(client: &Client, sql: &str) -> CallToolResult {
    call(client, "query", json!({ "sql": sql })).await
}

/// The quota that refused `result` and the seconds it says to wait, or
/// `None` when it was not refused by a quota.
fn refusal(result: &CallToolResult) -> Option<(String, u64)> {
    let text = text(result);
    let rest = text.strip_prefix("QUOTA_EXCEEDED: ")?;
    assert_eq!(result.is_error, Some(true), "{text}");
    assert!(text.ends_with("[retryable]"), "{text}");
    let quota = rest.split("over its quota ").nth(1)?.split(' ').next()?;
    let secs = rest
        .split("retry in ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some((quota.to_string(), secs))
}

fn ok(result: &CallToolResult) {
    assert_ne!(result.is_error, Some(true), "{}", text(result));
}

/// `n` rows of one small integer each.
fn rows_sql(n: u32) -> String {
    format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT i FROM n")
}

/// Runs until the query timeout stops it.
const RUNAWAY: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_minute_refuse_past_the_burst_and_admit_again_after_the_refill() {
    let db = TestDb::new().with_demo_data();
    let server = start(
        &db,
        "[principals.reporting-agent]\ncalls_per_minute = 60\nburst = 3\n",
        &[],
    );
    let reader = client(&server, READER).await;
    for _ in 0..3 {
        ok(&query(&reader, "SELECT 1").await);
    }
    let refused = query(&reader, "SELECT 1").await;
    let (quota, wait) = refusal(&refused).expect("the fourth call is refused");
    assert_eq!((quota.as_str(), wait), ("calls_per_minute", 1));
    assert!(text(&refused).contains("60 calls a minute, bursts of 3"));
    // A principal the file does not name has no default here: unlimited.
    let other = client(&server, OTHER).await;
    for _ in 0..5 {
        ok(&query(&other, "SELECT 1").await);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ok(&query(&reader, "SELECT 1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_limited_per_principal() {
    let db = TestDb::new().with_demo_data();
    let server = start(
        &db,
        "[default]\nin_flight = 1\n",
        &[("EROS_DB_QUERY_TIMEOUT", "2")],
    );
    let reader = client(&server, READER).await;
    let slow = {
        let reader = client(&server, READER).await;
        tokio::spawn(async move { query(&reader, RUNAWAY).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = query(&reader, "SELECT 1").await;
    assert_eq!(refusal(&refused).map(|r| r.0).as_deref(), Some("in_flight"));
    // The other principal's calls are its own.
    ok(&query(&client(&server, OTHER).await, "SELECT 1").await);
    let timed_out = slow.await.unwrap();
    assert!(
        text(&timed_out).starts_with("TIMEOUT"),
        "{}",
        text(&timed_out)
    );
    ok(&query(&reader, "SELECT 1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_and_bytes_are_charged_after_the_answer_and_refuse_the_next_call() {
    let db = TestDb::new().with_demo_data();
    // 10 rows a second; 1000 bytes a second for the other principal.
    let server = start(
        &db,
        "[principals.reporting-agent]\nrows_per_minute = 600\n\n\
         [principals.other-agent]\nbytes_per_minute = 60000\n",
        &[],
    );
    let reader = client(&server, READER).await;
    // 620 rows: 20 over, two seconds to pay back.
    ok(&query(&reader, &rows_sql(620)).await);
    let refused = query(&reader, "SELECT 1").await;
    let (quota, wait) = refusal(&refused).expect("refused after the big answer");
    assert_eq!(quota, "rows_per_minute");
    assert!((1..=3).contains(&wait), "{}", text(&refused));
    tokio::time::sleep(Duration::from_secs(wait)).await;
    ok(&query(&reader, "SELECT 1").await);

    let other = client(&server, OTHER).await;
    // A hundred characters a row: well over 60000 bytes.
    ok(&query(
        &other,
        &format!("SELECT printf('%0100d', i) FROM ({})", rows_sql(1000)),
    )
    .await);
    let refused = query(&other, "SELECT 1").await;
    assert_eq!(
        refusal(&refused).map(|r| r.0).as_deref(),
        Some("bytes_per_minute")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_time_is_charged_and_refuses_until_paid_back() {
    let db = TestDb::new().with_demo_data();
    // 3 s a minute (0.05 s a second): a few runaways stopped at 0.5 s
    // spend it, and the last one's debt is paid back within seconds.
    let server = start(
        &db,
        "[default]\nsqlite_seconds_per_minute = 3\n",
        &[("EROS_DB_QUERY_TIMEOUT", "0.5")],
    );
    let reader = client(&server, READER).await;
    let mut refused = None;
    for _ in 0..12 {
        let result = query(&reader, RUNAWAY).await;
        if let Some(found) = refusal(&result) {
            refused = Some(found);
            break;
        }
        assert!(text(&result).starts_with("TIMEOUT"), "{}", text(&result));
    }
    let (quota, wait) = refused.expect("a principal past its database time is refused");
    assert_eq!(quota, "sqlite_seconds_per_minute");
    assert!(wait <= 30, "{wait}");
    // The wait it names is the wait it means.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    ok(&query(&reader, "SELECT 1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sessions_do_not_reset_a_principals_quota() {
    let db = TestDb::new().with_demo_data();
    let server = start(&db, "[default]\ncalls_per_minute = 6\nburst = 2\n", &[]);
    let first = client(&server, READER).await;
    ok(&query(&first, "SELECT 1").await);
    ok(&query(&first, "SELECT 1").await);
    // A new session, and a 2026-07-28 call with no session at all.
    let second = client(&server, READER).await;
    assert!(refusal(&query(&second, "SELECT 1").await).is_some());
    let stateless = server
        .client(Some(READER), &ProtocolVersion::V_2026_07_28)
        .await;
    assert!(refusal(&query(&stateless, "SELECT 1").await).is_some());
    // The control: another principal's first calls are admitted.
    ok(&query(&client(&server, OTHER).await, "SELECT 1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_named_principal_or_other_and_audited() {
    let db = TestDb::new().with_demo_data();
    let server = start(
        &db,
        "[default]\ncalls_per_minute = 60\nburst = 1\n\n\
         [principals.reporting-agent]\nburst = 1\n",
        &[],
    );
    let (_, before) = server.sidecar("/metrics");
    let series = |principal: &str| {
        format!(
            "mcp_quota_rejections_total{{principal=\"{principal}\",quota=\"calls_per_minute\"}}"
        )
    };
    // Named principals' series exist before any refusal.
    assert_eq!(sample(&before, &series("reporting-agent")), Some(0.0));
    let reader = client(&server, READER).await;
    let other = client(&server, OTHER).await;
    for client in [&reader, &other] {
        ok(&query(client, "SELECT 1").await);
        assert!(refusal(&query(client, "SELECT 1").await).is_some());
    }
    let (_, after) = server.sidecar("/metrics");
    assert_eq!(sample(&after, &series("reporting-agent")), Some(1.0));
    // A principal the file does not name is `other`, never its own label.
    assert_eq!(sample(&after, &series("other")), Some(1.0));
    assert!(!after.contains("principal=\"other-agent\""));
    let audit = std::fs::read_to_string(db.file("audit.log")).unwrap();
    let refusals: Vec<Value> = audit
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["outcome"] == "quota")
        .collect();
    assert_eq!(refusals.len(), 2, "{audit}");
    assert!(refusals
        .iter()
        .all(|line| line["quota"] == "calls_per_minute"));
}

/// Quotas that refuse nothing a test sends, and what they become: one
/// call a second, no burst.
const LOOSE: &str = "[default]\nin_flight = 100\n";
const TIGHT: &str = "[default]\ncalls_per_minute = 60\nburst = 1\n";

/// Calls until the quotas refuse one (two calls a round: the tight quota
/// admits at most one), failing with `never` after 20 s.
async fn until_refused(reader: &Client, never: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let first = query(reader, "SELECT 1").await;
        let second = query(reader, "SELECT 1").await;
        if refusal(&first).is_some() || refusal(&second).is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "{never}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_quotas_file() {
    let db = TestDb::new().with_demo_data();
    let server = start(&db, LOOSE, &[]);
    let reader = client(&server, READER).await;
    ok(&query(&reader, "SELECT 1").await);
    std::fs::write(db.file("quotas.toml"), TIGHT).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    until_refused(&reader, "the new quotas never applied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_quotas_file_is_reloaded_without_a_signal() {
    let db = TestDb::new().with_demo_data();
    let server = start(&db, LOOSE, &[]);
    let reader = client(&server, READER).await;
    ok(&query(&reader, "SELECT 1").await);
    ok(&query(&reader, "SELECT 1").await);
    std::fs::write(db.file("quotas.toml"), TIGHT).unwrap();
    until_refused(&reader, "the changed file was never read").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_watch_off_a_changed_quotas_file_waits_for_sighup() {
    // The control of the test above: the same change, nobody looking.
    let db = TestDb::new().with_demo_data();
    let server = start(&db, LOOSE, &[("EROS_DATABASES_WATCH", "false")]);
    let reader = client(&server, READER).await;
    std::fs::write(db.file("quotas.toml"), TIGHT).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..3 {
        ok(&query(&reader, "SELECT 1").await);
    }
}

#[test]
fn a_bad_quotas_file_stops_startup_naming_the_problem() {
    let db = TestDb::new().with_demo_data();
    let file = db.file("quotas.toml");
    std::fs::write(&file, "[default]\ncalls_per_minute = 0\n").unwrap();
    let mut command = common::mcp::http_command(
        db.path(),
        &[("EROS_AUTH_QUOTAS_FILE", file.to_str().unwrap())],
        common::mcp::free_port(),
        None,
    );
    command.stderr(std::process::Stdio::piped());
    let output = command.spawn().unwrap().wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("quotas file") && stderr.contains("calls_per_minute"),
        "{stderr}"
    );
}

/// The name the server gives the user who started it (`Principal::local`).
fn local_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|name| !name.is_empty())
        // SAFETY: getuid(2) has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid:{}", unsafe { libc::getuid() }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdios_local_user_has_no_quota_unless_the_file_names_it() {
    let db = TestDb::new().with_demo_data();
    let file = db.file("quotas.toml");
    let default_only = "[default]\ncalls_per_minute = 60\nburst = 1\n";
    std::fs::write(&file, default_only).unwrap();
    let env = [("EROS_AUTH_QUOTAS_FILE", file.to_str().unwrap())];
    let version = ProtocolVersion::V_2025_11_25;
    let local = common::in_process::stdio_client(db.path(), &env, &version).await;
    for _ in 0..4 {
        ok(&query(&local, "SELECT 1").await);
    }
    // The control: named, the local user has its quota.
    std::fs::write(
        &file,
        format!(
            "{default_only}\n[principals.\"{}\"]\ncalls_per_minute = 60\nburst = 1\n",
            local_user()
        ),
    )
    .unwrap();
    let named = common::in_process::stdio_client(db.path(), &env, &version).await;
    ok(&query(&named, "SELECT 1").await);
    assert!(refusal(&query(&named, "SELECT 1").await).is_some());
}
