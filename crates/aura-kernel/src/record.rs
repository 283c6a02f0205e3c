//! What the kernel records: mission declarations, reasoner turns, policy decisions, tool
//! effects, approvals and transitions, as ledger entries of the agent's stream.
//!
//! These are the ledger's boundary types for missions, versioned by their entry kinds
//! (`mission.*`, see docs/missions.md). Other crates' types (reasoner turns, policy
//! decisions, tool effects) are converted into them by the node, so that the recorded
//! form never changes because a provider's or a tool's internals did.

use std::collections::BTreeMap;
use std::time::Duration;

use aura_core::hash::Hash;
use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::{CredentialId, Level, Namespace};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::durable::StepPolicy;

/// A mission declaration: the four required fields (objective, tools, authority, timeout)
/// and the optional ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissionSpec {
    pub objective: String,
    /// The only tools the mission may use.
    pub tools: Vec<String>,
    /// The authority it acts under: the agent's credential, and the level it claims (never
    /// above the credential's).
    pub authority: Authority,
    /// Seconds from submission until the mission times out.
    pub timeout_secs: u64,
    pub namespace: Namespace,
    #[serde(default)]
    pub budget: Budget,
    /// The configured reasoner to use; empty for the node's default.
    #[serde(default)]
    pub reasoner: String,
    /// Hosts `http.fetch` may reach, if policy also allows.
    #[serde(default)]
    pub network: Vec<String>,
    /// The workspace (a directory of the mission's namespace) its file tools work in;
    /// `None` gives the mission a fresh one of its own.
    #[serde(default)]
    pub workspace: Option<String>,
    /// How the mission's steps (reasoner turns and tool calls) are retried and timed;
    /// `None` for the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepPolicy>,
    /// Per tool, in place of `steps` for that tool's calls.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_steps: BTreeMap<String, StepPolicy>,
    /// The mission's boundary in a cluster: the region labels of the nodes it may run on
    /// (as nodes are enrolled with). Empty: anywhere. A node outside them refuses it, and
    /// one that comes to hold it later (a failover) pauses it rather than run it. Left
    /// out of the encoding when empty, so records written before it encode as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

