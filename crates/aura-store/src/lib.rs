//! Aura's storage.
//!
//! [`Store`] is what the rest of Aura writes to and reads from; [`sqlite::SqliteStore`] is
//! the embedded backend. The trait is shaped so that a PostgreSQL backend can follow:
//! every method is async, takes owned or borrowed plain values, and promises nothing a
//! server-backed store could not keep.
//!
//! The central promise is [`Store::append`]: a caller's batch is appended atomically,
//! after the agent's current head, or refused whole; and the caller hears "ok" only once
//! the entries are durable and covered by a checkpoint the node has signed. An error
//! other than [`Error::CommitFailed`] means nothing of the batch was stored. After
//! `CommitFailed` the batch is either wholly stored or wholly absent, but which is unknown
//! to the caller (a failed fsync leaves that open): it reads the agent's head to learn it,
//! and the store's next append follows whatever the database holds.
//!
//! [`Store::prune`] is the one change to written entries: it drops bodies and keeps
//! everything the ledger's proofs rest on (each entry's hash, its place, its chain), so a
//! pruned ledger still verifies (docs/ledger.md, "Pruned entries").

#![forbid(unsafe_code)]

use std::fmt;

use async_trait::async_trait;
use aura_core::hash::Hash;
use aura_core::{AgentId, PublicKey, Timestamp};
use aura_ledger::SignedCheckpoint;
use aura_ledger::entry::{Entry, Kind};
use aura_ledger::proof::{ConsistencyProof, InclusionProof};
use aura_ledger::verify::{Failure, Summary};
use serde::Serialize;

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

pub use sqlite::SqliteStore;

/// The sequence number a new entry must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seq {
    /// Whatever follows the agent's head when the batch commits.
    Next,
    /// Exactly this number; refused with [`Error::SequenceConflict`] otherwise. Writers
    /// that read the head and decide on it (the kernel) use this, so that a concurrent
    /// writer can never slip an entry in between unnoticed.
    Exactly(u64),
}

/// An entry to append. The store fills in its index and previous hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub agent: AgentId,
    pub seq: Seq,
    pub kind: Kind,
    pub recorded_at: Timestamp,
    pub body: Vec<u8>,
}

/// Where an appended entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Appended {
    pub index: u64,
    pub agent: AgentId,
    pub seq: u64,
    pub hash: Hash,
}

/// The answer to a successful append: every entry's place, and the signed checkpoint that
/// covers them (it may cover other callers' entries of the same commit too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReceipt {
    pub entries: Vec<Appended>,
    pub checkpoint: SignedCheckpoint,
}

/// An entry as stored: decoded, with its encoding and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The entry. When it was pruned, its body is empty: check [`StoredEntry::pruned`]
    /// before reading the body.
    pub entry: Entry,
    /// The canonical encoding, or the stub encoding
    /// ([`PrunedEntry`](aura_ledger::entry::PrunedEntry)) of a pruned entry; either way
    /// what a verifier is handed.
    pub encoded: Vec<u8>,
    /// The entry hash (of the whole entry, also when its body was pruned).
    pub hash: Hash,
    /// Set when the body was pruned.
    pub pruned: Option<Pruned>,
}

/// What is known of a pruned body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// How long the body was.
    pub body_len: u32,
}

impl StoredEntry {
    /// The body, or `None` if it was pruned: the way to read a body that cannot mistake a
    /// pruned one for an empty one.
    pub fn body(&self) -> Option<&[u8]> {
        self.pruned.is_none().then_some(self.entry.body.as_slice())
    }
}

/// What [`Store::prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneOutcome {
    /// Entries whose bodies were removed now.
    pub pruned: u64,
    /// Entries named that were pruned before (pruning is idempotent).
    pub already_pruned: u64,
    /// Bytes of entry encodings removed: the bodies (a stub is its entry's encoding
    /// without the body). The database file shrinks only when vacuumed; until then SQLite
    /// reuses the freed pages for new entries.
    pub bytes_freed: u64,
}

/// How to name an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryRef {
    Index(u64),
    AgentSeq(AgentId, u64),
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryRef::Index(i) => write!(f, "#{i}"),
            EntryRef::AgentSeq(a, s) => write!(f, "{a}:{s}"),
        }
    }
}

