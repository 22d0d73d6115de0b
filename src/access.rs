//! What SQL a connection may run, enforced by SQLite's authorizer at prepare
//! time and by `PRAGMA query_only` at run time — never by matching keywords.
//!
//! Every pooled connection rests in [`Access::ReadOnly`]. The write tool
//! switches to [`Access::ReadWrite`] for one statement; the server's own
//! statements (transactions, checkpoints, `query_only` itself) run under
//! [`Access::Trusted`]. The level lives in an atomic the authorizer reads, so
//! switching costs no re-registration.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

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

/// The access level of one connection, shared with its authorizer.
#[derive(Debug, Clone)]
pub struct AccessLevel(Arc<AtomicU8>);

impl AccessLevel {
    pub fn get(&self) -> Access {
        Access::from_u8(self.0.load(Ordering::Acquire))
    }

    pub fn set(&self, access: Access) {
        self.0.store(access as u8, Ordering::Release);
    }
}

/// Installs the authorizer and puts the connection at rest: read-only, with
/// `query_only` on. Call after every other setup statement.
pub fn install(conn: &Connection) -> rusqlite::Result<AccessLevel> {
    let level = AccessLevel(Arc::new(AtomicU8::new(Access::Trusted as u8)));
    let seen = level.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        authorize(seen.get(), &ctx)
    }))?;
    conn.pragma_update(None, "query_only", true)?;
    level.set(Access::ReadOnly);
    Ok(level)
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

/// The policy: what each access level allows.
pub fn authorize(access: Access, ctx: &AuthContext<'_>) -> Authorization {
    use AuthAction::*;
    use Authorization::{Allow, Deny, Ignore};
    if access == Access::Trusted {
        return Allow;
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
