//! The `csv` row format (`EROS_MCP_ROW_FORMAT=csv`, the default): the
//! compact text an agent gets for a query result, then a second text block
//! with `{"row_count", "truncated", "next_cursor"?}`.
//!
//! A header line of column names, then one line per row (RFC 4180 quoting,
//! `\n` line ends). No value is lost, because quoting carries the type:
//!
//! | SQLite value | written as |
//! |---|---|
//! | NULL | an empty field |
//! | INTEGER | `42` |
//! | REAL | its shortest exact form, always with `.` or `e`: `950.0`, `1e+300`; an infinity as the text `"inf"`, `"-inf"` |
//! | TEXT | as is; quoted (`"..."`) when it is empty, holds `,` `"` or a line break, starts or ends with a space or an invisible character (a byte-order mark), or would read as a number or a BLOB |
//! | BLOB | `X'0a1b'`, SQL's hex literal; a cut BLOB ends `...(<total> bytes)` |
//!
//! So an unquoted field is a number when it reads as one and text
//! otherwise, and a quoted field is always text. The values read back into
//! exactly what the `json` format sends (tests/common/csv.rs decodes them).
//! A row of a single NULL column is an empty line, which some CSV readers
//! skip.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde::Serialize;

use super::numbers;
use super::RowEncoder;
use crate::engine::{Cell, CellRef, QueryOutput, Rows, WireSize, CURSOR_LEN};

/// The `csv` row format.
#[derive(Debug, Clone, Copy)]
pub struct CsvRows;

/// What comes after the rows: what an agent needs to know it has them all,
/// or to continue. The same fields as in a `json` row-format result.
#[derive(Serialize)]
struct RowsMetadata<'a> {
    row_count: usize,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<&'a str>,
}

/// The metadata block without its count and cursor.
const METADATA: &str = r#"{"row_count":,"truncated":false,"next_cursor":""}"#;

/// Digits of the largest row count.
const COUNT_DIGITS: usize = 20;

impl WireSize for CsvRows {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn empty_answer(&self, columns: &[String]) -> usize {
        let names: usize = columns.iter().map(|name| text_len(name)).sum();
        let header = names + columns.len().saturating_sub(1) + 1;
        header + METADATA.len() + COUNT_DIGITS + CURSOR_LEN
    }

    /// Commas between the cells and the line end.
    fn row_frame(&self, width: usize) -> usize {
        width.saturating_sub(1) + 1
    }

    fn cell(&self, cell: &CellRef<'_>) -> usize {
        match cell {
            CellRef::Null => 0,
            CellRef::Integer(i) => numbers::integer_len(*i),
            CellRef::Real(r) => match numbers::finite(*r) {
                Some(number) => numbers::real_len(&number),
                None => text_len(&numbers::non_finite_text(*r)),
            },
            CellRef::Text { text, .. } => text_len(text),
            CellRef::Blob { bytes, total_bytes } => {
                let cut = if cell.is_cut() {
                    "...( bytes)".len() + numbers::integer_len(*total_bytes as i64)
                } else {
                    0
                };
                "X''".len() + 2 * bytes.len() + cut
            }
        }
    }
}

impl RowEncoder for CsvRows {
    /// The rows as typed CSV, then [`RowsMetadata`] as JSON.
    fn encode(&self, output: &QueryOutput) -> Result<CallToolResult, serde_json::Error> {
        let metadata = RowsMetadata {
            row_count: output.row_count,
            truncated: output.truncated,
            next_cursor: output.next_cursor.as_deref(),
        };
        Ok(CallToolResult::success(vec![
            ContentBlock::text(encode_counted(
                &output.columns,
                &output.rows,
                &output.cell_bytes,
            )),
            ContentBlock::text(serde_json::to_string(&metadata)?),
        ]))
    }

    fn describe_rows(&self) -> &'static str {
        "Returns CSV with a header (empty field: NULL; quoted: text; \
X'..': BLOB), then row_count and truncated."
    }

    fn instructions(&self) -> &'static str {
        "query returns CSV with a header line (empty field: NULL; quoted: text)"
    }

    /// The rows are text: no structured content to describe.
    fn output_schema(&self) -> Option<Arc<JsonObject>> {
        None
    }
}

/// Writes `columns` and `rows` as typed CSV into one buffer.
pub fn encode(columns: &[String], rows: &Rows) -> String {
    encode_counted(columns, rows, &[])
}

