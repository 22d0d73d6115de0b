//! The authorization server's signing keys (its JWKS): fetched, parsed into
//! public keys each bound to the algorithms its `kty` (and `alg`, `crv`)
//! allows, cached, and fetched again when a token names a `kid` the cache
//! does not hold (key rotation) or the cache grows old (key removal), at
//! most once per minimum interval, so a flood of made-up `kid`s costs the
//! issuer one request per interval and not one per token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::Deserialize;

use super::discovery::{discover_jwks_uri, DiscoveryError};
use super::fetch::{fetch_document, FetchError, FetchLimits};

/// Why no key set could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("key set: {0}")]
    Fetch(#[from] FetchError),
    #[error("{url}: not a JWK set: {error}")]
    NotAKeySet { url: String, error: String },
    #[error("{url}: no key this server can verify signatures with (RSA of 2048 bits or more, EC P-256 or P-384, Ed25519)")]
    NoUsableKey { url: String },
    /// No fetch was allowed yet (the minimum interval since the last failed
    /// one has not passed).
    #[error("waiting to fetch the key set again after: {last_error}")]
    Waiting { last_error: String },
}

/// RSA keys shorter than this are not trusted (NIST SP 800-131A).
const MIN_RSA_MODULUS_BYTES: usize = 2048 / 8;

/// One public key of the set, and the only algorithms it verifies.
pub struct VerificationKey {
    pub kid: Option<String>,
    /// Never an HMAC algorithm: keys are built only from RSA, EC and OKP
    /// JWKs, so a public key can never serve as a shared secret.
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The algorithms a JWK verifies, from its key type (RSA: RS* and PS*; EC:
/// the one its curve fixes; OKP Ed25519: EdDSA), narrowed to its `alg` when
/// it names one; `None` for a key not for verifying signatures (`use: enc`,
/// `key_ops` without `verify`), a symmetric (`oct`) key, a curve or an `alg`
/// that does not fit, or a short RSA modulus.
fn algorithms_of(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    use Algorithm::*;
    let common = &jwk.common;
    if matches!(
        common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    if let Some(operations) = &common.key_operations {
        if !operations.contains(&KeyOperations::Verify) {
            return None;
        }
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(rsa.n.trim_end_matches('='))
                .ok()?;
            let significant = modulus.iter().skip_while(|byte| **byte == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return None;
            }
            vec![RS256, RS384, RS512, PS256, PS384, PS512]
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![EdDSA],
            _ => return None,
        },
        // A symmetric key in a public key set is a misconfiguration, and an
        // HMAC key anyone can download verifies anything.
        // (`AlgorithmParameters` is non-exhaustive: a key type added to it
        // later is skipped until this match learns it.)
        _ => return None,
    };
    match common.key_algorithm {
        None => Some(family),
        Some(named) => {
            let named = algorithm_of_key_algorithm(named)?;
            family.contains(&named).then(|| vec![named])
        }
    }
}

/// The signature algorithm a JWK's `alg` names, if it names one this server
/// accepts.
fn algorithm_of_key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match alg {
        KeyAlgorithm::RS256 => RS256,
        KeyAlgorithm::RS384 => RS384,
        KeyAlgorithm::RS512 => RS512,
        KeyAlgorithm::PS256 => PS256,
        KeyAlgorithm::PS384 => PS384,
        KeyAlgorithm::PS512 => PS512,
        KeyAlgorithm::ES256 => ES256,
        KeyAlgorithm::ES384 => ES384,
        KeyAlgorithm::EdDSA => EdDSA,
        _ => return None,
    })
}

/// The usable keys of one fetched set.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerificationKey>>,
}

/// What a key set says about a token's `kid` and `alg`.
#[derive(Debug)]
pub enum KeyLookup {
    Found(Arc<VerificationKey>),
    /// The key exists but does not verify this algorithm (an RS256 key
    /// asked to check ES256, or a key the JWKS pins to PS256 asked for
    /// RS256).
    WrongAlgorithm,
    /// No such `kid` (or, for a token without one, not exactly one key for
    /// the algorithm).
    Unknown,
}

