//! Pruning: removing the bulky bodies of old finished missions from the ledger while
//! keeping what listing them needs.
//!
//! [`Pruned`] is the engine's memory of the missions whose records were pruned, as the
//! node's `missions.pruned` entries describe them, and the one door pruning goes through.
//! It needs only the store and the clock, so the handle and the recovery that use it do
//! not reach back into it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use aura_core::door::Clock;
use aura_core::{AgentId, MissionId, Timestamp};
use aura_kernel::{Change, Event, Mission, MissionSpec, MissionState, Recorded};
use aura_ledger::entry::Kind;
use aura_store::{NewEntry, Seq, Store};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The node-stream entry that records a prune: which missions, which entries, and each
/// mission as it ended.
pub const KIND_MISSIONS_PRUNED: &str = "missions.pruned";

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
    pub(crate) fn to_mission(&self) -> Result<Mission, aura_kernel::KernelError> {
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

/// What [`crate::Handle::prune_missions`] did, or would do on a dry run.
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

/// The missions whose records were pruned, and the lock that lets one prune run at a
/// time (so two cannot plan over the same missions).
#[derive(Debug, Default)]
pub(crate) struct Pruned {
    missions: RwLock<BTreeMap<MissionId, PrunedMission>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Pruned {
    /// Reads the node's `missions.pruned` entries.
    pub(crate) async fn load(store: &dyn Store) -> Result<Pruned, Error> {
        let mut pruned = BTreeMap::new();
        let mut from = 1;
        loop {
            let page = store.agent_entries(AgentId::NODE, from, 1000).await?;
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
        Ok(Pruned {
            missions: RwLock::new(pruned),
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the mission's record was pruned.
    pub(crate) fn contains(&self, mission: MissionId) -> bool {
        self.missions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&mission)
    }

    /// The mission as its prune described it, for the index; `None` if it was not pruned.
    pub(crate) fn mission(
        &self,
        mission: MissionId,
    ) -> Option<Result<Mission, aura_kernel::KernelError>> {
        self.missions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mission)
            .map(PrunedMission::to_mission)
    }

    /// Forgets a mission recorded as pruned whose record is whole after all: the prune
    /// itself did not happen (it is recorded first), and the next prune does it again.
    pub(crate) fn forget(&self, mission: MissionId) {
        self.missions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&mission);
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
    ///
    /// `known` gives the missions the engine knows (asked once this prune holds the
    /// lock); `index` is told each pruned mission as the index should now show it.
    pub(crate) async fn prune(
        &self,
        store: &dyn Store,
        clock: &dyn Clock,
        known: impl FnOnce() -> Vec<Arc<Mission>>,
        index: impl Fn(&Mission),
        older_than: Timestamp,
        dry_run: bool,
    ) -> Result<PruneReport, Error> {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let mut by_agent: BTreeMap<AgentId, BTreeMap<MissionId, Arc<Mission>>> = BTreeMap::new();
        for m in known() {
            let last_change = m.history.last().map_or(m.submitted_at, |c| c.at);
            if m.state.is_terminal() && last_change < older_than && !self.contains(m.id) {
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
                let page = store.agent_entries(*agent, from, 1000).await?;
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
        record(store, clock, older_than, &plans).await?;
        let indices = plans
            .iter()
            .flat_map(|p| p.entries.iter().copied())
            .collect();
        let outcome = store.prune(indices).await?;
        report.bytes_freed = outcome.bytes_freed;
        for plan in plans {
            let mission = plan.to_mission()?;
            self.missions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(plan.id, plan);
            // The index drops the conversation the record no longer holds, so the node
            // shows a pruned mission the same before and after a restart.
            index(&mission);
        }
        Ok(report)
    }
}

/// Appends the `missions.pruned` entries describing `plans`, in one commit.
async fn record(
    store: &dyn Store,
    clock: &dyn Clock,
    older_than: Timestamp,
    plans: &[PrunedMission],
) -> Result<(), Error> {
    let now = clock.now();
    let kind = Kind::new(KIND_MISSIONS_PRUNED).unwrap_or_else(|_| unreachable!("a valid kind"));
    let mut batch = Vec::new();
    let mut chunk: Vec<PrunedMission> = Vec::new();
    let mut size = 0;
    let encode = |missions: Vec<PrunedMission>| {
        aura_core::jcs::to_vec(&PruneRecord {
            version: PRUNE_RECORD_VERSION,
            older_than,
            missions,
        })
        .map_err(|e| Error::Invalid(format!("cannot record the prune: {e}")))
    };
    for plan in plans {
        let len = aura_core::jcs::to_vec(plan)
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
    store.append(batch).await?;
    Ok(())
}
