//! The deterministic benchmark database: one table, `bench_items`, with the
//! requested number of rows. Same rows on every run, for every server.

use std::path::Path;

/// The table every workload reads.
pub const TABLE: &str = "bench_items";

/// Creates (or replaces) `path` with `rows` rows in `bench_items`. The file is
/// left in rollback-journal mode so every server can open it as it likes.
pub fn create(path: &Path, rows: u64) -> rusqlite::Result<()> {
    if path.exists() {
        let _ = std::fs::remove_file(path);
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE;
         CREATE TABLE bench_items (
             id         INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             category   TEXT    NOT NULL,
             price      REAL    NOT NULL,
             quantity   INTEGER NOT NULL,
             created_at TEXT    NOT NULL
         );",
    )?;
    conn.execute_batch("BEGIN")?;
    {
        let mut insert = conn.prepare(
            "INSERT INTO bench_items (id, name, category, price, quantity, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )?;
        for id in 1..=rows as i64 {
            insert.execute(rusqlite::params![
                id,
                item_name(id),
                format!("category-{}", id % 20),
                ((id * 7919) % 100_000) as f64 / 100.0,
                (id * 31) % 500,
                format!(
                    "2025-{:02}-{:02}T{:02}:00:00Z",
                    1 + id % 12,
                    1 + id % 28,
                    id % 24
                ),
            ])?;
        }
    }
    conn.execute_batch(
        "COMMIT; CREATE INDEX bench_items_category ON bench_items (category); ANALYZE;",
    )?;
    Ok(())
}

/// The name stored for `id`: unique, so an answer can be checked by it.
pub fn item_name(id: i64) -> String {
    format!("item-{id:08}")
}
