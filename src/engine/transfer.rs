//! What travels between the engine and a worker process
//! ([`crate::pool::worker`]): a [`Call`] one way, a [`Reply`] the other,
//! in the pool's frames ([`crate::pool::frames`]).
//!
//! A call and a reply's header are JSON (small, and every type in them
//! already has its serde form). The rows of a reply are not: each cell is a
//! tag and its bytes, and the texts and BLOBs of the decoded rows are
//! slices of the one buffer the reply was read into, so a thousand rows
//! cost no allocation a value on this side either.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use serde::{Deserialize, Serialize};

use super::{
    Cell, ExecuteOutput, ExecuteRequest, ExplainOutput, Limits, QueryError, QueryOutput,
    QueryRequest, Rows, SqlParams, SqliteCode, TableDescription, TableDetail, TableList, Text,
};
use crate::policy::Restrictions;
use crate::pool::frames::{kind, Frame};
use crate::retry::RetryPolicy;
use crate::sqlite::health::{FileFault, WriteFault};

/// One call to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct Call {
    /// Which call a stop signal is for ([`crate::pool::worker::WorkerControl::interrupt`]).
    pub seq: u64,
    pub limits: Limits,
    pub read_retry: RetryPolicy,
    /// What the caller may not read; `None` for no restriction.
    pub restrictions: Option<Restrictions>,
    pub op: Op,
}

/// What a call asks the worker to do.
#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    /// `query`, its rows counted in the row format named `format`.
    Query {
        request: QueryRequest,
        format: String,
    },
    /// `execute`, its RETURNING rows counted in `format`.
    Execute {
        request: ExecuteRequest,
        format: String,
    },
    ListTables {
        pattern: Option<String>,
        column: Option<String>,
        detail: TableDetail,
    },
    DescribeTable {
        table: String,
    },
    SchemaDdl,
    Explain {
        sql: String,
        params: Option<SqlParams>,
    },
}

/// What a call produced.
#[derive(Debug)]
pub enum Output {
    Query(QueryOutput),
    Execute(ExecuteOutput),
    Tables(TableList),
    Description(TableDescription),
    Ddl(String),
    Explain(ExplainOutput),
}

/// What a write did to the file's health, for the server's readiness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriteEvent {
    Succeeded,
    Failed(WriteFault),
}

/// A worker's answer to one call.
#[derive(Debug)]
pub struct Reply {
    pub seq: u64,
    pub result: Result<Output, QueryError>,
    pub write: Option<WriteEvent>,
    /// Busy reads retried inside the worker (the pool counts them).
    pub retries: u32,
    /// The worker rolled back a transaction the call left open.
    pub rolled_back: bool,
    /// The worker could not put its connection back at rest and exits.
    pub unsettled: bool,
}

/// A [`QueryError`] as it crosses the socket.
#[derive(Debug, Serialize, Deserialize)]
enum WireError {
    Sql { code: i32, message: String },
    Denied(String),
    Limit { code: i32, message: String },
    Busy { retries: u32 },
    FileChanged(FileFault),
    NotWritable { code: i32, message: String },
    InvalidArgument(String),
    Internal(String),
}

impl From<QueryError> for WireError {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::Sql { code, message } => WireError::Sql {
                code: code.extended,
                message,
            },
            QueryError::Denied(message) => WireError::Denied(message),
            QueryError::Limit { code, message } => WireError::Limit {
                code: code.extended,
                message,
            },
            QueryError::Busy { retries } => WireError::Busy { retries },
            QueryError::FileChanged(fault) => WireError::FileChanged(fault),
            QueryError::NotWritable { code, message } => WireError::NotWritable {
                code: code.extended,
                message,
            },
            QueryError::InvalidArgument(message) => WireError::InvalidArgument(message),
            other => WireError::Internal(other.to_string()),
        }
    }
}

