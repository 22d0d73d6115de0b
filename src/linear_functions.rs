//! Linear-time replacements for SQLite built-ins whose cost is the product
//! of their arguments' lengths.
//!
//! SQLite's `instr(X, Y)` and `replace(X, Y, Z)` compare `Y` at every
//! position of `X`. With a multi-megabyte near-match for `Y` that is hours
//! of work inside one VM step, where no interrupt or progress handler
//! reaches: the call is answered at its deadline, but the statement keeps a
//! core and a connection until it returns. These versions give the same
//! results (the same text conversions, character positions, NULLs and
//! errors, ported from SQLite's `func.c`) with a linear substring search,
//! and allocate their output with SQLite's allocator, so the hard heap
//! ceiling counts it.
//!
//! `LIKE` and `GLOB` stay SQLite's (the planner's LIKE optimization needs
//! the built-in); their pattern length is capped instead (see
//! [`crate::connection::MAX_LIKE_PATTERN_LENGTH`]).

use std::ffi::{c_int, c_void, CStr};

use memchr::memmem;
use rusqlite::ffi;
use rusqlite::Connection;

/// Registers the replacements on `conn`, overriding the built-ins.
pub fn install(conn: &Connection) -> rusqlite::Result<()> {
    register(conn, c"instr", 2, instr)?;
    register(conn, c"replace", 3, replace)?;
    Ok(())
}

type ScalarFunction =
    unsafe extern "C" fn(*mut ffi::sqlite3_context, c_int, *mut *mut ffi::sqlite3_value);

