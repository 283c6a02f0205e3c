//! Test doubles for the engine's ports, behind the `test-util` cargo feature (tokio's
//! pattern): a [`ScriptedReasoner`] that answers from a script and tells when each turn
//! starts, [`OneReasoner`] to offer it as a node's only reasoner, and [`PermitAll`].
//!
//! For tests and benchmarks only: the `aura` binary never enables the feature, so no node
//! runs a double. Waiting for "the turn is in flight" is [`ScriptedReasoner::started`],
//! never a sleep: the turn has started when it returns, whatever the machine's load.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aura_kernel::{Decision, Outcome, ToolCall, Turn};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::ports::{Policy, Query, ReasonRequest, Reasoner, ReasonerError, Reasoners};

/// How a [`ScriptedReasoner`] answers one turn.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Calls these tools with these arguments, in order. The calls' ids are `c<n>-<i>`:
    /// `n` the number of messages in the request, `i` the call's position.
    Calls(Vec<(String, Value)>),
    /// Exactly this turn.
    Turn(Turn),
    /// The provider fails with this message.
    Fail(String),
    /// The provider never answers.
    Hang,
}

impl Answer {
    /// One call of `tool` with `arguments`.
    pub fn call(tool: &str, arguments: Value) -> Answer {
        Answer::Calls(vec![(tool.to_owned(), arguments)])
    }

    /// These calls, in order.
    pub fn calls<'a>(calls: impl IntoIterator<Item = (&'a str, Value)>) -> Answer {
        Answer::Calls(
            calls
                .into_iter()
                .map(|(tool, arguments)| (tool.to_owned(), arguments))
                .collect(),
        )
    }

    /// `mission.finish` with the summary `done`: what a scripted reasoner says once its
    /// script has run out.
    pub fn finish() -> Answer {
        Answer::call("mission.finish", json!({ "summary": "done" }))
    }
}

/// A turn calling `calls`, as every scripted turn is made: content `ok`, 10 prompt and 5
/// completion tokens, provider `test`, model `script`.
pub fn turn(calls: Vec<ToolCall>) -> Turn {
    Turn {
        content: "ok".into(),
        tool_calls: calls,
        finish: "tool_calls".into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        provider: "test".into(),
        model: "script".into(),
    }
}

/// What answers a turn once the script has run out: the mission's step (the reasoner's
/// turns already in the conversation) and the request.
type Respond = Box<dyn Fn(usize, &ReasonRequest) -> Answer + Send + Sync>;

/// A reasoner that answers from a script, in order, then as it was built to (by default
/// `mission.finish`). Every turn it is asked for counts as started before it answers, so a
/// test can wait for a turn to be in flight ([`ScriptedReasoner::started`]), run something
/// at a given turn ([`ScriptedReasoner::on_turn`]) or hold turns until it is ready
/// ([`ScriptedReasoner::hold_from`]).
pub struct ScriptedReasoner {
    script: Mutex<VecDeque<Answer>>,
    respond: Respond,
    started: watch::Sender<usize>,
    hooks: Mutex<BTreeMap<usize, Box<dyn FnOnce() + Send>>>,
    /// Turns from this one on (counted from 0) wait until it moves past them.
    held_from: watch::Sender<usize>,
}

impl std::fmt::Debug for ScriptedReasoner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedReasoner")
            .field("script", &self.script)
            .field("started", &*self.started.borrow())
            .finish_non_exhaustive()
    }
}

impl Default for ScriptedReasoner {
    fn default() -> Self {
        ScriptedReasoner::new()
    }
}

impl ScriptedReasoner {
    /// A reasoner whose answers, once the script runs out, are `mission.finish`.
    pub fn new() -> Self {
        ScriptedReasoner::by_step(|_, _| Answer::finish())
    }

    /// A reasoner whose answers, once the script runs out, come from `respond`, given the
    /// mission's step (the reasoner's turns already in the conversation, from 0) and the
    /// request.
    pub fn by_step(
        respond: impl Fn(usize, &ReasonRequest) -> Answer + Send + Sync + 'static,
    ) -> Self {
        ScriptedReasoner {
            script: Mutex::new(VecDeque::new()),
            respond: Box::new(respond),
            started: watch::Sender::new(0),
            hooks: Mutex::new(BTreeMap::new()),
            held_from: watch::Sender::new(usize::MAX),
        }
    }

