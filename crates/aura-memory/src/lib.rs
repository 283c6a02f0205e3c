//! Aura's semantic memory (docs/memory.md): facts and documents an agent or operator
//! stores, each with its embedding, searched by similarity — one index per namespace, so a
//! search can only ever find what its own namespace stored.
//!
//! The index ([`hnsw::Hnsw`]) is a hierarchical navigable small world graph written here,
//! deterministic given the insertion order; its recall@10 against exact search is tested
//! (`tests/recall.rs`) and benchmarked. Records persist behind [`store::Persist`]
//! ([`store::SqliteMemory`] in the node's data directory), and the index is rebuilt from
//! them in insertion order when [`Memory::open`] runs, so it is the same graph after a
//! restart. Embedding the text (MiniLM through aura-host) and recording each write in the
//! ledger are the caller's part: this crate stores, forgets and searches vectors.

#![forbid(unsafe_code)]

pub mod hnsw;
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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the memory database failed")]
    Sqlite(#[from] rusqlite::Error),
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

/// The memory: every namespace's index, over a [`Persist`].
#[derive(Debug)]
pub struct Memory {
    persist: Arc<dyn Persist>,
    dim: usize,
    options: Options,
    spaces: RwLock<BTreeMap<String, Space>>,
}

impl Memory {
    /// Opens the memory over `persist`, rebuilding each namespace's index from its records
    /// in insertion order (forgotten ones inserted as zero vectors, then removed, so the
    /// graph is the one built before).
    pub fn open(persist: Arc<dyn Persist>, dim: usize, options: Options) -> Result<Memory, Error> {
        let memory = Memory {
            persist,
            dim,
            options,
            spaces: RwLock::new(BTreeMap::new()),
        };
        let records = memory.persist.load()?;
        {
            let mut spaces = memory.spaces.write().unwrap_or_else(|e| e.into_inner());
            for r in records {
                let vector = if r.forgotten {
                    vec![0.0; dim]
                } else {
                    r.vector
                };
                if vector.len() != dim {
                    return Err(Error::Corrupt(format!(
                        "memory `{}` has {} dimensions, not {dim}",
                        r.id,
                        vector.len()
                    )));
                }
                let space = Self::space(&mut spaces, &r.namespace, dim, options);
                let node = space.index.insert(&vector);
                space.items.push((r.id.clone(), r.kind, r.text));
                if r.forgotten {
                    space.index.remove(node);
                } else {
                    space.by_id.insert(r.id, node);
                }
            }
        }
        Ok(memory)
    }

    fn space<'a>(
        spaces: &'a mut BTreeMap<String, Space>,
        namespace: &str,
        dim: usize,
        options: Options,
    ) -> &'a mut Space {
        spaces.entry(namespace.to_owned()).or_insert_with(|| Space {
            index: Hnsw::new(dim, options),
            items: Vec::new(),
            by_id: BTreeMap::new(),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Stores a memory in `namespace`: persisted first, then indexed.
    pub fn store(
        &self,
        namespace: &str,
        id: &str,
        kind: &str,
        text: &str,
        vector: &[f32],
    ) -> Result<u64, Error> {
        if vector.len() != self.dim {
            return Err(Error::Dimension {
                got: vector.len(),
                want: self.dim,
            });
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(Error::NotFinite);
        }
        // The write lock is held across the database write, so the index's insertion order
        // is the database's.
        let mut spaces = self.spaces.write().unwrap_or_else(|e| e.into_inner());
        if spaces
            .get(namespace)
            .is_some_and(|s| s.by_id.contains_key(id))
        {
            return Err(Error::Exists(id.to_owned()));
        }
        let seq = self.persist.insert(&Record {
            seq: 0,
            namespace: namespace.to_owned(),
            id: id.to_owned(),
            kind: kind.to_owned(),
            text: text.to_owned(),
            vector: vector.to_vec(),
            forgotten: false,
        })?;
        let space = Self::space(&mut spaces, namespace, self.dim, self.options);
        let node = space.index.insert(vector);
        space
            .items
            .push((id.to_owned(), kind.to_owned(), text.to_owned()));
        space.by_id.insert(id.to_owned(), node);
        Ok(seq)
    }

    /// Forgets the memory `id` of `namespace`; false if it has none by that name.
    pub fn forget(&self, namespace: &str, id: &str) -> Result<bool, Error> {
        let mut spaces = self.spaces.write().unwrap_or_else(|e| e.into_inner());
        let Some(space) = spaces.get_mut(namespace) else {
            return Ok(false);
        };
        let Some(&node) = space.by_id.get(id) else {
            return Ok(false);
        };
        if !self.persist.forget(namespace, id)? {
            return Ok(false);
        }
        space.index.remove(node);
        space.by_id.remove(id);
        space.items[node as usize].2.clear();
        Ok(true)
    }

    /// The `k` memories of `namespace` most similar to `query`, most similar first. Only
    /// `namespace`'s index is searched.
    pub fn search(&self, namespace: &str, query: &[f32], k: usize) -> Result<Vec<Hit>, Error> {
        if query.len() != self.dim {
            return Err(Error::Dimension {
                got: query.len(),
                want: self.dim,
            });
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(Error::NotFinite);
        }
        let spaces = self.spaces.read().unwrap_or_else(|e| e.into_inner());
        let Some(space) = spaces.get(namespace) else {
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
