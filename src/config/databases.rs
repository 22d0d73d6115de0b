//! `EROS_DATABASES_FILE`: several SQLite databases served by one server,
//! declared by name in a TOML file; without it, `EROS_DB_PATH` is one
//! database named `main`.
//!
//! ```toml
//! [databases.app]
//! path = "app.db"                      # relative to this file's folder
//! description = "The application: creators, posts, subscriptions."
//! required = true                      # /readyz is 503 while it cannot serve
//! scope = "eros:app"                   # needed, beside a tool's own, to use it
//! tools_file = "app-tools.toml"        # its declared tools
//! policy_file = "app-policy.toml"      # its column and table policies
//! metadata_file = "app-metadata.json" # Datasette metadata: descriptions, units
//! read_only = false                    # any EROS_DB_* setting, lowercase
//! pool_size = 4                        # without the prefix; the others
//! query_timeout = 5                    # default to the EROS_DB_* ones
//!
//! [databases.app.tables.creators]
//! description = "People who publish posts."
//! columns.cr_st = "Status: a = active, s = suspended."
//! ```
//!
//! Each database's `EROS_DB_*` settings are read by the same declarations
//! as the variables ([`DatabaseConfig`]), so a value is checked the same
//! way; an error names the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::database::{database_vars, DatabaseConfig};
use super::setting::{settings, ConfigError, OptionalPath, Parsed};
use crate::engine::dictionary::{ColumnNotes, Dictionary, TableNotes};

settings! {
    /// Where several databases are declared.
    pub struct DatabasesConfig;
    /// `EROS_DATABASES_*` as `envy` reads them.
    pub struct DatabasesEnv;
    /// One [`super::Setting`] per `EROS_DATABASES_*` variable.
    pub mod databases_vars;
    prefix = "EROS_DATABASES_";

    /// A TOML file declaring several databases by name, each with its path, description,
    /// settings, declared tools and policy (re-read on SIGHUP); empty: `EROS_DB_PATH` is the one
    /// database, named `main`.
    file <- file: OptionalPath = "", "a path to a TOML file (empty: EROS_DB_PATH alone)";
    /// Reload as on SIGHUP when the databases file, or a tools, policy or metadata file it
    /// names (or `EROS_MCP_TOOLS_FILE` and `EROS_AUTH_POLICY_FILE`), or the quotas file
    /// changes; checked once a second.
    watch <- watch: Parsed<bool> = "true", "true or false";
}

