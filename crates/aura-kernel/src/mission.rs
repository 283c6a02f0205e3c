//! A mission's state, and the pure function that moves it: [`Mission::apply`].
//!
//! `apply` is the kernel's only way to change a mission. It checks that the event makes
//! sense in the current state (a turn only while running, an effect only for a permitted
//! call, a transition only along the table, compensations only in reverse order...) and
//! refuses it otherwise, leaving the mission as it was. After each event the mission's
//! **state hash** is `H(State tag, previous hash, event kind, event, state summary)`: it
//! chains every event and commits to everything the kernel derived from them, so a replay
//! that derives anything differently diverges at once.

use std::collections::BTreeSet;

use aura_core::hash::{Domain, Hash, TaggedHasher};
use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::{Answers, Approval, ApprovalId, Level, Signed, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::list::AppendList;
use crate::recipe::{RUN_TOOL, RecipeRun, RunArgs};
use crate::record::{
    Decision, Effect, Event, Message, MissionSpec, Outcome, RecordFormat, Role, ToolCall,
    Unserialisable,
};
use crate::state::{IllegalTransition, MissionState, check_transition};

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("{event} is not possible while the mission is {state}")]
    WrongState {
        event: &'static str,
        state: MissionState,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("event for mission {found} applied to mission {expected}")]
    WrongMission {
        expected: MissionId,
        found: MissionId,
    },
}

fn invalid(msg: impl Into<String>) -> KernelError {
    KernelError::Invalid(msg.into())
}

/// A proposed tool call of the latest turn and, once decided, policy's decision, and its
/// attempts once permitted. (The attempt fields are left out of the serialised form while
/// unused, so that records made before attempts were recorded keep their state hashes.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    pub call: ToolCall,
    pub decision: Option<Decision>,
    /// Attempts started (or failed before they could start) so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Whether the latest attempt started and has not ended: after a crash, the call
    /// that was in flight.
    #[serde(default, skip_serializing_if = "is_false")]
    pub running: bool,
    /// When the next attempt may start, while one is waiting out its backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// When the next attempt became due (for schedule-to-start timeouts). Derived from
    /// recorded times (the turn's, an approval's, a retry's) and left out of the hashed
    /// state, which the events themselves already commit to, so that records made before
    /// it existed replay to the same hashes.
    #[serde(skip)]
    pub due_at: Option<Timestamp>,
    /// How the latest attempt failed (`kind: message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The latest heartbeat's details, for the next attempt to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    /// The latest attempt failed and none will follow.
    #[serde(default, skip_serializing_if = "is_false")]
    pub given_up: bool,
    /// For a call of a recipe: the `recipe.run` call it was expanded from. Its result goes
    /// into that call's, not into the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For an expanded `recipe.run` call: the recipe and its calls' results so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<RecipeRun>,
}

impl CallState {
    fn new(call: ToolCall) -> Self {
        CallState {
            call,
            decision: None,
            attempts: 0,
            running: false,
            retry_at: None,
            due_at: None,
            last_error: None,
            progress: None,
            given_up: false,
            parent: None,
            recipe: None,
        }
    }

    fn permitted(&self) -> bool {
        matches!(
            self.decision.as_ref().map(|d| d.outcome),
            Some(Outcome::Permit)
        )
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The largest heartbeat details the kernel records.
const MAX_PROGRESS_BYTES: usize = 4096;

/// What a reasoner is shown for a turn: the two messages that frame the mission (the
/// system prompt and the objective), then the conversation so far. The conversation is
/// the mission's own, shared rather than copied, so asking for a turn costs the same at
/// any length of history; a reasoner reads it with [`Context::iter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    framing: Vec<Message>,
    conversation: AppendList<Message>,
}

impl FromIterator<Message> for Context {
    /// A context of these messages alone (for a reasoner asked outside a mission).
    fn from_iter<I: IntoIterator<Item = Message>>(messages: I) -> Self {
        Context {
            framing: Vec::new(),
            conversation: messages.into_iter().collect(),
        }
    }
}

impl Context {
    /// Every message, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Message> + '_ {
        self.framing.iter().chain(self.conversation.iter())
    }

    pub fn len(&self) -> usize {
        self.framing.len() + self.conversation.len()
    }

    pub fn is_empty(&self) -> bool {
        self.framing.is_empty() && self.conversation.is_empty()
    }

    /// The first message: in a mission's context, the system message.
    pub fn first(&self) -> Option<&Message> {
        self.iter().next()
    }

    /// Every message, copied.
    pub fn to_vec(&self) -> Vec<Message> {
        self.iter().cloned().collect()
    }
}

/// A request waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The escalated tool call, or `None` for the mission's declaration itself.
    pub call_id: Option<String>,
    pub action: String,
    pub request: Hash,
    pub level: Level,
    /// Set once a sufficient approval arrived: the request is then decided again.
    pub approved_by: Option<String>,
}

/// A call that completed, and what undoing it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    pub call_id: String,
    pub tool: String,
    pub compensation: Option<Value>,
    pub compensated: bool,
    /// Why undoing it failed, if it did.
    pub compensation_error: Option<String>,
}

/// One change of state, for the mission's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub from: MissionState,
    pub to: MissionState,
    pub reason: String,
    pub at: Timestamp,
}

