//! Aura's default image model on the real emoji dataset (fetched by
//! `scripts/fetch-emoji.sh`) with the real MiniLM (`scripts/fetch-models.sh`): the dataset
//! reads as pinned, the first training steps of the default recipe are the same at one and
//! two threads and pinned by hash, the shipped weights are the ones their training record
//! names, they draw at least 35 of 50 named emoji recognisably, and a negative prompt
//! steers them away from the emoji it names.
//!
//! Retraining the shipped weights (a deliberate change of recipe or arithmetic): `aura image
//! train --out DIR`, then copy `model.safetensors` and `training-record.json` to
//! `models/aura-tiny-emoji.safetensors` and `models/aura-tiny-emoji.training.json` and pin
//! the new hash in `tiny::package::SHIPPED_WEIGHTS_SHA256`.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::PathBuf;

use aura_image::dataset::EmojiDataset;
use aura_image::tiny::{self, MiniLm, SampleOptions, TextEncoder, TinyModel};
use aura_image::train::{self, Options, Recipe, TrainingRecord, TrainingSet, eval};
use sha2::{Digest, Sha256};

fn cache() -> PathBuf {
    EmojiDataset::default_cache()
}

fn dataset() -> EmojiDataset {
    let path = EmojiDataset::path_in(&cache());
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-emoji.sh (or set AURA_MODEL_CACHE)",
        path.display()
    );
    EmojiDataset::open(&path).unwrap()
}

fn minilm() -> MiniLm {
    let dir = cache().join("minilm");
    assert!(
        dir.join("model.safetensors").is_file(),
        "MiniLM is missing in {}: run scripts/fetch-models.sh",
        dir.display()
    );
    MiniLm::load(&dir).unwrap()
}

fn shipped() -> (Vec<u8>, TrainingRecord) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let weights = std::fs::read(dir.join("aura-tiny-emoji.safetensors")).unwrap();
    let record =
        serde_json::from_slice(&std::fs::read(dir.join("aura-tiny-emoji.training.json")).unwrap())
            .unwrap();
    (weights, record)
}

/// The content digest of the 3,786 emoji as this crate reads them (dataset module docs).
const DATASET_DIGEST: &str = "d5a1db109e5880990111866a3e6ab795f9719b4a57425ef2e7b9f7d8ec2b19d7";

#[test]
fn the_emoji_dataset_has_3786_named_images_and_a_pinned_digest() {
    let d = dataset();
    assert_eq!(d.len(), 3786);
    assert_eq!(d.source_sha256, aura_image::dataset::TARBALL_SHA256);
    assert_eq!(d.digest, DATASET_DIGEST);
    let apple = d.emoji.iter().find(|e| e.name == "red apple").unwrap();
    assert_eq!(
        (apple.image_path.as_str(), apple.unified.as_str()),
        ("img/google/64/1f34e.png", "1F34E")
    );
    assert_eq!(apple.category, "Food & Drink");
    assert!(
        d.emoji
            .iter()
            .any(|e| e.name == "waving hand sign: medium-dark skin tone")
    );
    for p in eval::PROMPTS {
        assert!(
            d.emoji.iter().any(|e| e.name == p),
            "the test prompt {p:?} names an emoji"
        );
    }
}

/// A test double for the text encoder (the real one is tested in aura-infer and below):
/// 384 numbers from the SHA-256 of the text.
struct HashEncoder;

impl TextEncoder for HashEncoder {
    fn id(&self) -> String {
        "hash-encoder/test".into()
    }
    fn dimension(&self) -> usize {
        384
    }
    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, tiny::Error> {
        Ok(texts
            .iter()
            .map(|t| {
                let h = Sha256::digest(t.as_bytes());
                (0..384)
                    .map(|i| f32::from(h[i % 32]) / 128.0 - 1.0)
                    .collect()
            })
            .collect())
    }
}

