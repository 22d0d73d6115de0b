//! The `json` row format (`EROS_MCP_ROW_FORMAT=json`): the answer as
//! structured content (`columns`, `rows` as arrays, `row_count`,
//! `truncated`, `next_cursor`) plus the same JSON as text, for programs that
//! want an output schema. Also the JSON form of a [`Cell`] everywhere else
//! (`execute`'s RETURNING rows):
//!
//! | SQLite value | JSON |
//! |---|---|
//! | NULL | `null` |
//! | INTEGER | a number, exact to 64 bits |
//! | REAL | a number; an infinity as the text `"inf"` or `"-inf"` |
//! | TEXT | a string (cut to the budget: the answer says `truncated`) |
//! | BLOB | `{"base64": ..., "bytes": <total>}`, plus `"truncated": true` when cut |
//!
//! Byte counts are those of the text (structured content repeats it).

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine as _;
use rmcp::handler::server::common::schema_for_output;
use rmcp::model::{CallToolResult, JsonObject};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::numbers;
use super::RowEncoder;
use crate::engine::{Cell, CellRef, QueryOutput, WireSize, CURSOR_LEN};

/// The `json` row format.
#[derive(Debug, Clone, Copy)]
pub struct JsonRows;

/// An answer's JSON without its columns, rows, count and cursor (keys in
/// the order serde_json's map writes them).
const ENVELOPE: &str = r#"{"columns":,"next_cursor":"","row_count":,"rows":[],"truncated":false}"#;

/// Digits of the largest row count.
const COUNT_DIGITS: usize = 20;

impl WireSize for JsonRows {
    fn name(&self) -> &'static str {
        "json"
    }

    fn empty_answer(&self, columns: &[String]) -> usize {
        let names: usize = columns.iter().map(|name| string_len(name)).sum();
        let array = 2 + names + columns.len().saturating_sub(1);
        ENVELOPE.len() + array + CURSOR_LEN + COUNT_DIGITS
    }

    /// `[` and `]`, commas between cells, and the comma before the row.
    fn row_frame(&self, width: usize) -> usize {
        2 + width.saturating_sub(1) + 1
    }

    fn cell(&self, cell: &CellRef<'_>) -> usize {
        match cell {
            CellRef::Null => 4,
            CellRef::Integer(i) => numbers::integer_len(*i),
            CellRef::Real(r) => match numbers::finite(*r) {
                Some(number) => numbers::real_len(&number),
                None => 2 + numbers::non_finite_text(*r).len(),
            },
            CellRef::Text { text, .. } => string_len(text),
            CellRef::Blob { bytes, total_bytes } => {
                let cut = if cell.is_cut() {
                    r#","truncated":true"#.len()
                } else {
                    0
                };
                r#"{"base64":"","bytes":}"#.len()
                    + bytes.len().div_ceil(3) * 4
                    + numbers::integer_len(*total_bytes as i64)
                    + cut
            }
        }
    }
}

impl RowEncoder for JsonRows {
    fn encode(&self, output: &QueryOutput) -> Result<CallToolResult, serde_json::Error> {
        serde_json::to_value(output).map(CallToolResult::structured)
    }

    fn describe_rows(&self) -> &'static str {
        "Returns columns, rows (arrays), row_count and truncated."
    }

    fn instructions(&self) -> &'static str {
        "query returns columns + rows (arrays)"
    }

    fn output_schema(&self) -> Option<Arc<JsonObject>> {
        Some(schema_for_output::<QueryOutput>())
    }
}

/// Bytes of `text` as a JSON string: quotes, and serde_json's escapes
/// (`\"`, `\\`, `\n` and the other short ones, `\u00XX` for the remaining
/// control characters).
fn string_len(text: &str) -> usize {
    let escapes: usize = text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\x08' | b'\t' | b'\n' | b'\x0c' | b'\r' => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    2 + text.len() + escapes
}

impl Serialize for Cell {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Null => serializer.serialize_unit(),
            Cell::Integer(i) => serializer.serialize_i64(*i),
            Cell::Real(r) if r.is_finite() => serializer.serialize_f64(*r),
            Cell::Real(r) => serializer.serialize_str(&numbers::non_finite_text(*r)),
            Cell::Text { text, .. } => serializer.serialize_str(text),
            Cell::Blob { bytes, total_bytes } => {
                let cut = self.is_cut();
                let mut blob = serializer.serialize_map(Some(2 + usize::from(cut)))?;
                blob.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(bytes),
                )?;
                blob.serialize_entry("bytes", total_bytes)?;
                if cut {
                    blob.serialize_entry("truncated", &true)?;
                }
                blob.end()
            }
        }
    }
}

/// Any JSON value, as the rows' schema always said.
impl JsonSchema for Cell {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "AnyValue".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        serde_json::Value::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cut_text(text: &str, total_bytes: usize) -> Cell {
        Cell::Text {
            text: text.into(),
            total_bytes,
        }
    }

