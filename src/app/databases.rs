//! One database beside the MCP server: opening it (restore, pool, declared
//! tools, policy), serving it again after a reload, and what runs beside it
//! (readiness, a replica's follower and first restore, the replication
//! threads).

use std::sync::Arc;

use crate::config::DatabaseSpec;
use crate::database::{self, StartupError};
use crate::engine::QueryEngine;
use crate::mcp::{DeclaredTools, ServedDatabase};
use crate::policy::Policy;
use crate::pool::{Pool, PoolObserver};
use crate::replication::follower::{Follower, FollowerGate};
use crate::replication::heartbeat::HeartbeatWriter;
use crate::replication::lag::{LagMonitor, ReplicaLag};
use crate::replication::restore::{self};
use crate::replication::{Replication, ReplicationSettings, Role};
use crate::shutdown::Shutdown;
use crate::sidecar::{Metrics, Readiness};
use crate::sqlite::health::FileFault;
use crate::sqlite::migrations;

use crate::quota::fair::FairShares;

use super::error::AppError;

/// Opens one database: restored first if its volume is empty and it has a
/// replica, then its pool, its declared tools and its policy, each checked
/// against its schema.
pub(super) async fn open_database(
    spec: DatabaseSpec,
    pool_observer: Arc<dyn PoolObserver>,
    follower: Option<FollowerGate>,
) -> Result<(ServedDatabase, DeclaredTools), AppError> {
    let replication = spec.database.replication_settings();
    let engine_settings = spec.database.engine_settings();
    let opened = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        // Before anything creates the file: an empty volume gets the
        // replicated state, not a blank database.
        restore::before_serving(&replication, &spec.database.path)?;
        let pool = database::open_following(&spec.database, pool_observer, follower)?;
        match tools_and_policy(&spec, &pool, engine_settings.read_only) {
            Ok((declared, policy)) => Ok((spec, pool, declared, policy)),
            Err(err) => {
                // Nothing will serve it: close it now, not at exit.
                let _ = pool.close();
                Err(err)
            }
        }
    })
    .await
    .map_err(|err| AppError::Task(err.to_string()))??;
    let (spec, pool, declared, policy) = opened;
    let shares = spec
        .database
        .fair_shares
        .then(|| FairShares::new(pool.max_connections() as usize, available_cpus()));
    let engine = Arc::new(QueryEngine::new(pool, engine_settings));
    Ok((
        ServedDatabase {
            name: spec.name,
            description: spec.description,
            scope: spec.scope,
            engine,
            policy: Arc::new(policy),
            dictionary: Arc::new(spec.dictionary),
            shares,
        },
        declared,
    ))
}

