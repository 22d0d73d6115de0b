//! The hooks the metrics and the audit log observe the server through,
//! one fan-out of each kind.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::mcp::{NoToolObserver, ToolObserver, ToolObservers};
use crate::pool::{NoObserver, PoolObserver};
use crate::quota::{NoQuotaObserver, QuotaObserver};
use crate::sidecar::Metrics;
use crate::transport::{NoTransportObserver, TransportObserver, TransportObservers};

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
    /// Told of every quota refusal.
    pub quota: Arc<dyn QuotaObserver>,
}

impl Default for Observers {
    fn default() -> Self {
        Self {
            pool: Arc::new(|_: &str| Arc::new(NoObserver) as Arc<dyn PoolObserver>),
            tools: Arc::new(NoToolObserver),
            transport: Arc::new(NoTransportObserver),
            quota: Arc::new(NoQuotaObserver),
        }
    }
}

/// The metrics, plus the audit log when there is one, as one observer of
/// each kind.
pub(super) fn observers(metrics: &Arc<Metrics>, audit: Option<&Arc<AuditLog>>) -> Observers {
    let by_name = Arc::clone(metrics);
    let pool: PoolObserverFor = Arc::new(move |name: &str| by_name.pool_observer(name));
    let metrics_tools = Arc::clone(metrics) as Arc<dyn ToolObserver>;
    let metrics_transport = Arc::clone(metrics) as Arc<dyn TransportObserver>;
    let quota = Arc::clone(metrics) as Arc<dyn QuotaObserver>;
    let Some(audit) = audit else {
        return Observers {
            pool,
            tools: metrics_tools,
            transport: metrics_transport,
            quota,
        };
    };
    Observers {
        pool,
        quota,
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
