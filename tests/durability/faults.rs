//! Faults an operator meets, driven through the real binary over HTTP with
//! a concurrent write workload (`EROS_DB_READ_ONLY=false`): the database
//! file deleted, renamed away or replaced while serving, a corrupt table
//! page, a full disk (a small tmpfs), a read-only file and directory,
//! SIGSTOP/SIGCONT and repeated SIGKILL. Each test asserts that no
//! acknowledged write is lost from the file the server serves, that no file
//! is corrupted by the server, that `/readyz` tells the truth within two
//! seconds, that the writer gets a clear error and the log a line, and that
//! service recovers where it can.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mcp::{call, free_port, http_command, rows, text, HttpServer, ERAS};
use common::TestDb;
use serde_json::{json, Value};

/// How long readiness may take to tell the truth after a fault.
const HONEST_WITHIN: Duration = Duration::from_secs(2);

/// The unprivileged user the server runs as when the tests run as root, so
/// that file permissions mean something (root ignores them).
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A server process whose stderr goes to a log file the test reads.
struct Served {
    server: HttpServer,
    log: PathBuf,
    _logs: tempfile::TempDir,
    /// The copy of the binary an unprivileged server runs, when it does.
    _program: Option<tempfile::TempDir>,
}

impl Served {
    /// Starts `eros-mcp` on `db` with writes on, as [`NOBODY`] when
    /// `unprivileged` and the tests run as root, and waits until ready.
    fn start(db: &Path, env: &[(&str, &str)], unprivileged: bool) -> Self {
        let served = Self::spawn(db, env, unprivileged);
        served.wait_ready();
        served
    }

