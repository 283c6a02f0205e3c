//! The PostgreSQL backend: one log shared by the nodes of a cluster.
//!
//! The database is the only coordinator. Every node runs a [`PgStore`] on the same
//! database; appends from all of them go into one ledger (one Merkle tree, one sequence
//! of leaf indices) because each group commit locks the log's one sequencer row in the
//! same transaction as its entries (see [`writer`]). Each checkpoint is signed by the node
//! that integrated it, with a time strictly later than the last.
//!
//! The ledger's trusted key is the **cluster key**, created when the cluster is (see
//! [`PgStore::init_cluster`]). It enrolls node keys in the log itself, as
//! `node.joined` entries ([`aura_ledger::cluster`]), so a verifier or an export of the
//! whole cluster needs the cluster key alone; [`Store::node_key`] is therefore the cluster
//! key. A node opens the store only once its key is enrolled.
//!
//! The promises are the SQLite store's: a caller hears "ok" only after `COMMIT`
//! returned (PostgreSQL's default `synchronous_commit = on` makes that durable), and its
//! batch is covered by the signed checkpoint it receives; a batch is wholly stored or
//! wholly absent. [`Store::subscribe`] hears the commits made through this store only,
//! not those of other nodes. Pruning is not offered yet.
//!
//! Connections use no TLS: reach the database over a Unix socket or a private network.

mod schema;
#[cfg(feature = "test-util")]
pub mod testing;
mod verify;
mod writer;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aura_core::door::Clock;
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, PublicKey};
use aura_ledger::SignedCheckpoint;
use aura_ledger::cluster::{self, Enrollment};
use aura_ledger::entry::{self, Entry, Kind, PrunedEntry};
use aura_ledger::merkle;
use aura_ledger::proof::{ConsistencyProof, InclusionProof};
use aura_ledger::verify::Summary;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{GenericClient, IsolationLevel};

use crate::{
    AppendReceipt, EntryRef, Error, Head, NewEntry, Pruned, Seq, Store, StoredEntry, Verification,
};

const META_CLUSTER_KEY: &str = "cluster_public_key";

/// Commits a slow subscriber may fall behind before it is told it lagged.
const COMMIT_BACKLOG: usize = 4096;

/// Tiles are kept at every `TILE_LEVELS`-th level of the tree, as in the SQLite store.
pub(crate) const TILE_LEVELS: u8 = 8;

/// The number of shards agents hash to (migration 2 creates their rows).
pub const SHARDS: u32 = 64;

/// The shard an agent belongs to: the first four bytes of the SHA-256 of its id, modulo
/// [`SHARDS`].
pub fn shard_of(agent: AgentId) -> u32 {
    let h = Hash::sha256(agent.as_bytes());
    let b = h.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % SHARDS
}

/// A shard leased to this node, at the epoch it was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub shard: u32,
    pub epoch: u64,
}

/// A shard's lease as the database has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ShardState {
    pub shard: u32,
    /// The node that holds (or last held) the lease.
    pub owner: Option<aura_core::NodeId>,
    pub epoch: u64,
    /// How long the lease has left; `None` once it expired (or was never taken).
    pub expires_in_ms: Option<u64>,
}

/// What a node says of itself in its heartbeat (see [`PgStore::heartbeat`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Advert {
    /// Where the node's HTTP API answers (`http://host:port`): other nodes send an
    /// agent's writes there while the node holds the agent's shard.
    pub url: String,
    pub region: String,
    /// The names of the models the node holds.
    pub models: Vec<String>,
    /// The agents whose actors the node runs.
    pub agents: u64,
    /// The non-terminal missions among them.
    pub missions: u64,
}

/// A node as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeState {
    pub node: aura_core::NodeId,
    #[serde(flatten)]
    pub advert: Advert,
    /// How long ago the node started serving, by the database's clock.
    pub up_ms: u64,
    /// How long ago its last heartbeat was, by the database's clock.
    pub heartbeat_ms: u64,
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most entries one group commit takes from the queue.
    pub max_group_entries: usize,
    /// Connections kept for reads.
    pub pool_size: usize,
    /// Fence appends by shard lease: an append to an agent is refused
    /// ([`Error::Fenced`]) unless this store holds the lease of the agent's shard at the
    /// epoch the database has, checked in the append's own transaction. The node's own
    /// stream and the cluster's are not fenced (any node appends to them with
    /// `Seq::Next`).
    pub fenced: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_group_entries: 8192,
            pool_size: 8,
            fenced: false,
        }
    }
}

