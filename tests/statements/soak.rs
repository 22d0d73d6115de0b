//! A short soak through the real binary: mixed reads, writes, SQL errors,
//! runaway statements stopped at their deadline and calls cancelled
//! mid-flight, for `SOAK_SECONDS` (20 by default), after which the
//! server's memory, file descriptors and pool counters must not have grown
//! or leaked. `scripts/soak` runs the same soak for as long as one likes.

use std::time::Duration;

use eros_bench::{dataset, load, soak, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_leaks_no_memory_descriptor_or_connection() {
    const ROWS: u64 = 20_000;
    const CONCURRENCY: usize = 4;
    let seconds: f64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("soak.db");
    dataset::create(&db, ROWS).unwrap();
    let target = Target::Stdio {
        command: vec![
            env!("CARGO_BIN_EXE_eros-mcp").to_string(),
            "--db".to_string(),
            db.display().to_string(),
        ],
        // Writes on, a short query timeout (the soak sends runaway
        // queries), no sidecar.
        env: [
            ("EROS_DB_READ_ONLY", "false"),
            ("EROS_DB_QUERY_TIMEOUT", "0.2"),
            ("EROS_DB_MIGRATE", "false"),
            ("EROS_METRICS_ADDR", "off"),
            ("EROS_LOG", "error"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    let (sessions, pid) = load::connect(&target, CONCURRENCY).await.unwrap();
    let report = soak::run(
        &sessions,
        pid.expect("a stdio server has a pid"),
        ROWS,
        CONCURRENCY,
        Duration::from_secs_f64(seconds),
        true,
    )
    .await
    .unwrap();
    eprintln!("{report}");
    for session in sessions {
        let _ = session.cancel().await;
    }
    assert!(report.reads > 0 && report.writes > 0, "{report}");
    assert!(report.timeouts > 0 && report.cancellations > 0, "{report}");
    assert!(report.problems.is_empty(), "{report}");
}