impl DatabasesConfig {
    /// No rules between these settings alone.
    fn relate(&mut self, _raw: &DatabasesEnv) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// The name `EROS_DB_PATH` alone is served under.
pub const SINGLE: &str = "main";

/// One database the server serves, as declared.
#[derive(Debug, Clone)]
pub struct DatabaseSpec {
    /// What tools take as `database` and metrics and audit lines carry.
    pub name: String,
    /// What it holds, for agents choosing among databases.
    pub description: Option<String>,
    /// Whether `/readyz` fails while this database cannot serve.
    pub required: bool,
    /// A scope a principal needs, beside each tool's own, to use it.
    pub scope: Option<String>,
    /// Its `EROS_DB_*` settings, with the file's values over the variables'.
    pub database: DatabaseConfig,
    /// Its declared tools.
    pub tools_file: Option<PathBuf>,
    /// Its column and table policies.
    pub policy_file: Option<PathBuf>,
    /// Descriptions of its tables and columns.
    pub dictionary: Dictionary,
    /// The Datasette metadata file the descriptions came from, if any.
    pub metadata_file: Option<PathBuf>,
}

impl DatabaseSpec {
    /// The files this database's configuration is read from (watched for
    /// changes, [`DatabasesConfig::watch`]).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        [&self.tools_file, &self.policy_file, &self.metadata_file]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

impl DatabaseSpec {
    /// `EROS_DB_PATH` alone: the database `main`, with the tools and policy
    /// files the variables name.
    pub fn single(
        database: DatabaseConfig,
        tools_file: Option<PathBuf>,
        policy_file: Option<PathBuf>,
    ) -> Self {
        Self {
            name: SINGLE.to_string(),
            description: None,
            required: true,
            scope: None,
            database,
            tools_file,
            policy_file,
            dictionary: Dictionary::default(),
            metadata_file: None,
        }
    }
}

/// Why a databases file was refused: the file, the line and the reason.
#[derive(Debug, thiserror::Error)]
pub enum DatabasesError {
    #[error("cannot read the databases file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Keys of a database's table that are not `EROS_DB_*` settings.
const OWN_KEYS: [&str; 7] = [
    "description",
    "required",
    "scope",
    "tools_file",
    "policy_file",
    "metadata_file",
    "tables",
];

/// Reads the databases file at `path`; each database's settings start
/// from `base` (the `EROS_DB_*` variables) and take the file's values.
pub fn load(path: &Path, base: &[(String, String)]) -> Result<Vec<DatabaseSpec>, DatabasesError> {
    let text = std::fs::read_to_string(path).map_err(|source| DatabasesError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text, base)
}

/// One database's table as written: every key with where it is.
type Entry = BTreeMap<String, Spanned<toml::Value>>;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabasesFile {
    databases: Spanned<BTreeMap<Spanned<String>, Spanned<Entry>>>,
}

/// Parses a databases file's `text` (read from `path`, against which
/// relative paths are resolved).
pub fn parse(
    path: &Path,
    text: &str,
    base: &[(String, String)],
) -> Result<Vec<DatabaseSpec>, DatabasesError> {
    let invalid = |offset: usize, reason: String| DatabasesError::Invalid {
        path: path.to_path_buf(),
        line: line_of(text, offset),
        reason,
    };
    let file: DatabasesFile = toml::from_str(text).map_err(|err| {
        let offset = err.span().map_or(0, |span| span.start);
        invalid(offset, err.message().trim().to_string())
    })?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let databases = file.databases.into_inner();
    if databases.is_empty() {
        return Err(invalid(
            0,
            "no database is declared: add a [databases.NAME] table with its path".into(),
        ));
    }
    // In the order the file declares them (the map sorts by name).
    let mut databases: Vec<_> = databases.into_iter().collect();
    databases.sort_by_key(|(name, _)| name.span().start);
    let mut specs = Vec::with_capacity(databases.len());
    for (name, entry) in databases {
        let at = name.span().start;
        let name = name.into_inner();
        check_name(&name).map_err(|reason| invalid(at, reason))?;
        let entry_at = entry.span().start;
        let spec = read_database(&name, entry.into_inner(), folder, base).map_err(
            |(offset, reason)| {
                invalid(
                    offset.unwrap_or(entry_at),
                    format!("databases.{name}: {reason}"),
                )
            },
        )?;
        specs.push(spec);
    }
    Ok(specs)
}

/// A name tools, metrics and URIs can carry as it is.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_fits = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_is_letter && rest_fits && name.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "database name {name:?}: a lowercase letter, then lowercase letters, digits or _, \
             at most 64 in all"
        ))
    }
}

/// An error at a byte offset of the file (or at the database's table).
type At = (Option<usize>, String);

