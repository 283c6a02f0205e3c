//! Canonical JSON (RFC 8785) against the published vectors in
//! `docs/canonical-json-vectors.json` (the RFC's own examples and Appendix B, more doubles,
//! and Aura's cases), and its properties: the output is a fixed point, independent of the
//! order members were inserted in, and equal to serde_json's compact output wherever that
//! output already was canonical.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use aura_core::jcs;
use proptest::prelude::*;
use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::Value;

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/canonical-json-vectors.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap()
}

#[test]
fn rfc_8785_examples_and_aura_examples() {
    let v = vectors();
    let mut n = 0;
    for group in ["rfc8785_examples", "aura_examples"] {
        for e in v[group].as_array().unwrap() {
            let want = str_at(e, "canonical");
            let got = jcs::canonicalize(str_at(e, "input").as_bytes()).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), want, "{}", e["name"]);
            // The canonical form is a fixed point.
            assert_eq!(jcs::canonicalize(want.as_bytes()).unwrap(), want.as_bytes());
            n += 1;
        }
    }
    assert!(n >= 12, "the vectors are all there");
}

#[test]
fn numbers_are_written_as_ecmascript_writes_them() {
    let v = vectors();
    let mut n = 0;
    for group in ["rfc8785_appendix_b", "more_numbers"] {
        for e in v[group].as_array().unwrap() {
            let bits = u64::from_str_radix(str_at(e, "bits"), 16).unwrap();
            let x = f64::from_bits(bits);
            assert_eq!(
                jcs::to_string(&x).unwrap(),
                str_at(e, "canonical"),
                "bits {bits:016x}"
            );
            n += 1;
        }
    }
    assert!(n > 600);
    for e in v["not_finite"].as_array().unwrap() {
        let x = f64::from_bits(u64::from_str_radix(e.as_str().unwrap(), 16).unwrap());
        assert!(matches!(jcs::to_vec(&x), Err(jcs::Error::NotFinite(_))));
        assert!(jcs::to_vec(&[1.0, x]).is_err());
    }
}

/// Members in exactly the order given, whatever map type the build has.
struct InOrder<'a>(&'a [(String, Value)]);

impl Serialize for InOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[test]
fn a_name_twice_in_one_object_is_refused() {
    let members = vec![
        ("a".to_owned(), Value::from(1)),
        ("a".to_owned(), Value::from(2)),
    ];
    assert_eq!(
        jcs::to_vec(&InOrder(&members)),
        Err(jcs::Error::DuplicateKey("a".into()))
    );
}

#[test]
fn nesting_is_bounded() {
    let mut v = Value::Null;
    for _ in 0..jcs::MAX_DEPTH {
        v = Value::Array(vec![v]);
    }
    assert!(jcs::to_vec(&v).is_ok());
    let v = Value::Array(vec![v]);
    assert_eq!(jcs::to_vec(&v), Err(jcs::Error::TooDeep));
}

#[test]
fn rust_types_are_written_as_serde_json_would_but_sorted() {
    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Tagged {
        Write { path: String, bytes: u64 },
    }
    #[derive(Serialize)]
    enum External {
        Unit,
        New(u8),
        Tuple(u8, u8),
        Struct { b: u8, a: u8 },
    }
    #[derive(Serialize)]
    struct Record {
        zeta: Option<u32>,
        alpha: Vec<External>,
        tagged: Tagged,
        bytes: serde_bytes_like::Bytes,
        map: std::collections::HashMap<u32, char>,
    }
    mod serde_bytes_like {
        pub(crate) struct Bytes(pub(crate) Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }
    let r = Record {
        zeta: None,
        alpha: vec![
            External::Unit,
            External::New(1),
            External::Tuple(2, 3),
            External::Struct { b: 5, a: 4 },
        ],
        tagged: Tagged::Write {
            path: "x".into(),
            bytes: 7,
        },
        bytes: serde_bytes_like::Bytes(vec![0, 255]),
        map: [(10, 'b'), (9, 'a')].into_iter().collect(),
    };
    assert_eq!(
        jcs::to_string(&r).unwrap(),
        r#"{"alpha":["Unit",{"New":1},{"Tuple":[2,3]},{"Struct":{"a":4,"b":5}}],"bytes":[0,255],"map":{"10":"b","9":"a"},"tagged":{"bytes":7,"path":"x","type":"write"},"zeta":null}"#
    );
}

#[test]
fn names_that_are_not_strings_are_refused() {
    let m: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into_iter().collect();
    assert_eq!(jcs::to_vec(&m), Err(jcs::Error::KeyNotString));
}

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Writes `v` with every object's members in reverse of the map's own order.
fn reversed(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(reversed).collect()),
        Value::Object(map) => {
            let mut members: Vec<(String, Value)> =
                map.iter().map(|(k, v)| (k.clone(), reversed(v))).collect();
            members.reverse();
            Value::Object(members.into_iter().collect())
        }
        other => other.clone(),
    }
}

/// Whether every object's names are in strictly ascending byte order and every number is
/// an integer: then serde_json's compact output is already canonical.
fn plainly_sorted(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().all(plainly_sorted),
        Value::Object(map) => {
            let names: Vec<&String> = map.keys().collect();
            names.windows(2).all(|w| w[0] < w[1])
                && names.iter().all(|n| n.chars().all(|c| (c as u32) < 0xe000))
                && map.values().all(plainly_sorted)
        }
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => true,
    }
}

proptest! {
    #[test]
    fn canonical_json_is_a_fixed_point(v in any_value()) {
        let once = jcs::to_vec(&v).unwrap();
        let twice = jcs::canonicalize(&once).unwrap();
        prop_assert_eq!(&once, &twice);
        // And it is JSON that reads back as the same value.
        let back: Value = serde_json::from_slice(&once).unwrap();
        prop_assert_eq!(jcs::to_vec(&back).unwrap(), once);
    }

    #[test]
    fn member_order_does_not_matter(v in any_value()) {
        prop_assert_eq!(jcs::to_vec(&v).unwrap(), jcs::to_vec(&reversed(&v)).unwrap());
    }

    #[test]
    fn members_given_in_any_order_give_the_same_bytes(
        members in proptest::collection::btree_map(any::<String>(), any::<i64>(), 0..8),
        seed in any::<u64>(),
    ) {
        let mut list: Vec<(String, Value)> =
            members.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect();
        let sorted = jcs::to_vec(&InOrder(&list)).unwrap();
        // A deterministic shuffle.
        let mut s = seed;
        for i in (1..list.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            list.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(jcs::to_vec(&InOrder(&list)).unwrap(), sorted);
    }

    #[test]
    fn already_canonical_serde_json_output_is_unchanged(v in any_value()) {
        let compact = serde_json::to_vec(&v).unwrap();
        if plainly_sorted(&v) {
            prop_assert_eq!(jcs::to_vec(&v).unwrap(), compact);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
        let _ = jcs::canonicalize(text.as_bytes());
    }
}

/// A value that cannot be serialised is an error, never an empty body.
#[test]
fn a_failing_value_is_an_error_not_an_empty_body() {
    struct Fails;
    impl Serialize for Fails {
        fn serialize<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot"))
        }
    }
    assert_eq!(
        jcs::to_vec(&Fails),
        Err(jcs::Error::Custom("cannot".into()))
    );
}
