//! Verification and export of a PostgreSQL store: the whole log read in one snapshot,
//! every entry row, checkpoint row, Merkle tile, head and the sequencer row re-derived
//! from the entries and compared with what is stored. The export writes the rows it
//! checks, so exporting a damaged log fails.

use std::collections::VecDeque;
use std::io::Write;

use aura_core::PublicKey;
use aura_core::hash::Hash;
use aura_ledger::bundle::BundleWriter;
use aura_ledger::entry::{Entry, PrunedEntry};
use aura_ledger::merkle::decode_frontier;
use aura_ledger::verify::{Failure, Location, Reason, Verifier};
use tokio_postgres::IsolationLevel;

use super::{TILE_LEVELS, agent_from, hash_from};
use crate::{Error, Verification};

/// Rows read per query.
const PAGE: i64 = 2000;
/// How often progress is reported, in entries.
const PROGRESS_EVERY: u64 = 10_000;

fn other(location: Location, reason: impl Into<String>) -> Failure {
    Failure {
        location,
        reason: Reason::Other(reason.into()),
    }
}

fn entry_at(position: u64) -> Location {
    Location::Entry {
        position,
        agent: None,
        seq: None,
    }
}

/// The checkpoint rows, read a page at a time in size order.
struct Checkpoints {
    queue: VecDeque<(i64, Vec<u8>)>,
    after: i64,
    done: bool,
}

