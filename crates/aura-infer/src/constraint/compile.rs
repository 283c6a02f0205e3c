//! The schema compiler: a JSON schema (the subset the parent module's docs describe), or a
//! list of tools, to a table of nodes; what it cannot enforce is refused with a reason
//! naming where in the schema it is.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{
    ANY, ANY_ARRAY, ANY_NUMBER, ANY_OBJECT, ANY_STRING, BOOLEAN, NULL, Node, NodeId, Prop, Schema,
    bit,
};
use crate::chat::ToolDef;
use crate::error::{Error, Result};

/// Nodes in one compiled schema.
const MAX_NODES: usize = 4096;
/// Listed properties per object (the set of seen keys is a 128-bit set).
const MAX_PROPERTIES: usize = 128;

/// Keywords that do not change which values are valid, or that are documented as not
/// enforced (`pattern`, `format`).
const IGNORED: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
    "pattern",
    "format",
];

/// Keywords that are enforced.
const ENFORCED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
];

/// The bound keywords, enforced on integers.
const BOUNDS: &[&str] = &["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];

/// Builds the node table.
struct Compiler<'a> {
    nodes: Vec<Node>,
    /// Documents `$ref`s resolve in (a schema, or each tool's parameters).
    roots: Vec<&'a Value>,
    /// `(document, pointer)` to its node, so each definition is compiled once and
    /// recursive references close into cycles.
    refs: BTreeMap<(usize, String), NodeId>,
}

fn unsupported(at: &str, what: impl std::fmt::Display) -> Error {
    Error::Constraint(format!("schema at {at}: {what}"))
}

impl<'a> Compiler<'a> {
    fn new(roots: Vec<&'a Value>) -> Self {
        let literal =
            |texts: &[&str]| Node::Literal(texts.iter().map(|t| (*t).to_owned()).collect());
        Self {
            nodes: vec![
                Node::Union(vec![
                    ANY_OBJECT, ANY_ARRAY, ANY_STRING, ANY_NUMBER, BOOLEAN, NULL,
                ]),
                Node::Object {
                    props: Vec::new(),
                    required: 0,
                    additional: Some(ANY),
                },
                Node::Array {
                    prefix: Vec::new(),
                    items: Some(ANY),
                    min: 0,
                    max: u32::MAX,
                },
                Node::String {
                    min: 0,
                    max: u32::MAX,
                },
                Node::Number {
                    integer: false,
                    bounds: None,
                },
                literal(&["false", "true"]),
                literal(&["null"]),
            ],
            roots,
            refs: BTreeMap::new(),
        }
    }

    fn push(&mut self, node: Node) -> Result<NodeId> {
        if self.nodes.len() >= MAX_NODES {
            return Err(Error::Constraint(format!(
                "the schema is too large (more than {MAX_NODES} nodes)"
            )));
        }
        self.nodes.push(node);
        Ok((self.nodes.len() - 1) as NodeId)
    }

    fn finish(self, root: NodeId) -> Schema {
        Schema {
            nodes: self.nodes,
            root,
        }
    }

    fn compile(&mut self, doc: usize, schema: &Value, at: &str) -> Result<NodeId> {
        match schema {
            Value::Bool(true) => Ok(ANY),
            Value::Bool(false) => Err(unsupported(at, "`false` allows no value")),
            Value::Object(map) => self.object_schema(doc, map, at),
            _ => Err(unsupported(at, "a schema must be an object or a boolean")),
        }
    }

