//! The engine's ports: what it needs from policy, tools and reasoners, in its own terms.
//!
//! The mission driver talks only to these traits. Adapters in [`crate::adapters`] implement
//! them over `aura-policy`, `aura-tools` and `aura-reasoner`; tests may implement them with
//! doubles. Keeping the driver on ports keeps the recorded formats (the kernel's types) the
//! same whatever those crates do inside.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::{ExecutionToken, Level, Namespace, Signed, TrustSet, VerifiedApproval};
use aura_kernel::{Context, Decision, Effect, ToolCall, Turn};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a proposed call would touch, as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    Path {
        path: String,
    },
    Command {
        command: String,
        network: bool,
    },
    Host {
        host: String,
        port: u16,
        scheme: String,
    },
    Agent {
        agent: AgentId,
    },
    Mission,
    McpTool {
        server: String,
        tool: String,
        trusted: bool,
    },
    Image {
        model: String,
        width: u32,
        height: u32,
        path: String,
    },
    Plugin {
        name: String,
        version: String,
        publisher: String,
        digest: String,
        workspace: String,
        hosts: Vec<String>,
    },
    /// The calling agent's own memory (`shared` is `None`) or a shared space of its
    /// namespace.
    Memory {
        shared: Option<String>,
    },
}

/// A proposed call after its arguments were checked.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub call: ToolCall,
    pub target: Target,
    pub destructive: bool,
}

/// A question for policy.
#[derive(Debug, Clone)]
pub struct Query {
    pub agent: AgentId,
    pub level: Level,
    pub namespace: Namespace,
    pub action: String,
    /// `None` for the mission's declaration (`mission.submit`).
    pub target: Option<Target>,
    /// For an agent target: the target's namespace, if the agent exists.
    pub target_namespace: Option<Namespace>,
    pub destructive: bool,
    pub mission: MissionId,
    pub approval: Option<VerifiedApproval>,
    /// The region of the node deciding, in a cluster (`Options::region`).
    pub node_region: Option<String>,
    /// The mission's boundary (`MissionSpec::regions`); empty: none.
    pub regions: Vec<String>,
}

pub trait Policy: Send + Sync + std::fmt::Debug {
    /// Decides, purely. Any error inside must come back as a deny.
    fn decide(&self, query: &Query) -> Decision;
}

/// A tool as the reasoner is told about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// What executing a call needs.
#[derive(Debug, Clone)]
pub struct ExecContext {
    pub mission: MissionId,
    pub agent: AgentId,
    pub namespace: Namespace,
    pub workspace: PathBuf,
    pub token: Option<Signed<ExecutionToken>>,
    pub trust: TrustSet,
    pub now: Timestamp,
    pub mission_active: bool,
    /// Hosts `http.fetch` may reach (the mission's declaration; policy decides too).
    pub network: Vec<String>,
    /// Where the running call heartbeats; the engine fails an attempt that goes silent
    /// longer than the mission's heartbeat timeout.
    pub heartbeat: Option<Heartbeat>,
    /// The last progress a previous attempt of this call reported, if any.
    pub progress: Option<Value>,
}

/// The heartbeat line is aura-tools' own type, so that the registry's tools can use it
/// without the engine translating every beat.
pub use aura_tools::Heartbeat;
/// A tool's failure is aura-tools' own typed error: its kind decides whether a call is
/// retried ([`ErrorKind::is_transient`]), whatever its message says.
pub use aura_tools::{ErrorKind, ToolError};

/// A failed effect of `kind` for `call`: how a [`Tools`] port reports a failure, so that
/// the record carries the kind the engine decides retries from. An effect that fails
/// without a kind is never retried.
pub fn failed_effect(call: &ToolCall, kind: ErrorKind, message: impl Into<String>) -> Effect {
    Effect {
        call_id: call.id.clone(),
        tool: call.name.clone(),
        ok: false,
        output: Value::Null,
        error: Some(message.into()),
        error_kind: Some(kind.recorded_name()),
        compensation: None,
        message: None,
        finish: None,
    }
}

