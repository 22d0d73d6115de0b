//! The engine's value model: one [`Cell`] per SQLite value in a result,
//! typed as SQLite typed it, a long text or BLOB cut while it is read.
//!
//! In a worker a value is first a [`CellRef`], a view of SQLite's bytes,
//! measured and cut there and written into the reply; the server reads the
//! reply into `Cell`s, which travel unchanged to the edge, where the row
//! format encodes them once (`crate::mcp::rows`; the JSON form of a cell,
//! its `Serialize` impl, lives with the `json` format there).

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use rusqlite::types::ValueRef;

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    /// A text, possibly cut: `total_bytes` is the whole text's length in
    /// bytes, more than `text.len()` exactly when it was cut. (Invalid
    /// UTF-8 is shown with U+FFFD; the length of a cut one is SQLite's.)
    Text {
        text: Text,
        total_bytes: usize,
    },
    /// A BLOB, possibly cut: `total_bytes` is the whole BLOB's length.
    Blob {
        bytes: Bytes,
        total_bytes: usize,
    },
}

/// A cell's text: UTF-8, in bytes that may share one buffer with the other
/// values of its page (on the server, the buffer a worker's reply was read
/// into). Reads as a `str`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Text(Bytes);

impl Text {
    /// `bytes` must be UTF-8: every constructor checks it or starts from a
    /// `str`.
    fn from_utf8_unchecked(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Text(bytes)
    }

