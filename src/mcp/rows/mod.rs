//! Row formats: how a query's rows reach the client. One [`RowEncoder`] per
//! [`RowFormat`], picked once at startup by [`encoder`]; it encodes query
//! answers, counts their bytes for the engine ([`WireSize`]), and says how
//! tools returning rows are described.
//!
//! - [`csv`]: typed CSV as text, the default.
//! - [`json`]: structured content plus the same JSON as text; also the form
//!   of every other result, `execute`'s RETURNING rows included.

pub mod csv;
pub mod json;
mod numbers;

use std::sync::Arc;

use rmcp::model::{CallToolResult, JsonObject};

pub use self::csv::CsvRows;
pub use self::json::JsonRows;
use crate::engine::{QueryOutput, WireSize};

/// One row format.
pub trait RowEncoder: WireSize {
    /// The tool result an agent gets for `output`.
    fn encode(&self, output: &QueryOutput) -> Result<CallToolResult, serde_json::Error>;
    /// How the rows read, appended to the description of each tool that
    /// returns them (`query`, declared read tools).
    fn describe_rows(&self) -> &'static str;
    /// How `query` answers, for the server's instructions.
    fn instructions(&self) -> &'static str;
    /// The output schema of a tool returning rows; none when the rows are text.
    fn output_schema(&self) -> Option<Arc<JsonObject>>;
}

/// How query rows are sent to agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowFormat {
    /// One text block of typed CSV plus a line of metadata: one copy of the
    /// rows, read by every client (see [`crate::mcp::rows::csv`]).
    #[default]
    Csv,
    /// `structuredContent` with an output schema, and the same JSON again
    /// as text for clients that read only text: for programs, not models.
    Json,
}

/// The encoder for `format`.
pub fn encoder(format: RowFormat) -> &'static dyn RowEncoder {
    match format {
        RowFormat::Csv => &CsvRows,
        RowFormat::Json => &JsonRows,
    }
}

/// Every row format, as a worker process is started with them
/// (`engine::host`).
pub const FORMATS: [&dyn WireSize; 2] = [&CsvRows, &JsonRows];

/// How RETURNING rows are counted: `execute` answers with structured JSON
/// (its output schema) in either row format.
pub const RETURNING: &dyn WireSize = &JsonRows;
