//! Engine benchmarks (criterion): pool checkout and return, a point query
//! through the pool against opening a connection with its PRAGMAs for every
//! query (the reason pooling exists), and turning 1,000 rows into the tool
//! result an agent receives. Method and numbers: BENCHMARKS.md.

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use eros_bench::dataset;
use eros_mcp::config::DatabaseConfig;
use eros_mcp::database;
use eros_mcp::engine::{QueryEngine, QueryRequest};
use eros_mcp::identity::Principal;
use eros_mcp::mcp::respond::respond;
use eros_mcp::mcp::rows;
use eros_mcp::mcp::rows::RowFormat;
use eros_mcp::mcp::{Caller, NoToolObserver};
use eros_mcp::pool::{NoObserver, Pool};
use eros_mcp::sqlite::access;
use eros_mcp::sqlite::connection;

const ROWS: u64 = 100_000;
const POINT: &str = "SELECT * FROM bench_items WHERE id = ?1";

struct Fixture {
    _dir: tempfile::TempDir,
    config: DatabaseConfig,
    pool: Arc<Pool>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    dataset::create(&path, ROWS).unwrap();
    // What the server serves by default: the table, plus the schema its
    // migrations own.
    let config = DatabaseConfig {
        path,
        ..DatabaseConfig::default()
    };
    let pool = database::open(&config, Arc::new(NoObserver)).unwrap();
    Fixture {
        _dir: dir,
        config,
        pool,
    }
}

fn pool_checkout(c: &mut Criterion) {
    let fx = fixture();
    c.bench_function("pool checkout + return", |b| {
        b.iter(|| drop(fx.pool.get().unwrap()))
    });
}

/// The point lookup every variant runs: the name of row `id`.
fn lookup(conn: &rusqlite::Connection, id: i64) -> String {
    conn.prepare_cached(POINT)
        .unwrap()
        .query_row([id], |row| row.get(1))
        .unwrap()
}

/// Ids walking over the whole table.
fn next_id(id: &mut i64) -> i64 {
    *id = *id % ROWS as i64 + 1;
    *id
}

fn point_query(c: &mut Criterion) {
    let fx = fixture();
    let mut group = c.benchmark_group("point query");
    let mut id = 0i64;
    // The floor: the query alone on a connection already in hand (the
    // pool's connections live in worker processes; the engine reaches them).
    group.bench_function("held connection", |b| {
        let conn = fx.pool.open_local().unwrap();
        b.iter(|| lookup(&conn, next_id(&mut id)))
    });
    let options = fx.config.connection_options();
    group.bench_function("connect per query", |b| {
        b.iter(|| {
            let conn = connection::open(&options).unwrap();
            access::install(&conn).unwrap();
            lookup(&conn, next_id(&mut id))
        })
    });
    group.finish();
}

fn rows_to_tool_result(c: &mut Criterion) {
    let fx = fixture();
    let engine = QueryEngine::new(Arc::clone(&fx.pool), fx.config.engine_settings());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = QueryRequest {
        sql: "SELECT * FROM bench_items WHERE id >= 5000 ORDER BY id LIMIT 1000".into(),
        ..QueryRequest::default()
    };
    let csv = rows::encoder(RowFormat::Csv);
    let caller = Caller::new(Principal::local());
    c.bench_function("1000 rows to tool result", |b| {
        b.iter(|| {
            let started = Instant::now();
            let output = runtime.block_on(engine.query(request.clone(), csv, None));
            respond("query", &caller, started, output, csv, &NoToolObserver)
        })
    });
}

