//! The audit trail (`EROS_AUDIT_*`): one JSON line per finished tool call
//! and per refused HTTP request (401 and 403), to a file or stderr.
//!
//! This module owns the line format, the file and its durability rule:
//!
//! - The file is opened append-only, created with mode 0600 when missing,
//!   and reopened by [`AuditLog::reopen`] (on SIGHUP, see [`crate::app`])
//!   so an external tool can rotate it: rename, signal, and the next line
//!   goes to a new file at the configured path.
//! - A write (the `execute` tool, a declared write tool) gets a `write`
//!   record, written and `sync_data`'d before it commits
//!   ([`ToolObserver::write_committing`], asked on the statement's thread).
//!   When that record cannot be made durable the write is rolled back and
//!   refused (`AUDIT_UNAVAILABLE`, retryable) unless the operator chose
//!   `EROS_AUDIT_FAIL_CLOSED=false`: no acknowledged write is missing from
//!   the log. Its `tool_call` line, with the outcome, follows like any
//!   other.
//! - Every other line is written at once (so a crash of the process loses
//!   nothing the kernel has) and synced at shutdown by [`AuditLog::sync`].
//! - Each record is one append under a lock. After a failed or partial
//!   append the next record starts with a newline, so a record torn by a
//!   full disk never joins the next one.
//! - A line that cannot be written is logged with `tracing` and counted
//!   ([`AuditLog::write_failures`]); only a write's record fails its call.
//!
//! No token material ever reaches a line: a refused authentication is
//! recorded by its reason only.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::identity::Principal;
use crate::mcp::{Caller, ToolCall, ToolObserver};
use crate::transport::operation::Operation;
use crate::transport::TransportObserver;

/// How a call's SQL appears in its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqlInAudit {
    /// As it was sent (`sql`).
    #[default]
    Text,
    /// Only its SHA-256 in hex (`sql_sha256`), for SQL that may carry
    /// values an auditor must not read.
    Hash,
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stderr,
    File(PathBuf),
}

/// What the audit log is built with (from [`crate::config::AuditConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub sink: AuditSink,
    pub sql: SqlInAudit,
    /// Whether parameter values are written, not only their number.
    pub param_values: bool,
    /// Whether a write whose record cannot be made durable is refused.
    pub fail_closed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The audit log: a [`ToolObserver`] and the two authentication hooks of
/// a [`TransportObserver`].
pub struct AuditLog {
    target: Target,
    sql: SqlInAudit,
    param_values: bool,
    fail_closed: bool,
    write_failures: AtomicU64,
    /// The last append failed, perhaps part way: the next record starts
    /// on a line of its own.
    torn: std::sync::atomic::AtomicBool,
}

enum Target {
    Stderr,
    File {
        path: PathBuf,
        /// Swapped by a reopen; an `Arc` so a sync can run outside the lock.
        file: Mutex<Arc<File>>,
    },
}

impl AuditLog {
    /// Opens the sink; a file that cannot be opened is an error naming it.
    pub fn open(settings: AuditSettings) -> Result<Self, AuditError> {
        let target = match settings.sink {
            AuditSink::Stderr => Target::Stderr,
            AuditSink::File(path) => {
                let file = open_append(&path)?;
                Target::File {
                    path,
                    file: Mutex::new(Arc::new(file)),
                }
            }
        };
        Ok(Self {
            target,
            sql: settings.sql,
            param_values: settings.param_values,
            fail_closed: settings.fail_closed,
            write_failures: AtomicU64::new(0),
            torn: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Opens the configured path again, so lines go to a new file after an
    /// external tool renamed the old one. On failure the old file stays in
    /// use. Nothing to do for stderr.
    pub fn reopen(&self) -> Result<(), AuditError> {
        let Target::File { path, file } = &self.target else {
            return Ok(());
        };
        let reopened = Arc::new(open_append(path)?);
        let previous = std::mem::replace(&mut *lock(file), reopened);
        // Lines already written are in the kernel; make them durable in
        // the renamed file too before it is handed to the rotation tool.
        if let Err(err) = previous.sync_data() {
            self.failed(&err);
        }
        Ok(())
    }

    /// Makes every line written so far durable (at shutdown).
    pub fn sync(&self) {
        let result = match &self.target {
            Target::Stderr => std::io::stderr().flush(),
            Target::File { file, .. } => {
                let file = Arc::clone(&lock(file));
                file.sync_data()
            }
        };
        if let Err(err) = result {
            self.failed(&err);
        }
    }

    /// Lines lost since startup.
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }

    /// Where the lines go, for logs.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Stderr => "stderr".to_string(),
            Target::File { path, .. } => path.display().to_string(),
        }
    }

