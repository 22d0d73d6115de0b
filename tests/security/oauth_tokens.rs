//! OAuth 2.1 access token validation (src/auth) against a real
//! authorization server on loopback (npm's oidc-provider, issuing
//! client-credentials JWTs for an RFC 8707 resource indicator): valid tokens
//! and their claims, expiry with and without leeway, the wrong audience and
//! issuer, a tampered token, key rotation and the refetch rate limit, the
//! forged `alg: none` and RS256-to-HS256 tokens, and discovery.

use crate::common;

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use common::oauth::{AuthServer, AGENT, SHORT_LIVED};
use eros_mcp::auth::{OAuthSettings, TokenClaims, TokenRejected, TokenValidator};

/// This server's canonical resource URI in these tests.
const AUDIENCE: &str = "http://127.0.0.1:8080/mcp";
const ALL_SCOPES: &str = "eros:read eros:write eros:pii";

fn settings(server: &AuthServer) -> OAuthSettings {
    OAuthSettings::new(server.issuer(), AUDIENCE)
}

fn validator(settings: OAuthSettings) -> TokenValidator {
    TokenValidator::new(settings).expect("validator")
}

async fn accepted(validator: &TokenValidator, token: &str) -> TokenClaims {
    match validator.validate(token).await {
        Ok(claims) => claims,
        Err(rejected) => panic!(
            "a good token was refused: {rejected} ({})",
            rejected.reason()
        ),
    }
}

