//! The embedded SQLite backend.
//!
//! One file holds the ledger (see [`schema`]). The database runs in WAL mode with
//! `synchronous=FULL`, so a committed transaction is on disk before `COMMIT` returns
//! ([`Durability::NoSync`] turns that off, for benchmarks only).
//!
//! Writes go through a single writer thread ([`writer`]) that practises group commit:
//! it takes every append request waiting in its queue, checks and lays out each caller's
//! batch in arrival order, writes them all, their Merkle tiles and one signed checkpoint in
//! a single transaction, and only then answers each caller. Reads use a small pool of
//! read-only connections on blocking threads; WAL lets them run beside the writer, each
//! seeing a consistent snapshot.
//!
//! A lock file next to the database keeps a second process from opening the same store
//! for writing: two writers would each hold their own idea of the heads.
//!
//! With [`Options::published`] set, the store keeps its latest checkpoint as a signed
//! note in that file and refuses to open for writing a database that has fallen behind
//! it (cut back, or restored from an older copy) or whose history differs from it; see
//! [`publish`].
//!
//! # Failpoints
//!
//! With the cargo feature `failpoints` (tests only; without it the `fail` crate is not
//! linked and these compile to nothing), the append path has named failpoints, driven
//! with `fail::cfg(name, "return")` inside a `fail::FailScenario`. Each makes one group
//! commit fail the way a real failure at that step would, through the writer's own error
//! handling; the callers get [`Error::CommitFailed`].
//!
//! | name | where | what it simulates | afterwards |
//! |---|---|---|---|
//! | `sqlite.append.checkpoint` | inside the transaction, before the signed checkpoint's row is written | the write of the checkpoint fails (`SQLITE_IOERR_WRITE`) | rolled back: neither the entries nor the checkpoint are stored |
//! | `sqlite.append.before_commit` | after every row is written, before `COMMIT` | the transaction fails before it commits (`SQLITE_IOERR_WRITE`) | rolled back |
//! | `sqlite.append.fsync` | in place of `COMMIT` | `COMMIT` reports a failed fsync (`SQLITE_IOERR_FSYNC`); `return` simulates the transaction lost, `return(kept)` simulates it on disk after all | rolled back, or (with `kept`) stored |
//! | `sqlite.append.after_commit` | after `COMMIT` succeeded | the caller is told the commit failed although it is durable (an answer lost) | stored |
//! | `sqlite.append.reload` | when the writer re-reads its state after any of the above | the database cannot be read back | the store refuses writes with [`Error::Poisoned`] until reopened |
//!
//! In every case the writer re-reads the heads, tree and last checkpoint from the database
//! before answering, so the next append follows exactly what is stored.
//! crates/aura-store/tests/failpoints.rs checks each one.

pub mod publish;
mod schema;
mod verify;
mod writer;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aura_core::door::Clock;
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, PublicKey};
use aura_ledger::SignedCheckpoint;
use aura_ledger::bundle::BundleWriter;
use aura_ledger::entry::{self, Entry, PrunedEntry};
use aura_ledger::merkle::{self, Frontier};
use aura_ledger::note::NoteSignature;
use aura_ledger::proof::{ConsistencyProof, InclusionProof};
use aura_ledger::verify::{Failure, Location, Reason, Summary, Verifier};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use crate::{
    AppendReceipt, EntryRef, Error, Head, NewEntry, PruneOutcome, Pruned, Store, StoredEntry,
    Verification,
};
use schema::MigrationError;
use verify::{PROGRESS_EVERY, check_checkpoint_row, check_row, scan, verify_store};

const META_NODE_KEY: &str = "node_public_key";

/// Commits a slow subscriber may fall behind before it is told it lagged.
const COMMIT_BACKLOG: usize = 4096;

