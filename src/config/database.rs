//! `EROS_DB_*`: the database file, the pool, the connections and the query
//! limits, declared once; and the typed settings each of those layers is
//! handed (built once, at the edge, by [`crate::app`] and `main`).

use crate::engine::{EngineSettings, Limits};
use crate::pool::PoolSettings;
use crate::replication::{Replication, ReplicationSettings, Role};
use crate::retry::RetryPolicy;
use crate::sqlite::connection::{ConnectionOptions, FileMode};

use super::setting::{
    named, settings, Bytes, ConfigError, FilePath, Mib, OptionalText, Parsed, Seconds, MIB,
};

named!(Replication { None = "none", Litestream = "litestream" });
named!(Role { Primary = "primary", Replica = "replica" });

/// Most connections the pool may keep: a typo must not become an outage.
const MAX_POOL_SIZE: u32 = 1000;
/// Most overflow connections per kept one.
const MAX_OVERFLOW_FACTOR: u32 = 10;
/// Below this (MiB) the server's own statements (schema, migrations) may fail.
const MIN_HARD_HEAP_MIB: u64 = 16;

settings! {
    /// Validated database, pool and query-limit settings.
    pub struct DatabaseConfig;
    /// `EROS_DB_*` as `envy` reads them: one text per variable, unset if absent.
    pub struct DatabaseEnv;
    /// One [`super::Setting`] per `EROS_DB_*` variable.
    pub mod database_vars;
    prefix = "EROS_DB_";

    /// SQLite file to serve; created (with its directory) when missing.
    path <- path: FilePath = "./database/eros_sd_main.db", "a path to an SQLite file";
    /// Connections the pool keeps open.
    pool_size <- pool_size: Parsed<u32> = "10", Between(1, MAX_POOL_SIZE);
    /// Extra connections opened under load and closed again when returned.
    max_overflow <- pool_overflow: Parsed<u32> = "5",
        "a whole number from 0 to 10 times EROS_DB_POOL_SIZE";
    /// How long a checkout waits before failing as exhausted.
    checkout_timeout <- pool_timeout: Seconds = "30.0", AtLeast(0.001);
    /// Connections older than this are closed and replaced (recycled).
    connection_max_age <- conn_max_age: Seconds = "300", AtLeast(0.001);
    /// Connections kept open as a minimum: one is opened before the server
    /// answers, the rest in the background within a second; when unset, the
    /// default or the pool size if that is smaller.
    prewarm <- pool_prewarm: Parsed<u32> = "3", "a whole number from 0 to EROS_DB_POOL_SIZE";
    /// Serve principals in turn when connections run short: each active principal may hold
    /// its share of them (a principal alone may hold all); `false` serves calls first come,
    /// first served.
    fair_shares <- fair_shares: Parsed<bool> = "true", "true or false";
    /// Check on every checkout that the connection's worker process is
    /// alive; replace it if not.
    health_check <- health_check: Parsed<bool> = "true", "true or false";
    /// Seconds between background maintenance passes (recycle, health-check, trim, re-warm).
    maintenance_interval <- health_check_interval: Seconds = "60", AtLeast(0.01);
    /// Retries of a transient failure (open error, `SQLITE_BUSY` on a read).
    max_retries <- max_retries: Parsed<u32> = "3", "a whole number, 0 or more";
    /// First retry delay; doubles on each further retry.
    retry_delay <- retry_delay: Seconds = "0.05", AtLeast(0.0);
    /// SQLite's own wait on a locked database before `SQLITE_BUSY`.
    busy_timeout <- busy_timeout: Seconds = "5", AtLeast(0.0);
    /// Apply `migrations/` at startup; `false` serves a database the migrations do not
    /// describe, its schema untouched.
    migrate <- migrate: Parsed<bool> = "true", "true or false";
    /// Expose only read tools; `false` adds `execute` and declared write tools.
    read_only <- read_only: Parsed<bool> = "true", "true or false";
    /// Most rows one tool result carries.
    max_rows <- max_rows: Parsed<u32> = "1000", AtLeast(1);
    /// Most bytes of values one tool result carries.
    max_bytes <- max_bytes: Bytes<u64> = "1048576", AtLeast(1024);
    /// Seconds one call may take, from waiting for a connection to the last row; then it is
    /// interrupted (its worker killed after a tenth more).
    query_timeout <- query_timeout: Seconds = "30", AtLeast(0.001);
    /// SQLite's soft heap limit for the whole process (page caches shrink to
    /// stay under it); 0 means no limit.
    heap_limit_bytes <- heap_limit_mib: Mib = "8", "a whole number of MiB, 0 for no limit";
    /// SQLite's hard heap ceiling for the whole process: an allocation past
    /// it fails the statement with `SQLITE_NOMEM` (sorts and temporary
    /// tables live in memory, so this bounds them too).
    hard_heap_limit_bytes <- hard_heap_limit_mib: Mib = "128", AtLeast(MIN_HARD_HEAP_MIB);
    /// Largest string or BLOB any statement may build or read
    /// (`SQLITE_LIMIT_LENGTH`); past it the statement fails with `SQLITE_TOOBIG`.
    max_value_bytes <- max_value_bytes: Bytes<u64> = "8388608", Between(65_536, 1_000_000_000);
    /// Longest SQL text a statement may have (`SQLITE_LIMIT_SQL_LENGTH`).
    max_sql_bytes <- max_sql_bytes: Bytes<u32> = "100000", Between(1024, 10_000_000);
    /// `litestream` when a Litestream process replicates this database: the
    /// server then leaves checkpoints to it and writes a heartbeat.
    replication <- replication: Parsed<Replication> = "none", "none or litestream";
    /// `replica` to serve a read-only copy kept current by
    /// `litestream restore -f` (never migrated, no write tools).
    role <- role: Parsed<Role> = "primary", "primary or replica";
    /// Litestream's replica URL (`file:///dir`, `s3://bucket/path`): a
    /// primary with an empty volume restores from it before serving.
    replica_url <- replica_url: OptionalText = "",
        "a Litestream replica URL such as file:///backups/db or s3://bucket/db";
    /// The `litestream` binary restores run (a name on PATH, or a path).
    litestream_bin <- litestream_bin: FilePath = "litestream", "a path or a command name";
    /// On a replica: run the follower (`litestream restore -f`) as a child
    /// the server supervises, so a copy its dead follower left is never
    /// served; `false` when another process follows (no such guarantee).
    replica_follow <- replica_follow: Parsed<bool> = "true", "true or false";
    /// How often a replicated primary writes its heartbeat row.
    heartbeat_interval <- heartbeat_interval: Seconds = "5", AtLeast(0.1);
    /// A replica whose newest heartbeat is older than this is not ready.
    replica_max_lag <- replica_max_lag: Seconds = "30", AtLeast(0.1);
}

