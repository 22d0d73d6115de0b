//! Validating one OAuth 2.1 access token (a JWS-signed JWT) completely:
//! the algorithm against an allow-list of asymmetric ones before any key is
//! touched, the signature against the issuer's key for its `kid` (and only
//! with an algorithm that key's type allows), then `iss`, `aud` (RFC 8707:
//! it must name this server), `exp` and `nbf` with a small leeway. What
//! comes out is the caller's identity and scopes ([`TokenClaims`]); what a
//! refusal says ([`TokenRejected`]) never contains the token.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::fetch::{self, fetchable_url, FetchLimits, UrlRefused};
use super::jwks::{KeyLookup, KeyStore, KeyStoreSettings, KeysError};
use super::OAuthSettings;

/// Longest token looked at: far above any real access token, and it bounds
/// the work a stranger can make this server do before being refused.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The signature algorithms accepted, every one asymmetric: never `none`,
/// never an HMAC (`HS*`), whose "secret" an attacker could take from the
/// issuer's public key set.
pub const ALLOWED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Who a valid token says is calling, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// `sub`: the user, or for a client-credentials token usually the client.
    pub subject: Option<String>,
    /// `client_id` (RFC 9068), or `azp` where an issuer uses that instead.
    pub client_id: Option<String>,
    /// The space-separated `scope` claim, and the entries of `scp` (an
    /// array, or a space-separated string, as some issuers write it), in
    /// order, without repeats.
    pub scopes: Vec<String>,
    /// `exp`.
    pub expires_at: SystemTime,
}

/// Why a token was refused. Its text and [`TokenRejected::reason`] are
/// safe to log and to count: neither contains any part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    #[error("the token is not a well-formed signed JWT access token")]
    Malformed,
    #[error("the token's signature algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the token names a signing key the issuer does not publish")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was not issued by the configured issuer")]
    WrongIssuer,
    #[error("the token is not meant for this server (audience)")]
    WrongAudience,
    #[error("the issuer's signing keys are unavailable: {reason}")]
    KeysUnavailable { reason: String },
}

impl TokenRejected {
    /// A short snake_case label, for a metrics `reason` label and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::KeysUnavailable { .. } => "keys_unavailable",
        }
    }

    /// Every reason label, for metrics registered before the first refusal.
    pub const REASONS: [&'static str; 9] = [
        "malformed",
        "unsupported_algorithm",
        "unknown_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "keys_unavailable",
    ];
}

impl From<KeysError> for TokenRejected {
    fn from(error: KeysError) -> Self {
        Self::KeysUnavailable {
            reason: error.to_string(),
        }
    }
}

/// Why a validator could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("issuer {url:?}: {reason}")]
    Issuer { url: String, reason: UrlRefused },
    #[error("key set URL {url:?}: {reason}")]
    JwksUrl { url: String, reason: UrlRefused },
    #[error("the HTTP client for the issuer: {0}")]
    Client(String),
}

/// Checks access tokens against one issuer and audience. A small handle:
/// clones share the key cache.
#[derive(Clone)]
pub struct TokenValidator(Arc<Validator>);

struct Validator {
    settings: OAuthSettings,
    keys: KeyStore,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator")
            .field("issuer", &self.0.settings.issuer)
            .field("audience", &self.0.settings.audience)
            .finish_non_exhaustive()
    }
}

/// The part of a JOSE header read before any key is chosen. `jku`, `x5u`
/// and `jwk` are deliberately not read: keys come only from the issuer's
/// key set, never from the token.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// The claims read from a verified token; `iss`, `aud`, `exp` and `nbf` are
/// checked by jsonwebtoken's validation.
#[derive(Deserialize)]
struct AccessTokenClaims {
    sub: Option<String>,
    client_id: Option<String>,
    azp: Option<String>,
    scope: Option<String>,
    scp: Option<ScopeClaim>,
    exp: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Words(String),
    List(Vec<String>),
}

