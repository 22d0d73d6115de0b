//! SQL values in and out: binding JSON parameters to a statement, and
//! turning SQLite values into compact JSON that keeps their type.

use std::collections::BTreeMap;

use base64::Engine as _;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Statement, ToSql};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::QueryError;

/// One bound parameter: null, boolean, integer, real or text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SqlParam {
    Null,
    Bool(bool),
    Integer(i64),
    Real(f64),
    Text(String),
}

impl ToSql for SqlParam {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlParam::Null => ToSqlOutput::Owned(Value::Null),
            SqlParam::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(*b))),
            SqlParam::Integer(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            SqlParam::Real(r) => ToSqlOutput::Owned(Value::Real(*r)),
            SqlParam::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// Statement parameters: a list for positional `?` placeholders or a map
/// for named `:name` placeholders (the leading `:`, `@` or `$` is optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SqlParams {
    Positional(Vec<SqlParam>),
    Named(BTreeMap<String, SqlParam>),
}

impl SqlParams {
    /// Binds every parameter, refusing counts or names that do not match
    /// the statement's placeholders.
    pub fn bind(params: Option<&SqlParams>, stmt: &mut Statement<'_>) -> Result<(), QueryError> {
        let expected = stmt.parameter_count();
        match params {
            None if expected == 0 => Ok(()),
            None => Err(QueryError::InvalidArgument(format!(
                "the statement has {expected} parameter(s) but no `params` were given"
            ))),
            Some(SqlParams::Positional(values)) => {
                if values.len() != expected {
                    return Err(QueryError::InvalidArgument(format!(
                        "the statement has {expected} parameter(s) but {} were given",
                        values.len()
                    )));
                }
                for (i, value) in values.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, value)?;
                }
                Ok(())
            }
            Some(SqlParams::Named(values)) => {
                if values.len() != expected {
                    return Err(QueryError::InvalidArgument(format!(
                        "the statement has {expected} parameter(s) but {} were given",
                        values.len()
                    )));
                }
                for (name, value) in values {
                    let index = find_named(stmt, name)?.ok_or_else(|| {
                        QueryError::InvalidArgument(format!(
                            "the statement has no parameter named {name:?}"
                        ))
                    })?;
                    stmt.raw_bind_parameter(index, value)?;
                }
                Ok(())
            }
        }
    }
}

fn find_named(stmt: &Statement<'_>, name: &str) -> rusqlite::Result<Option<usize>> {
    if name.starts_with([':', '@', '$']) {
        return stmt.parameter_index(name);
    }
    for prefix in [":", "@", "$"] {
        if let Some(index) = stmt.parameter_index(&format!("{prefix}{name}"))? {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// How a BLOB is shown: base64 of at most `max_blob_bytes` bytes.
#[derive(Debug, Clone, Copy)]
pub struct ValueLimits {
    pub max_blob_bytes: usize,
    pub max_text_bytes: usize,
}

/// Converts one SQLite value to JSON and reports its size in the result
/// and whether it had to be cut.
pub fn to_json(value: ValueRef<'_>, limits: ValueLimits) -> (Json, usize, bool) {
    match value {
        ValueRef::Null => (Json::Null, 4, false),
        ValueRef::Integer(i) => (Json::from(i), 20, false),
        ValueRef::Real(r) => match serde_json::Number::from_f64(r) {
            Some(n) => (Json::Number(n), 24, false),
            // JSON has no infinity; say which one.
            None => (Json::String(r.to_string()), 10, false),
        },
        ValueRef::Text(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            if text.len() > limits.max_text_bytes {
                let cut = floor_char_boundary(&text, limits.max_text_bytes);
                (Json::String(text[..cut].to_string()), cut + 2, true)
            } else {
                let len = text.len() + 2;
                (Json::String(text.into_owned()), len, false)
            }
        }
        ValueRef::Blob(bytes) => {
            let cut = bytes.len() > limits.max_blob_bytes;
            let shown = &bytes[..bytes.len().min(limits.max_blob_bytes)];
            let encoded = base64::engine::general_purpose::STANDARD.encode(shown);
            let mut blob = serde_json::Map::new();
            let size = encoded.len() + 32;
            blob.insert("base64".into(), Json::String(encoded));
            blob.insert("bytes".into(), Json::from(bytes.len()));
            if cut {
                blob.insert("truncated".into(), Json::Bool(true));
            }
            (Json::Object(blob), size, cut)
        }
    }
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}