    /// Writes `line` (newline-terminated) in one append; on disk before
    /// returning when `durable`. A failure is logged and counted, and
    /// returned for the caller that must act on it.
    fn append(&self, line: &[u8], durable: bool) -> std::io::Result<()> {
        let result = match &self.target {
            Target::Stderr => {
                let mut stderr = std::io::stderr().lock();
                self.append_to(&mut stderr, line)
            }
            Target::File { file, .. } => {
                // The lock keeps concurrent lines whole; the sync runs
                // outside it so one write's fsync does not hold up reads.
                let written = {
                    let file = lock(file);
                    self.append_to(&mut &**file, line)
                        .map(|()| Arc::clone(&file))
                };
                match written {
                    Ok(file) if durable => sync_data(&file),
                    other => other.map(drop),
                }
            }
        };
        if let Err(err) = &result {
            self.failed(err);
        }
        result
    }

    /// One record into `out`, on a line of its own even after a torn one.
    fn append_to(&self, out: &mut impl Write, line: &[u8]) -> std::io::Result<()> {
        let torn = self.torn.load(Ordering::Relaxed);
        let written = if torn {
            let mut record = Vec::with_capacity(line.len() + 1);
            record.push(b'\n');
            record.extend_from_slice(line);
            out.write_all(&record)
        } else {
            out.write_all(line)
        };
        self.torn.store(written.is_err(), Ordering::Relaxed);
        written
    }

    fn failed(&self, err: &std::io::Error) {
        let failures = self.write_failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            sink = %self.describe(),
            error = %err,
            failures,
            "cannot write the audit log; the line is lost"
        );
    }

    /// What a line says of the call's SQL and parameters.
    fn statement<'c>(&self, caller: &'c Caller) -> Statement<'c> {
        let sql = caller.sql.as_deref();
        let (sql_text, sql_sha256) = match self.sql {
            SqlInAudit::Text => (sql, None),
            SqlInAudit::Hash => (None, sql.map(|sql| hex::encode(Sha256::digest(sql)))),
        };
        Statement {
            sql: sql_text,
            sql_sha256,
            params: caller.params,
            param_values: if self.param_values {
                caller.param_values.as_ref()
            } else {
                None
            },
        }
    }

    /// The record of a write about to commit, newline-terminated.
    fn write_line(&self, tool: &str, caller: &Caller, now: SystemTime) -> Vec<u8> {
        line(&WriteLine {
            time: rfc3339_millis(now),
            event: "write",
            who: Who::of(&caller.principal),
            session: caller.session.as_deref(),
            tool,
            database: caller.database.as_deref(),
            statement: self.statement(caller),
        })
    }

    /// The line of one finished tool call, newline-terminated.
    fn tool_call_line(&self, call: &ToolCall<'_>, now: SystemTime) -> Vec<u8> {
        let caller = call.caller;
        line(&ToolCallLine {
            time: rfc3339_millis(now),
            event: "tool_call",
            who: Who::of(&caller.principal),
            session: caller.session.as_deref(),
            tool: call.tool,
            database: caller.database.as_deref(),
            statement: self.statement(caller),
            outcome: call.outcome.as_str(),
            trace_id: caller.trace_id.as_deref(),
            quota: call.quota,
            rows: call.rows,
            bytes: call.bytes,
            // Microseconds are enough: the rest is noise of the clock.
            duration_ms: (call.duration.as_secs_f64() * 1e6).round() / 1e3,
        })
    }
}

