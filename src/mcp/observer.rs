//! The MCP layer's extension point for measuring tool calls, so it does not
//! depend on a metrics library: the sidecar implements this trait.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Outcome;
use crate::identity::Principal;

/// Who made a call and what it asked to run, for observers that keep a
/// trail (the audit log). Set by the MCP server before the tool runs.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    /// The HTTP session (`Mcp-Session-Id`), when there is one.
    pub session: Option<String>,
    /// The SQL the call runs: the agent's, or a declared tool's statement.
    pub sql: Option<String>,
    /// How many parameter values came with it.
    pub params: usize,
}

impl Caller {
    /// A caller known only by its principal.
    pub fn new(principal: Arc<Principal>) -> Self {
        Self {
            principal,
            session: None,
            sql: None,
            params: 0,
        }
    }
}

/// One finished tool call.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    pub tool: &'a str,
    pub caller: &'a Caller,
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