/// Whether `url` names a PostgreSQL database (rather than a SQLite file).
pub fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The PostgreSQL store. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    cluster_key: PublicKey,
    signer_key: PublicKey,
    writer: Option<writer::Handle>,
    commits: tokio::sync::broadcast::Sender<Arc<crate::Committed>>,
    /// The shard leases this store holds, by shard: what the writer's fence checks.
    leases: Arc<std::sync::Mutex<std::collections::HashMap<u32, u64>>>,
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, Error> {
    tokio_postgres::Config::from_str(url)
        .map_err(|e| Error::InvalidEntry(format!("not a PostgreSQL connection string: {e}")))
}

fn corrupt(detail: impl std::fmt::Display) -> Error {
    Error::Inconsistent(detail.to_string())
}

fn migration_error(e: schema::MigrationError) -> Error {
    match e {
        schema::MigrationError::Postgres(e) => Error::Postgres(e),
        other => Error::Inconsistent(other.to_string()),
    }
}

impl PgStore {
    /// Creates the cluster in an empty database (or checks that it is this cluster's):
    /// migrates the schema and records the cluster key. Idempotent for the same key;
    /// refuses a database that belongs to another cluster.
    pub async fn init_cluster(url: &str, cluster_key: PublicKey) -> Result<(), Error> {
        let config = parse_url(url)?;
        let mut client = writer::connect(&config).await?;
        schema::migrate(&mut client)
            .await
            .map_err(migration_error)?;
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&META_CLUSTER_KEY, &cluster_key.to_bytes().as_slice()],
            )
            .await?;
        let stored = read_cluster_key(&client).await?;
        if stored != cluster_key {
            return Err(Error::WrongNode {
                expected: stored.fingerprint(),
                found: cluster_key.fingerprint(),
            });
        }
        Ok(())
    }

    /// The cluster key of the database at `url`, or `None` if it holds no cluster yet
    /// (migrating its schema first, so an empty database is ready to hold one).
    pub async fn cluster_of(url: &str) -> Result<Option<PublicKey>, Error> {
        let config = parse_url(url)?;
        let mut client = writer::connect(&config).await?;
        schema::migrate(&mut client)
            .await
            .map_err(migration_error)?;
        match read_cluster_key(&client).await {
            Ok(key) => Ok(Some(key)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Enrolls `node` in the cluster: appends a `node.joined` entry signed by the cluster
    /// key, integrated (and its checkpoint signed) by the cluster key itself. Enrolling a
    /// key already enrolled does nothing.
    pub async fn enroll(
        url: &str,
        cluster: Arc<Signer>,
        node: PublicKey,
        region: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<(), Error> {
        let store = PgStore::open_as(
            url,
            cluster.clone(),
            clock.clone(),
            Options::default(),
            true,
        )
        .await?;
        if store.enrolled().await?.iter().any(|e| e.node_key == node) {
            return Ok(());
        }
        let body = Enrollment {
            cluster_key: cluster.public_key(),
            node_key: node,
            time: clock.now(),
            region: region.to_owned(),
        }
        .sign(&cluster)
        .map_err(|e| Error::InvalidEntry(e.to_string()))?;
        store
            .append(vec![NewEntry {
                agent: cluster::cluster_agent(&cluster.public_key()),
                seq: Seq::Next,
                kind: Kind::new(cluster::KIND).map_err(|e| Error::InvalidEntry(e.to_string()))?,
                recorded_at: clock.now(),
                body,
            }])
            .await?;
        Ok(())
    }

    /// Opens the cluster's store as the node whose key `signer` holds, which must be
    /// enrolled. Migrates the schema if this Aura knows newer migrations.
    pub async fn open(
        url: &str,
        signer: Arc<Signer>,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Result<Self, Error> {
        PgStore::open_as(url, signer, clock, options, false).await
    }

    async fn open_as(
        url: &str,
        signer: Arc<Signer>,
        clock: Arc<dyn Clock>,
        options: Options,
        as_cluster: bool,
    ) -> Result<Self, Error> {
        let config = parse_url(url)?;
        let mut client = writer::connect(&config).await?;
        schema::migrate(&mut client)
            .await
            .map_err(migration_error)?;
        let cluster_key = read_cluster_key(&client).await?;
        let signer_key = signer.public_key();
        if as_cluster && signer_key != cluster_key {
            return Err(Error::WrongNode {
                expected: cluster_key.fingerprint(),
                found: signer_key.fingerprint(),
            });
        }
        let pool = pool(&config, options.pool_size)?;
        let (commits, _) = tokio::sync::broadcast::channel(COMMIT_BACKLOG);
        let leases = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let mut store = PgStore {
            inner: Arc::new(Inner {
                pool,
                cluster_key,
                signer_key,
                writer: None,
                commits: commits.clone(),
                leases: leases.clone(),
            }),
        };
        if !as_cluster
            && !store
                .enrolled()
                .await?
                .iter()
                .any(|e| e.node_key == signer_key)
        {
            return Err(Error::NotEnrolled {
                node: signer_key.fingerprint(),
            });
        }
        let handle = writer::spawn(writer::Writer {
            commits,
            config,
            client: Some(client),
            statements: None,
            signer,
            clock,
            max_group_entries: options.max_group_entries,
            fence: options.fenced.then(|| writer::Fence {
                owner: signer_key.node_id().as_bytes().to_vec(),
                held: leases,
                exempt: [AgentId::NODE, cluster::cluster_agent(&cluster_key)],
            }),
        });
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.writer = Some(handle);
        }
        Ok(store)
    }

    /// Opens the cluster's store for reading only: needs no key.
    pub async fn open_read_only(url: &str, options: Options) -> Result<Self, Error> {
        let config = parse_url(url)?;
        let pool = pool(&config, options.pool_size)?;
        let client = pool
            .get()
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let cluster_key = read_cluster_key(&**client).await?;
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                cluster_key,
                signer_key: cluster_key,
                writer: None,
                commits: tokio::sync::broadcast::channel(1).0,
                leases: Arc::default(),
            }),
        })
    }

    /// Takes (or renews) the lease of `shard` for `ttl` on the database's clock, if it is
    /// free, expired or already this node's. Taking a shard from anyone (or taking back an
    /// expired lease of one's own) bumps its epoch, which fences every append made under
    /// the old one; renewing a live lease keeps it. `None`: another node holds it.
    pub async fn acquire(&self, shard: u32, ttl: Duration) -> Result<Option<Lease>, Error> {
        let me = self.inner.signer_key.node_id();
        let c = self.client().await?;
        let row = c
            .query_opt(
                "UPDATE shards SET \
                   epoch = CASE WHEN owner = $2 AND expires_at > now() THEN epoch ELSE epoch + 1 END, \
                   owner = $2, \
                   expires_at = now() + $3::FLOAT8 * interval '1 second' \
                 WHERE shard = $1 AND (owner IS NULL OR owner = $2 OR expires_at <= now()) \
                 RETURNING epoch",
                &[&(shard as i32), &me.as_bytes().as_slice(), &ttl.as_secs_f64()],
            )
            .await?;
        let Some(row) = row else {
            self.forget(shard);
            return Ok(None);
        };
        let lease = Lease {
            shard,
            epoch: row.get::<_, i64>(0) as u64,
        };
        self.inner
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shard, lease.epoch);
        Ok(Some(lease))
    }

    /// Extends a lease this node holds; `false` (and the lease is dropped here) when it
    /// expired or moved, after which appends to the shard's agents are fenced.
    pub async fn renew(&self, lease: Lease, ttl: Duration) -> Result<bool, Error> {
        let me = self.inner.signer_key.node_id();
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE shards SET expires_at = now() + $4::FLOAT8 * interval '1 second' \
                 WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()",
                &[
                    &(lease.shard as i32),
                    &me.as_bytes().as_slice(),
                    &(lease.epoch as i64),
                    &ttl.as_secs_f64(),
                ],
            )
            .await?;
        if n == 0 {
            self.forget(lease.shard);
        }
        Ok(n == 1)
    }

    /// Gives a lease up at once, so another node may take the shard without waiting.
    pub async fn release(&self, lease: Lease) -> Result<(), Error> {
        self.forget(lease.shard);
        let me = self.inner.signer_key.node_id();
        let c = self.client().await?;
        c.execute(
            "UPDATE shards SET expires_at = '-infinity' WHERE shard = $1 AND owner = $2 AND epoch = $3",
            &[&(lease.shard as i32), &me.as_bytes().as_slice(), &(lease.epoch as i64)],
        )
        .await?;
        Ok(())
    }

    /// Extends every lease in `leases` in one statement; returns those still held. A
    /// lease that expired or moved is dropped here (appends to its agents are fenced from
    /// now on) and left out of the answer.
    pub async fn renew_all(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<Lease>, Error> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let me = self.inner.signer_key.node_id();
        let shards: Vec<i32> = leases.iter().map(|l| l.shard as i32).collect();
        let epochs: Vec<i64> = leases.iter().map(|l| l.epoch as i64).collect();
        let c = self.client().await?;
        let rows = c
            .query(
                "UPDATE shards s SET expires_at = now() + $4::FLOAT8 * interval '1 second' \
                 FROM UNNEST($1::INT[], $2::BIGINT[]) AS held(shard, epoch) \
                 WHERE s.shard = held.shard AND s.epoch = held.epoch \
                   AND s.owner = $3 AND s.expires_at > now() \
                 RETURNING s.shard",
                &[
                    &shards,
                    &epochs,
                    &me.as_bytes().as_slice(),
                    &ttl.as_secs_f64(),
                ],
            )
            .await?;
        let renewed: std::collections::HashSet<u32> =
            rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect();
        let mut kept = Vec::new();
        for lease in leases {
            if renewed.contains(&lease.shard) {
                kept.push(*lease);
            } else {
                self.forget(lease.shard);
            }
        }
        Ok(kept)
    }

    /// Drops a lease here without telling the database: appends to the shard's agents are
    /// fenced from now on. For a node that can no longer be sure it holds the lease (its
    /// renewal did not come back in time); the lease runs out in the database by itself.
    pub fn abandon(&self, shard: u32) {
        self.forget(shard);
    }

    /// This node's id, as the `shards` and `nodes` tables name it.
    pub fn node_id(&self) -> aura_core::NodeId {
        self.inner.signer_key.node_id()
    }

    /// Records this node's heartbeat: what it advertises, at the database's `now()`.
    pub async fn heartbeat(&self, advert: &Advert) -> Result<(), Error> {
        let me = self.inner.signer_key.node_id();
        let c = self.client().await?;
        c.execute(
            "INSERT INTO nodes (node, url, region, models, agents, missions, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, now(), now()) \
             ON CONFLICT (node) DO UPDATE SET url = $2, region = $3, models = $4, agents = $5, \
               missions = $6, heartbeat_at = now()",
            &[
                &me.as_bytes().as_slice(),
                &advert.url,
                &advert.region,
                &advert.models,
                &at(advert.agents),
                &at(advert.missions),
            ],
        )
        .await?;
        Ok(())
    }

    /// Marks this node gone (its heartbeat far in the past), so that the others count it
    /// out of their fair shares at once; for a node that stops cleanly.
    pub async fn leave(&self) -> Result<(), Error> {
        let me = self.inner.signer_key.node_id();
        let c = self.client().await?;
        c.execute(
            "UPDATE nodes SET heartbeat_at = 'epoch' WHERE node = $1",
            &[&me.as_bytes().as_slice()],
        )
        .await?;
        Ok(())
    }

    /// Every node that ever sent a heartbeat, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeState>, Error> {
        let c = self.client().await?;
        c.query(
            "SELECT node, url, region, models, agents, missions, \
                    GREATEST(EXTRACT(EPOCH FROM (now() - started_at)), 0)::FLOAT8, \
                    LEAST(GREATEST(EXTRACT(EPOCH FROM (now() - heartbeat_at)), 0), 1e12)::FLOAT8 \
             FROM nodes ORDER BY node",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| {
            let node = <[u8; 16]>::try_from(r.get::<_, &[u8]>(0))
                .map(aura_core::NodeId::from_bytes)
                .map_err(|_| corrupt("a node's id is malformed"))?;
            let ms = |secs: f64| (secs * 1000.0) as u64;
            Ok(NodeState {
                node,
                advert: Advert {
                    url: r.get(1),
                    region: r.get(2),
                    models: r.get(3),
                    agents: r.get::<_, i64>(4).max(0) as u64,
                    missions: r.get::<_, i64>(5).max(0) as u64,
                },
                up_ms: ms(r.get(6)),
                heartbeat_ms: ms(r.get(7)),
            })
        })
        .collect()
    }

    /// The nodes whose last heartbeat is younger than `within`, by the database's clock.
    pub async fn live_nodes(&self, within: Duration) -> Result<Vec<aura_core::NodeId>, Error> {
        let c = self.client().await?;
        c.query(
            "SELECT node FROM nodes \
             WHERE heartbeat_at > now() - $1::FLOAT8 * interval '1 second' ORDER BY node",
            &[&within.as_secs_f64()],
        )
        .await?
        .into_iter()
        .map(|r| {
            <[u8; 16]>::try_from(r.get::<_, &[u8]>(0))
                .map(aura_core::NodeId::from_bytes)
                .map_err(|_| corrupt("a node's id is malformed"))
        })
        .collect()
    }

    /// The node holding `shard`'s live lease now and the URL it advertised in its
    /// heartbeat; `None` while no node holds it.
    pub async fn owner(&self, shard: u32) -> Result<Option<(aura_core::NodeId, String)>, Error> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT s.owner, n.url FROM shards s JOIN nodes n ON n.node = s.owner \
                 WHERE s.shard = $1 AND s.expires_at > now()",
                &[&(shard as i32)],
            )
            .await?;
        row.map(|r| {
            let node = <[u8; 16]>::try_from(r.get::<_, &[u8]>(0))
                .map(aura_core::NodeId::from_bytes)
                .map_err(|_| corrupt("a shard's owner is malformed"))?;
            Ok((node, r.get(1)))
        })
        .transpose()
    }

    /// Every shard's lease as the database has it now.
    pub async fn shards(&self) -> Result<Vec<ShardState>, Error> {
        let c = self.client().await?;
        c.query(
            "SELECT shard, owner, epoch, \
                    CASE WHEN expires_at > now() \
                      THEN EXTRACT(EPOCH FROM (expires_at - now()))::FLOAT8 ELSE -1 END \
             FROM shards ORDER BY shard",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| {
            let owner: Option<&[u8]> = r.get(1);
            let owner = owner
                .map(|b| {
                    <[u8; 16]>::try_from(b)
                        .map(aura_core::NodeId::from_bytes)
                        .map_err(|_| corrupt("a shard's owner is malformed"))
                })
                .transpose()?;
            let left: f64 = r.get(3);
            Ok(ShardState {
                shard: r.get::<_, i32>(0) as u32,
                owner,
                epoch: r.get::<_, i64>(2) as u64,
                expires_in_ms: (left > 0.0).then_some((left * 1000.0) as u64),
            })
        })
        .collect()
    }

    fn forget(&self, shard: u32) {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&shard);
    }

    /// The key this store signs checkpoints with (the node's).
    pub fn signer_key(&self) -> PublicKey {
        self.inner.signer_key
    }

    /// Every enrollment in the log, verified with the cluster key, in log order.
    pub async fn enrolled(&self) -> Result<Vec<Enrollment>, Error> {
        let agent = cluster::cluster_agent(&self.inner.cluster_key);
        let entries = self.agent_entries(agent, 1, usize::MAX).await?;
        let mut out = Vec::new();
        for e in entries {
            if e.entry.kind.as_str() != cluster::KIND {
                continue;
            }
            let body = e.body().ok_or(Error::Pruned {
                index: e.entry.index,
            })?;
            out.push(
                Enrollment::open(body, &self.inner.cluster_key).map_err(|err| {
                    corrupt(format!("enrollment #{} is not valid: {err}", e.entry.index))
                })?,
            );
        }
        Ok(out)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))
    }
}

