//! Whether a replica's copy may be read: the [`FollowerGate`] the
//! follower's supervisor ([`crate::replication::follower`]) opens when its
//! follower's restore is in place and closes when the follower stops, and
//! that the file's health and every call consult.
//!
//! Litestream 0.5.17 writes a transaction's pages in place, holding SQLite's
//! lock bytes only while it writes; a follower that dies mid-apply leaves
//! the copy torn. The copy is therefore trusted only while the follower
//! that restored it runs: a call is admitted when it takes a connection,
//! and its answer confirmed when it is back ([`Admission::confirm`]). The
//! liveness check is `waitid(WNOWAIT)` on the child, so it holds from the
//! instant the follower dies, before the supervisor notices.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::file_fault::FileFault;

/// Whether the copy may be read, and on whose word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No follower has completed a restore yet.
    Starting,
    /// The restore of the follower `pid` is in place; it is still running.
    Trusted { pid: i32, generation: u64 },
    /// A follower stopped; a fresh copy is being restored.
    Restoring,
}

struct Gate {
    path: PathBuf,
    state: Mutex<State>,
    restarts: AtomicU64,
    generations: AtomicU64,
}

/// Whether a replica's copy may be read now. Cheap to clone; one per
/// server, shared by the supervisor, the health of the file and the engine.
#[derive(Clone)]
pub struct FollowerGate(Arc<Gate>);

impl std::fmt::Debug for FollowerGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowerGate")
            .field("state", &*self.0.state.lock().unwrap())
            .finish_non_exhaustive()
    }
}

/// A call let through the gate: valid while the same follower runs.
#[derive(Debug)]
pub struct Admission {
    gate: FollowerGate,
    generation: u64,
}

impl FollowerGate {
    /// A closed gate for the copy at `path`, waiting for the first restore.
    pub fn new(path: &Path) -> Self {
        Self(Arc::new(Gate {
            path: path.to_path_buf(),
            state: Mutex::new(State::Starting),
            restarts: AtomicU64::new(0),
            generations: AtomicU64::new(0),
        }))
    }

    /// Why the copy may not be read now, if it may not: no follower has
    /// restored it yet, or the one that did has stopped.
    pub fn fault(&self) -> Option<FileFault> {
        self.admit().err()
    }

    /// Lets a call read the copy, if the follower that restored it runs.
    pub fn admit(&self) -> Result<Admission, FileFault> {
        match *self.0.state.lock().unwrap() {
            State::Trusted { pid, generation } if running(pid) => Ok(Admission {
                gate: self.clone(),
                generation,
            }),
            State::Starting => Err(FileFault::AwaitingRestore {
                path: self.0.path.clone(),
            }),
            _ => Err(self.stopped()),
        }
    }

    /// Whether the first restore is in place (the gate opened once).
    pub fn restored(&self) -> bool {
        !matches!(*self.0.state.lock().unwrap(), State::Starting)
    }

    /// Followers started again after one stopped, since startup.
    pub fn restarts(&self) -> u64 {
        self.0.restarts.load(Ordering::Relaxed)
    }

    /// Counts a follower started again after one stopped.
    pub fn count_restart(&self) {
        self.0.restarts.fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&self) -> FileFault {
        FileFault::FollowerStopped {
            path: self.0.path.clone(),
        }
    }

    /// Opens the gate on the word of the follower `pid`, whose restore is
    /// in place.
    pub fn trust(&self, pid: i32) {
        let generation = self.0.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.0.state.lock().unwrap() = State::Trusted { pid, generation };
    }

    /// Closes the gate; true if it was open.
    pub fn distrust(&self) -> bool {
        let mut state = self.0.state.lock().unwrap();
        let was = matches!(*state, State::Trusted { .. });
        if *state != State::Starting {
            *state = State::Restoring;
        }
        was
    }
}

impl Admission {
    /// Whether what the call read may be served: the follower that was
    /// trusted when it started still runs now, so it held SQLite's locks
    /// through the whole read and the read saw whole transactions.
    pub fn confirm(self) -> Result<(), FileFault> {
        match *self.gate.0.state.lock().unwrap() {
            State::Trusted { pid, generation } if generation == self.generation && running(pid) => {
                Ok(())
            }
            _ => Err(self.gate.stopped()),
        }
    }
}

/// Whether our child `pid` has not exited, without reaping it: a dead child
/// stays a zombie (its pid not reusable) until the supervisor reaps it,
/// which it does only after closing the gate.
pub fn running(pid: i32) -> bool {
    loop {
        // SAFETY: waitid writes only into `info`, zeroed so that `si_pid`
        // stays 0 when no child changed state.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            // SAFETY: filled in by waitid for a child.
            return unsafe { info.si_pid() } == 0;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // ECHILD: already reaped, so not running.
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    #[test]
    fn an_admission_is_refused_once_its_follower_has_exited() {
        let dir = tempfile::tempdir().unwrap();
        let gate = FollowerGate::new(&dir.path().join("db"));
        assert!(matches!(
            gate.admit(),
            Err(FileFault::AwaitingRestore { .. })
        ));
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        gate.trust(pid);
        let admitted = gate.admit().unwrap();
        child.kill().unwrap();
        // Dead but not reaped: the gate still says trusted, yet the call's
        // answer is refused.
        while running(pid) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(matches!(
            admitted.confirm(),
            Err(FileFault::FollowerStopped { .. })
        ));
        assert!(matches!(
            gate.admit(),
            Err(FileFault::FollowerStopped { .. })
        ));
        assert!(gate.distrust());
        child.wait().unwrap();
        assert!(matches!(
            gate.fault(),
            Some(FileFault::FollowerStopped { .. })
        ));
    }

    #[test]
    fn an_admission_from_an_earlier_follower_is_refused_after_a_new_one_restored() {
        let gate = FollowerGate::new(Path::new("db"));
        let mut first = Command::new("sleep").arg("30").spawn().unwrap();
        gate.trust(first.id() as i32);
        let admitted = gate.admit().unwrap();
        gate.distrust();
        first.kill().unwrap();
        first.wait().unwrap();
        let mut second = Command::new("sleep").arg("30").spawn().unwrap();
        gate.trust(second.id() as i32);
        assert!(admitted.confirm().is_err());
        assert!(gate.admit().unwrap().confirm().is_ok());
        second.kill().unwrap();
        second.wait().unwrap();
    }
}
