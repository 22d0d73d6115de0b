//! The r2d2 `ManageConnection` that gives r2d2 QueuePool semantics over
//! workers: each pooled item is a worker process holding one SQLite
//! connection ([`super::worker`]), opened in the worker through r2d2_sqlite
//! with our PRAGMAs ([`super::local`]). The rules: each connection carries
//! its birth and expiry; a file replaced since startup is never opened;
//! checkout checks age and that the worker lives; return retires a worker
//! that was killed, broken or left unsettled, retires expired connections
//! and closes overflow connections when `pool_size` are already idle. On a
//! read replica, whose follower may rename a new file over the path, each
//! connection remembers the file it opened, and one left on a replaced file
//! is recycled at checkout and on return.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::counters::PoolCounters;
use super::frames::{kind, Frame};
use super::heap::SharedHeap;
use super::observer::PoolObserver;
use super::settings::PoolSettings;
use super::spares::{Spare, Spares};
use super::worker::{Reaper, WorkerControl, WorkerProcess};
use crate::retry::RetryPolicy;
use crate::sqlite::connection::{ConnectError, ConnectionOptions};
use crate::sqlite::health::{DatabaseHealth, FileIdentity, HealthSetup, WriteFault};

/// Share of `max_age` by which a connection's expiry is brought forward at
/// random, so connections opened together do not all expire together.
const MAX_AGE_JITTER: f64 = 0.1;

/// How long a worker may take to start, beyond SQLite's busy timeout.
const WORKER_START_GRACE: Duration = Duration::from_secs(10);

/// What a worker is told when it starts: how to open its connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerSetup {
    pub options: ConnectionOptions,
    pub health: HealthSetup,
    /// Its slot in the shared heap ceiling ([`super::heap`]), of `slots`;
    /// `None` when the ceiling is the worker's own.
    pub heap: Option<HeapShare>,
}

/// A worker's place in the shared heap ceiling.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct HeapShare {
    pub slot: usize,
    pub slots: usize,
}

/// How a worker's final checkpoint went: SQLite's error code and message
/// when it failed.
pub type Checkpointed = Result<(), (i32, String)>;

/// A worker's first answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Ready {
    /// The connection is open (on a replica: on this file); a file SQLite
    /// could open only read-only is reported as a write fault.
    Opened {
        file: Option<FileIdentity>,
        write_fault: Option<WriteFault>,
    },
    /// It could not be opened, for this reason.
    Failed { message: String, transient: bool },
}

/// Why r2d2 should not hand out (or keep) a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionFault {
    #[error(transparent)]
    Open(#[from] ConnectError),
    #[error("connection reached its maximum age after {0:?}")]
    Expired(Duration),
    #[error("connection reads a database file the replica's follower has since replaced")]
    Superseded,
    #[error("the connection's worker process has exited")]
    WorkerGone,
}

/// State the manager, the event handler and the pool share.
pub(crate) struct Shared {
    pub counters: PoolCounters,
    pub observer: Arc<dyn PoolObserver>,
    pub pool_size: u64,
    /// Serialises the keep-or-close decision on return, so two returns at
    /// once cannot both see room for one more idle connection.
    return_gate: Mutex<()>,
    /// The last reason a connection could not be opened, cleared on success.
    pub last_connect_failure: Mutex<Option<String>>,
    /// Set by `Pool::close`: every returned connection is closed.
    pub closed: std::sync::atomic::AtomicBool,
    /// The database file's identity, corruption and writability.
    pub health: DatabaseHealth,
    /// When a checkout last timed out.
    pub last_checkout_timeout: Mutex<Option<Instant>>,
    /// Worker processes of overflow connections just closed.
    pub spares: Spares,
}

impl Shared {
    /// `max_spares`: worker processes kept after their overflow connection
    /// closed (see [`super::spares`]), at most `max_overflow`.
    pub fn new(
        pool_size: u32,
        max_spares: usize,
        observer: Arc<dyn PoolObserver>,
        health: DatabaseHealth,
    ) -> Self {
        Self {
            health,
            counters: PoolCounters::default(),
            observer,
            pool_size: u64::from(pool_size),
            return_gate: Mutex::new(()),
            last_connect_failure: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
            last_checkout_timeout: Mutex::new(None),
            spares: Spares::new(max_spares),
        }
    }
}

/// A pooled connection: a worker process holding one SQLite connection
/// ([`super::worker`]), with its birth and expiry. Statements reach it
/// through [`Worker::process`]; the engine speaks to it.
pub struct Worker {
    /// Always present, except after it was shelved as a spare on return.
    process: Option<WorkerProcess>,
    born: Instant,
    expires_at: Instant,
    shared: Arc<Shared>,
    /// On a replica, the file this connection opened.
    file: Option<FileIdentity>,
    /// Already taken off the `open` count by the return gate.
    retired: bool,
}