impl MissionSpec {
    /// The longest timeout a new mission may declare: 30 days. A mission that must wait
    /// longer (for a person, say) is better declared again than left holding its
    /// execution token and workspace for months. The node enforces it at submission; the
    /// kernel replays older records with longer timeouts as they were.
    pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The policy for calls of `tool`, or for reasoner turns when `None`.
    pub fn step_policy(&self, tool: Option<&str>) -> StepPolicy {
        tool.and_then(|t| self.tool_steps.get(t))
            .or(self.steps.as_ref())
            .cloned()
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authority {
    pub credential: Option<CredentialId>,
    pub level: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Reasoner turns.
    pub max_steps: u32,
    /// Prompt plus completion tokens.
    pub max_tokens: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_steps: 32,
            max_tokens: 200_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool call the reasoner proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

impl crate::recipe::Recipe {
    /// The calls a run of the recipe makes for the `recipe.run` call `call_id` with
    /// `args`: [`Recipe::filled`](crate::recipe::Recipe::filled)'s calls, in order, with
    /// the ids `<call_id>/1`, `<call_id>/2`, ... (Here, beside the recorded types, so that
    /// the recipe module stays a leaf.)
    pub fn expand(
        &self,
        call_id: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<Vec<ToolCall>, crate::recipe::RecipeError> {
        Ok(self
            .filled(args)?
            .into_iter()
            .enumerate()
            .map(|(i, c)| ToolCall {
                id: format!("{call_id}/{}", i + 1),
                name: c.tool,
                arguments: c.arguments,
            })
            .collect())
    }
}

/// A message of a mission's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A reasoner's turn, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub provider: String,
    pub model: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Permit,
    Deny,
    Escalate { level: Level },
}

/// A policy decision, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The action asked about: a tool name, or `mission.submit`.
    pub action: String,
    /// The resource, as policy saw it.
    pub resource: Value,
    pub destructive: bool,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Ids of the policies that decided.
    pub deciding: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The digest an approval must name to answer an escalation of this request.
    pub request: Hash,
}

/// A message one agent sends another (the node delivers it to the target's inbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    pub to: AgentId,
    pub body: Value,
}

/// A tool's effect, as recorded. `compensation` is what undoing it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub call_id: String,
    pub tool: String,
    pub ok: bool,
    pub output: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the call failed, as a kind the tools name (aura-tools' `ErrorKind`, by its
    /// recorded name, e.g. `network`), apart from the message. Whether a failure is
    /// retried is decided from this, never from the message. Absent in records made
    /// before it existed, which therefore encode, hash and replay exactly as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Outbound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<String>,
}

/// One recorded mission event. Each is one ledger entry of kind `mission.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The mission was declared.
    Submitted {
        mission: MissionId,
        agent: AgentId,
        spec: MissionSpec,
        at: Timestamp,
    },
    /// Policy judged the declaration (`mission.submit`).
    Judged {
        decision: Decision,
    },
    /// The mission moved to another state.
    Transition {
        to: crate::MissionState,
        reason: String,
        at: Timestamp,
    },
    /// The reasoner answered.
    Turn {
        turn: Turn,
        at: Timestamp,
    },
    /// Policy decided about one proposed tool call.
    Decided {
        call_id: String,
        decision: Decision,
    },
    /// A permitted tool call ran.
    Effect {
        effect: Effect,
        at: Timestamp,
    },
    /// A person approved the escalated request; the request is then decided again.
    Approved {
        approval: Value,
        approver: String,
        level: Level,
        at: Timestamp,
    },
    /// A person rejected it.
    Rejected {
        approval: Value,
        approver: String,
        reason: String,
        at: Timestamp,
    },
    /// Another agent's message reached the mission.
    Message {
        from: AgentId,
        body: Value,
        at: Timestamp,
    },
    /// Someone asked for the mission to stop.
    CancelRequested {
        by: String,
        reason: String,
        at: Timestamp,
    },
    /// The mission's time ran out.
    TimedOut {
        at: Timestamp,
    },
    /// A completed call was undone (or could not be).
    Compensated {
        call_id: String,
        ok: bool,
        error: Option<String>,
        at: Timestamp,
        /// Attempts it took (recorded when more than one).
        #[serde(default, skip_serializing_if = "is_zero")]
        attempts: u32,
    },
    /// An attempt at a permitted call starts; recorded before the tool runs, so that a
    /// crash leaves the record saying which call was in flight.
    Attempt {
        call_id: String,
        attempt: u32,
        at: Timestamp,
    },
    /// An attempt failed: of a call, or of the reasoner's turn when `call_id` is `None`.
    /// `retry_at` is when the next attempt is due, `None` when none will be made.
    AttemptFailed {
        call_id: Option<String>,
        attempt: u32,
        kind: String,
        error: String,
        retry_at: Option<Timestamp>,
        at: Timestamp,
    },
    /// A running attempt reported progress; a retry reads the last one.
    Heartbeat {
        call_id: String,
        attempt: u32,
        details: Value,
        at: Timestamp,
    },
    /// An operator paused the mission: no step starts until it is resumed.
    Paused {
        by: String,
        reason: String,
        at: Timestamp,
    },
    Resumed {
        by: String,
        at: Timestamp,
    },
    /// An operator asked for waiting retries to run now rather than at their due time.
    RetryRequested {
        by: String,
        at: Timestamp,
    },
    /// A permitted `recipe.run` call was expanded into its recipe's calls: the recipe as
    /// it was read from the agent's memory, its digest, and the calls it gave for the
    /// run's arguments (ids `<call_id>/1`, ...), each then decided, attempted and
    /// recorded like a call of the reasoner's. The kernel checks the digest and the
    /// expansion, so replay never reads the recipe book (docs/memory.md, "Recipes").
    Expanded {
        call_id: String,
        recipe: crate::recipe::Recipe,
        digest: Hash,
        calls: Vec<ToolCall>,
        at: Timestamp,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Event {
    /// The ledger entry kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Submitted { .. } => "mission.submitted",
            Event::Judged { .. } => "mission.judged",
            Event::Transition { .. } => "mission.transition",
            Event::Turn { .. } => "mission.turn",
            Event::Decided { .. } => "mission.decided",
            Event::Effect { .. } => "mission.effect",
            Event::Approved { .. } => "mission.approved",
            Event::Rejected { .. } => "mission.rejected",
            Event::Message { .. } => "mission.message",
            Event::CancelRequested { .. } => "mission.cancel_requested",
            Event::TimedOut { .. } => "mission.timed_out",
            Event::Compensated { .. } => "mission.compensated",
            Event::Attempt { .. } => "mission.attempt",
            Event::AttemptFailed { .. } => "mission.attempt_failed",
            Event::Heartbeat { .. } => "mission.heartbeat",
            Event::Paused { .. } => "mission.paused",
            Event::Resumed { .. } => "mission.resumed",
            Event::RetryRequested { .. } => "mission.retry_requested",
            Event::Expanded { .. } => "mission.expanded",
        }
    }
}

