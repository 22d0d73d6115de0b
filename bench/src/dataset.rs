//! The deterministic benchmark database: `bench_items` (short typed rows)
//! and `posts` (text-heavy rows: a title and a body of about 250
//! characters, as a forum or blog holds), each with the requested number of
//! rows. Same rows on every run, for every server: every value is a function
//! of its row's id, so an answer can be checked without reading the file.

use std::path::Path;

/// The table of short typed rows.
pub const TABLE: &str = "bench_items";

/// The table of text-heavy rows.
pub const POSTS: &str = "posts";

/// Creates (or replaces) `path` with `rows` rows in `bench_items` and `rows` in `posts`. The file is
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
         );
         CREATE TABLE posts (
             id         INTEGER PRIMARY KEY,
             creator_id INTEGER NOT NULL,
             title      TEXT    NOT NULL,
             body       TEXT    NOT NULL,
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
    {
        let mut insert = conn.prepare(
            "INSERT INTO posts (id, creator_id, title, body, created_at) VALUES (?, ?, ?, ?, ?)",
        )?;
        for id in 1..=rows as i64 {
            insert.execute(rusqlite::params![
                id,
                post_creator(id),
                post_title(id),
                post_body(id),
                format!(
                    "2025-{:02}-{:02}T{:02}:{:02}:00Z",
                    1 + id % 12,
                    1 + id % 28,
                    id % 24,
                    id % 60
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

/// Words the post texts are made of: plain lowercase, nothing that CSV or
/// JSON would have to escape.
const WORDS: [&str; 64] = [
    "the",
    "database",
    "query",
    "agent",
    "model",
    "server",
    "index",
    "table",
    "row",
    "column",
    "cache",
    "latency",
    "memory",
    "thread",
    "pool",
    "connection",
    "result",
    "schema",
    "value",
    "answer",
    "request",
    "stream",
    "buffer",
    "client",
    "network",
    "storage",
    "journal",
    "page",
    "cursor",
    "statement",
    "transaction",
    "lock",
    "writer",
    "reader",
    "benchmark",
    "metric",
    "window",
    "group",
    "order",
    "limit",
    "offset",
    "join",
    "filter",
    "sort",
    "merge",
    "plan",
    "today",
    "really",
    "quickly",
    "slowly",
    "because",
    "without",
    "between",
    "after",
    "before",
    "every",
    "never",
    "often",
    "always",
    "small",
    "large",
    "simple",
    "careful",
    "strange",
];

/// splitmix64: a tiny, well-mixed generator; the same seed, the same words.
struct Words(u64);

impl Words {
    fn for_row(id: i64, field: u64) -> Self {
        Self(
            (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ field.wrapping_mul(0xD1B5_4A32_D192_ED03),
        )
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Words joined by spaces until the text is at least `length` characters.
    fn text(&mut self, length: usize) -> String {
        let mut text = String::with_capacity(length + 16);
        while text.len() < length {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(WORDS[(self.next() % WORDS.len() as u64) as usize]);
        }
        text
    }
}

/// The author of post `id`: one of 1,000.
pub fn post_creator(id: i64) -> i64 {
    1 + (id * 7) % 1000
}

/// The title of post `id`: 40 to about 80 characters, ending with its id so
/// it is unique and an answer can be checked by it.
pub fn post_title(id: i64) -> String {
    let mut words = Words::for_row(id, 1);
    // 40 to 70, plus at most one word's overshoot.
    let length = 40 + (words.next() % 31) as usize;
    let suffix = format!(" #{id}");
    let mut title = words.text(length - suffix.len());
    title.push_str(&suffix);
    title
}

/// The body of post `id`: about 250 characters (240 to 280) of varied words.
pub fn post_body(id: i64) -> String {
    let mut words = Words::for_row(id, 2);
    let length = 240 + (words.next() % 31) as usize;
    let mut body = words.text(length);
    body.push('.');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_texts_are_the_same_on_every_call() {
        assert_eq!(post_title(42), post_title(42));
        assert_eq!(post_body(42), post_body(42));
    }

    #[test]
    fn post_texts_differ_between_rows() {
        assert_ne!(post_body(1), post_body(2));
        assert_ne!(post_title(1), post_title(2));
    }

    #[test]
    fn titles_are_40_to_85_characters_and_bodies_about_250() {
        for id in (1..=2000).chain(99_000..=100_000) {
            let title = post_title(id);
            let body = post_body(id);
            assert!(
                (40..=90).contains(&title.len()),
                "{id}: {} {title}",
                title.len()
            );
            assert!(
                (240..=290).contains(&body.len()),
                "{id}: {} {body}",
                body.len()
            );
        }
    }

    #[test]
    fn the_created_file_holds_the_generated_rows() {
        let dir = std::env::temp_dir().join(format!("eros-bench-dataset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.db");
        create(&path, 300).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(TABLE), 300);
        assert_eq!(count(POSTS), 300);
        let (title, body): (String, String) = conn
            .query_row("SELECT title, body FROM posts WHERE id = 123", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(title, post_title(123));
        assert_eq!(body, post_body(123));
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
