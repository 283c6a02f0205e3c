//! Aura's model host: the models a node serves, in this process, from installed packages
//! only, to every front end alike (the missions' `provider = "local"` reasoners, the
//! OpenAI-compatible HTTP API in aura-node, the gRPC inference service in aura-grpc),
//! from one loaded copy per package. It knows no wire format and links no server: the
//! front ends read their requests into [`requests`], run them on a [`ModelHost`] and
//! write the answers back.
//!
//! - **Verified before loaded.** Every file of a package (and of the expert packs it
//!   needs) is hashed and checked against its signed manifest, and this node must hold a
//!   license from the publisher that allows the use now; anything less is refused with
//!   the reason. A model given by path is refused: the node only runs what it can prove
//!   it ran.
//! - **Metered.** Every request is authorised against its license's allowance first (a
//!   reservation bounded by the prompt's bytes plus the token limit, and by the context)
//!   and leaves a signed usage receipt in the ledger after ([`Metering`]). A request whose
//!   receipt cannot be recorded fails, so no usage goes unaccounted.
//! - **Current.** Each request re-reads the package's signed manifest (cheap) and
//!   reloads the model if the installed package changed, or refuses if it was removed;
//!   [`ModelHost::list`] leaves out packages whose files no longer verify.
//! - **Stoppable.** Every generation runs under a cancel flag of its own, set when the
//!   request's future is dropped (the caller went away) and under the host's, set by
//!   [`ModelHost::shutdown`]: either stops it at its next token, and nothing is recorded.
//! - **One way to stream a chat.** [`ModelHost::chat_stream`] yields a chat's deltas,
//!   tool calls numbered, then its end with the receipt; front ends only translate.
//!
//! - **Images too.** Packages whose architecture names an image engine are hosted the
//!   same way ([`images`]): [`ModelHost::open_image`], then
//!   [`ModelHost::generate_images`], one signed receipt per image.
//!
//! Every refusal is a [`ModelError`] with the HTTP status and stable code the front ends
//! answer with (the gRPC service maps the status to its codes).

#![forbid(unsafe_code)]

mod error;
mod host;
mod image_engine;
pub mod images;
mod metering;
mod reasoners;
pub mod requests;
mod stream;

pub use error::{ChatError, ModelError};
pub use host::{
    Admitted, DEFAULT_MODEL, Engine, Measured, ModelCard, ModelHost, Served, is_installed,
};
pub use images::{
    DEFAULT_IMAGE_MODEL, ImageEngine, ImageEvent, ImageRequest, ImagesOutcome, MadeImage, Previews,
};
pub use metering::Metering;
pub use stream::{ChatDelta, ChatEvent, ChatStream};

// The engine's types that the host's API hands out or takes, so that a front end works
// through the host without depending on the engine itself.
/// The file an image is written as (PNG, JPEG or lossless WebP), for [`ImageRequest::output`].
pub use aura_image::OutputFormat;
pub use aura_infer::reasoner::{ChatOptions, ChatOutcome, LocalReasoner};
pub use aura_infer::{
    Constraint, EmbeddingModel, Embeddings, GenerateRequest, Generation, Prompt, TokenEvent,
    TokenLogprobs,
};
pub use aura_model::ReceiptId;

/// The response header (or gRPC metadata key) naming a response's usage receipt, on
/// every surface.
pub const RECEIPT_HEADER: &str = "x-aura-receipt";
