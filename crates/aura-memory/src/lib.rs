//! Aura's semantic memory (docs/memory.md): facts and documents an agent or operator
//! stores, each with its embedding, searched by similarity — one index per namespace, so a
//! search can only ever find what its own namespace stored.
//!
//! The index ([`hnsw::Hnsw`]) is a hierarchical navigable small world graph written here,
//! deterministic given the insertion order; its recall@10 against exact search is tested
//! (`tests/recall.rs`) and benchmarked (`aura-bench memory`). Records persist behind
//! [`store::Persist`] ([`store::SqliteMemory`] in the node's data directory,
//! [`postgres::PgMemory`] in a cluster's database), and the index is built from them in
//! the database's order: a write goes to the database first and reaches the index by
//! reading back what changed since the index last looked ([`Persist::since`]), so the
//! graph is the same after a restart and on every node of a cluster. Embedding the text
//! (MiniLM through aura-host) and recording each write in the ledger are the caller's
//! part: this crate stores, forgets, lists and searches vectors.
//!
//! Every method blocks (database IO, graph search): async callers run them on blocking
//! threads.

#![forbid(unsafe_code)]

pub mod hnsw;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub use hnsw::{Hnsw, Options};
pub use store::{Persist, SqliteMemory};

/// A memory as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its position in insertion order (assigned by the store).
    pub seq: u64,
    /// When it last changed, on the same counter as `seq`: its `seq` when stored, a later
    /// number when forgotten. [`Persist::since`] reads changes by it.
    pub version: u64,
    pub namespace: String,
    /// The caller's name for it, unique in its namespace.
    pub id: String,
    /// `fact` or `document` (or whatever the caller files it under).
    pub kind: String,
    pub text: String,
    pub vector: Vec<f32>,
    /// Forgotten: kept as a tombstone (text and vector erased) so that the index, rebuilt
    /// in order, is the same graph.
    pub forgotten: bool,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub kind: String,
    pub text: String,
    /// Cosine similarity, -1 to 1.
    pub score: f32,
}

/// A live memory as [`Memory::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub kind: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the memory database failed")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL database could not be reached or refused a statement; nothing was
    /// changed by the call that reports it.
    #[error("the memory database is unavailable: {0}")]
    Unavailable(String),
    #[error("the memory database is damaged: {0}")]
    Corrupt(String),
    #[error("a memory named `{0}` already exists in this namespace")]
    Exists(String),
    #[error("the vector has {got} dimensions; this memory holds {want}")]
    Dimension { got: usize, want: usize },
    #[error("the vector has a value that is not a finite number")]
    NotFinite,
}

/// One namespace's index and what its nodes are.
#[derive(Debug)]
struct Space {
    index: Hnsw,
    /// By node number: the record's id, kind and text (empty once forgotten).
    items: Vec<(String, String, String)>,
    by_id: BTreeMap<String, u32>,
}

/// Every namespace's index, and how far into the database's changes they are.
#[derive(Debug, Default)]
struct State {
    spaces: BTreeMap<String, Space>,
    /// The highest `seq` indexed: a changed record at or below it is a forget.
    max_seq: u64,
    /// The highest `version` read back.
    cursor: u64,
}

/// The memory: every namespace's index, over a [`Persist`].
#[derive(Debug)]
pub struct Memory {
    persist: Arc<dyn Persist>,
    dim: usize,
    options: Options,
    state: RwLock<State>,
}

