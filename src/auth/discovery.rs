//! The authorization server's metadata: where its key set is, found from
//! its issuer URL by RFC 8414 (`/.well-known/oauth-authorization-server`)
//! and then OpenID Connect Discovery (`/.well-known/openid-configuration`).
//! A document whose `issuer` is not exactly the configured one is refused
//! (RFC 8414 section 3.3): it would let one server name another's keys.

use reqwest::Url;
use serde::Deserialize;

use super::fetch::{fetch_document, fetchable_url, FetchError, FetchLimits, UrlRefused};

/// Why the key set's URL could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("issuer {issuer:?}: {reason}")]
    BadIssuer { issuer: String, reason: UrlRefused },
    /// No metadata document could be had; the last attempt's error.
    #[error("no authorization server metadata: {0}")]
    Unreachable(FetchError),
    #[error("{url}: not authorization server metadata: {error}")]
    NotMetadata { url: String, error: String },
    #[error("{url} names issuer {found:?}, not the configured {expected:?}")]
    IssuerMismatch {
        url: String,
        expected: String,
        found: String,
    },
    #[error("{url}: jwks_uri {jwks_uri:?}: {reason}")]
    BadJwksUri {
        url: String,
        jwks_uri: String,
        reason: UrlRefused,
    },
}

/// The part of the metadata this server reads.
#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

/// The metadata URLs of `issuer`, in the order they are tried: RFC 8414
/// inserts the well-known segment before the issuer's path, OpenID
/// Discovery appends it after.
pub fn metadata_urls(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let with_path = |path: String| {
        let mut url = issuer.clone();
        url.set_path(&path);
        url.set_query(None);
        url
    };
    [
        with_path(format!("/.well-known/oauth-authorization-server{path}")),
        with_path(format!("{path}/.well-known/openid-configuration")),
    ]
}

/// Finds the `jwks_uri` of `issuer` from its metadata.
pub async fn discover_jwks_uri(
    client: &reqwest::Client,
    issuer: &str,
    limits: FetchLimits,
) -> Result<Url, DiscoveryError> {
    let issuer_url = fetchable_url(issuer).map_err(|reason| DiscoveryError::BadIssuer {
        issuer: issuer.to_string(),
        reason,
    })?;
    let mut last_error = None;
    for url in metadata_urls(&issuer_url) {
        // A server may offer only one of the two documents: a failure to
        // fetch one tries the other; a document that says the wrong thing
        // is an error of its own.
        let body = match fetch_document(client, &url, limits).await {
            Ok(body) => body,
            Err(error) => {
                tracing::debug!(%url, %error, "no authorization server metadata here");
                last_error = Some(error);
                continue;
            }
        };
        return jwks_uri_of(&url, issuer, &body);
    }
    Err(DiscoveryError::Unreachable(
        last_error.expect("there are two metadata URLs"),
    ))
}

/// The `jwks_uri` of the metadata document `body` fetched from `url`,
/// after checking it names `issuer`.
fn jwks_uri_of(url: &Url, issuer: &str, body: &[u8]) -> Result<Url, DiscoveryError> {
    let metadata: Metadata =
        serde_json::from_slice(body).map_err(|error| DiscoveryError::NotMetadata {
            url: url.to_string(),
            error: error.to_string(),
        })?;
    if metadata.issuer != issuer {
        return Err(DiscoveryError::IssuerMismatch {
            url: url.to_string(),
            expected: issuer.to_string(),
            found: metadata.issuer,
        });
    }
    fetchable_url(&metadata.jwks_uri).map_err(|reason| DiscoveryError::BadJwksUri {
        url: url.to_string(),
        jwks_uri: metadata.jwks_uri,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(issuer: &str) -> [String; 2] {
        metadata_urls(&Url::parse(issuer).unwrap()).map(|url| url.to_string())
    }

    #[test]
    fn an_issuer_without_a_path_has_its_documents_at_the_root() {
        for issuer in ["https://as.example.com", "https://as.example.com/"] {
            assert_eq!(
                urls(issuer),
                [
                    "https://as.example.com/.well-known/oauth-authorization-server",
                    "https://as.example.com/.well-known/openid-configuration",
                ]
            );
        }
    }

    #[test]
    fn rfc_8414_inserts_the_well_known_segment_openid_appends_it() {
        assert_eq!(
            urls("https://as.example.com:8443/tenants/a"),
            [
                "https://as.example.com:8443/.well-known/oauth-authorization-server/tenants/a",
                "https://as.example.com:8443/tenants/a/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn metadata_must_name_the_configured_issuer_and_a_fetchable_key_set() {
        let url = Url::parse("https://as.example.com/.well-known/openid-configuration").unwrap();
        let doc = |issuer: &str, jwks: &str| {
            serde_json::json!({ "issuer": issuer, "jwks_uri": jwks }).to_string()
        };
        let good = doc("https://as.example.com", "https://as.example.com/jwks");
        assert_eq!(
            jwks_uri_of(&url, "https://as.example.com", good.as_bytes())
                .unwrap()
                .as_str(),
            "https://as.example.com/jwks"
        );
        // A trailing slash is a different issuer: the comparison is exact.
        let slash = doc("https://as.example.com/", "https://as.example.com/jwks");
        assert!(matches!(
            jwks_uri_of(&url, "https://as.example.com", slash.as_bytes()),
            Err(DiscoveryError::IssuerMismatch { .. })
        ));
        let cleartext = doc("https://as.example.com", "http://as.example.com/jwks");
        assert!(matches!(
            jwks_uri_of(&url, "https://as.example.com", cleartext.as_bytes()),
            Err(DiscoveryError::BadJwksUri { .. })
        ));
        assert!(matches!(
            jwks_uri_of(&url, "https://as.example.com", b"<html>"),
            Err(DiscoveryError::NotMetadata { .. })
        ));
    }
}
