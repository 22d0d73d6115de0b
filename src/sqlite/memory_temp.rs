//! SQLite's temporary files kept in SQLite's own heap: the default VFS of
//! every process that opens a connection is the OS's, except that a file
//! SQLite opens without a name (a sorter's runs, a transient index, the
//! temporary database, a spilled statement journal) lives in memory
//! allocated with `sqlite3_malloc`, which the hard heap ceiling counts.
//!
//! Why not `PRAGMA temp_store = MEMORY`, which also keeps temporary data
//! in memory: with it, SQLite's sorter never writes a run. It sorts the
//! whole input as one list of records allocated one by one, so a
//! `GROUP BY` over tens of thousands of text rows cost a third more CPU
//! than on a plain connection (a sort far bigger than the CPU's cache, and
//! a `malloc` a row). With temporary files it sorts runs of the cache's
//! size, packed in one buffer, and merges them: SQLite's fast path. The
//! files being memory, nothing reaches the disk, and a sort past the
//! ceiling still fails with `SQLITE_NOMEM` (reported through
//! `SQLITE_IOERR_NOMEM`, which SQLite turns into an out-of-memory error).
//!
//! Named files (the database, its WAL and journal) go to the OS VFS as
//! they are: its own `xOpen` fills the file, so this VFS adds nothing to
//! their calls.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name this VFS is registered under (as the default).
const VFS_NAME: &std::ffi::CStr = c"eros-memory-temp";

/// Bytes a temporary file grows by: a run's writes are page-sized, so a
/// chunk holds sixteen of them at 4 KiB pages.
const CHUNK: usize = 64 * 1024;

/// The OS VFS this one wraps.
static OS: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(std::ptr::null_mut());
/// The registration's outcome (SQLite's result code).
static REGISTERED: OnceLock<c_int> = OnceLock::new();

/// Makes this VFS SQLite's default, once per process; `Err` holds SQLite's
/// code. Call before opening connections (after any `sqlite3_config`, as
/// registering initializes SQLite). A VFS registered later that wraps the
/// default (the replica's) wraps this one.
pub fn register() -> Result<(), c_int> {
    super::wrapped_vfs::register(&REGISTERED, &OS, VFS_NAME, true, |vfs, os| {
        vfs.szOsFile = os.szOsFile.max(std::mem::size_of::<MemoryFile>() as c_int);
        vfs.xOpen = Some(open);
    })
}

fn os() -> *mut ffi::sqlite3_vfs {
    OS.load(Ordering::Acquire)
}

/// A temporary file: SQLite's file header, then where its bytes are.
#[repr(C)]
struct MemoryFile {
    base: ffi::sqlite3_file,
    /// Owned; freed by `close`.
    contents: *mut Contents,
}

/// The bytes of a temporary file, in chunks from `sqlite3_malloc`. Bytes
/// at and past `len` are not the file's (they may hold old data): a write
/// past the end zeroes the gap first.
struct Contents {
    chunks: Vec<*mut u8>,
    len: usize,
}

impl Contents {
    /// Makes sure chunks cover `end` bytes; false when SQLite's allocator
    /// (the heap ceiling) refuses one.
    fn reserve(&mut self, end: usize) -> bool {
        while self.chunks.len() * CHUNK < end {
            // SAFETY: SQLite's allocator; freed in `truncate_chunks` or `drop`.
            let chunk = unsafe { ffi::sqlite3_malloc64(CHUNK as u64) }.cast::<u8>();
            if chunk.is_null() {
                return false;
            }
            self.chunks.push(chunk);
        }
        true
    }

