//! SQLite built-ins replaced so that no single call runs unbounded inside
//! one VM step, where no interrupt or progress handler reaches.
//!
//! - `instr(X, Y)` and `replace(X, Y, Z)`: SQLite compares `Y` at every
//!   position of `X`; with a multi-megabyte near-match that is hours. These
//!   versions search in linear time.
//! - `trim`, `ltrim`, `rtrim` with a character set, and `unhex(X, Y)`:
//!   SQLite compares each character of `X` with each of `Y`. The work is
//!   inherent to the definition, so these are exact ports of SQLite's loops
//!   that check for an interrupt every [`INTERRUPT_CHECK_EVERY`] comparisons
//!   and fail the statement with `SQLITE_INTERRUPT` when it is stopped.
//!
//! All give the same results as SQLite's own (the same text conversions,
//! character positions, NULLs and errors, ported from SQLite's `func.c`,
//! checked against the built-ins in the tests below), and allocate their
//! output with SQLite's allocator, so the hard heap ceiling counts it.
//!
//! `LIKE` and `GLOB` stay SQLite's (the planner's LIKE optimization needs
//! the built-in); their pattern length is capped instead (see
//! [`crate::sqlite::connection::MAX_LIKE_PATTERN_LENGTH`]).

use std::ffi::{c_int, c_void, CStr};

use memchr::memmem;
use rusqlite::ffi;
use rusqlite::Connection;

/// Comparisons between two looks at the connection's interrupt flag.
pub const INTERRUPT_CHECK_EVERY: u32 = 1 << 16;

/// `trim`'s user data: which ends to trim.
const TRIM_LEFT: usize = 1;
const TRIM_RIGHT: usize = 2;

/// Registers the replacements on `conn`, overriding the built-ins.
pub fn install(conn: &Connection) -> rusqlite::Result<()> {
    register(conn, c"instr", 2, instr, 0)?;
    register(conn, c"replace", 3, replace, 0)?;
    register(conn, c"ltrim", 2, trim, TRIM_LEFT)?;
    register(conn, c"rtrim", 2, trim, TRIM_RIGHT)?;
    register(conn, c"trim", 2, trim, TRIM_LEFT | TRIM_RIGHT)?;
    register(conn, c"unhex", 2, unhex, 0)?;
    Ok(())
}

type ScalarFunction =
    unsafe extern "C" fn(*mut ffi::sqlite3_context, c_int, *mut *mut ffi::sqlite3_value);

