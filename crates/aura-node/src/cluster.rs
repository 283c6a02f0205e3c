//! A node's membership in a cluster on PostgreSQL: the lease manager that takes, renews
//! and gives up shard leases, tells the engine which agents it may run, and advertises
//! the node (its URL, region, models and load) in a heartbeat.
//!
//! The database is the only coordinator (docs/cluster.md). Each round, every third of a
//! lease, the manager:
//!
//! 1. drops the leases it could not renew in time (their local deadline passed: the
//!    database may already have given the shard to another node), stopping their agents;
//! 2. renews the others in one statement, on the database's clock, and stops the agents
//!    of any it lost (expired or taken);
//! 3. records its heartbeat;
//! 4. takes its fair share: about `SHARDS / live nodes` shards, taking free or expired
//!    ones when it has fewer, giving the extra ones up when it has more (a node joined),
//!    so the cluster rebalances as nodes join and leave; after taking shards it asks the
//!    engine to adopt their agents, which replays their records and resumes their
//!    unfinished missions.
//!
//! An agent's actor also asks [`Leases::holds`] before each transaction, so an actor that
//! was busy when its lease ran out stops before it does anything more; and every append
//! checks the shard's epoch in the database (`postgres::Options::fenced`), so a paused or
//! partitioned node whose lease moved can never commit: that is the fence that holds
//! whatever this task manages to do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aura_core::AgentId;
use aura_engine::Handle as Engine;
use aura_store::postgres::{Advert, Lease, PgStore, SHARDS, shard_of};

/// The default lease: a dead node's agents resume elsewhere within about this plus a
/// third of it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

/// How the manager runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a lease lasts unless renewed (renewed every third of it).
    pub lease: Duration,
    /// Where this node's HTTP API answers, as other nodes should reach it.
    pub url: String,
    pub region: String,
    /// The models this node holds, as `name@digest` (the package digest, hex): what it
    /// advertises when it has no host to ask.
    pub models: Vec<String>,
    /// The host of this node's models: asked again at every heartbeat, so that a model
    /// installed or removed while the node runs is advertised as it is.
    pub host: Option<Arc<aura_host::ModelHost>>,
}

/// How a node advertises a model it holds: its name and its package's digest.
pub fn advertised(card: &aura_host::ModelCard) -> String {
    format!("{}@{}", card.name, card.digest.to_hex())
}

/// Whether an advertised model (`name@digest`, or a bare name from an older node) is the
/// model a request names (by name, as the OpenAI API names models).
pub fn advert_matches(advert: &str, requested: &str) -> bool {
    advert.split_once('@').map_or(advert, |(name, _)| name) == requested
}

/// The leases this node holds, with the local deadline of each: the instant its last
/// renewal was sent plus a little less than a lease, before which the database cannot
/// have given the shard away. What the engine asks before each transaction.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<u32, (u64, Instant)>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (u64, Instant)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this node holds `shard`'s lease and its deadline has not passed.
    pub fn holds_shard(&self, shard: u32) -> bool {
        self.lock()
            .get(&shard)
            .is_some_and(|(_, until)| Instant::now() < *until)
    }

    /// The shards held now, in order.
    pub fn shards(&self) -> Vec<u32> {
        let mut shards: Vec<u32> = self.lock().keys().copied().collect();
        shards.sort_unstable();
        shards
    }

    fn leases(&self) -> Vec<Lease> {
        let mut leases: Vec<Lease> = self
            .lock()
            .iter()
            .map(|(shard, (epoch, _))| Lease {
                shard: *shard,
                epoch: *epoch,
            })
            .collect();
        leases.sort_unstable_by_key(|l| l.shard);
        leases
    }

    fn insert(&self, lease: Lease, until: Instant) {
        self.lock().insert(lease.shard, (lease.epoch, until));
    }

    fn remove(&self, shard: u32) -> Option<Lease> {
        self.lock()
            .remove(&shard)
            .map(|(epoch, _)| Lease { shard, epoch })
    }

    /// Removes and returns the leases whose deadline has passed.
    fn take_overdue(&self, now: Instant) -> Vec<u32> {
        let mut held = self.lock();
        let overdue: Vec<u32> = held
            .iter()
            .filter(|(_, (_, until))| now >= *until)
            .map(|(s, _)| *s)
            .collect();
        for s in &overdue {
            held.remove(s);
        }
        overdue
    }
}

