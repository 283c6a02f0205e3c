//! Procedural memory's recipes (docs/memory.md, "Recipes"): a named, versioned list of
//! tool calls an agent saved, with `{{param}}` placeholders filled from a run's arguments.
//!
//! The kernel owns the type because a recipe's expansion is part of a mission's record:
//! `recipe.run` is recorded as the recipe itself, its digest and the calls it expanded
//! to (`mission.expanded`), and the kernel checks, live and on replay, that the digest is
//! the recipe's and that the calls are exactly what the recipe and the run's arguments
//! give. Replay therefore never reads the node's recipe book, and a tampered expansion
//! diverges at its entry.
//!
//! **Encoding** (format 1): the recipe's RFC 8785 canonical JSON
//! (`{"calls":[{"arguments":{...},"tool":"..."}],"name":"...","params":[...],"v":1,"version":N}`),
//! at most [`MAX_RECIPE_BYTES`]; its **digest** is SHA-256 over `aura/memory/recipe/v1\0`
//! and those bytes. The test vector is in this file's tests.
//!
//! **Templates** are deliberately minimal: inside a JSON string of a call's arguments
//! (never a key), `{{name}}` is replaced by the run's argument `name`, a string, inserted
//! as it is (never read again for placeholders, so an argument cannot smuggle in another
//! placeholder). A `{{` must open a declared parameter's name and close with `}}`;
//! anything else is refused when the recipe is saved or decoded. There is no escape for
//! a literal `{{`.

use std::collections::BTreeMap;

use aura_core::hash::Hash;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The recipe format this build writes and reads.
pub const RECIPE_FORMAT: u32 = 1;
/// The largest recipe, as canonical JSON.
pub const MAX_RECIPE_BYTES: usize = 64 * 1024;
/// The most calls one recipe makes.
pub const MAX_RECIPE_CALLS: usize = 32;
/// The most parameters one recipe declares.
pub const MAX_RECIPE_PARAMS: usize = 16;
/// The longest value a run may give a parameter, in bytes.
pub const MAX_PARAM_VALUE: usize = 4096;
/// How deeply a call's arguments may nest.
const MAX_DEPTH: usize = 32;
/// The domain tag of a recipe's digest.
const DIGEST_TAG: &[u8] = b"aura/memory/recipe/v1\0";

/// The tool that runs a recipe as one step.
pub const RUN_TOOL: &str = "recipe.run";
/// The tool that saves a recipe in the agent's own memory.
pub const SAVE_TOOL: &str = "memory.recipe.save";
/// The tool that forgets one.
pub const FORGET_TOOL: &str = "memory.recipe.forget";

/// Tools a recipe may not call: recipes do not nest (a recipe that runs a recipe could
/// loop, and its authority would be judged twice over), do not change the recipe book
/// they are read from, and do not end the mission (a recipe is one step of it).
pub const NOT_IN_RECIPES: [&str; 4] = [RUN_TOOL, SAVE_TOOL, FORGET_TOOL, "mission.finish"];

/// A saved recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The format, [`RECIPE_FORMAT`].
    pub v: u32,
    /// 1-64 of `a-z`, `0-9`, `.`, `_` and `-`, starting with a letter or digit.
    pub name: String,
    /// 1 for the first recipe saved under the name, one more for each save after.
    pub version: u32,
    /// The parameters its placeholders name: 1-32 of `a-z`, `0-9` and `_`, starting
    /// with a letter; every one must be given by a run.
    #[serde(default)]
    pub params: Vec<String>,
    pub calls: Vec<RecipeCall>,
}

/// One call of a recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeCall {
    pub tool: String,
    /// A JSON object; its strings may hold placeholders.
    pub arguments: Value,
}

/// Why a recipe, or a run of one, was refused. One lowercase line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    #[error("the recipe is {0} bytes; the most is {MAX_RECIPE_BYTES}")]
    TooLarge(usize),
    #[error("the recipe does not decode: {0}")]
    Malformed(String),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(why: impl Into<String>) -> RecipeError {
    RecipeError::Invalid(why.into())
}

/// At most 64 characters of hostile text, for an error message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A recipe's name: 1-64 of `a-z`, `0-9`, `.`, `_` and `-`, starting with a letter or
/// digit.
pub fn valid_recipe_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

