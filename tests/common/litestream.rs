//! A replicated deployment on one machine, from real processes: an eros-mcp
//! primary (HTTP, writes on, `EROS_DB_REPLICATION=litestream`) under
//! `litestream replicate`, and read replicas, each a follower
//! (`litestream restore -f`) keeping a copy current and an eros-mcp
//! replica (`EROS_DB_ROLE=replica`) serving it. Every process is killed on
//! drop, so a failing test leaves nothing running.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

use super::mcp::{call, free_port, http_command, http_get, rows, text, Client, HttpServer};
use super::ops::tools::tool;

/// A child process killed (SIGKILL) on drop.
pub struct Process(pub Child);

impl Process {
    /// SIGKILL, then reap: the process had no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Litestream binary `.ci/provision` installed (or one on PATH).
pub fn litestream() -> String {
    tool("litestream").display().to_string()
}

/// Where Litestream keeps the replica, and what it needs to reach it.
#[derive(Clone, Debug)]
pub struct Target {
    /// The replica URL: `file:///dir` or `s3://bucket/path?endpoint=...`.
    pub url: String,
    /// Environment Litestream and eros-mcp need for it (S3 credentials).
    pub env: Vec<(String, String)>,
    /// Where to look for Litestream's files: a directory, or an S3 listing URL
    /// on loopback (`port`, `path`).
    listing: Listing,
}

#[derive(Clone, Debug)]
enum Listing {
    Directory(PathBuf),
    Http { port: u16, path: String },
}

impl Target {
    /// A `file://` replica in `dir`.
    pub fn directory(dir: &Path) -> Self {
        Self {
            url: format!("file://{}", dir.display()),
            env: Vec::new(),
            listing: Listing::Directory(dir.to_path_buf()),
        }
    }

    /// An S3 replica under `bucket/prefix` on an S3-compatible server on
    /// loopback `port` (path-style addressing, fixed test credentials).
    ///
    /// Litestream 0.5.17 reads a replica URL's options in two places:
    /// `NewReplicaFromConfig` in cmd/litestream/main.go (what `replicate DB
    /// URL` and `restore URL` use) knows `endpoint`, `region` and only the
    /// camel-case `forcePathStyle`; s3/replica_client.go also takes
    /// `force-path-style`. `forcePathStyle=true` means the same to both (a
    /// custom endpoint already implies path style unless it says `false`).
    pub fn s3(port: u16, bucket: &str, prefix: &str) -> Self {
        Self {
            url: format!(
                "s3://{bucket}/{prefix}?endpoint=http://127.0.0.1:{port}&region=us-east-1&forcePathStyle=true"
            ),
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), "eros-test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "eros-test-secret".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
            ],
            listing: Listing::Http {
                port,
                path: format!("/{bucket}?list-type=2&prefix={prefix}"),
            },
        }
    }

    /// Whether Litestream has written an LTX file to the replica yet.
    pub fn has_ltx(&self) -> bool {
        match &self.listing {
            Listing::Directory(dir) => has_ltx_under(dir),
            Listing::Http { port, path } => http_get(*port, path).1.contains(".ltx"),
        }
    }

    /// `litestream ARGS` in a clean environment plus this target's, as the
    /// servers run (their environment is cleared too). Clean matters:
    /// Litestream 0.5.17 cannot start its S3 client when the environment
    /// has `AWS_CA_BUNDLE` (s3/replica_client.go hands the AWS SDK a plain
    /// `*http.Client`, to which the SDK cannot add the bundle: "unable to
    /// add custom RootCAs HTTPClient, has no WithTransportOptions").
    pub fn litestream(&self) -> Command {
        let mut command = Command::new(litestream());
        command.env_clear().envs(self.env());
        command
    }

    fn env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn has_ltx_under(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let path = entry.path();
            if path.is_dir() {
                has_ltx_under(&path)
            } else {
                path.extension().is_some_and(|ext| ext == "ltx")
            }
        })
    })
}

