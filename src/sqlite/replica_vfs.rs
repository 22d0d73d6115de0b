//! The SQLite VFS a read replica opens its copy through: the default (unix)
//! VFS, with what SQLite reads from the copy's header adjusted so the copy
//! is read as the rollback-journal database the follower maintains.
//!
//! Why: `litestream restore` writes the primary's pages as they are, so the
//! restored header says WAL (bytes 18 and 19 are 2), and `restore -f`
//! rewrites them to 1 only when an applied transaction touches page 1,
//! which most do not. A connection that opens a WAL header opens a WAL
//! and holds a SHARED lock for as long as it lives, and the follower, which
//! takes SQLite's exclusive lock (waiting) to write pages in place, then
//! waits forever: the replica stops following. Read through this VFS:
//!
//! - bytes 18 and 19 read as 1 (rollback journal): a reader holds SHARED
//!   only for a read transaction, so the follower applies between them,
//!   and a reader meets `SQLITE_BUSY` (waited out by `busy_timeout`) while
//!   it writes;
//! - bytes 24 to 27, the file change counter, read differently on every
//!   read, so each read transaction drops the pages it cached before: the
//!   follower leaves the counter unchanged when page 1 is not in a
//!   transaction, and a cache kept across an apply would mix old pages with
//!   new ones;
//! - a `-wal` file beside the copy reads as absent (the follower's copy has
//!   none; SQLite would otherwise open one left by another program).
//!
//! Every other call goes to the default VFS unchanged; files other than the
//! main database are the default VFS's own.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections select with `?vfs=` in their URI.
pub const VFS_NAME: &str = "eros-replica";
const VFS_NAME_C: &CStr = c"eros-replica";

/// The default VFS this one wraps.
static DEFAULT: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(std::ptr::null_mut());
/// Change-counter values handed out, one per header read.
static NEXT_COUNTER: AtomicU32 = AtomicU32::new(1);
/// The registration's outcome (SQLite's result code).
static REGISTERED: OnceLock<c_int> = OnceLock::new();

/// Registers the VFS with SQLite once per process; `Err` holds SQLite's code.
pub fn register() -> Result<(), c_int> {
    super::wrapped_vfs::register(&REGISTERED, &DEFAULT, VFS_NAME_C, false, |vfs, default| {
        vfs.szOsFile = default.szOsFile + std::mem::size_of::<ReplicaFile>() as c_int;
        vfs.xOpen = Some(open);
        vfs.xAccess = Some(access);
    })
}

/// The URI that opens `path` through this VFS (read with `SQLITE_OPEN_URI`).
pub fn uri(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out.push_str("?vfs=");
    out.push_str(VFS_NAME);
    out
}

/// Our file: SQLite's handle first (its methods are ours), then the default
/// VFS's file, which lives in the same allocation right after it.
#[repr(C)]
struct ReplicaFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
}

fn default_vfs() -> *mut ffi::sqlite3_vfs {
    DEFAULT.load(Ordering::Acquire)
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let default = default_vfs();
    let default_open = (*default).xOpen.expect("the default VFS opens files");
    if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
        // Journals and temporary files: the default VFS's own (our
        // allocation is larger than its file needs).
        return default_open(default, name, file, flags, out_flags);
    }
    let ours = file.cast::<ReplicaFile>();
    let real = file
        .cast::<u8>()
        .add(std::mem::size_of::<ReplicaFile>())
        .cast::<ffi::sqlite3_file>();
    (*ours).base.pMethods = std::ptr::null();
    let rc = default_open(default, name, real, flags, out_flags);
    if rc == ffi::SQLITE_OK {
        (*ours).real = real;
        (*ours).base.pMethods = &METHODS;
    }
    rc
}

unsafe extern "C" fn access(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    if !name.is_null() && CStr::from_ptr(name).to_bytes().ends_with(b"-wal") {
        *out = 0;
        return ffi::SQLITE_OK;
    }
    let default = default_vfs();
    (*default).xAccess.expect("the default VFS answers access")(default, name, flags, out)
}

/// The default VFS's file behind ours, and its methods.
unsafe fn real(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    let real = (*file.cast::<ReplicaFile>()).real;
    (real, &*(*real).pMethods)
}

