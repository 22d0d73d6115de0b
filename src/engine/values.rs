//! SQL values in: the parameters an agent sends, bound to a statement.
//! (Values out are [`Cell`](super::Cell)s.)

use std::collections::BTreeMap;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Statement, ToSql};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
