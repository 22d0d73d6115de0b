//! SQL that must never change the database through a read tool: the
//! bypasses users reported against other SQL servers for agents (dbhub
//! #283/#320/#349, executeautomation GHSA-65hm-pwj5-73pw,
//! modelcontextprotocol/servers #3314, sqlite-explorer #8/#10/#12/#14,
//! mcp-sqlite-tools #50, TablePro #2101) and the SQLite-specific routes.
//! Each runs against a `users (id, name)` table holding two rows.
#![allow(dead_code)]

/// The files in `dir` with their bytes, sorted by name; the shared-memory
/// index is left out (it changes on every read and holds no data).
pub fn fingerprint(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with("-shm"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// `(name, sql)` pairs.
pub const ATTACKS: &[(&str, &str)] = &[
    (
        "cte_prefixed_delete",
        "WITH x AS (SELECT 1) DELETE FROM users",
    ),
    (
        "cte_delete_limit_comment",
        "WITH x AS (SELECT 1) DELETE FROM users -- limit",
    ),
    (
        "cte_insert_returning",
        "WITH c AS (SELECT 1) INSERT INTO users(name) VALUES('pwn') RETURNING *",
    ),
    (
        "cte_update_returning",
        "WITH c AS (SELECT 1) UPDATE users SET name='pwn' RETURNING *",
    ),
    (
        "cte_replace_into",
        "WITH cte AS (SELECT 1) REPLACE INTO users VALUES (1, 'test')",
    ),
    (
        "pg_style_writable_cte",
        "WITH d AS (DELETE FROM users RETURNING id) SELECT * FROM d",
    ),
    ("stacked_select_drop", "SELECT 1; DROP TABLE users"),
    (
        "stacked_semicolon_in_string",
        "SELECT ';' AS a; DELETE FROM users",
    ),
    (
        "stacked_comment_semicolon",
        "SELECT 1 /* ; */ ; DELETE FROM users",
    ),
    (
        "stacked_commit_escape",
        "SELECT 1; COMMIT; DELETE FROM users",
    ),
    (
        "stacked_end_escape",
        "SELECT 1; END; INSERT INTO users(name) VALUES('pwn')",
    ),
    (
        "stacked_query_only_off",
        "PRAGMA query_only = OFF; INSERT INTO users(name) VALUES('bypass')",
    ),
    (
        "describe_table_injection_3314",
        "PRAGMA table_info(users); DROP TABLE users; --)",
    ),
    (
        "mysql_conditional_comment_283",
        "/*!50000 DELETE FROM users */",
    ),
    (
        "leading_block_comment_update",
        "/* x */ UPDATE users SET name = name WHERE 1=0",
    ),
    ("leading_line_comment_delete", "-- x\nDELETE FROM users"),
    ("keyword_obfuscation_case", "dElEtE\tFROM\n\"users\""),
    ("keyword_obfuscation_comments", "DELETE/**/FROM/**/users"),
    (
        "insert_select",
        "INSERT INTO users(name) SELECT name FROM users",
    ),
    (
        "replace_into",
        "REPLACE INTO users(id,name) VALUES(1,'pwn')",
    ),
    (
        "upsert_do_update",
        "INSERT INTO users(id,name) VALUES(1,'x') ON CONFLICT(id) DO UPDATE SET name='pwn'",
    ),
    ("delete_returning", "DELETE FROM users RETURNING *"),
    (
        "update_from",
        "UPDATE users SET name=s.n FROM (SELECT 'pwn' AS n) AS s",
    ),
    (
        "create_table_as_select",
        "CREATE TABLE pwn AS SELECT * FROM users",
    ),
    ("create_temp_table", "CREATE TEMP TABLE pwn(x)"),
    (
        "create_temp_view_shadow",
        "CREATE TEMP VIEW users AS SELECT 999 AS id, 'poisoned' AS name",
    ),
    (
        "create_temp_trigger_on_main",
        "CREATE TEMP TRIGGER pwn AFTER INSERT ON main.users BEGIN DELETE FROM users; END",
    ),
    (
        "create_temp_fts5",
        "CREATE VIRTUAL TABLE temp.pwn USING fts5(x)",
    ),
    (
        "create_trigger",
        "CREATE TRIGGER pwn AFTER INSERT ON users BEGIN DELETE FROM users; END",
    ),
    ("create_index", "CREATE INDEX pwn ON users(name)"),
    ("drop_table", "DROP TABLE users"),
    ("alter_table_rename", "ALTER TABLE users RENAME TO pwn"),
    (
        "attach_new_file",
        "ATTACH DATABASE 'ATTACKDIR/attached.db' AS pwn",
    ),
    (
        "attach_uri_rwc",
        "ATTACH DATABASE 'file:ATTACKDIR/a.db?mode=rwc' AS pwn",
    ),
    ("attach_memory", "ATTACH ':memory:' AS m"),
    ("detach_main", "DETACH DATABASE main"),
    ("vacuum_into", "VACUUM INTO 'ATTACKDIR/exfil.db'"),
    ("vacuum", "VACUUM"),
    ("analyze", "ANALYZE"),
    ("reindex", "REINDEX"),
    ("pragma_user_version_set", "PRAGMA user_version = 1337"),
    ("pragma_user_version_call", "PRAGMA user_version(1337)"),
    ("pragma_application_id_set", "PRAGMA application_id = 1"),
    ("pragma_query_only_off", "PRAGMA query_only = OFF"),
    ("pragma_query_only_call", "PRAGMA query_only(0)"),
    ("pragma_writable_schema_on", "PRAGMA writable_schema = ON"),
    ("pragma_journal_mode_delete", "PRAGMA journal_mode = DELETE"),
    ("pragma_journal_mode_off", "PRAGMA journal_mode = OFF"),
    ("pragma_wal_checkpoint", "PRAGMA wal_checkpoint(TRUNCATE)"),
    ("pragma_schema_version_set", "PRAGMA schema_version = 999"),
    (
        "pragma_locking_exclusive",
        "PRAGMA locking_mode = EXCLUSIVE",
    ),
    ("pragma_foreign_keys_off", "PRAGMA foreign_keys = OFF"),
    ("pragma_trusted_schema_on", "PRAGMA trusted_schema = ON"),
    (
        "pragma_ignore_check_constraints",
        "PRAGMA ignore_check_constraints = ON",
    ),
    (
        "pragma_temp_store_directory",
        "PRAGMA temp_store_directory = 'ATTACKDIR'",
    ),
    ("pragma_hard_heap_limit", "PRAGMA hard_heap_limit = 1"),
    ("pragma_soft_heap_limit", "PRAGMA soft_heap_limit = 1"),
    ("pragma_mmap_size", "PRAGMA mmap_size = 268435456"),
    ("pragma_cache_size", "PRAGMA cache_size = 1"),
    ("pragma_optimize", "PRAGMA optimize"),
    ("pragma_incremental_vacuum", "PRAGMA incremental_vacuum"),
    ("begin_deferred", "BEGIN"),
    ("begin_immediate", "BEGIN IMMEDIATE"),
    ("begin_exclusive", "BEGIN EXCLUSIVE"),
    ("savepoint", "SAVEPOINT s1"),
    ("commit", "COMMIT"),
    (
        "load_extension",
        "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libm.so.6')",
    ),
    (
        "fts3_tokenizer_pointer",
        "SELECT fts3_tokenizer('simple', x'4141414141414141')",
    ),
    ("writefile", "SELECT writefile('ATTACKDIR/p', 'x')"),
    ("readfile", "SELECT readfile('/etc/passwd')"),
    ("explain_delete", "EXPLAIN DELETE FROM users"),
    (
        "explain_query_plan_drop",
        "EXPLAIN QUERY PLAN DROP TABLE users",
    ),
    (
        "sqlite_master_update",
        "UPDATE sqlite_master SET sql = 'CREATE TABLE users(x)' WHERE name = 'users'",
    ),
    (
        "sqlite_dbpage_write",
        "INSERT INTO sqlite_dbpage(pgno, data) VALUES (1, zeroblob(4096))",
    ),
];

/// Reads that must keep working under the same rules.
pub const ALLOWED_READS: &[(&str, &str)] = &[
    ("plain_select", "SELECT * FROM users"),
    ("cte_select", "WITH x AS (SELECT 1 AS a) SELECT * FROM x"),
    ("recursive_cte", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) SELECT sum(x) FROM c"),
    ("pragma_table_info", "PRAGMA table_info(users)"),
    ("pragma_table_info_function", "SELECT * FROM pragma_table_info('users')"),
    ("pragma_user_version_read", "PRAGMA user_version"),
    ("explain_query_plan", "EXPLAIN QUERY PLAN SELECT * FROM users WHERE id = 1"),
    ("schema_read", "SELECT name, sql FROM sqlite_schema"),
    ("json_functions", "SELECT json_object('a', 1), json_extract('{\"b\":2}', '$.b')"),
];
