//! The two row formats carry the same values: the typed CSV an agent gets by
//! default reads back into exactly the rows the `json` format sends, on the
//! benchmark's 1,000-row answer and on values that are easy to get wrong;
//! and an answer in either format stays within `EROS_DB_MAX_BYTES` as sent.
//! Also the tests' own CSV reader (tests/common/csv.rs).

use crate::common;

use std::time::Instant;

use common::csv as csv_rows;
use common::TestDb;
use eros_bench::dataset;
use eros_mcp::engine::{Cell, QueryEngine, QueryRequest};
use eros_mcp::identity::Principal;
use eros_mcp::mcp::respond::respond;
use eros_mcp::mcp::rows;
use eros_mcp::mcp::rows::RowFormat;
use eros_mcp::mcp::{Caller, NoToolObserver};
use rmcp::model::CallToolResult;
use serde_json::{json, Value};

/// Runs `request` and answers it in `format`, as the `query` tool would.
fn answer(engine: &QueryEngine, request: QueryRequest, format: RowFormat) -> CallToolResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let encoder = rows::encoder(format);
    let output = runtime.block_on(engine.query(request, encoder, None));
    respond(
        "query",
        &Caller::new(Principal::local()),
        Instant::now(),
        output,
        encoder,
        &NoToolObserver,
    )
}

/// Bytes of an answer's text content, what `EROS_DB_MAX_BYTES` caps.
fn text_bytes(result: &CallToolResult) -> usize {
    texts(result).iter().map(String::len).sum()
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

/// A page of text-heavy rows in `format`, under a small byte cap.
fn capped_answer(format: RowFormat, max_bytes: u64) -> CallToolResult {
    let mut db = TestDb::new();
    db.config.max_bytes = max_bytes;
    let engine = QueryEngine::new(db.warm_pool(), db.config.engine_settings());
    // Quotes, commas and a line break in every value: CSV quotes and
    // doubles, JSON escapes.
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500) \
               SELECT x AS id, 'say \"hi\", ' || char(10) || printf('%.*c', x % 90, 'b') AS body, \
               x / 7.0 AS ratio FROM c";
    answer(&engine, request_for(sql), format)
}

#[test]
fn a_csv_answer_stays_within_the_byte_cap_as_sent() {
    for max_bytes in [1024, 4096, 20_000] {
        let result = capped_answer(RowFormat::Csv, max_bytes);
        let sent = text_bytes(&result);
        assert!(sent as u64 <= max_bytes, "{sent} B sent, cap {max_bytes}");
        // Full but for the last row (at most about 130 B) and the
        // trailer's reserve for a longer count and cursor.
        assert!(
            sent as u64 + 200 > max_bytes,
            "{sent} B sent, cap {max_bytes}"
        );
    }
}

#[test]
fn a_json_answer_stays_within_the_byte_cap_as_sent() {
    for max_bytes in [1024, 4096, 20_000] {
        let result = capped_answer(RowFormat::Json, max_bytes);
        let sent = text_bytes(&result);
        assert!(sent as u64 <= max_bytes, "{sent} B sent, cap {max_bytes}");
        assert!(
            sent as u64 + 200 > max_bytes,
            "{sent} B sent, cap {max_bytes}"
        );
    }
}

#[test]
fn a_page_cut_at_the_byte_cap_continues_where_it_stopped() {
    let mut db = TestDb::new();
    db.config.max_bytes = 2048;
    let engine = QueryEngine::new(db.warm_pool(), db.config.engine_settings());
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) \
               SELECT x, printf('%.40c', 'z') FROM c";
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let request = QueryRequest {
            cursor: cursor.take(),
            ..request_for(sql)
        };
        let result = answer(&engine, request, RowFormat::Csv);
        assert!(text_bytes(&result) <= 2048);
        let texts = texts(&result);
        let table = csv_rows::decode(&texts[0]).unwrap();
        seen.extend(table.rows.iter().map(|row| row[0].as_i64().unwrap()));
        let about: Value = serde_json::from_str(&texts[1]).unwrap();
        match about["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, (1..=300).collect::<Vec<i64>>());
}

#[test]
fn a_huge_first_value_is_cut_to_the_cap_in_either_format() {
    for format in [RowFormat::Csv, RowFormat::Json] {
        let mut db = TestDb::new();
        db.config.max_bytes = 4096;
        let engine = QueryEngine::new(db.warm_pool(), db.config.engine_settings());
        let result = answer(
            &engine,
            request_for("SELECT printf('%.100000c', '\"') AS quotes, x'00ff' AS b"),
            format,
        );
        let sent = text_bytes(&result);
        assert!(sent <= 4096, "{format:?}: {sent} B sent");
        assert!(sent > 3800, "{format:?}: {sent} B sent");
    }
}

