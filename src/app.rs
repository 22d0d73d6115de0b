//! The running server, assembled: database, engine, MCP server, transport,
//! and the shutdown sequence (stop taking calls, finish running ones,
//! checkpoint the WAL, close the pool). With replication it also starts
//! the replicated primary's heartbeat, or a replica's wait for its first
//! restore and its lag measurement.
//!
//! This is the edge: the configuration read in `main` is split here into
//! the typed settings each layer is handed (the engine's, the transport's,
//! the sidecar's, the audit log's); no layer reads another's. The metrics
//! and the audit log observe the same calls through one fan-out each.

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::{AuditError, AuditLog};
use crate::auth::{TokenValidator, ValidatorError};
use crate::config::{Config, DatabaseSpec, DatabasesError, Transport};
use crate::database::{self, StartupError};
use crate::engine::QueryEngine;
use crate::identity::tokens::{StaticTokens, TokensFileError};
use crate::mcp::{
    CallTracker, DeclaredTools, DeclaredToolsError, ErosServer, NoToolObserver, ServedDatabase,
    ToolObserver, ToolObservers,
};
use crate::policy::{Policy, PolicyError};
use crate::pool::{NoObserver, Pool, PoolObserver};
use crate::replication::follower::{Follower, FollowerGate, FollowerSettings};
use crate::replication::heartbeat::HeartbeatWriter;
use crate::replication::lag::{LagMonitor, ReplicaLag};
use crate::replication::restore::{self, RestoreError};
use crate::replication::{Replication, ReplicationSettings, Role};
use crate::shutdown::Shutdown;
use crate::sidecar::{Metrics, Readiness, ReadinessSet, Sidecar, SidecarBindError, SidecarState};
use crate::sqlite::health::FileFault;
use crate::sqlite::migrations;
use crate::transport::accept::{raise_open_file_limit, FileBudget};
use crate::transport::auth::{Authenticator, OAuth};
use crate::transport::{
    self, NoTransportObserver, TransportError, TransportObserver, TransportObservers,
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("refusing to start on an empty database: {0}")]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    DeclaredTools(#[from] DeclaredToolsError),
    #[error(transparent)]
    Databases(#[from] DatabasesError),
    #[error(transparent)]
    ToolClash(crate::mcp::ToolClash),
    #[error(transparent)]
    Tokens(#[from] TokensFileError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot set up OAuth: {0}")]
    OAuth(#[from] ValidatorError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("closing the database failed: {0}")]
    Close(#[source] rusqlite::Error),
    #[error("a startup task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Sidecar(#[from] SidecarBindError),
    #[error("cannot start the metrics sidecar's thread: {0}")]
    SidecarThread(#[source] std::io::Error),
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, #[source] std::io::Error),
}

/// Gives the pool of the database named to it the observer it reports to.
pub type PoolObserverFor = Arc<dyn Fn(&str) -> Arc<dyn PoolObserver> + Send + Sync>;

/// Hooks for measuring the pool and the tool calls (the metrics sidecar),
/// and for recording them (the audit log).
#[derive(Clone)]
pub struct Observers {
    /// What the pool of the named database reports to.
    pub pool: PoolObserverFor,
    pub tools: Arc<dyn ToolObserver>,
    pub transport: Arc<dyn TransportObserver>,
}

impl Default for Observers {
    fn default() -> Self {
        Self {
            pool: Arc::new(|_: &str| Arc::new(NoObserver) as Arc<dyn PoolObserver>),
            tools: Arc::new(NoToolObserver),
            transport: Arc::new(NoTransportObserver),
        }
    }
}

/// Opens the databases and builds the MCP server (blocking work runs on a
/// blocking thread).
pub async fn build(
    config: &Config,
    observers: &Observers,
    calls: Arc<CallTracker>,
) -> Result<ErosServer, AppError> {
    let specs = config.database_specs()?;
    build_following(config, &specs, observers, calls, &HashMap::new()).await
}

/// [`build`] for the databases `specs` declares; a replica whose follower
/// the server runs is served only while its gate in `followers` lets it.
pub async fn build_following(
    config: &Config,
    specs: &[DatabaseSpec],
    observers: &Observers,
    calls: Arc<CallTracker>,
    followers: &HashMap<String, FollowerGate>,
) -> Result<ErosServer, AppError> {
    let mut databases = Vec::with_capacity(specs.len());
    for spec in specs {
        let follower = followers.get(&spec.name).cloned();
        let pool_observer = (observers.pool)(&spec.name);
        databases.push(open_database(spec.clone(), pool_observer, follower).await?);
    }
    ErosServer::new(
        databases,
        Arc::clone(&observers.tools),
        calls,
        config.mcp.row_format,
    )
    .map_err(AppError::ToolClash)
}

/// Opens one database: restored first if its volume is empty and it has a
/// replica, then its pool, its declared tools and its policy, each checked
/// against its schema.
async fn open_database(
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
    let engine = Arc::new(QueryEngine::new(pool, engine_settings));
    Ok((
        ServedDatabase {
            name: spec.name,
            description: spec.description,
            scope: spec.scope,
            engine,
            policy: Arc::new(policy),
            dictionary: Arc::new(spec.dictionary),
        },
        declared,
    ))
}

/// Who may call over HTTP, or `None` when authentication is off: the
/// static tokens (the tokens file and `EROS_MCP_AUTH_TOKEN`) and, with an
/// issuer set, OAuth access tokens. Also the tokens, for SIGHUP to re-read.
fn authenticator(
    config: &Config,
    observer: &Arc<dyn TransportObserver>,
) -> Result<(Option<Authenticator>, Option<Arc<StaticTokens>>), AppError> {
    let tokens = StaticTokens::new(
        config.auth.tokens_file.as_deref(),
        config.mcp.auth_token.as_deref(),
    )?;
    let oauth = match config.auth.oauth_settings() {
        Some(settings) => {
            let validator = TokenValidator::new(settings)?;
            // Fetch the keys now so the first caller does not wait for
            // them; a failure is retried when the first token arrives.
            let prefetch = validator.clone();
            tokio::spawn(async move {
                if let Err(err) = prefetch.prefetch_keys().await {
                    tracing::warn!(error = %err, "cannot fetch the authorization server's keys yet");
                }
            });
            Some(OAuth::new(validator))
        }
        None => None,
    };
    if oauth.is_none() && !tokens.has_file() && tokens.is_empty() {
        return Ok((None, None));
    }
    let tokens = Arc::new(tokens);
    let auth = Authenticator::new(Arc::clone(&tokens), oauth, Arc::clone(observer));
    Ok((Some(auth), Some(tokens)))
}

/// What one SIGHUP re-reads: the tokens file, and the audit log (reopened
/// at its path after an external tool rotated it).
struct OnHangup {
    tokens: Option<Arc<StaticTokens>>,
    audit: Option<Arc<AuditLog>>,
    /// The databases, their declared tools, policies and descriptions.
    databases: Arc<Reloader>,
}

impl OnHangup {
    /// A tokens file that no longer reads keeps the tokens already
    /// accepted, an audit log that cannot be reopened keeps the open file,
    /// a configuration that does not check out keeps the one in force; the
    /// log says why.
    async fn reload(&self) {
        match self.databases.reload().await {
            Ok(number) => tracing::info!(generation = number, "SIGHUP: configuration reloaded"),
            Err(err) => {
                self.databases.metrics.reload_failed();
                tracing::error!(error = %err, "SIGHUP: kept the configuration in force");
            }
        }
        if let Some(tokens) = &self.tokens {
            match tokens.reload() {
                Ok(count) => tracing::info!(tokens = count, "SIGHUP: tokens file re-read"),
                Err(err) => tracing::error!(error = %err, "SIGHUP: kept the previous tokens"),
            }
        }
        if let Some(audit) = &self.audit {
            match audit.reopen() {
                Ok(()) => {
                    tracing::info!(audit_log = %audit.describe(), "SIGHUP: audit log reopened")
                }
                Err(err) => {
                    tracing::error!(error = %err, "SIGHUP: kept writing to the open audit log")
                }
            }
        }
    }
}

/// Calls `on_hangup` on every SIGHUP [`Shutdown`] hands on (which never
/// stops the server: see [`Shutdown::trigger_on_signals`]). With nothing
/// to re-read there is nothing to wait for.
fn reload_on_hangup(on_hangup: OnHangup, shutdown: &Shutdown) {
    let mut hangups = shutdown.hangups();
    tokio::spawn(async move {
        while hangups.changed().await.is_ok() {
            on_hangup.reload().await;
        }
    });
}

/// Re-reads the databases (the databases file, or `EROS_DB_PATH`'s one),
/// their declared tools, policies and descriptions, checks all of it (files
/// opened, statements prepared, policy entries checked against each schema)
/// and only then puts it in place at once ([`ErosServer::replace`]). A
/// database whose settings did not change keeps its pool; one added or
/// changed gets a new pool; one removed or replaced is closed once no
/// running call holds it.
struct Reloader {
    config: Config,
    server: ErosServer,
    observers: Observers,
    metrics: Arc<Metrics>,
    readiness: Arc<ReadinessSet>,
    shutdown: Shutdown,
    state: tokio::sync::Mutex<ReloadState>,
}

/// The databases in force and what runs beside each.
struct ReloadState {
    specs: Vec<DatabaseSpec>,
    parts: Vec<DatabaseParts>,
}

/// How long a replaced database waits for the calls still running on it
/// before its pool is closed anyway.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

impl Reloader {
    /// One reload: the new generation's number, or why the configuration in
    /// force was kept.
    async fn reload(&self) -> Result<u64, AppError> {
        let mut state = self.state.lock().await;
        let specs = self.config.database_specs()?;
        let current = self.server.current();
        let mut databases = Vec::with_capacity(specs.len());
        let mut opened: Vec<Arc<Pool>> = Vec::new();
        let close_opened = |opened: Vec<Arc<Pool>>| {
            for pool in opened {
                let _ = pool.close();
            }
        };
        for spec in &specs {
            let kept = state
                .specs
                .iter()
                .any(|old| old.name == spec.name && old.database == spec.database);
            let served = if kept {
                let db = current
                    .catalog()
                    .find(Some(&spec.name))
                    .map(Arc::clone)
                    .map_err(|err| AppError::Task(err.to_string()));
                match db {
                    Ok(db) => reuse_database(spec.clone(), db).await,
                    Err(err) => Err(err),
                }
            } else {
                match reloadable(spec) {
                    Ok(()) => {
                        open_database(spec.clone(), (self.observers.pool)(&spec.name), None).await
                    }
                    Err(err) => Err(err),
                }
            };
            match served {
                Ok(served) => {
                    if !kept {
                        opened.push(Arc::clone(served.0.engine.pool()));
                    }
                    databases.push(served);
                }
                Err(err) => {
                    close_opened(opened);
                    return Err(err);
                }
            }
        }
        let previous = match self.server.replace(databases).await {
            Ok(previous) => previous,
            Err(clash) => {
                close_opened(opened);
                return Err(AppError::ToolClash(clash));
            }
        };
        let next = self.server.current();
        // What runs beside each database: kept as it was, started for the
        // new ones, stopped for those gone or replaced.
        let mut old_parts = std::mem::take(&mut state.parts);
        let mut parts = Vec::with_capacity(specs.len());
        for spec in &specs {
            let kept = state
                .specs
                .iter()
                .any(|old| old.name == spec.name && old.database == spec.database);
            let position = old_parts.iter().position(|p| p.name == spec.name);
            if let (true, Some(position)) = (kept, position) {
                let mut part = old_parts.remove(position);
                part.required = spec.required;
                parts.push(part);
                continue;
            }
            let db = next
                .catalog()
                .find(Some(&spec.name))
                .map(Arc::clone)
                .map_err(|err| AppError::Task(err.to_string()))?;
            let mut part = DatabaseParts::new(spec, &self.shutdown);
            let pool = Arc::clone(db.engine.pool());
            part.background = Some(Background::start(
                &spec.name,
                &spec.database.replication_settings(),
                &pool,
                &part.readiness,
                &self.metrics,
            )?);
            part.readiness.pool_ready(Arc::clone(&pool));
            self.metrics
                .watch_database(&spec.name, Arc::clone(&db.engine));
            part.pool = Some(pool);
            parts.push(part);
        }
        self.readiness.replace(
            parts
                .iter()
                .map(|p| (p.name.clone(), p.required, Arc::clone(&p.readiness)))
                .collect(),
        );
        for part in &old_parts {
            if !specs.iter().any(|spec| spec.name == part.name) {
                self.metrics.forget_database(&part.name);
            }
        }
        self.metrics.register_tools(&self.server.tool_names());
        self.metrics.generation(next.number);
        state.specs = specs;
        state.parts = parts;
        drop(state);
        // The replaced databases close once the last call on them is done.
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            while Arc::strong_count(&previous) > 1 && started.elapsed() < DRAIN_LIMIT {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            drop(previous);
            let _ = tokio::task::spawn_blocking(move || {
                for part in old_parts {
                    if let Err(err) = part.close() {
                        tracing::warn!(error = %err, "closing a database a reload replaced");
                    }
                }
            })
            .await;
        });
        Ok(next.number)
    }
}

/// A database a reload may open: its file exists (a reload never creates
/// one, a typo would otherwise become an empty database), and it is not a
/// replica whose follower the server runs (that one starts with the server).
fn reloadable(spec: &DatabaseSpec) -> Result<(), AppError> {
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
async fn reuse_database(
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
        },
        declared,
    ))
}

/// A database's declared tools and policy, read from their files and
/// checked against its schema.
fn tools_and_policy(
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

/// The metrics, plus the audit log when there is one, as one observer of
/// each kind.
fn observers(metrics: &Arc<Metrics>, audit: Option<&Arc<AuditLog>>) -> Observers {
    let by_name = Arc::clone(metrics);
    let pool: PoolObserverFor = Arc::new(move |name: &str| by_name.pool_observer(name));
    let metrics_tools = Arc::clone(metrics) as Arc<dyn ToolObserver>;
    let metrics_transport = Arc::clone(metrics) as Arc<dyn TransportObserver>;
    let Some(audit) = audit else {
        return Observers {
            pool,
            tools: metrics_tools,
            transport: metrics_transport,
        };
    };
    Observers {
        pool,
        tools: Arc::new(ToolObservers(vec![
            metrics_tools,
            Arc::clone(audit) as Arc<dyn ToolObserver>,
        ])),
        transport: Arc::new(TransportObservers(vec![
            metrics_transport,
            Arc::clone(audit) as Arc<dyn TransportObserver>,
        ])),
    }
}

/// Runs the server until shutdown (a signal, or the stdio client leaving),
/// then closes the database cleanly. The sidecar answers probes from before
/// the database opens until after it is closed.
pub async fn run(mut config: Config, shutdown: Shutdown) -> Result<(), AppError> {
    let specs = config.database_specs()?;
    reserve_open_files(&mut config, &specs);
    let calls = CallTracker::new();
    let metrics = Arc::new(Metrics::new());
    let mut databases: Vec<DatabaseParts> = specs
        .iter()
        .map(|spec| DatabaseParts::new(spec, &shutdown))
        .collect();
    for spec in &specs {
        let replication = spec.database.replication_settings();
        if replication.role == Role::Replica {
            metrics.replica(&spec.name, replication.max_lag);
        }
    }
    let readiness = Arc::new(ReadinessSet::new(
        databases
            .iter()
            .map(|parts| {
                (
                    parts.name.clone(),
                    parts.required,
                    Arc::clone(&parts.readiness),
                )
            })
            .collect(),
    ));
    let sidecar_stop = tokio_util::sync::CancellationToken::new();
    let sidecar = start_sidecar(&config, &metrics, &readiness, &sidecar_stop)?;
    let mut http = config.mcp.http_settings();
    if specs.iter().all(|spec| spec.database.role == Role::Replica) {
        // Any replica behind a load balancer answers any request.
        http.stateless = true;
    }
    // Bind before opening the database: a taken port fails fast.
    let listener = match config.mcp.transport {
        Transport::Http => Some(transport::http::bind(&http).await?),
        Transport::Stdio => None,
    };
    // An audit log that cannot be opened, or a bad tokens file, stops
    // startup before the database is opened.
    let audit = match config.audit.audit_settings() {
        Some(settings) => Some(Arc::new(AuditLog::open(settings)?)),
        None => None,
    };
    if let Some(audit) = &audit {
        metrics.watch_audit(Arc::clone(audit));
    }
    let observers = observers(&metrics, audit.as_ref());
    let (auth, tokens) = match config.mcp.transport {
        Transport::Http => authenticator(&config, &observers.transport)?,
        Transport::Stdio => (None, None),
    };
    // A replica runs its follower before anything waits for its restore.
    let mut gates = HashMap::new();
    for (spec, parts) in specs.iter().zip(databases.iter_mut()) {
        let replication = spec.database.replication_settings();
        if let (true, Some(url)) = (replication.follow, &replication.replica_url) {
            let follower = Follower::start(FollowerSettings {
                litestream_bin: replication.litestream_bin.clone(),
                replica_url: url.clone(),
                path: spec.database.path.clone(),
            })
            .map_err(|err| AppError::Thread("follower", err))?;
            metrics.watch_follower(&spec.name, follower.gate().clone());
            gates.insert(spec.name.clone(), follower.gate().clone());
            parts.follower = Some(follower);
        }
    }
    for (spec, parts) in specs.iter().zip(&databases) {
        if !first_restore(spec, &parts.readiness, &shutdown, gates.get(&spec.name)).await {
            let followers: Vec<Follower> = databases
                .into_iter()
                .filter_map(|parts| parts.follower)
                .collect();
            tokio::task::spawn_blocking(move || followers.into_iter().for_each(Follower::stop))
                .await
                .ok();
            sidecar_stop.cancel();
            if let Some(sidecar) = sidecar {
                let _ = tokio::task::spawn_blocking(move || sidecar.join()).await;
            }
            tracing::info!("eros-mcp stopped before the first restore arrived");
            return Ok(());
        }
    }
    let server = build_following(&config, &specs, &observers, Arc::clone(&calls), &gates).await?;
    let auth = auth.map(|auth| auth.with_scope_rules(server.scope_rules()));
    for (spec, parts) in specs.iter().zip(databases.iter_mut()) {
        let catalog = server.catalog();
        let db = catalog
            .find(Some(&spec.name))
            .expect("every declared database is served");
        let pool = Arc::clone(db.engine.pool());
        parts.background = Some(Background::start(
            &spec.name,
            &spec.database.replication_settings(),
            &pool,
            &parts.readiness,
            &metrics,
        )?);
        parts.readiness.pool_ready(Arc::clone(&pool));
        metrics.watch_database(&spec.name, Arc::clone(&db.engine));
        parts.pool = Some(pool);
    }
    metrics.register_tools(&server.tool_names());
    let cheap = Arc::clone(&readiness);
    metrics.watch_ready(move || cheap.is_ready_cheap());
    let reloader = Arc::new(Reloader {
        config: config.clone(),
        server: server.clone(),
        observers: observers.clone(),
        metrics: Arc::clone(&metrics),
        readiness: Arc::clone(&readiness),
        shutdown: shutdown.clone(),
        state: tokio::sync::Mutex::new(ReloadState {
            specs: specs.clone(),
            parts: databases,
        }),
    });
    reload_on_hangup(
        OnHangup {
            tokens: tokens.filter(|tokens| tokens.has_file()),
            audit: audit.clone(),
            databases: Arc::clone(&reloader),
        },
        &shutdown,
    );
    tracing::info!(
        databases = ?server.catalog().names(),
        tools = ?server.tool_names(),
        transport = ?config.mcp.transport,
        "eros-mcp ready"
    );
    let served = match listener {
        Some(listener) => {
            transport::http::serve(
                listener,
                server,
                &http,
                auth,
                calls,
                shutdown.clone(),
                Arc::clone(&observers.transport),
            )
            .await
        }
        None => {
            let options = config.mcp.stdio_options(Arc::clone(&observers.transport));
            transport::stdio::serve(server, calls, shutdown.clone(), options).await
        }
    };
    shutdown.trigger();
    // Every call has finished: the last read lines reach the disk.
    if let Some(audit) = &audit {
        audit.sync();
    }
    let databases = std::mem::take(&mut reloader.state.lock().await.parts);
    let closed = tokio::task::spawn_blocking(move || {
        // Each database in turn: its replication threads, its pool (the
        // WAL checkpointed), its follower. The first failure is reported,
        // after every database was closed.
        let mut closed = Ok(());
        for parts in databases {
            let result = parts.close();
            if closed.is_ok() {
                closed = result;
            }
        }
        closed
    })
    .await
    .map_err(|err| AppError::Task(err.to_string()))?;
    sidecar_stop.cancel();
    if let Some(sidecar) = sidecar {
        let _ = tokio::task::spawn_blocking(move || sidecar.join()).await;
    }
    served?;
    closed.map_err(AppError::Close)?;
    tracing::info!("eros-mcp stopped; database closed");
    Ok(())
}

/// On a replica, waits (serving probes: `/readyz` says why) until the
/// follower's first restore has produced the database file. False when
/// shutdown came first.
async fn first_restore(
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
struct DatabaseParts {
    name: String,
    required: bool,
    readiness: Arc<Readiness>,
    follower: Option<Follower>,
    background: Option<Background>,
    pool: Option<Arc<Pool>>,
}

impl DatabaseParts {
    fn new(spec: &DatabaseSpec, shutdown: &Shutdown) -> Self {
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
    fn close(self) -> Result<(), rusqlite::Error> {
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
const RESTORE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The replication threads that run beside the server: a replicated
/// primary's heartbeat writer, a replica's lag monitor.
struct Background {
    heartbeat: Option<HeartbeatWriter>,
    lag: Option<LagMonitor>,
}

impl Background {
    fn start(
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

    fn stop(self) {
        if let Some(heartbeat) = self.heartbeat {
            heartbeat.stop();
        }
        if let Some(lag) = self.lag {
            lag.stop();
        }
    }
}

/// Starts the sidecar. A taken port stops an HTTP deployment (it should
/// fail fast and visibly) but not a stdio server, which an agent may start
/// twice on one machine: that one serves without metrics.
fn start_sidecar(
    config: &Config,
    metrics: &Arc<Metrics>,
    readiness: &Arc<ReadinessSet>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Option<std::thread::JoinHandle<()>>, AppError> {
    let Some(addr) = config.metrics.addr else {
        return Ok(None);
    };
    let state = SidecarState {
        metrics: Arc::clone(metrics),
        readiness: Arc::clone(readiness),
    };
    match Sidecar::bind(addr) {
        Ok(sidecar) => sidecar
            .spawn(state, stop.clone())
            .map(Some)
            .map_err(AppError::SidecarThread),
        Err(err) if config.mcp.transport == Transport::Stdio => {
            tracing::warn!("{err}; serving MCP without metrics and probes");
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// Raises the open-file limit as far as allowed and lowers the MCP
/// connection cap to what fits beside the database connections, the
/// sidecar and the rest, so those always find a descriptor.
fn reserve_open_files(config: &mut Config, specs: &[DatabaseSpec]) {
    let database_connections = specs
        .iter()
        .map(|spec| spec.database.max_connections())
        .sum();
    let budget = FileBudget::new(
        raise_open_file_limit(),
        database_connections,
        config.mcp.max_connections,
    );
    if budget.max_connections < config.mcp.max_connections {
        tracing::warn!(
            open_files = budget.open_files,
            reserve = budget.reserve,
            configured = config.mcp.max_connections,
            effective = budget.max_connections,
            "the open-file limit lowers EROS_MCP_MAX_CONNECTIONS"
        );
    }
    config.mcp.max_connections = budget.max_connections;
    tracing::info!(
        open_files = budget.open_files,
        reserve = budget.reserve,
        max_connections = budget.max_connections,
        "MCP connection cap"
    );
}
