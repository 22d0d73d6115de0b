//! What a client sent, judged as JSON-RPC before rmcp sees it, for both
//! transports. rmcp drops text that is not JSON without a word (the client
//! then waits for ever), answers JSON that is not a message without its id,
//! and takes a request for an MCP method whose params do not fit that
//! method for a method of its own (`-32601`). Here such input gets the
//! answer JSON-RPC 2.0 prescribes: `-32700` Parse error (id null) for text
//! that is not JSON or not UTF-8, `-32600` Invalid Request for JSON that is
//! not a message, and `-32602` Invalid params for a known method with
//! params that do not fit it. The transport writes that answer itself.

use std::borrow::Cow;

use rmcp::model::{
    CallToolRequest, CallToolRequestMethod, CancelTaskMethod, ClientJsonRpcMessage, ClientRequest,
    CompleteRequest, CompleteRequestMethod, ConstString, DiscoverRequest, DiscoverRequestMethod,
    ErrorData, GetPromptRequest, GetPromptRequestMethod, GetSkillRequestMethod, GetTaskMethod,
    JsonRpcMessage, JsonRpcRequest, ListPromptsRequestMethod, ListResourceTemplatesRequestMethod,
    ListResourcesRequestMethod, ListSkillsRequestMethod, ListToolsRequest, ListToolsRequestMethod,
    ReadResourceDirectoryRequestMethod, ReadResourceRequest, ReadResourceRequestMethod, RequestId,
    SubscriptionsListenRequestMethod, UpdateTaskMethod,
};
use serde::Serialize;
use serde_json::Value;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// What became of one JSON-RPC text.
#[derive(Debug)]
pub enum Screened {
    /// A message for rmcp to serve.
    Message(Box<ClientJsonRpcMessage>),
    /// Not for rmcp: this answer is the whole reply.
    Refused(ErrorAnswer),
    /// A notification that cannot be read: JSON-RPC never answers a
    /// notification, and rmcp ignores those of other protocols too.
    Ignored,
}

/// A JSON-RPC error answer written by the transport. Unlike rmcp's, the id
/// is `null` when the request's id could not be read, as JSON-RPC 2.0 asks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorAnswer {
    jsonrpc: &'static str,
    pub id: Option<RequestId>,
    pub error: ErrorData,
}

impl ErrorAnswer {
    pub fn new(id: Option<RequestId>, error: ErrorData) -> Self {
        Self {
            jsonrpc: "2.0",
            id,
            error,
        }
    }

    /// `-32700`: the text is not JSON (or not UTF-8).
    pub fn parse_error(why: impl std::fmt::Display) -> Self {
        Self::new(
            None,
            ErrorData::parse_error(format!("Parse error: {why}"), None),
        )
    }

    /// `-32600`: the text is JSON but not a JSON-RPC message.
    pub fn invalid_request(id: Option<RequestId>, why: impl std::fmt::Display) -> Self {
        Self::new(
            id,
            ErrorData::invalid_request(format!("Invalid Request: {why}"), None),
        )
    }

    /// `-32600` for a request whose id names a request still in flight:
    /// serving it would run the call twice and answer one of them.
    pub fn duplicate_id(id: RequestId) -> Self {
        let message = format!("Invalid Request: duplicate request id {id} still in flight");
        Self::new(Some(id), ErrorData::invalid_request(message, None))
    }

