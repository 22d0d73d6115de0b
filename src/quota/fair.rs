//! Fair shares of one database's connections: the gate every call passes
//! before its checkout.
//!
//! First come, first served lets one principal's flood queue ahead of
//! everyone else, so another principal's call waits behind all of it, past
//! its timeout. Here each principal that is active (a call running or
//! waiting, or one that ended within [`ACTIVE_WINDOW`]) may hold at most
//! its share: an even part of the connections and of the CPUs the
//! statements run on, rounded up, at least one; a principal alone may hold
//! every connection. The CPUs count because a statement is CPU work: eight
//! heavy reads of one principal on two cores would slow another's lookup
//! fourfold even with a connection of its own. When a connection comes free
//! it goes to the waiting principal holding the fewest, longest unserved
//! first (round-robin), and within a principal to its oldest call.
//!
//! Keeping a share free for a principal that called within the window is
//! what lets a paced client (one call, think, the next) find a connection
//! at once while a busy neighbour waits for its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::oneshot;

/// How long after its last call a principal still counts as active.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(2);

/// Principals remembered before idle ones are forgotten.
const FORGET_AFTER: usize = 256;

/// The gate of one database: `capacity` places, shared fairly.
#[derive(Clone)]
pub struct FairShares {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    /// The CPUs the statements run on: what several active principals
    /// divide, since a statement beyond them only takes CPU from the others.
    cpus: usize,
    state: Mutex<State>,
}

impl Shared {
    /// What each of `active` principals may hold: all of it alone; with
    /// others, an even part of the connections and of the CPUs, at least one.
    fn share(&self, active: usize) -> usize {
        if active <= 1 {
            return self.capacity;
        }
        self.capacity
            .div_ceil(active)
            .min(self.cpus.div_ceil(active))
            .max(1)
    }
}

#[derive(Default)]
struct State {
    free: usize,
    next_waiter: u64,
    turn: u64,
    principals: HashMap<Arc<str>, Share>,
}

struct Share {
    holding: usize,
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
    last_active: Instant,
    last_served: u64,
}

impl Share {
    fn new(now: Instant) -> Self {
        Self {
            holding: 0,
            waiting: VecDeque::new(),
            last_active: now,
            last_served: 0,
        }
    }

    fn is_active(&self, now: Instant) -> bool {
        self.holding > 0
            || !self.waiting.is_empty()
            || now.saturating_duration_since(self.last_active) < ACTIVE_WINDOW
    }
}

/// A place under the gate; given back when dropped.
pub struct SharePermit {
    shared: Arc<Shared>,
    principal: Arc<str>,
}

impl Drop for SharePermit {
    fn drop(&mut self) {
        self.shared.release(&self.principal);
    }
}

/// No place came free in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited(pub Duration);

impl State {
    fn active(&self, now: Instant) -> usize {
        self.principals
            .values()
            .filter(|share| share.is_active(now))
            .count()
            .max(1)
    }

    /// Gives free places to waiting principals under their share, the one
    /// holding the fewest first.
    fn dispatch(&mut self, shared: &Shared, now: Instant) {
        while self.free > 0 {
            let share = shared.share(self.active(now));
            let next = self
                .principals
                .iter()
                .filter(|(_, p)| !p.waiting.is_empty() && p.holding < share)
                .min_by_key(|(_, p)| (p.holding, p.last_served))
                .map(|(name, _)| Arc::clone(name));
            let Some(name) = next else { break };
            self.turn += 1;
            let turn = self.turn;
            let principal = self.principals.get_mut(&name).expect("just found");
            let (_, waiter) = principal.waiting.pop_front().expect("has waiters");
            // A waiter that gave up has dropped its receiver: skip it.
            if waiter.send(()).is_ok() {
                principal.holding += 1;
                principal.last_served = turn;
                self.free -= 1;
            }
        }
    }

    fn forget_idle(&mut self, now: Instant) {
        if self.principals.len() > FORGET_AFTER {
            self.principals.retain(|_, share| share.is_active(now));
        }
    }
}