/// The version of a mission's record format: how its entry bodies and the JSON its state
/// hashes cover are written. A mission keeps the format it was submitted under, so that
/// a mission begun before an upgrade records and replays the same way to its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordFormat {
    /// Version 1: JSON as serde_json writes it, struct fields in declaration order and
    /// maps in their own order. Every node build has serde_json's `preserve_order` on (a
    /// dependency turns it on), so maps were written in the order they were built or
    /// read; replaying such a record needs a build with that feature, as every node and
    /// engine build has. Read and replayed, never written for a new mission.
    #[default]
    V1,
    /// Version 2: RFC 8785 canonical JSON (`aura_core::jcs`), both for the entry body and
    /// for what the state hash covers, so the bytes are the same in every build. The
    /// state summary holds the whole list of completed calls, so hashing a step costs
    /// more the longer the mission. Read and replayed, never written for a new mission.
    V2,
    /// Version 3: as version 2, but the state summary holds a running digest of the
    /// completed calls (folded once per call completed and per call undone) in place of
    /// the list, so hashing a step costs the same at any length of history
    /// (docs/missions.md, "The record").
    V3,
}

impl RecordFormat {
    /// The format new missions are recorded in.
    pub const CURRENT: RecordFormat = RecordFormat::V3;

    /// Writes `value` as this format's JSON. An error, never an empty body, when a value
    /// has no JSON form (a map with non-string keys, a non-finite number).
    pub fn json(self, value: &impl Serialize) -> Result<Vec<u8>, Unserialisable> {
        match self {
            RecordFormat::V1 => {
                serde_json::to_vec(value).map_err(|e| Unserialisable(e.to_string()))
            }
            RecordFormat::V2 | RecordFormat::V3 => {
                aura_core::jcs::to_vec(value).map_err(|e| Unserialisable(e.to_string()))
            }
        }
    }

    /// [`RecordFormat::json`] as text.
    pub fn text(self, value: &impl Serialize) -> Result<String, Unserialisable> {
        String::from_utf8(self.json(value)?).map_err(|e| Unserialisable(e.to_string()))
    }

    pub(crate) fn is_v1(&self) -> bool {
        *self == RecordFormat::V1
    }
}

impl Serialize for RecordFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(match self {
            RecordFormat::V1 => 1,
            RecordFormat::V2 => 2,
            RecordFormat::V3 => 3,
        })
    }
}

impl<'de> Deserialize<'de> for RecordFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            1 => Ok(RecordFormat::V1),
            2 => Ok(RecordFormat::V2),
            3 => Ok(RecordFormat::V3),
            v => Err(serde::de::Error::custom(format!(
                "unknown mission record version {v} (this build reads 1, 2 and 3)"
            ))),
        }
    }
}

/// A value has no JSON form for the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write the record as JSON: {0}")]
pub struct Unserialisable(pub String);

/// The body of a mission entry: the event and the mission's state hash after it, and from
/// version 2 on the record format's version (`"v": 2`, `"v": 3`; version 1 bodies have no
/// `v`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    #[serde(default, skip_serializing_if = "RecordFormat::is_v1")]
    pub v: RecordFormat,
    pub mission: MissionId,
    pub event: Event,
    pub state_hash: Hash,
}

impl Recorded {
    /// The body, in the record's format: from version 2, RFC 8785 canonical JSON.
    pub fn to_body(&self) -> Result<Vec<u8>, Unserialisable> {
        self.v.json(self)
    }

    pub fn from_body(body: &[u8]) -> Result<Recorded, serde_json::Error> {
        serde_json::from_slice(body)
    }
}