impl Memory {
    /// Opens the memory over `persist`, building each namespace's index from its records
    /// in insertion order (forgotten ones inserted as zero vectors, then removed, so the
    /// graph is the one built before).
    pub fn open(persist: Arc<dyn Persist>, dim: usize, options: Options) -> Result<Memory, Error> {
        let memory = Memory {
            persist,
            dim,
            options,
            state: RwLock::new(State::default()),
        };
        {
            let mut state = memory.state.write().unwrap_or_else(|e| e.into_inner());
            memory.refresh(&mut state)?;
        }
        Ok(memory)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Applies what changed in the database since the index last looked: new records are
    /// inserted in `seq` order, forgotten ones removed. Idempotent: a failure part way
    /// leaves the cursor where it was, and applying a record twice changes nothing.
    fn refresh(&self, state: &mut State) -> Result<(), Error> {
        let changed = self.persist.since(state.cursor)?;
        let mut cursor = state.cursor;
        for r in changed {
            cursor = cursor.max(r.version);
            if r.seq <= state.max_seq {
                // Known already: only a forget can have changed it.
                if r.forgotten
                    && let Some(space) = state.spaces.get_mut(&r.namespace)
                    && let Some(node) = space.by_id.remove(&r.id)
                {
                    space.index.remove(node);
                    space.items[node as usize].2.clear();
                }
                continue;
            }
            let vector = if r.forgotten {
                vec![0.0; self.dim]
            } else {
                r.vector
            };
            if vector.len() != self.dim {
                return Err(Error::Corrupt(format!(
                    "memory `{}` has {} dimensions, not {}",
                    r.id,
                    vector.len(),
                    self.dim
                )));
            }
            let (dim, options) = (self.dim, self.options);
            let space = state
                .spaces
                .entry(r.namespace.clone())
                .or_insert_with(|| Space {
                    index: Hnsw::new(dim, options),
                    items: Vec::new(),
                    by_id: BTreeMap::new(),
                });
            let node = space.index.insert(&vector);
            space.items.push((r.id.clone(), r.kind, r.text));
            if r.forgotten {
                space.index.remove(node);
            } else {
                space.by_id.insert(r.id, node);
            }
            state.max_seq = r.seq;
        }
        state.cursor = cursor;
        Ok(())
    }

    /// Brings the index up to date where other processes write the same database (a
    /// cluster's nodes), so a search sees what another node stored or forgot.
    fn catch_up(&self) -> Result<(), Error> {
        if self.persist.shared() {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            self.refresh(&mut state)?;
        }
        Ok(())
    }

    fn check(&self, vector: &[f32]) -> Result<(), Error> {
        if vector.len() != self.dim {
            return Err(Error::Dimension {
                got: vector.len(),
                want: self.dim,
            });
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(Error::NotFinite);
        }
        Ok(())
    }

    /// Stores a memory in `namespace`: persisted first, then indexed from the database.
    /// Returns its `seq`.
    pub fn store(
        &self,
        namespace: &str,
        id: &str,
        kind: &str,
        text: &str,
        vector: &[f32],
    ) -> Result<u64, Error> {
        self.check(vector)?;
        // The write lock is held across the database write, so that this process indexes
        // records in the database's order.
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut state)?;
        if state
            .spaces
            .get(namespace)
            .is_some_and(|s| s.by_id.contains_key(id))
        {
            return Err(Error::Exists(id.to_owned()));
        }
        let seq = self.persist.insert(&Record {
            seq: 0,
            version: 0,
            namespace: namespace.to_owned(),
            id: id.to_owned(),
            kind: kind.to_owned(),
            text: text.to_owned(),
            vector: vector.to_vec(),
            forgotten: false,
        })?;
        self.refresh(&mut state)?;
        Ok(seq)
    }

    /// Forgets the memory `id` of `namespace`; false if it has none by that name.
    pub fn forget(&self, namespace: &str, id: &str) -> Result<bool, Error> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut state)?;
        let live = state
            .spaces
            .get(namespace)
            .is_some_and(|s| s.by_id.contains_key(id));
        if !live || !self.persist.forget(namespace, id)? {
            return Ok(false);
        }
        self.refresh(&mut state)?;
        Ok(true)
    }

    /// Whether `namespace` holds a live memory named `id`.
    pub fn contains(&self, namespace: &str, id: &str) -> Result<bool, Error> {
        self.catch_up()?;
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .spaces
            .get(namespace)
            .is_some_and(|s| s.by_id.contains_key(id)))
    }

    /// The live memories of `namespace`, in the order they were stored.
    pub fn list(&self, namespace: &str) -> Result<Vec<Listed>, Error> {
        self.catch_up()?;
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let Some(space) = state.spaces.get(namespace) else {
            return Ok(Vec::new());
        };
        let mut nodes: Vec<u32> = space.by_id.values().copied().collect();
        nodes.sort_unstable();
        Ok(nodes
            .into_iter()
            .map(|n| {
                let (id, kind, text) = space.items[n as usize].clone();
                Listed { id, kind, text }
            })
            .collect())
    }

    /// The `k` memories of `namespace` most similar to `query`, most similar first. Only
    /// `namespace`'s index is searched.
    pub fn search(&self, namespace: &str, query: &[f32], k: usize) -> Result<Vec<Hit>, Error> {
        self.check(query)?;
        self.catch_up()?;
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let Some(space) = state.spaces.get(namespace) else {
            return Ok(Vec::new());
        };
        Ok(space
            .index
            .search(query, k)
            .into_iter()
            .map(|(node, score)| {
                let (id, kind, text) = space.items[node as usize].clone();
                Hit {
                    id,
                    kind,
                    text,
                    score,
                }
            })
            .collect())
    }
}
