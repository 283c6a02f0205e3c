//! The memory tools (docs/memory.md): `memory.store`, `memory.search` and `memory.forget`
//! over semantic memory, and `memory.recall` over the agent's own past missions.
//!
//! The tools embed nothing and store nothing themselves: the node hands them a
//! [`MemoryBackend`] (its memory, embedding text with the MiniLM model its model host
//! serves). What policy judges is a [`Target::Memory`]: the agent's own memory, or a
//! shared space of its namespace the call names (`space`), so Cedar decides who may read
//! and write which space, and no call can even name another agent's own memory: the own
//! space is always the calling agent's, taken from the mission's context. The effect of a
//! write names the memory's id and the SHA-256 of its text, never the vector, so the
//! ledger records what was remembered without holding embeddings. `memory.forget` is
//! destructive: policy decides who may forget (by default, below L3, only with an
//! approval), and the forgetting is recorded like any other effect.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use aura_core::AgentId;
use aura_identity::Namespace;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::args::{parse, schema_for};
use crate::call::{Call, Capability, Prepared, Target, ToolDescriptor};
use crate::context::ToolContext;
use crate::effect::{Effect, ErrorKind, ToolError};
use crate::tool::Tool;

/// The longest text `memory.store` accepts, in bytes (the embedding model reads the first
/// few hundred tokens; the text is kept whole).
pub const MAX_MEMORY_TEXT: usize = 16 * 1024;
/// The longest query, in bytes.
pub const MAX_QUERY: usize = 4 * 1024;
/// The most results one search returns.
pub const MAX_K: u32 = 50;
/// The results a search returns when the call names no `k`.
pub const DEFAULT_K: u32 = 5;

/// Which memory a call reaches: the calling agent's own, or a shared space of its
/// namespace. The node turns it into the key its memory is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySpace {
    pub namespace: Namespace,
    pub agent: AgentId,
    /// `None`: the agent's own memory; `Some(name)`: the shared space `shared:<name>`.
    pub shared: Option<String>,
}

impl MemorySpace {
    /// The space as policy names it: `agent:<id>` or `shared:<name>`.
    pub fn label(&self) -> String {
        match &self.shared {
            None => format!("agent:{}", self.agent),
            Some(name) => format!("shared:{name}"),
        }
    }
}

/// A memory found by a search or a recall.
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    pub id: String,
    pub kind: String,
    pub text: String,
    /// Cosine similarity, -1 to 1.
    pub score: f32,
}

/// What the node's memory does for the tools. Errors use the tools' kinds
/// (`InvalidArguments` for a name already used, `Unavailable` when no embedding model is
/// installed, `Io` when the database fails).
#[async_trait]
pub trait MemoryBackend: Send + Sync + fmt::Debug {
    /// Embeds `text` and stores it as `id` in `space`; returns its position in the
    /// memory's order.
    async fn store(
        &self,
        space: &MemorySpace,
        id: &str,
        kind: &str,
        text: &str,
    ) -> Result<u64, ToolError>;

    /// The `k` memories of `space` most similar to `query`.
    async fn search(
        &self,
        space: &MemorySpace,
        query: &str,
        k: usize,
    ) -> Result<Vec<Remembered>, ToolError>;

    /// Forgets `id` of `space`; false if there is none by that name.
    async fn forget(&self, space: &MemorySpace, id: &str) -> Result<bool, ToolError>;

    /// The `k` past missions of `agent` (ended ones, with their objectives, outcomes,
    /// summaries and the tools they used) most similar to `query`.
    async fn recall(
        &self,
        namespace: &Namespace,
        agent: AgentId,
        query: &str,
        k: usize,
    ) -> Result<Vec<Remembered>, ToolError>;
}

