//! `EROS_AUTH_*`: who may call the HTTP transport, declared once.

use super::setting::{settings, ConfigError, OptionalPath};

settings! {
    /// Validated authentication settings.
    pub struct AuthConfig;
    /// `EROS_AUTH_*` as `envy` reads them.
    pub struct AuthEnv;
    /// One [`super::Setting`] per `EROS_AUTH_*` variable.
    pub mod auth_vars;
    prefix = "EROS_AUTH_";

    /// Static bearer tokens as named principals with scopes (re-read on SIGHUP).
    tokens_file <- tokens_file: OptionalPath = "", "a path to a TOML file (empty: none)";
}

impl AuthConfig {
    /// No rules between these settings yet.
    fn relate(&mut self, _raw: &AuthEnv) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Whether these settings authenticate HTTP callers by themselves.
    pub fn authenticates(&self) -> bool {
        self.tokens_file.is_some()
    }
}
