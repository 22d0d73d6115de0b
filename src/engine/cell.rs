//! The engine's value model: one [`Cell`] per SQLite value in a result,
//! typed as SQLite typed it, a long text or BLOB cut while it is read.
//!
//! Cells travel unchanged from here to the edge, where the row format
//! encodes them once (`crate::mcp::rows`; the JSON form of a cell, its
//! `Serialize` impl, lives with the `json` format there).

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
        text: String,
        total_bytes: usize,
    },
    /// A BLOB, possibly cut: `total_bytes` is the whole BLOB's length.
    Blob {
        bytes: Vec<u8>,
        total_bytes: usize,
    },
}

impl Cell {
    /// A whole text.
    pub fn text(text: impl Into<String>) -> Self {
        let text = text.into();
        let total_bytes = text.len();
        Cell::Text { text, total_bytes }
    }

    /// A whole BLOB.
    pub fn blob(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        let total_bytes = bytes.len();
        Cell::Blob { bytes, total_bytes }
    }

    /// Reads `value`, keeping at most `max_bytes` of a text or BLOB: no
    /// more than that is ever copied, however long the value.
    pub fn read(value: ValueRef<'_>, max_bytes: usize) -> Self {
        match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Integer(i),
            ValueRef::Real(r) => Cell::Real(r),
            ValueRef::Text(bytes) => read_text(bytes, max_bytes),
            ValueRef::Blob(bytes) => Cell::Blob {
                bytes: bytes[..bytes.len().min(max_bytes)].to_vec(),
                total_bytes: bytes.len(),
            },
        }
    }

    /// Whether a text or BLOB lost its end.
    pub fn is_cut(&self) -> bool {
        self.shown_bytes() < self.total_bytes()
    }

    /// Bytes of a text or BLOB kept in the cell (0 for other values).
    pub fn shown_bytes(&self) -> usize {
        match self {
            Cell::Text { text, .. } => text.len(),
            Cell::Blob { bytes, .. } => bytes.len(),
            _ => 0,
        }
    }

    /// Bytes of the whole text or BLOB (0 for other values).
    pub fn total_bytes(&self) -> usize {
        match self {
            Cell::Text { total_bytes, .. } | Cell::Blob { total_bytes, .. } => *total_bytes,
            _ => 0,
        }
    }

    /// Cuts a text or BLOB to at most `max_bytes` (a text at a character
    /// boundary); other values are left as they are.
    pub fn cut_to(&mut self, max_bytes: usize) {
        match self {
            Cell::Text { text, .. } => text.truncate(floor_char_boundary(text, max_bytes)),
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

fn read_text(bytes: &[u8], max_bytes: usize) -> Cell {
    let whole = bytes.len() <= max_bytes;
    let kept = &bytes[..bytes.len().min(max_bytes)];
    let mut text = match std::str::from_utf8(kept) {
        Ok(text) => text.to_owned(),
        // The cut split a character: drop its first bytes.
        Err(err) if !whole && err.error_len().is_none() => {
            String::from_utf8_lossy(&kept[..err.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(kept).into_owned(),
    };
    // A replacement character is longer than the byte it replaces: the
    // whole text, as shown, is what a whole value's length counts.
    let total_bytes = if whole { text.len() } else { bytes.len() };
    text.truncate(floor_char_boundary(&text, max_bytes));
    Cell::Text { text, total_bytes }
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

    #[test]
    fn values_keep_the_type_sqlite_gave_them() {
        assert_eq!(Cell::read(ValueRef::Null, 10), Cell::Null);
        assert_eq!(Cell::read(ValueRef::Integer(-3), 10), Cell::Integer(-3));
        assert_eq!(Cell::read(ValueRef::Real(0.5), 10), Cell::Real(0.5));
        assert_eq!(Cell::read(ValueRef::Text(b"hi"), 10), Cell::text("hi"));
        assert_eq!(Cell::read(ValueRef::Blob(&[0, 1]), 10), Cell::blob([0, 1]));
    }

    #[test]
    fn a_long_text_is_cut_and_keeps_its_whole_length() {
        let cell = Cell::read(ValueRef::Text(b"abcdef"), 4);
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
        let cell = Cell::read(ValueRef::Text("aéé".as_bytes()), 4);
        assert_eq!(cell.as_text(), Some("aé"));
        assert_eq!(cell.total_bytes(), 5);
    }

    #[test]
    fn a_long_blob_is_cut_and_keeps_its_whole_length() {
        let cell = Cell::read(ValueRef::Blob(&[1, 2, 3, 4, 5]), 2);
        assert_eq!(
            cell,
            Cell::Blob {
                bytes: vec![1, 2],
                total_bytes: 5
            }
        );
        assert!(cell.is_cut());
    }

    #[test]
    fn invalid_utf8_is_shown_with_replacement_characters() {
        let cell = Cell::read(ValueRef::Text(b"a\xffb"), 100);
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
}
