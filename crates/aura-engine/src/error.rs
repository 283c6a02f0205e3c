//! The engine's error: what a request to the engine can come back with.

use aura_core::MissionId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "mission {0} was pruned: only its submission and its final transition are kept, so it cannot be replayed"
    )]
    Pruned(MissionId),
    #[error("the engine is shutting down")]
    Closed,
    /// The request is for an agent this node may not run now (in a cluster, its shard is
    /// leased to another node, or to none yet); nothing was done. Retrying helps.
    #[error("{0}")]
    Unavailable(String),
    #[error("the ledger refused the write")]
    Store(#[from] aura_store::Error),
    #[error("cannot create the agent's key")]
    Keystore(#[from] aura_core::keystore::Error),
    /// The kernel refused an event: the request that led to it was not acceptable (an
    /// answer to a mission in a state that takes none, say). Kept whole, so that callers
    /// can tell which refusal it was; it reads as the kernel's own message.
    #[error(transparent)]
    Kernel(#[from] aura_kernel::KernelError),
}

impl Error {
    /// A short machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Invalid(_) | Error::Kernel(_) => "invalid_request",
            Error::Forbidden(_) => "forbidden",
            Error::Conflict(_) => "conflict",
            Error::Pruned(_) => "pruned",
            Error::Closed | Error::Unavailable(_) => "unavailable",
            Error::Store(e) if e.is_refusal() => "conflict",
            Error::Store(_) | Error::Keystore(_) => "internal",
        }
    }
}

/// An error and its causes on one line, as the record keeps a failure (a cause already
/// in the text is not repeated).
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}
