//! Engine benchmarks (criterion): pool checkout and return, a point query
//! through the pool against opening a connection with its PRAGMAs for every
//! query (the reason pooling exists), and turning 1,000 rows into the tool
//! result an agent receives. Method and numbers: BENCHMARKS.md.

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use eros_bench::dataset;
use eros_mcp::access;
use eros_mcp::config::DatabaseConfig;
use eros_mcp::config::RowFormat;
use eros_mcp::connection;
use eros_mcp::database;
use eros_mcp::engine::{QueryEngine, QueryRequest};
use eros_mcp::mcp::respond::respond;
use eros_mcp::mcp::NoToolObserver;
use eros_mcp::pool::{NoObserver, Pool};

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
    // The floor: the query alone on a connection already in hand.
    group.bench_function("held connection", |b| {
        let conn = fx.pool.get().unwrap();
        b.iter(|| lookup(&conn, next_id(&mut id)))
    });
    group.bench_function("pooled", |b| {
        b.iter(|| lookup(&fx.pool.get().unwrap(), next_id(&mut id)))
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
    c.bench_function("1000 rows to tool result", |b| {
        b.iter(|| {
            let started = Instant::now();
            let output = runtime.block_on(engine.query(request.clone(), None));
            respond("query", started, output, RowFormat::Csv, &NoToolObserver)
        })
    });
}

criterion_group!(benches, pool_checkout, point_query, rows_to_tool_result);
criterion_main!(benches);
