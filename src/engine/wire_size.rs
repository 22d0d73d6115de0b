//! What rows cost on the wire, as the row format that will send them counts
//! it: the engine asks while it steps, so `EROS_DB_MAX_BYTES` caps the bytes
//! an answer really takes and the engine stays ignorant of formats.

use super::CellRef;

/// The byte counts of one row format (`crate::mcp::rows` implements it for
/// each). Counts are exact for rows; the fixed part may count a little
/// more than a given answer needs (the longest trailer it could get).
pub trait WireSize: Send + Sync {
    /// The format's name, by which a worker process finds the same format
    /// among the ones it was started with (`engine::host`).
    fn name(&self) -> &'static str;
    /// Bytes of an answer with these columns and no rows: header or
    /// envelope, plus the longest trailer (row count, cursor) it can get.
    fn empty_answer(&self, columns: &[String]) -> usize;
    /// Bytes a row of `width` cells adds beside its cells: separators,
    /// brackets, line end.
    fn row_frame(&self, width: usize) -> usize;
    /// Bytes one cell takes.
    fn cell(&self, cell: &CellRef<'_>) -> usize;
}
