//! The mission driver: how an agent's actor takes a mission through the kernel.
//!
//! Each function here is one transaction of the agent's inbox. It builds a kernel
//! [`Step`], doing the IO the step needs (the reasoner, the tools) between pushes, and
//! commits the step's events to the agent's stream in one append. An event the kernel
//! refuses is never recorded; if the append fails, the mission in memory stays as it was.

use std::path::PathBuf;
use std::time::Duration;

use aura_core::hash::{Domain, Hash};
use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::{
    Approval, Credential, ExecutionToken, Signed, TokenId, Verdict, VerifiedApproval,
    verify_approval,
};
use aura_kernel::{
    Decision, Effect, Event, Mission, MissionSpec, MissionState, Outcome, Step, StepPolicy,
    ToolCall, kinds,
};
use serde_json::Value;
use tracing::Instrument as _;

use crate::agent::{Actor, Live, Work};
use crate::command::{Control, Inbox, Sender};
use crate::error::{Error, one_line};
use crate::ports::{
    ErrorKind, ExecContext, Heartbeat, Proposal, Query, ReasonRequest, Target, ToolError, ToolSpec,
    failed_effect,
};
use crate::recipes;

/// A refusal that is not policy's: the call was malformed or not among the mission's tools.
fn refusal(call: &ToolCall, why: String) -> Decision {
    Decision {
        action: call.name.clone(),
        resource: Value::Null,
        destructive: false,
        outcome: Outcome::Deny,
        deciding: vec!["aura:tool-check".into()],
        errors: vec![why],
        request: Hash::ZERO,
    }
}

/// The seed a mission's n-th reasoner turn uses: stable, so a replay or a retry asks the
/// same question the same way.
fn turn_seed(mission: MissionId, step: u32) -> u64 {
    let mut bytes = mission.as_bytes().to_vec();
    bytes.extend_from_slice(&step.to_be_bytes());
    let h = Hash::tagged(Domain::State, &bytes);
    u64::from_be_bytes(h.0[..8].try_into().unwrap_or_default())
}

