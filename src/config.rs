//! Typed configuration, read once at startup from the environment (after an
//! optional `.env` file) and passed down explicitly.
//!
//! Every variable is parsed with `envy` into a raw struct whose field names
//! are the variable names without their prefix, then validated into the typed
//! structs the rest of the crate uses. A bad value stops the program with one
//! line naming the variable, the value and what is allowed.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of every database and pool variable.
pub const DB_PREFIX: &str = "EROS_DB_";

/// A configuration value that is not allowed, named so a person can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}={value:?}: {allowed}")]
pub struct ConfigError {
    /// The environment variable, with its prefix (`EROS_DB_POOL_SIZE`).
    pub variable: String,
    /// The value as it was given.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

/// `EROS_DB_*` variables as they come from the environment, with defaults.
///
/// Field names are the variable names without the prefix, lowercased; the
/// `.env.example` test relies on that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseEnv {
    pub path: PathBuf,
    pub pool_size: u32,
    pub pool_overflow: u32,
    pub pool_timeout: f64,
    pub conn_max_age: f64,
    pub pool_prewarm: u32,
    pub health_check: bool,
    pub health_check_interval: f64,
    pub max_retries: u32,
    pub retry_delay: f64,
    pub busy_timeout: f64,
    pub migrate: bool,
    pub read_only: bool,
    pub max_rows: u32,
    pub max_bytes: u64,
    pub query_timeout: f64,
}

impl Default for DatabaseEnv {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./database/eros_sd_main.db"),
            pool_size: 10,
            pool_overflow: 5,
            pool_timeout: 30.0,
            conn_max_age: 300.0,
            pool_prewarm: 3,
            health_check: true,
            health_check_interval: 60.0,
            max_retries: 3,
            retry_delay: 0.05,
            busy_timeout: 5.0,
            migrate: true,
            read_only: true,
            max_rows: 1000,
            max_bytes: 1_048_576,
            query_timeout: 30.0,
        }
    }
}

/// Upper bounds that keep a typo from becoming an outage.
const MAX_POOL_SIZE: u32 = 1000;
const MAX_OVERFLOW_FACTOR: u32 = 10;
const MAX_SECONDS: f64 = 86_400.0;

/// Validated database, pool and query-limit settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// SQLite file to serve; created (with its directory) when missing.
    pub path: PathBuf,
    /// Connections the pool keeps open.
    pub pool_size: u32,
    /// Extra connections opened under load and closed again when returned.
    pub max_overflow: u32,
    /// How long a checkout waits before failing as exhausted.
    pub checkout_timeout: Duration,
    /// Connections older than this are closed and replaced (recycled).
    pub connection_max_age: Duration,
    /// Connections opened at startup and kept open as a minimum.
    pub prewarm: u32,
    /// Ping (`SELECT 1`) every connection on checkout.
    pub health_check: bool,
    /// How often the background maintenance runs.
    pub maintenance_interval: Duration,
    /// Retries of a transient failure (open error, `SQLITE_BUSY` on a read).
    pub max_retries: u32,
    /// First retry delay; doubles on each further retry.
    pub retry_delay: Duration,
    /// SQLite's own wait on a locked database before `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// Apply migrations automatically at startup.
    pub migrate: bool,
    /// Only read tools are exposed; writes are refused by SQLite.
    pub read_only: bool,
    /// Most rows one tool result carries.
    pub max_rows: u32,
    /// Most bytes of values one tool result carries.
    pub max_bytes: u64,
    /// A statement running longer than this is interrupted.
    pub query_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseEnv::default()
            .validate()
            .expect("defaults are valid")
    }
}

impl DatabaseConfig {
    /// Reads `EROS_DB_*` from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads `EROS_DB_*` from the given pairs (other variables are ignored).
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(key, _)| key.starts_with(DB_PREFIX))
            .collect();
        let raw: DatabaseEnv = envy::prefixed(DB_PREFIX)
            .from_iter(vars.clone())
            .map_err(|err| explain_envy_error(DB_PREFIX, &vars, err))?;
        raw.validate()
    }

    /// Most connections open at once: the kept ones plus the overflow.
    pub fn max_connections(&self) -> u32 {
        self.pool_size + self.max_overflow
    }
}

