//! Authentication for the HTTP transport: every request to `/mcp` presents
//! `Authorization: Bearer <token>`, which names its principal (a static
//! token's entry, see [`crate::identity::tokens`]); without one it gets 401.
//! The principal travels in the request's extensions to the MCP server. A
//! request for something its scopes do not cover (a tool, the schema
//! resource, the prompt) gets 403 `insufficient_scope` naming the scope,
//! before anything runs. A refusal says nothing more, and no token is ever
//! logged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::observer::TransportObserver;
use crate::identity::tokens::StaticTokens;
use crate::identity::{self, Principal};

/// Who may call: a cheap handle shared by every request.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<StaticTokens>,
    /// The scope each tool needs, from the MCP server.
    tool_scopes: Arc<HashMap<String, String>>,
    observer: Arc<dyn TransportObserver>,
}

impl Authenticator {
    pub fn new(tokens: Arc<StaticTokens>, observer: Arc<dyn TransportObserver>) -> Self {
        Self {
            tokens,
            tool_scopes: Arc::default(),
            observer,
        }
    }

    /// Checks tool calls against `tool_scopes` (tool name to scope).
    pub fn with_tool_scopes(mut self, tool_scopes: HashMap<String, String>) -> Self {
        self.tool_scopes = Arc::new(tool_scopes);
        self
    }

    /// The scope `operation` needs, if any.
    fn required_scope<'a>(&'a self, operation: &'a Operation) -> Option<&'a str> {
        match operation.method.as_str() {
            "tools/call" => operation
                .tool
                .as_deref()
                .and_then(|tool| self.tool_scopes.get(tool))
                .map(String::as_str),
            "resources/read" | "prompts/get" => Some(identity::READ),
            _ => None,
        }
    }
}

/// What a JSON-RPC request asks for, read once from its body by the
/// transport for the layers inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub method: String,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
}

impl Operation {
    /// The operation of a request message; `None` for responses and
    /// notifications.
    pub fn of(message: &rmcp::model::ClientJsonRpcMessage) -> Option<Self> {
        use rmcp::model::{ClientRequest, JsonRpcMessage};
        let JsonRpcMessage::Request(request) = message else {
            return None;
        };
        let tool = match &request.request {
            ClientRequest::CallToolRequest(call) => Some(call.params.name.to_string()),
            _ => None,
        };
        Some(Self {
            method: request.request.method().to_string(),
            tool,
        })
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

/// axum middleware: 401 unless the request's token names a principal,
/// which is handed on in the request's extensions.
pub async fn authenticate(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(request.headers()) else {
        auth.observer.authentication_failed("missing_token");
        return unauthorized();
    };
    match auth.tokens.authenticate(token) {
        Some(principal) => {
            request.extensions_mut().insert(Arc::new(principal));
            next.run(request).await
        }
        None => {
            auth.observer.authentication_failed("unknown_token");
            unauthorized()
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        "unauthorized",
    )
        .into_response()
}

/// axum middleware, inside the one that reads the body: 403
/// `insufficient_scope` for an operation the principal's scopes do not
/// cover.
pub async fn require_scope(
    State(auth): State<Authenticator>,
    request: Request,
    next: Next,
) -> Response {
    let principal = request.extensions().get::<Arc<Principal>>();
    let operation = request.extensions().get::<Operation>();
    let missing = match (principal, operation) {
        (Some(principal), Some(operation)) => auth
            .required_scope(operation)
            .filter(|scope| !principal.may(scope))
            .map(|scope| (principal, operation, scope)),
        _ => None,
    };
    let Some((principal, operation, scope)) = missing else {
        return next.run(request).await;
    };
    auth.observer.scope_refused(principal, operation, scope);
    let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
    (
        StatusCode::FORBIDDEN,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer")),
        )],
        "insufficient_scope",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn other_schemes_and_empty_tokens_carry_no_token() {
        assert_eq!(bearer(&headers("Basic s3cret-token")), None);
        assert_eq!(bearer(&headers("s3cret-token")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
