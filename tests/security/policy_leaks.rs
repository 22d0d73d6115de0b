//! Column and table policies hold on every read path: a principal without
//! `eros:pii` reads `creators.email` as NULL and one without
//! `eros:finance` reads nothing of `payouts` (nor its DDL), whatever the
//! route — each route's answer, text and structured content and error
//! message alike, never holds a marker value. A principal with the scopes
//! reads everything. The real binary over HTTP, static-token principals.

use crate::common;

use common::token_entry;

use common::mcp::{call, text, Client, HttpServer};
use common::TestDb;
use rmcp::model::{
    CallToolResult, GetPromptRequestParams, ProtocolVersion, ReadResourceRequestParams,
};
use serde_json::json;

const RESTRICTED: &str = "restricted-token-0123456789";
/// eros:read and eros:write, without the policy's scopes.
const RESTRICTED_WRITER: &str = "restricted-writer-token-0123456789";
const TRUSTED: &str = "trusted-token-0123456789";

/// A creator's email (it sorts first, so ORDER BY would betray it).
const EMAIL_MARKER: &str = "aaaa-secret-email-7f3a@leak.test";
/// A row of the denied table.
const ROW_MARKER: &str = "secret-payout-4e8b";
/// A literal in the denied table's DDL.
const DDL_MARKER: &str = "secret-ddl-5b2d";

/// The email marker spelt so the SQL text itself does not hold it: a route
/// answers it only if it could read the value.
const EMAIL_EXPR: &str = "'aaaa-secret-' || 'email-7f3a@leak.test'";

const POLICY: &str = r#"
[scopes."eros:pii"]
null_columns = ["creators.email", "subscribers.email", "contacts.email"]
[scopes."eros:finance"]
deny_tables = ["payouts"]
"#;

/// Declared tools reading what the policy withholds, open to `eros:read`.
const TOOLS: &str = r#"
[[tools]]
name = "creator_contacts"
description = "Every creator's handle and email."
sql = "SELECT handle, email FROM creators ORDER BY id"

[[tools]]
name = "payout_notes"
description = "Every payout note."
sql = "SELECT note FROM payouts"
"#;