fn read_database(
    name: &str,
    mut entry: Entry,
    folder: &Path,
    base: &[(String, String)],
) -> Result<DatabaseSpec, At> {
    let text_of = |key: &str, value: &Spanned<toml::Value>| -> Result<String, At> {
        match value.get_ref() {
            toml::Value::String(text) => Ok(text.clone()),
            _ => Err((Some(value.span().start), format!("{key} must be a string"))),
        }
    };
    let take_text = |entry: &mut Entry, key: &str| {
        entry
            .remove(key)
            .map(|value| text_of(key, &value))
            .transpose()
    };
    let description = take_text(&mut entry, "description")?;
    let scope = match entry.get("scope").map(|value| value.span().start) {
        Some(at) => {
            let scope = take_text(&mut entry, "scope")?;
            if let Some(scope) = scope.as_deref() {
                if !crate::identity::is_valid_scope(scope) {
                    return Err((
                        Some(at),
                        format!("scope {scope:?} is not one OAuth scope (printable, no spaces)"),
                    ));
                }
            }
            scope
        }
        None => None,
    };
    let tools_file = take_text(&mut entry, "tools_file")?.map(|p| folder.join(p));
    let policy_file = take_text(&mut entry, "policy_file")?.map(|p| folder.join(p));
    let required = match entry.remove("required") {
        None => true,
        Some(value) => match value.get_ref() {
            toml::Value::Boolean(required) => *required,
            _ => {
                return Err((
                    Some(value.span().start),
                    "required must be true or false".into(),
                ))
            }
        },
    };
    let mut metadata_file = None;
    let metadata = match entry.remove("metadata_file") {
        None => Dictionary::default(),
        Some(value) => {
            let path = folder.join(text_of("metadata_file", &value)?);
            let read =
                read_metadata(&path, name).map_err(|reason| (Some(value.span().start), reason))?;
            metadata_file = Some(path);
            read
        }
    };
    let mut dictionary = match entry.remove("tables") {
        None => Dictionary::default(),
        Some(tables) => read_tables(&tables)?,
    };
    // What this file says wins over the metadata file.
    for (table, notes) in metadata.tables {
        let entry = dictionary.tables.entry(table).or_default();
        entry.description = entry.description.take().or(notes.description);
        entry.label_column = entry.label_column.take().or(notes.label_column);
        for (column, note) in notes.columns {
            let mine = entry.columns.entry(column).or_default();
            mine.description = mine.description.take().or(note.description);
            mine.unit = mine.unit.take().or(note.unit);
        }
    }
    // What is left are EROS_DB_* settings, lowercase without the prefix.
    let mut vars: Vec<(String, String)> = base
        .iter()
        .filter(|(variable, _)| variable.starts_with(DatabaseConfig::PREFIX))
        .cloned()
        .collect();
    let mut spans: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut has_path = false;
    for (key, value) in &entry {
        let setting = DatabaseConfig::SETTINGS
            .iter()
            .find(|setting| setting.key == key.as_str())
            .ok_or_else(|| {
                (
                    Some(value.span().start),
                    format!(
                        "{key} is not a setting: a database takes {}, and any EROS_DB_* setting \
                         in lowercase without the prefix (pool_size, query_timeout, read_only...)",
                        OWN_KEYS.join(", ")
                    ),
                )
            })?;
        let mut text = match value.get_ref() {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err((
                    Some(value.span().start),
                    format!("{key} must be a string, a number or true/false"),
                ))
            }
        };
        if setting.key == database_vars::path.key {
            has_path = true;
            text = folder.join(text).display().to_string();
        }
        let variable = setting.variable();
        vars.retain(|(name, _)| *name != variable);
        vars.push((variable.clone(), text));
        spans.insert(variable, (key.clone(), value.span().start));
    }
    if !has_path {
        return Err((None, "path is missing: each database names its file".into()));
    }
    let database =
        DatabaseConfig::from_vars(vars).map_err(|err| match spans.get(&err.variable) {
            Some((key, offset)) => (
                Some(*offset),
                format!("{key} = {:?}: {}", err.value, err.allowed),
            ),
            // A rule between this database's settings and a variable's.
            None => (None, err.to_string()),
        })?;
    Ok(DatabaseSpec {
        name: name.to_string(),
        description,
        required,
        scope,
        database,
        tools_file,
        policy_file,
        dictionary,
        metadata_file,
    })
}

