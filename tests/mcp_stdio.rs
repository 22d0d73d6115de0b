//! The real binary over stdio with a real MCP client, in both protocol eras.

mod common;

use common::mcp::{call, stdio_client, structured, text, ERAS};
use common::TestDb;
use serde_json::json;

#[tokio::test]
async fn the_tools_are_listed_with_annotations_and_output_schemas_in_both_eras() {
    let db = TestDb::new().with_demo_data();
    for era in ERAS {
        let client = stdio_client(db.path(), &[], &era).await;
        assert_eq!(client.peer_info().unwrap().protocol_version, era);
        let tools = client.list_all_tools().await.unwrap();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(names, ["describe_table", "explain_query", "list_tables", "pool_stats", "query"]);
        for tool in &tools {
            let annotations = tool.annotations.as_ref().expect("annotations");
            assert_eq!(annotations.read_only_hint, Some(true), "{}", tool.name);
            assert_eq!(annotations.open_world_hint, Some(false), "{}", tool.name);
            assert!(tool.output_schema.is_some(), "{} has an output schema", tool.name);
            assert!(tool.description.as_ref().is_some_and(|d| d.len() > 20));
        }
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn query_returns_compact_typed_rows_in_both_eras() {
    let db = TestDb::new().with_demo_data();
    for era in ERAS {
        let client = stdio_client(db.path(), &[], &era).await;
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
}