    fn spawn(db: &Path, env: &[(&str, &str)], unprivileged: bool) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("server.log");
        let port = free_port();
        let metrics_port = free_port();
        let mut all = vec![
            ("EROS_DB_READ_ONLY", "false"),
            // Maintenance checks the file too; make it frequent.
            ("EROS_DB_HEALTH_CHECK_INTERVAL", "1"),
        ];
        all.extend_from_slice(env);
        let unprivileged = unprivileged && is_root();
        // The build's binary may sit in a directory only its owner can
        // enter (a clone in a home directory): the unprivileged user runs
        // a copy from a directory anyone may enter.
        let program = unprivileged.then(|| {
            let dir = tempfile::tempdir().unwrap();
            set_mode(dir.path(), 0o755);
            let copy = dir.path().join("eros-mcp");
            std::fs::copy(env!("CARGO_BIN_EXE_eros-mcp"), &copy).unwrap();
            set_mode(&copy, 0o755);
            dir
        });
        let mut cmd = match &program {
            Some(dir) => common::mcp::http_command_of(
                &dir.path().join("eros-mcp"),
                db,
                &all,
                port,
                Some(metrics_port),
            ),
            None => http_command(db, &all, port, Some(metrics_port)),
        };
        cmd.stderr(std::fs::File::create(&log).unwrap());
        if unprivileged {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn eros-mcp");
        Self {
            server: HttpServer {
                child,
                port,
                metrics_port: Some(metrics_port),
            },
            log,
            _logs: logs,
            _program: program,
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.readyz().0 == 200 && common::mcp::http_get(self.server.port, "/mcp").0 != 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("eros-mcp did not become ready: {}", self.log_text());
    }

    /// `/readyz`: (status, JSON body or Null).
    fn readyz(&self) -> (u16, Value) {
        let (status, body) = self.server.sidecar("/readyz");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Polls `/readyz` until `honest` holds, for at most [`HONEST_WITHIN`].
    async fn readyz_within(&self, what: &str, honest: impl Fn(u16, &Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.readyz();
            if honest(status, &body) {
                return body;
            }
            assert!(
                started.elapsed() < HONEST_WITHIN,
                "/readyz did not report {what} within {HONEST_WITHIN:?}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.server.sidecar("/metrics");
        common::mcp::sample(&body, name)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        self.server.child.id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// SIGTERM, then the exit status and the whole log.
    fn terminate(self) -> (std::process::ExitStatus, String) {
        let Served {
            server,
            log,
            _logs,
            _program,
        } = self;
        let status = server.terminate();
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    }
}

/// What the writers saw: acknowledged inserts, with whether each was sent
/// after the fault, and the errors.
#[derive(Default)]
struct Ledger {
    acknowledged: Vec<(String, bool)>,
    errors: Vec<String>,
}

struct Workload {
    ledger: Arc<Mutex<Ledger>>,
    faulted: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// INSERT one creator; `:h` is its handle.
const INSERT: &str =
    "INSERT INTO creators (handle, display_name, email) VALUES (:h, 'W', :h || '@example.org')";

/// INSERT one creator with an 8 KB name: fills a disk fast.
const INSERT_WIDE: &str = "INSERT INTO creators (handle, display_name, email) \
                           VALUES (:h, hex(randomblob(4000)), :h || '@example.org')";

impl Workload {
    /// `writers` clients inserting creators `{prefix}-{writer}-{i}` until stopped.
    async fn start(served: &Served, prefix: &str, writers: usize, sql: &'static str) -> Self {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let faulted = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let client = served.server.client(None, &ERAS[writer % 2]).await;
            let (ledger, faulted, stop) = (ledger.clone(), faulted.clone(), stop.clone());
            let prefix = format!("{prefix}-{writer}");
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let handle = format!("{prefix}-{i}");
                    i += 1;
                    let after_fault = faulted.load(Ordering::SeqCst);
                    let arguments = json!({"sql": sql, "params": {"h": handle}});
                    let request = rmcp::model::CallToolRequestParams::new("execute")
                        .with_arguments(arguments.as_object().unwrap().clone());
                    let answer =
                        tokio::time::timeout(Duration::from_secs(5), client.call_tool(request))
                            .await;
                    match answer {
                        Ok(Ok(result)) if result.is_error != Some(true) => {
                            ledger
                                .lock()
                                .unwrap()
                                .acknowledged
                                .push((handle, after_fault));
                        }
                        Ok(Ok(result)) => {
                            ledger.lock().unwrap().errors.push(text(&result));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        // The server is stopped, killed or gone: not acknowledged.
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }));
        }
        Self {
            ledger,
            faulted,
            stop,
            tasks,
        }
    }

    /// Marks the fault as done: writes sent from now on must not be acknowledged.
    fn fault_done(&self) {
        self.faulted.store(true, Ordering::SeqCst);
    }

    fn acknowledged(&self) -> usize {
        self.ledger.lock().unwrap().acknowledged.len()
    }

    async fn wait_for_acknowledged(&self, at_least: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.acknowledged() < at_least {
            assert!(Instant::now() < deadline, "the writers made no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_for_error(&self, containing: &str) -> String {
        let deadline = Instant::now() + HONEST_WITHIN;
        loop {
            if let Some(found) = self
                .ledger
                .lock()
                .unwrap()
                .errors
                .iter()
                .find(|e| e.contains(containing))
            {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no writer saw an error containing {containing:?}: {:?}",
                self.ledger.lock().unwrap().errors.last()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        Arc::try_unwrap(self.ledger)
            .ok()
            .expect("writers stopped")
            .into_inner()
            .unwrap()
    }
}

/// Opens `db` directly and asserts `integrity_check` passes; returns the
/// handles among `handles` that are missing.
fn integrity_and_missing(db: &Path, handles: &[String]) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .unwrap_or_else(|err| panic!("open {}: {err}", db.display()));
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "{} is corrupt", db.display());
    let mut present = conn
        .prepare("SELECT 1 FROM creators WHERE handle = ?")
        .unwrap();
    handles
        .iter()
        .filter(|h| !present.exists([h]).unwrap())
        .cloned()
        .collect()
}

fn handles(ledger: &Ledger) -> Vec<String> {
    ledger.acknowledged.iter().map(|(h, _)| h.clone()).collect()
}

fn acknowledged_after_fault(ledger: &Ledger) -> Vec<String> {
    ledger
        .acknowledged
        .iter()
        .filter(|(_, after)| *after)
        .map(|(h, _)| h.clone())
        .collect()
}

/// A file-change fault (delete, rename, replace) under three writers:
/// returns the ledger and the server's log after SIGTERM.
async fn file_changed(
    db: &TestDb,
    fault: impl FnOnce(&Path),
    names: &str,
) -> (Ledger, String, Value) {
    let served = Served::start(db.path(), &[], false);
    let workload = Workload::start(&served, "w", 3, INSERT).await;
    workload.wait_for_acknowledged(30).await;
    fault(db.path());
    workload.fault_done();
    let body = served
        .readyz_within(names, |status, body| {
            status == 503 && body["reason"].as_str().is_some_and(|r| r.contains(names))
        })
        .await;
    let error = workload.wait_for_error(names).await;
    assert!(
        error.contains("writes are refused so none is lost")
            && error.contains("restart the server"),
        "{error}"
    );
    assert_eq!(served.metric("mcp_db_file_changed"), Some(1.0));
    assert_eq!(served.metric("mcp_db_writable"), Some(0.0));
    assert_eq!(served.metric("mcp_ready"), Some(0.0));
    // Keep writing a while: maintenance runs and new connections would open.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ledger = workload.stop().await;
    let (_, log) = served.terminate();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(names)),
        "the fault is not logged at error level: {log}"
    );
    assert!(
        acknowledged_after_fault(&ledger).is_empty(),
        "writes acknowledged after the file changed: {:?}",
        acknowledged_after_fault(&ledger)
    );
    (ledger, log, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_file_refuses_writes_and_never_creates_an_empty_one() {
    let db = TestDb::new().with_demo_data();
    // A second name for the inode, to check what the server wrote into it.
    let kept = db.file("kept.db");
    let (ledger, _, _) = file_changed(
        &db,
        |path| {
            std::fs::hard_link(path, &kept).unwrap();
            std::fs::remove_file(path).unwrap();
        },
        "was deleted",
    )
    .await;
    assert!(
        !db.path().exists(),
        "the server created a new file at the deleted path"
    );
    let missing = integrity_and_missing(&kept, &handles(&ledger));
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_the_file_away_keeps_every_acknowledged_write_in_it() {
    let db = TestDb::new().with_demo_data();
    let moved = db.file("moved.db");
    let (ledger, _, _) = file_changed(
        &db,
        |path| std::fs::rename(path, &moved).unwrap(),
        "was deleted (or renamed away)",
    )
    .await;
    assert!(!db.path().exists(), "a new file appeared at the old path");
    let missing = integrity_and_missing(&moved, &handles(&ledger));
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_file_refuses_writes_and_leaves_both_files_intact() {
    let db = TestDb::new().with_demo_data();
    let original = db.file("original.db");
    // The replacement: another database with its own creators.
    let other = TestDb::new();
    {
        let mut conn = eros_mcp::database::open_direct(&other.config).unwrap();
        eros_mcp::sqlite::migrations::migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO creators (handle, display_name, email) VALUES ('other', 'O', 'o@x')",
            [],
        )
        .unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let replacement = db.file("replacement.db");
    std::fs::copy(other.path(), &replacement).unwrap();
    let (ledger, _, _) = file_changed(
        &db,
        |path| {
            std::fs::hard_link(path, &original).unwrap();
            std::fs::rename(&replacement, path).unwrap();
        },
        "was replaced",
    )
    .await;
    // The replacement is intact and holds none of the server's writes.
    let missing = integrity_and_missing(db.path(), &handles(&ledger));
    assert_eq!(
        missing.len(),
        ledger.acknowledged.len(),
        "the server wrote into the replacement"
    );
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let others: i64 = conn
        .query_row("SELECT count(*) FROM creators", [], |r| r.get(0))
        .unwrap();
    assert_eq!(others, 1, "the replacement's own rows changed");
    drop(conn);
    // The file the server opened holds every acknowledged write.
    let missing = integrity_and_missing(&original, &handles(&ledger));
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_table_page_is_reported_until_quick_check_passes() {
    let db = TestDb::new().with_demo_data();
    let served = Served::start(db.path(), &[], false);
    let client = served.server.client(None, &ERAS[0]).await;
    // Every transaction in the database file, then 4 KB of garbage over
    // the root page of `transactions`, through a second handle.
    let (offset, page_size) = {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let root: i64 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = 'transactions'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (((root - 1) * page_size) as u64, page_size as usize)
    };
    let original = {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(db.path())
            .unwrap();
        let mut original = vec![0u8; page_size];
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.read_exact(&mut original).unwrap();
        let garbage: Vec<u8> = (0..page_size).map(|i| (i * 7 + 13) as u8).collect();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&garbage).unwrap();
        file.sync_all().unwrap();
        original
    };
    let result = call(
        &client,
        "query",
        json!({"sql": "SELECT sum(amount_cents) FROM transactions"}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).contains("SQLITE_CORRUPT"),
        "{}",
        text(&result)
    );
    let body = served
        .readyz_within("corruption", |status, body| {
            status == 503
                && body["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("corruption detected"))
        })
        .await;
    assert!(body["reason"].as_str().unwrap().contains("quick_check"));
    assert_eq!(served.metric("mcp_db_corruption_detected"), Some(1.0));
    assert!(served.metric("mcp_db_corruption_errors_total").unwrap() >= 1.0);
    assert!(
        served.log_text().contains("database corruption detected"),
        "{}",
        served.log_text()
    );
    // `eros-mcp check` fails on it, saying why.
    let check = Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .args(["check", "--db"])
        .arg(db.path())
        .env_clear()
        .env("EROS_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "check passed a corrupt file");
    assert!(
        stderr.contains("is corrupt") && stderr.contains("quick_check"),
        "{stderr}"
    );
    // The operator restores the page: quick_check passes, ready again.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(db.path())
            .unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&original).unwrap();
        file.sync_all().unwrap();
    }
    served
        .readyz_within("recovery", |status, _| status == 200)
        .await;
    assert_eq!(served.metric("mcp_db_corruption_detected"), Some(0.0));
    client.cancel().await.unwrap();
    let (status, _) = served.terminate();
    assert!(status.success());
    assert!(integrity_and_missing(db.path(), &[]).is_empty());
}

/// A tmpfs of `size` mounted on a new directory; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A migrated database on a small tmpfs, or `None` (with a note) where
/// mounting is not allowed.
fn database_on_small_disk() -> Option<(SmallDisk, PathBuf)> {
    let Some(disk) = SmallDisk::mount("6m") else {
        eprintln!("cannot mount a tmpfs here (not root?): the disk-full test needs one");
        return None;
    };
    let db = disk.path().join("full.db");
    let config = eros_mcp::config::DatabaseConfig {
        path: db.clone(),
        ..Default::default()
    };
    let mut conn = eros_mcp::database::open_direct(&config).unwrap();
    eros_mcp::sqlite::migrations::migrate(&mut conn).unwrap();
    drop(conn);
    Some((disk, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_clearly_and_they_succeed_again_when_there_is_room() {
    let Some((disk, db)) = database_on_small_disk() else {
        panic!(
            "this test fills a small tmpfs and cannot mount one here: run the tests as root \
             (CI does), or in a container with CAP_SYS_ADMIN"
        );
    };
    let served = Served::start(&db, &[], false);
    let workload = Workload::start(&served, "full", 2, INSERT_WIDE).await;
    workload.wait_for_acknowledged(10).await;
    let filler = disk.fill();
    let error = workload.wait_for_error("is full").await;
    assert!(error.contains("SQLITE_FULL"), "{error}");
    let body = served
        .readyz_within("a full disk", |status, body| {
            status == 200
                && body["writable"] == false
                && body["write_blocker"]
                    .as_str()
                    .is_some_and(|r| r.contains("is full"))
        })
        .await;
    assert_eq!(body["ready"], true, "reads still serve: {body}");
    assert_eq!(served.metric("mcp_db_writable"), Some(0.0));
    assert!(served.log_text().contains("writes are failing"));
    // Room again: writes succeed and readiness says so.
    let before = workload.acknowledged();
    std::fs::remove_file(&filler).unwrap();
    workload.wait_for_acknowledged(before + 5).await;
    served
        .readyz_within("writable again", |status, body| {
            status == 200 && body["writable"] == true
        })
        .await;
    let ledger = workload.stop().await;
    let (status, log) = served.terminate();
    assert!(status.success(), "{log}");
    let missing = integrity_and_missing(&db, &handles(&ledger));
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_disk_is_full_exits_with_the_reason_and_loses_nothing() {
    let Some((disk, db)) = database_on_small_disk() else {
        panic!(
            "this test fills a small tmpfs and cannot mount one here: run the tests as root \
             (CI does), or in a container with CAP_SYS_ADMIN"
        );
    };
    let served = Served::start(&db, &[], false);
    let workload = Workload::start(&served, "term", 2, INSERT_WIDE).await;
    // About 1.6 MB in the WAL, not yet checkpointed into the file.
    workload.wait_for_acknowledged(200).await;
    let ledger = workload.stop().await;
    let filler = disk.fill();
    let (status, log) = served.terminate();
    assert!(
        log.contains("final WAL checkpoint failed") && log.contains("full"),
        "{log}"
    );
    assert!(
        status.success(),
        "a full disk at shutdown is not a crash: {log}"
    );
    std::fs::remove_file(&filler).unwrap();
    let missing = integrity_and_missing(&db, &handles(&ledger));
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

/// Hands the test directory to [`NOBODY`] when running as root.
fn give_to_nobody(dir: &Path) {
    if !is_root() {
        return;
    }
    std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_file_serves_reads_and_says_writes_are_impossible() {
    let db = TestDb::new().with_demo_data();
    give_to_nobody(db.dir.path());
    set_mode(db.path(), 0o444);
    let served = Served::start(db.path(), &[], true);
    let body = served
        .readyz_within("a read-only file", |status, body| {
            status == 200
                && body["writable"] == false
                && body["write_blocker"]
                    .as_str()
                    .is_some_and(|r| r.contains("read-only"))
        })
        .await;
    assert_eq!(body["ready"], true);
    assert_eq!(served.metric("mcp_db_writable"), Some(0.0));
    let client = served.server.client(None, &ERAS[1]).await;
    let read = call(
        &client,
        "query",
        json!({"sql": "SELECT count(*) FROM creators"}),
    )
    .await;
    assert!(rows(&read)["rows"][0][0].as_i64().unwrap() > 0);
    let write = call(
        &client,
        "execute",
        json!({"sql": INSERT, "params": {"h": "ro"}}),
    )
    .await;
    assert_eq!(write.is_error, Some(true));
    let message = text(&write);
    assert!(
        message.contains("read-only (permissions or a read-only mount)"),
        "{message}"
    );
    assert!(!message.contains("DENIED"), "{message}");
    assert!(served.log_text().contains("read-only"));
    client.cancel().await.unwrap();
    let (status, log) = served.terminate();
    assert!(status.success(), "{log}");
    set_mode(db.path(), 0o644);
    assert!(integrity_and_missing(db.path(), &[]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_made_read_only_while_serving_loses_nothing() {
    let db = TestDb::new().with_demo_data();
    give_to_nobody(db.dir.path());
    let served = Served::start(db.path(), &[], true);
    let workload = Workload::start(&served, "rodir", 3, INSERT).await;
    workload.wait_for_acknowledged(20).await;
    // The WAL and its index exist: SQLite needs no new file to write, so
    // writes go on, and readiness must not claim otherwise.
    set_mode(db.dir.path(), 0o555);
    let before = workload.acknowledged();
    workload.wait_for_acknowledged(before + 20).await;
    let (status, body) = served.readyz();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["writable"], true, "{body}");
    let ledger = workload.stop().await;
    let (status, log) = served.terminate();
    assert!(status.success(), "{log}");
    set_mode(db.dir.path(), 0o755);
    let missing = integrity_and_missing(db.path(), &handles(&ledger));
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_then_sigcont_resumes_service_and_loses_nothing() {
    let db = TestDb::new().with_demo_data();
    let served = Served::start(db.path(), &[], false);
    let workload = Workload::start(&served, "stop", 3, INSERT).await;
    workload.wait_for_acknowledged(20).await;
    served.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A stopped process answers nothing: the probe times out, not "ready".
    let (status, _) = tokio::task::block_in_place(|| served.readyz());
    assert_ne!(status, 200, "a stopped server reported ready");
    let during = workload.acknowledged();
    served.signal(libc::SIGCONT);
    served
        .readyz_within("ready after SIGCONT", |status, _| status == 200)
        .await;
    workload.wait_for_acknowledged(during + 20).await;
    let ledger = workload.stop().await;
    let (status, log) = served.terminate();
    assert!(status.success(), "{log}");
    let missing = integrity_and_missing(db.path(), &handles(&ledger));
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkill_during_writes_loses_no_acknowledged_write() {
    let db = TestDb::new().with_demo_data();
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let served = Served::start(db.path(), &[], false);
        let workload = Workload::start(&served, &format!("kill{round}"), 3, INSERT).await;
        workload.wait_for_acknowledged(20).await;
        served.signal(libc::SIGKILL);
        let Served { mut server, .. } = served;
        server.child.wait().unwrap();
        let ledger = workload.stop().await;
        acknowledged.extend(handles(&ledger));
    }
    let served = Served::start(db.path(), &[], false);
    let (status, body) = served.readyz();
    assert_eq!((status, body["writable"].clone()), (200, json!(true)));
    let (status, log) = served.terminate();
    assert!(status.success(), "{log}");
    let missing = integrity_and_missing(db.path(), &acknowledged);
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}
