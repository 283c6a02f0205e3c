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

mod error;
pub mod rng;
pub mod scheduler;

pub use error::{Error, Result};
pub use rng::AuraRng;
pub use scheduler::{BetaSchedule, NoiseSchedule, Prediction, Scheduler, SchedulerKind, Spacing};
