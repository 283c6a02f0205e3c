//! Verification of a SQLite store: every entry row, checkpoint row, Merkle tile and head
//! is re-derived from the entries and compared with what is stored beside them.
//!
//! [`scan`] reads the whole ledger in one read transaction and hands each row over as
//! stored, so that damage is reported (as the first [`Failure`]) rather than tripped over;
//! [`verify_store`] checks the derived tables against what the scan derives, and the
//! export ([`super::SqliteStore::export_cosigned`]) verifies the rows it writes through the
//! same checks.

use std::collections::HashMap;
use std::path::Path;

use aura_core::hash::Hash;
use aura_core::{AgentId, PublicKey};
use aura_ledger::SignedCheckpoint;
use aura_ledger::entry::{Entry, PrunedEntry};
use aura_ledger::merkle;
use aura_ledger::verify::{Failure, Location, Reason, Verifier};
use rusqlite::Connection;

use super::{TILE_LEVELS, classify};
use crate::{Error, Verification};

/// One entry row as stored, before anything is believed about it.
pub(super) struct RawRow<'a> {
    idx: i64,
    agent: Option<&'a [u8]>,
    seq: Option<i64>,
    hash: Option<&'a [u8]>,
    raw: Option<&'a [u8]>,
    pruned: Option<i64>,
}

/// One checkpoint row as stored.
pub(super) struct RawCheckpoint {
    key: i64,
    signed: Option<Vec<u8>>,
}

/// Reads the whole ledger in order inside one read transaction, feeding entry rows and
/// checkpoint rows (each right after the entry that completes the tree it signs) to the
/// callbacks, which stop the scan by returning an error. Rows are passed as stored, so
/// that a checker can report damage instead of tripping over it.
pub(super) fn scan<E>(
    conn: &mut Connection,
    path: &Path,
    mut on_entry: impl FnMut(u64, &RawRow<'_>) -> Result<(), E>,
    mut on_checkpoint: impl FnMut(u64, &RawCheckpoint) -> Result<(), E>,
) -> Result<Result<(), E>, Error> {
    let tx = conn.transaction()?;
    let mut cps = {
        let mut stmt =
            tx.prepare("SELECT tree_size, signed FROM checkpoints ORDER BY tree_size")?;
        let mut rows = stmt.query([]).map_err(|e| classify(path, e))?;
        let mut cps = Vec::new();
        while let Some(row) = rows.next().map_err(|e| classify(path, e))? {
            let key: i64 = row.get(0)?;
            let signed = row.get_ref(1)?.as_blob().ok().map(<[u8]>::to_vec);
            cps.push(RawCheckpoint { key, signed });
        }
        cps.into_iter().peekable()
    };
    // A checkpoint row is fed once as many entries have been seen as its key says (the
    // checker compares the key with the signed size).
    let due = |c: &RawCheckpoint, seen: u64| c.key < 0 || (c.key as u64) <= seen;
    let mut stmt =
        tx.prepare("SELECT idx, agent, seq, hash, raw, pruned FROM entries ORDER BY idx")?;
    let mut rows = stmt.query([]).map_err(|e| classify(path, e))?;
    let mut seen = 0u64;
    loop {
        while let Some(cp) = cps.next_if(|c| due(c, seen)) {
            if let Err(e) = on_checkpoint(seen, &cp) {
                return Ok(Err(e));
            }
        }
        let Some(row) = rows.next().map_err(|e| classify(path, e))? else {
            break;
        };
        let raw_row = RawRow {
            idx: row.get(0)?,
            agent: row.get_ref(1)?.as_blob().ok(),
            seq: row.get_ref(2)?.as_i64().ok(),
            hash: row.get_ref(3)?.as_blob().ok(),
            raw: row.get_ref(4)?.as_blob().ok(),
            pruned: row.get_ref(5)?.as_i64().ok(),
        };
        if let Err(e) = on_entry(seen, &raw_row) {
            return Ok(Err(e));
        }
        seen += 1;
    }
    for cp in cps {
        if let Err(e) = on_checkpoint(seen, &cp) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// An entry row as the verifier takes it: the encoding (or stub), the stored hash, and
/// whether the body was pruned.
pub(super) struct CheckedRow<'a> {
    pub(super) raw: &'a [u8],
    pub(super) hash: Hash,
    pub(super) pruned: bool,
}

impl CheckedRow<'_> {
    /// Feeds the row to the verifier: a whole entry has its hash recomputed, a pruned one
    /// is taken at its stored hash.
    pub(super) fn verify(
        &self,
        verifier: &mut Verifier,
        completed: impl FnMut(merkle::NodeId, Hash),
    ) -> Result<(), Failure> {
        if self.pruned {
            verifier.pruned_entry(self.raw, &self.hash, completed)
        } else {
            verifier.entry(self.raw, Some(&self.hash), completed)
        }
    }
}

/// Checks an entry row's own shape: its columns are the right types and agree with the
/// entry they hold. Returns the encoding and stored hash for the verifier.
pub(super) fn check_row<'a>(position: u64, row: &RawRow<'a>) -> Result<CheckedRow<'a>, Failure> {
    let pruned = row.pruned;
    let decoded = row.raw.and_then(|r| match pruned {
        Some(0) => Entry::decode(r).ok().map(|e| (e.index, e.agent, e.seq)),
        _ => PrunedEntry::decode(r)
            .ok()
            .map(|e| (e.index, e.agent, e.seq)),
    });
    let location = Location::Entry {
        position,
        agent: decoded.map(|e| e.1),
        seq: decoded.map(|e| e.2),
    };
    let fail = |what: &str| Failure {
        location: location.clone(),
        reason: Reason::Other(what.to_owned()),
    };
    let raw = row
        .raw
        .ok_or_else(|| fail("its stored encoding is not a byte string"))?;
    let hash = row
        .hash
        .and_then(Hash::from_slice)
        .ok_or_else(|| fail("its stored hash is not 32 bytes"))?;
    let pruned = match pruned {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(fail("its pruned flag is neither 0 nor 1")),
    };
    if let Some((index, agent, seq)) = decoded {
        if row.idx != position as i64 && index == position {
            return Err(fail(&format!(
                "it is stored under index {} instead of {position}",
                row.idx
            )));
        }
        if row.agent != Some(agent.as_bytes().as_slice()) || row.seq != Some(seq as i64) {
            return Err(fail(
                "the row's agent or seq columns disagree with the entry",
            ));
        }
    }
    Ok(CheckedRow { raw, hash, pruned })
}

