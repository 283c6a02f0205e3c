//! The cell runtime's errors, and the coarse kinds that APIs map them to (gRPC codes,
//! HTTP statuses, CLI hints).

use std::io;

/// What went wrong. Display is one lowercase line without the cause; the cause is the
/// `source`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: a bad name, a negative limit, an unknown field value.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("cell `{0}` does not exist")]
    CellNotFound(String),
    #[error("executable `{executable}` does not exist in cell `{cell}`")]
    ExecutableNotFound { cell: String, executable: String },
    #[error("no executable with pid {0} is known")]
    ProcessNotFound(i32),
    #[error("cell `{0}` already exists")]
    CellExists(String),
    #[error("executable `{executable}` already exists in cell `{cell}`")]
    ExecutableExists { cell: String, executable: String },
    /// The host cannot run cells: a missing kernel feature, no cgroup controllers, not root.
    #[error("{what}")]
    Unsupported { what: String, hint: String },
    /// Setting up the sandbox failed at a named step (the cause is the errno).
    #[error("cannot set up the cell: {step}")]
    Setup {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    /// The sandbox was ready but the command could not be executed.
    #[error("cannot execute `{command}`")]
    Exec {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The request asks for something its caller may not have: a host path outside the
    /// allowlist, the node's own files, a workspace whose files a cell could turn into
    /// the host root's.
    #[error("{what}")]
    Forbidden { what: String, hint: String },
    /// Another runtime holds this state directory.
    #[error("another cell runtime is using {0}")]
    Busy(String),
    #[error("the cell runtime has shut down")]
    ShutDown,
}

/// The kind of an error, for mapping onto gRPC codes, HTTP statuses and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    Unavailable,
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::CellNotFound(_)
            | Error::ExecutableNotFound { .. }
            | Error::ProcessNotFound(_) => ErrorKind::NotFound,
            Error::CellExists(_) | Error::ExecutableExists { .. } => ErrorKind::AlreadyExists,
            Error::Unsupported { .. } | Error::Busy(_) => ErrorKind::FailedPrecondition,
            Error::Forbidden { .. } => ErrorKind::PermissionDenied,
            // A command that does not exist is the caller's mistake, not the node's.
            Error::Exec { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                ErrorKind::InvalidArgument
            }
            Error::ShutDown => ErrorKind::Unavailable,
            Error::Setup { .. } | Error::Exec { .. } | Error::Io { .. } => ErrorKind::Internal,
        }
    }

    /// What the user can do about it, where there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Unsupported { hint, .. } | Error::Forbidden { hint, .. } => Some(hint.clone()),
            Error::Busy(_) => {
                Some("stop the other aura process, or give this one its own data directory".into())
            }
            Error::CellNotFound(_) => Some("list cells with `aura cell list`".into()),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
