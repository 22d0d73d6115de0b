//! Authentication for the HTTP transport: every request to `/mcp` presents
//! `Authorization: Bearer <token>`, which names its principal: a static
//! token's entry ([`crate::identity::tokens`]) or, with OAuth on, a JWT
//! access token the authorization server issued for this server
//! ([`crate::auth`]). Without a valid one it gets 401, with OAuth naming
//! the Protected Resource Metadata (RFC 9728) a client starts from. The
//! principal travels in the request's extensions to the MCP server. A
//! request for something its scopes do not cover (a tool, the schema
//! resource, the prompt) gets 403 `insufficient_scope` naming the scope,
//! before anything runs. A refusal says nothing more, and no token is ever
//! logged or passed on.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::observer::TransportObserver;
use super::operation::Operation;
use super::unauthenticated::ConnectionGate;
use crate::auth::{TokenClaims, TokenValidator};
use crate::identity::tokens::StaticTokens;
use crate::identity::{Principal, Proof, ScopeRules, Scopes};

/// The path of the Protected Resource Metadata (RFC 9728).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// OAuth's part: the validator and where this server's metadata is.
#[derive(Clone)]
pub struct OAuth {
    validator: TokenValidator,
    /// The metadata's URL, as 401s name it: under the audience's origin,
    /// suffixed with its path (RFC 9728 section 3.1).
    metadata_url: String,
}

impl OAuth {
    pub fn new(validator: TokenValidator) -> Self {
        let metadata_url = metadata_url(&validator.settings().audience);
        Self {
            validator,
            metadata_url,
        }
    }

    /// The paths the metadata is served at here: the plain one, the one
    /// suffixed with `/mcp`, and the one the audience's path gives (when a
    /// proxy puts this server under a prefix).
    pub fn metadata_paths(&self) -> Vec<String> {
        let mut paths = vec![METADATA_PATH.to_string(), format!("{METADATA_PATH}/mcp")];
        if let Ok(url) = reqwest::Url::parse(&self.metadata_url) {
            paths.push(url.path().to_string());
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// The metadata document: this resource, its authorization server, the
    /// scopes it knows.
    pub fn metadata(&self, scopes: &[String]) -> serde_json::Value {
        let settings = self.validator.settings();
        serde_json::json!({
            "resource": settings.audience,
            "authorization_servers": [settings.issuer],
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": "eros-mcp",
        })
    }
}

/// `origin` + [`METADATA_PATH`] + the resource's path (none for `/`).
fn metadata_url(audience: &str) -> String {
    match reqwest::Url::parse(audience) {
        Ok(url) => {
            let path = url.path().trim_end_matches('/');
            format!(
                "{}{METADATA_PATH}{path}",
                url.origin().ascii_serialization()
            )
        }
        Err(_) => METADATA_PATH.to_string(),
    }
}

/// The principal an access token names: its `sub` (or `client_id`).
fn principal_of(claims: TokenClaims) -> Principal {
    let name = claims
        .subject
        .clone()
        .or_else(|| claims.client_id.clone())
        .unwrap_or_else(|| "oauth-client".to_string());
    Principal {
        name,
        subject: claims.subject,
        client_id: claims.client_id,
        scopes: Scopes::of(claims.scopes),
        proof: Proof::OAuth,
    }
}

/// Who may call: a cheap handle shared by every request.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<StaticTokens>,
    oauth: Option<OAuth>,
    /// The scope each tool needs, from the MCP server.
    scope_rules: ScopeRules,
    observer: Arc<dyn TransportObserver>,
}

impl Authenticator {
    pub fn new(
        tokens: Arc<StaticTokens>,
        oauth: Option<OAuth>,
        observer: Arc<dyn TransportObserver>,
    ) -> Self {
        Self {
            tokens,
            oauth,
            scope_rules: ScopeRules::default(),
            observer,
        }
    }

    /// OAuth's part, when it is on.
    pub fn oauth(&self) -> Option<&OAuth> {
        self.oauth.as_ref()
    }

    /// Every scope a principal could need here, for the metadata.
    pub fn scopes_supported(&self) -> Vec<String> {
        self.scope_rules.scopes()
    }

    /// The principal `token` names, or why it names none.
    async fn principal(&self, token: &str) -> Result<Principal, &'static str> {
        if let Some(principal) = self.tokens.authenticate(token) {
            return Ok(principal);
        }
        match &self.oauth {
            Some(oauth) => oauth
                .validator
                .validate(token)
                .await
                .map(principal_of)
                .map_err(|rejected| rejected.reason()),
            None => Err("unknown_token"),
        }
    }

