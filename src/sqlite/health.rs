//! What the server knows about the database file beyond any one call: is
//! the file at the configured path still the file it opened, has SQLite
//! reported corruption, and can writes succeed right now.
//!
//! One [`DatabaseHealth`] is created when the database opens and passed,
//! cloned, to whoever needs it: the pool (checks the file before opening a
//! connection and in its maintenance pass), the engine (checks it before
//! every COMMIT, records corruption and failed writes), readiness and
//! metrics (report it). It is a handle on shared state, not a global.
//!
//! The file check is a `stat` of the path compared with the (device, inode)
//! recorded at startup. A deleted or renamed file has no inode at the path;
//! a replaced one has another. Once seen, the fault stays until restart:
//! the connections still open write into a file nobody reaches through the
//! path, so acknowledging any further write would lose it.
//!
//! A read replica ([`DatabaseHealth::follow`]) is the exception by design:
//! its follower (`litestream restore -f`) writes pages in place and, when
//! it re-restores, renames a new file over the path. There a new file means
//! "reopen": its identity becomes the current one, connections opened on
//! the old file are recycled at checkout (see [`crate::pool`]), and a path
//! with no file is a passing fault (not ready) rather than a lasting one.
//! When the server runs the follower itself, its gate
//! ([`crate::replication::follower::FollowerGate`]) comes first: while it is
//! closed the file is at fault whatever is at the path, and every call is
//! refused ([`DatabaseHealth::admit`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::copy_gate::{Admission, FollowerGate};
pub use super::file_fault::{FileFault, FileIdentity, WriteFault};

/// A [`DatabaseHealth`] as another process rebuilds it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HealthSetup {
    pub path: PathBuf,
    pub watch: WatchSetup,
    pub writes_enabled: bool,
}

/// Which file the path must name, as [`HealthSetup`] carries it.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub enum WatchSetup {
    None,
    Fixed(FileIdentity),
    Follow,
}

/// Which file the path must name.
enum Watch {
    /// Not watched (a pool built on a file that may not exist yet).
    None,
    /// The primary's file, recorded at startup.
    Fixed(FileIdentity),
    /// A replica's file: whatever the follower last put at the path
    /// (`None` before its first restore).
    Follow(Mutex<Option<FileIdentity>>),
}

struct Inner {
    path: PathBuf,
    watch: Watch,
    /// A replica's missing file was logged (once per absence).
    missing_logged: AtomicBool,
    /// A replica whose follower the server runs: whether its copy may be
    /// read at all (see [`crate::replication::follower`]).
    follower: Option<FollowerGate>,
    writes_enabled: bool,
    file_fault: OnceLock<FileFault>,
    corruption: Mutex<Option<String>>,
    corrupt: AtomicBool,
    corruption_errors: AtomicU64,
    write_fault: Mutex<Option<WriteFault>>,
}

/// The shared health of the served database file. Cheap to clone.
#[derive(Clone)]
pub struct DatabaseHealth(Arc<Inner>);

impl std::fmt::Debug for DatabaseHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseHealth")
            .field("path", &self.0.path)
            .field("identity", &self.identity())
            .field("file_fault", &self.0.file_fault.get())
            .finish_non_exhaustive()
    }
}

impl DatabaseHealth {
    /// Records the identity of the file at `path`, which must exist: from
    /// now on that file, and only it, is the database.
    pub fn watch(path: &Path, writes_enabled: bool) -> std::io::Result<Self> {
        let identity = FileIdentity::of(path)?;
        Ok(Self::build(path, Watch::Fixed(identity), writes_enabled))
    }

    /// A read replica's health: the file at `path` is whatever its follower
    /// last put there (it may not exist yet); writes are never enabled.
    pub fn follow(path: &Path) -> Self {
        let identity = FileIdentity::of(path).ok();
        Self::build(path, Watch::Follow(Mutex::new(identity)), false)
    }

    /// [`DatabaseHealth::follow`] for a replica whose follower the server
    /// runs: while `gate` is closed the file is at fault (not ready, no
    /// connection opened, every call refused).
    pub fn follow_supervised(path: &Path, gate: FollowerGate) -> Self {
        let mut health = Self::follow(path);
        Arc::get_mut(&mut health.0).expect("just built").follower = Some(gate);
        health
    }