/// A mission and everything the kernel knows about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mission {
    pub id: MissionId,
    pub agent: AgentId,
    pub spec: MissionSpec,
    pub state: MissionState,
    pub submitted_at: Timestamp,
    pub deadline: Timestamp,
    /// Reasoner turns taken.
    pub steps: u32,
    pub tokens: u64,
    /// Shared between copies, so that copying a mission (every event applies to a copy)
    /// costs the same at its first step and its thousandth.
    pub conversation: AppendList<Message>,
    pub conversation_digest: Hash,
    /// The latest turn's calls not yet resolved (denied or effected).
    pub calls: Vec<CallState>,
    pub judged: Option<Decision>,
    pub escalation: Option<Escalation>,
    /// Shared between copies, as the conversation is.
    pub completed: AppendList<Completed>,
    /// From record format 3: a running digest of every change to `completed` (a call
    /// completed, a call undone or not), which the state hash covers in place of the
    /// whole list. Derived from the events, so left out of the mission's own JSON.
    #[serde(skip)]
    pub completed_digest: Hash,
    pub summary: Option<String>,
    pub reason: Option<String>,
    pub cancel_requested: bool,
    pub timed_out: bool,
    pub history: Vec<Change>,
    pub events: u64,
    pub state_hash: Hash,
    /// Failed attempts at the next reasoner turn.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub turn_failures: u32,
    /// When the next reasoner turn may be asked, while it waits out its backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_retry_at: Option<Timestamp>,
    /// An operator paused the mission.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// The ids of the approvals (and rejections) the mission's record used: each answers
    /// one escalation, so an id used once is refused after. Derived from the recorded
    /// approvals, which the state hash already chains, and left out of the hashed summary,
    /// so that records made before it existed replay to the same hashes.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub used_approvals: BTreeSet<ApprovalId>,
    /// The record format the mission was submitted under; its events are recorded and its
    /// state hashes computed in it to the end. Derived from the record (the submission's
    /// `v`), so left out of the mission's own JSON.
    #[serde(skip)]
    pub format: RecordFormat,
}

/// What the state hash commits to besides the events: everything derived, but the
/// conversation only by its digest so that hashing stays proportional to the event (and
/// from record format 3 the completed calls too, by theirs).
#[derive(Serialize)]
struct Summary<'a> {
    state: MissionState,
    steps: u32,
    tokens: u64,
    conversation: &'a Hash,
    calls: &'a [CallState],
    judged: &'a Option<Decision>,
    escalation: &'a Option<Escalation>,
    completed: CompletedView<'a>,
    summary: &'a Option<String>,
    reason: &'a Option<String>,
    cancel_requested: bool,
    timed_out: bool,
    deadline: Timestamp,
    events: u64,
    #[serde(skip_serializing_if = "is_zero")]
    turn_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    turn_retry_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "is_false")]
    paused: bool,
}

