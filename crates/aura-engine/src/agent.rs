//! Agents as actors: one task per agent owns its ledger stream and handles its inbox one
//! transaction at a time. This is what makes "one writer per agent" true: nothing else
//! appends to an agent's stream once its actor runs.
//!
//! Besides what others send (messages, missions, approvals, cancellations, timers), the
//! actor keeps its own queue of work: the next step of each running mission. It takes
//! outside transactions first, so a long mission cannot starve a cancellation.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use aura_core::{AgentId, MissionId};
use aura_identity::{ExecutionToken, Signed};
use aura_kernel::{Mission, MissionState, Recorded};
use aura_ledger::entry::Kind;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::command::{Inbox, Mailbox, Sender};
use crate::error::Error;
use crate::shared::Shared;

/// The entry a message to an agent is recorded as.
const KIND_MESSAGE: &str = "agent.message";

/// How long after a failed commit a mission's work is tried again.
const COMMIT_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Work the actor gives itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    Start(MissionId),
    Step(MissionId),
}

/// What the actor keeps about one of its missions besides the kernel's state.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) mission: Mission,
    pub(crate) token: Option<Signed<ExecutionToken>>,
    pub(crate) workspace: PathBuf,
}

/// One agent's actor.
pub(crate) struct Actor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) agent: AgentId,
    pub(crate) next_seq: u64,
    pub(crate) missions: HashMap<MissionId, Live>,
    pub(crate) work: VecDeque<Work>,
    pub(crate) mailbox: Mailbox,
}