/// `tables.NAME.description` and `tables.NAME.columns.COLUMN` (a text, or
/// a table with `description` and `unit`).
fn read_tables(tables: &Spanned<toml::Value>) -> Result<Dictionary, At> {
    let at = Some(tables.span().start);
    let toml::Value::Table(tables) = tables.get_ref() else {
        return Err((at, "tables must be a table of tables".into()));
    };
    let mut dictionary = Dictionary::default();
    for (table, notes) in tables {
        let toml::Value::Table(notes) = notes else {
            return Err((at, format!("tables.{table} must be a table")));
        };
        let mut entry = TableNotes::default();
        for (key, value) in notes {
            match (key.as_str(), value) {
                ("description", toml::Value::String(text)) => {
                    entry.description = Some(text.clone())
                }
                ("columns", toml::Value::Table(columns)) => {
                    for (column, note) in columns {
                        let note = match note {
                            toml::Value::String(text) => ColumnNotes {
                                description: Some(text.clone()),
                                unit: None,
                            },
                            toml::Value::Table(fields) => ColumnNotes {
                                description: fields
                                    .get("description")
                                    .and_then(toml::Value::as_str)
                                    .map(str::to_string),
                                unit: fields
                                    .get("unit")
                                    .and_then(toml::Value::as_str)
                                    .map(str::to_string),
                            },
                            _ => {
                                return Err((
                                    at,
                                    format!(
                                        "tables.{table}.columns.{column} must be a text or a \
                                         table with description and unit"
                                    ),
                                ))
                            }
                        };
                        entry.columns.insert(column.clone(), note);
                    }
                }
                _ => {
                    return Err((
                        at,
                        format!(
                            "tables.{table}.{key}: a table takes description (a text) and \
                             columns (a table)"
                        ),
                    ))
                }
            }
        }
        dictionary.tables.insert(table.clone(), entry);
    }
    Ok(dictionary)
}