use database_vars as vars;

impl DatabaseConfig {
    /// The rules between settings.
    fn relate(&mut self, raw: &DatabaseEnv) -> Result<(), ConfigError> {
        // The text each of these settings took (all are numbers, for which
        // an empty variable is unset).
        let given = |setting: &super::Setting, value: &Option<String>| {
            setting.text::<Parsed<u32>>(value.as_deref()).to_string()
        };
        let most_overflow = self.pool_size * MAX_OVERFLOW_FACTOR;
        if self.max_overflow > most_overflow {
            let setting = &vars::pool_overflow;
            return Err(setting.invalid_because(
                &given(setting, &raw.pool_overflow),
                format!("{} ({most_overflow})", setting.allowed()),
            ));
        }
        if raw.pool_prewarm.as_deref().is_none_or(str::is_empty) {
            self.prewarm = self.prewarm.min(self.pool_size);
        } else if self.prewarm > self.pool_size {
            let setting = &vars::pool_prewarm;
            return Err(setting.invalid_because(
                &given(setting, &raw.pool_prewarm),
                format!("{} ({})", setting.allowed(), self.pool_size),
            ));
        }
        if self.hard_heap_limit_bytes <= self.heap_limit_bytes {
            let setting = &vars::hard_heap_limit_mib;
            return Err(setting.invalid_because(
                &given(setting, &raw.hard_heap_limit_mib),
                format!(
                    "{} and more than {} ({})",
                    setting.allowed(),
                    vars::heap_limit_mib.variable(),
                    self.heap_limit_bytes / MIB
                ),
            ));
        }
        if self.replication == Replication::Litestream && self.replica_url.is_none() {
            let setting = &vars::replica_url;
            return Err(setting.invalid_because(
                "",
                format!(
                    "{} (required when {}={})",
                    setting.allowed(),
                    vars::replication.variable(),
                    Replication::Litestream
                ),
            ));
        }
        if self.role == Role::Replica {
            // A replica's file belongs to its follower: nothing may write it.
            let explicit = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.is_empty());
            let replica = format!("{}={}", vars::role.variable(), Role::Replica);
            if !self.read_only {
                return Err(vars::read_only.invalid_because(
                    "false",
                    format!("true (a replica takes no writes: {replica})"),
                ));
            }
            if self.migrate && explicit(&raw.migrate) {
                return Err(vars::migrate.invalid_because(
                    "true",
                    format!("false (a replica is never migrated: {replica})"),
                ));
            }
            self.migrate = false;
            if self.replica_follow && self.replica_url.is_none() {
                let setting = &vars::replica_url;
                return Err(setting.invalid_because(
                    "",
                    format!(
                        "{} (required on a replica that runs its follower, {follow}=true; \
                         set {follow}=false when another process follows)",
                        setting.allowed(),
                        follow = vars::replica_follow.variable(),
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every layer's settings, built in one place: the configuration is
    /// taken apart field by field (no `..`), so a new setting fails to
    /// compile until it is handed to a layer, and one handed nowhere is an
    /// unused variable, which `clippy -D warnings` refuses.
    pub fn layers(&self) -> DatabaseLayers {
        let DatabaseConfig {
            path,
            pool_size,
            max_overflow,
            checkout_timeout,
            connection_max_age,
            prewarm,
            fair_shares,
            health_check,
            maintenance_interval,
            max_retries,
            retry_delay,
            busy_timeout,
            migrate,
            read_only,
            max_rows,
            max_bytes,
            query_timeout,
            heap_limit_bytes,
            hard_heap_limit_bytes,
            max_value_bytes,
            max_sql_bytes,
            replication,
            role,
            replica_url,
            litestream_bin,
            replica_follow,
            heartbeat_interval,
            replica_max_lag,
        } = self.clone();
        // The backoff for transient failures: opening a connection (the
        // pool) and `SQLITE_BUSY` on a read (the engine).
        let retry = RetryPolicy {
            max_retries,
            first_delay: retry_delay,
        };
        let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        DatabaseLayers {
            pool: PoolSettings {
                pool_size,
                max_overflow,
                checkout_timeout,
                connection_max_age,
                prewarm,
                health_check,
                maintenance_interval,
                connect_retry: retry,
                worker_program: None,
            },
            // Any one connection may cache up to the whole process's heap
            // limit: a scan of a database that fits then runs from memory
            // (twice as fast as re-reading pages through 2 MB), and when
            // several connections compete, the soft limit makes their
            // caches give pages back.
            connection: ConnectionOptions {
                path,
                busy_timeout,
                cache_kib: heap_limit_bytes / 1024,
                max_value_bytes,
                max_sql_bytes,
                soft_heap_limit_bytes: heap_limit_bytes,
                hard_heap_limit_bytes,
                create: true,
                identity: None,
                mode: match (role, replication) {
                    (Role::Replica, _) => FileMode::Replica,
                    (Role::Primary, Replication::Litestream) => FileMode::Replicated,
                    (Role::Primary, Replication::None) => FileMode::Primary,
                },
            },
            engine: EngineSettings {
                limits: Limits {
                    max_rows: max_rows as usize,
                    max_bytes,
                    query_timeout,
                    max_blob_bytes: max_bytes.min(64 * 1024),
                    max_value_bytes,
                    hard_heap_limit_bytes,
                    max_sql_bytes,
                },
                read_retry: retry,
                read_only,
            },
            replication: ReplicationSettings {
                replication,
                role,
                replica_url,
                litestream_bin,
                follow: role == Role::Replica && replica_follow,
                heartbeat_interval,
                max_lag: replica_max_lag,
            },
            migrate,
            fair_shares,
        }
    }

    /// What the replication parts are handed: the mode, the role, where
    /// restores come from, the heartbeat and the lag a replica tolerates.
    pub fn replication_settings(&self) -> ReplicationSettings {
        self.layers().replication
    }

    /// Most connections open at once: the kept ones plus the overflow.
    pub fn max_connections(&self) -> u32 {
        self.pool_size + self.max_overflow
    }

    /// What the pool needs: its sizes, waits, recycling and upkeep.
    pub fn pool_settings(&self) -> PoolSettings {
        self.layers().pool
    }

    /// What every connection is opened with.
    pub fn connection_options(&self) -> ConnectionOptions {
        self.layers().connection
    }

    /// What the query engine needs: the limits of one call, the retry of a
    /// busy read, and whether writes are allowed.
    pub fn engine_settings(&self) -> EngineSettings {
        self.layers().engine
    }
}

/// The settings of each layer `EROS_DB_*` configures.
#[derive(Debug, Clone)]
pub struct DatabaseLayers {
    pub pool: PoolSettings,
    pub connection: ConnectionOptions,
    pub engine: EngineSettings,
    pub replication: ReplicationSettings,
    /// Whether the edge applies pending migrations at startup.
    pub migrate: bool,
    /// Principals served in turn when connections run short.
    pub fair_shares: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<DatabaseConfig, String> {
        DatabaseConfig::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .map_err(|err| err.to_string())
    }

    #[test]
    fn the_defaults_are_shown_as_declared() {
        let shown = DatabaseConfig::default().to_string();
        let lines: Vec<_> = shown.lines().collect();
        assert_eq!(lines.len(), DatabaseConfig::SETTINGS.len());
        for (line, setting) in lines.iter().zip(DatabaseConfig::SETTINGS) {
            let (variable, value) = line.split_once('=').unwrap();
            assert_eq!(variable, setting.variable());
            let same = value == setting.default
                || value.parse::<f64>().ok() == setting.default.parse::<f64>().ok();
            assert!(same, "{line}: declared {:?}", setting.default);
        }
    }

    #[test]
    fn the_shown_settings_read_back_as_the_same_configuration() {
        let config = parse(&[
            ("EROS_DB_PATH", "/srv/db.sqlite"),
            ("EROS_DB_POOL_SIZE", "4"),
            ("EROS_DB_POOL_PREWARM", "1"),
            ("EROS_DB_POOL_TIMEOUT", "2.5"),
            ("EROS_DB_READ_ONLY", "false"),
            ("EROS_DB_HARD_HEAP_LIMIT_MIB", "64"),
        ])
        .unwrap();
        let shown = config.to_string();
        let vars = shown.lines().map(|line| {
            let (name, value) = line.split_once('=').unwrap();
            (name.to_string(), value.to_string())
        });
        assert_eq!(DatabaseConfig::from_vars(vars).unwrap(), config);
    }

    #[test]
    fn a_seconds_value_out_of_range_names_the_variable() {
        assert_eq!(
            parse(&[("EROS_DB_QUERY_TIMEOUT", "0")]).unwrap_err(),
            r#"invalid EROS_DB_QUERY_TIMEOUT="0": a number of seconds from 0.001 to 86400 (fractions allowed)"#
        );
    }

    #[test]
    fn an_empty_variable_takes_the_default() {
        assert_eq!(parse(&[("EROS_DB_POOL_SIZE", "")]).unwrap().pool_size, 10);
    }

    #[test]
    fn the_hard_heap_ceiling_must_be_above_the_soft_limit() {
        let err = parse(&[
            ("EROS_DB_HEAP_LIMIT_MIB", "64"),
            ("EROS_DB_HARD_HEAP_LIMIT_MIB", "32"),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            r#"invalid EROS_DB_HARD_HEAP_LIMIT_MIB="32": a whole number of MiB, at least 16 and more than EROS_DB_HEAP_LIMIT_MIB (64)"#
        );
    }

    #[test]
    fn an_explicit_prewarm_is_kept_and_the_default_shrinks_to_the_pool() {
        assert_eq!(parse(&[("EROS_DB_POOL_PREWARM", "0")]).unwrap().prewarm, 0);
        assert_eq!(parse(&[("EROS_DB_POOL_SIZE", "1")]).unwrap().prewarm, 1);
    }

    #[test]
    fn each_layer_gets_its_own_settings() {
        let config = parse(&[("EROS_DB_MAX_RETRIES", "7"), ("EROS_DB_MAX_ROWS", "5")]).unwrap();
        assert_eq!(config.pool_settings().connect_retry.max_retries, 7);
        let engine = config.engine_settings();
        assert_eq!(engine.read_retry, config.pool_settings().connect_retry);
        assert_eq!(engine.limits.max_rows, 5);
        assert!(engine.read_only);
        assert_eq!(config.connection_options().cache_kib, 8 * 1024);
    }

    #[test]
    fn litestream_replication_needs_a_replica_url() {
        let err = parse(&[("EROS_DB_REPLICATION", "litestream")]).unwrap_err();
        assert!(err.starts_with("invalid EROS_DB_REPLICA_URL=\"\""), "{err}");
        assert!(
            err.contains("required when EROS_DB_REPLICATION=litestream"),
            "{err}"
        );
        let config = parse(&[
            ("EROS_DB_REPLICATION", "litestream"),
            ("EROS_DB_REPLICA_URL", "file:///backups/db"),
        ])
        .unwrap();
        assert_eq!(config.connection_options().mode, FileMode::Replicated);
    }

    #[test]
    fn a_replica_is_never_migrated_and_refuses_writes() {
        let config = parse(&[
            ("EROS_DB_ROLE", "replica"),
            ("EROS_DB_REPLICA_URL", "file:///backups/db"),
        ])
        .unwrap();
        assert!(!config.migrate);
        assert_eq!(config.connection_options().mode, FileMode::Replica);
        assert_eq!(config.replication_settings().role, Role::Replica);
        let err =
            parse(&[("EROS_DB_ROLE", "replica"), ("EROS_DB_READ_ONLY", "false")]).unwrap_err();
        assert!(
            err.starts_with("invalid EROS_DB_READ_ONLY=\"false\""),
            "{err}"
        );
        let err = parse(&[("EROS_DB_ROLE", "replica"), ("EROS_DB_MIGRATE", "true")]).unwrap_err();
        assert!(err.starts_with("invalid EROS_DB_MIGRATE=\"true\""), "{err}");
    }

    #[test]
    fn a_replica_runs_its_follower_from_the_replica_url_unless_told_another_process_follows() {
        let err = parse(&[("EROS_DB_ROLE", "replica")]).unwrap_err();
        assert!(err.starts_with("invalid EROS_DB_REPLICA_URL=\"\""), "{err}");
        assert!(err.contains("EROS_DB_REPLICA_FOLLOW=false"), "{err}");
        let config = parse(&[
            ("EROS_DB_ROLE", "replica"),
            ("EROS_DB_REPLICA_URL", "file:///backups/db"),
        ])
        .unwrap();
        assert!(config.replication_settings().follow);
        let config = parse(&[
            ("EROS_DB_ROLE", "replica"),
            ("EROS_DB_REPLICA_FOLLOW", "false"),
        ])
        .unwrap();
        assert!(!config.replication_settings().follow);
        // A primary never follows.
        assert!(!parse(&[]).unwrap().replication_settings().follow);
    }

    #[test]
    fn an_unknown_role_names_what_is_allowed() {
        assert_eq!(
            parse(&[("EROS_DB_ROLE", "secondary")]).unwrap_err(),
            r#"invalid EROS_DB_ROLE="secondary": primary or replica"#
        );
    }
}
