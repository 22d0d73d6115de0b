//! What one principal may take over time: quotas keyed on the identity a
//! call carries (never its session, so new sessions reset nothing), and
//! fair shares of each database's connections when they run short.
//!
//! - [`file`]: the quotas file (`EROS_AUTH_QUOTAS_FILE`), a default and
//!   named principals.
//! - [`bucket`]: the token bucket behind each per-minute quota.
//! - [`fair`]: the checkout gate that serves principals in turn.
//!
//! A call is admitted ([`Quotas::admit`]) before any SQL runs: calls in
//! flight and calls per minute are counted then; database time, rows and
//! bytes are charged once it has run ([`Admission::charge`]), and a
//! principal in debt is refused until the minute has paid it back.

pub mod bucket;
pub mod fair;
pub mod file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bucket::Bucket;
pub use file::{Limits, QuotaFile, QuotaFileError};

use crate::identity::{Principal, Proof};

/// Each kind of quota, as the metric's `quota` label and errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quota {
    CallsPerMinute,
    InFlight,
    SqliteSecondsPerMinute,
    RowsPerMinute,
    BytesPerMinute,
}

impl Quota {
    pub const ALL: [Quota; 5] = [
        Quota::CallsPerMinute,
        Quota::InFlight,
        Quota::SqliteSecondsPerMinute,
        Quota::RowsPerMinute,
        Quota::BytesPerMinute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Quota::CallsPerMinute => "calls_per_minute",
            Quota::InFlight => "in_flight",
            Quota::SqliteSecondsPerMinute => "sqlite_seconds_per_minute",
            Quota::RowsPerMinute => "rows_per_minute",
            Quota::BytesPerMinute => "bytes_per_minute",
        }
    }
}

/// The metric label of a principal the quotas file does not name: the
/// label's values stay the file's names plus this one.
pub const OTHER: &str = "other";

/// A call refused by a quota, before any SQL ran.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{principal} is over its quota {quota} ({limit}); retry in {} s (EROS_AUTH_QUOTAS_FILE)",
    retry_secs(*retry_after)
)]
pub struct QuotaExceeded {
    pub quota: &'static str,
    pub principal: String,
    /// The limit as the file gives it, for the message.
    pub limit: String,
    pub retry_after: Duration,
}

/// What a principal's quotas and fair share are kept under: how it proved
/// who it is and its name (a static token's name, an OAuth token's subject,
/// the local user). Not its OAuth client: one user with several clients is
/// one principal, and a client registered anew gets no fresh quota.
pub fn principal_key(principal: &Principal) -> String {
    format!("{:?}\u{0}{}", principal.proof, principal.name)
}

/// Whole seconds, rounded up, at least 1: what `Retry-After` takes.
pub fn retry_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.clamp(1, 3600)
}

/// Told of every refusal (the metrics). The default counts nothing.
pub trait QuotaObserver: Send + Sync + 'static {
    /// `principal` is the name the quotas file gives it, or [`OTHER`].
    fn refused(&self, _principal: &str, _quota: Quota) {}
}

/// An observer that counts nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoQuotaObserver;
impl QuotaObserver for NoQuotaObserver {}