    fn object_schema(&mut self, doc: usize, map: &Map<String, Value>, at: &str) -> Result<NodeId> {
        let mut validating = Vec::new();
        for key in map.keys() {
            if ENFORCED.contains(&key.as_str()) {
                validating.push(key.as_str());
            } else if !IGNORED.contains(&key.as_str()) {
                return Err(unsupported(
                    at,
                    format!("keyword `{key}` is not supported by constrained decoding"),
                ));
            }
        }
        let alone = |keyword: &str| -> Result<()> {
            match validating.iter().find(|k| **k != keyword) {
                Some(other) => Err(unsupported(
                    at,
                    format!("`{keyword}` beside `{other}` is not supported"),
                )),
                None => Ok(()),
            }
        };
        if let Some(target) = map.get("$ref") {
            alone("$ref")?;
            return self.reference(doc, target, at);
        }
        for keyword in ["anyOf", "oneOf", "allOf"] {
            let Some(list) = map.get(keyword) else {
                continue;
            };
            alone(keyword)?;
            let list = list
                .as_array()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| unsupported(at, format!("`{keyword}` must be a non-empty array")))?;
            if keyword == "allOf" {
                if list.len() > 1 {
                    return Err(unsupported(
                        at,
                        "`allOf` with more than one schema is not supported",
                    ));
                }
                return self.compile(doc, &list[0], &format!("{at}/allOf/0"));
            }
            let mut alternatives = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                alternatives.push(self.compile(doc, s, &format!("{at}/{keyword}/{i}"))?);
            }
            return self.push(Node::Union(alternatives));
        }
        let types = Self::types(map, at)?;
        if map.contains_key("enum") || map.contains_key("const") {
            return self.literal(map, types.as_deref(), at);
        }
        let types = match types {
            Some(t) => t,
            None => {
                // No `type`: the keywords say which type is meant; a constrained model
                // gains nothing from the other types being allowed too.
                let mut inferred = Vec::new();
                let has = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
                if has(&["properties", "required", "additionalProperties"]) {
                    inferred.push("object");
                }
                if has(&["items", "prefixItems", "minItems", "maxItems"]) {
                    inferred.push("array");
                }
                if has(&["minLength", "maxLength"]) {
                    inferred.push("string");
                }
                if has(BOUNDS) {
                    // Refused below, with a reason: bounds are enforced on integers only.
                    inferred.push("number");
                }
                if inferred.is_empty() {
                    return Ok(ANY);
                }
                inferred.into_iter().map(str::to_owned).collect()
            }
        };
        let mut alternatives = Vec::with_capacity(types.len());
        for t in &types {
            let node = match t.as_str() {
                "object" => self.object(doc, map, at)?,
                "array" => self.array(doc, map, at)?,
                "string" => {
                    let min = Self::count(map, "minLength", at)?.unwrap_or(0);
                    let max = Self::count(map, "maxLength", at)?.unwrap_or(u32::MAX);
                    if min > max {
                        return Err(unsupported(at, "`minLength` is above `maxLength`"));
                    }
                    if (min, max) == (0, u32::MAX) {
                        ANY_STRING
                    } else {
                        self.push(Node::String { min, max })?
                    }
                }
                "number" => {
                    if let Some(k) = BOUNDS.iter().find(|k| map.contains_key(**k)) {
                        return Err(unsupported(
                            at,
                            format!("`{k}` is supported on integers only, not on numbers"),
                        ));
                    }
                    ANY_NUMBER
                }
                "integer" => {
                    let bounds = Self::bounds(map, at)?;
                    self.push(Node::Number {
                        integer: true,
                        bounds,
                    })?
                }
                "boolean" => BOOLEAN,
                "null" => NULL,
                other => return Err(unsupported(at, format!("unknown type `{other}`"))),
            };
            alternatives.push(node);
        }
        match alternatives.as_slice() {
            [one] => Ok(*one),
            _ => self.push(Node::Union(alternatives)),
        }
    }

    /// The `type` keyword's types, deduplicated in order; None without one.
    fn types(map: &Map<String, Value>, at: &str) -> Result<Option<Vec<String>>> {
        let list = match map.get("type") {
            None => return Ok(None),
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(list)) if !list.is_empty() => {
                let mut out: Vec<String> = Vec::new();
                for t in list {
                    let t = t
                        .as_str()
                        .ok_or_else(|| unsupported(at, "`type` must list strings"))?;
                    if !out.iter().any(|o| o == t) {
                        out.push(t.to_owned());
                    }
                }
                out
            }
            Some(_) => {
                return Err(unsupported(
                    at,
                    "`type` must be a string or a non-empty array",
                ));
            }
        };
        Ok(Some(list))
    }

    /// An integer's inclusive range from `minimum`, `maximum` and their exclusive forms;
    /// None without any.
    fn bounds(map: &Map<String, Value>, at: &str) -> Result<Option<(i128, i128)>> {
        // (floor, ceiling) of a bound, exact for integers (f64 is not, past 2^53).
        let value = |k: &str| -> Result<Option<(i128, i128)>> {
            let Some(v) = map.get(k) else {
                return Ok(None);
            };
            if let Some(i) = v.as_i64() {
                return Ok(Some((i128::from(i), i128::from(i))));
            }
            if let Some(u) = v.as_u64() {
                return Ok(Some((i128::from(u), i128::from(u))));
            }
            // Float to int casts saturate, so huge bounds become the widest ones.
            v.as_f64()
                .map(|f| Some((f.floor() as i128, f.ceil() as i128)))
                .ok_or_else(|| unsupported(at, format!("`{k}` must be a number")))
        };
        let (mut lo, mut hi) = (i128::MIN, i128::MAX);
        let mut any = false;
        if let Some((_, ceil)) = value("minimum")? {
            lo = lo.max(ceil);
            any = true;
        }
        if let Some((floor, _)) = value("exclusiveMinimum")? {
            lo = lo.max(floor.saturating_add(1));
            any = true;
        }
        if let Some((floor, _)) = value("maximum")? {
            hi = hi.min(floor);
            any = true;
        }
        if let Some((_, ceil)) = value("exclusiveMaximum")? {
            hi = hi.min(ceil.saturating_sub(1));
            any = true;
        }
        if lo > hi {
            return Err(unsupported(at, "no integer is within the bounds"));
        }
        Ok(any.then_some((lo, hi)))
    }

    /// A count keyword (`minItems`, `maxLength`, ..).
    fn count(map: &Map<String, Value>, keyword: &str, at: &str) -> Result<Option<u32>> {
        map.get(keyword)
            .map(|v| {
                v.as_u64()
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                    .ok_or_else(|| {
                        unsupported(at, format!("`{keyword}` must be a non-negative integer"))
                    })
            })
            .transpose()
    }

    fn literal(
        &mut self,
        map: &Map<String, Value>,
        types: Option<&[String]>,
        at: &str,
    ) -> Result<NodeId> {
        if let Some(other) = map.keys().find(|k| {
            ENFORCED.contains(&k.as_str()) && !["type", "enum", "const"].contains(&k.as_str())
        }) {
            return Err(unsupported(
                at,
                format!("`{other}` beside `enum` or `const` is not supported"),
            ));
        }
        let mut values: Vec<&Value> = match map.get("enum") {
            Some(Value::Array(list)) => list.iter().collect(),
            Some(_) => return Err(unsupported(at, "`enum` must be an array")),
            None => Vec::new(),
        };
        if let Some(c) = map.get("const") {
            if map.contains_key("enum") {
                values.retain(|v| *v == c);
            } else {
                values.push(c);
            }
        }
        let of_type = |v: &Value, t: &str| match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        };
        if let Some(types) = types {
            values.retain(|v| types.iter().any(|t| of_type(v, t)));
        }
        let mut texts = Vec::with_capacity(values.len());
        for v in values {
            let text = serde_json::to_string(v)
                .map_err(|e| unsupported(at, format!("cannot write an `enum` value: {e}")))?;
            if text.len() >= usize::from(u16::MAX) {
                return Err(unsupported(at, "an `enum` value is too long"));
            }
            texts.push(text);
        }
        texts.sort();
        texts.dedup();
        if texts.is_empty() {
            return Err(unsupported(at, "no value of `enum`/`const` is allowed"));
        }
        // A literal's range of candidates is kept in 16 bits.
        if texts.len() > usize::from(u16::MAX) {
            return Err(unsupported(at, "`enum` has too many values"));
        }
        self.push(Node::Literal(texts))
    }

    fn object(&mut self, doc: usize, map: &Map<String, Value>, at: &str) -> Result<NodeId> {
        let listed = match map.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err(unsupported(at, "`properties` must be an object")),
        };
        let additional = match map.get("additionalProperties") {
            // Unlisted keys are allowed only where nothing is listed: see the module docs.
            None => listed.is_none().then_some(ANY),
            Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(ANY),
            Some(s) => Some(self.compile(doc, s, &format!("{at}/additionalProperties"))?),
        };
        let mut props: Vec<(String, NodeId)> = Vec::new();
        for (name, s) in listed.into_iter().flatten() {
            let node = self.compile(doc, s, &format!("{at}/properties/{name}"))?;
            props.push((name.clone(), node));
        }
        let required: Vec<&str> = match map.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r
                .iter()
                .map(|n| {
                    n.as_str()
                        .ok_or_else(|| unsupported(at, "`required` must list strings"))
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(unsupported(at, "`required` must be an array")),
        };
        for name in &required {
            if props.iter().any(|(n, _)| n == name) {
                continue;
            }
            match additional {
                Some(node) => props.push(((*name).to_owned(), node)),
                None => {
                    return Err(unsupported(
                        at,
                        format!("required property `{name}` is not allowed by the schema"),
                    ));
                }
            }
        }
        if props.len() > MAX_PROPERTIES {
            return Err(unsupported(
                at,
                format!("more than {MAX_PROPERTIES} properties"),
            ));
        }
        let mut props: Vec<Prop> = props
            .into_iter()
            .map(|(name, node)| {
                // serde_json's escaping without the opening quote: how the key is written.
                let text = Value::from(name).to_string()[1..].to_owned();
                Prop { text, node }
            })
            .collect();
        props.sort_by(|a, b| a.text.cmp(&b.text));
        if props.iter().any(|p| p.text.len() >= usize::from(u16::MAX)) {
            return Err(unsupported(at, "a property name is too long"));
        }
        let required = props
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                required
                    .iter()
                    .any(|r| Value::from(*r).to_string()[1..] == p.text)
            })
            .fold(0, |acc, (i, _)| acc | bit(i));
        if props.is_empty() && additional == Some(ANY) && required == 0 {
            return Ok(ANY_OBJECT);
        }
        self.push(Node::Object {
            props,
            required,
            additional,
        })
    }

    fn array(&mut self, doc: usize, map: &Map<String, Value>, at: &str) -> Result<NodeId> {
        let mut prefix = Vec::new();
        match map.get("prefixItems") {
            None => {}
            Some(Value::Array(list)) => {
                for (i, s) in list.iter().enumerate() {
                    prefix.push(self.compile(doc, s, &format!("{at}/prefixItems/{i}"))?);
                }
            }
            Some(_) => return Err(unsupported(at, "`prefixItems` must be an array")),
        }
        let items = match map.get("items") {
            None | Some(Value::Bool(true)) => Some(ANY),
            Some(Value::Bool(false)) => None,
            Some(Value::Array(_)) => {
                return Err(unsupported(
                    at,
                    "`items` as an array is not supported; use `prefixItems`",
                ));
            }
            Some(s) => Some(self.compile(doc, s, &format!("{at}/items"))?),
        };
        let min = Self::count(map, "minItems", at)?.unwrap_or(0);
        let max = Self::count(map, "maxItems", at)?.unwrap_or(u32::MAX);
        if min > max {
            return Err(unsupported(at, "`minItems` is above `maxItems`"));
        }
        if items.is_none() && min as usize > prefix.len() {
            return Err(unsupported(
                at,
                "`minItems` asks for more items than the schema allows",
            ));
        }
        if prefix.is_empty() && items == Some(ANY) && (min, max) == (0, u32::MAX) {
            return Ok(ANY_ARRAY);
        }
        self.push(Node::Array {
            prefix,
            items,
            min,
            max,
        })
    }

    fn reference(&mut self, doc: usize, target: &Value, at: &str) -> Result<NodeId> {
        let pointer = target
            .as_str()
            .and_then(|t| t.strip_prefix('#'))
            .ok_or_else(|| {
                unsupported(
                    at,
                    "only `$ref`s within the schema (`#/$defs/..`) are supported",
                )
            })?;
        if let Some(&node) = self.refs.get(&(doc, pointer.to_owned())) {
            return Ok(node);
        }
        let resolved = self.roots[doc]
            .pointer(pointer)
            .ok_or_else(|| unsupported(at, format!("`$ref` `#{pointer}` does not resolve")))?;
        // Reserve the node first, so that a reference back to it closes a cycle rather
        // than compiling forever.
        let node = self.push(Node::Union(Vec::new()))?;
        self.refs.insert((doc, pointer.to_owned()), node);
        let body = self.compile(doc, resolved, &format!("#{pointer}"))?;
        self.nodes[node as usize] = Node::Union(vec![body]);
        Ok(node)
    }
}

