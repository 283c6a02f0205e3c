//! Checking a call's arguments against a plugin's input schema before anything runs, so a
//! malformed call is refused as invalid arguments (and policy never judges it) instead of
//! reaching the plugin.
//!
//! The manifest's schema is a JSON Schema; this checks the subset plugins need to say what
//! they take: `type` (one name or a list of them), `properties`, `required`,
//! `additionalProperties: false`, `items`, `enum`, `const`, `minLength`, `maxLength`,
//! `minimum`, `maximum`, `minItems` and `maxItems`. Other keywords are not checked (the
//! plugin checks the rest of its input itself). The walk recurses only as deep as the
//! schema has subschemas, and never past [`MAX_DEPTH`], so hostile input cannot exhaust the
//! stack.

use serde_json::Value;

/// How deeply arguments may nest arrays and objects.
pub const MAX_DEPTH: usize = 64;

/// Why arguments do not fit a schema: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at `{at}`: {why}")]
pub struct Mismatch {
    pub at: String,
    pub why: String,
}

/// Checks `value` against `schema` (the subset described in the module's documentation).
pub fn check(schema: &Value, value: &Value) -> Result<(), Mismatch> {
    walk(schema, value, &mut String::new(), 0)
}

fn mismatch(at: &str, why: impl Into<String>) -> Mismatch {
    Mismatch {
        at: if at.is_empty() {
            "/".into()
        } else {
            at.to_owned()
        },
        why: why.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, name: &str) -> bool {
    let actual = type_name(v);
    actual == name || (name == "number" && actual == "integer")
}

fn walk(schema: &Value, value: &Value, at: &mut String, depth: usize) -> Result<(), Mismatch> {
    if depth > MAX_DEPTH {
        return Err(mismatch(
            at,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    // `true` accepts anything, `false` nothing; any other non-object schema is taken as
    // accepting anything (the manifest's rules already require an object at the top).
    let s = match schema {
        Value::Bool(false) => return Err(mismatch(at, "no value is allowed here")),
        Value::Object(s) => s,
        _ => return Ok(()),
    };
    match s.get("type") {
        Some(Value::String(t)) if !is_type(value, t) => {
            return Err(mismatch(
                at,
                format!("expected {t}, found {}", type_name(value)),
            ));
        }
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            if !names.iter().any(|t| is_type(value, t)) {
                return Err(mismatch(
                    at,
                    format!(
                        "expected {}, found {}",
                        names.join(" or "),
                        type_name(value)
                    ),
                ));
            }
        }
        _ => {}
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(value)
    {
        return Err(mismatch(at, "not one of the allowed values"));
    }
    if let Some(c) = s.get("const")
        && c != value
    {
        return Err(mismatch(at, "not the required value"));
    }
    let bound = |k: &str| s.get(k).and_then(Value::as_u64);
    match value {
        Value::String(text) => {
            let n = text.chars().count() as u64;
            if bound("maxLength").is_some_and(|max| n > max) {
                return Err(mismatch(at, "longer than allowed"));
            }
            if bound("minLength").is_some_and(|min| n < min) {
                return Err(mismatch(at, "shorter than allowed"));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if s.get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| x < m)
            {
                return Err(mismatch(at, "below the minimum"));
            }
            if s.get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| x > m)
            {
                return Err(mismatch(at, "above the maximum"));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if bound("maxItems").is_some_and(|max| n > max) {
                return Err(mismatch(at, "more items than allowed"));
            }
            if bound("minItems").is_some_and(|min| n < min) {
                return Err(mismatch(at, "fewer items than allowed"));
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("/{i}"));
                    walk(item_schema, item, at, depth + 1)?;
                    at.truncate(len);
                }
            }
        }
        Value::Object(members) => {
            if let Some(Value::Array(required)) = s.get("required") {
                for key in required.iter().filter_map(Value::as_str) {
                    if !members.contains_key(key) {
                        return Err(mismatch(at, format!("`{key}` is required")));
                    }
                }
            }
            let properties = s.get("properties").and_then(Value::as_object);
            let closed = s.get("additionalProperties") == Some(&Value::Bool(false));
            for (key, member) in members {
                let len = at.len();
                at.push('/');
                at.push_str(&key.replace('~', "~0").replace('/', "~1"));
                match properties.and_then(|p| p.get(key)) {
                    Some(sub) => walk(sub, member, at, depth + 1)?,
                    None if closed => {
                        return Err(mismatch(at, format!("`{key}` is not an argument it takes")));
                    }
                    None => {}
                }
                at.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wordcount() -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1, "maxLength": 8},
                "save_to": {"type": "string"},
                "n": {"type": "integer", "minimum": 0, "maximum": 3},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
            },
            "required": ["path"],
            "additionalProperties": false
        })
    }

    #[test]
    fn arguments_are_checked_against_the_subset() {
        let s = wordcount();
        let table: &[(Value, Option<&str>)] = &[
            (json!({"path": "a.txt"}), None),
            (json!({"path": "a.txt", "n": 3, "tags": ["a", "b"]}), None),
            (json!({}), Some("at `/`: `path` is required")),
            (json!([]), Some("at `/`: expected object, found array")),
            (
                json!({"path": 7}),
                Some("at `/path`: expected string, found integer"),
            ),
            (
                json!({"path": ""}),
                Some("at `/path`: shorter than allowed"),
            ),
            (
                json!({"path": "123456789"}),
                Some("at `/path`: longer than allowed"),
            ),
            (
                json!({"path": "a", "x": 1}),
                Some("at `/x`: `x` is not an argument it takes"),
            ),
            (
                json!({"path": "a", "n": 4}),
                Some("at `/n`: above the maximum"),
            ),
            (
                json!({"path": "a", "n": 1.5}),
                Some("at `/n`: expected integer, found number"),
            ),
            (
                json!({"path": "a", "tags": ["c"]}),
                Some("at `/tags/0`: not one of the allowed values"),
            ),
            (
                json!({"path": "a", "tags": ["a", "a", "a"]}),
                Some("at `/tags`: more items than allowed"),
            ),
        ];
        for (value, expect) in table {
            let got = check(&s, value).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), *expect, "{value}");
        }
    }

    /// Any JSON as schema, any JSON as arguments: an answer, never a panic.
    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let words = || {
            prop::sample::select(vec![
                "type",
                "object",
                "array",
                "string",
                "integer",
                "number",
                "boolean",
                "null",
                "properties",
                "required",
                "items",
                "enum",
                "const",
                "additionalProperties",
                "maxLength",
                "minLength",
                "minimum",
                "maximum",
                "maxItems",
                "minItems",
                "a",
            ])
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            words().prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(words().prop_map(String::from), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn any_arguments_against_any_schema_get_an_answer(
            schema in any_json(),
            value in any_json(),
        ) {
            if let Err(e) = check(&schema, &value) {
                proptest::prop_assert!(e.at.starts_with('/'));
            }
        }
    }

    #[test]
    fn deep_input_is_refused_not_overflowed() {
        let mut v = json!(1);
        for _ in 0..1_000 {
            v = json!([v]);
        }
        let s = json!({"type": "array", "items": {"type": "array", "items": {"items": {}}}});
        assert!(check(&s, &v).is_ok(), "only the schema's depth is walked");
        let mut deep_schema = json!({});
        for _ in 0..(MAX_DEPTH + 2) {
            deep_schema = json!({"items": deep_schema});
        }
        let err = check(&deep_schema, &v).unwrap_err();
        assert!(err.why.contains("nested deeper"), "{err}");
    }
}
