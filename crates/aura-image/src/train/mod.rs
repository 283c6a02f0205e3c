//! Training Aura's tiny image model, deterministically, and the provenance of a run.
//!
//! Two stages, as in latent diffusion: the VAE learns to reconstruct the images (L1 plus a
//! small KL term), then the denoiser learns to predict the velocity of noised latents
//! (the VAE's posterior means, scaled to unit variance) conditioned on the text embedding
//! of a caption, with the caption dropped one time in ten so classifier-free guidance
//! works, and min-SNR loss weights.
//!
//! # Determinism
//!
//! The same training set (by content digest), text encoder (by weights digest), recipe,
//! seed and code give the same weights bit for bit, at any thread count:
//!
//! - every random draw (initial weights, data order, captions, dropped captions, noise
//!   levels, noise) comes from ChaCha20 streams of the seed ([`crate::tiny::Gaussian`]),
//!   consumed in one fixed order on one thread;
//! - every reduction (matrix products, bias gradients, normalisation statistics, the
//!   gradient norm, the loss) runs in one fixed order ([`crate::tiny`]'s kernels);
//! - the elementary functions are this crate's own, not the C library's.
//!
//! [`TrainingRecord`] names all of it, with the SHA-256 of every checkpoint, so a run can
//! be verified by running it again.

pub(crate) mod adam;
pub mod eval;
pub mod lora;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::EmojiDataset;
use crate::tiny::denoiser::DenoiserConfig;
use crate::tiny::layers::{Param, Visit};
use crate::tiny::vae::VaeConfig;
use crate::tiny::{self, Gaussian, ModelConfig, TextEncoder, TinyModel, schedule};
use adam::{Adam, learning_rate};

/// The recipe's format tag.
pub const RECIPE_FORMAT: &str = "aura-tiny-recipe/v1";
/// The training record's format tag.
pub const RECORD_FORMAT: &str = "aura-tiny-training/v1";
/// Names the arithmetic of this crate's kernels; bump it when any result could change.
pub const KERNELS: &str = "aura-tiny-kernels/v1";

// Random streams of a training seed.
const STREAM_INIT: u64 = 100;
const STREAM_VAE: u64 = 200;
const STREAM_DENOISER: u64 = 300;
pub(crate) const STREAM_LORA: u64 = 400;

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] tiny::Error),
    /// A recipe that cannot run.
    #[error("invalid recipe: {0}")]
    Recipe(String),
    /// A training set that cannot be used.
    #[error("invalid training set: {0}")]
    Data(String),
    /// A checkpoint or cache could not be written or read.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The thread pool could not start.
    #[error("cannot start {0} threads")]
    Threads(usize),
}

/// The VAE stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeStage {
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Warm-up steps.
    pub warmup: usize,
    /// Weight of the KL term against the mean absolute pixel error.
    pub kl_weight: f32,
}

/// The denoiser stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiserStage {
    /// Optimiser steps.
    pub steps: usize,
    /// Latents per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Warm-up steps.
    pub warmup: usize,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Probability of training a sample unconditionally (for guidance).
    pub uncond_prob: f32,
    /// γ of the clamped-SNR loss weights (see the schedule's `loss_weight`).
    pub min_snr_gamma: f32,
    /// Probability of captioning a sample with one of its short names instead of its name.
    pub short_name_prob: f32,
}

/// The denoiser's shape (its latent and text sizes follow from the VAE and the encoder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiserShape {
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width inside each block's MLP.
    pub ff: usize,
    /// Residual blocks.
    pub blocks: usize,
    /// Length of the noise-level embedding.
    pub time: usize,
    /// Whether the prompt is also projected into the residual stream's start (left out
    /// of the JSON when false, so recipes from before it keep their bytes and hashes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub text_input: bool,
}