#[async_trait]
pub trait Tools: Send + Sync + std::fmt::Debug {
    /// Specs of the named tools that exist, for the reasoner.
    fn specs(&self, names: &[String]) -> Vec<ToolSpec>;
    /// Checks a call's arguments and says what it touches; `Err` is a reason to refuse it.
    fn prepare(&self, call: &ToolCall) -> Result<Proposal, ToolError>;
    /// Runs a permitted call. Never panics; failures come back as failed effects, with
    /// their kind in `error_kind` (see [`failed_effect`]).
    async fn execute(&self, ctx: &ExecContext, proposal: &Proposal) -> Effect;
    /// Undoes a completed call from its recorded compensation.
    async fn compensate(
        &self,
        ctx: &ExecContext,
        tool: &str,
        compensation: &Value,
    ) -> Result<(), ToolError>;
}

/// What a reasoner is asked.
#[derive(Debug, Clone)]
pub struct ReasonRequest {
    /// The mission's framing and conversation, shared with the mission rather than
    /// copied, so that asking for a turn costs the same at any length of history.
    pub messages: Context,
    pub tools: Vec<ToolSpec>,
    pub seed: u64,
    /// The mission's turn: how many turns the reasoner took before this one.
    pub turn: u32,
}

/// Why a reasoner's turn failed. The engine records it, with its causes, on one line,
/// and asks again under the mission's retry policy.
#[derive(Debug, thiserror::Error)]
pub enum ReasonerError {
    /// One of aura-reasoner's providers failed.
    #[error(transparent)]
    Provider(#[from] aura_reasoner::Error),
    /// Another reasoner failed (one a program or a test plugs in).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl ReasonerError {
    /// A failure of another reasoner, from its error or a message.
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ReasonerError::Other(e.into())
    }
}

#[async_trait]
pub trait Reasoner: Send + Sync + std::fmt::Debug {
    /// One turn; `deltas` hears text as it is produced.
    async fn turn(
        &self,
        request: &ReasonRequest,
        deltas: &(dyn for<'s> Fn(&'s str) + Send + Sync),
    ) -> Result<Turn, ReasonerError>;
}

/// The reasoners a node has configured, by name.
pub trait Reasoners: Send + Sync + std::fmt::Debug {
    /// The reasoner called `name`; the empty name is the node's default.
    fn get(&self, name: &str) -> Option<Arc<dyn Reasoner>>;
    /// What the default is, for people ("scripted demo", "openai gpt-4o", ...).
    fn describe_default(&self) -> String;
}

/// A policy that denies everything: what a node has before any is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl Policy for DenyAll {
    fn decide(&self, query: &Query) -> Decision {
        Decision {
            action: query.action.clone(),
            resource: Value::Null,
            destructive: query.destructive,
            outcome: aura_kernel::Outcome::Deny,
            deciding: Vec::new(),
            errors: vec!["no policy is configured on this node".into()],
            request: aura_core::hash::Hash::ZERO,
        }
    }
}

/// No tools at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTools;

#[async_trait]
impl Tools for NoTools {
    fn specs(&self, _names: &[String]) -> Vec<ToolSpec> {
        Vec::new()
    }

    fn prepare(&self, call: &ToolCall) -> Result<Proposal, ToolError> {
        Err(ToolError::new(
            ErrorKind::UnknownTool,
            format!("there is no tool `{}` on this node", call.name),
        ))
    }

    async fn execute(&self, _ctx: &ExecContext, proposal: &Proposal) -> Effect {
        failed_effect(
            &proposal.call,
            ErrorKind::UnknownTool,
            "there are no tools on this node",
        )
    }

    async fn compensate(
        &self,
        _ctx: &ExecContext,
        tool: &str,
        _compensation: &Value,
    ) -> Result<(), ToolError> {
        Err(ToolError::new(
            ErrorKind::UnknownTool,
            format!("there is no tool `{tool}` on this node"),
        ))
    }
}

/// No reasoners at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReasoners;

impl Reasoners for NoReasoners {
    fn get(&self, _name: &str) -> Option<Arc<dyn Reasoner>> {
        None
    }

    fn describe_default(&self) -> String {
        "none configured".into()
    }
}