impl Checkpoints {
    /// The size of the next checkpoint row, if any.
    async fn peek(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<Option<i64>, Error> {
        if self.queue.is_empty() && !self.done {
            let rows = tx
                .query(
                    "SELECT tree_size, signed FROM checkpoints WHERE tree_size > $1 ORDER BY tree_size LIMIT $2",
                    &[&self.after, &PAGE],
                )
                .await?;
            self.done = (rows.len() as i64) < PAGE;
            for r in rows {
                self.after = r.get(0);
                self.queue.push_back((self.after, r.get(1)));
            }
        }
        Ok(self.queue.front().map(|c| c.0))
    }
}

/// What a scan stops on: a failure of the log (reported), or of the database (an error).
enum Stop {
    Failed(Failure),
    Error(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Error(e)
    }
}

impl From<tokio_postgres::Error> for Stop {
    fn from(e: tokio_postgres::Error) -> Self {
        Stop::Error(Error::Postgres(e))
    }
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Self {
        Stop::Failed(f)
    }
}

/// Verifies the store, writing an export bundle to `out` as it goes when one is given.
pub(super) async fn run(
    client: &mut deadpool_postgres::Object,
    key: PublicKey,
    out: Option<Box<dyn Write + Send>>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Verification, Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    match scan(&tx, key, out, progress).await {
        Ok(summary) => Ok(Verification::Ok(summary)),
        Err(Stop::Failed(f)) => Ok(Verification::Failed(f)),
        Err(Stop::Error(e)) => Err(e),
    }
}

fn io(source: std::io::Error) -> Error {
    Error::Io {
        context: "cannot write the export".into(),
        source,
    }
}

/// Checks (and writes) every checkpoint row due once `position` entries were seen; with
/// `all`, every row left.
async fn feed_checkpoints(
    tx: &deadpool_postgres::Transaction<'_>,
    cps: &mut Checkpoints,
    verifier: &mut Verifier,
    bundle: &mut Option<BundleWriter<Box<dyn Write + Send>>>,
    position: u64,
    all: bool,
) -> Result<(), Stop> {
    while let Some(size) = cps.peek(tx).await? {
        if !all && size >= 0 && size as u64 > position {
            break;
        }
        let Some((size, signed)) = cps.queue.pop_front() else {
            break;
        };
        let location = Location::Checkpoint {
            after_entries: position,
            tree_size: Some(size.max(0) as u64),
        };
        let Ok(cp) = aura_ledger::SignedCheckpoint::decode(&signed) else {
            return Err(other(location, "the checkpoint row does not decode").into());
        };
        if size < 0 || cp.checkpoint.tree_size != size as u64 {
            return Err(other(
                location,
                "the checkpoint row's size differs from the signed one",
            )
            .into());
        }
        verifier.checkpoint(&cp)?;
        if let Some(b) = bundle.as_mut() {
            b.checkpoint(&cp).map_err(io)?;
        }
    }
    Ok(())
}

async fn scan(
    tx: &deadpool_postgres::Transaction<'_>,
    key: PublicKey,
    out: Option<Box<dyn Write + Send>>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<aura_ledger::verify::Summary, Stop> {
    let mut bundle = match out {
        Some(out) => Some(BundleWriter::new(out, &key).map_err(io)?),
        None => None,
    };
    let mut verifier = Verifier::new(key);
    let mut expected_tiles: Vec<(u8, u64, Hash)> = Vec::new();
    let mut cps = Checkpoints {
        queue: VecDeque::new(),
        after: -1,
        done: false,
    };
    let mut position = 0u64;
    loop {
        let rows = tx
            .query(
                "SELECT idx, agent, seq, hash, raw, pruned FROM entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
                &[&(position as i64), &PAGE],
            )
            .await?;
        let last_page = (rows.len() as i64) < PAGE;
        for r in rows {
            feed_checkpoints(tx, &mut cps, &mut verifier, &mut bundle, position, false).await?;
            let idx: i64 = r.get(0);
            let raw: Vec<u8> = r.get(4);
            let pruned: bool = r.get(5);
            let Ok(hash) = hash_from(r.get::<_, &[u8]>(3)) else {
                return Err(other(entry_at(position), "the stored hash is malformed").into());
            };
            if idx < 0 || idx as u64 != position {
                return Err(Failure {
                    location: entry_at(position),
                    reason: Reason::WrongIndex {
                        expected: position,
                        found: idx.max(0) as u64,
                    },
                }
                .into());
            }
            let mut completed = |id: aura_ledger::merkle::NodeId, h: Hash| {
                if id.level.is_multiple_of(TILE_LEVELS) {
                    expected_tiles.push((id.level, id.index, h));
                }
            };
            let header = if pruned {
                verifier.pruned_entry(&raw, &hash, &mut completed)?;
                PrunedEntry::decode(&raw).ok().map(|s| (s.agent, s.seq))
            } else {
                verifier.entry(&raw, Some(&hash), &mut completed)?;
                Entry::decode(&raw).ok().map(|e| (e.agent, e.seq))
            };
            // The row's own columns must say what the entry says.
            let columns = (agent_from(r.get::<_, &[u8]>(1)).ok(), r.get::<_, i64>(2));
            if header.map(|(a, s)| (Some(a), s as i64)) != Some(columns) {
                return Err(other(
                    entry_at(position),
                    "the row's agent or seq columns differ from the entry",
                )
                .into());
            }
            if let Some(b) = bundle.as_mut() {
                if pruned {
                    b.pruned(&raw, &hash).map_err(io)?;
                } else {
                    b.entry(&raw, &hash).map_err(io)?;
                }
            }
            position += 1;
            if position.is_multiple_of(PROGRESS_EVERY) {
                progress(position);
            }
        }
        if last_page {
            break;
        }
    }
    feed_checkpoints(tx, &mut cps, &mut verifier, &mut bundle, position, true).await?;

    let end = Location::End { entries: position };
    // Tiles: exactly the ones the entries complete.
    let stored_tiles = tx
        .query(
            "SELECT level, idx, hash FROM merkle_tiles ORDER BY level, idx",
            &[],
        )
        .await?;
    expected_tiles.sort_by_key(|t| (t.0, t.1));
    let tiles_match = stored_tiles.len() == expected_tiles.len()
        && stored_tiles.iter().zip(&expected_tiles).all(|(s, e)| {
            s.get::<_, i16>(0) == i16::from(e.0)
                && s.get::<_, i64>(1) == e.1 as i64
                && s.get::<_, &[u8]>(2) == e.2.as_bytes()
        });
    if !tiles_match {
        return Err(other(end, "the stored Merkle tiles differ from the entries'").into());
    }
    // Heads: each agent's last entry.
    let heads = tx.query("SELECT agent, seq, hash FROM heads", &[]).await?;
    let derived = verifier.heads().clone();
    let heads_match = heads.len() == derived.len()
        && heads.iter().all(|r| {
            agent_from(r.get::<_, &[u8]>(0))
                .ok()
                .and_then(|a| derived.get(&a))
                .is_some_and(|(seq, hash)| {
                    *seq as i64 == r.get::<_, i64>(1) && hash.as_bytes() == r.get::<_, &[u8]>(2)
                })
        });
    if !heads_match {
        return Err(other(end, "the stored heads differ from the entries'").into());
    }
    // The sequencer row: the size and frontier the next append starts from.
    let log = tx
        .query_one("SELECT tree_size, frontier FROM log WHERE id = 1", &[])
        .await?;
    let frontier = decode_frontier(log.get::<_, &[u8]>(1)).ok();
    let summary = verifier.finish()?;
    if log.get::<_, i64>(0) as u64 != summary.entries
        || frontier.is_none_or(|f| f.size() != summary.entries || f.root() != summary.root)
    {
        return Err(other(end, "the log's sequencer row differs from the entries").into());
    }
    if let Some(b) = bundle {
        b.finish().map_err(io)?;
    }
    progress(summary.entries);
    Ok(summary)
}
