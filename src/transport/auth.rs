//! Bearer-token authentication for the HTTP transport. The comparison takes
//! the same time whatever the token, and a refusal says nothing about why.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The token every request must present as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct BearerToken(Arc<[u8]>);

impl BearerToken {
    pub fn new(token: &str) -> Self {
        Self(Arc::from(token.as_bytes()))
    }

    /// Whether `header` is `Bearer <this token>`.
    pub fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        let presented = header
            .map(HeaderValue::as_bytes)
            .and_then(|value| {
                value
                    .strip_prefix(b"Bearer ")
                    .or_else(|| value.strip_prefix(b"bearer "))
            })
            .unwrap_or(b"");
        // ct_eq is constant-time for equal lengths; a length mismatch is
        // already false and reveals only the length.
        bool::from(presented.ct_eq(&self.0))
    }
}

/// axum middleware: 401 unless the request carries the token.
pub async fn require_bearer(
    State(token): State<BearerToken>,
    request: Request,
    next: Next,
) -> Response {
    if token.accepts(request.headers().get(header::AUTHORIZATION)) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "unauthorized",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn the_right_token_is_accepted() {
        assert!(BearerToken::new("s3cret-token").accepts(Some(&header("Bearer s3cret-token"))));
    }

    #[test]
    fn a_wrong_or_missing_token_is_refused() {
        let token = BearerToken::new("s3cret-token");
        assert!(!token.accepts(Some(&header("Bearer s3cret-tokem"))));
        assert!(!token.accepts(Some(&header("Bearer s3cret"))));
        assert!(!token.accepts(Some(&header("s3cret-token"))));
        assert!(!token.accepts(Some(&header("Basic s3cret-token"))));
        assert!(!token.accepts(None));
    }
}
