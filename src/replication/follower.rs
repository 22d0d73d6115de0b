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
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::sqlite::copy_gate::running;
pub use crate::sqlite::copy_gate::{Admission, FollowerGate};

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
        gate.count_restart();
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