/// `file.sync_data()`, called on the MCP server's thread before a write's
/// result is returned. An fsync can take milliseconds: on a multi-threaded
/// runtime the worker's other tasks move to other threads meanwhile (a
/// current-thread runtime, stdio's, has no other thread to move them to).
fn sync_data(file: &File) -> std::io::Result<()> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| file.sync_data())
        }
        _ => file.sync_data(),
    }
}

/// A poisoned lock only means a thread panicked while holding it; the
/// file handle inside is still good.
fn lock(file: &Mutex<Arc<File>>) -> std::sync::MutexGuard<'_, Arc<File>> {
    file.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens `path` for appending, creating it readable by its owner only:
/// the lines name principals and may carry SQL. A symbolic link at the path
/// is refused (`O_NOFOLLOW`): the lines would go wherever it points, under
/// that file's permissions.
fn open_append(path: &Path) -> Result<File, AuditError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_path_buf(),
            source: if source.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(
                    "it is a symbolic link; name the log file itself (EROS_AUDIT_LOG)",
                )
            } else {
                source
            },
        })
}

/// A line's JSON followed by a newline. JSON allows U+2028, U+2029 and
/// U+0085 raw inside strings, but readers that split lines on Unicode line
/// breaks would cut the record there: they are written escaped.
fn line(record: &impl Serialize) -> Vec<u8> {
    // A struct of strings and numbers always serializes.
    let json = serde_json::to_vec(record).expect("an audit line serializes");
    let mut line = Vec::with_capacity(json.len() + 1);
    let mut rest = &json[..];
    // Each is two or three UTF-8 bytes starting 0xC2 (U+0085) or 0xE2
    // (U+2028, U+2029); anything else is copied as it is.
    while let Some(at) = memchr::memchr2(0xC2, 0xE2, rest) {
        line.extend_from_slice(&rest[..at]);
        let tail = &rest[at..];
        let (escape, taken): (&[u8], usize) = match tail {
            [0xC2, 0x85, ..] => (b"\\u0085", 2),
            [0xE2, 0x80, 0xA8, ..] => (b"\\u2028", 3),
            [0xE2, 0x80, 0xA9, ..] => (b"\\u2029", 3),
            _ => (&tail[..1], 1),
        };
        line.extend_from_slice(escape);
        rest = &tail[taken..];
    }
    line.extend_from_slice(rest);
    line.push(b'\n');
    line
}

/// The principal's fields of a line.
#[derive(Serialize)]
struct Who<'a> {
    principal: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
}

impl<'a> Who<'a> {
    fn of(principal: &'a Principal) -> Self {
        Self {
            principal: &principal.name,
            sub: principal.subject.as_deref(),
            client_id: principal.client_id.as_deref(),
        }
    }
}

/// `event: "tool_call"`, fields in the order a reader scans them.
#[derive(Serialize)]
struct ToolCallLine<'a> {
    time: String,
    event: &'static str,
    #[serde(flatten)]
    who: Who<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    tool: &'a str,
    /// The database the call named (a declared tool's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'a str>,
    #[serde(flatten)]
    statement: Statement<'a>,
    outcome: &'static str,
    /// The call's OpenTelemetry trace id, when traces are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    /// The quota that refused the call (outcome `quota`).
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<&'static str>,
    rows: u64,
    bytes: u64,
    duration_ms: f64,
}

/// The SQL and parameters of a line.
#[derive(Serialize)]
struct Statement<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    sql: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sql_sha256: Option<String>,
    params: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    param_values: Option<&'a serde_json::Value>,
}

/// `event: "write"`: a write about to commit.
#[derive(Serialize)]
struct WriteLine<'a> {
    time: String,
    event: &'static str,
    #[serde(flatten)]
    who: Who<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    tool: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'a str>,
    #[serde(flatten)]
    statement: Statement<'a>,
}

/// `event: "authentication_failed"`: the reason only, never the token.
#[derive(Serialize)]
struct AuthenticationFailedLine {
    time: String,
    event: &'static str,
    reason: &'static str,
}

/// `event: "scope_refused"`.
#[derive(Serialize)]
struct ScopeRefusedLine<'a> {
    time: String,
    event: &'static str,
    #[serde(flatten)]
    who: Who<'a>,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    scope: &'a str,
}

