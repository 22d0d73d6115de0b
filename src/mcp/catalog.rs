//! The databases one server serves, by name: each with its engine (and so
//! its pool, limits and file), its policy, the scope needed to use it and
//! the description agents choose by. A call names its database (or leaves
//! it out when there is one) and runs against that one alone.

use std::sync::Arc;

use crate::engine::dictionary::Dictionary;
use crate::engine::{QueryEngine, QueryError};
use crate::identity::Principal;
use crate::policy::Policy;
use crate::quota::fair::FairShares;

/// One database as the MCP server sees it.
pub struct ServedDatabase {
    pub name: String,
    pub description: Option<String>,
    /// A scope a principal needs, beside each tool's own, to use it.
    pub scope: Option<String>,
    pub engine: Arc<QueryEngine>,
    pub policy: Arc<Policy>,
    /// What the operator says its tables and columns mean; added to the
    /// schema answers of calls to it.
    pub dictionary: Arc<Dictionary>,
    /// The gate that serves principals in turn when its connections run
    /// short; `None`: first come, first served.
    pub shares: Option<FairShares>,
}

impl ServedDatabase {
    /// Whether `principal` may use this database at all.
    pub fn admits(&self, principal: &Principal) -> bool {
        self.scope
            .as_deref()
            .is_none_or(|scope| principal.may(scope))
    }
}

/// Every database served, in the order they were declared.
#[derive(Clone)]
pub struct Catalog {
    databases: Arc<Vec<Arc<ServedDatabase>>>,
}

impl Catalog {
    pub fn new(databases: Vec<ServedDatabase>) -> Self {
        assert!(!databases.is_empty(), "a server serves a database");
        Self {
            databases: Arc::new(databases.into_iter().map(Arc::new).collect()),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServedDatabase>> {
        self.databases.iter()
    }

    /// The only database, when there is one.
    pub fn single(&self) -> Option<&Arc<ServedDatabase>> {
        match self.databases.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.databases.iter().map(|db| db.name.as_str()).collect()
    }

    /// The database `principal` names (or the only one when it names
    /// none), among those its scopes admit. One it may not use is answered
    /// as one that does not exist, and the names listed are those it may
    /// use: a database's name is not given away by the refusal.
    pub fn find_for(
        &self,
        name: Option<&str>,
        principal: &Principal,
    ) -> Result<&Arc<ServedDatabase>, QueryError> {
        let admitted: Vec<&Arc<ServedDatabase>> = self
            .databases
            .iter()
            .filter(|db| db.admits(principal))
            .collect();
        let names = || {
            let names: Vec<&str> = admitted.iter().map(|db| db.name.as_str()).collect();
            if names.is_empty() {
                "no database to this caller".to_string()
            } else {
                names.join(", ")
            }
        };
        match name {
            None if self.databases.len() == 1 => admitted.first().copied().ok_or_else(|| {
                QueryError::UnknownDatabase(format!("this server serves {}", names()))
            }),
            None => Err(QueryError::UnknownDatabase(format!(
                "name the database: this server serves {} (list_databases describes them)",
                names()
            ))),
            Some(name) => admitted
                .iter()
                .find(|db| db.name == name)
                .copied()
                .ok_or_else(|| {
                    QueryError::UnknownDatabase(format!(
                        "no database named {name:?}; this server serves {}",
                        names()
                    ))
                }),
        }
    }

    /// The database a call named, or the only one when it named none.
    pub fn find(&self, name: Option<&str>) -> Result<&Arc<ServedDatabase>, QueryError> {
        let names = || self.names().join(", ");
        match name {
            None => self.single().ok_or_else(|| {
                QueryError::UnknownDatabase(format!(
                    "name the database: this server serves {} (list_databases describes them)",
                    names()
                ))
            }),
            Some(name) => self
                .databases
                .iter()
                .find(|db| db.name == name)
                .ok_or_else(|| {
                    QueryError::UnknownDatabase(format!(
                        "no database named {name:?}; this server serves {}",
                        names()
                    ))
                }),
        }
    }
}
