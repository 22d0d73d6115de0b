//! A statement past its deadline gives everything back: through the
//! binary, statements SQLite cannot interrupt (a quadratic `json_patch`, the
//! planner on a chain of CTEs) are killed with their worker within the
//! grace, and ordinary calls, writes and readiness carry on. Each test's
//! control is the killed-statement counter: it proves the hostile calls
//! really were past SQLite's reach, so the test cannot pass by accident.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mcp::{call, http_get, text, HttpServer, ERAS};
use common::TestDb;
use serde_json::json;

/// The call timeout these tests run with; the grace is a tenth of it, at
/// least 50 ms (`Limits::stop_slack`).
const TIMEOUT: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_millis(100);
/// What scheduling on a busy two-core machine may add to an answer.
const SLACK: Duration = Duration::from_millis(900);

/// One `json_patch` of two objects of `keys` keys: quadratic inside one
/// SQLite step, which never looks at an interrupt (tens of seconds at
/// 25,000 keys).
fn json_patch(keys: u32) -> String {
    format!(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {keys}) \
         SELECT length(json_patch((SELECT json_group_object('k' || i, i) FROM c), \
         (SELECT json_group_object('j' || i, i) FROM c)))"
    )
}

/// A chain of `n` non-materialized CTEs, each joining the one before to
/// itself: preparing it takes the planner minutes and hundreds of MB.
fn cte_chain(n: usize) -> String {
    let mut parts = vec!["c0(x) AS NOT MATERIALIZED (SELECT 1)".to_string()];
    for i in 1..=n {
        parts.push(format!(
            "c{i}(x) AS NOT MATERIALIZED (SELECT a.x FROM c{} a, c{} b)",
            i - 1,
            i - 1
        ));
    }
    format!("WITH {} SELECT count(*) FROM c{n}", parts.join(", "))
}

/// A join of sixty derived tables, each joined to two others.
fn wide_join(n: usize) -> String {
    let tables: Vec<String> = (0..n)
        .map(|i| format!("(SELECT 1 AS x UNION ALL SELECT 2) a{i}"))
        .collect();
    let terms: Vec<String> = (0..n - 1)
        .map(|i| format!("(a{i}.x = a{}.x OR a{i}.x = a{}.x)", i + 1, (i * 7) % n))
        .collect();
    format!(
        "SELECT count(*) FROM {} WHERE {}",
        tables.join(", "),
        terms.join(" AND ")
    )
}

fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![("EROS_DB_QUERY_TIMEOUT", "1"), ("EROS_LOG", "error")];
    env.extend_from_slice(extra);
    env
}

/// A number from the sidecar's exposition.
fn metric(server: &HttpServer, name: &str) -> f64 {
    let (_, body) = server.sidecar("/metrics");
    common::mcp::sample(&body, name).unwrap_or_else(|| panic!("no {name} in the exposition"))
}

/// `/readyz` polled every 100 ms on a thread of its own: (when, status,
/// body) for each probe.
struct ReadyzWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Duration, u16, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadyzWatch {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = http_get(port, "/readyz");
                    seen.lock().unwrap().push((started.elapsed(), status, body));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops, and asserts `/readyz` said 503 at least once, each time
    /// naming `reason`, and 200 at the end.
    fn finish_unready_then_ready(self, reason: &str) {
        let probes = self.finish();
        let unready: Vec<_> = probes
            .iter()
            .filter(|(_, status, _)| *status == 503)
            .collect();
        assert!(!unready.is_empty(), "never 503: {probes:?}");
        assert!(
            unready.iter().all(|(_, _, body)| body.contains(reason)),
            "{unready:?}"
        );
        let (_, last, body) = probes.last().unwrap();
        assert_eq!(*last, 200, "not ready again: {body}");
    }

    fn finish(mut self) -> Vec<(Duration, u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut self.seen.lock().unwrap())
    }
}

