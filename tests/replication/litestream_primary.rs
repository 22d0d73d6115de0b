//! The replicated primary (`EROS_DB_REPLICATION=litestream`) beside the
//! real `litestream replicate` (0.5.17): replication's tables (Litestream's
//! `_litestream_seq` and `_litestream_lock`, the primary's
//! `_eros_heartbeat`) out of every schema route and refused to every
//! write; a shutdown that leaves the WAL to Litestream (the database file
//! and the WAL's header byte for byte as they were), so it never has to
//! take a fresh snapshot (read from its debug log: a sync that must
//! snapshot logs `snap=true` with the reason); the database file never
//! replaced or removed (its inode polled through a workload, Litestream's
//! checkpoints and a restart); and a fresh primary's start on an empty
//! volume: the replicated state restored before it serves, or a refusal
//! when the replica exists but cannot be read.

use crate::common;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::litestream::{
    eventually, execute, integrity, litestream, primary, replicate, restore, select, Process,
    Target,
};
use common::mcp::{call, http_command, text, Client};
use rmcp::model::{GetPromptRequestParams, ProtocolVersion, ReadResourceRequestParams};
use serde_json::json;

const HIDDEN: [&str; 3] = ["_litestream_seq", "_litestream_lock", "_eros_heartbeat"];

/// Whether the file at `db` has `table` (read directly, not through MCP).
fn has_table(db: &Path, table: &str) -> bool {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = ?1",
                [table],
                |row| row.get::<_, i64>(0),
            )
        })
        .is_ok_and(|n| n == 1)
}

/// One value from the file at `db`, read directly.
fn read_i64(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row(sql, [], |row| row.get(0))
        .unwrap()
}