impl From<WireError> for QueryError {
    fn from(err: WireError) -> Self {
        match err {
            WireError::Sql { code, message } => QueryError::Sql {
                code: SqliteCode::new(code),
                message,
            },
            WireError::Denied(message) => QueryError::Denied(message),
            WireError::Limit { code, message } => QueryError::Limit {
                code: SqliteCode::new(code),
                message,
            },
            WireError::Busy { retries } => QueryError::Busy { retries },
            WireError::FileChanged(fault) => QueryError::FileChanged(fault),
            WireError::NotWritable { code, message } => QueryError::NotWritable {
                code: SqliteCode::new(code),
                message,
            },
            WireError::InvalidArgument(message) => QueryError::InvalidArgument(message),
            WireError::Internal(message) => QueryError::Internal(message),
        }
    }
}

/// A reply's header: everything but the rows.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    seq: u64,
    result: Result<Head, WireError>,
    write: Option<WriteEvent>,
    retries: u32,
    rolled_back: bool,
    unsettled: bool,
}

/// An [`Output`] without its rows, which follow the header.
#[derive(Debug, Serialize, Deserialize)]
enum Head {
    Query {
        columns: Vec<String>,
        row_count: usize,
        truncated: bool,
        next_cursor: Option<String>,
    },
    Execute {
        changes: u64,
        last_insert_rowid: i64,
        columns: Vec<String>,
        truncated: bool,
    },
    Tables(TableList),
    Description(TableDescription),
    Ddl(String),
    Explain(ExplainOutput),
}

/// The frame for `call`.
pub fn call_frame(call: &Call) -> Frame {
    let mut frame = Frame::with_capacity(kind::CALL, 256);
    serde_json::to_writer(frame.payload(), call).expect("a call serializes");
    frame
}

/// Reads a call.
pub fn read_call(payload: &[u8]) -> Result<Call, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// The frame for `reply`, written into `buffer` (whose capacity is kept).
pub fn reply_frame(reply: Reply, buffer: Vec<u8>) -> Frame {
    let (head, rows, cell_bytes) = match reply.result {
        Ok(Output::Query(out)) => (
            Ok(Head::Query {
                columns: out.columns,
                row_count: out.row_count,
                truncated: out.truncated,
                next_cursor: out.next_cursor,
            }),
            Some(out.rows),
            out.cell_bytes,
        ),
        Ok(Output::Execute(out)) => (
            Ok(Head::Execute {
                changes: out.changes,
                last_insert_rowid: out.last_insert_rowid,
                columns: out.columns,
                truncated: out.truncated,
            }),
            Some(out.rows),
            Vec::new(),
        ),
        Ok(Output::Tables(out)) => (Ok(Head::Tables(out)), None, Vec::new()),
        Ok(Output::Description(out)) => (Ok(Head::Description(out)), None, Vec::new()),
        Ok(Output::Ddl(out)) => (Ok(Head::Ddl(out)), None, Vec::new()),
        Ok(Output::Explain(out)) => (Ok(Head::Explain(out)), None, Vec::new()),
        Err(err) => (Err(WireError::from(err)), None, Vec::new()),
    };
    let header = Header {
        seq: reply.seq,
        result: head,
        write: reply.write,
        retries: reply.retries,
        rolled_back: reply.rolled_back,
        unsettled: reply.unsettled,
    };
    let rows_bytes = rows.as_ref().map_or(0, encoded_len) + cell_bytes.len() * 4;
    let mut frame = Frame::reusing(kind::REPLY, buffer);
    let out = frame.payload();
    out.reserve(256 + rows_bytes);
    let at = out.len();
    out.put_u32_le(0);
    serde_json::to_writer(&mut *out, &header).expect("a reply header serializes");
    let header_len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&header_len.to_le_bytes());
    if let Some(rows) = rows {
        encode_rows(&rows, &cell_bytes, out);
    }
    frame
}

