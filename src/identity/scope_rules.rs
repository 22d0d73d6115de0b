//! Which scope each request needs: the one rule the HTTP transport's 403
//! (before a request reaches the MCP server) and the MCP server's own
//! refusal and tool listing (on every transport) both read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Principal, READ};

/// The scope each tool needs, by tool name, and the fixed rules for the
/// other methods. Cheap to clone; every clone sees the rules a reload puts
/// in place ([`ScopeRules::replace`]).
#[derive(Debug, Clone, Default)]
pub struct ScopeRules {
    tools: Arc<RwLock<Arc<HashMap<String, String>>>>,
}

impl ScopeRules {
    /// `tools`: tool name to the scope a principal needs to see and call it.
    pub fn new(tools: HashMap<String, String>) -> Self {
        Self {
            tools: Arc::new(RwLock::new(Arc::new(tools))),
        }
    }

    /// Puts the rules of a new tool list in place, for every clone.
    pub fn replace(&self, tools: HashMap<String, String>) {
        *self.tools.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tools);
    }

    fn current(&self) -> Arc<HashMap<String, String>> {
        Arc::clone(&self.tools.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The scope `tool` needs; `None` for a tool nobody declared.
    pub fn for_tool(&self, tool: &str) -> Option<String> {
        self.current().get(tool).cloned()
    }

    /// The scope a request of `method` (naming `tool` for `tools/call`)
    /// needs, if any: reading a resource or a prompt needs `eros:read`.
    pub fn for_request(&self, method: &str, tool: Option<&str>) -> Option<String> {
        match method {
            "tools/call" => tool.and_then(|tool| self.for_tool(tool)),
            "resources/read" | "prompts/get" => Some(READ.to_string()),
            _ => None,
        }
    }

    /// Whether `principal` may see and call `tool`.
    pub fn permits(&self, principal: &Principal, tool: &str) -> bool {
        self.for_tool(tool)
            .is_none_or(|scope| principal.may(&scope))
    }

    /// Every scope a principal could need here, sorted.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self.current().values().cloned().collect();
        scopes.push(READ.to_string());
        scopes.sort();
        scopes.dedup();
        scopes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Scopes, WRITE};

    #[test]
    fn each_request_needs_the_scope_of_its_tool_or_method() {
        let rules = ScopeRules::new(HashMap::from([
            ("query".to_string(), READ.to_string()),
            ("execute".to_string(), WRITE.to_string()),
        ]));
        assert_eq!(
            rules.for_request("tools/call", Some("execute")).as_deref(),
            Some(WRITE)
        );
        assert_eq!(
            rules.for_request("prompts/get", None).as_deref(),
            Some(READ)
        );
        assert_eq!(rules.for_request("tools/list", None), None);
        let reader = Principal::static_token("reader", Scopes::of([READ]));
        assert!(rules.permits(&reader, "query"));
        assert!(!rules.permits(&reader, "execute"));
        assert_eq!(rules.scopes(), [READ, WRITE]);
    }
}