/// The schema of the file at `db`: every `sqlite_schema` row.
fn schema_rows(db: &Path) -> Vec<(String, String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn assert_hides(what: &str, body: &str) {
    for hidden in HIDDEN {
        assert!(
            !body.to_ascii_lowercase().contains(hidden),
            "{what} mentions {hidden}: {body}"
        );
    }
    assert!(
        body.contains("notes"),
        "{what} lacks the user's table: {body}"
    );
}

async fn client_of(server: &common::mcp::HttpServer) -> Client {
    server.client(None, &ProtocolVersion::V_2025_11_25).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litestreams_tables_and_the_heartbeat_are_hidden_from_every_schema_route() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::directory(&dir.path().join("replica"));
    let db = dir.path().join("primary.db");
    let server = primary(&db, &target, &[]);
    let _replicate = replicate(&db, &target);
    eventually(
        "Litestream's and the heartbeat's tables in the file",
        async || HIDDEN.iter().all(|t| has_table(&db, t)),
    )
    .await;
    let client = client_of(&server).await;
    execute(
        &client,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, seq INTEGER)",
    )
    .await;

    for arguments in [
        json!({}),
        json!({ "detail": "columns" }),
        json!({ "detail": "ddl" }),
        json!({ "column": "id", "detail": "ddl" }),
        json!({ "column": "seq" }),
        json!({ "pattern": "%" }),
    ] {
        let result = call(&client, "list_tables", arguments.clone()).await;
        assert_ne!(
            result.is_error,
            Some(true),
            "{arguments}: {}",
            text(&result)
        );
        let body = serde_json::to_string(&result).unwrap();
        assert_hides(&format!("list_tables {arguments}"), &body);
    }
    for pattern in ["litestream", "heartbeat", "_litestream%", "%eros%"] {
        let result = call(&client, "list_tables", json!({ "pattern": pattern })).await;
        let body = serde_json::to_string(&result).unwrap().to_ascii_lowercase();
        for hidden in HIDDEN {
            assert!(!body.contains(hidden), "list_tables {pattern:?}: {body}");
        }
    }
    for hidden in HIDDEN {
        for spelling in [hidden.to_string(), hidden.to_ascii_uppercase()] {
            let result = call(&client, "describe_table", json!({ "table": spelling })).await;
            assert_eq!(result.is_error, Some(true), "described {spelling}");
            assert!(
                text(&result).contains("no table or view named"),
                "{spelling}: {}",
                text(&result)
            );
        }
    }
    let resource = client
        .read_resource(ReadResourceRequestParams::new("schema://main"))
        .await
        .unwrap();
    assert_hides("schema://main", &serde_json::to_string(&resource).unwrap());
    let prompt = client
        .get_prompt(
            GetPromptRequestParams::new("answer_question").with_arguments(
                json!({ "question": "what is in the database?" })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_hides("the prompt", &serde_json::to_string(&prompt).unwrap());

    // Writes of every kind, each refused with a reason naming replication.
    // The heartbeat and Litestream keep writing their rows meanwhile, so
    // what is checked is what only the refused statements could have done.
    let schema_before: Vec<_> = schema_rows(&db)
        .into_iter()
        .filter(|(_, name, _)| name != "notes")
        .collect();
    for hidden in HIDDEN {
        let rows_before = read_i64(&db, &format!("SELECT count(*) FROM {hidden}"));
        for sql in [
            format!("INSERT INTO {hidden} (id) VALUES (987654)"),
            format!("UPDATE {hidden} SET id = 987655"),
            format!("DELETE FROM {hidden}"),
            format!("DROP TABLE {hidden}"),
            format!("CREATE INDEX eros_probe ON {hidden} (id)"),
            format!("CREATE TRIGGER eros_probe AFTER INSERT ON {hidden} BEGIN SELECT 1; END"),
        ] {
            let result = call(&client, "execute", json!({ "sql": sql })).await;
            assert_eq!(result.is_error, Some(true), "{sql} was not refused");
            assert!(
                text(&result).contains("belongs to replication"),
                "{sql}: {}",
                text(&result)
            );
        }
        assert_eq!(
            read_i64(
                &db,
                &format!("SELECT count(*) FROM {hidden} WHERE id IN (987654, 987655)")
            ),
            0,
            "a refused write reached {hidden}"
        );
        if rows_before > 0 {
            assert!(
                read_i64(&db, &format!("SELECT count(*) FROM {hidden}")) > 0,
                "a refused DELETE emptied {hidden}"
            );
        }
    }
    let schema_after: Vec<_> = schema_rows(&db)
        .into_iter()
        .filter(|(_, name, _)| name != "notes")
        .collect();
    assert_eq!(
        schema_before, schema_after,
        "a refused statement changed the schema"
    );
    // The user's table is still writable: the refusals are about replication's.
    execute(&client, "INSERT INTO notes (seq) VALUES (1)").await;
    assert!(server_ok(&server), "the primary died");
}

fn server_ok(server: &common::mcp::HttpServer) -> bool {
    server.sidecar("/livez").0 == 200
}

/// `litestream replicate` from a configuration file that logs at debug
/// level, its output appended to `log`; `settings` adds lines to the
/// database's entry (`    key: value`).
fn replicate_logged(db: &Path, target: &Target, log: &Path, settings: &str) -> Process {
    let config = db.with_extension("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "logging:\n  level: debug\ndbs:\n  - path: {db:?}\n{settings}    replica:\n      url: {url:?}\n",
            db = db.display().to_string(),
            url = target.url,
        ),
    )
    .unwrap();
    let out = File::options().create(true).append(true).open(log).unwrap();
    Process(
        Command::new(litestream())
            .env_clear()
            .arg("replicate")
            .arg("-config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start litestream replicate"),
    )
}

/// The rows of `t` in the file at `db`.
fn count(db: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |row| row.get(0)))
        .unwrap_or(-1)
}