impl aura_engine::Ownership for Leases {
    fn holds(&self, agent: AgentId) -> bool {
        self.holds_shard(shard_of(agent))
    }
}

/// The running lease manager. Dropping it stops the task without giving the leases up
/// (they run out); [`Service::shutdown`] gives them up, so the others take over at once.
#[derive(Debug)]
pub struct Service {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Manager>>,
}

#[derive(Debug)]
struct Manager {
    options: Options,
    store: PgStore,
    engine: Engine,
    leases: Arc<Leases>,
    /// The listing of the host's models under way, if one is: it runs beside the rounds,
    /// since hashing a newly installed model's files may take longer than a lease.
    listing: Option<tokio::task::JoinHandle<Option<Vec<String>>>>,
}

impl Service {
    /// Starts managing this node's leases. Before it returns, the node has sent its first
    /// heartbeat and holds its share, or at least one shard (waiting up to three leases
    /// for the other nodes to give some up), unless the database does not answer.
    pub async fn start(
        options: Options,
        store: PgStore,
        engine: Engine,
        leases: Arc<Leases>,
    ) -> Service {
        let mut options = options;
        // The models are listed once before the first heartbeat (hashing their files the
        // first time), then beside the rounds.
        if let Some(host) = &options.host
            && let Ok(cards) = host.list_async().await
        {
            options.models = cards.iter().map(advertised).collect();
        }
        let mut manager = Manager {
            options,
            store,
            engine,
            leases,
            listing: None,
        };
        let begun = Instant::now();
        loop {
            manager.round().await;
            if !manager.leases.shards().is_empty() || begun.elapsed() >= manager.options.lease * 3 {
                break;
            }
            tokio::time::sleep(manager.period()).await;
        }
        let (stop, mut stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(manager.period()) => manager.round().await,
                    _ = stopping.changed() => return manager,
                }
            }
        });
        Service {
            stop,
            task: Some(task),
        }
    }

    /// Stops renewing and gives every lease up, and marks the node gone, so the other
    /// nodes take its shards at once. Call it after the engine stopped its agents.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let Some(task) = self.task.take() else { return };
        let Ok(manager) = task.await else { return };
        for shard in manager.leases.shards() {
            if let Some(lease) = manager.leases.remove(shard) {
                let _ = manager.store.release(lease).await;
            }
        }
        manager.engine.relinquish();
        let _ = manager.store.leave().await;
    }
}

impl Manager {
    fn period(&self) -> Duration {
        self.options.lease / 3
    }