/// As [`encode`], given what [`CsvRows`] counted for each cell, row after
/// row (or nothing): a text whose count is not its length is quoted,
/// without testing it again. (Another format's count is never a text's
/// bare length, so such counts could at worst quote a text needlessly,
/// which still reads back as the same text.)
fn encode_counted(columns: &[String], rows: &Rows, cell_bytes: &[usize]) -> String {
    // Sized from the values shown, without reading them: quotes, escapes
    // and hex add to it.
    let shown: usize = rows.cells().iter().map(|cell| cell.shown_bytes() + 4).sum();
    let mut out = String::with_capacity(64 + columns.len() * 16 + shown);
    for (i, name) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_text(&mut out, name, needs_quotes(name));
    }
    out.push('\n');
    let counted = cell_bytes.len() == rows.cells().len();
    let mut counts = cell_bytes.iter();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let count = if counted {
                counts.next().copied()
            } else {
                None
            };
            push_cell(&mut out, cell, count);
        }
        out.push('\n');
    }
    out
}

/// Writes `cell`, which takes `count` bytes if known.
fn push_cell(out: &mut String, cell: &Cell, count: Option<usize>) {
    match cell {
        Cell::Null => {}
        Cell::Integer(i) => numbers::push_integer(out, *i),
        Cell::Real(r) => match numbers::finite(*r) {
            Some(number) => numbers::push_real(out, &number),
            None => {
                let text = numbers::non_finite_text(*r);
                push_text(out, &text, needs_quotes(&text));
            }
        },
        Cell::Text { text, .. } => {
            // Quotes are the only thing that makes a field longer than its text.
            let quoted = count.map_or_else(|| needs_quotes(text), |count| count != text.len());
            push_text(out, text, quoted);
        }
        Cell::Blob { bytes, total_bytes } => {
            push_hex(out, bytes);
            if cell.is_cut() {
                out.push_str("...(");
                numbers::push_integer(out, *total_bytes as i64);
                out.push_str(" bytes)");
            }
        }
    }
}

/// Bytes of `text` as a field.
fn text_len(text: &str) -> usize {
    if needs_quotes(text) {
        let quotes = text.bytes().filter(|&b| b == b'"').count();
        2 + text.len() + quotes
    } else {
        text.len()
    }
}