    /// Lets a call read the file: always on a primary or a replica whose
    /// follower runs elsewhere; on one whose follower the server runs, only
    /// while that follower runs (the answer is then confirmed with
    /// [`Admission::confirm`]).
    pub fn admit(&self) -> Result<Option<Admission>, FileFault> {
        self.0
            .follower
            .as_ref()
            .map(FollowerGate::admit)
            .transpose()
    }

    /// Health without a file identity: connections may create the file, and
    /// nothing checks it is still the same one. For pools built directly on
    /// a path (tests, tools); the server always watches.
    pub fn unwatched(path: &Path) -> Self {
        Self::build(path, Watch::None, true)
    }

    /// How to watch the same file from another process (a worker): the
    /// identity recorded here, not the one at the path by then.
    pub fn setup(&self) -> HealthSetup {
        let watch = match &self.0.watch {
            Watch::None => WatchSetup::None,
            Watch::Fixed(identity) => WatchSetup::Fixed(*identity),
            Watch::Follow(_) => WatchSetup::Follow,
        };
        HealthSetup {
            path: self.0.path.clone(),
            watch,
            writes_enabled: self.0.writes_enabled,
        }
    }

    /// The health [`DatabaseHealth::setup`] describes.
    pub fn from_setup(setup: &HealthSetup) -> Self {
        match setup.watch {
            WatchSetup::None => Self::unwatched(&setup.path),
            WatchSetup::Fixed(identity) => {
                Self::build(&setup.path, Watch::Fixed(identity), setup.writes_enabled)
            }
            WatchSetup::Follow => Self::follow(&setup.path),
        }
    }

    /// The fault that stops writes now, if a write recorded one.
    pub fn write_fault(&self) -> Option<WriteFault> {
        self.0.write_fault.lock().unwrap().clone()
    }

