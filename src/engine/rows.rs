//! The rows of a result: every cell in one vector, row after row, and the
//! row width, rather than a vector per row (a thousand rows were a
//! thousand allocations and frees a call, a sixth of what reading them
//! cost). Reads as a list of rows, `&[Cell]` each.

use std::fmt;
use std::ops::Index;

use schemars::JsonSchema;
use serde::ser::{Serialize, SerializeSeq, Serializer};

use super::Cell;

/// Rows of `width` cells.
#[derive(Clone, PartialEq, Default)]
pub struct Rows {
    width: usize,
    len: usize,
    cells: Vec<Cell>,
}

impl Rows {
    /// No rows yet, room for `rows` of them.
    pub fn with_capacity(width: usize, rows: usize) -> Self {
        Self {
            width,
            len: 0,
            cells: Vec::with_capacity(width * rows),
        }
    }

    /// Rows from a list of rows, all as wide as the first.
    pub fn from_rows(rows: Vec<Vec<Cell>>) -> Self {
        let width = rows.first().map_or(0, Vec::len);
        let mut out = Self::with_capacity(width, rows.len());
        for row in rows {
            assert_eq!(row.len(), width, "every row has the same width");
            out.cells.extend(row);
            out.len += 1;
        }
        out
    }

    /// Rows of `width` from `len * width` cells, row after row.
    pub(crate) fn from_cells(width: usize, len: usize, cells: Vec<Cell>) -> Option<Self> {
        (cells.len() == width * len).then_some(Self { width, len, cells })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Cells in a row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The rows in order.
    pub fn iter(&self) -> RowsIter<'_> {
        RowsIter {
            rows: self,
            next: 0,
        }
    }

    /// Every cell, row after row.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// The rows as a list of rows.
    #[cfg(test)]
    fn to_vecs(&self) -> Vec<Vec<Cell>> {
        self.iter().map(<[Cell]>::to_vec).collect()
    }
}

/// The rows of [`Rows`] in order.
pub struct RowsIter<'r> {
    rows: &'r Rows,
    next: usize,
}

impl<'r> Iterator for RowsIter<'r> {
    type Item = &'r [Cell];

    fn next(&mut self) -> Option<&'r [Cell]> {
        let rows = self.rows;
        (self.next < rows.len).then(|| {
            self.next += 1;
            &rows.cells[(self.next - 1) * rows.width..self.next * rows.width]
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.rows.len - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for RowsIter<'_> {}

impl<'r> IntoIterator for &'r Rows {
    type Item = &'r [Cell];
    type IntoIter = RowsIter<'r>;

    fn into_iter(self) -> RowsIter<'r> {
        self.iter()
    }
}

impl Index<usize> for Rows {
    type Output = [Cell];

    fn index(&self, row: usize) -> &[Cell] {
        assert!(row < self.len, "row {row} of {}", self.len);
        &self.cells[row * self.width..(row + 1) * self.width]
    }
}

impl From<Vec<Vec<Cell>>> for Rows {
    fn from(rows: Vec<Vec<Cell>>) -> Self {
        Self::from_rows(rows)
    }
}

impl PartialEq<Vec<Vec<Cell>>> for Rows {
    fn eq(&self, other: &Vec<Vec<Cell>>) -> bool {
        self.len == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_slice())
    }
}

impl fmt::Debug for Rows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A list of rows, each a list of cells, as `Vec<Vec<Cell>>` would be.
impl Serialize for Rows {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for row in self.iter() {
            seq.serialize_element(row)?;
        }
        seq.end()
    }
}

impl JsonSchema for Rows {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <Vec<Vec<Cell>>>::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Vec<Vec<Cell>>>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_by_two() -> Rows {
        Rows::from_rows(vec![
            vec![Cell::Integer(1), Cell::text("a")],
            vec![Cell::Integer(2), Cell::Null],
        ])
    }

    #[test]
    fn rows_read_back_in_order() {
        let rows = two_by_two();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], [Cell::Integer(2), Cell::Null]);
        assert_eq!(rows.iter().map(|row| row.len()).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(
            rows.to_vecs(),
            vec![
                vec![Cell::Integer(1), Cell::text("a")],
                vec![Cell::Integer(2), Cell::Null],
            ]
        );
    }

    #[test]
    fn rows_serialize_as_a_list_of_rows() {
        let vecs = two_by_two().to_vecs();
        assert_eq!(
            serde_json::to_value(two_by_two()).unwrap(),
            serde_json::to_value(vecs).unwrap()
        );
    }

    #[test]
    fn rows_of_no_columns_are_counted() {
        let rows = Rows::from_cells(0, 2, Vec::new()).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(<[Cell]>::is_empty));
    }
}