impl KeySet {
    /// Parses a JWKS document. Keys this server cannot or must not use
    /// (unknown types, symmetric keys, encryption keys) are skipped rather
    /// than failing the set: an issuer may publish them beside its
    /// signing keys.
    pub fn parse(url: &Url, body: &[u8]) -> Result<Self, KeysError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet = serde_json::from_slice(body).map_err(|error| KeysError::NotAKeySet {
            url: url.to_string(),
            error: error.to_string(),
        })?;
        let keys: Vec<_> = raw
            .keys
            .into_iter()
            .filter_map(|value| {
                let jwk: Jwk = serde_json::from_value(value).ok()?;
                let algorithms = algorithms_of(&jwk)?;
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some(Arc::new(VerificationKey {
                    kid: jwk.common.key_id.clone(),
                    algorithms,
                    key,
                }))
            })
            .collect();
        if keys.is_empty() {
            return Err(KeysError::NoUsableKey {
                url: url.to_string(),
            });
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token with header `kid` and `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> KeyLookup {
        let key = match kid {
            Some(kid) => self.keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
            None => {
                // A token without a kid is matched only when one key could
                // have signed it; trying several would be a guess.
                let mut candidates = self.keys.iter().filter(|key| key.algorithms.contains(&alg));
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => Some(key),
                    _ => None,
                }
            }
        };
        match key {
            Some(key) if key.algorithms.contains(&alg) => KeyLookup::Found(key.clone()),
            Some(_) => KeyLookup::WrongAlgorithm,
            None => KeyLookup::Unknown,
        }
    }
}

/// Allows one fetch per `min_interval`: the first always, then the next
/// only once the interval since the last attempt (failed or not) has
/// passed. The clock is the caller's, so the rule is tested without
/// sleeping.
#[derive(Debug, Clone)]
pub struct RefetchGate {
    min_interval: Duration,
    last_attempt: Option<Instant>,
}

impl RefetchGate {
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_attempt: None,
        }
    }

    /// Whether a fetch may start at `now`; if so, it counts as the attempt.
    pub fn try_pass(&mut self, now: Instant) -> bool {
        let open = self
            .last_attempt
            .is_none_or(|last| now.saturating_duration_since(last) >= self.min_interval);
        if open {
            self.last_attempt = Some(now);
        }
        open
    }
}

/// How the key set is fetched and kept.
#[derive(Debug, Clone)]
pub struct KeyStoreSettings {
    pub issuer: String,
    /// The key set's URL; `None`: discovered from the issuer's metadata.
    pub jwks_url: Option<Url>,
    pub min_refetch_interval: Duration,
    pub max_key_age: Duration,
    pub limits: FetchLimits,
}

/// The cached key set and what fetches it. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct KeyStore(Arc<Shared>);

struct Shared {
    settings: KeyStoreSettings,
    client: reqwest::Client,
    /// The keys tokens are checked against; read on every token, replaced
    /// whole by a fetch, so a fetch in progress never blocks a token whose
    /// key is already known.
    current: RwLock<Option<Arc<Cached>>>,
    /// Held for the whole of a fetch: tokens with an unknown kid that
    /// arrive meanwhile wait for its result rather than fetching again.
    fetching: tokio::sync::Mutex<FetchState>,
    /// A background refresh of an old key set is scheduled or running.
    refresh_scheduled: AtomicBool,
}

struct Cached {
    keys: KeySet,
    fetched_at: Instant,
}

struct FetchState {
    gate: RefetchGate,
    /// The discovered key set URL, forgotten when fetching it fails (the
    /// issuer may have moved it).
    discovered_jwks_url: Option<Url>,
    last_error: Option<String>,
}

impl KeyStore {
    pub fn new(settings: KeyStoreSettings, client: reqwest::Client) -> Self {
        let gate = RefetchGate::new(settings.min_refetch_interval);
        Self(Arc::new(Shared {
            settings,
            client,
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(FetchState {
                gate,
                discovered_jwks_url: None,
                last_error: None,
            }),
            refresh_scheduled: AtomicBool::new(false),
        }))
    }

    fn current(&self) -> Option<Arc<Cached>> {
        self.0
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The key for a token's `kid` and `alg`: from the cache, or, for a kid
    /// the cache does not hold, from a fresh fetch if the minimum interval
    /// allows one.
    pub async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<KeyLookup, KeysError> {
        let seen = self.current();
        if let Some(cached) = &seen {
            match cached.keys.find(kid, alg) {
                KeyLookup::Unknown => {}
                known => {
                    if cached.fetched_at.elapsed() >= self.0.settings.max_key_age {
                        self.schedule_refresh();
                    }
                    return Ok(known);
                }
            }
        }
        let mut state = self.0.fetching.lock().await;
        // Another token may have fetched while this one waited.
        let now_current = self.current();
        let changed = match (&seen, &now_current) {
            (Some(before), Some(after)) => !Arc::ptr_eq(before, after),
            (None, Some(_)) => true,
            _ => false,
        };
        if changed {
            let cached = now_current.expect("changed to a key set");
            return Ok(cached.keys.find(kid, alg));
        }
        if !state.gate.try_pass(Instant::now()) {
            return match (now_current, &state.last_error) {
                (Some(_), _) => Ok(KeyLookup::Unknown),
                (None, last_error) => Err(KeysError::Waiting {
                    last_error: last_error
                        .clone()
                        .unwrap_or_else(|| "a fetch in progress".into()),
                }),
            };
        }
        let cached = self.fetch(&mut state).await?;
        Ok(cached.keys.find(kid, alg))
    }

    /// Fetches the key set now, if the minimum interval allows, and keeps
    /// it: for warming the cache at startup, so the first token does not
    /// wait and a wrong issuer or key set URL shows at once.
    pub async fn refresh(&self) -> Result<usize, KeysError> {
        let mut state = self.0.fetching.lock().await;
        if !state.gate.try_pass(Instant::now()) {
            return match (self.current(), &state.last_error) {
                (Some(cached), None) => Ok(cached.keys.len()),
                (_, last_error) => Err(KeysError::Waiting {
                    last_error: last_error.clone().unwrap_or_default(),
                }),
            };
        }
        Ok(self.fetch(&mut state).await?.keys.len())
    }

    /// Refreshes an old key set in the background: the token that noticed
    /// goes on with the keys it has, and a key the issuer removed stops
    /// verifying within about `max_key_age`.
    fn schedule_refresh(&self) {
        if self.0.refresh_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            {
                let mut state = store.0.fetching.lock().await;
                let still_old = store.current().is_none_or(|cached| {
                    cached.fetched_at.elapsed() >= store.0.settings.max_key_age
                });
                if still_old && state.gate.try_pass(Instant::now()) {
                    // A failure keeps the old keys, and is logged by fetch.
                    let _ = store.fetch(&mut state).await;
                }
            }
            store.0.refresh_scheduled.store(false, Ordering::Release);
        });
    }

    /// One fetch (discovering the URL first if need be); on success the new
    /// set replaces the cache, on failure the cache is kept.
    async fn fetch(&self, state: &mut FetchState) -> Result<Arc<Cached>, KeysError> {
        let result = self.fetch_key_set(state).await;
        match result {
            Ok((url, keys)) => {
                tracing::info!(%url, keys = keys.len(), "fetched the OAuth issuer's signing keys");
                let cached = Arc::new(Cached {
                    keys,
                    fetched_at: Instant::now(),
                });
                *self
                    .0
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(cached.clone());
                state.last_error = None;
                Ok(cached)
            }
            Err(error) => {
                tracing::warn!(%error, "could not fetch the OAuth issuer's signing keys");
                state.last_error = Some(error.to_string());
                Err(error)
            }
        }
    }

    async fn fetch_key_set(&self, state: &mut FetchState) -> Result<(Url, KeySet), KeysError> {
        let settings = &self.0.settings;
        let url = match (&settings.jwks_url, &state.discovered_jwks_url) {
            (Some(url), _) | (None, Some(url)) => url.clone(),
            (None, None) => {
                let url =
                    discover_jwks_uri(&self.0.client, &settings.issuer, settings.limits).await?;
                state.discovered_jwks_url = Some(url.clone());
                url
            }
        };
        let body = fetch_document(&self.0.client, &url, settings.limits)
            .await
            .inspect_err(|_| state.discovered_jwks_url = None)?;
        let keys = KeySet::parse(&url, &body)?;
        Ok((url, keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_allows_one_fetch_per_interval() {
        let start = Instant::now();
        let mut gate = RefetchGate::new(Duration::from_secs(30));
        assert!(gate.try_pass(start), "the first fetch always goes");
        for seconds in [0, 1, 10, 29] {
            assert!(!gate.try_pass(start + Duration::from_secs(seconds)));
        }
        assert!(gate.try_pass(start + Duration::from_secs(30)));
        assert!(!gate.try_pass(start + Duration::from_secs(31)));
        assert!(gate.try_pass(start + Duration::from_secs(61)));
    }

    #[test]
    fn a_refused_attempt_does_not_push_the_next_one_back() {
        let start = Instant::now();
        let mut gate = RefetchGate::new(Duration::from_secs(30));
        assert!(gate.try_pass(start));
        assert!(!gate.try_pass(start + Duration::from_secs(20)));
        assert!(gate.try_pass(start + Duration::from_secs(30)));
    }

    fn url() -> Url {
        Url::parse("https://as.example.com/jwks").unwrap()
    }

    /// A 2048-bit modulus (its value does not matter to parsing).
    fn modulus() -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xc3u8; 256])
    }

    fn parse(keys: serde_json::Value) -> Result<KeySet, KeysError> {
        KeySet::parse(
            &url(),
            serde_json::json!({ "keys": keys }).to_string().as_bytes(),
        )
    }

    #[test]
    fn keys_verify_only_what_their_type_and_alg_allow() {
        let set = parse(serde_json::json!([
            { "kty": "RSA", "kid": "rsa", "n": modulus(), "e": "AQAB" },
            { "kty": "RSA", "kid": "pss", "alg": "PS256", "use": "sig", "n": modulus(), "e": "AQAB" },
        ]))
        .unwrap();
        assert_eq!(set.len(), 2);
        assert!(matches!(
            set.find(Some("rsa"), Algorithm::RS256),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("rsa"), Algorithm::PS512),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("rsa"), Algorithm::ES256),
            KeyLookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.find(Some("rsa"), Algorithm::HS256),
            KeyLookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.find(Some("pss"), Algorithm::RS256),
            KeyLookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.find(Some("pss"), Algorithm::PS256),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("other"), Algorithm::RS256),
            KeyLookup::Unknown
        ));
    }

    #[test]
    fn symmetric_encryption_short_and_unknown_keys_are_skipped() {
        let err = parse(serde_json::json!([
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": modulus(), "e": "AQAB" },
            { "kty": "RSA", "kid": "short", "n": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xc3u8; 128]), "e": "AQAB" },
            { "kty": "RSA", "kid": "hs-pinned", "alg": "HS256", "n": modulus(), "e": "AQAB" },
            { "kty": "RSA", "kid": "verify-not", "key_ops": ["encrypt"], "n": modulus(), "e": "AQAB" },
            { "kty": "weird", "kid": "w" },
        ]))
        .unwrap_err();
        assert!(matches!(err, KeysError::NoUsableKey { .. }), "{err}");

        let set = parse(serde_json::json!([
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "RSA", "kid": "rsa", "n": modulus(), "e": "AQAB" },
        ]))
        .unwrap();
        assert_eq!(set.len(), 1);
        assert!(matches!(
            set.find(Some("hmac"), Algorithm::HS256),
            KeyLookup::Unknown
        ));
    }

    #[test]
    fn a_token_without_a_kid_matches_only_a_single_candidate() {
        let one = parse(serde_json::json!([
            { "kty": "RSA", "kid": "a", "n": modulus(), "e": "AQAB" },
        ]))
        .unwrap();
        assert!(matches!(
            one.find(None, Algorithm::RS256),
            KeyLookup::Found(_)
        ));
        let two = parse(serde_json::json!([
            { "kty": "RSA", "kid": "a", "n": modulus(), "e": "AQAB" },
            { "kty": "RSA", "kid": "b", "n": modulus(), "e": "AQAB" },
        ]))
        .unwrap();
        assert!(matches!(
            two.find(None, Algorithm::RS256),
            KeyLookup::Unknown
        ));
    }

    #[test]
    fn a_document_that_is_not_a_key_set_is_an_error() {
        assert!(matches!(
            KeySet::parse(&url(), b"{\"issuer\": \"x\"}"),
            Err(KeysError::NotAKeySet { .. })
        ));
    }
}
