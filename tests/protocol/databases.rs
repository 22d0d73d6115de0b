//! Several databases in one server (`EROS_DATABASES_FILE`): each call
//! reaches the database it names, a declared tool and a policy bind only
//! their own database, the tool list says which databases there are, and
//! one database's trouble stays its own. The server runs in-process on real
//! SQLite files.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::in_process::InProcessServer;
use common::mcp::{call, free_port, http_get, structured, text, ERAS};
use common::token_entry;
use serde_json::{json, Value};

/// A database file at `dir/name.db` with `items(id, name)` holding `rows`.
fn database(dir: &Path, name: &str, rows: &[(i64, &str)]) -> PathBuf {
    let path = dir.join(format!("{name}.db"));
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
        .unwrap();
    for (id, item) in rows {
        conn.execute("INSERT INTO items VALUES (?1, ?2)", (id, item))
            .unwrap();
    }
    path
}

/// Two databases, `shop` and `archive`, whose `items` differ, declared in
/// `dir/databases.toml` with `extra` appended.
fn two_databases(dir: &Path, extra: &str) -> PathBuf {
    database(dir, "shop", &[(1, "kettle"), (2, "teapot")]);
    database(dir, "archive", &[(1, "gramophone")]);
    let file = dir.join("databases.toml");
    std::fs::write(
        &file,
        format!(
            "[databases.shop]\npath = \"shop.db\"\ndescription = \"What the shop sells now.\"\n\
             migrate = false\n\n\
             [databases.archive]\npath = \"archive.db\"\ndescription = \"Items no longer sold.\"\n\
             migrate = false\n{extra}"
        ),
    )
    .unwrap();
    file
}

/// GET `path` on the sidecar at `port`: (status, body).
async fn sidecar(port: u16, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || http_get(port, path))
        .await
        .unwrap()
}

fn names(result: &rmcp::model::CallToolResult) -> String {
    text(result)
}