/// `eros-mcp restore` of `target` into a new file under `dir`: its rows in
/// `t`, after an integrity check.
fn restored_rows(target: &Target, dir: &Path, name: &str) -> i64 {
    let out = dir.join(name);
    let _ = std::fs::remove_file(&out);
    let output = restore(
        target,
        &dir.join("unused.db"),
        &["--output", out.to_str().unwrap()],
    );
    if !output.status.success() {
        return -1;
    }
    assert_eq!(integrity(&out), "ok");
    count(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_the_wal_to_litestream_without_forcing_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::directory(&dir.path().join("replica"));
    let db = dir.path().join("primary.db");
    let log = dir.path().join("litestream.log");
    let server = primary(&db, &target, &[]);
    // Litestream's own checkpoints put off past the test (the defaults are
    // every minute, or at 1000 WAL pages): whatever changes the database
    // file during the shutdown is the primary's doing.
    let mut replicating = replicate_logged(
        &db,
        &target,
        &log,
        "    checkpoint-interval: 1h\n    min-checkpoint-page-count: 1000000\n",
    );
    let writer = client_of(&server).await;
    execute(&writer, "CREATE TABLE t (n INTEGER PRIMARY KEY)").await;
    for n in 1..=20 {
        execute(&writer, &format!("INSERT INTO t VALUES ({n})")).await;
    }
    let probes = dir.path().join("probes");
    std::fs::create_dir_all(&probes).unwrap();
    eventually("the first writes replicated", async || {
        restored_rows(&target, &probes, "first.db") == 20
    })
    .await;
    drop(writer);

    let logged_before = std::fs::read_to_string(&log).unwrap().len();
    let wal = dir.path().join("primary.db-wal");
    let file_before = std::fs::read(&db).unwrap();
    let wal_before = std::fs::read(&wal).unwrap();
    let status = server.terminate();
    assert!(status.success(), "the primary exited with {status}");
    // No checkpoint at shutdown: not one page copied into the database
    // file (a blocked TRUNCATE still copies what Litestream's read
    // transaction allows), and the WAL neither truncated nor restarted
    // (its header, with the salts Litestream checks, is the same).
    assert!(
        std::fs::read(&db).unwrap() == file_before,
        "the shutdown checkpointed WAL pages into the database file"
    );
    let wal_after = std::fs::read(&wal).expect("the shutdown removed the WAL");
    assert!(
        wal_after.len() >= wal_before.len() && wal_after[..32] == wal_before[..32],
        "the shutdown truncated or restarted the WAL ({} bytes before, {} after)",
        wal_before.len(),
        wal_after.len()
    );
    // Litestream syncs every second: give it several to notice whatever
    // the shutdown did to the WAL.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        replicating.running(),
        "Litestream exited after the shutdown"
    );

    let server = primary(&db, &target, &[]);
    let writer = client_of(&server).await;
    for n in 21..=40 {
        execute(&writer, &format!("INSERT INTO t VALUES ({n})")).await;
    }
    eventually("every write replicated", async || {
        restored_rows(&target, &probes, "all.db") == 40
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(replicating.running(), "Litestream exited");

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged[..logged_before].contains("msg=sync"),
        "no debug sync lines from Litestream: {logged}"
    );
    let after = &logged[logged_before..];
    let snapshots: Vec<&str> = after.lines().filter(|l| l.contains("snap=true")).collect();
    assert!(
        snapshots.is_empty(),
        "Litestream took a fresh snapshot after the shutdown: {snapshots:#?}"
    );
    let errors: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("level=ERROR") || l.contains("level=WARN"))
        .collect();
    assert!(errors.is_empty(), "Litestream complained: {errors:#?}");
    assert_eq!(
        select(&writer, "SELECT count(*), min(n), max(n) FROM t").await,
        json!([[40, 1, 40]])
    );
}

/// `eros-mcp serve` of a replicated primary on `db`, run to its exit
/// (killed after a minute): (exit success, what it printed).
fn serve_to_exit(db: &Path, target: &Target) -> (bool, String) {
    let bin = litestream();
    let env = [
        ("EROS_DB_READ_ONLY", "false"),
        ("EROS_DB_REPLICATION", "litestream"),
        ("EROS_DB_REPLICA_URL", target.url.as_str()),
        ("EROS_DB_LITESTREAM_BIN", bin.as_str()),
    ];
    let log = db.with_extension("serve.log");
    let out = File::create(&log).unwrap();
    let mut child = Process(
        http_command(db, &env, common::mcp::free_port(), None)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the primary kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), std::fs::read_to_string(&log).unwrap())
}

/// A replica of a primary with one row in `notes`, built by the real
/// processes, which are stopped before this returns.
async fn a_replica(dir: &Path) -> Target {
    let target = Target::directory(&dir.join("replica"));
    let db = dir.join("first.db");
    let server = primary(&db, &target, &[]);
    let _replicate = replicate(&db, &target);
    let writer = client_of(&server).await;
    execute(&writer, "CREATE TABLE notes (body TEXT)").await;
    execute(&writer, "INSERT INTO notes VALUES ('replicated')").await;
    let probes = dir.join("probes");
    std::fs::create_dir_all(&probes).unwrap();
    eventually("the write in the replica", async || {
        let probe = probes.join("probe.db");
        let _ = std::fs::remove_file(&probe);
        restore(
            &target,
            &dir.join("unused.db"),
            &["--output", probe.to_str().unwrap()],
        )
        .status
        .success()
            && rusqlite::Connection::open(&probe)
                .and_then(|c| c.query_row("SELECT count(*) FROM notes", [], |r| r.get::<_, i64>(0)))
                .is_ok_and(|n| n == 1)
    })
    .await;
    target
}

