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
    Decision, Effect, Event, Mission, MissionSpec, MissionState, Outcome, Step, ToolCall,
};
use serde_json::Value;

use crate::agent::{Actor, Inbox, Live, Work};
use crate::engine::{Error, Sender};
use crate::ports::{ExecContext, Proposal, Query, ReasonRequest, Target};

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
        let target_namespace = match &target {
            Some(Target::Agent { agent }) => self.shared.agent_namespace(*agent),
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
        }
    }

    /// A new mission: declaration, policy's judgement, and the first transition.
    pub(crate) async fn submit(&mut self, mut spec: MissionSpec) -> Result<MissionId, Error> {
        let s = self.shared.clone();
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
        if s.services.reasoners.get(&spec.reasoner).is_none() {
            return Err(Error::Invalid(format!(
                "no reasoner named `{}` is configured",
                spec.reasoner
            )));
        }
        let known = s.services.tools.specs(&spec.tools);
        if let Some(unknown) = spec
            .tools
            .iter()
            .find(|t| !known.iter().any(|k| &k.name == *t))
        {
            return Err(Error::Invalid(format!("there is no tool `{unknown}`")));
        }
        let now = self.now();
        let id = MissionId::generate(s.clock.as_ref(), s.entropy.as_ref());
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
        let decision = s.services.policy.decide(&q);
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
        if live.mission.state != MissionState::Authorized {
            return;
        }
        let mission = live.mission.clone();
        let workspace = live.workspace.clone();
        let now = self.now();
        if mission.deadline_passed(now) {
            return self.expire(id).await;
        }
        let mut step = Step::begin(&mission);
        if let Err(e) = std::fs::create_dir_all(&workspace) {
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

    /// One reasoning step of a running mission.
    pub(crate) async fn step(&mut self, id: MissionId) {
        let Ok(live) = self.live(id) else { return };
        let mission = live.mission.clone();
        match mission.state {
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
        if mission.budget_exhausted() {
            let step = Step::begin(&mission);
            let reason = format!(
                "budget exhausted after {} steps and {} tokens",
                mission.steps, mission.tokens
            );
            return self.end(step, MissionState::Failed, Some(reason)).await;
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
        let request = ReasonRequest {
            messages: mission.context(),
            tools: s.services.tools.specs(&mission.spec.tools),
            seed: turn_seed(id, mission.steps),
        };
        let events = s.events.clone();
        let deltas = move |text: &str| {
            events.publish(crate::events::StreamEvent::Delta {
                mission: id,
                text: text.to_owned(),
            });
        };
        let interrupt = self.mailbox.interrupt.clone();
        let mut stopping = s.stopping.subscribe();
        let outcome = tokio::select! {
            outcome = reasoner.turn(&request, &deltas) => outcome,
            () = interrupt.notified() => {
                // A cancel or the deadline arrived: the turn is dropped before anything of
                // it was recorded, the inbox is handled, and the step runs again if the
                // mission is still running.
                self.work.push_front(Work::Step(id));
                return;
            }
            _ = stopping.wait_for(|stop| *stop) => {
                // The node is stopping: a turn that may never end (a provider that hangs)
                // must not hold the shutdown. Nothing of it was recorded, so the next
                // start recovers the mission as running and asks again.
                return;
            }
        };
        let turn = match outcome {
            Ok(t) => t,
            Err(e) => {
                let reason = format!("the reasoner failed: {e}");
                return self
                    .end(Step::begin(&mission), MissionState::Failed, Some(reason))
                    .await;
            }
        };
        let mut step = Step::begin(&mission);
        if let Err(e) = step.push(Event::Turn { turn, at: now }) {
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

    /// Decides the latest turn's undecided calls in order, stopping at an escalation; then
    /// either waits for approval or runs what was permitted, and queues the next step.
    async fn advance(&mut self, mut step: Step, approval: Option<VerifiedApproval>) {
        let s = self.shared.clone();
        let undecided: Vec<ToolCall> = step.mission().undecided().cloned().collect();
        for call in undecided {
            let decision = self.decide_call(step.mission(), &call, approval.clone());
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
                self.finish(step).await;
                return;
            }
        }
        if step.mission().state == MissionState::Escalated {
            let _ = step.push(Event::Transition {
                to: MissionState::Running,
                reason: "approved".into(),
                at: self.now(),
            });
        }
        let permitted: Vec<ToolCall> = step.mission().permitted().cloned().collect();
        let mut outbound = Vec::new();
        let id = step.mission().id;
        if !permitted.is_empty() && self.missions.get(&id).is_some_and(|l| l.token.is_none()) {
            let token = self.issue_token(step.mission());
            if let Some(live) = self.missions.get_mut(&id) {
                live.token = Some(token);
            }
        }
        for call in permitted {
            let Some(live) = self.missions.get(&step.mission().id) else {
                return;
            };
            let mut ctx = self.exec_context(live);
            ctx.now = self.now();
            let effect = match s.services.tools.prepare(&call) {
                Ok(proposal) => s.services.tools.execute(&ctx, &proposal).await,
                Err(why) => Effect {
                    call_id: call.id.clone(),
                    tool: call.name.clone(),
                    ok: false,
                    output: Value::Null,
                    error: Some(why),
                    compensation: None,
                    message: None,
                    finish: None,
                },
            };
            if let Some(m) = &effect.message {
                outbound.push((m.to, m.body.clone()));
            }
            if step
                .push(Event::Effect {
                    effect,
                    at: self.now(),
                })
                .is_err()
            {
                break;
            }
        }
        if step.mission().summary.is_some() && step.mission().calls.is_empty() {
            let _ = step.push(Event::Transition {
                to: MissionState::Completed,
                reason: "objective reached".into(),
                at: self.now(),
            });
        }
        let running = step.mission().state == MissionState::Running;
        // Messages are delivered once their effects are recorded, whatever state the
        // mission reached (a turn may send and then finish).
        if self.finish(step).await {
            self.send_outbound(outbound);
            if running {
                self.work.push_back(Work::Step(id));
            }
        }
    }

    fn decide_call(
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
        let proposal: Proposal = match self.shared.services.tools.prepare(call) {
            Ok(p) => p,
            Err(why) => return refusal(call, why),
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
            for (to, body) in outbound {
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
                let result = self
                    .shared
                    .services
                    .tools
                    .compensate(&ctx, &c.tool, &compensation)
                    .await;
                if let Err(e) = &result {
                    failures.push(format!("{} ({}): {e}", c.call_id, c.tool));
                }
                let ok = result.is_ok();
                if step
                    .push(Event::Compensated {
                        call_id: c.call_id,
                        ok,
                        error: result.err(),
                        at: self.now(),
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

    /// A person answered an escalation.
    pub(crate) async fn answer(
        &mut self,
        id: MissionId,
        approval: Signed<Approval>,
        credential: Signed<Credential>,
    ) -> Result<(), Error> {
        let mission = self.live(id)?.mission.clone();
        let Some(esc) = mission
            .escalation
            .clone()
            .filter(|_| mission.state == MissionState::Escalated)
        else {
            return Err(Error::Conflict(format!(
                "mission {id} is {}, not waiting for approval",
                mission.state
            )));
        };
        let now = self.now();
        let verified = verify_approval(
            &approval,
            &credential,
            &self.shared.trust,
            now,
            aura_identity::Escalation {
                mission: id,
                namespace: &mission.spec.namespace,
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

/// Turns in a row without a tool call after which a mission fails: a reasoner that only
/// talks makes no progress, and asking it again would spend the budget on nothing.
const MAX_IDLE_TURNS: usize = 3;

/// How many of the conversation's last messages are the reasoner's turns without a call.
fn idle_turns(conversation: &[std::sync::Arc<aura_kernel::Message>]) -> usize {
    conversation
        .iter()
        .rev()
        .take_while(|m| m.role == aura_kernel::Role::Assistant && m.tool_calls.is_empty())
        .count()
}
