//! What SQL a connection may run, enforced by SQLite's authorizer at prepare
//! time and by `PRAGMA query_only` at run time — never by matching keywords.
//!
//! Every pooled connection rests in [`Access::ReadOnly`]. The write tool
//! switches to [`Access::ReadWrite`] for one statement; the server's own
//! statements (transactions, checkpoints, `query_only` itself) run under
//! [`Access::Trusted`]. The level lives in an atomic the authorizer reads, so
//! switching costs no re-registration.
//!
//! Replication's tables ([`crate::replication::HIDDEN_TABLES`]: Litestream's
//! bookkeeping and the primary's heartbeat) are readable but never
//! writable, alterable, indexable or droppable by agent SQL, whatever the
//! level below [`Access::Trusted`]: the server's heartbeat writes its table
//! under `Trusted`, like every statement of the server's own.
//!
//! A principal's [`Restrictions`] (the policy file, [`crate::policy`]) are
//! set beside the level for the length of one call of agent SQL
//! ([`crate::pool::ManagedConnection::with_restrictions`]) and judged below
//! `Trusted`: a read of a denied table is refused, a read of a nulled
//! column is `SQLITE_IGNORE` (SQLite substitutes NULL), and the schema
//! table's `sql` column reads as NULL so no denied table's DDL leaks.
//! They are consulted while the statement runs as well as while it is
//! prepared, because table-valued pragmas prepare their PRAGMA then.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

use crate::policy::Restrictions;

/// The table a replicated primary writes its heartbeat to: one row,
/// `(id = 1, written_at)` in Unix seconds (fractions allowed), so a replica
/// can tell "nothing was written" from "my follower is dead" (see
/// [`crate::replication::heartbeat`]).
pub const HEARTBEAT_TABLE: &str = "_eros_heartbeat";

/// Tables that belong to replication, not to the served schema: Litestream's
/// own and the heartbeat. They are kept out of every schema view, and agents
/// may not write them.
pub const HIDDEN_TABLES: &[&str] = &["_litestream_seq", "_litestream_lock", HEARTBEAT_TABLE];

/// What the SQL being prepared may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Access {
    /// Untrusted SQL that may only read.
    ReadOnly = 0,
    /// Untrusted SQL that may change data and schema, but not the
    /// connection (no PRAGMA writes, ATTACH, transactions or TEMP objects).
    ReadWrite = 1,
    /// The server's own statements.
    Trusted = 2,
}

impl Access {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Access::ReadWrite,
            2 => Access::Trusted,
            _ => Access::ReadOnly,
        }
    }
}

/// The access level of one connection, shared with its authorizer, and
/// why its authorizer last refused, when the reason is more than SQLite's
/// own "not authorized" (a replication table, a policy).
#[derive(Debug, Clone)]
pub struct AccessLevel {
    level: Arc<AtomicU8>,
    refusal: Arc<Mutex<Option<String>>>,
    /// What the caller of the running call may not read; empty at rest.
    restrictions: Arc<Mutex<Arc<Restrictions>>>,
}

impl AccessLevel {
    pub fn get(&self) -> Access {
        Access::from_u8(self.level.load(Ordering::Acquire))
    }

    pub fn set(&self, access: Access) {
        self.level.store(access as u8, Ordering::Release);
    }

    /// What the authorizer withholds from untrusted SQL now.
    pub fn restrictions(&self) -> Arc<Restrictions> {
        Arc::clone(&self.restrictions.lock().unwrap())
    }

    /// Sets what the authorizer withholds; [`Restrictions::none`] at rest.
    pub fn set_restrictions(&self, restrictions: Arc<Restrictions>) {
        *self.restrictions.lock().unwrap() = restrictions;
    }

    /// Why the authorizer refused since the last call, if it said.
    pub fn take_refusal(&self) -> Option<String> {
        self.refusal.lock().unwrap().take()
    }
}

/// The error for a statement the authorizer refused for `reason`:
/// SQLite's `SQLITE_AUTH`, with the reason in words.
pub fn refusal_error(reason: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_AUTH),
        Some(reason),
    )
}

