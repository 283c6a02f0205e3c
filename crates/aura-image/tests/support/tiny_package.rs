//! A small `aura-tiny-emoji` package with freshly initialised weights (what is tested is
//! the package and its hosting, not the pictures), in aura-image's package format
//! (`tiny::package`) with the real MiniLM from the model cache (`scripts/fetch-models.sh`).
//! Shared by aura-image's package tests and the host's, node's and CLI's image tests
//! through `#[path]`, so every crate tests the same files `aura model pull` assembles.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::{Path, PathBuf};

use aura_image::dataset::EmojiDataset;
use aura_image::tiny::package::{self, PackageConfig};
use aura_image::tiny::{self, MiniLm, TextEncoder, TinyModel};
use aura_image::train::{DenoiserShape, Recipe};

/// The cached MiniLM (`scripts/fetch-models.sh`), the tiny model's text encoder.
pub(crate) fn minilm_dir() -> PathBuf {
    let dir = EmojiDataset::default_cache().join("minilm");
    assert!(
        dir.join("model.safetensors").is_file(),
        "MiniLM is missing in {}: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

/// The id of the cached MiniLM (`all-MiniLM-L6-v2@sha256:<its weights' hash>`).
pub(crate) fn minilm_id() -> String {
    MiniLm::load(&minilm_dir()).unwrap().id()
}

/// A small model for the text encoder `text_encoder`, initialised from `seed`.
pub(crate) fn small_model(text_encoder: &str, seed: u64) -> TinyModel {
    let recipe = Recipe {
        vae: tiny::VaeConfig {
            latent_channels: 2,
            channels: [8, 8, 16],
        },
        denoiser: DenoiserShape {
            hidden: 32,
            ff: 48,
            blocks: 2,
            time: 16,
            text_input: true,
        },
        ..Recipe::emoji()
    };
    TinyModel::new(&recipe.model_config(384, text_encoder), seed)
}

/// Writes a package's files for `weights` into `dir`: `config.json`, the weights, and
/// MiniLM's three files by symbolic link (an import copies what they point to).
pub(crate) fn write_package(dir: &Path, weights: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let minilm = minilm_dir();
    let config = PackageConfig::for_weights(weights).unwrap();
    std::fs::write(dir.join(package::CONFIG_FILE), config.to_json()).unwrap();
    std::fs::write(dir.join(package::WEIGHTS_FILE), weights).unwrap();
    for (from, to) in [
        ("model.safetensors", package::TEXT_ENCODER_FILE),
        ("config.json", package::TEXT_ENCODER_CONFIG_FILE),
        ("tokenizer.json", package::TOKENIZER_FILE),
    ] {
        std::os::unix::fs::symlink(minilm.join(from), dir.join(to)).unwrap();
    }
}

/// Writes the package of a small model (seed `seed`) for the cached MiniLM into `dir`.
pub(crate) fn write_small_package(dir: &Path, seed: u64) {
    write_package(dir, &small_model(&minilm_id(), seed).to_bytes());
}