impl DatabaseEnv {
    /// Checks ranges and turns seconds into durations.
    pub fn validate(self) -> Result<DatabaseConfig, ConfigError> {
        let bad = |name: &str, value: String, allowed: &str| ConfigError {
            variable: format!("{DB_PREFIX}{}", name.to_uppercase()),
            value,
            allowed: allowed.to_string(),
        };
        if self.path.as_os_str().is_empty() {
            return Err(bad("path", String::new(), "a path to an SQLite file"));
        }
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            return Err(bad(
                "pool_size",
                self.pool_size.to_string(),
                "a whole number from 1 to 1000",
            ));
        }
        if self.pool_overflow > self.pool_size * MAX_OVERFLOW_FACTOR {
            return Err(bad(
                "pool_overflow",
                self.pool_overflow.to_string(),
                &format!(
                    "a whole number from 0 to 10 times EROS_DB_POOL_SIZE ({})",
                    self.pool_size * MAX_OVERFLOW_FACTOR
                ),
            ));
        }
        if self.pool_prewarm > self.pool_size {
            return Err(bad(
                "pool_prewarm",
                self.pool_prewarm.to_string(),
                &format!(
                    "a whole number from 0 to EROS_DB_POOL_SIZE ({})",
                    self.pool_size
                ),
            ));
        }
        if self.max_rows == 0 {
            return Err(bad("max_rows", "0".into(), "a whole number of at least 1"));
        }
        if self.max_bytes < 1024 {
            return Err(bad(
                "max_bytes",
                self.max_bytes.to_string(),
                "a whole number of bytes, at least 1024",
            ));
        }
        let seconds = |name: &str, value: f64, min: f64| {
            if value.is_finite() && (min..=MAX_SECONDS).contains(&value) {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(bad(
                    name,
                    value.to_string(),
                    &format!("a number of seconds from {min} to {MAX_SECONDS}"),
                ))
            }
        };
        Ok(DatabaseConfig {
            checkout_timeout: seconds("pool_timeout", self.pool_timeout, 0.001)?,
            connection_max_age: seconds("conn_max_age", self.conn_max_age, 0.001)?,
            maintenance_interval: seconds(
                "health_check_interval",
                self.health_check_interval,
                0.01,
            )?,
            retry_delay: seconds("retry_delay", self.retry_delay, 0.0)?,
            busy_timeout: seconds("busy_timeout", self.busy_timeout, 0.0)?,
            query_timeout: seconds("query_timeout", self.query_timeout, 0.001)?,
            path: self.path,
            pool_size: self.pool_size,
            max_overflow: self.pool_overflow,
            prewarm: self.pool_prewarm,
            health_check: self.health_check,
            max_retries: self.max_retries,
            migrate: self.migrate,
            read_only: self.read_only,
            max_rows: self.max_rows,
            max_bytes: self.max_bytes,
        })
    }
}

/// Turns envy's message ("invalid digit ... while parsing value 'abc'
/// provided by pool_size") into a [`ConfigError`] naming the variable.
pub(crate) fn explain_envy_error(
    prefix: &str,
    vars: &[(String, String)],
    err: envy::Error,
) -> ConfigError {
    let message = err.to_string();
    let key = match &err {
        envy::Error::MissingValue(field) => Some(field.to_string()),
        envy::Error::Custom(text) => text
            .rsplit_once("provided by ")
            .map(|(_, key)| key.trim().to_string())
            .or_else(|| unknown_field(text)),
    };
    let Some(key) = key else {
        return ConfigError {
            variable: format!("{prefix}*"),
            value: String::new(),
            allowed: message,
        };
    };
    let variable = format!("{prefix}{}", key.to_uppercase());
    let value = vars
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&variable))
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let allowed = if message.contains("unknown field") {
        "not a known variable (see .env.example)".to_string()
    } else {
        allowed_values(&key).map_or(message, str::to_string)
    };
    ConfigError {
        variable,
        value,
        allowed,
    }
}

/// What each `EROS_DB_*` variable accepts, for error messages.
fn allowed_values(field: &str) -> Option<&'static str> {
    Some(match field.to_ascii_lowercase().as_str() {
        "pool_size" => "a whole number from 1 to 1000",
        "pool_overflow" => "a whole number from 0 to 10 times EROS_DB_POOL_SIZE",
        "pool_prewarm" => "a whole number from 0 to EROS_DB_POOL_SIZE",
        "max_retries" => "a whole number from 0 up",
        "max_rows" => "a whole number of at least 1",
        "max_bytes" => "a whole number of bytes, at least 1024",
        "health_check" | "migrate" | "read_only" => "true or false",
        "pool_timeout" | "conn_max_age" | "health_check_interval" | "query_timeout" => {
            "a number of seconds greater than 0 (fractions allowed)"
        }
        "retry_delay" | "busy_timeout" => "a number of seconds, 0 or more (fractions allowed)",
        _ => return None,
    })
}

fn unknown_field(text: &str) -> Option<String> {
    let rest = text.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_string)
}

impl std::fmt::Display for DatabaseConfig {
    /// The effective settings, one `VARIABLE=value` line each.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |d: Duration| d.as_secs_f64();
        let lines: [(&str, String); 16] = [
            ("PATH", self.path.display().to_string()),
            ("POOL_SIZE", self.pool_size.to_string()),
            ("POOL_OVERFLOW", self.max_overflow.to_string()),
            ("POOL_TIMEOUT", secs(self.checkout_timeout).to_string()),
            ("CONN_MAX_AGE", secs(self.connection_max_age).to_string()),
            ("POOL_PREWARM", self.prewarm.to_string()),
            ("HEALTH_CHECK", self.health_check.to_string()),
            (
                "HEALTH_CHECK_INTERVAL",
                secs(self.maintenance_interval).to_string(),
            ),
            ("MAX_RETRIES", self.max_retries.to_string()),
            ("RETRY_DELAY", secs(self.retry_delay).to_string()),
            ("BUSY_TIMEOUT", secs(self.busy_timeout).to_string()),
            ("MIGRATE", self.migrate.to_string()),
            ("READ_ONLY", self.read_only.to_string()),
            ("MAX_ROWS", self.max_rows.to_string()),
            ("MAX_BYTES", self.max_bytes.to_string()),
            ("QUERY_TIMEOUT", secs(self.query_timeout).to_string()),
        ];
        for (i, (name, value)) in lines.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{DB_PREFIX}{name}={value}")?;
        }
        Ok(())
    }
}