impl TokenValidator {
    /// A validator for `settings`; no request is made until the first token
    /// (or [`TokenValidator::prefetch_keys`]).
    pub fn new(settings: OAuthSettings) -> Result<Self, ValidatorError> {
        fetchable_url(&settings.issuer).map_err(|reason| ValidatorError::Issuer {
            url: settings.issuer.clone(),
            reason,
        })?;
        let jwks_url = settings
            .jwks_url
            .as_deref()
            .map(|url| {
                fetchable_url(url).map_err(|reason| ValidatorError::JwksUrl {
                    url: url.to_string(),
                    reason,
                })
            })
            .transpose()?;
        let limits = FetchLimits {
            timeout: settings.fetch_timeout,
            max_bytes: settings.max_document_bytes,
        };
        let client =
            fetch::client(limits).map_err(|err| ValidatorError::Client(err.to_string()))?;
        let keys = KeyStore::new(
            KeyStoreSettings {
                issuer: settings.issuer.clone(),
                jwks_url,
                min_refetch_interval: settings.min_refetch_interval,
                max_key_age: settings.max_key_age,
                limits,
            },
            client,
        );
        Ok(Self(Arc::new(Validator { settings, keys })))
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.0.settings
    }

    /// Fetches the issuer's key set now (discovering it if need be);
    /// returns how many usable keys it has. For startup: a wrong issuer or
    /// an unreachable one shows before the first request.
    pub async fn prefetch_keys(&self) -> Result<usize, KeysError> {
        self.0.keys.refresh().await
    }

    /// Checks `token` (the bearer token without `Bearer `) completely.
    pub async fn validate(&self, token: &str) -> Result<TokenClaims, TokenRejected> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejected::Malformed);
        }
        let header = read_header(token)?;
        let alg = allowed_algorithm(&header.alg)?;
        let key = match self.0.keys.key_for(header.kid.as_deref(), alg).await? {
            KeyLookup::Found(key) => key,
            KeyLookup::WrongAlgorithm => return Err(TokenRejected::UnsupportedAlgorithm),
            KeyLookup::Unknown => return Err(TokenRejected::UnknownKey),
        };
        let validation = self.validation(alg);
        let data = jsonwebtoken::decode::<AccessTokenClaims>(token, &key.key, &validation)
            .map_err(|error| rejection_of(error.kind()))?;
        Ok(claims_of(data.claims))
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let settings = &self.0.settings;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = settings.leeway.as_secs();
        validation
    }
}

/// The JOSE header of a compact JWS, read by hand so that `alg: none` and
/// the HMAC algorithms (which jsonwebtoken would parse) are refused by name
/// before any key is looked up.
fn read_header(token: &str) -> Result<Header, TokenRejected> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // Five parts would be an encrypted token (JWE): not accepted.
        return Err(TokenRejected::Malformed);
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenRejected::Malformed)?;
    let header: Header = serde_json::from_slice(&json).map_err(|_| TokenRejected::Malformed)?;
    // RFC 7515 4.1.11: an extension the recipient must understand, and this
    // server understands none.
    if header.crit.is_some() {
        return Err(TokenRejected::Malformed);
    }
    Ok(header)
}

/// The allow-listed algorithm `alg` names (exact, case-sensitive, as RFC
/// 7518 spells them).
fn allowed_algorithm(alg: &str) -> Result<Algorithm, TokenRejected> {
    alg.parse::<Algorithm>()
        .ok()
        .filter(|parsed| ALLOWED_ALGORITHMS.contains(parsed))
        .ok_or(TokenRejected::UnsupportedAlgorithm)
}

/// What a jsonwebtoken failure means for the caller. The signature is
/// checked before any claim, so a claim's reason is given only for a token
/// the issuer really signed.
fn rejection_of(kind: &ErrorKind) -> TokenRejected {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey => TokenRejected::BadSignature,
        ErrorKind::ExpiredSignature => TokenRejected::Expired,
        ErrorKind::ImmatureSignature => TokenRejected::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRejected::WrongIssuer,
        ErrorKind::InvalidAudience => TokenRejected::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenRejected::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenRejected::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => TokenRejected::UnsupportedAlgorithm,
        _ => TokenRejected::Malformed,
    }
}