fn pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool, Error> {
    let manager = Manager::from_config(
        config.clone(),
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| Error::Unavailable(e.to_string()))
}

async fn read_cluster_key(client: &impl GenericClient) -> Result<PublicKey, Error> {
    let row = client
        .query_opt(
            "SELECT value FROM meta WHERE key = $1",
            &[&META_CLUSTER_KEY],
        )
        .await?
        .ok_or_else(|| {
            Error::NotFound("a cluster in this database (run `aura init --store <url>`)".into())
        })?;
    let bytes: &[u8] = row.get(0);
    <[u8; 32]>::try_from(bytes)
        .ok()
        .and_then(|b| PublicKey::from_bytes(&b).ok())
        .ok_or_else(|| corrupt("the database's cluster key is malformed"))
}

pub(crate) fn agent_from(bytes: &[u8]) -> Result<AgentId, Error> {
    <[u8; 16]>::try_from(bytes)
        .map(AgentId::from_bytes)
        .map_err(|_| corrupt("malformed agent id"))
}

pub(crate) fn hash_from(bytes: &[u8]) -> Result<Hash, Error> {
    Hash::from_slice(bytes).ok_or_else(|| corrupt("malformed hash"))
}

pub(crate) fn checkpoint_from(bytes: &[u8]) -> Result<SignedCheckpoint, Error> {
    SignedCheckpoint::decode(bytes).map_err(|e| corrupt(format!("malformed checkpoint: {e}")))
}