/// Everything that decides a training run besides the data, the text encoder and the seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// [`RECIPE_FORMAT`].
    pub format: String,
    /// The VAE.
    pub vae: VaeConfig,
    /// The denoiser.
    pub denoiser: DenoiserShape,
    /// How the VAE is trained.
    pub vae_stage: VaeStage,
    /// How the denoiser is trained.
    pub denoiser_stage: DenoiserStage,
    /// Denoiser steps between checkpoints (the end of each stage is always one).
    pub checkpoint_every: usize,
}

impl Recipe {
    /// The recipe of Aura's default model, `aura-tiny-emoji`.
    pub fn emoji() -> Self {
        Self {
            format: RECIPE_FORMAT.into(),
            vae: VaeConfig {
                latent_channels: 4,
                channels: [32, 64, 128],
            },
            denoiser: DenoiserShape {
                hidden: 512,
                ff: 1024,
                blocks: 4,
                time: 64,
                text_input: true,
            },
            vae_stage: VaeStage {
                steps: 400,
                batch: 32,
                lr: 2e-3,
                warmup: 50,
                kl_weight: 1e-4,
            },
            denoiser_stage: DenoiserStage {
                steps: 5000,
                batch: 128,
                lr: 2e-3,
                warmup: 200,
                weight_decay: 0.0,
                uncond_prob: 0.1,
                min_snr_gamma: 5.0,
                short_name_prob: 0.0,
            },
            checkpoint_every: 1000,
        }
    }

    /// The model configuration this recipe trains with an encoder of `text` numbers.
    pub fn model_config(&self, text: usize, text_encoder: &str) -> ModelConfig {
        ModelConfig {
            vae: self.vae,
            denoiser: DenoiserConfig {
                latent: self.vae.latent_len(),
                hidden: self.denoiser.hidden,
                ff: self.denoiser.ff,
                blocks: self.denoiser.blocks,
                text,
                time: self.denoiser.time,
                text_input: self.denoiser.text_input,
            },
            text_encoder: text_encoder.to_owned(),
        }
    }

    /// The recipe's canonical JSON: compact, fields in declaration order, numbers as
    /// `serde_json` prints them (shortest round-trip decimal).
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 of [`Self::canonical_json`], hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json()))
    }

    fn check(&self) -> Result<(), Error> {
        let v = &self.vae_stage;
        let d = &self.denoiser_stage;
        let probs = [d.uncond_prob, d.short_name_prob];
        if self.format != RECIPE_FORMAT {
            return Err(Error::Recipe(format!("format must be {RECIPE_FORMAT}")));
        }
        if v.batch == 0 || d.batch == 0 || v.batch > 4096 || d.batch > 65536 {
            return Err(Error::Recipe(
                "batch sizes must be between 1 and 4096 (VAE) or 65536".into(),
            ));
        }
        if !(v.lr > 0.0 && d.lr > 0.0 && v.lr.is_finite() && d.lr.is_finite()) {
            return Err(Error::Recipe("learning rates must be positive".into()));
        }
        if probs.iter().any(|p| !(0.0..=1.0).contains(p))
            || d.min_snr_gamma.is_nan()
            || d.min_snr_gamma <= 0.0
        {
            return Err(Error::Recipe(
                "probabilities must lie in [0, 1] and γ be positive".into(),
            ));
        }
        if self.checkpoint_every == 0 {
            return Err(Error::Recipe("checkpoint_every must be positive".into()));
        }
        Ok(())
    }
}

/// One training image and its captions.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The name first, then any alternatives (short names).
    pub captions: Vec<String>,
    /// 64×64 RGB in [-1, 1], NHWC.
    pub rgb: Vec<f32>,
}

/// What a run trains on, and its identity.
#[derive(Clone, Debug)]
pub struct TrainingSet {
    /// What it is (`emoji-datasource-google@16.0.0`, or a folder's name).
    pub name: String,
    /// SHA-256 of the source as fetched (the tarball), hex; empty for a folder.
    pub source_sha256: String,
    /// Content digest of the samples, hex.
    pub digest: String,
    /// The samples.
    pub samples: Vec<Sample>,
}