impl Worker {
    /// How long ago the connection was opened.
    pub fn age(&self) -> Duration {
        self.born.elapsed()
    }

    /// The worker process and its socket.
    pub fn process(&mut self) -> &mut WorkerProcess {
        self.process
            .as_mut()
            .expect("a pooled connection has its worker")
    }

    /// The handle that interrupts or kills the worker from another thread.
    pub fn control(&self) -> &Arc<WorkerControl> {
        self.process
            .as_ref()
            .expect("a pooled connection has its worker")
            .control()
    }

    /// Has the worker checkpoint the WAL into the file its connection
    /// opened and truncate it, waiting at most `wait` for readers: the
    /// server's final checkpoint. Through a connection opened before any
    /// fault, it lands in the file the server wrote, even if the path has
    /// since been deleted, renamed or replaced.
    pub fn checkpoint(&mut self, wait: Duration) -> rusqlite::Result<()> {
        let millis = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        let mut frame = Frame::new(kind::CHECKPOINT);
        frame.payload().extend_from_slice(&millis.to_le_bytes());
        let lost = |err: std::io::Error| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some(format!(
                    "the worker holding the connection did not answer: {err}"
                )),
            )
        };
        self.process().send(frame).map_err(lost)?;
        let (kind, payload) = self.process().recv().map_err(lost)?;
        let outcome: Checkpointed = if kind == kind::CHECKPOINTED {
            serde_json::from_slice(&payload)
                .unwrap_or_else(|err| Err((rusqlite::ffi::SQLITE_ERROR, err.to_string())))
        } else {
            Err((
                rusqlite::ffi::SQLITE_ERROR,
                format!("unexpected frame kind {kind}"),
            ))
        };
        outcome.map_err(|(code, message)| {
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(message))
        })
    }

    /// The worker rolled back a transaction a call left open (counted as
    /// the pool's rollbacks on return).
    pub fn record_rollback(&self) {
        PoolCounters::bump(&self.shared.counters.rollbacks);
    }

    fn is_expired(&self) -> bool {
        Instant::now() >= self.expires_at
    }

    /// On a replica: the follower has put another file at the path since
    /// this connection opened (it still reads the old one).
    fn is_superseded(&self) -> bool {
        let health = &self.shared.health;
        health.follows() && health.verify_file().is_ok() && health.identity() != self.file
    }

    fn retire(&mut self) {
        if !self.retired {
            self.retired = true;
            PoolCounters::drop_one(&self.shared.counters.open);
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("age", &self.age())
            .field("pid", &self.process.as_ref().map(|p| p.control().pid()))
            .finish_non_exhaustive()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.retire();
    }
}

/// Opens, checks and judges connections for r2d2. Built by [`super::Pool`].
pub struct SqliteManager {
    /// How each worker opens its connection (with its share of the heap).
    options: ConnectionOptions,
    /// The heap ceiling all workers share, if it could be set up.
    heap: Option<Arc<SharedHeap>>,
    /// Waits for the workers the pool lets go.
    reaper: Reaper,
    /// The program workers run.
    program: PathBuf,
    max_age: Duration,
    health_check: bool,
    retry: RetryPolicy,
    shared: Arc<Shared>,
}

impl SqliteManager {
    pub(crate) fn new(
        options: ConnectionOptions,
        heap: Option<Arc<SharedHeap>>,
        reaper: Reaper,
        settings: &PoolSettings,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            heap,
            reaper,
            program: super::worker::resolve_program(settings.worker_program.as_deref()),
            options,
            max_age: settings.connection_max_age,
            health_check: settings.health_check,
            retry: settings.connect_retry,
            shared,
        }
    }

    /// Starts a worker and waits for it to open its connection.
    fn spawn_worker(&self) -> Result<(WorkerProcess, Option<FileIdentity>), ConnectError> {
        let slot = match &self.heap {
            Some(heap) => Some(heap.claim().ok_or_else(|| ConnectError::Worker {
                message: "every slot of the shared heap ceiling is taken".into(),
                transient: true,
            })?),
            None => None,
        };
        let setup = WorkerSetup {
            options: self.options.clone(),
            health: self.shared.health.setup(),
            heap: self
                .heap
                .as_ref()
                .zip(slot.as_ref())
                .map(|(heap, slot)| HeapShare {
                    slot: slot.index(),
                    slots: heap.slots(),
                }),
        };
        let heap = self
            .heap
            .as_ref()
            .zip(slot)
            .map(|(heap, slot)| (heap.fd(), slot));
        let mut frame = Frame::new(kind::SETUP);
        serde_json::to_writer(frame.payload(), &setup).expect("settings serialize");
        // The worker's open may wait out SQLite's busy timeout.
        let within = self.options.busy_timeout + WORKER_START_GRACE;
        let (process, (kind, payload)) =
            WorkerProcess::spawn(&self.program, frame, within, heap, self.reaper.clone()).map_err(
                |err| ConnectError::Worker {
                    message: err.to_string(),
                    transient: false,
                },
            )?;
        let ready: Result<Ready, _> = if kind == kind::READY {
            serde_json::from_slice(&payload)
        } else {
            Err(serde::de::Error::custom(format!(
                "unexpected frame kind {kind}"
            )))
        };
        match ready {
            Ok(Ready::Opened { file, write_fault }) => {
                if let Some(fault) = write_fault {
                    self.shared.health.write_failed(fault);
                }
                Ok((process, file))
            }
            Ok(Ready::Failed { message, transient }) => {
                Err(ConnectError::Worker { message, transient })
            }
            Err(err) => Err(ConnectError::Worker {
                message: format!("the worker process answered its setup with nonsense: {err}"),
                transient: false,
            }),
        }
    }

    fn expiry(&self, born: Instant) -> Instant {
        let jitter = self.max_age.mul_f64(MAX_AGE_JITTER * fastrand::f64());
        born + self.max_age.saturating_sub(jitter)
    }
}

