//! DNS-rebinding protection for `/mcp`, checked before anything else and
//! stricter than rmcp's own check (which is turned off: its lists would be
//! copied with its configuration for every request, to check again what
//! this has checked):
//!
//! - exactly one `Host` header, well formed (`host`, `host:port` or
//!   `[v6]:port`, a port being digits), or 400 as RFC 9110 asks; its host
//!   must equal an `EROS_MCP_ALLOWED_HOSTS` entry, whose port, if it names
//!   one, must equal the request's (403 otherwise);
//! - an `Origin`, when present, must be a well-formed origin whose scheme,
//!   host and port match an `EROS_MCP_ALLOWED_ORIGINS` entry: `:*` allows
//!   any port, no port means the scheme's default (403 otherwise).
//!
//! rmcp reads `127.0.0.1:80.evil.com` as host `127.0.0.1` without a port,
//! so `http://127.0.0.1:*` let `http://127.0.0.1:80.evil.com` in; here a
//! port is digits or nothing, and anything else is refused.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A host and port as read from a `Host` header or an allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    /// Lower case, IPv6 without its brackets.
    host: String,
    port: Option<u16>,
}

/// A port: one to five digits that fit in 16 bits.
fn parse_port(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

/// A registered name or IPv4 address: letters, digits, `-`, `.`, `_`, `~`.
fn is_reg_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An IPv6 address as written between brackets.
fn is_ipv6(text: &str) -> bool {
    text.contains(':') && text.parse::<std::net::Ipv6Addr>().is_ok()
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; nothing else.
fn parse_authority(text: &str) -> Option<Authority> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !is_ipv6(host) {
            return None;
        }
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':')?)?),
        };
        (host, port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (text, None),
        }
    };
    if !text.starts_with('[') && !is_reg_name(host) {
        return None;
    }
    Some(Authority {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// An allowed-host entry: an authority, or a bare IPv6 address (`::1`).
fn parse_allowed_host(entry: &str) -> Option<Authority> {
    if is_ipv6(entry) {
        return Some(Authority {
            host: entry.to_ascii_lowercase(),
            port: None,
        });
    }
    parse_authority(entry)
}

/// Which ports an allowed origin admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OriginPort {
    Any,
    Exactly(u16),
}

/// An origin as serialized by a browser (RFC 6454): `scheme://authority`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// `null`: sandboxed frames, `file:` pages.
    Null,
    Tuple {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
}

fn parse_origin(text: &str) -> Option<Origin> {
    if text == "null" {
        return Some(Origin::Null);
    }
    let (scheme, authority) = text.split_once("://")?;
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return None;
    }
    let authority = parse_authority(authority)?;
    Some(Origin::Tuple {
        scheme: scheme.to_ascii_lowercase(),
        host: authority.host,
        port: authority.port,
    })
}

/// The port a scheme implies when an origin omits it.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// An allowed-origin entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowedOrigin {
    Null,
    Tuple {
        scheme: String,
        host: String,
        port: Option<OriginPort>,
    },
}

fn parse_allowed_origin(entry: &str) -> Option<AllowedOrigin> {
    let (base, any_port) = match entry.strip_suffix(":*") {
        Some(base) => (base, true),
        None => (entry, false),
    };
    match parse_origin(base)? {
        Origin::Null if !any_port => Some(AllowedOrigin::Null),
        Origin::Null => None,
        Origin::Tuple { port: Some(_), .. } if any_port => None,
        Origin::Tuple { scheme, host, port } => {
            let port = if any_port {
                Some(OriginPort::Any)
            } else {
                port.or_else(|| default_port(&scheme))
                    .map(OriginPort::Exactly)
            };
            Some(AllowedOrigin::Tuple { scheme, host, port })
        }
    }
}

