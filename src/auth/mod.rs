//! OAuth 2.1 resource server, the token part: validating the JWT access
//! tokens an authorization server issues for this server (MCP
//! authorization, RFC 9068 profile), as a library the HTTP transport calls
//! with the bearer token of each request.
//!
//! - [`jwt`]: [`TokenValidator::validate`], the whole check of one token,
//!   and what it yields ([`TokenClaims`]) or why it refused ([`TokenRejected`]).
//! - [`jwks`]: the issuer's signing keys, cached and refetched on an unknown
//!   `kid` at most once per interval.
//! - [`discovery`]: where the keys are, from the issuer's metadata (RFC 8414,
//!   then OpenID Connect Discovery).
//! - [`fetch`]: which issuer URLs may be fetched (https, or http on loopback)
//!   and fetching one with a timeout and a size cap.
//!
//! The settings come from [`crate::config::AuthConfig::oauth_settings`].
//! Scopes, principals, Protected Resource Metadata and the 401/403 answers
//! belong to the transport, not here.

pub mod discovery;
pub mod fetch;
pub mod jwks;
pub mod jwt;

use std::time::Duration;

pub use jwt::{TokenClaims, TokenRejected, TokenValidator, ValidatorError};

/// Clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The key set is fetched again for an unknown `kid` at most this often.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// A key set older than this is refreshed in the background, so a key the
/// issuer withdrew stops verifying.
pub const DEFAULT_MAX_KEY_AGE: Duration = Duration::from_secs(10 * 60);
/// A metadata or key set request, connection to last byte.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest metadata document or key set read (real ones are a few KiB).
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// What token validation needs: whom to trust and for what, and how hard to
/// lean on the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    /// The authorization server's issuer identifier, compared exactly with
    /// the `iss` claim and the metadata's `issuer`.
    pub issuer: String,
    /// This server's canonical resource URI: a token's `aud` must contain it.
    pub audience: String,
    /// The key set's URL; `None`: discovered from the issuer's metadata.
    pub jwks_url: Option<String>,
    pub leeway: Duration,
    pub min_refetch_interval: Duration,
    pub max_key_age: Duration,
    pub fetch_timeout: Duration,
    pub max_document_bytes: usize,
}

impl OAuthSettings {
    /// Settings for `issuer` and `audience` with the default limits.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            leeway: DEFAULT_LEEWAY,
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
            max_key_age: DEFAULT_MAX_KEY_AGE,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
        }
    }
}
