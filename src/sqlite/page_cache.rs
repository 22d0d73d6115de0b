//! The page cache's size, apart from the sorter's runs.
//!
//! SQLite sizes two things from one setting, `PRAGMA cache_size`: the pages
//! a connection caches, and the runs its sorter sorts in memory before
//! merging them (`ORDER BY`, `GROUP BY`, `DISTINCT` and index builds over
//! more rows than fit). A large cache saves reading pages again; a large
//! run is slow, because sorting one far bigger than the CPU's cache misses
//! it at every comparison (a `GROUP BY` over 60,000 text rows: 56 ms with
//! 2 MiB runs, 74 ms with 8 MiB, BENCHMARKS.md).
//!
//! So in a worker process (one connection, one database) SQLite's own page
//! cache is wrapped: `cache_size` is set to [`SORT_RUN_KIB`], which is what
//! the sorter reads, and the wrapper scales the page count SQLite asks the
//! cache for by the configured cache over that, so pages are cached up to
//! the configured size. Everything else is SQLite's page cache unchanged.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rusqlite::ffi;

/// The size of a sorter run: about a core's L2 cache.
pub const SORT_RUN_KIB: u64 = 2048;

/// The configured page cache in KiB, 0 when the wrapper is not installed.
static PAGE_CACHE_KIB: AtomicU64 = AtomicU64::new(0);

/// SQLite's own page cache methods, saved by `install`.
static mut DEFAULT: Option<ffi::sqlite3_pcache_methods2> = None;

/// In a worker, before SQLite starts: wraps SQLite's page cache so each
/// connection caches `cache_kib` of pages while its `cache_size` (see
/// [`cache_size_kib`]) keeps sorter runs at [`SORT_RUN_KIB`].
pub fn install(cache_kib: u64) -> Result<(), String> {
    // SAFETY: before SQLite is initialized, in a single-threaded worker:
    // read the default page cache, then install the wrapper around it.
    unsafe {
        if (*std::ptr::addr_of!(DEFAULT)).is_some() {
            // Installed already: wrapping the wrapper would make it call itself.
            PAGE_CACHE_KIB.store(cache_kib, Relaxed);
            return Ok(());
        }
        let mut methods: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
        if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut methods) != ffi::SQLITE_OK
            || methods.xCachesize.is_none()
        {
            return Err("SQLite would not tell its page cache".into());
        }
        *std::ptr::addr_of_mut!(DEFAULT) = Some(methods);
        let wrapped = ffi::sqlite3_pcache_methods2 {
            xCachesize: Some(scaled_cachesize),
            ..methods
        };
        if ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &wrapped) != ffi::SQLITE_OK {
            return Err("SQLite refused the page cache (already initialized?)".into());
        }
    }
    PAGE_CACHE_KIB.store(cache_kib, Relaxed);
    Ok(())
}

/// The `cache_size` (in KiB) to give a connection meant to cache
/// `cache_kib`: [`SORT_RUN_KIB`] at most where the wrapper makes up the
/// difference, `cache_kib` where it is not installed.
pub fn cache_size_kib(cache_kib: u64) -> u64 {
    if PAGE_CACHE_KIB.load(Relaxed) > 0 {
        cache_kib.min(SORT_RUN_KIB)
    } else {
        cache_kib
    }
}

/// Pages to cache when SQLite asks for `pages` (sized from `cache_size`).
fn scale(pages: c_int, cache_kib: u64) -> c_int {
    if cache_kib <= SORT_RUN_KIB || pages <= 0 {
        return pages;
    }
    let scaled = i128::from(pages) * i128::from(cache_kib) / i128::from(SORT_RUN_KIB);
    c_int::try_from(scaled).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn scaled_cachesize(cache: *mut ffi::sqlite3_pcache, pages: c_int) {
    // SAFETY: written once by `install` before SQLite starts, then read only.
    let default = unsafe { (*std::ptr::addr_of!(DEFAULT)).as_ref() }.expect("installed");
    let pages = scale(pages, PAGE_CACHE_KIB.load(Relaxed));
    // SAFETY: SQLite's own method on its own cache.
    unsafe { default.xCachesize.expect("checked in install")(cache, pages) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_scaled_by_the_cache_over_the_sort_run() {
        assert_eq!(scale(512, 8 * 1024), 2048, "8 MiB of 4 KiB pages");
        assert_eq!(scale(512, SORT_RUN_KIB), 512);
        assert_eq!(scale(512, 1024), 512, "a smaller cache is its own size");
        assert_eq!(scale(c_int::MAX, 1 << 40), c_int::MAX, "saturates");
        assert_eq!(scale(0, 8 * 1024), 0);
    }

    /// The pages a connection with `cache_size` = [`SORT_RUN_KIB`] holds
    /// after reading a table of about 6 MiB twice, in KiB.
    fn cache_used_kib_after_a_big_scan() -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("big.db")).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{};
             CREATE TABLE t (b BLOB);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT 1500)
             INSERT INTO t SELECT randomblob(4000) FROM c;",
            SORT_RUN_KIB
        ))
        .unwrap();
        for _ in 0..2 {
            conn.query_row("SELECT sum(length(b)) FROM t", [], |_| Ok(()))
                .unwrap();
        }
        let (mut used, mut high) = (0, 0);
        // SAFETY: an open connection's handle and two out-parameters.
        let rc = unsafe {
            ffi::sqlite3_db_status(
                conn.handle(),
                ffi::SQLITE_DBSTATUS_CACHE_USED,
                &mut used,
                &mut high,
                0,
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        used as u64 / 1024
    }

    /// Runs this module's `child` test in a fresh process (the wrapper must
    /// be installed before SQLite starts), installing it or not; returns the
    /// KiB of pages the child's connection kept.
    fn child_cache_kib(install_wrapper: bool) -> u64 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sqlite::page_cache::tests::child", "--nocapture"])
            .env(
                "PAGE_CACHE_TEST_CHILD",
                if install_wrapper { "wrap" } else { "plain" },
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        stdout
            .lines()
            .find_map(|line| line.strip_prefix("cache used KiB: "))
            .unwrap_or_else(|| panic!("no figure in: {stdout}"))
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn child() {
        let Ok(mode) = std::env::var("PAGE_CACHE_TEST_CHILD") else {
            return; // only ever run by `child_cache_kib`
        };
        if mode == "wrap" {
            install(8 * 1024).unwrap();
            assert_eq!(cache_size_kib(8 * 1024), SORT_RUN_KIB);
        }
        println!("cache used KiB: {}", cache_used_kib_after_a_big_scan());
    }

    #[test]
    fn a_connection_caches_the_configured_size_while_its_cache_size_is_a_sort_run() {
        let wrapped = child_cache_kib(true);
        assert!(wrapped > 4 * 1024, "{wrapped} KiB cached with the wrapper");
        // The control: SQLite alone keeps what cache_size says.
        let plain = child_cache_kib(false);
        assert!(plain <= SORT_RUN_KIB + 256, "{plain} KiB cached without it");
    }
}