fn quiet(command: &mut Command) -> &mut Command {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

/// `litestream replicate DB URL`, one sync a second (Litestream's default).
pub fn replicate(db: &Path, target: &Target) -> Process {
    Process(
        quiet(
            target
                .litestream()
                .arg("replicate")
                .arg(db)
                .arg(&target.url),
        )
        .spawn()
        .expect("start litestream replicate"),
    )
}

/// `litestream replicate` from a configuration file, syncing to the
/// replica every `interval` (the command line has no flag for it) and
/// checking the database for changes twice as often.
pub fn replicate_every(db: &Path, target: &Target, interval: Duration) -> Process {
    let config = db.with_extension("litestream.yml");
    let ms = interval.as_millis();
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {db:?}\n    monitor-interval: {monitor}ms\n    replica:\n      url: {url:?}\n      sync-interval: {ms}ms\n",
            db = db.display().to_string(),
            monitor = (ms / 2).max(10),
            url = target.url,
        ),
    )
    .unwrap();
    Process(
        quiet(
            Command::new(litestream())
                .arg("replicate")
                .arg("-config")
                .arg(&config)
                .envs(target.env()),
        )
        .spawn()
        .expect("start litestream replicate"),
    )
}

/// `litestream restore -f`: the first restore, then every new transaction.
/// It refuses to start before the replica holds its first LTX file, so
/// this waits for one.
pub fn follow(target: &Target, copy: &Path) -> Process {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !target.has_ltx() {
        assert!(Instant::now() < deadline, "Litestream wrote no LTX file");
        std::thread::sleep(Duration::from_millis(100));
    }
    Process(
        quiet(
            target
                .litestream()
                .args(["restore", "-f", "-follow-interval", "100ms", "-o"])
                .arg(copy)
                .arg(&target.url),
        )
        .spawn()
        .expect("start litestream restore -f"),
    )
}

/// The files a follower keeps at `copy`: the copy itself, the `-txid` file
/// recording the last transaction applied, and the `.tmp` file of a restore
/// in progress.
pub fn follower_files(copy: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = copy.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    [copy.to_path_buf(), with("-txid"), with(".tmp")]
}

/// Polls `check` until it holds or a deadline generous for a loaded CI
/// machine passes.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The primary: HTTP, writes on, replicated by Litestream to `target`,
/// a heartbeat every 0.2 s; `extra` adds settings.
pub fn primary(db: &Path, target: &Target, extra: &[(&str, &str)]) -> HttpServer {
    let bin = litestream();
    let mut env: Vec<(&str, &str)> = vec![
        ("EROS_DB_READ_ONLY", "false"),
        ("EROS_DB_REPLICATION", "litestream"),
        ("EROS_DB_REPLICA_URL", &target.url),
        ("EROS_DB_LITESTREAM_BIN", &bin),
        ("EROS_DB_HEARTBEAT_INTERVAL", "0.2"),
    ];
    env.extend(target.env());
    env.extend_from_slice(extra);
    HttpServer::start_observed(db, &env)
}

/// A read replica: an eros-mcp replica server on `copy` and, once started,
/// the follower keeping `copy` current.
pub struct Replica {
    pub copy: PathBuf,
    pub port: u16,
    pub metrics_port: u16,
    pub server: Process,
    pub follower: Option<Process>,
    target: Target,
}

impl Replica {
    /// Starts the replica server on `copy` (it waits for the first
    /// restore), without a follower (`EROS_DB_REPLICA_FOLLOW=false`: the
    /// test runs it, [`Replica::start_follower`]); `extra` adds settings.
    pub fn serve(copy: &Path, target: &Target, extra: &[(&str, &str)]) -> Self {
        let mut env = vec![("EROS_DB_REPLICA_FOLLOW", "false")];
        env.extend_from_slice(extra);
        Self::launch(copy, target, &env)
    }

    /// Starts the replica server on `copy` running its own follower from
    /// `target` (`EROS_DB_REPLICA_FOLLOW`, the default); `extra` adds
    /// settings.
    pub fn supervising(copy: &Path, target: &Target, extra: &[(&str, &str)]) -> Self {
        let bin = litestream();
        let mut env = vec![
            ("EROS_DB_REPLICA_URL", target.url.as_str()),
            ("EROS_DB_LITESTREAM_BIN", bin.as_str()),
        ];
        env.extend(target.env());
        env.extend_from_slice(extra);
        Self::launch(copy, target, &env)
    }