impl ToolObserver for AuditLog {
    fn wants_param_values(&self) -> bool {
        self.param_values
    }

    fn tool_called(&self, call: &ToolCall<'_>) {
        let line = self.tool_call_line(call, SystemTime::now());
        // A write's durable record is its `write` line, before it
        // committed; the outcome goes out like every other line.
        let _ = self.append(&line, false);
    }

    fn unknown_tool_called(&self, name: &str, caller: &Caller) {
        let line = self.tool_call_line(
            &ToolCall {
                tool: name,
                caller,
                outcome: crate::engine::Outcome::Invalid,
                duration: std::time::Duration::ZERO,
                rows: 0,
                bytes: 0,
                truncated: false,
                quota: None,
            },
            SystemTime::now(),
        );
        let _ = self.append(&line, false);
    }

    fn write_committing(&self, tool: &str, caller: &Caller) -> Result<(), String> {
        let line = self.write_line(tool, caller, SystemTime::now());
        match self.append(&line, true) {
            Ok(()) => Ok(()),
            Err(err) if self.fail_closed => Err(format!(
                "the audit log {} cannot record it ({err})",
                self.describe()
            )),
            // Counted and logged by `append`; the operator chose writes
            // over their records.
            Err(_) => Ok(()),
        }
    }
}

impl TransportObserver for AuditLog {
    fn authentication_failed(&self, reason: &'static str) {
        let line = line(&AuthenticationFailedLine {
            time: rfc3339_millis(SystemTime::now()),
            event: "authentication_failed",
            reason,
        });
        let _ = self.append(&line, false);
    }

    fn scope_refused(&self, principal: &Principal, operation: &Operation, scope: &str) {
        let line = line(&ScopeRefusedLine {
            time: rfc3339_millis(SystemTime::now()),
            event: "scope_refused",
            who: Who::of(principal),
            method: &operation.method,
            tool: operation.tool.as_deref(),
            scope,
        });
        let _ = self.append(&line, false);
    }
}