/// Waits until `check` holds, at most `within`.
async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_uninterruptible_reads_in_bursts_leave_ordinary_calls_served() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(db.path(), &env(&[]));
    let readyz = ReadyzWatch::start(server.metrics_port.unwrap());
    let hostile = Arc::new(server.client(None, &ERAS[0]).await);
    let ordinary = server.client(None, &ERAS[1]).await;
    let bursts_done = Arc::new(AtomicBool::new(false));
    // Six bursts of ten: each holds ten of the fifteen connections until
    // its worker is killed.
    let bursts = {
        let (hostile, done) = (Arc::clone(&hostile), Arc::clone(&bursts_done));
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..6 {
                let calls: Vec<_> = (0..10)
                    .map(|_| {
                        let hostile = Arc::clone(&hostile);
                        tokio::spawn(async move {
                            let started = Instant::now();
                            let result =
                                call(&hostile, "query", json!({ "sql": json_patch(25_000) })).await;
                            (started.elapsed(), text(&result))
                        })
                    })
                    .collect();
                for call in calls {
                    answers.push(call.await.unwrap());
                }
            }
            done.store(true, Ordering::Relaxed);
            answers
        })
    };
    // An agent calling one query at a time, thinking 100 ms in between.
    let mut ordinary_calls = 0;
    while !bursts_done.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = call(&ordinary, "query", json!({ "sql": "SELECT 1 AS one" })).await;
        let took = started.elapsed();
        assert_ne!(result.is_error, Some(true), "{}", text(&result));
        assert!(took < TIMEOUT, "an ordinary call took {took:?}");
        ordinary_calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (took, answer) in bursts.await.unwrap() {
        assert!(answer.contains("TIMEOUT"), "{answer}");
        assert!(
            took < TIMEOUT + GRACE + SLACK,
            "a hostile call took {took:?}"
        );
    }
    assert!(ordinary_calls >= 20, "only {ordinary_calls} ordinary calls");
    // The control: all sixty were past SQLite's reach, and were killed.
    assert_eq!(metric(&server, "mcp_db_statements_killed_total"), 60.0);
    eventually("the pool back to normal", GRACE + SLACK, || {
        metric(&server, "mcp_db_pool_in_use") == 0.0
            && metric(&server, "mcp_db_statements_overrunning") == 0.0
    })
    .await;
    let probes = readyz.finish();
    assert!(probes.len() >= 20, "{} probes", probes.len());
    for (at, status, body) in probes {
        assert_eq!(status, 200, "/readyz at {at:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninterruptible_write_gives_the_write_lock_back_within_the_grace() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(db.path(), &env(&[("EROS_DB_READ_ONLY", "false")]));
    let client = server.client(None, &ERAS[0]).await;
    let patch = json_patch(100_000).replace("SELECT length(", "SELECT (");
    let started = Instant::now();
    let stuck = call(
        &client,
        "execute",
        json!({ "sql": format!("UPDATE creators SET bio = ({patch}) WHERE id = 1") }),
    )
    .await;
    assert!(text(&stuck).contains("TIMEOUT"), "{}", text(&stuck));
    let answered = started.elapsed();
    assert!(
        answered < TIMEOUT + GRACE + SLACK,
        "answered after {answered:?}"
    );
    // The very next write takes the lock the killed worker held.
    let started = Instant::now();
    let next = call(
        &client,
        "execute",
        json!({ "sql": "UPDATE creators SET bio = 'after' WHERE id = 2" }),
    )
    .await;
    assert_ne!(next.is_error, Some(true), "{}", text(&next));
    assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
    assert_eq!(metric(&server, "mcp_db_statements_killed_total"), 1.0);
    // The killed write was rolled back, not half applied.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let bio: Option<String> = conn
        .query_row("SELECT bio FROM creators WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert!(
        bio.is_none_or(|bio| bio.len() < 1000),
        "the killed write landed"
    );
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

/// The raw stdio server: lines in, lines out, as a client of any make
/// writes them (the burst below is one write).
struct RawStdio {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl RawStdio {
    fn start(db: &std::path::Path) -> Self {
        use std::io::{BufRead, Write};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
            .arg("serve")
            .arg("--db")
            .arg(db)
            .env_clear()
            .env("EROS_METRICS_ADDR", "off")
            .env("EROS_LOG", "error")
            .env("EROS_DB_QUERY_TIMEOUT", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let hello = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}});
        writeln!(stdin, "{hello}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
        )
        .unwrap();
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn call_line(id: u64, sql: &str) -> String {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "query", "arguments": {"sql": sql}}})
        .to_string()
            + "\n"
    }

    fn write(&mut self, text: &str) {
        use std::io::Write;
        self.stdin.write_all(text.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next answer: its id and text.
    fn answer(&mut self) -> (u64, String) {
        use std::io::BufRead;
        let mut line = String::new();
        assert!(
            self.stdout.read_line(&mut line).unwrap() > 0,
            "the server left"
        );
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
        (answer["id"].as_u64().unwrap(), line)
    }
}

impl Drop for RawStdio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_burst_over_stdio_is_followed_by_a_hundred_paced_calls_that_all_succeed() {
    let db = TestDb::new().with_demo_data();
    let mut server = RawStdio::start(db.path());
    // One call: its statement thread is idle when the burst comes.
    server.write(&RawStdio::call_line(1, "SELECT 1"));
    assert!(server.answer().1.contains("\"isError\":false"));
    std::thread::sleep(Duration::from_millis(50));
    // Fifteen uninterruptible calls in a single write.
    let burst: String = (2..17)
        .map(|id| RawStdio::call_line(id, &json_patch(25_000)))
        .collect();
    server.write(&burst);
    for _ in 2..17 {
        let (id, line) = server.answer();
        assert!(line.contains("TIMEOUT"), "call {id}: {line}");
    }
    // Then an agent calling one query at a time.
    for id in 100..200 {
        let started = Instant::now();
        server.write(&RawStdio::call_line(id, "SELECT 1"));
        let (answered, line) = server.answer();
        assert_eq!(answered, id);
        assert!(line.contains("\"isError\":false"), "call {id}: {line}");
        assert!(
            started.elapsed() < TIMEOUT,
            "call {id} took {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tree_pss(pid: u32) -> u64 {
    common::memory::with_workers(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_preparation_ends_within_the_grace_and_gives_its_memory_back() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(db.path(), &env(&[]));
    let client = server.client(None, &ERAS[0]).await;
    let before = tree_pss(server.child.id());
    for (name, sql) in [
        ("a chain of 16 CTEs", cte_chain(16)),
        ("a join of 60 tables", wide_join(60)),
    ] {
        let started = Instant::now();
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, sampling, pid) =
                (Arc::clone(&peak), Arc::clone(&sampling), server.child.id());
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    peak.fetch_max(tree_pss(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let result = call(&client, "query", json!({ "sql": sql })).await;
        let took = started.elapsed();
        sampling.store(false, Ordering::Relaxed);
        sampler.join().unwrap();
        assert!(
            text(&result).contains("TIMEOUT"),
            "{name}: {}",
            text(&result)
        );
        assert!(
            took < TIMEOUT + GRACE + SLACK,
            "{name} answered after {took:?}"
        );
        eventually("the memory back", GRACE + SLACK, || {
            tree_pss(server.child.id()) < before + 32 * 1024 * 1024
        })
        .await;
        eprintln!(
            "{name}: answered in {took:?}, peak {} MiB, before {} MiB",
            peak.load(Ordering::Relaxed) >> 20,
            before >> 20
        );
    }
    // The control: the chain was past SQLite's reach and killed.
    assert!(metric(&server, "mcp_db_statements_killed_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_while_another_process_holds_the_write_lock_and_200_after() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(db.path(), &env(&[("EROS_DB_READ_ONLY", "false")]));
    let readyz = ReadyzWatch::start(server.metrics_port.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another process's open write transaction, held well past a call's
    // time (the timeout, its grace and a second).
    let holder = rusqlite::Connection::open(db.path()).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let held_at = Instant::now();
    tokio::time::sleep(TIMEOUT + GRACE + Duration::from_millis(2500)).await;
    holder.execute_batch("ROLLBACK").unwrap();
    let released_at = held_at.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    readyz.finish_unready_then_ready("write lock");
    assert!(released_at > TIMEOUT, "{released_at:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_statement_threads_are_refused_at_once_and_named() {
    // One connection, so four statement threads; a hundred calls may be in
    // flight, so the threads are the bound that speaks. The call that finds
    // the connection idle runs on a task of its own; four more wait for it
    // on the threads, and the rest are refused. First come, first served:
    // with fair shares on, calls wait for their turn in front of the pool
    // holding no thread (tests/statements/fair_shares.rs).
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(
        db.path(),
        &env(&[
            ("EROS_DB_POOL_SIZE", "1"),
            ("EROS_DB_POOL_OVERFLOW", "0"),
            ("EROS_DB_POOL_PREWARM", "1"),
            ("EROS_MCP_MAX_IN_FLIGHT", "100"),
            ("EROS_DB_FAIR_SHARES", "false"),
        ]),
    );
    let client = Arc::new(server.client(None, &ERAS[0]).await);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let started = Instant::now();
                let result = call(&client, "query", json!({ "sql": json_patch(25_000) })).await;
                (started.elapsed(), text(&result))
            })
        })
        .collect();
    let mut refused = 0;
    for call in calls {
        let (took, answer) = call.await.unwrap();
        if answer.contains("OVERLOADED") {
            refused += 1;
            assert!(answer.contains("retry"), "{answer}");
            assert!(took < GRACE + SLACK, "refused after {took:?}, not at once");
        } else {
            assert!(
                answer.contains("TIMEOUT") || answer.contains("POOL_EXHAUSTED"),
                "{answer}"
            );
        }
    }
    assert!(
        refused >= 5,
        "only {refused} of 10 refused past one connection and 4 threads"
    );
    let result = call(&client, "query", json!({ "sql": "SELECT 1" })).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_while_the_pool_cannot_serve_in_time_and_200_once_the_worker_is_killed() {
    let db = TestDb::new().with_demo_data();
    let server = HttpServer::start_observed(
        db.path(),
        &env(&[
            ("EROS_DB_POOL_SIZE", "1"),
            ("EROS_DB_POOL_OVERFLOW", "0"),
            ("EROS_DB_POOL_PREWARM", "1"),
            ("EROS_DB_POOL_TIMEOUT", "0.3"),
        ]),
    );
    let readyz = ReadyzWatch::start(server.metrics_port.unwrap());
    let client = Arc::new(server.client(None, &ERAS[0]).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The only connection, held by a statement SQLite cannot interrupt.
    let stuck = {
        let client = Arc::clone(&client);
        tokio::spawn(
            async move { call(&client, "query", json!({ "sql": json_patch(25_000) })).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waited = call(&client, "query", json!({ "sql": "SELECT 1" })).await;
    assert!(
        text(&waited).contains("POOL_EXHAUSTED"),
        "{}",
        text(&waited)
    );
    assert!(text(&stuck.await.unwrap()).contains("TIMEOUT"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = call(&client, "query", json!({ "sql": "SELECT 1" })).await;
    assert_ne!(after.is_error, Some(true), "{}", text(&after));
    readyz.finish_unready_then_ready("EROS_DB_POOL_TIMEOUT");
}