fn claims_of(raw: AccessTokenClaims) -> TokenClaims {
    let mut scopes: Vec<String> = Vec::new();
    let mut add = |scope: &str| {
        if !scope.is_empty() && !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    };
    if let Some(scope) = &raw.scope {
        scope.split_ascii_whitespace().for_each(&mut add);
    }
    match &raw.scp {
        Some(ScopeClaim::Words(words)) => words.split_ascii_whitespace().for_each(&mut add),
        Some(ScopeClaim::List(list)) => list.iter().map(String::as_str).for_each(&mut add),
        None => {}
    }
    TokenClaims {
        subject: raw.sub,
        client_id: raw.client_id.or(raw.azp),
        scopes,
        expires_at: UNIX_EPOCH + Duration::from_secs(raw.exp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: serde_json::Value) -> AccessTokenClaims {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn scopes_come_from_scope_and_scp_in_order_without_repeats() {
        let claims = claims_of(raw(serde_json::json!({
            "exp": 10,
            "scope": "eros:read  eros:write\teros:read",
            "scp": ["eros:pii", "eros:write"],
        })));
        assert_eq!(claims.scopes, ["eros:read", "eros:write", "eros:pii"]);
        assert!(claims.scopes.iter().any(|s| s == "eros:pii"));
        assert!(!claims.scopes.iter().any(|s| s == "eros"));

        let words = claims_of(raw(serde_json::json!({ "exp": 10, "scp": "a b" })));
        assert_eq!(words.scopes, ["a", "b"]);
        let none = claims_of(raw(serde_json::json!({ "exp": 10, "scope": "" })));
        assert!(none.scopes.is_empty());
    }

    #[test]
    fn the_client_is_client_id_or_else_azp() {
        let both = claims_of(raw(serde_json::json!({
            "exp": 10, "sub": "alice", "client_id": "agent", "azp": "other",
        })));
        assert_eq!(both.subject.as_deref(), Some("alice"));
        assert_eq!(both.client_id.as_deref(), Some("agent"));
        let azp = claims_of(raw(serde_json::json!({ "exp": 10, "azp": "spa" })));
        assert_eq!(azp.client_id.as_deref(), Some("spa"));
        assert_eq!(azp.subject, None);
        assert_eq!(azp.expires_at, UNIX_EPOCH + Duration::from_secs(10));
    }

    #[test]
    fn only_asymmetric_algorithms_are_allowed_by_their_exact_names() {
        for alg in ["RS256", "RS512", "PS384", "ES256", "ES384", "EdDSA"] {
            assert!(allowed_algorithm(alg).is_ok(), "{alg}");
        }
        for alg in [
            "none", "None", "NONE", "HS256", "HS384", "HS512", "rs256", "ES512", "",
        ] {
            assert_eq!(
                allowed_algorithm(alg),
                Err(TokenRejected::UnsupportedAlgorithm),
                "{alg}"
            );
        }
    }

    fn b64(json: serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    #[test]
    fn headers_are_read_from_three_part_tokens_only() {
        let header = b64(serde_json::json!({ "alg": "RS256", "kid": "k1" }));
        let read = read_header(&format!("{header}.e30.c2ln")).ok().unwrap();
        assert_eq!(
            (read.alg.as_str(), read.kid.as_deref()),
            ("RS256", Some("k1"))
        );
        for token in [
            String::new(),
            "a.b".into(),
            format!("{header}.e30.c2ln.x.y"),
            "!!!.e30.c2ln".into(),
            format!("{}.e30.c2ln", b64(serde_json::json!({ "kid": "no alg" }))),
            format!(
                "{}.e30.c2ln",
                b64(serde_json::json!({ "alg": "RS256", "crit": ["exp"] }))
            ),
        ] {
            assert!(
                matches!(read_header(&token), Err(TokenRejected::Malformed)),
                "{token}"
            );
        }
    }

    #[test]
    fn reasons_are_snake_case_labels_and_listed() {
        let all = [
            TokenRejected::Malformed,
            TokenRejected::UnsupportedAlgorithm,
            TokenRejected::UnknownKey,
            TokenRejected::BadSignature,
            TokenRejected::Expired,
            TokenRejected::NotYetValid,
            TokenRejected::WrongIssuer,
            TokenRejected::WrongAudience,
            TokenRejected::KeysUnavailable { reason: "x".into() },
        ];
        let reasons: Vec<_> = all.iter().map(TokenRejected::reason).collect();
        assert_eq!(reasons, TokenRejected::REASONS);
        for reason in reasons {
            assert!(reason.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
