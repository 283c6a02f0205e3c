//! The model package of Aura's own image model (architecture `aura-tiny-emoji`): which
//! files it holds, and [`Pipeline`], which loads them and turns a prompt into PNG bytes.
//! This is the API a model host uses; packages, signatures and licenses are aura-model's.
//!
//! # Files (`aura-tiny-package/v1`)
//!
//! - `config.json`: `{"model_type": "aura-tiny-emoji", "format": "aura-tiny-package/v1",
//!   "weights_sha256": <hex>, "text_encoder": "all-MiniLM-L6-v2@sha256:<hex>"}` (the model
//!   type is the package manifest's `architecture`).
//! - `model.safetensors`: the weights ([`super::WEIGHTS_FORMAT`]).
//! - `text_encoder.safetensors`, `text_encoder_config.json`, `tokenizer.json`: the MiniLM
//!   the model was trained with (its weights' SHA-256 is in the text encoder's id).
//! - `training-record.json`: the training record of the weights (`aura-tiny-training/v1`).
//!
//! ```no_run
//! use aura_image::tiny::SampleOptions;
//! use aura_image::tiny::package::Pipeline;
//! # fn main() -> Result<(), aura_image::tiny::Error> {
//! let pipeline = Pipeline::load("package/files".as_ref())?;
//! let opts = SampleOptions { seed: 7, ..SampleOptions::default() };
//! let png = pipeline.generate_png("red apple", &opts, &mut |step, steps| {
//!     eprintln!("{step}/{steps}");
//! })?;
//! std::fs::write("apple.png", png).unwrap();
//! # Ok(()) }
//! ```

use std::ops::ControlFlow;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Error, Image, MiniLm, Progress, SampleOptions, TextEncoder, TinyModel};
use crate::train::lora::LoraWeights;

/// The package manifest's `architecture` (and `config.json`'s `model_type`).
pub const ARCHITECTURE: &str = "aura-tiny-emoji";
/// SHA-256 of the weights Aura ships (`crates/aura-image/models/aura-tiny-emoji.safetensors`,
/// trained by `Recipe::emoji()` with seed 0; its training record lies beside it).
pub const SHIPPED_WEIGHTS_SHA256: &str =
    "b78cb43de7d34e60445549ccef66017ce27407bee30b28b14367a02199a6d299";
/// `config.json`'s `format`.
pub const PACKAGE_FORMAT: &str = "aura-tiny-package/v1";
/// The package's files.
pub const CONFIG_FILE: &str = "config.json";
/// The tiny model's weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// MiniLM's weights.
pub const TEXT_ENCODER_FILE: &str = "text_encoder.safetensors";
/// MiniLM's configuration.
pub const TEXT_ENCODER_CONFIG_FILE: &str = "text_encoder_config.json";
/// MiniLM's tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The training record.
pub const RECORD_FILE: &str = "training-record.json";

/// `config.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    /// [`ARCHITECTURE`].
    pub model_type: String,
    /// [`PACKAGE_FORMAT`].
    pub format: String,
    /// SHA-256 of `model.safetensors`, hex.
    pub weights_sha256: String,
    /// The text encoder's id.
    pub text_encoder: String,
}

impl PackageConfig {
    /// The configuration of a package holding `weights` (a weight file's bytes).
    pub fn for_weights(weights: &[u8]) -> Result<Self, Error> {
        let model = TinyModel::from_bytes(weights)?;
        Ok(Self {
            model_type: ARCHITECTURE.into(),
            format: PACKAGE_FORMAT.into(),
            weights_sha256: hex::encode(Sha256::digest(weights)),
            text_encoder: model.text_encoder().to_owned(),
        })
    }