impl FairShares {
    /// A gate of `capacity` places for statements that run on `cpus` CPUs.
    pub fn new(capacity: usize, cpus: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            shared: Arc::new(Shared {
                capacity,
                cpus: cpus.max(1),
                state: Mutex::new(State {
                    free: capacity,
                    ..State::default()
                }),
            }),
        }
    }

    /// Places in all.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Waits at most `timeout` for a place for `principal`.
    pub async fn acquire(
        &self,
        principal: &Arc<str>,
        timeout: Duration,
    ) -> Result<SharePermit, Waited> {
        let started = Instant::now();
        let deadline = Instant::now() + timeout;
        let (id, mut granted) = {
            let mut state = self.shared.lock();
            let now = Instant::now();
            state.forget_idle(now);
            let share_size = self
                .shared
                .share(state.active(now) + usize::from(!state.principals.contains_key(principal)));
            let free = state.free;
            let share = state
                .principals
                .entry(Arc::clone(principal))
                .or_insert_with(|| Share::new(now));
            share.last_active = now;
            if free > 0 && share.waiting.is_empty() && share.holding < share_size {
                share.holding += 1;
                state.free -= 1;
                return Ok(self.permit(principal));
            }
            let (sender, receiver) = oneshot::channel();
            state.next_waiter += 1;
            let id = state.next_waiter;
            let share = state.principals.get_mut(principal).expect("just added");
            share.waiting.push_back((id, sender));
            // A place may be free that this principal's share did not allow
            // but another's does: let the dispatcher decide.
            state.dispatch(&self.shared, now);
            (id, receiver)
        };
        let mut waiting = Waiting {
            shared: &self.shared,
            principal,
            id,
            done: false,
        };
        loop {
            // Shares grow as principals go idle, which no release announces:
            // look again every so often.
            let tick = Instant::now() + ACTIVE_WINDOW / 4;
            tokio::select! {
                result = &mut granted => {
                    waiting.done = true;
                    return match result {
                        Ok(()) => Ok(self.permit(principal)),
                        // The sender is dropped only with the gate.
                        Err(_) => Err(Waited(started.elapsed())),
                    };
                }
                () = tokio::time::sleep_until(tick.min(deadline)) => {
                    if Instant::now() >= deadline {
                        return Err(Waited(started.elapsed()));
                    }
                    let mut state = self.shared.lock();
                    state.dispatch(&self.shared, Instant::now());
                }
            }
        }
    }

    fn permit(&self, principal: &Arc<str>) -> SharePermit {
        SharePermit {
            shared: Arc::clone(&self.shared),
            principal: Arc::clone(principal),
        }
    }

    /// Places held now, for tests and the pool's view.
    pub fn holding(&self, principal: &str) -> usize {
        self.shared
            .lock()
            .principals
            .get(principal)
            .map_or(0, |share| share.holding)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, principal: &str) {
        let mut state = self.lock();
        let now = Instant::now();
        if let Some(share) = state.principals.get_mut(principal) {
            share.holding = share.holding.saturating_sub(1);
            share.last_active = now;
        }
        state.free += 1;
        state.dispatch(self, now);
    }
}

/// A call waiting for a place: if it is dropped (the caller gave up or
/// was cancelled), its place in the queue goes, and a place granted in the
/// meantime is given back.
struct Waiting<'a> {
    shared: &'a Arc<Shared>,
    principal: &'a Arc<str>,
    id: u64,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        let still_queued = state
            .principals
            .get_mut(&**self.principal)
            .is_some_and(|share| {
                let before = share.waiting.len();
                share.waiting.retain(|(id, _)| *id != self.id);
                share.waiting.len() < before
            });
        drop(state);
        if !still_queued {
            // Granted after the caller stopped listening.
            self.shared.release(self.principal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_principal_alone_may_hold_every_place() {
        let gate = FairShares::new(4, 4);
        let a = name("a");
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(gate.acquire(&a, LONG).await.unwrap());
        }
        assert_eq!(gate.holding("a"), 4);
        assert!(gate.acquire(&a, Duration::from_millis(20)).await.is_err());
    }

    #[tokio::test]
    async fn a_second_active_principal_gets_its_share_at_once() {
        let gate = FairShares::new(4, 4);
        let (a, b) = (name("a"), name("b"));
        // b called recently: it is active, so a may hold only half.
        drop(gate.acquire(&b, LONG).await.unwrap());
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(gate.acquire(&a, LONG).await.unwrap());
        }
        assert!(gate.acquire(&a, Duration::from_millis(20)).await.is_err());
        let _b = gate.acquire(&b, Duration::from_millis(20)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_place_goes_to_the_principal_holding_fewest_not_the_first_in_line() {
        let gate = FairShares::new(2, 2);
        let (a, b) = (name("a"), name("b"));
        let first = gate.acquire(&a, LONG).await.unwrap();
        let second = gate.acquire(&a, LONG).await.unwrap();
        // a queues three more calls, each keeping its place, before b arrives.
        let queued: Vec<_> = (0..3)
            .map(|_| {
                let (gate, a) = (gate.clone(), Arc::clone(&a));
                tokio::spawn(async move { gate.acquire(&a, LONG).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let waiter = {
            let (gate, b) = (gate.clone(), Arc::clone(&b));
            tokio::spawn(async move { gate.acquire(&b, LONG).await })
        };
        tokio::task::yield_now().await;
        drop(first);
        tokio::task::yield_now().await;
        // First come, first served would have given it to a's oldest call.
        assert!(waiter.is_finished(), "b still waits behind a's queue");
        assert_eq!((gate.holding("a"), gate.holding("b")), (1, 1));
        drop(waiter.await.unwrap().unwrap());
        drop(second);
        for call in queued {
            drop(call.await.unwrap().unwrap());
        }
        assert_eq!(gate.holding("a"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_principal_idle_past_the_window_gives_its_share_back() {
        let gate = FairShares::new(2, 2);
        let (a, b) = (name("a"), name("b"));
        drop(gate.acquire(&b, LONG).await.unwrap());
        let _one = gate.acquire(&a, LONG).await.unwrap();
        // b is active: a waits for its second place until b's window ends.
        let second = gate.acquire(&a, ACTIVE_WINDOW * 3).await;
        assert!(second.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_no_place_taken() {
        let gate = FairShares::new(1, 1);
        let a = name("a");
        let held = gate.acquire(&a, LONG).await.unwrap();
        assert_eq!(
            gate.acquire(&a, Duration::from_millis(50)).await.err(),
            Some(Waited(Duration::from_millis(50)))
        );
        // A waiter cancelled while queued.
        let cancelled = {
            let (gate, a) = (gate.clone(), Arc::clone(&a));
            tokio::spawn(async move { gate.acquire(&a, LONG).await.map(drop) })
        };
        tokio::task::yield_now().await;
        cancelled.abort();
        let _ = cancelled.await;
        drop(held);
        assert_eq!(gate.holding("a"), 0);
        let _again = gate.acquire(&a, Duration::from_millis(1)).await.unwrap();
    }
}
