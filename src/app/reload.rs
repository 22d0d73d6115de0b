//! SIGHUP: the tokens and quotas files re-read, the audit log reopened, and
//! the databases, declared tools, policies and descriptions reloaded.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::config::{Config, DatabaseSpec};
use crate::identity::tokens::StaticTokens;
use crate::mcp::ErosServer;
use crate::pool::Pool;
use crate::quota::Quotas;
use crate::shutdown::Shutdown;
use crate::sidecar::{Metrics, ReadinessSet};

use super::databases::{open_database, reloadable, reuse_database, Background, DatabaseParts};
use super::error::AppError;
use super::observers::Observers;

/// What one SIGHUP re-reads: the tokens file, and the audit log (reopened
/// at its path after an external tool rotated it).
pub(super) struct OnHangup {
    pub(super) tokens: Option<Arc<StaticTokens>>,
    /// The quotas, when a file gives them (what principals spent is kept).
    pub(super) quotas: Option<Quotas>,
    pub(super) audit: Option<Arc<AuditLog>>,
    /// The databases, their declared tools, policies and descriptions.
    pub(super) databases: Arc<Reloader>,
}

impl OnHangup {
    /// A tokens file that no longer reads keeps the tokens already
    /// accepted, an audit log that cannot be reopened keeps the open file,
    /// a configuration that does not check out keeps the one in force; the
    /// log says why.
    pub(super) async fn reload(&self) {
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
        if let Some(quotas) = &self.quotas {
            match quotas.reload() {
                Ok(named) => tracing::info!(named, "SIGHUP: quotas file re-read"),
                Err(err) => tracing::error!(error = %err, "SIGHUP: kept the previous quotas"),
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

impl OnHangup {
    /// The files a reload re-reads: the databases' and the quotas file.
    async fn fingerprint(&self) -> Fingerprint {
        let mut files = self.databases.fingerprint().await;
        if let Some(path) = self.quotas.as_ref().and_then(Quotas::path) {
            files.push(stamp(path.to_path_buf()));
        }
        files
    }
}

/// Calls `on_hangup` on every SIGHUP [`Shutdown`] hands on (which never
/// stops the server: see [`Shutdown::trigger_on_signals`]). With nothing
/// to re-read there is nothing to wait for.
pub(super) fn reload_on_hangup(on_hangup: OnHangup, shutdown: &Shutdown) {
    let on_hangup = Arc::new(on_hangup);
    let mut hangups = shutdown.hangups();
    let on_signal = Arc::clone(&on_hangup);
    tokio::spawn(async move {
        while hangups.changed().await.is_ok() {
            on_signal.reload().await;
        }
    });
    if on_hangup.databases.config.databases.watch {
        tokio::spawn(watch_files(on_hangup, shutdown.clone()));
    }
}

/// How often the configuration files are looked at.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reloads the configuration, as SIGHUP does, when one of its files
/// changes (by size or modification time) and then stays unchanged for a
/// look: a file being written is not read half-way.
async fn watch_files(on_hangup: Arc<OnHangup>, shutdown: Shutdown) {
    let mut seen = on_hangup.fingerprint().await;
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let now = on_hangup.fingerprint().await;
        if now == seen {
            continue;
        }
        tokio::time::sleep(WATCH_EVERY / 4).await;
        if on_hangup.fingerprint().await != now {
            continue;
        }
        tracing::info!("a configuration file changed: reloading");
        on_hangup.reload().await;
        seen = on_hangup.fingerprint().await;
    }
}

/// Each configuration file's size and modification time (`None` when it
/// cannot be read).
type Fingerprint = Vec<(std::path::PathBuf, Option<(u64, std::time::SystemTime)>)>;

/// `path` with its size and modification time, as a [`Fingerprint`] holds it.
fn stamp(path: std::path::PathBuf) -> (std::path::PathBuf, Option<(u64, std::time::SystemTime)>) {
    let stamp = std::fs::metadata(&path)
        .ok()
        .and_then(|m| Some((m.len(), m.modified().ok()?)));
    (path, stamp)
}

/// Re-reads the databases (the databases file, or `EROS_DB_PATH`'s one),
/// their declared tools, policies and descriptions, checks all of it (files
/// opened, statements prepared, policy entries checked against each schema)
/// and only then puts it in place at once ([`ErosServer::replace`]). A
/// database whose settings did not change keeps its pool; one added or
/// changed gets a new pool; one removed or replaced is closed once no
/// running call holds it.
pub(super) struct Reloader {
    pub(super) config: Config,
    pub(super) server: ErosServer,
    pub(super) observers: Observers,
    pub(super) metrics: Arc<Metrics>,
    pub(super) readiness: Arc<ReadinessSet>,
    pub(super) shutdown: Shutdown,
    pub(super) state: tokio::sync::Mutex<ReloadState>,
}

/// The databases in force and what runs beside each.
pub(super) struct ReloadState {
    /// Databases a reload replaced, closing once their calls are done;
    /// shutdown waits for them.
    pub(super) draining: Vec<tokio::task::JoinHandle<()>>,
    pub(super) specs: Vec<DatabaseSpec>,
    pub(super) parts: Vec<DatabaseParts>,
}

/// How long a replaced database waits for the calls still running on it
/// before its pool is closed anyway.
pub(super) const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

impl Reloader {
    /// The files the configuration in force was read from, as they are now.
    async fn fingerprint(&self) -> Fingerprint {
        let state = self.state.lock().await;
        let mut files: Vec<std::path::PathBuf> =
            self.config.databases.file.iter().cloned().collect();
        for spec in &state.specs {
            files.extend(spec.files().map(std::path::Path::to_path_buf));
        }
        drop(state);
        files.into_iter().map(stamp).collect()
    }

    /// One reload: the new generation's number, or why the configuration in
    /// force was kept.
    async fn reload(&self) -> Result<u64, AppError> {
        let mut state = self.state.lock().await;
        // Shutdown has taken (or is taking) the databases to close them.
        if self.shutdown.is_triggered() {
            return Err(AppError::Task("the server is shutting down".into()));
        }
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
            let db = Arc::clone(
                next.catalog()
                    .find(Some(&spec.name))
                    .expect("the new generation serves every database of its specs"),
            );
            let mut part = DatabaseParts::new(spec, &self.shutdown);
            let pool = Arc::clone(db.engine.pool());
            let replication = spec.database.replication_settings();
            if replication.role == crate::replication::Role::Replica {
                self.metrics.replica(&spec.name, replication.max_lag);
            }
            // The new generation is already serving: a thread that cannot
            // start is logged, not a reason to report the old one in force.
            match Background::start(
                &spec.name,
                &replication,
                &pool,
                &part.readiness,
                &self.metrics,
            ) {
                Ok(background) => part.background = Some(background),
                Err(err) => tracing::error!(
                    database = %spec.name,
                    error = %err,
                    "a reloaded database serves without its replication thread"
                ),
            }
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
        // The replaced databases close once the last call on them is done,
        // whatever generation it started under: each engine is held by the
        // generations and calls that use it, and by nothing else once the
        // metrics have let it go.
        let engines: Vec<Arc<crate::engine::QueryEngine>> = old_parts
            .iter()
            .filter_map(|part| {
                previous
                    .catalog()
                    .find(Some(&part.name))
                    .ok()
                    .map(|db| Arc::clone(&db.engine))
            })
            .collect();
        drop(previous);
        state.draining.retain(|drain| !drain.is_finished());
        state.draining.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            while engines.iter().any(|engine| Arc::strong_count(engine) > 1)
                && started.elapsed() < DRAIN_LIMIT
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            drop(engines);
            let _ = tokio::task::spawn_blocking(move || {
                for part in old_parts {
                    if let Err(err) = part.close() {
                        tracing::warn!(error = %err, "closing a database a reload replaced");
                    }
                }
            })
            .await;
        }));
        drop(state);
        Ok(next.number)
    }
}
