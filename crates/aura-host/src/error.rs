//! Why a model request was refused or failed: [`ModelError`] carries the HTTP status and
//! stable code every front end answers with (the gRPC service maps the status to its
//! codes), [`ChatError`] adds the model's own refusals of a chat. A leaf module.

use aura_reasoner::Error as ReasonerError;

/// Why a model request was refused, with the HTTP status and stable code an API answers
/// with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ModelError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ModelError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A request the engine cannot run as asked.
    pub fn invalid(message: impl Into<String>) -> Self {
        ModelError::new(400, "invalid_request", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ModelError::new(500, "model_error", message)
    }

    pub(crate) fn stopping() -> Self {
        ModelError::new(
            503,
            "stopping",
            "the node is stopping; send the request again once it is back",
        )
    }
}

impl From<aura_model::package::Error> for ModelError {
    fn from(e: aura_model::package::Error) -> Self {
        ModelError::new(e.http_status(), e.code(), e.to_string())
    }
}

/// Why a chat request failed: refused by the host (license, package) or by the model.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Host(#[from] ModelError),
    #[error(transparent)]
    Reasoner(ReasonerError),
}
