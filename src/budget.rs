//! The memory budget: the most resident memory the server should reach
//! under its settings, whatever calls it gets, as a formula an operator
//! can size a container by (docs/operations.md, "Memory budget").
//!
//! Each term is bounded by a mechanism, not by what calls happen to do:
//! SQLite's allocations (page caches, statements, sorts, temporary tables)
//! in every worker process together by its hard heap ceiling (shared, see
//! `pool::heap`); a call's result by `EROS_DB_MAX_BYTES` and the number of
//! calls by `EROS_MCP_MAX_IN_FLIGHT`; what requests in flight were sent
//! (`_meta` and unused fields included) by the stdio byte budget or the
//! HTTP body limit; HTTP state by the session and connection caps. The
//! budget is for the server and its workers together (a container's
//! memory), counted as proportional set size. `tests/statements/hostile_load.rs` and
//! `tests/protocol/client_limits.rs` hold the server to it.

use crate::config::{Config, Transport};

use crate::config::setting::MIB;

/// The process before any call: code, the runtimes, thread stacks in use,
/// the allocator's own slack (measured idle at 14 to 22 MiB).
pub const BASE_BYTES: u64 = 48 * MIB;

/// Per database connection, outside SQLite's heap: its worker process
/// (measured idle at 2.4 MiB proportional set size), the pool's
/// bookkeeping and allocator fragmentation.
pub const PER_CONNECTION_BYTES: u64 = 4 * MIB;

/// How many times its bytes a request in flight may hold: its text as read
/// and its parsed form.
pub const REQUEST_COPIES: u64 = 2;

/// How many times its `EROS_DB_MAX_BYTES` one call may hold at its peak:
/// the rows, their encoding (CSV or JSON), the JSON-RPC message and the
/// transport's copy of it.
pub const RESULT_COPIES: u64 = 6;

/// Per open HTTP session (measured at about 45 KiB).
pub const PER_SESSION_BYTES: u64 = 64 * 1024;

/// Per open HTTP connection: hyper's read and write buffers.
pub const PER_HTTP_CONNECTION_BYTES: u64 = 32 * 1024;

/// The budget, term by term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    pub base: u64,
    pub sqlite_heap: u64,
    pub connections: u64,
    pub results: u64,
    pub requests: u64,
    pub http: u64,
}

impl MemoryBudget {
    pub fn of(config: &Config) -> Self {
        let db = &config.database;
        let mcp = &config.mcp;
        let http = match mcp.transport {
            Transport::Stdio => 0,
            Transport::Http => {
                mcp.max_sessions as u64 * PER_SESSION_BYTES
                    + mcp.max_connections as u64 * PER_HTTP_CONNECTION_BYTES
            }
        };
        let requests = match mcp.transport {
            // The budget of requests in flight, plus the one read and
            // waiting for room, plus the reader's line buffer.
            Transport::Stdio => {
                REQUEST_COPIES * crate::transport::stdio::REQUEST_BYTES_IN_FLIGHT as u64
                    + 2 * crate::transport::lines::MAX_LINE_BYTES as u64
            }
            Transport::Http => {
                REQUEST_COPIES * mcp.max_in_flight as u64 * mcp.max_body_bytes as u64
            }
        };
        Self {
            base: BASE_BYTES,
            sqlite_heap: db.hard_heap_limit_bytes,
            connections: u64::from(db.max_connections()) * PER_CONNECTION_BYTES,
            results: mcp.max_in_flight as u64 * RESULT_COPIES * db.max_bytes,
            requests,
            http,
        }
    }

    /// The peak resident memory the server stays under, in bytes.
    pub fn total(&self) -> u64 {
        self.base + self.sqlite_heap + self.connections + self.results + self.requests + self.http
    }
}

impl std::fmt::Display for MemoryBudget {
    /// `check` prints this: the total first (a line scripts can parse),
    /// then the terms.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: u64| bytes as f64 / MIB as f64;
        writeln!(f, "memory_budget_bytes = {}", self.total())?;
        write!(
            f,
            "memory_budget = {:.0} MiB: base {:.0} + SQLite heap ceiling {:.0} + connections \
             (workers) {:.0} + results in flight {:.0} + requests in flight {:.0} + HTTP \
             sessions and connections {:.0}",
            mib(self.total()),
            mib(self.base),
            mib(self.sqlite_heap),
            mib(self.connections),
            mib(self.results),
            mib(self.requests),
            mib(self.http),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_stdio_budget_adds_up_its_terms() {
        let budget = MemoryBudget::of(&Config::default());
        assert_eq!(budget.sqlite_heap, 128 * MIB);
        assert_eq!(budget.connections, 15 * PER_CONNECTION_BYTES);
        assert_eq!(budget.results, 32 * RESULT_COPIES * MIB);
        assert_eq!(budget.requests, REQUEST_COPIES * 32 * MIB + 32 * MIB);
        assert_eq!(budget.http, 0);
        assert_eq!(
            budget.total(),
            BASE_BYTES
                + 128 * MIB
                + 15 * PER_CONNECTION_BYTES
                + 32 * RESULT_COPIES * MIB
                + budget.requests
        );
    }

    #[test]
    fn http_adds_sessions_and_connections() {
        let mut config = Config::default();
        config.mcp.transport = Transport::Http;
        let budget = MemoryBudget::of(&config);
        assert_eq!(
            budget.http,
            256 * PER_SESSION_BYTES + 512 * PER_HTTP_CONNECTION_BYTES
        );
    }

    #[test]
    fn the_printed_budget_starts_with_a_parseable_total() {
        let budget = MemoryBudget::of(&Config::default());
        let first = budget.to_string().lines().next().unwrap().to_string();
        assert_eq!(first, format!("memory_budget_bytes = {}", budget.total()));
    }
}