/// 1,000 text-heavy rows (id, a title of about 40 characters, a body of
/// about 250, a timestamp): SQLite stepping them alone, the engine reading
/// them into an answer, and that answer encoded for the wire.
fn text_rows(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("posts.db");
    create_posts(&path, 1000);
    let config = DatabaseConfig {
        path,
        ..DatabaseConfig::default()
    };
    let pool = database::open(&config, Arc::new(NoObserver)).unwrap();
    let engine = QueryEngine::new(Arc::clone(&pool), config.engine_settings());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = QueryRequest {
        sql: POSTS.into(),
        ..QueryRequest::default()
    };
    let csv = rows::encoder(RowFormat::Csv);
    let caller = Caller::new(Principal::local());
    let json = rows::encoder(RowFormat::Json);
    let raw = raw_value_bytes(&pool.open_local().unwrap());
    let output = runtime
        .block_on(engine.query(request.clone(), csv, None))
        .unwrap();
    let answer = respond(
        "query",
        &caller,
        Instant::now(),
        Ok(output.clone()),
        csv,
        &NoToolObserver,
    );
    let sent: usize = answer
        .content
        .iter()
        .filter_map(|block| block.as_text())
        .map(|text| text.text.len())
        .sum();
    eprintln!(
        "text rows: {} rows, raw values {raw} B, CSV answer {sent} B ({:+.1}%)",
        output.row_count,
        (sent as f64 / raw as f64 - 1.0) * 100.0
    );
    let mut group = c.benchmark_group("1000 text rows");
    group.bench_function("sqlite steps", |b| {
        let conn = pool.open_local().unwrap();
        b.iter(|| step_posts(&conn))
    });
    group.bench_function("engine query", |b| {
        b.iter(|| {
            runtime
                .block_on(engine.query(request.clone(), csv, None))
                .unwrap()
        })
    });
    for (name, encoder) in [("encode csv", csv), ("encode json", json)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || Ok(output.clone()),
                |output| {
                    respond(
                        "query",
                        &caller,
                        Instant::now(),
                        output,
                        encoder,
                        &NoToolObserver,
                    )
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

const POSTS: &str = "SELECT id, title, body, created_at FROM posts ORDER BY id";

fn create_posts(path: &std::path::Path, rows: i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT, body TEXT, created_at TEXT); BEGIN;",
    )
    .unwrap();
    let words = [
        "sqlite", "agent", "pool", "cursor", "value", "budget", "encoder", "row", "column",
        "answer", "wire", "format", "typed", "lean", "buffer",
    ];
    let text = |id: i64, len: usize| {
        let mut out = String::new();
        let mut n = id as usize;
        while out.len() < len {
            n = n.wrapping_mul(2_654_435_761).wrapping_add(12_345);
            out.push_str(words[n % words.len()]);
            // Some commas, as prose has: those fields are quoted in CSV.
            out.push_str(if n.is_multiple_of(7) { ", " } else { " " });
        }
        out.truncate(len);
        out.trim_end().to_string()
    };
    {
        let mut insert = conn
            .prepare("INSERT INTO posts VALUES (?, ?, ?, ?)")
            .unwrap();
        for id in 1..=rows {
            insert
                .execute(rusqlite::params![
                    id,
                    text(id, 40),
                    text(id + 7, 250),
                    format!(
                        "2026-{:02}-{:02}T{:02}:00:00Z",
                        1 + id % 12,
                        1 + id % 28,
                        id % 24
                    ),
                ])
                .unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
}

/// SQLite's own cost: step every row and look at every value.
fn step_posts(conn: &rusqlite::Connection) -> usize {
    let mut stmt = conn.prepare_cached(POSTS).unwrap();
    let mut rows = stmt.raw_query();
    let mut seen = 0;
    while let Some(row) = rows.next().unwrap() {
        for i in 0..4 {
            seen += match row.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Text(t) => t.len(),
                _ => 1,
            };
        }
    }
    seen
}

/// The values' own bytes: text as stored, integers in decimal.
fn raw_value_bytes(conn: &rusqlite::Connection) -> usize {
    let mut stmt = conn.prepare(POSTS).unwrap();
    let mut rows = stmt.raw_query();
    let mut bytes = 0;
    while let Some(row) = rows.next().unwrap() {
        for i in 0..4 {
            bytes += match row.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Text(t) => t.len(),
                rusqlite::types::ValueRef::Integer(n) => n.to_string().len(),
                _ => 0,
            };
        }
    }
    bytes
}

criterion_group!(
    benches,
    pool_checkout,
    point_query,
    rows_to_tool_result,
    text_rows
);
criterion_main!(benches);
