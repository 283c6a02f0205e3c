//! Each built-in's JSON Schema accepts exactly what its argument struct accepts: checked
//! on generated argument objects (known and unknown keys, values of every JSON type) with
//! a small validator for the keywords the schemas use. The test also fails if a schema
//! starts using a keyword the validator does not know, so it cannot silently pass.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use aura_tools::{
    DeleteArgs, FetchArgs, FinishArgs, ListArgs, ReadArgs, RunArgs, SendArgs, WriteArgs,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{builtin, call};

const KNOWN_KEYWORDS: [&str; 12] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "oneOf",
    "minimum",
    "format",
    "default",
    "description",
    "items",
];

fn check_keywords(schema: &Value, at: &str) {
    let Some(object) = schema.as_object() else {
        return;
    };
    for (key, value) in object {
        assert!(
            KNOWN_KEYWORDS.contains(&key.as_str()),
            "{at}: unknown keyword `{key}`"
        );
        match key.as_str() {
            "properties" => {
                for (name, sub) in value.as_object().unwrap() {
                    check_keywords(sub, &format!("{at}.{name}"));
                }
            }
            "additionalProperties" | "items" => check_keywords(value, &format!("{at}.{key}")),
            "oneOf" => {
                for sub in value.as_array().unwrap() {
                    check_keywords(sub, &format!("{at}.oneOf"));
                }
            }
            _ => {}
        }
    }
}

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        other => panic!("unknown type {other}"),
    }
}

/// Validates `v` against the subset of JSON Schema the tools use.
fn valid(schema: &Value, v: &Value) -> bool {
    let Some(s) = schema.as_object() else {
        return schema.as_bool().unwrap_or(true);
    };
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(name) => type_matches(name, v),
            Value::Array(names) => names.iter().any(|n| type_matches(n.as_str().unwrap(), v)),
            _ => panic!("bad type"),
        };
        if !ok {
            return false;
        }
    }
    if let Some(values) = s.get("enum")
        && !values.as_array().unwrap().contains(v)
    {
        return false;
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return false;
    }
    if let Some(options) = s.get("oneOf")
        && options
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| valid(o, v))
            .count()
            != 1
    {
        return false;
    }
    if let (Some(min), Some(n)) = (s.get("minimum"), v.as_f64())
        && n < min.as_f64().unwrap()
    {
        return false;
    }
    if let Some(format) = s.get("format").and_then(Value::as_str)
        && v.is_number()
    {
        let fits = match format {
            "uint64" | "uint" => v.is_u64(),
            other => panic!("unknown format {other}"),
        };
        if !fits {
            return false;
        }
    }
    if let Some(object) = v.as_object() {
        let properties = s.get("properties").and_then(Value::as_object);
        if let Some(required) = s.get("required") {
            for name in required.as_array().unwrap() {
                if !object.contains_key(name.as_str().unwrap()) {
                    return false;
                }
            }
        }
        for (key, value) in object {
            let sub = properties
                .and_then(|p| p.get(key))
                .or_else(|| s.get("additionalProperties"));
            if let Some(sub) = sub
                && !valid(sub, value)
            {
                return false;
            }
        }
    }
    if let (Some(items), Some(array)) = (s.get("items"), v.as_array())
        && !array.iter().all(|x| valid(items, x))
    {
        return false;
    }
    true
}

fn parses<T: DeserializeOwned>(v: &Value) -> bool {
    T::deserialize(v).is_ok()
}

type Parser = fn(&Value) -> bool;

fn tools() -> Vec<(&'static str, Parser)> {
    vec![
        ("fs.read", parses::<ReadArgs>),
        ("fs.write", parses::<WriteArgs>),
        ("fs.list", parses::<ListArgs>),
        ("fs.delete", parses::<DeleteArgs>),
        ("cmd.run", parses::<RunArgs>),
        ("http.fetch", parses::<FetchArgs>),
        ("agent.send", parses::<SendArgs>),
        ("mission.finish", parses::<FinishArgs>),
    ]
}

fn schema(tool: &str) -> Value {
    builtin()
        .descriptors()
        .into_iter()
        .find(|d| d.name == tool)
        .unwrap()
        .parameters
        .clone()
}

#[test]
fn every_builtin_has_a_closed_object_schema_in_known_keywords() {
    let registry = builtin();
    assert_eq!(registry.descriptors().len(), tools().len());
    for (tool, _) in tools() {
        let s = schema(tool);
        check_keywords(&s, tool);
        assert_eq!(s["type"], "object", "{tool}");
        assert_eq!(s["additionalProperties"], false, "{tool}");
        for (name, property) in s["properties"].as_object().unwrap() {
            assert!(
                property.get("description").is_some(),
                "{tool}.{name} has no description"
            );
        }
    }
}