/// The completed calls as the state hash covers them: the whole list up to record format
/// 2 (so hashing cost grew with the mission), its running digest from format 3.
#[derive(Serialize)]
#[serde(untagged)]
enum CompletedView<'a> {
    List(&'a AppendList<Completed>),
    Digest(&'a Hash),
}

impl From<Unserialisable> for KernelError {
    fn from(e: Unserialisable) -> Self {
        KernelError::Invalid(e.to_string())
    }
}

impl Mission {
    /// A new mission from its `Submitted` event, recorded in the current format.
    pub fn submitted(event: &Event) -> Result<Mission, KernelError> {
        Mission::submitted_in(event, RecordFormat::CURRENT)
    }

    /// A mission from its `Submitted` event, recorded in `format` (for replay: the format
    /// its record was written in).
    pub fn submitted_in(event: &Event, format: RecordFormat) -> Result<Mission, KernelError> {
        let Event::Submitted {
            mission,
            agent,
            spec,
            at,
        } = event
        else {
            return Err(invalid("a mission's first event must be `submitted`"));
        };
        validate_spec(spec)?;
        let mut m = Mission {
            id: *mission,
            agent: *agent,
            spec: spec.clone(),
            state: MissionState::Submitted,
            submitted_at: *at,
            deadline: at.saturating_add(spec.timeout()),
            steps: 0,
            tokens: 0,
            conversation: AppendList::new(),
            conversation_digest: Hash::ZERO,
            calls: Vec::new(),
            judged: None,
            escalation: None,
            completed: AppendList::new(),
            completed_digest: Hash::ZERO,
            summary: None,
            reason: None,
            cancel_requested: false,
            timed_out: false,
            history: Vec::new(),
            events: 0,
            state_hash: Hash::ZERO,
            turn_failures: 0,
            turn_retry_at: None,
            paused: false,
            used_approvals: BTreeSet::new(),
            format,
        };
        m.seal(event)?;
        Ok(m)
    }

    /// Applies one event, or refuses it and leaves the mission unchanged.
    pub fn apply(&self, event: &Event) -> Result<Mission, KernelError> {
        let mut m = self.clone();
        m.apply_in_place(event)?;
        m.seal(event)?;
        Ok(m)
    }

    /// Whether completed calls remain to be undone.
    pub fn has_compensations(&self) -> bool {
        self.completed
            .iter()
            .any(|c| c.compensation.is_some() && !c.compensated && c.compensation_error.is_none())
    }

    /// The next call to undo: the latest completed one not yet undone (reverse order).
    pub fn next_compensation(&self) -> Option<&Completed> {
        self.next_compensation_at()
            .and_then(|i| self.completed.get(i))
    }

    /// Where in `completed` the next call to undo is.
    fn next_compensation_at(&self) -> Option<usize> {
        self.completed.rposition(|c| {
            c.compensation.is_some() && !c.compensated && c.compensation_error.is_none()
        })
    }

    /// Calls policy has not decided yet, in the reasoner's order.
    pub fn undecided(&self) -> impl Iterator<Item = &ToolCall> {
        self.calls
            .iter()
            .filter(|c| c.decision.is_none())
            .map(|c| &c.call)
    }

    /// Calls permitted and not yet run, in order. An expanded `recipe.run` call is not
    /// run itself: its recipe's calls, which follow it, are.
    pub fn permitted(&self) -> impl Iterator<Item = &ToolCall> {
        self.calls
            .iter()
            .filter(|c| c.permitted() && c.recipe.is_none())
            .map(|c| &c.call)
    }

    /// The effect of an expanded `recipe.run` call whose recipe's calls are all resolved:
    /// one result for the reasoner holding each call's (`{"recipe", "version", "digest",
    /// "results"}`), failed with the reason when the recipe stopped early. The kernel
    /// derives it, and refuses any other effect for that call.
    pub fn recipe_ready(&self) -> Option<Effect> {
        self.calls.iter().find_map(|slot| {
            let run = slot.recipe.as_ref()?;
            let id = &slot.call.id;
            if self.calls.iter().any(|c| c.parent.as_ref() == Some(id)) {
                return None;
            }
            Some(Effect {
                call_id: id.clone(),
                tool: slot.call.name.clone(),
                ok: run.stopped.is_none(),
                output: serde_json::json!({
                    "recipe": run.name,
                    "version": run.version,
                    "digest": run.digest,
                    "results": run.results,
                }),
                error: run.stopped.clone(),
                error_kind: run.stopped_kind.clone(),
                compensation: None,
                message: None,
                finish: None,
            })
        })
    }

    /// Stops the recipe of the `recipe.run` call `parent` after its call `inner`: the
    /// calls left will never run.
    fn stop_recipe(&mut self, parent: &str, inner: &ToolCall, why: &str, kind: Option<&str>) {
        self.calls.retain(|c| c.parent.as_deref() != Some(parent));
        if let Some(run) = self
            .calls
            .iter_mut()
            .find(|c| c.call.id == parent)
            .and_then(|c| c.recipe.as_mut())
        {
            let n = inner.id.rsplit('/').next().unwrap_or("?");
            run.stopped = Some(format!(
                "recipe `{}` stopped at call {n} of {} (`{}`, id {}): {why}",
                run.name, run.calls, inner.name, inner.id
            ));
            run.stopped_kind = kind.map(str::to_owned);
        }
    }

    /// Adds a recipe call's result to its `recipe.run` call's.
    fn push_result(&mut self, parent: &str, result: Value) {
        if let Some(run) = self
            .calls
            .iter_mut()
            .find(|c| c.call.id == parent)
            .and_then(|c| c.recipe.as_mut())
        {
            run.results.push(result);
        }
    }

    /// What an approval of the escalation waiting must name: the declaration, or the
    /// escalated call with the turn that proposed it. `None` while nothing waits.
    pub fn escalation_answers(&self) -> Option<Answers> {
        let esc = self
            .escalation
            .as_ref()
            .filter(|e| e.approved_by.is_none())?;
        Some(match &esc.call_id {
            None => Answers::Declaration,
            // No turn is taken while a call waits, so the latest turn proposed it.
            Some(id) => Answers::Call {
                turn: self.steps,
                id: id.clone(),
            },
        })
    }

    /// The state of the call `id` of the latest turn.
    pub fn call(&self, id: &str) -> Option<&CallState> {
        self.calls.iter().find(|c| c.call.id == id)
    }

    /// The earliest time a waiting retry (of a call or of the reasoner's turn) is due.
    pub fn next_retry(&self) -> Option<Timestamp> {
        self.calls
            .iter()
            .filter_map(|c| c.retry_at)
            .chain(self.turn_retry_at)
            .min()
    }

    pub fn budget_exhausted(&self) -> bool {
        self.steps >= self.spec.budget.max_steps || self.tokens >= self.spec.budget.max_tokens
    }

    pub fn deadline_passed(&self, now: Timestamp) -> bool {
        now >= self.deadline
    }

    /// What the reasoner sees: a system message framing the mission, the objective, and
    /// the conversation so far (shared with the mission, not copied).
    pub fn context(&self) -> Context {
        let framing = vec![
            Message {
                role: Role::System,
                content: format!(
                    "You are agent {agent}, carrying out mission {id} in namespace `{ns}` under authority {level}. \
                 Use only the tools offered. Every call is checked against policy and recorded; a denied call \
                 comes back as an error you should work around. When the objective is reached, call \
                 `mission.finish` with a short summary of what you did.",
                    agent = self.agent,
                    id = self.id,
                    ns = self.spec.namespace,
                    level = self.spec.authority.level,
                ),
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
            Message {
                role: Role::User,
                content: format!("Objective: {}", self.spec.objective),
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
        ];
        Context {
            framing,
            conversation: self.conversation.clone(),
        }
    }

    fn push_message(&mut self, message: Message) -> Result<(), KernelError> {
        let mut h = TaggedHasher::new(Domain::State);
        h.update(b"message");
        h.update(&self.conversation_digest.0);
        h.update(&self.format.json(&message)?);
        self.conversation_digest = h.finish();
        self.conversation.push(message);
        Ok(())
    }

    /// Folds a change to the completed calls into their running digest (record format 3
    /// on; earlier formats hash the whole list instead): `what` is `completed` for a call
    /// appended, `compensated` for the entry at `index` undone (or not).
    fn fold_completed(&mut self, what: &[u8], index: usize) -> Result<(), KernelError> {
        if self.format < RecordFormat::V3 {
            return Ok(());
        }
        let Some(entry) = self.completed.get(index) else {
            return Err(invalid("there is no such completed call"));
        };
        let mut h = TaggedHasher::new(Domain::State);
        h.update(what);
        h.update(&[0]);
        h.update(&self.completed_digest.0);
        h.update(&(index as u64).to_be_bytes());
        h.update(&self.format.json(entry)?);
        self.completed_digest = h.finish();
        Ok(())
    }

    /// The state summary the state hash covers besides the event, as the JSON hashed.
    /// From record format 3 its size does not grow with the mission's history (a test
    /// holds it to that).
    pub fn state_summary(&self) -> Result<Vec<u8>, KernelError> {
        Ok(self.format.json(&self.summary())?)
    }

    fn summary(&self) -> Summary<'_> {
        Summary {
            state: self.state,
            steps: self.steps,
            tokens: self.tokens,
            conversation: &self.conversation_digest,
            calls: &self.calls,
            judged: &self.judged,
            escalation: &self.escalation,
            completed: if self.format < RecordFormat::V3 {
                CompletedView::List(&self.completed)
            } else {
                CompletedView::Digest(&self.completed_digest)
            },
            summary: &self.summary,
            reason: &self.reason,
            cancel_requested: self.cancel_requested,
            timed_out: self.timed_out,
            deadline: self.deadline,
            events: self.events,
            turn_failures: self.turn_failures,
            turn_retry_at: self.turn_retry_at,
            paused: self.paused,
        }
    }

    fn seal(&mut self, event: &Event) -> Result<(), KernelError> {
        self.events += 1;
        let mut h = TaggedHasher::new(Domain::State);
        h.update(&self.state_hash.0);
        h.update(event.kind().as_bytes());
        h.update(&[0]);
        h.update(&self.format.json(event)?);
        h.update(&[0]);
        h.update(&self.state_summary()?);
        self.state_hash = h.finish();
        Ok(())
    }

    fn require(&self, event: &'static str, allowed: &[MissionState]) -> Result<(), KernelError> {
        if allowed.contains(&self.state) {
            Ok(())
        } else {
            Err(KernelError::WrongState {
                event,
                state: self.state,
            })
        }
    }

    fn apply_in_place(&mut self, event: &Event) -> Result<(), KernelError> {
        use MissionState::*;
        match event {
            Event::Submitted { .. } => return Err(invalid("the mission was already submitted")),
            Event::Judged { decision } => {
                self.require("a judgement", &[Submitted])?;
                if self.judged.is_some() {
                    return Err(invalid("the declaration was already judged"));
                }
                if let Outcome::Escalate { level } = decision.outcome {
                    self.escalation = Some(Escalation {
                        call_id: None,
                        action: decision.action.clone(),
                        request: decision.request,
                        level,
                        approved_by: None,
                    });
                }
                self.judged = Some(decision.clone());
            }
            Event::Transition { to, reason, at } => self.transition(*to, reason, *at)?,
            Event::Turn { turn, at } => {
                self.require("a reasoner turn", &[Running])?;
                self.require_unpaused()?;
                if !self.calls.is_empty() {
                    return Err(invalid("the previous turn's calls are not all resolved"));
                }
                let mut ids: Vec<&str> = turn.tool_calls.iter().map(|c| c.id.as_str()).collect();
                ids.sort_unstable();
                if ids.windows(2).any(|w| w[0] == w[1]) || ids.iter().any(|id| id.is_empty()) {
                    return Err(invalid("the turn's tool call ids are empty or repeated"));
                }
                if let Some(due) = self.turn_retry_at
                    && *at < due
                {
                    return Err(invalid("the turn was asked before its retry was due"));
                }
                self.turn_failures = 0;
                self.turn_retry_at = None;
                self.steps += 1;
                self.tokens = self
                    .tokens
                    .saturating_add(turn.prompt_tokens)
                    .saturating_add(turn.completion_tokens);
                self.calls = turn
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let mut state = CallState::new(c.clone());
                        state.due_at = Some(*at);
                        state
                    })
                    .collect();
                self.push_message(Message {
                    role: Role::Assistant,
                    content: turn.content.clone(),
                    tool_calls: turn.tool_calls.clone(),
                    tool_call_id: None,
                })?;
            }
            Event::Decided { call_id, decision } => {
                self.require("a decision", &[Running, Escalated])?;
                let approved = self.escalation.as_ref().is_some_and(|e| {
                    e.call_id.as_deref() == Some(call_id.as_str()) && e.approved_by.is_some()
                });
                let Some(slot) = self.calls.iter_mut().find(|c| &c.call.id == call_id) else {
                    return Err(invalid(format!("there is no call `{call_id}` to decide")));
                };
                match &slot.decision {
                    None => {}
                    Some(d) if approved && matches!(d.outcome, Outcome::Escalate { .. }) => {}
                    Some(_) => {
                        return Err(invalid(format!("call `{call_id}` was already decided")));
                    }
                }
                if decision.action != slot.call.name {
                    return Err(invalid(format!(
                        "the decision is about `{}`, the call is `{}`",
                        decision.action, slot.call.name
                    )));
                }
                slot.decision = Some(decision.clone());
                let parent = slot.parent.clone();
                let call = slot.call.clone();
                match decision.outcome {
                    Outcome::Permit => {
                        if approved {
                            self.escalation = None;
                        }
                    }
                    Outcome::Deny => {
                        if approved {
                            self.escalation = None;
                        }
                        self.calls.retain(|c| &c.call.id != call_id);
                        if let Some(parent) = parent {
                            // A recipe never widens authority: a call of it that policy
                            // denies stops the whole recipe, and says which call it was.
                            let mut why = "denied by policy".to_owned();
                            if !decision.deciding.is_empty() {
                                why.push_str(&format!(" ({})", decision.deciding.join(", ")));
                            }
                            if let Some(error) = decision.errors.first() {
                                why.push_str(&format!(": {error}"));
                            }
                            self.push_result(
                                &parent,
                                serde_json::json!({
                                    "id": call.id,
                                    "tool": call.name,
                                    "ok": false,
                                    "error": "denied by policy",
                                    "policies": decision.deciding,
                                }),
                            );
                            self.stop_recipe(&parent, &call, &why, Some("unauthorized"));
                            return Ok(());
                        }
                        let content = serde_json::json!({
                            "error": "denied by policy",
                            "policies": decision.deciding,
                        })
                        .to_string();
                        self.push_message(Message {
                            role: Role::Tool,
                            content,
                            tool_calls: Vec::new(),
                            tool_call_id: Some(call_id.clone()),
                        })?;
                    }
                    Outcome::Escalate { level } => {
                        if self
                            .escalation
                            .as_ref()
                            .is_some_and(|e| e.approved_by.is_none())
                        {
                            return Err(invalid("another request is already waiting for approval"));
                        }
                        self.escalation = Some(Escalation {
                            call_id: Some(call_id.clone()),
                            action: decision.action.clone(),
                            request: decision.request,
                            level,
                            approved_by: None,
                        });
                    }
                }
            }
            Event::Effect { effect, .. } => {
                self.require("an effect", &[Running])?;
                self.record_effect(effect)?;
            }
            Event::Approved {
                approval,
                approver,
                level,
                at,
            } => {
                self.require("an approval", &[Escalated])?;
                let Some(esc) = self.escalation.as_ref() else {
                    return Err(invalid("nothing is waiting for approval"));
                };
                if esc.approved_by.is_some() {
                    return Err(invalid("the escalation was already approved"));
                }
                self.use_approval(approval, Verdict::Approve)?;
                let Some(esc) = self.escalation.as_mut() else {
                    return Err(invalid("nothing is waiting for approval"));
                };
                if *level < esc.level {
                    return Err(invalid(format!(
                        "an approval at {level} cannot answer an escalation to {}",
                        esc.level
                    )));
                }
                esc.approved_by = Some(approver.clone());
                let call_id = esc.call_id.clone();
                if let Some(slot) = self
                    .calls
                    .iter_mut()
                    .find(|c| Some(&c.call.id) == call_id.as_ref())
                {
                    slot.due_at = Some(*at);
                }
                if esc.call_id.is_none() {
                    // At submission there is nothing to decide again: the approval is the
                    // permission to start.
                    self.escalation = None;
                }
            }
            Event::Rejected {
                approval,
                approver,
                reason,
                ..
            } => {
                self.require("a rejection", &[Escalated])?;
                if self.escalation.is_none() {
                    return Err(invalid("nothing is waiting for approval"));
                }
                self.use_approval(approval, Verdict::Reject)?;
                self.escalation = None;
                self.reason = Some(format!("rejected by {approver}: {reason}"));
            }
            Event::Message { from, body, .. } => {
                self.require("a message", &[Authorized, Running, Escalated])?;
                self.push_message(Message {
                    role: Role::User,
                    content: format!("Message from agent {from}: {body}"),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                })?;
            }
            Event::CancelRequested { by, reason, .. } => {
                if self.state.is_terminal() {
                    return Err(KernelError::WrongState {
                        event: "a cancellation",
                        state: self.state,
                    });
                }
                self.cancel_requested = true;
                self.reason = Some(format!("cancelled by {by}: {reason}"));
            }
            Event::TimedOut { .. } => {
                if self.state.is_terminal() {
                    return Err(KernelError::WrongState {
                        event: "a timeout",
                        state: self.state,
                    });
                }
                self.timed_out = true;
                self.reason = Some(format!("timed out after {} s", self.spec.timeout_secs));
            }
            Event::Compensated {
                call_id, ok, error, ..
            } => {
                self.require("a compensation", &[Compensating])?;
                // The entry undone is the one `next_compensation` names, found by its
                // place: call ids may repeat from one turn to the next, and the latest
                // completed call of that id may be one already undone.
                let Some(index) = self.next_compensation_at().filter(|i| {
                    self.completed
                        .get(*i)
                        .is_some_and(|c| &c.call_id == call_id)
                }) else {
                    let next = self.next_compensation().map(|c| c.call_id.clone());
                    return Err(invalid(format!(
                        "compensations run in reverse order: the next is {}, not `{call_id}`",
                        next.map_or_else(|| "none".to_owned(), |n| format!("`{n}`"))
                    )));
                };
                self.completed.update(index, |c| {
                    if *ok {
                        c.compensated = true;
                    } else {
                        c.compensation_error =
                            Some(error.clone().unwrap_or_else(|| "unknown error".into()));
                    }
                });
                self.fold_completed(b"compensated", index)?;
            }
            Event::Attempt {
                call_id,
                attempt,
                at,
            } => {
                self.require("an attempt", &[Running])?;
                self.require_unpaused()?;
                let slot = self.permitted_slot(call_id)?;
                if slot.recipe.is_some() {
                    return Err(invalid(format!(
                        "call `{call_id}` was expanded into its recipe's calls; they run, not it"
                    )));
                }
                if slot.running {
                    return Err(invalid(format!(
                        "call `{call_id}` has an attempt running already"
                    )));
                }
                if *attempt != slot.attempts + 1 {
                    return Err(invalid(format!(
                        "call `{call_id}`'s next attempt is {}, not {attempt}",
                        slot.attempts + 1
                    )));
                }
                if slot.retry_at.is_some_and(|due| *at < due) {
                    return Err(invalid(format!(
                        "call `{call_id}` was attempted before its retry was due"
                    )));
                }
                slot.attempts = *attempt;
                slot.running = true;
                slot.retry_at = None;
            }
            Event::AttemptFailed {
                call_id,
                attempt,
                kind,
                error,
                retry_at,
                at,
            } => {
                self.require("a failed attempt", &[Running])?;
                if kind.is_empty() || kind.len() > 64 || error.len() > 64 * 1024 {
                    return Err(invalid("a failure's kind or message is out of bounds"));
                }
                let Some(call_id) = call_id else {
                    if !self.calls.is_empty() {
                        return Err(invalid("a turn failed while calls are unresolved"));
                    }
                    if *attempt != self.turn_failures + 1 {
                        return Err(invalid(format!(
                            "the turn's next failed attempt is {}, not {attempt}",
                            self.turn_failures + 1
                        )));
                    }
                    let expected = self.spec.step_policy(None).retry_at(*attempt, kind, *at);
                    check_retry_at(*retry_at, expected)?;
                    self.turn_failures = *attempt;
                    self.turn_retry_at = *retry_at;
                    return Ok(());
                };
                let tool = self.permitted_slot(call_id)?.call.name.clone();
                let policy = self.spec.step_policy(Some(&tool));
                let slot = self.permitted_slot(call_id)?;
                let expected_attempt = if slot.running {
                    slot.attempts
                } else {
                    slot.attempts + 1
                };
                if *attempt != expected_attempt {
                    return Err(invalid(format!(
                        "call `{call_id}`'s failed attempt is {expected_attempt}, not {attempt}"
                    )));
                }
                check_retry_at(*retry_at, policy.retry_at(*attempt, kind, *at))?;
                slot.attempts = *attempt;
                slot.running = false;
                slot.retry_at = *retry_at;
                slot.due_at = *retry_at;
                slot.last_error = Some(format!("{kind}: {error}"));
                slot.given_up = retry_at.is_none();
            }
            Event::Heartbeat {
                call_id,
                attempt,
                details,
                ..
            } => {
                self.require("a heartbeat", &[Running])?;
                if self.format.json(details)?.len() > MAX_PROGRESS_BYTES {
                    return Err(invalid("heartbeat details are larger than 4 KiB"));
                }
                let slot = self.permitted_slot(call_id)?;
                if !slot.running || slot.attempts != *attempt {
                    return Err(invalid(format!(
                        "call `{call_id}` has no attempt {attempt} running"
                    )));
                }
                slot.progress = Some(details.clone());
            }
            Event::Paused { .. } => {
                if self.state.is_terminal() || self.paused {
                    return Err(invalid(format!(
                        "a {} mission{} cannot be paused",
                        self.state,
                        if self.paused { " that is paused" } else { "" }
                    )));
                }
                self.paused = true;
            }
            Event::Resumed { .. } => {
                if !self.paused {
                    return Err(invalid("the mission is not paused"));
                }
                self.paused = false;
            }
            Event::Expanded {
                call_id,
                recipe,
                digest,
                calls,
                at,
            } => self.expand(call_id, recipe, digest, calls, *at)?,
            Event::RetryRequested { at, .. } => {
                self.require("a retry", &[Running])?;
                if self.next_retry().is_none() {
                    return Err(invalid("nothing is waiting to be retried"));
                }
                for slot in &mut self.calls {
                    if slot.retry_at.take().is_some() {
                        slot.due_at = Some(*at);
                    }
                }
                self.turn_retry_at = None;
            }
        }
        Ok(())
    }

    /// Checks the signed approval an `Approved` or `Rejected` event records against the
    /// escalation waiting, and marks its id used. The node verified the approval's
    /// signature and credential when it arrived (that needs the clock and the trusted
    /// keys, which the kernel has not); what the kernel checks is what the record alone
    /// can show: that the approval is for this mission, with this verdict, for this
    /// request and (version 2) this very escalation, and that no earlier event used it.
    /// The kernel does not refuse version 1 approvals, which old records hold; the node
    /// accepts no new ones.
    fn use_approval(&mut self, recorded: &Value, verdict: Verdict) -> Result<(), KernelError> {
        // A value without a statement is not a signed approval: the kernel's own test
        // records carry such placeholders, and they have nothing to check.
        if recorded.get("statement").is_none() {
            return Ok(());
        }
        let signed = Signed::<Approval>::deserialize(recorded)
            .map_err(|e| invalid(format!("the recorded approval is malformed: {e}")))?;
        let a = &signed.statement;
        let Some(esc) = &self.escalation else {
            return Err(invalid("nothing is waiting for approval"));
        };
        if a.mission != self.id {
            return Err(invalid(format!(
                "approval {} is for mission {}",
                a.id, a.mission
            )));
        }
        if a.verdict != verdict {
            return Err(invalid(format!(
                "approval {} has the other verdict than the event records",
                a.id
            )));
        }
        if a.request != esc.request {
            return Err(invalid(format!(
                "approval {} answers a different request",
                a.id
            )));
        }
        if let Some(named) = &a.answers
            && self.escalation_answers().as_ref() != Some(named)
        {
            return Err(invalid(format!(
                "approval {} answers {named}, not the escalation waiting",
                a.id
            )));
        }
        if !self.used_approvals.insert(a.id) {
            return Err(invalid(format!(
                "approval {} was already used in this mission; each escalation needs its own",
                a.id
            )));
        }
        Ok(())
    }

    fn require_unpaused(&self) -> Result<(), KernelError> {
        if self.paused {
            Err(invalid("the mission is paused"))
        } else {
            Ok(())
        }
    }

    /// The permitted call `id` that has not given up, to attempt or to record about.
    fn permitted_slot(&mut self, id: &str) -> Result<&mut CallState, KernelError> {
        match self.calls.iter_mut().find(|c| c.call.id == id) {
            Some(slot) if slot.permitted() && !slot.given_up => Ok(slot),
            Some(_) => Err(invalid(format!(
                "call `{id}` is not permitted, or was given up"
            ))),
            None => Err(invalid(format!("there is no call `{id}`"))),
        }
    }

    /// Expands the permitted `recipe.run` call `call_id`: checks that the recorded digest
    /// is the recipe's and the recorded calls exactly what the recipe gives for the call's
    /// arguments, then puts those calls after it, undecided.
    fn expand(
        &mut self,
        call_id: &str,
        recipe: &crate::recipe::Recipe,
        digest: &Hash,
        calls: &[ToolCall],
        at: Timestamp,
    ) -> Result<(), KernelError> {
        self.require("an expansion", &[MissionState::Running])?;
        self.require_unpaused()?;
        let Some(pos) = self.calls.iter().position(|c| c.call.id == call_id) else {
            return Err(invalid(format!("there is no call `{call_id}` to expand")));
        };
        let slot = &self.calls[pos];
        if slot.call.name != RUN_TOOL || !slot.permitted() || slot.parent.is_some() {
            return Err(invalid(format!(
                "call `{call_id}` is not a permitted `{RUN_TOOL}` call"
            )));
        }
        if slot.recipe.is_some() || slot.attempts > 0 {
            return Err(invalid(format!(
                "call `{call_id}` was already expanded or attempted"
            )));
        }
        let args = RunArgs::parse(&slot.call.arguments)
            .map_err(|e| invalid(format!("call `{call_id}`: {e}")))?;
        recipe
            .validate()
            .map_err(|e| invalid(format!("the recorded recipe is refused: {e}")))?;
        if recipe.name != args.name {
            return Err(invalid(format!(
                "the recorded recipe is `{}`, the call runs `{}`",
                recipe.name, args.name
            )));
        }
        let derived = recipe.digest().map_err(|e| invalid(e.to_string()))?;
        if derived != *digest {
            return Err(invalid(format!(
                "the recorded digest {digest} is not the recipe's ({derived})"
            )));
        }
        let expected = recipe
            .expand(call_id, &args.arguments)
            .map_err(|e| invalid(e.to_string()))?;
        if expected != calls {
            return Err(invalid(
                "the recorded calls are not what the recipe gives for the call's arguments",
            ));
        }
        if calls
            .iter()
            .any(|c| self.calls.iter().any(|s| s.call.id == c.id))
        {
            return Err(invalid(format!(
                "the ids of recipe call `{call_id}`'s calls are taken by other calls of the turn"
            )));
        }
        let count = u32::try_from(calls.len()).map_err(|_| invalid("too many calls"))?;
        self.calls[pos].recipe = Some(RecipeRun {
            name: recipe.name.clone(),
            version: recipe.version,
            digest: *digest,
            calls: count,
            results: Vec::new(),
            stopped: None,
            stopped_kind: None,
        });
        let inner = calls.iter().map(|c| {
            let mut state = CallState::new(c.clone());
            state.parent = Some(call_id.to_owned());
            state.due_at = Some(at);
            state
        });
        let rest = self.calls.split_off(pos + 1);
        self.calls.extend(inner);
        self.calls.extend(rest);
        Ok(())
    }

    fn record_effect(&mut self, effect: &Effect) -> Result<(), KernelError> {
        let Some(pos) = self.calls.iter().position(|c| c.call.id == effect.call_id) else {
            return Err(invalid(format!(
                "there is no call `{}` to record an effect for",
                effect.call_id
            )));
        };
        let slot = &self.calls[pos];
        if slot.attempts > 0 && !slot.running {
            return Err(invalid(format!(
                "call `{}` has no attempt running to record an effect of",
                effect.call_id
            )));
        }
        if !slot.permitted() {
            return Err(invalid(format!(
                "call `{}` was not permitted",
                effect.call_id
            )));
        }
        if slot.call.name != effect.tool {
            return Err(invalid(format!(
                "the effect is of `{}`, the call was `{}`",
                effect.tool, slot.call.name
            )));
        }
        if slot.recipe.is_some() {
            // The result of a recipe is derived from its calls' results, never taken
            // from the record as given.
            if self
                .recipe_ready()
                .as_ref()
                .filter(|e| e.call_id == effect.call_id)
                != Some(effect)
            {
                return Err(invalid(format!(
                    "the effect of recipe call `{}` is not its calls' results, or calls are unresolved",
                    effect.call_id
                )));
            }
        } else if slot.call.name == RUN_TOOL && slot.parent.is_none() && effect.ok {
            return Err(invalid(format!(
                "recipe call `{}` cannot succeed without being expanded",
                effect.call_id
            )));
        }
        if let Some(parent) = slot.parent.clone() {
            return self.record_recipe_effect(pos, &parent, effect);
        }
        self.calls.remove(pos);
        let content = match self.format {
            // What the reasoner is told is part of the conversation the state hash
            // covers, so from version 2 on it is canonical JSON too.
            RecordFormat::V1 if effect.ok => effect.output.to_string(),
            RecordFormat::V1 => serde_json::json!({ "error": effect.error.clone().unwrap_or_default(), "output": effect.output }).to_string(),
            RecordFormat::V2 | RecordFormat::V3 if effect.ok => self.format.text(&effect.output)?,
            RecordFormat::V2 | RecordFormat::V3 => self.format.text(&serde_json::json!({ "error": effect.error.clone().unwrap_or_default(), "output": effect.output }))?,
        };
        self.push_message(Message {
            role: Role::Tool,
            content,
            tool_calls: Vec::new(),
            tool_call_id: Some(effect.call_id.clone()),
        })?;
        if effect.ok {
            self.completed.push(Completed {
                call_id: effect.call_id.clone(),
                tool: effect.tool.clone(),
                compensation: effect.compensation.clone(),
                compensated: false,
                compensation_error: None,
            });
            self.fold_completed(b"completed", self.completed.len() - 1)?;
            if let Some(summary) = &effect.finish {
                self.summary = Some(summary.clone());
            }
        }
        Ok(())
    }

    /// Records the effect of a recipe's call: its result goes into its `recipe.run` call's,
    /// a completed one can be undone like any call, and a failed one stops the recipe.
    fn record_recipe_effect(
        &mut self,
        pos: usize,
        parent: &str,
        effect: &Effect,
    ) -> Result<(), KernelError> {
        let call = self.calls.remove(pos).call;
        let mut result = serde_json::json!({
            "id": effect.call_id,
            "tool": effect.tool,
            "ok": effect.ok,
        });
        if effect.ok {
            result["output"] = effect.output.clone();
        } else {
            result["error"] = Value::String(effect.error.clone().unwrap_or_default());
        }
        self.push_result(parent, result);
        if effect.ok {
            self.completed.push(Completed {
                call_id: effect.call_id.clone(),
                tool: effect.tool.clone(),
                compensation: effect.compensation.clone(),
                compensated: false,
                compensation_error: None,
            });
            self.fold_completed(b"completed", self.completed.len() - 1)?;
        } else {
            let why = format!(
                "failed: {}",
                effect.error.as_deref().unwrap_or("unknown error")
            );
            self.stop_recipe(parent, &call, &why, effect.error_kind.as_deref());
        }
        Ok(())
    }

    fn transition(
        &mut self,
        to: MissionState,
        reason: &str,
        at: Timestamp,
    ) -> Result<(), KernelError> {
        use MissionState::*;
        let from = self.state;
        check_transition(from, to, self.has_compensations())?;
        let guard = |ok: bool, why: &str| {
            if ok {
                Ok(())
            } else {
                Err(invalid(format!("cannot move to {to}: {why}")))
            }
        };
        match to {
            Authorized => {
                let permitted = matches!(
                    self.judged.as_ref().map(|d| d.outcome),
                    Some(Outcome::Permit)
                );
                guard(
                    permitted || (from == Escalated && self.escalation.is_none()),
                    "the declaration is not permitted",
                )?;
            }
            Running => {
                guard(
                    self.escalation
                        .as_ref()
                        .is_none_or(|e| e.approved_by.is_some()),
                    "an approval is still awaited",
                )?;
            }
            Escalated => guard(
                self.escalation
                    .as_ref()
                    .is_some_and(|e| e.approved_by.is_none()),
                "nothing needs approval",
            )?,
            Completed => {
                guard(
                    self.summary.is_some(),
                    "the objective was not declared reached (mission.finish)",
                )?;
                guard(self.calls.is_empty(), "calls are still unresolved")?;
            }
            Compensating | Failed | Cancelled => {}
            Submitted => return Err(IllegalTransition::NotInTable { from, to }.into()),
        }
        if to == Failed && self.reason.is_none() {
            self.reason = Some(reason.to_owned());
        }
        if matches!(to, Failed | Cancelled | Compensating) {
            // Unresolved calls will never run now.
            self.calls.clear();
        }
        self.history.push(Change {
            from,
            to,
            reason: reason.to_owned(),
            at,
        });
        self.state = to;
        Ok(())
    }
}

