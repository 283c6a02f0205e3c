//! `aura image train` through the real binary, with the real MiniLM from
//! `scripts/fetch-models.sh`: a small model trained on a folder of captioned images, then
//! LoRA adapters for it; each run's provenance is in the ledger as signed entries that
//! verify, name the dataset's digest and the hash of every checkpoint; bad input changes
//! nothing.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use support::Aura;

fn models() -> PathBuf {
    let cache = aura_model::pull::cache_dir().unwrap();
    assert!(
        cache.join("minilm/model.safetensors").is_file(),
        "MiniLM is missing from {}: run scripts/fetch-models.sh",
        cache.display()
    );
    cache
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Four 16×16 images of one colour each, captioned with its name.
fn folder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, rgb) in [
        ("red", [220u8, 30, 30]),
        ("green", [30, 200, 40]),
        ("blue", [30, 40, 220]),
        ("yellow", [240, 220, 30]),
    ] {
        let png = aura_image::encode_png(&aura_image::RgbImage {
            width: 16,
            height: 16,
            pixels: rgb.repeat(16 * 16),
        });
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        std::fs::write(dir.join(format!("{name}.txt")), format!("a {name} square")).unwrap();
    }
}

/// A recipe small enough to train in seconds.
const RECIPE: &str = r#"{"format":"aura-tiny-recipe/v1",
 "vae":{"latent_channels":2,"channels":[8,8,16]},
 "denoiser":{"hidden":32,"ff":48,"blocks":2,"time":16},
 "vae_stage":{"steps":6,"batch":4,"lr":0.003,"warmup":2,"kl_weight":0.0001},
 "denoiser_stage":{"steps":10,"batch":8,"lr":0.002,"warmup":2,"weight_decay":0.0,
   "uncond_prob":0.1,"min_snr_gamma":5.0,"short_name_prob":0.0},
 "checkpoint_every":5}"#;

const LORA_RECIPE: &str = r#"{"format":"aura-tiny-lora-recipe/v1","rank":2,"alpha":2.0,
 "targets":["blocks.*.fc1","output"],
 "stage":{"steps":6,"batch":4,"lr":0.002,"warmup":2,"weight_decay":0.0,
   "uncond_prob":0.1,"min_snr_gamma":5.0,"short_name_prob":0.0}}"#;

fn ledger(a: &Aura) -> Vec<serde_json::Value> {
    let shown = a
        .run(&["--json", "ledger", "show", "--limit", "1000"])
        .ok()
        .json();
    shown
        .get("entries")
        .and_then(|e| e.as_array())
        .or_else(|| shown.as_array())
        .cloned()
        .unwrap_or_else(|| panic!("unexpected ledger show output: {shown}"))
}

