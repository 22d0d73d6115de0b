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
    /// Unset or empty: 3, or the pool size when it is smaller.
    #[serde(deserialize_with = "empty_is_none")]
    pub pool_prewarm: Option<u32>,
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
    pub heap_limit_mib: u64,
    pub hard_heap_limit_mib: u64,
    pub max_value_bytes: u64,
    pub max_sql_bytes: u32,
}

impl Default for DatabaseEnv {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./database/eros_sd_main.db"),
            pool_size: 10,
            pool_overflow: 5,
            pool_timeout: 30.0,
            conn_max_age: 300.0,
            pool_prewarm: None,
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
            heap_limit_mib: 8,
            hard_heap_limit_mib: 128,
            max_value_bytes: 8 * 1024 * 1024,
            max_sql_bytes: 100_000,
        }
    }
}

/// Upper bounds that keep a typo from becoming an outage.
const MAX_POOL_SIZE: u32 = 1000;
const MAX_OVERFLOW_FACTOR: u32 = 10;
const MAX_SECONDS: f64 = 86_400.0;
const MIB: u64 = 1024 * 1024;
/// `SQLITE_LIMIT_LENGTH` bounds: SQLite's own ceiling is 2^31 - 1.
const MIN_VALUE_BYTES: u64 = 64 * 1024;
const MAX_VALUE_BYTES: u64 = 1_000_000_000;
const VALUE_BYTES_ALLOWED: &str = "a whole number of bytes from 65536 to 1000000000";
/// `SQLITE_LIMIT_SQL_LENGTH` bounds.
const MIN_SQL_BYTES: u32 = 1024;
const MAX_SQL_BYTES: u32 = 10_000_000;
const SQL_BYTES_ALLOWED: &str = "a whole number of bytes from 1024 to 10000000";
/// Below this the server's own statements (schema, migrations) may fail.
const MIN_HARD_HEAP_MIB: u64 = 16;

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
    /// SQLite's soft heap limit for the whole process (page caches shrink to
    /// stay under it); 0 means no limit.
    pub heap_limit_bytes: u64,
    /// SQLite's hard heap ceiling for the whole process: an allocation past
    /// it fails the statement with `SQLITE_NOMEM` (sorts and temporary
    /// tables live in memory, so this bounds them too).
    pub hard_heap_limit_bytes: u64,
    /// Largest string or BLOB any statement may build or read
    /// (`SQLITE_LIMIT_LENGTH`); past it the statement fails with `SQLITE_TOOBIG`.
    pub max_value_bytes: u64,
    /// Longest SQL text a statement may have (`SQLITE_LIMIT_SQL_LENGTH`).
    pub max_sql_bytes: u32,
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
        parse_prefixed::<DatabaseEnv>(DB_PREFIX, vars)?.validate()
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
        let prewarm = self
            .pool_prewarm
            .unwrap_or(DEFAULT_PREWARM.min(self.pool_size));
        if prewarm > self.pool_size {
            return Err(bad(
                "pool_prewarm",
                prewarm.to_string(),
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
        if !(MIN_VALUE_BYTES..=MAX_VALUE_BYTES).contains(&self.max_value_bytes) {
            return Err(bad(
                "max_value_bytes",
                self.max_value_bytes.to_string(),
                VALUE_BYTES_ALLOWED,
            ));
        }
        if !(MIN_SQL_BYTES..=MAX_SQL_BYTES).contains(&self.max_sql_bytes) {
            return Err(bad(
                "max_sql_bytes",
                self.max_sql_bytes.to_string(),
                SQL_BYTES_ALLOWED,
            ));
        }
        if self.hard_heap_limit_mib < MIN_HARD_HEAP_MIB
            || self.hard_heap_limit_mib <= self.heap_limit_mib
        {
            return Err(bad(
                "hard_heap_limit_mib",
                self.hard_heap_limit_mib.to_string(),
                &format!(
                    "a whole number of MiB, at least {MIN_HARD_HEAP_MIB} and more than \
                     EROS_DB_HEAP_LIMIT_MIB ({})",
                    self.heap_limit_mib
                ),
            ));
        }
        let seconds = |name: &str, value: f64, min: f64| seconds_in(DB_PREFIX, name, value, min);
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
            prewarm,
            health_check: self.health_check,
            max_retries: self.max_retries,
            migrate: self.migrate,
            read_only: self.read_only,
            max_rows: self.max_rows,
            max_bytes: self.max_bytes,
            heap_limit_bytes: self.heap_limit_mib.saturating_mul(MIB),
            hard_heap_limit_bytes: self.hard_heap_limit_mib.saturating_mul(MIB),
            max_value_bytes: self.max_value_bytes,
            max_sql_bytes: self.max_sql_bytes,
        })
    }
}

