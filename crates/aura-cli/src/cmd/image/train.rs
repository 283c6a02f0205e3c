//! `aura image train`: trains Aura's own text-to-image model (aura-image's `train`) on the
//! emoji dataset or a folder of captioned images, or LoRA adapters for a model on a folder
//! (`--lora`), and signs the run's provenance into the node's ledger.
//!
//! The ledger gets one `model.training` entry before the first step (dataset, its digests,
//! text encoder, recipe and its hash, seed, code, base model), then, once the run is done,
//! one `model.checkpoint` entry per checkpoint (stage, step, SHA-256 of the weights, loss)
//! and a `model.trained` entry holding the whole training record and its SHA-256, appended
//! together under one signed checkpoint of the ledger. Every body is the canonical JSON of
//! docs/image-model.md (compact, keys in byte order). Everything the run needs (recipe,
//! data, text encoder, base weights) is read and checked before the ledger is touched, so a
//! bad input leaves no entry.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use aura_core::AgentId;
use aura_core::door::{Clock as _, SystemClock};
use aura_image::dataset::EmojiDataset;
use aura_image::tiny::{MiniLm, TinyModel};
use aura_image::train::{
    self, DatasetRef, Options, Progress, Recipe, TrainingRecord, TrainingSet, lora,
};
use aura_ledger::entry::Kind;
use aura_store::{NewEntry, Seq, Store as _};
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the weights, training-record.json and the checkpoints go
    #[arg(long, default_value = "aura-tiny-emoji")]
    out: PathBuf,
    /// Train the whole model on this folder of captioned PNGs (cat.png with cat.txt)
    /// instead of the emoji dataset
    #[arg(long, conflicts_with = "lora")]
    images: Option<PathBuf>,
    /// Train LoRA adapters on this folder of captioned PNGs for the model given by --base
    #[arg(long, requires = "base")]
    lora: Option<PathBuf>,
    /// The base model's weight file (.safetensors), for --lora
    #[arg(long)]
    base: Option<PathBuf>,
    /// The recipe as JSON [default: aura-tiny-emoji's, or the default LoRA recipe]
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// The seed: with the same data, recipe and code, the same seed gives the same weights
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads (0: one per core); the weights do not depend on it
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Stop each stage after this many steps: exactly the first steps of the full run
    #[arg(long)]
    limit_steps: Option<usize>,
    /// The model cache holding MiniLM and the emoji dataset (scripts/fetch-models.sh and
    /// scripts/fetch-emoji.sh) [default: $AURA_MODEL_CACHE or ~/.cache/aura/models]
    #[arg(long)]
    models: Option<PathBuf>,
}

/// What the run is, before it starts: the `model.training` entry's body.
#[derive(Serialize)]
struct Started<'a> {
    format: &'static str,
    kind: &'static str,
    dataset: &'a DatasetRef,
    text_encoder: String,
    base_model: Option<String>,
    recipe: serde_json::Value,
    recipe_sha256: String,
    seed: u64,
    code: String,
}

/// One checkpoint: the `model.checkpoint` entry's body.
#[derive(Serialize)]
struct CheckpointBody<'a> {
    format: &'static str,
    /// The ledger index of the run's `model.training` entry.
    run: u64,
    #[serde(flatten)]
    checkpoint: &'a train::Checkpoint,
}

/// The result: the `model.trained` entry's body.
#[derive(Serialize)]
struct Trained {
    format: &'static str,
    run: u64,
    record: serde_json::Value,
    record_sha256: String,
}

/// The body format of the three entry kinds.
const ENTRY_FORMAT: &str = "aura-model-training-entry/v1";

#[derive(Serialize)]
struct Report {
    weights: PathBuf,
    weights_sha256: String,
    record: PathBuf,
    record_sha256: String,
    dataset_digest: String,
    checkpoints: usize,
    ledger_entries: Vec<u64>,
    seconds: f64,
}

