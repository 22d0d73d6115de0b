//! Column and table policies (`EROS_AUTH_POLICY_FILE`): which tables a
//! principal may not read at all and which columns it reads as NULL,
//! keyed by scope — a scope's restrictions apply to every principal that
//! lacks it. The file is read and checked against the database once at
//! startup; each principal's [`Restrictions`] are the union over the
//! scopes it lacks, computed once per distinct set of scopes.
//!
//! Enforcement is SQLite's authorizer ([`crate::sqlite::access`]) for agent SQL,
//! and the engine's schema answers filtered by the same restrictions.
//!
//! - [`restrictions`]: what one principal may not read.

pub mod restrictions;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;

pub use restrictions::Restrictions;

use crate::identity::Scopes;

/// Why a policy file was refused (the server does not start).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy file {path} is not valid TOML for a policy: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("the policy file {path}, scope {scope:?}, {field} entry {entry:?}: {reason}")]
    Entry {
        path: PathBuf,
        scope: String,
        field: &'static str,
        entry: String,
        reason: String,
    },
    #[error("cannot check the policy file {path} against the database: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl PolicyError {
    /// A stable name for the kind of failure (logs, tests).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Read { .. } => "policy_unreadable",
            Self::Syntax { .. } => "policy_syntax",
            Self::Entry { .. } => "policy_unknown_entry",
            Self::Database { .. } => "policy_database",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    scopes: BTreeMap<String, ScopeEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeEntry {
    /// Tables (or views) read by nobody without the scope.
    #[serde(default)]
    deny_tables: Vec<String>,
    /// `table.column` entries read as NULL by everybody without the scope.
    #[serde(default)]
    null_columns: Vec<String>,
}

/// The operator's policy: per scope, what principals lacking it may not read.
#[derive(Debug, Default)]
pub struct Policy {
    by_scope: BTreeMap<String, Restrictions>,
    /// Each distinct set of held scopes seen so far, with its restrictions.
    cache: Mutex<HashMap<BTreeSet<String>, Arc<Restrictions>>>,
}

impl Policy {
    /// No policy: nobody is restricted.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads `path` and checks each entry against the database on `conn`:
    /// an unknown table or column, or a column entry that is not
    /// `table.column`, is refused, naming the file, the scope and the entry.
    pub fn load(path: &Path, conn: &Connection) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, conn)
    }

    /// As [`Policy::load`], from the file's text.
    pub fn parse(path: &Path, text: &str, conn: &Connection) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|err| PolicyError::Syntax {
            path: path.to_path_buf(),
            reason: err.message().to_string(),
        })?;
        let db = |source| PolicyError::Database {
            path: path.to_path_buf(),
            source,
        };
        let mut by_scope = BTreeMap::new();
        for (scope, entry) in file.scopes {
            let refuse = |field: &'static str, entry: &str, reason: String| PolicyError::Entry {
                path: path.to_path_buf(),
                scope: scope.clone(),
                field,
                entry: entry.to_string(),
                reason,
            };
            let mut restrictions = Restrictions::default();
            for table in &entry.deny_tables {
                let table = table.trim();
                if !table_exists(conn, table).map_err(db)? {
                    return Err(refuse(
                        "deny_tables",
                        table,
                        "the database has no table or view of that name".into(),
                    ));
                }
                restrictions.deny_table(table);
                // A virtual table's data also lives in its shadow tables
                // (FTS5's `_content`, R*Tree's `_node`, ...).
                for shadow in shadow_tables(conn, table).map_err(db)? {
                    restrictions.deny_table(&shadow);
                }
            }
            for column_entry in &entry.null_columns {
                let Some((table, column)) = column_entry.trim().split_once('.') else {
                    return Err(refuse(
                        "null_columns",
                        column_entry,
                        "write it as table.column".into(),
                    ));
                };
                if !table_exists(conn, table).map_err(db)? {
                    return Err(refuse(
                        "null_columns",
                        column_entry,
                        format!("the database has no table or view named {table:?}"),
                    ));
                }
                if !column_exists(conn, table, column).map_err(db)? {
                    return Err(refuse(
                        "null_columns",
                        column_entry,
                        format!("the table {table:?} has no column named {column:?}"),
                    ));
                }
                if !shadow_tables(conn, table).map_err(db)?.is_empty() {
                    return Err(refuse(
                        "null_columns",
                        column_entry,
                        format!(
                            "{table:?} is a virtual table whose shadow tables hold the column's \
                             values too: deny the table instead"
                        ),
                    ));
                }
                if let Some(why) = own_key(conn, table, column).map_err(db)? {
                    return Err(refuse("null_columns", column_entry, why));
                }
                restrictions.null_column(table, column);
            }
            let restrictions = in_schema(conn, &restrictions).map_err(db)?;
            by_scope.insert(scope, restrictions);
        }
        Ok(Self {
            by_scope,
            cache: Mutex::default(),
        })
    }

    /// The scopes the file names, in order.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.by_scope.keys().map(String::as_str)
    }

    /// What a principal holding `scopes` may not read: the union of the
    /// restrictions of every scope it lacks.
    pub fn restrictions_for(&self, scopes: &Scopes) -> Arc<Restrictions> {
        let held = match scopes {
            Scopes::All => return Restrictions::none(),
            Scopes::Only(held) => held,
        };
        if self.by_scope.is_empty() {
            return Restrictions::none();
        }
        let mut cache = self.cache.lock().unwrap();
        if let Some(found) = cache.get(held) {
            return Arc::clone(found);
        }
        let mut union = Restrictions::default();
        for (scope, restrictions) in &self.by_scope {
            if !held.contains(scope) {
                union.union(restrictions);
            }
        }
        let union = if union.is_empty() {
            Restrictions::none()
        } else {
            Arc::new(union)
        };
        // Bounded by the distinct scope sets tokens carry; a flood of
        // OAuth tokens with ever new sets would grow it, so cap it.
        if cache.len() >= MAX_CACHED_SCOPE_SETS {
            cache.clear();
        }
        cache.insert(held.clone(), Arc::clone(&union));
        union
    }
}

