//! Rows as typed CSV: the compact text an agent gets for a query result
//! (`EROS_MCP_ROW_FORMAT=csv`, the default).
//!
//! A header line of column names, then one line per row (RFC 4180 quoting,
//! `\n` line ends). No value is lost, because quoting carries the type:
//!
//! | SQLite value | written as |
//! |---|---|
//! | NULL | an empty field |
//! | INTEGER | `42` |
//! | REAL | its shortest exact form, always with `.` or `e`: `950.0`, `1e+300` |
//! | TEXT | as is; quoted (`"..."`) when it is empty, holds `,` `"` or a line break, starts or ends with a space or an invisible character (a byte-order mark), or would read as a number or a BLOB |
//! | BLOB | `X'0a1b'`, SQL's hex literal; a cut BLOB ends `...(<total> bytes)` |
//!
//! So an unquoted field is a number when it reads as one and text
//! otherwise, and a quoted field is always text. [`decode`] reads it back
//! into the same JSON values the `json` row format sends. Two consequences
//! of sharing those values: a REAL infinity, which JSON cannot hold, arrives
//! as the text `"inf"` or `"-inf"` in both formats; and a row of a single
//! NULL column is an empty line, which some CSV readers skip.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::Value as Json;

/// Writes `columns` and `rows` (JSON values as produced by the engine) as
/// typed CSV.
pub fn encode(columns: &[String], rows: &[Vec<Json>]) -> String {
    // Most fields are short: about 12 bytes a value is a good first guess.
    let mut out = String::with_capacity(64 + rows.len() * columns.len().max(1) * 12);
    write_line(&mut out, columns.iter(), |out, name| write_text(out, name));
    for row in rows {
        write_line(&mut out, row.iter(), write_value);
    }
    out
}

fn write_line<T>(
    out: &mut String,
    fields: impl Iterator<Item = T>,
    mut write: impl FnMut(&mut String, T),
) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, field);
    }
    out.push('\n');
}

fn write_value(out: &mut String, value: &Json) {
    match value {
        Json::Null => {}
        // serde_json writes reals in their shortest exact form with a `.` or
        // an exponent, and integers without: the distinction survives.
        Json::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Json::String(text) => write_text(out, text),
        Json::Bool(b) => out.push_str(if *b { "1" } else { "0" }),
        Json::Object(blob) => write_blob(out, blob),
        // The engine never produces arrays; keep them readable anyway.
        Json::Array(_) => write_quoted(out, &value.to_string()),
    }
}

fn write_text(out: &mut String, text: &str) {
    if needs_quotes(text) {
        write_quoted(out, text);
    } else {
        out.push_str(text);
    }
}

/// Whether unquoted `text` would be misread: as another field, another
/// line, NULL, a number or a BLOB, or trimmed by a lenient reader.
fn needs_quotes(text: &str) -> bool {
    let hidden = |c: char| c.is_whitespace() || is_invisible(c);
    text.is_empty()
        || text.contains([',', '"', '\n', '\r'])
        || text.starts_with(hidden)
        || text.ends_with(hidden)
        || reads_as_blob(text)
        || text.parse::<f64>().is_ok()
}

/// Zero-width characters that readers strip or that hide what follows, the
/// byte-order mark first among them.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

fn reads_as_blob(text: &str) -> bool {
    text.starts_with("X'") || text.starts_with("x'")
}

fn write_quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// A BLOB as the engine shows it (`{"base64", "bytes", "truncated"?}`)
/// written as `X'hex'`.
fn write_blob(out: &mut String, blob: &serde_json::Map<String, Json>) {
    let shown = blob
        .get("base64")
        .and_then(Json::as_str)
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
    let Some(shown) = shown else {
        // Not a BLOB the engine made: keep it, as JSON text.
        return write_quoted(out, &Json::Object(blob.clone()).to_string());
    };
    out.push_str("X'");
    for byte in &shown {
        let _ = write!(out, "{byte:02x}");
    }
    out.push('\'');
    if blob.get("truncated") == Some(&Json::Bool(true)) {
        let total = blob.get("bytes").and_then(Json::as_u64).unwrap_or(0);
        let _ = write!(out, "...({total} bytes)");
    }
}