enum Job {
    Model {
        set: TrainingSet,
        recipe: Recipe,
    },
    Lora {
        set: TrainingSet,
        base: Box<TinyModel>,
        recipe: lora::LoraRecipe,
    },
}

pub(crate) async fn run(home: &Home, out: &Output, args: Args) -> anyhow::Result<()> {
    home.require_init()?;
    let started = Instant::now();
    let cache = match &args.models {
        Some(d) => d.clone(),
        None => aura_model::pull::cache_dir().ok_or_else(|| {
            hinted(
                "cannot find the model cache: neither AURA_MODEL_CACHE nor HOME is set",
                "pass --models DIR",
            )
        })?,
    };
    // Read and check everything first: a bad input touches neither the ledger nor --out.
    let encoder = MiniLm::load(&cache.join("minilm")).map_err(|e| {
        hinted(
            format!("cannot load the text encoder: {e}"),
            "run scripts/fetch-models.sh, or pass --models DIR",
        )
    })?;
    let job = if let Some(dir) = &args.lora {
        let base_path = args.base.as_deref().unwrap_or(Path::new(""));
        let bytes = std::fs::read(base_path)
            .with_context(|| format!("cannot read {}", base_path.display()))?;
        let base = TinyModel::from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", base_path.display()))?;
        let recipe = match &args.recipe {
            Some(p) => read_recipe(p)?,
            None => lora::LoraRecipe::default(),
        };
        Job::Lora {
            set: read_folder(dir)?,
            base: Box::new(base),
            recipe,
        }
    } else {
        let recipe = match &args.recipe {
            Some(p) => read_recipe(p)?,
            None => Recipe::emoji(),
        };
        let set = match &args.images {
            Some(dir) => read_folder(dir)?,
            None => {
                let path = EmojiDataset::path_in(&cache);
                let d = EmojiDataset::open(&path).map_err(|e| {
                    hinted(
                        format!("cannot read the emoji dataset: {e}"),
                        "run scripts/fetch-emoji.sh, or pass --models DIR",
                    )
                })?;
                TrainingSet::emoji(&d)
            }
        };
        Job::Model { set, recipe }
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let opts = Options {
        threads: args.threads,
        checkpoint_dir: Some(args.out.join("checkpoints")),
        embedding_cache: Some(args.out.join("cache")),
        limit_steps: args.limit_steps,
        reuse_vae: None,
    };
    let (set, base_sha, recipe_value, recipe_sha) = match &job {
        Job::Model { set, recipe } => (set, None, serde_json::to_value(recipe)?, recipe.sha256()),
        Job::Lora { set, base, recipe } => (
            set,
            Some(base.sha256()),
            serde_json::to_value(recipe)?,
            recipe.sha256(),
        ),
    };
    let dataset = DatasetRef {
        name: set.name.clone(),
        source_sha256: set.source_sha256.clone(),
        digest: set.digest.clone(),
        samples: set.samples.len(),
    };
    let start_body = Started {
        format: ENTRY_FORMAT,
        kind: if base_sha.is_some() { "lora" } else { "model" },
        dataset: &dataset,
        text_encoder: aura_image::tiny::TextEncoder::id(&encoder),
        base_model: base_sha,
        recipe: recipe_value,
        recipe_sha256: recipe_sha,
        seed: args.seed,
        code: train::code_id(),
    };
    let run_index = append(home, vec![entry("model.training", &start_body)?])
        .await?
        .first()
        .copied()
        .unwrap_or(0);

    let quiet = out.is_json();
    let mut report = |p: &Progress| {
        if !quiet && (p.step.is_multiple_of(50) || p.step == p.steps) {
            eprintln!(
                "{:?} step {}/{} loss {:.5} ({:.0}s)",
                p.stage,
                p.step,
                p.steps,
                p.loss,
                started.elapsed().as_secs_f64()
            );
        }
    };
    let (weights, record, file) = match &job {
        Job::Model { set, recipe } => {
            let o = train::train(set, &encoder, recipe, args.seed, &opts, &mut report)?;
            (o.model.to_bytes(), o.record, "model.safetensors")
        }
        Job::Lora { set, base, recipe } => {
            let (w, r) =
                lora::train_lora(base, set, &encoder, recipe, args.seed, &opts, &mut report)?;
            (w.to_bytes(), r, "lora.safetensors")
        }
    };
    let weights_path = args.out.join(file);
    let record_path = args.out.join("training-record.json");
    std::fs::write(&weights_path, &weights)
        .with_context(|| format!("cannot write {}", weights_path.display()))?;
    std::fs::write(&record_path, record.canonical_json())
        .with_context(|| format!("cannot write {}", record_path.display()))?;

    let mut entries = Vec::new();
    for c in &record.checkpoints {
        entries.push(entry(
            "model.checkpoint",
            &CheckpointBody {
                format: ENTRY_FORMAT,
                run: run_index,
                checkpoint: c,
            },
        )?);
    }
    entries.push(entry(
        "model.trained",
        &Trained {
            format: ENTRY_FORMAT,
            run: run_index,
            record: serde_json::from_slice(&record.canonical_json())?,
            record_sha256: record.sha256(),
        },
    )?);
    let mut indexes = vec![run_index];
    indexes.extend(append(home, entries).await?);
    let view = Report {
        weights: weights_path,
        weights_sha256: record.weights_sha256.clone(),
        record: record_path,
        record_sha256: record.sha256(),
        dataset_digest: record.dataset.digest.clone(),
        checkpoints: record.checkpoints.len(),
        ledger_entries: indexes,
        seconds: started.elapsed().as_secs_f64(),
    };
    out.print(&view, || {
        format!(
            "trained {} ({}) in {:.0}s: {}\nrecord {} ({}); ledger entries {:?}",
            view.weights.display(),
            &view.weights_sha256[..12],
            view.seconds,
            summary(&record),
            view.record.display(),
            &view.record_sha256[..12],
            view.ledger_entries
        )
    })
}

fn summary(r: &TrainingRecord) -> String {
    format!(
        "{} samples of {} (digest {}), seed {}, {} checkpoints",
        r.dataset.samples,
        r.dataset.name,
        &r.dataset.digest[..12.min(r.dataset.digest.len())],
        r.seed,
        r.checkpoints.len()
    )
}

fn read_recipe<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        hinted(
            format!("{} is not a recipe: {e}", path.display()),
            "see docs/image-model.md for the recipe's fields",
        )
    })
}

fn read_folder(dir: &Path) -> anyhow::Result<TrainingSet> {
    lora::read_folder(dir).map_err(|e| {
        // The library's message may carry its own hint on a second line.
        let text = e.to_string();
        let (message, hint) = text.split_once("\nhint: ").unwrap_or((
            &text,
            "put PNG images there, each with its caption in a .txt file of the same name",
        ));
        hinted(message, hint)
    })
}

/// A ledger entry of the node's, its body the canonical JSON of `body`.
fn entry(kind: &str, body: &impl Serialize) -> anyhow::Result<NewEntry> {
    Ok(NewEntry {
        agent: AgentId::NODE,
        seq: Seq::Next,
        kind: Kind::new(kind).map_err(|e| anyhow::anyhow!("{e}"))?,
        recorded_at: SystemClock.now(),
        body: train::sorted_json(&serde_json::to_value(body)?),
    })
}

/// Appends `entries` atomically and returns their ledger indexes.
async fn append(home: &Home, entries: Vec<NewEntry>) -> anyhow::Result<Vec<u64>> {
    let store = home.open_store()?;
    let receipt = store.append(entries).await;
    store.close();
    Ok(receipt?.entries.iter().map(|e| e.index).collect())
}