/// `time` as RFC 3339 in UTC with milliseconds (`2026-03-01T12:34:56.789Z`).
fn rfc3339_millis(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;
    use crate::engine::Outcome;
    use crate::identity::{Proof, Scopes};
    use crate::mcp::Caller;

    fn settings(path: &Path, sql: SqlInAudit, param_values: bool) -> AuditSettings {
        AuditSettings {
            sink: AuditSink::File(path.to_path_buf()),
            sql,
            param_values,
            fail_closed: true,
        }
    }

    /// A sink that takes `room` bytes and then fails like a full disk.
    struct FillingUp {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for FillingUp {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn after_a_torn_record_the_next_one_starts_on_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            AuditLog::open(settings(&dir.path().join("a.log"), SqlInAudit::Text, false)).unwrap();
        let mut disk = FillingUp {
            taken: Vec::new(),
            room: 10,
        };
        assert!(log
            .append_to(&mut disk, b"{\"first\":\"record\"}\n")
            .is_err());
        disk.room = 1000;
        log.append_to(&mut disk, b"{\"second\":1}\n").unwrap();
        log.append_to(&mut disk, b"{\"third\":1}\n").unwrap();
        let text = String::from_utf8(disk.taken).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, ["{\"first\":\"", "{\"second\":1}", "{\"third\":1}"]);
        assert!(serde_json::from_str::<Value>(lines[1]).is_ok());
    }

    #[test]
    fn a_write_whose_record_cannot_be_synced_is_refused_only_when_failing_closed() {
        let full = |fail_closed| {
            AuditLog::open(AuditSettings {
                sink: AuditSink::File(PathBuf::from("/dev/full")),
                sql: SqlInAudit::Text,
                param_values: false,
                fail_closed,
            })
            .unwrap()
        };
        let caller = Caller::new(oauth_principal());
        let refused = full(true).write_committing("execute", &caller).unwrap_err();
        assert!(refused.contains("/dev/full"), "{refused}");
        let open = full(false);
        assert_eq!(open.write_committing("execute", &caller), Ok(()));
        assert_eq!(open.write_failures(), 1);
    }

    fn oauth_principal() -> Arc<Principal> {
        Arc::new(Principal {
            name: "etl-job".into(),
            subject: Some("user-42".into()),
            client_id: Some("etl-client".into()),
            scopes: Scopes::of([crate::identity::READ]),
            proof: Proof::OAuth,
        })
    }

    fn caller() -> Caller {
        Caller {
            session: Some("session-1".into()),
            sql: Some("SELECT * FROM creators WHERE id = ?".into()),
            params: 1,
            param_values: Some(json!([7])),
            database: Some("main".into()),
            ..Caller::new(oauth_principal())
        }
    }

    fn call<'a>(caller: &'a Caller) -> ToolCall<'a> {
        ToolCall {
            tool: "query",
            caller,
            outcome: Outcome::Ok,
            duration: Duration::from_micros(1234),
            rows: 1,
            bytes: 52,
            truncated: false,
            quota: None,
        }
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn a_tool_call_is_one_json_line_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(settings(&path, SqlInAudit::Text, false)).unwrap();
        let caller = caller();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let line = log.tool_call_line(&call(&caller), at);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let parsed: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            parsed,
            json!({
                "time": "2023-11-14T22:13:20.123Z",
                "event": "tool_call",
                "principal": "etl-job",
                "sub": "user-42",
                "client_id": "etl-client",
                "session": "session-1",
                "tool": "query",
                "database": "main",
                "sql": "SELECT * FROM creators WHERE id = ?",
                "params": 1,
                "outcome": "ok",
                "rows": 1,
                "bytes": 52,
                "duration_ms": 1.234,
            })
        );
        // The order a reader scans: time and event first.
        let text = String::from_utf8(line).unwrap();
        assert!(text.starts_with(r#"{"time":"#), "{text}");
    }

    #[test]
    fn absent_identity_fields_and_session_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(settings(&path, SqlInAudit::Text, false)).unwrap();
        let caller = Caller::new(Principal::local());
        let parsed: Value =
            serde_json::from_slice(&log.tool_call_line(&call(&caller), SystemTime::now())).unwrap();
        for absent in ["sub", "client_id", "session", "sql", "param_values"] {
            assert!(parsed.get(absent).is_none(), "{absent}: {parsed}");
        }
        assert_eq!(parsed["principal"], Principal::local().name.as_str());
    }

    #[test]
    fn hash_mode_writes_only_the_sql_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(settings(&path, SqlInAudit::Hash, false)).unwrap();
        let caller = caller();
        log.tool_called(&call(&caller));
        let [line] = &lines(&path)[..] else {
            panic!("one line expected");
        };
        assert!(line.get("sql").is_none(), "{line}");
        let expected = hex::encode(Sha256::digest("SELECT * FROM creators WHERE id = ?"));
        assert_eq!(line["sql_sha256"], expected.as_str());
        assert_eq!(expected.len(), 64);
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(!raw.contains("creators"), "{raw}");
    }

    #[test]
    fn parameter_values_are_written_only_when_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let caller = caller();
        let off = dir.path().join("off.log");
        let log = AuditLog::open(settings(&off, SqlInAudit::Text, false)).unwrap();
        assert!(!log.wants_param_values());
        log.tool_called(&call(&caller));
        assert!(lines(&off)[0].get("param_values").is_none());
        assert_eq!(lines(&off)[0]["params"], 1);

        let on = dir.path().join("on.log");
        let log = AuditLog::open(settings(&on, SqlInAudit::Text, true)).unwrap();
        assert!(log.wants_param_values());
        log.tool_called(&call(&caller));
        assert_eq!(lines(&on)[0]["param_values"], json!([7]));
    }

    #[test]
    fn unicode_line_breaks_are_escaped_and_read_back_the_same() {
        let text = "a\u{2028}b\u{2029}c\u{85}d é 中";
        let written = line(&json!({ "sql": text }));
        for raw in ["\u{2028}", "\u{2029}", "\u{85}"] {
            assert!(
                !String::from_utf8_lossy(&written).contains(raw),
                "{raw:?} written raw"
            );
        }
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 1);
        let parsed: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(parsed["sql"], text);
    }

    #[test]
    fn a_symbolic_link_at_the_audit_path_is_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.log");
        std::fs::write(&target, b"").unwrap();
        let link = dir.path().join("audit.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_append(&link).unwrap_err().to_string();
        assert!(
            err.contains("audit.log") && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"",
            "nothing went through the link"
        );
    }

    #[test]
    fn the_file_is_created_owner_only_and_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let created = dir.path().join("new.log");
        let log = AuditLog::open(settings(&created, SqlInAudit::Text, false)).unwrap();
        let mode = std::fs::metadata(&created).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(log);

        let log = AuditLog::open(settings(&path, SqlInAudit::Text, false)).unwrap();
        let caller = caller();
        log.tool_called(&call(&caller));
        let lines = lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], json!({"earlier": true}));
        assert_eq!(lines[1]["event"], "tool_call");
    }

    #[test]
    fn a_log_that_cannot_be_opened_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("audit.log");
        let Err(err) = AuditLog::open(settings(&path, SqlInAudit::Text, false)) else {
            panic!("opened a file in a missing directory");
        };
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.starts_with("cannot open the audit log"),
            "{message}"
        );
    }

    #[test]
    fn after_a_rename_a_reopen_writes_to_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let log = AuditLog::open(settings(&path, SqlInAudit::Text, false)).unwrap();
        let caller = caller();
        log.tool_called(&call(&caller));
        std::fs::rename(&path, &rotated).unwrap();
        // Until the reopen, lines follow the open file to its new name.
        log.tool_called(&call(&caller));
        assert!(!path.exists());
        log.reopen().unwrap();
        log.tool_called(&call(&caller));
        assert_eq!(lines(&rotated).len(), 2);
        assert_eq!(lines(&path).len(), 1);
        assert_eq!(log.write_failures(), 0);
    }

    #[test]
    fn a_failed_reopen_keeps_the_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let path = logs.join("audit.log");
        let moved = dir.path().join("moved");
        let log = AuditLog::open(settings(&path, SqlInAudit::Text, false)).unwrap();
        std::fs::rename(&logs, &moved).unwrap();
        assert!(log.reopen().is_err());
        let caller = caller();
        log.tool_called(&call(&caller));
        assert_eq!(lines(&moved.join("audit.log")).len(), 1);
    }

    #[test]
    fn a_refused_authentication_and_a_scope_refusal_have_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(settings(&path, SqlInAudit::Text, false)).unwrap();
        log.authentication_failed("unknown_token");
        let operation = Operation {
            method: "tools/call".into(),
            tool: Some("execute".into()),
        };
        log.scope_refused(&oauth_principal(), &operation, crate::identity::WRITE);
        let lines = lines(&path);
        assert_eq!(lines[0]["event"], "authentication_failed");
        assert_eq!(lines[0]["reason"], "unknown_token");
        assert_eq!(lines[0].as_object().unwrap().len(), 3, "{}", lines[0]);
        let mut refused = lines[1].clone();
        assert!(refused["time"].as_str().unwrap().ends_with('Z'));
        refused.as_object_mut().unwrap().remove("time");
        assert_eq!(
            refused,
            json!({
                "event": "scope_refused",
                "principal": "etl-job",
                "sub": "user-42",
                "client_id": "etl-client",
                "method": "tools/call",
                "tool": "execute",
                "scope": "eros:write",
            })
        );
    }

    #[test]
    fn a_write_that_fails_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(settings(&path, SqlInAudit::Text, false)).unwrap();
        // /dev/full fails every write with ENOSPC.
        if let Target::File { file, .. } = &log.target {
            let full = std::fs::OpenOptions::new()
                .append(true)
                .open("/dev/full")
                .unwrap();
            *lock(file) = Arc::new(full);
        }
        let caller = caller();
        log.tool_called(&call(&caller));
        log.authentication_failed("missing_token");
        assert_eq!(log.write_failures(), 2);
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        let at =
            |millis: u64| rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(millis));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(at(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(4_102_444_800_007), "2100-01-01T00:00:00.007Z");
    }
}