fn valid_param(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Tool names as a registry accepts them (what a token's scope and Cedar actions carry).
fn valid_tool_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_lowercase()
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// The parameter names `s`'s placeholders use, in order, or why its template is bad.
fn placeholders(s: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(format!("`{}` opens `{{{{` and never closes it", shown(s)));
        };
        let name = &after[..close];
        if !valid_param(name) {
            return Err(format!(
                "`{{{{{}}}}}` is not a placeholder: a parameter's name is 1-32 of a-z, 0-9 and '_'",
                shown(name)
            ));
        }
        names.push(name);
        rest = &after[close + 2..];
    }
    Ok(names)
}

/// `s` with each placeholder replaced by its argument. Only called on strings whose
/// template [`placeholders`] accepted and whose parameters are all given.
fn fill(s: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        out.push_str(&rest[..open]);
        out.push_str(args.get(&after[..close]).map_or("", String::as_str));
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// Checks every string of `value` (not its keys) as a template, collecting the
/// parameters named.
fn check_templates<'a>(
    value: &'a Value,
    depth: usize,
    used: &mut Vec<&'a str>,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("arguments nest deeper than {MAX_DEPTH} levels"));
    }
    match value {
        Value::String(s) => used.extend(placeholders(s)?),
        Value::Array(items) => {
            for item in items {
                check_templates(item, depth + 1, used)?;
            }
        }
        Value::Object(map) => {
            for item in map.values() {
                check_templates(item, depth + 1, used)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn fill_value(value: &Value, args: &BTreeMap<String, String>) -> Value {
    match value {
        Value::String(s) => Value::String(fill(s, args)),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill_value(v, args)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill_value(v, args)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Recipe {
    /// Decodes and checks a recipe from its JSON (canonical or not): the size first, then
    /// the shape, then [`Recipe::validate`]. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Recipe, RecipeError> {
        if bytes.len() > MAX_RECIPE_BYTES {
            return Err(RecipeError::TooLarge(bytes.len()));
        }
        let recipe: Recipe =
            serde_json::from_slice(bytes).map_err(|e| RecipeError::Malformed(e.to_string()))?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// Decodes and checks a recipe from a JSON value (a recorded one).
    pub fn from_value(value: &Value) -> Result<Recipe, RecipeError> {
        let recipe =
            Recipe::deserialize(value).map_err(|e| RecipeError::Malformed(e.to_string()))?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// Checks everything a recipe promises: its format, name and version, its parameters,
    /// 1 to [`MAX_RECIPE_CALLS`] calls of well-named tools that may appear in a recipe,
    /// argument objects whose templates name only declared parameters, every parameter
    /// used, and at most [`MAX_RECIPE_BYTES`] of canonical JSON.
    pub fn validate(&self) -> Result<(), RecipeError> {
        if self.v != RECIPE_FORMAT {
            return Err(invalid(format!(
                "recipe format {} is not one this build reads (it reads {RECIPE_FORMAT})",
                self.v
            )));
        }
        if !valid_recipe_name(&self.name) {
            return Err(invalid(format!(
                "`{}` is not a recipe name: use 1-64 of a-z, 0-9, '.', '_' and '-'",
                shown(&self.name)
            )));
        }
        if self.version == 0 {
            return Err(invalid("a recipe's version starts at 1"));
        }
        if self.params.len() > MAX_RECIPE_PARAMS {
            return Err(invalid(format!(
                "the recipe declares {} parameters; the most is {MAX_RECIPE_PARAMS}",
                self.params.len()
            )));
        }
        for (i, p) in self.params.iter().enumerate() {
            if !valid_param(p) {
                return Err(invalid(format!(
                    "`{}` is not a parameter name: use 1-32 of a-z, 0-9 and '_', starting with a letter",
                    shown(p)
                )));
            }
            if self.params[..i].contains(p) {
                return Err(invalid(format!("the parameter `{p}` is declared twice")));
            }
        }
        if self.calls.is_empty() {
            return Err(invalid("a recipe needs at least one call"));
        }
        if self.calls.len() > MAX_RECIPE_CALLS {
            return Err(invalid(format!(
                "the recipe makes {} calls; the most is {MAX_RECIPE_CALLS}",
                self.calls.len()
            )));
        }
        let mut used = Vec::new();
        for (i, call) in self.calls.iter().enumerate() {
            let n = i + 1;
            if !valid_tool_name(&call.tool) {
                return Err(invalid(format!(
                    "call {n}: `{}` is not a tool name",
                    shown(&call.tool)
                )));
            }
            if NOT_IN_RECIPES.contains(&call.tool.as_str()) {
                return Err(invalid(format!(
                    "call {n}: a recipe cannot call `{}` (recipes do not nest, change the recipe book or finish the mission)",
                    call.tool
                )));
            }
            if !call.arguments.is_object() {
                return Err(invalid(format!(
                    "call {n}: the arguments of `{}` must be a JSON object",
                    call.tool
                )));
            }
            check_templates(&call.arguments, 0, &mut used)
                .map_err(|why| invalid(format!("call {n}: {why}")))?;
        }
        if let Some(unknown) = used.iter().find(|u| !self.params.iter().any(|p| p == *u)) {
            return Err(invalid(format!(
                "the placeholder `{{{{{unknown}}}}}` names no declared parameter"
            )));
        }
        if let Some(unused) = self.params.iter().find(|p| !used.contains(&p.as_str())) {
            return Err(invalid(format!(
                "the parameter `{unused}` is declared but no call uses it"
            )));
        }
        let size = self.canonical()?.len();
        if size > MAX_RECIPE_BYTES {
            return Err(RecipeError::TooLarge(size));
        }
        Ok(())
    }

    /// The recipe's canonical encoding: RFC 8785 JSON.
    pub fn canonical(&self) -> Result<Vec<u8>, RecipeError> {
        aura_core::jcs::to_vec(self).map_err(|e| RecipeError::Malformed(e.to_string()))
    }

    /// SHA-256 over `aura/memory/recipe/v1\0` and the canonical encoding.
    pub fn digest(&self) -> Result<Hash, RecipeError> {
        let mut bytes = DIGEST_TAG.to_vec();
        bytes.extend(self.canonical()?);
        Ok(Hash::sha256(&bytes))
    }

    /// What a run with `args` calls, in order: each call's tool and its arguments with
    /// the placeholders filled. Every declared parameter must be given, and nothing else.
    /// (`Recipe::expand`, beside the recorded types, numbers them as the run's calls.)
    pub fn filled(&self, args: &BTreeMap<String, String>) -> Result<Vec<RecipeCall>, RecipeError> {
        if let Some(missing) = self.params.iter().find(|p| !args.contains_key(*p)) {
            return Err(invalid(format!(
                "recipe `{}` needs the argument `{missing}`",
                self.name
            )));
        }
        if let Some(extra) = args.keys().find(|k| !self.params.contains(*k)) {
            return Err(invalid(format!(
                "recipe `{}` has no parameter `{}`",
                self.name,
                shown(extra)
            )));
        }
        if let Some((k, _)) = args.iter().find(|(_, v)| v.len() > MAX_PARAM_VALUE) {
            return Err(invalid(format!(
                "the argument `{k}` is longer than {MAX_PARAM_VALUE} bytes"
            )));
        }
        Ok(self
            .calls
            .iter()
            .map(|c| RecipeCall {
                tool: c.tool.clone(),
                arguments: fill_value(&c.arguments, args),
            })
            .collect())
    }
}

/// The arguments of `recipe.run`: the recipe's name and the run's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    pub name: String,
    #[serde(default)]
    pub arguments: BTreeMap<String, String>,
}

impl RunArgs {
    /// Reads and checks a `recipe.run` call's arguments.
    pub fn parse(arguments: &Value) -> Result<RunArgs, RecipeError> {
        let args =
            RunArgs::deserialize(arguments).map_err(|e| RecipeError::Malformed(e.to_string()))?;
        if !valid_recipe_name(&args.name) {
            return Err(invalid(format!(
                "`{}` is not a recipe name: use 1-64 of a-z, 0-9, '.', '_' and '-'",
                shown(&args.name)
            )));
        }
        if args.arguments.len() > MAX_RECIPE_PARAMS {
            return Err(invalid(format!(
                "the run gives {} arguments; a recipe has at most {MAX_RECIPE_PARAMS} parameters",
                args.arguments.len()
            )));
        }
        if let Some((k, _)) = args
            .arguments
            .iter()
            .find(|(k, v)| !valid_param(k) || v.len() > MAX_PARAM_VALUE)
        {
            return Err(invalid(format!(
                "the argument `{}` is not a parameter name, or its value is longer than {MAX_PARAM_VALUE} bytes",
                shown(k)
            )));
        }
        Ok(args)
    }
}

/// A `recipe.run` call after its expansion, while its calls run: which recipe, and what
/// each of its calls came to so far. Part of the call's state (and so of the state hash),
/// and left out of it for every other call, so that records made before recipes keep
/// their hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeRun {
    pub name: String,
    pub version: u32,
    pub digest: Hash,
    /// How many calls the recipe makes.
    pub calls: u32,
    /// One entry per call resolved, in order: `{"id", "tool", "ok", "output"}`, or with
    /// `"error"` (and `"policies"` for a denial) in place of `"output"`.
    pub results: Vec<Value>,
    /// Why the recipe stopped before its last call, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The error kind the stop is recorded with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_kind: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use serde_json::json;

    use super::*;

    #[allow(
        clippy::needless_pass_by_value,
        reason = "the tests hand it json! literals"
    )]
    fn recipe(calls: Value, params: &[&str]) -> Value {
        json!({"v": 1, "name": "tidy", "version": 1, "params": params, "calls": calls})
    }

    fn decode(v: &Value) -> Result<Recipe, RecipeError> {
        Recipe::decode(&serde_json::to_vec(v).unwrap())
    }

    /// The format's test vector: a recipe's canonical bytes and digest, as every build
    /// must write them. A change here breaks every recorded expansion.
    #[test]
    fn the_canonical_encoding_and_digest_are_the_documented_vector() {
        let r = decode(&json!({
            "version": 2,
            "v": 1,
            "name": "notes",
            "params": ["path"],
            "calls": [
                {"tool": "fs.write", "arguments": {"path": "{{path}}", "content": "hello"}},
                {"tool": "fs.read", "arguments": {"path": "{{path}}"}}
            ]
        }))
        .unwrap();
        assert_eq!(
            String::from_utf8(r.canonical().unwrap()).unwrap(),
            r#"{"calls":[{"arguments":{"content":"hello","path":"{{path}}"},"tool":"fs.write"},{"arguments":{"path":"{{path}}"},"tool":"fs.read"}],"name":"notes","params":["path"],"v":1,"version":2}"#
        );
        assert_eq!(
            r.digest().unwrap().to_hex(),
            "c0017f321cae7eb61dc91012d4a58a48260bf396ea7cd3feedfddede1fe10847"
        );
    }

    #[test]
    fn a_run_fills_placeholders_and_numbers_its_calls() {
        let r = decode(&recipe(
            json!([{"tool": "fs.write", "arguments": {"path": "out/{{name}}.md", "content": "{{text}} and {{name}}", "n": 3, "list": ["{{name}}"]}}]),
            &["name", "text"],
        ))
        .unwrap();
        let args = BTreeMap::from([
            ("name".to_owned(), "a".to_owned()),
            // An argument is inserted as it is, never read again for placeholders.
            ("text".to_owned(), "{{name}}".to_owned()),
        ]);
        let calls = r.expand("c7", &args).unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "c7/1");
        assert_eq!(calls[0].name, "fs.write");
        assert_eq!(
            calls[0].arguments,
            json!({"path": "out/a.md", "content": "{{name}} and a", "n": 3, "list": ["a"]})
        );
        assert!(
            matches!(r.expand("c7", &BTreeMap::new()), Err(RecipeError::Invalid(m)) if m.contains("needs the argument `name`"))
        );
        let mut extra = args;
        extra.insert("other".into(), "x".into());
        assert!(r.expand("c7", &extra).is_err());
    }

    /// What each malformed recipe is told.
    #[test]
    fn malformed_recipes_get_clear_errors() {
        let check = |v: Value, expect: &str| match decode(&v) {
            Ok(r) => panic!("{v} was accepted: {r:?}"),
            Err(e) => assert!(e.to_string().contains(expect), "{v}: {e}"),
        };
        let write = json!({"tool": "fs.write", "arguments": {"path": "a", "content": "b"}});
        check(recipe(json!([]), &[]), "at least one call");
        check(
            recipe(
                json!([{"tool": "recipe.run", "arguments": {"name": "tidy"}}]),
                &[],
            ),
            "recipes do not nest",
        );
        check(
            recipe(
                json!([{"tool": "mission.finish", "arguments": {"summary": "x"}}]),
                &[],
            ),
            "cannot call `mission.finish`",
        );
        check(
            recipe(json!([{"tool": "Fs.Write", "arguments": {}}]), &[]),
            "not a tool name",
        );
        check(
            recipe(json!([{"tool": "fs.read", "arguments": "x"}]), &[]),
            "JSON object",
        );
        check(
            recipe(
                json!([{"tool": "fs.read", "arguments": {"path": "{{path"}}]),
                &["path"],
            ),
            "never closes",
        );
        check(
            recipe(
                json!([{"tool": "fs.read", "arguments": {"path": "{{Path}}"}}]),
                &[],
            ),
            "not a placeholder",
        );
        check(
            recipe(
                json!([{"tool": "fs.read", "arguments": {"path": "{{other}}"}}]),
                &[],
            ),
            "names no declared parameter",
        );
        check(recipe(json!([write]), &["path"]), "no call uses it");
        check(recipe(json!([write]), &["a", "a"]), "declared twice");
        check(
            json!({"v": 2, "name": "tidy", "version": 1, "calls": [write]}),
            "format 2",
        );
        check(
            json!({"v": 1, "name": "Tidy", "version": 1, "calls": [write]}),
            "not a recipe name",
        );
        check(
            json!({"v": 1, "name": "tidy", "version": 0, "calls": [write]}),
            "starts at 1",
        );
        check(
            json!({"v": 1, "name": "tidy", "version": 1, "calls": [write], "x": 1}),
            "unknown field",
        );
        check(
            recipe(json!(vec![write; MAX_RECIPE_CALLS + 1]), &[]),
            "the most is 32",
        );
        let big = json!({"tool": "fs.write", "arguments": {"path": "a", "content": "x".repeat(MAX_RECIPE_BYTES)}});
        check(recipe(json!([big]), &[]), "bytes");
        let mut deep = json!("x");
        for _ in 0..40 {
            deep = json!([deep]);
        }
        check(
            recipe(json!([{"tool": "fs.read", "arguments": {"a": deep}}]), &[]),
            "nest deeper",
        );
        assert!(matches!(
            Recipe::decode(b"{not json"),
            Err(RecipeError::Malformed(_))
        ));
    }

    #[test]
    fn run_arguments_are_checked() {
        assert!(RunArgs::parse(&json!({"name": "tidy"})).is_ok());
        assert!(RunArgs::parse(&json!({"name": "tidy", "arguments": {"path": "a"}})).is_ok());
        for bad in [
            json!({"name": "Tidy"}),
            json!({"name": "tidy", "arguments": {"path": 3}}),
            json!({"name": "tidy", "arguments": {"Path": "a"}}),
            json!({"name": "tidy", "other": 1}),
            json!("tidy"),
        ] {
            assert!(RunArgs::parse(&bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Whatever the bytes, decoding answers (a recipe or an error) and never panics; a
        /// recipe it accepts decodes again from its canonical encoding to that encoding
        /// (numbers such as `1.0` are written `1`, so the value may differ, the bytes not).
        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(r) = Recipe::decode(&bytes) {
                let canonical = r.canonical().unwrap();
                let again = Recipe::decode(&canonical).unwrap();
                proptest::prop_assert_eq!(again.canonical().unwrap(), canonical);
            }
        }

        /// Recipes made of plausible parts: decoding never panics, and an accepted one
        /// round-trips through its canonical form and expands with every parameter given.
        #[test]
        fn plausible_recipes_decode_round_trip_and_expand(
            name in "[a-z0-9._-]{0,8}",
            tool in "[a-z.]{0,10}",
            text in "[a-z{}_ ]{0,24}",
            params in proptest::collection::vec("[a-z_]{0,5}", 0..3),
            version in 0u32..3,
        ) {
            let v = json!({"v": 1, "name": name, "version": version, "params": params,
                "calls": [{"tool": tool, "arguments": {"path": text, "n": [text]}}]});
            if let Ok(r) = decode(&v) {
                let again = Recipe::decode(&r.canonical().unwrap()).unwrap();
                proptest::prop_assert_eq!(&again, &r);
                let args: BTreeMap<String, String> =
                    r.params.iter().map(|p| (p.clone(), "v".to_owned())).collect();
                let calls = r.expand("c", &args).unwrap();
                proptest::prop_assert_eq!(calls.len(), r.calls.len());
                proptest::prop_assert!(!calls[0].arguments.to_string().contains("{{"));
            }
        }
    }
}
