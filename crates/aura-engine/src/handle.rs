//! The [`Handle`] others hold to use the engine: starting it (every agent's record
//! replayed and its actor back), agents, messages, missions and their operators' controls,
//! replay, and pruning.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aura_core::door::{Clock, Entropy};
use aura_core::keystore::{KeyName, Keystore, Signer};
use aura_core::{AgentId, MissionId, PublicKey, Timestamp};
use aura_identity::{
    Approval, Credential, CredentialId, Level, Namespace, OperatorName, Signed, Subject, TrustSet,
    verify_credential,
};
use aura_kernel::{Divergence, Mission, MissionSpec, MissionState, Recorded};
use aura_ledger::entry::Kind;
use aura_store::{EntryRef, Store, StoredEntry};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{self, Live};
use crate::command::{Control, Inbox, Sender};
use crate::error::Error;
use crate::events::EventHub;
use crate::forward::forward_commits;
use crate::prune::{PruneReport, Pruned};
use crate::shared::{AgentInfo, Options, Services, Shared};

/// A new agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// A name for people; not unique, not an identity.
    pub name: String,
    pub level: Level,
    pub namespace: Namespace,
    /// The agent's own public key, if it holds one; otherwise the node makes a key for it.
    #[serde(default)]
    pub public_key: Option<PublicKey>,
}

/// The first entry of every agent's stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Created {
    name: String,
    credential: Signed<Credential>,
}

pub(crate) const KIND_CREATED: &str = "agent.created";

/// What others hold to use the engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

fn kind(k: &str) -> Kind {
    Kind::new(k).unwrap_or_else(|_| unreachable!("engine kinds are valid"))
}

/// Agents whose records are read and replayed at once when a node starts.
const RECOVERY_CONCURRENCY: usize = 16;

