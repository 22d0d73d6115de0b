//! The watch over one call's statement: how the async side stops the
//! blocking work of a call at its deadline or on cancellation.
//!
//! Stopping is two mechanisms at once: a flag the progress handler reads
//! between VM steps, and `sqlite3_interrupt`, which SQLite also checks at
//! every jump and while parsing, so it lands inside a long loop well before
//! the next progress callback. Neither reaches inside one long step (a
//! multi-megabyte `instr`): for that case the caller is answered at the
//! deadline anyway and the statement is *abandoned*: it keeps its connection
//! until SQLite returns, and a write that was abandoned is rolled back
//! rather than committed, so an answer of "timed out" never hides a commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rusqlite::InterruptHandle;

use super::threads::{demote, ThreadId};
use crate::pool::Slot;

/// Where the watched call is.
enum State {
    /// Waiting for a connection.
    Waiting,
    /// A statement may be running on the connection this handle
    /// interrupts, on this thread.
    Running(InterruptHandle, ThreadId),
    /// A write is committing: its outcome must be waited for, not abandoned.
    Committing,
    /// The work is over; the connection is going back to the pool.
    Finished,
    /// The caller was answered without waiting for the work.
    Abandoned,
}

/// Shared by the async side (which stops or abandons) and the blocking
/// side (which runs the statement).
pub struct Watch {
    state: Mutex<State>,
    stopped: AtomicBool,
    /// The connection's place under the pool's cap: given back at once
    /// when the statement is abandoned, so a stuck statement does not
    /// shrink the pool for everyone else.
    slot: Mutex<Option<Slot>>,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Waiting),
            stopped: AtomicBool::new(false),
            slot: Mutex::new(None),
        }
    }
}

impl Watch {
    /// The blocking side holds a connection (and its pool slot) and is
    /// about to run SQL on it. False when the call was stopped meanwhile:
    /// do not start.
    pub fn start(&self, conn: &rusqlite::Connection, slot: Option<Slot>) -> bool {
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
        *state = State::Running(conn.get_interrupt_handle(), ThreadId::current());
        true
    }

    /// Whether the call must stop: the progress handler's question.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Stops the call: sets the flag and interrupts a running statement.
    /// Safe to repeat, which the caller does, because SQLite clears a
    /// pending interrupt when a new statement starts on an idle connection.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        if let State::Running(handle, _) = &*self.state.lock().unwrap() {
            handle.interrupt();
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

    /// The caller gives up waiting. False when the work is committing or
    /// already finished: its outcome is near and must be waited for.
    pub fn abandon(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        match *state {
            State::Committing | State::Finished => false,
            _ => {
                // A statement left running keeps a core until SQLite
                // returns: at the lowest priority, it cannot starve others.
                if let State::Running(_, thread) = &*state {
                    demote(*thread);
                }
                *state = State::Abandoned;
                drop(self.slot.lock().unwrap().take());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_call_does_not_start() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let watch = Watch::default();
        watch.stop();
        assert!(!watch.start(&conn, None));
    }

    #[test]
    fn an_abandoned_write_may_not_commit() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let watch = Watch::default();
        assert!(watch.start(&conn, None));
        assert!(watch.abandon());
        assert!(!watch.begin_commit());
        assert!(watch.finish(), "the work learns it was abandoned");
    }

    #[test]
    fn a_committing_write_is_not_abandoned() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let watch = Watch::default();
        assert!(watch.start(&conn, None));
        assert!(watch.begin_commit());
        assert!(!watch.abandon());
        assert!(!watch.finish());
    }

    #[test]
    fn stop_interrupts_a_running_statement() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let watch = std::sync::Arc::new(Watch::default());
        assert!(watch.start(&conn, None));
        let stopper = std::sync::Arc::clone(&watch);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            stopper.stop();
        });
        let err = conn
            .query_row(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) \
                 SELECT count(*) FROM c",
                [],
                |row| row.get::<_, i64>(0),
            )
            .unwrap_err();
        thread.join().unwrap();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::OperationInterrupted)
        );
    }
}