/// A number of seconds from `min` to a day, as a duration; otherwise the
/// error naming `prefix` + `name`.
fn seconds_in(prefix: &str, name: &str, value: f64, min: f64) -> Result<Duration, ConfigError> {
    if value.is_finite() && (min..=MAX_SECONDS).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(ConfigError {
            variable: format!("{prefix}{}", name.to_uppercase()),
            value: value.to_string(),
            allowed: format!("a number of seconds from {min} to {MAX_SECONDS}"),
        })
    }
}

/// Reads the variables starting with `prefix` into `T` with envy.
pub(crate) fn parse_prefixed<T: serde::de::DeserializeOwned>(
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(key, _)| key.starts_with(prefix))
        .collect();
    envy::prefixed(prefix)
        .from_iter(vars.clone())
        .map_err(|err| explain_envy_error(prefix, &vars, err))
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
            .or_else(|| unknown_field(text))
            .or_else(|| variable_with_value(prefix, vars, text)),
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
        "heap_limit_mib" => "a whole number of MiB, 0 for no limit",
        "hard_heap_limit_mib" => {
            "a whole number of MiB, at least 16 and more than EROS_DB_HEAP_LIMIT_MIB"
        }
        "max_value_bytes" => VALUE_BYTES_ALLOWED,
        "max_sql_bytes" => SQL_BYTES_ALLOWED,
        "max_rows" => "a whole number of at least 1",
        "max_bytes" => "a whole number of bytes, at least 1024",
        "health_check" | "migrate" | "read_only" => "true or false",
        "pool_timeout" | "conn_max_age" | "health_check_interval" | "query_timeout" => {
            "a number of seconds greater than 0 (fractions allowed)"
        }
        "retry_delay" | "busy_timeout" => "a number of seconds, 0 or more (fractions allowed)",
        "transport" => "stdio or http",
        "row_format" => "csv or json",
        "http_addr" | "addr" => "an address such as 127.0.0.1:8080",
        "allow_insecure" | "stateless" => "true or false",
        "max_body_bytes" => "a whole number of bytes, at least 1024",
        "shutdown_grace" => "a number of seconds, 0 or more (fractions allowed)",
        "max_in_flight" | "max_sessions" | "max_connections" => "a whole number from 1 to 1000000",
        "session_idle_timeout" => "a number of seconds from 1 to 86400 (fractions allowed)",
        "header_timeout" | "body_timeout" => {
            "a number of seconds from 0.1 to 86400 (fractions allowed)"
        }
        _ => return None,
    })
}

/// For messages that quote the bad value but not the variable
/// ("unknown variant `x`"), the variable holding that value.
fn variable_with_value(prefix: &str, vars: &[(String, String)], text: &str) -> Option<String> {
    let quoted = text.split('`').nth(1)?;
    vars.iter()
        .find(|(_, value)| value == quoted)
        .map(|(name, _)| name[prefix.len()..].to_ascii_lowercase())
}

fn unknown_field(text: &str) -> Option<String> {
    let rest = text.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_string)
}

impl std::fmt::Display for DatabaseConfig {
    /// The effective settings, one `VARIABLE=value` line each.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |d: Duration| d.as_secs_f64();
        let lines: [(&str, String); 20] = [
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
            ("HEAP_LIMIT_MIB", (self.heap_limit_bytes / MIB).to_string()),
            (
                "HARD_HEAP_LIMIT_MIB",
                (self.hard_heap_limit_bytes / MIB).to_string(),
            ),
            ("MAX_VALUE_BYTES", self.max_value_bytes.to_string()),
            ("MAX_SQL_BYTES", self.max_sql_bytes.to_string()),
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

/// Prefix of the MCP transport variables.
pub const MCP_PREFIX: &str = "EROS_MCP_";

/// How agents reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One client over standard input and output (Claude Desktop, Claude Code).
    Stdio,
    /// Streamable HTTP at `/mcp`.
    Http,
}

/// How query rows are sent to agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowFormat {
    /// One text block of typed CSV plus a line of metadata: one copy of the
    /// rows, read by every client (see [`crate::mcp::rows::csv`]).
    #[default]
    Csv,
    /// `structuredContent` with an output schema, and the same JSON again
    /// as text for clients that read only text: for programs, not models.
    Json,
}