/// `(name, sql)`: routes to the nulled column. Each must answer NULL or
/// nothing; a side channel answers the marker if it sees the value.
const COLUMN_ROUTES: &[(&str, &str)] = &[
    ("plain_select", "SELECT email FROM creators"),
    ("select_star", "SELECT * FROM creators"),
    ("qualified_star", "SELECT c.* FROM creators AS c"),
    ("alias", "SELECT c.email AS contact FROM creators AS c"),
    ("view_before_start", "SELECT * FROM creator_contacts"),
    ("view_column", "SELECT contact FROM creator_contacts"),
    ("cte", "WITH x AS (SELECT email AS e FROM creators) SELECT e FROM x"),
    (
        "recursive_cte",
        "WITH RECURSIVE x(e, n) AS (SELECT email, 0 FROM creators UNION ALL SELECT e, n + 1 FROM x WHERE n < 1) SELECT e FROM x",
    ),
    ("scalar_subquery", "SELECT (SELECT email FROM creators WHERE id = c.id) FROM creators AS c"),
    ("from_subquery", "SELECT e FROM (SELECT email AS e FROM creators)"),
    ("union", "SELECT email FROM creators UNION SELECT email FROM subscribers"),
    ("json_object", "SELECT json_object('e', email) FROM creators"),
    ("json_group_array", "SELECT json_group_array(email) FROM creators"),
    ("json_group_object", "SELECT json_group_object(handle, email) FROM creators"),
    ("group_concat", "SELECT group_concat(email, ',') FROM creators"),
    ("printf", "SELECT printf('%s|%q', email, email) FROM creators"),
    ("format", "SELECT format('%s', email) FROM creators"),
    ("quote", "SELECT quote(email) FROM creators"),
    ("hex", "SELECT hex(email) FROM creators"),
    ("cast_blob", "SELECT CAST(email AS BLOB) FROM creators"),
    ("cast_text", "SELECT CAST(email AS TEXT) FROM creators"),
    ("upper_substr", "SELECT upper(substr(email, 1)) FROM creators"),
    ("coalesce", "SELECT coalesce(email, 'none') FROM creators"),
    ("json_error_echo", "SELECT json(email) FROM creators"),
    ("window", "SELECT first_value(email) OVER (ORDER BY id DESC) FROM creators"),
    ("max", "SELECT max(email), min(email) FROM creators"),
    ("length_side_channel", "SELECT CASE WHEN length(email) IS NOT NULL THEN 'LEAK:' || 'aaaa-secret-' || 'email-7f3a@leak.test' END FROM creators"),
    ("instr_side_channel", "SELECT CASE WHEN instr(email, 'secret') > 0 THEN 'aaaa-secret-' || 'email-7f3a@leak.test' END FROM creators"),
    ("where_equals", "SELECT 'aaaa-secret-' || 'email-7f3a@leak.test' FROM creators WHERE email = 'aaaa-secret-' || 'email-7f3a@leak.test'"),
    ("where_like", "SELECT 'aaaa-secret-' || 'email-7f3a@leak.test' FROM creators WHERE email LIKE 'aaaa%'"),
    ("where_in_subquery", "SELECT 'aaaa-secret-' || 'email-7f3a@leak.test' FROM creators WHERE id IN (SELECT id FROM creators WHERE email GLOB 'aaaa*')"),
    // Rows of one status come out of (status, email) in email order.
    ("index_order", "SELECT CASE WHEN (SELECT id FROM creators INDEXED BY creators_status_email WHERE status = (SELECT status FROM creators WHERE id = (SELECT max(id) FROM creators)) LIMIT 1) = (SELECT max(id) FROM creators) THEN 'aaaa-secret-' || 'email-7f3a@leak.test' END"),
    ("index_order_cte", "WITH s AS (SELECT status FROM creators WHERE id = (SELECT max(id) FROM creators)) SELECT CASE WHEN (SELECT c.id FROM creators c INDEXED BY creators_status_email, s WHERE c.status = s.status LIMIT 1) = (SELECT max(id) FROM creators) THEN 'aaaa-secret-' || 'email-7f3a@leak.test' END"),
    ("expression_index_order", "SELECT CASE WHEN (SELECT id FROM creators INDEXED BY creators_lower_email LIMIT 1) = (SELECT max(id) FROM creators) THEN 'aaaa-secret-' || 'email-7f3a@leak.test' END"),
    ("order_by", "SELECT CASE WHEN (SELECT id FROM creators ORDER BY email LIMIT 1) = (SELECT max(id) FROM creators) THEN 'aaaa-secret-' || 'email-7f3a@leak.test' END"),
    ("group_by_having", "SELECT 'aaaa-secret-' || 'email-7f3a@leak.test' FROM creators GROUP BY email HAVING email LIKE 'aaaa%'"),
    ("join_on", "SELECT 'aaaa-secret-' || 'email-7f3a@leak.test' FROM creators AS a JOIN creators AS b ON a.email = b.email AND a.email LIKE 'aaaa%'"),
    ("indexed_by_unique", "SELECT email FROM creators INDEXED BY sqlite_autoindex_creators_2"),
    // Generated columns, computed from the nulled one without the
    // authorizer being asked about it.
    ("generated_virtual", "SELECT email_shown FROM creators"),
    ("generated_virtual_where", "SELECT 'aaaa-secret-' || 'email-7f3a@leak.test' FROM creators WHERE email_shown LIKE 'shown:aaaa%'"),
    ("generated_stored", "SELECT email_kept FROM contacts"),
    ("generated_stored_where", "SELECT 'aaaa-secret-' || 'email-7f3a@leak.test' FROM contacts WHERE email_kept LIKE 'aaaa%'"),
];