/// Distinct scope sets whose restrictions are kept.
const MAX_CACHED_SCOPE_SETS: usize = 1024;

fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM sqlite_schema WHERE type IN ('table', 'view') \
         AND name = ?1 COLLATE NOCASE AND name NOT LIKE 'sqlite_%'",
    )?
    .query_row([table], |_| Ok(()))
    .optional()
    .map(|found| found.is_some())
}

/// The shadow tables of `table` (none unless it is a virtual table that
/// keeps its data in them), as `PRAGMA table_list` reports them.
fn shadow_tables(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow' \
         AND substr(name, 1, length(?1) + 1) = ?1 || '_' COLLATE NOCASE",
    )?;
    let names = stmt.query_map([table], |row| row.get(0))?;
    names.collect()
}

/// Why `column` cannot be nulled if it orders `table` itself: the
/// `INTEGER PRIMARY KEY` of a rowid table (the rowid), or a primary key
/// column of a `WITHOUT ROWID` table. Every scan walks the table in that
/// order, so the order of any answer would show the values read as NULL;
/// no check on the plan can avoid that.
fn own_key(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<Option<String>> {
    let without_rowid: bool = conn
        .prepare_cached(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1 COLLATE NOCASE",
        )?
        .query_row([table], |row| row.get::<_, i64>(0))
        .optional()?
        .is_some_and(|wr| wr == 1);
    let keys: Vec<(String, String)> = conn
        .prepare_cached("SELECT name, type FROM pragma_table_info(?1) WHERE pk > 0")?
        .query_map([table], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let is_key = keys
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(column));
    let rowid_alias =
        !without_rowid && keys.len() == 1 && keys[0].1.eq_ignore_ascii_case("INTEGER");
    Ok(match (is_key, without_rowid, rowid_alias) {
        (true, true, _) => Some(format!(
            "{table:?} is a WITHOUT ROWID table stored in the order of its primary key, which \
             holds {column:?}: every read would walk the hidden values in order. Deny the table \
             instead"
        )),
        (true, false, true) => Some(format!(
            "{column:?} is {table:?}'s INTEGER PRIMARY KEY (its rowid), the order the table is \
             stored and read in: every read would walk the hidden values in order. Deny the \
             table, or keep the key visible and null other columns"
        )),
        _ => None,
    })
}

/// The generated columns of `table`, virtual and stored (`hidden` 2 and 3
/// in `PRAGMA table_xinfo`).
fn generated_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT name FROM pragma_table_xinfo(?1) WHERE hidden IN (2, 3)")?;
    let names = stmt.query_map([table], |row| row.get(0))?;
    names.collect()
}

