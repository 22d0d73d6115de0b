//! Static bearer tokens as named principals, for setups without an
//! authorization server. A TOML file (`EROS_AUTH_TOKENS_FILE`) lists
//! entries, each a name, the SHA-256 of the token (never the token itself)
//! and its scopes:
//!
//! ```toml
//! [[tokens]]
//! name = "reporting-agent"
//! sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
//! scopes = ["eros:read"]
//! ```
//!
//! Several entries may be valid at once, so a token is rotated by adding the
//! new one, moving callers, then removing the old. The file is re-read on
//! SIGHUP; a file that no longer reads keeps the previous table (and says
//! why in the log). `EROS_MCP_AUTH_TOKEN` stays one more entry, named
//! `EROS_MCP_AUTH_TOKEN`, with every scope.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Principal, Scopes};

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the tokens file {path} is invalid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    scopes: Vec<String>,
}

/// One accepted token.
#[derive(Debug, Clone)]
struct Accepted {
    name: String,
    digest: [u8; 32],
    scopes: Scopes,
}

/// The static tokens the server accepts; cheap to share, re-read in place.
#[derive(Debug)]
pub struct StaticTokens {
    file: Option<PathBuf>,
    /// `EROS_MCP_AUTH_TOKEN`, kept across reloads of the file.
    single: Option<Accepted>,
    table: RwLock<Arc<Vec<Accepted>>>,
}

/// The SHA-256 of `token`, as the file writes it (lowercase hex).
pub fn digest_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl StaticTokens {
    /// The tokens of `file` (when set) and the single full-access `token`.
    pub fn new(file: Option<&Path>, token: Option<&str>) -> Result<Self, TokensFileError> {
        let single = token.map(|token| Accepted {
            name: "EROS_MCP_AUTH_TOKEN".into(),
            digest: Sha256::digest(token.as_bytes()).into(),
            scopes: Scopes::All,
        });
        let tokens = Self {
            file: file.map(Path::to_path_buf),
            single,
            table: RwLock::new(Arc::new(Vec::new())),
        };
        tokens.reload()?;
        Ok(tokens)
    }

    /// Whether no token at all is accepted.
    pub fn is_empty(&self) -> bool {
        self.single.is_none() && self.current().is_empty()
    }

    /// Whether a tokens file is configured (there is something to re-read).
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Re-reads the file; on failure the previous table stays. Returns the
    /// number of entries now accepted from the file.
    pub fn reload(&self) -> Result<usize, TokensFileError> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
            path: path.clone(),
            source,
        })?;
        let table = parse(&text).map_err(|reason| TokensFileError::Invalid {
            path: path.clone(),
            reason,
        })?;
        let count = table.len();
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        Ok(count)
    }

    fn current(&self) -> Arc<Vec<Accepted>> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The principal `token` names, if any. Every entry is compared, in
    /// constant time, so the time taken says nothing about which matched.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let table = self.current();
        let mut found: Option<&Accepted> = None;
        for accepted in self.single.iter().chain(table.iter()) {
            let matches = bool::from(accepted.digest.ct_eq(&digest));
            if matches && found.is_none() {
                found = Some(accepted);
            }
        }
        found.map(|accepted| Principal::static_token(&accepted.name, accepted.scopes.clone()))
    }
}

/// The entries of a tokens file, or why it is refused.
fn parse(text: &str) -> Result<Vec<Accepted>, String> {
    let file: TokensFile = toml::from_str(text).map_err(|err| err.to_string())?;
    file.tokens
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("entry {} ({:?})", i + 1, entry.name);
            if entry.name.trim().is_empty() {
                return Err(format!("entry {}: the name is empty", i + 1));
            }
            let digest = hex::decode(entry.sha256.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    format!("{at}: sha256 must be 64 hexadecimal digits, the SHA-256 of the token")
                })?;
            if entry.scopes.is_empty() || entry.scopes.iter().any(|s| s.trim().is_empty()) {
                return Err(format!(
                    "{at}: scopes must list at least one non-empty scope"
                ));
            }
            Ok(Accepted {
                name: entry.name,
                digest,
                scopes: Scopes::of(entry.scopes),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Proof, READ, WRITE};

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn entry(name: &str, token: &str, scopes: &str) -> String {
        format!(
            "[[tokens]]\nname = {name:?}\nsha256 = {:?}\nscopes = {scopes}\n",
            digest_hex(token)
        )
    }

    #[test]
    fn a_listed_token_names_its_principal_and_scopes() {
        let f = file(&entry("reporting", "token-one", "[\"eros:read\"]"));
        let tokens = StaticTokens::new(Some(f.path()), None).unwrap();
        let principal = tokens.authenticate("token-one").unwrap();
        assert_eq!(principal.name, "reporting");
        assert_eq!(principal.proof, Proof::StaticToken);
        assert!(principal.may(READ));
        assert!(!principal.may(WRITE));
        assert!(tokens.authenticate("token-two").is_none());
        assert!(tokens.authenticate("").is_none());
    }

    #[test]
    fn two_tokens_of_one_name_are_both_valid_during_a_rotation() {
        let text = entry("etl", "old-token", "[\"eros:write\"]")
            + &entry("etl", "new-token", "[\"eros:write\"]");
        let f = file(&text);
        let tokens = StaticTokens::new(Some(f.path()), None).unwrap();
        assert_eq!(tokens.authenticate("old-token").unwrap().name, "etl");
        assert_eq!(tokens.authenticate("new-token").unwrap().name, "etl");
    }

    #[test]
    fn a_reload_drops_a_removed_token_and_keeps_the_table_when_the_file_breaks() {
        let f = file(&entry("a", "token-a", "[\"eros:read\"]"));
        let tokens = StaticTokens::new(Some(f.path()), None).unwrap();
        std::fs::write(f.path(), entry("b", "token-b", "[\"eros:read\"]")).unwrap();
        assert_eq!(tokens.reload().unwrap(), 1);
        assert!(tokens.authenticate("token-a").is_none());
        assert!(tokens.authenticate("token-b").is_some());
        std::fs::write(f.path(), "[[tokens]]\nname = \"c\"\n").unwrap();
        assert!(tokens.reload().is_err());
        assert!(
            tokens.authenticate("token-b").is_some(),
            "a broken file dropped the table"
        );
    }

    #[test]
    fn the_single_auth_token_has_every_scope_and_survives_reloads() {
        let f = file("");
        let tokens = StaticTokens::new(Some(f.path()), Some("the-one-token")).unwrap();
        tokens.reload().unwrap();
        let principal = tokens.authenticate("the-one-token").unwrap();
        assert_eq!(principal.name, "EROS_MCP_AUTH_TOKEN");
        assert!(principal.may(WRITE));
    }

    #[test]
    fn a_bad_entry_is_refused_naming_it() {
        for (text, expected) in [
            (
                "[[tokens]]\nname = \"x\"\nsha256 = \"abc\"\nscopes = [\"eros:read\"]\n",
                "entry 1 (\"x\"): sha256",
            ),
            (&*entry("x", "t", "[]"), "scopes must list"),
            (&*entry("", "t", "[\"eros:read\"]"), "the name is empty"),
            (
                "[[tokens]]\nname = \"x\"\ntoken = \"plain\"\n",
                "unknown field",
            ),
        ] {
            let f = file(text);
            let err = StaticTokens::new(Some(f.path()), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
            assert!(err.contains(&f.path().display().to_string()), "{err}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = StaticTokens::new(Some(Path::new("/nonexistent/tokens.toml")), None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tokens.toml"));
    }
}