    /// The `WWW-Authenticate` value of a 401 (`error` when a token was
    /// presented and refused).
    fn challenge(&self, error: Option<&str>) -> HeaderValue {
        let mut challenge = String::from("Bearer");
        let mut params = Vec::new();
        if let Some(error) = error {
            params.push(format!("error=\"{error}\""));
        }
        if let Some(oauth) = &self.oauth {
            params.push(format!("resource_metadata=\"{}\"", oauth.metadata_url));
        }
        if !params.is_empty() {
            challenge.push(' ');
            challenge.push_str(&params.join(", "));
        }
        HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer"))
    }

    /// Checks requests against the MCP server's `scope_rules`.
    pub fn with_scope_rules(mut self, scope_rules: ScopeRules) -> Self {
        self.scope_rules = scope_rules;
        self
    }

    /// The scope `operation` needs, if any.
    fn required_scope(&self, operation: &Operation) -> Option<String> {
        self.scope_rules
            .for_request(&operation.method, operation.tool.as_deref())
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The 401 for a request whose token names no principal; otherwise the
/// principal is handed on in the request's extensions (a step of the HTTP
/// transport's gate).
pub async fn authenticate(auth: &Authenticator, request: &mut Request) -> Option<Response> {
    let Some(token) = bearer(request.headers()) else {
        auth.observer.authentication_failed("missing_token");
        return Some(unauthorized(auth.challenge(None)));
    };
    match auth.principal(token).await {
        Ok(principal) => {
            // The connection leaves the unauthenticated budget.
            if let Some(gate) = request.extensions().get::<ConnectionGate>() {
                gate.authenticated();
            }
            // The token goes no further than this step.
            request.headers_mut().remove(header::AUTHORIZATION);
            request.extensions_mut().insert(Arc::new(principal));
            None
        }
        Err(reason) => {
            auth.observer.authentication_failed(reason);
            Some(unauthorized(auth.challenge(Some("invalid_token"))))
        }
    }
}

fn unauthorized(challenge: HeaderValue) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        "unauthorized",
    )
        .into_response()
}

/// The 403 `insufficient_scope` for an operation the principal's scopes do
/// not cover, once the body has said what it asks (a step of the HTTP
/// transport's gate).
pub fn scope_refusal(auth: &Authenticator, request: &Request) -> Option<Response> {
    let principal = request.extensions().get::<Arc<Principal>>();
    let operation = request.extensions().get::<Operation>();
    let missing = match (principal, operation) {
        (Some(principal), Some(operation)) => auth
            .required_scope(operation)
            .filter(|scope| !principal.may(scope))
            .map(|scope| (principal, operation, scope)),
        _ => None,
    };
    let (principal, operation, scope) = missing?;
    auth.observer.scope_refused(principal, operation, &scope);
    let mut challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
    if let Some(oauth) = &auth.oauth {
        challenge.push_str(&format!(", resource_metadata=\"{}\"", oauth.metadata_url));
    }
    Some(
        (
            StatusCode::FORBIDDEN,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer")),
            )],
            "insufficient_scope",
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(
            bearer(&headers("Bearer s3cret-token")),
            Some("s3cret-token")
        );
        assert_eq!(
            bearer(&headers("bearer s3cret-token")),
            Some("s3cret-token")
        );
        assert_eq!(
            bearer(&headers("BEARER s3cret-token")),
            Some("s3cret-token")
        );
    }

    #[test]
    fn the_metadata_is_also_served_where_the_audience_points() {
        let settings = crate::auth::OAuthSettings::new(
            "https://auth.example.com",
            "https://db.example.com/eros/mcp",
        );
        let oauth = OAuth::new(TokenValidator::new(settings).unwrap());
        assert_eq!(
            oauth.metadata_paths(),
            [
                "/.well-known/oauth-protected-resource",
                "/.well-known/oauth-protected-resource/eros/mcp",
                "/.well-known/oauth-protected-resource/mcp",
            ]
        );
    }

    #[test]
    fn the_metadata_url_keeps_the_resource_path() {
        assert_eq!(
            metadata_url("https://db.example.com/mcp"),
            "https://db.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn an_access_token_names_its_subject_or_else_its_client() {
        let claims = |subject: Option<&str>| TokenClaims {
            subject: subject.map(str::to_string),
            client_id: Some("eros-agent".into()),
            scopes: vec![identity::READ.into()],
            expires_at: std::time::SystemTime::now(),
        };
        assert_eq!(principal_of(claims(Some("alice"))).name, "alice");
        let client = principal_of(claims(None));
        assert_eq!(client.name, "eros-agent");
        assert!(client.may(identity::READ));
        assert!(!client.may(identity::WRITE));
        assert_eq!(client.proof, Proof::OAuth);
    }

    #[test]
    fn other_schemes_and_empty_tokens_carry_no_token() {
        assert_eq!(bearer(&headers("Basic s3cret-token")), None);
        assert_eq!(bearer(&headers("s3cret-token")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