/// WAL pages between automatic checkpoints (SQLite's default is 1000).
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// Tiles are kept at every `TILE_LEVELS`-th level of the tree.
pub(crate) const TILE_LEVELS: u8 = 8;

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// The most entries one commit takes from the queue. Larger groups amortise the fsync
    /// over more entries; a single request larger than this still commits whole.
    pub max_group_entries: usize,
    /// SQLite page cache per connection, in KiB.
    pub cache_kib: u32,
    /// Whether a commit waits for the disk. Anything but [`Durability::Full`] breaks the
    /// store's promise and exists only to measure what that promise costs.
    pub durability: Durability,
    /// Where the node publishes its latest checkpoint (a signed note; see [`publish`]),
    /// and what opening for writing checks the database against. `None`: neither.
    pub published: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_group_entries: 8192,
            cache_kib: 64 * 1024,
            durability: Durability::Full,
            published: None,
        }
    }
}

/// How far a commit goes before the writer answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// `synchronous=FULL`: `COMMIT` returns once the WAL is fsync'd, so an acknowledged
    /// append survives a crash or a power cut. The only setting for real use.
    #[default]
    Full,
    /// `synchronous=OFF`: no fsync at all. **Unsafe for real use**: a power cut or an OS
    /// crash can lose acknowledged appends or leave the database corrupt, while every
    /// caller was told its entries were durable. It exists so that `aura-bench
    /// durability` can measure the cost of fsync against the same work without it.
    NoSync,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::NoSync => "OFF",
        }
    }
}

/// The SQLite store. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    node_key: PublicKey,
    readers: Mutex<Vec<Connection>>,
    writer: Option<writer::Handle>,
    commits: tokio::sync::broadcast::Sender<Arc<crate::Committed>>,
    options: Options,
    // Held for the life of a writable store; the OS releases it if the process dies.
    _lock: Option<File>,
}

fn corrupt(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

/// Maps SQLite's "this is not a database" family of errors to [`Error::Corrupt`].
fn classify(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => corrupt(path, e),
        _ => Error::Sqlite(e),
    }
}

