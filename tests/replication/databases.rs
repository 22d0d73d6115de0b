//! A replica among several databases: one server serves a local database
//! and a read replica kept current by an external Litestream follower.
//! When the replica falls behind, only it is unready and the local
//! database answers on; the lag carries the replica's name.

use crate::common;

use common::in_process::InProcessServer;
use common::litestream::{eventually, follow, Cluster};
use common::mcp::{call, free_port, http_get, sample, text, ERAS};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_unready_alone_and_the_other_database_answers() {
    let cluster = Cluster::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mirror.db");
    let mut follower = follow(&cluster.target, &copy);
    eventually("the follower's first restore", async || copy.exists()).await;
    let conn = rusqlite::Connection::open(dir.path().join("local.db")).unwrap();
    conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'here');")
        .unwrap();
    drop(conn);
    let file = dir.path().join("databases.toml");
    std::fs::write(
        &file,
        "[databases.local]\npath = \"local.db\"\nmigrate = false\n\n\
         [databases.mirror]\npath = \"mirror.db\"\nrole = \"replica\"\nreplica_follow = false\n\
         replica_max_lag = 2\nheartbeat_interval = 0.2\nrequired = false\n",
    )
    .unwrap();
    let metrics_port = free_port();
    let addr = format!("127.0.0.1:{metrics_port}");
    let server = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[
            ("EROS_DATABASES_FILE", file.to_str().unwrap()),
            ("EROS_METRICS_ADDR", &addr),
        ],
    );
    let readyz = move || {
        let (status, body) = http_get(metrics_port, "/readyz");
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    eventually("the mirror to be current", async || {
        let (_, body) = tokio::task::spawn_blocking(readyz).await.unwrap();
        body["databases"]["mirror"]["ready"] == true
    })
    .await;
    // The follower stops: the mirror's newest heartbeat ages past 2 s.
    follower.kill();
    eventually("the mirror to be unready", async || {
        let (_, body) = tokio::task::spawn_blocking(readyz).await.unwrap();
        body["databases"]["mirror"]["ready"] == false
    })
    .await;
    let (status, body) = tokio::task::spawn_blocking(readyz).await.unwrap();
    assert_eq!(status, 200, "the mirror is optional: {body}");
    assert_eq!(body["databases"]["local"]["ready"], true, "{body}");
    assert!(
        body["databases"]["mirror"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("lag"),
        "{body}"
    );
    let client = server.client(None, &ERAS[0]).await;
    let local = call(
        &client,
        "query",
        json!({"sql": "SELECT body FROM notes", "database": "local"}),
    )
    .await;
    assert!(text(&local).contains("here"), "{}", text(&local));
    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(metrics_port, "/metrics"))
        .await
        .unwrap();
    let lag = metrics
        .lines()
        .find(|line| line.starts_with("mcp_db_replica_lag_seconds{database=\"mirror\"}"))
        .unwrap_or_else(|| panic!("no lag of the mirror in {metrics}"));
    assert!(
        sample(lag, "mcp_db_replica_lag_seconds").unwrap() > 2.0,
        "{lag}"
    );
    assert!(!metrics.contains("mcp_db_replica_lag_seconds{database=\"local\"}"));
    client.cancel().await.unwrap();
}