/// A recorded retry time must be the one the mission's policy gives.
fn check_retry_at(
    recorded: Option<Timestamp>,
    expected: Option<Timestamp>,
) -> Result<(), KernelError> {
    if recorded == expected {
        Ok(())
    } else {
        Err(invalid(
            "the recorded retry time does not follow the mission's retry policy",
        ))
    }
}

fn validate_spec(spec: &MissionSpec) -> Result<(), KernelError> {
    for policy in spec.steps.iter().chain(spec.tool_steps.values()) {
        policy.validate().map_err(invalid)?;
    }
    if spec.tool_steps.len() > aura_identity::MAX_TOOLS {
        return Err(invalid("the mission's tool_steps list is out of bounds"));
    }
    if spec.objective.trim().is_empty() {
        return Err(invalid("a mission needs an objective"));
    }
    if spec.objective.len() > 64 * 1024 {
        return Err(invalid("the objective is longer than 64 KiB"));
    }
    if spec.tools.is_empty() {
        return Err(invalid("a mission needs at least one tool"));
    }
    if spec.tools.len() > aura_identity::MAX_TOOLS
        || spec
            .tools
            .iter()
            .any(|t| t.is_empty() || t.len() > aura_identity::MAX_TOOL_NAME)
    {
        return Err(invalid("the mission's tool list is out of bounds"));
    }
    if let Some(w) = &spec.workspace
        && !is_workspace_name(w)
    {
        return Err(invalid("a workspace name is 1-63 of a-z, 0-9, '-' and '_'"));
    }
    if spec.timeout_secs == 0 {
        return Err(invalid("a mission needs a timeout of at least one second"));
    }
    Ok(())
}

/// Workspace names are single path components, so that a name can never reach outside
/// its namespace's workspace directory.
pub fn is_workspace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