/// Adjusts a read of `len` bytes at `offset` as the module says.
fn adjust_header(buf: &mut [u8], offset: i64) {
    let len = buf.len();
    let at = |byte: i64| usize::try_from(byte - offset).ok().filter(|&i| i < len);
    for byte in [18, 19] {
        if let Some(i) = at(byte) {
            if buf[i] == 2 {
                buf[i] = 1;
            }
        }
    }
    if (offset..offset + len as i64).any(|b| (24..28).contains(&b)) {
        let counter = NEXT_COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        for (k, byte) in (24..28).enumerate() {
            if let Some(i) = at(byte) {
                buf[i] = counter[k];
            }
        }
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (real, methods) = real(file);
    let rc = methods.xRead.expect("xRead")(real, buf, amount, offset);
    if (rc == ffi::SQLITE_OK || rc == ffi::SQLITE_IOERR_SHORT_READ) && offset < 28 {
        let len = usize::try_from(amount).unwrap_or(0);
        adjust_header(
            std::slice::from_raw_parts_mut(buf.cast::<u8>(), len),
            offset,
        );
    }
    rc
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, methods) = real(file);
    methods.xClose.expect("xClose")(real)
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (real, methods) = real(file);
    methods.xWrite.expect("xWrite")(real, buf, amount, offset)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let (real, methods) = real(file);
    methods.xTruncate.expect("xTruncate")(real, size)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let (real, methods) = real(file);
    methods.xSync.expect("xSync")(real, flags)
}

unsafe extern "C" fn file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    let (real, methods) = real(file);
    methods.xFileSize.expect("xFileSize")(real, size)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, methods) = real(file);
    methods.xLock.expect("xLock")(real, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, methods) = real(file);
    methods.xUnlock.expect("xUnlock")(real, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let (real, methods) = real(file);
    methods.xCheckReservedLock.expect("xCheckReservedLock")(real, out)
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    let (real, methods) = real(file);
    methods.xFileControl.expect("xFileControl")(real, op, arg)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, methods) = real(file);
    methods.xSectorSize.expect("xSectorSize")(real)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let (real, methods) = real(file);
    methods
        .xDeviceCharacteristics
        .expect("xDeviceCharacteristics")(real)
}

/// Version 1: no shared memory (the copy is never read as WAL) and no
/// memory mapping (`mmap_size` is 0 on every connection anyway).
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
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

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    fn wal_database(path: &std::path::Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);",
        )
        .unwrap();
        drop(conn);
        let header = std::fs::read(path).unwrap();
        assert_eq!(
            &header[18..20],
            &[2, 2],
            "a WAL header, as a restore leaves it"
        );
    }

    fn open_replica(path: &std::path::Path) -> Connection {
        register().unwrap();
        Connection::open_with_flags(
            uri(path),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap()
    }

    #[test]
    fn a_wal_header_is_read_as_a_rollback_journal_without_shared_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.db");
        wal_database(&path);
        let conn = open_replica(&path);
        let sum: i64 = conn
            .query_row("SELECT sum(x) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(sum, 3);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        assert!(!dir.path().join("copy.db-shm").exists());
        assert!(!dir.path().join("copy.db-wal").exists());
    }

    #[test]
    fn pages_written_in_place_are_seen_by_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.db");
        wal_database(&path);
        let conn = open_replica(&path);
        let read = |conn: &Connection| -> i64 {
            conn.query_row("SELECT sum(x) FROM t", [], |row| row.get(0))
                .unwrap()
        };
        assert_eq!(read(&conn), 3);
        // A writer that, like the follower, leaves the change counter alone.
        let other = dir.path().join("other.db");
        std::fs::copy(&path, &other).unwrap();
        {
            let writer = Connection::open(&other).unwrap();
            writer
                .execute_batch("PRAGMA journal_mode = DELETE; UPDATE t SET x = x * 10;")
                .unwrap();
        }
        let mut pages = std::fs::read(&other).unwrap();
        let original = std::fs::read(&path).unwrap();
        pages[24..28].copy_from_slice(&original[24..28]);
        std::fs::write(&path, &pages[..original.len().min(pages.len())]).unwrap();
        assert_eq!(read(&conn), 30);
    }

    #[test]
    fn paths_are_escaped_in_the_uri() {
        assert_eq!(
            uri(std::path::Path::new("/a b/c?d#e%f.db")),
            "file:/a%20b/c%3Fd%23e%25f.db?vfs=eros-replica"
        );
    }
}