/// Arguments of `memory.store`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreArgs {
    /// The fact or document to remember.
    pub text: String,
    /// Its name, unique among the space's memories: 1-128 of letters, digits, `.`, `_`,
    /// `-` and `:` (default: `m-` and the first 16 hex digits of the text's SHA-256).
    #[serde(default)]
    pub id: Option<String>,
    /// What it is, such as `fact` (the default) or `document`: 1-32 of lowercase letters,
    /// digits, `_` and `-`.
    #[serde(default)]
    pub kind: Option<String>,
    /// A shared space of the namespace to store it in, by name (default: the agent's own
    /// memory). Policy decides who may use which space.
    #[serde(default)]
    pub space: Option<String>,
}

/// Arguments of `memory.search`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// What to look for, in words.
    pub query: String,
    /// How many memories to return, 1-50 (default 5).
    #[serde(default)]
    pub k: Option<u32>,
    /// A shared space to search, by name (default: the agent's own memory).
    #[serde(default)]
    pub space: Option<String>,
}

/// Arguments of `memory.forget`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetArgs {
    /// The memory's name.
    pub id: String,
    /// The shared space it is in, by name (default: the agent's own memory).
    #[serde(default)]
    pub space: Option<String>,
}

/// Arguments of `memory.recall`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// What to look for among the agent's past missions, in words.
    pub query: String,
    /// How many missions to return, 1-50 (default 5).
    #[serde(default)]
    pub k: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Store,
    Search,
    Forget,
    Recall,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Store => "memory.store",
            Op::Search => "memory.search",
            Op::Forget => "memory.forget",
            Op::Recall => "memory.recall",
        }
    }
}

/// What a call asks, checked.
#[derive(Debug)]
enum Plan {
    Store {
        shared: Option<String>,
        id: String,
        kind: String,
        text: String,
    },
    Search {
        shared: Option<String>,
        query: String,
        k: usize,
    },
    Forget {
        shared: Option<String>,
        id: String,
    },
    Recall {
        query: String,
        k: usize,
    },
}

/// One of the four memory tools.
#[derive(Debug)]
pub struct MemoryTool {
    op: Op,
    descriptor: ToolDescriptor,
    backend: Arc<dyn MemoryBackend>,
}

/// The four memory tools over `backend`.
pub fn memory_tools(backend: &Arc<dyn MemoryBackend>) -> Vec<Arc<dyn Tool>> {
    [Op::Store, Op::Search, Op::Forget, Op::Recall]
        .into_iter()
        .map(|op| Arc::new(MemoryTool::new(op, backend.clone())) as Arc<dyn Tool>)
        .collect()
}

fn invalid(op: Op, why: &str) -> ToolError {
    ToolError::new(ErrorKind::InvalidArguments, format!("{}: {why}", op.name()))
}

/// A shared space's name: 1-64 of lowercase letters, digits, `.`, `_` and `-`, starting
/// with a letter or digit (aura-policy checks the same).
pub fn valid_space_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// A memory's name: 1-128 of ASCII letters, digits, `.`, `_`, `-` and `:`.
pub fn valid_memory_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':'))
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 32
        && kind
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

fn space_arg(op: Op, space: Option<String>) -> Result<Option<String>, ToolError> {
    match space {
        None => Ok(None),
        Some(name) if valid_space_name(&name) => Ok(Some(name)),
        Some(name) => Err(invalid(
            op,
            &format!(
                "`{}` is not a shared space's name: use 1-64 of a-z, 0-9, '.', '_' and '-'",
                name.chars().take(80).collect::<String>()
            ),
        )),
    }
}

fn text_arg(op: Op, what: &str, text: String, max: usize) -> Result<String, ToolError> {
    if text.trim().is_empty() {
        return Err(invalid(op, &format!("the {what} is empty")));
    }
    if text.len() > max {
        return Err(ToolError::new(
            ErrorKind::TooLarge,
            format!("{}: the {what} is longer than {max} bytes", op.name()),
        ));
    }
    Ok(text)
}

fn k_arg(op: Op, k: Option<u32>) -> Result<usize, ToolError> {
    match k.unwrap_or(DEFAULT_K) {
        k @ 1..=MAX_K => Ok(k as usize),
        k => Err(invalid(op, &format!("k is {k}; ask for 1 to {MAX_K}"))),
    }
}