/// Why a text is not typed CSV. Records count from 1, the header first; a
/// record is a line unless quoted text holds line breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record {record}: a quoted field is not closed")]
    UnclosedQuote { record: usize },
    #[error("record {record}: text after a closing quote")]
    TextAfterQuote { record: usize },
    #[error("record {record}: {found} fields where the header has {expected}")]
    FieldCount {
        record: usize,
        found: usize,
        expected: usize,
    },
    #[error("record {record}: {field:?} is not a BLOB literal")]
    BadBlob { record: usize, field: String },
    #[error("the text is empty: there is no header line")]
    NoHeader,
}

/// Column names and rows read back from typed CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Json>>,
}

/// One field as written: its text and whether it was quoted.
struct Field {
    text: String,
    quoted: bool,
}

/// Reads typed CSV back into the JSON values [`encode`] was given.
pub fn decode(text: &str) -> Result<Table, DecodeError> {
    let mut records = Records {
        rest: text,
        record: 0,
    };
    let header = records.next_record()?.ok_or(DecodeError::NoHeader)?;
    // A header with no names is one empty, unquoted field: no columns.
    let no_columns = header.len() == 1 && header[0].text.is_empty() && !header[0].quoted;
    let columns: Vec<String> = header.into_iter().map(|f| f.text).collect();
    let width = if no_columns { 0 } else { columns.len() };
    let mut rows = Vec::new();
    while let Some(fields) = records.next_record()? {
        let record = records.record;
        // Without columns, the only possible record is an empty line.
        let found = if width == 0 && fields.len() == 1 && fields[0].text.is_empty() {
            0
        } else {
            fields.len()
        };
        if found != width {
            return Err(DecodeError::FieldCount {
                record,
                found,
                expected: width,
            });
        }
        let row = fields
            .into_iter()
            .take(width)
            .map(|field| read_value(field, record))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    let columns = if width == 0 { Vec::new() } else { columns };
    Ok(Table { columns, rows })
}

fn read_value(field: Field, record: usize) -> Result<Json, DecodeError> {
    if field.quoted {
        return Ok(Json::String(field.text));
    }
    let text = field.text;
    if text.is_empty() {
        return Ok(Json::Null);
    }
    if reads_as_blob(&text) {
        return read_blob(&text).ok_or(DecodeError::BadBlob {
            record,
            field: text,
        });
    }
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Json::from(i));
    }
    if let Some(n) = text
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
    {
        return Ok(Json::Number(n));
    }
    Ok(Json::String(text))
}

fn read_blob(text: &str) -> Option<Json> {
    let body = &text[2..];
    let end = body.find('\'')?;
    let (hex, tail) = (&body[..end], &body[end + 1..]);
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let mut blob = serde_json::Map::new();
    blob.insert(
        "base64".into(),
        Json::String(base64::engine::general_purpose::STANDARD.encode(&bytes)),
    );
    if tail.is_empty() {
        blob.insert("bytes".into(), Json::from(bytes.len()));
    } else {
        let total: u64 = tail
            .strip_prefix("...(")?
            .strip_suffix(" bytes)")?
            .parse()
            .ok()?;
        blob.insert("bytes".into(), Json::from(total));
        blob.insert("truncated".into(), Json::Bool(true));
    }
    Some(Json::Object(blob))
}

/// Records of RFC 4180 CSV, one after another, remembering which fields
/// were quoted (which is what types them).
struct Records<'a> {
    rest: &'a str,
    record: usize,
}

