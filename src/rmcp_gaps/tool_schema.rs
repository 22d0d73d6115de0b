//! Tool schemas as clients read them: standard JSON Schema only, and no
//! larger than their meaning needs. Every session pays for the tool list in
//! its context, so each schema schemars generates (and each declared
//! tool's) goes through [`standardize`] once, when the tool list is built.
//!
//! What changes, and why it keeps the meaning:
//! - `format` values outside the JSON Schema standard set (`int64`,
//!   `uint32`, `double`...) are dropped: validators ignore them with a
//!   warning, and `minimum: 0` still says "unsigned".
//! - `$ref`s into `$defs` are written in place and `$defs` goes: each type
//!   is used once or twice, and a reference costs more than it saves. The
//!   definition's own title and description stay behind: the place that
//!   refers to it says what it is for there.
//! - `$schema` goes: MCP's default dialect is JSON Schema 2020-12, and what
//!   remains is valid in draft-07 as well.
//! - An optional property's `null` alternative and `default: null` go:
//!   leaving the argument out means the same.
//! - A choice among constants becomes `enum`; a choice among bare types,
//!   or among types whose keywords apply to that type only (`items` to an
//!   array, `additionalProperties` to an object), becomes a list of types.

use rmcp::model::JsonObject;
use serde_json::{Map, Value};

/// The `format` values defined by JSON Schema 2020-12.
pub const STANDARD_FORMATS: [&str; 19] = [
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Most nested `$ref`s written in place; a recursive type stops here and
/// keeps an open schema (anything) instead of growing without end.
const MAX_INLINE_DEPTH: usize = 8;

/// `schema` in standard, compact form (see the module doc).
pub fn standardize(schema: &JsonObject) -> JsonObject {
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut root = schema.clone();
    root.remove("$schema");
    root.remove("$defs");
    let mut value = Value::Object(root);
    shape(&mut value, &defs, 0);
    match value {
        Value::Object(object) => object,
        _ => unreachable!("an object stays an object"),
    }
}

fn shape(value: &mut Value, defs: &Map<String, Value>, depth: usize) {
    match value {
        Value::Array(items) => {
            for item in items {
                shape(item, defs, depth);
            }
        }
        Value::Object(object) => {
            inline_ref(object, defs, depth);
            for (key, child) in object.iter_mut() {
                match (key.as_str(), child) {
                    // Values, not schemas.
                    ("const" | "enum" | "default" | "examples", _) => {}
                    // Names mapped to schemas: a property may be named `enum`.
                    ("properties" | "patternProperties", Value::Object(named)) => {
                        for schema in named.values_mut() {
                            shape(schema, defs, depth);
                        }
                    }
                    (_, child) => shape(child, defs, depth),
                }
            }
            if object
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| !STANDARD_FORMATS.contains(&f))
            {
                object.remove("format");
            }
            merge_constants(object);
            merge_types(object);
            drop_optional_nulls(object);
        }
        _ => {}
    }
}

/// Replaces `{"$ref": "#/$defs/X", ...}` by X's schema; keywords written
/// beside the reference (a property's own description) win.
fn inline_ref(object: &mut Map<String, Value>, defs: &Map<String, Value>, depth: usize) {
    let Some(Value::String(reference)) = object.get("$ref") else {
        return;
    };
    let target = reference
        .strip_prefix("#/$defs/")
        .and_then(|name| defs.get(name))
        .cloned();
    object.remove("$ref");
    let Some(Value::Object(mut target)) = target else {
        return;
    };
    if depth >= MAX_INLINE_DEPTH {
        return;
    }
    target.remove("title");
    target.remove("description");
    let mut inlined = Value::Object(target);
    shape(&mut inlined, defs, depth + 1);
    if let Value::Object(inlined) = inlined {
        for (key, value) in inlined {
            object.entry(key).or_insert(value);
        }
    }
}