/// The SHA-256 of `text`, in hex: what an effect records of a memory's text.
pub fn text_sha256(text: &str) -> String {
    aura_core::hash::Hash::sha256(text.as_bytes()).to_hex()
}

/// A similarity as the reasoner and the record see it: a decimal string with four
/// places. A fractional JSON number does not survive every trip through JSON bit for bit,
/// and effects are hashed into the mission's record.
fn score_text(score: f32) -> String {
    format!("{score:.4}")
}

impl MemoryTool {
    fn new(op: Op, backend: Arc<dyn MemoryBackend>) -> Self {
        let (description, destructive) = match op {
            Op::Store => (
                "Remember a fact or document: it is embedded and stored in the agent's own memory (or a shared space policy allows), to be found later by meaning with memory.search.",
                false,
            ),
            Op::Search => (
                "Search the agent's own memory (or a shared space policy allows) by meaning: the memories most similar to the query, most similar first.",
                false,
            ),
            Op::Forget => (
                "Forget a memory by its id. Forgetting is recorded and cannot be undone.",
                true,
            ),
            Op::Recall => (
                "Recall the agent's own past missions most similar to the query: their objectives, outcomes, summaries and the tools they used.",
                false,
            ),
        };
        let parameters = match op {
            Op::Store => schema_for::<StoreArgs>(),
            Op::Search => schema_for::<SearchArgs>(),
            Op::Forget => schema_for::<ForgetArgs>(),
            Op::Recall => schema_for::<RecallArgs>(),
        };
        MemoryTool {
            op,
            descriptor: ToolDescriptor {
                name: op.name().to_owned(),
                description: description.to_owned(),
                parameters,
                destructive,
                compensable: false,
                needs: Capability::Memory,
            },
            backend,
        }
    }

    fn plan(&self, call: &Call) -> Result<Plan, ToolError> {
        let op = self.op;
        let name = op.name();
        Ok(match op {
            Op::Store => {
                let args: StoreArgs = parse(name, &call.arguments)?;
                let text = text_arg(op, "text", args.text, MAX_MEMORY_TEXT)?;
                let id = match args.id {
                    Some(id) if valid_memory_id(&id) => id,
                    Some(_) => {
                        return Err(invalid(
                            op,
                            "an id is 1-128 of letters, digits, '.', '_', '-' and ':'",
                        ));
                    }
                    None => format!("m-{}", &text_sha256(&text)[..16]),
                };
                let kind = args.kind.unwrap_or_else(|| "fact".to_owned());
                if !valid_kind(&kind) {
                    return Err(invalid(
                        op,
                        "a kind is 1-32 of a-z, 0-9, '_' and '-', such as `fact`",
                    ));
                }
                Plan::Store {
                    shared: space_arg(op, args.space)?,
                    id,
                    kind,
                    text,
                }
            }
            Op::Search => {
                let args: SearchArgs = parse(name, &call.arguments)?;
                Plan::Search {
                    query: text_arg(op, "query", args.query, MAX_QUERY)?,
                    k: k_arg(op, args.k)?,
                    shared: space_arg(op, args.space)?,
                }
            }
            Op::Forget => {
                let args: ForgetArgs = parse(name, &call.arguments)?;
                if !valid_memory_id(&args.id) {
                    return Err(invalid(
                        op,
                        "an id is 1-128 of letters, digits, '.', '_', '-' and ':'",
                    ));
                }
                Plan::Forget {
                    shared: space_arg(op, args.space)?,
                    id: args.id,
                }
            }
            Op::Recall => {
                let args: RecallArgs = parse(name, &call.arguments)?;
                Plan::Recall {
                    query: text_arg(op, "query", args.query, MAX_QUERY)?,
                    k: k_arg(op, args.k)?,
                }
            }
        })
    }
}

fn space(ctx: &ToolContext, shared: Option<String>) -> MemorySpace {
    MemorySpace {
        namespace: ctx.namespace.clone(),
        agent: ctx.agent,
        shared,
    }
}