/// Why `ctx` was refused, in words, when it is more than "not
/// authorized": it would change a replication table, or the caller's
/// restrictions keep it from changing the schema or a table.
fn refusal_reason(restrictions: &Restrictions, ctx: &AuthContext<'_>) -> Option<String> {
    if let Some(table) = changed_hidden_table(ctx) {
        return Some(format!(
            "not authorized: {table} belongs to replication (Litestream's bookkeeping or the \
             primary's heartbeat); it may be read but not written, altered, indexed or dropped"
        ));
    }
    if restrictions.is_empty() {
        return None;
    }
    let table = changed_table(ctx)?;
    if restrictions.denies_table(table) {
        None
    } else if changes_schema(ctx) {
        Some(format!(
            "not authorized: a principal under a column or table policy changes no schema \
             ({table}): a trigger, view, index or key it defined would run in other \
             principals' statements or reach values it may not read. Ask for every scope of \
             the policy"
        ))
    } else if restrictions.keeps_read_only(table) {
        Some(format!(
            "not authorized: {table} may be read but not written by this principal: it holds \
             a column the policy hides from it, or a foreign key to one or to a denied table, \
             and a constraint error would tell a hidden value"
        ))
    } else {
        None
    }
}

/// Whether `ctx` creates, changes or drops a schema object (or its
/// statistics).
fn changes_schema(ctx: &AuthContext<'_>) -> bool {
    use AuthAction::*;
    matches!(
        ctx.action,
        CreateTable { .. }
            | CreateIndex { .. }
            | CreateView { .. }
            | CreateTrigger { .. }
            | CreateVtable { .. }
            | DropTable { .. }
            | DropIndex { .. }
            | DropView { .. }
            | DropTrigger { .. }
            | DropVtable { .. }
            | AlterTable { .. }
            | Reindex { .. }
            | Analyze { .. }
    )
}

/// Installs the authorizer and puts the connection at rest: read-only, with
/// `query_only` on. Call after every other setup statement.
pub fn install(conn: &Connection) -> rusqlite::Result<AccessLevel> {
    let level = AccessLevel {
        level: Arc::new(AtomicU8::new(Access::Trusted as u8)),
        refusal: Arc::new(Mutex::new(None)),
        restrictions: Arc::new(Mutex::new(Restrictions::none())),
    };
    let seen = level.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let access = seen.get();
        if access == Access::Trusted {
            return Authorization::Allow;
        }
        let restrictions = seen.restrictions();
        let verdict = match restricted(access, &restrictions, &ctx) {
            Some(verdict) => verdict,
            None => authorize(access, &ctx),
        };
        if verdict == Authorization::Deny {
            if let Some(reason) = refusal_reason(&restrictions, &ctx) {
                *seen.refusal.lock().unwrap() = Some(reason);
            }
        }
        verdict
    }))?;
    conn.pragma_update(None, "query_only", true)?;
    level.set(Access::ReadOnly);
    Ok(level)
}

/// SQLite's `SQLITE_CoverIdxScan` optimization bit (sqliteInt.h): a full
/// scan through a covering index instead of the table.
const COVERING_INDEX_SCAN: std::ffi::c_int = 0x0000_0020;

/// Turns covering-index full scans off (`false`) or back on. Under a nulled
/// column they would betray its values' order: a scan through an index on
/// the column returns rows sorted by the value the caller reads as NULL.
pub fn set_covering_index_scans(conn: &Connection, on: bool) {
    let disabled = if on { 0 } else { COVERING_INDEX_SCAN };
    // SAFETY: the handle is this open connection's; the test control only
    // sets the connection's optimizer mask, read when statements are
    // prepared, and is given exactly the arguments it takes.
    unsafe {
        rusqlite::ffi::sqlite3_test_control(
            rusqlite::ffi::SQLITE_TESTCTRL_OPTIMIZATIONS,
            conn.handle(),
            disabled,
        );
    }
}