impl TrainingSet {
    /// The emoji dataset: each emoji's name, then its short names with `_` and `-` read as
    /// spaces.
    pub fn emoji(d: &EmojiDataset) -> Self {
        let samples = d
            .emoji
            .iter()
            .map(|e| {
                let mut captions = vec![e.name.clone()];
                for s in &e.short_names {
                    let s = tiny::normalize_prompt(&s.replace(['_', '-'], " "));
                    if !captions.contains(&s) {
                        captions.push(s);
                    }
                }
                Sample {
                    captions,
                    rgb: e.rgb_signed(),
                }
            })
            .collect();
        Self {
            name: format!("{}@{}", crate::dataset::PACKAGE, crate::dataset::VERSION),
            source_sha256: d.source_sha256.clone(),
            digest: d.digest.clone(),
            samples,
        }
    }
}

/// Which stage a checkpoint or progress report belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Training the VAE.
    Vae,
    /// Training the denoiser.
    Denoiser,
    /// Training LoRA adapters.
    Lora,
}

/// A checkpoint as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The stage.
    pub stage: Stage,
    /// Steps of the stage done.
    pub step: usize,
    /// SHA-256 of the weight file at that point, hex.
    pub sha256: String,
    /// Mean training loss over the steps since the previous checkpoint.
    pub loss: f32,
}

/// The data a run trained on, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    /// What it is.
    pub name: String,
    /// SHA-256 of the source as fetched, hex (empty for a folder).
    pub source_sha256: String,
    /// Content digest, hex.
    pub digest: String,
    /// Number of samples.
    pub samples: usize,
}

/// The provenance of a training run: what went in and what came out, enough to run it
/// again and compare every checkpoint. The lead's ledger and package layers sign and
/// record it (see [`TrainingRecord::canonical_json`] and [`TrainingRecord::sha256`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    /// [`RECORD_FORMAT`].
    pub format: String,
    /// The data.
    pub dataset: DatasetRef,
    /// The text encoder ([`TextEncoder::id`]).
    pub text_encoder: String,
    /// For LoRA runs, the SHA-256 of the base model's weight file (or of the model whose
    /// VAE a run reused).
    pub base_model: Option<String>,
    /// The recipe, as its canonical JSON value.
    pub recipe: serde_json::Value,
    /// SHA-256 of the recipe's canonical JSON.
    pub recipe_sha256: String,
    /// The seed.
    pub seed: u64,
    /// The code: `aura-image <version>` and [`KERNELS`].
    pub code: String,
    /// Every checkpoint, in order; the last is the result.
    pub checkpoints: Vec<Checkpoint>,
    /// SHA-256 of the resulting weight file.
    pub weights_sha256: String,
}

impl TrainingRecord {
    /// The canonical JSON: compact, every object's keys in byte order (the recipe's too),
    /// numbers as `serde_json` prints them, the same bytes whether or not a build turns on
    /// serde_json's `preserve_order`.
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_value(self)
            .map(|v| sorted_json(&v))
            .unwrap_or_default()
    }

    /// SHA-256 of the canonical JSON, hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json()))
    }
}

/// Compact JSON of `v` with every object's keys in byte order, written out here rather than
/// left to `serde_json`'s map, whose order a cargo feature decides.
pub fn sorted_json(v: &serde_json::Value) -> Vec<u8> {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(k).unwrap_or_default());
                    out.push(b':');
                    if let Some(x) = map.get(k) {
                        write(x, out);
                    }
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(x, out);
                }
                out.push(b']');
            }
            other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// The code identity recorded in a [`TrainingRecord`].
pub fn code_id() -> String {
    format!("aura-image {} {KERNELS}", env!("CARGO_PKG_VERSION"))
}