    /// The local deadline of a lease whose renewal was sent at `sent`: a tenth of a lease
    /// short of the database's, for clocks that run at slightly different rates.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.options.lease - self.options.lease / 10
    }

    async fn round(&mut self) {
        // 1. Leases not renewed in time are no longer ours to trust.
        let overdue = self.leases.take_overdue(Instant::now());
        if !overdue.is_empty() {
            for shard in &overdue {
                self.store.abandon(*shard);
            }
            let stopped = self.engine.relinquish();
            tracing::warn!(
                shards = ?overdue,
                agents = stopped,
                "lost the leases of shards not renewed in time: their agents stopped"
            );
        }
        // 2. Renew the rest in one statement.
        let held = self.leases.leases();
        if !held.is_empty() {
            let sent = Instant::now();
            match self.store.renew_all(&held, self.options.lease).await {
                Ok(kept) => {
                    let until = self.deadline(sent);
                    for lease in &kept {
                        self.leases.insert(*lease, until);
                    }
                    let lost: Vec<u32> = held
                        .iter()
                        .filter(|l| !kept.contains(l))
                        .map(|l| l.shard)
                        .collect();
                    if !lost.is_empty() {
                        for shard in &lost {
                            self.leases.remove(*shard);
                        }
                        let stopped = self.engine.relinquish();
                        tracing::warn!(
                            shards = ?lost,
                            agents = stopped,
                            "lost the leases of shards that expired or moved: their agents stopped"
                        );
                    }
                }
                // The leases run out here at their deadlines unless a later round renews
                // them.
                Err(e) => tracing::warn!(error = %e, "cannot renew the shard leases"),
            }
        }
        // 3. The heartbeat.
        let running = self.engine.agents(None).len() as u64;
        let missions = self
            .engine
            .missions(None, None, None)
            .iter()
            .filter(|m| !m.state.is_terminal())
            .count() as u64;
        self.refresh_models();
        let advert = Advert {
            url: self.options.url.clone(),
            region: self.options.region.clone(),
            models: self.options.models.clone(),
            agents: running,
            missions,
        };
        if let Err(e) = self.store.heartbeat(&advert).await {
            tracing::warn!(error = %e, "cannot record the node's heartbeat");
            return;
        }
        // 4. The fair share.
        let live = match self.store.live_nodes(self.options.lease).await {
            Ok(live) => live.len().max(1) as u32,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's nodes");
                return;
            }
        };
        let share = SHARDS.div_ceil(live) as usize;
        let held = self.leases.shards();
        if held.len() > share {
            self.give_up(&held[share..]).await;
        } else if held.len() < share {
            self.take(share - held.len()).await;
        }
    }

    /// Takes the models the last listing found, if it finished, and starts the next one;
    /// never waits for one. A listing that failed keeps the models advertised before.
    fn refresh_models(&mut self) {
        use futures_util::FutureExt as _;
        let Some(host) = &self.options.host else {
            return;
        };
        if let Some(task) = self.listing.take() {
            if !task.is_finished() {
                self.listing = Some(task);
                return;
            }
            if let Some(Ok(Some(models))) = task.now_or_never() {
                self.options.models = models;
            }
        }
        let host = host.clone();
        self.listing = Some(tokio::spawn(async move {
            host.list_async()
                .await
                .ok()
                .map(|cards| cards.iter().map(advertised).collect())
        }));
    }

    /// Gives up `shards` (a node joined): their agents stop first, then the leases are
    /// released so that a node short of its share takes them at once.
    async fn give_up(&mut self, shards: &[u32]) {
        let leases: Vec<Lease> = shards
            .iter()
            .filter_map(|s| self.leases.remove(*s))
            .collect();
        let stopped = self.engine.relinquish();
        for lease in &leases {
            if let Err(e) = self.store.release(*lease).await {
                // It runs out by itself.
                tracing::warn!(shard = lease.shard, error = %e, "cannot release a lease");
            }
        }
        tracing::info!(shards = ?shards, agents = stopped, "gave shards up to rebalance the cluster");
    }

    /// Takes up to `wanted` free or expired shards, then adopts their agents.
    async fn take(&mut self, wanted: usize) {
        let states = match self.store.shards().await {
            Ok(states) => states,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the shards' leases");
                return;
            }
        };
        // Nodes start their search at different shards, so that nodes taking shards at
        // the same time seldom race for the same ones.
        let me = self.store.node_id();
        let offset = u32::from(me.as_bytes()[0]) % SHARDS;
        let mut free: Vec<u32> = states
            .iter()
            .filter(|s| s.owner.is_none() || s.expires_in_ms.is_none())
            .map(|s| s.shard)
            .collect();
        free.sort_unstable_by_key(|s| (s + SHARDS - offset) % SHARDS);
        let mut taken = Vec::new();
        for shard in free {
            if taken.len() >= wanted {
                break;
            }
            let sent = Instant::now();
            match self.store.acquire(shard, self.options.lease).await {
                Ok(Some(lease)) => {
                    self.leases.insert(lease, self.deadline(sent));
                    taken.push(lease);
                }
                // Another node was quicker.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(shard, error = %e, "cannot take a shard's lease");
                    break;
                }
            }
        }
        if taken.is_empty() {
            return;
        }
        match self.engine.adopt().await {
            Ok(agents) => tracing::info!(
                shards = ?taken.iter().map(|l| (l.shard, l.epoch)).collect::<Vec<_>>(),
                agents,
                "took shards: their agents resume here"
            ),
            Err(e) => {
                // The agents could not be read: give the shards back rather than hold
                // them idle, so another node (or a later round) resumes them.
                tracing::warn!(error = %e, "cannot adopt the agents of the shards taken; giving them back");
                let shards: Vec<u32> = taken.iter().map(|l| l.shard).collect();
                self.give_up(&shards).await;
            }
        }
    }
}

// Routing requests to the node that serves them lives in `forward.rs`; the names stay
// here, where the cluster's other parts are.
pub(crate) use crate::forward::route;
pub use crate::forward::{REGIONS_HEADER, RouteOptions, Routing, SERVED_BY_HEADER};
