//! Typed configuration, read once at startup from the environment (after an
//! optional `.env` file) and passed down explicitly.
//!
//! Each layer declares its variables once, in a table ([`setting`]):
//! [`database`] (`EROS_DB_*`), [`mcp`] (`EROS_MCP_*`), [`auth`]
//! (`EROS_AUTH_*`), [`audit`] (`EROS_AUDIT_*`), [`metrics`] (`EROS_METRICS_*`). `envy` reads each
//! prefix; every value is parsed and checked on its own, so a bad one stops the program with one line naming
//! the variable, the value and what is allowed. The edge ([`crate::app`],
//! `main`) turns the layers' configs into the typed settings each part of
//! the server is handed (`pool_settings`, `engine_settings`,
//! `oauth_settings`, `audit_settings`, ...).

pub mod audit;
pub mod auth;
pub mod database;
pub mod mcp;
pub mod metrics;
pub mod setting;

pub use audit::{AuditConfig, AuditEnv};
pub use auth::{AuthConfig, AuthEnv};
pub use database::{DatabaseConfig, DatabaseEnv};
pub use mcp::{McpConfig, McpEnv, Transport};
pub use metrics::{MetricsConfig, MetricsEnv};
pub use setting::{ConfigError, Setting};

/// Every setting of the server, read once at startup.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub mcp: McpConfig,
    pub auth: AuthConfig,
    pub audit: AuditConfig,
    pub metrics: MetricsConfig,
}

impl Config {
    /// Reads every `EROS_*` variable from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect::<Vec<_>>())
    }

    pub fn from_vars(vars: Vec<(String, String)>) -> Result<Self, ConfigError> {
        let config = Self {
            database: DatabaseConfig::from_vars(vars.clone())?,
            mcp: McpConfig::from_vars(vars.clone())?,
            auth: AuthConfig::from_vars(vars.clone())?,
            audit: AuditConfig::from_vars(vars.clone())?,
            metrics: MetricsConfig::from_vars(vars)?,
        };
        config
            .mcp
            .refuse_exposure_without_auth(config.auth.authenticates())?;
        Ok(config)
    }

    /// Every declared variable of every layer.
    pub fn settings() -> impl Iterator<Item = &'static Setting> {
        DatabaseConfig::SETTINGS
            .iter()
            .chain(McpConfig::SETTINGS)
            .chain(AuthConfig::SETTINGS)
            .chain(AuditConfig::SETTINGS)
            .chain(MetricsConfig::SETTINGS)
    }
}