impl Actor {
    fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    fn live(&self, id: MissionId) -> Result<&Live, Error> {
        self.missions
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("mission {id}")))
    }

    fn workspace_for(&self, spec: &MissionSpec, id: MissionId) -> PathBuf {
        let name = spec.workspace.clone().unwrap_or_else(|| id.to_string());
        self.shared
            .options
            .workspaces
            .join(spec.namespace.as_str())
            .join(name)
    }

    /// Takes a mission back after a restart, where its record left it.
    pub(crate) fn resume(&mut self, mut live: Live) {
        let id = live.mission.id;
        // A mission that had started runs (and compensates) under a token; the one it had
        // lived in the previous process's memory, so it gets a new one.
        let started = live
            .mission
            .history
            .iter()
            .any(|c| c.to == MissionState::Running);
        if started && !live.mission.state.is_terminal() {
            live.token = Some(self.issue_token(&live.mission));
        }
        match live.mission.state {
            MissionState::Authorized => self.work.push_back(Work::Start(id)),
            MissionState::Running | MissionState::Compensating => {
                self.work.push_back(Work::Step(id));
            }
            _ => {}
        }
        if !live.mission.state.is_terminal() {
            self.arm_deadline(&live.mission);
        }
        self.missions.insert(id, live);
    }

    fn issue_token(&self, mission: &Mission) -> Signed<ExecutionToken> {
        let s = &self.shared;
        let token = ExecutionToken {
            id: TokenId::generate(s.clock.as_ref(), s.entropy.as_ref()),
            mission: mission.id,
            agent: mission.agent,
            namespace: mission.spec.namespace.clone(),
            tools: mission.spec.tools.clone(),
            issued_at: self.now(),
            expires_at: mission.deadline,
            issuer: s.signer.public_key(),
        };
        // The node key is the token's declared issuer, so signing cannot fail.
        Signed::sign(token, &s.signer)
            .unwrap_or_else(|_| unreachable!("the node signs its own tokens"))
    }

    fn arm_deadline(&self, mission: &Mission) {
        let wait = mission.deadline.since(self.now());
        let mailbox = self.mailbox.clone();
        let id = mission.id;
        tokio::spawn(async move {
            tokio::time::sleep(wait + Duration::from_millis(5)).await;
            let _ = mailbox.send(Inbox::Deadline { mission: id }).await;
        });
    }

    fn query(
        &self,
        mission: &Mission,
        action: &str,
        target: Option<Target>,
        destructive: bool,
        approval: Option<VerifiedApproval>,
    ) -> Query {
        // An agent of another namespace is, to a mission, an agent that does not exist:
        // namespace isolation would refuse it anyway, and refusing it as unknown (with the
        // same decision, word for word) tells the sender nothing about other namespaces.
        let target_namespace = match &target {
            Some(Target::Agent { agent }) => self
                .shared
                .agent_namespace(*agent)
                .filter(|ns| *ns == mission.spec.namespace),
            _ => None,
        };
        Query {
            agent: mission.agent,
            level: mission.spec.authority.level,
            namespace: mission.spec.namespace.clone(),
            action: action.to_owned(),
            target,
            target_namespace,
            destructive,
            mission: mission.id,
            approval,
            node_region: self.shared.options.region.clone(),
            regions: mission.spec.regions.clone(),
        }
    }

    /// The specs of the named tools that exist: the node's, and the recipe tools the
    /// engine serves itself.
    fn tool_specs(&self, names: &[String]) -> Vec<ToolSpec> {
        let mut specs = self.shared.services.tools.specs(names);
        specs.extend(recipes::specs(names));
        specs
    }

    /// Checks a call's arguments and says what it touches, for policy.
    fn prepare_call(&self, call: &ToolCall) -> Result<Proposal, ToolError> {
        if recipes::is_recipe_tool(&call.name) {
            recipes::prepare(call)
        } else {
            self.shared.services.tools.prepare(call)
        }
    }

    fn exec_context(&self, live: &Live) -> ExecContext {
        ExecContext {
            mission: live.mission.id,
            agent: live.mission.agent,
            namespace: live.mission.spec.namespace.clone(),
            workspace: live.workspace.clone(),
            token: live.token.clone(),
            trust: self.shared.trust.clone(),
            now: self.now(),
            mission_active: !live.mission.state.is_terminal(),
            network: live.mission.spec.network.clone(),
            heartbeat: None,
            progress: None,
        }
    }

    /// A new mission: declaration, policy's judgement, and the first transition.
    pub(crate) async fn submit(
        &mut self,
        mut spec: MissionSpec,
        id: Option<MissionId>,
    ) -> Result<MissionId, Error> {
        let s = self.shared.clone();
        if let Some(id) = id {
            let known = self.missions.contains_key(&id)
                || s.missions
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&id);
            if known {
                return Ok(id);
            }
        }
        let info = s.agent_info(self.agent)?;
        if spec.namespace != info.namespace {
            return Err(Error::Forbidden(format!(
                "{} belongs to namespace `{}` and cannot run missions in `{}`",
                self.agent, info.namespace, spec.namespace
            )));
        }
        if spec.authority.level > info.level {
            return Err(Error::Forbidden(format!(
                "the mission claims authority {} but the agent's credential grants {}",
                spec.authority.level, info.level
            )));
        }
        let cred = info.credential.statement.id;
        if spec.authority.credential.is_some_and(|c| c != cred) {
            return Err(Error::Forbidden(
                "the mission names a credential that is not the agent's".into(),
            ));
        }
        spec.authority.credential = Some(cred);
        if !(1..=MissionSpec::MAX_TIMEOUT_SECS).contains(&spec.timeout_secs) {
            return Err(Error::Invalid(format!(
                "`timeout_secs` is {}; it must be between 1 and {} (30 days)",
                spec.timeout_secs,
                MissionSpec::MAX_TIMEOUT_SECS
            )));
        }
        check_regions(&spec.regions)?;
        if let Some(why) = outside_boundary(&spec.regions, s.options.region.as_deref()) {
            return Err(Error::Forbidden(format!(
                "{why} (hint: agent {} runs on this node; submit the mission for an agent of a node inside its boundary, or widen `regions`)",
                self.agent
            )));
        }
        if s.services.reasoners.get(&spec.reasoner).is_none() {
            return Err(Error::Invalid(format!(
                "no reasoner named `{}` is configured",
                spec.reasoner
            )));
        }
        let known = self.tool_specs(&spec.tools);
        if let Some(unknown) = spec
            .tools
            .iter()
            .find(|t| !known.iter().any(|k| &k.name == *t))
        {
            return Err(Error::Invalid(format!("there is no tool `{unknown}`")));
        }
        let now = self.now();
        let id = id.unwrap_or_else(|| MissionId::generate(s.clock.as_ref(), s.entropy.as_ref()));
        let mut step = Step::submit(Event::Submitted {
            mission: id,
            agent: self.agent,
            spec,
            at: now,
        })?;
        let q = self.query(
            step.mission(),
            "mission.submit",
            Some(Target::Mission),
            false,
            None,
        );
        let decision = decide_traced(&q, || s.services.policy.decide(&q));
        let outcome = decision.outcome;
        let deciding = decision.deciding.join(", ");
        step.push(Event::Judged { decision })?;
        let (to, reason) = match outcome {
            Outcome::Permit => (MissionState::Authorized, "permitted by policy".to_owned()),
            Outcome::Escalate { level } => (
                MissionState::Escalated,
                format!("needs approval at {level} ({deciding})"),
            ),
            Outcome::Deny => (
                MissionState::Failed,
                format!("denied by policy ({deciding})"),
            ),
        };
        step.push(Event::Transition {
            to,
            reason,
            at: now,
        })?;
        let (mission, recorded) = step.finish();
        let workspace = self.workspace_for(&mission.spec, id);
        self.missions.insert(
            id,
            Live {
                mission: mission.clone(),
                token: None,
                workspace,
            },
        );
        if let Err(e) = self.commit(mission.clone(), recorded).await {
            self.missions.remove(&id);
            return Err(e);
        }
        if to == MissionState::Authorized {
            self.work.push_back(Work::Start(id));
        }
        if !to.is_terminal() {
            self.arm_deadline(&mission);
        }
        Ok(id)
    }

    /// Authorized → Running: a workspace, an execution token, the first step queued.
    pub(crate) async fn start(&mut self, id: MissionId) {
        let Ok(live) = self.live(id) else { return };
        if live.mission.state != MissionState::Authorized || live.mission.paused {
            return;
        }
        let mission = live.mission.clone();
        let workspace = live.workspace.clone();
        if self.hold_outside_boundary(&mission).await {
            return;
        }
        let now = self.now();
        if mission.deadline_passed(now) {
            return self.expire(id).await;
        }
        let mut step = Step::begin(&mission);
        let setup = self.shared.options.workspace_setup.clone();
        if let Err(e) = prepare_workspace(setup, &workspace, true).await {
            let reason = format!("cannot prepare the workspace {}: {e}", workspace.display());
            if step
                .push(Event::Transition {
                    to: MissionState::Running,
                    reason: "starting".into(),
                    at: now,
                })
                .is_ok()
            {
                let _ = step.push(Event::Transition {
                    to: MissionState::Failed,
                    reason,
                    at: now,
                });
            }
            let (m, r) = step.finish();
            let _ = self.commit(m, r).await;
            return;
        }
        let token = self.issue_token(&mission);
        let reason = format!("started under execution token {}", token.statement.id);
        if step
            .push(Event::Transition {
                to: MissionState::Running,
                reason,
                at: now,
            })
            .is_err()
        {
            return;
        }
        let (m, r) = step.finish();
        if self.commit(m, r).await.is_ok() {
            if let Some(live) = self.missions.get_mut(&id) {
                live.token = Some(token);
            }
            self.work.push_back(Work::Step(id));
        }
    }

    /// A mission this node may not run (its boundary excludes the node's region: it came
    /// here by a failover or a rebalance, since submission refuses it) is paused, with the
    /// reason, and does nothing more here: true. An operator resumes it once a node inside
    /// its boundary holds its agent; resumed here, it is paused again.
    async fn hold_outside_boundary(&mut self, mission: &Mission) -> bool {
        let Some(why) =
            outside_boundary(&mission.spec.regions, self.shared.options.region.as_deref())
        else {
            return false;
        };
        if !mission.paused {
            let mut step = Step::begin(mission);
            let paused = step.push(Event::Paused {
                by: self.shared.signer.public_key().node_id().to_string(),
                reason: why.clone(),
                at: self.now(),
            });
            match paused {
                Ok(_) => {
                    let (m, r) = step.finish();
                    let _ = self.commit(m, r).await;
                }
                Err(e) => {
                    tracing::warn!(mission = %mission.id, error = %e, "cannot pause a mission outside its boundary");
                }
            }
        }
        tracing::warn!(mission = %mission.id, "{why}: not run on this node");
        true
    }

    /// One step of a running mission: the permitted calls of the latest turn if any are
    /// left (after a restart, or when a retry is due), else the reasoner's next turn.
    pub(crate) async fn step(&mut self, id: MissionId) {
        let Ok(live) = self.live(id) else { return };
        let mission = live.mission.clone();
        // A running mission that came to a node outside its boundary takes no step here.
        if mission.state == MissionState::Running
            && !mission.paused
            && self.hold_outside_boundary(&mission).await
        {
            return;
        }
        match mission.state {
            MissionState::Running if mission.paused => return,
            MissionState::Running => {}
            MissionState::Compensating => {
                let end = if mission.cancel_requested {
                    MissionState::Cancelled
                } else {
                    MissionState::Failed
                };
                let step = Step::begin(&mission);
                return self.end(step, end, None).await;
            }
            _ => return,
        }
        let now = self.now();
        if mission.deadline_passed(now) {
            return self.expire(id).await;
        }
        if !mission.calls.is_empty() {
            return self.run_calls(Step::begin(&mission)).await;
        }
        if mission.budget_exhausted() {
            let step = Step::begin(&mission);
            let reason = format!(
                "budget exhausted after {} steps and {} tokens",
                mission.steps, mission.tokens
            );
            return self.end(step, MissionState::Failed, Some(reason)).await;
        }
        if let Some(due) = mission.turn_retry_at
            && due > now
        {
            return self.wake_at(id, due);
        }
        let s = self.shared.clone();
        let Some(reasoner) = s.services.reasoners.get(&mission.spec.reasoner) else {
            let reason = format!(
                "the reasoner `{}` is no longer configured",
                mission.spec.reasoner
            );
            return self
                .end(Step::begin(&mission), MissionState::Failed, Some(reason))
                .await;
        };
        let policy = mission.spec.step_policy(None);
        let request = ReasonRequest {
            messages: mission.context(),
            tools: self.tool_specs(&mission.spec.tools),
            seed: turn_seed(id, mission.steps),
            turn: mission.steps,
        };
        let events = s.events.clone();
        // Each piece of streamed text is the turn's heartbeat.
        let (beat, mut beats) = tokio::sync::mpsc::unbounded_channel::<()>();
        let deltas = move |text: &str| {
            let _ = beat.send(());
            events.publish(crate::events::StreamEvent::Delta {
                mission: id,
                text: text.to_owned(),
            });
        };
        let interrupt = self.mailbox.interrupt.clone();
        let mut stopping = s.stopping.subscribe();
        let turn = reasoner.turn(&request, &deltas);
        tokio::pin!(turn);
        let limit = after(policy.start_to_close());
        let mut silence = after(policy.heartbeat());
        let outcome = loop {
            tokio::select! {
                outcome = &mut turn => break outcome.map_err(|e| (kinds::REASONER, one_line(&e))),
                Some(()) = beats.recv() => silence = after(policy.heartbeat()),
                () = until(limit) => break Err((
                    kinds::START_TO_CLOSE,
                    format!("the reasoner did not answer within {} ms", policy.start_to_close_ms.unwrap_or_default()),
                )),
                () = until(silence) => break Err((
                    kinds::HEARTBEAT,
                    format!("the reasoner sent nothing for {} ms", policy.heartbeat_ms.unwrap_or_default()),
                )),
                () = interrupt.notified() => {
                    // A cancel or the deadline arrived: the turn is dropped before anything
                    // of it was recorded, the inbox is handled, and the step runs again if
                    // the mission is still running.
                    self.work.push_front(Work::Step(id));
                    return;
                }
                _ = stopping.wait_for(|stop| *stop) => {
                    // The node is stopping: a turn that may never end (a provider that
                    // hangs) must not hold the shutdown. Nothing of it was recorded, so the
                    // next start recovers the mission as running and asks again.
                    return;
                }
            }
        };
        let turn = match outcome {
            Ok(t) => t,
            Err((kind, error)) => return self.turn_failed(&mission, kind, error).await,
        };
        let mut step = Step::begin(&mission);
        if let Err(e) = step.push(Event::Turn {
            turn,
            at: self.now(),
        }) {
            let reason = format!("the reasoner's turn was refused: {e}");
            return self.end(step, MissionState::Failed, Some(reason)).await;
        }
        let idle = idle_turns(&step.mission().conversation);
        if idle >= MAX_IDLE_TURNS {
            let reason = format!(
                "the reasoner answered {idle} times in a row without calling a tool \
                 (a mission ends with `mission.finish`)"
            );
            return self.end(step, MissionState::Failed, Some(reason)).await;
        }
        self.advance(step, None).await;
    }

    /// The reasoner's turn failed: recorded, and asked again when its retry policy says,
    /// or the mission fails.
    async fn turn_failed(&mut self, mission: &Mission, kind: &str, error: String) {
        let at = self.now();
        let attempt = mission.turn_failures + 1;
        let retry_at = mission.spec.step_policy(None).retry_at(attempt, kind, at);
        let mut step = Step::begin(mission);
        let failure = Event::AttemptFailed {
            call_id: None,
            attempt,
            kind: kind.to_owned(),
            error: error.clone(),
            retry_at,
            at,
        };
        if step.push(failure).is_ok()
            && let Some(due) = retry_at
        {
            if self.finish(step).await {
                self.wake_at(mission.id, due);
            }
            return;
        }
        let reason = format!(
            "the reasoner failed after {attempt} attempt{}: {kind}: {error}",
            if attempt == 1 { "" } else { "s" }
        );
        self.end(step, MissionState::Failed, Some(reason)).await;
    }

    /// Decides the latest turn's undecided calls in order, stopping at an escalation; then
    /// either waits for approval or runs what was permitted.
    async fn advance(&mut self, mut step: Step, approval: Option<VerifiedApproval>) {
        if self.decide_pending(&mut step, approval.as_ref()) {
            self.finish(step).await;
            return;
        }
        if step.mission().state == MissionState::Escalated {
            let _ = step.push(Event::Transition {
                to: MissionState::Running,
                reason: "approved".into(),
                at: self.now(),
            });
        }
        let id = step.mission().id;
        if step.mission().permitted().next().is_some()
            && self.missions.get(&id).is_some_and(|l| l.token.is_none())
        {
            let token = self.issue_token(step.mission());
            if let Some(live) = self.missions.get_mut(&id) {
                live.token = Some(token);
            }
        }
        self.run_calls(step).await;
    }

    /// Decides the undecided calls in order (the latest turn's, or those of a recipe just
    /// expanded), stopping at an escalation: the mission then moves to escalated, and the
    /// answer is `true`. Each is looked up again after every decision, because a denied
    /// call of a recipe takes the rest of the recipe's calls with it.
    fn decide_pending(&self, step: &mut Step, approval: Option<&VerifiedApproval>) -> bool {
        loop {
            let Some(call) = step.mission().undecided().next().cloned() else {
                break;
            };
            let decision = self.decide_call(step.mission(), &call, approval.cloned());
            let escalates = matches!(decision.outcome, Outcome::Escalate { .. });
            if step
                .push(Event::Decided {
                    call_id: call.id.clone(),
                    decision,
                })
                .is_err()
            {
                break;
            }
            if escalates {
                let reason = format!("`{}` needs approval", call.name);
                let _ = step.push(Event::Transition {
                    to: MissionState::Escalated,
                    reason,
                    at: self.now(),
                });
                return true;
            }
        }
        false
    }

    /// Runs the latest turn's permitted calls in order, each under its retry policy, then
    /// completes the mission or queues its next turn.
    ///
    /// `step` holds what is not committed yet (the turn and its decisions, an effect).
    /// Every attempt is committed, with whatever precedes it, before its tool runs, so
    /// that a crash leaves the record naming the call that was in flight: a recovered
    /// mission records that attempt as interrupted and retries it, and a call whose
    /// effect is recorded never runs again.
    async fn run_calls(&mut self, mut step: Step) {
        let id = step.mission().id;
        let mut outbound = Vec::new();
        loop {
            let mission = step.mission().clone();
            if mission.state != MissionState::Running || mission.paused {
                break;
            }
            // A recipe whose calls are all resolved goes back to the reasoner as one
            // result, which the kernel derives from its calls' results.
            if let Some(effect) = mission.recipe_ready() {
                if let Err(e) = step.push(Event::Effect {
                    effect,
                    at: self.now(),
                }) {
                    let reason = format!("the result of a recipe was refused: {e}");
                    return self.end(step, MissionState::Failed, Some(reason)).await;
                }
                continue;
            }
            let Some(call) = mission.permitted().next().cloned() else {
                break;
            };
            let Some(slot) = mission.call(&call.id).cloned() else {
                break;
            };
            if call.name == aura_kernel::RUN_TOOL
                && slot.parent.is_none()
                && slot.recipe.is_none()
                && slot.attempts == 0
            {
                // What is pending is committed first, so that the book read next sees
                // a recipe this very mission saved a moment ago.
                if !step.is_empty() {
                    if !self.commit_step(step, &mut outbound).await {
                        return;
                    }
                    let Ok(live) = self.live(id) else { return };
                    step = Step::begin(&live.mission);
                }
                let expansion =
                    recipes::expansion(&self.shared, self.agent, &call, self.now()).await;
                if let Err(e) = step.push(expansion) {
                    let reason =
                        format!("the expansion of recipe call {} was refused: {e}", call.id);
                    return self.end(step, MissionState::Failed, Some(reason)).await;
                }
                // The recipe's calls are judged now, each as if the reasoner had asked for
                // it, before any of them runs.
                if self.decide_pending(&mut step, None) {
                    self.commit_step(step, &mut outbound).await;
                    return;
                }
                continue;
            }
            let policy = mission.spec.step_policy(Some(&call.name));
            let now = self.now();
            if slot.given_up {
                let reason = gave_up(&call, &slot);
                return self.end(step, MissionState::Failed, Some(reason)).await;
            }
            if slot.running {
                // The attempt was in flight when the node stopped; whether the tool got
                // to act is unknown, so it counts as a failed attempt.
                let error = "the node stopped while the call ran".to_owned();
                if step
                    .push(self.attempt_failed(&call, &slot, &policy, kinds::INTERRUPTED, error))
                    .is_err()
                {
                    break;
                }
                continue;
            }
            if let Some(due) = slot.retry_at
                && due > now
            {
                if self.commit_step(step, &mut outbound).await {
                    self.wake_at(id, due);
                }
                return;
            }
            if let (Some(limit), Some(due)) = (policy.schedule_to_start(), slot.due_at)
                && now.since(due) > limit
            {
                let error = format!(
                    "the call waited {} ms to start, more than its {} ms",
                    now.since(due).as_millis(),
                    limit.as_millis()
                );
                if step
                    .push(self.attempt_failed(
                        &call,
                        &slot,
                        &policy,
                        kinds::SCHEDULE_TO_START,
                        error,
                    ))
                    .is_err()
                {
                    break;
                }
                continue;
            }
            let attempt = slot.attempts + 1;
            if step
                .push(Event::Attempt {
                    call_id: call.id.clone(),
                    attempt,
                    at: now,
                })
                .is_err()
                || !self.commit_step(step, &mut outbound).await
            {
                return;
            }
            let attempted = self
                .attempt(id, &call, attempt, &policy, slot.progress.clone())
                .await;
            let Ok(live) = self.live(id) else { return };
            step = Step::begin(&live.mission);
            let Some(slot) = step.mission().call(&call.id).cloned() else {
                break;
            };
            let (kind, error) = match attempted {
                Attempted::Done(effect) => match transient_failure(&effect) {
                    Some(failure) => failure,
                    None => {
                        if let Some(m) = &effect.message {
                            outbound.push((m.to, m.body.clone()));
                        }
                        if let Err(e) = step.push(Event::Effect {
                            effect: *effect,
                            at: self.now(),
                        }) {
                            let reason = format!("the effect of call {} was refused: {e}", call.id);
                            return self.end(step, MissionState::Failed, Some(reason)).await;
                        }
                        continue;
                    }
                },
                Attempted::Failed {
                    kind,
                    error,
                    progress: heard,
                } => {
                    // The latest progress goes into the record with the failure (beats are
                    // recorded only now and then), so the retry reads it even after a
                    // restart.
                    if let Some(details) = heard.filter(|d| slot.progress.as_ref() != Some(d)) {
                        let _ = step.push(Event::Heartbeat {
                            call_id: call.id.clone(),
                            attempt: slot.attempts,
                            details,
                            at: self.now(),
                        });
                    }
                    (kind.to_owned(), error)
                }
                Attempted::Interrupted => {
                    // A cancel or the deadline: the call is given up, the inbox handled
                    // first, and the mission winds down from there.
                    let error = "stopped by a cancel or the mission's deadline".to_owned();
                    let _ = step.push(self.attempt_failed(
                        &call,
                        &slot,
                        &policy,
                        kinds::STOPPED,
                        error,
                    ));
                    self.commit_step(step, &mut outbound).await;
                    self.work.push_front(Work::Step(id));
                    return;
                }
                // Nothing recorded: the next start finds the attempt running and retries.
                Attempted::Stopping => return,
            };
            if step
                .push(self.attempt_failed(&call, &slot, &policy, &kind, error))
                .is_err()
            {
                break;
            }
        }
        let mission = step.mission();
        if mission.state == MissionState::Running
            && !mission.paused
            && mission.calls.is_empty()
            && mission.summary.is_some()
        {
            let _ = step.push(Event::Transition {
                to: MissionState::Completed,
                reason: "objective reached".into(),
                at: self.now(),
            });
        }
        let next_turn = step.mission().state == MissionState::Running
            && !step.mission().paused
            && step.mission().calls.is_empty();
        if self.commit_step(step, &mut outbound).await && next_turn {
            self.work.push_back(Work::Step(id));
        }
    }

    /// The record of a failed attempt, with when the next one is due under `policy`.
    fn attempt_failed(
        &self,
        call: &ToolCall,
        slot: &aura_kernel::CallState,
        policy: &StepPolicy,
        kind: &str,
        error: String,
    ) -> Event {
        let attempt = if slot.running {
            slot.attempts
        } else {
            slot.attempts + 1
        };
        let at = self.now();
        Event::AttemptFailed {
            call_id: Some(call.id.clone()),
            attempt,
            kind: kind.to_owned(),
            error,
            retry_at: policy.retry_at(attempt, kind, at),
            at,
        }
    }

    /// Runs one attempt of a permitted call, holding it to its timeouts and heartbeats,
    /// and recording its heartbeats now and then.
    async fn attempt(
        &mut self,
        id: MissionId,
        call: &ToolCall,
        attempt: u32,
        policy: &StepPolicy,
        progress: Option<Value>,
    ) -> Attempted {
        let s = self.shared.clone();
        let Ok(live) = self.live(id) else {
            return Attempted::Stopping;
        };
        let mut ctx = self.exec_context(live);
        ctx.now = self.now();
        ctx.progress = progress;
        if recipes::is_recipe_tool(&call.name) {
            return Attempted::Done(Box::new(self.recipe_book_call(&ctx, call).await));
        }
        let (beat, mut beats) = tokio::sync::mpsc::unbounded_channel::<Value>();
        ctx.heartbeat = Some(Heartbeat::new(move |details| {
            let _ = beat.send(details);
        }));
        let proposal = match s.services.tools.prepare(call) {
            Ok(p) => p,
            Err(why) => {
                return Attempted::Done(Box::new(failed_effect(call, why.kind, why.message)));
            }
        };
        let tools = s.services.tools.clone();
        let setup = s.options.workspace_setup.clone();
        let run = async move {
            // A workspace whose file system a reboot unmounted is mounted again before a
            // tool writes where it would be hidden, uncounted, on the node's own disk.
            if let Err(e) = prepare_workspace(setup, &ctx.workspace, false).await {
                return failed_effect(
                    &proposal.call,
                    ErrorKind::Unavailable,
                    format!(
                        "the workspace {} is not ready: {e}",
                        ctx.workspace.display()
                    ),
                );
            }
            tools.execute(&ctx, &proposal).await
        };
        let span = tracing::info_span!(
            "tool.call",
            mission_id = %id,
            agent_id = %self.agent,
            tool = %call.name,
            call_id = %call.id,
            attempt,
            outcome = tracing::field::Empty,
        );
        let run = run.instrument(span.clone());
        tokio::pin!(run);
        let interrupt = self.mailbox.interrupt.clone();
        let mut stopping = s.stopping.subscribe();
        let limit = after(policy.start_to_close());
        let mut silence = after(policy.heartbeat());
        let mut heard: Option<Value> = None;
        let mut recorded_at: Option<tokio::time::Instant> = None;
        loop {
            let details = tokio::select! {
                effect = &mut run => {
                    span.record("outcome", crate::observe::effect_outcome(&effect));
                    return Attempted::Done(Box::new(effect));
                }
                Some(details) = beats.recv() => details,
                () = until(limit) => return Attempted::Failed {
                    kind: kinds::START_TO_CLOSE,
                    error: format!("the call ran longer than {} ms", policy.start_to_close_ms.unwrap_or_default()),
                    progress: heard,
                },
                () = until(silence) => return Attempted::Failed {
                    kind: kinds::HEARTBEAT,
                    error: format!("no heartbeat for {} ms", policy.heartbeat_ms.unwrap_or_default()),
                    progress: heard,
                },
                () = interrupt.notified() => return Attempted::Interrupted,
                _ = stopping.wait_for(|stop| *stop) => return Attempted::Stopping,
            };
            silence = after(policy.heartbeat());
            heard = Some(details.clone());
            if recorded_at.is_none_or(|t| t.elapsed() >= HEARTBEAT_RECORD_EVERY) {
                recorded_at = Some(tokio::time::Instant::now());
                self.record_heartbeat(id, call, attempt, details).await;
            }
        }
    }

    /// Runs `memory.recipe.save` or `memory.recipe.forget` (a `recipe.run` reaching here
    /// was not expanded and is refused), through the same door as every tool: the
    /// mission's execution token, for this mission, agent and tool, while it is active.
    async fn recipe_book_call(&self, ctx: &ExecContext, call: &ToolCall) -> Effect {
        let refused = |why: String| {
            failed_effect(
                call,
                ErrorKind::Unauthorized,
                format!("unauthorized: {}: refused: {why}", call.name),
            )
        };
        if !ctx.mission_active {
            return refused(format!("mission {} has ended", ctx.mission));
        }
        match aura_identity::verify_token(
            ctx.token.as_ref(),
            &ctx.trust,
            ctx.now,
            ctx.mission,
            &call.name,
        ) {
            Ok(t) if t.agent == ctx.agent && t.namespace == ctx.namespace => {}
            Ok(_) => return refused("the execution token is another agent's".into()),
            Err(e) => return refused(e.to_string()),
        }
        if call.name == aura_kernel::RUN_TOOL {
            return failed_effect(
                call,
                ErrorKind::InvalidArguments,
                format!(
                    "invalid_arguments: {}: a recipe runs by its expansion",
                    call.name
                ),
            );
        }
        let tools = self.shared.services.tools.clone();
        recipes::book_call(&self.shared, self.agent, call, |t| {
            !tools.specs(&[t.to_owned()]).is_empty()
        })
        .await
    }

    /// Records a running attempt's progress, so that a retry after a crash can read it.
    async fn record_heartbeat(
        &mut self,
        id: MissionId,
        call: &ToolCall,
        attempt: u32,
        details: Value,
    ) {
        let Ok(live) = self.live(id) else { return };
        let mut step = Step::begin(&live.mission);
        let heartbeat = Event::Heartbeat {
            call_id: call.id.clone(),
            attempt,
            details,
            at: self.now(),
        };
        // Details the kernel refuses (too large) are not recorded; the beat still counts.
        if step.push(heartbeat).is_ok() {
            self.finish(step).await;
        }
    }

    /// Commits a step, then delivers the messages its effects sent; says whether it was
    /// recorded.
    async fn commit_step(&mut self, step: Step, outbound: &mut Vec<(AgentId, Value)>) -> bool {
        let recorded = self.finish(step).await;
        if recorded {
            self.send_outbound(std::mem::take(outbound));
        }
        recorded
    }

    /// Asks for the mission's next step at `at` (a retry's due time).
    fn wake_at(&self, id: MissionId, at: Timestamp) {
        self.wake_later(id, at.since(self.now()));
    }

    /// Asks for the mission's next step (or its start) after `wait`.
    pub(crate) fn wake_later(&self, id: MissionId, wait: Duration) {
        let mailbox = self.mailbox.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = mailbox.send(Inbox::Wake { mission: id }).await;
        });
    }

    /// Policy's decision on a proposed call, in a `policy.decide` span.
    fn decide_call(
        &self,
        mission: &Mission,
        call: &ToolCall,
        approval: Option<VerifiedApproval>,
    ) -> Decision {
        let span = tracing::info_span!(
            "policy.decide",
            mission_id = %mission.id,
            agent_id = %mission.agent,
            action = %call.name,
            call_id = %call.id,
            effect = tracing::field::Empty,
        );
        let _entered = span.enter();
        let decision = self.decide_call_untraced(mission, call, approval);
        span.record("effect", crate::observe::effect(&decision.outcome));
        decision
    }

    fn decide_call_untraced(
        &self,
        mission: &Mission,
        call: &ToolCall,
        approval: Option<VerifiedApproval>,
    ) -> Decision {
        if !mission.spec.tools.contains(&call.name) {
            return refusal(
                call,
                format!("`{}` is not among the mission's tools", call.name),
            );
        }
        let proposal: Proposal = match self.prepare_call(call) {
            Ok(p) => p,
            Err(why) => return refusal(call, why.to_string()),
        };
        let q = self.query(
            mission,
            &call.name,
            Some(proposal.target),
            proposal.destructive,
            approval,
        );
        self.shared.services.policy.decide(&q)
    }

    /// Delivers messages the mission's calls sent, each into its target's inbox, in order.
    fn send_outbound(&self, outbound: Vec<(AgentId, Value)>) {
        if outbound.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let from = self.agent;
        tokio::spawn(async move {
            let namespace = shared.agent_namespace(from);
            for (to, body) in outbound {
                // Policy never permits a message across namespaces; should a call get
                // through anyway, its message is still not delivered (fail closed).
                if namespace.is_none() || shared.agent_namespace(to) != namespace {
                    continue;
                }
                if let Ok(mailbox) = shared.mailbox(to) {
                    let (reply, _rx) = tokio::sync::oneshot::channel();
                    let _ = mailbox
                        .send(Inbox::Message {
                            from: Sender::Agent(from),
                            body,
                            reply,
                        })
                        .await;
                }
            }
        });
    }

    /// Winds a mission down to `end` and commits it.
    async fn end(&mut self, step: Step, end: MissionState, reason: Option<String>) {
        let step = self.wind_down(step, end, reason).await;
        self.finish(step).await;
    }

    /// Commits a step; says whether it was recorded.
    async fn finish(&mut self, step: Step) -> bool {
        let (mission, recorded) = step.finish();
        self.commit(mission, recorded).await.is_ok()
    }

    /// Undoes completed calls in reverse order, then ends the mission in `end` (Failed, if
    /// anything could not be undone).
    async fn wind_down(&self, mut step: Step, end: MissionState, reason: Option<String>) -> Step {
        let now = self.now();
        let reason = reason
            .or_else(|| step.mission().reason.clone())
            .unwrap_or_else(|| end.to_string());
        if step.mission().has_compensations() && step.mission().state != MissionState::Compensating
        {
            let _ = step.push(Event::Transition {
                to: MissionState::Compensating,
                reason: reason.clone(),
                at: now,
            });
        }
        let mut failures = Vec::new();
        if step.mission().state == MissionState::Compensating {
            while let Some(c) = step.mission().next_compensation().cloned() {
                let Some(live) = self.missions.get(&step.mission().id) else {
                    break;
                };
                let ctx = self.exec_context(live);
                let compensation = c.compensation.clone().unwrap_or(Value::Null);
                let policy = step.mission().spec.step_policy(Some(&c.tool)).retry;
                let Some((result, attempts)) =
                    self.compensate(&ctx, &c.tool, &compensation, &policy).await
                else {
                    // The node is stopping: what was undone is committed, the mission
                    // stays Compensating, and the next start goes on from there.
                    return step;
                };
                if let Err(e) = &result {
                    failures.push(format!(
                        "{} ({}) after {attempts} attempt{}: {e}",
                        c.call_id,
                        c.tool,
                        if attempts == 1 { "" } else { "s" }
                    ));
                }
                let ok = result.is_ok();
                if step
                    .push(Event::Compensated {
                        call_id: c.call_id,
                        ok,
                        error: result.err().map(|e| e.to_string()),
                        at: self.now(),
                        attempts: if attempts > 1 { attempts } else { 0 },
                    })
                    .is_err()
                {
                    break;
                }
            }
        }
        let (to, reason) = if failures.is_empty() {
            (end, reason)
        } else {
            (
                MissionState::Failed,
                format!("{reason}; could not undo: {}", failures.join("; ")),
            )
        };
        let _ = step.push(Event::Transition {
            to,
            reason,
            at: self.now(),
        });
        step
    }

    /// Undoes one call, retrying under the tool's retry policy (at most
    /// [`MAX_COMPENSATION_ATTEMPTS`] attempts however generous the policy, since the
    /// mission is ending and its agent waits); says how it ended and after how many
    /// attempts, or `None` if the node began stopping while it waited to retry.
    /// Compensations restore recorded state (previous bytes, a declared command), so
    /// running one again after a failure is safe.
    async fn compensate(
        &self,
        ctx: &ExecContext,
        tool: &str,
        compensation: &Value,
        policy: &aura_kernel::RetryPolicy,
    ) -> Option<(Result<(), ToolError>, u32)> {
        let tools = &self.shared.services.tools;
        let setup = self.shared.options.workspace_setup.clone();
        let mut attempt = 1;
        loop {
            // A workspace whose file system a reboot unmounted is mounted again before a
            // compensation writes there.
            let result = match prepare_workspace(setup.clone(), &ctx.workspace, false).await {
                Ok(()) => tools.compensate(ctx, tool, compensation).await,
                Err(e) => Err(ToolError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the workspace {} is not ready: {e}",
                        ctx.workspace.display()
                    ),
                )),
            };
            let Err(e) = result else {
                return Some((Ok(()), attempt));
            };
            // The kind is the error's own, by its recorded name (as a policy's
            // `non_retryable` names it), never a guess from the message.
            let backoff = policy
                .backoff(attempt, &e.kind.recorded_name())
                .filter(|_| attempt < MAX_COMPENSATION_ATTEMPTS);
            let Some(wait) = backoff else {
                return Some((Err(e), attempt));
            };
            let mut stopping = self.shared.stopping.subscribe();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopping.wait_for(|stop| *stop) => return None,
            }
            attempt += 1;
        }
    }

    /// A person answered an escalation.
    pub(crate) async fn answer(
        &mut self,
        id: MissionId,
        approval: Signed<Approval>,
        credential: Signed<Credential>,
    ) -> Result<(), Error> {
        let mission = self.live(id)?.mission.clone();
        let waiting = mission
            .escalation
            .clone()
            .zip(mission.escalation_answers())
            .filter(|_| mission.state == MissionState::Escalated);
        let Some((esc, answers)) = waiting else {
            return Err(Error::Conflict(format!(
                "mission {id} is {}, not waiting for approval",
                mission.state
            )));
        };
        // One approval answers one escalation: a second escalation, even of an identical
        // request, needs a second decision. An approval names its mission, so the ids
        // this mission used are the only ones it could be used again for.
        let used = approval.statement.id;
        if mission.used_approvals.contains(&used) {
            return Err(Error::Forbidden(format!(
                "approval {used} was already used in mission {id}; each escalation needs its own approval"
            )));
        }
        let now = self.now();
        let verified = verify_approval(
            &approval,
            &credential,
            &self.shared.trust,
            now,
            aura_identity::Escalation {
                mission: id,
                namespace: &mission.spec.namespace,
                answers: &answers,
                request: esc.request,
                required: esc.level,
            },
        )
        .map_err(|e| Error::Forbidden(e.to_string()))?;
        let approval_json = serde_json::to_value(&approval).unwrap_or(Value::Null);
        let approver = verified.approver.to_string();
        let mut step = Step::begin(&mission);
        match verified.verdict {
            Verdict::Approve => {
                step.push(Event::Approved {
                    approval: approval_json,
                    approver,
                    level: verified.level,
                    at: now,
                })?;
                if esc.call_id.is_none() {
                    step.push(Event::Transition {
                        to: MissionState::Authorized,
                        reason: "approved".into(),
                        at: now,
                    })?;
                    if self.finish(step).await {
                        self.work.push_back(Work::Start(id));
                    }
                    return Ok(());
                }
                // The escalated call is decided again, with the approval in its context.
                self.redecide(step, esc.call_id.as_deref().unwrap_or_default(), verified)
                    .await;
                Ok(())
            }
            Verdict::Reject => {
                let reason = approval.statement.reason.clone();
                step.push(Event::Rejected {
                    approval: approval_json,
                    approver,
                    reason,
                    at: now,
                })?;
                let step = self.wind_down(step, MissionState::Failed, None).await;
                self.finish(step).await;
                Ok(())
            }
        }
    }

    async fn redecide(&mut self, mut step: Step, call_id: &str, approval: VerifiedApproval) {
        let Some(call) = step
            .mission()
            .calls
            .iter()
            .find(|c| c.call.id == call_id)
            .map(|c| c.call.clone())
        else {
            return;
        };
        let decision = self.decide_call(step.mission(), &call, Some(approval.clone()));
        let escalates = matches!(decision.outcome, Outcome::Escalate { .. });
        if step
            .push(Event::Decided {
                call_id: call.id.clone(),
                decision,
            })
            .is_err()
        {
            return;
        }
        if escalates {
            // Still not enough: wait for another approval.
            self.finish(step).await;
            return;
        }
        self.advance(step, None).await;
    }

    /// Stops a mission on request, undoing what it did.
    pub(crate) async fn cancel(
        &mut self,
        id: MissionId,
        by: &str,
        reason: &str,
    ) -> Result<(), Error> {
        let mission = self.live(id)?.mission.clone();
        if mission.state.is_terminal() {
            return Err(Error::Conflict(format!(
                "mission {id} is already {}",
                mission.state
            )));
        }
        let mut step = Step::begin(&mission);
        step.push(Event::CancelRequested {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at: self.now(),
        })?;
        let step = self.wind_down(step, MissionState::Cancelled, None).await;
        if self.finish(step).await {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// An operator pauses, resumes or hurries a mission.
    pub(crate) async fn control(
        &mut self,
        id: MissionId,
        control: Control,
        by: &str,
    ) -> Result<(), Error> {
        let mission = self.live(id)?.mission.clone();
        let at = self.now();
        let event = match &control {
            Control::Pause { reason } => Event::Paused {
                by: by.to_owned(),
                reason: reason.clone(),
                at,
            },
            Control::Resume => Event::Resumed {
                by: by.to_owned(),
                at,
            },
            Control::RetryNow => Event::RetryRequested {
                by: by.to_owned(),
                at,
            },
        };
        let mut step = Step::begin(&mission);
        step.push(event)
            .map_err(|e| Error::Conflict(format!("mission {id}: {e}")))?;
        if !self.finish(step).await {
            return Err(Error::Closed);
        }
        if !matches!(control, Control::Pause { .. }) {
            self.queue(id);
        }
        Ok(())
    }

    /// The deadline timer fired.
    pub(crate) async fn deadline(&mut self, id: MissionId) {
        let Ok(live) = self.live(id) else { return };
        if live.mission.state.is_terminal() {
            return;
        }
        if !live.mission.deadline_passed(self.now()) {
            // The wall clock moved back; try again later.
            let m = live.mission.clone();
            self.arm_deadline(&m);
            return;
        }
        self.expire(id).await;
    }

    async fn expire(&mut self, id: MissionId) {
        let Ok(live) = self.live(id) else { return };
        let mut step = Step::begin(&live.mission);
        if step.push(Event::TimedOut { at: self.now() }).is_err() {
            return;
        }
        let step = self.wind_down(step, MissionState::Failed, None).await;
        self.finish(step).await;
    }

    /// A message from another agent reaches this agent's running missions too.
    pub(crate) async fn deliver_to_running(&mut self, from: AgentId, body: Value) {
        let running: Vec<Mission> = self
            .missions
            .values()
            .filter(|l| l.mission.state == MissionState::Running)
            .map(|l| l.mission.clone())
            .collect();
        for mission in running {
            let mut step = Step::begin(&mission);
            if step
                .push(Event::Message {
                    from,
                    body: body.clone(),
                    at: self.now(),
                })
                .is_ok()
            {
                self.finish(step).await;
            }
        }
    }
}

/// How an attempt at a call ended.
enum Attempted {
    /// The tool returned an effect (which may still be a failure worth retrying).
    Done(Box<Effect>),
    /// The engine failed it: a timeout or a missed heartbeat.
    Failed {
        kind: &'static str,
        error: String,
        progress: Option<Value>,
    },
    /// A cancel or the deadline arrived while it ran; the tool was stopped.
    Interrupted,
    /// The node is stopping; nothing is recorded.
    Stopping,
}

/// A failed effect whose kind is transient ([`ErrorKind::is_transient`]: the network,
/// the disk, a timeout, a defect, so another attempt may succeed), as `(kind, message)`
/// for the attempt's failure record. Every other failure (bad arguments, confinement, a
/// missing file...) is the call's answer: recorded as its effect for the reasoner to work
/// around. So is a failure without a kind, or of a kind this build does not know: running
/// a call again is never a guess.
///
/// The decision reads the effect's typed kind only, never its message. Records made
/// before effects carried a kind never come here: an effect is judged once, as the tool
/// returns it, and what was decided then is itself recorded (an `attempt_failed` with its
/// kind, or the effect), which replay reads rather than decides again.
/// Runs a declaration's policy decision in a `policy.decide` span.
fn decide_traced(q: &Query, decide: impl FnOnce() -> Decision) -> Decision {
    let span = tracing::info_span!(
        "policy.decide",
        mission_id = %q.mission,
        agent_id = %q.agent,
        action = %q.action,
        effect = tracing::field::Empty,
    );
    let _entered = span.enter();
    let decision = decide();
    span.record("effect", crate::observe::effect(&decision.outcome));
    decision
}

fn transient_failure(effect: &Effect) -> Option<(String, String)> {
    if effect.ok {
        return None;
    }
    let name = effect.error_kind.as_deref()?;
    let kind = ErrorKind::from_recorded_name(name).filter(|k| k.is_transient())?;
    let error = effect.error.clone().unwrap_or_default();
    // The message the reasoner would read starts with the kind (`network: ...`); the
    // attempt's record keeps the kind apart, so it is left out there.
    let prefix = format!("{}: ", kind.as_str());
    let message = error
        .strip_prefix(&prefix)
        .map_or(error.clone(), str::to_owned);
    Some((name.to_owned(), message))
}

/// Why a mission fails when one of its calls ran out of attempts.
fn gave_up(call: &ToolCall, slot: &aura_kernel::CallState) -> String {
    format!(
        "`{}` call {} failed after {} attempt{}: {}",
        call.name,
        call.id,
        slot.attempts,
        if slot.attempts == 1 { "" } else { "s" },
        slot.last_error.as_deref().unwrap_or("unknown error")
    )
}

/// The most attempts at undoing one call.
const MAX_COMPENSATION_ATTEMPTS: u32 = 10;

/// How often a running attempt's heartbeats are recorded (each is heard at once; only
/// the record is thinned out).
const HEARTBEAT_RECORD_EVERY: Duration = Duration::from_secs(10);

/// The instant `limit` from now, if there is a limit.
fn after(limit: Option<Duration>) -> Option<tokio::time::Instant> {
    limit.map(|d| tokio::time::Instant::now() + d)
}

/// Sleeps until `at`, or forever without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Turns in a row without a tool call after which a mission fails: a reasoner that only
/// talks makes no progress, and asking it again would spend the budget on nothing.
const MAX_IDLE_TURNS: usize = 3;

/// How many of the conversation's last messages are the reasoner's turns without a call.
fn idle_turns(conversation: &aura_kernel::AppendList<aura_kernel::Message>) -> usize {
    conversation
        .iter()
        .rev()
        .take_while(|m| m.role == aura_kernel::Role::Assistant && m.tool_calls.is_empty())
        .count()
}

/// Makes a mission's workspace ready, on a blocking thread: through the node's
/// [`aura_tools::WorkspaceSetup`] when it has one; otherwise, when `create` (a mission
/// starting), a plain directory, mode 0700.
async fn prepare_workspace(
    setup: Option<std::sync::Arc<dyn aura_tools::WorkspaceSetup>>,
    dir: &std::path::Path,
    create: bool,
) -> Result<(), String> {
    if setup.is_none() && !create {
        return Ok(());
    }
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || match setup {
        Some(setup) => setup.ensure(&dir),
        None => {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| format!("preparing the workspace panicked: {e}"))?
}

/// The most regions a mission's boundary may name.
pub(crate) const MAX_REGIONS: usize = 16;

/// Checks a boundary's labels as a node's enrollment would take them: 1 to 64 bytes of
/// printable text each (no control characters, no surrounding spaces), at most
/// [`MAX_REGIONS`], none twice.
pub(crate) fn check_regions(regions: &[String]) -> Result<(), Error> {
    if regions.len() > MAX_REGIONS {
        return Err(Error::Invalid(format!(
            "`regions` names {} regions; at most {MAX_REGIONS} are allowed",
            regions.len()
        )));
    }
    for (i, r) in regions.iter().enumerate() {
        let fits = (1..=64).contains(&r.len()) && r.trim() == r && !r.chars().any(char::is_control);
        if !fits {
            return Err(Error::Invalid(format!(
                "`regions` holds {r:?}, which is not a region label (1 to 64 bytes of text, as nodes are enrolled with)"
            )));
        }
        if regions[..i].contains(r) {
            return Err(Error::Invalid(format!("`regions` names {r:?} twice")));
        }
    }
    Ok(())
}

/// Why a mission bounded to `regions` may not run on a node in `region`; `None` when it
/// may (no boundary, or the node's region inside it). A node whose region is unknown (not
/// in a cluster) is outside every boundary: the check fails closed.
pub(crate) fn outside_boundary(regions: &[String], region: Option<&str>) -> Option<String> {
    if regions.is_empty() || region.is_some_and(|r| regions.iter().any(|b| b == r)) {
        return None;
    }
    let within = regions.join(", ");
    Some(match region {
        Some(r) => {
            format!("the mission may run only in region {within}; this node is in region {r}")
        }
        None => format!(
            "the mission may run only in region {within}; this node is in no cluster region"
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    /// A failure of `kind` as the registry reports it, made into the kernel's record by
    /// the adapter, then written and read back as the ledger would.
    fn through_the_record(kind: ErrorKind) -> Effect {
        let effect = aura_tools::Effect::failed(
            "fs.read",
            "c1",
            aura_tools::ToolError::new(kind, "fs.read: it failed"),
        );
        let recorded = crate::adapters::tools::recorded(effect);
        let back: Effect = serde_json::from_slice(&serde_json::to_vec(&recorded).unwrap()).unwrap();
        assert_eq!(back, recorded);
        back
    }

    /// Regression test for retries decided from an error's text: the engine split a
    /// failed effect's error string on `": "` and matched the head against a hard-coded
    /// list of kinds, so a kind renamed (or a message not starting with its kind) silently
    /// stopped being retried. Every kind now round-trips through the record, and its
    /// typed kind alone decides, whatever the message says.
    #[test]
    fn every_error_kind_round_trips_through_the_record_and_the_kind_alone_decides_retries() {
        for kind in ErrorKind::ALL {
            let effect = through_the_record(kind);
            assert_eq!(effect.error_kind, Some(kind.recorded_name()), "{kind:?}");
            let decided = transient_failure(&effect);
            assert_eq!(decided.is_some(), kind.is_transient(), "{kind:?}");
            if let Some((name, message)) = decided {
                assert_eq!(name, kind.recorded_name());
                assert_eq!(message, "fs.read: it failed");
            }
        }

        // A message naming a transient kind decides nothing: the kind does.
        let refused = Effect {
            error: Some("network: down".into()),
            ..through_the_record(ErrorKind::InvalidArguments)
        };
        assert_eq!(transient_failure(&refused), None);
        // A failure without a kind, or of one this build does not know, is the call's
        // answer: never run again on a guess.
        for error_kind in [None, Some("no_such_kind".to_owned())] {
            let unknown = Effect {
                error_kind,
                ..through_the_record(ErrorKind::Network)
            };
            assert_eq!(transient_failure(&unknown), None);
        }
        // A success is never a failure to retry.
        let ok = Effect {
            ok: true,
            ..through_the_record(ErrorKind::Network)
        };
        assert_eq!(transient_failure(&ok), None);
    }

    /// Regression test for retries that stopped when a kind's display string was renamed:
    /// the engine matched the head of a failed effect's message (`network: ...`, written
    /// from `ErrorKind::as_str`) against a hard-coded list, so showing a kind under another
    /// name, or a message not led by it, silently stopped its retries. The message is now
    /// for people only: a transient failure whose message shows its kind under any name,
    /// or not at all, is still retried, and recorded under the kind's recorded name (the
    /// name missions' `non_retryable` lists use); a call's own answer shown under a
    /// transient kind's name is still not.
    #[test]
    fn renaming_a_kinds_display_string_cannot_stop_its_retries() {
        for kind in ErrorKind::ALL {
            let effect = through_the_record(kind);
            let shown = kind.as_str();
            for message in [
                format!("{shown}-renamed: fs.read: it failed"),
                format!("{}: fs.read: it failed", shown.to_uppercase()),
                "fs.read: it failed".to_owned(),
                "it failed".to_owned(),
                String::new(),
            ] {
                let renamed = Effect {
                    error: Some(message.clone()),
                    ..effect.clone()
                };
                let decided = transient_failure(&renamed).map(|(name, _)| name);
                let expected = kind.is_transient().then(|| kind.recorded_name());
                assert_eq!(decided, expected, "{kind:?} shown as {message:?}");
            }
        }
        for answer in ErrorKind::ALL.into_iter().filter(|k| !k.is_transient()) {
            for transient in ErrorKind::ALL.into_iter().filter(|k| k.is_transient()) {
                let shown_as_transient = Effect {
                    error: Some(format!("{}: fs.read: it failed", transient.as_str())),
                    ..through_the_record(answer)
                };
                assert_eq!(transient_failure(&shown_as_transient), None, "{answer:?}");
            }
        }
    }

    /// One check helper: a boundary and a node's region, and whether a mission so bounded
    /// may run there.
    fn runs(regions: &[&str], node: Option<&str>, expect: bool) {
        let regions: Vec<String> = regions.iter().map(|r| (*r).to_owned()).collect();
        let why = outside_boundary(&regions, node);
        assert_eq!(why.is_none(), expect, "{regions:?} on {node:?}: {why:?}");
        if let Some(why) = why {
            assert!(why.contains(&regions.join(", ")), "{why}");
        }
    }

    #[test]
    fn a_mission_runs_only_inside_its_boundary() {
        runs(&[], None, true);
        runs(&[], Some("us"), true);
        runs(&["eu"], Some("eu"), true);
        runs(&["eu", "us"], Some("us"), true);
        runs(&["eu"], Some("us"), false);
        runs(&["eu"], Some("EU"), false);
        // Fails closed: a node in no cluster region is inside no boundary.
        runs(&["eu"], None, false);
        runs(&["eu"], Some(""), false);
    }

    #[test]
    fn boundaries_are_checked_as_region_labels() {
        let ok = |r: &[&str]| check_regions(&r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert!(ok(&[]).is_ok());
        assert!(ok(&["eu", "us-east-1", "ap"]).is_ok());
        assert!(ok(&["x".repeat(64).as_str()]).is_ok());
        for bad in [vec![""], vec![" eu"], vec!["eu\n"], vec!["eu", "eu"]] {
            let e = ok(&bad).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{bad:?}: {e:?}");
        }
        assert!(ok(&["x".repeat(65).as_str()]).is_err());
        let many: Vec<String> = (0..=MAX_REGIONS).map(|i| format!("r{i}")).collect();
        assert!(check_regions(&many).is_err());
    }
}