/// How to run (nothing here changes the result but `reuse_vae`, which the record names).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Threads (0: rayon's default).
    pub threads: usize,
    /// Where checkpoints are written (none: only hashed).
    pub checkpoint_dir: Option<PathBuf>,
    /// Where caption embeddings are cached between runs.
    pub embedding_cache: Option<PathBuf>,
    /// Stop each stage after this many steps (the schedule stays the full recipe's, so
    /// these are exactly the first steps of the full run).
    pub limit_steps: Option<usize>,
    /// Skip the VAE stage and use this model's VAE and latent scale (its configuration must
    /// be the recipe's); the record names the model it came from as `base_model`.
    pub reuse_vae: Option<TinyModel>,
}

/// A progress report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// The stage.
    pub stage: Stage,
    /// Steps done.
    pub step: usize,
    /// Steps in the stage.
    pub steps: usize,
    /// This step's loss.
    pub loss: f64,
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    /// The model.
    pub model: TinyModel,
    /// Its provenance.
    pub record: TrainingRecord,
}

pub(crate) fn pool(threads: usize) -> Result<rayon::ThreadPool, Error> {
    let mut b = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("aura-image-train-{i}"));
    if threads > 0 {
        b = b.num_threads(threads);
    }
    b.build().map_err(|_| Error::Threads(threads))
}

/// Embeds every distinct caption once (cached on disk when asked): the texts in order and
/// their vectors.
pub(crate) fn embed_all(
    encoder: &dyn TextEncoder,
    texts: &[String],
    cache: Option<&Path>,
) -> Result<Vec<Vec<f32>>, Error> {
    let key = {
        let mut h = Sha256::new();
        h.update(encoder.id().as_bytes());
        for t in texts {
            h.update((t.len() as u32).to_le_bytes());
            h.update(t.as_bytes());
        }
        hex::encode(h.finalize())
    };
    let dim = encoder.dimension();
    let file = cache.map(|d| d.join(format!("embeddings-{key}.f32")));
    if let Some(f) = &file
        && let Ok(bytes) = std::fs::read(f)
        && bytes.len() == texts.len() * dim * 4
    {
        let all: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        return Ok(all.chunks_exact(dim).map(<[f32]>::to_vec).collect());
    }
    let vectors = encoder.encode(texts)?;
    if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != dim) {
        return Err(Error::Model(tiny::Error::TextEncoder(
            "wrong number or length of vectors".into(),
        )));
    }
    if let (Some(f), Some(dir)) = (&file, cache) {
        let io = |source| Error::Io {
            path: f.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let bytes: Vec<u8> = vectors
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(f, bytes).map_err(|source| Error::Io {
            path: f.clone(),
            source,
        })?;
    }
    Ok(vectors)
}

/// Every distinct caption's vector, and each sample's captions as indices into them.
pub(crate) type EmbeddedCaptions = (Vec<Vec<f32>>, Vec<Vec<usize>>);

/// Embeds every distinct caption of a set once.
pub(crate) fn embed_captions(
    set: &TrainingSet,
    encoder: &dyn TextEncoder,
    opts: &Options,
) -> Result<EmbeddedCaptions, Error> {
    let mut texts: Vec<String> = set
        .samples
        .iter()
        .flat_map(|s| s.captions.iter().cloned())
        .collect();
    texts.sort();
    texts.dedup();
    let vectors = embed_all(encoder, &texts, opts.embedding_cache.as_deref())?;
    let captions = set
        .samples
        .iter()
        .map(|s| {
            s.captions
                .iter()
                .map(|c| texts.binary_search(c).unwrap_or(0))
                .collect()
        })
        .collect();
    Ok((vectors, captions))
}

/// Hands out batches of sample indices: epoch after epoch, each a fresh permutation.
pub(crate) struct Batches {
    rng: Gaussian,
    order: Vec<usize>,
    at: usize,
    n: usize,
}

impl Batches {
    pub(crate) fn new(n: usize, rng: Gaussian) -> Self {
        Self {
            rng,
            order: Vec::new(),
            at: 0,
            n,
        }
    }