impl Handle {
    /// Starts the engine over `store`: every agent recorded in the ledger gets its actor
    /// back, resuming its stream where it ended.
    pub async fn start(
        options: Options,
        store: Arc<dyn Store>,
        signer: Arc<Signer>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        trust: TrustSet,
        services: Services,
    ) -> Result<Handle, Error> {
        // Pruned missions no longer replay; their descriptions must be known before the
        // agents' records are read.
        let pruned = Pruned::load(store.as_ref()).await?;
        let shared = Arc::new(Shared {
            services,
            stopping: tokio::sync::watch::channel(false).0,
            tasks: std::sync::Mutex::new(Vec::new()),
            missions: RwLock::new(BTreeMap::new()),
            events: EventHub::new(options.event_capacity),
            store,
            signer,
            clock,
            entropy,
            trust,
            options,
            agents: RwLock::new(BTreeMap::new()),
            pruned,
            actors: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
        let handle = Handle { shared };
        let next = handle.shared.store.tree_size().await?;
        let forwarder = tokio::spawn(forward_commits(
            handle.shared.store.clone(),
            handle.shared.events.clone(),
            handle.shared.stopping.subscribe(),
            next,
        ));
        handle.shared.track(forwarder);
        handle.adopt().await?;
        Ok(handle)
    }

    /// Starts the actor of every agent in the ledger that this engine may run
    /// ([`Options::ownership`]) and does not run yet, each resuming its stream and its
    /// unfinished missions where the record leaves them. A cluster node calls it after
    /// taking a shard's lease, so that the shard's agents carry on here; returns how many
    /// agents it started.
    pub async fn adopt(&self) -> Result<usize, Error> {
        let handle = self;
        let mut adopted = 0;
        // Agents' records are read and replayed several at a time (the store has a pool
        // of readers, and replay is CPU work), so a node with many agents is back
        // quickly after a crash. Each agent's actor starts once its record is replayed.
        let mut pending = handle.shared.store.heads().await?.into_iter();
        let mut reading = tokio::task::JoinSet::new();
        loop {
            while reading.len() < RECOVERY_CONCURRENCY {
                let Some(head) = pending.next() else { break };
                if head.agent.is_node()
                    || !handle.shared.holds(head.agent)
                    || handle.running(head.agent)
                {
                    continue;
                }
                let handle = handle.clone();
                reading.spawn(async move { handle.recover_agent(head).await });
            }
            let Some(done) = reading.join_next().await else {
                break;
            };
            let recovered =
                done.map_err(|e| Error::Invalid(format!("recovering an agent failed: {e}")))??;
            if let Some((info, next_seq, live)) = recovered
                && handle.spawn_agent(info, next_seq, live)
            {
                adopted += 1;
            }
        }
        Ok(adopted)
    }

    /// Stops at once the actor of every agent this engine may no longer run (a cluster
    /// node calls it when a shard's lease is lost or given up), wherever each is in its
    /// transaction, as a crash would: the new owner recovers them from the ledger. Their
    /// missions leave this engine's index. Returns how many agents it stopped.
    pub fn relinquish(&self) -> usize {
        let s = &self.shared;
        let mut agents = s.agents.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<AgentId> = agents.keys().copied().filter(|a| !s.holds(*a)).collect();
        {
            let mut actors = s.actors.lock().unwrap_or_else(|e| e.into_inner());
            for agent in &gone {
                if let Some(task) = actors.remove(agent) {
                    task.abort();
                }
                agents.remove(agent);
            }
        }
        drop(agents);
        if !gone.is_empty() {
            let mut missions = s.missions.write().unwrap_or_else(|e| e.into_inner());
            missions.retain(|_, m| !gone.contains(&m.agent));
        }
        gone.len()
    }

    /// Whether `agent`'s actor runs here now.
    pub(crate) fn running(&self, agent: AgentId) -> bool {
        self.shared
            .actors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&agent)
            .is_some_and(|t| !t.is_finished())
    }

    /// An agent from its record: who it is, the sequence number its next entry gets,
    /// and its non-terminal missions. None for streams that are not agents.
    async fn recover_agent(
        &self,
        head: aura_store::Head,
    ) -> Result<Option<(AgentInfo, u64, Vec<Live>)>, Error> {
        let first = self
            .shared
            .store
            .entry(EntryRef::AgentSeq(head.agent, 1))
            .await?;
        let Some(first) = first.filter(|e| e.entry.kind.as_str() == KIND_CREATED) else {
            // Streams that do not start with agent.created are written by other tools
            // (`aura ledger append`); they are not agents the engine runs.
            return Ok(None);
        };
        let created: Created = serde_json::from_slice(&first.entry.body).map_err(|e| {
            Error::Invalid(format!("the record of {} is unreadable: {e}", head.agent))
        })?;
        let info = info_from(head.agent, created, first.entry.recorded_at);
        let live = self.recover_missions(&info).await?;
        Ok(Some((info, head.seq + 1, live)))
    }

    /// Replays every mission of an agent from its record. Finished missions go to the index;
    /// the others are handed back to the agent's actor to carry on. A mission whose record
    /// no longer replays is left alone (fail closed) and reported by `aura replay`.
    async fn recover_missions(&self, info: &AgentInfo) -> Result<Vec<Live>, Error> {
        let mut records: BTreeMap<MissionId, Vec<(u64, Recorded)>> = BTreeMap::new();
        let mut from = 1;
        loop {
            let page = self.shared.store.agent_entries(info.id, from, 1000).await?;
            for e in &page {
                // Pruned entries have no body to read; they belonged to pruned missions.
                if e.entry.kind.as_str().starts_with("mission.")
                    && let Some(body) = e.body()
                    && let Ok(r) = Recorded::from_body(body)
                {
                    records
                        .entry(r.mission)
                        .or_default()
                        .push((e.entry.index, r));
                }
            }
            match page.last() {
                Some(last) if page.len() == 1000 => from = last.entry.seq + 1,
                _ => break,
            }
        }
        let mut live = Vec::new();
        for (id, recs) in records {
            let mission = match aura_kernel::replay(recs.iter().map(|(i, r)| (*i, r))) {
                Ok(mission) => {
                    // Recorded as pruned but whole: the prune itself did not happen (it
                    // is recorded first). The next prune does it again.
                    self.shared.pruned.forget(id);
                    mission
                }
                Err(_) => {
                    let pruned = self.shared.pruned.mission(id);
                    // A description that no longer makes a mission is left out, as a
                    // record that no longer replays is.
                    if let Some(Ok(mission)) = pruned {
                        self.shared.index_mission(&mission);
                    }
                    continue;
                }
            };
            self.shared.index_mission(&mission);
            if !mission.state.is_terminal() {
                let name = mission
                    .spec
                    .workspace
                    .clone()
                    .unwrap_or_else(|| id.to_string());
                let workspace = self
                    .shared
                    .options
                    .workspaces
                    .join(mission.spec.namespace.as_str())
                    .join(name);
                live.push(Live {
                    mission,
                    token: None,
                    workspace,
                });
            }
        }
        Ok(live)
    }

    /// Starts an agent's actor unless one runs already (one writer per agent); whether it
    /// started one.
    fn spawn_agent(&self, info: AgentInfo, next_seq: u64, missions: Vec<Live>) -> bool {
        let mut agents = self
            .shared
            .agents
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if self.running(info.id) {
            return false;
        }
        let mailbox = agent::spawn(self.shared.clone(), info.id, next_seq, missions);
        agents.insert(info.id, (info, mailbox));
        true
    }

    /// Stops every agent and task of the engine after the transaction each is in, and waits
    /// for them. Afterwards the store is no longer held by the engine and closes when the
    /// caller drops its own references.
    pub async fn shutdown(&self) {
        let _ = self.shared.stopping.send(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        self.shared
            .agents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn events(&self) -> &EventHub {
        &self.shared.events
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    pub fn node_key(&self) -> PublicKey {
        self.shared.signer.public_key()
    }

    pub fn trust(&self) -> &TrustSet {
        &self.shared.trust
    }

    /// Creates an agent with a credential the node issues, recorded as the first entry of
    /// its stream.
    pub async fn create_agent(&self, new: NewAgent) -> Result<AgentInfo, Error> {
        let name = new.name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(Error::Invalid(
                "an agent name is 1-128 printable characters".into(),
            ));
        }
        let s = &self.shared;
        let id = self.new_agent_id()?;
        let key = match new.public_key {
            Some(k) => k,
            None => {
                let dir = s.options.keystore.clone().ok_or_else(|| {
                    Error::Invalid(
                        "give the agent's public key: this node keeps no agent keys".into(),
                    )
                })?;
                let key_name = KeyName::new(&format!("agent-{}", &id.to_string()[6..]))?;
                Keystore::new(dir).create(&key_name, None, s.entropy.as_ref())?
            }
        };
        let now = s.clock.now();
        let credential = Credential {
            id: CredentialId::generate(s.clock.as_ref(), s.entropy.as_ref()),
            subject: Subject::Agent(id),
            key,
            level: new.level,
            namespace: new.namespace,
            not_before: now,
            not_after: now.saturating_add(s.options.credential_validity),
            issuer: s.signer.public_key(),
        };
        let credential = Signed::sign(credential, &s.signer)
            .map_err(|e| Error::Invalid(format!("cannot sign the credential: {e}")))?;
        self.register(id, name.to_owned(), credential, now).await
    }

    /// A fresh agent id this engine may run: in a cluster, one that falls in a shard this
    /// node holds (a third of the ids, say, on a node of three), so the new agent's
    /// stream is written here from its first entry.
    fn new_agent_id(&self) -> Result<AgentId, Error> {
        let s = &self.shared;
        // With no lease at all no id can do; with some, a few hundred draws find one with
        // near certainty (each draw misses with the share of shards held elsewhere).
        for _ in 0..1024 {
            let id = AgentId::generate(s.clock.as_ref(), s.entropy.as_ref());
            if s.holds(id) {
                return Ok(id);
            }
        }
        Err(Error::Unavailable(
            "this node holds no shard of the cluster yet, so it cannot create an agent; hint: retry in a few seconds, or send the request to another node (aura cluster status)".into(),
        ))
    }

    /// Registers an agent whose credential an issuer the node trusts (an organisation key)
    /// has already signed.
    pub async fn register_agent(
        &self,
        name: &str,
        credential: Signed<Credential>,
    ) -> Result<AgentInfo, Error> {
        let now = self.shared.clock.now();
        verify_credential(&credential, &self.shared.trust, now)
            .map_err(|e| Error::Forbidden(format!("the credential does not hold: {e}")))?;
        let Subject::Agent(id) = credential.statement.subject.clone() else {
            return Err(Error::Invalid(
                "the credential is for a person, not an agent".into(),
            ));
        };
        if self.agent(id).is_some() {
            return Err(Error::Invalid(format!("{id} already exists")));
        }
        if !self.shared.holds(id) {
            return Err(Error::Unavailable(format!(
                "{id} belongs to a shard this node does not hold; hint: send the request to the node that holds it (aura cluster status)"
            )));
        }
        self.register(id, name.to_owned(), credential, now).await
    }

    async fn register(
        &self,
        id: AgentId,
        name: String,
        credential: Signed<Credential>,
        now: Timestamp,
    ) -> Result<AgentInfo, Error> {
        let created = Created { name, credential };
        // Every ledger body is RFC 8785 canonical JSON: the same bytes in every build.
        let body = aura_core::jcs::to_vec(&created).map_err(|e| Error::Invalid(e.to_string()))?;
        // The stream is new and no actor runs for it yet, so this is its only writer.
        self.shared
            .append(id, 1, vec![(kind(KIND_CREATED), body)])
            .await?;
        let info = info_from(id, created, now);
        self.spawn_agent(info.clone(), 2, Vec::new());
        Ok(info)
    }

    /// Every agent, optionally only those of one namespace.
    pub fn agents(&self, namespace: Option<&Namespace>) -> Vec<AgentInfo> {
        let agents = self.shared.agents.read().unwrap_or_else(|e| e.into_inner());
        agents
            .values()
            .map(|(i, _)| i)
            .filter(|i| namespace.is_none_or(|n| &i.namespace == n))
            .cloned()
            .collect()
    }

    pub fn agent(&self, id: AgentId) -> Option<AgentInfo> {
        let agents = self.shared.agents.read().unwrap_or_else(|e| e.into_inner());
        agents.get(&id).map(|(i, _)| i.clone())
    }

    /// The recipes in force in `agent`'s own memory (docs/memory.md, "Recipes"), by name,
    /// each with its digest: read from the agent's record, where saving and forgetting
    /// them are recorded.
    pub async fn recipes(
        &self,
        agent: AgentId,
    ) -> Result<Vec<(aura_kernel::Recipe, aura_core::hash::Hash)>, Error> {
        if self.agent(agent).is_none() {
            return Err(Error::NotFound(format!("agent {agent}")));
        }
        let book = crate::recipes::book(&self.shared, agent).await?;
        Ok(book.into_values().filter_map(|page| page.recipe).collect())
    }

    /// Delivers a message into an agent's inbox; answers once it is recorded in the
    /// agent's stream. An agent may message only agents of its own namespace; to it, an
    /// agent of another namespace does not exist, and is refused as one that does not.
    pub async fn send(&self, to: AgentId, from: Sender, body: Value) -> Result<u64, Error> {
        if let Sender::Agent(a) = &from {
            let sender = self
                .agent(*a)
                .ok_or_else(|| Error::NotFound(format!("agent {a}")))?;
            self.agent(to)
                .filter(|target| target.namespace == sender.namespace)
                .ok_or_else(|| Error::NotFound(format!("agent {to}")))?;
        }
        let mailbox = self.shared.mailbox(to)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        mailbox.send(Inbox::Message { from, body, reply }).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Issues a credential to a person (an operator or approver) for their own key. Their
    /// approvals count at `level` in `namespace`.
    pub fn issue_operator_credential(
        &self,
        name: &str,
        key: PublicKey,
        level: Level,
        namespace: Namespace,
    ) -> Result<Signed<Credential>, Error> {
        let s = &self.shared;
        let name = OperatorName::new(name).map_err(|e| Error::Invalid(e.to_string()))?;
        let now = s.clock.now();
        let credential = Credential {
            id: CredentialId::generate(s.clock.as_ref(), s.entropy.as_ref()),
            subject: Subject::Operator(name),
            key,
            level,
            namespace,
            not_before: now,
            not_after: now.saturating_add(s.options.credential_validity),
            issuer: s.signer.public_key(),
        };
        Signed::sign(credential, &s.signer)
            .map_err(|e| Error::Invalid(format!("cannot sign the credential: {e}")))
    }

    /// Submits a mission for `agent`; answers once it is recorded and judged.
    pub async fn submit(&self, agent: AgentId, spec: MissionSpec) -> Result<MissionId, Error> {
        self.submit_with(agent, spec, None).await
    }

    /// Submits a mission under an id drawn in advance, as a schedule's firing does (the
    /// firing records the id first). A mission already known by that id is answered as
    /// submitted, so a submission repeated after a crash never makes a second mission.
    pub async fn submit_as(
        &self,
        agent: AgentId,
        spec: MissionSpec,
        id: MissionId,
    ) -> Result<MissionId, Error> {
        self.submit_with(agent, spec, Some(id)).await
    }

    async fn submit_with(
        &self,
        agent: AgentId,
        spec: MissionSpec,
        id: Option<MissionId>,
    ) -> Result<MissionId, Error> {
        let mailbox = self.shared.mailbox(agent)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        mailbox
            .send(Inbox::Submit {
                spec: Box::new(spec),
                id,
                reply,
            })
            .await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// A mission as it stands.
    pub fn mission(&self, id: MissionId) -> Option<Arc<Mission>> {
        self.shared
            .missions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Missions, newest first, filtered by namespace, agent and state.
    pub fn missions(
        &self,
        namespace: Option<&Namespace>,
        agent: Option<AgentId>,
        state: Option<MissionState>,
    ) -> Vec<Arc<Mission>> {
        let missions = self
            .shared
            .missions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        missions
            .values()
            .rev()
            .filter(|m| namespace.is_none_or(|n| &m.spec.namespace == n))
            .filter(|m| agent.is_none_or(|a| m.agent == a))
            .filter(|m| state.is_none_or(|s| m.state == s))
            .cloned()
            .collect()
    }

    /// Answers a mission's escalation with a person's signed approval (or rejection) and
    /// their credential.
    pub async fn answer(
        &self,
        mission: MissionId,
        approval: Signed<Approval>,
        credential: Signed<Credential>,
    ) -> Result<(), Error> {
        self.ask_about(mission, |reply| Inbox::Answer {
            mission,
            approval: Box::new(approval),
            credential: Box::new(credential),
            reply,
        })
        .await
    }

    /// Cancels a mission; its completed steps are undone first.
    pub async fn cancel(&self, mission: MissionId, by: &str, reason: &str) -> Result<(), Error> {
        self.ask_about(mission, |reply| Inbox::Cancel {
            mission,
            by: by.to_owned(),
            reason: reason.to_owned(),
            reply,
        })
        .await
    }

    /// Pauses, resumes or hurries a mission's retries (`by` names the operator).
    pub async fn control(
        &self,
        mission: MissionId,
        control: Control,
        by: &str,
    ) -> Result<(), Error> {
        self.ask_about(mission, |reply| Inbox::Control {
            mission,
            control,
            by: by.to_owned(),
            reply,
        })
        .await
    }

    /// Sends a request about `mission` to the inbox of the agent that runs it, and waits
    /// for the actor's answer.
    async fn ask_about(
        &self,
        mission: MissionId,
        request: impl FnOnce(tokio::sync::oneshot::Sender<Result<(), Error>>) -> Inbox,
    ) -> Result<(), Error> {
        let agent = self
            .mission(mission)
            .ok_or_else(|| Error::NotFound(format!("mission {mission}")))?
            .agent;
        let mailbox = self.shared.mailbox(agent)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        mailbox.send(request(reply)).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Missions that need a person's look: escalated for longer than `escalated_for`,
    /// retrying a failed step, or paused. Oldest first.
    pub fn stuck(&self, escalated_for: Duration) -> Vec<Stuck> {
        let now = self.shared.clock.now();
        let missions = self
            .shared
            .missions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut stuck: Vec<Stuck> = missions
            .values()
            .filter(|m| !m.state.is_terminal())
            .filter_map(|m| stuck_reason(m, now, escalated_for).map(|(why, since)| (m, why, since)))
            .map(|(m, why, since)| Stuck {
                mission: m.id,
                agent: m.agent,
                state: m.state,
                why,
                since,
            })
            .collect();
        stuck.sort_by_key(|s| s.since);
        stuck
    }

    /// Replays a mission from the ledger, reproducing every state hash.
    /// A pruned mission answers [`Error::Pruned`]: its record is gone, which is not a
    /// divergence.
    pub async fn replay(&self, mission: MissionId) -> Result<Result<Mission, Divergence>, Error> {
        let agent = self
            .mission(mission)
            .ok_or_else(|| Error::NotFound(format!("mission {mission}")))?
            .agent;
        if self.is_pruned(mission) {
            return Err(Error::Pruned(mission));
        }
        let mut recs = Vec::new();
        let mut from = 1;
        loop {
            let page = self.shared.store.agent_entries(agent, from, 1000).await?;
            for e in &page {
                if e.entry.kind.as_str().starts_with("mission.") {
                    // Other missions of the agent may have been pruned; this one was not,
                    // so none of its entries lacks a body.
                    let Some(body) = e.body() else { continue };
                    let r = Recorded::from_body(body).map_err(|err| {
                        Error::Invalid(format!("entry #{} does not decode: {err}", e.entry.index))
                    })?;
                    if r.mission == mission {
                        recs.push((e.entry.index, r));
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == 1000 => from = last.entry.seq + 1,
                _ => break,
            }
        }
        Ok(aura_kernel::replay(recs.iter().map(|(i, r)| (*i, r))))
    }

    /// An agent's record, from `from_seq` on.
    pub async fn record(
        &self,
        agent: AgentId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, Error> {
        if self.agent(agent).is_none() {
            return Err(Error::NotFound(format!("agent {agent}")));
        }
        Ok(self
            .shared
            .store
            .agent_entries(agent, from_seq.max(1), limit)
            .await?)
    }
}

impl Handle {
    /// The time by the engine's clock (an age given to `prune_missions` is counted from
    /// it).
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Whether the mission's record was pruned (it is listed, but cannot be replayed).
    pub fn is_pruned(&self, mission: MissionId) -> bool {
        self.shared.pruned.contains(mission)
    }

    /// Prunes the records of finished missions whose last change is before
    /// `older_than`, keeping each one's submission and final transition, after recording
    /// them in the node's `missions.pruned` entries (`prune.rs` says exactly what is
    /// kept and recorded). A dry run reports and changes nothing.
    pub async fn prune_missions(
        &self,
        older_than: Timestamp,
        dry_run: bool,
    ) -> Result<PruneReport, Error> {
        let s = &self.shared;
        s.pruned
            .prune(
                s.store.as_ref(),
                s.clock.as_ref(),
                || self.missions(None, None, None),
                |m| s.index_mission(m),
                older_than,
                dry_run,
            )
            .await
    }
}

/// A mission that needs a person's look, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stuck {
    pub mission: MissionId,
    pub agent: AgentId,
    pub state: MissionState,
    pub why: StuckReason,
    /// Since when (the escalation, the latest failure, the pause).
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StuckReason {
    /// Waiting for an approval longer than asked.
    Escalated {
        action: String,
        level: aura_identity::Level,
    },
    /// A step failed and waits for its next attempt (`call` is `None` for the
    /// reasoner's turn).
    Retrying {
        call: Option<String>,
        attempts: u32,
        last_error: Option<String>,
        retry_at: Option<Timestamp>,
    },
    Paused,
}

fn stuck_reason(
    m: &Mission,
    now: Timestamp,
    escalated_for: Duration,
) -> Option<(StuckReason, Timestamp)> {
    let last_change = m.history.last().map_or(m.submitted_at, |c| c.at);
    if m.paused {
        let since = m.history.last().map_or(m.submitted_at, |c| c.at);
        return Some((StuckReason::Paused, since));
    }
    if m.state == MissionState::Escalated
        && let Some(e) = &m.escalation
        && now.since(last_change) >= escalated_for
    {
        let why = StuckReason::Escalated {
            action: e.action.clone(),
            level: e.level,
        };
        return Some((why, last_change));
    }
    if let Some(c) = m.calls.iter().find(|c| c.last_error.is_some()) {
        let why = StuckReason::Retrying {
            call: Some(c.call.id.clone()),
            attempts: c.attempts,
            last_error: c.last_error.clone(),
            retry_at: c.retry_at,
        };
        return Some((why, last_change));
    }
    if m.turn_failures > 0 {
        let why = StuckReason::Retrying {
            call: None,
            attempts: m.turn_failures,
            last_error: None,
            retry_at: m.turn_retry_at,
        };
        return Some((why, last_change));
    }
    None
}

pub(crate) fn info_from(id: AgentId, created: Created, at: Timestamp) -> AgentInfo {
    let c = &created.credential.statement;
    AgentInfo {
        id,
        name: created.name,
        namespace: c.namespace.clone(),
        level: c.level,
        public_key: c.key,
        created_at: at,
        credential: created.credential,
    }
}
