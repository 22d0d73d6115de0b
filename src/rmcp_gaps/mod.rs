//! Where eros-mcp works around rmcp: every gap in one list, checked against
//! rmcp 3.11.0 (the version in `Cargo.lock`, source read at the lines
//! given). When rmcp moves, read each entry again and delete what it no
//! longer needs; none could go at 3.11.0.
//!
//! The gaps that stand on their own live here (they import only rmcp,
//! serde and axum's types, so the transports and the MCP layer both use
//! them): [`jsonrpc`], [`answer_line`], [`rebinding`], [`tool_schema`].
//! The others are woven into the transport or the MCP server, and this
//! list says where.
//!
//! 1. **Malformed JSON-RPC** ([`jsonrpc`]). rmcp answers text that is not
//!    JSON with nothing over stdio (`transport/async_rw.rs:316-323`, on
//!    purpose: rust-sdk#938, PR #940; #825 asks for `-32700`) and with a
//!    plain-text 415 over HTTP (`transport/common/server_side_http.rs:256`);
//!    JSON that is not a message gets `-32600` without the id it carried;
//!    a known method with misfit params falls into `CustomRequest` and gets
//!    `-32601` (`model.rs:4932-4956`, `handler/server.rs:636-647`). JSON-RPC
//!    2.0 asks for `-32700`, the id, and `-32602`. Also a fast path: rmcp's
//!    untagged request enum tries 13 types before `tools/call`.
//! 2. **stdio framing** (`transport/lines.rs`). rmcp drops a line over
//!    16 MiB unanswered (`async_rw.rs:282-289`) and runs a request that
//!    reuses an in-flight id beside the first (`service.rs:1652`; the same
//!    problem is python-sdk#3060). Our reader answers both with errors.
//! 3. **The answer line** ([`answer_line`]). rmcp writes every message with
//!    serde_json (`async_rw.rs:610-616`), which escapes a string a byte at
//!    a time; a query's rows are one long string. A performance gap: rmcp
//!    has no hook for writing answers but a transport of one's own.
//! 4. **DNS rebinding** ([`rebinding`]). rmcp's Host and Origin checks
//!    parse with `http::uri::Authority` (`transport/streamable_http_server/
//!    tower.rs:1313-1338`), which reads `127.0.0.1:80.evil.com` as host
//!    `127.0.0.1` without a port, so it passes an allowed entry. No
//!    upstream issue found; ours runs in front, rmcp's still behind.
//! 5. **Tool schemas** ([`tool_schema`]). rmcp generates draft 2020-12
//!    schemas with schemars and keeps `$schema`, `$defs`/`$ref`,
//!    non-standard `format`s and optional fields' `null` alternatives
//!    (`handler/server/common.rs:17-28`); every session pays for them in
//!    its context.
//! 6. **Session DELETE** (`transport/http.rs`, `gate`, its DELETE arm).
//!    rmcp answers 202 Accepted (`tower.rs:2537`); clients (the Python SDK)
//!    expect 200 or 204, and the session is gone by then.
//! 7. **One write per quick SSE answer** (`transport/http.rs`,
//!    `coalesce_sse_answer`). In session mode rmcp returns the SSE head at
//!    once (`tower.rs:2233-2243`), so a quick answer costs two writes. A
//!    performance gap.
//! 8. **Session cap, idle expiry, duplicate ids** (`transport/sessions.rs`).
//!    rmcp's session manager has no cap (`session/local.rs:74-83`); its
//!    keep-alive frees an idle session since rust-sdk#1244 but ignores
//!    calls in flight; a reused id in a session runs twice (`local.rs:457`).
//! 9. **Cancellation and backpressure over stdio** (`transport/stdio.rs`).
//!    rmcp drops `receive` inside its `select!` (`service.rs:1477-1485`,
//!    rust-sdk PR #947) and drops the answer of a cancelled request
//!    (`service.rs:1567-1570`, PR #957, on purpose), so the in-flight permit
//!    is held outside `receive` and given back on cancel.
//! 10. **Calls rmcp refuses itself** (`mcp/mod.rs`). An unknown tool gets
//!     "tool not found" without its name (`handler/server/router/tool.rs:566`),
//!     and arguments that do not deserialize are refused before our handler
//!     runs (`handler/server/tool.rs:240-247`, rust-sdk PR #894): we name the
//!     tool, and record and count those calls ourselves.
//!
//! The HTTP body is parsed once on our side ([`jsonrpc::screen`]); rmcp
//! parses it again, since its service takes bytes.

pub mod answer_line;
pub mod jsonrpc;
pub mod rebinding;
pub mod tool_schema;
