//! The JSON line of a `tools/call` answer, written here rather than by
//! serde: a query's rows travel as one long text (350 KB for 1,000 posts),
//! and serde_json escapes a string a byte at a time through a table, which
//! was 30% of such a call's cost. [`push_json_string`] scans sixteen bytes
//! at a time and copies runs that need no escape whole.
//!
//! Only the shape every tool answer has is written here (text blocks
//! without annotations, structured content, `isError`); anything else is
//! left to serde. The bytes are the same as serde_json's (tests below).

use std::io::Write;

use rmcp::model::{CallToolResult, ContentBlock, JsonRpcMessage, NumberOrString, ServerResult};
use rmcp::service::TxJsonRpcMessage;
use rmcp::RoleServer;

/// Writes `item` into `out` when it is a tool answer of the common shape;
/// returns false, leaving `out` as it was, otherwise.
pub(crate) fn write_tool_answer(item: &TxJsonRpcMessage<RoleServer>, out: &mut Vec<u8>) -> bool {
    let JsonRpcMessage::Response(response) = item else {
        return false;
    };
    let ServerResult::CallToolResult(result) = &response.result else {
        return false;
    };
    if !is_plain(result) {
        return false;
    }
    // One allocation for the whole line in the usual case (few escapes).
    let texts: usize = result
        .content
        .iter()
        .filter_map(ContentBlock::as_text)
        .map(|t| t.text.len())
        .sum();
    out.reserve(texts + 128);
    let start = out.len();
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    match &response.id {
        NumberOrString::Number(n) => {
            // Writing into a `Vec` cannot fail.
            let _ = write!(out, "{n}");
        }
        NumberOrString::String(s) => push_json_string(out, s),
    }
    out.extend_from_slice(br#","result":{"#);
    if let Some(kind) = &result.result_type {
        out.extend_from_slice(br#""resultType":"#);
        push_json_string(out, kind.as_str());
        out.push(b',');
    }
    out.extend_from_slice(br#""content":["#);
    for (i, block) in result.content.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"type":"text","text":"#);
        // Every block is text (`is_plain`).
        if let ContentBlock::Text(text) = block {
            push_json_string(out, &text.text);
        }
        out.push(b'}');
    }
    out.push(b']');
    if let Some(structured) = &result.structured_content {
        out.extend_from_slice(br#","structuredContent":"#);
        // A `Value` into a `Vec` does not fail (its keys are strings); if
        // it ever did, serde gets the whole message and reports it.
        if serde_json::to_writer(&mut *out, structured).is_err() {
            out.truncate(start);
            return false;
        }
    }
    if let Some(is_error) = result.is_error {
        out.extend_from_slice(if is_error {
            br#","isError":true"#
        } else {
            br#","isError":false"#
        });
    }
    out.extend_from_slice(b"}}");
    true
}

/// Every block is text without annotations or `_meta`, and the result has
/// no `_meta`: the shape [`write_tool_answer`] writes.
fn is_plain(result: &CallToolResult) -> bool {
    result.meta.is_none()
        && result.content.iter().all(|block| {
            matches!(block, ContentBlock::Text(text) if text.meta.is_none() && text.annotations.is_none())
        })
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it.
pub(crate) fn push_json_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // `copied`: the bytes before it are in `out`.
    let mut copied = 0;
    let mut blocks = bytes.chunks_exact(16);
    for (block, chunk) in blocks.by_ref().enumerate() {
        let mut escapes = escapes_in(chunk.try_into().expect("sixteen bytes"));
        while escapes != 0 {
            let i = block * 16 + escapes.trailing_zeros() as usize;
            copied = escape_at(out, bytes, i, copied);
            escapes &= escapes - 1;
        }
    }
    for i in bytes.len() - blocks.remainder().len()..bytes.len() {
        if needs_escape(bytes[i]) {
            copied = escape_at(out, bytes, i, copied);
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The bytes of `block` that need an escape, bit `k` for byte `k`: sixteen
/// compared at once with SSE2, which every x86-64 processor has.
#[cfg(target_arch = "x86_64")]
fn escapes_in(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, so these instructions
    // exist on every processor this code runs on; the load is unaligned
    // and reads exactly the sixteen bytes of `block`.
    unsafe {
        let bytes = _mm_loadu_si128(block.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
        // Unsigned `byte <= 0x1f` is `max(byte, 0x1f) == 0x1f`.
        let below_space = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(bytes, below_space), below_space);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

/// As the SSE2 version, a byte at a time, for other processors (and as
/// the reference in tests).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn escapes_in_bytewise(block: &[u8; 16]) -> u32 {
    block
        .iter()
        .enumerate()
        .filter(|(_, &byte)| needs_escape(byte))
        .fold(0, |mask, (k, _)| mask | 1 << k)
}

#[cfg(not(target_arch = "x86_64"))]
use escapes_in_bytewise as escapes_in;

/// Escapes `bytes[i]` if it needs it, first copying what lies between
/// `copied` and it; returns the new `copied`.
#[inline]
fn escape_at(out: &mut Vec<u8>, bytes: &[u8], i: usize, copied: usize) -> usize {
    let byte = bytes[i];
    let escape: &[u8] = match byte {
        b'"' => br#"\""#,
        b'\\' => br"\\",
        b'\n' => br"\n",
        b'\r' => br"\r",
        b'\t' => br"\t",
        0x08 => br"\b",
        0x0c => br"\f",
        0..=0x1f => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&bytes[copied..i]);
            out.extend_from_slice(br"\u00");
            out.push(HEX[(byte >> 4) as usize]);
            out.push(HEX[(byte & 0xf) as usize]);
            return i + 1;
        }
        _ => return copied,
    };
    out.extend_from_slice(&bytes[copied..i]);
    out.extend_from_slice(escape);
    i + 1
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rmcp::model::{JsonRpcResponse, JsonRpcVersion2_0, TextContent};

    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        push_json_string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    fn answer(id: NumberOrString, result: CallToolResult) -> TxJsonRpcMessage<RoleServer> {
        JsonRpcMessage::Response(JsonRpcResponse {
            jsonrpc: JsonRpcVersion2_0,
            id,
            result: ServerResult::CallToolResult(result),
        })
    }

    /// The line as written here, checked against serde_json's.
    fn written(item: &TxJsonRpcMessage<RoleServer>) -> String {
        let mut out = Vec::new();
        assert!(write_tool_answer(item, &mut out), "not written here");
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line, serde_json::to_string(item).unwrap());
        line
    }

    #[test]
    fn every_byte_is_escaped_as_serde_json_escapes_it() {
        let every: String = (0u8..=0x7f).map(char::from).collect();
        for text in [
            every.clone(),
            format!("é{every}ü✓"),
            "plain text longer than one word".into(),
            String::new(),
            "\"".into(),
            "ab\\cdefgh\"ijklmnop\u{1f}".into(),
        ] {
            assert_eq!(escaped(&text), serde_json::to_string(&text).unwrap());
        }
    }

    #[test]
    fn the_block_scan_marks_exactly_the_bytes_that_need_an_escape() {
        for byte in 0..=u8::MAX {
            for at in 0..16 {
                let mut block = [b'a'; 16];
                block[at] = byte;
                let expected = if needs_escape(byte) { 1 << at } else { 0 };
                assert_eq!(escapes_in(&block), expected, "{byte:#x} at {at}");
                assert_eq!(escapes_in_bytewise(&block), expected, "{byte:#x} at {at}");
            }
        }
        assert_eq!(escapes_in(b"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\""), 0xffff);
    }

    #[test]
    fn an_escape_at_every_offset_of_a_block_is_found() {
        for len in 0..36 {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
                    let mut text: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789"[..len]
                        .chars()
                        .collect();
                    text[at] = special;
                    let text: String = text.into_iter().collect();
                    assert_eq!(escaped(&text), serde_json::to_string(&text).unwrap());
                }
            }
        }
    }

    #[test]
    fn a_csv_answer_is_the_line_serde_json_writes() {
        let rows = "id,title\n1,\"a, \"\"quoted\"\" title\"\n2,tab\there\n";
        let result = CallToolResult::success(vec![
            ContentBlock::text(rows),
            ContentBlock::text(r#"{"row_count":2,"truncated":false}"#),
        ]);
        let line = written(&answer(NumberOrString::Number(7), result));
        assert!(
            line.starts_with(r#"{"jsonrpc":"2.0","id":7,"result":{"#),
            "{line}"
        );
    }

    #[test]
    fn errors_structured_content_and_string_ids_are_written_as_serde_json_writes_them() {
        let error = CallToolResult::error(vec![ContentBlock::text("SQL_ERROR: no such table")]);
        written(&answer(
            NumberOrString::String(Arc::from("req-\"1\"")),
            error,
        ));
        let structured = CallToolResult::structured(serde_json::json!({
            "rows": [[1, "x\ny", null, 0.5]], "truncated": false
        }));
        written(&answer(NumberOrString::Number(-1), structured));
        let mut bare = CallToolResult::success(vec![]);
        bare.result_type = None;
        bare.is_error = None;
        written(&answer(NumberOrString::Number(i64::MAX), bare));
    }

    #[test]
    fn other_shapes_are_left_to_serde() {
        let annotated: TextContent = serde_json::from_value(
            serde_json::json!({"text": "x", "annotations": {"priority": 0.5}}),
        )
        .unwrap();
        let result = CallToolResult::success(vec![ContentBlock::Text(annotated)]);
        let mut out = Vec::new();
        assert!(!write_tool_answer(
            &answer(NumberOrString::Number(1), result),
            &mut out
        ));
        assert!(out.is_empty());
    }
}
