//! The PromQL of the operations assets: every expression of the dashboard's
//! panel targets and of the alert rules, with Grafana's variables replaced so
//! that each is a plain query a real Prometheus (or promtool) accepts, and a
//! small lexer for the metric names and selectors in an expression.

use std::collections::HashSet;

use serde_json::Value;

/// Values for Grafana's variables. The dashboard writes every instance
/// matcher as `instance=~"$instance"`, so `$instance` becomes `.*`.
const SUBSTITUTIONS: [(&str, &str); 4] = [
    ("__rate_interval", "1m"),
    ("__interval", "1m"),
    ("__range", "1m"),
    ("instance", ".*"),
];

/// One PromQL expression and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    /// `dashboard: panel "Title" A` or `rules: group/AlertName`.
    pub source: String,
    pub expr: String,
}

/// Every expression of the dashboard (panel targets, hidden ones left out)
/// and then of the alert rules, with Grafana's variables substituted,
/// duplicates dropped. `Err` names an unknown variable and where it is.
pub fn expressions(dashboard: &Value, rules: &Value) -> Result<Vec<Expression>, String> {
    let mut found = Vec::new();
    for panel in super::panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or("").trim();
            if expr.is_empty() || target["hide"] == true {
                continue;
            }
            let source = format!(
                "dashboard: panel {} {}",
                panel["title"],
                target["refId"].as_str().unwrap_or("?")
            );
            found.push(Expression {
                expr: substitute(expr, &source)?,
                source,
            });
        }
    }
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let Some(expr) = rule["expr"].as_str() else {
                continue;
            };
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?");
            let source = format!("rules: {}/{name}", group["name"].as_str().unwrap_or("?"));
            // Rules have no Grafana variables; substituting anyway reports a
            // stray one instead of sending it to Prometheus.
            found.push(Expression {
                expr: substitute(expr.trim(), &source)?,
                source,
            });
        }
    }
    let mut seen = HashSet::new();
    found.retain(|e| seen.insert(e.expr.clone()));
    Ok(found)
}

/// Replaces Grafana's variables (`$name`, `${name}`, `${name:format}`,
/// `[[name]]`) with [`SUBSTITUTIONS`]; any other variable is an error.
pub fn substitute(expr: &str, source: &str) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some((name, len)) = variable_at(rest) else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        let value = SUBSTITUTIONS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, value)| *value)
            .ok_or_else(|| {
                format!(
                    "{source}: unknown Grafana variable {:?} in {expr:?}",
                    &rest[..len]
                )
            })?;
        out.push_str(value);
        rest = &rest[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The variable `text` starts with: its name and the length of its syntax.
fn variable_at(text: &str) -> Option<(&str, usize)> {
    let name_len = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    // `${name}` / `${name:format}` and `[[name]]` / `[[name:format]]`.
    for (open, close) in [("${", "}"), ("[[", "]]")] {
        if let Some(inner) = text.strip_prefix(open) {
            let end = inner.find(close)?;
            let len = name_len(&inner[..end]);
            let format = &inner[len..end];
            return (len > 0 && (format.is_empty() || format.starts_with(':')))
                .then(|| (&inner[..len], open.len() + end + close.len()));
        }
    }
    // `$name`.
    let inner = text.strip_prefix('$')?;
    let len = name_len(inner);
    let starts_well = inner.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    (len > 0 && starts_well).then(|| (&inner[..len], 1 + len))
}

/// A metric name in an expression and the label matchers that follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub metric: String,
    /// The text between `{` and `}`, when the name has matchers.
    pub matchers: Option<String>,
}

/// The selectors of eros-mcp's own metrics (`mcp_*`) and of its process
/// metrics (`process_*`) in `expr`, in order; string literals are skipped.
pub fn selectors(expr: &str) -> Vec<Selector> {
    let bytes = expr.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\'' || b == b'`' {
            i = end_of_string(bytes, i);
            continue;
        }
        if !is_word(b) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word(bytes[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if !(name.starts_with("mcp_") || name.starts_with("process_")) {
            continue;
        }
        let matchers = (bytes.get(i) == Some(&b'{')).then(|| {
            let open = i + 1;
            let mut j = open;
            while j < bytes.len() && bytes[j] != b'}' {
                j = if matches!(bytes[j], b'"' | b'\'' | b'`') {
                    end_of_string(bytes, j)
                } else {
                    j + 1
                };
            }
            i = (j + 1).min(bytes.len());
            expr[open..j.min(bytes.len())].to_string()
        });
        found.push(Selector {
            metric: name.to_string(),
            matchers,
        });
    }
    found
}

/// The index just past the string literal that opens at `start`.
fn end_of_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() && bytes[i] != quote {
        i += if bytes[i] == b'\\' && quote != b'`' {
            2
        } else {
            1
        };
    }
    i + 1
}

/// Whether `word` occurs in `text` as a whole word (not inside a longer name).
pub fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}
