//! The OpenTelemetry span of each tool call ([`crate::telemetry`]): named
//! and described as the semantic conventions for MCP and for databases
//! say, continued from the caller's trace context, and finished with the
//! call's outcome, rows and bytes. Its children are the fair-share wait,
//! the pool checkout, the statement in its worker and the encoding.
//!
//! With traces off the spans' target is off and none of this runs beyond a
//! disabled callsite's check.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use sha2::{Digest, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::engine::Outcome;
use crate::telemetry::TARGET;

use super::observer::Caller;

/// The span of one `tools/call`, a child of the trace the caller sent in
/// `_meta.traceparent` or, failing that, the HTTP `traceparent` header.
pub fn call_span(
    request: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> tracing::Span {
    // The name as sent, cut: an unknown tool's name is the client's to
    // make up, and must not make a span megabytes long.
    let mut cut = request
        .name
        .len()
        .min(super::observer::MAX_UNKNOWN_TOOL_NAME);
    while !request.name.is_char_boundary(cut) {
        cut -= 1;
    }
    let tool = &request.name[..cut];
    let span = tracing::info_span!(
        target: TARGET,
        "tools/call",
        otel.name = %format_args!("tools/call {tool}"),
        otel.kind = "server",
        trace_id = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let mut carrier = std::collections::HashMap::new();
    let meta = request
        .meta
        .as_ref()
        .map(|meta| &meta.0)
        .unwrap_or(&context.meta.0);
    if let Some(parent) = meta.get_traceparent() {
        carrier.insert("traceparent".to_string(), parent.to_string());
        if let Some(state) = meta.get_tracestate() {
            carrier.insert("tracestate".to_string(), state.to_string());
        }
    } else if let Some(parts) = super::http_parts(&context.extensions) {
        for name in ["traceparent", "tracestate"] {
            if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
                carrier.insert(name.to_string(), value.to_string());
            }
        }
    }
    if !carrier.is_empty() {
        let parent = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(parent);
    }
    span.set_attribute("mcp.method.name", "tools/call");
    span.set_attribute("gen_ai.operation.name", "execute_tool");
    span.set_attribute("gen_ai.tool.name", tool.to_string());
    if let Some(id) = trace_id(&span) {
        span.record("trace_id", tracing::field::display(&id));
    }
    span
}

/// The trace id of `span`, when it has one (traces on).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Who called and what it ran: the principal, the session, the database,
/// and the SQL as the audit log keeps it (the text, or its SHA-256).
pub fn describe(span: &tracing::Span, caller: &Caller, sql_as_hash: bool) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("enduser.id", caller.principal.name.clone());
    if let Some(session) = &caller.session {
        span.set_attribute("mcp.session.id", session.clone());
    }
    span.set_attribute("db.system.name", "sqlite");
    if let Some(database) = &caller.database {
        span.set_attribute("db.namespace", database.clone());
    }
    if let Some(sql) = &caller.sql {
        if sql_as_hash {
            let digest = Sha256::digest(sql.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            span.set_attribute("db.query.hash", hex);
        } else {
            span.set_attribute("db.query.text", sql.clone());
        }
    }
}

/// The call's end: its outcome, rows and bytes, an error status when it
/// failed.
pub fn finish(span: &tracing::Span, outcome: Outcome, rows: u64, bytes: u64) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("eros.outcome", outcome.as_str());
    span.set_attribute("db.response.returned_rows", rows as i64);
    span.set_attribute("eros.response.bytes", bytes as i64);
    if outcome != Outcome::Ok {
        span.set_attribute("error.type", outcome.as_str());
        span.set_status(Status::error(outcome.as_str()));
    }
}