/// `(name, sql)`: routes to the denied table. Each must be refused or
/// answer nothing of it.
const TABLE_ROUTES: &[(&str, &str)] = &[
    ("denied_select_star", "SELECT * FROM payouts"),
    ("denied_count", "SELECT count(*) FROM payouts"),
    ("denied_rowid", "SELECT rowid FROM payouts"),
    ("denied_exists", "SELECT EXISTS (SELECT 1 FROM payouts)"),
    ("denied_case", "SELECT * FROM PAYOUTS"),
    ("denied_quoted", "SELECT * FROM \"payouts\""),
    ("denied_schema_qualified", "SELECT * FROM main.payouts"),
    ("denied_view_before_start", "SELECT * FROM payout_notes"),
    ("denied_cte", "WITH x AS (SELECT note FROM payouts) SELECT * FROM x"),
    ("denied_subquery", "SELECT (SELECT group_concat(note) FROM payouts)"),
    ("denied_join", "SELECT c.handle, p.note FROM creators AS c JOIN payouts AS p ON p.creator_id = c.id"),
    ("denied_in", "SELECT handle FROM creators WHERE id IN (SELECT creator_id FROM payouts)"),
    ("denied_json", "SELECT json_group_array(json_object('n', note)) FROM payouts"),
    ("denied_indexed_by", "SELECT note FROM payouts INDEXED BY payouts_by_note"),
    ("denied_pragma", "PRAGMA table_info(payouts)"),
    ("denied_pragma_xinfo", "PRAGMA table_xinfo('payouts')"),
    ("denied_pragma_index_list", "PRAGMA index_list(payouts)"),
    ("denied_pragma_function", "SELECT * FROM pragma_table_info('payouts')"),
    ("denied_pragma_function_upper", "SELECT name, dflt_value FROM pragma_table_info('PAYOUTS')"),
    ("denied_pragma_function_schema", "SELECT * FROM pragma_table_xinfo('payouts', 'main')"),
    ("denied_pragma_function_index", "SELECT * FROM pragma_index_list('payouts')"),
    // ANALYZE's samples hold index keys in clear; dbstat counts cells.
    ("denied_stat4_samples", "SELECT CAST(sample AS TEXT) FROM sqlite_stat4"),
    ("denied_stat4_hex", "SELECT hex(sample) FROM sqlite_stat4"),
    ("denied_stat1_counts", "SELECT * FROM sqlite_stat1 WHERE tbl = 'payouts'"),
    ("denied_dbstat", "SELECT name, ncell FROM dbstat WHERE name = 'payouts'"),
    ("sqlite_master_text", "SELECT name, sql FROM sqlite_master"),
    ("sqlite_schema_star", "SELECT * FROM sqlite_schema WHERE tbl_name = 'payouts'"),
    ("sqlite_schema_group", "SELECT group_concat(sql, ';') FROM main.sqlite_schema"),
    ("sqlite_schema_side_channel", "SELECT CASE WHEN instr(sql, 'secret') > 0 THEN 'secret-' || 'ddl-5b2d' END FROM sqlite_schema"),
];