pub(crate) fn stored_entry(hash: &[u8], raw: Vec<u8>, pruned: bool) -> Result<StoredEntry, Error> {
    let undecodable = |e| corrupt(format!("an entry does not decode: {e}"));
    let (entry, pruned) = if pruned {
        let stub = PrunedEntry::decode(&raw).map_err(undecodable)?;
        let entry = Entry {
            index: stub.index,
            agent: stub.agent,
            seq: stub.seq,
            prev: stub.prev,
            kind: stub.kind,
            recorded_at: stub.recorded_at,
            body: Vec::new(),
        };
        (
            entry,
            Some(Pruned {
                body_len: stub.body_len,
            }),
        )
    } else {
        (Entry::decode(&raw).map_err(undecodable)?, None)
    };
    Ok(StoredEntry {
        entry,
        hash: hash_from(hash)?,
        encoded: raw,
        pruned,
    })
}

fn rows_to_entries(rows: Vec<tokio_postgres::Row>) -> Result<Vec<StoredEntry>, Error> {
    rows.into_iter()
        .map(|r| stored_entry(r.get::<_, &[u8]>(0), r.get(1), r.get(2)))
        .collect()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn at(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn latest_checkpoint(c: &impl GenericClient) -> Result<Option<SignedCheckpoint>, Error> {
    let row = c
        .query_opt(
            "SELECT signed FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
            &[],
        )
        .await?;
    row.map(|r| checkpoint_from(r.get::<_, &[u8]>(0)))
        .transpose()
}

async fn checkpoint_at(
    c: &impl GenericClient,
    size: u64,
) -> Result<Option<SignedCheckpoint>, Error> {
    let row = c
        .query_opt(
            "SELECT signed FROM checkpoints WHERE tree_size = $1",
            &[&at(size)],
        )
        .await?;
    row.map(|r| checkpoint_from(r.get::<_, &[u8]>(0)))
        .transpose()
}

/// The hash of the perfect subtree `(level, index)`, from the tiles or the leaves below it.
async fn perfect_hash(c: &impl GenericClient, level: u8, index: u64) -> Result<Hash, Error> {
    let base = (level / TILE_LEVELS) * TILE_LEVELS;
    let span = level - base;
    let first = index << span;
    let count = 1u64 << span;
    let mut nodes = Vec::with_capacity(count as usize);
    if base == 0 {
        for row in c
            .query(
                "SELECT hash FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                &[&at(first), &at(first + count)],
            )
            .await?
        {
            nodes.push(entry::leaf_hash(&hash_from(row.get::<_, &[u8]>(0))?));
        }
    } else {
        for row in c
            .query(
                "SELECT hash FROM merkle_tiles WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
                &[&i16::from(base), &at(first), &at(first + count)],
            )
            .await?
        {
            nodes.push(hash_from(row.get::<_, &[u8]>(0))?);
        }
    }
    if nodes.len() as u64 != count {
        return Err(Error::Inconsistent(format!(
            "Merkle subtree at level {level} index {index} is incomplete ({} of {count} nodes)",
            nodes.len()
        )));
    }
    merkle::reduce_perfect(&nodes).ok_or_else(|| Error::Inconsistent("bad subtree".into()))
}

async fn range_hash(c: &impl GenericClient, start: u64, end: u64) -> Result<Hash, Error> {
    let mut parts = Vec::new();
    for id in merkle::perfect_decomposition(start, end) {
        parts.push(perfect_hash(c, id.level, id.index).await?);
    }
    Ok(merkle::fold_range(&parts))
}

#[async_trait]
impl Store for PgStore {
    /// The cluster key: the key the whole log verifies with.
    fn node_key(&self) -> PublicKey {
        self.inner.cluster_key
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<crate::Committed>> {
        self.inner.commits.subscribe()
    }

    async fn append(&self, batch: Vec<NewEntry>) -> Result<AppendReceipt, Error> {
        let writer = self.inner.writer.as_ref().ok_or(Error::ReadOnly)?;
        writer.append(batch).await
    }

    async fn tree_size(&self) -> Result<u64, Error> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT tree_size FROM log WHERE id = 1", &[])
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn head(&self, agent: AgentId) -> Result<Option<Head>, Error> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT seq, hash FROM heads WHERE agent = $1",
                &[&agent.as_bytes().as_slice()],
            )
            .await?;
        row.map(|r| {
            Ok(Head {
                agent,
                seq: r.get::<_, i64>(0) as u64,
                hash: hash_from(r.get::<_, &[u8]>(1))?,
            })
        })
        .transpose()
    }

    async fn heads(&self) -> Result<Vec<Head>, Error> {
        let c = self.client().await?;
        c.query("SELECT agent, seq, hash FROM heads ORDER BY agent", &[])
            .await?
            .into_iter()
            .map(|r| {
                Ok(Head {
                    agent: agent_from(r.get::<_, &[u8]>(0))?,
                    seq: r.get::<_, i64>(1) as u64,
                    hash: hash_from(r.get::<_, &[u8]>(2))?,
                })
            })
            .collect()
    }

    async fn entry(&self, at_ref: EntryRef) -> Result<Option<StoredEntry>, Error> {
        let c = self.client().await?;
        let rows = match at_ref {
            EntryRef::Index(i) => {
                c.query(
                    "SELECT hash, raw, pruned FROM entries WHERE idx = $1",
                    &[&at(i)],
                )
                .await?
            }
            EntryRef::AgentSeq(agent, seq) => {
                c.query(
                    "SELECT hash, raw, pruned FROM entries WHERE agent = $1 AND seq = $2",
                    &[&agent.as_bytes().as_slice(), &at(seq)],
                )
                .await?
            }
        };
        Ok(rows_to_entries(rows)?.into_iter().next())
    }

    async fn entries(&self, from_index: u64, n: usize) -> Result<Vec<StoredEntry>, Error> {
        let c = self.client().await?;
        rows_to_entries(
            c.query(
                "SELECT hash, raw, pruned FROM entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
                &[&at(from_index), &limit(n)],
            )
            .await?,
        )
    }

    async fn agent_entries(
        &self,
        agent: AgentId,
        from_seq: u64,
        n: usize,
    ) -> Result<Vec<StoredEntry>, Error> {
        let c = self.client().await?;
        rows_to_entries(
            c.query(
                "SELECT hash, raw, pruned FROM entries WHERE agent = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                &[&agent.as_bytes().as_slice(), &at(from_seq), &limit(n)],
            )
            .await?,
        )
    }

    async fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, Error> {
        let c = self.client().await?;
        latest_checkpoint(&**c).await
    }

    async fn checkpoint(&self, tree_size: u64) -> Result<Option<SignedCheckpoint>, Error> {
        let c = self.client().await?;
        checkpoint_at(&**c, tree_size).await
    }

    async fn checkpoints(&self, after_size: u64, n: usize) -> Result<Vec<SignedCheckpoint>, Error> {
        let c = self.client().await?;
        c.query(
            "SELECT signed FROM checkpoints WHERE tree_size > $1 ORDER BY tree_size LIMIT $2",
            &[&at(after_size), &limit(n)],
        )
        .await?
        .into_iter()
        .map(|r| checkpoint_from(r.get::<_, &[u8]>(0)))
        .collect()
    }

    async fn inclusion_proof(
        &self,
        index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, Error> {
        let mut c = self.client().await?;
        // One snapshot for the checkpoint and every hash of the path.
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let checkpoint = match tree_size {
            Some(size) => checkpoint_at(&*tx, size)
                .await?
                .ok_or_else(|| Error::NotFound(format!("a signed checkpoint of size {size}")))?,
            None => latest_checkpoint(&*tx)
                .await?
                .ok_or_else(|| Error::NotFound("any entry".into()))?,
        };
        let size = checkpoint.checkpoint.tree_size;
        if index >= size {
            return Err(Error::NotFound(format!(
                "entry #{index} in the signed tree of {size} entries"
            )));
        }
        let row = tx
            .query_opt(
                "SELECT raw, pruned FROM entries WHERE idx = $1",
                &[&at(index)],
            )
            .await?
            .ok_or_else(|| Error::NotFound(format!("entry #{index}")))?;
        if row.get::<_, bool>(1) {
            return Err(Error::Pruned { index });
        }
        let mut path = Vec::new();
        for (a, b) in
            merkle::inclusion_ranges(index, size).map_err(|e| Error::Inconsistent(e.to_string()))?
        {
            path.push(range_hash(&*tx, a, b).await?);
        }
        Ok(InclusionProof {
            entry: row.get(0),
            path,
            checkpoint,
        })
    }

    async fn consistency_proof(
        &self,
        old: u64,
        new: Option<u64>,
    ) -> Result<ConsistencyProof, Error> {
        let mut c = self.client().await?;
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let new_cp = match new {
            Some(size) => checkpoint_at(&*tx, size)
                .await?
                .ok_or_else(|| Error::NotFound(format!("a signed checkpoint of size {size}")))?,
            None => latest_checkpoint(&*tx)
                .await?
                .ok_or_else(|| Error::NotFound("any checkpoint".into()))?,
        };
        let old_cp = checkpoint_at(&*tx, old)
            .await?
            .ok_or_else(|| Error::NotFound(format!("a signed checkpoint of size {old}")))?;
        let ranges =
            merkle::consistency_ranges(old, new_cp.checkpoint.tree_size).map_err(|_| {
                Error::NotFound(format!("a checkpoint of size {old} before the newer one"))
            })?;
        let mut path = Vec::new();
        for (a, b) in ranges {
            path.push(range_hash(&*tx, a, b).await?);
        }
        Ok(ConsistencyProof {
            old: old_cp,
            new: new_cp,
            path,
        })
    }

    async fn verify(
        &self,
        progress: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Verification, Error> {
        let mut c = self.client().await?;
        verify::run(&mut c, self.inner.cluster_key, None, progress.as_ref()).await
    }

    async fn export(
        &self,
        out: Box<dyn std::io::Write + Send>,
        progress: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Summary, Error> {
        let mut c = self.client().await?;
        match verify::run(&mut c, self.inner.cluster_key, Some(out), progress.as_ref()).await? {
            Verification::Ok(summary) => Ok(summary),
            Verification::Failed(f) => Err(Error::Inconsistent(format!("refusing to export: {f}"))),
        }
    }
}
