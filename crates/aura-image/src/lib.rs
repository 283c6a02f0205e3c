//! Aura's image engine: pure compute beside `aura-infer`. It runs latent diffusion for the
//! standard checkpoints (CLIP text encoders, UNet, VAE) with Aura's own seeded schedulers,
//! merges LoRA weights at load, and trains Aura's own small default image model. It knows
//! nothing of packages, licenses or receipts: `aura-model` and the model host own those.

pub mod dataset;
pub mod tiny;
pub mod train;