/// The demo database with the markers, a denied table and views made
/// before the server starts, and a server enforcing [`POLICY`].
fn start() -> (TestDb, HttpServer) {
    let db = TestDb::new().with_demo_data();
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute_batch(&format!(
        "UPDATE creators SET email = '{EMAIL_MARKER}' WHERE id = (SELECT max(id) FROM creators);
         CREATE TABLE payouts (id INTEGER PRIMARY KEY, creator_id INTEGER,
                               note TEXT DEFAULT '{DDL_MARKER}');
         CREATE INDEX payouts_by_note ON payouts (note) WHERE note IS NOT '{DDL_MARKER}';
         INSERT INTO payouts (creator_id, note) VALUES (1, '{ROW_MARKER}');
         CREATE INDEX creators_status_email ON creators (status, email);
         CREATE INDEX creators_lower_email ON creators (lower(email));
         CREATE VIEW creator_contacts AS SELECT handle, email AS contact FROM creators;
         CREATE VIEW payout_notes AS SELECT note FROM payouts;
         ALTER TABLE creators ADD COLUMN email_shown TEXT AS ('shown:' || email);
         CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT,
                                email_kept TEXT GENERATED ALWAYS AS (email) STORED);
         INSERT INTO contacts (email) VALUES ('{EMAIL_MARKER}');
         CREATE TABLE loot (v TEXT);
         CREATE TABLE mentions (id INTEGER PRIMARY KEY, email TEXT REFERENCES creators (email));
         CREATE TABLE payout_refs (id INTEGER PRIMARY KEY, payout INTEGER REFERENCES payouts (id));
         ANALYZE;
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .unwrap();
    drop(conn);
    let tokens = db.file("tokens.toml");
    std::fs::write(
        &tokens,
        token_entry("contractor", RESTRICTED, &["eros:read"])
            + &token_entry(
                "etl-contractor",
                RESTRICTED_WRITER,
                &["eros:read", "eros:write"],
            )
            + &token_entry(
                "finance-lead",
                TRUSTED,
                &["eros:read", "eros:write", "eros:pii", "eros:finance"],
            ),
    )
    .unwrap();
    let policy = db.file("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let tools = db.file("tools.toml");
    std::fs::write(&tools, TOOLS).unwrap();
    let server = HttpServer::start(
        db.path(),
        &[
            ("EROS_DB_READ_ONLY", "false"),
            ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
            ("EROS_AUTH_POLICY_FILE", policy.to_str().unwrap()),
            ("EROS_MCP_TOOLS_FILE", tools.to_str().unwrap()),
        ],
    );
    (db, server)
}

async fn client(server: &HttpServer, token: &str) -> Client {
    server
        .client(Some(token), &ProtocolVersion::V_2025_11_25)
        .await
}

/// Everything a tool result says, lowercased: text and structured content.
fn everything(result: &CallToolResult) -> String {
    let structured = result
        .structured_content
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default();
    format!("{}\n{structured}", text(result)).to_lowercase()
}

/// The markers in every spelling a route could turn them into.
fn spellings() -> Vec<String> {
    let mut all = Vec::new();
    for marker in [EMAIL_MARKER, ROW_MARKER, DDL_MARKER] {
        all.push(marker.to_lowercase());
        all.push(hex::encode(marker).to_lowercase());
        all.push(base64_of(marker).to_lowercase());
    }
    all
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Panics when `answer` holds a marker.
fn assert_no_marker(route: &str, answer: &str) {
    for marker in spellings() {
        assert!(
            !answer.contains(&marker),
            "{route} leaked {marker:?}: {answer}"
        );
    }
}

#[tokio::test]
async fn no_route_reaches_a_nulled_column_or_a_denied_table() {
    let (_db, server) = start();
    let agent = client(&server, RESTRICTED).await;
    let mut refused = Vec::new();
    for (route, sql) in COLUMN_ROUTES.iter().chain(TABLE_ROUTES) {
        let result = call(&agent, "query", json!({ "sql": sql })).await;
        let answer = everything(&result);
        assert_no_marker(route, &answer);
        if result.is_error == Some(true) {
            refused.push(*route);
        }
        if route.starts_with("denied_") {
            assert_eq!(
                result.is_error,
                Some(true),
                "{route} was not refused: {answer}"
            );
        }
    }
    // The column routes are answered (with NULL), not refused: the agent's
    // SQL still works, it only cannot see the value.
    for route in [
        "plain_select",
        "select_star",
        "view_before_start",
        "json_object",
    ] {
        assert!(!refused.contains(&route), "{route} was refused");
    }
    let nulls = call(
        &agent,
        "query",
        json!({ "sql": "SELECT count(*) FROM creators NOT INDEXED WHERE email IS NULL", "max_rows": 1 }),
    )
    .await;
    let all = call(
        &agent,
        "query",
        json!({ "sql": "SELECT count(*) FROM creators NOT INDEXED" }),
    )
    .await;
    assert_eq!(
        common::mcp::rows(&nulls)["rows"],
        common::mcp::rows(&all)["rows"],
        "every email reads as NULL"
    );

    // The schema tools show no denied table and no denied DDL.
    for (route, tool, arguments) in [
        (
            "explain_denied",
            "explain_query",
            json!({ "sql": "SELECT * FROM payouts" }),
        ),
        (
            "explain_view",
            "explain_query",
            json!({ "sql": "SELECT * FROM payout_notes" }),
        ),
        (
            "explain_where",
            "explain_query",
            json!({ "sql": format!("SELECT id FROM creators WHERE email = {EMAIL_EXPR}") }),
        ),
        (
            "describe_denied",
            "describe_table",
            json!({ "table": "payouts" }),
        ),
        (
            "describe_denied_upper",
            "describe_table",
            json!({ "table": "PAYOUTS" }),
        ),
        (
            "describe_creators",
            "describe_table",
            json!({ "table": "creators" }),
        ),
        ("list_tables_ddl", "list_tables", json!({ "detail": "ddl" })),
        (
            "list_tables_pattern",
            "list_tables",
            json!({ "pattern": "payouts", "detail": "columns" }),
        ),
        (
            "list_tables_column",
            "list_tables",
            json!({ "column": "note", "detail": "ddl" }),
        ),
        ("declared_column", "creator_contacts", json!({})),
        ("declared_table", "payout_notes", json!({})),
    ] {
        let result = call(&agent, tool, arguments).await;
        let answer = everything(&result);
        assert_no_marker(route, &answer);
        if route.ends_with("_denied") || route.ends_with("_upper") || route == "declared_table" {
            assert_eq!(
                result.is_error,
                Some(true),
                "{route} was answered: {answer}"
            );
        }
        if tool == "list_tables" {
            assert!(
                !answer.contains("\"payouts\""),
                "{route} lists payouts: {answer}"
            );
            assert!(
                !answer.contains("payouts,"),
                "{route} lists payouts: {answer}"
            );
        }
    }
    let listed = everything(&call(&agent, "list_tables", json!({})).await);
    assert!(listed.contains("creators"), "{listed}");
    assert!(
        !listed.contains("payouts,") && !listed.contains("\"payouts\""),
        "{listed}"
    );
    let contacts = everything(&call(&agent, "creator_contacts", json!({})).await);
    assert!(
        !contacts.contains('@'),
        "the declared tool read emails: {contacts}"
    );

    let schema = agent
        .read_resource(ReadResourceRequestParams::new("schema://main"))
        .await
        .unwrap();
    let schema = serde_json::to_string(&schema).unwrap().to_lowercase();
    assert_no_marker("schema_resource", &schema);
    assert!(schema.contains("create table creators"), "{schema}");
    assert!(!schema.contains("create table payouts"), "{schema}");
    assert!(!schema.contains("payouts_by_note"), "{schema}");

    let mut arguments = serde_json::Map::new();
    arguments.insert("question".into(), json!("who earns most?"));
    let prompt = agent
        .get_prompt(GetPromptRequestParams::new("answer_question").with_arguments(arguments))
        .await
        .unwrap();
    let prompt = serde_json::to_string(&prompt).unwrap().to_lowercase();
    assert_no_marker("prompt", &prompt);
    assert!(prompt.contains("- creators ("), "{prompt}");
    assert!(!prompt.contains("- payouts ("), "{prompt}");
    agent.cancel().await.unwrap();
}

#[tokio::test]
async fn a_principal_with_the_scopes_reads_everything() {
    let (_db, server) = start();
    let lead = client(&server, TRUSTED).await;
    for (sql, marker) in [
        ("SELECT email FROM creators", EMAIL_MARKER),
        ("SELECT * FROM creator_contacts", EMAIL_MARKER),
        ("SELECT note FROM payouts", ROW_MARKER),
        ("SELECT note FROM payout_notes", ROW_MARKER),
        (
            "SELECT sql FROM sqlite_schema WHERE name = 'payouts'",
            DDL_MARKER,
        ),
        (
            "SELECT dflt_value FROM pragma_table_info('payouts')",
            DDL_MARKER,
        ),
        // The generated columns' control.
        ("SELECT email_shown FROM creators", EMAIL_MARKER),
        ("SELECT email_kept FROM contacts", EMAIL_MARKER),
        // The statistics routes' control: the samples hold the markers.
        (
            "SELECT CAST(sample AS TEXT) FROM sqlite_stat4",
            EMAIL_MARKER,
        ),
        ("SELECT CAST(sample AS TEXT) FROM sqlite_stat4", ROW_MARKER),
    ] {
        let answer = everything(&call(&lead, "query", json!({ "sql": sql })).await);
        assert!(answer.contains(marker), "{sql}: {answer}");
    }
    let described = call(&lead, "describe_table", json!({ "table": "payouts" })).await;
    assert_ne!(described.is_error, Some(true), "{}", text(&described));
    let listed = everything(&call(&lead, "list_tables", json!({ "detail": "ddl" })).await);
    assert!(listed.contains(DDL_MARKER), "{listed}");
    let contacts = everything(&call(&lead, "creator_contacts", json!({})).await);
    assert!(contacts.contains(EMAIL_MARKER), "{contacts}");
    let schema = lead
        .read_resource(ReadResourceRequestParams::new("schema://main"))
        .await
        .unwrap();
    let schema = serde_json::to_string(&schema).unwrap().to_lowercase();
    assert!(schema.contains("create table payouts"), "{schema}");
    lead.cancel().await.unwrap();
}

/// `(name, sql)`: schema a writer without the scopes could plant for a
/// more privileged principal's statements to run, or to reach hidden
/// values through later.
const PLANTED: &[(&str, &str)] = &[
    ("trigger_copying_a_nulled_column", "CREATE TRIGGER plant_copy AFTER UPDATE ON creators BEGIN INSERT INTO loot VALUES (new.email); END"),
    ("trigger_reading_a_denied_table", "CREATE TRIGGER plant_read AFTER UPDATE ON creators BEGIN INSERT INTO loot SELECT note FROM payouts; END"),
    ("trigger_deleting_a_denied_table", "CREATE TRIGGER plant_delete AFTER INSERT ON loot BEGIN DELETE FROM payouts; END"),
    ("view", "CREATE VIEW plant_view AS SELECT email FROM creators"),
    ("index", "CREATE INDEX plant_index ON loot (v)"),
    ("foreign_key", "CREATE TABLE plant_fk (e TEXT REFERENCES creators (email))"),
    ("generated_column", "ALTER TABLE loot ADD COLUMN shown TEXT AS ('shown:' || v)"),
    ("drop", "DROP TABLE loot"),
];

/// `(name, sql with {guess})`: writes whose constraint error would answer
/// whether `{guess}` is a hidden value.
const GUESSES: &[(&str, &str)] = &[
    (
        "unique_update",
        "UPDATE creators SET email = {guess} WHERE id = 1",
    ),
    (
        "unique_insert",
        "INSERT INTO creators (handle, display_name, email) VALUES ('guesser', 'G', {guess})",
    ),
    (
        "foreign_key_to_a_nulled_column",
        "INSERT INTO mentions (email) VALUES ({guess})",
    ),
    (
        "foreign_key_to_a_denied_table",
        "INSERT INTO payout_refs (payout) VALUES ({id})",
    ),
];

/// Each guess with a right value and a wrong one (a wrong one of its
/// own, so no guess meets another's).
fn guesses(route: &str, sql: &str) -> [String; 2] {
    [
        sql.replace("{guess}", EMAIL_EXPR).replace("{id}", "1"),
        sql.replace("{guess}", &format!("'nobody-{route}@nowhere.test'"))
            .replace("{id}", "999"),
    ]
}

#[tokio::test]
async fn a_writer_without_the_scopes_plants_no_schema_and_guesses_nothing_through_a_constraint() {
    let (_db, server) = start();
    let writer = client(&server, RESTRICTED_WRITER).await;
    let lead = client(&server, TRUSTED).await;
    for (route, sql) in PLANTED {
        let result = call(&writer, "execute", json!({ "sql": sql })).await;
        assert_eq!(result.is_error, Some(true), "{route} was run");
        assert!(
            text(&result).contains("changes no schema"),
            "{route}: {}",
            text(&result)
        );
    }
    for (route, sql) in GUESSES {
        let [right, wrong] = guesses(route, sql);
        let right = call(&writer, "execute", json!({ "sql": right })).await;
        let wrong = call(&writer, "execute", json!({ "sql": wrong })).await;
        assert_eq!(right.is_error, Some(true), "{route} was run");
        assert_eq!(text(&right), text(&wrong), "{route} told the guesses apart");
        assert!(
            text(&right).contains("may be read but not written"),
            "{route}: {}",
            text(&right)
        );
    }
    // The writer still writes what it can read whole.
    let fine = call(
        &writer,
        "execute",
        json!({ "sql": "INSERT INTO loot VALUES ('fine')" }),
    )
    .await;
    assert_ne!(fine.is_error, Some(true), "{}", text(&fine));
    // A privileged write fires whatever the writer could plant.
    let fired = call(
        &lead,
        "execute",
        json!({ "sql": "UPDATE creators SET status = status" }),
    )
    .await;
    assert_ne!(fired.is_error, Some(true), "{}", text(&fired));
    let loot = everything(&call(&writer, "query", json!({ "sql": "SELECT * FROM loot" })).await);
    assert_no_marker("loot", &loot);
    let denied_rows =
        everything(&call(&lead, "query", json!({ "sql": "SELECT note FROM payouts" })).await);
    assert!(denied_rows.contains(ROW_MARKER), "{denied_rows}");

    // The control: the same SQL, from a principal holding every scope,
    // plants a working trigger and tells the guesses apart.
    for (route, sql) in GUESSES {
        let [right, wrong] = guesses(route, sql);
        let right = call(&lead, "execute", json!({ "sql": right })).await;
        let wrong = call(&lead, "execute", json!({ "sql": wrong })).await;
        assert_ne!(
            right.is_error,
            wrong.is_error,
            "{route} is no oracle: {} / {}",
            text(&right),
            text(&wrong)
        );
    }
    let planted = call(&lead, "execute", json!({ "sql": PLANTED[0].1 })).await;
    assert_ne!(planted.is_error, Some(true), "{}", text(&planted));
    call(
        &lead,
        "execute",
        json!({ "sql": "UPDATE creators SET status = status" }),
    )
    .await;
    let loot = everything(&call(&lead, "query", json!({ "sql": "SELECT * FROM loot" })).await);
    assert!(loot.contains(EMAIL_MARKER), "{loot}");
    writer.cancel().await.unwrap();
    lead.cancel().await.unwrap();
}

#[tokio::test]
async fn schema_added_after_startup_by_a_principal_free_to_change_it_is_covered_at_once() {
    let (_db, server) = start();
    let writer = client(&server, RESTRICTED_WRITER).await;
    let lead = client(&server, TRUSTED).await;
    for sql in [
        "ALTER TABLE creators ADD COLUMN email_later TEXT AS ('later:' || email)",
        "CREATE TABLE later_mentions (id INTEGER PRIMARY KEY, email TEXT REFERENCES creators (email))",
        "CREATE TABLE later_refs (id INTEGER PRIMARY KEY, payout INTEGER REFERENCES payouts (id))",
    ] {
        let result = call(&lead, "execute", json!({ "sql": sql })).await;
        assert_ne!(result.is_error, Some(true), "{sql}: {}", text(&result));
    }
    let read = everything(
        &call(
            &writer,
            "query",
            json!({ "sql": "SELECT email_later FROM creators" }),
        )
        .await,
    );
    assert_no_marker("generated_after_startup", &read);
    for (route, sql) in [
        (
            "foreign_key_after_startup",
            "INSERT INTO later_mentions (email) VALUES ({guess})",
        ),
        (
            "denied_key_after_startup",
            "INSERT INTO later_refs (payout) VALUES ({id})",
        ),
    ] {
        let [right, wrong] = guesses(route, sql);
        let right = call(&writer, "execute", json!({ "sql": right })).await;
        let wrong = call(&writer, "execute", json!({ "sql": wrong })).await;
        assert_eq!(right.is_error, Some(true), "{route} was run");
        assert_eq!(text(&right), text(&wrong), "{route} told the guesses apart");
    }
    // The control: the principal with the scopes sees what was added.
    let seen = everything(
        &call(
            &lead,
            "query",
            json!({ "sql": "SELECT email_later FROM creators" }),
        )
        .await,
    );
    assert!(seen.contains(EMAIL_MARKER), "{seen}");
    writer.cancel().await.unwrap();
    lead.cancel().await.unwrap();
}

#[test]
fn a_policy_naming_an_unknown_column_stops_the_server() {
    let db = TestDb::new().with_demo_data();
    let policy = db.file("policy.toml");
    std::fs::write(
        &policy,
        "[scopes.\"eros:pii\"]\nnull_columns = [\"creators.phone\"]\n",
    )
    .unwrap();
    let tokens = db.file("tokens.toml");
    std::fs::write(
        &tokens,
        token_entry("contractor", RESTRICTED, &["eros:read"]),
    )
    .unwrap();
    let output = common::mcp::http_command(
        db.path(),
        &[
            ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
            ("EROS_AUTH_POLICY_FILE", policy.to_str().unwrap()),
        ],
        common::mcp::free_port(),
        None,
    )
    .stderr(std::process::Stdio::piped())
    .output()
    .unwrap();
    assert!(!output.status.success(), "the server started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for part in [
        policy.to_str().unwrap(),
        "eros:pii",
        "creators.phone",
        "no column",
    ] {
        assert!(stderr.contains(part), "{part} missing from: {stderr}");
    }
}

/// Starts the server on `db` with `policy` for a restricted principal;
/// returns its exit output if it stopped, `None` if it kept serving.
fn start_with_policy(db: &TestDb, policy: &str) -> Option<std::process::Output> {
    let policy_file = db.file("policy.toml");
    std::fs::write(&policy_file, policy).unwrap();
    let tokens = db.file("tokens.toml");
    std::fs::write(
        &tokens,
        token_entry("contractor", RESTRICTED, &["eros:read"]),
    )
    .unwrap();
    let mut child = common::mcp::http_command(
        db.path(),
        &[
            ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
            ("EROS_AUTH_POLICY_FILE", policy_file.to_str().unwrap()),
        ],
        common::mcp::free_port(),
        None,
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(4) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

#[test]
fn a_policy_nulling_a_tables_own_key_stops_the_server_naming_the_fix() {
    // A table stored in the order of the nulled column: every scan would
    // walk the hidden values in order, whatever the plan.
    let db = TestDb::new().with_demo_data();
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute_batch(
        "CREATE TABLE accounts (name TEXT PRIMARY KEY, plan TEXT) WITHOUT ROWID;
         CREATE TABLE badges (code INTEGER PRIMARY KEY, label TEXT);
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
    drop(conn);
    for (entry, words) in [
        ("accounts.name", "WITHOUT ROWID"),
        ("badges.code", "INTEGER PRIMARY KEY"),
    ] {
        let policy = format!("[scopes.\"eros:pii\"]\nnull_columns = [\"{entry}\"]\n");
        let output = start_with_policy(&db, &policy).expect("the server started");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        for part in [entry, words, "Deny the table"] {
            assert!(stderr.contains(part), "{part} missing from: {stderr}");
        }
    }
    // The control: a column that orders nothing is accepted.
    let policy = "[scopes.\"eros:pii\"]\nnull_columns = [\"accounts.plan\"]\n";
    assert!(
        start_with_policy(&db, policy).is_none(),
        "the server stopped"
    );
}