fn register(
    conn: &Connection,
    name: &CStr,
    args: c_int,
    function: ScalarFunction,
    user_data: usize,
) -> rusqlite::Result<()> {
    // Innocuous and deterministic like the built-ins, so views, indexes
    // and CHECK constraints may keep using them under trusted_schema=OFF.
    let flags = ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC | ffi::SQLITE_INNOCUOUS;
    // SAFETY: the handle is valid while `conn` lives; the name is a C
    // string; the function has SQLite's scalar-function signature; the
    // user data is a plain integer, not a pointer, so needs no destructor.
    let rc = unsafe {
        ffi::sqlite3_create_function_v2(
            conn.handle(),
            name.as_ptr(),
            args,
            flags,
            user_data as *mut c_void,
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

/// Counts comparisons and tells when the statement has been interrupted.
struct InterruptCheck {
    db: *mut ffi::sqlite3,
    left: u32,
}

impl InterruptCheck {
    /// # Safety
    /// `ctx` must be the running function call's context.
    unsafe fn new(ctx: *mut ffi::sqlite3_context) -> Self {
        Self {
            db: ffi::sqlite3_context_db_handle(ctx),
            left: INTERRUPT_CHECK_EVERY,
        }
    }

    /// True once the connection was interrupted (checked every
    /// [`INTERRUPT_CHECK_EVERY`] calls).
    fn stopped(&mut self) -> bool {
        self.left -= 1;
        if self.left > 0 {
            return false;
        }
        self.left = INTERRUPT_CHECK_EVERY;
        // SAFETY: the handle belongs to the running call's connection.
        unsafe { ffi::sqlite3_is_interrupted(self.db) != 0 }
    }
}

/// The byte length of the character starting `text` as SQLite's
/// `SQLITE_SKIP_UTF8` steps over it: a lead byte of 0xc0 or more takes the
/// continuation bytes after it, anything else is one byte.
fn skip_utf8(text: &[u8]) -> usize {
    if text[0] < 0xc0 {
        return 1;
    }
    1 + text[1..]
        .iter()
        .take_while(|&&b| is_continuation(b))
        .count()
}

/// `trim(X, Y)`, `ltrim(X, Y)`, `rtrim(X, Y)`: characters of `Y` removed
/// from the chosen ends of `X`, in SQLite's order (the first character of
/// `Y` that matches wins).
unsafe extern "C" fn trim(
    ctx: *mut ffi::sqlite3_context,
    _argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    if ffi::sqlite3_value_type(*argv) == ffi::SQLITE_NULL {
        return;
    }
    let Some(input) = text(*argv) else { return };
    let Some(set) = text(*argv.add(1)) else {
        return;
    };
    let mut chars: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    while at < set.len() {
        let len = skip_utf8(&set[at..]);
        chars.push(&set[at..at + len]);
        at += len;
    }
    let ends = ffi::sqlite3_user_data(ctx) as usize;
    let mut check = InterruptCheck::new(ctx);
    let (mut start, mut end) = (0, input.len());
    if !chars.is_empty() {
        if ends & TRIM_LEFT != 0 {
            'left: while start < end {
                for c in &chars {
                    if check.stopped() {
                        return ffi::sqlite3_result_error_code(ctx, ffi::SQLITE_INTERRUPT);
                    }
                    if input[start..end].starts_with(c) {
                        start += c.len();
                        continue 'left;
                    }
                }
                break;
            }
        }
        if ends & TRIM_RIGHT != 0 {
            'right: while start < end {
                for c in &chars {
                    if check.stopped() {
                        return ffi::sqlite3_result_error_code(ctx, ffi::SQLITE_INTERRUPT);
                    }
                    if input[start..end].ends_with(c) {
                        end -= c.len();
                        continue 'right;
                    }
                }
                break;
            }
        }
    }
    result_text(ctx, &input[start..end]);
}

/// SQLite's `sqlite3Utf8Read`: the code point at the start of `text` and
/// the bytes it takes (overlong forms and surrogates read as U+FFFD).
fn read_utf8(text: &[u8]) -> (u32, usize) {
    let first = u32::from(text[0]);
    if first < 0xc0 {
        return (first, 1);
    }
    let mut c = match first - 0xc0 {
        n @ 0..=31 => n,
        n @ 32..=47 => n - 32,
        n @ 48..=55 => n - 48,
        n @ 56..=59 => n - 56,
        n @ 60..=61 => n - 60,
        _ => 0,
    };
    let mut len = 1;
    while len < text.len() && is_continuation(text[len]) {
        c = (c << 6) + (0x3f & u32::from(text[len]));
        len += 1;
    }
    if c < 0x80 || (c & 0xFFFF_F800) == 0xD800 || (c & 0xFFFF_FFFE) == 0xFFFE {
        c = 0xFFFD;
    }
    (c, len)
}

/// `unhex(X, Y)`: the BLOB of `X`'s hex digit pairs, where characters of
/// `Y` may stand between pairs; NULL when anything else does.
unsafe extern "C" fn unhex(
    ctx: *mut ffi::sqlite3_context,
    _argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    let Some(hex) = text(*argv) else { return };
    let Some(pass) = text(*argv.add(1)) else {
        return;
    };
    let out = ffi::sqlite3_malloc64(hex.len() as u64 / 2 + 1).cast::<u8>();
    if out.is_null() {
        return ffi::sqlite3_result_error_nomem(ctx);
    }
    let mut check = InterruptCheck::new(ctx);
    let mut written = 0;
    let mut at = 0;
    // Text values are NUL-terminated; SQLite's loop stops at the first NUL.
    let byte = |i: usize| hex.get(i).copied().unwrap_or(0);
    'pairs: while byte(at) != 0 {
        while !byte(at).is_ascii_hexdigit() {
            let (ch, len) = read_utf8(&hex[at..]);
            at += len;
            let mut allowed = false;
            let mut p = 0;
            while p < pass.len() {
                if check.stopped() {
                    ffi::sqlite3_free(out.cast());
                    return ffi::sqlite3_result_error_code(ctx, ffi::SQLITE_INTERRUPT);
                }
                let (tst, tlen) = read_utf8(&pass[p..]);
                p += tlen;
                if tst == ch {
                    allowed = true;
                    break;
                }
            }
            if !allowed {
                ffi::sqlite3_free(out.cast());
                return;
            }
            if byte(at) == 0 {
                break 'pairs;
            }
        }
        let high = byte(at);
        let low = byte(at + 1);
        at += 2;
        if !low.is_ascii_hexdigit() {
            ffi::sqlite3_free(out.cast());
            return;
        }
        let digit = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
        *out.add(written) = (digit(high) << 4) | digit(low);
        written += 1;
    }
    ffi::sqlite3_result_blob64(
        ctx,
        out.cast(),
        written as u64,
        Some(ffi::sqlite3_free as unsafe extern "C" fn(*mut c_void)),
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
    fn the_replacements_answer_as_sqlites_own() {
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
            "SELECT trim('xxhixx', 'x')",
            "SELECT ltrim('xxhixx', 'x')",
            "SELECT rtrim('xxhixx', 'x')",
            "SELECT trim('abcba', 'ab')",
            "SELECT trim('abc', '')",
            "SELECT trim(NULL, 'a')",
            "SELECT trim('abc', NULL)",
            "SELECT trim('ééaéé', 'é')",
            "SELECT trim('日本語日', '日')",
            "SELECT trim(12321, 1)",
            "SELECT trim(x'61626361', 'a')",
            "SELECT typeof(trim(x'61626361', 'a'))",
            "SELECT trim('aaaa', 'a')",
            "SELECT unhex('0a1B', '')",
            "SELECT unhex('0a-1b-2c', '-')",
            "SELECT unhex('0a 1b', '-')",
            "SELECT unhex('0a1', '-')",
            "SELECT unhex('0a1-', '-')",
            "SELECT unhex('-0a1b-', '-')",
            "SELECT unhex('', 'x')",
            "SELECT unhex('0aé1b', 'é')",
            "SELECT unhex('0aé1b', 'e')",
            "SELECT unhex(NULL, '-')",
            "SELECT unhex('0a', NULL)",
            "SELECT unhex('0g', 'g')",
            "SELECT unhex(1234, '')",
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
    fn trim_with_a_huge_character_set_stops_when_interrupted() {
        let conn = Connection::open_in_memory().unwrap();
        install(&conn).unwrap();
        let handle = conn.get_interrupt_handle();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            handle.interrupt();
        });
        let started = std::time::Instant::now();
        // Every character of X is compared with 300,000 of Y's first.
        let err = conn
            .query_row(
                "SELECT length(trim(printf('%.*c', 300000, 'b'), printf('%.*c', 300000, 'a') || 'b'))",
                [],
                |row| row.get::<_, i64>(0),
            )
            .unwrap_err();
        stopper.join().unwrap();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::OperationInterrupted)
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
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