    /// A text from bytes that must be UTF-8 (checked): as a worker's
    /// answer carries it, in the buffer the answer was read into.
    pub(crate) fn from_utf8(bytes: Bytes) -> Option<Self> {
        simdutf8::basic::from_utf8(&bytes).ok()?;
        Some(Text(bytes))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: the bytes are UTF-8 (see `from_utf8_unchecked`), and
        // `truncate` cuts only at a character boundary.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    fn truncate(&mut self, max_bytes: usize) {
        let cut = floor_char_boundary(self.as_str(), max_bytes);
        self.0.truncate(cut);
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text(Bytes::from(text.into_bytes()))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl Cell {
    /// A whole text.
    pub fn text(text: impl Into<String>) -> Self {
        let text = text.into();
        let total_bytes = text.len();
        Cell::Text {
            text: text.into(),
            total_bytes,
        }
    }

    /// A whole BLOB.
    pub fn blob(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = Bytes::from(bytes.into());
        let total_bytes = bytes.len();
        Cell::Blob { bytes, total_bytes }
    }

    /// The cell as a [`CellRef`], borrowing its text or BLOB.
    pub fn as_ref(&self) -> CellRef<'_> {
        match self {
            Cell::Null => CellRef::Null,
            Cell::Integer(i) => CellRef::Integer(*i),
            Cell::Real(r) => CellRef::Real(*r),
            Cell::Text { text, total_bytes } => CellRef::Text {
                text: Cow::Borrowed(text.as_str()),
                total_bytes: *total_bytes,
            },
            Cell::Blob { bytes, total_bytes } => CellRef::Blob {
                bytes,
                total_bytes: *total_bytes,
            },
        }
    }

    /// Whether a text or BLOB lost its end.
    pub fn is_cut(&self) -> bool {
        self.as_ref().is_cut()
    }

    /// Bytes of a text or BLOB kept in the cell (0 for other values).
    pub fn shown_bytes(&self) -> usize {
        self.as_ref().shown_bytes()
    }

    /// Bytes of the whole text or BLOB (0 for other values).
    pub fn total_bytes(&self) -> usize {
        self.as_ref().total_bytes()
    }

    /// Cuts a text or BLOB to at most `max_bytes` (a text at a character
    /// boundary); other values are left as they are.
    pub fn cut_to(&mut self, max_bytes: usize) {
        match self {
            Cell::Text { text, .. } => text.truncate(max_bytes),
            Cell::Blob { bytes, .. } => bytes.truncate(max_bytes),
            _ => {}
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Cell::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// A value as read from SQLite and not yet kept: its text or BLOB borrowed
/// from the statement (valid until the next step), so that a page can
/// measure and cut a row before it keeps it, and a worker can encode it
/// for the socket without copying it into a [`Cell`] first.
#[derive(Debug, Clone, PartialEq)]
pub enum CellRef<'a> {
    Null,
    Integer(i64),
    Real(f64),
    /// As [`Cell::Text`]; owned only when invalid UTF-8 was replaced.
    Text {
        text: Cow<'a, str>,
        total_bytes: usize,
    },
    Blob {
        bytes: &'a [u8],
        total_bytes: usize,
    },
}

impl<'a> CellRef<'a> {
    /// Views `value`, keeping at most `max_bytes` of a text or BLOB.
    pub fn read(value: ValueRef<'a>, max_bytes: usize) -> Self {
        match value {
            ValueRef::Null => CellRef::Null,
            ValueRef::Integer(i) => CellRef::Integer(i),
            ValueRef::Real(r) => CellRef::Real(r),
            ValueRef::Text(bytes) => read_text(bytes, max_bytes),
            ValueRef::Blob(bytes) => CellRef::Blob {
                bytes: &bytes[..bytes.len().min(max_bytes)],
                total_bytes: bytes.len(),
            },
        }
    }

    /// The value kept, its text or BLOB copied (the server's own cells
    /// come from a worker's reply instead, `transfer::read_reply`).
    pub fn to_cell(&self) -> Cell {
        match self {
            CellRef::Null => Cell::Null,
            CellRef::Integer(i) => Cell::Integer(*i),
            CellRef::Real(r) => Cell::Real(*r),
            CellRef::Text { text, total_bytes } => Cell::Text {
                text: Text::from_utf8_unchecked(Bytes::copy_from_slice(text.as_bytes())),
                total_bytes: *total_bytes,
            },
            CellRef::Blob { bytes, total_bytes } => Cell::Blob {
                bytes: Bytes::copy_from_slice(bytes),
                total_bytes: *total_bytes,
            },
        }
    }

    /// Whether a text or BLOB lost its end.
    pub fn is_cut(&self) -> bool {
        self.shown_bytes() < self.total_bytes()
    }

    /// Bytes of a text or BLOB kept (0 for other values).
    pub fn shown_bytes(&self) -> usize {
        match self {
            CellRef::Text { text, .. } => text.len(),
            CellRef::Blob { bytes, .. } => bytes.len(),
            _ => 0,
        }
    }

    /// Bytes of the whole text or BLOB (0 for other values).
    pub fn total_bytes(&self) -> usize {
        match self {
            CellRef::Text { total_bytes, .. } | CellRef::Blob { total_bytes, .. } => *total_bytes,
            _ => 0,
        }
    }

    /// Cuts a text or BLOB to at most `max_bytes` (a text at a character
    /// boundary); other values are left as they are.
    pub fn cut_to(&mut self, max_bytes: usize) {
        match self {
            CellRef::Text { text, .. } => {
                let cut = floor_char_boundary(text, max_bytes);
                match text {
                    Cow::Borrowed(borrowed) => *borrowed = &borrowed[..cut],
                    Cow::Owned(owned) => owned.truncate(cut),
                }
            }
            CellRef::Blob { bytes, .. } => *bytes = &bytes[..bytes.len().min(max_bytes)],
            _ => {}
        }
    }
}

fn read_text(bytes: &[u8], max_bytes: usize) -> CellRef<'_> {
    let whole = bytes.len() <= max_bytes;
    let kept = &bytes[..bytes.len().min(max_bytes)];
    let total_bytes = |shown: usize| if whole { shown } else { bytes.len() };
    // The usual case: valid, and no longer than `max_bytes`. (simdutf8
    // checks a text about ten times faster than `str::from_utf8`, which
    // was a twelfth of what a thousand rows of posts cost; its error says
    // only that the text is invalid, so std looks again to say where.)
    if let Ok(text) = simdutf8::basic::from_utf8(kept) {
        return CellRef::Text {
            text: Cow::Borrowed(text),
            total_bytes: total_bytes(text.len()),
        };
    }
    let mut text = match std::str::from_utf8(kept) {
        // Not reached (both agree on what UTF-8 is), but never a panic.
        Ok(text) => text.to_owned(),
        // The cut split a character: drop its first bytes.
        Err(err) if !whole && err.error_len().is_none() => {
            String::from_utf8_lossy(&kept[..err.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(kept).into_owned(),
    };
    // A replacement character is longer than the byte it replaces: the
    // whole text, as shown, is what a whole value's length counts.
    let total_bytes = total_bytes(text.len());
    text.truncate(floor_char_boundary(&text, max_bytes));
    CellRef::Text {
        text: Cow::Owned(text),
        total_bytes,
    }
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: ValueRef<'_>, max_bytes: usize) -> Cell {
        CellRef::read(value, max_bytes).to_cell()
    }

    #[test]
    fn values_keep_the_type_sqlite_gave_them() {
        assert_eq!(read(ValueRef::Null, 10), Cell::Null);
        assert_eq!(read(ValueRef::Integer(-3), 10), Cell::Integer(-3));
        assert_eq!(read(ValueRef::Real(0.5), 10), Cell::Real(0.5));
        assert_eq!(read(ValueRef::Text(b"hi"), 10), Cell::text("hi"));
        assert_eq!(read(ValueRef::Blob(&[0, 1]), 10), Cell::blob([0, 1]));
    }

    #[test]
    fn a_long_text_is_cut_and_keeps_its_whole_length() {
        let cell = read(ValueRef::Text(b"abcdef"), 4);
        assert_eq!(
            cell,
            Cell::Text {
                text: "abcd".into(),
                total_bytes: 6
            }
        );
        assert!(cell.is_cut());
    }

    #[test]
    fn a_text_is_cut_at_a_character_boundary() {
        // "é" is two bytes: a cut after three keeps one character.
        let cell = read(ValueRef::Text("aéé".as_bytes()), 4);
        assert_eq!(cell.as_text(), Some("aé"));
        assert_eq!(cell.total_bytes(), 5);
    }

    #[test]
    fn a_long_blob_is_cut_and_keeps_its_whole_length() {
        let cell = read(ValueRef::Blob(&[1, 2, 3, 4, 5]), 2);
        assert_eq!(
            cell,
            Cell::Blob {
                bytes: vec![1, 2].into(),
                total_bytes: 5
            }
        );
        assert!(cell.is_cut());
    }

    #[test]
    fn invalid_utf8_is_shown_with_replacement_characters() {
        let cell = read(ValueRef::Text(b"a\xffb"), 100);
        assert_eq!(cell.as_text(), Some("a\u{fffd}b"));
        assert!(!cell.is_cut());
    }

    #[test]
    fn cutting_further_shortens_a_value_in_place() {
        let mut cell = Cell::text("héllo");
        cell.cut_to(2);
        assert_eq!(cell.as_text(), Some("h"));
        assert!(cell.is_cut());
        let mut number = Cell::Integer(7);
        number.cut_to(0);
        assert_eq!(number, Cell::Integer(7));
    }

    #[test]
    fn a_view_is_cut_at_a_character_boundary_whether_borrowed_or_replaced() {
        let mut borrowed = CellRef::read(ValueRef::Text("héllo".as_bytes()), 100);
        borrowed.cut_to(2);
        assert_eq!(borrowed.to_cell().as_text(), Some("h"));
        assert_eq!(borrowed.total_bytes(), 6);
        assert!(borrowed.is_cut());
        // Invalid UTF-8 is replaced (U+FFFD, three bytes) in an owned text.
        let replaced = CellRef::read(ValueRef::Text(b"a\xffbcd"), 100);
        assert!(matches!(
            &replaced,
            CellRef::Text {
                text: Cow::Owned(_),
                ..
            }
        ));
        let mut inside = replaced.clone();
        inside.cut_to(3);
        assert_eq!(inside.to_cell().as_text(), Some("a"));
        let mut after = replaced;
        after.cut_to(4);
        assert_eq!(after.to_cell().as_text(), Some("a\u{fffd}"));
        assert_eq!(after.total_bytes(), 7);
        assert!(after.is_cut());
    }
}