/// Checks a checkpoint row's shape and decodes it.
pub(super) fn check_checkpoint_row(
    seen: u64,
    row: &RawCheckpoint,
) -> Result<SignedCheckpoint, Failure> {
    let location = Location::Checkpoint {
        after_entries: seen,
        tree_size: u64::try_from(row.key).ok(),
    };
    let fail = |what: String| Failure {
        location: location.clone(),
        reason: Reason::Other(what),
    };
    let bytes = row
        .signed
        .as_deref()
        .ok_or_else(|| fail("it is not a byte string".into()))?;
    let cp = SignedCheckpoint::decode(bytes).map_err(|e| Failure {
        location: location.clone(),
        reason: Reason::Malformed(e),
    })?;
    if cp.checkpoint.tree_size as i64 != row.key {
        return Err(fail(format!(
            "it is stored under size {} but signs a tree of {} entries",
            row.key, cp.checkpoint.tree_size
        )));
    }
    Ok(cp)
}

pub(super) const PROGRESS_EVERY: u64 = 1 << 16;

pub(super) fn verify_store(
    conn: &mut Connection,
    path: &Path,
    key: PublicKey,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Verification, Error> {
    // Tiles and heads are derived data; load them to compare with what the scan derives.
    let derived_failure = |what: String| {
        Ok(Verification::Failed(Failure {
            location: Location::End { entries: 0 },
            reason: Reason::Other(what),
        }))
    };
    let mut tiles: HashMap<(u8, u64), Hash> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT level, idx, hash FROM merkle_tiles")?;
        let mut rows = stmt.query([]).map_err(|e| classify(path, e))?;
        while let Some(row) = rows.next().map_err(|e| classify(path, e))? {
            let level = row
                .get_ref(0)?
                .as_i64()
                .ok()
                .and_then(|l| u8::try_from(l).ok());
            let idx = row
                .get_ref(1)?
                .as_i64()
                .ok()
                .and_then(|i| u64::try_from(i).ok());
            let hash = row.get_ref(2)?.as_blob().ok().and_then(Hash::from_slice);
            match (level, idx, hash) {
                (Some(level), Some(idx), Some(hash)) => {
                    tiles.insert((level, idx), hash);
                }
                _ => return derived_failure("a stored Merkle node row is malformed".into()),
            }
        }
    }
    let verifier = std::cell::RefCell::new(Verifier::new(key));
    let mut tile_failure: Option<Failure> = None;
    let outcome = scan(
        conn,
        path,
        |position, row| {
            let checked = check_row(position, row)?;
            let mut missing_tile = None;
            checked.verify(&mut verifier.borrow_mut(), |id, h| {
                if id.level % TILE_LEVELS == 0 && missing_tile.is_none() {
                    match tiles.remove(&(id.level, id.index)) {
                        Some(stored) if stored == h => {}
                        _ => missing_tile = Some(id),
                    }
                }
            })?;
            let entry_loc = || Location::Entry {
                position,
                agent: row
                    .agent
                    .and_then(|a| <[u8; 16]>::try_from(a).ok())
                    .map(AgentId::from_bytes),
                seq: row.seq.and_then(|s| u64::try_from(s).ok()),
            };
            if let Some(id) = missing_tile {
                let f = Failure {
                    location: entry_loc(),
                    reason: Reason::Other(format!(
                        "the stored Merkle node at level {} index {} is missing or wrong",
                        id.level, id.index
                    )),
                };
                tile_failure = Some(f.clone());
                return Err(f);
            }
            if (position + 1) % PROGRESS_EVERY == 0 {
                progress(position + 1);
            }
            Ok(())
        },
        |seen, row| {
            verifier
                .borrow_mut()
                .checkpoint(&check_checkpoint_row(seen, row)?)
        },
    )?;
    let verifier = verifier.into_inner();
    if let Err(failure) = outcome {
        return Ok(Verification::Failed(tile_failure.unwrap_or(failure)));
    }
    if let Some(((level, idx), _)) = tiles.into_iter().next() {
        return Ok(Verification::Failed(Failure {
            location: Location::End {
                entries: verifier.entries_seen(),
            },
            reason: Reason::Other(format!(
                "a stored Merkle node (level {level} index {idx}) covers no entries"
            )),
        }));
    }
    // Every head row must name the agent's last entry, and every agent must have one.
    let mut heads_rows = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT agent, seq, hash FROM heads")?;
        let mut rows = stmt.query([]).map_err(|e| classify(path, e))?;
        while let Some(row) = rows.next().map_err(|e| classify(path, e))? {
            let agent = row
                .get_ref(0)?
                .as_blob()
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b).ok());
            let seq = row
                .get_ref(1)?
                .as_i64()
                .ok()
                .and_then(|s| u64::try_from(s).ok());
            let hash = row.get_ref(2)?.as_blob().ok().and_then(Hash::from_slice);
            match (agent, seq, hash) {
                (Some(agent), Some(seq), Some(hash)) => {
                    heads_rows.insert(AgentId::from_bytes(agent), (seq, hash));
                }
                _ => return derived_failure("a stored head row is malformed".into()),
            }
        }
    }
    let derived = verifier.heads().clone();
    for (agent, (seq, hash)) in &derived {
        if heads_rows.remove(agent) != Some((*seq, *hash)) {
            return Ok(Verification::Failed(Failure {
                location: Location::End {
                    entries: verifier.entries_seen(),
                },
                reason: Reason::Other(format!(
                    "the stored head of {agent} is not its last entry (seq {seq})"
                )),
            }));
        }
    }
    if let Some((agent, _)) = heads_rows.into_iter().next() {
        return Ok(Verification::Failed(Failure {
            location: Location::End {
                entries: verifier.entries_seen(),
            },
            reason: Reason::Other(format!("a stored head names {agent}, which has no entries")),
        }));
    }
    progress(verifier.entries_seen());
    Ok(match verifier.finish() {
        Ok(summary) => Verification::Ok(summary),
        Err(f) => Verification::Failed(f),
    })
}