    /// Copies `data` in at `offset`, within reserved chunks.
    fn write_at(&mut self, mut offset: usize, mut data: &[u8]) {
        while !data.is_empty() {
            let (index, within) = (offset / CHUNK, offset % CHUNK);
            let n = data.len().min(CHUNK - within);
            // SAFETY: chunk `index` is reserved and holds CHUNK bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), self.chunks[index].add(within), n)
            };
            data = &data[n..];
            offset += n;
        }
    }

    /// Zeroes `[from, to)`, within reserved chunks.
    fn zero(&mut self, mut from: usize, to: usize) {
        while from < to {
            let (index, within) = (from / CHUNK, from % CHUNK);
            let n = (to - from).min(CHUNK - within);
            // SAFETY: as in `write_at`.
            unsafe { std::ptr::write_bytes(self.chunks[index].add(within), 0, n) };
            from += n;
        }
    }

    /// Copies out `out.len()` bytes from `offset`, all below `len`.
    fn read_at(&self, mut offset: usize, mut out: &mut [u8]) {
        while !out.is_empty() {
            let (index, within) = (offset / CHUNK, offset % CHUNK);
            let n = out.len().min(CHUNK - within);
            // SAFETY: below `len`, so within reserved chunks.
            unsafe {
                std::ptr::copy_nonoverlapping(self.chunks[index].add(within), out.as_mut_ptr(), n)
            };
            out = &mut out[n..];
            offset += n;
        }
    }

    /// Writes `data` at `offset`, growing the file (zeroes in any gap).
    fn write(&mut self, offset: usize, data: &[u8]) -> bool {
        let Some(end) = offset.checked_add(data.len()) else {
            return false;
        };
        if !self.reserve(end) {
            return false;
        }
        if offset > self.len {
            self.zero(self.len, offset);
        }
        self.write_at(offset, data);
        self.len = self.len.max(end);
        true
    }

    /// Sets the length: chunks past it are given back; growing zeroes.
    fn set_len(&mut self, len: usize) -> bool {
        if len > self.len {
            if !self.reserve(len) {
                return false;
            }
            self.zero(self.len, len);
        } else {
            let keep = len.div_ceil(CHUNK);
            for chunk in self.chunks.drain(keep..) {
                // SAFETY: allocated by sqlite3_malloc64 in `reserve`.
                unsafe { ffi::sqlite3_free(chunk.cast()) };
            }
        }
        self.len = len;
        true
    }
}

