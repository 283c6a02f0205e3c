//! `aura model pull aura-tiny-emoji`: installs Aura's own image model as a signed,
//! licensed package (architecture `aura-tiny-emoji`, Apache-2.0 like the Noto emoji it
//! was trained on).
//!
//! The weights ship in Aura's source tree (`crates/aura-image/models/`, with the training
//! record that reproduces them); the text encoder is the MiniLM that
//! `scripts/fetch-models.sh` puts in the model cache. Pull checks the weights against the
//! hash pinned in this build and against their record, the MiniLM weights against the
//! hash the model names, assembles the package's files (aura-image's `tiny::package`) in a
//! staging directory beside the packages, and imports them like any other model: hashed,
//! signed by the node's key, licensed to the node.
//!
//! `--from DIR` takes the weights and training record `aura image train --out DIR` wrote
//! instead (a model of one's own training): they must match each other, and the package is
//! named `aura-tiny-emoji` all the same, so it is the node's default image model.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aura_image::tiny::package::{self, PackageConfig};
use aura_image::train::TrainingRecord;
use aura_model::Registry;
use aura_model::import::Options;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

/// The weight file and its record in the source tree.
const WEIGHTS: &str = "aura-tiny-emoji.safetensors";
const RECORD: &str = "aura-tiny-emoji.training.json";

/// Where this build's source tree keeps the shipped weights (`AURA_SHIPPED_MODELS`
/// overrides it, for an installed binary whose source tree has moved).
fn shipped_dir() -> PathBuf {
    std::env::var_os("AURA_SHIPPED_MODELS")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../aura-image/models"),
            PathBuf::from,
        )
}

fn sha256_hex(bytes: &[u8]) -> String {
    aura_core::hash::Hash::sha256(bytes).to_hex()
}

pub(crate) fn pull(
    home: &Home,
    out: &Output,
    registry: &Registry,
    from: Option<&Path>,
) -> anyhow::Result<()> {
    let name = package::ARCHITECTURE;
    let (weights_path, record_path) = match from {
        // What `aura image train --out DIR` writes.
        Some(dir) => (
            dir.join(package::WEIGHTS_FILE),
            dir.join(package::RECORD_FILE),
        ),
        None => {
            if package::SHIPPED_WEIGHTS_SHA256.len() != 64 {
                return Err(hinted(
                    format!("this build of aura ships no weights for {name} yet"),
                    format!(
                        "train them with `aura image train --out DIR` (docs/image-model.md), then `aura model pull {name} --from DIR`"
                    ),
                ));
            }
            let dir = shipped_dir();
            (dir.join(WEIGHTS), dir.join(RECORD))
        }
    };
    let weights = std::fs::read(&weights_path).map_err(|e| {
        hinted(
            format!("cannot read {}: {e}", weights_path.display()),
            if from.is_some() {
                "give --from the directory `aura image train --out` wrote"
            } else {
                "run aura from its source tree, or set AURA_SHIPPED_MODELS to crates/aura-image/models"
            },
        )
    })?;
    let record_bytes = std::fs::read(&record_path)
        .with_context(|| format!("cannot read {}", record_path.display()))?;
    let record: TrainingRecord = serde_json::from_slice(&record_bytes)
        .with_context(|| format!("{} is not a training record", record_path.display()))?;
    let sha = sha256_hex(&weights);
    if from.is_some() && sha != record.weights_sha256 {
        anyhow::bail!(
            "{} is not the model its training record names (sha-256 {sha})",
            weights_path.display()
        );
    }
    if from.is_none() && (sha != package::SHIPPED_WEIGHTS_SHA256 || sha != record.weights_sha256) {
        anyhow::bail!(
            "{} is not the model this build ships (sha-256 {sha})",
            weights_path.display()
        );
    }
    let config = PackageConfig::for_weights(&weights)?;

    // Already installed and intact: nothing to do.
    if let Ok(existing) = registry.packages().resolve(name) {
        let same = existing
            .manifest()
            .files
            .iter()
            .any(|f| f.path == package::WEIGHTS_FILE && f.sha256.to_hex() == sha);
        if !same {
            return Err(hinted(
                format!("another package named `{name}` is installed"),
                format!("remove it with `aura model rm {name}` first"),
            ));
        }
        registry
            .packages()
            .verify(&existing, &|_| {})
            .map_err(|e| crate::cmd::model::package_error(e.into()))?;
        return out.print(
            &serde_json::json!({"name": name, "digest": existing.digest().to_hex(), "installed": true}),
            || format!("{name} is already installed and intact ({})", &existing.digest().to_hex()[..12]),
        );
    }

    let cache = aura_model::pull::cache_dir().ok_or_else(|| {
        hinted(
            "cannot find the model cache: neither AURA_MODEL_CACHE nor HOME is set",
            "set AURA_MODEL_CACHE to the directory scripts/fetch-models.sh fills",
        )
    })?;
    let minilm = cache.join("minilm");
    let encoder_weights = std::fs::read(minilm.join("model.safetensors")).map_err(|e| {
        hinted(
            format!(
                "cannot read MiniLM, the model's text encoder, in {}: {e}",
                minilm.display()
            ),
            "run scripts/fetch-models.sh",
        )
    })?;
    let want = config
        .text_encoder
        .rsplit_once("sha256:")
        .map_or("", |(_, h)| h);
    if sha256_hex(&encoder_weights) != want {
        return Err(hinted(
            format!(
                "the MiniLM in {} is not the one the model was trained with",
                minilm.display()
            ),
            "run scripts/fetch-models.sh again",
        ));
    }

    // Stage the package's files beside the packages (same file system), then import.
    let stage_root = home.dir().join("tmp");
    std::fs::create_dir_all(&stage_root)
        .with_context(|| format!("cannot create {}", stage_root.display()))?;
    let stage = tempfile::tempdir_in(&stage_root)
        .with_context(|| format!("cannot create a directory in {}", stage_root.display()))?;
    let files = stage.path().join(name);
    std::fs::create_dir(&files)?;
    let write = |file: &str, bytes: &[u8]| {
        std::fs::write(files.join(file), bytes)
            .with_context(|| format!("cannot write {}", files.join(file).display()))
    };
    write(package::CONFIG_FILE, &config.to_json())?;
    write(package::WEIGHTS_FILE, &weights)?;
    write(package::RECORD_FILE, &record.canonical_json())?;
    write(package::TEXT_ENCODER_FILE, &encoder_weights)?;
    drop(encoder_weights);
    for (from, to) in [
        ("config.json", package::TEXT_ENCODER_CONFIG_FILE),
        ("tokenizer.json", package::TOKENIZER_FILE),
    ] {
        std::fs::copy(minilm.join(from), files.join(to))
            .with_context(|| format!("cannot copy {}", minilm.join(from).display()))?;
    }
    let options = Options {
        name: Some(name.to_owned()),
        license: Some("Apache-2.0".to_owned()),
        ..Options::default()
    };
    crate::cmd::model::import_one(home, out, registry, &files, &options, "node", "pulled")
}