/// Reads a reply; `Err` names what made no sense (the worker is then
/// dropped).
pub fn read_reply(payload: Vec<u8>) -> Result<Reply, String> {
    let mut buf = Bytes::from(payload);
    if buf.remaining() < 4 {
        return Err("a reply shorter than its header".into());
    }
    let header_len = buf.get_u32_le() as usize;
    if buf.remaining() < header_len {
        return Err("a reply shorter than its header".into());
    }
    let header: Header =
        serde_json::from_slice(&buf[..header_len]).map_err(|err| err.to_string())?;
    buf.advance(header_len);
    let result = match header.result {
        Err(err) => Err(QueryError::from(err)),
        Ok(Head::Query {
            columns,
            row_count,
            truncated,
            next_cursor,
        }) => {
            let (rows, cell_bytes) = decode_rows(&mut buf)?;
            Ok(Output::Query(QueryOutput {
                columns,
                rows,
                row_count,
                truncated,
                next_cursor,
                cell_bytes,
            }))
        }
        Ok(Head::Execute {
            changes,
            last_insert_rowid,
            columns,
            truncated,
        }) => {
            let (rows, _) = decode_rows(&mut buf)?;
            Ok(Output::Execute(ExecuteOutput {
                changes,
                last_insert_rowid,
                columns,
                rows,
                truncated,
            }))
        }
        Ok(Head::Tables(out)) => Ok(Output::Tables(out)),
        Ok(Head::Description(out)) => Ok(Output::Description(out)),
        Ok(Head::Ddl(out)) => Ok(Output::Ddl(out)),
        Ok(Head::Explain(out)) => Ok(Output::Explain(out)),
    };
    Ok(Reply {
        seq: header.seq,
        result,
        write: header.write,
        retries: header.retries,
        rolled_back: header.rolled_back,
        unsettled: header.unsettled,
    })
}

const NULL: u8 = 0;
const INTEGER: u8 = 1;
const REAL: u8 = 2;
const TEXT: u8 = 3;
const BLOB: u8 = 4;

fn encoded_len(rows: &Rows) -> usize {
    12 + rows
        .cells()
        .iter()
        .map(|cell| match cell {
            Cell::Null => 1,
            Cell::Integer(_) | Cell::Real(_) => 9,
            Cell::Text { text, .. } => 13 + text.len(),
            Cell::Blob { bytes, .. } => 13 + bytes.len(),
        })
        .sum::<usize>()
}

fn encode_rows(rows: &Rows, cell_bytes: &[usize], out: &mut Vec<u8>) {
    out.put_u32_le(rows.width() as u32);
    out.put_u32_le(rows.len() as u32);
    out.put_u32_le(cell_bytes.len() as u32);
    for &bytes in cell_bytes {
        out.put_u32_le(u32::try_from(bytes).unwrap_or(u32::MAX));
    }
    for cell in rows.cells() {
        match cell {
            Cell::Null => out.put_u8(NULL),
            Cell::Integer(i) => {
                out.put_u8(INTEGER);
                out.put_i64_le(*i);
            }
            Cell::Real(r) => {
                out.put_u8(REAL);
                out.put_f64_le(*r);
            }
            Cell::Text { text, total_bytes } => {
                out.put_u8(TEXT);
                out.put_u32_le(text.len() as u32);
                out.put_u64_le(*total_bytes as u64);
                out.extend_from_slice(text.bytes());
            }
            Cell::Blob { bytes, total_bytes } => {
                out.put_u8(BLOB);
                out.put_u32_le(bytes.len() as u32);
                out.put_u64_le(*total_bytes as u64);
                out.extend_from_slice(bytes);
            }
        }
    }
}

fn decode_rows(buf: &mut Bytes) -> Result<(Rows, Vec<usize>), String> {
    let short = || "a reply's rows end early".to_string();
    let need = |buf: &Bytes, n: usize| {
        if buf.remaining() < n {
            Err(short())
        } else {
            Ok(())
        }
    };
    need(buf, 12)?;
    let width = buf.get_u32_le() as usize;
    let len = buf.get_u32_le() as usize;
    let counted = buf.get_u32_le() as usize;
    need(buf, counted.saturating_mul(4))?;
    let cell_bytes = (0..counted).map(|_| buf.get_u32_le() as usize).collect();
    let total = width.checked_mul(len).ok_or_else(short)?;
    // Each cell takes at least one byte: a count past what is left is a lie.
    need(buf, total)?;
    let mut cells = Vec::with_capacity(total);
    for _ in 0..total {
        need(buf, 1)?;
        let cell = match buf.get_u8() {
            NULL => Cell::Null,
            INTEGER => {
                need(buf, 8)?;
                Cell::Integer(buf.get_i64_le())
            }
            REAL => {
                need(buf, 8)?;
                Cell::Real(buf.get_f64_le())
            }
            tag @ (TEXT | BLOB) => {
                need(buf, 12)?;
                let shown = buf.get_u32_le() as usize;
                let total_bytes = buf.get_u64_le() as usize;
                need(buf, shown)?;
                let bytes = buf.split_to(shown);
                if tag == TEXT {
                    let text = Text::from_utf8(bytes)
                        .ok_or_else(|| "a reply's text is not UTF-8".to_string())?;
                    Cell::Text { text, total_bytes }
                } else {
                    Cell::Blob { bytes, total_bytes }
                }
            }
            other => return Err(format!("a reply holds a cell of unknown kind {other}")),
        };
        cells.push(cell);
    }
    let rows = Rows::from_cells(width, len, cells).ok_or_else(short)?;
    Ok((rows, cell_bytes))
}

