//! SQLite's hard heap ceiling, shared by every worker process.
//!
//! In one process, `sqlite3_hard_heap_limit64` made every connection's
//! allocations (page caches, statements, sorts, temporary tables) share one
//! ceiling. Workers are separate processes, so each would get a ceiling of
//! its own, and a burst of heavy statements could take workers times the
//! budget. Instead each worker counts what SQLite allocates in its slot of
//! one shared memory page (a `memfd` the server creates and hands every
//! worker), and SQLite's allocator in the worker refuses an allocation that
//! would take the sum of all slots past the ceiling; SQLite reports that as
//! `SQLITE_NOMEM`, as it did with its own ceiling.
//!
//! A worker that is killed never frees what it counted: the server zeroes
//! its slot once the process is reaped ([`HeapSlot`]'s drop).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use rusqlite::ffi;

/// The file descriptor a worker finds the shared page at.
pub const HEAP_FD: RawFd = 4;

/// The shared counters: the ceiling, then one slot a worker.
pub struct SharedHeap {
    fd: OwnedFd,
    map: Mapping,
    free: Mutex<Vec<usize>>,
}

/// The mapped counters: `[ceiling, slot 0, slot 1, ...]`.
struct Mapping {
    base: *mut AtomicI64,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(fd: RawFd, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of a file we sized to `len` counters.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * std::mem::size_of::<AtomicI64>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: base.cast(),
            len,
        })
    }

    fn counters(&self) -> &[AtomicI64] {
        // SAFETY: `len` atomics, mapped for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps what `map` mapped.
        unsafe {
            libc::munmap(
                self.base.cast(),
                self.len * std::mem::size_of::<AtomicI64>(),
            )
        };
    }
}

/// One worker's place in the shared page; zeroed and freed when dropped,
/// which must be after its worker has exited.
pub struct HeapSlot {
    heap: Arc<SharedHeap>,
    index: usize,
}

impl HeapSlot {
    pub fn index(&self) -> usize {
        self.index
    }
}

impl std::fmt::Debug for HeapSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HeapSlot").field(&self.index).finish()
    }
}

impl Drop for HeapSlot {
    fn drop(&mut self) {
        self.heap.map.counters()[1 + self.index].store(0, Relaxed);
        self.heap.free.lock().unwrap().push(self.index);
    }
}