/// Functions no agent may call: they reach outside the database or hand
/// SQLite raw pointers.
const DENIED_FUNCTIONS: &[&str] = &[
    "load_extension",
    "fts3_tokenizer",
    "readfile",
    "writefile",
    "edit",
    "sqlite_dbpage",
];

/// PRAGMAs that only report, allowed without a value.
const REPORTING_PRAGMAS: &[&str] = &[
    "application_id",
    "collation_list",
    "compile_options",
    "data_version",
    "encoding",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "journal_mode",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "query_only",
    "schema_version",
    "user_version",
];

/// PRAGMAs whose argument names a schema object (or a count), not a new
/// value: they read the schema whatever the argument.
const SCHEMA_PRAGMAS: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// Virtual table modules an agent with write access may create.
const ALLOWED_MODULES: &[&str] = &["fts5", "rtree"];

fn is_schema_table(name: &str) -> bool {
    name.eq_ignore_ascii_case("sqlite_master") || name.eq_ignore_ascii_case("sqlite_schema")
}

/// The schema tables of `main` and `temp` under either of their names.
fn is_any_schema_table(name: &str) -> bool {
    is_schema_table(name)
        || name.eq_ignore_ascii_case("sqlite_temp_master")
        || name.eq_ignore_ascii_case("sqlite_temp_schema")
}

/// The table `ctx` would create, change or drop, or index or trigger on
/// (a view's name for views); `None` for reads and everything else.
fn changed_table<'c>(ctx: &AuthContext<'c>) -> Option<&'c str> {
    use AuthAction::*;
    match ctx.action {
        Insert { table_name }
        | Delete { table_name }
        | Update { table_name, .. }
        | CreateTable { table_name }
        | DropTable { table_name }
        | AlterTable { table_name, .. }
        | CreateIndex { table_name, .. }
        | DropIndex { table_name, .. }
        | CreateTrigger { table_name, .. }
        | DropTrigger { table_name, .. }
        | CreateVtable { table_name, .. }
        | DropVtable { table_name, .. } => Some(table_name),
        CreateView { view_name } | DropView { view_name } => Some(view_name),
        _ => None,
    }
}

/// The verdict of `restrictions` on `ctx`, below [`Access::Trusted`];
/// `None` when they have nothing to say (the level's policy decides).
///
/// A read of a nulled column is ignored (NULL) in a read, but refused in
/// a write: a write computed from a value it reads as NULL would store
/// the NULL over data its caller may not see.
pub fn restricted(
    access: Access,
    restrictions: &Restrictions,
    ctx: &AuthContext<'_>,
) -> Option<Authorization> {
    use AuthAction::*;
    if restrictions.is_empty() {
        return None;
    }
    match ctx.action {
        Read {
            table_name,
            column_name,
        } => {
            if restrictions.denies_table(table_name) || is_statistics_table(table_name) {
                Some(Authorization::Deny)
            } else if restrictions.nulls_column(table_name, column_name) {
                Some(if access == Access::ReadOnly {
                    Authorization::Ignore
                } else {
                    Authorization::Deny
                })
            } else if is_any_schema_table(table_name) && column_name.eq_ignore_ascii_case("sql") {
                // The DDL of a denied table (and any CHECK naming a value)
                // stays out of reach; names and types remain readable.
                Some(Authorization::Ignore)
            } else {
                None
            }
        }
        // PRAGMA table_info(t) and friends name the table as the value;
        // table-valued pragma_table_info('t') prepares this same PRAGMA
        // when it runs.
        Pragma {
            pragma_value: Some(value),
            ..
        } if restrictions.denies_table(value.trim()) => Some(Authorization::Deny),
        // Schema changes: a trigger or view would run in a more privileged
        // principal's statements, a foreign key or generated column would
        // reach hidden values, and none of them is in the policy checked
        // at startup.
        _ if changes_schema(ctx) => Some(Authorization::Deny),
        Insert { table_name } | Delete { table_name } | Update { table_name, .. }
            if restrictions.denies_table(table_name)
                || restrictions.keeps_read_only(table_name) =>
        {
            Some(Authorization::Deny)
        }
        _ => match changed_table(ctx) {
            Some(table) if restrictions.denies_table(table) => Some(Authorization::Deny),
            _ => None,
        },
    }
}

