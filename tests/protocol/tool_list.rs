//! The tool list as a client receives it, byte for byte: what every session
//! pays in context, and schemas any JSON Schema validator accepts without
//! warnings. Read straight from the binary's stdout, with no MCP library in
//! between that could drop or reorder anything.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::TestDb;
use serde_json::{json, Value};

/// The `format` values JSON Schema 2020-12 defines.
const STANDARD_FORMATS: [&str; 19] = [
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// The most the default tool list may weigh; peers list theirs in 1.3 to
/// 3.1 KB.
const MAX_DEFAULT_LIST_BYTES: usize = 3_000;

fn example_tools() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tools.toml").to_string()
}

/// The `result` of `tools/list` from `eros-mcp serve` with `env`, as sent.
fn tools_list(db: &TestDb, env: &[(&str, &str)]) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
        .arg("serve")
        .arg("--db")
        .arg(db.path())
        .current_dir(db.path().parent().unwrap())
        .env_clear()
        .env("EROS_METRICS_ADDR", "off")
        .env("EROS_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn eros-mcp");
    let mut stdin = child.stdin.take().unwrap();
    for message in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "tool-list-test", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    ] {
        writeln!(stdin, "{message}").unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let message: Value = serde_json::from_str(&line).expect("a JSON-RPC line");
            if message["id"] == json!(2) {
                let _ = send.send(message);
                break;
            }
        }
    });
    let answer = receive
        .recv_timeout(Duration::from_secs(20))
        .expect("an answer to tools/list");
    drop(stdin);
    let _ = child.wait();
    answer["result"].clone()
}

fn schemas(list: &Value) -> Vec<(String, &Value)> {
    let mut found = Vec::new();
    for tool in list["tools"].as_array().expect("tools") {
        let name = tool["name"].as_str().unwrap();
        found.push((format!("{name} input"), &tool["inputSchema"]));
        if let Some(output) = tool.get("outputSchema") {
            found.push((format!("{name} output"), output));
        }
    }
    found
}

fn formats(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| formats(v, found)),
        Value::Object(object) => {
            if let Some(Value::String(format)) = object.get("format") {
                found.push(format.clone());
            }
            object.values().for_each(|v| formats(v, found));
        }
        _ => {}
    }
}

/// Every configuration that changes the tool list: read-only or not, CSV
/// or JSON rows, with or without declared tools.
fn every_tool_list(db: &TestDb) -> Vec<Value> {
    let tools_file = example_tools();
    let mut lists = vec![tools_list(db, &[])];
    for format in ["csv", "json"] {
        lists.push(tools_list(
            db,
            &[
                ("EROS_DB_READ_ONLY", "false"),
                ("EROS_MCP_ROW_FORMAT", format),
                ("EROS_MCP_TOOLS_FILE", &tools_file),
            ],
        ));
    }
    lists
}

#[test]
fn the_default_tool_list_is_under_3000_bytes() {
    let db = TestDb::new().with_demo_data();
    let list = tools_list(&db, &[]);
    let bytes = serde_json::to_string(&list).unwrap().len();
    assert!(
        bytes < MAX_DEFAULT_LIST_BYTES,
        "the default tools/list result is {bytes} bytes"
    );
    assert_eq!(list["tools"].as_array().unwrap().len(), 5);
}

#[test]
fn no_tool_schema_uses_a_format_outside_the_json_schema_standard() {
    let db = TestDb::new().with_demo_data();
    let lists = every_tool_list(&db);
    assert!(
        lists[1]["tools"].as_array().unwrap().len() > 8,
        "the write tools and the declared tools are listed"
    );
    for list in &lists {
        for (name, schema) in schemas(list) {
            let mut found = Vec::new();
            formats(schema, &mut found);
            found.retain(|f| !STANDARD_FORMATS.contains(&f.as_str()));
            assert!(found.is_empty(), "{name} uses format {found:?}: {schema}");
        }
    }
}

#[test]
fn every_tool_schema_stands_alone_as_an_object_schema() {
    let db = TestDb::new().with_demo_data();
    for list in every_tool_list(&db) {
        for (name, schema) in schemas(&list) {
            assert_eq!(schema["type"], json!("object"), "{name}: {schema}");
            let text = schema.to_string();
            assert!(
                !text.contains("$ref") && !text.contains("$defs"),
                "{name} refers to definitions: {schema}"
            );
        }
    }
}

#[test]
fn only_results_a_client_validates_come_with_an_output_schema() {
    let db = TestDb::new().with_demo_data();
    let lists = every_tool_list(&db);
    let with_output = |list: &Value| -> Vec<String> {
        let mut names: Vec<String> = list["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t.get("outputSchema").is_some())
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    // CSV rows are text; the schema tools answer JSON that is read, not checked.
    assert!(
        with_output(&lists[0]).is_empty(),
        "{:?}",
        with_output(&lists[0])
    );
    assert_eq!(with_output(&lists[1]), ["execute", "pause_creator"]);
    assert_eq!(
        with_output(&lists[2]),
        [
            "execute",
            "get_creator_profile",
            "pause_creator",
            "query",
            "top_creators_by_revenue",
            "upcoming_schedule"
        ]
    );
}
