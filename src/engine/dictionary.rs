//! The data dictionary: what the operator says a database's tables and
//! columns mean (from the databases file). The schema answers carry it
//! beside what SQLite says, so an agent reads `cr_st` as "status" instead
//! of guessing.

use std::collections::BTreeMap;

/// Descriptions of a database's tables, by table name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dictionary {
    pub tables: BTreeMap<String, TableNotes>,
}

/// What one table holds, and what its columns mean.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableNotes {
    pub description: Option<String>,
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
