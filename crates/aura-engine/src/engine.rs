//! The engine's shared state and the [`Handle`] that others hold.
//!
//! Pruning (`Handle::prune_missions`) lives here too: it removes the bulky bodies of old
//! finished missions from the ledger and keeps what listing them needs (see the method).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aura_core::door::{Clock, Entropy};
use aura_core::keystore::{KeyName, Keystore, Signer};
use aura_core::{AgentId, MissionId, PublicKey, Timestamp};
use aura_identity::{
    Approval, Credential, CredentialId, Level, Namespace, OperatorName, Signed, Subject, TrustSet,
    verify_credential,
};
use aura_kernel::{Change, Divergence, Event, Mission, MissionSpec, MissionState, Recorded};
use aura_ledger::entry::Kind;
use aura_store::{AppendReceipt, EntryRef, NewEntry, Seq, Store, StoredEntry};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{self, Control, Inbox, Live};
use crate::events::{EventHub, StreamEvent, body_value};
use crate::ports::{Policy, Reasoners, Tools};

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where agent keys are kept when the engine makes them (usually `<home>/keys`).
    pub keystore: Option<PathBuf>,
    /// How long a credential the node issues is valid.
    pub credential_validity: Duration,
    /// Each agent's inbox capacity; senders wait when it is full.
    pub inbox_capacity: usize,
    /// How many stream events a slow subscriber may fall behind before it is told so.
    pub event_capacity: usize,
    /// Where missions' workspaces live: `<workspaces>/<namespace>/<workspace>`.
    pub workspaces: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keystore: None,
            credential_validity: Duration::from_secs(365 * 24 * 3600),
            inbox_capacity: 1024,
            event_capacity: 4096,
            workspaces: std::env::temp_dir().join("aura-workspaces"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "mission {0} was pruned: only its submission and its final transition are kept, so it cannot be replayed"
    )]
    Pruned(MissionId),
    #[error("the engine is shutting down")]
    Closed,
    #[error("the ledger refused the write")]
    Store(#[from] aura_store::Error),
    #[error("cannot create the agent's key")]
    Keystore(#[from] aura_core::keystore::Error),
}

impl From<aura_kernel::KernelError> for Error {
    /// The kernel refused an event: the request that led to it was not acceptable.
    fn from(e: aura_kernel::KernelError) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl Error {
    /// A short machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Invalid(_) => "invalid_request",
            Error::Forbidden(_) => "forbidden",
            Error::Conflict(_) => "conflict",
            Error::Pruned(_) => "pruned",
            Error::Closed => "unavailable",
            Error::Store(e) if e.is_refusal() => "conflict",
            Error::Store(_) | Error::Keystore(_) => "internal",
        }
    }
}

/// Who sent a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Sender {
    Agent(AgentId),
    Operator(String),
}

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

/// What the engine knows about an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentInfo {
    pub id: AgentId,
    pub name: String,
    pub namespace: Namespace,
    pub level: Level,
    pub public_key: PublicKey,
    pub credential: Signed<Credential>,
    pub created_at: Timestamp,
}

/// The first entry of every agent's stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Created {
    name: String,
    credential: Signed<Credential>,
}

pub(crate) const KIND_CREATED: &str = "agent.created";
pub(crate) const KIND_MESSAGE: &str = "agent.message";
/// The node-stream entry that records a prune: which missions, which entries, and each
/// mission as it ended.
pub const KIND_MISSIONS_PRUNED: &str = "missions.pruned";

/// What missions need from outside the engine: policy, tools and reasoners.
#[derive(Debug, Clone)]
pub struct Services {
    pub policy: Arc<dyn Policy>,
    pub tools: Arc<dyn Tools>,
    pub reasoners: Arc<dyn Reasoners>,
}

impl Services {
    /// What a node has before anything is configured: every mission is refused.
    pub fn deny_all() -> Services {
        Services {
            policy: Arc::new(crate::ports::DenyAll),
            tools: Arc::new(crate::ports::NoTools),
            reasoners: Arc::new(crate::ports::NoReasoners),
        }
    }
}