impl SharedHeap {
    /// A ceiling of `ceiling_bytes` for up to `slots` workers at once.
    pub fn new(ceiling_bytes: u64, slots: usize) -> io::Result<Arc<Self>> {
        // SAFETY: memfd_create with a static name; the fd is owned below.
        let raw = unsafe { libc::memfd_create(c"eros-sqlite-heap".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just created and nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = 1 + slots;
        let bytes = (len * std::mem::size_of::<AtomicI64>()) as libc::off_t;
        // SAFETY: sizes our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), bytes) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let map = Mapping::map(fd.as_raw_fd(), len)?;
        map.counters()[0].store(i64::try_from(ceiling_bytes).unwrap_or(i64::MAX), Relaxed);
        Ok(Arc::new(Self {
            fd,
            map,
            free: Mutex::new((0..slots).rev().collect()),
        }))
    }

    /// A free slot for a new worker, if any.
    pub fn claim(self: &Arc<Self>) -> Option<HeapSlot> {
        let index = self.free.lock().unwrap().pop()?;
        Some(HeapSlot {
            heap: Arc::clone(self),
            index,
        })
    }

    /// The descriptor a worker maps (as [`HEAP_FD`]).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Slots in the page.
    pub fn slots(&self) -> usize {
        self.map.len - 1
    }

    /// Bytes SQLite holds in every worker together now.
    pub fn used(&self) -> u64 {
        total(self.map.counters()).max(0) as u64
    }
}

fn total(counters: &[AtomicI64]) -> i64 {
    counters[1..].iter().map(|slot| slot.load(Relaxed)).sum()
}

// --- The worker's side: SQLite's allocator, counted in the shared page ---

static COUNTERS: AtomicPtr<AtomicI64> = AtomicPtr::new(std::ptr::null_mut());
static COUNTERS_LEN: AtomicUsize = AtomicUsize::new(0);
static SLOT: AtomicUsize = AtomicUsize::new(0);
static mut DEFAULT: Option<ffi::sqlite3_mem_methods> = None;

fn shared() -> (&'static [AtomicI64], &'static AtomicI64) {
    let base = COUNTERS.load(Relaxed);
    let len = COUNTERS_LEN.load(Relaxed);
    // SAFETY: set once by `install` to a mapping that is never unmapped.
    let counters = unsafe { std::slice::from_raw_parts(base, len) };
    (counters, &counters[1 + SLOT.load(Relaxed)])
}

fn default() -> &'static ffi::sqlite3_mem_methods {
    // SAFETY: written once by `install` before SQLite starts, then read only.
    unsafe { (*std::ptr::addr_of!(DEFAULT)).as_ref().expect("installed") }
}

/// Whether `more` bytes fit under the ceiling, counting them in this
/// worker's slot if so.
fn take(more: i64) -> bool {
    let (counters, mine) = shared();
    mine.fetch_add(more, Relaxed);
    if total(counters) > counters[0].load(Relaxed) {
        mine.fetch_sub(more, Relaxed);
        return false;
    }
    true
}

fn size_of(p: *mut libc::c_void) -> i64 {
    // SAFETY: `p` came from the default allocator.
    i64::from(unsafe { default().xSize.expect("xSize")(p) })
}

unsafe extern "C" fn counted_malloc(n: libc::c_int) -> *mut libc::c_void {
    // SAFETY: the default allocator's own entry point.
    let p = unsafe { default().xMalloc.expect("xMalloc")(n) };
    if p.is_null() {
        return p;
    }
    if !take(size_of(p)) {
        // SAFETY: frees what was just allocated.
        unsafe { default().xFree.expect("xFree")(p) };
        return std::ptr::null_mut();
    }
    p
}

unsafe extern "C" fn counted_free(p: *mut libc::c_void) {
    if p.is_null() {
        return;
    }
    shared().1.fetch_sub(size_of(p), Relaxed);
    // SAFETY: the default allocator frees its own allocation.
    unsafe { default().xFree.expect("xFree")(p) }
}

unsafe extern "C" fn counted_realloc(p: *mut libc::c_void, n: libc::c_int) -> *mut libc::c_void {
    let before = size_of(p);
    let growth = i64::from(n) - before;
    // Checked before moving anything: a refused realloc leaves `p` whole.
    if growth > 0 && !take(growth) {
        return std::ptr::null_mut();
    }
    // SAFETY: the default allocator resizes its own allocation.
    let q = unsafe { default().xRealloc.expect("xRealloc")(p, n) };
    let counted = before + growth.max(0);
    if q.is_null() {
        shared().1.fetch_sub(growth.max(0), Relaxed);
        return q;
    }
    // Settle the count on what the allocator really gave.
    shared().1.fetch_add(size_of(q) - counted, Relaxed);
    q
}

unsafe extern "C" fn default_size(p: *mut libc::c_void) -> libc::c_int {
    // SAFETY: passes through.
    unsafe { default().xSize.expect("xSize")(p) }
}

unsafe extern "C" fn default_roundup(n: libc::c_int) -> libc::c_int {
    // SAFETY: passes through.
    unsafe { default().xRoundup.expect("xRoundup")(n) }
}

unsafe extern "C" fn default_init(app: *mut libc::c_void) -> libc::c_int {
    // SAFETY: passes through.
    unsafe { default().xInit.expect("xInit")(app) }
}

unsafe extern "C" fn default_shutdown(app: *mut libc::c_void) {
    // SAFETY: passes through.
    unsafe { default().xShutdown.expect("xShutdown")(app) }
}

/// In a worker with the shared page installed: bytes SQLite holds in the
/// other workers now.
pub fn others_bytes() -> Option<u64> {
    if COUNTERS.load(Relaxed).is_null() {
        return None;
    }
    let (counters, mine) = shared();
    Some((total(counters) - mine.load(Relaxed)).max(0) as u64)
}

/// In a worker, before SQLite starts: maps the page at [`HEAP_FD`] and
/// counts SQLite's allocations in `slot` of its `slots`.
pub fn install(slot: usize, slots: usize) -> Result<(), String> {
    if slot >= slots {
        return Err(format!("heap slot {slot} of {slots}"));
    }
    let map = Mapping::map(HEAP_FD, 1 + slots)
        .map_err(|err| format!("cannot map the shared heap counters: {err}"))?;
    let base = map.base;
    // The mapping lives as long as the process.
    std::mem::forget(map);
    COUNTERS.store(base, Relaxed);
    COUNTERS_LEN.store(1 + slots, Relaxed);
    SLOT.store(slot, Relaxed);
    // SAFETY: before SQLite is initialized, in a single-threaded worker:
    // read the default allocator, then install the counting one around it.
    unsafe {
        let mut methods: ffi::sqlite3_mem_methods = std::mem::zeroed();
        if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETMALLOC, &mut methods) != ffi::SQLITE_OK {
            return Err("SQLite would not tell its allocator".into());
        }
        *std::ptr::addr_of_mut!(DEFAULT) = Some(methods);
        let counted = ffi::sqlite3_mem_methods {
            xMalloc: Some(counted_malloc),
            xFree: Some(counted_free),
            xRealloc: Some(counted_realloc),
            xSize: Some(default_size),
            xRoundup: Some(default_roundup),
            xInit: Some(default_init),
            xShutdown: Some(default_shutdown),
            pAppData: methods.pAppData,
        };
        if ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &counted) != ffi::SQLITE_OK {
            return Err("SQLite refused the counting allocator (already initialized?)".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_zeroed_and_reused_once_given_back() {
        let heap = SharedHeap::new(1 << 20, 2).unwrap();
        let first = heap.claim().unwrap();
        let second = heap.claim().unwrap();
        assert!(heap.claim().is_none(), "two slots only");
        heap.map.counters()[1 + first.index()].store(1000, Relaxed);
        heap.map.counters()[1 + second.index()].store(24, Relaxed);
        assert_eq!(heap.used(), 1024);
        let index = first.index();
        drop(first);
        assert_eq!(heap.used(), 24, "a reaped worker's count is gone");
        assert_eq!(heap.claim().unwrap().index(), index);
    }

    #[test]
    fn another_mapping_of_the_page_sees_the_same_counters() {
        let heap = SharedHeap::new(1 << 20, 4).unwrap();
        let other = Mapping::map(heap.fd(), 5).unwrap();
        other.counters()[3].store(77, Relaxed);
        assert_eq!(heap.used(), 77);
        assert_eq!(other.counters()[0].load(Relaxed), 1 << 20);
    }
}
