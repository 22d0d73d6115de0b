//! The workloads: what each call asks and how its answer is checked. SQL is
//! sent as literal text (not bound parameters) because some servers take
//! only SQL; every answer is verified by a value only the right rows hold.

use rmcp::model::CallToolResult;

use crate::dataset::{item_name, post_title, POSTS, TABLE};

/// One kind of call the load generator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// A primary-key lookup of a random row.
    Point,
    /// 1,000 consecutive rows.
    Rows1000,
    /// A GROUP BY over the whole table.
    Aggregate,
    /// A primary-key lookup of a random text-heavy post.
    PostPoint,
    /// 1,000 consecutive text-heavy posts.
    Posts1000,
    /// A GROUP BY over every post with string keys (posts a month, their
    /// bodies' mean length): every row and its text read.
    PostsByMonth,
}

/// One prepared call and what its answer must contain.
pub struct Call {
    pub sql: String,
    pub expect: Vec<String>,
}

impl Workload {
    /// The name on the command line and in reports (`post-point`).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// The call for the `n`th request against a table of `rows` rows.
    pub fn call(self, n: u64, rows: u64) -> Call {
        match self {
            Workload::Point => {
                // A multiplicative walk over the ids: deterministic, spread out.
                let id = 1 + (n.wrapping_mul(2_654_435_761) % rows) as i64;
                Call {
                    sql: format!("SELECT * FROM {TABLE} WHERE id = {id}"),
                    expect: vec![item_name(id)],
                }
            }
            Workload::Rows1000 => {
                let start = 1 + (n * 1000) % rows.saturating_sub(1000).max(1);
                let start = start as i64;
                Call {
                    sql: format!("SELECT * FROM {TABLE} WHERE id >= {start} ORDER BY id LIMIT 1000"),
                    expect: vec![item_name(start), item_name(start + 999)],
                }
            }
            Workload::PostPoint => {
                let id = 1 + (n.wrapping_mul(2_654_435_761) % rows) as i64;
                Call {
                    sql: format!("SELECT * FROM {POSTS} WHERE id = {id}"),
                    expect: vec![post_title(id)],
                }
            }
            // Keyset paging rather than OFFSET: SQLite steps over every
            // skipped row, so an OFFSET's cost would grow with the page.
            Workload::Posts1000 => {
                let start = 1 + (n * 1000) % rows.saturating_sub(1000).max(1);
                let start = start as i64;
                let last = (start + 999).min(rows as i64);
                Call {
                    sql: format!("SELECT * FROM {POSTS} WHERE id >= {start} ORDER BY id LIMIT 1000"),
                    expect: vec![post_title(start), post_title(last)],
                }
            }
            Workload::PostsByMonth => Call {
                sql: format!(
                    "SELECT substr(created_at, 1, 7) AS month, count(*) AS posts, round(avg(length(body)), 1) AS mean_body FROM {POSTS} GROUP BY month ORDER BY month"
                ),
                expect: vec!["2025-01".into(), "2025-12".into()],
            },
            Workload::Aggregate => Call {
                sql: format!(
                    "SELECT category, count(*) AS n, round(avg(price), 2) AS avg_price FROM {TABLE} GROUP BY category ORDER BY category"
                ),
                expect: vec!["category-0".into(), "category-19".into()],
            },
        }
    }
}

/// The bytes of a result (its text and structured content, as sent) and
/// whether it holds every expected value and no error.
pub fn check(result: &CallToolResult, call: &Call) -> (usize, Result<(), String>) {
    let mut text = String::new();
    for block in &result.content {
        if let Some(t) = block.as_text() {
            text.push_str(&t.text);
        }
    }
    let structured = result
        .structured_content
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default();
    let bytes = text.len() + structured.len();
    if result.is_error == Some(true) {
        return (bytes, Err(format!("tool error: {}", truncate(&text))));
    }
    let haystack = if text.is_empty() { &structured } else { &text };
    for needle in &call.expect {
        if !haystack.contains(needle.as_str()) {
            return (
                bytes,
                Err(format!("answer lacks {needle}: {}", truncate(haystack))),
            );
        }
    }
    (bytes, Ok(()))
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_lookups_vary_the_id_and_stay_in_the_table() {
        let ids: std::collections::BTreeSet<String> = (0..100)
            .map(|n| Workload::PostPoint.call(n, 1000).sql)
            .collect();
        assert!(ids.len() > 90, "{} distinct of 100", ids.len());
        for n in 0..1000 {
            let sql = Workload::PostPoint.call(n, 1000).sql;
            let id: i64 = sql.rsplit(' ').next().unwrap().parse().unwrap();
            assert!((1..=1000).contains(&id), "{sql}");
        }
    }

    #[test]
    fn a_page_of_posts_expects_its_first_and_last_titles() {
        let call = Workload::Posts1000.call(3, 100_000);
        assert_eq!(
            call.sql,
            "SELECT * FROM posts WHERE id >= 3001 ORDER BY id LIMIT 1000"
        );
        assert_eq!(call.expect, vec![post_title(3001), post_title(4000)]);
    }

    #[test]
    fn workload_names_are_the_command_line_names() {
        assert_eq!(Workload::PostPoint.name(), "post-point");
        assert_eq!(Workload::Posts1000.name(), "posts1000");
        assert_eq!(Workload::Rows1000.name(), "rows1000");
    }
}