#[test]
fn the_first_steps_of_the_default_recipe_are_bit_identical_at_one_and_two_threads() {
    let set = TrainingSet::emoji(&dataset());
    let run = |threads| {
        let opts = Options {
            threads,
            limit_steps: Some(2),
            ..Options::default()
        };
        train::train(&set, &HashEncoder, &Recipe::emoji(), 0, &opts, &mut |_| {}).unwrap()
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one.record, two.record);
    assert_eq!(one.model.to_bytes(), two.model.to_bytes());
    assert_eq!(one.record.dataset.digest, DATASET_DIGEST);
    // Two VAE steps, the latent scale from all 3,786 images, two denoiser steps: pinned.
    assert_eq!(
        one.record.weights_sha256, FIRST_STEPS,
        "weights after the first steps of the default recipe"
    );
}

const FIRST_STEPS: &str = "902fd47e6c87b642427e8ff2a2e2844703555679aca35de3e3ad3b5be6c39489";

#[test]
fn the_shipped_weights_are_those_their_training_record_names() {
    let (weights, record) = shipped();
    assert_eq!(hex::encode(Sha256::digest(&weights)), record.weights_sha256);
    assert_eq!(
        tiny::package::SHIPPED_WEIGHTS_SHA256,
        record.weights_sha256,
        "the hash `aura model pull` checks"
    );
    assert_eq!(
        record.checkpoints.last().unwrap().sha256,
        record.weights_sha256
    );
    assert_eq!(record.dataset.digest, DATASET_DIGEST);
    assert_eq!(
        record.dataset.source_sha256,
        aura_image::dataset::TARBALL_SHA256
    );
    assert_eq!(
        serde_json::from_value::<Recipe>(record.recipe.clone()).unwrap(),
        Recipe::emoji(),
        "trained with the built-in recipe"
    );
    assert_eq!(record.recipe_sha256, Recipe::emoji().sha256());
    let model = TinyModel::from_bytes(&weights).unwrap();
    assert_eq!(model.text_encoder(), record.text_encoder);
    assert_eq!(
        model.text_encoder(),
        minilm().id(),
        "the model runs with the MiniLM scripts/fetch-models.sh fetches"
    );
}

#[test]
fn the_default_model_draws_at_least_35_of_50_named_emoji_recognisably() {
    let (weights, _) = shipped();
    let model = TinyModel::from_bytes(&weights).unwrap();
    let (report, _) = eval::recognisability(
        &model,
        &minilm(),
        &dataset(),
        &eval::PROMPTS,
        &SampleOptions::default(),
    )
    .unwrap();
    for r in &report.results {
        eprintln!("{:>5} {:<30} nearest: {:?}", r.rank, r.prompt, r.nearest);
    }
    assert_eq!(report.total, 50);
    assert!(
        report.hits >= eval::REQUIRED_HITS,
        "{} of 50 prompts drew their emoji within the 5 nearest of 3,786 images",
        report.hits
    );
}

#[test]
fn a_negative_prompt_steers_the_default_model_away_from_what_it_names() {
    let (weights, _) = shipped();
    let model = TinyModel::from_bytes(&weights).unwrap();
    let report = eval::negative_steering(
        &model,
        &minilm(),
        &dataset(),
        &eval::STEERING_PAIRS,
        &SampleOptions::default(),
    )
    .unwrap();
    for s in &report {
        eprintln!(
            "{:<14} not {:<24} distance to it {:>10.0} -> {:>10.0}, own rank {}",
            s.prompt, s.negative, s.without, s.with, s.rank_with
        );
    }
    let moved = report.iter().filter(|s| s.moved_away()).count();
    // Every pair's picture changes; at least 8 of the 10 move away from the emoji their
    // negative prompt names (a negative prompt that did nothing, or pulled towards what it
    // names, would fail this).
    assert!(
        report.iter().all(|s| s.with != s.without),
        "a negative prompt left a picture unchanged"
    );
    assert!(
        moved >= 8,
        "{moved} of 10 pictures moved away from their negative prompt's emoji"
    );
    // Steered, the pictures are still the prompts' own emoji (a negative prompt that merely
    // spoiled the picture would move it away from everything, the prompt's emoji included).
    let recognised = report.iter().filter(|s| s.rank_with <= eval::TOP).count();
    assert!(
        recognised >= 7,
        "only {recognised} of 10 steered pictures are still their prompt's emoji"
    );
    let before: f64 = report.iter().map(|s| s.without).sum();
    let after: f64 = report.iter().map(|s| s.with).sum();
    assert!(
        after > before,
        "on average the pictures came closer: {before} -> {after}"
    );
}
