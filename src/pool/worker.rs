//! A worker: a child process that holds one SQLite connection and runs
//! statements on it, so that a statement can always be taken back.
//!
//! A thread cannot be stopped inside a SQLite step that never checks for an
//! interrupt (a quadratic `json_patch`, the planner on a chain of CTEs, a
//! `LIKE` over megabytes); a process can. Killing a worker gives everything
//! back at once: the kernel releases its POSIX locks (so SQLite's write lock
//! too), its memory and its core, and the WAL ignores the frames of a
//! transaction that never committed, so the database stays whole.
//!
//! The worker is this same program run again with [`WORKER_ARG`]; the
//! socket is its file descriptor 3, and it dies with the server
//! (`PR_SET_PDEATHSIG`). This file owns starting, stopping and killing it;
//! what travels on the socket is the engine's (`engine::transfer`, in
//! [`super::frames`]), and the worker's own loop is `engine::host`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::frames::Frame;
use super::heap::{HeapSlot, HEAP_FD};
use super::socket::WorkerSocket;

/// The first argument that makes the program a worker.
pub const WORKER_ARG: &str = "__eros-worker";

/// The worker's end of the socket.
pub const WORKER_FD: i32 = 3;

/// The name of the server binary, found beside a test or benchmark binary
/// that builds pools of its own.
const SERVER_BINARY: &str = "eros-mcp";

/// The realtime signal that interrupts a worker's statement; its value is
/// the sequence number of the call to stop, so a late signal cannot stop
/// the next call.
pub fn stop_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start a worker process ({program}): {source}")]
    Start {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the worker process ({program}) did not answer within {within:?}: {source}; is it this \
         server's own binary?"
    )]
    Handshake {
        program: PathBuf,
        within: Duration,
        #[source]
        source: io::Error,
    },
}

/// The program workers run: `explicit` when given, else this program when
/// it is the server, else the server binary beside this one (a test or a
/// benchmark of the library lives in `target/<profile>/deps/`).
pub fn resolve_program(explicit: Option<&Path>) -> PathBuf {
    if let Some(program) = explicit {
        return program.to_path_buf();
    }
    let current = std::env::current_exe().ok();
    let is_server = current
        .as_deref()
        .and_then(Path::file_stem)
        .is_some_and(|stem| stem == SERVER_BINARY);
    if is_server {
        // The running image itself, even if its file was replaced since.
        return PathBuf::from("/proc/self/exe");
    }
    current
        .as_deref()
        .and_then(Path::parent)
        .into_iter()
        .flat_map(|dir| [dir.join(SERVER_BINARY), dir.join("..").join(SERVER_BINARY)])
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(SERVER_BINARY))
}

/// Stops or kills a worker from any thread, while another thread waits on
/// its socket. The child is reaped only through this, under its lock, so a
/// signal can never reach a process that reused the pid.
#[derive(Debug)]
pub struct WorkerControl {
    child: Mutex<Child>,
    killed: AtomicBool,
}

impl WorkerControl {
    /// Asks the worker to interrupt call `seq` (SQLite's interrupt and the
    /// progress handler's flag); a no-op if it has moved on or exited.
    pub fn interrupt(&self, seq: u64) {
        let child = self.child.lock().unwrap();
        let value = libc::sigval {
            sival_ptr: seq as usize as *mut libc::c_void,
        };
        // SAFETY: the pid is our unreaped child's (reaping takes this lock).
        unsafe { libc::sigqueue(child.id() as libc::pid_t, stop_signal(), value) };
    }

    /// Kills the worker: its statement, locks, memory and CPU go at once.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        // Child::kill is a no-op once the child has been reaped.
        let _ = self.child.lock().unwrap().kill();
    }

    /// Whether [`WorkerControl::kill`] was called.
    pub fn was_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Whether the worker process has exited (and is now reaped).
    pub fn has_exited(&self) -> bool {
        matches!(self.child.lock().unwrap().try_wait(), Ok(Some(_)) | Err(_))
    }
}

/// A running worker and its socket.
#[derive(Debug)]
pub struct WorkerProcess {
    socket: WorkerSocket,
    control: Arc<WorkerControl>,
    /// The socket failed or the stream is out of step: never used again.
    broken: bool,
    /// Its count of SQLite's heap, zeroed once the process is reaped.
    heap_slot: Option<HeapSlot>,
    /// Who waits for the process once it is let go.
    reaper: Reaper,
}

