//! `EROS_AUTH_*`: who may call the HTTP transport: the OAuth 2.1
//! authorization server whose access tokens are accepted (its issuer, this
//! server's audience, optionally its key set URL), handed to the transport
//! as [`OAuthSettings`], the static tokens file, and the column and table
//! policy file; declared once.

use crate::auth::fetch::fetchable_url;
use crate::auth::OAuthSettings;

use super::setting::{settings, ConfigError, OptionalPath, OptionalText, Setting};

/// What the issuer and key set URLs accept, for error messages.
const SECURE_URL: &str = "an https:// URL (http:// only on a loopback host: 127.0.0.0/8, ::1, \
                          localhost)";

settings! {
    /// Validated auth settings.
    pub struct AuthConfig;
    /// `EROS_AUTH_*` as `envy` reads them.
    pub struct AuthEnv;
    /// One [`super::Setting`] per `EROS_AUTH_*` variable.
    pub mod auth_vars;
    prefix = "EROS_AUTH_";

    /// The OAuth 2.1 authorization server whose JWT access tokens are accepted: its issuer URL,
    /// exactly as the tokens' `iss` says it; empty: OAuth off.
    issuer <- issuer: OptionalText = "",
        "an https:// URL (http:// only on a loopback host), or empty for OAuth off";
    /// This server's canonical resource URI (RFC 8707): the `aud` a token
    /// must name. Required with an issuer.
    audience <- audience: OptionalText = "",
        "an absolute URI without #fragment, such as https://db.example.com/mcp; required with EROS_AUTH_ISSUER";
    /// The issuer's key set (JWKS) URL; empty: discovered from the issuer's metadata (RFC 8414,
    /// then OpenID).
    jwks_url <- jwks_url: OptionalText = "",
        "an https:// URL (http:// only on a loopback host), or empty to discover it from EROS_AUTH_ISSUER";
    /// TOML file of static bearer tokens as named principals with scopes (SHA-256 of each
    /// token; re-read on SIGHUP); empty: none.
    tokens_file <- tokens_file: OptionalPath = "", "a path to a TOML file (empty: none)";
    /// TOML file of per-principal quotas: calls a minute, calls at once, database time, rows
    /// and bytes a minute (see `examples/quotas.toml`; re-read on SIGHUP and when it changes);
    /// empty: none.
    quotas_file <- quotas_file: OptionalPath = "", "a path to a TOML file (empty: none)";
    /// TOML file of column and table policies keyed by scope (see `examples/policy.toml`);
    /// checked against the database at startup; empty: none.
    policy_file <- policy_file: OptionalPath = "", "a path to a TOML file (empty: none)";
}

impl AuthConfig {
    /// The rules of each URL, and between the settings: an audience and a
    /// key set URL mean something only with an issuer, and an issuer needs
    /// an audience (without one, a token for any server would do).
    fn relate(&mut self, _raw: &AuthEnv) -> Result<(), ConfigError> {
        let secure = |setting: &Setting, value: &Option<String>| match value {
            Some(url) => fetchable_url(url).map(drop).map_err(|refused| {
                setting.invalid_because(url, format!("{refused}: {SECURE_URL}"))
            }),
            None => Ok(()),
        };
        secure(&auth_vars::issuer, &self.issuer)?;
        secure(&auth_vars::jwks_url, &self.jwks_url)?;
        if let Some(audience) = &self.audience {
            let url = reqwest::Url::parse(audience);
            if url.is_err() || url.is_ok_and(|url| url.fragment().is_some()) {
                return Err(auth_vars::audience.invalid(audience));
            }
        }
        let unused_without_issuer = [
            (&auth_vars::audience, &self.audience),
            (&auth_vars::jwks_url, &self.jwks_url),
        ];
        match &self.issuer {
            Some(_) if self.audience.is_none() => Err(auth_vars::audience.invalid_because(
                "",
                format!(
                    "this server's canonical resource URI, required when {} is set",
                    auth_vars::issuer.variable()
                ),
            )),
            Some(_) => Ok(()),
            None => match unused_without_issuer
                .into_iter()
                .find_map(|(setting, value)| Some((setting, value.as_ref()?)))
            {
                Some((setting, value)) => Err(setting.invalid_because(
                    value,
                    format!(
                        "empty unless {} is set (OAuth is off without it)",
                        auth_vars::issuer.variable()
                    ),
                )),
                None => Ok(()),
            },
        }
    }

    /// Whether these settings authenticate HTTP callers by themselves.
    pub fn authenticates(&self) -> bool {
        self.tokens_file.is_some() || self.issuer.is_some()
    }

    /// What token validation needs, with the default limits; `None` when
    /// OAuth is off.
    pub fn oauth_settings(&self) -> Option<OAuthSettings> {
        self.layers().oauth
    }