/// Tables that describe other tables' contents: `ANALYZE`'s statistics
/// (`sqlite_stat4` keeps sampled index keys in clear, `sqlite_stat1` row
/// counts) and the virtual tables that read the file's pages (`dbstat`
/// counts a table's cells, `sqlite_dbpage` is the raw pages). Under any
/// restriction they would show what the restriction withholds: no
/// restricted caller reads them.
fn is_statistics_table(table: &str) -> bool {
    [
        "sqlite_stat1",
        "sqlite_stat2",
        "sqlite_stat3",
        "sqlite_stat4",
        "dbstat",
        "sqlite_dbpage",
    ]
    .iter()
    .any(|name| table.eq_ignore_ascii_case(name))
}

/// The replication table (one of [`crate::replication::HIDDEN_TABLES`],
/// in any ASCII case) `ctx` would create, change or drop, or index or
/// trigger on; `None` for reads and for every other table.
pub fn changed_hidden_table(ctx: &AuthContext<'_>) -> Option<&'static str> {
    let table = changed_table(ctx)?;
    HIDDEN_TABLES
        .iter()
        .copied()
        .find(|hidden| table.eq_ignore_ascii_case(hidden))
}

/// The policy: what each access level allows.
pub fn authorize(access: Access, ctx: &AuthContext<'_>) -> Authorization {
    use AuthAction::*;
    use Authorization::{Allow, Deny, Ignore};
    if access == Access::Trusted {
        return Allow;
    }
    if changed_hidden_table(ctx).is_some() {
        return Deny;
    }
    let may_write = access == Access::ReadWrite;
    if ctx
        .database_name
        .is_some_and(|db| db.eq_ignore_ascii_case("temp"))
        && !matches!(ctx.action, Read { .. } | Select)
    {
        // TEMP objects outlive the call on a pooled connection.
        return Deny;
    }
    match ctx.action {
        Select | Recursive | Read { .. } => Allow,
        Function { function_name } => {
            if DENIED_FUNCTIONS
                .iter()
                .any(|f| function_name.eq_ignore_ascii_case(f))
            {
                Deny
            } else {
                Allow
            }
        }
        Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            if SCHEMA_PRAGMAS.contains(&name.as_str())
                || (pragma_value.is_none() && REPORTING_PRAGMAS.contains(&name.as_str()))
            {
                Allow
            } else {
                Deny
            }
        }
        // Table-valued pragma functions (pragma_table_info(...)) report
        // UPDATE on the schema table while they are prepared; nothing is
        // written (query_only and defensive mode stand behind this).
        Update { table_name, .. } if !may_write && is_schema_table(table_name) => Ignore,
        // DDL reports its own writes to the schema table; direct writes to
        // it are refused by defensive mode.
        Insert { .. } | Delete { .. } | Update { .. } => {
            if may_write {
                Allow
            } else {
                Deny
            }
        }
        CreateTable { .. }
        | CreateIndex { .. }
        | CreateView { .. }
        | CreateTrigger { .. }
        | DropTable { .. }
        | DropIndex { .. }
        | DropView { .. }
        | DropTrigger { .. }
        | AlterTable { .. }
        | Reindex { .. }
        | Analyze { .. } => {
            if may_write {
                Allow
            } else {
                Deny
            }
        }
        CreateVtable { module_name, .. } | DropVtable { module_name, .. } => {
            if may_write
                && ALLOWED_MODULES
                    .iter()
                    .any(|m| module_name.eq_ignore_ascii_case(m))
            {
                Allow
            } else {
                Deny
            }
        }
        // Transactions are the server's: it wraps writes itself.
        Transaction { .. } | Savepoint { .. } => Deny,
        Attach { .. } | Detach { .. } => Deny,
        _ => Deny,
    }
}

#[cfg(test)]
mod restriction_tests {
    use super::*;