impl Records<'_> {
    fn next_record(&mut self) -> Result<Option<Vec<Field>>, DecodeError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        self.record += 1;
        let record = self.record;
        let mut fields = Vec::new();
        let mut chars = self.rest.char_indices().peekable();
        let mut field = Field {
            text: String::new(),
            quoted: false,
        };
        let consumed = loop {
            let Some((i, c)) = chars.next() else {
                fields.push(field);
                break self.rest.len();
            };
            match c {
                '"' if field.text.is_empty() && !field.quoted => {
                    field.quoted = true;
                    loop {
                        match chars.next() {
                            Some((_, '"')) if matches!(chars.peek(), Some((_, '"'))) => {
                                chars.next();
                                field.text.push('"');
                            }
                            Some((_, '"')) => break,
                            Some((_, c)) => field.text.push(c),
                            None => return Err(DecodeError::UnclosedQuote { record }),
                        }
                    }
                    // A closing quote ends the field: next comes a comma, a
                    // line end (LF or CRLF) or the end of the text.
                    if matches!(chars.peek(), Some((_, '\r'))) {
                        chars.next();
                        if !matches!(chars.peek(), Some((_, '\n'))) {
                            return Err(DecodeError::TextAfterQuote { record });
                        }
                    }
                    if !matches!(chars.peek(), None | Some((_, ',' | '\n'))) {
                        return Err(DecodeError::TextAfterQuote { record });
                    }
                }
                ',' => fields.push(std::mem::replace(
                    &mut field,
                    Field {
                        text: String::new(),
                        quoted: false,
                    },
                )),
                '\r' if matches!(chars.peek(), Some((_, '\n'))) => {}
                '\n' => {
                    fields.push(field);
                    break i + 1;
                }
                c => field.text.push(c),
            }
        };
        self.rest = &self.rest[consumed..];
        Ok(Some(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn round_trip(names: &[&str], rows: Vec<Vec<Json>>) -> Table {
        let table = decode(&encode(&columns(names), &rows)).unwrap();
        assert_eq!(table.columns, columns(names));
        assert_eq!(table.rows, rows);
        table
    }

    #[test]
    fn plain_values_are_written_without_quotes() {
        let text = encode(
            &columns(&["id", "name", "price", "note"]),
            &[vec![json!(7), json!("item-7"), json!(950.0), Json::Null]],
        );
        assert_eq!(text, "id,name,price,note\n7,item-7,950.0,\n");
    }

    #[test]
    fn text_that_would_read_as_a_number_null_or_blob_is_quoted() {
        let text = encode(
            &columns(&["v"]),
            &[
                vec![json!("42")],
                vec![json!("")],
                vec![json!("inf")],
                vec![json!("X'00'")],
                vec![json!(" padded")],
            ],
        );
        assert_eq!(text, "v\n\"42\"\n\"\"\n\"inf\"\n\"X'00'\"\n\" padded\"\n");
    }

    #[test]
    fn integers_reals_and_numeric_text_stay_distinct() {
        round_trip(
            &["a", "b", "c", "d"],
            vec![vec![json!(1), json!(1.0), json!("1"), json!(-0.0)]],
        );
    }

    #[test]
    fn commas_quotes_and_line_breaks_in_text_survive() {
        round_trip(
            &["odd, \"name\""],
            vec![
                vec![json!("a,b")],
                vec![json!("say \"hi\"")],
                vec![json!("two\nlines\r\n")],
            ],
        );
    }

    #[test]
    fn blobs_are_sql_hex_literals() {
        let blob = json!({"base64": "AAEC", "bytes": 3});
        assert_eq!(
            encode(&columns(&["b"]), &[vec![blob.clone()]]),
            "b\nX'000102'\n"
        );
        round_trip(&["b"], vec![vec![blob]]);
    }

    #[test]
    fn a_cut_blob_keeps_its_whole_size() {
        let cut = json!({"base64": "AAE=", "bytes": 5000, "truncated": true});
        assert_eq!(
            encode(&columns(&["b"]), &[vec![cut.clone()]]),
            "b\nX'0001'...(5000 bytes)\n"
        );
        round_trip(&["b"], vec![vec![cut]]);
    }

    #[test]
    fn reals_keep_a_point_or_an_exponent() {
        let text = encode(
            &columns(&["a", "b", "c"]),
            &[vec![json!(1e300), json!(-0.0), json!(2.5e-7)]],
        );
        assert_eq!(text, "a,b,c\n1e+300,-0.0,2.5e-7\n");
    }

    #[test]
    fn text_behind_a_byte_order_mark_is_quoted() {
        let text = encode(&columns(&["v"]), &[vec![json!("\u{feff}42")]]);
        assert_eq!(text, "v\n\"\u{feff}42\"\n");
    }

    #[test]
    fn a_lone_null_column_round_trips() {
        round_trip(&["x"], vec![vec![Json::Null], vec![json!(1)]]);
    }

    #[test]
    fn a_result_without_rows_is_its_header() {
        assert_eq!(encode(&columns(&["a", "b"]), &[]), "a,b\n");
        round_trip(&["a", "b"], vec![]);
    }

    #[test]
    fn crlf_line_ends_are_read_too() {
        let table = decode("a,b\r\n1,\"x\"\r\n").unwrap();
        assert_eq!(table.rows, vec![vec![json!(1), json!("x")]]);
    }

    #[test]
    fn a_row_of_the_wrong_width_is_refused_with_its_record() {
        assert_eq!(
            decode("a,b\n1\n"),
            Err(DecodeError::FieldCount {
                record: 2,
                found: 1,
                expected: 2
            })
        );
    }

    #[test]
    fn a_row_under_an_empty_header_is_refused() {
        assert_eq!(
            decode("\nabc\n"),
            Err(DecodeError::FieldCount {
                record: 2,
                found: 1,
                expected: 0
            })
        );
    }

    #[test]
    fn an_unclosed_quote_is_refused() {
        assert_eq!(
            decode("a\n\"open\n"),
            Err(DecodeError::UnclosedQuote { record: 2 })
        );
    }

    #[test]
    fn text_after_a_closing_quote_is_refused() {
        assert_eq!(
            decode("a\n\"x\"\ry\n"),
            Err(DecodeError::TextAfterQuote { record: 2 })
        );
    }

    #[test]
    fn a_blob_literal_must_hold_hex_digits_only() {
        assert!(matches!(
            decode("b\nX'+f'\n"),
            Err(DecodeError::BadBlob { record: 2, .. })
        ));
    }

    #[test]
    fn an_empty_text_has_no_header() {
        assert_eq!(decode(""), Err(DecodeError::NoHeader));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = Json> {
            prop_oneof![
                Just(Json::Null),
                any::<i64>().prop_map(Json::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Json::from),
                any::<String>().prop_map(Json::String),
                "[0-9eE.+-]{0,6}".prop_map(Json::String),
                proptest::collection::vec(any::<u8>(), 0..8).prop_map(|bytes| json!({
                    "base64": base64::engine::general_purpose::STANDARD.encode(&bytes),
                    "bytes": bytes.len(),
                })),
                (proptest::collection::vec(any::<u8>(), 0..8), 8u64..100_000).prop_map(
                    |(bytes, total)| json!({
                        "base64": base64::engine::general_purpose::STANDARD.encode(&bytes),
                        "bytes": total,
                        "truncated": true,
                    })
                ),
                "[\u{feff}\u{200b} ]{0,2}[0-9a-z]{0,3}[\u{feff}\u{200b} ]{0,2}"
                    .prop_map(Json::String),
            ]
        }

        proptest! {
            #[test]
            fn every_value_survives_the_round_trip(
                names in proptest::collection::vec(any::<String>(), 1..4),
                seed in proptest::collection::vec(proptest::collection::vec(value(), 4), 0..6),
            ) {
                let rows: Vec<Vec<Json>> = seed
                    .into_iter()
                    .map(|row| row.into_iter().take(names.len()).collect())
                    .collect();
                let table = decode(&encode(&names, &rows)).unwrap();
                prop_assert_eq!(table.columns, names);
                prop_assert_eq!(table.rows, rows);
            }
        }
    }
}