/// An agent's stream head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Head {
    pub agent: AgentId,
    pub seq: u64,
    pub hash: Hash,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sequence conflict for {agent}: the next entry is seq {expected}, not {requested}")]
    SequenceConflict {
        agent: AgentId,
        expected: u64,
        requested: u64,
    },
    #[error("invalid entry: {0}")]
    InvalidEntry(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("the store was opened read-only")]
    ReadOnly,
    #[error("{} is not an Aura store, or it is damaged: {detail}", path.display())]
    Corrupt {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("the store belongs to node key {expected}, not {found}")]
    WrongNode { expected: String, found: String },
    #[error("the store is closed")]
    Closed,
    #[error(
        "writes are refused after a commit failed and the store could not reload its state; restart to recover"
    )]
    Poisoned,
    #[error("entry #{index} was pruned: only its hash is kept")]
    Pruned { index: u64 },
    #[error("this store cannot {0}")]
    Unsupported(&'static str),
    #[error("the store's data is inconsistent: {0}")]
    Inconsistent(String),
    /// The database holds fewer entries than a checkpoint the node published: it was cut
    /// back, or restored from an older copy.
    #[error(
        "the ledger was cut back: it holds {entries} entries, but this node published a checkpoint of {published} ({})",
        path.display()
    )]
    CutBack {
        entries: u64,
        published: u64,
        path: std::path::PathBuf,
    },
    /// The database's tree at the published checkpoint's size has another root.
    #[error(
        "the ledger's history differs from the checkpoint of {size} entries this node published ({})",
        path.display()
    )]
    Forked { size: u64, path: std::path::PathBuf },
    /// The published checkpoint file is not a checkpoint note signed by this node.
    #[error("the published checkpoint {} is not valid: {detail}", path.display())]
    BadPublished {
        path: std::path::PathBuf,
        detail: String,
    },
    /// The commit of the caller's batch failed. The batch is wholly stored or wholly
    /// absent; read the agent's head to learn which.
    #[error(
        "a commit failed, so the entries may or may not be stored; read the agent's head to know"
    )]
    CommitFailed(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// The disk that holds the store is full: the batch was refused and nothing of it
    /// was stored (the writer read the database again to be sure). The store goes on
    /// refusing appends the same way until there is room, and stays whole meanwhile.
    #[error("the disk holding {} is full: nothing was stored", path.display())]
    DiskFull { path: std::path::PathBuf },
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The database server answered with an error, or could not be reached; nothing of
    /// the request was stored.
    #[cfg(feature = "postgres")]
    #[error("database error")]
    Postgres(#[from] tokio_postgres::Error),
    /// The database could not be reached or refused the request; nothing was stored.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The agent's shard is not leased to this node at the epoch it holds (the lease
    /// expired, or another node took the shard): nothing was stored.
    #[error(
        "shard {shard} is not leased to this node (its lease expired or moved); nothing was stored"
    )]
    Fenced { shard: u32 },
    /// The node's key is not enrolled in the cluster's log.
    #[error("node key {node} is not enrolled in this cluster")]
    NotEnrolled { node: String },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the error is about the request (so retrying the same request cannot help)
    /// rather than about the store.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::SequenceConflict { .. }
                | Error::InvalidEntry(_)
                | Error::NotFound(_)
                | Error::Pruned { .. }
                | Error::Unsupported(_)
        )
    }
}

/// One commit, as the store announces it to subscribers, in commit order.
#[derive(Debug, Clone)]
pub struct Committed {
    pub entries: Vec<StoredEntry>,
    pub checkpoint: SignedCheckpoint,
}

/// The outcome of verifying a whole store.
#[derive(Debug)]
pub enum Verification {
    Ok(Summary),
    Failed(Failure),
}

/// What Aura needs from storage.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The public key of the node whose ledger this is.
    fn node_key(&self) -> PublicKey;

    /// Every commit from now on, in commit order, once durable. A subscriber that falls
    /// behind gets `RecvError::Lagged` and can catch up by reading the ledger.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<Committed>>;

    /// Appends a batch atomically; see the crate documentation for the promise.
    async fn append(&self, batch: Vec<NewEntry>) -> Result<AppendReceipt, Error>;

    /// The number of entries in the ledger.
    async fn tree_size(&self) -> Result<u64, Error>;

    /// An agent's head, or `None` if it has no entries.
    async fn head(&self, agent: AgentId) -> Result<Option<Head>, Error>;

    /// Every agent's head, ordered by agent id.
    async fn heads(&self) -> Result<Vec<Head>, Error>;

    async fn entry(&self, at: EntryRef) -> Result<Option<StoredEntry>, Error>;

    /// Up to `limit` entries from `from_index` on, in ledger order.
    async fn entries(&self, from_index: u64, limit: usize) -> Result<Vec<StoredEntry>, Error>;

    /// Up to `limit` of an agent's entries from `from_seq` on, in order.
    async fn agent_entries(
        &self,
        agent: AgentId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, Error>;

    async fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, Error>;

    /// The checkpoint of exactly `tree_size` entries, if one was signed.
    async fn checkpoint(&self, tree_size: u64) -> Result<Option<SignedCheckpoint>, Error>;

    /// Up to `limit` checkpoints with a tree size above `after_size`, in order.
    async fn checkpoints(
        &self,
        after_size: u64,
        limit: usize,
    ) -> Result<Vec<SignedCheckpoint>, Error>;

    /// Proof that the entry at `index` is in the signed tree of `tree_size` entries (the
    /// latest checkpoint if `None`).
    async fn inclusion_proof(
        &self,
        index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, Error>;

    /// Proof that the signed tree of `old` entries is a prefix of the one of `new`
    /// entries (the latest checkpoint if `None`).
    async fn consistency_proof(
        &self,
        old: u64,
        new: Option<u64>,
    ) -> Result<ConsistencyProof, Error>;

    /// Checks the whole store: every entry, chain, checkpoint and signature, and whatever
    /// the backend keeps beside them. `progress` hears the number of entries checked.
    async fn verify(&self, progress: Box<dyn Fn(u64) + Send + Sync>)
    -> Result<Verification, Error>;

    /// Removes the bodies of the entries at `indices`, atomically: all of them or none.
    /// Each keeps its hash, header and place, so chains, Merkle roots and signed
    /// checkpoints still verify; afterwards it reads back with [`StoredEntry::pruned`]
    /// set. Entries already pruned are counted, not refused. An index past the end, or an
    /// entry whose body no longer matches its hash (pruning it would hide the damage),
    /// refuses the whole call.
    async fn prune(&self, indices: Vec<u64>) -> Result<PruneOutcome, Error> {
        let _ = indices;
        Err(Error::Unsupported("prune entries"))
    }

    /// Writes the whole ledger as an export bundle (see `aura_ledger::bundle`).
    async fn export(
        &self,
        out: Box<dyn std::io::Write + Send>,
        progress: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Summary, Error>;
}
