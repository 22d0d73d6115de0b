//! The pool's extension point for timing measurements, so the pool does not
//! depend on any metrics library: the sidecar implements this trait.

use std::time::Duration;

/// Receives timings from the pool. Every method has a no-op default.
pub trait PoolObserver: Send + Sync + 'static {
    /// A checkout succeeded after waiting `wait`.
    fn checkout_waited(&self, _wait: Duration) {}
    /// A connection was returned after being held for `held`.
    fn connection_held(&self, _held: Duration) {}
    /// A new connection was opened and set up in `took`.
    fn connection_opened(&self, _took: Duration) {}
    /// A call waited `wait` for its principal's turn at the fair-share gate
    /// in front of the pool (see [`crate::quota::fair`]).
    fn share_waited(&self, _wait: Duration) {}
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl PoolObserver for NoObserver {}
