//! What one principal may not read: the tables it is denied and the
//! columns it reads as NULL, lowercased (SQLite compares identifiers
//! without regard to ASCII case), and the tables it may read but not
//! write because a write would be checked against values it cannot see. Computed from the policy file
//! ([`super::Policy`]) once per distinct set of scopes, handed to the
//! engine per call, and read by the authorizer ([`crate::sqlite::access`]).

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

/// The tables a principal may not read at all and the `(table, column)`
/// pairs it reads as NULL. Empty: no restriction.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Restrictions {
    denied_tables: BTreeSet<String>,
    nulled_columns: BTreeSet<(String, String)>,
    /// Tables whose writes SQLite checks against hidden values (a UNIQUE
    /// index, a CHECK, a foreign key): a constraint error would answer a
    /// guess, so no write reaches them.
    read_only_tables: BTreeSet<String>,
}

static NONE: LazyLock<Arc<Restrictions>> = LazyLock::new(|| Arc::new(Restrictions::default()));

impl Restrictions {
    /// No restriction: the local user, HTTP without auth, every scope.
    pub fn none() -> Arc<Self> {
        Arc::clone(&NONE)
    }

    /// Denies `tables` and nulls `columns` (`(table, column)`), in any case.
    pub fn new<T, C>(tables: T, columns: C) -> Self
    where
        T: IntoIterator<Item = String>,
        C: IntoIterator<Item = (String, String)>,
    {
        let mut restrictions = Self::default();
        for table in tables {
            restrictions.deny_table(&table);
        }
        for (table, column) in columns {
            restrictions.null_column(&table, &column);
        }
        restrictions
    }

    pub(crate) fn deny_table(&mut self, table: &str) {
        self.denied_tables.insert(table.to_ascii_lowercase());
    }

    /// Nulls `table.column`, and keeps `table` read-only: an INSERT or
    /// UPDATE would be checked against the hidden values (a UNIQUE index,
    /// a CHECK, a generated column), and SQLite's authorizer does not say
    /// which columns an INSERT sets. A principal writes only tables it
    /// can read whole.
    pub(crate) fn null_column(&mut self, table: &str, column: &str) {
        self.nulled_columns
            .insert((table.to_ascii_lowercase(), column.to_ascii_lowercase()));
        self.keep_read_only(table);
    }

    pub(crate) fn keep_read_only(&mut self, table: &str) {
        self.read_only_tables.insert(table.to_ascii_lowercase());
    }

    /// Adds what `other` restricts (a principal lacking two scopes gets
    /// the restrictions of both).
    pub fn union(&mut self, other: &Restrictions) {
        self.denied_tables
            .extend(other.denied_tables.iter().cloned());
        self.nulled_columns
            .extend(other.nulled_columns.iter().cloned());
        self.read_only_tables
            .extend(other.read_only_tables.iter().cloned());
    }

    pub fn is_empty(&self) -> bool {
        self.denied_tables.is_empty()
            && self.nulled_columns.is_empty()
            && self.read_only_tables.is_empty()
    }

    /// Whether `table` (any case) may be read but not written.
    pub fn keeps_read_only(&self, table: &str) -> bool {
        !self.read_only_tables.is_empty()
            && self.read_only_tables.contains(&table.to_ascii_lowercase())
    }

    /// Whether `table` (any case) may not be read at all.
    pub fn denies_table(&self, table: &str) -> bool {
        !self.denied_tables.is_empty() && self.denied_tables.contains(&table.to_ascii_lowercase())
    }

    /// Whether some column reads as NULL.
    pub fn nulls_columns(&self) -> bool {
        !self.nulled_columns.is_empty()
    }

    /// Whether some column of `table` (any case) reads as NULL.
    pub fn nulls_a_column_of(&self, table: &str) -> bool {
        let table = table.to_ascii_lowercase();
        self.nulled_columns.iter().any(|(t, _)| *t == table)
    }

    /// Whether `table.column` (any case) reads as NULL.
    pub fn nulls_column(&self, table: &str, column: &str) -> bool {
        !self.nulled_columns.is_empty()
            && self
                .nulled_columns
                .contains(&(table.to_ascii_lowercase(), column.to_ascii_lowercase()))
    }

    /// The denied tables, lowercased.
    pub fn denied_tables(&self) -> impl Iterator<Item = &str> {
        self.denied_tables.iter().map(String::as_str)
    }

    /// The nulled `(table, column)` pairs, lowercased.
    pub fn nulled_columns(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nulled_columns
            .iter()
            .map(|(t, c)| (t.as_str(), c.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_without_regard_to_case() {
        let r = Restrictions::new(
            ["Payouts".to_string()],
            [("Creators".to_string(), "EMAIL".to_string())],
        );
        assert!(r.denies_table("PAYOUTS"));
        assert!(r.nulls_column("creators", "email"));
        assert!(!r.nulls_column("creators", "handle"));
        assert!(!r.denies_table("creators"));
    }

    #[test]
    fn the_union_holds_both_sides() {
        let mut a = Restrictions::new(["payouts".to_string()], []);
        let b = Restrictions::new([], [("creators".to_string(), "email".to_string())]);
        a.union(&b);
        assert!(a.denies_table("payouts"));
        assert!(a.nulls_column("creators", "email"));
        assert!(!a.is_empty());
        assert!(Restrictions::none().is_empty());
    }
}
