//! The crate's one error type: what can go wrong issuing or loading certificates and
//! configs, and binding or serving the gRPC surfaces. A leaf module: every other module
//! may use it, and it uses none of them.

use std::path::PathBuf;

/// What can go wrong issuing or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{what} already exists at {}", path.display())]
    Exists { what: &'static str, path: PathBuf },
    #[error("there is no CA at {}", .0.display())]
    NoCa(PathBuf),
    #[error("cannot {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a certificate")]
    Cert(#[source] rcgen::Error),
}

impl Error {
    /// What the user can do about it, where there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Exists { .. } => {
                Some("remove it first if you mean to replace it (clients holding the old one stop working)".into())
            }
            Error::NoCa(_) => Some("make one with `aura pki init`".into()),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