/// Restrictions as a call carries them.
pub fn restrictions_for_call(restrictions: &Arc<Restrictions>) -> Option<Restrictions> {
    (!restrictions.is_empty()).then(|| Restrictions::clone(restrictions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(result: Result<Output, QueryError>) -> Reply {
        let frame = reply_frame(
            Reply {
                seq: 9,
                result,
                write: Some(WriteEvent::Succeeded),
                retries: 2,
                rolled_back: false,
                unsettled: false,
            },
            Vec::new(),
        );
        let mut wire = Vec::new();
        frame.send(&mut wire).unwrap();
        let (kind, payload) = crate::pool::frames::read(&mut &wire[..]).unwrap();
        assert_eq!(kind, kind::REPLY);
        read_reply(payload).unwrap()
    }

    #[test]
    fn rows_of_every_kind_cross_unchanged() {
        let rows = Rows::from_rows(vec![
            vec![
                Cell::Null,
                Cell::Integer(-7),
                Cell::Real(1.5),
                Cell::text("héllo"),
                Cell::blob(vec![0u8, 1, 255]),
            ],
            vec![
                Cell::Integer(i64::MAX),
                Cell::Null,
                Cell::Real(f64::MIN_POSITIVE),
                Cell::text(""),
                Cell::Blob {
                    bytes: Bytes::from_static(b"ab"),
                    total_bytes: 1000,
                },
            ],
        ]);
        let sent = QueryOutput {
            columns: (0..5).map(|i| format!("c{i}")).collect(),
            rows: rows.clone(),
            row_count: 2,
            truncated: true,
            next_cursor: Some("cursor".into()),
            cell_bytes: (0..10).collect(),
        };
        let reply = round_trip(Ok(Output::Query(sent.clone())));
        assert_eq!(reply.seq, 9);
        assert_eq!(reply.retries, 2);
        assert!(matches!(reply.write, Some(WriteEvent::Succeeded)));
        match reply.result {
            Ok(Output::Query(got)) => assert_eq!(got, sent),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_error_keeps_its_kind_and_sqlite_code() {
        let reply = round_trip(Err(QueryError::Sql {
            code: SqliteCode::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE),
            message: "UNIQUE constraint failed".into(),
        }));
        match reply.result {
            Err(QueryError::Sql { code, message }) => {
                assert_eq!(code.name(), "SQLITE_CONSTRAINT_UNIQUE");
                assert_eq!(message, "UNIQUE constraint failed");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_truncated_reply_is_refused_not_read_past_its_end() {
        let frame = reply_frame(
            Reply {
                seq: 1,
                result: Ok(Output::Query(QueryOutput {
                    columns: vec!["a".into()],
                    rows: Rows::from_rows(vec![vec![Cell::text("abcdef")]]),
                    row_count: 1,
                    truncated: false,
                    next_cursor: None,
                    cell_bytes: Vec::new(),
                })),
                write: None,
                retries: 0,
                rolled_back: false,
                unsettled: false,
            },
            Vec::new(),
        );
        let mut wire = Vec::new();
        frame.send(&mut wire).unwrap();
        let (_, mut payload) = crate::pool::frames::read(&mut &wire[..]).unwrap();
        payload.truncate(payload.len() - 3);
        assert!(read_reply(payload).is_err());
    }
}