/// What the engine's parts share.
pub(crate) struct Shared {
    pub(crate) services: Services,
    /// Set when the engine shuts down; every task watches it.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// The engine's long-lived tasks (actors, the commit forwarder), awaited on shutdown.
    pub(crate) tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(crate) missions: RwLock<BTreeMap<MissionId, Arc<Mission>>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) signer: Arc<Signer>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) entropy: Arc<dyn Entropy>,
    pub(crate) trust: TrustSet,
    pub(crate) events: EventHub,
    pub(crate) options: Options,
    pub(crate) agents: RwLock<BTreeMap<AgentId, (AgentInfo, agent::Mailbox)>>,
    /// Missions whose records were pruned, as the node's `missions.pruned` entries
    /// describe them.
    pub(crate) pruned: RwLock<BTreeMap<MissionId, PrunedMission>>,
    /// One prune at a time, so two cannot plan over the same missions.
    pub(crate) pruning: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Appends `entries` to `agent`'s stream starting at exactly `first_seq`, and publishes
    /// them once durable.
    pub(crate) async fn append(
        &self,
        agent: AgentId,
        first_seq: u64,
        entries: Vec<(Kind, Vec<u8>)>,
    ) -> Result<AppendReceipt, Error> {
        let now = self.clock.now();
        let batch: Vec<NewEntry> = entries
            .iter()
            .enumerate()
            .map(|(i, (kind, body))| NewEntry {
                agent,
                seq: Seq::Exactly(first_seq + i as u64),
                kind: kind.clone(),
                recorded_at: now,
                body: body.clone(),
            })
            .collect();
        // Subscribers hear of the entries from the store's commit stream, in ledger order.
        Ok(self.store.append(batch).await?)
    }

    pub(crate) fn track(&self, task: tokio::task::JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    pub(crate) fn agent_info(&self, agent: AgentId) -> Result<AgentInfo, Error> {
        let agents = self.agents.read().unwrap_or_else(|e| e.into_inner());
        agents
            .get(&agent)
            .map(|(i, _)| i.clone())
            .ok_or_else(|| Error::NotFound(format!("agent {agent}")))
    }

    pub(crate) fn agent_namespace(&self, agent: AgentId) -> Option<Namespace> {
        self.agent_info(agent).ok().map(|i| i.namespace)
    }

    /// Publishes a mission's new state to readers of the index.
    pub(crate) fn index_mission(&self, mission: &Mission) {
        let mut missions = self.missions.write().unwrap_or_else(|e| e.into_inner());
        missions.insert(mission.id, Arc::new(mission.clone()));
    }

    pub(crate) fn mailbox(&self, agent: AgentId) -> Result<agent::Mailbox, Error> {
        let agents = self.agents.read().unwrap_or_else(|e| e.into_inner());
        agents
            .get(&agent)
            .map(|(_, m)| m.clone())
            .ok_or_else(|| Error::NotFound(format!("agent {agent}")))
    }
}

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
            pruned: RwLock::new(BTreeMap::new()),
            pruning: tokio::sync::Mutex::new(()),
        });
        let handle = Handle { shared };
        // Pruned missions no longer replay; their descriptions must be known before the
        // agents' records are read.
        handle.load_pruned().await?;
        let next = handle.shared.store.tree_size().await?;
        let forwarder = tokio::spawn(forward_commits(handle.shared.clone(), next));
        handle.shared.track(forwarder);
        // Agents' records are read and replayed several at a time (the store has a pool
        // of readers, and replay is CPU work), so a node with many agents is back
        // quickly after a crash. Each agent's actor starts once its record is replayed.
        let mut pending = handle.shared.store.heads().await?.into_iter();
        let mut reading = tokio::task::JoinSet::new();
        loop {
            while reading.len() < RECOVERY_CONCURRENCY {
                let Some(head) = pending.next() else { break };
                if head.agent.is_node() {
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
            if let Some((info, next_seq, live)) = recovered {
                handle.spawn_agent(info, next_seq, live);
            }
        }
        Ok(handle)
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
                    self.shared
                        .pruned
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    mission
                }
                Err(_) => {
                    let pruned = self
                        .shared
                        .pruned
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&id)
                        .map(PrunedMission::to_mission);
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

    fn spawn_agent(&self, info: AgentInfo, next_seq: u64, missions: Vec<Live>) {
        let mailbox = agent::spawn(self.shared.clone(), info.id, next_seq, missions);
        self.shared
            .agents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.id, (info, mailbox));
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
        let id = AgentId::generate(s.clock.as_ref(), s.entropy.as_ref());
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
        let body = serde_json::to_vec(&created).map_err(|e| Error::Invalid(e.to_string()))?;
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
        let mailbox = self.shared.mailbox(agent)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        mailbox
            .send(Inbox::Submit {
                spec: Box::new(spec),
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

/// A pruned mission as the node recorded it when it pruned its record: what listing it
/// needs. Part of the `missions.pruned` entry's body, so its JSON form only grows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedMission {
    pub id: MissionId,
    pub agent: AgentId,
    pub spec: MissionSpec,
    pub state: MissionState,
    pub submitted_at: Timestamp,
    pub deadline: Timestamp,
    pub steps: u32,
    pub tokens: u64,
    pub summary: Option<String>,
    pub reason: Option<String>,
    pub history: Vec<Change>,
    pub events: u64,
    pub state_hash: aura_core::hash::Hash,
    /// The ledger entries of its record whose bodies were pruned.
    pub entries: Vec<u64>,
    /// The entries kept whole: its submission and its final transition.
    pub kept: Vec<u64>,
}

impl PrunedMission {
    fn new(m: &Mission, entries: Vec<u64>, kept: Vec<u64>) -> PrunedMission {
        PrunedMission {
            id: m.id,
            agent: m.agent,
            spec: m.spec.clone(),
            state: m.state,
            submitted_at: m.submitted_at,
            deadline: m.deadline,
            steps: m.steps,
            tokens: m.tokens,
            summary: m.summary.clone(),
            reason: m.reason.clone(),
            history: m.history.clone(),
            events: m.events,
            state_hash: m.state_hash,
            entries,
            kept,
        }
    }

    /// The mission for the index: what was kept, with an empty conversation. Built through
    /// the kernel's own constructor so that fields the kernel adds get their defaults.
    fn to_mission(&self) -> Result<Mission, aura_kernel::KernelError> {
        let mut m = Mission::submitted(&Event::Submitted {
            mission: self.id,
            agent: self.agent,
            spec: self.spec.clone(),
            at: self.submitted_at,
        })?;
        m.state = self.state;
        m.deadline = self.deadline;
        m.steps = self.steps;
        m.tokens = self.tokens;
        m.summary.clone_from(&self.summary);
        m.reason.clone_from(&self.reason);
        m.history.clone_from(&self.history);
        m.events = self.events;
        m.state_hash = self.state_hash;
        Ok(m)
    }
}

/// The body of a `missions.pruned` entry.
#[derive(Debug, Serialize, Deserialize)]
struct PruneRecord {
    version: u32,
    older_than: Timestamp,
    missions: Vec<PrunedMission>,
}

const PRUNE_RECORD_VERSION: u32 = 1;

/// Bodies of `missions.pruned` entries are split to stay well under the ledger's limit.
const PRUNE_RECORD_BYTES: usize = 4 * 1024 * 1024;

/// What [`Handle::prune_missions`] did, or would do on a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub older_than: Timestamp,
    /// The missions whose records were (or would be) pruned.
    pub missions: Vec<MissionId>,
    /// Entries whose bodies were (or would be) removed.
    pub entries: u64,
    /// Entries of those missions kept whole.
    pub kept: u64,
    /// Bytes of bodies removed (or that would be).
    pub bytes_freed: u64,
}

impl Handle {
    /// The time by the engine's clock (an age given to `prune_missions` is counted from
    /// it).
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Whether the mission's record was pruned (it is listed, but cannot be replayed).
    pub fn is_pruned(&self, mission: MissionId) -> bool {
        self.shared
            .pruned
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&mission)
    }

    /// Prunes the records of finished missions (completed, failed or cancelled) whose last
    /// change is before `older_than`: every `mission.*` entry of such a mission loses its
    /// body except its `mission.submitted` entry and its final `mission.transition`,
    /// which stay whole so that the ledger itself still says what the mission was and how
    /// it ended. Before anything is removed, one `missions.pruned` entry in the node's
    /// stream records which missions and entries, and each mission as it ended (its
    /// state, history, steps, summary): that is how the node lists them after a restart,
    /// with `pruned` set. Missions still under way, entries of other kinds and missions
    /// pruned before are never touched, so pruning again prunes only what became old
    /// since. A dry run reports and changes nothing.
    pub async fn prune_missions(
        &self,
        older_than: Timestamp,
        dry_run: bool,
    ) -> Result<PruneReport, Error> {
        let _one_at_a_time = self.shared.pruning.lock().await;
        let mut by_agent: BTreeMap<AgentId, BTreeMap<MissionId, Arc<Mission>>> = BTreeMap::new();
        for m in self.missions(None, None, None) {
            let last_change = m.history.last().map_or(m.submitted_at, |c| c.at);
            if m.state.is_terminal() && last_change < older_than && !self.is_pruned(m.id) {
                by_agent.entry(m.agent).or_default().insert(m.id, m);
            }
        }
        let mut plans: Vec<PrunedMission> = Vec::new();
        let mut bytes = 0u64;
        for (agent, missions) in &by_agent {
            // Per mission: (index, is the submission, is a transition, body length).
            let mut records: BTreeMap<MissionId, Vec<(u64, bool, bool, usize)>> = BTreeMap::new();
            let mut from = 1;
            loop {
                let page = self.shared.store.agent_entries(*agent, from, 1000).await?;
                for e in &page {
                    if !e.entry.kind.as_str().starts_with("mission.") {
                        continue;
                    }
                    let Some(body) = e.body() else { continue };
                    let Ok(r) = Recorded::from_body(body) else {
                        continue;
                    };
                    if missions.contains_key(&r.mission) {
                        records.entry(r.mission).or_default().push((
                            e.entry.index,
                            matches!(r.event, Event::Submitted { .. }),
                            matches!(r.event, Event::Transition { .. }),
                            body.len(),
                        ));
                    }
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => from = last.entry.seq + 1,
                    _ => break,
                }
            }
            for (id, recs) in records {
                // Only the agent's candidates were collected.
                let Some(mission) = missions.get(&id) else {
                    continue;
                };
                let submitted = recs.iter().find(|r| r.1).map(|r| r.0);
                let last_transition = recs.iter().rev().find(|r| r.2).map(|r| r.0);
                let kept: Vec<u64> = submitted.into_iter().chain(last_transition).collect();
                let prune: Vec<&(u64, bool, bool, usize)> =
                    recs.iter().filter(|r| !kept.contains(&r.0)).collect();
                if prune.is_empty() {
                    continue;
                }
                bytes += prune.iter().map(|r| r.3 as u64).sum::<u64>();
                let entries = prune.iter().map(|r| r.0).collect();
                plans.push(PrunedMission::new(mission, entries, kept));
            }
        }
        let mut report = PruneReport {
            dry_run,
            older_than,
            missions: plans.iter().map(|p| p.id).collect(),
            entries: plans.iter().map(|p| p.entries.len() as u64).sum(),
            kept: plans.iter().map(|p| p.kept.len() as u64).sum(),
            bytes_freed: bytes,
        };
        if dry_run || plans.is_empty() {
            return Ok(report);
        }
        self.record_prune(older_than, &plans).await?;
        let indices = plans
            .iter()
            .flat_map(|p| p.entries.iter().copied())
            .collect();
        let outcome = self.shared.store.prune(indices).await?;
        report.bytes_freed = outcome.bytes_freed;
        for plan in plans {
            let mission = plan.to_mission()?;
            self.shared
                .pruned
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(plan.id, plan);
            // The index drops the conversation the record no longer holds, so the node
            // shows a pruned mission the same before and after a restart.
            self.shared.index_mission(&mission);
        }
        Ok(report)
    }

    /// Appends the `missions.pruned` entries describing `plans`, in one commit.
    async fn record_prune(
        &self,
        older_than: Timestamp,
        plans: &[PrunedMission],
    ) -> Result<(), Error> {
        let now = self.shared.clock.now();
        let kind = kind(KIND_MISSIONS_PRUNED);
        let mut batch = Vec::new();
        let mut chunk: Vec<PrunedMission> = Vec::new();
        let mut size = 0;
        let encode = |missions: Vec<PrunedMission>| {
            serde_json::to_vec(&PruneRecord {
                version: PRUNE_RECORD_VERSION,
                older_than,
                missions,
            })
            .map_err(|e| Error::Invalid(format!("cannot record the prune: {e}")))
        };
        for plan in plans {
            let len = serde_json::to_vec(plan)
                .map_err(|e| Error::Invalid(format!("cannot record the prune: {e}")))?
                .len();
            if !chunk.is_empty() && size + len > PRUNE_RECORD_BYTES {
                batch.push(encode(std::mem::take(&mut chunk))?);
                size = 0;
            }
            size += len;
            chunk.push(plan.clone());
        }
        batch.push(encode(chunk)?);
        let batch = batch
            .into_iter()
            .map(|body| NewEntry {
                agent: AgentId::NODE,
                seq: Seq::Next,
                kind: kind.clone(),
                recorded_at: now,
                body,
            })
            .collect();
        self.shared.store.append(batch).await?;
        Ok(())
    }

    /// Reads the node's `missions.pruned` entries into the engine's memory.
    async fn load_pruned(&self) -> Result<(), Error> {
        let mut pruned = BTreeMap::new();
        let mut from = 1;
        loop {
            let page = self
                .shared
                .store
                .agent_entries(AgentId::NODE, from, 1000)
                .await?;
            for e in &page {
                if e.entry.kind.as_str() != KIND_MISSIONS_PRUNED {
                    continue;
                }
                let record: PruneRecord = e
                    .body()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "the node's entry #{} does not say which missions were pruned",
                            e.entry.index
                        ))
                    })?;
                for m in record.missions {
                    pruned.insert(m.id, m);
                }
            }
            match page.last() {
                Some(last) if page.len() == 1000 => from = last.entry.seq + 1,
                _ => break,
            }
        }
        *self
            .shared
            .pruned
            .write()
            .unwrap_or_else(|e| e.into_inner()) = pruned;
        Ok(())
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// Turns a stored entry into a stream event.
pub fn stream_event(e: &StoredEntry) -> StreamEvent {
    let body = body_value(&e.entry.body);
    let mission = body
        .get("mission")
        .and_then(|m| m.as_str())
        .and_then(|m| m.parse().ok());
    StreamEvent::Entry {
        seq: e.entry.index,
        agent: e.entry.agent,
        agent_seq: e.entry.seq,
        kind: e.entry.kind.to_string(),
        mission,
        recorded_at: e.entry.recorded_at,
        body,
    }
}