impl Schema {
    /// Compiles a JSON schema.
    pub(crate) fn compile(schema: &Value) -> Result<Self> {
        let mut c = Compiler::new(vec![schema]);
        let root = c.compile(0, schema, "#")?;
        Ok(c.finish(root))
    }

    /// Any JSON object.
    pub(crate) fn any_object() -> Self {
        Compiler::new(Vec::new()).finish(ANY_OBJECT)
    }

    /// `{"name": <a tool's name>, "arguments": <valid against its parameters>}`.
    pub(crate) fn tool_call(tools: &[ToolDef]) -> Result<Self> {
        if tools.is_empty() {
            return Err(Error::Constraint(
                "a tool call needs at least one tool".into(),
            ));
        }
        let mut c = Compiler::new(tools.iter().map(|t| &t.parameters).collect());
        let mut calls = Vec::with_capacity(tools.len());
        for (i, tool) in tools.iter().enumerate() {
            if tools[..i].iter().any(|t| t.name == tool.name) {
                return Err(Error::Constraint(format!(
                    "the tool `{}` is listed twice",
                    tool.name
                )));
            }
            let arguments = match &tool.parameters {
                // No schema: any object, as OpenAI's function calling reads it.
                Value::Null => ANY_OBJECT,
                p => c.compile(i, p, &format!("tool `{}` parameters #", tool.name))?,
            };
            let name = c.push(Node::Literal(vec![
                Value::from(tool.name.as_str()).to_string(),
            ]))?;
            // Sorted by text: `arguments"` before `name"`.
            let props = vec![
                Prop {
                    text: "arguments\"".into(),
                    node: arguments,
                },
                Prop {
                    text: "name\"".into(),
                    node: name,
                },
            ];
            calls.push(c.push(Node::Object {
                props,
                required: 0b11,
                additional: None,
            })?);
        }
        let root = match calls.as_slice() {
            [one] => *one,
            _ => c.push(Node::Union(calls))?,
        };
        Ok(c.finish(root))
    }
}
