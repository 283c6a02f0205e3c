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

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Error, MiniLm, SampleOptions, TextEncoder, TinyModel};

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
        Ok(Self { model, encoder })
    }

    /// The model.
    pub fn model(&self) -> &TinyModel {
        &self.model
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