/// `oneOf`/`anyOf` of `{const, type, description?}` becomes `enum`.
fn merge_constants(object: &mut Map<String, Value>) {
    for keyword in ["oneOf", "anyOf"] {
        let Some(Value::Array(branches)) = object.get(keyword) else {
            continue;
        };
        let mut constants = Vec::with_capacity(branches.len());
        let mut kind = None;
        for branch in branches {
            let Some(branch) = branch.as_object() else {
                return;
            };
            let only_const = branch
                .keys()
                .all(|k| k == "const" || k == "type" || k == "description");
            let (Some(constant), true) = (branch.get("const"), only_const) else {
                return;
            };
            match (&kind, branch.get("type")) {
                (None, Some(t)) => kind = Some(t.clone()),
                (Some(k), Some(t)) if k == t => {}
                (_, None) => {}
                _ => return,
            }
            constants.push(constant.clone());
        }
        object.remove(keyword);
        if let Some(kind) = kind {
            object.insert("type".into(), kind);
        }
        object.insert("enum".into(), Value::Array(constants));
        return;
    }
}

/// `anyOf` of `{type: X, ...}` branches of distinct types, whose other
/// keywords only constrain values of their own type, becomes one schema
/// with `type: [X, ...]`: it accepts exactly what the choice accepted.
fn merge_types(object: &mut Map<String, Value>) {
    let Some(Value::Array(branches)) = object.get("anyOf") else {
        return;
    };
    if object.contains_key("type") {
        return;
    }
    let mut kinds: Vec<Value> = Vec::with_capacity(branches.len());
    let mut merged = Map::new();
    for branch in branches {
        let Some(branch) = branch.as_object() else {
            return;
        };
        let Some(Value::String(kind)) = branch.get("type") else {
            return;
        };
        if kinds.iter().any(|k| k == kind.as_str()) {
            return;
        }
        for (key, value) in branch {
            if key == "type" {
                continue;
            }
            if !applies_only_to(kind, key) || merged.contains_key(key) {
                return;
            }
            merged.insert(key.clone(), value.clone());
        }
        kinds.push(Value::String(kind.clone()));
    }
    // integer and number share their keywords: a bound meant for one
    // would constrain the other.
    let both_numeric = kinds.iter().any(|k| k == "integer") && kinds.iter().any(|k| k == "number");
    if both_numeric && merged.keys().any(|k| applies_only_to("number", k)) {
        return;
    }
    object.remove("anyOf");
    object.insert("type".into(), Value::Array(kinds));
    for (key, value) in merged {
        object.insert(key, value);
    }
}

/// Whether the keyword `key` constrains only values of JSON type `kind`.
fn applies_only_to(kind: &str, key: &str) -> bool {
    let keywords: &[&str] = match kind {
        "array" => &[
            "items",
            "prefixItems",
            "minItems",
            "maxItems",
            "uniqueItems",
            "contains",
        ],
        "object" => &[
            "properties",
            "additionalProperties",
            "required",
            "minProperties",
            "maxProperties",
            "propertyNames",
        ],
        "string" => &["minLength", "maxLength", "pattern"],
        "integer" | "number" => &[
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
        ],
        _ => &[],
    };
    keywords.contains(&key)
}

/// In an object schema, the properties not `required` lose their `null`
/// alternative and their `default: null`.
fn drop_optional_nulls(object: &mut Map<String, Value>) {
    let required: Vec<String> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let Some(Value::Object(properties)) = object.get_mut("properties") else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        if required.contains(name) {
            continue;
        }
        let Some(property) = property.as_object_mut() else {
            continue;
        };
        if property.get("default") == Some(&Value::Null) {
            property.remove("default");
        }
        without_null(property);
    }
}

