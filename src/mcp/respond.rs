//! Turning engine results into MCP tool results: structured content plus
//! the same JSON, compact, as text for older clients; errors as tool
//! results with `isError` and a message an agent can act on. Every call is
//! reported to the [`ToolObserver`].

use std::time::Instant;

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;

use super::observer::{ToolCall, ToolObserver};
use crate::engine::{
    ExecuteOutput, ExplainOutput, Outcome, QueryError, QueryOutput, TableDescription, TableList,
};
use crate::pool::PoolStats;

/// What a result says about its size, for metrics.
pub trait ResultSummary {
    fn rows(&self) -> u64 {
        0
    }
    fn truncated(&self) -> bool {
        false
    }
}

impl ResultSummary for QueryOutput {
    fn rows(&self) -> u64 {
        self.row_count as u64
    }
    fn truncated(&self) -> bool {
        self.truncated
    }
}

impl ResultSummary for ExecuteOutput {
    fn rows(&self) -> u64 {
        self.rows.len() as u64
    }
}

impl ResultSummary for TableList {
    fn rows(&self) -> u64 {
        self.tables.len() as u64
    }
    fn truncated(&self) -> bool {
        self.truncated
    }
}

impl ResultSummary for TableDescription {}
impl ResultSummary for ExplainOutput {}
impl ResultSummary for PoolStats {}

/// Builds the tool result for `result` and reports the call.
pub fn respond<T: Serialize + ResultSummary>(
    tool: &str,
    started: Instant,
    result: Result<T, QueryError>,
    observer: &dyn ToolObserver,
) -> CallToolResult {
    let (response, outcome, rows, bytes, truncated) = match result {
        Ok(output) => match serde_json::to_value(&output) {
            Ok(value) => {
                let response = CallToolResult::structured(value);
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
    observer.tool_called(&ToolCall {
        tool,
        outcome,
        duration: started.elapsed(),
        rows,
        bytes,
        truncated,
    });
    response
}

/// The tool result for a call that failed before it reached the engine
/// (bad arguments, shutdown), reported like any other call.
pub fn refuse(tool: &str, err: QueryError, observer: &dyn ToolObserver) -> CallToolResult {
    respond::<PoolStats>(tool, Instant::now(), Err(err), observer)
}

/// An `isError` result: `CODE: message`, and whether to retry.
pub fn error_result(err: &QueryError) -> CallToolResult {
    let mut text = format!("{}: {err}", err.code());
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
