//! The writer task: group commit against the shared log.
//!
//! Callers send requests over a channel. The task takes the first, then everything else
//! already waiting (up to a limit), and commits the group in one transaction:
//!
//! 1. lock the log's one sequencer row (`SELECT ... FOR UPDATE`): from here until
//!    `COMMIT`, no other writer of any node can assign leaf indices, so the tree size,
//!    frontier and last checkpoint time read with the lock are the current ones;
//! 2. read the heads of the group's agents, and lay out each request in arrival order
//!    against them, or refuse it whole (a sequence conflict, an oversized body), which
//!    leaves the others untouched;
//! 3. write the entries, heads, Merkle tiles, one checkpoint signed by this node (its
//!    time strictly later than the last one's, whichever node signed that) and the new
//!    sequencer row, then `COMMIT`; PostgreSQL's `synchronous_commit` makes it durable
//!    before it returns;
//! 4. only then answer each caller.
//!
//! The lock is taken once per group, so its cost (a round trip and a row lock) is shared
//! by every entry of the group, as the fsync is. Every other writer of the cluster waits
//! while it is held, so the transaction holds it for as few round trips as it can: the
//! statements are prepared once per connection, and each phase's statements are sent
//! together (tokio-postgres pipelines requests polled at once; PostgreSQL still runs them
//! one after another, in the order sent): the fence's shard rows, the sequencer row and
//! the heads in one round trip, then every write in a second, then `COMMIT`.
//!
//! A failure before `COMMIT` rolls the transaction back: the callers hear
//! [`Error::Postgres`] and nothing was stored. A failure of `COMMIT` itself (a lost
//! connection, say) leaves the outcome unknown: the callers hear
//! [`Error::CommitFailed`]. Either way the writer holds no state of its own to reload;
//! the next group reads everything again under the lock. A broken connection is replaced
//! before the next group.

use std::collections::HashMap;
use std::sync::Arc;

use aura_core::AgentId;
use aura_core::Timestamp;
use aura_core::door::Clock;
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_ledger::Checkpoint;
use aura_ledger::entry::{self, Entry, MAX_BODY_LEN};
use aura_ledger::merkle::{decode_frontier, encode_frontier};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use super::TILE_LEVELS;
use crate::{AppendReceipt, Appended, Committed, Error, NewEntry, Seq, StoredEntry};

type Reply = oneshot::Sender<Result<AppendReceipt, Error>>;

/// A request's outcome while its group is laid out: the range of rows it owns, or why it
/// was refused.
type Layout = Result<(usize, usize), Error>;

pub(crate) struct Request {
    entries: Vec<NewEntry>,
    reply: Reply,
}

/// What the store holds to talk to the writer.
#[derive(Debug)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Request>,
}

