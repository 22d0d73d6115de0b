//! Fetching the authorization server's JSON documents (its metadata and its
//! key set): which URLs may be fetched at all (https, or plain http only on a
//! loopback host), and fetching one with a timeout, a size cap and no
//! redirect that leaves those rules.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

/// Why a URL of the authorization server is not one this server fetches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("not an absolute URL")]
    NotAUrl,
    #[error("scheme {0}: only https:// (or http:// on a loopback host)")]
    Scheme(String),
    #[error(
        "http:// is accepted only on a loopback host (127.0.0.0/8, ::1, localhost); use https://"
    )]
    PlainHttpOffLoopback,
    #[error("a URL with credentials in it")]
    Credentials,
    #[error("a URL with a #fragment")]
    Fragment,
}

/// Whether `host` (as [`Url::host_str`] gives it, IPv6 in brackets) is this
/// machine: 127.0.0.0/8, ::1 or `localhost`. Traffic to it never leaves the
/// host, so plain http there cannot be read or changed on a network.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parses `text` as a URL this server may fetch from or trust as an issuer:
/// `https://`, or `http://` on a loopback host (a token's keys fetched in
/// the clear could be swapped by anyone on the path).
pub fn fetchable_url(text: &str) -> Result<Url, UrlRefused> {
    let url = Url::parse(text).map_err(|_| UrlRefused::NotAUrl)?;
    let host = url.host_str().ok_or(UrlRefused::NotAUrl)?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(host) => {}
        "http" => return Err(UrlRefused::PlainHttpOffLoopback),
        other => return Err(UrlRefused::Scheme(other.to_string())),
    }
    // Credentials in a URL would end up in logs and error messages.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefused::Credentials);
    }
    if url.fragment().is_some() {
        return Err(UrlRefused::Fragment);
    }
    Ok(url)
}

/// Why a document could not be had. Names the URL, never a token.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {reason}")]
    Refused { url: String, reason: UrlRefused },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: {error}")]
    Http { url: String, error: String },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the document is larger than {max_bytes} bytes")]
    TooLarge { url: String, max_bytes: usize },
}

/// How the authorization server's documents are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// The whole request, from connecting to the last byte of the body.
    pub timeout: Duration,
    /// The largest body read; a bigger one is an error, not truncated.
    pub max_bytes: usize,
}

/// Most redirects followed for one document.
const MAX_REDIRECTS: usize = 3;

/// The HTTP client for the authorization server: the timeout, and
/// redirects followed only to URLs [`fetchable_url`] accepts (reqwest would
/// otherwise follow an https metadata URL to a plain http one).
pub fn client(limits: FetchLimits) -> Result<reqwest::Client, reqwest::Error> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if let Err(refused) = fetchable_url(attempt.url().as_str()) {
            let message = format!("redirected to {}: {refused}", attempt.url());
            attempt.error(message)
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .timeout(limits.timeout)
        .redirect(policy)
        // Fetches are minutes apart: a kept connection would only be found
        // closed (or the issuer restarted behind it) when next used.
        .pool_max_idle_per_host(0)
        .user_agent(concat!("eros-mcp/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// GETs `url` and returns its body, at most `limits.max_bytes` of it.
pub async fn fetch_document(
    client: &reqwest::Client,
    url: &Url,
    limits: FetchLimits,
) -> Result<Vec<u8>, FetchError> {
    let failed = |error: reqwest::Error| {
        if error.is_timeout() {
            FetchError::Timeout {
                url: url.to_string(),
                timeout: limits.timeout,
            }
        } else {
            FetchError::Http {
                url: url.to_string(),
                error: error_chain(&error),
            }
        }
    };
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(failed)?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_string(),
        max_bytes: limits.max_bytes,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limits.max_bytes as u64)
    {
        return Err(too_large());
    }
    // Read chunk by chunk: a server that sends no length (or lies about it)
    // is cut off at the cap instead of filling memory.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > limits.max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its causes on one line ("error sending request: connection
/// refused"): reqwest's own message alone rarely says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_this_machine_only() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "localhost.example.com",
            "10.0.0.1",
            "128.0.0.1",
            "[::2]",
            "0.0.0.0",
            "[::]",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn https_is_fetchable_anywhere_http_only_on_loopback() {
        assert!(fetchable_url("https://auth.example.com/tenant").is_ok());
        assert!(fetchable_url("http://127.0.0.1:8443/").is_ok());
        assert!(fetchable_url("http://localhost:9000").is_ok());
        assert!(fetchable_url("http://[::1]:9000/jwks").is_ok());
        assert_eq!(
            fetchable_url("http://auth.example.com"),
            Err(UrlRefused::PlainHttpOffLoopback)
        );
        assert_eq!(
            fetchable_url("http://127.0.0.1.nip.io"),
            Err(UrlRefused::PlainHttpOffLoopback)
        );
        assert_eq!(
            fetchable_url("ftp://auth.example.com"),
            Err(UrlRefused::Scheme("ftp".into()))
        );
        assert_eq!(fetchable_url("auth.example.com"), Err(UrlRefused::NotAUrl));
        assert_eq!(
            fetchable_url("file:///etc/passwd"),
            Err(UrlRefused::NotAUrl)
        );
        assert_eq!(
            fetchable_url("https://user:pw@auth.example.com"),
            Err(UrlRefused::Credentials)
        );
        assert_eq!(
            fetchable_url("https://auth.example.com/#x"),
            Err(UrlRefused::Fragment)
        );
    }
}
