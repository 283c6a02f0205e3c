//! The shapes of the node's answers about missions, agents and the ledger, shared by the
//! node that sends them and the `aura` command (and its TUI) that reads them.
//!
//! The node serialises these types and the CLI deserialises the very same ones, so a field
//! renamed or retyped here changes both sides at once, and a CLI that reads a field the
//! node no longer sends fails to compile instead of printing `?`. A field the reader does
//! not know is ignored, so an older `aura` still reads a newer node that added one; a
//! missing field, or a state or kind it does not know, is a one-line error. Recorded
//! mission events (the event stream's entry bodies) are the kernel's own boundary types,
//! [`aura_kernel::Recorded`] and [`aura_kernel::Event`].
//!
//! `aura-node/tests/wire.rs` checks that each answer of a real node reads back into its
//! type and serialises to the same JSON, field for field.

use aura_core::PublicKey;
use aura_core::{AgentId, MissionId, Timestamp};
use aura_engine::StuckReason;
use aura_identity::{Answers, Credential, Level, Namespace, Signed};
use aura_kernel::{CallState, Change, Message, MissionState};
use aura_ledger::SignedCheckpoint;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EscalationView {
    pub action: String,
    #[schema(value_type = String)]
    pub level: Level,
    /// The request digest an approval must sign.
    pub request: String,
    pub call_id: Option<String>,
    /// What an approval must name as the escalation it answers (`answers` in the signed
    /// approval): `{"kind": "declaration"}` or `{"kind": "call", "turn": N, "id": "..."}`.
    #[schema(value_type = Object)]
    pub answers: Option<Answers>,
    /// The proposed call's arguments, so the approver sees what they approve.
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MissionView {
    #[schema(value_type = String)]
    pub id: MissionId,
    #[schema(value_type = String)]
    pub agent: AgentId,
    #[schema(value_type = String)]
    pub namespace: Namespace,
    #[schema(value_type = String)]
    pub state: MissionState,
    pub objective: String,
    pub tools: Vec<String>,
    #[schema(value_type = String)]
    pub level: Level,
    pub reasoner: String,
    pub workspace: Option<String>,
    #[schema(value_type = String)]
    pub submitted_at: Timestamp,
    #[schema(value_type = String)]
    pub deadline: Timestamp,
    pub steps: u32,
    pub tokens: u64,
    pub summary: Option<String>,
    pub reason: Option<String>,
    pub escalation: Option<EscalationView>,
    /// Every state change: from, to, reason, at.
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<Change>,
    pub state_hash: String,
    /// An operator paused it.
    pub paused: bool,
    /// The latest turn's calls not resolved yet, with their attempts, last error and
    /// when the next retry is due.
    #[schema(value_type = Vec<Object>)]
    pub calls: Vec<CallState>,
    /// The mission's record was pruned (`POST /v1/missions/prune`): it is shown as it
    /// ended, without its conversation, and cannot be replayed.
    pub pruned: bool,
    /// The conversation, with `?detail=full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub conversation: Option<Vec<Message>>,
    /// The regions whose nodes may run it (its boundary in a cluster); absent: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StuckView {
    #[schema(value_type = String)]
    pub mission: MissionId,
    #[schema(value_type = String)]
    pub agent: AgentId,
    #[schema(value_type = String)]
    pub state: MissionState,
    /// `escalated` (with action and level), `retrying` (call, attempts, last_error,
    /// retry_at) or `paused`.
    #[schema(value_type = Object)]
    pub why: StuckReason,
    #[schema(value_type = String)]
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplayView {
    /// Whether replaying the record reproduced every state hash.
    pub ok: bool,
    #[schema(value_type = String)]
    pub state: Option<MissionState>,
    pub state_hash: Option<String>,
    /// Where it diverged, if it did.
    pub divergence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PruneView {
    pub dry_run: bool,
    /// The cutoff: missions whose last change is before it were pruned.
    #[schema(value_type = String)]
    pub older_than: Timestamp,
    /// The missions pruned (or that would be).
    #[schema(value_type = Vec<String>)]
    pub missions: Vec<MissionId>,
    /// Ledger entries whose bodies were removed (or would be).
    pub entries: u64,
    /// Entries of those missions kept whole (each one's submission and final transition).
    pub kept: u64,
    pub bytes_freed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PendingApproval {
    #[schema(value_type = String)]
    pub mission: MissionId,
    #[schema(value_type = String)]
    pub agent: AgentId,
    #[schema(value_type = String)]
    pub namespace: Namespace,
    pub objective: String,
    pub escalation: EscalationView,
}

/// An agent as `GET /v1/agents` and `GET /v1/agents/{id}` answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    #[schema(value_type = String, example = "agent_01j8tpm400c5tq4r9dc5kpavkm")]
    pub id: AgentId,
    pub name: String,
    #[schema(value_type = String)]
    pub namespace: Namespace,
    #[schema(value_type = String, example = "L2")]
    pub level: Level,
    #[schema(value_type = String)]
    pub public_key: PublicKey,
    /// The credential the issuer signed: `{"statement": {...}, "signature": "<hex>"}`.
    #[schema(value_type = Object)]
    pub credential: Signed<Credential>,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
}

/// One ledger entry as the node shows it: its place, its chain links and its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EntryView {
    pub index: u64,
    #[schema(value_type = String)]
    pub agent: AgentId,
    pub seq: u64,
    pub kind: String,
    #[schema(value_type = String)]
    pub recorded_at: Timestamp,
    pub prev: String,
    pub hash: String,
    /// The body as JSON when it is JSON, else as a string of hex.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// A page of an agent's record (`GET /v1/agents/{id}/record`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordView {
    pub entries: Vec<EntryView>,
    /// Pass as `from` to read on; absent at the end of the record.
    pub next: Option<u64>,
}

/// The latest checkpoint the node signed (`GET /v1/ledger/checkpoint`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointView {
    /// The node's public key, to check the signature with.
    #[schema(value_type = String)]
    pub public_key: PublicKey,
    /// The signed checkpoint: node, tree_size, root, time, signature.
    #[schema(value_type = Object)]
    pub checkpoint: SignedCheckpoint,
}