/// What `given` withholds in the schema as it is now: besides what it
/// names, every generated column of a table with a nulled column (SQLite
/// computes one from its sources without asking the authorizer about
/// them, and does not say which it uses), the whole of a table whose own
/// order a nulled column sets (its `INTEGER PRIMARY KEY` or `WITHOUT
/// ROWID` key: every scan would walk the hidden values in order), and no
/// writes to a table a foreign key links to hidden values.
///
/// Checked at startup for the policy file, and again by each worker
/// whenever the schema has changed since ([`SchemaBound`]): a table
/// recreated, or a generated column or a foreign key added, by a
/// principal free to change the schema is covered from its next call.
pub fn in_schema(conn: &Connection, given: &Restrictions) -> rusqlite::Result<Restrictions> {
    let mut bound = given.clone();
    for (table, column) in given.nulled_columns() {
        if own_key(conn, table, column)?.is_some() {
            bound.deny_table(table);
        }
        for generated in generated_columns(conn, table)? {
            bound.null_column(table, &generated);
        }
    }
    keep_linked_tables_read_only(conn, &mut bound)?;
    Ok(bound)
}

/// A worker's [`in_schema`] answers, kept while the schema does not
/// change (`PRAGMA schema_version`); a few distinct principals' worth.
#[derive(Debug, Default)]
pub struct SchemaBound {
    entries: Vec<(i64, Restrictions, Arc<Restrictions>)>,
}

/// Distinct restrictions a worker keeps bound at once.
const BOUND_KEPT: usize = 8;

impl SchemaBound {
    /// `given`, bound to the schema on `conn` now.
    pub fn bind(
        &mut self,
        conn: &Connection,
        given: Restrictions,
    ) -> rusqlite::Result<Arc<Restrictions>> {
        let version: i64 = conn.query_row("PRAGMA schema_version", [], |row| row.get(0))?;
        if let Some((_, _, bound)) = self
            .entries
            .iter()
            .find(|(v, g, _)| *v == version && *g == given)
        {
            return Ok(Arc::clone(bound));
        }
        let bound = Arc::new(in_schema(conn, &given)?);
        self.entries.retain(|(v, _, _)| *v == version);
        if self.entries.len() >= BOUND_KEPT {
            self.entries.remove(0);
        }
        self.entries.push((version, given, Arc::clone(&bound)));
        Ok(bound)
    }
}

/// Keeps read-only both tables of every foreign key that reaches what
/// `restrictions` hide: a denied table on either side, or a nulled column
/// among its keys. SQLite checks a foreign key against the other table's
/// rows, so an INSERT, UPDATE or DELETE that fails with a constraint
/// error would answer whether a hidden value exists.
fn keep_linked_tables_read_only(
    conn: &Connection,
    restrictions: &mut Restrictions,
) -> rusqlite::Result<()> {
    let links: Vec<(String, String, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT m.name, f.\"table\", f.\"from\", f.\"to\" FROM sqlite_schema AS m, \
             pragma_foreign_key_list(m.name) AS f WHERE m.type = 'table'",
        )?
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    for (child, parent, from, to) in links {
        // A key written without columns is the parent's primary key.
        let parent_keys = match to {
            Some(to) => vec![to],
            None => conn
                .prepare_cached("SELECT name FROM pragma_table_info(?1) WHERE pk > 0")?
                .query_map([&parent], |row| row.get(0))?
                .collect::<Result<_, _>>()?,
        };
        let hidden = restrictions.denies_table(&child)
            || restrictions.denies_table(&parent)
            || restrictions.nulls_column(&child, &from)
            || parent_keys
                .iter()
                .any(|key| restrictions.nulls_column(&parent, key));
        if hidden {
            restrictions.keep_read_only(&child);
            restrictions.keep_read_only(&parent);
        }
    }
    Ok(())
}

