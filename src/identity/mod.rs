//! Who is calling: the principal behind each MCP request and the scopes it
//! holds. The transport names the principal (the local user over stdio, a
//! static token's name or an OAuth token's subject over HTTP); the MCP
//! layer checks every tool, resource and prompt against its scopes before
//! any SQL runs.
//!
//! - [`tokens`]: static bearer tokens as named principals, from a file.

pub mod scope_rules;
pub mod tokens;

pub use scope_rules::ScopeRules;

use std::collections::BTreeSet;
use std::sync::Arc;

/// Read tools, the schema resource and the prompt.
pub const READ: &str = "eros:read";
/// `execute` and declared write tools (when writes are enabled at all).
pub const WRITE: &str = "eros:write";

/// The scopes a principal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scopes {
    /// Every scope: the local user, the single `EROS_MCP_AUTH_TOKEN`, or
    /// HTTP without authentication (loopback only).
    All,
    /// Exactly these.
    Only(BTreeSet<String>),
}

impl Scopes {
    /// The scopes named in `names`.
    pub fn of<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Only(names.into_iter().map(Into::into).collect())
    }

    /// Whether `scope` is among them.
    pub fn allows(&self, scope: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(scopes) => scopes.contains(scope),
        }
    }
}

/// How the principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The user who started the process (stdio).
    Local,
    /// Nothing: HTTP with authentication off.
    None,
    /// A static bearer token.
    StaticToken,
    /// An OAuth 2.1 access token.
    OAuth,
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// What the audit log and errors call it: the static token's name, the
    /// token's `sub` (or `client_id`), or the local user's name.
    pub name: String,
    /// The OAuth token's `sub`.
    pub subject: Option<String>,
    /// The OAuth token's `client_id` (or `azp`).
    pub client_id: Option<String>,
    pub scopes: Scopes,
    pub proof: Proof,
}

impl Principal {
    /// The user who started the process: stdio's only caller, with every
    /// scope. Named after `$USER` (or the numeric uid).
    pub fn local() -> Arc<Self> {
        let name = std::env::var("USER")
            .ok()
            .filter(|name| !name.is_empty())
            // SAFETY: getuid(2) has no preconditions and cannot fail.
            .unwrap_or_else(|| format!("uid:{}", unsafe { libc::getuid() }));
        Arc::new(Self {
            name,
            subject: None,
            client_id: None,
            scopes: Scopes::All,
            proof: Proof::Local,
        })
    }

    /// Who this is, as one string that differs between any two principals
    /// (how it was proven, its name, subject and client): what a session is
    /// bound to.
    pub fn identity_key(&self) -> String {
        format!(
            "{:?}\u{0}{}\u{0}{}\u{0}{}",
            self.proof,
            self.name,
            self.subject.as_deref().unwrap_or_default(),
            self.client_id.as_deref().unwrap_or_default()
        )
    }

    /// An HTTP caller when authentication is off (allowed on loopback only).
    pub fn anonymous() -> Arc<Self> {
        Arc::new(Self {
            name: "anonymous".into(),
            subject: None,
            client_id: None,
            scopes: Scopes::All,
            proof: Proof::None,
        })
    }

    /// A static token's principal.
    pub fn static_token(name: &str, scopes: Scopes) -> Self {
        Self {
            name: name.to_string(),
            subject: None,
            client_id: None,
            scopes,
            proof: Proof::StaticToken,
        }
    }

    /// Whether it may use what `scope` guards.
    pub fn may(&self, scope: &str) -> bool {
        self.scopes.allows(scope)
    }
}

/// Whether `scope` is one OAuth scope token (RFC 6749 3.3: printable ASCII
/// without space, `"` or `\\`).
pub fn is_valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_scopes_are_allowed() {
        let scopes = Scopes::of([READ]);
        assert!(scopes.allows(READ));
        assert!(!scopes.allows(WRITE));
        assert!(!scopes.allows("eros:pii"));
    }

    #[test]
    fn every_scope_is_allowed_to_all() {
        assert!(Scopes::All.allows(WRITE));
        assert!(Scopes::All.allows("anything:else"));
    }

    #[test]
    fn the_local_user_holds_every_scope() {
        let local = Principal::local();
        assert!(local.may(WRITE));
        assert_eq!(local.proof, Proof::Local);
        assert!(!local.name.is_empty());
    }
}
