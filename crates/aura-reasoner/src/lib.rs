//! Aura's reasoners: what the kernel asks for the next step of a mission.
//!
//! At each step the kernel builds a [`Request`] from the mission's record (the system
//! prompt with the objective, the conversation so far, tool results), asks a
//! [`Reasoner`] for a [`Turn`], and records the whole turn in the ledger. While the turn
//! is in progress the reasoner streams [`Delta`]s (text, tool calls starting, pieces of
//! their arguments) to whoever watches. Replay re-runs a mission from recorded turns
//! without calling any provider, so a [`Turn`] is a plain value with a stable JSON form.
//!
//! ```text
//! #[async_trait]
//! pub trait Reasoner: Send + Sync + Debug {
//!     fn describe(&self) -> ProviderInfo;                       // kind, model, URL; no secret
//!     async fn turn(&self, request: &Request, deltas: Option<&DeltaSink<'_>>)
//!         -> Result<Turn, Error>;
//! }
//! pub fn build(config: &Config, context: &Context) -> Result<Arc<dyn Reasoner>, Error>;
//! ```
//!
//! Providers ([`Config`] picks one; `docs/reasoners.md` shows each config):
//!
//! - [`OpenAi`]: any OpenAI-compatible chat completions server (OpenAI, vLLM,
//!   llama.cpp's server, Ollama, Aura's own endpoint), streamed or not, with tool
//!   calls assembled from streamed fragments.
//! - [`Anthropic`]: the Messages API with tool use, streamed or not.
//! - [`Scripted`]: replays a file of turns, for tests and reproducible demos; never a
//!   default.
//!
//! The HTTP providers retry transport failures, timeouts, 408, 409, 429 and 5xx under a
//! [`RetryPolicy`] (exponential backoff with jitter, the provider's `Retry-After` taking
//! precedence), enforce [`Timeouts`] (connect, first byte, idle between chunks, the
//! whole turn), and count tokens as the provider reports them ([`Usage`]). When an
//! attempt that already streamed deltas fails and another begins, watchers get
//! [`Delta::Reset`]. API keys come from an environment variable named in the config,
//! through [`Context::secrets`]; they are never stored in a config, recorded, logged or
//! shown by `Debug` or [`Reasoner::describe`].
//!
//! **The in-process model** (crate `aura-infer`, `aura_infer::reasoner::LocalReasoner`)
//! is `Config::Local`. This crate cannot depend on the engine (it depends on this one),
//! so [`build`] opens local configs through the [`LocalModels`] opener registered in the
//! [`Context`] (`Context::system().with_local(Arc::new(aura_infer::reasoner::LocalOpener))`)
//! and refuses them where none is. The local provider runs generation on a blocking
//! thread and forwards text over a channel to the async `turn`, which calls the delta
//! sink; dropping the `turn` future closes the channel and stops generation.
//!
//! Without the default `http` feature the crate holds only the vocabulary, the wire
//! decoders and the scripted provider: what the pure kernel and the fuzz targets need.

#![forbid(unsafe_code)]

mod config;
mod context;
mod error;
pub mod retry;
pub mod scripted;
pub mod sse;
mod types;
pub mod wire;

#[cfg(feature = "http")]
mod http;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub use config::{
    AnthropicConfig, Config, LocalConfig, MaxTokensField, OpenAiConfig, RetryPolicy,
    ScriptedConfig, Timeouts,
};
pub use context::{
    Context, LocalModels, ProcessEnv, Secret, SecretMap, Secrets, Sleep, TokioSleep,
};
pub use error::{Error, TimeoutKind};
#[cfg(feature = "http")]
pub use http::{Anthropic, OpenAi};
pub use scripted::Scripted;
pub use types::{
    Delta, Finish, Message, ProviderInfo, Request, Role, ToolCall, ToolChoice, ToolSpec, Turn,
    Usage,
};

/// Where a reasoner streams its deltas while a turn is in progress. It is called on the
/// task running the turn and should return quickly (hand the delta to a channel).
pub type DeltaSink<'a> = dyn Fn(Delta) + Send + Sync + 'a;

/// Something that answers requests with turns: a remote provider, a script, later the
/// local model.
#[async_trait]
pub trait Reasoner: Send + Sync + fmt::Debug {
    /// What this reasoner is: provider kind, model, endpoint. Never a secret.
    fn describe(&self) -> ProviderInfo;

    /// Answers one request, streaming deltas to `deltas` as they come. Retries happen
    /// inside; the turn says how many attempts it took. Cancel by dropping the future.
    async fn turn(&self, request: &Request, deltas: Option<&DeltaSink<'_>>) -> Result<Turn, Error>;
}

/// Builds the reasoner a config describes. HTTP providers read their API key here, so
/// a missing key fails now rather than at the first step.
pub fn build(config: &Config, context: &Context) -> Result<Arc<dyn Reasoner>, Error> {
    config.validate()?;
    match config {
        #[cfg(feature = "http")]
        Config::OpenAi(c) => Ok(Arc::new(OpenAi::new(c, context)?)),
        #[cfg(feature = "http")]
        Config::Anthropic(c) => Ok(Arc::new(Anthropic::new(c, context)?)),
        #[cfg(not(feature = "http"))]
        Config::OpenAi(_) | Config::Anthropic(_) => {
            let _ = context;
            Err(Error::Config(
                "this build of Aura has no HTTP providers (the `http` feature is off)".into(),
            ))
        }
        Config::Scripted(c) => Ok(Arc::new(Scripted::load(&c.path)?)),
        Config::Local(c) => match &context.local {
            Some(local) => local.open(c),
            None => Err(Error::Config(
                "this program cannot run local models (no model engine is linked in)".into(),
            )),
        },
    }
}
