//! The MCP layer's extension point for observing tool calls, so it does not
//! depend on a metrics library or the audit log: the sidecar and
//! [`crate::audit`] implement this trait, and [`ToolObservers`] hands every
//! call to each of them.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{CommitGate, Outcome};
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
    /// The parameter values themselves (the `params` argument, or a
    /// declared tool's arguments); copied only when an observer asks for
    /// them ([`ToolObserver::wants_param_values`]).
    pub param_values: Option<serde_json::Value>,
    /// Whether the tool writes (`execute`, a declared write tool): its
    /// observers must have recorded it before the result is returned.
    pub writes: bool,
    /// The database the call names (a declared tool's own, or the only
    /// one when it names none).
    pub database: Option<String>,
    /// The call's trace id, when traces are on.
    pub trace_id: Option<String>,
    /// Set once the call has been reported to the observers (shared by
    /// the caller's clones): a call rmcp refused before its handler ran
    /// is reported by the server instead.
    pub reported: Arc<std::sync::atomic::AtomicBool>,
}

impl Caller {
    /// A caller known only by its principal.
    pub fn new(principal: Arc<Principal>) -> Self {
        Self {
            principal,
            session: None,
            sql: None,
            params: 0,
            param_values: None,
            writes: false,
            database: None,
            trace_id: None,
            reported: Arc::default(),
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
    /// The quota that refused the call, if one did.
    pub quota: Option<&'static str>,
}

/// The longest unknown tool name an observer is handed: the rest of a
/// name a client made up is not worth a record's bytes.
pub const MAX_UNKNOWN_TOOL_NAME: usize = 128;

/// Receives every finished tool call, synchronously, before its result is
/// returned. The default records nothing.
pub trait ToolObserver: Send + Sync + 'static {
    fn tool_called(&self, _call: &ToolCall<'_>) {}
    /// A `tools/call` named no tool this server has (`name` as sent, cut
    /// to [`MAX_UNKNOWN_TOOL_NAME`] bytes); it was refused.
    fn unknown_tool_called(&self, _name: &str, _caller: &Caller) {}
    /// A write (`execute`, a declared write tool) is about to commit, on
    /// the statement's thread: `Err(reason)` rolls it back, so an observer
    /// that must hold a record of every write (the audit log, fail closed)
    /// writes it here.
    fn write_committing(&self, _tool: &str, _caller: &Caller) -> Result<(), String> {
        Ok(())
    }
    /// Whether [`Caller::param_values`] should be filled (a copy of the
    /// arguments per call, so only when someone reads them).
    fn wants_param_values(&self) -> bool {
        false
    }
}

/// Several observers as one: each gets every call, in order.
pub struct ToolObservers(pub Vec<Arc<dyn ToolObserver>>);

impl ToolObserver for ToolObservers {
    fn tool_called(&self, call: &ToolCall<'_>) {
        for observer in &self.0 {
            observer.tool_called(call);
        }
    }
    fn unknown_tool_called(&self, name: &str, caller: &Caller) {
        for observer in &self.0 {
            observer.unknown_tool_called(name, caller);
        }
    }
    fn write_committing(&self, tool: &str, caller: &Caller) -> Result<(), String> {
        self.0
            .iter()
            .try_for_each(|observer| observer.write_committing(tool, caller))
    }
    fn wants_param_values(&self) -> bool {
        self.0.iter().any(|observer| observer.wants_param_values())
    }
}

/// The engine's [`CommitGate`] for one write: asks the observers, who
/// record it before it commits.
pub struct RecordedWrite {
    pub tool: String,
    pub caller: Caller,
    pub observer: Arc<dyn ToolObserver>,
}

impl CommitGate for RecordedWrite {
    fn may_commit(&self) -> Result<(), String> {
        self.observer.write_committing(&self.tool, &self.caller)
    }
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoToolObserver;

impl ToolObserver for NoToolObserver {}