fn migration_error(path: &Path, e: MigrationError) -> Error {
    match e {
        MigrationError::Sqlite(e) => classify(path, e),
        other => corrupt(path, other),
    }
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` for reading and writing, as the node whose
    /// key `signer` holds. Fails if another process has it open for writing.
    pub fn open(
        path: impl Into<PathBuf>,
        signer: Arc<Signer>,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Result<Self, Error> {
        let path = path.into();
        let lock = lock_store(&path)?;
        create_private(&path)?;
        let mut conn = open_connection(&path, false, &options)?;
        schema::migrate(&mut conn).map_err(|e| migration_error(&path, e))?;
        let node_key = signer.public_key();
        match schema::meta_get(&conn, META_NODE_KEY).map_err(|e| classify(&path, e))? {
            None => schema::meta_set(&conn, META_NODE_KEY, &node_key.to_bytes())?,
            Some(stored) => {
                let stored = stored_key(&path, &stored)?;
                if stored != node_key {
                    return Err(Error::WrongNode {
                        expected: stored.fingerprint(),
                        found: node_key.fingerprint(),
                    });
                }
            }
        }
        let state = load_state(&conn, &path)?;
        let publisher = match &options.published {
            Some(file) => {
                publish::check(&conn, &path, file, &node_key, &state)?;
                Some(publish::Publisher::spawn(
                    file.clone(),
                    signer.clone(),
                    state.last_checkpoint,
                )?)
            }
            None => None,
        };
        let (commits, _) = tokio::sync::broadcast::channel(COMMIT_BACKLOG);
        let writer = writer::spawn(
            commits.clone(),
            conn,
            path.clone(),
            signer,
            clock,
            state,
            options.max_group_entries,
            publisher,
        )?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                node_key,
                readers: Mutex::new(Vec::new()),
                writer: Some(writer),
                commits,
                options,
                _lock: Some(lock),
            }),
        })
    }

    /// Opens an existing store for reading only. Needs no key, and never changes the file.
    pub fn open_read_only(path: impl Into<PathBuf>, options: Options) -> Result<Self, Error> {
        let path = path.into();
        if !path.exists() {
            return Err(Error::NotFound(format!("store {}", path.display())));
        }
        let conn = open_connection(&path, true, &options)?;
        schema::check_version(&conn).map_err(|e| migration_error(&path, e))?;
        let key = schema::meta_get(&conn, META_NODE_KEY)
            .map_err(|e| classify(&path, e))?
            .ok_or_else(|| corrupt(&path, "it records no node key"))?;
        let node_key = stored_key(&path, &key)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                node_key,
                readers: Mutex::new(vec![conn]),
                writer: None,
                commits: tokio::sync::broadcast::channel(1).0,
                options,
                _lock: None,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops the writer after the requests already queued, and waits for it.
    pub fn close(self) {
        if let Ok(inner) = Arc::try_unwrap(self.inner)
            && let Some(w) = inner.writer
        {
            w.shutdown();
        }
    }

    /// Runs `f` with a pooled read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Path) -> Result<T, Error> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let mut conn = match conn {
                Some(c) => c,
                None => open_connection(&inner.path, true, &inner.options)?,
            };
            let out = f(&mut conn, &inner.path);
            // A connection left inside a transaction by an error is not reused.
            if conn.is_autocommit() {
                inner
                    .readers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::Inconsistent(format!("a read task failed: {e}")))?
    }
}

fn stored_key(path: &Path, bytes: &[u8]) -> Result<PublicKey, Error> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| corrupt(path, "its node key is malformed"))?;
    PublicKey::from_bytes(&arr).map_err(|_| corrupt(path, "its node key is malformed"))
}

/// Creates an empty database file readable by its owner alone, if there is none. SQLite
/// gives its WAL and index files the same mode.
fn create_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::Io {
            context: format!("cannot create {}", path.display()),
            source,
        }),
    }
}

fn lock_store(path: &Path) -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let lock_path = path.with_extension("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| Error::Io {
            context: format!("cannot open {}", lock_path.display()),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Io {
            context: format!(
                "the store {} is open for writing in another process",
                path.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
            context: format!("cannot lock {}", lock_path.display()),
            source,
        }),
    }
}

fn open_connection(path: &Path, read_only: bool, options: &Options) -> Result<Connection, Error> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let setup = || -> rusqlite::Result<()> {
        conn.pragma_update(None, "cache_size", -(i64::from(options.cache_kib)))?;
        if read_only {
            conn.pragma_update(None, "query_only", true)?;
            conn.pragma_update(None, "mmap_size", 256i64 * 1024 * 1024)?;
        } else {
            // journal_mode answers with the mode it ended up in.
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(rusqlite::Error::InvalidQuery);
            }
            conn.pragma_update(None, "synchronous", options.durability.pragma())?;
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            // Checkpoint the WAL every ~40 MB rather than every 4 MB: pages rewritten by
            // many commits (index tails, heads) are then copied back once, not each time.
            // Measured +20% durable appends on this machine (docs/PERFORMANCE.md).
            conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        }
        // Touch the schema so that a file that is not a database fails here, before
        // anything else happens.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(())
    };
    setup().map_err(|e| classify(path, e))?;
    Ok(conn)
}

/// What the writer keeps in memory: the committed tree and every agent's head.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) size: u64,
    pub(crate) frontier: Frontier,
    pub(crate) heads: HashMap<AgentId, (u64, Hash)>,
    pub(crate) last_checkpoint: Option<SignedCheckpoint>,
}

/// Loads the writer's state and checks it against the last signed checkpoint.
pub(crate) fn load_state(conn: &Connection, path: &Path) -> Result<State, Error> {
    let size: u64 = conn
        .query_row("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| classify(path, e))? as u64;
    let last_checkpoint = latest_checkpoint(conn, path)?;
    let covered = last_checkpoint.map_or(0, |c| c.checkpoint.tree_size);
    if covered != size {
        return Err(Error::Inconsistent(format!(
            "the store holds {size} entries but its last checkpoint covers {covered}; run `aura ledger verify`"
        )));
    }
    let ids = Frontier::node_ids(size);
    let mut nodes = Vec::with_capacity(ids.len());
    for id in ids {
        nodes.push(perfect_hash(conn, path, id.level, id.index)?);
    }
    let frontier = Frontier::from_parts(size, nodes)
        .ok_or_else(|| Error::Inconsistent("cannot rebuild the Merkle frontier".into()))?;
    if let Some(cp) = last_checkpoint
        && cp.checkpoint.root != frontier.root()
    {
        return Err(Error::Inconsistent(
            "the entries do not hash to the last signed root; run `aura ledger verify`".into(),
        ));
    }
    let mut heads = HashMap::new();
    let mut stmt = conn.prepare("SELECT agent, seq, hash FROM heads")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let agent = agent_from(path, &row.get::<_, Vec<u8>>(0)?)?;
        let hash = hash_from(path, &row.get::<_, Vec<u8>>(2)?)?;
        heads.insert(agent, (row.get::<_, i64>(1)? as u64, hash));
    }
    Ok(State {
        size,
        frontier,
        heads,
        last_checkpoint,
    })
}

fn agent_from(path: &Path, bytes: &[u8]) -> Result<AgentId, Error> {
    <[u8; 16]>::try_from(bytes)
        .map(AgentId::from_bytes)
        .map_err(|_| corrupt(path, "malformed agent id"))
}

fn hash_from(path: &Path, bytes: &[u8]) -> Result<Hash, Error> {
    Hash::from_slice(bytes).ok_or_else(|| corrupt(path, "malformed hash"))
}

fn checkpoint_from(path: &Path, bytes: &[u8]) -> Result<SignedCheckpoint, Error> {
    SignedCheckpoint::decode(bytes).map_err(|e| corrupt(path, format!("malformed checkpoint: {e}")))
}

fn latest_checkpoint(conn: &Connection, path: &Path) -> Result<Option<SignedCheckpoint>, Error> {
    let row: Option<Vec<u8>> = conn
        .query_row(
            "SELECT signed FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| classify(path, e))?;
    row.map(|b| checkpoint_from(path, &b)).transpose()
}

fn checkpoint_at(
    conn: &Connection,
    path: &Path,
    size: u64,
) -> Result<Option<SignedCheckpoint>, Error> {
    let row: Option<Vec<u8>> = conn
        .query_row(
            "SELECT signed FROM checkpoints WHERE tree_size = ?1",
            params![size as i64],
            |r| r.get(0),
        )
        .optional()?;
    row.map(|b| checkpoint_from(path, &b)).transpose()
}

/// The hash of the perfect subtree `(level, index)`, from the tiles or the leaves below it.
pub(crate) fn perfect_hash(
    conn: &Connection,
    path: &Path,
    level: u8,
    index: u64,
) -> Result<Hash, Error> {
    let base = (level / TILE_LEVELS) * TILE_LEVELS;
    let span = level - base;
    let first = index << span;
    let count = 1u64 << span;
    let mut nodes = Vec::with_capacity(count as usize);
    if base == 0 {
        let mut stmt = conn
            .prepare_cached("SELECT hash FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")?;
        let mut rows = stmt.query(params![first as i64, (first + count) as i64])?;
        while let Some(row) = rows.next()? {
            nodes.push(entry::leaf_hash(&hash_from(
                path,
                &row.get::<_, Vec<u8>>(0)?,
            )?));
        }
    } else {
        let mut stmt = conn.prepare_cached(
            "SELECT hash FROM merkle_tiles WHERE level = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
        )?;
        let mut rows = stmt.query(params![
            i64::from(base),
            first as i64,
            (first + count) as i64
        ])?;
        while let Some(row) = rows.next()? {
            nodes.push(hash_from(path, &row.get::<_, Vec<u8>>(0)?)?);
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

fn range_hash(conn: &Connection, path: &Path, start: u64, end: u64) -> Result<Hash, Error> {
    let parts = merkle::perfect_decomposition(start, end)
        .into_iter()
        .map(|id| perfect_hash(conn, path, id.level, id.index))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(merkle::fold_range(&parts))
}

fn stored_entry(
    path: &Path,
    hash: &[u8],
    raw: Vec<u8>,
    pruned: bool,
) -> Result<StoredEntry, Error> {
    let undecodable = |e: aura_core::encoding::DecodeError| {
        Error::Inconsistent(format!("a stored entry does not decode: {e}"))
    };
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
        hash: hash_from(path, hash)?,
        encoded: raw,
        pruned,
    })
}

fn query_entries(
    conn: &Connection,
    path: &Path,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<StoredEntry>, Error> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args).map_err(|e| classify(path, e))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(stored_entry(
            path,
            &row.get::<_, Vec<u8>>(0)?,
            row.get(1)?,
            row.get::<_, i64>(2)? != 0,
        )?);
    }
    Ok(out)
}

/// Witness cosignatures to put into an export: by tree size, the root they cosign and
/// their signature lines.
pub type Cosignatures = HashMap<u64, (Hash, Vec<NoteSignature>)>;

impl SqliteStore {
    /// Exports the ledger as [`Store::export`] does, with each checkpoint followed by the
    /// cosignatures `cosignatures` holds for its size (bundle version 3). A cosignature
    /// set that fits no checkpoint of the ledger refuses the export: one with another
    /// root, or of a size the ledger has no checkpoint of, is evidence of another
    /// history, and one larger than the ledger of a ledger cut back.
    pub async fn export_cosigned(
        &self,
        out: Box<dyn std::io::Write + Send>,
        cosignatures: Cosignatures,
        progress: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Summary, Error> {
        let key = self.inner.node_key;
        self.read(move |conn, path| {
            let io = |source| Error::Io {
                context: "cannot write the export".into(),
                source,
            };
            let writer = std::cell::RefCell::new(BundleWriter::new(out, &key).map_err(io)?);
            let verifier = std::cell::RefCell::new(Verifier::new(key));
            // The sizes whose cosignatures went into the export.
            let exported = std::cell::RefCell::new(std::collections::HashSet::new());
            // The export is verified as it is written: exporting a damaged ledger fails.
            let outcome = scan(
                conn,
                path,
                |position, row| -> Result<(), Result<Failure, std::io::Error>> {
                    let checked = check_row(position, row).map_err(Ok)?;
                    checked
                        .verify(&mut verifier.borrow_mut(), |_, _| {})
                        .map_err(Ok)?;
                    let mut writer = writer.borrow_mut();
                    if checked.pruned {
                        writer.pruned(checked.raw, &checked.hash).map_err(Err)?;
                    } else {
                        writer.entry(checked.raw, &checked.hash).map_err(Err)?;
                    }
                    if (position + 1) % PROGRESS_EVERY == 0 {
                        progress(position + 1);
                    }
                    Ok(())
                },
                |seen, row| {
                    let cp = check_checkpoint_row(seen, row).map_err(Ok)?;
                    verifier.borrow_mut().checkpoint(&cp).map_err(Ok)?;
                    writer.borrow_mut().checkpoint(&cp).map_err(Err)?;
                    let Some((root, sigs)) = cosignatures.get(&cp.checkpoint.tree_size) else {
                        return Ok(());
                    };
                    if *root != cp.checkpoint.root {
                        return Err(Ok(Failure {
                            location: Location::Checkpoint {
                                after_entries: seen,
                                tree_size: Some(cp.checkpoint.tree_size),
                            },
                            reason: Reason::Other(format!(
                                "the cosigned checkpoint of this size has root {root}, not the ledger's"
                            )),
                        }));
                    }
                    for sig in sigs {
                        verifier.borrow_mut().cosignature(sig).map_err(Ok)?;
                        writer.borrow_mut().cosignature(sig).map_err(Err)?;
                    }
                    exported.borrow_mut().insert(cp.checkpoint.tree_size);
                    Ok(())
                },
            )?;
            match outcome {
                Ok(()) => {}
                Err(Ok(failure)) => {
                    return Err(Error::Inconsistent(format!(
                        "refusing to export: {failure}"
                    )));
                }
                Err(Err(e)) => return Err(io(e)),
            }
            let summary = verifier
                .into_inner()
                .finish()
                .map_err(|f| Error::Inconsistent(format!("refusing to export: {f}")))?;
            if let Some(size) = cosignatures
                .keys()
                .filter(|size| !exported.borrow().contains(size))
                .min()
            {
                return Err(Error::Inconsistent(if *size > summary.entries {
                    format!(
                        "refusing to export: a witness cosigned a checkpoint of {size} entries, but the ledger holds {}: it was cut back",
                        summary.entries
                    )
                } else {
                    format!(
                        "refusing to export: a witness cosigned a checkpoint of {size} entries, but the ledger has no checkpoint of that size: another history"
                    )
                }));
            }
            writer.into_inner().finish().map_err(io)?;
            progress(summary.entries);
            Ok(summary)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn node_key(&self) -> PublicKey {
        self.inner.node_key
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<crate::Committed>> {
        self.inner.commits.subscribe()
    }

    async fn append(&self, batch: Vec<NewEntry>) -> Result<AppendReceipt, Error> {
        let writer = self.inner.writer.as_ref().ok_or(Error::ReadOnly)?;
        writer.append(batch).await
    }

    async fn tree_size(&self) -> Result<u64, Error> {
        self.read(|conn, path| {
            let n: i64 = conn
                .query_row("SELECT COALESCE(MAX(idx) + 1, 0) FROM entries", [], |r| {
                    r.get(0)
                })
                .map_err(|e| classify(path, e))?;
            Ok(n as u64)
        })
        .await
    }

    async fn head(&self, agent: AgentId) -> Result<Option<Head>, Error> {
        self.read(move |conn, path| {
            let row: Option<(i64, Vec<u8>)> = conn
                .query_row(
                    "SELECT seq, hash FROM heads WHERE agent = ?1",
                    params![agent.as_bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| classify(path, e))?;
            row.map(|(seq, hash)| {
                Ok(Head {
                    agent,
                    seq: seq as u64,
                    hash: hash_from(path, &hash)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn heads(&self) -> Result<Vec<Head>, Error> {
        self.read(|conn, path| {
            let mut stmt = conn.prepare("SELECT agent, seq, hash FROM heads ORDER BY agent")?;
            let mut rows = stmt.query([]).map_err(|e| classify(path, e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(Head {
                    agent: agent_from(path, &row.get::<_, Vec<u8>>(0)?)?,
                    seq: row.get::<_, i64>(1)? as u64,
                    hash: hash_from(path, &row.get::<_, Vec<u8>>(2)?)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn entry(&self, at: EntryRef) -> Result<Option<StoredEntry>, Error> {
        self.read(move |conn, path| {
            let found = match at {
                EntryRef::Index(i) => query_entries(
                    conn,
                    path,
                    "SELECT hash, raw, pruned FROM entries WHERE idx = ?1",
                    params![i64::try_from(i).unwrap_or(i64::MAX)],
                )?,
                EntryRef::AgentSeq(agent, seq) => query_entries(
                    conn,
                    path,
                    "SELECT hash, raw, pruned FROM entries WHERE agent = ?1 AND seq = ?2",
                    params![agent.as_bytes(), i64::try_from(seq).unwrap_or(i64::MAX)],
                )?,
            };
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn entries(&self, from_index: u64, limit: usize) -> Result<Vec<StoredEntry>, Error> {
        self.read(move |conn, path| {
            query_entries(
                conn,
                path,
                "SELECT hash, raw, pruned FROM entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2",
                params![i64::try_from(from_index).unwrap_or(i64::MAX), limit as i64],
            )
        })
        .await
    }

    async fn agent_entries(
        &self,
        agent: AgentId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, Error> {
        self.read(move |conn, path| {
            query_entries(
                conn,
                path,
                "SELECT hash, raw, pruned FROM entries WHERE agent = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                params![agent.as_bytes(), i64::try_from(from_seq).unwrap_or(i64::MAX), limit as i64],
            )
        })
        .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, Error> {
        self.read(|conn, path| latest_checkpoint(conn, path)).await
    }

    async fn checkpoint(&self, tree_size: u64) -> Result<Option<SignedCheckpoint>, Error> {
        self.read(move |conn, path| checkpoint_at(conn, path, tree_size))
            .await
    }

    async fn checkpoints(
        &self,
        after_size: u64,
        limit: usize,
    ) -> Result<Vec<SignedCheckpoint>, Error> {
        self.read(move |conn, path| {
            let mut stmt = conn.prepare_cached(
                "SELECT signed FROM checkpoints WHERE tree_size > ?1 ORDER BY tree_size LIMIT ?2",
            )?;
            let rows = stmt.query_map(
                params![i64::try_from(after_size).unwrap_or(i64::MAX), limit as i64],
                |r| r.get::<_, Vec<u8>>(0),
            )?;
            rows.map(|r| checkpoint_from(path, &r?)).collect()
        })
        .await
    }

    async fn inclusion_proof(
        &self,
        index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, Error> {
        self.read(move |conn, path| {
            let tx = conn.transaction()?;
            let checkpoint = match tree_size {
                Some(size) => checkpoint_at(&tx, path, size)?.ok_or_else(|| {
                    Error::NotFound(format!("a signed checkpoint of size {size}"))
                })?,
                None => latest_checkpoint(&tx, path)?
                    .ok_or_else(|| Error::NotFound("any entry".into()))?,
            };
            let size = checkpoint.checkpoint.tree_size;
            if index >= size {
                return Err(Error::NotFound(format!(
                    "entry #{index} in the signed tree of {size} entries"
                )));
            }
            let (entry, pruned): (Vec<u8>, i64) = tx
                .query_row(
                    "SELECT raw, pruned FROM entries WHERE idx = ?1",
                    params![index as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| Error::NotFound(format!("entry #{index}")))?;
            // A proof document carries the whole entry, which a pruned one no longer is.
            if pruned != 0 {
                return Err(Error::Pruned { index });
            }
            let path_hashes = merkle::inclusion_ranges(index, size)
                .map_err(|e| Error::Inconsistent(e.to_string()))?
                .into_iter()
                .map(|(a, b)| range_hash(&tx, path, a, b))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(InclusionProof {
                entry,
                path: path_hashes,
                checkpoint,
            })
        })
        .await
    }

    async fn consistency_proof(
        &self,
        old: u64,
        new: Option<u64>,
    ) -> Result<ConsistencyProof, Error> {
        self.read(move |conn, path| {
            let tx = conn.transaction()?;
            let new_cp = match new {
                Some(size) => checkpoint_at(&tx, path, size)?.ok_or_else(|| {
                    Error::NotFound(format!("a signed checkpoint of size {size}"))
                })?,
                None => latest_checkpoint(&tx, path)?
                    .ok_or_else(|| Error::NotFound("any checkpoint".into()))?,
            };
            let old_cp = checkpoint_at(&tx, path, old)?
                .ok_or_else(|| Error::NotFound(format!("a signed checkpoint of size {old}")))?;
            let ranges =
                merkle::consistency_ranges(old, new_cp.checkpoint.tree_size).map_err(|_| {
                    Error::NotFound(format!("a checkpoint of size {old} before the newer one"))
                })?;
            let path_hashes = ranges
                .into_iter()
                .map(|(a, b)| range_hash(&tx, path, a, b))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ConsistencyProof {
                old: old_cp,
                new: new_cp,
                path: path_hashes,
            })
        })
        .await
    }

    async fn verify(
        &self,
        progress: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Verification, Error> {
        let key = self.inner.node_key;
        self.read(move |conn, path| verify_store(conn, path, key, progress.as_ref()))
            .await
    }

    async fn prune(&self, indices: Vec<u64>) -> Result<PruneOutcome, Error> {
        let writer = self.inner.writer.as_ref().ok_or(Error::ReadOnly)?;
        writer.prune(indices).await
    }

    async fn export(
        &self,
        out: Box<dyn std::io::Write + Send>,
        progress: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Summary, Error> {
        self.export_cosigned(out, Cosignatures::new(), progress)
            .await
    }
}