// The tests' CSV reader: what it accepts and refuses.

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Encodes `rows`, reads them back, and checks they arrive as the JSON
/// form of the same cells.
fn round_trip(names: &[&str], rows: Vec<Vec<Cell>>) {
    let table =
        csv_rows::decode(&rows::csv::encode(&columns(names), &rows.clone().into())).unwrap();
    assert_eq!(table.columns, columns(names));
    assert_eq!(json!(table.rows), serde_json::to_value(&rows).unwrap());
}

#[test]
fn integers_reals_and_numeric_text_survive_the_round_trip() {
    round_trip(
        &["a", "b", "c", "d"],
        vec![vec![
            Cell::Integer(1),
            Cell::Real(1.0),
            Cell::text("1"),
            Cell::Real(-0.0),
        ]],
    );
}

#[test]
fn commas_quotes_and_line_breaks_survive_the_round_trip() {
    round_trip(
        &["odd, \"name\""],
        vec![
            vec![Cell::text("a,b")],
            vec![Cell::text("say \"hi\"")],
            vec![Cell::text("two\nlines\r\n")],
        ],
    );
}

#[test]
fn whole_and_cut_blobs_survive_the_round_trip() {
    let cut = Cell::Blob {
        bytes: vec![0, 1].into(),
        total_bytes: 5000,
    };
    round_trip(&["b"], vec![vec![Cell::blob([0, 1, 2])], vec![cut]]);
}

#[test]
fn a_lone_null_column_survives_the_round_trip() {
    round_trip(&["x"], vec![vec![Cell::Null], vec![Cell::Integer(1)]]);
}

#[test]
fn a_result_without_rows_survives_the_round_trip() {
    round_trip(&["a", "b"], vec![]);
}

#[test]
fn crlf_line_ends_are_read_too() {
    let table = csv_rows::decode("a,b\r\n1,\"x\"\r\n").unwrap();
    assert_eq!(table.rows, vec![vec![json!(1), json!("x")]]);
}

#[test]
fn a_row_of_the_wrong_width_is_refused_with_its_record() {
    assert_eq!(
        csv_rows::decode("a,b\n1\n"),
        Err(csv_rows::DecodeError::FieldCount {
            record: 2,
            found: 1,
            expected: 2
        })
    );
}

#[test]
fn a_row_under_an_empty_header_is_refused() {
    assert_eq!(
        csv_rows::decode("\nabc\n"),
        Err(csv_rows::DecodeError::FieldCount {
            record: 2,
            found: 1,
            expected: 0
        })
    );
}

#[test]
fn an_unclosed_quote_is_refused() {
    assert_eq!(
        csv_rows::decode("a\n\"open\n"),
        Err(csv_rows::DecodeError::UnclosedQuote { record: 2 })
    );
}

#[test]
fn text_after_a_closing_quote_is_refused() {
    assert_eq!(
        csv_rows::decode("a\n\"x\"\ry\n"),
        Err(csv_rows::DecodeError::TextAfterQuote { record: 2 })
    );
}

#[test]
fn a_blob_literal_must_hold_hex_digits_only() {
    assert!(matches!(
        csv_rows::decode("b\nX'+f'\n"),
        Err(csv_rows::DecodeError::BadBlob { record: 2, .. })
    ));
}

#[test]
fn an_empty_text_has_no_header() {
    assert_eq!(csv_rows::decode(""), Err(csv_rows::DecodeError::NoHeader));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn cell() -> impl Strategy<Value = Cell> {
        prop_oneof![
            Just(Cell::Null),
            any::<i64>().prop_map(Cell::Integer),
            any::<f64>()
                .prop_filter("SQLite returns no NaN", |f| !f.is_nan())
                .prop_map(Cell::Real),
            any::<String>().prop_map(Cell::text),
            "[0-9eE.+-]{0,6}".prop_map(Cell::text),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Cell::blob),
            (
                proptest::collection::vec(any::<u8>(), 0..8),
                8usize..100_000
            )
                .prop_map(|(bytes, total_bytes)| Cell::Blob {
                    bytes: bytes.into(),
                    total_bytes
                }),
            "[\u{feff}\u{200b} ]{0,2}[0-9a-z]{0,3}[\u{feff}\u{200b} ]{0,2}".prop_map(Cell::text),
        ]
    }

    proptest! {
        #[test]
        fn every_value_survives_the_round_trip(
            names in proptest::collection::vec(any::<String>(), 1..4),
            seed in proptest::collection::vec(proptest::collection::vec(cell(), 4), 0..6),
        ) {
            let rows: Vec<Vec<Cell>> = seed
                .into_iter()
                .map(|row| row.into_iter().take(names.len()).collect())
                .collect();
            let table = csv_rows::decode(&rows::csv::encode(&names, &rows.clone().into())).unwrap();
            prop_assert_eq!(table.columns, names);
            prop_assert_eq!(json!(table.rows), serde_json::to_value(&rows).unwrap());
        }
    }
}
