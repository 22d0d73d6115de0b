//! The data dictionary: what the operator says a database's tables and
//! columns mean (from the databases file). The schema answers carry it
//! beside what SQLite says, so an agent reads `cr_st` as "status" instead
//! of guessing.

use std::collections::BTreeMap;

use super::schema::{TableDescription, TableList};

/// Descriptions of a database's tables, by table name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dictionary {
    pub tables: BTreeMap<String, TableNotes>,
}

/// What one table holds, and what its columns mean.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableNotes {
    pub description: Option<String>,
    /// The column that names a row (Datasette's `label_column`).
    pub label_column: Option<String>,
    pub columns: BTreeMap<String, ColumnNotes>,
}

/// What one column means, and the unit of its values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnNotes {
    pub description: Option<String>,
    pub unit: Option<String>,
}

impl Dictionary {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The notes on `table` (SQLite's names are case-insensitive).
    pub fn table(&self, table: &str) -> Option<&TableNotes> {
        self.tables.get(table).or_else(|| {
            self.tables
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(table))
                .map(|(_, notes)| notes)
        })
    }
}

impl TableNotes {
    /// One line: the description, then which column names a row.
    pub fn text(&self) -> Option<String> {
        match (&self.description, &self.label_column) {
            (Some(description), Some(label)) => {
                Some(format!("{description} (a row is named by {label})"))
            }
            (Some(description), None) => Some(description.clone()),
            (None, Some(label)) => Some(format!("a row is named by {label}")),
            (None, None) => None,
        }
    }

    /// The notes on `column` (case-insensitive, as SQLite's names are).
    pub fn column(&self, column: &str) -> Option<&ColumnNotes> {
        self.columns.get(column).or_else(|| {
            self.columns
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(column))
                .map(|(_, notes)| notes)
        })
    }
}

impl ColumnNotes {
    /// One line: the description, then the unit.
    pub fn text(&self) -> Option<String> {
        match (&self.description, &self.unit) {
            (Some(description), Some(unit)) => Some(format!("{description} (unit: {unit})")),
            (Some(description), None) => Some(description.clone()),
            (None, Some(unit)) => Some(format!("unit: {unit}")),
            (None, None) => None,
        }
    }
}

impl Dictionary {
    /// The data dictionary's descriptions added to a table list: each table's,
    /// and with columns listed, each described column's after ` -- `.
    pub fn annotate_list(&self, mut list: TableList) -> TableList {
        let dictionary = self;
        if dictionary.is_empty() {
            return list;
        }
        for table in &mut list.tables {
            let Some(notes) = dictionary.table(&table.name) else {
                continue;
            };
            table.description = notes.text();
            for column in table.columns.iter_mut().flatten() {
                let name = column.split_whitespace().next().unwrap_or_default();
                if let Some(text) = notes.column(name).and_then(|note| note.text()) {
                    column.push_str(" -- ");
                    column.push_str(&text);
                }
            }
        }
        list
    }

    /// The data dictionary's descriptions added to one table's description.
    pub fn annotate_description(&self, mut table: TableDescription) -> TableDescription {
        let dictionary = self;
        let Some(notes) = dictionary.table(&table.name) else {
            return table;
        };
        table.description = notes.text();
        for column in &mut table.columns {
            column.description = notes.column(&column.name).and_then(|note| note.text());
        }
        table
    }

    /// The data dictionary as SQL comments after the DDL, for the tables the
    /// DDL shows (a table denied to the caller is in neither).
    pub fn annotate_ddl(&self, ddl: String) -> String {
        let dictionary = self;
        let lowered = ddl.to_lowercase();
        let shown = |table: &str| {
            let table = table.to_lowercase();
            ["table", "view"].iter().any(|kind| {
                [
                    format!("create {kind} {table}"),
                    format!("create {kind} \"{table}\""),
                    format!("create {kind} if not exists {table}"),
                    format!("create {kind} if not exists \"{table}\""),
                ]
                .iter()
                .any(|created| {
                    lowered.match_indices(created.as_str()).any(|(at, _)| {
                        lowered[at + created.len()..]
                            .chars()
                            .next()
                            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                    })
                })
            })
        };
        let mut notes = String::new();
        for (table, table_notes) in &dictionary.tables {
            if !shown(table) {
                continue;
            }
            if let Some(description) = table_notes.text() {
                notes.push_str(&format!("-- {table}: {description}\n"));
            } else {
                notes.push_str(&format!("-- {table}\n"));
            }
            for (column, note) in &table_notes.columns {
                if let Some(text) = note.text() {
                    notes.push_str(&format!("--   {column}: {text}\n"));
                }
            }
        }
        if notes.is_empty() {
            return ddl;
        }
        format!("{ddl}\n\n-- What the tables and columns mean (the data dictionary):\n{notes}")
    }
}