/// Publishes every commit to the hub in ledger order. If it ever falls behind the store's
/// commit stream, it reads what it missed from the ledger, so no entry is skipped.
async fn forward_commits(shared: Arc<Shared>, mut next: u64) {
    let mut rx = shared.store.subscribe();
    let mut stopping = shared.stopping.subscribe();
    loop {
        let received = tokio::select! {
            r = rx.recv() => r,
            _ = stopping.changed() => return,
        };
        let batch = match received {
            Ok(batch) => batch,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                catch_up(&shared, &mut next, u64::MAX).await;
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(first) = batch.entries.first().map(|e| e.entry.index) else {
            continue;
        };
        if first > next {
            catch_up(&shared, &mut next, first).await;
        }
        for e in &batch.entries {
            if e.entry.index == next {
                shared.events.publish(stream_event(e));
                next += 1;
            }
        }
    }
}

async fn catch_up(shared: &Shared, next: &mut u64, until: u64) {
    while *next < until {
        let Ok(entries) = shared.store.entries(*next, 1000).await else {
            return;
        };
        if entries.is_empty() {
            return;
        }
        for e in entries.iter().take_while(|e| e.entry.index < until) {
            shared.events.publish(stream_event(e));
            *next = e.entry.index + 1;
        }
        if entries.last().is_some_and(|e| e.entry.index + 1 >= until) {
            return;
        }
    }
}

fn info_from(id: AgentId, created: Created, at: Timestamp) -> AgentInfo {
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
