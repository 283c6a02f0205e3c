//! The `aura-tiny-emoji` package's files loaded through `tiny::package::Pipeline`, the API a
//! model host uses, with the real MiniLM (`scripts/fetch-models.sh`): prompt to PNG bytes
//! with progress, the same bytes again, and packages whose weights, configuration or text
//! encoder are not what they claim refused.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

use aura_image::dataset::EmojiDataset;
use aura_image::tiny::package::{self, PackageConfig, Pipeline};
use aura_image::tiny::{self, MiniLm, SampleOptions, TextEncoder, TinyModel};
use aura_image::train::{DenoiserShape, Recipe};

fn minilm_dir() -> PathBuf {
    let dir = EmojiDataset::default_cache().join("minilm");
    assert!(
        dir.join("model.safetensors").is_file(),
        "MiniLM is missing in {}: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

/// A small model (random weights: what is tested is the package, not the pictures).
fn small_model(text_encoder: &str) -> TinyModel {
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
    TinyModel::new(&recipe.model_config(384, text_encoder), 5)
}

/// Writes a package's files for `weights` into `dir` (MiniLM's by symbolic link).
fn write_package(dir: &Path, weights: &[u8]) {
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

#[test]
fn a_package_turns_a_prompt_into_the_same_png_bytes_with_progress() {
    let id = MiniLm::load(&minilm_dir()).unwrap().id();
    let tmp = tempfile::tempdir().unwrap();
    let weights = small_model(&id).to_bytes();
    write_package(tmp.path(), &weights);
    let config: PackageConfig =
        serde_json::from_slice(&std::fs::read(tmp.path().join(package::CONFIG_FILE)).unwrap())
            .unwrap();
    assert_eq!(config.model_type, "aura-tiny-emoji");
    assert_eq!(config.text_encoder, id);

    let pipeline = Pipeline::load(tmp.path()).unwrap();
    let opts = SampleOptions {
        seed: 3,
        steps: 6,
        guidance: 3.0,
    };
    let mut seen = Vec::new();
    let png = pipeline
        .generate_png("red apple", &opts, &mut |step, steps| {
            seen.push((step, steps));
        })
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(seen, (1..=6).map(|s| (s, 6)).collect::<Vec<_>>());
    let again = pipeline
        .generate_png("red apple", &opts, &mut |_, _| {})
        .unwrap();
    assert_eq!(png, again, "same prompt, seed and options: same bytes");
    let other = pipeline
        .generate_png(
            "red apple",
            &SampleOptions { seed: 4, ..opts },
            &mut |_, _| {},
        )
        .unwrap();
    assert_ne!(png, other, "another seed, another picture");
}

#[test]
fn packages_that_are_not_what_they_claim_are_refused() {
    let id = MiniLm::load(&minilm_dir()).unwrap().id();
    let weights = small_model(&id).to_bytes();

    // Weights changed after config.json named them.
    let tmp = tempfile::tempdir().unwrap();
    write_package(tmp.path(), &weights);
    let mut bad = weights.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(tmp.path().join(package::WEIGHTS_FILE), &bad).unwrap();
    let e = Pipeline::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("not the file"), "{e}");

    // Another architecture.
    let tmp = tempfile::tempdir().unwrap();
    write_package(tmp.path(), &weights);
    let mut config = PackageConfig::for_weights(&weights).unwrap();
    config.model_type = "llama".into();
    std::fs::write(tmp.path().join(package::CONFIG_FILE), config.to_json()).unwrap();
    assert!(Pipeline::load(tmp.path()).is_err());

    // Weights trained with another text encoder than the package's MiniLM.
    let tmp = tempfile::tempdir().unwrap();
    let foreign = small_model("all-MiniLM-L6-v2@sha256:00").to_bytes();
    write_package(tmp.path(), &foreign);
    let e = Pipeline::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("trained with"), "{e}");

    // Not JSON at all.
    let tmp = tempfile::tempdir().unwrap();
    write_package(tmp.path(), &weights);
    std::fs::write(tmp.path().join(package::CONFIG_FILE), b"\xff").unwrap();
    assert!(Pipeline::load(tmp.path()).is_err());
}