/// A Datasette metadata file (JSON, or YAML by its extension): the tables
/// of the database `name` (or of the only database it describes), with
/// each table's `description`, `columns` (name to description), `units`
/// and `label_column`.
fn read_metadata(path: &Path, name: &str) -> Result<Dictionary, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read the metadata file {}: {err}", path.display()))?;
    let yaml = path
        .extension()
        .is_some_and(|ext| ext == "yml" || ext == "yaml");
    let metadata: serde_json::Value = if yaml {
        serde_yaml_ng::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?
    } else {
        serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?
    };
    let databases = metadata.get("databases").and_then(|d| d.as_object());
    let database = databases.and_then(|all| {
        all.get(name).or_else(|| match all.len() {
            1 => all.values().next(),
            _ => None,
        })
    });
    let mut dictionary = Dictionary::default();
    let Some(tables) = database
        .and_then(|db| db.get("tables"))
        .and_then(|t| t.as_object())
    else {
        return Ok(dictionary);
    };
    let text_of =
        |value: Option<&serde_json::Value>| value.and_then(|v| v.as_str()).map(str::to_string);
    for (table, about) in tables {
        let mut notes = TableNotes {
            description: text_of(about.get("description")),
            label_column: text_of(about.get("label_column")),
            ..TableNotes::default()
        };
        if let Some(columns) = about.get("columns").and_then(|c| c.as_object()) {
            for (column, description) in columns {
                notes.columns.entry(column.clone()).or_default().description =
                    description.as_str().map(str::to_string);
            }
        }
        if let Some(units) = about.get("units").and_then(|u| u.as_object()) {
            for (column, unit) in units {
                notes.columns.entry(column.clone()).or_default().unit =
                    unit.as_str().map(str::to_string);
            }
        }
        dictionary.tables.insert(table.clone(), notes);
    }
    Ok(dictionary)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<DatabaseSpec>, String> {
        parse(Path::new("/etc/eros/databases.toml"), text, &[]).map_err(|err| err.to_string())
    }

    #[test]
    fn each_database_takes_its_path_relative_to_the_file_and_its_own_settings() {
        let specs = parse_text(
            "[databases.app]\npath = \"app.db\"\ndescription = \"The app\"\npool_size = 4\n\
             query_timeout = 2.5\nread_only = false\n\n\
             [databases.archive]\npath = \"/srv/archive.db\"\nrequired = false\n",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        let app = &specs[0];
        assert_eq!(app.name, "app");
        assert_eq!(app.database.path, Path::new("/etc/eros/app.db"));
        assert_eq!(app.database.pool_size, 4);
        assert_eq!(
            app.database.query_timeout,
            std::time::Duration::from_millis(2500)
        );
        assert!(!app.database.read_only);
        assert!(app.required);
        let archive = &specs[1];
        assert_eq!(archive.database.path, Path::new("/srv/archive.db"));
        assert_eq!(archive.database.pool_size, 10, "the default");
        assert!(archive.database.read_only, "the default");
        assert!(!archive.required);
    }

    #[test]
    fn the_variables_are_the_defaults_a_database_overrides() {
        let base = [("EROS_DB_MAX_ROWS".to_string(), "50".to_string())];
        let specs = parse(
            Path::new("d.toml"),
            "[databases.a]\npath = \"a.db\"\n[databases.b]\npath = \"b.db\"\nmax_rows = 7\n",
            &base,
        )
        .unwrap();
        assert_eq!(specs[0].database.max_rows, 50);
        assert_eq!(specs[1].database.max_rows, 7);
    }

    #[test]
    fn a_bad_value_names_the_file_line_database_and_key() {
        let err = parse_text("[databases.app]\npath = \"app.db\"\npool_size = 0\n").unwrap_err();
        assert_eq!(
            err,
            "/etc/eros/databases.toml:3: databases.app: pool_size = \"0\": a whole number from 1 to 1000"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_with_what_is_allowed() {
        let err = parse_text("[databases.app]\npath = \"a.db\"\npool_sise = 3\n").unwrap_err();
        assert!(
            err.starts_with(
                "/etc/eros/databases.toml:3: databases.app: pool_sise is not a setting"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_database_without_a_path_is_refused() {
        let err = parse_text("[databases.app]\ndescription = \"x\"\n").unwrap_err();
        assert!(err.contains("path is missing"), "{err}");
    }

    #[test]
    fn a_name_that_cannot_travel_as_it_is_is_refused() {
        let err = parse_text("[databases.\"My DB\"]\npath = \"a.db\"\n").unwrap_err();
        assert!(err.contains("database name \"My DB\""), "{err}");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let err = parse_text("[databases.app]\npath = \"a.db\n").unwrap_err();
        assert!(err.starts_with("/etc/eros/databases.toml:2:"), "{err}");
    }

    #[test]
    fn a_datasette_metadata_file_describes_tables_under_the_files_own_notes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metadata.yml"),
            "databases:\n  app:\n    tables:\n      creators:\n        description: From Datasette\n        \
             label_column: name\n        columns:\n          cr_st: Status\n        units:\n          price: EUR\n",
        )
        .unwrap();
        let specs = parse(
            &dir.path().join("databases.toml"),
            "[databases.app]\npath = \"a.db\"\nmetadata_file = \"metadata.yml\"\n\
             [databases.app.tables.creators]\ndescription = \"From the databases file\"\n",
            &[],
        )
        .unwrap();
        let creators = &specs[0].dictionary.tables["creators"];
        assert_eq!(
            creators.description.as_deref(),
            Some("From the databases file")
        );
        assert_eq!(creators.label_column.as_deref(), Some("name"));
        assert_eq!(
            creators.columns["cr_st"].description.as_deref(),
            Some("Status")
        );
        assert_eq!(creators.columns["price"].unit.as_deref(), Some("EUR"));
    }

    #[test]
    fn tables_and_columns_are_described() {
        let specs = parse_text(
            "[databases.app]\npath = \"a.db\"\n[databases.app.tables.creators]\n\
             description = \"People who publish.\"\ncolumns.cr_st = \"Status\"\n\
             columns.price = { description = \"Price\", unit = \"EUR\" }\n",
        )
        .unwrap();
        let creators = &specs[0].dictionary.tables["creators"];
        assert_eq!(creators.description.as_deref(), Some("People who publish."));
        assert_eq!(
            creators.columns["cr_st"].description.as_deref(),
            Some("Status")
        );
        assert_eq!(creators.columns["price"].unit.as_deref(), Some("EUR"));
    }
}