/// The CPUs this process may run on (its cgroup's quota included).
fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A database a reload may open: its file exists (a reload never creates
/// one, a typo would otherwise become an empty database), and it is not a
/// replica whose follower the server runs (that one starts with the server).
pub(super) fn reloadable(spec: &DatabaseSpec) -> Result<(), AppError> {
    if spec.database.role == Role::Replica && spec.database.replica_follow {
        return Err(AppError::Task(format!(
            "databases.{}: a replica that runs its follower is added or changed by a restart, \
             not a reload",
            spec.name
        )));
    }
    if !spec.database.path.exists() {
        return Err(AppError::Task(format!(
            "databases.{}: {} does not exist (a reload opens existing files only)",
            spec.name,
            spec.database.path.display()
        )));
    }
    Ok(())
}

/// A database whose settings did not change, served again as it is with
/// the new generation's tools, policy, description and dictionary (each
/// file read and checked against its schema now).
pub(super) async fn reuse_database(
    spec: DatabaseSpec,
    db: Arc<ServedDatabase>,
) -> Result<(ServedDatabase, DeclaredTools), AppError> {
    let engine = Arc::clone(&db.engine);
    let read_only = engine.read_only();
    let pool = Arc::clone(engine.pool());
    let (spec, declared, policy) = tokio::task::spawn_blocking(move || -> Result<_, AppError> {
        let (declared, policy) = tools_and_policy(&spec, &pool, read_only)?;
        Ok((spec, declared, policy))
    })
    .await
    .map_err(|err| AppError::Task(err.to_string()))??;
    Ok((
        ServedDatabase {
            name: spec.name,
            description: spec.description,
            scope: spec.scope,
            engine,
            policy: Arc::new(policy),
            dictionary: Arc::new(spec.dictionary),
            shares: db.shares.clone(),
        },
        declared,
    ))
}

/// A database's declared tools and policy, read from their files and
/// checked against its schema.
pub(super) fn tools_and_policy(
    spec: &DatabaseSpec,
    pool: &Pool,
    read_only: bool,
) -> Result<(DeclaredTools, Policy), AppError> {
    let declared = match &spec.tools_file {
        Some(path) => {
            let conn = pool.open_local().map_err(StartupError::from)?;
            DeclaredTools::load(path, &conn, read_only)?
        }
        None => DeclaredTools::none(),
    };
    let policy = match &spec.policy_file {
        Some(path) => {
            let conn = pool.open_local().map_err(StartupError::from)?;
            let policy = Policy::load(path, &conn)?;
            tracing::info!(
                database = %spec.name,
                path = %path.display(),
                scopes = ?policy.scopes().collect::<Vec<_>>(),
                "column and table policy loaded"
            );
            policy
        }
        None => Policy::none(),
    };
    Ok((declared, policy))
}

/// On a replica, waits (serving probes: `/readyz` says why) until the
/// follower's first restore has produced the database file. False when
/// shutdown came first.
pub(super) async fn first_restore(
    spec: &DatabaseSpec,
    readiness: &Readiness,
    shutdown: &Shutdown,
    follower: Option<&FollowerGate>,
) -> bool {
    let path = &spec.database.path;
    // A follower the server runs restores afresh, over whatever is there.
    let restored = || match follower {
        Some(gate) => gate.restored(),
        None => path.exists(),
    };
    if spec.database.role != Role::Replica || restored() {
        return true;
    }
    let waiting = FileFault::AwaitingRestore { path: path.clone() }.to_string();
    tracing::info!("{waiting}");
    readiness.waiting_for(waiting);
    loop {
        tokio::select! {
            () = shutdown.wait() => return false,
            () = tokio::time::sleep(RESTORE_POLL) => {
                if restored() {
                    return true;
                }
            }
        }
    }
}

/// What runs for one database beside the MCP server: its readiness, the
/// follower a replica runs, its replication threads, and its pool once
/// open.
pub(super) struct DatabaseParts {
    pub(super) name: String,
    pub(super) required: bool,
    pub(super) readiness: Arc<Readiness>,
    pub(super) follower: Option<Follower>,
    pub(super) background: Option<Background>,
    pub(super) pool: Option<Arc<Pool>>,
}

impl DatabaseParts {
    pub(super) fn new(spec: &DatabaseSpec, shutdown: &Shutdown) -> Self {
        let expected_version = spec.database.migrate.then(migrations::latest_version);
        let limits = spec.database.engine_settings().limits;
        // Our own statements give the write lock back within the timeout
        // and its grace (a worker is killed then); a holder past that, and
        // a second for the kill to land, is stuck.
        let write_lock_patience =
            limits.query_timeout + limits.stop_slack() + std::time::Duration::from_secs(1);
        Self {
            name: spec.name.clone(),
            required: spec.required,
            readiness: Arc::new(Readiness::new(
                expected_version,
                write_lock_patience,
                shutdown.clone(),
            )),
            follower: None,
            background: None,
            pool: None,
        }
    }

    /// Stops the replication threads, closes the pool (checkpointing the
    /// WAL), then stops the follower.
    pub(super) fn close(self) -> Result<(), rusqlite::Error> {
        if let Some(background) = self.background {
            background.stop();
        }
        let closed = self.pool.map_or(Ok(()), |pool| pool.close());
        if let Some(follower) = self.follower {
            follower.stop();
        }
        closed
    }
}

/// How often a replica looks for its first restore.
pub(super) const RESTORE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The replication threads that run beside the server: a replicated
/// primary's heartbeat writer, a replica's lag monitor.
pub(super) struct Background {
    pub(super) heartbeat: Option<HeartbeatWriter>,
    pub(super) lag: Option<LagMonitor>,
}

impl Background {
    pub(super) fn start(
        name: &str,
        replication: &ReplicationSettings,
        pool: &Arc<Pool>,
        readiness: &Readiness,
        metrics: &Metrics,
    ) -> Result<Self, AppError> {
        let mut background = Self {
            heartbeat: None,
            lag: None,
        };
        match (replication.role, replication.replication) {
            (Role::Primary, Replication::Litestream) => {
                // The pool's options: the same file, its identity checked,
                // never created; no authorizer (connection::open installs none).
                background.heartbeat = Some(
                    HeartbeatWriter::start(
                        pool.connection_options().clone(),
                        replication.heartbeat_interval,
                    )
                    .map_err(|err| AppError::Thread("heartbeat", err))?,
                );
            }
            (Role::Replica, _) => {
                let lag = Arc::new(ReplicaLag::new(replication.max_lag));
                background.lag = Some(
                    LagMonitor::start(
                        Arc::clone(&lag),
                        pool.connection_options().clone(),
                        pool.health().clone(),
                        replication.heartbeat_interval,
                    )
                    .map_err(|err| AppError::Thread("replica lag", err))?,
                );
                readiness.watch_lag(Arc::clone(&lag));
                metrics.watch_lag(name, lag);
            }
            (Role::Primary, Replication::None) => {}
        }
        Ok(background)
    }

    pub(super) fn stop(self) {
        if let Some(heartbeat) = self.heartbeat {
            heartbeat.stop();
        }
        if let Some(lag) = self.lag {
            lag.stop();
        }
    }
}