/// An unset or empty variable is `None` (`.env.example` shows such a
/// variable as `NAME=`).
fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(number) => number
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid value `{number}`"))),
    }
}

/// Connections opened at startup unless `EROS_DB_POOL_PREWARM` says otherwise.
const DEFAULT_PREWARM: u32 = 3;

/// Largest value of the client caps (in-flight requests, sessions,
/// connections): more than any one process can hold.
const MAX_CLIENT_LIMIT: u32 = 1_000_000;

/// `EROS_MCP_*` variables as they come from the environment, with defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpEnv {
    pub transport: Transport,
    pub http_addr: String,
    pub auth_token: Option<String>,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub allow_insecure: bool,
    pub max_body_bytes: u64,
    pub tools_file: Option<PathBuf>,
    pub stateless: bool,
    pub shutdown_grace: f64,
    pub row_format: RowFormat,
    pub max_in_flight: u32,
    pub max_sessions: u32,
    pub session_idle_timeout: f64,
    pub max_connections: u32,
    pub header_timeout: f64,
    pub body_timeout: f64,
}

impl Default for McpEnv {
    fn default() -> Self {
        Self {
            transport: Transport::Stdio,
            http_addr: "127.0.0.1:8080".into(),
            auth_token: None,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: vec![
                "http://localhost:*".into(),
                "http://127.0.0.1:*".into(),
                "http://[::1]:*".into(),
            ],
            allow_insecure: false,
            max_body_bytes: 1_048_576,
            tools_file: None,
            stateless: false,
            shutdown_grace: 10.0,
            row_format: RowFormat::Csv,
            max_in_flight: 32,
            max_sessions: 256,
            session_idle_timeout: 300.0,
            max_connections: 512,
            header_timeout: 10.0,
            body_timeout: 30.0,
        }
    }
}

/// Validated MCP transport settings.
#[derive(Clone, PartialEq)]
pub struct McpConfig {
    pub transport: Transport,
    pub http_addr: std::net::SocketAddr,
    /// Bearer token every HTTP request must carry; `None` means no auth.
    pub auth_token: Option<String>,
    /// `Host` header values accepted (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// `Origin` header values accepted; requests without `Origin` pass.
    pub allowed_origins: Vec<String>,
    pub allow_insecure: bool,
    pub max_body_bytes: usize,
    pub tools_file: Option<PathBuf>,
    /// Serve every HTTP request statelessly (no legacy sessions).
    pub stateless: bool,
    /// How long in-flight calls may run after shutdown starts.
    pub shutdown_grace: Duration,
    pub row_format: RowFormat,
    /// Requests being served or whose answers are not yet written: beyond
    /// it stdio stops reading and HTTP answers 503.
    pub max_in_flight: usize,
    /// Open HTTP sessions; a new one beyond it gets 503.
    pub max_sessions: usize,
    /// An HTTP session with no request for this long is closed.
    pub session_idle_timeout: Duration,
    /// Open MCP TCP connections (lowered at startup to what the open-file
    /// limit allows, see [`crate::transport::accept`]).
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
}

impl std::fmt::Debug for McpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpConfig")
            .field("transport", &self.transport)
            .field("http_addr", &self.http_addr)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .field("allow_insecure", &self.allow_insecure)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("tools_file", &self.tools_file)
            .field("stateless", &self.stateless)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("row_format", &self.row_format)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_sessions", &self.max_sessions)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .finish()
    }
}

impl Default for McpConfig {
    fn default() -> Self {
        McpEnv::default().validate().expect("defaults are valid")
    }
}

impl McpConfig {
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        parse_prefixed::<McpEnv>(MCP_PREFIX, vars)?.validate()
    }
}

