//! Replication under faults, with the real Litestream (0.5.17) and real
//! processes killed with SIGKILL: a follower dying and being restarted (the
//! replica's readiness following its lag, and what Litestream does with
//! the copy a dead follower left behind), a primary node dying mid-workload
//! (what `eros-mcp restore` brings back: a prefix of the acknowledged
//! writes, missing only those of the last sync window; the RPO and the
//! restore time are printed, see `--nocapture`), and replication through S3
//! (moto's server on loopback) from the primary to a replica and from the
//! bucket into a fresh primary.

use crate::common;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::litestream::{
    assert_succeeded, eventually, execute, follower_files, integrity, primary, replicate, restore,
    select, try_select, Cluster, Process, S3Server, Target,
};
use rmcp::model::CallToolRequestParams;
use serde_json::json;

/// Litestream's default sync interval: how often `litestream replicate`
/// ships what the WAL gained.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Slack on top of it for a loaded, shared CI machine (a correctness bound,
/// not a speed one: a write acknowledged earlier than this before the node
/// died and missing from the restore is a lost write).
const SLACK: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_with_sigkill_resumes_and_readiness_follows_the_lag() {
    // Small, and above what a live follower lags on a loaded machine (the
    // 1 s sync, the 0.1 s poll, the 0.2 s heartbeat).
    let mut cluster = Cluster::start_with(1, &[], &[("EROS_DB_REPLICA_MAX_LAG", "3")]).await;
    let writer = cluster.writer().await;
    // Connected before the fault: the same replica server serves it after.
    let reader = cluster.replicas[0].client().await;
    execute(&writer, "CREATE TABLE during (n INTEGER PRIMARY KEY)").await;
    execute(&writer, "INSERT INTO during VALUES (0)").await;
    eventually("the first write on the replica", async || {
        try_select(&reader, "SELECT count(*) FROM during").await == Some(json!([[1]]))
    })
    .await;

    cluster.replicas[0].kill_follower();
    // Writes go on; the replica's newest heartbeat ages past the limit.
    let mut written = 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, body) = loop {
        execute(&writer, &format!("INSERT INTO during VALUES ({written})")).await;
        written += 1;
        let (status, body) = cluster.replicas[0].sidecar("/readyz");
        if status == 503 {
            break (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "the replica stayed ready with its follower dead: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 503);
    assert!(
        body.contains("EROS_DB_REPLICA_MAX_LAG"),
        "not ready for another reason than the lag: {body}"
    );
    for _ in 0..5 {
        execute(&writer, &format!("INSERT INTO during VALUES ({written})")).await;
        written += 1;
    }
    // Stale, and still serving what it has: the writes made since the kill
    // are not there.
    let stale = select(&reader, "SELECT count(*) FROM during").await;
    assert!(
        stale.as_array().unwrap()[0][0].as_i64().unwrap() < written,
        "the replica has writes its dead follower never applied: {stale}"
    );

    // Restarted on the same copy path (afresh: Litestream 0.5.17 will not
    // resume the copy, see the next test).
    cluster.replicas[0].restart_follower_afresh();
    let replica = &cluster.replicas[0];
    eventually("the replica to be ready again", async || replica.ready()).await;
    eventually("the writes made while the follower was dead", async || {
        try_select(&reader, "SELECT count(*), max(n) FROM during").await
            == Some(json!([[written, written - 1]]))
    })
    .await;
    assert!(
        cluster.replicas[0].server.running(),
        "the replica server died while its copy was replaced"
    );
}

/// Pins what the restart procedure above works around: when this fails,
/// Litestream resumes a follower's copy in place, and
/// `Replica::restart_follower_afresh` (and the follower's command in
/// deploy/kubernetes/deployment-replica.yaml) can keep the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_refuses_the_copy_its_predecessor_left() {
    let mut cluster = Cluster::start(1).await;
    let writer = cluster.writer().await;
    execute(&writer, "CREATE TABLE t (x)").await;
    let reader = cluster.replicas[0].client().await;
    eventually("the table on the replica", async || {
        try_select(&reader, "SELECT count(*) FROM t").await == Some(json!([[0]]))
    })
    .await;
    // The usual state of a live follower: it has applied transactions past
    // the newest snapshot (taken at startup, then every 24 h by default;
    // the heartbeat writes every 0.2 s). At or below it, Litestream resumes.
    let copy = cluster.replicas[0].copy.clone();
    let [_, txid, _] = follower_files(&copy);
    let snapshots = cluster.dir.path().join("replica/ltx/9");
    eventually("the follower past the newest snapshot", async || {
        let saved = std::fs::read_to_string(&txid)
            .ok()
            .and_then(|t| u64::from_str_radix(t.trim(), 16).ok());
        let snapshot = newest_snapshot_txid(&snapshots);
        matches!((saved, snapshot), (Some(saved), Some(snapshot)) if saved > snapshot)
    })
    .await;
    cluster.replicas[0].kill_follower();
    execute(&writer, "INSERT INTO t VALUES (1)").await;

    let mut follower = Process(
        cluster
            .target
            .litestream()
            .args(["restore", "-f", "-follow-interval", "100ms", "-o"])
            .arg(&copy)
            .arg(&cluster.target.url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while follower.running() {
        assert!(
            Instant::now() < deadline,
            "Litestream now resumes a follower over its old copy: restart followers in place"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = follower.0.wait().unwrap();
    let mut said = String::new();
    for stream in [
        follower
            .0
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read>),
        follower
            .0
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut stream = stream;
        stream.read_to_string(&mut said).unwrap();
    }
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("cannot resume follow mode") && said.contains("ahead of latest snapshot"),
        "{said}"
    );
    assert!(copy.exists(), "the refusal removed the copy");
}

/// One acknowledged write: its sequence number and when `execute` returned.
type Ack = (i64, SystemTime);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_node_killed_mid_workload_restores_to_a_prefix_of_its_acknowledged_writes() {
    let mut cluster = Cluster::start(0).await;
    let writer = cluster.writer().await;
    execute(
        &writer,
        "CREATE TABLE acks (seq INTEGER PRIMARY KEY, at TEXT)",
    )
    .await;
    let target = cluster.target.clone();
    eventually("Litestream's first LTX file", async || target.has_ltx()).await;

    // Sequential INSERTs, each acknowledged before the next is sent, until
    // the primary stops answering.
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let workload = {
        let acks = Arc::clone(&acks);
        tokio::spawn(async move {
            for seq in 1.. {
                let sql = format!("INSERT INTO acks VALUES ({seq}, 'written')");
                let params = CallToolRequestParams::new("execute")
                    .with_arguments(json!({ "sql": sql }).as_object().unwrap().clone());
                match writer.call_tool(params).await {
                    Ok(result) if result.is_error != Some(true) => {
                        acks.lock().unwrap().push((seq, SystemTime::now()));
                    }
                    _ => return seq,
                }
            }
            unreachable!()
        })
    };
    // Killed at a point of Litestream's 1 s cycles that differs run to run
    // (the cluster's start fixes their phase otherwise).
    let jitter = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(3000 + u64::from(jitter) % 2000)).await;

    // The node dies: the server and its Litestream at once.
    let killed_at = SystemTime::now();
    let _ = cluster.primary.child.kill();
    let _ = cluster.replicate.0.kill();
    let _ = cluster.primary.child.wait();
    let _ = cluster.replicate.0.wait();
    let in_flight = tokio::time::timeout(Duration::from_secs(60), workload)
        .await
        .expect("the writer noticed the primary's death")
        .unwrap();
    let acks = acks.lock().unwrap().clone();
    assert!(acks.len() > 10, "too few writes to judge: {}", acks.len());
    assert_eq!(in_flight, acks.len() as i64 + 1);

    let restored = cluster.dir.path().join("fresh/db");
    let started = Instant::now();
    let output = restore(
        &target,
        &cluster.primary_db(),
        &["--output", restored.to_str().unwrap()],
    );
    let restore_time = started.elapsed();
    assert_succeeded(&output);
    assert_eq!(integrity(&restored), "ok");

    let seqs: Vec<i64> = {
        let conn = rusqlite::Connection::open(&restored).unwrap();
        let mut stmt = conn.prepare("SELECT seq FROM acks ORDER BY seq").unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let k = seqs.len() as i64;
    assert_eq!(
        seqs,
        (1..=k).collect::<Vec<_>>(),
        "the restore is not a prefix of the writes"
    );
    assert!(
        k <= in_flight,
        "the restore holds {k} writes, only {in_flight} were ever sent"
    );
    let window = SYNC_INTERVAL + SLACK;
    for &(seq, at) in acks.iter().filter(|(seq, _)| *seq > k) {
        let before_kill = killed_at.duration_since(at).unwrap_or_default();
        assert!(
            before_kill <= window,
            "write {seq} was acknowledged {before_kill:?} before the kill and is lost \
             (more than the last sync window, {window:?}); restored {k} of {} acknowledged",
            acks.len()
        );
    }
    let rpo = match acks.iter().find(|(seq, _)| *seq == k) {
        Some((_, at)) => killed_at.duration_since(*at).unwrap_or_default(),
        // Nothing restored, or the in-flight write (never acknowledged).
        None if k == 0 => killed_at.duration_since(acks[0].1).unwrap_or_default(),
        None => Duration::ZERO,
    };
    eprintln!(
        "primary kill: {} acknowledged, {k} restored ({} lost); RPO {:.3}s (kill minus the \
         ack of the newest restored write); restore {:.3}s",
        acks.len(),
        (acks.len() as i64 - k).max(0),
        rpo.as_secs_f64(),
        restore_time.as_secs_f64()
    );
}

/// moto's S3 server with the bucket `eros`, and a target under `prefix`.
fn s3(prefix: &str) -> (S3Server, Target) {
    let server = S3Server::start();
    server.create_bucket("eros");
    let target = Target::s3(server.port, "eros", prefix);
    (server, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_replicates_through_s3_to_a_replica() {
    let (_s3, target) = s3("db");
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_on(dir, target, 1, &[], &[]).await;
    assert!(cluster.target.has_ltx(), "no LTX file in the bucket");
    let writer = cluster.writer().await;
    execute(&writer, "CREATE TABLE notes (body TEXT)").await;
    execute(&writer, "INSERT INTO notes VALUES ('through s3')").await;
    let reader = cluster.replicas[0].client().await;
    eventually("the write on the replica", async || {
        try_select(&reader, "SELECT body FROM notes").await == Some(json!([["through s3"]]))
    })
    .await;
}

/// The primary's restore before serving runs `litestream restore` with the
/// server's own environment: the S3 credentials reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_primary_restores_from_s3_before_serving() {
    let (_s3, target) = s3("db");
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.db");
    {
        let server = primary(&first, &target, &[]);
        let _replicate = replicate(&first, &target);
        let writer = server
            .client(None, &rmcp::model::ProtocolVersion::V_2025_11_25)
            .await;
        execute(&writer, "CREATE TABLE notes (body TEXT)").await;
        execute(&writer, "INSERT INTO notes VALUES ('kept in s3')").await;
        let probe = dir.path().join("probe.db");
        eventually("the write in the bucket", async || {
            let _ = std::fs::remove_file(&probe);
            restore(&target, &probe, &[]).status.success()
                && rusqlite::Connection::open(&probe)
                    .and_then(|c| {
                        c.query_row("SELECT count(*) FROM notes", [], |r| r.get::<_, i64>(0))
                    })
                    .is_ok_and(|n| n == 1)
        })
        .await;
    }
    let fresh = dir.path().join("fresh/eros.db");
    std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
    let server = primary(&fresh, &target, &[]);
    let client = server
        .client(None, &rmcp::model::ProtocolVersion::V_2025_11_25)
        .await;
    assert_eq!(
        select(&client, "SELECT body FROM notes").await,
        json!([["kept in s3"]])
    );
}

/// The highest transaction ID of the snapshots (level 9 LTX files,
/// `MIN-MAX.ltx`) in `dir`.
fn newest_snapshot_txid(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (_, max) = name.strip_suffix(".ltx")?.split_once('-')?;
            u64::from_str_radix(max, 16).ok()
        })
        .max()
}
