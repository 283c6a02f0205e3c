//! The image engine's error type: one lowercase line each, the cause (if any) chained.

/// Everything that can go wrong loading or running an image model.
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
    /// A LoRA file is malformed or does not fit the model it is applied to.
    #[error("invalid lora: {0}")]
    InvalidLora(String),
    /// The tokenizer's vocabulary could not be read.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The request is not valid (size not a multiple of 8, zero steps, strength out of
    /// range, an init image of the wrong size).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The caller stopped the request (its progress callback returned `Break`).
    #[error("cancelled")]
    Cancelled,
    /// The load options are invalid on this machine (e.g. a kernel variant the CPU lacks).
    #[error("invalid options: {0}")]
    Options(String),
}

impl Error {
    pub(crate) fn model(msg: impl Into<String>) -> Self {
        Self::InvalidModel(msg.into())
    }

    pub(crate) fn request(msg: impl Into<String>) -> Self {
        Self::InvalidRequest(msg.into())
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
