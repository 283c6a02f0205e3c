//! Schemas come from API callers (`response_format`, tool parameters), so compiling one is
//! an attack surface: hostile schemas must be refused or accepted quickly, never hang the
//! node, exhaust its memory or overflow its stack.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use aura_infer::Constraint;
use serde_json::{Value, json};

fn check_quickly(schema: Value) -> Result<(), String> {
    let start = Instant::now();
    let shown: String = schema.to_string().chars().take(80).collect();
    let result = Constraint::JsonSchema(schema)
        .check()
        .map_err(|e| e.to_string());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{shown} took {:?}",
        start.elapsed()
    );
    result
}

#[test]
fn self_references_and_reference_cycles_are_bounded() {
    for schema in [
        json!({"$ref": "#"}),
        json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
        json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}),
        json!({"type": "object", "properties": {"x": {"$ref": "#"}}, "required": ["x"]}),
        json!({"type": "array", "items": {"$ref": "#"}, "minItems": 1}),
        json!({"$ref": "#/$defs/missing"}),
        json!({"$ref": "http://example.invalid/schema.json"}),
    ] {
        let _ = check_quickly(schema);
    }
}

#[test]
fn alternatives_that_multiply_are_bounded() {
    // 5 levels of 8-way anyOf: 32,768 alternatives, about what fits in a request body.
    let mut s = json!({"type": "string"});
    for _ in 0..5 {
        s = json!({"anyOf": vec![s; 8]});
    }
    let err = check_quickly(s).unwrap_err();
    assert!(err.contains("too large"), "{err}");
    // The same through references: small to send, 8^8 paths if expanded.
    let mut defs = serde_json::Map::new();
    defs.insert("l0".into(), json!({"type": "string"}));
    for i in 1..=8 {
        let r = json!({"$ref": format!("#/$defs/l{}", i - 1)});
        defs.insert(format!("l{i}"), json!({"anyOf": vec![r; 8]}));
    }
    let _ = check_quickly(json!({"$defs": defs, "$ref": "#/$defs/l8"}));
}

#[test]
fn deep_schemas_are_bounded() {
    // As deep as a JSON body can nest.
    let mut s = json!({"type": "integer"});
    for _ in 0..60 {
        s = json!({"type": "object", "properties": {"a": s}, "required": ["a"]});
    }
    let _ = check_quickly(s);
}

#[test]
fn large_schemas_are_bounded() {
    // Many properties and many enum values.
    let props: serde_json::Map<String, Value> = (0..5000)
        .map(|i| (format!("p{i}"), json!({"type": "string"})))
        .collect();
    let _ = check_quickly(json!({"type": "object", "properties": props}));
    let values: Vec<Value> = (0..50_000).map(|i| json!(format!("v{i}"))).collect();
    let _ = check_quickly(json!({"enum": values}));
}

#[test]
fn nonsense_is_refused_with_a_reason() {
    for schema in [
        json!({"type": 7}),
        json!({"type": "integer", "minimum": 10, "maximum": 1}),
        json!({"minItems": -1, "type": "array"}),
        json!({"required": "x"}),
        json!({"properties": []}),
        json!(false),
    ] {
        let shown = schema.to_string();
        let err = check_quickly(schema).unwrap_err();
        assert!(!err.is_empty(), "{shown}");
    }
}