impl McpEnv {
    pub fn validate(self) -> Result<McpConfig, ConfigError> {
        let bad = |name: &str, value: String, allowed: &str| ConfigError {
            variable: format!("{MCP_PREFIX}{}", name.to_uppercase()),
            value,
            allowed: allowed.to_string(),
        };
        let http_addr: std::net::SocketAddr = self.http_addr.parse().map_err(|_| {
            bad(
                "http_addr",
                self.http_addr.clone(),
                "an address such as 127.0.0.1:8080",
            )
        })?;
        let auth_token = self.auth_token.filter(|t| !t.is_empty());
        if self.transport == Transport::Http
            && !http_addr.ip().is_loopback()
            && auth_token.is_none()
            && !self.allow_insecure
        {
            return Err(bad(
                "http_addr",
                self.http_addr,
                "a loopback address unless EROS_MCP_AUTH_TOKEN is set (or EROS_MCP_ALLOW_INSECURE=true, \
                 which exposes the database to anyone who can reach the port)",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(bad(
                "max_body_bytes",
                self.max_body_bytes.to_string(),
                "a whole number of bytes, at least 1024",
            ));
        }
        if !(self.shutdown_grace.is_finite() && (0.0..=MAX_SECONDS).contains(&self.shutdown_grace))
        {
            return Err(bad(
                "shutdown_grace",
                self.shutdown_grace.to_string(),
                "a number of seconds, 0 or more (fractions allowed)",
            ));
        }
        let count = |name: &str, value: u32, max: u32| {
            if (1..=max).contains(&value) {
                Ok(value as usize)
            } else {
                Err(bad(
                    name,
                    value.to_string(),
                    &format!("a whole number from 1 to {max}"),
                ))
            }
        };
        let seconds = |name: &str, value: f64, min: f64| seconds_in(MCP_PREFIX, name, value, min);
        let max_in_flight = count("max_in_flight", self.max_in_flight, MAX_CLIENT_LIMIT)?;
        let max_sessions = count("max_sessions", self.max_sessions, MAX_CLIENT_LIMIT)?;
        let max_connections = count("max_connections", self.max_connections, MAX_CLIENT_LIMIT)?;
        let session_idle_timeout = seconds("session_idle_timeout", self.session_idle_timeout, 1.0)?;
        let header_timeout = seconds("header_timeout", self.header_timeout, 0.1)?;
        let body_timeout = seconds("body_timeout", self.body_timeout, 0.1)?;
        let trimmed = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Ok(McpConfig {
            transport: self.transport,
            http_addr,
            auth_token,
            allowed_hosts: trimmed(self.allowed_hosts),
            allowed_origins: trimmed(self.allowed_origins),
            allow_insecure: self.allow_insecure,
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            tools_file: self.tools_file.filter(|p| !p.as_os_str().is_empty()),
            stateless: self.stateless,
            shutdown_grace: Duration::from_secs_f64(self.shutdown_grace),
            row_format: self.row_format,
            max_in_flight,
            max_sessions,
            session_idle_timeout,
            max_connections,
            header_timeout,
            body_timeout,
        })
    }
}

/// Prefix of the metrics sidecar variables.
pub const METRICS_PREFIX: &str = "EROS_METRICS_";

/// `EROS_METRICS_*` variables as they come from the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsEnv {
    pub addr: String,
}

impl Default for MetricsEnv {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:9090".into(),
        }
    }
}

/// Validated sidecar settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Where `/metrics`, `/livez`, `/readyz` and `/stats` are served; `None` when off.
    pub addr: Option<std::net::SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsEnv::default()
            .validate()
            .expect("defaults are valid")
    }
}

impl MetricsEnv {
    pub fn validate(self) -> Result<MetricsConfig, ConfigError> {
        let value = self.addr.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("off") {
            return Ok(MetricsConfig { addr: None });
        }
        let addr = value.parse().map_err(|_| ConfigError {
            variable: format!("{METRICS_PREFIX}ADDR"),
            value: self.addr.clone(),
            allowed: "an address such as 127.0.0.1:9090, or off".into(),
        })?;
        Ok(MetricsConfig { addr: Some(addr) })
    }
}

impl MetricsConfig {
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        parse_prefixed::<MetricsEnv>(METRICS_PREFIX, vars)?.validate()
    }
}

/// Every setting of the server, read once at startup.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub mcp: McpConfig,
    pub metrics: MetricsConfig,
}

impl Config {
    /// Reads every `EROS_*` variable from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect::<Vec<_>>())
    }

    pub fn from_vars(vars: Vec<(String, String)>) -> Result<Self, ConfigError> {
        Ok(Self {
            database: DatabaseConfig::from_vars(vars.clone())?,
            mcp: McpConfig::from_vars(vars.clone())?,
            metrics: MetricsConfig::from_vars(vars)?,
        })
    }
}