/// The refusal of `token`, after checking that what it says (to a log or a
/// client) contains no part of the token.
async fn refused(validator: &TokenValidator, token: &str) -> TokenRejected {
    let rejected = validator
        .validate(token)
        .await
        .expect_err("a bad token was accepted");
    let shown = format!("{rejected} {rejected:?} {}", rejected.reason());
    for part in token.split('.').filter(|part| part.len() >= 8) {
        assert!(
            !shown.contains(part),
            "the refusal shows the token: {shown}"
        );
    }
    rejected
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_part(part: &str) -> serde_json::Value {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The claims a good token for this server would carry, for forged ones.
fn good_claims(server: &AuthServer) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    serde_json::json!({
        "iss": server.issuer(),
        "aud": AUDIENCE,
        "sub": "mallory",
        "client_id": AGENT,
        "scope": ALL_SCOPES,
        "iat": now,
        "exp": now + 300,
    })
}

#[tokio::test]
async fn a_valid_token_for_each_scope_gives_its_client_and_scopes() {
    let server = AuthServer::start();
    let validator = validator(settings(&server));
    for scope in ["eros:read", "eros:write", "eros:pii"] {
        let token = server.token(AGENT, scope, AUDIENCE).await;
        let claims = accepted(&validator, &token).await;
        assert_eq!(claims.scopes, [scope]);
        // A client-credentials token is about the client itself.
        assert_eq!(claims.subject.as_deref(), Some(AGENT));
        assert_eq!(claims.client_id.as_deref(), Some(AGENT));
        let left = claims.expires_at.duration_since(SystemTime::now()).unwrap();
        assert!(
            left > Duration::from_secs(250) && left <= Duration::from_secs(300),
            "{left:?}"
        );
    }
    let token = server.token(AGENT, ALL_SCOPES, AUDIENCE).await;
    let claims = accepted(&validator, &token).await;
    assert_eq!(claims.scopes, ["eros:read", "eros:write", "eros:pii"]);
    server.settled();
    assert_eq!(
        server.jwks_requests(),
        1,
        "the key set is fetched once, then cached"
    );
}

#[tokio::test]
async fn the_key_set_is_discovered_from_the_issuers_metadata() {
    let server = AuthServer::start();
    let validator = validator(settings(&server));
    assert_eq!(
        validator.prefetch_keys().await.unwrap(),
        2,
        "one RSA and one EC key"
    );
    let token = server.token(AGENT, "eros:read", AUDIENCE).await;
    accepted(&validator, &token).await;
    server.settled();
    // RFC 8414 first; oidc-provider answers it, so OpenID's is not needed.
    assert_eq!(
        server.metadata_requests(),
        ["/.well-known/oauth-authorization-server"]
    );
    assert_eq!(server.jwks_requests(), 1);
}

#[tokio::test]
async fn a_configured_key_set_url_needs_no_discovery() {
    let server = AuthServer::start();
    let validator = validator(OAuthSettings {
        jwks_url: Some(server.jwks_url()),
        ..settings(&server)
    });
    let token = server.token(AGENT, "eros:read", AUDIENCE).await;
    accepted(&validator, &token).await;
    server.settled();
    assert!(server.metadata_requests().is_empty());
    assert_eq!(server.jwks_requests(), 1);
}

#[tokio::test]
async fn metadata_naming_another_issuer_is_refused() {
    let server = AuthServer::start();
    // The same server by another name: its metadata says 127.0.0.1.
    let validator = validator(OAuthSettings::new(
        format!("http://localhost:{}", server.port),
        AUDIENCE,
    ));
    let err = validator.prefetch_keys().await.unwrap_err().to_string();
    assert!(err.contains("not the configured"), "{err}");
    let token = server.token(AGENT, "eros:read", AUDIENCE).await;
    let rejected = refused(&validator, &token).await;
    assert_eq!(rejected.reason(), "keys_unavailable");
    server.settled();
    assert_eq!(
        server.jwks_requests(),
        0,
        "keys named by the wrong metadata are never fetched"
    );
}

#[tokio::test]
async fn an_es256_token_verifies_with_the_issuers_ec_key() {
    let server = AuthServer::start();
    let audience = "http://127.0.0.1:8080/es256";
    let validator = validator(OAuthSettings::new(server.issuer(), audience));
    let token = server.token(AGENT, "eros:read", audience).await;
    assert_eq!(
        decode_part(token.split('.').next().unwrap())["alg"],
        "ES256"
    );
    assert_eq!(accepted(&validator, &token).await.scopes, ["eros:read"]);
}

#[tokio::test]
async fn an_expired_token_is_refused_after_the_leeway() {
    let server = AuthServer::start();
    let strict = validator(OAuthSettings {
        leeway: Duration::ZERO,
        ..settings(&server)
    });
    let lenient = validator(settings(&server));
    let token = server.token(SHORT_LIVED, "eros:read", AUDIENCE).await;
    accepted(&strict, &token).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(refused(&strict, &token).await, TokenRejected::Expired);
    // Seconds past exp are within the default 30 s for clock skew.
    accepted(&lenient, &token).await;
}

#[tokio::test]
async fn a_token_for_another_resource_is_refused() {
    let server = AuthServer::start();
    let validator = validator(settings(&server));
    let token = server
        .token(AGENT, ALL_SCOPES, "https://other.example.com/mcp")
        .await;
    assert_eq!(
        refused(&validator, &token).await,
        TokenRejected::WrongAudience
    );
}

#[tokio::test]
async fn a_token_from_another_issuer_with_the_same_keys_is_refused() {
    let server = AuthServer::start();
    let impostor = server.start_sharing_keys();
    let validator = validator(settings(&server));
    let token = impostor.token(AGENT, ALL_SCOPES, AUDIENCE).await;
    // Same kid, same key: only iss tells them apart.
    assert_eq!(
        decode_part(token.split('.').next().unwrap())["kid"],
        server.rsa_kid().as_str()
    );
    assert_eq!(
        refused(&validator, &token).await,
        TokenRejected::WrongIssuer
    );
}

#[tokio::test]
async fn a_token_whose_claims_were_changed_is_refused() {
    let server = AuthServer::start();
    let validator = validator(settings(&server));
    let token = server.token(AGENT, "eros:read", AUDIENCE).await;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = decode_part(parts[1]);
    claims["scope"] = ALL_SCOPES.into();
    let tampered = format!("{}.{}.{}", parts[0], b64(claims.to_string()), parts[2]);
    assert_eq!(
        refused(&validator, &tampered).await,
        TokenRejected::BadSignature
    );
    accepted(&validator, &token).await;
}

#[tokio::test]
async fn alg_none_is_refused_before_any_key_is_fetched() {
    let server = AuthServer::start();
    let validator = validator(settings(&server));
    for alg in ["none", "None"] {
        let header = serde_json::json!({ "alg": alg, "typ": "at+jwt", "kid": server.rsa_kid() });
        let unsigned = format!(
            "{}.{}.",
            b64(header.to_string()),
            b64(good_claims(&server).to_string())
        );
        assert_eq!(
            refused(&validator, &unsigned).await,
            TokenRejected::UnsupportedAlgorithm
        );
    }
    server.settled();
    assert_eq!(server.jwks_requests(), 0);
}

#[tokio::test]
async fn an_hmac_token_keyed_with_the_issuers_public_key_is_refused() {
    let server = AuthServer::start();
    let validator = validator(settings(&server));
    let claims = good_claims(&server);
    let pem = server.public_key_pem();
    // The secrets an attacker would try: the PEM as published, and the key
    // set's own modulus bytes.
    let jwks = get_json(&server.jwks_url()).await;
    let modulus = jwks["keys"][0]["n"].as_str().unwrap().to_string();
    for (alg, secret) in [
        (jsonwebtoken::Algorithm::HS256, pem.as_bytes().to_vec()),
        (jsonwebtoken::Algorithm::HS512, pem.as_bytes().to_vec()),
        (jsonwebtoken::Algorithm::HS256, modulus.as_bytes().to_vec()),
    ] {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(server.rsa_kid());
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap();
        assert_eq!(
            refused(&validator, &forged).await,
            TokenRejected::UnsupportedAlgorithm
        );
    }
    server.settled();
    // One fetch: this test's own, for the modulus.
    assert_eq!(
        server.jwks_requests(),
        1,
        "a forged token fetched the key set"
    );
    // The same claims, as the issuer itself signs them, pass: it is the
    // algorithm that was refused.
    let token = server.token(AGENT, ALL_SCOPES, AUDIENCE).await;
    accepted(&validator, &token).await;
    server.settled();
    assert_eq!(server.jwks_requests(), 2);
}

/// The JSON document at `url` (reqwest is built without its `json` feature).
async fn get_json(url: &str) -> serde_json::Value {
    let body = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// `token` with its header's kid replaced (so it names a key no one has).
fn with_kid(token: &str, kid: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut header = decode_part(parts[0]);
    header["kid"] = kid.into();
    format!("{}.{}.{}", b64(header.to_string()), parts[1], parts[2])
}

#[tokio::test]
async fn rotated_keys_are_refetched_and_unknown_kids_fetch_at_most_once_per_interval() {
    const INTERVAL: Duration = Duration::from_secs(2);
    let mut server = AuthServer::start();
    let validator = validator(OAuthSettings {
        min_refetch_interval: INTERVAL,
        ..settings(&server)
    });
    let old = server.token(AGENT, "eros:read", AUDIENCE).await;
    accepted(&validator, &old).await;
    server.settled();
    assert_eq!(server.jwks_requests(), 1);

    // Rotation: the issuer restarts with new keys; its new tokens name a
    // kid the cache has never seen, and the validator fetches the new set.
    server.rotate_keys();
    let new = server.token(AGENT, "eros:write", AUDIENCE).await;
    let old_kid = decode_part(old.split('.').next().unwrap())["kid"].clone();
    assert_ne!(decode_part(new.split('.').next().unwrap())["kid"], old_kid);
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(accepted(&validator, &new).await.scopes, ["eros:write"]);
    server.settled();
    assert_eq!(server.jwks_requests(), 2);
    // The old key is gone from the set, and within the interval its kid
    // costs the issuer nothing.
    assert_eq!(refused(&validator, &old).await, TokenRejected::UnknownKey);

    // A flood of made-up kids, all at once, within the interval: no fetch.
    let started = std::time::Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200 {
        let validator = validator.clone();
        let forged = with_kid(&new, &format!("bogus-{i}"));
        flood.spawn(async move { validator.validate(&forged).await });
    }
    while let Some(result) = flood.join_next().await {
        assert_eq!(result.unwrap(), Err(TokenRejected::UnknownKey));
    }
    assert!(
        started.elapsed() < INTERVAL,
        "the flood took {:?}",
        started.elapsed()
    );
    server.settled();
    assert_eq!(
        server.jwks_requests(),
        2,
        "a flood of unknown kids fetched the key set"
    );

    // Once the interval has passed, one unknown kid may fetch again, once.
    tokio::time::sleep(INTERVAL).await;
    for i in 0..50 {
        let forged = with_kid(&new, &format!("later-{i}"));
        assert_eq!(
            refused(&validator, &forged).await,
            TokenRejected::UnknownKey
        );
    }
    server.settled();
    assert_eq!(server.jwks_requests(), 3);
    accepted(&validator, &new).await;
}

#[tokio::test]
async fn an_unreachable_issuer_leaves_the_keys_unavailable() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let validator = validator(OAuthSettings::new(
        format!("http://127.0.0.1:{port}"),
        AUDIENCE,
    ));
    let header = serde_json::json!({ "alg": "RS256", "kid": "k" });
    let token = format!("{}.{}.{}", b64(header.to_string()), b64("{}"), b64("sig"));
    match refused(&validator, &token).await {
        TokenRejected::KeysUnavailable { reason } => {
            assert!(reason.contains(&port.to_string()), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_http_off_loopback_is_refused_by_the_validator_too() {
    let err = TokenValidator::new(OAuthSettings::new("http://auth.example.com", AUDIENCE))
        .unwrap_err()
        .to_string();
    assert!(err.contains("loopback"), "{err}");
}