    /// Every part's settings, the configuration taken apart field by field
    /// so a new setting must be placed here.
    pub fn layers(&self) -> AuthLayers {
        let AuthConfig {
            issuer,
            audience,
            jwks_url,
            tokens_file,
            quotas_file,
            policy_file,
        } = self.clone();
        let oauth = match (issuer, audience) {
            (Some(issuer), Some(audience)) => Some(OAuthSettings {
                jwks_url,
                ..OAuthSettings::new(issuer, audience)
            }),
            _ => None,
        };
        AuthLayers {
            oauth,
            tokens_file,
            quotas_file,
            policy_file,
        }
    }
}

/// The settings of each part `EROS_AUTH_*` configures.
#[derive(Debug, Clone)]
pub struct AuthLayers {
    /// Token validation; `None` when OAuth is off.
    pub oauth: Option<OAuthSettings>,
    /// Static bearer tokens as named principals.
    pub tokens_file: Option<std::path::PathBuf>,
    /// Per-principal quotas.
    pub quotas_file: Option<std::path::PathBuf>,
    /// Column and table policies.
    pub policy_file: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        AuthConfig::from_vars(
            vars.iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        )
    }

    #[test]
    fn oauth_is_off_by_default() {
        assert_eq!(AuthConfig::default().oauth_settings(), None);
        assert_eq!(
            config(&[("EROS_AUTH_ISSUER", "")])
                .unwrap()
                .oauth_settings(),
            None
        );
    }

    #[test]
    fn an_issuer_and_audience_give_the_transport_its_settings() {
        let settings = config(&[
            ("EROS_AUTH_ISSUER", "https://auth.example.com/realms/eros"),
            ("EROS_AUTH_AUDIENCE", "https://db.example.com/mcp"),
        ])
        .unwrap()
        .oauth_settings()
        .unwrap();
        assert_eq!(settings.issuer, "https://auth.example.com/realms/eros");
        assert_eq!(settings.audience, "https://db.example.com/mcp");
        assert_eq!(settings.jwks_url, None);
        assert_eq!(settings.leeway, crate::auth::DEFAULT_LEEWAY);
    }

    #[test]
    fn plain_http_is_accepted_only_on_loopback() {
        for issuer in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/x",
            "http://[::1]:9000",
        ] {
            let ok = config(&[
                ("EROS_AUTH_ISSUER", issuer),
                ("EROS_AUTH_AUDIENCE", "http://127.0.0.1:8080/mcp"),
            ]);
            assert!(ok.is_ok(), "{issuer}: {ok:?}");
        }
        let err = config(&[
            ("EROS_AUTH_ISSUER", "http://auth.example.com"),
            ("EROS_AUTH_AUDIENCE", "https://db.example.com/mcp"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "EROS_AUTH_ISSUER");
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(err.to_string().contains("https://"), "{err}");

        let err = config(&[
            ("EROS_AUTH_ISSUER", "https://auth.example.com"),
            ("EROS_AUTH_AUDIENCE", "https://db.example.com/mcp"),
            ("EROS_AUTH_JWKS_URL", "http://auth.example.com/jwks"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "EROS_AUTH_JWKS_URL");
    }

    #[test]
    fn an_issuer_needs_an_audience_and_the_others_need_an_issuer() {
        let err = config(&[("EROS_AUTH_ISSUER", "https://auth.example.com")]).unwrap_err();
        assert_eq!(err.variable, "EROS_AUTH_AUDIENCE");
        assert!(err.allowed.contains("required"), "{err}");

        let err = config(&[("EROS_AUTH_AUDIENCE", "https://db.example.com/mcp")]).unwrap_err();
        assert_eq!(err.variable, "EROS_AUTH_AUDIENCE");
        let err = config(&[("EROS_AUTH_JWKS_URL", "https://auth.example.com/jwks")]).unwrap_err();
        assert_eq!(err.variable, "EROS_AUTH_JWKS_URL");
    }

    #[test]
    fn the_audience_is_an_absolute_uri_without_a_fragment() {
        for audience in ["db.example.com/mcp", "https://db.example.com/mcp#x"] {
            let err = config(&[
                ("EROS_AUTH_ISSUER", "https://auth.example.com"),
                ("EROS_AUTH_AUDIENCE", audience),
            ])
            .unwrap_err();
            assert_eq!(err.variable, "EROS_AUTH_AUDIENCE", "{audience}");
        }
    }

    #[test]
    fn a_misspelt_variable_is_refused() {
        let err = config(&[("EROS_AUTH_ISUER", "https://auth.example.com")]).unwrap_err();
        assert_eq!(err.variable, "EROS_AUTH_ISUER");
    }
}