impl Drop for Contents {
    fn drop(&mut self) {
        for &chunk in &self.chunks {
            // SAFETY: allocated by sqlite3_malloc64 in `reserve`.
            unsafe { ffi::sqlite3_free(chunk.cast()) };
        }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(lock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let os = os();
    if !name.is_null() {
        // SAFETY: the OS VFS opens its own kind of file in `file`, which
        // SQLite sized for the larger of the two.
        return unsafe { (*os).xOpen.expect("xOpen")(os, name, file, flags, out_flags) };
    }
    let contents = Box::into_raw(Box::new(Contents {
        chunks: Vec::new(),
        len: 0,
    }));
    // SAFETY: SQLite gave `szOsFile` bytes for the file, at least a
    // MemoryFile's; it is written whole before SQLite reads it.
    unsafe {
        file.cast::<MemoryFile>().write(MemoryFile {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            contents,
        });
        if !out_flags.is_null() {
            *out_flags = flags;
        }
    }
    ffi::SQLITE_OK
}

/// The contents of a file this VFS opened (only ever called through
/// METHODS, which only such files have).
unsafe fn contents<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Contents {
    // SAFETY: see above; SQLite never calls one file from two threads.
    unsafe { &mut *(*file.cast::<MemoryFile>()).contents }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: made by Box::into_raw in `open`, freed once here.
    unsafe { drop(Box::from_raw((*file.cast::<MemoryFile>()).contents)) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite's buffer of `amount` bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), amount.max(0) as usize) };
    let contents = unsafe { contents(file) };
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let available = contents.len.saturating_sub(offset).min(out.len());
    if available > 0 {
        contents.read_at(offset, &mut out[..available]);
    }
    if available < out.len() {
        // A short read must zero what it did not fill.
        out[available..].fill(0);
        return ffi::SQLITE_IOERR_SHORT_READ;
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite's buffer of `amount` bytes.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), amount.max(0) as usize) };
    let Ok(offset) = usize::try_from(offset) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if unsafe { contents(file) }.write(offset, data) {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_IOERR_NOMEM
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let Ok(size) = usize::try_from(size) else {
        return ffi::SQLITE_IOERR_TRUNCATE;
    };
    if unsafe { contents(file) }.set_len(size) {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_IOERR_NOMEM
    }
}

unsafe extern "C" fn sync(_file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    let len = unsafe { contents(file) }.len;
    // SAFETY: SQLite's out-parameter.
    unsafe { *size = len as ffi::sqlite3_int64 };
    ffi::SQLITE_OK
}

/// Locks mean nothing for a file only one connection can name.
unsafe extern "C" fn lock(_file: *mut ffi::sqlite3_file, _level: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn check_reserved_lock(_file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite's out-parameter.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn file_control(
    _file: *mut ffi::sqlite3_file,
    _op: c_int,
    _arg: *mut c_void,
) -> c_int {
    ffi::SQLITE_NOTFOUND
}

unsafe extern "C" fn sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    0
}

unsafe extern "C" fn device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_ATOMIC
        | ffi::SQLITE_IOCAP_SAFE_APPEND
        | ffi::SQLITE_IOCAP_SEQUENTIAL
        | ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[(usize, &[u8])]) -> Contents {
        let mut contents = Contents {
            chunks: Vec::new(),
            len: 0,
        };
        for (offset, data) in bytes {
            assert!(contents.write(*offset, data));
        }
        contents
    }

    fn read(contents: &Contents, offset: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0xAA; len];
        contents.read_at(offset, &mut out);
        out
    }

    #[test]
    fn a_write_across_chunks_reads_back_whole() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let contents = file(&[(CHUNK - 5, &data)]);
        assert_eq!(contents.len, CHUNK - 5 + data.len());
        assert_eq!(read(&contents, CHUNK - 5, data.len()), data);
    }

    #[test]
    fn a_write_past_the_end_leaves_zeroes_in_the_gap_even_after_a_truncate() {
        let mut contents = file(&[(0, &[7u8; 100])]);
        assert!(contents.set_len(10));
        assert!(contents.write(50, b"x"));
        assert_eq!(read(&contents, 0, 51)[..10], [7u8; 10]);
        assert_eq!(read(&contents, 10, 40), vec![0u8; 40], "old bytes show");
        assert!(contents.set_len(60));
        assert_eq!(read(&contents, 51, 9), vec![0u8; 9]);
    }

    #[test]
    fn truncating_gives_back_the_chunks_past_the_new_end() {
        let mut contents = file(&[(0, &vec![1u8; 5 * CHUNK])]);
        assert_eq!(contents.chunks.len(), 5);
        assert!(contents.set_len(CHUNK + 1));
        assert_eq!(contents.chunks.len(), 2);
        assert!(contents.set_len(0));
        assert!(contents.chunks.is_empty());
    }

    /// Descriptors this process holds open on SQLite's temporary files
    /// (named `etilqs_*`, and unlinked as soon as they are opened).
    fn open_temporary_files() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| target.to_string_lossy().contains("etilqs_"))
            .count()
    }

    /// Steps a sort far bigger than the page cache once (its runs are
    /// written by then) and counts the temporary files open at that point.
    fn files_a_big_sort_opens(conn: &rusqlite::Connection) -> usize {
        conn.execute_batch("PRAGMA cache_size = -256").unwrap();
        let mut sort = conn
            .prepare(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT 50000) \
                 SELECT printf('%08d', 50001 - i) || hex(randomblob(100)) AS k FROM c ORDER BY k",
            )
            .unwrap();
        let mut rows = sort.query([]).unwrap();
        let first: String = rows.next().unwrap().unwrap().get(0).unwrap();
        assert!(first.starts_with("00000001"), "sorted: {first}");
        let open = open_temporary_files();
        let mut count = 1;
        while rows.next().unwrap().is_some() {
            count += 1;
        }
        assert_eq!(count, 50000);
        open
    }

    /// Through SQLite: a sort bigger than the cache spills to temporary
    /// files, which are memory; the same sort through the OS VFS (the
    /// control) opens files on disk.
    #[test]
    fn a_sort_bigger_than_the_cache_spills_to_memory_not_to_disk() {
        register().unwrap();
        let flags = rusqlite::OpenFlags::default();
        let os = rusqlite::Connection::open_with_flags_and_vfs(":memory:", flags, c"unix").unwrap();
        assert!(
            files_a_big_sort_opens(&os) > 0,
            "the control: through the OS VFS the sort writes files"
        );
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let temp_store: i64 = conn
            .query_row("PRAGMA temp_store", [], |row| row.get(0))
            .unwrap();
        assert_eq!(temp_store, 0, "the default: files, which are memory here");
        assert_eq!(files_a_big_sort_opens(&conn), 0);
    }
}
