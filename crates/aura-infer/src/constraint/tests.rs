//! Tests of the schema compiler, the recogniser and the vocabulary walk: tables of
//! documents with the first character that must be refused marked, compile errors,
//! property tests against serde_json and a reference validator, and the shared-prefix
//! mask against a token-by-token one.

use std::sync::Arc;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Matcher, Recogniser, Schema, Vocab};
use crate::ToolDef;

/// Marks, in a table's text, the first character that must be refused.
const MARK: char = '⟨';

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Accepted, and nothing more can be written.
    Done,
    /// Accepted; the value may end here or go on (a top-level number).
    Ends,
    /// Accepted, unfinished.
    Open,
    /// Refused at the marked character.
    Refused,
}

fn schema(s: &Value) -> Schema {
    Schema::compile(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Feeds `text` (marker removed); returns the index (in characters) of the first refused
/// character, or what the recogniser says of the whole.
fn run(schema: Schema, text: &str) -> (Option<usize>, Want) {
    let mut r = Recogniser::new(schema);
    for (i, c) in text.chars().filter(|&c| c != MARK).enumerate() {
        if !r.feed(c) {
            return (Some(i), Want::Refused);
        }
    }
    let want = if r.is_complete() {
        Want::Done
    } else if r.can_end() {
        Want::Ends
    } else {
        Want::Open
    };
    (None, want)
}

/// Checks a table of `(text, want)` rows against one schema.
fn check(s: &Value, rows: &[(&str, Want)]) {
    for &(text, want) in rows {
        let got = run(schema(s), text);
        let refused_at = text.chars().position(|c| c == MARK);
        let expected = match want {
            Want::Refused => (refused_at, Want::Refused),
            other => (None, other),
        };
        assert_eq!(got, expected, "{text} against {s}");
    }
}

fn weather() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "temperature": {"type": "integer"},
            "unit": {"enum": ["C", "F"]}
        },
        "required": ["city", "temperature", "unit"],
        "additionalProperties": false
    })
}