fn push_text(out: &mut String, text: &str, quoted: bool) {
    if !quoted {
        out.push_str(text);
        return;
    }
    out.push('"');
    let mut rest = text;
    while let Some(at) = memchr::memchr(b'"', rest.as_bytes()) {
        // Up to and including the quote, then the quote again.
        out.push_str(&rest[..=at]);
        out.push('"');
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Whether unquoted `text` would be misread: as another field, another
/// line, NULL, a number or a BLOB, or trimmed by a lenient reader.
fn needs_quotes(text: &str) -> bool {
    let hidden = |c: char| c.is_whitespace() || is_invisible(c);
    let bytes = text.as_bytes();
    text.is_empty()
        || has_separator(bytes)
        || text.starts_with(hidden)
        || text.ends_with(hidden)
        || reads_as_blob(text)
        || (may_be_number(text) && text.parse::<f64>().is_ok())
}

/// Whether `bytes` holds a comma, a quote or a line break. Short texts
/// (column names, dates, titles) are looked at in one pass without an early
/// exit, which the compiler vectorizes: below [`VECTOR_SEARCH_FROM`] bytes
/// that costs less than setting up memchr's two searches.
fn has_separator(bytes: &[u8]) -> bool {
    if bytes.len() < VECTOR_SEARCH_FROM {
        bytes.iter().fold(false, |found, b| {
            found | matches!(b, b',' | b'"' | b'\n' | b'\r')
        })
    } else {
        memchr::memchr3(b',', b'"', b'\n', bytes).is_some()
            || memchr::memchr(b'\r', bytes).is_some()
    }
}

/// The length from which [`has_separator`] uses memchr's vector search.
const VECTOR_SEARCH_FROM: usize = 64;

/// Whether `text` could parse as an `f64`: after an optional sign it starts
/// with a digit, a point, or `inf`/`infinity`/`nan` (any case), as
/// `f64::from_str` requires. Most text fails this at its first byte, which
/// spares the parse (7% of a 1,000-row answer's instructions).
fn may_be_number(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    matches!(
        unsigned.as_bytes().first(),
        Some(b'0'..=b'9' | b'.' | b'i' | b'I' | b'n' | b'N')
    )
}

/// Zero-width characters that readers strip or that hide what follows, the
/// byte-order mark first among them.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

fn reads_as_blob(text: &str) -> bool {
    text.starts_with("X'") || text.starts_with("x'")
}

/// `X'..'` with two lowercase hex digits a byte, straight from the bytes.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(3 + 2 * bytes.len());
    out.push_str("X'");
    out.extend(
        bytes
            .iter()
            .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
            .map(char::from),
    );
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_precheck_never_rejects_what_parses_as_a_number() {
        for text in [
            "1",
            "-1",
            "+1.5",
            ".5",
            "-.5",
            "1e5",
            "inf",
            "-inf",
            "+Infinity",
            "NaN",
            "nan",
            "INF",
            "0x",
            "1,5",
        ] {
            if text.parse::<f64>().is_ok() {
                assert!(may_be_number(text), "{text}");
            }
        }
        for text in ["", "abc", "Lorem", "-", "+", " 1", "e5", "X'00'"] {
            assert!(
                !may_be_number(text) || text.parse::<f64>().is_err(),
                "{text}"
            );
            assert!(text.parse::<f64>().is_err(), "{text}");
        }
    }

    #[test]
    fn a_separator_is_found_in_short_and_long_texts_wherever_it_is() {
        for len in [1, VECTOR_SEARCH_FROM - 1, VECTOR_SEARCH_FROM, 300] {
            assert!(!has_separator("a".repeat(len).as_bytes()), "{len}");
            for separator in [b',', b'"', b'\n', b'\r'] {
                for at in [0, len / 2, len - 1] {
                    let mut text = vec![b'a'; len];
                    text[at] = separator;
                    assert!(has_separator(&text), "{separator} at {at} of {len}");
                }
            }
        }
    }

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn one_column(cells: Vec<Cell>) -> String {
        let rows: Vec<Vec<Cell>> = cells.into_iter().map(|cell| vec![cell]).collect();
        encode(&columns(&["v"]), &rows.into())
    }

    #[test]
    fn plain_values_are_written_without_quotes() {
        let text = encode(
            &columns(&["id", "name", "price", "note"]),
            &Rows::from(vec![vec![
                Cell::Integer(7),
                Cell::text("item-7"),
                Cell::Real(950.0),
                Cell::Null,
            ]]),
        );
        assert_eq!(text, "id,name,price,note\n7,item-7,950.0,\n");
    }

    #[test]
    fn null_is_an_empty_field_and_empty_text_is_quoted() {
        assert_eq!(one_column(vec![Cell::Null, Cell::text("")]), "v\n\n\"\"\n");
    }

    #[test]
    fn text_that_would_read_as_a_number_or_blob_is_quoted() {
        let text = one_column(vec![
            Cell::text("42"),
            Cell::text("-1.5e3"),
            Cell::text("inf"),
            Cell::text("X'00'"),
        ]);
        assert_eq!(text, "v\n\"42\"\n\"-1.5e3\"\n\"inf\"\n\"X'00'\"\n");
    }

    #[test]
    fn numbers_are_not_quoted_and_integers_differ_from_reals() {
        let text = one_column(vec![Cell::Integer(1), Cell::Real(1.0), Cell::Integer(-42)]);
        assert_eq!(text, "v\n1\n1.0\n-42\n");
    }

    #[test]
    fn text_with_commas_quotes_or_line_breaks_is_quoted() {
        let text = one_column(vec![
            Cell::text("a,b"),
            Cell::text("say \"hi\""),
            Cell::text("two\nlines"),
            Cell::text("cr\r"),
        ]);
        assert_eq!(
            text,
            "v\n\"a,b\"\n\"say \"\"hi\"\"\"\n\"two\nlines\"\n\"cr\r\"\n"
        );
    }

    #[test]
    fn text_with_outer_spaces_or_a_byte_order_mark_is_quoted() {
        let text = one_column(vec![Cell::text(" padded"), Cell::text("\u{feff}42")]);
        assert_eq!(text, "v\n\" padded\"\n\"\u{feff}42\"\n");
    }

    #[test]
    fn column_names_are_quoted_like_text() {
        assert_eq!(
            encode(&columns(&["a,b", "1"]), &Rows::default()),
            "\"a,b\",\"1\"\n"
        );
    }

    #[test]
    fn reals_keep_a_point_or_an_exponent() {
        let text = one_column(vec![
            Cell::Real(1e300),
            Cell::Real(-0.0),
            Cell::Real(2.5e-7),
        ]);
        assert_eq!(text, "v\n1e+300\n-0.0\n2.5e-7\n");
    }

    #[test]
    fn an_infinity_is_quoted_text() {
        let text = one_column(vec![
            Cell::Real(f64::INFINITY),
            Cell::Real(f64::NEG_INFINITY),
        ]);
        assert_eq!(text, "v\n\"inf\"\n\"-inf\"\n");
    }

    #[test]
    fn blobs_are_sql_hex_literals() {
        assert_eq!(one_column(vec![Cell::blob([0, 1, 0xab])]), "v\nX'0001ab'\n");
    }

    #[test]
    fn a_cut_blob_keeps_its_whole_size() {
        let cut = Cell::Blob {
            bytes: vec![0, 1].into(),
            total_bytes: 5000,
        };
        assert_eq!(one_column(vec![cut]), "v\nX'0001'...(5000 bytes)\n");
    }

    #[test]
    fn a_cut_text_is_its_shown_part() {
        let cut = Cell::Text {
            text: "abc".into(),
            total_bytes: 100,
        };
        assert_eq!(one_column(vec![cut]), "v\nabc\n");
    }

    #[test]
    fn a_result_without_rows_is_its_header() {
        assert_eq!(encode(&columns(&["a", "b"]), &Rows::default()), "a,b\n");
    }

    #[test]
    fn the_answer_is_the_rows_then_their_metadata() {
        let output = QueryOutput {
            columns: columns(&["n"]),
            rows: vec![vec![Cell::Integer(1)]].into(),
            row_count: 1,
            truncated: true,
            next_cursor: Some("abc".into()),
            cell_bytes: Vec::new(),
        };
        let result = CsvRows.encode(&output).unwrap();
        let texts: Vec<&str> = result
            .content
            .iter()
            .map(|block| block.as_text().unwrap().text.as_str())
            .collect();
        assert_eq!(
            texts,
            [
                "n\n1\n",
                r#"{"row_count":1,"truncated":true,"next_cursor":"abc"}"#
            ]
        );
        assert!(result.structured_content.is_none());
        assert!(CsvRows.output_schema().is_none());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn cell() -> impl Strategy<Value = Cell> {
            prop_oneof![
                Just(Cell::Null),
                any::<i64>().prop_map(Cell::Integer),
                any::<f64>().prop_map(Cell::Real),
                any::<String>().prop_map(Cell::text),
                "[0-9eE.+,\" -]{0,6}".prop_map(Cell::text),
                proptest::collection::vec(any::<u8>(), 0..8).prop_map(Cell::blob),
                (
                    proptest::collection::vec(any::<u8>(), 0..8),
                    8usize..100_000
                )
                    .prop_map(|(bytes, total_bytes)| Cell::Blob {
                        bytes: bytes.into(),
                        total_bytes
                    }),
            ]
        }

        proptest! {
            #[test]
            fn rows_cost_exactly_their_counted_bytes(
                rows in proptest::collection::vec(proptest::collection::vec(cell(), 3), 0..6),
            ) {
                let names = columns(&["a", "b", "c"]);
                let header = encode(&names, &Rows::default()).len();
                let counted: usize = rows
                    .iter()
                    .map(|row| CsvRows.row_frame(3) + row.iter().map(|c| CsvRows.cell(&c.as_ref())).sum::<usize>())
                    .sum();
                prop_assert_eq!(encode(&names, &rows.clone().into()).len(), header + counted);
            }

            #[test]
            fn rows_given_their_counts_are_written_as_rows_measured_here(
                rows in proptest::collection::vec(proptest::collection::vec(cell(), 3), 0..6),
            ) {
                let names = columns(&["a", "b", "c"]);
                let counts: Vec<usize> = rows.iter().flatten().map(|c| CsvRows.cell(&c.as_ref())).collect();
                let rows = Rows::from(rows);
                prop_assert_eq!(encode_counted(&names, &rows, &counts), encode(&names, &rows));
            }
        }
    }
}