impl Handle {
    pub(crate) async fn append(&self, entries: Vec<NewEntry>) -> Result<AppendReceipt, Error> {
        if entries.is_empty() {
            return Err(Error::InvalidEntry(
                "an append needs at least one entry".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { entries, reply })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

pub(crate) struct Writer {
    pub(crate) commits: tokio::sync::broadcast::Sender<Arc<Committed>>,
    pub(crate) config: tokio_postgres::Config,
    pub(crate) client: Option<Client>,
    /// `client`'s prepared statements; `None` until prepared, and again after a reconnect.
    pub(crate) statements: Option<Statements>,
    pub(crate) signer: Arc<Signer>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) max_group_entries: usize,
    pub(crate) fence: Option<Fence>,
}

/// The shard-lease fence (see `Options::fenced`).
pub(crate) struct Fence {
    /// This node's id, as the `shards.owner` column holds it.
    pub(crate) owner: Vec<u8>,
    /// The leases the store holds: shard to epoch.
    pub(crate) held: Arc<std::sync::Mutex<HashMap<u32, u64>>>,
    /// Streams any node may append to (with `Seq::Next`): never fenced.
    pub(crate) exempt: [AgentId; 2],
}

/// The writer's statements, prepared once per connection: a statement sent as text costs
/// a parse round trip first, paid by every group while it holds the sequencer lock.
pub(crate) struct Statements {
    fence: Statement,
    lock: Statement,
    heads: Statement,
    entries: Statement,
    upsert_heads: Statement,
    tiles: Statement,
    checkpoint: Statement,
    advance: Statement,
}

impl Statements {
    /// Prepares them all in one round trip.
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        let (fence, lock, heads, entries, upsert_heads, tiles, checkpoint, advance) = tokio::try_join!(
            client.prepare(
                "SELECT shard, epoch FROM shards \
                 WHERE shard = ANY($1) AND owner = $2 AND expires_at > now() FOR SHARE"
            ),
            client.prepare("SELECT tree_size, frontier, last_time FROM log WHERE id = 1 FOR UPDATE"),
            client.prepare("SELECT agent, seq, hash FROM heads WHERE agent = ANY($1)"),
            client.prepare(
                "INSERT INTO entries (idx, agent, seq, hash, raw) \
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[], $3::BIGINT[], $4::BYTEA[], $5::BYTEA[])"
            ),
            client.prepare(
                "INSERT INTO heads (agent, seq, hash) \
                 SELECT * FROM UNNEST($1::BYTEA[], $2::BIGINT[], $3::BYTEA[]) \
                 ON CONFLICT (agent) DO UPDATE SET seq = excluded.seq, hash = excluded.hash"
            ),
            client.prepare(
                "INSERT INTO merkle_tiles (level, idx, hash) \
                 SELECT * FROM UNNEST($1::SMALLINT[], $2::BIGINT[], $3::BYTEA[])"
            ),
            client.prepare("INSERT INTO checkpoints (tree_size, signed, node) VALUES ($1, $2, $3)"),
            client.prepare("UPDATE log SET tree_size = $1, frontier = $2, last_time = $3 WHERE id = 1"),
        )?;
        Ok(Statements {
            fence,
            lock,
            heads,
            entries,
            upsert_heads,
            tiles,
            checkpoint,
            advance,
        })
    }
}

/// Starts the writer task; it ends when the last [`Handle`] is dropped.
pub(crate) fn spawn(writer: Writer) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(writer.run(rx));
    Handle { tx }
}

/// Opens a connection and drives it on a task of its own.
pub(crate) async fn connect(config: &tokio_postgres::Config) -> Result<Client, Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        // The connection ends with an error when the server goes away; the client's next
        // query reports it to whoever uses it.
        let _ = connection.await;
    });
    Ok(client)
}

/// One entry laid out for the commit.
struct Row {
    appended: Appended,
    entry: Entry,
    raw: Vec<u8>,
}

