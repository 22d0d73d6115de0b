//! The bundled SQLite is built with the compile-time options
//! `.cargo/config.toml` asks for, and what they change is what we expect.

use rusqlite::Connection;

fn compile_options(conn: &Connection) -> Vec<String> {
    let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
    let options = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    options
}

#[test]
fn the_recommended_safe_options_are_compiled_in() {
    let conn = Connection::open_in_memory().unwrap();
    let options = compile_options(&conn);
    for wanted in [
        "THREADSAFE=2",
        "DQS=0",
        "DEFAULT_WAL_SYNCHRONOUS=1",
        "LIKE_DOESNT_MATCH_BLOBS",
        "OMIT_DEPRECATED",
        "OMIT_SHARED_CACHE",
        "STRICT_SUBTYPE",
    ] {
        assert!(
            options.iter().any(|o| o == wanted),
            "{wanted} missing from {options:?}"
        );
    }
}

#[test]
fn the_options_that_would_weaken_our_limits_are_not() {
    let conn = Connection::open_in_memory().unwrap();
    let options = compile_options(&conn);
    // DEFAULT_MEMSTATUS=0 would switch off sqlite3_hard_heap_limit64.
    assert!(!options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"));
    assert!(!options
        .iter()
        .any(|o| o.starts_with("OMIT_PROGRESS_CALLBACK")));
    assert!(!options.iter().any(|o| o.starts_with("OMIT_DECLTYPE")));
    assert!(!options.iter().any(|o| o == "MAX_EXPR_DEPTH=0"));
}

#[test]
fn column_origin_metadata_is_left_out() {
    // libsqlite3-sys turns it on; nothing here asks a result column for its
    // table of origin, and preparing a statement would copy three more
    // names a column for it.
    let conn = Connection::open_in_memory().unwrap();
    let options = compile_options(&conn);
    assert!(
        !options.iter().any(|o| o == "ENABLE_COLUMN_METADATA"),
        "{options:?}"
    );
}

#[test]
fn a_double_quoted_string_is_an_identifier_not_a_literal() {
    let conn = Connection::open_in_memory().unwrap();
    let err = conn
        .query_row("SELECT \"no such column\"", [], |row| {
            row.get::<_, String>(0)
        })
        .unwrap_err();
    assert!(err.to_string().contains("no such column"), "{err}");
    let name: String = conn
        .query_row("SELECT 'a single-quoted literal'", [], |row| row.get(0))
        .unwrap();
    assert_eq!(name, "a single-quoted literal");
}

#[test]
fn like_does_not_match_a_blob() {
    let conn = Connection::open_in_memory().unwrap();
    let matched: bool = conn
        .query_row("SELECT x'61' LIKE 'a'", [], |row| row.get(0))
        .unwrap();
    assert!(!matched);
}
