//! Typed CSV read back, for tests: the server only writes it
//! (`eros_mcp::mcp::rows::csv`). [`decode`] turns an answer into the JSON
//! values the `json` row format sends, so the two formats can be compared.

use base64::Engine as _;
use serde_json::Value as Json;

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

/// Reads typed CSV back into the JSON values the `json` row format sends.
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

/// Whether an unquoted field reads as a BLOB literal.
fn reads_as_blob(text: &str) -> bool {
    text.starts_with("X'") || text.starts_with("x'")
}