impl AllowedOrigin {
    fn admits(&self, origin: &Origin) -> bool {
        match (self, origin) {
            (Self::Null, Origin::Null) => true,
            (
                Self::Tuple { scheme, host, port },
                Origin::Tuple {
                    scheme: o_scheme,
                    host: o_host,
                    port: o_port,
                },
            ) => {
                let o_port = o_port.or_else(|| default_port(o_scheme));
                scheme == o_scheme
                    && host == o_host
                    && match port {
                        Some(OriginPort::Any) => true,
                        Some(OriginPort::Exactly(allowed)) => o_port == Some(*allowed),
                        None => o_port.is_none(),
                    }
            }
            _ => false,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RebindingRefusal {
    #[error("Bad Request: a request needs exactly one Host header")]
    HostMissing,
    #[error("Bad Request: malformed Host header")]
    HostMalformed,
    #[error("Forbidden: Host header is not allowed (EROS_MCP_ALLOWED_HOSTS)")]
    HostNotAllowed,
    #[error("Forbidden: Origin header is not allowed (EROS_MCP_ALLOWED_ORIGINS)")]
    OriginNotAllowed,
}

impl RebindingRefusal {
    fn status(self) -> StatusCode {
        match self {
            Self::HostMissing | Self::HostMalformed => StatusCode::BAD_REQUEST,
            Self::HostNotAllowed | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
        }
    }
}

impl IntoResponse for RebindingRefusal {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

/// The allow-lists, parsed once at startup.
#[derive(Debug, Clone)]
pub struct RebindingGuard {
    /// `None`: any well-formed `Host`.
    hosts: Option<Vec<Authority>>,
    /// Empty: `Origin` is not checked.
    origins: Vec<AllowedOrigin>,
}

impl RebindingGuard {
    /// Parses the allow-lists; an entry that cannot be read is logged and
    /// allows nothing.
    pub fn new(allowed_hosts: &[String], allowed_origins: &[String]) -> Self {
        let hosts: Vec<Authority> = allowed_hosts
            .iter()
            .filter_map(|entry| {
                let parsed = parse_allowed_host(entry);
                if parsed.is_none() {
                    tracing::warn!(entry = %entry, "EROS_MCP_ALLOWED_HOSTS entry ignored: not a host or host:port");
                }
                parsed
            })
            .collect();
        let origins = allowed_origins
            .iter()
            .filter_map(|entry| {
                let parsed = parse_allowed_origin(entry);
                if parsed.is_none() {
                    tracing::warn!(entry = %entry, "EROS_MCP_ALLOWED_ORIGINS entry ignored: not an origin (scheme://host[:port|:*])");
                }
                parsed
            })
            .collect();
        // An empty list allows any Host; a list whose entries are all
        // unreadable allows none, never all.
        let hosts = (!allowed_hosts.is_empty()).then_some(hosts);
        Self { hosts, origins }
    }

    /// Whether the request's headers pass.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), RebindingRefusal> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let (Some(host), None) = (hosts.next(), hosts.next()) else {
            return Err(RebindingRefusal::HostMissing);
        };
        let host = host
            .to_str()
            .ok()
            .and_then(parse_authority)
            .ok_or(RebindingRefusal::HostMalformed)?;
        let host_allowed = self.hosts.as_ref().is_none_or(|hosts| {
            hosts.iter().any(|allowed| {
                allowed.host == host.host && allowed.port.is_none_or(|port| host.port == Some(port))
            })
        });
        if !host_allowed {
            return Err(RebindingRefusal::HostNotAllowed);
        }
        if self.origins.is_empty() {
            return Ok(());
        }
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let origin = match (origins.next(), origins.next()) {
            (None, _) => return Ok(()),
            (Some(origin), None) => origin,
            (Some(_), Some(_)) => return Err(RebindingRefusal::OriginNotAllowed),
        };
        let origin = origin
            .to_str()
            .ok()
            .and_then(parse_origin)
            .ok_or(RebindingRefusal::OriginNotAllowed)?;
        if self.origins.iter().any(|allowed| allowed.admits(&origin)) {
            Ok(())
        } else {
            Err(RebindingRefusal::OriginNotAllowed)
        }
    }
}

/// axum middleware: 400 or 403 unless `Host` and `Origin` pass.
pub async fn refuse_rebinding(
    State(guard): State<Arc<RebindingGuard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(
                host = ?request.headers().get(header::HOST),
                origin = ?request.headers().get(header::ORIGIN),
                "{refusal}"
            );
            refusal.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn defaults() -> RebindingGuard {
        let hosts = ["localhost", "127.0.0.1", "::1"].map(String::from);
        let origins =
            ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"].map(String::from);
        RebindingGuard::new(&hosts, &origins)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn host(value: &str) -> Result<(), RebindingRefusal> {
        defaults().check(&headers(&[("host", value)]))
    }

    fn origin(value: &str) -> Result<(), RebindingRefusal> {
        defaults().check(&headers(&[("host", "127.0.0.1:8080"), ("origin", value)]))
    }

    #[test]
    fn allowed_hosts_pass_with_or_without_a_port() {
        for value in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost:1",
            "LOCALHOST",
            "[::1]:8080",
        ] {
            assert_eq!(host(value), Ok(()), "{value}");
        }
    }

    #[test]
    fn a_missing_or_repeated_host_is_a_bad_request() {
        assert_eq!(
            defaults().check(&HeaderMap::new()),
            Err(RebindingRefusal::HostMissing)
        );
        assert_eq!(
            defaults().check(&headers(&[("host", "127.0.0.1"), ("host", "127.0.0.1")])),
            Err(RebindingRefusal::HostMissing)
        );
    }

    #[test]
    fn a_host_with_a_port_that_is_not_digits_is_a_bad_request() {
        for value in [
            "127.0.0.1:80.evil.com",
            "127.0.0.1:",
            "localhost:99999",
            "a@127.0.0.1",
        ] {
            assert_eq!(host(value), Err(RebindingRefusal::HostMalformed), "{value}");
        }
    }

    #[test]
    fn hosts_are_matched_exactly_not_by_prefix_or_suffix() {
        for value in [
            "127.0.0.1.evil.com",
            "evil-localhost",
            "localhost.evil.com",
            "127.0.0.10",
        ] {
            assert_eq!(
                host(value),
                Err(RebindingRefusal::HostNotAllowed),
                "{value}"
            );
        }
    }

    #[test]
    fn an_entry_with_a_port_allows_that_port_only() {
        let guard = RebindingGuard::new(&["mcp.example.com:8443".to_string()], &[]);
        assert_eq!(
            guard.check(&headers(&[("host", "mcp.example.com:8443")])),
            Ok(())
        );
        for value in ["mcp.example.com", "mcp.example.com:8444"] {
            assert_eq!(
                guard.check(&headers(&[("host", value)])),
                Err(RebindingRefusal::HostNotAllowed),
                "{value}"
            );
        }
    }

    #[test]
    fn a_wildcard_origin_port_matches_a_port_only() {
        assert_eq!(origin("http://127.0.0.1:3000"), Ok(()));
        assert_eq!(origin("http://127.0.0.1"), Ok(()));
        for value in [
            "http://127.0.0.1:80.evil.com",
            "http://127.0.0.1.evil.com",
            "http://127.0.0.1:3000/path",
            "http://evil.com#@127.0.0.1",
            "https://127.0.0.1:3000",
            "null",
        ] {
            assert_eq!(
                origin(value),
                Err(RebindingRefusal::OriginNotAllowed),
                "{value}"
            );
        }
    }

    #[test]
    fn an_origin_entry_without_a_port_means_the_default_port() {
        let guard = RebindingGuard::new(&[], &["https://app.example.com".to_string()]);
        let check = |value: &str| guard.check(&headers(&[("host", "x"), ("origin", value)]));
        assert_eq!(check("https://app.example.com"), Ok(()));
        assert_eq!(check("https://app.example.com:443"), Ok(()));
        assert_eq!(
            check("https://app.example.com:8443"),
            Err(RebindingRefusal::OriginNotAllowed)
        );
    }

    #[test]
    fn without_origin_a_request_passes() {
        assert_eq!(host("127.0.0.1:8080"), Ok(()));
    }
}