/// One principal's spending.
#[derive(Debug)]
struct Usage {
    limits: Limits,
    in_flight: u32,
    calls: Option<Bucket>,
    sqlite: Option<Bucket>,
    rows: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl Usage {
    fn new(limits: Limits, now: Instant) -> Self {
        let mut usage = Self {
            limits: Limits::default(),
            in_flight: 0,
            calls: None,
            sqlite: None,
            rows: None,
            bytes: None,
        };
        usage.set_limits(limits, now);
        usage
    }

    /// Brings the buckets in line with `limits`, keeping what was spent.
    fn set_limits(&mut self, limits: Limits, now: Instant) {
        if limits == self.limits {
            return;
        }
        fn sync(bucket: &mut Option<Bucket>, limit: Option<(f64, f64)>, now: Instant) {
            *bucket = match (limit, bucket.take()) {
                (None, _) => None,
                (Some((capacity, rate)), Some(old)) => Some(old.with_limits(capacity, rate, now)),
                (Some((capacity, rate)), None) => Some(Bucket::new(capacity, rate, now)),
            };
        }
        let per_minute = |limit: Option<f64>| limit.map(|limit| (limit, limit));
        sync(
            &mut self.calls,
            limits
                .calls_per_minute
                .map(|rate| (f64::from(limits.burst_size().unwrap_or(1)), f64::from(rate))),
            now,
        );
        sync(
            &mut self.sqlite,
            per_minute(limits.sqlite_seconds_per_minute),
            now,
        );
        sync(
            &mut self.rows,
            per_minute(limits.rows_per_minute.map(|v| v as f64)),
            now,
        );
        sync(
            &mut self.bytes,
            per_minute(limits.bytes_per_minute.map(|v| v as f64)),
            now,
        );
        self.limits = limits;
    }

    /// Whether a call may start now, or which quota refuses it and for how long.
    fn admit(&mut self, now: Instant) -> Result<(), (Quota, Duration)> {
        if let Some(max) = self.limits.in_flight {
            if self.in_flight >= max {
                return Err((Quota::InFlight, Duration::from_secs(1)));
            }
        }
        let debts = [
            (Quota::SqliteSecondsPerMinute, &mut self.sqlite),
            (Quota::RowsPerMinute, &mut self.rows),
            (Quota::BytesPerMinute, &mut self.bytes),
        ];
        for (quota, bucket) in debts {
            if let Some(bucket) = bucket {
                bucket.wait(now).map_err(|wait| (quota, wait))?;
            }
        }
        if let Some(calls) = &mut self.calls {
            calls
                .try_take(1.0, now)
                .map_err(|wait| (Quota::CallsPerMinute, wait))?;
        }
        self.in_flight += 1;
        Ok(())
    }

    fn limit_text(&self, quota: Quota) -> String {
        let limits = &self.limits;
        match quota {
            Quota::CallsPerMinute => format!(
                "{} calls a minute, bursts of {}",
                limits.calls_per_minute.unwrap_or_default(),
                limits.burst_size().unwrap_or_default()
            ),
            Quota::InFlight => format!("{} calls at once", limits.in_flight.unwrap_or_default()),
            Quota::SqliteSecondsPerMinute => format!(
                "{} s of database time a minute",
                limits.sqlite_seconds_per_minute.unwrap_or_default()
            ),
            Quota::RowsPerMinute => {
                format!(
                    "{} rows a minute",
                    limits.rows_per_minute.unwrap_or_default()
                )
            }
            Quota::BytesPerMinute => {
                format!(
                    "{} bytes a minute",
                    limits.bytes_per_minute.unwrap_or_default()
                )
            }
        }
    }

    /// Idle and owing nothing: forgetting it changes nothing.
    fn is_settled(&mut self, now: Instant) -> bool {
        self.in_flight == 0
            && [
                &mut self.calls,
                &mut self.sqlite,
                &mut self.rows,
                &mut self.bytes,
            ]
            .into_iter()
            .flatten()
            .all(|bucket| bucket.is_full(now))
    }
}

/// Every principal's quotas: the file's limits (replaced on reload) and
/// what each principal has spent (kept across reloads). Cloneable handle.
#[derive(Clone)]
pub struct Quotas {
    inner: Arc<Inner>,
}

struct Inner {
    path: Option<PathBuf>,
    file: RwLock<Arc<QuotaFile>>,
    usage: Mutex<HashMap<String, Usage>>,
    observer: Arc<dyn QuotaObserver>,
}

/// Principals tracked before settled ones are forgotten.
const FORGET_AFTER: usize = 1024;

impl Quotas {
    /// The quotas `file` gives.
    pub fn new(file: QuotaFile, observer: Arc<dyn QuotaObserver>) -> Self {
        Self::build(None, file, observer)
    }

    /// The quotas of the file at `path`, which [`Quotas::reload`] re-reads.
    pub fn from_path(
        path: &Path,
        observer: Arc<dyn QuotaObserver>,
    ) -> Result<Self, QuotaFileError> {
        let file = QuotaFile::read(path)?;
        Ok(Self::build(Some(path.to_path_buf()), file, observer))
    }

    fn build(path: Option<PathBuf>, file: QuotaFile, observer: Arc<dyn QuotaObserver>) -> Self {
        Self {
            inner: Arc::new(Inner {
                path,
                file: RwLock::new(Arc::new(file)),
                usage: Mutex::new(HashMap::new()),
                observer,
            }),
        }
    }

    /// The file the quotas come from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Re-reads the file; a file that no longer reads keeps the current
    /// quotas. What principals have spent is kept either way.
    pub fn reload(&self) -> Result<usize, QuotaFileError> {
        let Some(path) = &self.inner.path else {
            return Ok(0);
        };
        let file = QuotaFile::read(path)?;
        let named = file.principals.len();
        *self.inner.file.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(file);
        Ok(named)
    }

    /// The names the file gives principals: the metric's label values,
    /// besides [`OTHER`].
    pub fn named(&self) -> Vec<String> {
        self.file().principals.keys().cloned().collect()
    }