/// Values of every JSON type, including ones a property might accept.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(false)),
        Just(json!(0)),
        Just(json!(7)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        Just(json!("")),
        Just(json!("x")),
        Just(json!("utf8")),
        Just(json!("base64")),
        Just(json!("GET")),
        Just(json!("HEAD")),
        Just(json!("POST")),
        Just(json!([])),
        Just(json!(["a"])),
        Just(json!({})),
        Just(json!({"A": "b"})),
        Just(json!({"A": 1})),
    ]
}

/// An argument object: some of the tool's own keys (from every tool, so each sees its
/// neighbours' keys as unknown) with arbitrary values.
fn arguments() -> impl Strategy<Value = Value> {
    let keys = [
        "path",
        "content",
        "encoding",
        "offset",
        "max_bytes",
        "create_parents",
        "command",
        "network",
        "timeout_secs",
        "env",
        "compensate",
        "url",
        "method",
        "to",
        "body",
        "summary",
        "extra",
    ];
    proptest::collection::btree_map(proptest::sample::select(keys.to_vec()), value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn schemas_accept_exactly_what_the_structs_accept(args in arguments()) {
        for (tool, parse) in tools() {
            let s = schema(tool);
            prop_assert_eq!(valid(&s, &args), parse(&args), "{} disagrees on {}", tool, args);
        }
    }
}

/// The agreement test would pass vacuously if no generated input were ever accepted;
/// these hand-picked ones must be, by both.
#[test]
fn minimal_and_full_arguments_are_accepted() {
    let cases = [
        ("fs.read", json!({"path": "a"})),
        (
            "fs.read",
            json!({"path": "a", "encoding": "base64", "offset": 1, "max_bytes": null}),
        ),
        (
            "fs.write",
            json!({"path": "a", "content": "x", "encoding": "utf8", "create_parents": false}),
        ),
        ("fs.list", json!({})),
        ("fs.delete", json!({"path": "a"})),
        (
            "cmd.run",
            json!({"command": "ls", "network": false, "timeout_secs": 5, "env": {"A": "b"}, "compensate": null}),
        ),
        (
            "http.fetch",
            json!({"url": "https://example.com/", "method": "HEAD", "max_bytes": 10}),
        ),
        ("agent.send", json!({"to": "x", "body": null})),
        ("mission.finish", json!({"summary": "done"})),
    ];
    for (tool, args) in cases {
        let parse = tools().into_iter().find(|(t, _)| *t == tool).unwrap().1;
        assert!(valid(&schema(tool), &args), "{tool} schema refuses {args}");
        assert!(parse(&args), "{tool} struct refuses {args}");
    }
}

#[test]
fn argument_errors_are_clear() {
    let r = builtin();
    let check = |tool: &str, args: Value, expect: &str| {
        let err = r.prepare(&call(tool, args.clone())).unwrap_err();
        assert_eq!(
            err.kind,
            aura_tools::ErrorKind::InvalidArguments,
            "{tool} {args}"
        );
        assert_eq!(err.message, expect, "{tool} {args}");
    };
    check(
        "fs.write",
        json!({"content": "x"}),
        "fs.write: missing field `path`",
    );
    check(
        "fs.write",
        json!({"path": "a"}),
        "fs.write: missing field `content`",
    );
    check(
        "fs.read",
        json!({"path": 1}),
        "fs.read: invalid type: integer `1`, expected a string",
    );
    check(
        "fs.read",
        json!({"path": "a", "encoding": "hex"}),
        "fs.read: unknown variant `hex`, expected `utf8` or `base64`",
    );
    check(
        "fs.delete",
        json!({"path": "a", "recursive": true}),
        "fs.delete: unknown field `recursive`, expected `path`",
    );
    check(
        "fs.list",
        json!(null),
        "fs.list: arguments must be a JSON object",
    );
    check(
        "fs.write",
        json!({"path": "a", "content": "!!", "encoding": "base64"}),
        "fs.write: `content` is not valid base64: Invalid symbol 33, offset 0.",
    );
    check(
        "mission.finish",
        json!({"summary": " "}),
        "mission.finish: `summary` is empty",
    );
    check(
        "agent.send",
        json!({"to": "bob", "body": {}}),
        "agent.send: `bob` is not a valid agent id",
    );
}
