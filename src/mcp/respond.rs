//! Turning engine results into MCP tool results; errors as tool results
//! with `isError` and a message an agent can act on. Every call is reported
//! to the [`ToolObserver`].
//!
//! Query rows are encoded by the server's [`RowEncoder`]; every other
//! result is structured content plus its JSON as text.

use std::time::Instant;

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;

use super::observer::{Caller, ToolCall, ToolObserver};
use super::rows::RowEncoder;
use crate::engine::{
    ExecuteOutput, ExplainOutput, Outcome, QueryError, QueryOutput, TableDescription, TableList,
};
use crate::pool::PoolStats;

/// What a tool's result says about its size, for metrics, and how it is
/// sent.
pub trait ToolOutput: Serialize {
    fn rows(&self) -> u64 {
        0
    }
    fn truncated(&self) -> bool {
        false
    }
    /// The tool result: structured content plus its JSON as text, unless
    /// the result is rows.
    fn tool_result(&self, _rows: &dyn RowEncoder) -> Result<CallToolResult, serde_json::Error> {
        serde_json::to_value(self).map(CallToolResult::structured)
    }
}

impl ToolOutput for QueryOutput {
    fn rows(&self) -> u64 {
        self.row_count as u64
    }
    fn truncated(&self) -> bool {
        self.truncated
    }
    fn tool_result(&self, rows: &dyn RowEncoder) -> Result<CallToolResult, serde_json::Error> {
        rows.encode(self)
    }
}

impl ToolOutput for ExecuteOutput {
    fn rows(&self) -> u64 {
        self.rows.len() as u64
    }
    fn truncated(&self) -> bool {
        self.truncated
    }
}

impl ToolOutput for TableList {
    fn rows(&self) -> u64 {
        self.tables.len() as u64
    }
    fn truncated(&self) -> bool {
        self.truncated
    }
}

impl ToolOutput for TableDescription {}
impl ToolOutput for ExplainOutput {}
impl ToolOutput for PoolStats {}

/// Builds the tool result for `result`, rows encoded by `encoder`, and
/// reports the call.
pub fn respond<T: ToolOutput>(
    tool: &str,
    caller: &Caller,
    started: Instant,
    result: Result<T, QueryError>,
    encoder: &dyn RowEncoder,
    observer: &dyn ToolObserver,
) -> CallToolResult {
    answer(tool, caller, started, result, encoder, observer).result
}

/// A tool result, with the rows and bytes it carries (what quotas charge).
#[derive(Debug)]
pub struct Answer {
    pub result: CallToolResult,
    pub rows: u64,
    pub bytes: u64,
}

/// [`respond`], saying what the answer carries.
pub fn answer<T: ToolOutput>(
    tool: &str,
    caller: &Caller,
    started: Instant,
    result: Result<T, QueryError>,
    encoder: &dyn RowEncoder,
    observer: &dyn ToolObserver,
) -> Answer {
    let quota = match &result {
        Err(QueryError::Quota(exceeded)) => Some(exceeded.quota),
        _ => None,
    };
    let encoding = tracing::info_span!(target: crate::telemetry::TARGET, "encode");
    let encoded = result.map(|output| {
        let _encoding = encoding.enter();
        let encoded = output.tool_result(encoder);
        (output, encoded)
    });
    let (response, outcome, rows, bytes, truncated) = match encoded {
        Ok((output, encoded)) => match encoded {
            Ok(response) => {
                let bytes = text_len(&response);
                (
                    response,
                    Outcome::Ok,
                    output.rows(),
                    bytes,
                    output.truncated(),
                )
            }
            Err(err) => {
                let err = QueryError::Internal(format!("cannot encode the result: {err}"));
                (error_result(&err), err.outcome(), 0, 0, false)
            }
        },
        Err(err) => {
            if matches!(err, QueryError::Internal(_)) {
                tracing::error!(tool, error = %err, "tool call failed");
            }
            let response = error_result(&err);
            let bytes = text_len(&response);
            (response, err.outcome(), 0, bytes, false)
        }
    };
    super::trace::finish(&tracing::Span::current(), outcome, rows, bytes);
    // Inside the call's span: with traces on, the line carries its trace id.
    tracing::debug!(
        tool,
        outcome = outcome.as_str(),
        rows,
        bytes,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "tool call answered"
    );
    caller
        .reported
        .store(true, std::sync::atomic::Ordering::Relaxed);
    observer.tool_called(&ToolCall {
        tool,
        caller,
        outcome,
        duration: started.elapsed(),
        rows,
        bytes,
        truncated,
        quota,
    });
    Answer {
        result: response,
        rows,
        bytes,
    }
}

/// The tool result for a call that failed before it reached the engine
/// (bad arguments, shutdown), reported like any other call.
pub fn refuse(
    tool: &str,
    caller: &Caller,
    err: QueryError,
    observer: &dyn ToolObserver,
) -> CallToolResult {
    // No rows to encode: any encoder will do.
    respond::<PoolStats>(
        tool,
        caller,
        Instant::now(),
        Err(err),
        &super::rows::JsonRows,
        observer,
    )
}

/// An `isError` result: `CODE: message`, and whether to retry.
/// Longest error message sent: SQLite echoes parts of the SQL or of values
/// in some messages (a JSON path, a table name), which must not make an
/// error answer megabytes long.
pub const MAX_ERROR_BYTES: usize = 2048;

pub fn error_result(err: &QueryError) -> CallToolResult {
    let mut text = format!("{}: {err}", err.code());
    if text.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let dropped = text.len() - cut;
        text.truncate(cut);
        text.push_str(&format!("... ({dropped} more bytes of the message cut)"));
    }
    if err.is_retryable() {
        text.push_str(" [retryable]");
    }
    CallToolResult::error(vec![ContentBlock::text(text)])
}

fn text_len(result: &CallToolResult) -> u64 {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text())
        .map(|text| text.text.len() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_echoing_a_huge_value_is_cut() {
        let err = QueryError::Sql {
            code: crate::engine::SqliteCode::new(rusqlite::ffi::SQLITE_ERROR),
            message: format!("bad JSON path: {}", "x".repeat(8_000_000)),
        };
        let result = error_result(&err);
        let text = &result.content[0].as_text().unwrap().text;
        assert!(text.len() < MAX_ERROR_BYTES + 100, "{} bytes", text.len());
        assert!(text.ends_with("more bytes of the message cut)"));
    }
}
