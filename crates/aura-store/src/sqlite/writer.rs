//! The writer thread: group commit.
//!
//! Callers send [`Request`]s over a channel. The thread takes the first request, then
//! everything else already waiting (up to a limit), and commits the group:
//!
//! 1. each request is laid out in arrival order against the heads as they stand after
//!    the requests before it, or refused whole (a sequence conflict, an oversized body),
//!    which leaves the others untouched;
//! 2. the accepted entries, the agents' new heads, the Merkle tiles they complete and a
//!    checkpoint signed over the new root go into one transaction, and `COMMIT` (WAL,
//!    `synchronous=FULL`) makes them durable with one fsync;
//! 3. only then does each caller hear its answer.
//!
//! Prunes (`Store::prune`) go through the same queue, so they are ordered with appends
//! and never race the writer's connection; each is its own transaction, and touches
//! nothing the writer keeps in memory (hashes, heads and the tree do not change).
//!
//! If the commit fails, nothing in memory has changed (the group worked on copies); the
//! thread reloads its state from the database, since a failure at or after `COMMIT`
//! leaves it unsure whether the group is there, then gives every accepted caller
//! [`Error::CommitFailed`]. If even the reload fails, it refuses all further writes with
//! [`Error::Poisoned`] until the store is opened again.
//!
//! The failpoints of [`super`] (cargo feature `failpoints`) sit in [`Writer::write`] and
//! on the reload.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use aura_core::AgentId;
use aura_core::door::Clock;
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_ledger::Checkpoint;
use aura_ledger::entry::{self, Entry, MAX_BODY_LEN};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::publish::Publisher;
use super::{State, TILE_LEVELS, load_state};
use crate::{AppendReceipt, Appended, Committed, Error, NewEntry, PruneOutcome, Seq, StoredEntry};

type Reply = oneshot::Sender<Result<AppendReceipt, Error>>;

// Without the `failpoints` feature the `fail` crate is not even a dependency, and every
// failpoint compiles to nothing.
#[cfg(feature = "failpoints")]
use fail::fail_point;
#[cfg(not(feature = "failpoints"))]
macro_rules! fail_point {
    ($($t:tt)*) => {};
}

/// The error an injected failure returns: the SQLite result `code`, as a real failure
/// of that kind would give it, so the writer's own handling is what gets tested.
#[cfg(feature = "failpoints")]
fn injected(code: std::ffi::c_int, what: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(code),
        Some(format!("{what} (injected by a failpoint)")),
    )
}

/// A request's outcome while its group is laid out: the range of rows it owns, or why it
/// was refused.
type Layout = Result<(usize, usize), Error>;

pub(crate) struct Request {
    entries: Vec<NewEntry>,
    reply: Reply,
}

/// A request to prune bodies.
pub(crate) struct PruneRequest {
    indices: Vec<u64>,
    reply: oneshot::Sender<Result<PruneOutcome, Error>>,
}

/// What the writer's queue carries.
pub(crate) enum Job {
    Append(Request),
    Prune(PruneRequest),
}

