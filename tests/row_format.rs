//! The two row formats carry the same values: the typed CSV an agent gets by
//! default reads back into exactly the rows the `json` format sends, on the
//! benchmark's 1,000-row answer and on values that are easy to get wrong.

mod common;

use std::time::Instant;

use common::TestDb;
use eros_bench::dataset;
use eros_mcp::config::RowFormat;
use eros_mcp::engine::{QueryEngine, QueryRequest};
use eros_mcp::mcp::csv_rows;
use eros_mcp::mcp::respond::respond;
use eros_mcp::mcp::NoToolObserver;
use rmcp::model::CallToolResult;
use serde_json::{json, Value};

/// Runs `request` and answers it in `format`, as the `query` tool would.
fn answer(engine: &QueryEngine, request: QueryRequest, format: RowFormat) -> CallToolResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let output = runtime.block_on(engine.query(request, None));
    respond("query", Instant::now(), output, format, &NoToolObserver)
}

fn request_for(sql: &str) -> QueryRequest {
    QueryRequest {
        sql: sql.into(),
        ..QueryRequest::default()
    }
}

fn texts(result: &CallToolResult) -> Vec<String> {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// The CSV answer and the JSON answer to `sql`, both as `{columns, rows}`,
/// and the bytes each sends.
fn both_formats(db: &TestDb, sql: &str) -> ((Value, usize), (Value, usize)) {
    let engine = QueryEngine::new(db.warm_pool(), db.config.engine_settings());
    let csv_result = answer(&engine, request_for(sql), RowFormat::Csv);
    assert_ne!(csv_result.is_error, Some(true), "{:?}", texts(&csv_result));
    let csv = texts(&csv_result);
    let table = csv_rows::decode(&csv[0]).expect("typed CSV");
    let csv_bytes = csv.iter().map(String::len).sum();
    let json_result = answer(&engine, request_for(sql), RowFormat::Json);
    let structured = json_result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("no structured content: {:?}", texts(&json_result)));
    let json_bytes =
        texts(&json_result).iter().map(String::len).sum::<usize>() + structured.to_string().len();
    (
        (
            json!({"columns": table.columns, "rows": table.rows}),
            csv_bytes,
        ),
        (
            json!({"columns": structured["columns"], "rows": structured["rows"]}),
            json_bytes,
        ),
    )
}

/// The load generator's `rows1000` answer, in both formats.
fn benchmark_answers() -> ((Value, usize), (Value, usize)) {
    let db = TestDb::new();
    dataset::create(db.path(), 5_000).unwrap();
    both_formats(
        &db,
        "SELECT * FROM bench_items WHERE id >= 1234 ORDER BY id LIMIT 1000",
    )
}

#[test]
fn the_benchmark_answer_of_1000_rows_loses_nothing_in_csv() {
    let ((csv, _), (json, _)) = benchmark_answers();
    assert_eq!(csv["rows"].as_array().unwrap().len(), 1000);
    assert_eq!(csv, json);
}

#[test]
fn the_benchmark_answer_in_csv_is_under_half_the_json_one() {
    let ((_, csv_bytes), (_, json_bytes)) = benchmark_answers();
    assert!(
        csv_bytes * 2 < json_bytes,
        "CSV {csv_bytes} B against JSON {json_bytes} B"
    );
}

#[test]
fn awkward_values_come_back_with_their_types() {
    let db = TestDb::new();
    let sql = "SELECT NULL AS null_value, '' AS empty, '42' AS text_number, 42 AS integer, \
               42.0 AS real, -0.5e-300 AS tiny, 9223372036854775807 AS biggest, \
               X'00FF10' AS blob, 'a,b' AS comma, 'say \"hi\"' AS quotes, \
               'two' || char(10) || 'lines' AS newline, ' padded ' AS padded, \
               'X''00''' AS looks_like_blob, 'inf' AS word_inf, 'ünï' AS unicode";
    let ((csv, _), (json, _)) = both_formats(&db, sql);
    assert_eq!(csv, json);
    assert_eq!(
        json["rows"][0],
        json!([
            null,
            "",
            "42",
            42,
            42.0,
            -0.5e-300,
            9223372036854775807i64,
            {"base64": "AP8Q", "bytes": 3},
            "a,b",
            "say \"hi\"",
            "two\nlines",
            " padded ",
            "X'00'",
            "inf",
            "ünï"
        ])
    );
}

#[test]
fn a_truncated_csv_answer_says_so_and_hands_over_the_cursor() {
    let db = TestDb::new();
    dataset::create(db.path(), 50).unwrap();
    let engine = QueryEngine::new(db.warm_pool(), db.config.engine_settings());
    let request = QueryRequest {
        max_rows: Some(10),
        ..request_for("SELECT id FROM bench_items ORDER BY id")
    };
    let result = answer(&engine, request, RowFormat::Csv);
    let texts = texts(&result);
    assert_eq!(csv_rows::decode(&texts[0]).unwrap().rows.len(), 10);
    let about: Value = serde_json::from_str(&texts[1]).unwrap();
    assert_eq!(about["row_count"], json!(10));
    assert_eq!(about["truncated"], json!(true));
    assert!(about["next_cursor"].as_str().is_some_and(|c| !c.is_empty()));
}