impl r2d2::ManageConnection for SqliteManager {
    type Connection = Worker;
    type Error = ConnectionFault;

    fn connect(&self) -> Result<Worker, ConnectionFault> {
        let counters = &self.shared.counters;
        let started = Instant::now();
        if let Some(spare) = self.shared.spares.take() {
            self.shared.observer.connection_opened(started.elapsed());
            PoolCounters::bump(&counters.created);
            counters.open.fetch_add(1, Relaxed);
            return Ok(Worker {
                process: Some(spare.process),
                born: spare.born,
                expires_at: spare.expires_at,
                shared: Arc::clone(&self.shared),
                file: spare.file,
                retired: false,
            });
        }
        let opened = self.retry.run(
            ConnectError::is_transient,
            |_| PoolCounters::bump(&counters.retries),
            || {
                self.spawn_worker()
                    .inspect_err(|_| PoolCounters::bump(&counters.failed))
            },
        );
        match opened {
            Ok((process, file)) => {
                self.shared.observer.connection_opened(started.elapsed());
                PoolCounters::bump(&counters.created);
                counters.open.fetch_add(1, Relaxed);
                *self.shared.last_connect_failure.lock().unwrap() = None;
                let born = Instant::now();
                Ok(Worker {
                    process: Some(process),
                    born,
                    expires_at: self.expiry(born),
                    shared: Arc::clone(&self.shared),
                    file,
                    retired: false,
                })
            }
            Err(exhausted) => {
                *self.shared.last_connect_failure.lock().unwrap() =
                    Some(exhausted.last.to_string());
                Err(exhausted.last.into())
            }
        }
    }

    fn is_valid(&self, conn: &mut Worker) -> Result<(), ConnectionFault> {
        if conn.is_expired() {
            PoolCounters::bump(&self.shared.counters.recycled);
            return Err(ConnectionFault::Expired(conn.age()));
        }
        if conn.is_superseded() {
            PoolCounters::bump(&self.shared.counters.recycled);
            return Err(ConnectionFault::Superseded);
        }
        if self.health_check && (!conn.process().is_usable() || conn.control().has_exited()) {
            PoolCounters::bump(&self.shared.counters.health_check_failures);
            return Err(ConnectionFault::WorkerGone);
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut Worker) -> bool {
        let counters = &self.shared.counters;
        let closing = self
            .shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire);
        // A worker puts its own connection back at rest after each call
        // (rolling back what a call left open) and is marked broken when
        // it cannot; a killed one is gone.
        if closing || !conn.process().is_usable() {
            conn.retire();
            return true;
        }
        if conn.is_expired() || conn.is_superseded() {
            PoolCounters::bump(&counters.recycled);
            conn.retire();
            return true;
        }
        let _gate = self.shared.return_gate.lock().unwrap();
        // The checkin event has already taken this connection off `in_use`,
        // so `open - in_use` counts it among the idle ones.
        let idle_including_this =
            PoolCounters::get(&counters.open).saturating_sub(PoolCounters::get(&counters.in_use));
        if idle_including_this > self.shared.pool_size {
            PoolCounters::bump(&counters.overflow_closed);
            conn.retire();
            if let Some(process) = conn.process.take() {
                self.shared.spares.shelve(Spare {
                    process,
                    born: conn.born,
                    expires_at: conn.expires_at,
                    file: conn.file,
                    shelved: Instant::now(),
                });
            }
            return true;
        }
        false
    }
}