    fn build(path: &Path, watch: Watch, writes_enabled: bool) -> Self {
        Self(Arc::new(Inner {
            path: path.to_path_buf(),
            watch,
            missing_logged: AtomicBool::new(false),
            follower: None,
            writes_enabled,
            file_fault: OnceLock::new(),
            corruption: Mutex::new(None),
            corrupt: AtomicBool::new(false),
            corruption_errors: AtomicU64::new(0),
            write_fault: Mutex::new(None),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The identity recorded at startup, if the file is watched; on a
    /// replica, the identity of the follower's current file.
    pub fn identity(&self) -> Option<FileIdentity> {
        match &self.0.watch {
            Watch::None => None,
            Watch::Fixed(identity) => Some(*identity),
            Watch::Follow(current) => *current.lock().unwrap(),
        }
    }

    /// Whether the file's identity is checked (and connections must not
    /// create the file).
    pub fn is_watched(&self) -> bool {
        !matches!(self.0.watch, Watch::None)
    }

    /// Whether this is a replica's file, which its follower may replace.
    pub fn follows(&self) -> bool {
        matches!(self.0.watch, Watch::Follow(_))
    }

    /// Compares the file at the path with the one recorded at startup (one
    /// `stat`, about a microsecond). The first fault found is logged at
    /// error level and kept until restart.
    pub fn verify_file(&self) -> Result<(), FileFault> {
        if let Some(fault) = self.0.file_fault.get() {
            return Err(fault.clone());
        }
        let recorded = match &self.0.watch {
            Watch::None => return Ok(()),
            Watch::Fixed(recorded) => *recorded,
            Watch::Follow(current) => return self.follow_file(current),
        };
        let fault = match FileIdentity::of(&self.0.path) {
            Ok(now) if now == recorded => return Ok(()),
            Ok(_) => FileFault::Replaced {
                path: self.0.path.clone(),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => FileFault::Deleted {
                path: self.0.path.clone(),
            },
            // Cannot tell (a directory made unreadable): not proof of a change.
            Err(_) => return Ok(()),
        };
        Err(self.record_file_fault(fault))
    }

    /// A replica's check: a file at the path becomes the current one (a
    /// re-restore is logged), no file is a fault that lasts as long as the
    /// absence does.
    fn follow_file(&self, current: &Mutex<Option<FileIdentity>>) -> Result<(), FileFault> {
        let path = &self.0.path;
        // Before the file is looked at: a new follower's restore is not
        // taken for the current file until the gate opens on it.
        if let Some(fault) = self.0.follower.as_ref().and_then(FollowerGate::fault) {
            return Err(fault);
        }
        match FileIdentity::of(path) {
            Ok(now) => {
                let mut current = current.lock().unwrap();
                if *current != Some(now) {
                    match *current {
                        Some(_) => tracing::warn!(
                            path = %path.display(),
                            "the follower put a new database file at the path (a re-restore); \
                             connections on the old file are reopened"
                        ),
                        None => {
                            tracing::info!(path = %path.display(), "the first restore is present")
                        }
                    }
                    *current = Some(now);
                }
                if self.0.missing_logged.swap(false, Ordering::Relaxed) {
                    tracing::warn!(path = %path.display(), "the replica's database file is back");
                }
                Ok(())
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let fault = if current.lock().unwrap().is_some() {
                    FileFault::Missing { path: path.clone() }
                } else {
                    FileFault::AwaitingRestore { path: path.clone() }
                };
                if matches!(fault, FileFault::Missing { .. })
                    && !self.0.missing_logged.swap(true, Ordering::Relaxed)
                {
                    tracing::error!(path = %path.display(), "{fault}");
                }
                Err(fault)
            }
            Err(_) => Ok(()),
        }
    }

    fn record_file_fault(&self, fault: FileFault) -> FileFault {
        if self.0.file_fault.set(fault.clone()).is_ok() {
            tracing::error!(path = %self.0.path.display(), "{fault}");
        }
        self.0.file_fault.get().cloned().unwrap_or(fault)
    }

    /// The file fault already seen, without looking at the file again; on
    /// a replica, whose faults pass, the fault now (one `stat`).
    pub fn file_fault(&self) -> Option<FileFault> {
        if self.follows() {
            return self.verify_file().err();
        }
        self.0.file_fault.get().cloned()
    }

    /// SQLite reported `SQLITE_CORRUPT` or `SQLITE_NOTADB`: counted, logged
    /// the first time, and reported until a `quick_check` passes again.
    pub fn record_corruption(&self, detail: &str) {
        self.0.corruption_errors.fetch_add(1, Ordering::Relaxed);
        let mut slot = self.0.corruption.lock().unwrap();
        if slot.is_none() {
            tracing::error!(
                path = %self.0.path.display(),
                "database corruption detected: {detail}; queries touching the damaged pages fail \
                 and /readyz reports not ready until PRAGMA quick_check passes; restore the file \
                 from a backup"
            );
            *slot = Some(detail.to_string());
            self.0.corrupt.store(true, Ordering::Release);
        }
    }

    /// The corruption seen and not yet cleared by a passing `quick_check`.
    pub fn corruption(&self) -> Option<String> {
        if !self.0.corrupt.load(Ordering::Acquire) {
            return None;
        }
        self.0.corruption.lock().unwrap().clone()
    }

    /// A `quick_check` passed: the corruption is no longer reported.
    pub fn clear_corruption(&self) {
        let mut slot = self.0.corruption.lock().unwrap();
        if slot.take().is_some() {
            self.0.corrupt.store(false, Ordering::Release);
            tracing::warn!(
                path = %self.0.path.display(),
                "PRAGMA quick_check passes again; no longer reporting corruption"
            );
        }
    }

    /// `SQLITE_CORRUPT` and `SQLITE_NOTADB` answers since startup.
    pub fn corruption_errors(&self) -> u64 {
        self.0.corruption_errors.load(Ordering::Relaxed)
    }

    /// A write failed for a reason that will fail the next one too.
    pub fn write_failed(&self, fault: WriteFault) {
        let mut slot = self.0.write_fault.lock().unwrap();
        if slot.as_ref() != Some(&fault) {
            tracing::error!(path = %self.0.path.display(), "writes are failing: {fault}");
            *slot = Some(fault);
        }
    }

    /// A write committed: whatever stopped writes before is gone.
    pub fn write_succeeded(&self) {
        let mut slot = self.0.write_fault.lock().unwrap();
        if let Some(fault) = slot.take() {
            tracing::warn!(path = %self.0.path.display(), "writes succeed again (was: {fault})");
        }
    }

    /// Why writes cannot succeed now, if they cannot.
    pub fn write_blocker(&self) -> Option<String> {
        if let Some(fault) = self.file_fault() {
            return Some(fault.to_string());
        }
        if !self.0.writes_enabled {
            return Some(WriteFault::Disabled.to_string());
        }
        self.0
            .write_fault
            .lock()
            .unwrap()
            .as_ref()
            .map(ToString::to_string)
    }

    /// The write fault that a failed write's SQLite error means, if any:
    /// a full disk, a read-only file or directory, an I/O error. Only for
    /// errors of trusted write transactions: there `query_only` is off and
    /// the authorizer refuses with `SQLITE_AUTH`, so `SQLITE_READONLY` can
    /// only come from the file.
    pub fn classify_write_error(&self, err: &rusqlite::Error) -> Option<WriteFault> {
        use rusqlite::ErrorCode;
        let rusqlite::Error::SqliteFailure(failure, message) = err else {
            return None;
        };
        let path = self.0.path.clone();
        match failure.code {
            ErrorCode::DiskFull => Some(WriteFault::DiskFull { path }),
            // SQLITE_READONLY_DIRECTORY: the journal cannot be created.
            ErrorCode::ReadOnly
                if failure.extended_code == rusqlite::ffi::SQLITE_READONLY_DIRECTORY =>
            {
                Some(WriteFault::ReadOnlyDirectory { path })
            }
            ErrorCode::ReadOnly => Some(WriteFault::ReadOnlyFile { path }),
            ErrorCode::SystemIoFailure => Some(WriteFault::Io {
                path,
                detail: message.clone().unwrap_or_else(|| failure.to_string()),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_is_a_fault_that_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"one").unwrap();
        let health = DatabaseHealth::watch(&path, true).unwrap();
        assert_eq!(health.verify_file(), Ok(()));
        let other = dir.path().join("other");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(matches!(
            health.verify_file(),
            Err(FileFault::Replaced { .. })
        ));
        assert!(health.write_blocker().unwrap().contains("replaced"));
    }

    #[test]
    fn a_deleted_file_is_reported_as_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"one").unwrap();
        let health = DatabaseHealth::watch(&path, true).unwrap();
        std::fs::remove_file(&path).unwrap();
        let fault = health.verify_file().unwrap_err();
        assert!(fault.to_string().contains("was deleted"), "{fault}");
        // Putting a file back does not clear it: restart is the cure.
        std::fs::write(&path, b"again").unwrap();
        assert!(health.verify_file().is_err());
    }

    #[test]
    fn a_replicas_new_file_becomes_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let health = DatabaseHealth::follow(&path);
        assert!(matches!(
            health.verify_file(),
            Err(FileFault::AwaitingRestore { .. })
        ));
        assert_eq!(health.identity(), None);
        std::fs::write(&path, b"one").unwrap();
        assert_eq!(health.verify_file(), Ok(()));
        let first = health.identity().unwrap();
        let other = dir.path().join("db.tmp");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(health.verify_file(), Ok(()));
        assert_ne!(health.identity(), Some(first));
        assert_eq!(health.identity(), Some(FileIdentity::of(&path).unwrap()));
        assert!(health.write_blocker().unwrap().contains("read-only"));
    }

    #[test]
    fn a_replicas_missing_file_is_a_fault_only_while_it_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"one").unwrap();
        let health = DatabaseHealth::follow(&path);
        std::fs::remove_file(&path).unwrap();
        let fault = health.verify_file().unwrap_err();
        assert!(matches!(fault, FileFault::Missing { .. }), "{fault:?}");
        assert_eq!(health.file_fault(), Some(fault));
        std::fs::write(&path, b"back").unwrap();
        assert_eq!(health.verify_file(), Ok(()));
        assert_eq!(health.file_fault(), None);
    }

    #[test]
    fn corruption_is_reported_until_cleared() {
        let health = DatabaseHealth::unwatched(Path::new("x.db"));
        assert_eq!(health.corruption(), None);
        health.record_corruption("database disk image is malformed");
        health.record_corruption("again");
        assert_eq!(health.corruption_errors(), 2);
        assert_eq!(
            health.corruption().as_deref(),
            Some("database disk image is malformed")
        );
        health.clear_corruption();
        assert_eq!(health.corruption(), None);
    }

    /// The cost the write path pays per COMMIT; printed with `--nocapture`.
    #[test]
    fn verifying_the_file_costs_about_a_stat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"one").unwrap();
        let health = DatabaseHealth::watch(&path, true).unwrap();
        let rounds = 20_000;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            health.verify_file().unwrap();
        }
        let each = started.elapsed() / rounds;
        // For scale: the smallest write the engine commits (WAL, synchronous=NORMAL).
        let conn = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE t(x)")
            .unwrap();
        let writes = 2_000;
        let started = std::time::Instant::now();
        for i in 0..writes {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
            conn.execute_batch("COMMIT").unwrap();
        }
        let write = started.elapsed() / writes;
        println!("verify_file: {each:?} per call; one-row write transaction: {write:?}");
        assert!(each < std::time::Duration::from_millis(1), "{each:?}");
    }
}
