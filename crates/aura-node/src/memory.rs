//! The node's memory (docs/memory.md): aura-memory's index over the node's database,
//! embedded with the text encoder its model host serves (all-MiniLM-L6-v2, imported as
//! `minilm` by default), for the `memory.*` tools of missions and for operators over
//! `/v1/memory`.
//!
//! **Spaces.** Every memory lives under a key `<namespace>/<space>`: an agent's own
//! memory is `<namespace>/agent:<agent id>`, a shared space `<namespace>/shared:<name>`,
//! and an agent's episodes `<namespace>/episodes:<agent id>`. aura-memory keeps one index
//! per key, so a search can only ever find its own space's memories; which agent may reach
//! which space is policy's decision (`Aura::Memory`), and the tools never let an agent
//! name another agent's own space.
//!
//! **Episodes.** `memory.recall` searches the agent's own past missions. Each ended
//! mission (completed, failed or cancelled) is indexed once, under its mission id, from
//! what its record says: the objective, the outcome with its summary or reason, and the
//! tools its completed calls used. Indexing happens when the agent recalls (it catches up
//! on the missions that ended since it last did), so there is no background task to lose
//! work and a recall always sees every mission that ended before it. The episodes are a
//! derived index of the ledger's mission records, which are the source of truth; they are
//! not recorded again.
//!
//! **Recording.** A mission's `memory.store` and `memory.forget` are recorded by the
//! engine as the call's attempt and effect (the effect names the id and the text's
//! SHA-256); an operator's, through `/v1/memory`, as a `memory.stored` or
//! `memory.forgotten` entry in the node's own stream.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use aura_core::AgentId;
use aura_host::{ModelError, ModelHost};
use aura_identity::Namespace;
use aura_memory::{Hit, Listed, Memory};
use aura_tools::{ErrorKind, MemoryBackend, MemorySpace, Remembered, ToolError};

/// MiniLM-L6-v2's dimension: what the node's memory holds.
pub const DIMENSION: usize = 384;

/// The node's memory: the index, the model that embeds, and (once the engine runs) the
/// missions episodes are made of.
#[derive(Debug)]
pub struct MemoryService {
    memory: Arc<Memory>,
    host: Arc<ModelHost>,
    model: String,
    engine: OnceLock<aura_engine::Handle>,
}

/// Why a memory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedding model could not embed (not installed, not licensed, stopping).
    #[error("the memory's embedding model `{model}`: {}", cause.message)]
    Embed { model: String, cause: ModelError },
    #[error(transparent)]
    Memory(#[from] aura_memory::Error),
    #[error("the memory's task failed: {0}")]
    Task(String),
    #[error("episodes are unavailable until the node's engine runs")]
    NoEngine,
}

/// The key a space's memories are kept under.
pub fn key(namespace: &Namespace, space: &str) -> String {
    format!("{namespace}/{space}")
}

fn episodes_key(namespace: &Namespace, agent: AgentId) -> String {
    format!("{namespace}/episodes:{agent}")
}

/// The key of a tool call's space.
fn space_key(space: &MemorySpace) -> String {
    key(&space.namespace, &space.label())
}

impl MemoryService {
    /// Memory over `memory`, embedding with the model host's `model`.
    pub fn new(memory: Arc<Memory>, host: Arc<ModelHost>, model: impl Into<String>) -> Self {
        MemoryService {
            memory,
            host,
            model: model.into(),
            engine: OnceLock::new(),
        }
    }

    /// Gives the service the engine whose missions become episodes. The tools are built
    /// before the engine starts, so this comes after; a second call changes nothing.
    pub fn attach(&self, engine: aura_engine::Handle) {
        let _ = self.engine.set(engine);
    }

    /// The embedding model's name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Embeds `text` with the node's encoder (metered, with a receipt, as every use of a
    /// model is).
    async fn embed(&self, text: &str) -> Result<Vec<f32>, Error> {
        let embed_error = |cause| Error::Embed {
            model: self.model.clone(),
            cause,
        };
        let served = self.host.open(&self.model).await.map_err(embed_error)?;
        let (mut embeddings, _receipt) = self
            .host
            .embed(&served, vec![text.to_owned()])
            .await
            .map_err(embed_error)?;
        embeddings
            .vectors
            .pop()
            .ok_or_else(|| Error::Task("the model returned no embedding".into()))
    }