    /// A reasoner that never answers (each turn still counts as started).
    pub fn silent() -> Self {
        ScriptedReasoner::by_step(|_, _| Answer::Hang)
    }

    /// Adds an answer to the script.
    pub fn push(&self, answer: Answer) {
        self.script().push_back(answer);
    }

    /// Adds answers to the script.
    pub fn extend(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script().extend(answers);
    }

    /// Answers left in the script.
    pub fn remaining(&self) -> usize {
        self.script().len()
    }

    /// How many turns this reasoner was asked for so far (each counts once it starts).
    pub fn turns_started(&self) -> usize {
        *self.started.borrow()
    }

    /// Waits until `n` turns have started: the `n`-th is then in flight (or done).
    pub async fn started(&self, n: usize) {
        let mut started = self.started.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = started.wait_for(|t| *t >= n).await;
    }

    /// Runs `f` when the turn `n` (counted from 0, over every turn asked for) starts,
    /// before it is answered.
    pub fn on_turn(&self, n: usize, f: impl FnOnce() + Send + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n, Box::new(f));
    }

    /// Holds turn `n` (counted from 0) and every later one once it has started, until
    /// [`ScriptedReasoner::release`]: the engine is then waiting on the reasoner, with
    /// nothing of the turn recorded.
    pub fn hold_from(&self, n: usize) {
        self.held_from.send_replace(n);
    }

    /// Lets held turns answer.
    pub fn release(&self) {
        self.held_from.send_replace(usize::MAX);
    }

    fn script(&self) -> std::sync::MutexGuard<'_, VecDeque<Answer>> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Reasoner for ScriptedReasoner {
    async fn turn(
        &self,
        req: &ReasonRequest,
        _deltas: &(dyn for<'s> Fn(&'s str) + Send + Sync),
    ) -> Result<Turn, ReasonerError> {
        let mut index = 0;
        self.started.send_modify(|t| {
            index = *t;
            *t += 1;
        });
        let hook = self
            .hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&index);
        if let Some(hook) = hook {
            hook();
        }
        let mut held = self.held_from.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = held.wait_for(|from| index < *from).await;
        let scripted = self.script().pop_front();
        let answer = scripted.unwrap_or_else(|| (self.respond)(req.turn as usize, req));
        match answer {
            Answer::Calls(calls) => {
                let n = req.messages.len();
                Ok(turn(
                    calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, (name, arguments))| ToolCall {
                            id: format!("c{n}-{i}"),
                            name,
                            arguments,
                        })
                        .collect(),
                ))
            }
            Answer::Turn(turn) => Ok(turn),
            Answer::Fail(message) => Err(ReasonerError::other(message)),
            Answer::Hang => std::future::pending().await,
        }
    }
}

/// A node's reasoners when it has only one: `reasoner` under the default name (the empty
/// one), and nothing under any other.
#[derive(Debug, Clone)]
pub struct OneReasoner(pub Arc<dyn Reasoner>);

impl OneReasoner {
    pub fn new(reasoner: Arc<dyn Reasoner>) -> Self {
        OneReasoner(reasoner)
    }
}

impl Reasoners for OneReasoner {
    fn get(&self, name: &str) -> Option<Arc<dyn Reasoner>> {
        name.is_empty().then(|| self.0.clone())
    }

    fn describe_default(&self) -> String {
        "test script".into()
    }
}

/// A policy that permits everything, deciding by the rule `permit-all`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PermitAll;

impl Policy for PermitAll {
    fn decide(&self, q: &Query) -> Decision {
        let resource = q
            .target
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or_default();
        Decision {
            action: q.action.clone(),
            resource,
            destructive: q.destructive,
            outcome: Outcome::Permit,
            deciding: vec!["permit-all".into()],
            errors: vec![],
            request: aura_core::hash::Hash::ZERO,
        }
    }
}
