//! The MCP server over stdio with a real MCP client, in both protocol eras:
//! the stdio loop run in-process over in-memory pipes, except where only the
//! binary shows the behaviour (what stdout carries, a bad tools file at startup).

use crate::common;

use common::in_process::stdio_client;
use common::mcp::{call, rows, structured, text, ERAS};
use common::TestDb;
use serde_json::{json, Value};

#[tokio::test]
async fn the_tools_are_listed_with_annotations_in_both_eras() {
    let db = TestDb::new().with_demo_data();
    for era in ERAS {
        let client = stdio_client(db.path(), &[], &era).await;
        assert_eq!(client.peer_info().unwrap().protocol_version, era);
        let tools = client.list_all_tools().await.unwrap();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "describe_table",
                "explain_query",
                "list_tables",
                "pool_stats",
                "query"
            ]
        );
        for tool in &tools {
            let annotations = tool.annotations.as_ref().expect("annotations");
            assert_eq!(annotations.read_only_hint, Some(true), "{}", tool.name);
            assert_eq!(annotations.open_world_hint, Some(false), "{}", tool.name);
            assert!(tool.description.as_ref().is_some_and(|d| d.len() > 20));
        }
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn with_csv_rows_no_read_tool_declares_an_output_schema() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[], &ERAS[0]).await;
    for tool in client.list_all_tools().await.unwrap() {
        assert!(tool.output_schema.is_none(), "{} has one", tool.name);
        if tool.name == "query" {
            let description = tool.description.unwrap();
            assert!(description.contains("CSV"), "{description}");
        }
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn with_json_rows_query_declares_the_schema_of_its_rows() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[("EROS_MCP_ROW_FORMAT", "json")], &ERAS[0]).await;
    for tool in client.list_all_tools().await.unwrap() {
        let is_query = tool.name == "query";
        assert_eq!(tool.output_schema.is_some(), is_query, "{}", tool.name);
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn list_tables_finds_the_tables_having_a_column_and_names_the_matches() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[], &V2025).await;
    let result = call(&client, "list_tables", json!({"column": "subscriber_id"})).await;
    let found: Vec<(String, Value)> = structured(&result)["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["columns"].clone(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "subscriptions".to_string(),
                json!(["subscriber_id INTEGER NOT NULL"])
            ),
            ("transactions".to_string(), json!(["subscriber_id INTEGER"])),
        ]
    );
    let both = call(
        &client,
        "list_tables",
        json!({"pattern": "creator", "column": "creator_id"}),
    )
    .await;
    assert_eq!(
        structured(&both)["tables"],
        json!([{"name": "creator_revenue", "type": "view", "columns": ["creator_id INTEGER"]}])
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn query_returns_typed_csv_and_a_metadata_line_in_both_eras() {
    let db = TestDb::new().with_demo_data();
    for era in ERAS {
        let client = stdio_client(db.path(), &[], &era).await;
        let result = call(
            &client,
            "query",
            json!({"sql": "SELECT id, handle, NULL AS note, '7' AS code FROM creators WHERE id <= ? ORDER BY id", "params": [2]}),
        )
        .await;
        assert_eq!(result.structured_content, None, "one copy of the rows");
        assert_eq!(
            text(&result),
            "id,handle,note,code\n1,creator1,,\"7\"\n2,creator2,,\"7\"\n\n{\"row_count\":2,\"truncated\":false}"
        );
        let out = rows(&result);
        assert_eq!(
            out["rows"],
            json!([[1, "creator1", null, "7"], [2, "creator2", null, "7"]])
        );
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn with_json_rows_query_returns_structured_rows_and_the_same_json_as_text() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[("EROS_MCP_ROW_FORMAT", "json")], &ERAS[0]).await;
    let result = call(
        &client,
        "query",
        json!({"sql": "SELECT id, handle FROM creators WHERE id <= ? ORDER BY id", "params": [2]}),
    )
    .await;
    let out = structured(&result);
    assert_eq!(out["columns"], json!(["id", "handle"]));
    assert_eq!(out["rows"], json!([[1, "creator1"], [2, "creator2"]]));
    assert_eq!(out["row_count"], json!(2));
    assert_eq!(out["truncated"], json!(false));
    let text: serde_json::Value = serde_json::from_str(&text(&result)).unwrap();
    assert_eq!(&text, out, "the text content carries the same compact JSON");
    client.cancel().await.unwrap();
}

use common::attacks::ATTACKS;
use rmcp::model::{ProtocolVersion, ReadResourceRequestParams};
use std::time::{Duration, Instant};

const V2025: ProtocolVersion = ProtocolVersion::V_2025_11_25;

#[tokio::test]
async fn an_sql_error_is_a_tool_error_with_the_sqlite_message() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[], &V2025).await;
    let result = call(
        &client,
        "query",
        json!({"sql": "SELECT nope FROM creators"}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let message = text(&result);
    assert!(
        message.starts_with("SQLITE_ERROR: no such column: nope"),
        "{message}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn every_attack_is_refused_over_mcp_and_the_database_is_unchanged() {
    let db = TestDb::new().with_demo_data();
    let before = std::fs::read(db.path()).unwrap();
    let client = stdio_client(db.path(), &[], &V2025).await;
    let dir = db.dir.path().display().to_string();
    for (name, sql) in ATTACKS {
        let result = call(
            &client,
            "query",
            json!({"sql": sql.replace("ATTACKDIR", &dir)}),
        )
        .await;
        assert_eq!(
            result.is_error,
            Some(true),
            "{name} was not refused: {}",
            text(&result)
        );
        assert!(!text(&result).is_empty());
    }
    let stats = call(&client, "pool_stats", json!({})).await;
    assert_eq!(structured(&stats)["active_connections"], json!(0));
    client.cancel().await.unwrap();
    // The server checkpointed on exit: every byte of the database is as it was.
    assert_eq!(std::fs::read(db.path()).unwrap(), before);
    for extra in ["attached.db", "a.db", "exfil.db", "p"] {
        assert!(!db.file(extra).exists(), "{extra} was created");
    }
}

#[tokio::test]
async fn the_schema_resource_holds_the_ddl() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[], &V2025).await;
    let resources = client.list_all_resources().await.unwrap();
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].uri, "schema://main");
    let read = client
        .read_resource(ReadResourceRequestParams::new("schema://main"))
        .await
        .unwrap();
    let body = serde_json::to_string(&read).unwrap();
    assert!(body.contains("CREATE TABLE creators"), "{body}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn execute_is_offered_only_when_writes_are_enabled() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[("EROS_DB_READ_ONLY", "false")], &V2025).await;
    let tools = client.list_all_tools().await.unwrap();
    let execute = tools
        .iter()
        .find(|t| t.name == "execute")
        .expect("execute is listed");
    let annotations = execute.annotations.as_ref().unwrap();
    assert_eq!(annotations.read_only_hint, Some(false));
    assert_eq!(annotations.destructive_hint, Some(true));
    let result = call(
        &client,
        "execute",
        json!({"sql": "UPDATE creators SET tier = :tier WHERE id = 1", "params": {"tier": "premium"}}),
    )
    .await;
    assert_eq!(structured(&result)["changes"], json!(1));
    let check = call(
        &client,
        "query",
        json!({"sql": "SELECT tier FROM creators WHERE id = 1"}),
    )
    .await;
    assert_eq!(rows(&check)["rows"], json!([["premium"]]));
    client.cancel().await.unwrap();

    let read_only = stdio_client(db.path(), &[], &V2025).await;
    let err = read_only
        .call_tool(
            rmcp::model::CallToolRequestParams::new("execute").with_arguments(
                json!({"sql": "DELETE FROM creators"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await;
    assert!(err.is_err(), "execute is unknown on a read-only server");
    read_only.cancel().await.unwrap();
}

#[tokio::test]
async fn execute_reports_only_what_its_own_statement_changed() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[("EROS_DB_READ_ONLY", "false")], &V2025).await;
    let outcome = async |sql: &str| {
        let result = call(&client, "execute", json!({ "sql": sql })).await;
        let answer = structured(&result);
        (
            answer["changes"].clone(),
            answer["last_insert_rowid"].clone(),
        )
    };
    assert_eq!(outcome("CREATE TABLE t (x)").await, (json!(0), json!(0)));
    assert_eq!(
        outcome("INSERT INTO t VALUES (1), (2)").await,
        (json!(2), json!(2))
    );
    // Neither changes a row: the insert's counts are not theirs.
    assert_eq!(
        outcome("CREATE INDEX t_x ON t (x)").await,
        (json!(0), json!(0))
    );
    assert_eq!(
        outcome("UPDATE t SET x = 3 WHERE x = 99").await,
        (json!(0), json!(0))
    );
    assert_eq!(outcome("DELETE FROM t").await, (json!(2), json!(0)));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn sql_holding_a_nul_character_is_refused_and_nothing_runs() {
    // SQLite stops reading at a NUL: run, this would delete every row.
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[("EROS_DB_READ_ONLY", "false")], &V2025).await;
    let count = json!({"sql": "SELECT count(*) FROM creators"});
    let before = rows(&call(&client, "query", count.clone()).await)["rows"].clone();
    let result = call(
        &client,
        "execute",
        json!({"sql": "DELETE FROM creators\u{0} WHERE id = 1"}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let message = text(&result);
    assert!(message.contains("NUL character"), "{message}");
    assert!(message.contains("at offset 20"), "{message}");
    let after = rows(&call(&client, "query", count).await)["rows"].clone();
    assert_eq!(after, before);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_read_holding_a_nul_character_is_refused_not_cut_short() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[], &V2025).await;
    for tool in ["query", "explain_query"] {
        let result = call(
            &client,
            tool,
            json!({"sql": "SELECT count(*) FROM creators\u{0} WHERE 0"}),
        )
        .await;
        assert_eq!(result.is_error, Some(true), "{tool}");
        assert!(text(&result).contains("NUL character"), "{tool}");
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_unknown_tool_is_named_in_its_error() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[], &V2025).await;
    let err = client
        .call_tool(rmcp::model::CallToolRequestParams::new("no_such_tool"))
        .await
        .unwrap_err();
    match err {
        rmcp::ServiceError::McpError(error) => {
            assert_eq!(error.code, rmcp::model::ErrorCode::INVALID_PARAMS);
            assert!(
                error.message.contains("\"no_such_tool\""),
                "{}",
                error.message
            );
        }
        other => panic!("{other:?}"),
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn wrong_argument_types_are_reported_and_the_server_lives_on() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[], &V2025).await;
    for arguments in [
        json!({"sql": 42}),
        json!({}),
        json!({"sql": "SELECT 1", "params": [{"nested": true}]}),
        json!({"sql": "SELECT 1", "max_rows": "ten"}),
        json!({"sql": "SELECT ?", "params": "not a list"}),
    ] {
        let result = call(&client, "query", arguments.clone()).await;
        assert_eq!(result.is_error, Some(true), "{arguments} was accepted");
    }
    let result = call(&client, "describe_table", json!({"table": ["creators"]})).await;
    assert_eq!(result.is_error, Some(true));
    let ok = call(&client, "query", json!({"sql": "SELECT 1 AS one"})).await;
    assert_eq!(rows(&ok)["rows"], json!([[1]]));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn huge_and_deeply_nested_arguments_get_errors_not_crashes() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[], &V2025).await;
    let huge = format!("SELECT '{}'", "x".repeat(2_000_000));
    let result = call(&client, "query", json!({"sql": huge})).await;
    assert_eq!(
        result.is_error,
        Some(true),
        "a 2 MB statement is over SQLite's SQL length limit"
    );
    let mut nested = json!(1);
    for _ in 0..100 {
        nested = json!([nested]);
    }
    let result = call(
        &client,
        "query",
        json!({"sql": "SELECT ?", "params": [nested]}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let ok = call(&client, "list_tables", json!({})).await;
    assert_eq!(structured(&ok)["tables"].as_array().unwrap().len(), 7);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_truncated_result_continues_with_its_cursor() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[("EROS_DB_MAX_ROWS", "15")], &V2025).await;
    let sql = "SELECT id FROM creators ORDER BY id";
    let first = call(&client, "query", json!({"sql": sql})).await;
    let first = rows(&first);
    assert_eq!(first["row_count"], json!(15));
    assert_eq!(first["truncated"], json!(true));
    let mut ids: Vec<i64> = first["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    let mut cursor = first["next_cursor"].as_str().unwrap().to_string();
    loop {
        let page = call(&client, "query", json!({"sql": sql, "cursor": cursor})).await;
        let page = rows(&page);
        ids.extend(
            page["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r[0].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    client.cancel().await.unwrap();
}

const RUNAWAY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

#[tokio::test]
async fn a_runaway_query_times_out_and_the_pool_recovers() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[("EROS_DB_QUERY_TIMEOUT", "0.3")], &V2025).await;
    let started = Instant::now();
    let result = call(&client, "query", json!({"sql": RUNAWAY})).await;
    assert_eq!(result.is_error, Some(true));
    assert!(text(&result).starts_with("TIMEOUT"), "{}", text(&result));
    assert!(started.elapsed() < Duration::from_secs(3));
    let stats = call(&client, "pool_stats", json!({})).await;
    assert_eq!(structured(&stats)["active_connections"], json!(0));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_call_interrupts_its_query() {
    let db = TestDb::new().with_demo_data();
    let client = stdio_client(db.path(), &[], &V2025).await;
    // Dropping the call future makes rmcp send notifications/cancelled.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(300),
        call(&client, "query", json!({"sql": RUNAWAY})),
    )
    .await;
    assert!(abandoned.is_err());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stats = call(&client, "pool_stats", json!({})).await;
        if structured(&stats)["active_connections"] == json!(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled query is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.cancel().await.unwrap();
}

fn example_tools() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tools.toml").to_string()
}

#[tokio::test]
async fn declared_tools_get_exact_schemas_and_bind_their_arguments() {
    let db = TestDb::new().with_demo_data();
    let tools_file = example_tools();
    let client = stdio_client(db.path(), &[("EROS_MCP_TOOLS_FILE", &tools_file)], &V2025).await;
    let tools = client.list_all_tools().await.unwrap();
    let profile = tools
        .iter()
        .find(|t| t.name == "get_creator_profile")
        .expect("declared tool listed");
    let schema = serde_json::to_value(&*profile.input_schema).unwrap();
    assert_eq!(schema["properties"]["creator_id"]["type"], json!("integer"));
    assert_eq!(schema["required"], json!(["creator_id"]));
    assert_eq!(schema["additionalProperties"], json!(false));
    assert!(
        profile.output_schema.is_none()
            && profile
                .description
                .as_deref()
                .is_some_and(|d| d.contains("CSV")),
        "a declared read tool answers with CSV rows and says so"
    );
    assert!(
        tools.iter().all(|t| t.name != "pause_creator"),
        "write tools need writes enabled"
    );

    let result = call(&client, "get_creator_profile", json!({"creator_id": 3})).await;
    let out = rows(&result);
    assert_eq!(out["rows"][0][1], json!("creator3"));

    let top = call(
        &client,
        "top_creators_by_revenue",
        json!({"kind": "tip", "limit": 3}),
    )
    .await;
    assert_eq!(rows(&top)["row_count"], json!(3));

    for bad in [
        json!({}),
        json!({"creator_id": "3"}),
        json!({"creator_id": 3, "extra": 1}),
        json!({"creator_id": "1; DROP TABLE creators"}),
    ] {
        let result = call(&client, "get_creator_profile", bad.clone()).await;
        assert_eq!(result.is_error, Some(true), "{bad} was accepted");
    }
    let bad_enum = call(&client, "top_creators_by_revenue", json!({"kind": "gift"})).await;
    assert_eq!(bad_enum.is_error, Some(true));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn declared_write_tools_run_when_writes_are_enabled() {
    let db = TestDb::new().with_demo_data();
    let tools_file = example_tools();
    let client = stdio_client(
        db.path(),
        &[
            ("EROS_MCP_TOOLS_FILE", &tools_file),
            ("EROS_DB_READ_ONLY", "false"),
        ],
        &V2025,
    )
    .await;
    let result = call(&client, "pause_creator", json!({"creator_id": 5})).await;
    assert_eq!(structured(&result)["changes"], json!(1));
    let check = call(
        &client,
        "query",
        json!({"sql": "SELECT status FROM creators WHERE id = 5"}),
    )
    .await;
    assert_eq!(rows(&check)["rows"], json!([["paused"]]));
    client.cancel().await.unwrap();
}

#[test]
fn malformed_json_rpc_on_stdin_gets_errors_and_stdout_stays_pure_protocol() {
    use std::io::{BufRead, BufReader, Write};
    let db = TestDb::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .args(["serve", "--db"])
        .arg(db.path())
        .env_clear()
        .env("EROS_METRICS_ADDR", "off")
        .env("EROS_LOG", "debug")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for line in [
        "{not json}",
        "[]",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"nope\"}",
        &deep,
        &initialize.to_string(),
    ] {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut responses = Vec::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        let message: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("stdout carried a non-protocol line: {line:?}"));
        line.clear();
        let done = message["id"] == json!(1);
        responses.push(message);
        if done {
            break;
        }
    }
    assert!(
        responses
            .iter()
            .any(|r| r["error"]["code"] == json!(-32600)),
        "{responses:?}"
    );
    let initialized = responses.last().unwrap();
    assert_eq!(
        initialized["result"]["serverInfo"]["name"],
        json!("eros-mcp")
    );
    drop(stdin);
    assert!(
        child.wait().unwrap().success(),
        "closing stdin ends the server cleanly"
    );
}

#[test]
fn a_bad_tools_file_stops_startup_with_the_line_and_reason() {
    let db = TestDb::new();
    let cases = [
        ("[[tools]]\nname = \"x\"\ndescription = \"d\"\nsql = \"SELECT * FROM nowhere\"\n", ":1:", "does not prepare"),
        ("\n\n[[tools]]\nname = \"y\"\ndescription = \"d\"\nsql = \"SELECT :a\"\n", ":3:", "no parameter \"a\" is declared"),
        ("[[tools]]\nname = \"z\"\ndescription = \"d\"\nsql = \"DELETE FROM t\"\n", ":1:", "does not prepare"),
        ("[[tools]]\nname = \"query\"\ndescription = \"d\"\nsql = \"SELECT 1\"\n", ":1:", "taken by a built-in tool"),
        ("[[tools]\nname = 1\n", ":1:", ""),
        ("[[tools]]\nname = \"w\"\ndescription = \"d\"\nsql = \"SELECT :n\"\n[tools.params.n]\ntype = \"integer\"\ndefault = \"ten\"\n", ":1:", "is integer but"),
    ];
    for (text, line, reason) in cases {
        let file = db.file("tools.toml");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
            .args(["serve", "--db"])
            .arg(db.path())
            .env_clear()
            .env("EROS_METRICS_ADDR", "off")
            .env("EROS_MCP_TOOLS_FILE", &file)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(&format!("tools.toml{line}")),
            "{text}\n{stderr}"
        );
        assert!(stderr.contains(reason), "{text}\n{stderr}");
    }
}