    fn launch(copy: &Path, target: &Target, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let metrics_port = free_port();
        let mut env = vec![
            ("EROS_DB_ROLE", "replica"),
            ("EROS_DB_REPLICA_MAX_LAG", "5"),
        ];
        env.extend_from_slice(extra);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        let server = http_command(copy, &env, port, Some(metrics_port))
            .spawn()
            .expect("spawn the replica");
        Self {
            copy: copy.to_path_buf(),
            port,
            metrics_port,
            server: Process(server),
            follower: None,
            target: target.clone(),
        }
    }

    /// Starts (or restarts) the follower.
    pub fn start_follower(&mut self) {
        self.follower = Some(follow(&self.target, &self.copy));
    }

    /// Restarts the follower the way an operator must with Litestream
    /// 0.5.17: with the copy and Litestream's files beside it removed, so
    /// it restores the latest state afresh. A follower started over an
    /// existing copy refuses to resume it (`cannot resume follow mode: saved
    /// TXID ... is ahead of latest snapshot`: `Replica.Restore` in
    /// Litestream's replica.go compares the `-txid` file with the newest
    /// snapshot, which is normally behind the applied transactions) and
    /// exits. The replica server meanwhile sees the file missing (503), then
    /// a new file at the path, and reopens its connections on it.
    pub fn restart_follower_afresh(&mut self) {
        self.kill_follower();
        for leftover in follower_files(&self.copy) {
            match std::fs::remove_file(&leftover) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    panic!("remove {}: {err}", leftover.display())
                }
                _ => {}
            }
        }
        self.start_follower();
    }

    /// The pid of the follower the replica server runs as its child
    /// (`litestream`), if one runs now.
    pub fn supervised_follower(&self) -> Option<i32> {
        let server = self.server.0.id();
        let tasks = std::fs::read_dir(format!("/proc/{server}/task")).ok()?;
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|children| {
                children
                    .split_whitespace()
                    .filter_map(|pid| pid.parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "litestream")
            })
    }

    /// Kills the follower with SIGKILL.
    pub fn kill_follower(&mut self) {
        if let Some(mut follower) = self.follower.take() {
            follower.kill();
        }
    }

    /// GET on the replica's sidecar: (status, body).
    pub fn sidecar(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port, path)
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.sidecar("/readyz").0 == 200
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// A client connected to this replica.
    pub async fn client(&self) -> Client {
        eros_bench::client::http(
            &self.url(),
            None,
            &super::mcp::handshake(&ProtocolVersion::V_2025_11_25),
        )
        .await
        .expect("MCP handshake with the replica")
    }
}