/// What the store holds to talk to the writer.
#[derive(Debug)]
pub(crate) struct Handle {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    pub(crate) async fn append(&self, entries: Vec<NewEntry>) -> Result<AppendReceipt, Error> {
        if entries.is_empty() {
            return Err(Error::InvalidEntry(
                "an append needs at least one entry".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(Error::Closed)?;
        tx.send(Job::Append(Request { entries, reply }))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    pub(crate) async fn prune(&self, indices: Vec<u64>) -> Result<PruneOutcome, Error> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(Error::Closed)?;
        tx.send(Job::Prune(PruneRequest { indices, reply }))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Closes the queue and waits for the thread to finish what was queued.
    pub(crate) fn shutdown(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    commits: tokio::sync::broadcast::Sender<Arc<Committed>>,
    conn: Connection,
    path: PathBuf,
    signer: Arc<Signer>,
    clock: Arc<dyn Clock>,
    state: State,
    poisoned: bool,
    max_group_entries: usize,
    /// Hears of each durable checkpoint, to publish it; dropped (and so flushed) when the
    /// writer stops.
    publisher: Option<Publisher>,
}

#[allow(
    clippy::too_many_arguments,
    reason = "the writer's parts, each owned by it from here on"
)]
pub(crate) fn spawn(
    commits: tokio::sync::broadcast::Sender<Arc<Committed>>,
    conn: Connection,
    path: PathBuf,
    signer: Arc<Signer>,
    clock: Arc<dyn Clock>,
    state: State,
    max_group_entries: usize,
    publisher: Option<Publisher>,
) -> Result<Handle, Error> {
    let (tx, rx) = mpsc::channel::<Job>();
    let mut writer = Writer {
        commits,
        conn,
        path,
        signer,
        clock,
        state,
        poisoned: false,
        max_group_entries,
        publisher,
    };
    let thread = std::thread::Builder::new()
        .name("aura-store-writer".into())
        .spawn(move || writer.run(&rx))
        .map_err(|source| Error::Io {
            context: "cannot start the store's writer thread".into(),
            source,
        })?;
    Ok(Handle {
        tx: Some(tx),
        thread: Some(thread),
    })
}

/// One entry laid out for the commit.
struct Row {
    appended: Appended,
    entry: Entry,
    raw: Vec<u8>,
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Job>) {
        // A prune found while gathering a group waits until that group is committed, so
        // jobs keep their queue order.
        let mut held: Option<Job> = None;
        loop {
            let job = match held.take() {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => {
                        // Publishes the last checkpoint and waits for the file.
                        self.publisher.take();
                        return;
                    }
                },
            };
            let first = match job {
                Job::Append(first) => first,
                Job::Prune(p) => {
                    let _ = p.reply.send(self.prune(&p.indices));
                    continue;
                }
            };
            let mut count = first.entries.len();
            let mut group = vec![first];
            while count < self.max_group_entries {
                match rx.try_recv() {
                    Ok(Job::Append(r)) => {
                        count += r.entries.len();
                        group.push(r);
                    }
                    Ok(prune) => {
                        held = Some(prune);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    /// Replaces the bodies at `indices` by their stubs in one transaction.
    fn prune(&mut self, indices: &[u64]) -> Result<PruneOutcome, Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let mut indices = indices.to_vec();
        indices.sort_unstable();
        indices.dedup();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcome = PruneOutcome::default();
        {
            let mut read =
                tx.prepare_cached("SELECT hash, raw, pruned FROM entries WHERE idx = ?1")?;
            let mut write =
                tx.prepare_cached("UPDATE entries SET raw = ?2, pruned = 1 WHERE idx = ?1")?;
            for &index in &indices {
                let at =
                    i64::try_from(index).map_err(|_| Error::NotFound(format!("entry #{index}")))?;
                let row: Option<(Vec<u8>, Vec<u8>, i64)> = read
                    .query_row(params![at], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let Some((hash, raw, pruned)) = row else {
                    return Err(Error::NotFound(format!("entry #{index}")));
                };
                if pruned != 0 {
                    outcome.already_pruned += 1;
                    continue;
                }
                // Only a body that still matches its hash is pruned: pruning a damaged one
                // would leave nothing to show the damage.
                let entry = Entry::decode(&raw)
                    .ok()
                    .filter(|_| hash == Entry::hash_encoded(&raw).as_bytes())
                    .ok_or_else(|| {
                        Error::Inconsistent(format!(
                            "entry #{index} does not match its stored hash; refusing to prune it (run `aura ledger verify`)"
                        ))
                    })?;
                let stub = entry
                    .pruned()
                    .map_err(|e| Error::InvalidEntry(e.to_string()))?
                    .encode();
                write.execute(params![at, stub])?;
                outcome.pruned += 1;
                outcome.bytes_freed += raw.len().saturating_sub(stub.len()) as u64;
            }
        }
        tx.commit()?;
        Ok(outcome)
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        if self.poisoned {
            for r in group {
                let _ = r.reply.send(Err(Error::Poisoned));
            }
            return;
        }
        let mut frontier = self.state.frontier.clone();
        let mut next = self.state.size;
        let mut overlay: HashMap<AgentId, (u64, Hash)> = HashMap::new();
        let mut rows: Vec<Row> = Vec::new();
        let mut tiles: Vec<(u8, u64, Hash)> = Vec::new();
        // Per request: the range of `rows` it owns, or why it was refused.
        let mut outcomes: Vec<(Reply, Layout)> = Vec::with_capacity(group.len());

        for request in group {
            let saved = (frontier.clone(), next, rows.len(), tiles.len());
            let mut touched: Vec<(AgentId, Option<(u64, Hash)>)> = Vec::new();
            let mut refusal = None;
            for new in request.entries {
                let head = overlay
                    .get(&new.agent)
                    .or_else(|| self.state.heads.get(&new.agent))
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
                    if id.level % TILE_LEVELS == 0 {
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
                    // Undo this request's layout; earlier requests keep theirs.
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

        if rows.is_empty() {
            // Every request was refused (empty requests never reach the writer).
            for (reply, outcome) in outcomes {
                let refusal = outcome.err().unwrap_or_else(|| {
                    Error::InvalidEntry("an append needs at least one entry".into())
                });
                let _ = reply.send(Err(refusal));
            }
            return;
        }

        // Checkpoint times never go backwards, even if the wall clock does.
        let last_time = self
            .state
            .last_checkpoint
            .map(|c| c.checkpoint.time)
            .unwrap_or_default();
        let checkpoint = Checkpoint {
            node: self.signer.public_key().node_id(),
            tree_size: next,
            root: frontier.root(),
            time: self.clock.now().max(last_time),
        }
        .sign(&self.signer);

        // The commit's latency (transaction and fsync) is the store's one metric.
        let started = std::time::Instant::now();
        let written = self.write(&rows, &overlay, &tiles, &checkpoint.encode(), next);
        aura_metrics::global().observe(
            &aura_metrics::STORE_COMMIT_SECONDS,
            &[if written.is_ok() { "ok" } else { "failed" }],
            started.elapsed().as_secs_f64(),
        );
        match written {
            Ok(()) => {
                self.state.size = next;
                self.state.frontier = frontier;
                self.state.heads.extend(overlay);
                self.state.last_checkpoint = Some(checkpoint);
                if let Some(p) = &self.publisher {
                    p.committed(checkpoint);
                }
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
                        checkpoint,
                    }));
                }
                for (reply, outcome) in outcomes {
                    let answer = outcome.map(|(from, to)| AppendReceipt {
                        entries: rows[from..to].iter().map(|r| r.appended).collect(),
                        checkpoint,
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                // The database may or may not hold the group (a failed fsync leaves that
                // open); believe only what it says now. Reloaded before anyone hears of
                // the failure, so a caller that reads its head and appends again is laid
                // out against what is really stored.
                let before = self.state.size;
                match self.reload() {
                    Ok(state) => self.state = state,
                    Err(_) => self.poisoned = true,
                }
                // A full disk fails a write before the commit record is: SQLite rolls the
                // transaction back, and the reloaded tree confirms nothing was added. Then
                // the caller can be told so, plainly, rather than "may or may not".
                let full = !self.poisoned && self.state.size == before && is_disk_full(&e);
                let e = Arc::new(e);
                for (reply, outcome) in outcomes {
                    let answer = match outcome {
                        Ok(_) if full => Err(Error::DiskFull {
                            path: self.path.clone(),
                        }),
                        Ok(_) => Err(Error::CommitFailed(
                            e.clone() as Arc<dyn std::error::Error + Send + Sync>
                        )),
                        Err(refused) => Err(refused),
                    };
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// The committed state, read again from the database after a failed commit.
    fn reload(&self) -> Result<State, Error> {
        fail_point!("sqlite.append.reload", |_| Err(Error::Inconsistent(
            "cannot reload the store's state (injected by a failpoint)".into()
        )));
        load_state(&self.conn, &self.path)
    }

    fn write(
        &mut self,
        rows: &[Row],
        heads: &HashMap<AgentId, (u64, Hash)>,
        tiles: &[(u8, u64, Hash)],
        checkpoint: &[u8],
        tree_size: u64,
    ) -> Result<(), rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO entries (idx, agent, seq, hash, raw) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in rows {
                let a = &r.appended;
                insert.execute(params![
                    a.index as i64,
                    a.agent.as_bytes(),
                    a.seq as i64,
                    a.hash.as_bytes(),
                    r.raw
                ])?;
            }
            let mut head = tx.prepare_cached(
                "INSERT INTO heads (agent, seq, hash) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (agent) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )?;
            for (agent, (seq, hash)) in heads {
                head.execute(params![agent.as_bytes(), *seq as i64, hash.as_bytes()])?;
            }
            let mut tile = tx.prepare_cached(
                "INSERT INTO merkle_tiles (level, idx, hash) VALUES (?1, ?2, ?3)",
            )?;
            for (level, idx, hash) in tiles {
                tile.execute(params![i64::from(*level), *idx as i64, hash.as_bytes()])?;
            }
            // Writing the signed checkpoint is part of the same transaction: a failure
            // here must take the group's entries with it.
            fail_point!("sqlite.append.checkpoint", |_| Err(injected(
                rusqlite::ffi::SQLITE_IOERR_WRITE,
                "cannot write the signed checkpoint"
            )));
            tx.prepare_cached("INSERT INTO checkpoints (tree_size, signed) VALUES (?1, ?2)")?
                .execute(params![tree_size as i64, checkpoint])?;
        }
        fail_point!("sqlite.append.before_commit", |_| Err(injected(
            rusqlite::ffi::SQLITE_IOERR_WRITE,
            "the transaction failed before COMMIT"
        )));
        // A failed fsync inside COMMIT: SQLite reports SQLITE_IOERR_FSYNC. Whether the
        // transaction then reached the disk is unknown; `return` simulates it lost (in
        // WAL mode SQLite does not publish frames whose sync failed, and the transaction
        // is rolled back), `return(kept)` simulates it kept (it was written before the
        // error was reported, and is there when the database is read again). Even "lost"
        // is only what this process sees: frames that did reach the disk could come back
        // in WAL recovery after a crash, before the next commit overwrites them. Hence
        // callers hear "may or may not be stored" either way.
        #[cfg(feature = "failpoints")]
        if let Some(kept) = fail::eval("sqlite.append.fsync", |arg| arg.as_deref() == Some("kept"))
        {
            if kept {
                tx.commit()?;
            }
            return Err(injected(
                rusqlite::ffi::SQLITE_IOERR_FSYNC,
                "fsync failed during COMMIT",
            ));
        }
        tx.commit()?;
        fail_point!("sqlite.append.after_commit", |_| Err(injected(
            rusqlite::ffi::SQLITE_IOERR,
            "the commit succeeded but its answer was lost"
        )));
        Ok(())
    }
}

/// Whether SQLite failed because the disk (or the database's size limit) is full.
fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}