    /// The answer as one line of JSON (no newline).
    pub fn to_json(&self) -> Vec<u8> {
        // An id, a code and strings: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Judges one JSON-RPC text (a stdio line without its newline, or an HTTP
/// body).
pub fn screen(text: &[u8]) -> Screened {
    let text = text.strip_prefix(UTF8_BOM).unwrap_or(text);
    if holds_too_many_values(text) {
        return Screened::Refused(ErrorAnswer::invalid_request(
            None,
            format!(
                "the message holds more than {MAX_JSON_VALUES} JSON values, the most this server \
                 parses in one message"
            ),
        ));
    }
    // The commonest message of all, read without the generic path's trials.
    if let Some(message) = call_tool(text) {
        return Screened::Message(Box::new(message));
    }
    // The common case next: a well-formed message parses once.
    if let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(text) {
        return match misread_params(&message, text) {
            Some(refusal) => Screened::Refused(refusal),
            None => Screened::Message(Box::new(message)),
        };
    }
    let text = match std::str::from_utf8(text) {
        Ok(text) => text,
        Err(err) => return Screened::Refused(ErrorAnswer::parse_error(err)),
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => return Screened::Refused(ErrorAnswer::parse_error(err)),
    };
    let is_notification =
        value.get("method").is_some() && value.get("id").is_none() && value.is_object();
    if is_notification {
        return Screened::Ignored;
    }
    let why = serde_json::from_value::<ClientJsonRpcMessage>(value.clone())
        .err()
        .map_or_else(
            || "not a JSON-RPC message".to_string(),
            |err| err.to_string(),
        );
    Screened::Refused(ErrorAnswer::invalid_request(request_id(&value), why))
}

/// The most JSON values (counted as the `[`, `{` and `,` outside strings)
/// one message may hold. Parsing costs memory per value, not per byte: a
/// 15 MB line of `[],[],...` took 966 MB to parse, where this cap keeps any
/// message's parse to a few tens of MB. SQLite binds at most 32,766
/// parameters, so no useful call comes near it.
pub const MAX_JSON_VALUES: usize = 100_000;

/// Whether `text` holds more than [`MAX_JSON_VALUES`] values. Each counted
/// character is one byte, so a shorter text is not scanned at all.
fn holds_too_many_values(text: &[u8]) -> bool {
    if text.len() <= MAX_JSON_VALUES {
        return false;
    }
    let mut values = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' | b',' => {
                values += 1;
                if values > MAX_JSON_VALUES {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// A well-formed `tools/call` request, read straight into rmcp's type, or
/// `None` for anything else (which the generic path then judges). rmcp's
/// generic message type is an untagged enum of every request type: it
/// buffers the text and tries thirteen request types before `tools/call`,
/// each failure building an error, which cost about a fifth of a paced
/// point lookup. The message built here is the one the generic path builds.
fn call_tool(text: &[u8]) -> Option<ClientJsonRpcMessage> {
    let call = serde_json::from_slice::<JsonRpcRequest<CallToolRequest>>(text).ok()?;
    Some(JsonRpcMessage::Request(JsonRpcRequest {
        jsonrpc: call.jsonrpc,
        id: call.id,
        request: ClientRequest::CallToolRequest(call.request),
    }))
}

/// The id of a request, when it is one JSON-RPC allows (a string or an
/// integer).
fn request_id(value: &Value) -> Option<RequestId> {
    match value.get("id")? {
        Value::String(id) => Some(RequestId::String(id.as_str().into())),
        Value::Number(id) => id.as_i64().map(RequestId::Number),
        _ => None,
    }
}

/// rmcp reads a request for an MCP method whose params do not fit the method
/// as a custom request; such a request gets `-32602` here.
fn misread_params(message: &ClientJsonRpcMessage, text: &[u8]) -> Option<ErrorAnswer> {
    let JsonRpcMessage::Request(request) = message else {
        return None;
    };
    let ClientRequest::CustomRequest(custom) = &request.request else {
        return None;
    };
    if !is_mcp_client_method(&custom.method) {
        return None;
    }
    let detail = params_problem(&custom.method, text)
        .map_or_else(String::new, |problem| format!(": {problem}"));
    let message = format!("Invalid params for {}{detail}", custom.method);
    Some(ErrorAnswer::new(
        Some(request.id.clone()),
        ErrorData::invalid_params(message, None),
    ))
}

/// The request methods a client may send in every protocol era, as rmcp
/// spells them. Not `initialize`, `ping`, `logging/setLevel` and
/// `resources/(un)subscribe`: 2026-07-28 removed them, and a request for
/// one in that era must get `-32601` from rmcp, whatever its params.
fn is_mcp_client_method(method: &str) -> bool {
    [
        DiscoverRequestMethod::VALUE,
        CompleteRequestMethod::VALUE,
        GetPromptRequestMethod::VALUE,
        ListPromptsRequestMethod::VALUE,
        ListResourcesRequestMethod::VALUE,
        ListResourceTemplatesRequestMethod::VALUE,
        ReadResourceRequestMethod::VALUE,
        SubscriptionsListenRequestMethod::VALUE,
        CallToolRequestMethod::VALUE,
        ListToolsRequestMethod::VALUE,
        GetTaskMethod::VALUE,
        UpdateTaskMethod::VALUE,
        CancelTaskMethod::VALUE,
        ListSkillsRequestMethod::VALUE,
        GetSkillRequestMethod::VALUE,
        ReadResourceDirectoryRequestMethod::VALUE,
    ]
    .contains(&method)
}

/// Why the params of `method` do not fit it, in serde's words, for the
/// current methods a database server's clients send (others get the
/// method's name only).
fn params_problem(method: &str, text: &[u8]) -> Option<String> {
    fn problem<T: serde::de::DeserializeOwned>(request: Value) -> Option<String> {
        serde_json::from_value::<T>(request)
            .err()
            .map(|err| err.to_string())
    }
    let value: Value = serde_json::from_slice(text).ok()?;
    let request = serde_json::json!({
        "method": method,
        "params": value.get("params").cloned().unwrap_or(Value::Null),
    });
    match method {
        m if m == CallToolRequestMethod::VALUE => call_tool_problem(value.get("params"))
            .map(Cow::into_owned)
            .or_else(|| problem::<CallToolRequest>(request)),
        m if m == DiscoverRequestMethod::VALUE => problem::<DiscoverRequest>(request),
        m if m == ListToolsRequestMethod::VALUE => problem::<ListToolsRequest>(request),
        m if m == ReadResourceRequestMethod::VALUE => problem::<ReadResourceRequest>(request),
        m if m == GetPromptRequestMethod::VALUE => problem::<GetPromptRequest>(request),
        m if m == CompleteRequestMethod::VALUE => problem::<CompleteRequest>(request),
        _ => None,
    }
}

/// The two mistakes clients make in `tools/call`, named plainly.
fn call_tool_problem(params: Option<&Value>) -> Option<Cow<'static, str>> {
    let Some(Value::Object(params)) = params else {
        return Some("params must be an object".into());
    };
    match params.get("name") {
        Some(Value::String(_)) => {}
        Some(_) => return Some("`name` must be a string".into()),
        None => return Some("`name` is missing".into()),
    }
    match params.get("arguments") {
        None | Some(Value::Null | Value::Object(_)) => None,
        Some(_) => Some("`arguments` must be an object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ErrorCode;

    fn refusal(text: &[u8]) -> ErrorAnswer {
        match screen(text) {
            Screened::Refused(answer) => answer,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn ping_with(params: &str) -> Vec<u8> {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"a":{params}}}}}"#)
            .into_bytes()
    }

    #[test]
    fn a_message_of_more_values_than_the_cap_is_refused_unparsed() {
        let many = format!("[{}]", vec!["[]"; MAX_JSON_VALUES].join(","));
        let answer = refusal(&ping_with(&many));
        assert_eq!(answer.error.code, ErrorCode::INVALID_REQUEST);
        assert!(answer.error.message.contains("100000 JSON values"));
    }

    #[test]
    fn a_long_message_of_few_values_is_read() {
        let text = ping_with(&format!("\"{}\"", ",[{".repeat(MAX_JSON_VALUES)));
        assert!(text.len() > MAX_JSON_VALUES);
        assert!(!holds_too_many_values(&text), "commas in a string are text");
        let escaped = ping_with(&format!("\"\\\"{}\"", ",".repeat(MAX_JSON_VALUES)));
        assert!(
            !holds_too_many_values(&escaped),
            "an escaped quote ends no string"
        );
        assert!(matches!(screen(&text), Screened::Message(_)));
    }

    #[test]
    fn values_up_to_the_cap_are_read() {
        // The envelope counts 5 (two `{`, three `,`), the list's `[` one.
        let most = format!("[{}]", vec!["0"; MAX_JSON_VALUES - 5].join(","));
        assert!(!holds_too_many_values(&ping_with(&most)));
        assert!(matches!(screen(&ping_with(&most)), Screened::Message(_)));
    }

    #[test]
    fn text_that_is_not_json_is_a_parse_error_without_an_id() {
        let answer = refusal(b"{not json");
        assert_eq!(answer.error.code, ErrorCode::PARSE_ERROR);
        assert_eq!(answer.id, None);
        let json: Value = serde_json::from_slice(&answer.to_json()).unwrap();
        assert_eq!(json["id"], Value::Null);
        assert_eq!(json["jsonrpc"], "2.0");
    }

    #[test]
    fn invalid_utf8_is_a_parse_error() {
        let answer = refusal(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\xff\"}");
        assert_eq!(answer.error.code, ErrorCode::PARSE_ERROR);
    }

    #[test]
    fn json_that_is_not_a_message_is_an_invalid_request_with_its_id() {
        let answer = refusal(br#"{"jsonrpc":"2.0","id":7}"#);
        assert_eq!(answer.error.code, ErrorCode::INVALID_REQUEST);
        assert_eq!(answer.id, Some(RequestId::Number(7)));
        assert_eq!(refusal(b"[1,2]").error.code, ErrorCode::INVALID_REQUEST);
    }

    #[test]
    fn a_tools_call_with_a_non_string_name_is_invalid_params() {
        let answer =
            refusal(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":5}}"#);
        assert_eq!(answer.error.code, ErrorCode::INVALID_PARAMS);
        assert_eq!(answer.id, Some(RequestId::Number(3)));
        assert!(answer.error.message.contains("`name` must be a string"));
    }

    #[test]
    fn a_tools_call_with_non_object_arguments_is_invalid_params() {
        let answer = refusal(
            br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"query","arguments":[1]}}"#,
        );
        assert_eq!(answer.error.code, ErrorCode::INVALID_PARAMS);
        assert!(answer
            .error
            .message
            .contains("`arguments` must be an object"));
    }

    #[test]
    fn a_tools_call_is_read_as_the_generic_path_reads_it() {
        for text in [
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query","arguments":{"sql":"SELECT 1"}}}"#.as_slice(),
            br#"{"method":"tools/call","id":"x","params":{"name":"query","_meta":{"progressToken":7}},"jsonrpc":"2.0"}"#,
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"q\u00e9","arguments":{}}}"#,
        ] {
            let fast = call_tool(text).expect("a well-formed tools/call");
            let generic: ClientJsonRpcMessage = serde_json::from_slice(text).unwrap();
            assert_eq!(
                serde_json::to_value(&fast).unwrap(),
                serde_json::to_value(&generic).unwrap()
            );
            assert!(matches!(
                fast,
                JsonRpcMessage::Request(JsonRpcRequest {
                    request: ClientRequest::CallToolRequest(_),
                    ..
                })
            ));
        }
    }

    #[test]
    fn only_a_well_formed_tools_call_takes_the_short_path() {
        for text in [
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.as_slice(),
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"query"}}"#,
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":5}}"#,
            br#"{"jsonrpc":"1.0","id":4,"method":"tools/call","params":{"name":"query"}}"#,
        ] {
            assert!(
                call_tool(text).is_none(),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn well_formed_requests_and_notifications_go_to_rmcp() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query","arguments":{"sql":"SELECT 1"}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\"}",
        ] {
            assert!(
                matches!(screen(text.as_bytes()), Screened::Message(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn a_method_removed_in_2026_is_left_to_rmcp_to_refuse() {
        assert!(matches!(
            screen(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"_meta":{}}}"#),
            Screened::Message(_)
        ));
    }

    #[test]
    fn an_unknown_method_is_left_to_rmcp_to_refuse() {
        assert!(matches!(
            screen(br#"{"jsonrpc":"2.0","id":1,"method":"no/such","params":{"x":1}}"#),
            Screened::Message(_)
        ));
    }

    #[test]
    fn an_unreadable_notification_is_ignored() {
        assert!(matches!(
            screen(br#"{"jsonrpc":"1.0","method":"notifications/cancelled"}"#),
            Screened::Ignored
        ));
    }

    #[test]
    fn a_duplicate_id_is_named_in_the_refusal() {
        let answer = ErrorAnswer::duplicate_id(RequestId::Number(9));
        assert_eq!(answer.error.code, ErrorCode::INVALID_REQUEST);
        assert_eq!(
            answer.error.message,
            "Invalid Request: duplicate request id 9 still in flight"
        );
    }
}
