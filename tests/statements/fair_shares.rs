//! Fair shares of the connections (`EROS_DB_FAIR_SHARES`) through the real
//! binary: a noisy principal running many heavy reads at once does not make
//! a quiet principal's paced point lookups wait behind its queue. The same
//! load with fair shares off is the control: there the quiet principal
//! waits behind the noisy one's calls.
//!
//! The pool is two connections, so the noisy principal's sixteen callers
//! queue deep; the figures on the default pool are in BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;

use common::mcp::{call, text, Client, HttpServer};
use common::{token_entry, TestDb};
use rmcp::model::ProtocolVersion;
use serde_json::json;

const NOISY: &str = "noisy-token-0123456789";
const QUIET: &str = "quiet-token-0123456789";

/// About a third of a second of SQLite work in a debug build.
const HEAVY: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                     WHERE i < 600000) SELECT count(*) FROM n";
const POINT: &str = "SELECT handle FROM creators WHERE id = 3";

fn start(db: &TestDb, fair: bool) -> HttpServer {
    let tokens = db.file("tokens.toml");
    std::fs::write(
        &tokens,
        token_entry("noisy", NOISY, &["eros:read"]) + &token_entry("quiet", QUIET, &["eros:read"]),
    )
    .unwrap();
    HttpServer::start(
        db.path(),
        &[
            ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
            ("EROS_DB_POOL_SIZE", "2"),
            ("EROS_DB_POOL_OVERFLOW", "0"),
            ("EROS_DB_POOL_TIMEOUT", "20"),
            ("EROS_DB_QUERY_TIMEOUT", "30"),
            ("EROS_DB_FAIR_SHARES", if fair { "true" } else { "false" }),
        ],
    )
}

async fn client(server: &HttpServer, token: &str) -> Client {
    server
        .client(Some(token), &ProtocolVersion::V_2025_11_25)
        .await
}

/// One call's time, or why it failed.
async fn timed(client: &Client, sql: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let result = call(client, "query", json!({ "sql": sql })).await;
    match result.is_error {
        Some(true) => Err(text(&result).to_string()),
        _ => Ok(started.elapsed()),
    }
}

/// What the quiet principal saw: its lookups' times, in order, and its
/// failures; and the time of one heavy read alone.
struct Seen {
    quiet: Vec<Duration>,
    failures: Vec<String>,
    heavy_alone: Duration,
}

/// Sixteen noisy callers loop on the heavy read while the quiet principal
/// makes a point lookup every 100 ms for four seconds.
async fn noisy_neighbour(fair: bool) -> Seen {
    let db = TestDb::new().with_demo_data();
    let server = start(&db, fair);
    let noisy = Arc::new(client(&server, NOISY).await);
    let heavy_alone = timed(&noisy, HEAVY).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut floods = Vec::new();
    for _ in 0..16 {
        let (noisy, stop) = (Arc::clone(&noisy), Arc::clone(&stop));
        floods.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = timed(&noisy, HEAVY).await;
            }
        }));
    }
    // The flood fills the pool and its queue first.
    tokio::time::sleep(heavy_alone * 2).await;
    let quiet = client(&server, QUIET).await;
    let mut times = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        match timed(&quiet, POINT).await {
            Ok(took) => times.push(took),
            Err(why) => failures.push(why),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for flood in floods {
        flood.await.unwrap();
    }
    let mut sorted = times.clone();
    sorted.sort();
    if let Some(reason) = failures.first() {
        eprintln!("the first of {} failures: {reason}", failures.len());
    }
    eprintln!(
        "fair shares {}: heavy read alone {heavy_alone:?}; quiet lookups {} ok, {} failed, \
         median {:?}, slowest {:?}",
        if fair { "on" } else { "off" },
        times.len(),
        failures.len(),
        sorted.get(sorted.len() / 2),
        sorted.last()
    );
    Seen {
        quiet: times,
        failures,
        heavy_alone,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_principal_does_not_queue_a_quiet_ones_lookups_behind_its_own() {
    let seen = noisy_neighbour(true).await;
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    // Its first lookup may wait for one heavy read to end: until then the
    // noisy principal was alone and held every connection. From then on
    // the quiet principal is active and a connection is its own.
    let mut steady = seen.quiet[1..].to_vec();
    steady.sort();
    let worst = *steady.last().unwrap();
    // The quiet principal never waited out even one heavy read.
    assert!(
        worst < seen.heavy_alone,
        "the slowest lookup took {worst:?}, one heavy read alone {:?}",
        seen.heavy_alone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_come_first_served_queues_the_quiet_principal_behind_the_noisy_one() {
    let mut seen = noisy_neighbour(false).await;
    seen.quiet.sort();
    // The control: without fair shares the same lookups wait behind the
    // flood, for more than a heavy read each (or past their timeout).
    let median = seen.quiet.get(seen.quiet.len() / 2).copied();
    assert!(
        !seen.failures.is_empty() || median.is_some_and(|median| median > seen.heavy_alone),
        "median {median:?}, heavy read alone {:?}",
        seen.heavy_alone
    );
}