#[test]
fn json_objects_and_their_prefixes_are_recognised() {
    use Want::*;
    let rows = [
        (r#"{}"#, Done),
        (r#"{"a": 1}"#, Done),
        (
            r#"{"a": [1, 2.5, -3e+2, true, false, null, "x\n\u00e9"], "b": {"c": {}}}"#,
            Done,
        ),
        (r#"{"a": "#, Open),
        (r#"{"a": 12"#, Open),
        (r#"{"a": tr"#, Open),
        (r#"{"a"⟨}"#, Refused),
        (r#"{"a": 0⟨1}"#, Refused),
        (r#"{"a": 1,⟨}"#, Refused),
        (r#"⟨[1]"#, Refused),
        (r#"⟨ {}"#, Refused),
        (r#"{}⟨ "#, Refused),
        (r#"{"a": "x" }"#, Done),
        (r#"{"a":  ⟨ 1}"#, Refused),
        (r#"{"a": "\⟨q"}"#, Refused),
        (r#"{"a": [⟨}"#, Refused),
        ("{\"a\": \"tab⟨\there\"}", Refused),
        (r#"{"é": "ünïcode"}"#, Done),
        (r#"{"\u00e9": 1, "a\"b": 2}"#, Done),
    ];
    for (text, want) in rows {
        let got = run(Schema::any_object(), text);
        let refused_at = text.chars().position(|c| c == MARK);
        let expected = match want {
            Refused => (refused_at, Refused),
            other => (None, other),
        };
        assert_eq!(got, expected, "{text}");
    }
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{{\"a\": {}", "[".repeat(70));
    assert_eq!(run(Schema::any_object(), &deep).1, Want::Refused);
}

#[test]
fn objects_need_their_required_keys_and_only_listed_ones_once() {
    use Want::*;
    check(
        &weather(),
        &[
            (r#"{"city": "Paris", "temperature": 21, "unit": "C"}"#, Done),
            (r#"{"unit": "F", "city": "Oslo", "temperature": -3}"#, Done),
            (r#"{"city": "Paris", "temperature": 21"#, Open),
            // A required key is missing.
            (r#"{"city": "Paris", "unit": "C"⟨}"#, Refused),
            (r#"{⟨}"#, Refused),
            // An unknown key, refused at its first character that no listed name has.
            (r#"{"⟨zip": 1}"#, Refused),
            (r#"{"cit"#, Open),
            (r#"{"city⟨2": 1}"#, Refused),
            // A repeated key, refused as soon as it can only be the repeat.
            (r#"{"city": "a", "⟨city": "b"}"#, Refused),
            // Wrong types.
            (r#"{"temperature": ⟨"21"}"#, Refused),
            (r#"{"city": ⟨21}"#, Refused),
            // Not one of the enum's values.
            (r#"{"unit": "⟨K"}"#, Refused),
            (r#"{"unit": "C⟨C"}"#, Refused),
            // Integers have no fraction or exponent.
            (r#"{"temperature": 21⟨.5}"#, Refused),
            (r#"{"temperature": 2⟨e3}"#, Refused),
            // No comma once every allowed key is written.
            (
                r#"{"city": "Paris", "temperature": 21, "unit": "C"⟨,"#,
                Refused,
            ),
        ],
    );
}

#[test]
fn additional_properties_take_their_schema_and_cannot_disguise_a_listed_key() {
    use Want::*;
    let s = json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": {"type": "string"}
    });
    check(
        &s,
        &[
            (r#"{"a": 1, "b": "x", "aa": "y"}"#, Done),
            (r#"{"b": ⟨1}"#, Refused),
            (r#"{"a": 1, "a⟨": 2}"#, Refused),
            (r#"{"\⟨u0061": 1}"#, Refused),
            (r#"{"b\n\"": "other escapes are fine"}"#, Done),
        ],
    );
    // Without `properties`, any keys; with them and no `additionalProperties`, only those.
    check(&json!({"type": "object"}), &[(r#"{"x": [1]}"#, Done)]);
    check(
        &json!({"properties": {"a": {}}}),
        &[(r#"{"a": [1]}"#, Done), (r#"{"⟨b": 1}"#, Refused)],
    );
    // A required key that is not listed takes the additional schema.
    check(
        &json!({"type": "object", "required": ["k"], "additionalProperties": {"type": "null"}}),
        &[(r#"{⟨}"#, Refused), (r#"{"j": null, "k": null}"#, Done)],
    );
}

#[test]
fn arrays_respect_their_items_and_bounds() {
    use Want::*;
    let s = json!({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2});
    check(
        &s,
        &[
            ("[1, 2]", Done),
            ("[⟨]", Refused),
            ("[1, 2⟨, 3]", Refused),
            ("[1, ⟨true]", Refused),
        ],
    );
    let tuple = json!({
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "integer"}],
        "items": false
    });
    check(
        &tuple,
        &[
            (r#"["a", 1]"#, Done),
            (r#"["a"]"#, Done),
            (r#"[⟨1]"#, Refused),
            (r#"["a", 1⟨, 2]"#, Refused),
        ],
    );
}

#[test]
fn strings_count_code_points_and_need_valid_escapes() {
    use Want::*;
    let s = json!({"type": "string", "minLength": 2, "maxLength": 3});
    check(
        &s,
        &[
            (r#""abc""#, Done),
            (r#""abc⟨d""#, Refused),
            (r#""a⟨""#, Refused),
            (r#""ab\n⟨x""#, Refused),
            (r#""ab\n"#, Open),
            (r#""é日本""#, Done),
            // A surrogate pair is one code point.
            (r#""ab\ud83d\ude00""#, Done),
            // A lone low surrogate, and a high one without its low half.
            (r#""\ud⟨c00""#, Refused),
            (r#""\ud83d⟨x""#, Refused),
            (r#""\ud83d\u0⟨041""#, Refused),
        ],
    );
}

#[test]
fn literals_unions_and_scalars() {
    use Want::*;
    check(
        &json!({"enum": [1, 10, "x", null, {"a": [true]}]}),
        &[
            ("1", Ends),
            ("10", Done),
            ("⟨2", Refused),
            (r#""x""#, Done),
            ("null", Done),
            (r#"{"a":[true]}"#, Done),
            (r#"{⟨ "#, Refused),
        ],
    );
    check(
        &json!({"const": "C"}),
        &[(r#""C""#, Done), (r#""⟨F""#, Refused)],
    );
    check(
        &json!({"type": "string", "enum": ["a", 1]}),
        &[(r#""a""#, Done), ("⟨1", Refused)],
    );
    check(
        &json!({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 1}]}),
        &[
            ("12", Ends),
            (r#""x""#, Done),
            (r#""x⟨y""#, Refused),
            ("⟨t", Refused),
        ],
    );
    check(
        &json!({"type": ["string", "null"]}),
        &[("null", Done), (r#""n""#, Done), ("⟨1", Refused)],
    );
    check(
        &json!({"type": "boolean"}),
        &[("true", Done), ("fals", Open), ("⟨1", Refused)],
    );
    check(
        &json!({"type": "number"}),
        &[("-0.5e+3", Ends), ("-⟨.", Refused), ("0⟨1", Refused)],
    );
    // Unions of objects stay open while the text fits both.
    check(
        &json!({"oneOf": [
            {"properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"a": {"type": "string"}}, "required": ["a"]}
        ]}),
        &[
            (r#"{"a": 1}"#, Done),
            (r#"{"a": "s"}"#, Done),
            (r#"{"a": ⟨n"#, Refused),
        ],
    );
    check(&json!({}), &[("[1, {}]", Done), ("7", Ends)]);
}

#[test]
fn bounded_integers_allow_only_digits_that_can_end_in_range() {
    use Want::*;
    check(
        &json!({"type": "integer", "minimum": 10, "maximum": 20}),
        &[
            ("15", Ends),
            ("20", Ends),
            // "1" and "2" can still become 1x and 20; "3" cannot become anything in range.
            ("1", Open),
            ("2", Open),
            ("2⟨1", Refused),
            ("⟨3", Refused),
            ("⟨0", Refused),
            ("⟨-", Refused),
            ("1⟨.5", Refused),
        ],
    );
    check(
        &json!({"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 0}),
        &[
            ("-2", Ends),
            ("-⟨3", Refused),
            ("⟨0", Refused),
            ("-1⟨0", Refused),
        ],
    );
    // What schemars writes for an `Option<u8>`; `-0` is zero.
    let byte =
        json!({"type": ["integer", "null"], "format": "uint8", "minimum": 0, "maximum": 255});
    check(
        &byte,
        &[
            ("255", Ends),
            ("25⟨6", Refused),
            ("null", Done),
            ("-0", Ends),
            ("-⟨1", Refused),
        ],
    );
    // Fractional bounds; a bounded integer's magnitude stays within u64 unless that side
    // is open.
    check(
        &json!({"type": "integer", "minimum": 1.5, "maximum": 1e30}),
        &[
            ("2", Ends),
            ("1", Open),
            ("18446744073709551614", Ends),
            ("1844674407370955161⟨5", Refused),
        ],
    );
    check(
        &json!({"type": "integer", "minimum": 0}),
        &[("99999999999999999999999", Ends)],
    );
    // Inside an object, a number out of range cannot end.
    check(
        &json!({"properties": {"n": {"type": "integer", "maximum": 5}}}),
        &[
            (r#"{"n": 5}"#, Done),
            (r#"{"n": -7}"#, Done),
            (r#"{"n": ⟨6}"#, Refused),
        ],
    );
}

/// The keywords schemars writes for aura-tools' built-ins (aura-tools' tests/schemas.rs
/// pins them) all compile: here `cmd.run`'s arguments as schemars writes them.
#[test]
fn tool_schemas_as_schemars_writes_them_are_enforced() {
    use Want::*;
    let run_args = json!({
        "type": "object",
        "properties": {
            "command": {"description": "The shell command.", "type": "string"},
            "network": {"type": "boolean", "default": false},
            "timeout_secs": {"type": ["integer", "null"], "format": "uint64", "minimum": 0, "default": null},
            "env": {"type": "object", "additionalProperties": {"type": "string"}, "default": {}},
            "method": {"oneOf": [{"const": "GET", "description": "Read."}, {"const": "HEAD"}]},
            "body": true
        },
        "additionalProperties": false,
        "required": ["command"]
    });
    check(
        &run_args,
        &[
            (
                r#"{"command": "ls", "timeout_secs": 30, "env": {"A": "b"}, "method": "HEAD", "body": [1]}"#,
                Done,
            ),
            (r#"{"command": "ls", "timeout_secs": null}"#, Done),
            (r#"{"command": "ls", "timeout_secs": -⟨5}"#, Refused),
            (r#"{"command": "ls", "env": {"A": ⟨1}}"#, Refused),
            (r#"{"command": "ls", "method": "⟨POST"}"#, Refused),
        ],
    );
}

#[test]
fn numbers_stay_within_what_serde_json_reads() {
    let nines = "9".repeat(308);
    let fine = [
        "9e307",
        "-1e-400",
        "0.5e-99999",
        "1e0000307",
        nines.as_str(),
    ];
    for text in fine {
        check(&json!({"type": "number"}), &[(text, Want::Ends)]);
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(v.is_number(), "{text}");
    }
    // Beyond f64's range serde_json refuses the number ("number out of range"); the
    // bound is on digits plus exponent, so it refuses a little early (1e308 included).
    let too_long = format!("{nines}⟨9");
    check(
        &json!({"type": "number"}),
        &[
            ("1e30⟨8", Want::Refused),
            ("12e30⟨7", Want::Refused),
            ("1e0000030⟨9", Want::Refused),
            (too_long.as_str(), Want::Refused),
        ],
    );
}

#[test]
fn references_resolve_recursively() {
    use Want::*;
    let tree = json!({
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "v": {"type": "integer"},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                },
                "required": ["v"]
            }
        },
        "$ref": "#/$defs/node"
    });
    check(
        &tree,
        &[
            (
                r#"{"v": 1, "kids": [{"v": 2, "kids": []}, {"v": 3}]}"#,
                Done,
            ),
            (r#"{"v": 1, "kids": [{⟨}]}"#, Refused),
            (r#"{"v": 1, "kids": [{"v": ⟨"x"}]}"#, Refused),
        ],
    );
    let defs = json!({
        "type": "object",
        "properties": {"p": {"$ref": "#/definitions/point", "description": "where"}},
        "definitions": {"point": {"type": "array", "items": {"type": "number"}, "maxItems": 2}}
    });
    check(
        &defs,
        &[
            (r#"{"p": [1, 2]}"#, Done),
            (r#"{"p": [1, 2⟨, 3]}"#, Refused),
        ],
    );
}

#[test]
fn unsupported_or_invalid_schemas_are_refused_with_a_reason() {
    for (s, want) in [
        (
            json!({"type": "integer", "multipleOf": 2}),
            "keyword `multipleOf` is not supported",
        ),
        (
            json!({"type": "number", "minimum": 0}),
            "`minimum` is supported on integers only",
        ),
        (json!({"exclusiveMaximum": 1}), "on integers only"),
        (
            json!({"type": "integer", "minimum": 5, "exclusiveMaximum": 5}),
            "no integer is within the bounds",
        ),
        (json!({"not": {}}), "keyword `not` is not supported"),
        (
            json!({"type": "array", "uniqueItems": true}),
            "keyword `uniqueItems`",
        ),
        (
            json!({"$ref": "https://example.com/s.json"}),
            "only `$ref`s within",
        ),
        (json!({"$ref": "#/$defs/missing"}), "does not resolve"),
        (
            json!({"type": "object", "properties": {}, "required": ["a"], "additionalProperties": false}),
            "required property `a` is not allowed",
        ),
        (json!({"type": "wat"}), "unknown type `wat`"),
        (
            json!({"allOf": [{}, {}]}),
            "`allOf` with more than one schema",
        ),
        (
            json!({"type": "string", "minLength": 3, "maxLength": 2}),
            "`minLength` is above",
        ),
        (json!({"items": [{}]}), "`items` as an array"),
        (
            json!({"enum": [1], "type": "string"}),
            "no value of `enum`/`const`",
        ),
        (json!(false), "`false` allows no value"),
        (
            json!({"anyOf": [{"type": "string"}], "type": "string"}),
            "beside",
        ),
        (json!({"enum": ["a"], "maxLength": 2}), "beside `enum`"),
        (
            json!({"type": "array", "items": false, "minItems": 1}),
            "more items than",
        ),
        (json!(3), "must be an object or a boolean"),
    ] {
        let err = Schema::compile(&s).unwrap_err().to_string();
        assert!(err.contains(want), "{s}: {err:?} should say {want:?}");
        assert!(err.starts_with("constraint: schema at #"), "{err}");
    }
    // `pattern` and `format` are accepted (documented as not enforced), annotations too.
    let lax = json!({"type": "string", "pattern": "^a$", "format": "date", "title": "t"});
    check(&lax, &[(r#""not a date""#, Want::Done)]);
}

fn tool(name: &str, parameters: Value) -> ToolDef {
    ToolDef {
        name: name.into(),
        description: String::new(),
        parameters,
    }
}

#[test]
fn tool_calls_name_a_tool_and_give_it_valid_arguments() {
    use Want::*;
    let tools = [
        tool(
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        ),
        tool(
            "add",
            json!({
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/n"}, "b": {"$ref": "#/$defs/n"}},
                "required": ["a", "b"],
                "$defs": {"n": {"type": "integer"}}
            }),
        ),
        tool("anything", Value::Null),
    ];
    let rows = [
        (
            r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#,
            Done,
        ),
        (r#"{"arguments": {"a": 1, "b": 2}, "name": "add"}"#, Done),
        (r#"{"name": "anything", "arguments": {"x": [null]}}"#, Done),
        (r#"{"name": "⟨nope"#, Refused),
        (r#"{"name": "add", "arguments": {"⟨city"#, Refused),
        (r#"{"name": "add", "arguments": {"a": 1⟨}"#, Refused),
        (r#"{"name": "add"⟨}"#, Refused),
    ];
    for (text, want) in rows {
        let got = run(Schema::tool_call(&tools).unwrap(), text);
        let expected = match want {
            Refused => (text.chars().position(|c| c == MARK), Refused),
            other => (None, other),
        };
        assert_eq!(got, expected, "{text}");
    }
    let twice = [tool("a", Value::Null), tool("a", Value::Null)];
    assert!(
        Schema::tool_call(&twice)
            .unwrap_err()
            .to_string()
            .contains("listed twice")
    );
    assert!(Schema::tool_call(&[]).is_err());
}

/// A reference validator for the subset the property tests use.
fn valid(s: &Value, v: &Value, root: &Value) -> bool {
    let Some(s) = s.as_object() else {
        return s.as_bool().unwrap_or(false);
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return root
            .pointer(&r[1..])
            .is_some_and(|target| valid(target, v, root));
    }
    if let Some(alternatives) = s.get("anyOf").and_then(Value::as_array) {
        return alternatives.iter().any(|a| valid(a, v, root));
    }
    if s.get("enum")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.contains(v))
    {
        return false;
    }
    let of_type = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    };
    let type_ok = match s.get("type") {
        None => true,
        Some(Value::String(t)) => of_type(t),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(of_type),
        Some(_) => false,
    };
    if !type_ok {
        return false;
    }
    let count = |k: &str| s.get(k).and_then(Value::as_u64).map(|n| n as usize);
    match v {
        Value::Object(o) => {
            let props = s.get("properties").and_then(Value::as_object);
            let required = s.get("required").and_then(Value::as_array);
            if required
                .into_iter()
                .flatten()
                .any(|r| !r.as_str().is_some_and(|r| o.contains_key(r)))
            {
                return false;
            }
            o.iter().all(|(k, x)| match props.and_then(|p| p.get(k)) {
                Some(p) => valid(p, x, root),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(b)) => *b,
                    Some(a) => valid(a, x, root),
                    None => props.is_none(),
                },
            })
        }
        Value::Array(items) => {
            count("minItems").is_none_or(|n| items.len() >= n)
                && count("maxItems").is_none_or(|n| items.len() <= n)
                && items
                    .iter()
                    .all(|x| s.get("items").is_none_or(|i| valid(i, x, root)))
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            let bound = |k: &str| s.get(k).and_then(Value::as_f64);
            bound("minimum").is_none_or(|m| n >= m) && bound("maximum").is_none_or(|m| n <= m)
        }
        Value::String(t) => {
            let n = t.chars().count();
            count("minLength").is_none_or(|m| n >= m) && count("maxLength").is_none_or(|m| n <= m)
        }
        _ => true,
    }
}

fn report() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "temperature": {"type": "integer"},
            "unit": {"enum": ["C", "F"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "note": {"type": ["string", "null"]},
            "where": {"$ref": "#/$defs/point"},
            "extra": {"anyOf": [{"type": "number"}, {"type": "boolean"}]},
            "humidity": {"type": "integer", "minimum": 0, "maximum": 100}
        },
        "required": ["city", "temperature", "unit"],
        "additionalProperties": false,
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                "required": ["lat", "lon"]
            }
        }
    })
}

prop_compose! {
    /// A document valid against `report()`, its keys in any order, written compactly
    /// or with a space after `,` and `:`.
    fn report_doc()(
        city in vec(any::<char>(), 0..=12).prop_map(String::from_iter),
        temperature in any::<i64>(),
        unit in prop_oneof![Just("C"), Just("F")],
        tags in option::of(vec(".{0,6}", 0..=3)),
        note in option::of(option::of(".{0,8}")),
        place in option::of((-90.0f64..90.0, -180.0f64..180.0)),
        extra in option::of(prop_oneof![
            any::<bool>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
        ]),
        humidity in option::of(0..=100u8),
        spaced in any::<bool>(),
        order in Just((0..8).collect::<Vec<usize>>()).prop_shuffle(),
    ) -> String {
        let entries = [
            Some(("city", json!(city))),
            Some(("temperature", json!(temperature))),
            Some(("unit", json!(unit))),
            tags.map(|t| ("tags", json!(t))),
            note.map(|n| ("note", json!(n))),
            place.map(|(lat, lon)| ("where", json!({"lat": lat, "lon": lon}))),
            extra.map(|x| ("extra", x)),
            humidity.map(|h| ("humidity", json!(h))),
        ];
        let (comma, colon) = if spaced { (", ", ": ") } else { (",", ":") };
        let body: Vec<String> = order
            .iter()
            .filter_map(|&i| entries[i].as_ref())
            .map(|(k, v)| format!("{}{colon}{v}", json!(k)))
            .collect();
        format!("{{{}}}", body.join(comma))
    }
}

fn accepts_whole(schema: Schema, text: &str) -> bool {
    let mut r = Recogniser::new(schema);
    text.chars().all(|c| r.feed(c)) && r.is_complete()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every valid document is accepted, character by character, and is complete.
    #[test]
    fn valid_documents_are_accepted(doc in report_doc()) {
        let s = report();
        let v: Value = serde_json::from_str(&doc).unwrap();
        prop_assert!(valid(&s, &v, &s), "the generator wrote an invalid document: {}", doc);
        prop_assert!(accepts_whole(schema(&s), &doc), "{}", doc);
        prop_assert!(accepts_whole(Schema::any_object(), &doc), "{}", doc);
    }

    /// A document with one character deleted, inserted or replaced is accepted only if
    /// serde_json parses it and it is still valid.
    #[test]
    fn damaged_documents_are_accepted_only_if_still_valid(
        doc in report_doc(),
        damage in damage(),
    ) {
        let text = damage.apply(&doc);
        let s = report();
        if accepts_whole(schema(&s), &text) {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert!(valid(&s, &v, &s), "{}", text);
        }
        if accepts_whole(Schema::any_object(), &text) {
            let v: Result<Value, _> = serde_json::from_str(&text);
            prop_assert!(v.is_ok_and(|v| v.is_object()), "{}", text);
        }
    }

    /// No dead ends: whatever part of a (damaged) document is accepted can be completed,
    /// so a model steered by the mask always has a token to write.
    #[test]
    fn every_accepted_prefix_can_be_completed(doc in report_doc(), damage in damage()) {
        let text = damage.apply(&doc);
        for s in [schema(&report()), Schema::any_object()] {
            let mut r = Recogniser::new(s);
            let accepted: String = text.chars().take_while(|&c| r.feed(c)).collect();
            let mut budget = 20_000;
            prop_assert!(
                completable(&r.schema, &r.paths, 200, &mut budget),
                "{:?} cannot be completed",
                accepted
            );
        }
    }
}

/// One character deleted, inserted or replaced.
#[derive(Clone, Debug)]
struct Damage {
    kind: u8,
    at: prop::sample::Index,
    c: char,
}

impl Damage {
    fn apply(&self, doc: &str) -> String {
        let mut chars: Vec<char> = doc.chars().collect();
        let i = self.at.index(chars.len() + 1);
        match self.kind {
            0 if i < chars.len() => {
                chars.remove(i);
            }
            1 => chars.insert(i, self.c),
            _ if i < chars.len() => chars[i] = self.c,
            _ => chars.push(self.c),
        }
        chars.into_iter().collect()
    }
}

fn damage() -> impl Strategy<Value = Damage> {
    let chars: Vec<char> = r#"{}[]",:.-+ 0123456789eEtrufalsn\abcdyz"#.chars().collect();
    (
        0..3u8,
        any::<prop::sample::Index>(),
        prop::sample::select(chars),
    )
        .prop_map(|(kind, at, c)| Damage { kind, at, c })
}

/// Characters a completion is searched over, closing ones first so that the search
/// usually goes straight to an end.
const COMPLETIONS: &str = "\"}],:0[{ntrufalsecityempraugwhxoCF\\d";

/// Whether some text of at most `depth` characters completes the value from `paths`
/// (a depth-first search, `budget` characters fed at most).
fn completable(schema: &Schema, paths: &[super::Path], depth: usize, budget: &mut usize) -> bool {
    if paths.iter().any(|p| p.can_end(schema)) {
        return true;
    }
    if depth == 0 {
        return false;
    }
    let mut out = Vec::new();
    for c in COMPLETIONS.chars() {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        schema.step(paths, c, &mut out);
        if !out.is_empty() && completable(schema, &out, depth - 1, budget) {
            return true;
        }
    }
    false
}

/// Whether `text` can follow the recogniser's state (checked on its own).
fn continues(r: &Recogniser, text: &str) -> bool {
    let mut paths = r.paths.clone();
    let mut out = Vec::new();
    for c in text.chars() {
        r.schema.step(&paths, c, &mut out);
        if out.is_empty() {
            return false;
        }
        std::mem::swap(&mut paths, &mut out);
    }
    !text.is_empty()
}

const PIECES: &[&str] = &[
    "{",
    "}",
    "\"",
    "\"c",
    "ity",
    "city",
    "\":",
    ": ",
    " ",
    ",",
    ", \"",
    "1",
    "2",
    "-",
    ".",
    "5",
    "\"C",
    "\"F\"",
    "C",
    "[",
    "]",
    "tags",
    "null",
    "true",
    "x",
    "é",
    "\\",
    "n",
    "u",
    "00",
    "e",
    "temperature",
    "unit",
    "where",
    "lat",
    "\"lat\": ",
    "}}",
    "\n",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The mask that walks the sorted vocabulary, sharing prefixes and skipping dead
    /// ones, allows exactly the tokens that continue the text when checked one by one.
    #[test]
    fn the_shared_prefix_mask_equals_the_token_by_token_one(
        doc in report_doc(),
        tokens in vec(vec(prop::sample::select(PIECES), 1..=3), 1..200),
        holes in vec(any::<bool>(), 200),
    ) {
        // Some ids have no text, as special tokens do.
        let texts: Vec<Option<String>> = tokens
            .iter()
            .zip(&holes)
            .map(|(t, hole)| (!hole).then(|| t.concat()))
            .collect();
        let mut m = Matcher::with_vocab(
            Recogniser::new(schema(&report())),
            Arc::new(Vocab::new(texts.clone())),
            Vec::new(),
        );
        for c in doc.chars() {
            m.allowed_tokens();
            for (id, text) in texts.iter().enumerate() {
                let want = text.as_deref().is_some_and(|t| continues(&m.rec, t));
                prop_assert_eq!(m.allowed[id], want, "token {:?} after part of {}", text, doc);
            }
            prop_assert!(m.rec.feed(c));
        }
    }
}

#[test]
fn the_end_of_sequence_token_is_allowed_only_where_the_value_may_end() {
    // Token 0 is the end-of-sequence token (special: no text).
    let texts = ["1", "2", "}", "{", "\""]
        .iter()
        .map(|t| Some((*t).to_owned()));
    let texts: Vec<Option<String>> = std::iter::once(None).chain(texts).collect();
    let vocab = Arc::new(Vocab::new(texts));
    let allowed = |m: &mut Matcher| {
        let mut logits = vec![0.0; 6];
        m.mask(&mut logits).unwrap();
        (0..6)
            .filter(|&i| logits[i] > f32::NEG_INFINITY)
            .collect::<Vec<_>>()
    };
    let integer = Recogniser::new(schema(&json!({"type": "integer"})));
    let mut m = Matcher::with_vocab(integer, Arc::clone(&vocab), vec![0]);
    assert_eq!(allowed(&mut m), [1, 2]);
    assert!(m.forbids_stop());
    assert!(!m.advance(1).unwrap());
    // "1" may end or go on: the end-of-sequence token is allowed and ends it.
    assert_eq!(allowed(&mut m), [0, 1, 2]);
    assert!(!m.forbids_stop());
    assert!(m.advance(0).unwrap());

    // An object ends with its `}`; the end-of-sequence token is never needed.
    let object = Recogniser::new(Schema::any_object());
    let mut m = Matcher::with_vocab(object, vocab, vec![0]);
    assert_eq!(allowed(&mut m), [4]);
    assert!(m.advance(0).is_err());
    assert!(!m.advance(4).unwrap());
    assert_eq!(allowed(&mut m), [3, 5]);
    assert!(m.advance(3).unwrap());
}

#[test]
fn constraints_are_checked_without_a_model() {
    use crate::Constraint;
    let weather = weather();
    let fine = [
        Constraint::JsonObject,
        Constraint::JsonObjectAfter(r#"{"a": "#.into()),
        Constraint::JsonSchema(weather.clone()),
        Constraint::JsonSchemaAfter {
            schema: weather.clone(),
            prefix: r#"{"city": ""#.into(),
        },
        Constraint::ToolCall {
            tools: vec![tool("t", Value::Null)],
            required: true,
        },
    ];
    for c in fine {
        assert!(c.check().is_ok(), "{c:?}");
    }
    for (c, want) in [
        (
            Constraint::JsonObjectAfter("[".into()),
            "`[` does not begin an unfinished JSON object",
        ),
        (
            Constraint::JsonSchemaAfter {
                schema: weather.clone(),
                prefix: r#"{"town"#.into(),
            },
            "does not begin an unfinished JSON value valid against the schema",
        ),
        (
            Constraint::JsonSchemaAfter {
                schema: weather,
                prefix: r#"{"city": "a", "temperature": 1, "unit": "C"}"#.into(),
            },
            "does not begin an unfinished",
        ),
        (
            Constraint::JsonSchema(json!({"not": {}})),
            "keyword `not` is not supported",
        ),
        (
            Constraint::ToolCall {
                tools: vec![tool("t", Value::Null)],
                required: false,
            },
            "`required: false`",
        ),
    ] {
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains(want), "{c:?}: {err:?} should say {want:?}");
    }
}
