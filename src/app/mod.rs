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

mod databases;
mod error;
mod observers;
mod reload;

pub use error::AppError;
pub use observers::{Observers, PoolObserverFor};

use std::collections::HashMap;
use std::sync::Arc;

use crate::audit::{AuditLog, SqlInAudit};
use crate::auth::TokenValidator;
use crate::config::{Config, DatabaseSpec, Transport};
use crate::identity::tokens::StaticTokens;
use crate::mcp::{CallTracker, ErosServer};
use crate::quota::Quotas;
use crate::replication::follower::{Follower, FollowerGate, FollowerSettings};
use crate::replication::Role;
use crate::shutdown::Shutdown;
use crate::sidecar::{Metrics, ReadinessSet, Sidecar, SidecarState};
use crate::telemetry::ExportCounters;
use crate::transport::accept::{raise_open_file_limit, FileBudget};
use crate::transport::auth::{Authenticator, OAuth};
use crate::transport::{self, TransportObserver};

use databases::{first_restore, open_database, Background, DatabaseParts};
use observers::observers;
use reload::{reload_on_hangup, OnHangup, ReloadState, Reloader};

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
    // A quotas file that does not read stops startup, naming the problem.
    let quotas = match &config.auth.quotas_file {
        Some(path) => Some(Quotas::from_path(path, Arc::clone(&observers.quota))?),
        None => None,
    };
    ErosServer::new(
        databases,
        Arc::clone(&observers.tools),
        calls,
        config.mcp.row_format,
        quotas,
        config.audit.sql == SqlInAudit::Hash,
    )
    .map_err(AppError::ToolClash)
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

/// Runs the server until shutdown (a signal, or the stdio client leaving),
/// then closes the database cleanly; with traces on, `trace_exports` tells
/// the metrics what became of them. The sidecar answers probes from before
/// the database opens until after it is closed.
pub async fn run(
    mut config: Config,
    shutdown: Shutdown,
    trace_exports: Option<Arc<ExportCounters>>,
) -> Result<(), AppError> {
    let specs = config.database_specs()?;
    reserve_open_files(&mut config, &specs);
    let calls = CallTracker::new();
    let metrics = Arc::new(Metrics::new());
    if let Some(exports) = trace_exports {
        metrics.watch_trace_exports(exports);
    }
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
    if let Some(quotas) = server.quotas() {
        metrics.register_quota_principals(&quotas.named());
    }
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
            draining: Vec::new(),
            specs: specs.clone(),
            parts: databases,
        }),
    });
    reload_on_hangup(
        OnHangup {
            tokens: tokens.filter(|tokens| tokens.has_file()),
            quotas: server.quotas(),
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
    let (databases, draining) = {
        let mut state = reloader.state.lock().await;
        (
            std::mem::take(&mut state.parts),
            std::mem::take(&mut state.draining),
        )
    };
    // Databases a reload replaced: every call has finished, so they close now.
    for drain in draining {
        let _ = drain.await;
    }
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
