//! The engine's error type: one lowercase line each, the cause (if any) chained.

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A model file is malformed or inconsistent (bad header, wrong shapes, missing
    /// tensors). Model files are untrusted input: this never panics.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The model is well formed but uses something this engine does not run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The tokenizer could not be built or failed on the input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template is missing, invalid, or failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// The request is not valid for this model (empty prompt, token id out of range,
    /// prompt longer than the context, bad sampling parameters).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The output constraint (JSON schema, tool list) is invalid or cannot be satisfied.
    #[error("constraint: {0}")]
    Constraint(String),
    /// The load options are invalid on this machine (e.g. a kernel variant the CPU lacks).
    #[error("invalid options: {0}")]
    Options(String),
}

impl Error {
    pub(crate) fn model(msg: impl Into<String>) -> Self {
        Self::InvalidModel(msg.into())
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        // candle's errors carry their own context (tensor names, offsets); flatten them
        // to one line so the caller can print it.
        Self::InvalidModel(
            e.to_string()
                .lines()
                .next()
                .unwrap_or("candle error")
                .to_owned(),
        )
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