fn column_exists(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM pragma_table_xinfo(?1) WHERE name = ?2 COLLATE NOCASE")?
        .query_row([table, column], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE creators (id INTEGER PRIMARY KEY, handle TEXT, email TEXT);
             CREATE TABLE transactions (id INTEGER PRIMARY KEY, amount_cents INTEGER);",
        )
        .unwrap();
        conn
    }

    const EXAMPLE: &str = r#"
        [scopes."eros:pii"]
        null_columns = ["creators.email"]
        [scopes."eros:finance"]
        deny_tables = ["Transactions"]
    "#;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("/etc/eros/policy.toml"), text, &db())
    }

    #[test]
    fn a_principal_lacking_scopes_gets_the_union_of_their_restrictions() {
        let policy = parse(EXAMPLE).unwrap();
        let nobody = policy.restrictions_for(&Scopes::of(["eros:read"]));
        assert!(nobody.nulls_column("creators", "email"));
        assert!(nobody.denies_table("transactions"));
        let pii = policy.restrictions_for(&Scopes::of(["eros:read", "eros:pii"]));
        assert!(!pii.nulls_column("creators", "email"));
        assert!(pii.denies_table("transactions"));
        let both = policy.restrictions_for(&Scopes::of(["eros:pii", "eros:finance"]));
        assert!(both.is_empty());
        assert!(policy.restrictions_for(&Scopes::All).is_empty());
    }

    #[test]
    fn restrictions_are_computed_once_per_scope_set() {
        let policy = parse(EXAMPLE).unwrap();
        let a = policy.restrictions_for(&Scopes::of(["eros:read"]));
        let b = policy.restrictions_for(&Scopes::of(["eros:read"]));
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn no_policy_restricts_nobody() {
        let policy = parse("").unwrap();
        assert!(policy.restrictions_for(&Scopes::of(["x"])).is_empty());
        assert!(Policy::none()
            .restrictions_for(&Scopes::of(Vec::<String>::new()))
            .is_empty());
    }

    #[test]
    fn an_unknown_table_is_refused_naming_file_scope_and_entry() {
        let err = parse("[scopes.\"eros:finance\"]\ndeny_tables = [\"payouts\"]").unwrap_err();
        assert_eq!(err.code(), "policy_unknown_entry");
        let text = err.to_string();
        for part in [
            "/etc/eros/policy.toml",
            "eros:finance",
            "deny_tables",
            "payouts",
        ] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
    }

    #[test]
    fn an_unknown_column_or_a_bare_name_is_refused() {
        let err = parse("[scopes.\"eros:pii\"]\nnull_columns = [\"creators.phone\"]").unwrap_err();
        assert!(err.to_string().contains("creators.phone"), "{err}");
        assert!(err.to_string().contains("no column"), "{err}");
        let err = parse("[scopes.\"eros:pii\"]\nnull_columns = [\"email\"]").unwrap_err();
        assert!(err.to_string().contains("table.column"), "{err}");
        let err = parse("[scopes.\"eros:pii\"]\nnull_columns = [\"ghosts.email\"]").unwrap_err();
        assert!(err.to_string().contains("no table"), "{err}");
    }

    #[test]
    fn denying_a_virtual_table_denies_its_shadow_tables() {
        let conn = db();
        conn.execute_batch("CREATE VIRTUAL TABLE notes USING fts5(body)")
            .unwrap();
        let policy = Policy::parse(
            Path::new("policy.toml"),
            "[scopes.\"eros:notes\"]\ndeny_tables = [\"notes\"]",
            &conn,
        )
        .unwrap();
        let restrictions = policy.restrictions_for(&Scopes::of(["eros:read"]));
        for table in [
            "notes",
            "notes_content",
            "notes_data",
            "notes_idx",
            "notes_docsize",
            "notes_config",
        ] {
            assert!(restrictions.denies_table(table), "{table} is readable");
        }
        let err = Policy::parse(
            Path::new("policy.toml"),
            "[scopes.\"eros:notes\"]\nnull_columns = [\"notes.body\"]",
            &conn,
        )
        .unwrap_err();
        assert!(err.to_string().contains("deny the table instead"), "{err}");
    }

    #[test]
    fn tables_linked_by_a_foreign_key_to_hidden_values_are_kept_read_only() {
        let conn = db();
        conn.execute_batch(
            "CREATE TABLE mentions (id INTEGER PRIMARY KEY, email TEXT REFERENCES creators (email));
             CREATE TABLE refunds (id INTEGER PRIMARY KEY, tx INTEGER REFERENCES transactions);
             CREATE TABLE follows (id INTEGER PRIMARY KEY, creator INTEGER REFERENCES creators (id));",
        )
        .unwrap();
        let policy = Policy::parse(Path::new("policy.toml"), EXAMPLE, &conn).unwrap();
        let nobody = policy.restrictions_for(&Scopes::of(["eros:read"]));
        for table in ["creators", "mentions", "refunds", "transactions"] {
            assert!(nobody.keeps_read_only(table), "{table} is writable");
        }
        // A key of visible values links nothing hidden.
        assert!(!nobody.keeps_read_only("follows"));
        let all = policy.restrictions_for(&Scopes::of(["eros:pii", "eros:finance"]));
        assert!(!all.keeps_read_only("mentions"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse("[scopes.\"eros:pii\"]\nhide = [\"creators\"]").unwrap_err();
        assert_eq!(err.code(), "policy_syntax");
        assert!(err.to_string().contains("/etc/eros/policy.toml"), "{err}");
    }
}