    pub(crate) fn next(&mut self, size: usize) -> Vec<usize> {
        (0..size)
            .map(|_| {
                if self.at == self.order.len() {
                    self.order = self.rng.permutation(self.n);
                    self.at = 0;
                }
                self.at += 1;
                self.order[self.at - 1]
            })
            .collect()
    }
}

/// Writes a checkpoint (when a directory is given) and returns its record.
pub(crate) fn checkpoint(
    bytes: &[u8],
    stage: Stage,
    step: usize,
    loss: f64,
    dir: Option<&Path>,
) -> Result<Checkpoint, Error> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    if let Some(dir) = dir {
        let path = dir.join(format!(
            "checkpoint-{}-{step:06}.safetensors",
            serde_json::to_value(stage)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        std::fs::write(&path, bytes).map_err(|source| Error::Io { path, source })?;
    }
    Ok(Checkpoint {
        stage,
        step,
        sha256,
        loss: loss as f32,
    })
}

/// A module's parameters in visiting order.
pub(crate) fn params(m: &mut impl Visit) -> Vec<&mut Param> {
    m.param_list("").into_iter().map(|(_, p)| p).collect()
}

/// Trains Aura's tiny model on `set` with `recipe` and `seed`.
pub fn train(
    set: &TrainingSet,
    encoder: &dyn TextEncoder,
    recipe: &Recipe,
    seed: u64,
    opts: &Options,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Outcome, Error> {
    recipe.check()?;
    if set.samples.is_empty() {
        return Err(Error::Data("no samples".into()));
    }
    if let Some(bad) = set
        .samples
        .iter()
        .find(|s| s.captions.is_empty() || s.rgb.len() != tiny::IMAGE * tiny::IMAGE * 3)
    {
        return Err(Error::Data(format!(
            "sample {:?} lacks a caption or is not 64×64 RGB",
            bad.captions.first()
        )));
    }
    // Captions are embedded before the pool starts: the encoder has its own.
    let (vectors, caption_vectors) = embed_captions(set, encoder, opts)?;
    let config = recipe.model_config(encoder.dimension(), &encoder.id());
    let pool = pool(opts.threads)?;
    pool.install(|| {
        let mut model = TinyModel::new(&config, seed_mix(seed, STREAM_INIT));
        let mut checkpoints = Vec::new();
        let latents = match &opts.reuse_vae {
            Some(from) => {
                if from.vae.config() != recipe.vae {
                    return Err(Error::Recipe(
                        "the reused VAE's configuration is not the recipe's".into(),
                    ));
                }
                model.vae = from.vae.clone();
                model.latent_scale = from.latent_scale;
                let mut latents = encode_means(&model, set);
                tiny::layers::scale(&mut latents, model.latent_scale);
                latents
            }
            None => {
                train_vae(
                    &mut model,
                    set,
                    recipe,
                    seed,
                    opts,
                    progress,
                    &mut checkpoints,
                )?;
                encode_all(&mut model, set)
            }
        };
        let data = Conditioned {
            latents: &latents,
            vectors: &vectors,
            captions: &caption_vectors,
        };
        let dir = opts.checkpoint_dir.clone();
        let mut save = |m: &TinyModel, step: usize, loss: f64| -> Result<(), Error> {
            checkpoints.push(checkpoint(
                &m.to_bytes(),
                Stage::Denoiser,
                step,
                loss,
                dir.as_deref(),
            )?);
            Ok(())
        };
        let how = StageRun {
            stage: &recipe.denoiser_stage,
            seed,
            stream: STREAM_DENOISER,
            run: stage_steps(recipe.denoiser_stage.steps, opts),
            tag: Stage::Denoiser,
            checkpoint_every: recipe.checkpoint_every,
        };
        run_denoiser(&mut model, &data, &how, progress, &mut save)?;
        let bytes = model.to_bytes();
        let record = TrainingRecord {
            format: RECORD_FORMAT.into(),
            dataset: DatasetRef {
                name: set.name.clone(),
                source_sha256: set.source_sha256.clone(),
                digest: set.digest.clone(),
                samples: set.samples.len(),
            },
            text_encoder: encoder.id(),
            base_model: opts.reuse_vae.as_ref().map(TinyModel::sha256),
            recipe: serde_json::to_value(recipe).unwrap_or_default(),
            recipe_sha256: recipe.sha256(),
            seed,
            code: code_id(),
            weights_sha256: hex::encode(Sha256::digest(&bytes)),
            checkpoints,
        };
        Ok(Outcome { model, record })
    })
}

/// The initial weights' seed: the run's seed and a stream number (so a change of recipe
/// elsewhere never shifts the initial weights).
fn seed_mix(seed: u64, stream: u64) -> u64 {
    seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn stage_steps(steps: usize, opts: &Options) -> usize {
    opts.limit_steps.map_or(steps, |l| l.min(steps))
}

fn train_vae(
    model: &mut TinyModel,
    set: &TrainingSet,
    recipe: &Recipe,
    seed: u64,
    opts: &Options,
    progress: &mut (dyn FnMut(&Progress) + Send),
    checkpoints: &mut Vec<Checkpoint>,
) -> Result<(), Error> {
    let st = &recipe.vae_stage;
    let mut rng = Gaussian::new(seed, STREAM_VAE);
    let mut batches = Batches::new(set.samples.len(), Gaussian::new(seed, STREAM_VAE + 1));
    let mut adam = Adam::new(0.0, 1.0);
    let px = tiny::IMAGE * tiny::IMAGE * 3;
    let lat = model.vae.config().latent_len();
    let run = stage_steps(st.steps, opts);
    let mut window = 0.0;
    for step in 0..run {
        let idx = batches.next(st.batch);
        let mut images = Vec::with_capacity(st.batch * px);
        for &i in &idx {
            images.extend_from_slice(&set.samples[i].rgb);
        }
        let mut noise = vec![0.0; st.batch * lat];
        rng.fill(&mut noise);
        let (l1, kl) = model
            .vae
            .train_step(&images, st.batch, st.kl_weight, &noise);
        let loss = l1 + f64::from(st.kl_weight) * kl;
        let lr = learning_rate(step, st.steps, st.lr, st.warmup, 0.05);
        adam.step(params(&mut model.vae), lr);
        window += loss;
        progress(&Progress {
            stage: Stage::Vae,
            step: step + 1,
            steps: st.steps,
            loss,
        });
        if step + 1 == run {
            checkpoints.push(checkpoint(
                &model.to_bytes(),
                Stage::Vae,
                step + 1,
                window / run as f64,
                opts.checkpoint_dir.as_deref(),
            )?);
        }
    }
    Ok(())
}

/// Every image's posterior mean (unscaled), in order.
pub(crate) fn encode_means(model: &TinyModel, set: &TrainingSet) -> Vec<f32> {
    let px = tiny::IMAGE * tiny::IMAGE * 3;
    let mut means = Vec::new();
    for chunk in set.samples.chunks(64) {
        let mut images = Vec::with_capacity(chunk.len() * px);
        for s in chunk {
            images.extend_from_slice(&s.rgb);
        }
        let (m, _) = model.vae.encode(&images, chunk.len());
        means.extend(m);
    }
    means
}

/// Encodes every image to its posterior mean and sets the model's latent scale to one over
/// their standard deviation; returns the scaled latents.
fn encode_all(model: &mut TinyModel, set: &TrainingSet) -> Vec<f32> {
    let mut means = encode_means(model, set);
    let n = means.len() as f64;
    let mean = means.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = means
        .iter()
        .map(|&v| (f64::from(v) - mean) * (f64::from(v) - mean))
        .sum::<f64>()
        / n;
    model.latent_scale = (1.0 / var.sqrt().max(1e-6)) as f32;
    for v in &mut means {
        *v *= model.latent_scale;
    }
    means
}

/// What the denoiser trains on: scaled latents, the caption embeddings, and each sample's
/// captions as indices into them (its name first).
pub(crate) struct Conditioned<'a> {
    pub(crate) latents: &'a [f32],
    pub(crate) vectors: &'a [Vec<f32>],
    pub(crate) captions: &'a [Vec<usize>],
}

/// How one denoiser stage runs: its hyper-parameters, the seed and first stream number of
/// its randomness, the steps to run, what to call it and how often to checkpoint.
pub(crate) struct StageRun<'a> {
    pub(crate) stage: &'a DenoiserStage,
    pub(crate) seed: u64,
    pub(crate) stream: u64,
    pub(crate) run: usize,
    pub(crate) tag: Stage,
    pub(crate) checkpoint_every: usize,
}

/// Trains the denoiser (its trainable parameters: all of them for the base model, the
/// adapters for LoRA) for one stage; `on_checkpoint(model, step, mean loss)` runs every
/// `checkpoint_every` steps and at the end.
pub(crate) fn run_denoiser(
    model: &mut TinyModel,
    data: &Conditioned<'_>,
    how: &StageRun<'_>,
    progress: &mut (dyn FnMut(&Progress) + Send),
    on_checkpoint: &mut dyn FnMut(&TinyModel, usize, f64) -> Result<(), Error>,
) -> Result<(), Error> {
    let st = how.stage;
    let cfg = model.denoiser.config();
    let (d, e) = (cfg.latent, cfg.text);
    let mut rng = Gaussian::new(how.seed, how.stream);
    let mut batches = Batches::new(data.captions.len(), Gaussian::new(how.seed, how.stream + 1));
    let mut adam = Adam::new(st.weight_decay, 1.0);
    let mut window = (0.0, 0usize);
    for step in 0..how.run {
        let idx = batches.next(st.batch);
        let b = idx.len();
        let mut z = Vec::with_capacity(b * d);
        let mut t = Vec::with_capacity(b);
        let mut text = Vec::with_capacity(b * e);
        let mut target = Vec::with_capacity(b * d);
        let mut weight = Vec::with_capacity(b);
        let mut eps = vec![0.0; d];
        for &i in &idx {
            // Draws in a fixed order per sample: caption, dropout, noise level, noise.
            let caps = &data.captions[i];
            let pick = if caps.len() > 1 && (rng.uniform() as f32) < st.short_name_prob {
                caps[1 + rng.below(caps.len() as u64 - 1) as usize]
            } else {
                caps[0]
            };
            if (rng.uniform() as f32) < st.uncond_prob {
                text.extend(std::iter::repeat_n(0.0, e));
            } else {
                text.extend_from_slice(&data.vectors[pick]);
            }
            let ti = rng.uniform() as f32;
            let (a, s) = schedule::alpha_sigma(ti);
            rng.fill(&mut eps);
            let x0 = &data.latents[i * d..(i + 1) * d];
            for (x, n) in x0.iter().zip(&eps) {
                z.push(a * x + s * n);
                target.push(a * n - s * x);
            }
            t.push(ti);
            weight.push(schedule::loss_weight(ti, st.min_snr_gamma));
        }
        let mse = model.denoiser.train_step(&z, &t, &text, &target, &weight);
        let lr = learning_rate(step, st.steps, st.lr, st.warmup, 0.02);
        adam.step(params(&mut model.denoiser), lr);
        window.0 += mse;
        window.1 += 1;
        progress(&Progress {
            stage: how.tag,
            step: step + 1,
            steps: st.steps,
            loss: mse,
        });
        if (step + 1) % how.checkpoint_every == 0 || step + 1 == how.run {
            on_checkpoint(model, step + 1, window.0 / window.1 as f64)?;
            window = (0.0, 0);
        }
    }
    Ok(())
}