impl WorkerProcess {
    /// Starts `program` as a worker, sends it `setup` and waits at most
    /// `within` for its first frame, which is returned.
    pub fn spawn(
        program: &Path,
        setup: Frame,
        within: Duration,
        heap: Option<(RawFd, HeapSlot)>,
        reaper: Reaper,
    ) -> Result<(Self, (u8, Vec<u8>)), SpawnError> {
        let start_failed = |source| SpawnError::Start {
            program: program.to_path_buf(),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(start_failed)?;
        let their_fd = theirs.as_raw_fd();
        let heap_fd = heap.as_ref().map(|(fd, _)| *fd);
        let mut command = Command::new(program);
        command
            // What `ps` and `top` show: a worker, not a second server.
            .arg0("eros-mcp-worker")
            .arg(WORKER_ARG)
            .stdin(Stdio::null())
            // stdout is the stdio transport's: a worker never writes there.
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Moved out of the way first (closed at exec), so that one
                // cannot land on the other's target number.
                let socket = libc::fcntl(their_fd, libc::F_DUPFD_CLOEXEC, 10);
                let heap = heap_fd.map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10));
                if socket < 0 || heap.is_some_and(|fd| fd < 0) {
                    return Err(io::Error::last_os_error());
                }
                if libc::dup2(socket, WORKER_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = heap {
                    if libc::dup2(fd, HEAP_FD) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // A terminal's Ctrl-C or a signal to the process group is
                // the server's to handle: a worker ends when the server lets
                // it go (its socket closes) or dies (the death signal).
                for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                    libc::signal(signal, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(start_failed)?;
        drop(theirs);
        let control = Arc::new(WorkerControl {
            child: Mutex::new(child),
            killed: AtomicBool::new(false),
        });
        let handshake_failed = |source| SpawnError::Handshake {
            program: program.to_path_buf(),
            within,
            source,
        };
        let mut worker = Self {
            socket: WorkerSocket::new(ours).map_err(start_failed)?,
            control,
            broken: false,
            heap_slot: heap.map(|(_, slot)| slot),
            reaper,
        };
        worker.send(setup).map_err(handshake_failed)?;
        let first = worker
            .socket
            .recv_within(within)
            .inspect_err(|_| worker.broken = true)
            .map_err(handshake_failed)?;
        Ok((worker, first))
    }

    /// Sends one frame.
    pub fn send(&mut self, frame: Frame) -> io::Result<()> {
        self.socket.send(frame).inspect_err(|_| self.broken = true)
    }

    /// Waits for the worker's next frame. An error (the worker exited or
    /// was killed) leaves the worker broken.
    pub fn recv(&mut self) -> io::Result<(u8, Vec<u8>)> {
        self.socket.recv().inspect_err(|_| self.broken = true)
    }

    /// [`Self::send`] from an async task.
    pub async fn send_async(&mut self, frame: Frame) -> io::Result<()> {
        let sent = self.socket.send_async(frame).await;
        self.broken |= sent.is_err();
        sent
    }

    /// [`Self::recv`] from an async task.
    pub async fn recv_async(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let frame = self.socket.recv_async().await;
        self.broken |= frame.is_err();
        frame
    }

    /// The handle that interrupts or kills this worker from elsewhere.
    pub fn control(&self) -> &Arc<WorkerControl> {
        &self.control
    }

    /// Marks the worker as never to be used again.
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    /// Whether the worker can take another call: its socket works, nobody
    /// killed it and it is still running.
    pub fn is_usable(&self) -> bool {
        !self.broken && !self.control.was_killed()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // An idle worker exits on its own when its socket closes; one that
        // is not idle (broken, killed, stuck) is killed now. The reaper
        // waits for it, so whoever drops a worker (a call returning its
        // connection) does not.
        let _ = self.socket.stream().shutdown(std::net::Shutdown::Both);
        if self.broken || self.control.was_killed() {
            self.control.kill();
        }
        self.reaper
            .reap(Arc::clone(&self.control), self.heap_slot.take());
    }
}

/// Waits for workers that were let go, on a thread of its own, so that no
/// exited worker is left a zombie and none that will not exit lingers: an
/// idle worker gets [`EXIT_WAIT`] to close its connection and exit, then is
/// killed. Its heap slot is freed once it is reaped.
#[derive(Debug, Clone)]
pub struct Reaper {
    tx: std::sync::mpsc::Sender<(Arc<WorkerControl>, Option<HeapSlot>)>,
    /// Workers sent and not yet reaped.
    pending: Arc<(Mutex<usize>, std::sync::Condvar)>,
}

/// How long an idle worker let go may take to exit on its own.
const EXIT_WAIT: Duration = Duration::from_millis(500);

impl Reaper {
    /// Starts the reaper's thread; it ends when the last handle is dropped
    /// and every worker sent to it is reaped.
    pub fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<(Arc<WorkerControl>, Option<HeapSlot>)>();
        let pending = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        let spawned = std::thread::Builder::new()
            .name("eros-reaper".into())
            .spawn({
                let pending = Arc::clone(&pending);
                move || {
                    for (control, slot) in rx {
                        reap(&control);
                        drop(slot);
                        *pending.0.lock().unwrap() -= 1;
                        pending.1.notify_all();
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the worker reaper; reaping in place");
        }
        Self { tx, pending }
    }

    fn reap(&self, control: Arc<WorkerControl>, slot: Option<HeapSlot>) {
        *self.pending.0.lock().unwrap() += 1;
        if let Err(std::sync::mpsc::SendError((control, slot))) = self.tx.send((control, slot)) {
            reap(&control);
            drop(slot);
            *self.pending.0.lock().unwrap() -= 1;
        }
    }

    /// Waits at most `timeout` until every worker let go has exited.
    pub fn wait_until_reaped(&self, timeout: Duration) {
        let (count, reaped) = &*self.pending;
        let count = count.lock().unwrap();
        let _ = reaped.wait_timeout_while(count, timeout, |pending| *pending > 0);
    }
}

/// Waits for a worker to exit, killing it after [`EXIT_WAIT`].
fn reap(control: &WorkerControl) {
    let started = std::time::Instant::now();
    let mut child = control.child.lock().unwrap();
    while matches!(child.try_wait(), Ok(None)) {
        if started.elapsed() >= EXIT_WAIT {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        drop(child);
        std::thread::sleep(Duration::from_millis(2));
        child = control.child.lock().unwrap();
    }
}
