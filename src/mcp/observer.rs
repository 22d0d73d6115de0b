//! The MCP layer's extension point for measuring tool calls, so it does not
//! depend on a metrics library: the sidecar implements this trait.

use std::time::Duration;

use crate::engine::Outcome;

/// One finished tool call.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    pub tool: &'a str,
    pub outcome: Outcome,
    pub duration: Duration,
    /// Rows in the result (0 for errors and non-row results).
    pub rows: u64,
    /// Bytes of the result's text content.
    pub bytes: u64,
    pub truncated: bool,
}

/// Receives every finished tool call. The default records nothing.
pub trait ToolObserver: Send + Sync + 'static {
    fn tool_called(&self, _call: &ToolCall<'_>) {}
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoToolObserver;

impl ToolObserver for NoToolObserver {}
