//! The budget of HTTP connections that have not authenticated yet, kept
//! apart from the connection cap so that nobody without a token can take
//! the slots authenticated clients need: at most `max_connections` such
//! connections at once, at most `per_address` from one source address,
//! and each closed when it has not authenticated within `timeout`.
//!
//! A connection enters the budget when it is accepted (on a server with
//! authentication) and leaves it when a request on it authenticates
//! ([`ConnectionGate::authenticated`], called by
//! [`super::auth::authenticate`]) or when it closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What connections without a token may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnauthenticatedLimits {
    /// Connections not yet authenticated, from every address together.
    pub max_connections: usize,
    /// Connections not yet authenticated from one source address.
    pub per_address: usize,
    /// Time a connection has to authenticate before it is closed.
    pub timeout: Duration,
}

/// The connections not yet authenticated, by source address.
#[derive(Debug)]
pub struct UnauthenticatedBudget {
    limits: UnauthenticatedLimits,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl UnauthenticatedBudget {
    pub fn new(limits: UnauthenticatedLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::default(),
        })
    }

    pub fn limits(&self) -> UnauthenticatedLimits {
        self.limits
    }

    /// Admits a new connection from `address` into the budget, or `None`
    /// when the budget (in total or for the address) is spent.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<ConnectionGate> {
        // An IPv4 client of a dual-stack listener is one address, however
        // it is written.
        let address = address.to_canonical();
        let mut counts = self.lock();
        let from_address = counts.by_address.get(&address).copied().unwrap_or(0);
        if counts.total >= self.limits.max_connections || from_address >= self.limits.per_address {
            return None;
        }
        counts.total += 1;
        *counts.by_address.entry(address).or_insert(0) += 1;
        Some(ConnectionGate(Arc::new(Gate {
            budget: Arc::clone(self),
            address,
            unauthenticated: AtomicBool::new(true),
        })))
    }

    /// Connections in the budget now.
    pub fn unauthenticated(&self) -> usize {
        self.lock().total
    }

    fn release(&self, address: IpAddr) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.by_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                counts.by_address.remove(&address);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One connection's place in the budget, handed to each of its requests.
#[derive(Debug, Clone)]
pub struct ConnectionGate(Arc<Gate>);

#[derive(Debug)]
struct Gate {
    budget: Arc<UnauthenticatedBudget>,
    address: IpAddr,
    unauthenticated: AtomicBool,
}

impl ConnectionGate {
    /// A request on the connection authenticated: it leaves the budget
    /// and has no deadline any more.
    pub fn authenticated(&self) {
        if self.0.unauthenticated.swap(false, Ordering::AcqRel) {
            self.0.budget.release(self.0.address);
        }
    }

    pub fn is_authenticated(&self) -> bool {
        !self.0.unauthenticated.load(Ordering::Acquire)
    }

    /// Completes when the connection has had `timeout` to authenticate
    /// and has not; never once it has.
    pub async fn expired(&self) {
        tokio::time::sleep(self.0.budget.limits.timeout).await;
        if self.is_authenticated() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            self.budget.release(self.address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Arc<UnauthenticatedBudget> {
        UnauthenticatedBudget::new(UnauthenticatedLimits {
            max_connections: 3,
            per_address: 2,
            timeout: Duration::from_secs(10),
        })
    }

    #[test]
    fn one_address_takes_at_most_its_share() {
        let budget = budget();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = budget.admit(a).unwrap();
        let _second = budget.admit(a).unwrap();
        assert!(budget.admit(a).is_none(), "a third from one address");
        // The same address written as IPv4-mapped IPv6.
        assert!(budget.admit("::ffff:10.0.0.1".parse().unwrap()).is_none());
        let _other = budget.admit(b).unwrap();
        assert!(budget.admit(b).is_none(), "past the total");
        drop(first);
        assert!(budget.admit(a).is_some());
    }

    #[test]
    fn an_authenticated_connection_leaves_the_budget() {
        let budget = budget();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let gate = budget.admit(a).unwrap();
        let _other = budget.admit(a).unwrap();
        gate.authenticated();
        gate.authenticated();
        assert_eq!(budget.unauthenticated(), 1);
        let _third = budget.admit(a).unwrap();
        drop(gate);
        assert_eq!(
            budget.unauthenticated(),
            2,
            "counted once, not again at close"
        );
    }
}
