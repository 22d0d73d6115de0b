//! Registering a VFS that wraps SQLite's default one: a copy of the
//! default's methods under a name of its own, with the few it overrides,
//! registered once per process. [`super::memory_temp`] and
//! [`super::replica_vfs`] are both made this way.

use std::ffi::{c_int, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use rusqlite::ffi;

/// Registers, once per process (`outcome` keeps SQLite's result code), a
/// copy of the current default VFS named `name`, as `adapt` changes it; the
/// default it wraps is kept in `wrapped` first, for its methods to call.
/// `make_default`: the new VFS becomes SQLite's default. `Err` holds
/// SQLite's code.
///
/// `adapt` gets the copy and the wrapped VFS; it sets the methods the new
/// VFS overrides and its `szOsFile`, which must hold the wrapper's own file
/// struct.
pub(crate) fn register(
    outcome: &OnceLock<c_int>,
    wrapped: &AtomicPtr<ffi::sqlite3_vfs>,
    name: &'static CStr,
    make_default: bool,
    adapt: impl FnOnce(&mut ffi::sqlite3_vfs, &ffi::sqlite3_vfs),
) -> Result<(), c_int> {
    let rc = *outcome.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find and sqlite3_vfs_register are
        // thread-safe; the default VFS lives as long as SQLite, and the
        // registered struct is leaked, so it does too.
        unsafe {
            let default = ffi::sqlite3_vfs_find(std::ptr::null());
            if default.is_null() {
                return ffi::SQLITE_ERROR;
            }
            wrapped.store(default, Ordering::Release);
            let mut vfs: ffi::sqlite3_vfs = std::ptr::read(default);
            vfs.zName = name.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            adapt(&mut vfs, &*default);
            let vfs = Box::into_raw(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, c_int::from(make_default))
        }
    });
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}