/// The group laid out: rows, heads, tiles and each request's outcome.
struct Group {
    rows: Vec<Row>,
    heads: HashMap<AgentId, (u64, Hash)>,
    tiles: Vec<(u8, u64, Hash)>,
    outcomes: Vec<(Reply, Layout)>,
    size: u64,
    root: Hash,
    frontier: Vec<u8>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = rx.recv().await {
            let mut count = first.entries.len();
            let mut group = vec![first];
            while count < self.max_group_entries {
                match rx.try_recv() {
                    Ok(r) => {
                        count += r.entries.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group).await;
        }
    }

    async fn commit_group(&mut self, group: Vec<Request>) {
        let ready = ready(&mut self.client, &mut self.statements, &self.config).await;
        let (client, statements) = match ready {
            Ok(ready) => ready,
            Err(e) => {
                for r in group {
                    let _ = r.reply.send(Err(Error::Unavailable(e.clone())));
                }
                return;
            }
        };
        match commit(
            client,
            statements,
            &self.signer,
            self.clock.as_ref(),
            self.fence.as_ref(),
            group,
        )
        .await
        {
            Ok((laid, checkpoint)) => {
                let Group { rows, outcomes, .. } = laid;
                if let Some(cp) = checkpoint {
                    if self.commits.receiver_count() > 0 {
                        let entries = rows
                            .iter()
                            .map(|r| StoredEntry {
                                entry: r.entry.clone(),
                                encoded: r.raw.clone(),
                                hash: r.appended.hash,
                                pruned: None,
                            })
                            .collect();
                        let _ = self.commits.send(Arc::new(Committed {
                            entries,
                            checkpoint: cp,
                        }));
                    }
                    for (reply, outcome) in outcomes {
                        let answer = outcome.map(|(from, to)| AppendReceipt {
                            entries: rows[from..to].iter().map(|r| r.appended).collect(),
                            checkpoint: cp,
                        });
                        let _ = reply.send(answer);
                    }
                } else {
                    for (reply, outcome) in outcomes {
                        let refusal = outcome.err().unwrap_or_else(|| {
                            Error::InvalidEntry("an append needs at least one entry".into())
                        });
                        let _ = reply.send(Err(refusal));
                    }
                }
            }
            Err((failure, replies)) => {
                for (reply, outcome) in replies {
                    let answer = match outcome {
                        Ok(_) => Err(failure.to_error()),
                        Err(refused) => Err(refused),
                    };
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

/// The writer's connection, made again if it broke, with its statements prepared (again,
/// after a reconnect); or why there is none.
async fn ready<'w>(
    client: &'w mut Option<Client>,
    statements: &'w mut Option<Statements>,
    config: &tokio_postgres::Config,
) -> Result<(&'w mut Client, &'w Statements), String> {
    if client.as_ref().is_some_and(Client::is_closed) {
        *client = None;
    }
    let client = match client {
        Some(c) => c,
        None => {
            *statements = None;
            client.insert(connect(config).await.map_err(|e| e.to_string())?)
        }
    };
    let statements = match statements {
        Some(st) => st,
        None => statements.insert(
            Statements::prepare(client)
                .await
                .map_err(|e| e.to_string())?,
        ),
    };
    Ok((client, statements))
}

/// How a group's transaction failed.
enum Failure {
    /// Before `COMMIT`: rolled back, nothing stored.
    Before(Arc<tokio_postgres::Error>),
    /// `COMMIT` itself: stored or not, nobody knows.
    Commit(Arc<tokio_postgres::Error>),
    /// The database holds something the writer cannot read.
    Inconsistent(String),
}

impl Failure {
    fn to_error(&self) -> Error {
        match self {
            Failure::Before(e) => Error::Unavailable(format!("the append was rolled back: {e}")),
            Failure::Commit(e) => Error::CommitFailed(e.clone()),
            Failure::Inconsistent(s) => Error::Inconsistent(s.clone()),
        }
    }
}

type Outcomes = Vec<(Reply, Layout)>;

/// Lays out and commits one group; see the module documentation.
async fn commit(
    client: &mut Client,
    st: &Statements,
    signer: &Signer,
    clock: &dyn Clock,
    fence: Option<&Fence>,
    group: Vec<Request>,
) -> Result<(Group, Option<aura_ledger::SignedCheckpoint>), (Failure, Outcomes)> {
    let before = |e: tokio_postgres::Error| Failure::Before(Arc::new(e));
    // The replies travel with the error so that every caller is answered.
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(e) => return Err((before(e), accept_all(group))),
    };
    let mut agents: Vec<Vec<u8>> = group
        .iter()
        .flat_map(|r| r.entries.iter().map(|e| e.agent.as_bytes().to_vec()))
        .collect();
    agents.sort_unstable();
    agents.dedup();
    let shards = fence.map(|f| fenced_shards(f, &group)).unwrap_or_default();
    // One round trip for the three reads, run by PostgreSQL in this order. The fence
    // first: the shard rows of the group's agents, read FOR SHARE in this transaction, so
    // no node can take one of these shards until this one commits, and a shard taken
    // before is seen taken. Then the sequencer row, FOR UPDATE: from here on no other
    // writer assigns leaf indices. Then the heads of the group's agents, read after the
    // lock is held (each statement sees what was committed before it started).
    let fence_rows = async {
        match fence {
            Some(f) if !shards.is_empty() => tx.query(&st.fence, &[&shards, &f.owner]).await,
            _ => Ok(Vec::new()),
        }
    };
    let heads_params: [&(dyn ToSql + Sync); 1] = [&agents];
    let read = tokio::try_join!(
        fence_rows,
        tx.query_one(&st.lock, &[]),
        tx.query(&st.heads, &heads_params),
    );
    let (fence_rows, row, heads) = match read {
        Ok(read) => read,
        Err(e) => return Err((before(e), accept_all(group))),
    };
    // A request touching a shard this node does not hold at the database's epoch, live,
    // is refused whole.
    let (group, fenced) = match fence {
        None => (group, Vec::new()),
        Some(f) => split_by_fence(f, &fence_rows, group),
    };
    if group.is_empty() {
        let _ = tx.rollback().await;
        let mut laid = layout(Vec::new(), 0, aura_ledger::Frontier::new(), &HashMap::new());
        laid.outcomes = fenced;
        return Ok((laid, None));
    }
    let size = row.get::<_, i64>(0) as u64;
    let frontier = match decode_frontier(row.get::<_, &[u8]>(1)) {
        Ok(f) if f.size() == size => f,
        _ => {
            return Err((
                Failure::Inconsistent("the log's frontier does not match its size".into()),
                accept_all(group),
            ));
        }
    };
    let last_time = Timestamp::from_nanos(row.get::<_, i64>(2) as u64);
    let mut current = HashMap::new();
    for h in heads {
        let (Ok(agent), Some(hash)) = (
            <[u8; 16]>::try_from(h.get::<_, &[u8]>(0)),
            Hash::from_slice(h.get::<_, &[u8]>(2)),
        ) else {
            return Err((
                Failure::Inconsistent("a head row is malformed".into()),
                accept_all(group),
            ));
        };
        current.insert(
            AgentId::from_bytes(agent),
            (h.get::<_, i64>(1) as u64, hash),
        );
    }

    let mut laid = layout(group, size, frontier, &current);
    laid.outcomes.extend(fenced);
    if laid.rows.is_empty() {
        // Every request was refused; nothing to write.
        let _ = tx.rollback().await;
        return Ok((laid, None));
    }
    // Checkpoint times strictly increase across the cluster: a node whose clock is
    // behind the last signer's still signs a later time.
    let time = clock.now().max(Timestamp::from_nanos(
        last_time.as_nanos().saturating_add(1),
    ));
    let checkpoint = Checkpoint {
        node: signer.public_key().node_id(),
        tree_size: laid.size,
        root: laid.root,
        time,
    }
    .sign(signer);

    let written = write(&tx, st, &laid, &checkpoint, time).await;
    if let Err(e) = written {
        let outcomes = std::mem::take(&mut laid.outcomes);
        return Err((before(e), outcomes));
    }
    if let Err(e) = tx.commit().await {
        let outcomes = std::mem::take(&mut laid.outcomes);
        return Err((Failure::Commit(Arc::new(e)), outcomes));
    }
    Ok((laid, Some(checkpoint)))
}

/// The shards of the group's fenced agents, sorted.
fn fenced_shards(fence: &Fence, group: &[Request]) -> Vec<i32> {
    let mut shards: Vec<i32> = group
        .iter()
        .flat_map(|r| r.entries.iter().map(|e| e.agent))
        .filter(|a| !fence.exempt.contains(a))
        .map(|a| super::shard_of(a) as i32)
        .collect();
    shards.sort_unstable();
    shards.dedup();
    shards
}

/// Splits the group into the requests the fence lets through and the refusals of the
/// others, given the shard rows this node holds live (`rows`: shard, epoch).
fn split_by_fence(
    fence: &Fence,
    rows: &[tokio_postgres::Row],
    group: Vec<Request>,
) -> (Vec<Request>, Outcomes) {
    let held = fence.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let live: Vec<u32> = rows
        .iter()
        .filter(|r| held.get(&(r.get::<_, i32>(0) as u32)) == Some(&(r.get::<_, i64>(1) as u64)))
        .map(|r| r.get::<_, i32>(0) as u32)
        .collect();
    let mut through = Vec::new();
    let mut refused = Vec::new();
    for r in group {
        let stale = r
            .entries
            .iter()
            .map(|e| e.agent)
            .filter(|a| !fence.exempt.contains(a))
            .map(super::shard_of)
            .find(|s| !live.contains(s));
        match stale {
            None => through.push(r),
            Some(shard) => refused.push((r.reply, Err(Error::Fenced { shard }))),
        }
    }
    (through, refused)
}

fn accept_all(group: Vec<Request>) -> Outcomes {
    group.into_iter().map(|r| (r.reply, Ok((0, 0)))).collect()
}

/// Lays out each request in arrival order against `heads`, refusing a request whole
/// without touching the others.
fn layout(
    group: Vec<Request>,
    size: u64,
    mut frontier: aura_ledger::Frontier,
    heads: &HashMap<AgentId, (u64, Hash)>,
) -> Group {
    let mut next = size;
    let mut overlay: HashMap<AgentId, (u64, Hash)> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut tiles: Vec<(u8, u64, Hash)> = Vec::new();
    let mut outcomes: Outcomes = Vec::with_capacity(group.len());
    for request in group {
        let saved = (frontier.clone(), next, rows.len(), tiles.len());
        let mut touched: Vec<(AgentId, Option<(u64, Hash)>)> = Vec::new();
        let mut refusal = None;
        for new in request.entries {
            let head = overlay
                .get(&new.agent)
                .or_else(|| heads.get(&new.agent))
                .copied();
            let expected = head.map_or(1, |(s, _)| s + 1);
            if let Seq::Exactly(requested) = new.seq
                && requested != expected
            {
                refusal = Some(Error::SequenceConflict {
                    agent: new.agent,
                    expected,
                    requested,
                });
                break;
            }
            if new.body.len() > MAX_BODY_LEN {
                refusal = Some(Error::InvalidEntry(format!(
                    "a body of {} bytes is over the {MAX_BODY_LEN}-byte limit",
                    new.body.len()
                )));
                break;
            }
            let e = Entry {
                index: next,
                agent: new.agent,
                seq: expected,
                prev: head.map_or(Hash::ZERO, |(_, h)| h),
                kind: new.kind,
                recorded_at: new.recorded_at,
                body: new.body,
            };
            let raw = match e.encode() {
                Ok(raw) => raw,
                Err(err) => {
                    refusal = Some(Error::InvalidEntry(err.to_string()));
                    break;
                }
            };
            let hash = Entry::hash_encoded(&raw);
            if !touched.iter().any(|(a, _)| *a == e.agent) {
                touched.push((e.agent, overlay.get(&e.agent).copied()));
            }
            overlay.insert(e.agent, (expected, hash));
            frontier.push(entry::leaf_hash(&hash), |id, h| {
                if id.level.is_multiple_of(TILE_LEVELS) {
                    tiles.push((id.level, id.index, h));
                }
            });
            rows.push(Row {
                appended: Appended {
                    index: next,
                    agent: e.agent,
                    seq: expected,
                    hash,
                },
                entry: e,
                raw,
            });
            next += 1;
        }
        match refusal {
            None => outcomes.push((request.reply, Ok((saved.2, rows.len())))),
            Some(err) => {
                (frontier, next) = (saved.0, saved.1);
                rows.truncate(saved.2);
                tiles.truncate(saved.3);
                for (agent, before) in touched {
                    match before {
                        Some(v) => overlay.insert(agent, v),
                        None => overlay.remove(&agent),
                    };
                }
                outcomes.push((request.reply, Err(err)));
            }
        }
    }
    Group {
        rows,
        heads: overlay,
        tiles,
        outcomes,
        size: next,
        root: frontier.root(),
        frontier: encode_frontier(&frontier),
    }
}

/// Writes a laid-out group inside the transaction: five statements at most whatever its
/// size, sent together (one round trip).
async fn write(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    g: &Group,
    checkpoint: &aura_ledger::SignedCheckpoint,
    time: Timestamp,
) -> Result<(), tokio_postgres::Error> {
    let idx: Vec<i64> = g.rows.iter().map(|r| r.appended.index as i64).collect();
    let agent: Vec<&[u8]> = g
        .rows
        .iter()
        .map(|r| r.appended.agent.as_bytes().as_slice())
        .collect();
    let seq: Vec<i64> = g.rows.iter().map(|r| r.appended.seq as i64).collect();
    let hash: Vec<&[u8]> = g
        .rows
        .iter()
        .map(|r| r.appended.hash.as_bytes().as_slice())
        .collect();
    let raw: Vec<&[u8]> = g.rows.iter().map(|r| r.raw.as_slice()).collect();
    let h_agent: Vec<&[u8]> = g.heads.keys().map(|a| a.as_bytes().as_slice()).collect();
    let h_seq: Vec<i64> = g.heads.values().map(|(s, _)| *s as i64).collect();
    let h_hash: Vec<&[u8]> = g
        .heads
        .values()
        .map(|(_, h)| h.as_bytes().as_slice())
        .collect();
    let t_level: Vec<i16> = g.tiles.iter().map(|t| i16::from(t.0)).collect();
    let t_idx: Vec<i64> = g.tiles.iter().map(|t| t.1 as i64).collect();
    let t_hash: Vec<&[u8]> = g.tiles.iter().map(|t| t.2.as_bytes().as_slice()).collect();
    let tiles = async {
        if g.tiles.is_empty() {
            Ok(0)
        } else {
            tx.execute(&st.tiles, &[&t_level, &t_idx, &t_hash]).await
        }
    };
    let node = checkpoint.checkpoint.node;
    let signed = checkpoint.encode();
    let (size, time) = (g.size as i64, time.as_nanos() as i64);
    let entries: [&(dyn ToSql + Sync); 5] = [&idx, &agent, &seq, &hash, &raw];
    let heads: [&(dyn ToSql + Sync); 3] = [&h_agent, &h_seq, &h_hash];
    let cp: [&(dyn ToSql + Sync); 3] = [&size, &signed.as_slice(), &node.as_bytes().as_slice()];
    let advance: [&(dyn ToSql + Sync); 3] = [&size, &g.frontier, &time];
    tokio::try_join!(
        tx.execute(&st.entries, &entries),
        tx.execute(&st.upsert_heads, &heads),
        tiles,
        tx.execute(&st.checkpoint, &cp),
        tx.execute(&st.advance, &advance),
    )?;
    Ok(())
}
