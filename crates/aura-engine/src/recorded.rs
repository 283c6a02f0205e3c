//! Read-only views of the agents and missions recorded in the store that this engine does
//! not run: in a cluster, the agents of the shards other nodes hold. Any node answers
//! reads about them from the shared database (their records are the truth), without
//! starting an actor or touching the engine's index, so a read never takes an agent from
//! the node that runs it.
//!
//! Each call reads the records again: there is no index of another node's missions yet,
//! so a cluster-wide listing costs one replay of every mission recorded elsewhere
//! (docs/cluster.md, "Not yet").

use std::collections::BTreeMap;

use aura_core::{AgentId, MissionId};
use aura_kernel::{Mission, Recorded};
use aura_store::{EntryRef, Head};

use crate::error::Error;
use crate::handle::{Created, Handle, KIND_CREATED, info_from};
use crate::shared::AgentInfo;

/// Records are read a page at a time.
const PAGE: usize = 1000;

impl Handle {
    /// The agents recorded in the store whose actors do not run here, optionally only
    /// `only`; streams that are not agents' are left out.
    pub async fn recorded_agents(&self, only: Option<AgentId>) -> Result<Vec<AgentInfo>, Error> {
        let mut out = Vec::new();
        for head in self.elsewhere(only).await? {
            if let Some(info) = self.recorded_agent(head.agent).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Every mission of the agents recorded in the store whose actors do not run here
    /// (optionally only `only`'s), as its record replays now, newest first. A mission
    /// whose record does not replay is left out (fail closed), as recovery leaves it.
    pub async fn recorded_missions(&self, only: Option<AgentId>) -> Result<Vec<Mission>, Error> {
        let mut out = Vec::new();
        for head in self.elsewhere(only).await? {
            if self.recorded_agent(head.agent).await?.is_none() {
                continue;
            }
            out.extend(self.replay_recorded(head.agent).await?);
        }
        out.sort_by_key(|m| std::cmp::Reverse(m.id));
        Ok(out)
    }

    /// A mission this engine does not run, read from its agent's record in the store.
    pub async fn recorded_mission(&self, id: MissionId) -> Result<Option<Mission>, Error> {
        Ok(self
            .recorded_missions(None)
            .await?
            .into_iter()
            .find(|m| m.id == id))
    }

    /// The heads of the streams whose agents do not run here.
    async fn elsewhere(&self, only: Option<AgentId>) -> Result<Vec<Head>, Error> {
        Ok(self
            .shared
            .store
            .heads()
            .await?
            .into_iter()
            .filter(|h| !h.agent.is_node() && only.is_none_or(|a| a == h.agent))
            .filter(|h| !self.running(h.agent))
            .collect())
    }

    /// An agent from the first entry of its stream; `None` for a stream that is not an
    /// agent's.
    async fn recorded_agent(&self, agent: AgentId) -> Result<Option<AgentInfo>, Error> {
        let Some(first) = self
            .shared
            .store
            .entry(EntryRef::AgentSeq(agent, 1))
            .await?
            .filter(|e| e.entry.kind.as_str() == KIND_CREATED)
        else {
            return Ok(None);
        };
        let created: Created = serde_json::from_slice(&first.entry.body)
            .map_err(|e| Error::Invalid(format!("the record of {agent} is unreadable: {e}")))?;
        Ok(Some(info_from(agent, created, first.entry.recorded_at)))
    }

    /// Every mission of `agent`, replayed from its record; nothing is indexed or resumed.
    async fn replay_recorded(&self, agent: AgentId) -> Result<Vec<Mission>, Error> {
        let mut records: BTreeMap<MissionId, Vec<(u64, Recorded)>> = BTreeMap::new();
        let mut from = 1;
        loop {
            let page = self.shared.store.agent_entries(agent, from, PAGE).await?;
            for e in &page {
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
                Some(last) if page.len() == PAGE => from = last.entry.seq + 1,
                _ => break,
            }
        }
        let mut out = Vec::new();
        for (id, recs) in records {
            match aura_kernel::replay(recs.iter().map(|(i, r)| (*i, r))) {
                Ok(mission) => out.push(mission),
                // A pruned mission is known by the description its pruning recorded.
                Err(_) => {
                    if let Some(Ok(mission)) = self.shared.pruned.mission(id) {
                        out.push(mission);
                    }
                }
            }
        }
        Ok(out)
    }
}
