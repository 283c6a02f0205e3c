//! What the engine's parts share: how it runs ([`Options`]), what it needs from outside
//! ([`Services`]), what it knows about agents ([`AgentInfo`]), and the state the handle
//! and every agent's actor hold in common (`Shared`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aura_core::door::{Clock, Entropy};
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId, PublicKey, Timestamp};
use aura_identity::{Credential, Level, Namespace, Signed, TrustSet};
use aura_kernel::Mission;
use aura_ledger::entry::Kind;
use aura_store::{AppendReceipt, NewEntry, Seq, Store};
use serde::Serialize;

use crate::command::Mailbox;
use crate::error::Error;
use crate::events::EventHub;
use crate::ports::{Policy, Reasoners, Tools};
use crate::prune::Pruned;

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
    /// Prepares a workspace when a mission starts and before each of its tool calls (so
    /// a workspace file system unmounted by a reboot is mounted again before a tool
    /// writes there); without it, a plain directory, mode 0700.
    pub workspace_setup: Option<std::sync::Arc<dyn aura_tools::WorkspaceSetup>>,
    /// Which agents this engine may run, when it shares the ledger with other nodes (a
    /// cluster's shard leases). Without it, every agent in the ledger is this engine's.
    pub ownership: Option<Arc<dyn Ownership>>,
    /// This node's region label in a cluster (its enrollment's), which missions' boundaries
    /// (`MissionSpec::regions`) are checked against and policy sees as
    /// `context.node_region`. `None` outside a cluster: a mission with a boundary is then
    /// refused, since no region can be shown to lie inside it.
    pub region: Option<String>,
}

/// Which agents an engine may run now: in a cluster, those whose shard this node holds
/// a live lease of. Asked before every transaction an agent's actor takes, so that an
/// actor whose lease is gone stops before it does anything more.
pub trait Ownership: Send + Sync + std::fmt::Debug {
    fn holds(&self, agent: AgentId) -> bool;
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keystore: None,
            credential_validity: Duration::from_secs(365 * 24 * 3600),
            inbox_capacity: 1024,
            event_capacity: 4096,
            workspaces: std::env::temp_dir().join("aura-workspaces"),
            workspace_setup: None,
            ownership: None,
            region: None,
        }
    }
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
    pub(crate) agents: RwLock<BTreeMap<AgentId, (AgentInfo, Mailbox)>>,
    /// Missions whose records were pruned, and the door pruning goes through.
    pub(crate) pruned: Pruned,
    /// Each running actor's task, so that an agent whose lease is lost can be stopped at
    /// once, wherever it is in a transaction (as a crash would stop it).
    pub(crate) actors:
        std::sync::Mutex<std::collections::HashMap<AgentId, tokio::task::AbortHandle>>,
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

    /// Whether this engine may run `agent` now (always, outside a cluster).
    pub(crate) fn holds(&self, agent: AgentId) -> bool {
        self.options
            .ownership
            .as_ref()
            .is_none_or(|o| o.holds(agent))
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

    pub(crate) fn mailbox(&self, agent: AgentId) -> Result<Mailbox, Error> {
        let agents = self.agents.read().unwrap_or_else(|e| e.into_inner());
        agents
            .get(&agent)
            .map(|(_, m)| m.clone())
            .ok_or_else(|| Error::NotFound(format!("agent {agent}")))
    }
}