fn hits_json(hits: &[Remembered]) -> serde_json::Value {
    serde_json::Value::Array(
        hits.iter()
            .map(|h| json!({"id": h.id, "kind": h.kind, "text": h.text, "score": score_text(h.score)}))
            .collect(),
    )
}

#[async_trait]
impl Tool for MemoryTool {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let shared = match self.plan(call)? {
            Plan::Store { shared, .. }
            | Plan::Search { shared, .. }
            | Plan::Forget { shared, .. } => shared,
            // Recall reads the agent's own record: its own memory, as policy sees it.
            Plan::Recall { .. } => None,
        };
        Ok(Prepared {
            call: call.clone(),
            target: Target::Memory { shared },
            destructive: self.descriptor.destructive,
        })
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let name = self.op.name();
        let call_id = &prepared.call.id;
        let plan = match self.plan(&prepared.call) {
            Ok(plan) => plan,
            Err(e) => return Effect::failed(name, call_id, e),
        };
        let done = match plan {
            Plan::Store {
                shared,
                id,
                kind,
                text,
            } => {
                let space = space(ctx, shared);
                self.backend
                    .store(&space, &id, &kind, &text)
                    .await
                    .map(|seq| {
                        // The text's hash, never the vector: the ledger says what was
                        // remembered without holding embeddings.
                        json!({
                            "id": id,
                            "kind": kind,
                            "space": space.label(),
                            "text_sha256": text_sha256(&text),
                            "bytes": text.len(),
                            "seq": seq,
                        })
                    })
            }
            Plan::Search { shared, query, k } => {
                let space = space(ctx, shared);
                self.backend
                    .search(&space, &query, k)
                    .await
                    .map(|hits| json!({"space": space.label(), "memories": hits_json(&hits)}))
            }
            Plan::Forget { shared, id } => {
                let space = space(ctx, shared);
                match self.backend.forget(&space, &id).await {
                    Ok(true) => Ok(json!({"id": id, "space": space.label(), "forgotten": true})),
                    Ok(false) => Err(ToolError::new(
                        ErrorKind::NotFound,
                        format!("{name}: there is no memory `{id}` in {}", space.label()),
                    )),
                    Err(e) => Err(e),
                }
            }
            Plan::Recall { query, k } => self
                .backend
                .recall(&ctx.namespace, ctx.agent, &query, k)
                .await
                .map(|hits| json!({"missions": hits_json(&hits)})),
        };
        match done {
            Ok(value) => Effect::ok(name, call_id, value),
            Err(e) => Effect::failed(name, call_id, e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[derive(Debug)]
    struct Nothing;

    #[async_trait]
    impl MemoryBackend for Nothing {
        async fn store(
            &self,
            _space: &MemorySpace,
            _id: &str,
            _kind: &str,
            _text: &str,
        ) -> Result<u64, ToolError> {
            Ok(1)
        }
        async fn search(
            &self,
            _space: &MemorySpace,
            _query: &str,
            _k: usize,
        ) -> Result<Vec<Remembered>, ToolError> {
            Ok(Vec::new())
        }
        async fn forget(&self, _space: &MemorySpace, _id: &str) -> Result<bool, ToolError> {
            Ok(false)
        }
        async fn recall(
            &self,
            _namespace: &Namespace,
            _agent: AgentId,
            _query: &str,
            _k: usize,
        ) -> Result<Vec<Remembered>, ToolError> {
            Ok(Vec::new())
        }
    }

    fn tool(op: Op) -> MemoryTool {
        MemoryTool::new(op, Arc::new(Nothing))
    }

    fn call(tool: &str, arguments: serde_json::Value) -> Call {
        Call {
            id: "c1".into(),
            tool: tool.into(),
            arguments,
        }
    }

    /// What each call is judged as, or the kind of error it gets.
    #[test]
    fn calls_are_checked_before_anything_runs() {
        let check = |op: Op, args: serde_json::Value, expect: Result<Option<&str>, ErrorKind>| {
            let got = tool(op).prepare(&call(op.name(), args.clone()));
            match (got, expect) {
                (Ok(p), Ok(shared)) => assert_eq!(
                    p.target,
                    Target::Memory {
                        shared: shared.map(str::to_owned)
                    },
                    "{args}"
                ),
                (Err(e), Err(kind)) => assert_eq!(e.kind, kind, "{args}: {e}"),
                (got, expect) => panic!("{args}: got {got:?}, expected {expect:?}"),
            }
        };
        check(Op::Store, json!({"text": "the sky is blue"}), Ok(None));
        check(
            Op::Store,
            json!({"text": "x", "space": "handbook", "id": "a:b.c", "kind": "document"}),
            Ok(Some("handbook")),
        );
        check(
            Op::Store,
            json!({"text": "   "}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            Op::Store,
            json!({"text": "x".repeat(MAX_MEMORY_TEXT + 1)}),
            Err(ErrorKind::TooLarge),
        );
        check(
            Op::Store,
            json!({"text": "x", "space": "Hand book"}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            Op::Store,
            json!({"text": "x", "space": "agent:someone"}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            Op::Store,
            json!({"text": "x", "id": "a b"}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            Op::Store,
            json!({"text": "x", "kind": "Fact"}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            Op::Store,
            json!({"text": "x", "vector": [1.0]}),
            Err(ErrorKind::InvalidArguments),
        );
        check(Op::Store, json!("x"), Err(ErrorKind::InvalidArguments));
        check(Op::Search, json!({"query": "sky"}), Ok(None));
        check(
            Op::Search,
            json!({"query": "sky", "k": 0}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            Op::Search,
            json!({"query": "sky", "k": 51}),
            Err(ErrorKind::InvalidArguments),
        );
        check(
            Op::Search,
            json!({"query": "x".repeat(MAX_QUERY + 1)}),
            Err(ErrorKind::TooLarge),
        );
        check(Op::Forget, json!({"id": "m-1"}), Ok(None));
        check(
            Op::Forget,
            json!({"id": ""}),
            Err(ErrorKind::InvalidArguments),
        );
        check(Op::Recall, json!({"query": "what did I do"}), Ok(None));
        check(
            Op::Recall,
            json!({"query": "x", "space": "handbook"}),
            Err(ErrorKind::InvalidArguments),
        );
        assert!(tool(Op::Forget).descriptor().destructive);
        assert!(!tool(Op::Store).descriptor().destructive);
    }

    proptest::proptest! {
        /// Whatever the arguments, preparing answers (a target or an error) and never
        /// panics; a prepared call names the space it was given, or the agent's own.
        #[test]
        fn any_arguments_are_answered(
            text in ".{0,40}",
            id in proptest::option::of(".{0,20}"),
            space in proptest::option::of("[a-zA-Z0-9:._ -]{0,12}"),
            k in proptest::option::of(0u32..80),
        ) {
            for op in [Op::Store, Op::Search, Op::Forget, Op::Recall] {
                let args = match op {
                    Op::Store => json!({"text": text, "id": id, "space": space}),
                    Op::Search => json!({"query": text, "k": k, "space": space}),
                    Op::Forget => json!({"id": id.clone().unwrap_or_default(), "space": space}),
                    Op::Recall => json!({"query": text, "k": k}),
                };
                if let Ok(p) = tool(op).prepare(&call(op.name(), args)) {
                    let Target::Memory { shared } = p.target else {
                        panic!("not a memory target");
                    };
                    proptest::prop_assert!(shared.as_deref().is_none_or(valid_space_name));
                    proptest::prop_assert_eq!(shared.is_some(), space.is_some() && op != Op::Recall);
                }
            }
        }
    }

    #[test]
    fn a_stored_memory_is_named_by_its_text_when_no_id_is_given() {
        let Plan::Store { id, .. } = tool(Op::Store)
            .plan(&call("memory.store", json!({"text": "abc"})))
            .unwrap()
        else {
            panic!("not a store");
        };
        // SHA-256("abc") starts ba7816bf8f01cfea.
        assert_eq!(id, "m-ba7816bf8f01cfea");
        assert_eq!(score_text(0.812_345), "0.8123");
    }
}