    fn file(&self) -> Arc<QuotaFile> {
        Arc::clone(&self.inner.file.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Admits a call by `principal`, or says which quota refuses it.
    pub fn admit(&self, principal: &Principal) -> Result<Admission, QuotaExceeded> {
        let file = self.file();
        let names = std::iter::once(principal.name.as_str()).chain(principal.client_id.as_deref());
        let (limits, named) = file.limits_for(names, principal.proof == Proof::Local);
        let now = Instant::now();
        let key = principal_key(principal);
        let mut usage = self.inner.usage.lock().unwrap_or_else(|p| p.into_inner());
        if limits == Limits::default() && !usage.contains_key(&key) {
            return Ok(Admission {
                quotas: None,
                key: String::new(),
            });
        }
        if usage.len() >= FORGET_AFTER {
            usage.retain(|_, spent| !spent.is_settled(now));
        }
        let spent = usage
            .entry(key.clone())
            .or_insert_with(|| Usage::new(limits, now));
        spent.set_limits(limits, now);
        match spent.admit(now) {
            Ok(()) => Ok(Admission {
                quotas: Some(Arc::clone(&self.inner)),
                key,
            }),
            Err((quota, retry_after)) => {
                let limit = spent.limit_text(quota);
                drop(usage);
                self.inner.observer.refused(named.unwrap_or(OTHER), quota);
                Err(QuotaExceeded {
                    quota: quota.as_str(),
                    principal: principal.name.clone(),
                    limit,
                    retry_after,
                })
            }
        }
    }
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// An admitted call: holds its place among the principal's calls in
/// flight until dropped, and charges what it spent.
#[must_use]
pub struct Admission {
    quotas: Option<Arc<Inner>>,
    key: String,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("counted", &self.quotas.is_some())
            .finish()
    }
}

impl Admission {
    /// A call no quota counts.
    pub fn unlimited() -> Self {
        Self {
            quotas: None,
            key: String::new(),
        }
    }

    /// Charges what the call spent: database time, rows and bytes returned.
    pub fn charge(&self, database_time: Duration, rows: u64, bytes: u64) {
        let Some(inner) = &self.quotas else { return };
        let now = Instant::now();
        let mut usage = inner.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(spent) = usage.get_mut(&self.key) {
            if let Some(bucket) = &mut spent.sqlite {
                bucket.charge(database_time.as_secs_f64(), now);
            }
            if let Some(bucket) = &mut spent.rows {
                bucket.charge(rows as f64, now);
            }
            if let Some(bucket) = &mut spent.bytes {
                bucket.charge(bytes as f64, now);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let Some(inner) = &self.quotas else { return };
        let mut usage = inner.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(spent) = usage.get_mut(&self.key) {
            spent.in_flight = spent.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Scopes;

    fn quotas(text: &str) -> Quotas {
        Quotas::new(QuotaFile::parse(text).unwrap(), Arc::new(NoQuotaObserver))
    }

    fn token(name: &str) -> Principal {
        Principal::static_token(name, Scopes::All)
    }

    #[test]
    fn calls_in_flight_are_limited_and_come_back_when_a_call_ends() {
        let quotas = quotas("[default]\nin_flight = 2\n");
        let a = quotas.admit(&token("a")).unwrap();
        let _b = quotas.admit(&token("a")).unwrap();
        let refused = quotas.admit(&token("a")).unwrap_err();
        assert_eq!(refused.quota, "in_flight");
        // Another principal has its own.
        let _b_call = quotas.admit(&token("b")).unwrap();
        drop(a);
        let _again = quotas.admit(&token("a")).unwrap();
    }

    #[test]
    fn rows_are_charged_after_the_call_and_refuse_the_next() {
        let quotas = quotas("[default]\nrows_per_minute = 100\n");
        let call = quotas.admit(&token("a")).unwrap();
        call.charge(Duration::ZERO, 150, 0);
        drop(call);
        let refused = quotas.admit(&token("a")).unwrap_err();
        assert_eq!(refused.quota, "rows_per_minute");
        // 50 over at 100 a minute: 30 s.
        assert!(
            (29..=31).contains(&refused.retry_after.as_secs()),
            "{refused:?}"
        );
        assert!(
            refused.to_string().contains("100 rows a minute"),
            "{refused}"
        );
    }

    #[test]
    fn a_reload_keeps_what_was_spent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quotas.toml");
        std::fs::write(&path, "[default]\ncalls_per_minute = 60\nburst = 1\n").unwrap();
        let quotas = Quotas::from_path(&path, Arc::new(NoQuotaObserver)).unwrap();
        drop(quotas.admit(&token("a")).unwrap());
        std::fs::write(&path, "[default]\ncalls_per_minute = 60\nburst = 2\n").unwrap();
        quotas.reload().unwrap();
        // The bucket was emptied before the reload; a larger one is not a
        // fresh burst.
        let _ = quotas.admit(&token("a"));
        assert!(quotas.admit(&token("a")).is_err());
    }

    #[test]
    fn one_subject_through_two_oauth_clients_is_one_principal() {
        let quotas = quotas("[default]\nin_flight = 1\n");
        let through = |client: &str| Principal {
            name: "user-7".into(),
            subject: Some("user-7".into()),
            client_id: Some(client.into()),
            scopes: Scopes::All,
            proof: Proof::OAuth,
        };
        let _held = quotas.admit(&through("desktop")).unwrap();
        assert!(quotas.admit(&through("registered-just-now")).is_err());
    }

    #[test]
    fn the_retry_is_whole_seconds_at_least_one() {
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_secs(Duration::from_secs(3)), 3);
    }
}