#[tokio::test]
async fn each_call_reaches_the_database_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = two_databases(dir.path(), "");
    let server = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[("EROS_DATABASES_FILE", file.to_str().unwrap())],
    );
    // In 2026-07-28 the client also sends the name as Mcp-Param-Database
    // (the schema's x-mcp-header), which the server checks against the
    // body; a client knows to once it has listed the tools.
    for era in ERAS {
        let client = server.client(None, &era).await;
        client.list_all_tools().await.unwrap();
        let sql = json!("SELECT name FROM items ORDER BY id");
        let shop = call(&client, "query", json!({"sql": sql, "database": "shop"})).await;
        let archive = call(&client, "query", json!({"sql": sql, "database": "archive"})).await;
        assert!(names(&shop).contains("kettle") && names(&shop).contains("teapot"));
        assert!(!names(&shop).contains("gramophone"), "{}", names(&shop));
        assert!(
            names(&archive).contains("gramophone"),
            "{}",
            names(&archive)
        );
        assert!(!names(&archive).contains("kettle"), "{}", names(&archive));
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn a_missing_or_unknown_database_is_a_tool_error_listing_the_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = two_databases(dir.path(), "");
    let server = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[("EROS_DATABASES_FILE", file.to_str().unwrap())],
    );
    let client = server.client(None, &ERAS[0]).await;
    for arguments in [
        json!({"sql": "SELECT 1"}),
        json!({"sql": "SELECT 1", "database": "warehouse"}),
    ] {
        let result = call(&client, "query", arguments.clone()).await;
        assert_eq!(result.is_error, Some(true), "{arguments}");
        let message = text(&result);
        assert!(
            message.contains("shop") && message.contains("archive"),
            "{message}"
        );
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_tool_list_names_the_databases_only_when_there_are_several() {
    let dir = tempfile::tempdir().unwrap();
    let file = two_databases(dir.path(), "");
    let several = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[("EROS_DATABASES_FILE", file.to_str().unwrap())],
    );
    let client = several.client(None, &ERAS[0]).await;
    let tools = client.list_all_tools().await.unwrap();
    let query = tools.iter().find(|t| t.name == "query").unwrap();
    let schema = serde_json::to_value(&query.input_schema).unwrap();
    assert_eq!(
        schema["properties"]["database"]["enum"],
        json!(["shop", "archive"])
    );
    assert_eq!(schema["properties"]["database"]["x-mcp-header"], "Database");
    assert!(schema["required"]
        .as_array()
        .unwrap()
        .contains(&json!("database")));
    let several_bytes = serde_json::to_string(&tools).unwrap().len();
    let listed = call(&client, "list_databases", json!({})).await;
    let listed = structured(&listed);
    assert_eq!(listed["databases"][0]["name"], "shop");
    assert_eq!(
        listed["databases"][1]["description"],
        "Items no longer sold."
    );
    client.cancel().await.unwrap();

    // One database: the list is what it always was.
    let db = database(dir.path(), "alone", &[(1, "x")]);
    let one = InProcessServer::start(&db, &[("EROS_DB_MIGRATE", "false")]);
    let client = one.client(None, &ERAS[0]).await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().all(|t| t.name != "list_databases"));
    let one_bytes = serde_json::to_string(&tools).unwrap().len();
    eprintln!("tools/list: {one_bytes} bytes with one database, {several_bytes} with two");
    assert!(one_bytes <= 3000, "{one_bytes}");
    assert!(
        several_bytes < one_bytes + 1200,
        "{several_bytes} vs {one_bytes}"
    );
    for tool in &tools {
        let schema = serde_json::to_value(&tool.input_schema).unwrap();
        assert!(
            schema["properties"].get("database").is_none(),
            "{}: {schema}",
            tool.name
        );
    }
    let result = call(&client, "query", json!({"sql": "SELECT name FROM items"})).await;
    assert!(text(&result).contains('x'));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_declared_tool_and_a_policy_bind_only_their_own_database() {
    const READER: &str = "reader-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shop-tools.toml"),
        "[[tools]]\nname = \"shop_item\"\ndescription = \"One item of the shop.\"\n\
         sql = \"SELECT name FROM items WHERE id = :id\"\n\
         [tools.params.id]\ntype = \"integer\"\ndescription = \"The item.\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("shop-policy.toml"),
        "[scopes.\"eros:pii\"]\nnull_columns = [\"items.name\"]\n",
    )
    .unwrap();
    let file = two_databases(dir.path(), "");
    let text_of_file = std::fs::read_to_string(&file).unwrap().replace(
        "[databases.archive]",
        "tools_file = \"shop-tools.toml\"\npolicy_file = \"shop-policy.toml\"\n\n[databases.archive]",
    );
    std::fs::write(&file, text_of_file).unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, token_entry("reader", READER, &["eros:read"])).unwrap();
    let server = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[
            ("EROS_DATABASES_FILE", file.to_str().unwrap()),
            ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
        ],
    );
    let client = server.client(Some(READER), &ERAS[0]).await;
    // The declared tool runs on the shop, whatever database is passed.
    let item = call(
        &client,
        "shop_item",
        json!({"id": 1, "database": "archive"}),
    )
    .await;
    assert_eq!(item.is_error, Some(true), "an argument it does not declare");
    let item = call(&client, "shop_item", json!({"id": 1})).await;
    assert!(!text(&item).contains("gramophone"), "{}", text(&item));
    // The shop's policy nulls its names for a reader without eros:pii...
    let shop = call(
        &client,
        "query",
        json!({"sql": "SELECT name FROM items WHERE name IS NOT NULL", "database": "shop"}),
    )
    .await;
    assert!(!text(&shop).contains("kettle"), "{}", text(&shop));
    // ...and the archive, which has no policy, shows its own.
    let archive = call(
        &client,
        "query",
        json!({"sql": "SELECT name FROM items", "database": "archive"}),
    )
    .await;
    assert!(text(&archive).contains("gramophone"), "{}", text(&archive));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_whose_pool_is_held_leaves_the_other_answering_and_readiness_says_which() {
    const RUNAWAY: &str =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let dir = tempfile::tempdir().unwrap();
    let file = two_databases(dir.path(), "");
    // The shop gets one connection and a long timeout; the archive is optional.
    let text_of_file = std::fs::read_to_string(&file)
        .unwrap()
        .replace(
            "[databases.archive]",
            "pool_size = 1\npool_overflow = 0\npool_prewarm = 1\npool_timeout = 0.3\n\
             query_timeout = 4\n\n[databases.archive]",
        )
        .replace(
            "description = \"Items no longer sold.\"",
            "description = \"Items no longer sold.\"\nrequired = false\nread_only = false",
        );
    std::fs::write(&file, text_of_file).unwrap();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[
            ("EROS_DATABASES_FILE", file.to_str().unwrap()),
            ("EROS_METRICS_ADDR", &metrics_addr),
        ],
    );
    let client = std::sync::Arc::new(server.client(None, &ERAS[0]).await);
    let held = {
        let client = std::sync::Arc::clone(&client);
        tokio::spawn(async move {
            call(
                &client,
                "query",
                json!({"sql": RUNAWAY, "database": "shop"}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The shop's one connection is taken: its next call waits out its timeout.
    let shop = call(
        &client,
        "query",
        json!({"sql": "SELECT 1", "database": "shop"}),
    )
    .await;
    assert_eq!(shop.is_error, Some(true), "{}", text(&shop));
    // The archive answers every call at once.
    for _ in 0..20 {
        let started = Instant::now();
        let archive = call(
            &client,
            "query",
            json!({"sql": "SELECT name FROM items", "database": "archive"}),
        )
        .await;
        assert!(text(&archive).contains("gramophone"), "{}", text(&archive));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    held.await.unwrap();
    // The archive's file goes: it is optional, so the server stays ready
    // and /readyz says which database cannot serve.
    std::fs::remove_file(dir.path().join("archive.db")).unwrap();
    let failing = call(
        &client,
        "execute",
        json!({"sql": "DELETE FROM items", "database": "archive"}),
    )
    .await;
    assert_eq!(failing.is_error, Some(true));
    let (status, body) = sidecar(metrics_port, "/readyz").await;
    let readiness: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(readiness["databases"]["shop"]["ready"], true, "{body}");
    assert_eq!(readiness["databases"]["archive"]["ready"], false, "{body}");
    let (_, metrics) = sidecar(metrics_port, "/metrics").await;
    assert!(
        metrics.contains("mcp_db_pool_size{database=\"shop\"} 1")
            && metrics.contains("mcp_db_pool_size{database=\"archive\"} 10"),
        "{metrics}"
    );
    std::sync::Arc::try_unwrap(client)
        .ok()
        .unwrap()
        .cancel()
        .await
        .unwrap();
}

#[test]
fn a_bad_databases_file_stops_startup_with_its_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("databases.toml");
    std::fs::write(
        &file,
        "[databases.shop]\npath = \"shop.db\"\npool_size = 0\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .arg("check")
        .env_clear()
        .env("EROS_DATABASES_FILE", &file)
        .env("EROS_METRICS_ADDR", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("databases.toml:3: databases.shop: pool_size = \"0\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_data_dictionary_is_in_the_schema_answers() {
    let dir = tempfile::tempdir().unwrap();
    let file = two_databases(
        dir.path(),
        "\n[databases.archive.tables.items]\ndescription = \"Things once sold.\"\n\
         columns.name = { description = \"What it was called\", unit = \"words\" }\n",
    );
    let server = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[("EROS_DATABASES_FILE", file.to_str().unwrap())],
    );
    let client = server.client(None, &ERAS[0]).await;
    let listed = call(
        &client,
        "list_tables",
        json!({"detail": "columns", "database": "archive"}),
    )
    .await;
    let listed = structured(&listed);
    assert_eq!(listed["tables"][0]["description"], "Things once sold.");
    let columns = listed["tables"][0]["columns"].to_string();
    assert!(
        columns.contains("name TEXT NOT NULL -- What it was called (unit: words)"),
        "{columns}"
    );
    let described = call(
        &client,
        "describe_table",
        json!({"table": "items", "database": "archive"}),
    )
    .await;
    let described = structured(&described);
    assert_eq!(described["description"], "Things once sold.");
    assert_eq!(
        described["columns"][1]["description"],
        "What it was called (unit: words)"
    );
    let schema = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "schema://archive",
        ))
        .await
        .unwrap();
    let ddl = serde_json::to_string(&schema).unwrap();
    assert!(ddl.contains("items: Things once sold."), "{ddl}");
    // The shop's items are not described: the notes are the archive's alone.
    let shop = call(
        &client,
        "describe_table",
        json!({"table": "items", "database": "shop"}),
    )
    .await;
    assert!(structured(&shop).get("description").is_none());
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_whose_write_lock_is_held_leaves_the_other_writable() {
    let dir = tempfile::tempdir().unwrap();
    let file = two_databases(dir.path(), "");
    let writable = std::fs::read_to_string(&file).unwrap().replace(
        "migrate = false",
        "migrate = false\nread_only = false\nbusy_timeout = 0.2",
    );
    std::fs::write(&file, writable).unwrap();
    let server = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[("EROS_DATABASES_FILE", file.to_str().unwrap())],
    );
    let client = server.client(None, &ERAS[0]).await;
    // Another process's transaction holds the shop's write lock.
    let holder = rusqlite::Connection::open(dir.path().join("shop.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let insert = |database: &str| json!({"sql": "INSERT INTO items (name) VALUES ('new')", "database": database});
    let shop = call(&client, "execute", insert("shop")).await;
    assert_eq!(shop.is_error, Some(true), "{}", text(&shop));
    assert!(text(&shop).contains("BUSY"), "{}", text(&shop));
    let started = Instant::now();
    let archive = call(&client, "execute", insert("archive")).await;
    assert_ne!(archive.is_error, Some(true), "{}", text(&archive));
    assert!(started.elapsed() < Duration::from_secs(2));
    holder.execute_batch("ROLLBACK").unwrap();
    let shop = call(&client, "execute", insert("shop")).await;
    assert_ne!(
        shop.is_error,
        Some(true),
        "once the lock is given back: {}",
        text(&shop)
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_fails_only_its_own_calls() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let file = two_databases(dir.path(), "");
    let optional = std::fs::read_to_string(&file).unwrap().replace(
        "description = \"Items no longer sold.\"",
        "description = \"Items no longer sold.\"\nrequired = false",
    );
    std::fs::write(&file, optional).unwrap();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[
            ("EROS_DATABASES_FILE", file.to_str().unwrap()),
            ("EROS_METRICS_ADDR", &metrics_addr),
        ],
    );
    let client = server.client(None, &ERAS[0]).await;
    // Garbage over the root page of the archive's items table.
    let archive = dir.path().join("archive.db");
    let (offset, page_size) = {
        let conn = rusqlite::Connection::open(&archive).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let root: i64 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = 'items'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (((root - 1) * page_size) as u64, page_size as usize)
    };
    let mut handle = std::fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap();
    handle.seek(SeekFrom::Start(offset)).unwrap();
    let garbage: Vec<u8> = (0..page_size).map(|i| (i * 7 + 13) as u8).collect();
    handle.write_all(&garbage).unwrap();
    handle.sync_all().unwrap();
    let broken = call(
        &client,
        "query",
        json!({"sql": "SELECT name FROM items", "database": "archive"}),
    )
    .await;
    assert_eq!(broken.is_error, Some(true));
    assert!(
        text(&broken).contains("SQLITE_CORRUPT"),
        "{}",
        text(&broken)
    );
    for _ in 0..10 {
        let shop = call(
            &client,
            "query",
            json!({"sql": "SELECT name FROM items ORDER BY id", "database": "shop"}),
        )
        .await;
        assert!(text(&shop).contains("kettle"), "{}", text(&shop));
    }
    let (status, body) = sidecar(metrics_port, "/readyz").await;
    let readiness: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "the archive is optional: {body}");
    assert_eq!(readiness["databases"]["shop"]["ready"], true, "{body}");
    assert_eq!(readiness["databases"]["archive"]["ready"], false, "{body}");
    let (_, metrics) = sidecar(metrics_port, "/metrics").await;
    assert!(
        metrics.contains("mcp_db_corruption_detected{database=\"archive\"} 1")
            && metrics.contains("mcp_db_corruption_detected{database=\"shop\"} 0"),
        "{metrics}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_database_behind_a_scope_is_neither_usable_nor_named_to_a_caller_without_it() {
    const READER: &str = "reader-token-0123456789";
    const ARCHIVIST: &str = "archivist-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let file = two_databases(dir.path(), "scope = \"eros:archive\"\n");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "{}{}",
            token_entry("reader", READER, &["eros:read"]),
            token_entry("archivist", ARCHIVIST, &["eros:read", "eros:archive"])
        ),
    )
    .unwrap();
    let server = InProcessServer::start(
        &dir.path().join("unused.db"),
        &[
            ("EROS_DATABASES_FILE", file.to_str().unwrap()),
            ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
        ],
    );
    let reader = server.client(Some(READER), &ERAS[0]).await;
    let listed = call(&reader, "list_databases", json!({})).await;
    assert_eq!(
        structured(&listed)["databases"].as_array().unwrap().len(),
        1
    );
    let refused = call(
        &reader,
        "query",
        json!({"sql": "SELECT name FROM items", "database": "archive"}),
    )
    .await;
    assert_eq!(refused.is_error, Some(true));
    assert!(!text(&refused).contains("gramophone"), "{}", text(&refused));
    assert!(
        text(&refused).contains("no database named \"archive\"; this server serves shop"),
        "the same answer as for a name that does not exist: {}",
        text(&refused)
    );
    let tools = reader.list_all_tools().await.unwrap();
    let query = tools.iter().find(|t| t.name == "query").unwrap();
    let schema = serde_json::to_value(&query.input_schema).unwrap();
    assert_eq!(schema["properties"]["database"]["enum"], json!(["shop"]));
    reader.cancel().await.unwrap();
    // The control: with the scope, the archive is there.
    let archivist = server.client(Some(ARCHIVIST), &ERAS[0]).await;
    let archive = call(
        &archivist,
        "query",
        json!({"sql": "SELECT name FROM items", "database": "archive"}),
    )
    .await;
    assert!(text(&archive).contains("gramophone"), "{}", text(&archive));
    archivist.cancel().await.unwrap();
}
