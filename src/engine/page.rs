//! A page of result rows under the answer's caps: at most `max_rows` rows
//! and `max_bytes` bytes as the row format will send them ([`WireSize`]).
//!
//! Values are cut while they are read, never copied whole and cut after: a
//! row of fifty 2 MB values costs what is left of the budget, not 100 MB.
//! The first row always comes back (its values cut to fit); a later row
//! that does not fit whole is left for the next page.

use rusqlite::types::ValueRef;

use super::{CellRef, WireSize};

/// Where the rows of a page go once each is known to fit: encoded for the
/// socket as they come in a worker (`transfer::WireRows`), so a value is
/// copied once, from SQLite into the reply.
pub(crate) trait PageSink {
    /// Keeps a row: its cells, and the bytes each takes in the row format.
    fn push_row(&mut self, cells: &[CellRef<'_>], bytes: &[usize]);
}

/// The caps of one answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageLimits {
    pub max_rows: usize,
    /// Bytes of the encoded answer (`EROS_DB_MAX_BYTES`).
    pub max_bytes: usize,
    /// Bytes a BLOB shows of itself, however much room is left.
    pub max_blob_bytes: usize,
}

/// Rows read for one answer, kept in `rows`.
#[derive(Debug)]
pub(crate) struct Page<S> {
    pub rows: S,
    /// Rows kept.
    pub len: usize,
    /// A further row exists; it was left for the next page.
    pub more: bool,
    /// A value was cut, to its cap or to the room the first row had.
    pub value_cut: bool,
}

/// A query's page as a worker read it, its rows in the sink they went to
/// (the server receives it as a `QueryOutput`).
#[derive(Debug)]
pub(crate) struct QueryPage<S> {
    pub columns: Vec<String>,
    pub rows: S,
    pub row_count: usize,
    pub truncated: bool,
    pub next_cursor: Option<String>,
}

/// A write's outcome as a worker read it, its RETURNING rows in the sink
/// they went to (the server receives it as an `ExecuteOutput`).
#[derive(Debug)]
pub(crate) struct ExecutePage<S> {
    pub changes: u64,
    pub last_insert_rowid: i64,
    pub columns: Vec<String>,
    pub rows: S,
    pub truncated: bool,
}

/// Reads rows from `rows` into `sink` until a cap is reached.
pub(crate) fn read_page<S: PageSink>(
    rows: &mut rusqlite::Rows<'_>,
    columns: &[String],
    limits: PageLimits,
    wire: &dyn WireSize,
    sink: S,
) -> rusqlite::Result<Page<S>> {
    let width = columns.len();
    let mut budget = limits.max_bytes.saturating_sub(wire.empty_answer(columns));
    let mut page = Page {
        rows: sink,
        len: 0,
        more: false,
        value_cut: false,
    };
    // The row being read, as views of SQLite's values (valid until the
    // next step); its vectors are reused from row to row.
    let mut spare: Vec<CellRef<'static>> = Vec::with_capacity(width);
    let mut bytes = Vec::with_capacity(width);
    'rows: while let Some(row) = rows.next()? {
        if page.len >= limits.max_rows {
            page.more = true;
            break;
        }
        let first = page.len == 0;
        let mut cells = reuse(std::mem::take(&mut spare));
        bytes.clear();
        let mut size = wire.row_frame(width);
        for i in 0..width {
            let value = row.get_ref(i).unwrap_or(ValueRef::Null);
            let cap = match value {
                ValueRef::Blob(_) => limits.max_blob_bytes,
                _ => limits.max_bytes,
            };
            let room = budget.saturating_sub(size);
            // Every format spends at least a byte on each byte shown: no
            // more than `room` bytes are ever kept.
            let mut cell = CellRef::read(value, cap.min(room));
            let cell_bytes = fit(&mut cell, room, wire);
            let cut_for_room = cell.shown_bytes() < cell.total_bytes().min(cap);
            if cut_for_room && !first {
                page.more = true;
                break 'rows;
            }
            size += cell_bytes;
            cells.push(cell);
            bytes.push(cell_bytes);
        }
        if size > budget {
            if !first {
                page.more = true;
                break;
            }
            // The values after the one that took the room still cost
            // something (quotes, NULL): cut the longest values to pay it.
            size = fit_row(&mut cells, &mut bytes, size, budget, wire);
        }
        budget = budget.saturating_sub(size);
        page.value_cut |= cells.iter().any(CellRef::is_cut);
        page.rows.push_row(&cells, &bytes);
        page.len += 1;
        spare = reuse(cells);
    }
    Ok(page)
}

/// `cells`, emptied, as a vector of views that may borrow from another
/// row: the same allocation (an empty vector collected in place).
fn reuse<'to>(mut cells: Vec<CellRef<'_>>) -> Vec<CellRef<'to>> {
    cells.clear();
    cells.into_iter().map(|_| unreachable!()).collect()
}

/// Cuts `cell` until it takes at most `room` bytes on the wire, as far as
/// cutting can; returns its wire size.
fn fit(cell: &mut CellRef<'_>, room: usize, wire: &dyn WireSize) -> usize {
    let mut bytes = wire.cell(cell);
    while bytes > room && cell.shown_bytes() > 0 {
        // Cut in proportion to the excess (escapes and quotes make it
        // uneven, hence the loop), at least one byte at a time.
        let shown = cell.shown_bytes();
        let fits = (shown as u128 * room as u128 / bytes as u128) as usize;
        cell.cut_to(fits.min(shown - 1));
        bytes = wire.cell(cell);
    }
    bytes
}

