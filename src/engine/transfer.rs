//! What travels between the engine and a worker process
//! ([`crate::pool::worker`]): a [`Call`] one way, a [`Reply`] the other,
//! in the pool's frames ([`crate::pool::frames`]).
//!
//! A call and a reply's header are JSON (small, and every type in them
//! already has its serde form). The rows of a reply are not: each cell is a
//! tag and its bytes, written into the reply's frame as the worker reads
//! them ([`WireRows`], a page's sink), before the header, which is known
//! only once the page ends. The texts and BLOBs of the decoded rows are
//! slices of the one buffer the reply was read into, so a thousand rows
//! cost no allocation a value on either side.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use serde::{Deserialize, Serialize};

use super::page::{ExecutePage, PageSink, QueryPage};
use super::{
    Cell, CellRef, ExecuteOutput, ExecuteRequest, ExplainOutput, Limits, QueryError, QueryOutput,
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

/// What a call produced, as the server receives it.
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

/// What a call produced, as a worker sends it: rows already encoded.
#[derive(Debug)]
pub enum Answer {
    Query(QueryPage<WireRows>),
    Execute(ExecutePage<WireRows>),
    Tables(TableList),
    Description(TableDescription),
    Ddl(String),
    Explain(ExplainOutput),
}

/// A worker's answer to one call: `O` is [`Answer`] in the worker,
/// [`Output`] in the server.
#[derive(Debug)]
pub struct Reply<O = Output> {
    pub seq: u64,
    pub result: Result<O, QueryError>,
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

/// An [`Output`] without its rows, which come before the header.
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

/// A reply's rows, encoded into its frame as a page reads them: the
/// width, the row count, the cells (a tag, then the value; a text or BLOB
/// as its shown and whole lengths and its bytes), then the wire size of
/// each cell. The reply's header follows them ([`reply_frame`]).
pub struct WireRows {
    frame: Frame,
    /// Where the row count is, written when the rows end.
    len_at: usize,
    len: u32,
    cell_bytes: Vec<u32>,
}

impl std::fmt::Debug for WireRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireRows")
            .field("rows", &self.len)
            .field("cells", &self.cell_bytes.len())
            .finish()
    }
}

/// Cells a decoded reply reserves room for before it has read them.
const MAX_RESERVED_CELLS: usize = 64 * 1024;

const NULL: u8 = 0;
const INTEGER: u8 = 1;
const REAL: u8 = 2;
const TEXT: u8 = 3;
const BLOB: u8 = 4;

impl WireRows {
    /// No rows yet, of `width` cells each, in a frame written into
    /// `buffer` (its contents dropped, its capacity kept).
    pub fn new(buffer: Vec<u8>, width: usize) -> Self {
        let mut frame = Frame::reusing(kind::REPLY, buffer);
        let out = frame.payload();
        out.put_u32_le(width as u32);
        let len_at = out.len();
        out.put_u32_le(0);
        Self {
            frame,
            len_at,
            len: 0,
            cell_bytes: Vec::new(),
        }
    }

    /// The frame, the rows ended, for the header to follow.
    fn finish(mut self) -> Frame {
        let out = self.frame.payload();
        out[self.len_at..self.len_at + 4].copy_from_slice(&self.len.to_le_bytes());
        out.put_u32_le(self.cell_bytes.len() as u32);
        out.reserve(self.cell_bytes.len() * 4);
        for bytes in &self.cell_bytes {
            out.put_u32_le(*bytes);
        }
        self.frame
    }
}