    /// A connection with `creators (id, email)` holding a marker, a
    /// denied `payouts`, and a view over each, under the restrictions.
    fn restricted_conn() -> (Connection, AccessLevel) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE creators (id INTEGER PRIMARY KEY, email TEXT);
             INSERT INTO creators VALUES (1, 'marker@x');
             CREATE TABLE payouts (id INTEGER PRIMARY KEY, amount TEXT);
             INSERT INTO payouts VALUES (1, 'marker-amount');
             CREATE VIEW emails AS SELECT email FROM creators;
             CREATE VIEW amounts AS SELECT amount FROM payouts;",
        )
        .unwrap();
        let level = install(&conn).unwrap();
        level.set_restrictions(Arc::new(Restrictions::new(
            ["payouts".to_string()],
            [("creators".to_string(), "email".to_string())],
        )));
        (conn, level)
    }

    fn read(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<Option<String>>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get::<_, Option<String>>(0))?;
        rows.collect()
    }

    #[test]
    fn a_nulled_column_reads_as_null_also_through_a_view() {
        let (conn, _level) = restricted_conn();
        assert_eq!(read(&conn, "SELECT email FROM creators").unwrap(), [None]);
        assert_eq!(read(&conn, "SELECT email FROM emails").unwrap(), [None]);
        assert!(
            read(&conn, "SELECT id FROM creators WHERE email LIKE 'marker%'")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_denied_table_is_refused_also_through_a_view_and_its_pragmas() {
        let (conn, _level) = restricted_conn();
        for sql in [
            "SELECT amount FROM payouts",
            "SELECT count(*) FROM payouts",
            "SELECT amount FROM amounts",
            "PRAGMA table_info(payouts)",
            "SELECT name FROM pragma_table_info('payouts')",
            "SELECT name FROM pragma_table_info('PAYOUTS')",
        ] {
            assert!(read(&conn, sql).is_err(), "{sql} was not refused");
        }
    }

    #[test]
    fn the_schema_text_reads_as_null_under_restrictions_only() {
        let (conn, level) = restricted_conn();
        let ddl = read(
            &conn,
            "SELECT sql FROM sqlite_schema WHERE name = 'payouts'",
        )
        .unwrap();
        assert_eq!(ddl, [None]);
        level.set_restrictions(Restrictions::none());
        let ddl = read(
            &conn,
            "SELECT sql FROM sqlite_master WHERE name = 'payouts'",
        )
        .unwrap();
        assert!(ddl[0].is_some());
        assert_eq!(
            read(&conn, "SELECT email FROM creators").unwrap(),
            [Some("marker@x".to_string())]
        );
    }

    #[test]
    fn a_restricted_writer_changes_no_schema_and_no_table_it_cannot_read_whole() {
        let (conn, level) = restricted_conn();
        level.set(Access::Trusted);
        conn.execute_batch(
            "PRAGMA query_only = off; CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        )
        .unwrap();
        level.set(Access::ReadWrite);
        for sql in [
            "CREATE TABLE loot (v TEXT)",
            "CREATE VIEW v AS SELECT 1",
            "CREATE INDEX notes_body ON notes (body)",
            "CREATE TRIGGER t AFTER INSERT ON notes BEGIN SELECT 1; END",
            "ALTER TABLE notes ADD COLUMN e TEXT",
            "DROP TABLE notes",
            "INSERT INTO creators (email) VALUES ('guess')",
            "UPDATE creators SET id = id",
            "DELETE FROM creators",
        ] {
            let err = conn
                .prepare(sql)
                .err()
                .unwrap_or_else(|| panic!("{sql} was prepared"));
            assert!(err.to_string().contains("not authorized"), "{sql}: {err}");
            assert!(level.take_refusal().is_some(), "{sql}: no reason given");
        }
        conn.prepare("INSERT INTO notes (body) VALUES ('fine')")
            .unwrap();
        // The control: the same statements are prepared without restrictions.
        level.set_restrictions(Restrictions::none());
        conn.prepare("CREATE TABLE loot (v TEXT)").unwrap();
        conn.prepare("INSERT INTO creators (email) VALUES ('guess')")
            .unwrap();
    }
}
