//! What SQLite alone spends on a workload: the same SQL, prepared once,
//! stepped through every row and every column in this process, directly
//! on the benchmark file. Set beside the server's CPU per call it shows what
//! the server adds on top of SQLite (protocol, encoding, pooling).

use std::path::Path;
use std::time::Instant;

use rusqlite::types::ValueRef;
use rusqlite::OpenFlags;

use crate::workload::Workload;

/// What stepping through `calls` calls of a workload cost SQLite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SqliteCost {
    /// CPU time of the stepping thread per call, in milliseconds.
    pub cpu_ms_per_call: f64,
    /// Wall-clock time per call, in milliseconds.
    pub wall_ms_per_call: f64,
    /// Rows per call.
    pub rows_per_call: f64,
    /// The values' own bytes per call: text and BLOB lengths, 8 for an
    /// integer or a real, 0 for NULL.
    pub raw_value_bytes_per_call: f64,
}

/// The size a value has in SQLite's own representation.
fn value_bytes(value: ValueRef<'_>) -> u64 {
    match value {
        ValueRef::Null => 0,
        ValueRef::Integer(_) | ValueRef::Real(_) => 8,
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes.len() as u64,
    }
}

/// CPU time this thread has used, in seconds (CLOCK_THREAD_CPUTIME_ID: in
/// nanoseconds, where `/proc` counts in ticks of 10 ms).
fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return 0.0;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// Steps through every row and column of `sql`: (rows, value bytes).
fn step_through(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<(u64, u64)> {
    // Cached as a server would cache it; the literal differs per call, so
    // most are prepared anew, as they are in the server.
    let mut statement = conn.prepare_cached(sql)?;
    let columns = statement.column_count();
    let mut result = statement.query([])?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let Some(row) = result.next()? {
        rows += 1;
        for column in 0..columns {
            bytes += value_bytes(row.get_ref(column)?);
        }
    }
    Ok((rows, bytes))
}

/// Runs calls `first..first + calls` of `workload` against the database at
/// `path` (opened read-only) and measures them, after calls `0..first`
/// unmeasured, the warm-up the server had. Call it off the async runtime:
/// it blocks.
pub fn measure(
    path: &Path,
    workload: Workload,
    rows: u64,
    first: u64,
    calls: u64,
) -> rusqlite::Result<SqliteCost> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A page cache that holds the benchmark tables (64 MiB; the server's is
    // its heap limit, 8 MiB by default), sorts in memory: what is measured
    // is SQLite stepping through rows, not reading the file.
    conn.execute_batch("PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;")?;
    for n in 0..first {
        step_through(&conn, &workload.call(n, rows).sql)?;
    }
    let sqls: Vec<String> = (first..first + calls)
        .map(|n| workload.call(n, rows).sql)
        .collect();
    let mut row_count = 0u64;
    let mut value_bytes_total = 0u64;
    let cpu_start = thread_cpu_seconds();
    let wall_start = Instant::now();
    for sql in &sqls {
        let (rows, bytes) = step_through(&conn, sql)?;
        row_count += rows;
        value_bytes_total += bytes;
    }
    let wall = wall_start.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - cpu_start;
    let per_call = |total: f64| total / calls.max(1) as f64;
    Ok(SqliteCost {
        cpu_ms_per_call: per_call(cpu * 1000.0),
        wall_ms_per_call: per_call(wall * 1000.0),
        rows_per_call: per_call(row_count as f64),
        raw_value_bytes_per_call: per_call(value_bytes_total as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset;

    #[test]
    fn a_page_of_posts_steps_a_thousand_rows_and_counts_their_bytes() {
        let dir = std::env::temp_dir().join(format!("eros-bench-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.db");
        dataset::create(&path, 2000).unwrap();
        let cost = measure(&path, Workload::Posts1000, 2000, 0, 3).unwrap();
        assert_eq!(cost.rows_per_call, 1000.0);
        // Each post holds about 250 + 60 + 20 bytes of text and two integers.
        assert!(
            (300_000.0..400_000.0).contains(&cost.raw_value_bytes_per_call),
            "{cost:?}"
        );
        assert!(cost.cpu_ms_per_call > 0.0, "{cost:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn values_count_their_own_size() {
        assert_eq!(value_bytes(ValueRef::Null), 0);
        assert_eq!(value_bytes(ValueRef::Integer(7)), 8);
        assert_eq!(value_bytes(ValueRef::Text(b"hello")), 5);
    }
}
