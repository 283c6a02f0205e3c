//! Aura's image engine: pure compute beside `aura-infer`. It runs latent diffusion for the
//! standard checkpoints (CLIP text encoders, UNet, VAE) with Aura's own seeded schedulers,
//! merges LoRA weights at load, and trains Aura's own small default image model. It knows
//! nothing of packages, licenses or receipts: `aura-model` and the model host own those.
//!
//! # For samplers outside the engine
//!
//! [`AuraRng`] (a seeded ChaCha20 stream of normals) and the [`Scheduler`] trait with its
//! kinds ([`SchedulerKind::build`] over a [`NoiseSchedule`]) are the public sampling API:
//! the pipeline uses them, and so can any other model that predicts noise (see the loop in
//! the [`scheduler`] module's documentation).

mod clip;
pub mod dataset;
pub mod encode;
mod error;
pub mod kernels;
mod load;
mod lora;
mod ops;
mod pipeline;
pub mod png;
pub mod rng;
mod safetensors;
pub mod scheduler;
pub mod tiny;
mod tokenizer;
pub mod train;
mod unet;
mod vae;
mod weights;

pub use self::encode::OutputFormat;
pub use self::png::{RgbImage, encode_png};
pub use clip::{ClipActivation, ClipConfig};
pub use error::{Error, Result};
pub use kernels::{KernelVariant, WeightDtype};
pub use load::Family;
pub use lora::LoraFile;
pub use pipeline::{
    GenerateRequest, Generation, ImageModel, LoadOptions, ModelFiles, ModelInfo, Progress,
    RuntimeFingerprint,
};
pub use rng::AuraRng;
pub use scheduler::{BetaSchedule, NoiseSchedule, Prediction, Scheduler, SchedulerKind, Spacing};
pub use tokenizer::{CONTEXT_LENGTH, ClipTokenizer};
pub use unet::UnetConfig;
pub use vae::{VaeConfig, VaeTiling};