/// Starts an agent's actor; `next_seq` is the sequence number its next entry gets, and
/// `missions` the non-terminal missions recovered from its record.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    agent: AgentId,
    next_seq: u64,
    missions: Vec<Live>,
) -> Mailbox {
    let (mailbox, rx) = Mailbox::new(shared.options.inbox_capacity);
    let mut actor = Actor {
        shared,
        agent,
        next_seq,
        missions: HashMap::new(),
        work: VecDeque::new(),
        mailbox: mailbox.clone(),
    };
    for live in missions {
        actor.resume(live);
    }
    let shared = actor.shared.clone();
    let task = tokio::spawn(actor.run(rx));
    shared
        .actors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(agent, task.abort_handle());
    shared.track(task);
    mailbox
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Inbox>) {
        let mut stopping = self.shared.stopping.subscribe();
        loop {
            if *stopping.borrow() {
                return;
            }
            // In a cluster, an agent whose shard this node no longer holds is not ours to
            // write: stop before taking anything more (the node's lease manager also stops
            // the actor at once when a renewal fails; this covers an actor that was busy).
            if !self.shared.holds(self.agent) {
                tracing::warn!(agent_id = %self.agent, "the agent's shard lease is gone: its actor stops");
                return;
            }
            // Outside transactions first; then our own queued work; else wait.
            let item = match rx.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => None,
            };
            if let Some(item) = item {
                self.handle(item).await;
                continue;
            }
            if let Some(work) = self.work.pop_front() {
                self.perform(work).await;
                continue;
            }
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => self.handle(item).await,
                    None => return,
                },
                _ = stopping.changed() => return,
            }
        }
    }

    async fn handle(&mut self, item: Inbox) {
        match item {
            Inbox::Message { from, body, reply } => {
                let outcome = self.message(from, body).await;
                let _ = reply.send(outcome);
            }
            Inbox::Submit { spec, id, reply } => {
                let outcome = self.submit(*spec, id).await;
                let _ = reply.send(outcome);
            }
            Inbox::Answer {
                mission,
                approval,
                credential,
                reply,
            } => {
                let outcome = self.answer(mission, *approval, *credential).await;
                let _ = reply.send(outcome);
            }
            Inbox::Cancel {
                mission,
                by,
                reason,
                reply,
            } => {
                let outcome = self.cancel(mission, &by, &reason).await;
                let _ = reply.send(outcome);
            }
            Inbox::Deadline { mission } => self.deadline(mission).await,
            Inbox::Wake { mission } => self.queue(mission),
            Inbox::Control {
                mission,
                control,
                by,
                reply,
            } => {
                let outcome = self.control(mission, control, &by).await;
                let _ = reply.send(outcome);
            }
        }
    }

    /// Queues what a mission needs next, if it needs anything and it is not queued yet:
    /// its start, or its next step (which also carries a compensating mission on).
    pub(crate) fn queue(&mut self, id: MissionId) {
        let work = match self.missions.get(&id).map(|l| l.mission.state) {
            Some(MissionState::Authorized) => Work::Start(id),
            Some(MissionState::Running | MissionState::Compensating) => Work::Step(id),
            _ => return,
        };
        if !self.work.contains(&work) {
            self.work.push_back(work);
        }
    }

    async fn perform(&mut self, work: Work) {
        let started = std::time::Instant::now();
        let (name, mission) = match work {
            Work::Start(m) => ("start", m),
            Work::Step(m) => ("step", m),
        };
        // One span per kernel step; the policy decisions, tool calls and model requests
        // it makes are its children, and every log line inside carries both ids.
        let span = tracing::info_span!(
            "kernel.step",
            mission_id = %mission,
            agent_id = %self.agent,
            work = name,
        );
        match work {
            Work::Start(m) => self.start(m).instrument(span).await,
            Work::Step(m) => self.step(m).instrument(span).await,
        }
        aura_metrics::global().observe(
            &aura_metrics::STEP_SECONDS,
            &[name],
            started.elapsed().as_secs_f64(),
        );
    }

    /// Appends entries to this agent's stream, keeping `next_seq` true whatever happens.
    pub(crate) async fn append(
        &mut self,
        entries: Vec<(Kind, Vec<u8>)>,
    ) -> Result<aura_store::AppendReceipt, Error> {
        let n = entries.len() as u64;
        match self.shared.append(self.agent, self.next_seq, entries).await {
            Ok(r) => {
                self.next_seq += n;
                Ok(r)
            }
            Err(e) => {
                // A failed append leaves the stream as it was; but if the store was unsure
                // (a failed fsync), re-read the head rather than trust memory.
                if let Ok(Some(head)) = self.shared.store.head(self.agent).await {
                    self.next_seq = head.seq + 1;
                }
                Err(e)
            }
        }
    }

    /// Records a mission step's events; on success the mission's new state is published.
    pub(crate) async fn commit(
        &mut self,
        mission: Mission,
        recorded: Vec<Recorded>,
    ) -> Result<(), Error> {
        if recorded.is_empty() {
            return Ok(());
        }
        // A record without a JSON form is refused whole, never written as an empty body.
        let entries = recorded
            .iter()
            .map(|r| {
                Ok((
                    Kind::new(r.event.kind())
                        .unwrap_or_else(|_| unreachable!("kernel kinds are valid")),
                    r.to_body().map_err(|e| Error::Invalid(e.to_string()))?,
                ))
            })
            .collect::<Result<_, Error>>()?;
        let next_if_stored = self.next_seq + recorded.len() as u64;
        if let Err(e) = self.append(entries).await {
            // A commit whose outcome the store could not know (a failed fsync) may have
            // stored the batch after all; `append` re-read the head, and if the batch is
            // there, the record is what happened: the mission must move on with it, or
            // the next event would be chained to a state the ledger has left behind.
            if self.next_seq != next_if_stored {
                // Nothing was stored: the mission is as the ledger holds it, and its work
                // is tried again a little later rather than left waiting for a restart.
                self.wake_later(mission.id, COMMIT_RETRY);
                return Err(e);
            }
        }
        crate::observe::committed(&recorded);
        self.shared.index_mission(&mission);
        if let Some(live) = self.missions.get_mut(&mission.id) {
            live.mission = mission;
        }
        Ok(())
    }

    async fn message(&mut self, from: Sender, body: Value) -> Result<u64, Error> {
        let entry = json!({ "from": from, "body": body });
        let kind = Kind::new(KIND_MESSAGE).unwrap_or_else(|_| unreachable!("valid kind"));
        let receipt = self
            .append(vec![(kind, entry.to_string().into_bytes())])
            .await?;
        // A running mission hears the message in its next step.
        if let Sender::Agent(from) = from {
            self.deliver_to_running(from, body).await;
        }
        Ok(receipt.entries[0].index)
    }
}