    /// Its JSON (pretty, fields in declaration order).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// A loaded model and its text encoder: prompt in, PNG out.
#[derive(Debug)]
pub struct Pipeline {
    model: TinyModel,
    encoder: MiniLm,
    /// The threads [`Pipeline::generate`] runs on (the caller's rayon pool when None).
    pool: Option<rayon::ThreadPool>,
}

impl Pipeline {
    /// Loads a package's files from `dir` (a verified package's `files/`): the weights must
    /// have the hash `config.json` names, and the text encoder must be the model's.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| Error::Io { path, source })
        };
        let config: PackageConfig = serde_json::from_slice(&read(CONFIG_FILE)?)
            .map_err(|e| Error::Weights(format!("{CONFIG_FILE}: {e}")))?;
        if config.model_type != ARCHITECTURE || config.format != PACKAGE_FORMAT {
            return Err(Error::Weights(format!(
                "not an {ARCHITECTURE} package ({PACKAGE_FORMAT})"
            )));
        }
        let weights = read(WEIGHTS_FILE)?;
        if hex::encode(Sha256::digest(&weights)) != config.weights_sha256 {
            return Err(Error::Weights(format!(
                "{WEIGHTS_FILE} is not the file {CONFIG_FILE} names"
            )));
        }
        let model = TinyModel::from_bytes(&weights)?;
        let encoder = MiniLm::load_files(
            &dir.join(TEXT_ENCODER_CONFIG_FILE),
            &dir.join(TOKENIZER_FILE),
            &dir.join(TEXT_ENCODER_FILE),
        )?;
        Self::from_parts(model, encoder)
    }

    /// A pipeline from a model and its text encoder (refused unless it is the model's).
    pub fn from_parts(model: TinyModel, encoder: MiniLm) -> Result<Self, Error> {
        if encoder.id() != model.text_encoder() {
            return Err(Error::TextEncoder(format!(
                "this model was trained with {}, not {}",
                model.text_encoder(),
                encoder.id()
            )));
        }
        Ok(Self {
            model,
            encoder,
            pool: None,
        })
    }

    /// The model.
    pub fn model(&self) -> &TinyModel {
        &self.model
    }

    /// This pipeline with LoRA adapters (`aura-tiny-lora/v1`, trained on exactly this
    /// model) merged into its denoiser at `strength` (1 = as trained).
    pub fn with_lora(self, lora: &LoraWeights, strength: f32) -> Result<Self, Error> {
        Ok(Self {
            model: self.model.with_lora(lora, strength)?,
            ..self
        })
    }

    /// This pipeline on a pool of its own of `threads` threads (0: one per core). The
    /// images do not depend on it.
    pub fn with_threads(self, threads: usize) -> Result<Self, Error> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("aura-tiny-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {threads} threads: {e}")))?;
        Ok(Self {
            pool: Some(pool),
            ..self
        })
    }

    /// What runs, for receipts: the engine, its version, and the encodings results depend
    /// on (the random stream, the PNG encoder, the weights format). The model's arithmetic
    /// is its own scalar order whatever the CPU (`tiny/gemm.rs`), so the kernel is named
    /// once; the thread count changes no bit and is not part of it.
    pub fn fingerprint(&self) -> crate::RuntimeFingerprint {
        crate::RuntimeFingerprint {
            engine: "aura-image-tiny".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            backend: "cpu".into(),
            device: "cpu".into(),
            dtype: "f32->f32".into(),
            kernel: crate::train::KERNELS.into(),
            formats: format!("rng1 png1 {}", super::WEIGHTS_FORMAT),
        }
    }

    /// One 64×64 image for `prompt`, guided away from `negative` when it is not empty (see
    /// [`TinyModel::generate_guided`]); `progress` sees every step and may stop the
    /// generation ([`Error::Cancelled`]).
    pub fn generate(
        &self,
        prompt: &str,
        negative: &str,
        opts: &SampleOptions,
        progress: &mut (dyn FnMut(Progress<'_>) -> ControlFlow<()> + Send),
    ) -> Result<Image, Error> {
        let run = |progress: &mut (dyn FnMut(Progress<'_>) -> ControlFlow<()> + Send)| {
            self.model
                .generate_guided(&self.encoder, prompt, negative, opts, progress)
        };
        match &self.pool {
            Some(pool) => pool.install(|| run(progress)),
            None => run(progress),
        }
    }

    /// One 64×64 image for `prompt` as PNG bytes, calling `progress(step, steps)` after
    /// each denoising step. The same prompt and options give the same bytes.
    pub fn generate_png(
        &self,
        prompt: &str,
        opts: &SampleOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<u8>, Error> {
        Ok(self
            .model
            .generate_with_progress(&self.encoder, prompt, opts, progress)?
            .to_png())
    }
}