fn ltx_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            ltx_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "ltx") {
            found.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_primary_refuses_to_start_when_its_replica_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let target = a_replica(dir.path()).await;
    // Every LTX file of the replica overwritten with bytes that are not LTX.
    let mut files = Vec::new();
    ltx_files(&dir.path().join("replica"), &mut files);
    assert!(!files.is_empty());
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len() as usize;
        std::fs::write(file, vec![0x5a; len.max(512)]).unwrap();
    }

    let fresh = dir.path().join("fresh/eros.db");
    std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
    let (success, said) = serve_to_exit(&fresh, &target);
    assert!(
        !success,
        "the primary started on an unreadable replica: {said}"
    );
    assert!(
        said.contains("cannot be read") && said.contains("invalid LTX file"),
        "the refusal does not name the replica problem: {said}"
    );
    assert!(
        said.contains(&target.url),
        "the refusal does not name the replica: {said}"
    );
    let left: Vec<_> = std::fs::read_dir(fresh.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("eros.db") && name != "eros.serve.log")
        .collect();
    assert!(left.is_empty(), "the refused start left files: {left:?}");

    // An empty file at the path is refused the same way, and left empty.
    std::fs::write(&fresh, b"").unwrap();
    let (success, said) = serve_to_exit(&fresh, &target);
    assert!(!success, "the primary started on an empty file: {said}");
    assert_eq!(std::fs::metadata(&fresh).unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_primary_restores_the_replicated_state_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let target = a_replica(dir.path()).await;
    let fresh = dir.path().join("fresh/eros.db");
    std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
    let server = primary(&fresh, &target, &[]);
    let client = client_of(&server).await;
    // The first answer already has the data: it was restored before serving.
    assert_eq!(
        select(&client, "SELECT body FROM notes").await,
        json!([["replicated"]])
    );
    assert!(!fresh.with_file_name("eros.db.restoring").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_never_replaces_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::directory(&dir.path().join("replica"));
    let db = dir.path().join("primary.db");
    let log = dir.path().join("litestream.log");
    let server = primary(&db, &target, &[]);
    let _replicating = replicate_logged(&db, &target, &log, "");
    let inode = std::fs::metadata(&db).unwrap().ino();

    // Every few milliseconds: the file is there, with the same inode.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let watcher = {
        let (stop, seen, db) = (Arc::clone(&stop), Arc::clone(&seen), db.clone());
        std::thread::spawn(move || {
            let mut polls = 0u64;
            while !stop.load(Ordering::Acquire) {
                match std::fs::metadata(&db) {
                    Ok(meta) if meta.ino() == inode => {}
                    Ok(meta) => seen.lock().unwrap().push(format!("inode {}", meta.ino())),
                    Err(err) => seen.lock().unwrap().push(format!("missing: {err}")),
                }
                polls += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            polls
        })
    };

    let writer = client_of(&server).await;
    execute(&writer, "CREATE TABLE t (n INTEGER PRIMARY KEY, pad BLOB)").await;
    // About 6 MB through the WAL, past Litestream's 1000-page threshold
    // for its own checkpoint, which copies the pages into the file.
    for n in 1..=60 {
        execute(
            &writer,
            &format!("INSERT INTO t VALUES ({n}, randomblob(100000))"),
        )
        .await;
    }
    eventually("Litestream's checkpoint into the file", async || {
        std::fs::metadata(&db).is_ok_and(|m| m.len() > 5_000_000)
    })
    .await;
    drop(writer);
    let status = server.terminate();
    assert!(status.success(), "the primary exited with {status}");
    let server = primary(&db, &target, &[]);
    let writer = client_of(&server).await;
    execute(&writer, "DELETE FROM t WHERE n > 30").await;
    for n in 61..=80 {
        execute(
            &writer,
            &format!("INSERT INTO t VALUES ({n}, randomblob(100000))"),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(writer);
    assert!(server.terminate().success());

    stop.store(true, Ordering::Release);
    let polls = watcher.join().unwrap();
    assert!(polls > 100, "too few polls to judge: {polls}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.is_empty(), "the file was replaced or absent: {seen:?}");
    assert_eq!(std::fs::metadata(&db).unwrap().ino(), inode);
    assert_eq!(integrity(&db), "ok");
    assert_eq!(count(&db), 50);
}
