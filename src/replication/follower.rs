//! A replica's follower, run by the server itself: the child
//! `litestream restore -f -o DB URL` that keeps the served copy current,
//! and the gate ([`FollowerGate`]) that says whether that copy may be read.
//!
//! Litestream 0.5.17 writes a transaction's pages in place, holding SQLite's
//! lock bytes only while it writes; a follower that dies mid-apply (SIGKILL,
//! OOM) leaves the copy torn and the kernel drops its locks, so readers
//! walk into a mix of old and new pages that `quick_check` may pass. The
//! copy is therefore trusted only while the follower that restored it runs:
//!
//! - every call is admitted by the gate when it takes a connection, and its
//!   answer is confirmed when it is back ([`Admission::confirm`]): an answer
//!   read while the follower died is refused, not served. The liveness check
//!   is `waitid(WNOWAIT)` on the child, so it holds from the instant the
//!   follower dies, before the supervisor notices;
//! - the supervisor closes the gate (queries refused with a retryable error,
//!   `/readyz` 503) before it reaps the dead child, so its pid cannot be
//!   reused while the gate still trusts it; then it removes the copy and
//!   Litestream's files beside it (0.5.17 will not resume them), and starts
//!   a new follower after a back-off. The gate opens again only when that
//!   follower's restore has put a new, whole file at the path (Litestream
//!   restores into `DB.tmp` and renames it into place when done).

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::health::FileFault;

/// How often the supervisor looks at its child and the copy.
const POLL: Duration = Duration::from_millis(20);
/// The first wait before a follower is started again; it doubles after
/// each follower that exits before its restore is in place.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How long a follower may take to exit on SIGTERM at shutdown.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// What the follower is run with.
#[derive(Debug, Clone)]
pub struct FollowerSettings {
    pub litestream_bin: PathBuf,
    pub replica_url: String,
    /// The copy the server serves.
    pub path: PathBuf,
}

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

    fn stopped(&self) -> FileFault {
        FileFault::FollowerStopped {
            path: self.0.path.clone(),
        }
    }

    fn trust(&self, pid: i32) {
        let generation = self.0.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.0.state.lock().unwrap() = State::Trusted { pid, generation };
    }

    /// Closes the gate; true if it was open.
    fn distrust(&self) -> bool {
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
fn running(pid: i32) -> bool {
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

/// The supervisor: a thread that runs the follower, restarts it afresh when
/// it stops, and stops it at shutdown.
pub struct Follower {
    gate: FollowerGate,
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Follower {
    /// Starts the supervisor; its first follower restores afresh.
    pub fn start(settings: FollowerSettings) -> std::io::Result<Self> {
        let gate = FollowerGate::new(&settings.path);
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("eros-follower".into())
            .spawn({
                let gate = gate.clone();
                move || supervise(&settings, &gate, &stopped)
            })?;
        Ok(Self { gate, stop, thread })
    }

    pub fn gate(&self) -> &FollowerGate {
        &self.gate
    }

    /// Stops the follower (SIGTERM, then SIGKILL after [`STOP_WAIT`]) and
    /// the supervisor.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// What ended one follower's run.
enum Ended {
    Exited,
    Stop,
}

fn supervise(settings: &FollowerSettings, gate: &FollowerGate, stop: &Receiver<()>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        remove_leftovers(&settings.path);
        let restored = match spawn(settings) {
            Ok(mut child) => {
                let pid = child.id() as i32;
                tracing::info!(pid, url = %settings.replica_url, "started the follower (litestream restore -f)");
                let (ended, restored) = watch(settings, gate, pid, stop);
                // Closed before the child is reaped (see `running`).
                let was_trusted = gate.distrust();
                if let Ended::Stop = ended {
                    terminate(&mut child);
                    return;
                }
                let status = child.wait();
                let status = status.map_or_else(|err| err.to_string(), |s| s.to_string());
                if was_trusted {
                    tracing::error!(
                        pid,
                        %status,
                        "the follower stopped; its copy is no longer served (it may hold a torn \
                         transaction), restoring a fresh copy"
                    );
                } else {
                    tracing::warn!(pid, %status, "the follower exited before its restore was in place");
                }
                restored
            }
            Err(err) => {
                tracing::error!(
                    bin = %settings.litestream_bin.display(),
                    error = %err,
                    "cannot start the follower (litestream restore -f); check EROS_DB_LITESTREAM_BIN"
                );
                false
            }
        };
        gate.0.restarts.fetch_add(1, Ordering::Relaxed);
        backoff = if restored {
            FIRST_BACKOFF
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
        match stop.recv_timeout(backoff) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Waits for the follower `pid` to exit or for shutdown, opening the gate
/// once its restore is in place; also says whether it was.
fn watch(
    settings: &FollowerSettings,
    gate: &FollowerGate,
    pid: i32,
    stop: &Receiver<()>,
) -> (Ended, bool) {
    let mut restored = false;
    loop {
        if !running(pid) {
            return (Ended::Exited, restored);
        }
        // Litestream renames its finished restore into place: any file at
        // the path now is this follower's (the old one was removed).
        if !restored && settings.path.exists() && running(pid) {
            gate.trust(pid);
            restored = true;
            tracing::info!(pid, path = %settings.path.display(), "the follower's restore is in place; serving it");
        }
        match stop.recv_timeout(POLL) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return (Ended::Stop, restored),
        }
    }
}

fn spawn(settings: &FollowerSettings) -> std::io::Result<Child> {
    // stdout may be the stdio transport's: Litestream's output goes to stderr.
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let mut command = Command::new(&settings.litestream_bin);
    command
        .args(["restore", "-f", "-o"])
        .arg(&settings.path)
        .arg(&settings.replica_url)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .stderr(Stdio::inherit())
        // A terminal's Ctrl-C is the server's to handle: the follower stops
        // when the server stops it.
        .process_group(0);
    // SAFETY: only an async-signal-safe call between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // Dies with the supervisor thread (it lives as long as the
            // server serves): no follower outlives the server.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// SIGTERM, a short wait, then SIGKILL; reaps the child.
fn terminate(child: &mut Child) {
    let pid = child.id() as i32;
    // SAFETY: a signal to our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_WAIT;
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Removes the copy, Litestream's `-txid` file and an interrupted restore's
/// `.tmp`: every follower restores afresh. Litestream 0.5.17 refuses to
/// resume a copy whose `-txid` is ahead of the latest snapshot (the usual
/// case), and a copy left by a stopped follower may be torn.
fn remove_leftovers(path: &Path) {
    for suffix in ["", "-txid", ".tmp"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        let file = PathBuf::from(name);
        match std::fs::remove_file(&file) {
            Ok(()) => {
                tracing::info!(path = %file.display(), "removed before the follower restores afresh")
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::error!(path = %file.display(), error = %err, "cannot remove before restoring afresh")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