fn register(
    conn: &Connection,
    name: &CStr,
    args: c_int,
    function: ScalarFunction,
) -> rusqlite::Result<()> {
    // Innocuous and deterministic like the built-ins, so views, indexes
    // and CHECK constraints may keep using them under trusted_schema=OFF.
    let flags = ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC | ffi::SQLITE_INNOCUOUS;
    // SAFETY: the handle is valid while `conn` lives; the name is a C
    // string; the function has SQLite's scalar-function signature and
    // keeps no state, so no user data or destructor is needed.
    let rc = unsafe {
        ffi::sqlite3_create_function_v2(
            conn.handle(),
            name.as_ptr(),
            args,
            flags,
            std::ptr::null_mut(),
            Some(function),
            None,
            None,
            None,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

/// The bytes of a value read as text (SQLite converts numbers and BLOBs),
/// or `None` for NULL or when SQLite could not allocate the conversion.
///
/// # Safety
/// `value` must be a live argument of the running function call; the
/// slice is valid until the value is converted again or the call returns.
unsafe fn text<'a>(value: *mut ffi::sqlite3_value) -> Option<&'a [u8]> {
    let data = ffi::sqlite3_value_text(value);
    if data.is_null() {
        return None;
    }
    let len = usize::try_from(ffi::sqlite3_value_bytes(value)).unwrap_or(0);
    Some(std::slice::from_raw_parts(data, len))
}

/// The bytes of a BLOB value (an empty BLOB may have a null pointer).
///
/// # Safety
/// As for [`text`].
unsafe fn blob<'a>(value: *mut ffi::sqlite3_value) -> &'a [u8] {
    let data = ffi::sqlite3_value_blob(value).cast::<u8>();
    let len = usize::try_from(ffi::sqlite3_value_bytes(value)).unwrap_or(0);
    if data.is_null() || len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(data, len)
    }
}

/// True for the bytes that continue a UTF-8 character.
fn is_continuation(byte: u8) -> bool {
    byte & 0xc0 == 0x80
}

/// The 1-based position of `needle` in `haystack`, 0 when absent. In text,
/// positions count characters, and a match may start only where SQLite's
/// scan stops: the first byte, or a byte that starts a character.
fn position(haystack: &[u8], needle: &[u8], is_text: bool) -> i64 {
    if needle.is_empty() {
        return 1;
    }
    let finder = memmem::Finder::new(needle);
    let mut from = 0;
    while let Some(found) = finder.find(&haystack[from..]) {
        let at = from + found;
        if !is_text || at == 0 || !is_continuation(haystack[at]) {
            if !is_text {
                return at as i64 + 1;
            }
            let starts = haystack[1..=at]
                .iter()
                .filter(|&&b| !is_continuation(b))
                .count();
            return starts as i64 + 1;
        }
        from = at + 1;
    }
    0
}

/// `instr(X, Y)`: BLOB positions when both are BLOBs, else text positions.
unsafe extern "C" fn instr(
    ctx: *mut ffi::sqlite3_context,
    _argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    let (x, y) = (*argv, *argv.add(1));
    let (tx, ty) = (ffi::sqlite3_value_type(x), ffi::sqlite3_value_type(y));
    if tx == ffi::SQLITE_NULL || ty == ffi::SQLITE_NULL {
        return;
    }
    let found = if tx == ffi::SQLITE_BLOB && ty == ffi::SQLITE_BLOB {
        position(blob(x), blob(y), false)
    } else if tx != ffi::SQLITE_BLOB && ty != ffi::SQLITE_BLOB {
        match (text(x), text(y)) {
            (Some(haystack), Some(needle)) => position(haystack, needle, true),
            _ => return ffi::sqlite3_result_error_nomem(ctx),
        }
    } else {
        // One BLOB, one not: compare as text, converting copies so the
        // caller's values keep their type (as SQLite does).
        let (cx, cy) = (ffi::sqlite3_value_dup(x), ffi::sqlite3_value_dup(y));
        let found = match (text(cx), text(cy)) {
            (Some(haystack), Some(needle)) => Some(position(haystack, needle, true)),
            _ => None,
        };
        ffi::sqlite3_value_free(cx);
        ffi::sqlite3_value_free(cy);
        match found {
            Some(found) => found,
            None => return ffi::sqlite3_result_error_nomem(ctx),
        }
    };
    ffi::sqlite3_result_int64(ctx, found);
}

/// `replace(X, Y, Z)`: every non-overlapping `Y` in `X`, left to right,
/// replaced by `Z`; text in, text out.
unsafe extern "C" fn replace(
    ctx: *mut ffi::sqlite3_context,
    _argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    let Some(input) = text(*argv) else { return };
    let Some(pattern) = text(*argv.add(1)) else {
        return;
    };
    if pattern.is_empty() {
        return result_text(ctx, input);
    }
    let Some(replacement) = text(*argv.add(2)) else {
        return;
    };
    // find_iter reports non-overlapping matches left to right, as SQLite's
    // loop takes them. Counted first, so no list of matches is held.
    let count = memmem::find_iter(input, pattern).count();
    let len = input.len() - count * pattern.len() + count * replacement.len();
    let limit = ffi::sqlite3_limit(
        ffi::sqlite3_context_db_handle(ctx),
        ffi::SQLITE_LIMIT_LENGTH,
        -1,
    );
    if len > usize::try_from(limit).unwrap_or(0) {
        return ffi::sqlite3_result_error_toobig(ctx);
    }
    let out = ffi::sqlite3_malloc64(len as u64 + 1).cast::<u8>();
    if out.is_null() {
        return ffi::sqlite3_result_error_nomem(ctx);
    }
    let mut written = 0;
    let mut from = 0;
    let mut put = |bytes: &[u8]| {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.add(written), bytes.len());
        written += bytes.len();
    };
    for at in memmem::find_iter(input, pattern) {
        put(&input[from..at]);
        put(replacement);
        from = at + pattern.len();
    }
    put(&input[from..]);
    *out.add(written) = 0;
    // SQLite takes the buffer and frees it with sqlite3_free.
    ffi::sqlite3_result_text64(
        ctx,
        out.cast(),
        written as u64,
        Some(ffi::sqlite3_free as unsafe extern "C" fn(*mut c_void)),
        ffi::SQLITE_UTF8 as u8,
    );
}

/// Sets a text result, copied by SQLite.
unsafe fn result_text(ctx: *mut ffi::sqlite3_context, bytes: &[u8]) {
    ffi::sqlite3_result_text64(
        ctx,
        bytes.as_ptr().cast(),
        bytes.len() as u64,
        ffi::SQLITE_TRANSIENT(),
        ffi::SQLITE_UTF8 as u8,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::Value;

    /// Evaluates `sql` with SQLite's built-ins, then with ours.
    fn both(sql: &str) -> (Value, Value) {
        let builtin = Connection::open_in_memory().unwrap();
        let ours = Connection::open_in_memory().unwrap();
        install(&ours).unwrap();
        let eval = |conn: &Connection| {
            conn.query_row(sql, [], |row| row.get::<_, Value>(0))
                .unwrap()
        };
        (eval(&builtin), eval(&ours))
    }

    #[test]
    fn instr_and_replace_answer_as_sqlites_own() {
        let cases = [
            "SELECT instr('hello world', 'o')",
            "SELECT instr('hello world', 'xyz')",
            "SELECT instr('hello', '')",
            "SELECT instr('', '')",
            "SELECT instr('', 'a')",
            "SELECT instr(NULL, 'a')",
            "SELECT instr('a', NULL)",
            "SELECT instr('héllo wörld', 'w')",
            "SELECT instr('日本語のテキスト', 'テ')",
            "SELECT instr(x'0102030405', x'0304')",
            "SELECT instr(x'0102030405', x'')",
            "SELECT instr(x'41424344', 'C')",
            "SELECT instr('ABCD', x'43')",
            "SELECT instr(12345, 34)",
            "SELECT instr(1.5, '.')",
            "SELECT instr(1e20, 'e')",
            "SELECT instr('aaa', 'aa')",
            "SELECT replace('hello world', 'o', '0')",
            "SELECT replace('aaaa', 'aa', 'b')",
            "SELECT replace('aaa', 'aa', 'aaaa')",
            "SELECT replace('abc', '', 'x')",
            "SELECT replace(123, '', 'x')",
            "SELECT replace('abc', 'b', '')",
            "SELECT replace(NULL, 'a', 'b')",
            "SELECT replace('abc', NULL, 'b')",
            "SELECT replace('abc', 'b', NULL)",
            "SELECT replace('abc', 'x', NULL)",
            "SELECT replace('日本語', '本', 'ほん')",
            "SELECT replace(12321, 2, 'two')",
            "SELECT replace(x'616263', 'b', 'B')",
            "SELECT typeof(replace(x'616263', 'b', 'B'))",
            "SELECT typeof(replace(12, '', 'x'))",
        ];
        for sql in cases {
            let (builtin, ours) = both(sql);
            assert_eq!(ours, builtin, "{sql}");
        }
    }

    #[test]
    fn a_near_match_is_found_in_linear_time() {
        let conn = Connection::open_in_memory().unwrap();
        install(&conn).unwrap();
        // SQLite's own instr compares 2 MB at each of 2 million positions.
        let found: i64 = conn
            .query_row(
                "SELECT instr(hex(zeroblob(2000000)), hex(zeroblob(1000000)) || '1')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(found, 0);
    }

    #[test]
    fn a_replacement_longer_than_the_value_limit_is_too_big() {
        let conn = Connection::open_in_memory().unwrap();
        install(&conn).unwrap();
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, 1000)
            .unwrap();
        let err = conn
            .query_row("SELECT replace(hex(zeroblob(400)), '0', '00')", [], |row| {
                row.get::<_, String>(0)
            })
            .unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::TooBig));
    }
}