    fn output(columns: &[&str], rows: Vec<Vec<Cell>>) -> QueryOutput {
        QueryOutput {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            row_count: rows.len(),
            rows: rows.into(),
            truncated: false,
            next_cursor: None,
            cell_bytes: Vec::new(),
        }
    }

    #[test]
    fn values_keep_their_type() {
        let cells = vec![
            Cell::Null,
            Cell::Integer(i64::MAX),
            Cell::Real(42.0),
            Cell::text("42"),
            Cell::blob([0, 0xff]),
        ];
        assert_eq!(
            serde_json::to_string(&cells).unwrap(),
            r#"[null,9223372036854775807,42.0,"42",{"base64":"AP8=","bytes":2}]"#
        );
    }

    #[test]
    fn an_infinity_is_named_text() {
        assert_eq!(
            serde_json::to_value([Cell::Real(f64::INFINITY), Cell::Real(f64::NEG_INFINITY)])
                .unwrap(),
            json!(["inf", "-inf"])
        );
    }

    #[test]
    fn a_cut_blob_says_so_and_keeps_its_whole_size() {
        let cut = Cell::Blob {
            bytes: vec![0, 1].into(),
            total_bytes: 5000,
        };
        assert_eq!(
            serde_json::to_value(&cut).unwrap(),
            json!({"base64": "AAE=", "bytes": 5000, "truncated": true})
        );
    }

    #[test]
    fn a_cut_text_is_its_shown_part() {
        assert_eq!(
            serde_json::to_value(cut_text("abc", 10)).unwrap(),
            json!("abc")
        );
    }

    #[test]
    fn the_answer_is_structured_content_and_the_same_json_as_text() {
        let result = JsonRows
            .encode(&output(&["n"], vec![vec![Cell::Integer(1)]]))
            .unwrap();
        let structured = result.structured_content.clone().unwrap();
        assert_eq!(
            structured,
            json!({"columns": ["n"], "rows": [[1]], "row_count": 1, "truncated": false})
        );
        let text = &result.content[0].as_text().unwrap().text;
        assert_eq!(text, &structured.to_string());
    }

    #[test]
    fn only_json_rows_have_an_output_schema() {
        assert!(JsonRows.output_schema().is_some());
    }

    #[test]
    fn an_answer_costs_at_most_its_counted_bytes() {
        let rows = vec![
            vec![Cell::text("a \"quoted\"\n\ttab \u{1}"), Cell::Real(0.1)],
            vec![Cell::Null, Cell::blob([1, 2, 3, 4])],
        ];
        let mut answer = output(&["t", "odd \"name\""], rows);
        answer.truncated = true;
        answer.next_cursor = Some("A".repeat(CURSOR_LEN));
        let counted = JsonRows.empty_answer(&answer.columns)
            + answer
                .rows
                .iter()
                .map(|row| {
                    JsonRows.row_frame(row.len())
                        + row
                            .iter()
                            .map(|c| JsonRows.cell(&c.as_ref()))
                            .sum::<usize>()
                })
                .sum::<usize>();
        let sent = JsonRows.encode(&answer).unwrap().content[0]
            .as_text()
            .unwrap()
            .text
            .len();
        assert!(sent <= counted, "{sent} sent, {counted} counted");
        // The slack: the row count's unused digits, the first row's comma
        // and `true` shorter than `false`.
        assert!(
            counted - sent <= COUNT_DIGITS + 1,
            "{sent} sent, {counted} counted"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        pub(super) fn cell() -> impl Strategy<Value = Cell> {
            prop_oneof![
                Just(Cell::Null),
                any::<i64>().prop_map(Cell::Integer),
                any::<f64>().prop_map(Cell::Real),
                any::<String>().prop_map(Cell::text),
                "[\u{0}-\u{7f}]{0,12}".prop_map(Cell::text),
                (any::<String>(), 0usize..100).prop_map(|(text, more)| {
                    let total_bytes = text.len() + more;
                    Cell::Text {
                        text: text.into(),
                        total_bytes,
                    }
                }),
                proptest::collection::vec(any::<u8>(), 0..10).prop_map(Cell::blob),
                (
                    proptest::collection::vec(any::<u8>(), 0..10),
                    10usize..100_000
                )
                    .prop_map(|(bytes, total_bytes)| Cell::Blob {
                        bytes: bytes.into(),
                        total_bytes
                    }),
            ]
        }

        proptest! {
            #[test]
            fn a_cell_costs_exactly_its_counted_bytes(cell in cell()) {
                let sent = serde_json::to_value(&cell).unwrap().to_string();
                prop_assert_eq!(sent.len(), JsonRows.cell(&cell.as_ref()), "{}", sent);
            }
        }
    }
}