/// Removes `null` from a schema's `type` list or its `anyOf` branches.
fn without_null(schema: &mut Map<String, Value>) {
    if let Some(Value::Array(kinds)) = schema.get_mut("type") {
        kinds.retain(|k| k != "null");
        if kinds.len() == 1 {
            let only = kinds.remove(0);
            schema.insert("type".into(), only);
        }
    }
    let is_null = |branch: &Value| branch.get("type") == Some(&Value::String("null".into()));
    if let Some(Value::Array(branches)) = schema.get_mut("anyOf") {
        branches.retain(|b| !is_null(b));
        if branches.len() == 1 {
            if let Value::Object(only) = branches.remove(0) {
                schema.remove("anyOf");
                for (key, value) in only {
                    schema.entry(key).or_insert(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn standardized(schema: Value) -> Value {
        Value::Object(standardize(schema.as_object().unwrap()))
    }

    #[test]
    fn nonstandard_formats_are_dropped_and_standard_ones_kept() {
        let out = standardized(json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "format": "uint64", "minimum": 0},
                "x": {"type": "number", "format": "double"},
                "at": {"type": "string", "format": "date-time"}
            },
            "required": ["n", "x", "at"]
        }));
        assert_eq!(
            out["properties"]["n"],
            json!({"type": "integer", "minimum": 0})
        );
        assert_eq!(out["properties"]["x"], json!({"type": "number"}));
        assert_eq!(out["properties"]["at"]["format"], json!("date-time"));
    }

    #[test]
    fn references_are_written_in_place_and_the_definitions_dropped() {
        let out = standardized(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": {"Id": {"type": "integer", "format": "int64", "title": "Id", "description": "An id."}},
            "type": "object",
            "properties": {"id": {"$ref": "#/$defs/Id", "description": "The row's id."}},
            "required": ["id"]
        }));
        assert_eq!(
            out,
            json!({
                "type": "object",
                "properties": {"id": {"type": "integer", "description": "The row's id."}},
                "required": ["id"]
            })
        );
    }

    #[test]
    fn a_recursive_type_is_cut_off_instead_of_growing_forever() {
        let out = standardized(json!({
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
            "type": "object",
            "properties": {"head": {"$ref": "#/$defs/Node"}}
        }));
        assert!(out.to_string().len() < 2_000, "{out}");
        assert!(!out.to_string().contains("$ref"));
    }

    #[test]
    fn an_optional_property_loses_its_null_alternative() {
        let out = standardized(json!({
            "type": "object",
            "properties": {
                "cursor": {"type": ["string", "null"], "default": null},
                "params": {"anyOf": [{"type": "array"}, {"type": "null"}], "description": "d"},
                "kept": {"type": ["string", "null"]}
            },
            "required": ["kept"]
        }));
        assert_eq!(out["properties"]["cursor"], json!({"type": "string"}));
        assert_eq!(
            out["properties"]["params"],
            json!({"type": "array", "description": "d"})
        );
        assert_eq!(
            out["properties"]["kept"],
            json!({"type": ["string", "null"]})
        );
    }

    #[test]
    fn a_choice_of_constants_becomes_an_enum() {
        let out = standardized(json!({
            "type": "object",
            "properties": {"detail": {"oneOf": [
                {"const": "names", "type": "string", "description": "Names only."},
                {"const": "ddl", "type": "string"}
            ]}}
        }));
        assert_eq!(
            out["properties"]["detail"],
            json!({"type": "string", "enum": ["names", "ddl"]})
        );
    }

    #[test]
    fn a_choice_of_a_list_or_a_map_becomes_one_schema_of_two_types() {
        let value = json!({"type": ["null", "integer"]});
        let out = standardized(json!({
            "anyOf": [
                {"type": "array", "items": value},
                {"type": "object", "additionalProperties": value}
            ]
        }));
        assert_eq!(
            out,
            json!({"type": ["array", "object"], "items": value, "additionalProperties": value})
        );
    }

    #[test]
    fn a_choice_whose_branches_share_a_keyword_is_kept() {
        let choice = json!({
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "number", "maximum": 1}
            ]
        });
        assert_eq!(standardized(choice.clone()), choice);
        let described =
            json!({"anyOf": [{"type": "string", "description": "a name"}, {"type": "array"}]});
        assert_eq!(standardized(described.clone()), described);
    }

    #[test]
    fn a_choice_of_bare_types_becomes_a_type_list() {
        let out = standardized(json!({
            "type": "array",
            "items": {"anyOf": [{"type": "null"}, {"type": "integer", "format": "int64"}, {"type": "string"}]}
        }));
        assert_eq!(out["items"], json!({"type": ["null", "integer", "string"]}));
    }

    #[test]
    fn a_property_named_like_a_keyword_is_still_a_schema() {
        let out = standardized(json!({
            "type": "object",
            "properties": {"enum": {"type": "integer", "format": "int64"}},
            "required": ["enum"]
        }));
        assert_eq!(out["properties"]["enum"], json!({"type": "integer"}));
    }
}