fn of_kind<'a>(entries: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    entries.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn a_training_run_and_a_lora_run_leave_signed_entries_that_verify_and_name_their_data() {
    let a = Aura::new();
    a.init();
    let models = models();
    let work = a.dir.path().join("work");
    let images = work.join("images");
    folder(&images);
    std::fs::write(work.join("recipe.json"), RECIPE).unwrap();
    std::fs::write(work.join("lora.json"), LORA_RECIPE).unwrap();
    let out = work.join("model");

    let report = a
        .run(&[
            "--json",
            "image",
            "train",
            "--images",
            images.to_str().unwrap(),
            "--recipe",
            work.join("recipe.json").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--models",
            models.to_str().unwrap(),
            "--threads",
            "2",
        ])
        .ok()
        .json();
    let weights = out.join("model.safetensors");
    let record_file = out.join("training-record.json");
    assert_eq!(report["weights_sha256"], sha256_of(&weights));
    assert_eq!(report["record_sha256"], sha256_of(&record_file));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_file).unwrap()).unwrap();
    let digest = record["dataset"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(report["dataset_digest"], digest.as_str());
    assert_eq!(record["dataset"]["samples"], 4);

    // The ledger verifies, and holds the run: what went in, every checkpoint, the result.
    a.run(&["ledger", "verify"]).ok();
    let entries = ledger(&a);
    let started = of_kind(&entries, "model.training");
    assert_eq!(started.len(), 1);
    let body = &started[0]["body"];
    assert_eq!(body["dataset"]["digest"], digest.as_str());
    assert_eq!(body["seed"], 0);
    assert_eq!(body["recipe_sha256"], record["recipe_sha256"]);
    let run = started[0]["index"].clone();
    let checkpoints = of_kind(&entries, "model.checkpoint");
    let recorded = record["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), recorded.len());
    assert!(recorded.len() >= 3, "VAE end, denoiser steps 5 and 10");
    for (entry, want) in checkpoints.iter().zip(recorded) {
        assert_eq!(entry["body"]["run"], run);
        assert_eq!(entry["body"]["sha256"], want["sha256"]);
        assert_eq!(entry["body"]["step"], want["step"]);
        // Each checkpoint's file is on disk with the hash the ledger signed.
        let stage = want["stage"].as_str().unwrap();
        let step = want["step"].as_u64().unwrap();
        let file = out.join(format!(
            "checkpoints/checkpoint-{stage}-{step:06}.safetensors"
        ));
        assert_eq!(sha256_of(&file), want["sha256"].as_str().unwrap());
    }
    let trained = of_kind(&entries, "model.trained");
    assert_eq!(trained.len(), 1);
    assert_eq!(trained[0]["body"]["record_sha256"], sha256_of(&record_file));
    assert_eq!(trained[0]["body"]["record"], record);

    // LoRA adapters for that model: the record names the base model and the folder.
    let lora_out = work.join("lora");
    let lora = a
        .run(&[
            "--json",
            "image",
            "train",
            "--lora",
            images.to_str().unwrap(),
            "--base",
            weights.to_str().unwrap(),
            "--recipe",
            work.join("lora.json").to_str().unwrap(),
            "--out",
            lora_out.to_str().unwrap(),
            "--models",
            models.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(
        lora["weights_sha256"],
        sha256_of(&lora_out.join("lora.safetensors"))
    );
    a.run(&["ledger", "verify"]).ok();
    let entries = ledger(&a);
    let started = of_kind(&entries, "model.training");
    assert_eq!(started.len(), 2);
    assert_eq!(started[1]["body"]["kind"], "lora");
    assert_eq!(
        started[1]["body"]["base_model"],
        sha256_of(&weights).as_str()
    );
    assert_eq!(started[1]["body"]["dataset"]["digest"], digest.as_str());
    assert_eq!(of_kind(&entries, "model.trained").len(), 2);

    // The same data, recipe and seed give the same weights (the CLI adds nothing random).
    let again = work.join("again");
    a.run(&[
        "--json",
        "image",
        "train",
        "--images",
        images.to_str().unwrap(),
        "--recipe",
        work.join("recipe.json").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
        "--threads",
        "1",
    ])
    .ok();
    assert_eq!(
        sha256_of(&again.join("model.safetensors")),
        sha256_of(&weights)
    );
}

#[test]
fn bad_training_input_is_refused_before_the_ledger_is_touched() {
    let a = Aura::new();
    a.init();
    let models = models();
    let work = a.dir.path().join("work");
    let empty = work.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let before = ledger(&a).len();
    // A folder without images.
    a.run(&[
        "image",
        "train",
        "--images",
        empty.to_str().unwrap(),
        "--out",
        work.join("o1").to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
    ])
    .one_line_error(1);
    // A recipe that is not one.
    let images = work.join("images");
    folder(&images);
    std::fs::write(work.join("bad.json"), r#"{"format":"aura-tiny-recipe/v1"}"#).unwrap();
    a.run(&[
        "image",
        "train",
        "--images",
        images.to_str().unwrap(),
        "--recipe",
        work.join("bad.json").to_str().unwrap(),
        "--out",
        work.join("o2").to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
    ])
    .one_line_error(1);
    // A base model that is not a weight file.
    std::fs::write(work.join("base.safetensors"), b"not weights").unwrap();
    a.run(&[
        "image",
        "train",
        "--lora",
        images.to_str().unwrap(),
        "--base",
        work.join("base.safetensors").to_str().unwrap(),
        "--out",
        work.join("o3").to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
    ])
    .one_line_error(1);
    assert_eq!(ledger(&a).len(), before, "nothing was appended");
    assert!(!work.join("o1").exists() && !work.join("o2").exists());
}

#[test]
fn pulling_the_default_image_model_installs_the_shipped_weights_as_a_signed_package() {
    let a = Aura::new();
    a.init();
    let out = a
        .run(&["--json", "model", "pull", "aura-tiny-emoji"])
        .ok()
        .json();
    let digest = out["digest"].as_str().unwrap().to_owned();
    let listed = a.run(&["--json", "model", "list"]).ok().json();
    let package = listed
        .as_array()
        .or_else(|| listed["models"].as_array())
        .unwrap()
        .iter()
        .find(|m| m["name"] == "aura-tiny-emoji")
        .unwrap_or_else(|| panic!("the pulled model is listed: {listed}"))
        .clone();
    assert_eq!(package["digest"], digest.as_str(), "{package}");
    // Pulling again finds it installed and intact, and changes nothing.
    let again = a
        .run(&["--json", "model", "pull", "aura-tiny-emoji"])
        .ok()
        .json();
    assert_eq!(again["digest"], digest.as_str());
    assert_eq!(again["installed"], true);
}

#[test]
fn pulling_refuses_shipped_weights_that_are_not_the_pinned_ones() {
    // A weight file that differs from what the build pins (here: one flipped byte) is
    // refused with one line, and nothing is installed.
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../aura-image/models");
    let tampered = tempfile::tempdir().unwrap();
    for f in [
        "aura-tiny-emoji.safetensors",
        "aura-tiny-emoji.training.json",
    ] {
        std::fs::copy(shipped.join(f), tampered.path().join(f)).unwrap();
    }
    let weights = tampered.path().join("aura-tiny-emoji.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();

    let a = Aura::new();
    a.init();
    let mut c = a.cmd(&["model", "pull", "aura-tiny-emoji"]);
    c.env("AURA_SHIPPED_MODELS", tampered.path());
    let out = a.run_with(c, None).one_line_error(1);
    assert!(
        out.stderr.contains("is not the model this build ships"),
        "{}",
        out.stderr
    );
    let listed = a.run(&["--json", "model", "list"]).ok().json();
    assert!(
        !listed.to_string().contains("aura-tiny-emoji"),
        "nothing installed: {listed}"
    );
}