/// Cuts the longest values of a row of `size` bytes (`bytes` a cell)
/// until it takes at most `budget`, as far as cutting can; returns its new
/// size.
fn fit_row(
    cells: &mut [CellRef<'_>],
    bytes: &mut [usize],
    mut size: usize,
    budget: usize,
    wire: &dyn WireSize,
) -> usize {
    while size > budget {
        let Some((longest, cell)) = cells
            .iter_mut()
            .enumerate()
            .filter(|(_, cell)| cell.shown_bytes() > 0)
            .max_by_key(|(_, cell)| cell.shown_bytes())
        else {
            break;
        };
        let before = bytes[longest];
        let after = fit(cell, before.saturating_sub(size - budget), wire);
        bytes[longest] = after;
        size = size - before + after;
    }
    size
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::engine::{Cell, Rows};

    /// Rows kept as cells, with the bytes each was counted at.
    #[derive(Default)]
    struct Kept {
        cells: Vec<Cell>,
        cell_bytes: Vec<usize>,
    }

    impl PageSink for Kept {
        fn push_row(&mut self, cells: &[CellRef<'_>], bytes: &[usize]) {
            for cell in cells {
                self.cells.push(cell.to_cell());
            }
            self.cell_bytes.extend_from_slice(bytes);
        }
    }

    /// A page's rows and the bytes each cell was counted at.
    struct Read {
        rows: Rows,
        cell_bytes: Vec<usize>,
        len: usize,
        more: bool,
        value_cut: bool,
    }

    /// A format that spends one byte per byte shown, one per other value,
    /// and one per row (`transfer`'s tests use it too).
    pub(crate) struct Plain;

    impl WireSize for Plain {
        fn name(&self) -> &'static str {
            "plain"
        }

        fn empty_answer(&self, _: &[String]) -> usize {
            0
        }
        fn row_frame(&self, _: usize) -> usize {
            1
        }
        fn cell(&self, cell: &CellRef<'_>) -> usize {
            cell.shown_bytes().max(1)
        }
    }

    fn page(sql: &str, limits: PageLimits) -> Read {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let mut rows = stmt.raw_query();
        let page = read_page(&mut rows, &columns, limits, &Plain, Kept::default()).unwrap();
        Read {
            rows: Rows::from_cells(columns.len(), page.len, page.rows.cells).unwrap(),
            cell_bytes: page.rows.cell_bytes,
            len: page.len,
            more: page.more,
            value_cut: page.value_cut,
        }
    }

    const LIMITS: PageLimits = PageLimits {
        max_rows: 100,
        max_bytes: 100,
        max_blob_bytes: 8,
    };

    const TEN_ROWS: &str =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) \
         SELECT printf('%.19c', 'a') FROM c";

    #[test]
    fn rows_stop_before_the_byte_budget_is_passed() {
        // Each row costs 20 bytes: five fit in 100.
        let page = page(TEN_ROWS, LIMITS);
        assert_eq!(page.len, 5);
        assert!(page.more);
        assert!(!page.value_cut);
    }

    #[test]
    fn rows_stop_at_the_row_cap() {
        let page = page(
            TEN_ROWS,
            PageLimits {
                max_rows: 3,
                ..LIMITS
            },
        );
        assert_eq!(page.len, 3);
        assert!(page.more);
    }

    #[test]
    fn a_first_row_too_big_is_cut_to_the_budget() {
        let page = page("SELECT printf('%.500c', 'a'), 'b'", LIMITS);
        assert_eq!(page.len, 1);
        assert!(page.value_cut);
        assert!(!page.more);
        let used: usize = 1 + page.rows[0]
            .iter()
            .map(|c| Plain.cell(&c.as_ref()))
            .sum::<usize>();
        assert!(used <= 100, "{used} bytes");
        assert_eq!(page.rows[0][0].total_bytes(), 500);
    }

    #[test]
    fn a_later_row_too_big_is_left_for_the_next_page() {
        let page = page(
            "SELECT 'small' UNION ALL SELECT printf('%.500c', 'a')",
            LIMITS,
        );
        assert_eq!(page.rows, vec![vec![Cell::text("small")]]);
        assert!(page.more);
        assert!(!page.value_cut);
    }

    #[test]
    fn each_cell_kept_has_its_wire_size_and_no_other_does() {
        // A first row cut to fit, then rows stopped by the byte budget.
        for sql in ["SELECT printf('%.500c', 'a'), 'b', NULL", TEN_ROWS] {
            let read = page(sql, LIMITS);
            let sizes: Vec<usize> = read
                .rows
                .cells()
                .iter()
                .map(|c| Plain.cell(&c.as_ref()))
                .collect();
            assert_eq!(read.cell_bytes, sizes, "{sql}");
        }
    }

    #[test]
    fn a_blob_is_cut_to_its_cap_whatever_the_room() {
        let page = page("SELECT x'00010203040506070809'", LIMITS);
        assert_eq!(page.rows[0][0].shown_bytes(), 8);
        assert!(page.value_cut);
        assert!(!page.more);
    }

    #[test]
    fn the_next_row_reuses_the_allocation_of_the_row_before() {
        let text = String::from("a row's value");
        let mut row: Vec<CellRef<'_>> = Vec::with_capacity(8);
        row.push(CellRef::Text {
            text: text.as_str().into(),
            total_bytes: text.len(),
        });
        let at = row.as_ptr() as usize;
        let next: Vec<CellRef<'static>> = reuse(row);
        assert!(next.is_empty());
        assert_eq!(next.capacity(), 8);
        assert_eq!(next.as_ptr() as usize, at);
    }
}
