//! What a JSON-RPC request asks for ([`Operation`]), read once from its
//! body by the HTTP transport's gate, for its scope check and the MCP
//! server's audit log.

/// What a JSON-RPC request asks for, read once from its body by the
/// transport for the scope check and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub method: String,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
}

impl Operation {
    /// The operation of a request message; `None` for responses and
    /// notifications.
    pub fn of(message: &rmcp::model::ClientJsonRpcMessage) -> Option<Self> {
        use rmcp::model::{ClientRequest, JsonRpcMessage};
        let JsonRpcMessage::Request(request) = message else {
            return None;
        };
        let tool = match &request.request {
            ClientRequest::CallToolRequest(call) => Some(call.params.name.to_string()),
            _ => None,
        };
        Some(Self {
            method: request.request.method().to_string(),
            tool,
        })
    }
}