impl PageSink for WireRows {
    fn push_row(&mut self, cells: &[CellRef<'_>], bytes: &[usize]) {
        let out = self.frame.payload();
        for cell in cells {
            match cell {
                CellRef::Null => out.put_u8(NULL),
                CellRef::Integer(i) => {
                    out.put_u8(INTEGER);
                    out.put_i64_le(*i);
                }
                CellRef::Real(r) => {
                    out.put_u8(REAL);
                    out.put_f64_le(*r);
                }
                CellRef::Text { text, total_bytes } => {
                    put_value(out, TEXT, text.as_bytes(), *total_bytes);
                }
                CellRef::Blob { bytes, total_bytes } => put_value(out, BLOB, bytes, *total_bytes),
            }
        }
        self.cell_bytes.extend(
            bytes
                .iter()
                .map(|&bytes| u32::try_from(bytes).unwrap_or(u32::MAX)),
        );
        self.len += 1;
    }
}

fn put_value(out: &mut Vec<u8>, tag: u8, bytes: &[u8], total_bytes: usize) {
    out.put_u8(tag);
    out.put_u32_le(bytes.len() as u32);
    out.put_u64_le(total_bytes as u64);
    out.extend_from_slice(bytes);
}

/// The frame for `reply`: its rows as read (or none, written into `spare`),
/// then its header as JSON, then the header's length.
pub fn reply_frame(reply: Reply<Answer>, spare: Vec<u8>) -> Frame {
    let (head, rows) = match reply.result {
        Ok(Answer::Query(page)) => (
            Ok(Head::Query {
                columns: page.columns,
                row_count: page.row_count,
                truncated: page.truncated,
                next_cursor: page.next_cursor,
            }),
            Some(page.rows),
        ),
        Ok(Answer::Execute(page)) => (
            Ok(Head::Execute {
                changes: page.changes,
                last_insert_rowid: page.last_insert_rowid,
                columns: page.columns,
                truncated: page.truncated,
            }),
            Some(page.rows),
        ),
        Ok(Answer::Tables(out)) => (Ok(Head::Tables(out)), None),
        Ok(Answer::Description(out)) => (Ok(Head::Description(out)), None),
        Ok(Answer::Ddl(out)) => (Ok(Head::Ddl(out)), None),
        Ok(Answer::Explain(out)) => (Ok(Head::Explain(out)), None),
        Err(err) => (Err(WireError::from(err)), None),
    };
    let header = Header {
        seq: reply.seq,
        result: head,
        write: reply.write,
        retries: reply.retries,
        rolled_back: reply.rolled_back,
        unsettled: reply.unsettled,
    };
    let mut frame = rows.unwrap_or_else(|| WireRows::new(spare, 0)).finish();
    let out = frame.payload();
    let at = out.len();
    serde_json::to_writer(&mut *out, &header).expect("a reply header serializes");
    let header_len = (out.len() - at) as u32;
    out.put_u32_le(header_len);
    frame
}

/// Reads a reply; `Err` names what made no sense (the worker is then
/// dropped).
pub fn read_reply(payload: Vec<u8>) -> Result<Reply, String> {
    let short = || "a reply shorter than its header".to_string();
    let end = payload.len().checked_sub(4).ok_or_else(short)?;
    let header_len = u32::from_le_bytes([
        payload[end],
        payload[end + 1],
        payload[end + 2],
        payload[end + 3],
    ]) as usize;
    let rows_end = end.checked_sub(header_len).ok_or_else(short)?;
    let header: Header =
        serde_json::from_slice(&payload[rows_end..end]).map_err(|err| err.to_string())?;
    let mut buf = Bytes::from(payload);
    buf.truncate(rows_end);
    let result = match header.result {
        Err(err) => Err(QueryError::from(err)),
        Ok(Head::Query {
            columns,
            row_count,
            truncated,
            next_cursor,
        }) => {
            let (rows, cell_bytes) = decode_rows(&mut buf)?;
            if rows.len() != row_count {
                return Err(format!(
                    "a reply announces {row_count} rows and holds {}",
                    rows.len()
                ));
            }
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

fn decode_rows(buf: &mut Bytes) -> Result<(Rows, Vec<usize>), String> {
    let short = || "a reply's rows end early".to_string();
    let need = |buf: &Bytes, n: usize| {
        if buf.remaining() < n {
            Err(short())
        } else {
            Ok(())
        }
    };
    need(buf, 8)?;
    let width = buf.get_u32_le() as usize;
    let len = buf.get_u32_le() as usize;
    if width == 0 && len > 0 {
        // No statement returns rows of no columns.
        return Err(format!("a reply holds {len} rows of no columns"));
    }
    let total = width.checked_mul(len).ok_or_else(short)?;
    // Each cell takes at least one byte: a count past what is left is a lie.
    need(buf, total)?;
    // Reserved up to a bound: a cell takes 40 bytes here and as little as
    // one on the wire, and a reply is not trusted with the server's memory.
    let mut cells = Vec::with_capacity(total.min(MAX_RESERVED_CELLS));
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
    need(buf, 4)?;
    let counted = buf.get_u32_le() as usize;
    if counted != 0 && counted != total {
        return Err(format!("a reply counts {counted} of its {total} cells"));
    }
    need(buf, counted.saturating_mul(4))?;
    let cell_bytes = (0..counted).map(|_| buf.get_u32_le() as usize).collect();
    if buf.has_remaining() {
        return Err("a reply holds bytes past its rows".into());
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
    use crate::engine::WireSize;

    fn round_trip(result: Result<Answer, QueryError>) -> Reply {
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

    /// `rows` as a worker sends them, each cell counted at `bytes`.
    fn wire_rows(rows: &Rows, bytes: &[usize]) -> WireRows {
        let mut wire = WireRows::new(Vec::new(), rows.width());
        for (i, row) in rows.iter().enumerate() {
            let cells: Vec<CellRef<'_>> = row.iter().map(Cell::as_ref).collect();
            wire.push_row(&cells, &bytes[i * rows.width()..(i + 1) * rows.width()]);
        }
        wire
    }

    /// The payload of a worker's reply holding `page`, as the server reads it.
    fn payload_of(page: QueryPage<WireRows>) -> Vec<u8> {
        let frame = reply_frame(
            Reply {
                seq: 1,
                result: Ok(Answer::Query(page)),
                write: None,
                retries: 0,
                rolled_back: false,
                unsettled: false,
            },
            Vec::new(),
        );
        let mut wire = Vec::new();
        frame.send(&mut wire).unwrap();
        crate::pool::frames::read(&mut &wire[..]).unwrap().1
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
        let page = QueryPage {
            columns: sent.columns.clone(),
            rows: wire_rows(&rows, &sent.cell_bytes),
            row_count: 2,
            truncated: true,
            next_cursor: Some("cursor".into()),
        };
        let reply = round_trip(Ok(Answer::Query(page)));
        assert_eq!(reply.seq, 9);
        assert_eq!(reply.retries, 2);
        assert!(matches!(reply.write, Some(WriteEvent::Succeeded)));
        match reply.result {
            Ok(Output::Query(got)) => assert_eq!(got, sent),
            other => panic!("{other:?}"),
        }
    }

    use crate::engine::page::tests::Plain;

    #[test]
    fn rows_read_straight_into_a_reply_decode_as_sqlite_gave_them() {
        // Invalid UTF-8 (shown with U+FFFD), a text cut at a character
        // boundary to fit the first row, a BLOB cut to its cap, and the
        // other types.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT CAST(x'61ff62' AS TEXT), NULL, 7, 0.5, x'000102030405060708090a',                  printf('%.60c', 'é')",
            )
            .unwrap();
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let limits = crate::engine::page::PageLimits {
            max_rows: 10,
            max_bytes: 100,
            max_blob_bytes: 8,
        };
        let page = crate::engine::page::read_page(
            &mut stmt.raw_query(),
            &columns,
            limits,
            &Plain,
            WireRows::new(Vec::new(), columns.len()),
        )
        .unwrap();
        assert!(page.value_cut);
        let reply = round_trip(Ok(Answer::Query(QueryPage {
            columns,
            rows: page.rows,
            row_count: page.len,
            truncated: page.value_cut,
            next_cursor: None,
        })));
        let Ok(Output::Query(got)) = reply.result else {
            panic!("{:?}", reply.result);
        };
        let row = &got.rows[0];
        assert_eq!(row[0].as_text(), Some("a\u{fffd}b"));
        assert_eq!(row[1], Cell::Null);
        assert_eq!(row[2], Cell::Integer(7));
        assert_eq!(row[3], Cell::Real(0.5));
        assert_eq!(
            row[4],
            Cell::Blob {
                bytes: Bytes::from_static(&[0, 1, 2, 3, 4, 5, 6, 7]),
                total_bytes: 11
            }
        );
        // 100 bytes less the row's 1 and the first five cells' 5 + 1 + 1
        // + 1 + 8 leave 83 of a 120-byte text: 41 whole characters.
        let text = row[5].as_text().unwrap();
        assert_eq!(text, "é".repeat(41));
        assert_eq!(row[5].total_bytes(), 120);
        let sizes: Vec<usize> = row.iter().map(|c| Plain.cell(&c.as_ref())).collect();
        assert_eq!(got.cell_bytes, sizes);
    }

    /// The reply of a page of `sql` read under `limits` into a reply.
    fn page_reply(sql: &str, limits: crate::engine::page::PageLimits) -> (bool, Reply) {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let page = crate::engine::page::read_page(
            &mut stmt.raw_query(),
            &columns,
            limits,
            &Plain,
            WireRows::new(Vec::new(), columns.len()),
        )
        .unwrap();
        let more = page.more;
        let reply = round_trip(Ok(Answer::Query(QueryPage {
            columns,
            rows: page.rows,
            row_count: page.len,
            truncated: page.more,
            next_cursor: None,
        })));
        (more, reply)
    }

    const LIMITS: crate::engine::page::PageLimits = crate::engine::page::PageLimits {
        max_rows: 100,
        max_bytes: 100,
        max_blob_bytes: 8,
    };

    fn rows_of(reply: Reply) -> Rows {
        match reply.result {
            Ok(Output::Query(out)) => {
                assert_eq!(out.row_count, out.rows.len());
                out.rows
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_page_stopped_by_its_caps_crosses_with_the_rows_kept_and_no_other() {
        let ten = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) \
                   SELECT x, printf('%.18c', 'a') FROM c";
        // By the byte budget: a row costs 1 + 1 + 18 bytes, five fit in 100.
        let (more, reply) = page_reply(ten, LIMITS);
        assert!(more);
        let rows = rows_of(reply);
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[4][0], Cell::Integer(5));
        // By the row cap.
        let (more, reply) = page_reply(
            ten,
            crate::engine::page::PageLimits {
                max_rows: 3,
                ..LIMITS
            },
        );
        assert!(more);
        assert_eq!(rows_of(reply).len(), 3);
        // A later row that would have to be cut for room is left out whole
        // (the reply holds nothing past its rows, or it would be refused).
        let (more, reply) = page_reply(
            "SELECT 'small' UNION ALL SELECT printf('%.500c', 'a')",
            LIMITS,
        );
        assert!(more);
        assert_eq!(rows_of(reply), vec![vec![Cell::text("small")]]);
    }

    #[test]
    fn a_reply_whose_counts_disagree_with_its_rows_is_refused() {
        let rows = Rows::from_rows(vec![vec![Cell::Integer(1)], vec![Cell::Integer(2)]]);
        let reply = |row_count| {
            payload_of(QueryPage {
                columns: vec!["a".into()],
                rows: wire_rows(&rows, &[1, 1]),
                row_count,
                truncated: false,
                next_cursor: None,
            })
        };
        assert!(read_reply(reply(2)).is_ok(), "the control reads");
        assert!(read_reply(reply(3)).is_err());
    }

    proptest::proptest! {
        /// Whatever a worker sends, the server reads it or refuses it: it
        /// never panics, never reads past the end.
        #[test]
        fn a_mangled_reply_is_refused_or_read_never_a_panic(
            cut in 0usize..400,
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..4),
        ) {
            let rows = Rows::from_rows(vec![
                vec![Cell::Null, Cell::Integer(-7), Cell::Real(1.5), Cell::text("héllo"), Cell::blob(vec![0u8, 1, 255])],
                vec![Cell::Integer(1), Cell::Null, Cell::Real(0.0), Cell::text(""), Cell::blob(Vec::new())],
            ]);
            let mut payload = payload_of(QueryPage {
                columns: (0..5).map(|i| format!("c{i}")).collect(),
                rows: wire_rows(&rows, &[1; 10]),
                row_count: 2,
                truncated: false,
                next_cursor: None,
            });
            for (at, byte) in flips {
                if let Some(b) = payload.get_mut(at) {
                    *b ^= byte;
                }
            }
            payload.truncate(payload.len().saturating_sub(cut % (payload.len() + 1)));
            let _ = read_reply(payload);
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
        let rows = Rows::from_rows(vec![vec![Cell::text("abcdef")]]);
        let payload = payload_of(QueryPage {
            columns: vec!["a".into()],
            rows: wire_rows(&rows, &[6]),
            row_count: 1,
            truncated: false,
            next_cursor: None,
        });
        assert!(read_reply(payload.clone()).is_ok(), "the control reads");
        // Cut at the end: the header's length is gone.
        assert!(read_reply(payload[..payload.len() - 3].to_vec()).is_err());
        // Cut inside the text, the header whole: the text ends early. (The
        // rows end with the count of counted cells and the one count.)
        let end = payload.len() - 4;
        let header_len = u32::from_le_bytes(payload[end..].try_into().unwrap()) as usize;
        let text_end = end - header_len - 8;
        assert_eq!(&payload[text_end - 6..text_end], b"abcdef");
        let mut cut = payload[..text_end - 3].to_vec();
        cut.extend_from_slice(&payload[text_end..]);
        assert!(read_reply(cut).is_err());
    }
}
