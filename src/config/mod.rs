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
pub mod databases;
pub mod mcp;
pub mod metrics;
pub mod setting;

pub use audit::{AuditConfig, AuditEnv};
pub use auth::{AuthConfig, AuthEnv};
pub use database::{DatabaseConfig, DatabaseEnv};
pub use databases::{DatabaseSpec, DatabasesConfig, DatabasesError};
pub use mcp::{McpConfig, McpEnv, Transport};
pub use metrics::{MetricsConfig, MetricsEnv};
pub use setting::{ConfigError, Setting};

/// Every setting of the server, read once at startup.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub databases: DatabasesConfig,
    /// The `EROS_DB_*` variables as given: each database of a databases
    /// file starts from them.
    pub database_vars: Vec<(String, String)>,
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
        let database_vars = vars
            .iter()
            .filter(|(name, _)| name.starts_with(DatabaseConfig::PREFIX))
            .cloned()
            .collect();
        let config = Self {
            database: DatabaseConfig::from_vars(vars.clone())?,
            databases: DatabasesConfig::from_vars(vars.clone())?,
            database_vars,
            mcp: McpConfig::from_vars(vars.clone())?,
            auth: AuthConfig::from_vars(vars.clone())?,
            audit: AuditConfig::from_vars(vars.clone())?,
            metrics: MetricsConfig::from_vars(vars)?,
        };
        config
            .mcp
            .refuse_exposure_without_auth(config.auth.authenticates())?;
        config.refuse_files_the_databases_file_declares()?;
        Ok(config)
    }

    /// With a databases file, each database names its own tools and policy
    /// files there; the variables for the single database would be ignored.
    fn refuse_files_the_databases_file_declares(&self) -> Result<(), ConfigError> {
        if self.databases.file.is_none() {
            return Ok(());
        }
        let file = databases::databases_vars::file.variable();
        if let Some(tools) = &self.mcp.tools_file {
            return Err(mcp::mcp_vars::tools_file.invalid_because(
                &tools.display().to_string(),
                format!("empty when {file} is set (declare tools_file per database there)"),
            ));
        }
        if let Some(policy) = &self.auth.policy_file {
            return Err(auth::auth_vars::policy_file.invalid_because(
                &policy.display().to_string(),
                format!("empty when {file} is set (declare policy_file per database there)"),
            ));
        }
        Ok(())
    }

    /// The databases to serve: those of the databases file, or
    /// `EROS_DB_PATH` alone as the database `main`.
    pub fn database_specs(&self) -> Result<Vec<DatabaseSpec>, DatabasesError> {
        match &self.databases.file {
            Some(path) => databases::load(path, &self.database_vars),
            None => Ok(vec![DatabaseSpec::single(
                self.database.clone(),
                self.mcp.tools_file.clone(),
                self.auth.policy_file.clone(),
            )]),
        }
    }

    /// Every declared variable of every layer.
    pub fn settings() -> impl Iterator<Item = &'static Setting> {
        DatabaseConfig::SETTINGS
            .iter()
            .chain(DatabasesConfig::SETTINGS)
            .chain(McpConfig::SETTINGS)
            .chain(AuthConfig::SETTINGS)
            .chain(AuditConfig::SETTINGS)
            .chain(MetricsConfig::SETTINGS)
    }
}