/// A primary under Litestream and `n` read replicas, in a temporary
/// directory removed on drop.
pub struct Cluster {
    pub replicas: Vec<Replica>,
    pub replicate: Process,
    pub primary: HttpServer,
    pub target: Target,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// A `file://` replica; every replica ready before this returns.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, &[], &[]).await
    }

    /// As [`Cluster::start`], with extra settings for the primary and the replicas.
    pub async fn start_with(
        n: usize,
        primary_env: &[(&str, &str)],
        replica_env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::directory(&dir.path().join("replica"));
        Self::start_on(dir, target, n, primary_env, replica_env).await
    }

    /// As [`Cluster::start`], Litestream syncing every `interval` rather
    /// than every second, for tests that need many applies.
    pub async fn start_syncing_every(n: usize, interval: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::directory(&dir.path().join("replica"));
        Self::launch(dir, target, n, &[], &[], Some(interval)).await
    }

    /// As [`Cluster::start_with`], each replica server running its own
    /// follower (the default, `EROS_DB_REPLICA_FOLLOW=true`).
    pub async fn start_supervising(
        n: usize,
        primary_env: &[(&str, &str)],
        replica_env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::directory(&dir.path().join("replica"));
        let db = dir.path().join("primary.db");
        let primary = primary(&db, &target, primary_env);
        let replicate = replicate(&db, &target);
        let replicas: Vec<Replica> = (0..n)
            .map(|i| {
                let copy = dir.path().join(format!("copy-{i}/replica.db"));
                Replica::supervising(&copy, &target, replica_env)
            })
            .collect();
        for (i, replica) in replicas.iter().enumerate() {
            eventually(&format!("replica {i} to be ready"), async || {
                replica.ready()
            })
            .await;
        }
        Self {
            replicas,
            replicate,
            primary,
            target,
            dir,
        }
    }

    /// As [`Cluster::start_with`], replicating to `target`.
    pub async fn start_on(
        dir: tempfile::TempDir,
        target: Target,
        n: usize,
        primary_env: &[(&str, &str)],
        replica_env: &[(&str, &str)],
    ) -> Self {
        Self::launch(dir, target, n, primary_env, replica_env, None).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        target: Target,
        n: usize,
        primary_env: &[(&str, &str)],
        replica_env: &[(&str, &str)],
        sync_interval: Option<Duration>,
    ) -> Self {
        let db = dir.path().join("primary.db");
        let primary = primary(&db, &target, primary_env);
        let replicate = match sync_interval {
            Some(interval) => replicate_every(&db, &target, interval),
            None => replicate(&db, &target),
        };
        let mut replicas: Vec<Replica> = (0..n)
            .map(|i| {
                let copy = dir.path().join(format!("copy-{i}/replica.db"));
                Replica::serve(&copy, &target, replica_env)
            })
            .collect();
        for replica in &mut replicas {
            replica.start_follower();
        }
        for (i, replica) in replicas.iter().enumerate() {
            eventually(&format!("replica {i} to be ready"), async || {
                replica.ready()
            })
            .await;
        }
        Self {
            replicas,
            replicate,
            primary,
            target,
            dir,
        }
    }

    pub fn primary_db(&self) -> PathBuf {
        self.dir.path().join("primary.db")
    }

    /// A client of the primary.
    pub async fn writer(&self) -> Client {
        self.primary
            .client(None, &ProtocolVersion::V_2025_11_25)
            .await
    }
}

/// `execute` on the primary, which must succeed.
pub async fn execute(client: &Client, sql: &str) {
    let result = call(client, "execute", json!({ "sql": sql })).await;
    assert_ne!(result.is_error, Some(true), "{sql}: {}", text(&result));
}

/// The rows of a `query` that must succeed.
pub async fn select(client: &Client, sql: &str) -> Value {
    let result = call(client, "query", json!({ "sql": sql })).await;
    assert_ne!(result.is_error, Some(true), "{sql}: {}", text(&result));
    rows(&result)["rows"].clone()
}

/// The rows of a `query`, or `None` while it fails (the table not there yet).
pub async fn try_select(client: &Client, sql: &str) -> Option<Value> {
    let result = call(client, "query", json!({ "sql": sql })).await;
    (result.is_error != Some(true)).then(|| rows(&result)["rows"].clone())
}

/// `eros-mcp restore` from `target` with EROS_DB_PATH `db`, plus `args`.
pub fn restore(target: &Target, db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .arg("restore")
        .args(args)
        .env_clear()
        .env("EROS_DB_PATH", db)
        .env("EROS_DB_REPLICA_URL", &target.url)
        .env("EROS_DB_LITESTREAM_BIN", litestream())
        .env("EROS_LOG", "warn")
        .envs(target.env())
        .output()
        .expect("run eros-mcp restore")
}

/// Panics with the command's output unless it succeeded.
pub fn assert_succeeded(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "eros-mcp restore failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `PRAGMA integrity_check` of the file at `db`.
pub fn integrity(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. 2026-12-02T10:30:00.123Z.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// moto's S3 server (`moto_server`, provisioned by `.ci/provision`) on a
/// free loopback port, in memory; killed on drop.
pub struct S3Server {
    pub port: u16,
    process: Process,
}

impl S3Server {
    /// Starts it and waits until it answers.
    pub fn start() -> Self {
        let port = free_port();
        let process = Process(
            quiet(
                Command::new(tool("moto_server"))
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .env("PYTHONDONTWRITEBYTECODE", "1"),
            )
            .spawn()
            .expect("start moto_server"),
        );
        let mut server = Self { port, process };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/").0 == 0 {
            assert!(server.process.running(), "moto_server exited");
            assert!(Instant::now() < deadline, "moto_server did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Creates `bucket` (moto takes an unsigned `PUT /bucket`).
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "PUT /{bucket} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
            "PUT /{bucket}: {response}"
        );
    }
}
