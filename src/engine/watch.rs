//! The watch over one call's statement: how the async side stops the
//! blocking work of a call at its deadline or on cancellation.
//!
//! Stopping is two steps. First the worker holding the statement is asked
//! to stop it ([`WorkerControl::interrupt`]): a flag its progress handler
//! reads between VM steps, and `sqlite3_interrupt`, which SQLite also
//! checks at every jump and while parsing. Neither reaches inside one long
//! step (a quadratic `json_patch`, the planner on a chain of CTEs): if
//! SQLite has not returned within the grace, the call is *abandoned* and
//! its worker killed ([`WorkerControl::kill`]), which gives back the
//! connection, its locks, memory and CPU at once. A write that was stopped
//! is rolled back rather than committed, and one that is committing is
//! never abandoned, so an answer of "timed out" never hides a commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::pool::worker::WorkerControl;
use crate::pool::Slot;

/// Where the watched call is.
enum State {
    /// Waiting for a connection.
    Waiting,
    /// Call `seq` runs in the worker this handle controls.
    Running(Arc<WorkerControl>, u64),
    /// A write is committing: its outcome must be waited for, not abandoned.
    Committing,
    /// The work is over; the connection is going back to the pool.
    Finished,
    /// The caller was answered without waiting for the work.
    Abandoned,
}

/// Shared by the async side (which stops or abandons) and the blocking
/// side (which runs the call).
pub struct Watch {
    state: Mutex<State>,
    stopped: AtomicBool,
    committing: AtomicBool,
    /// The connection's place under the pool's cap: given back at once
    /// when the call is abandoned, before the killed worker is reaped.
    slot: Mutex<Option<Slot>>,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Waiting),
            stopped: AtomicBool::new(false),
            committing: AtomicBool::new(false),
            slot: Mutex::new(None),
        }
    }
}

impl Watch {
    /// The blocking side holds a worker (and its pool slot) and is about
    /// to send it call `seq`. False when the call was stopped meanwhile:
    /// do not start.
    pub fn start(&self, worker: &Arc<WorkerControl>, seq: u64, slot: Option<Slot>) -> bool {
        let mut state = self.state.lock().unwrap();
        if matches!(*state, State::Abandoned) {
            return false;
        }
        // Kept even when not starting: `finish` frees it after the
        // connection is back.
        *self.slot.lock().unwrap() = slot;
        if self.is_stopped() {
            return false;
        }
        *state = State::Running(Arc::clone(worker), seq);
        true
    }

    /// Whether the call must stop.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Whether a write was allowed to commit (its outcome is then unknown
    /// until the worker answers).
    pub fn is_committing(&self) -> bool {
        self.committing.load(Ordering::Relaxed)
    }

    /// Stops the call: sets the flag and interrupts a running statement.
    /// Safe to repeat, which the caller does, because SQLite clears a
    /// pending interrupt when a new statement starts on an idle connection.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        if let State::Running(worker, seq) = &*self.state.lock().unwrap() {
            worker.interrupt(*seq);
        }
    }

    /// A write asks to commit. False when the call was stopped or abandoned:
    /// the write must roll back instead.
    pub fn begin_commit(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        if self.is_stopped() || matches!(*state, State::Abandoned) {
            return false;
        }
        *state = State::Committing;
        self.committing.store(true, Ordering::Relaxed);
        true
    }

    /// The work is over and its connection returned. True when the caller
    /// had already been answered (the statement overran its deadline).
    /// Frees the pool slot, after the connection, as the pool expects.
    pub fn finish(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        let abandoned = matches!(*state, State::Abandoned);
        *state = State::Finished;
        drop(self.slot.lock().unwrap().take());
        abandoned
    }

    /// The caller gives up waiting: a running statement's worker is killed
    /// (`Some(true)`), a call still waiting for a connection will not start
    /// (`Some(false)`). `None` when the work is committing or already
    /// finished: its outcome is near and must be waited for.
    pub fn abandon(&self) -> Option<bool> {
        let mut state = self.state.lock().unwrap();
        match &*state {
            State::Committing | State::Finished => None,
            other => {
                let killed = if let State::Running(worker, _) = other {
                    worker.kill();
                    true
                } else {
                    false
                };
                *state = State::Abandoned;
                drop(self.slot.lock().unwrap().take());
                Some(killed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_call_does_not_start_and_is_abandoned_without_a_kill() {
        let watch = Watch::default();
        watch.stop();
        assert_eq!(watch.abandon(), Some(false));
        assert!(watch.finish(), "the work learns it was abandoned");
    }

    #[test]
    fn an_abandoned_write_may_not_commit() {
        let watch = Watch::default();
        assert_eq!(watch.abandon(), Some(false));
        assert!(!watch.begin_commit());
    }

    #[test]
    fn a_committing_write_is_not_abandoned() {
        let watch = Watch::default();
        assert!(watch.begin_commit());
        assert!(watch.is_committing());
        assert_eq!(watch.abandon(), None);
        assert!(!watch.finish());
    }

    #[test]
    fn a_stopped_write_may_not_commit() {
        let watch = Watch::default();
        watch.stop();
        assert!(!watch.begin_commit());
    }
}
