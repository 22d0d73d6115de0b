//! Worker processes of overflow connections just closed, kept for a moment
//! in case the pool opens another.
//!
//! QueuePool closes an overflow connection on return while `pool_size` are
//! idle, and opens one again as soon as demand passes `pool_size`. Under a
//! steady load just above the pool (32 clients on a pool of 10 + 5) that
//! is a close and an open every few calls, and opening a connection here
//! means starting a process: 764 of them in 5 s, a third of the server's
//! CPU. So the pool's counts stay QueuePool's (the connection is closed,
//! the next one opened), but the process of a closed overflow connection
//! is kept for [`LINGER`] and the next open takes it instead of starting
//! one. A spare holds no lock (its connection is at rest, as an idle one
//! is) and keeps its birth, so `EROS_DB_CONN_MAX_AGE` still retires it.
//! Spares older than [`LINGER`] are let go (killed and reaped) by the next
//! open or close, or by the pool's maintenance pass.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::worker::WorkerProcess;
use crate::sqlite::health::FileIdentity;

/// How long a spare is kept.
pub const LINGER: Duration = Duration::from_secs(1);

/// The process of a closed overflow connection, with what the connection
/// knew of itself.
pub struct Spare {
    pub process: WorkerProcess,
    pub born: Instant,
    pub expires_at: Instant,
    pub file: Option<FileIdentity>,
    pub shelved: Instant,
}

impl Spare {
    fn is_fresh(&self, now: Instant) -> bool {
        now.duration_since(self.shelved) < LINGER
            && now < self.expires_at
            && self.process.is_usable()
            && !self.process.control().has_exited()
    }
}

/// At most `max` spares, newest last; none once the pool closes.
pub struct Spares {
    kept: Mutex<Kept>,
    max: usize,
}

#[derive(Default)]
struct Kept {
    spares: Vec<Spare>,
    closed: bool,
}

impl Spares {
    pub fn new(max: usize) -> Self {
        Self {
            kept: Mutex::new(Kept::default()),
            max,
        }
    }

    /// Keeps `spare` (letting go of stale ones, and of the oldest past `max`).
    pub fn shelve(&self, spare: Spare) {
        if self.max == 0 {
            return;
        }
        let gone = {
            let mut kept = self.kept.lock().unwrap();
            if kept.closed {
                vec![spare]
            } else {
                let mut gone = stale(&mut kept.spares, Instant::now());
                if kept.spares.len() >= self.max {
                    gone.push(kept.spares.remove(0));
                }
                kept.spares.push(spare);
                gone
            }
        };
        // Dropped outside the lock: dropping a worker hands it to the reaper.
        drop(gone);
    }

    /// The newest fresh spare, if any.
    pub fn take(&self) -> Option<Spare> {
        let (taken, gone) = {
            let mut kept = self.kept.lock().unwrap();
            let gone = stale(&mut kept.spares, Instant::now());
            (kept.spares.pop(), gone)
        };
        drop(gone);
        taken
    }

    /// Lets go of spares older than [`LINGER`].
    pub fn prune(&self) {
        let gone = stale(&mut self.kept.lock().unwrap().spares, Instant::now());
        drop(gone);
    }

    /// Lets go of every spare and keeps none from now on (the pool closes).
    pub fn close(&self) {
        let gone = {
            let mut kept = self.kept.lock().unwrap();
            kept.closed = true;
            std::mem::take(&mut kept.spares)
        };
        drop(gone);
    }
}

/// Takes the spares that are no longer fresh out of `kept`.
fn stale(kept: &mut Vec<Spare>, now: Instant) -> Vec<Spare> {
    let (fresh, stale): (Vec<Spare>, Vec<Spare>) = std::mem::take(kept)
        .into_iter()
        .partition(|s| s.is_fresh(now));
    *kept = fresh;
    stale
}