    /// Runs `f` on the memory on a blocking thread (the memory blocks on its database and
    /// on graph search).
    async fn blocking<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Memory) -> Result<T, aura_memory::Error> + Send + 'static,
    {
        let memory = self.memory.clone();
        tokio::task::spawn_blocking(move || f(&memory))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(Error::from)
    }

    /// Embeds and stores `text` as `id` under `key`; returns its `seq`.
    pub async fn store(&self, key: &str, id: &str, kind: &str, text: &str) -> Result<u64, Error> {
        let vector = self.embed(text).await?;
        let (key, id, kind, text) = (
            key.to_owned(),
            id.to_owned(),
            kind.to_owned(),
            text.to_owned(),
        );
        self.blocking(move |m| m.store(&key, &id, &kind, &text, &vector))
            .await
    }

    /// The `k` memories under `key` most similar to `query`.
    pub async fn search(&self, key: &str, query: &str, k: usize) -> Result<Vec<Hit>, Error> {
        let vector = self.embed(query).await?;
        let key = key.to_owned();
        self.blocking(move |m| m.search(&key, &vector, k)).await
    }

    /// Forgets `id` under `key`; false if there is none.
    pub async fn forget(&self, key: &str, id: &str) -> Result<bool, Error> {
        let (key, id) = (key.to_owned(), id.to_owned());
        self.blocking(move |m| m.forget(&key, &id)).await
    }

    /// The live memories under `key`, in the order they were stored.
    pub async fn list(&self, key: &str) -> Result<Vec<Listed>, Error> {
        let key = key.to_owned();
        self.blocking(move |m| m.list(&key)).await
    }

    /// Indexes the ended missions of `agent` that are not episodes yet.
    async fn catch_up_episodes(&self, namespace: &Namespace, agent: AgentId) -> Result<(), Error> {
        let engine = self.engine.get().ok_or(Error::NoEngine)?;
        let key = episodes_key(namespace, agent);
        let ended: Vec<_> = engine
            .missions(Some(namespace), Some(agent), None)
            .into_iter()
            .filter(|m| m.state.is_terminal())
            .collect();
        for mission in ended.into_iter().rev() {
            let id = mission.id.to_string();
            let (k, i) = (key.clone(), id.clone());
            if self.blocking(move |m| m.contains(&k, &i)).await? {
                continue;
            }
            let text = episode_text(&mission);
            match self.store(&key, &id, "mission", &text).await {
                // Another recall indexed it meanwhile.
                Ok(_) | Err(Error::Memory(aura_memory::Error::Exists(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The `k` ended missions of `agent` most similar to `query`.
    pub async fn recall(
        &self,
        namespace: &Namespace,
        agent: AgentId,
        query: &str,
        k: usize,
    ) -> Result<Vec<Hit>, Error> {
        self.catch_up_episodes(namespace, agent).await?;
        self.search(&episodes_key(namespace, agent), query, k).await
    }
}

/// What an episode says of a mission: its objective, how it ended (with the summary or
/// the reason), and the tools its completed calls used, in order.
fn episode_text(m: &aura_kernel::Mission) -> String {
    let mut text = format!("{}\noutcome: {}", m.spec.objective, m.state.as_str());
    if let Some(summary) = &m.summary {
        text.push_str(&format!("\nsummary: {summary}"));
    }
    if let Some(reason) = &m.reason {
        text.push_str(&format!("\nreason: {reason}"));
    }
    let tools: Vec<&str> = m.completed.iter().map(|c| c.tool.as_str()).collect();
    if !tools.is_empty() {
        text.push_str(&format!("\ntools used: {}", tools.join(", ")));
    }
    text
}

/// A memory failure as a tool's error: the call's faults are not retried, the database's
/// are.
fn tool_error(tool: &str, e: &Error) -> ToolError {
    let kind = match e {
        Error::Embed { cause, .. } => match cause.status {
            400 | 413 | 422 => ErrorKind::InvalidArguments,
            402 | 403 => ErrorKind::Unauthorized,
            404 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
        Error::Memory(aura_memory::Error::Exists(_)) => ErrorKind::InvalidArguments,
        Error::Memory(aura_memory::Error::Dimension { .. }) => ErrorKind::Unavailable,
        Error::Memory(aura_memory::Error::NotFinite) => ErrorKind::Internal,
        Error::Memory(_) => ErrorKind::Io,
        Error::Task(_) => ErrorKind::Internal,
        Error::NoEngine => ErrorKind::Unavailable,
    };
    let hint = match e {
        Error::Embed { cause, .. } if cause.status == 404 => {
            " (the node's operator imports the model: `aura model import <dir> --name minilm`)"
        }
        Error::Memory(aura_memory::Error::Exists(_)) => " (forget it first, or choose another id)",
        _ => "",
    };
    ToolError::new(kind, format!("{tool}: {e}{hint}"))
}

fn remembered(hits: Vec<Hit>) -> Vec<Remembered> {
    hits.into_iter()
        .map(|h| Remembered {
            id: h.id,
            kind: h.kind,
            text: h.text,
            score: h.score,
        })
        .collect()
}

#[async_trait]
impl MemoryBackend for MemoryService {
    async fn store(
        &self,
        space: &MemorySpace,
        id: &str,
        kind: &str,
        text: &str,
    ) -> Result<u64, ToolError> {
        MemoryService::store(self, &space_key(space), id, kind, text)
            .await
            .map_err(|e| tool_error("memory.store", &e))
    }

    async fn search(
        &self,
        space: &MemorySpace,
        query: &str,
        k: usize,
    ) -> Result<Vec<Remembered>, ToolError> {
        MemoryService::search(self, &space_key(space), query, k)
            .await
            .map(remembered)
            .map_err(|e| tool_error("memory.search", &e))
    }

    async fn forget(&self, space: &MemorySpace, id: &str) -> Result<bool, ToolError> {
        MemoryService::forget(self, &space_key(space), id)
            .await
            .map_err(|e| tool_error("memory.forget", &e))
    }

    async fn recall(
        &self,
        namespace: &Namespace,
        agent: AgentId,
        query: &str,
        k: usize,
    ) -> Result<Vec<Remembered>, ToolError> {
        MemoryService::recall(self, namespace, agent, query, k)
            .await
            .map(remembered)
            .map_err(|e| tool_error("memory.recall", &e))
    }
}

/// The four `memory.*` tools over the node's memory.
pub fn tools(service: Arc<MemoryService>) -> Vec<Arc<dyn aura_tools::Tool>> {
    let backend: Arc<dyn MemoryBackend> = service;
    aura_tools::memory_tools(&backend)
}
