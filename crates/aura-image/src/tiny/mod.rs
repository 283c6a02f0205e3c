//! Aura's own tiny text-to-image model: a small VAE (64×64 RGB ↔ 8×8×C latents) and a
//! latent denoiser conditioned on MiniLM sentence embeddings of the prompt, sampled with a
//! seeded DDIM and classifier-free guidance.
//!
//! Everything runs on this module's kernels ([`gemm`] and [`layers`]), forward and backward,
//! in one fixed arithmetic order, so the same weights, prompt, seed and options give the
//! same PNG bytes at any thread count, and the same data, recipe and seed give the same
//! weights (see `crate::train`).
//!
//! ```no_run
//! use aura_image::tiny::{MiniLm, SampleOptions, TinyModel};
//! # fn main() -> Result<(), aura_image::tiny::Error> {
//! let model = TinyModel::from_bytes(&std::fs::read("aura-tiny-emoji.safetensors").unwrap())?;
//! let text = MiniLm::load("models/minilm".as_ref())?;
//! let image = model.generate(&text, "red apple", &SampleOptions { seed: 7, ..SampleOptions::default() })?;
//! std::fs::write("apple.png", image.to_png()).unwrap();
//! # Ok(()) }
//! ```

pub(crate) mod denoiser;
pub(crate) mod gemm;
pub(crate) mod layers;
pub(crate) mod math;
pub mod package;
pub(crate) mod schedule;
pub(crate) mod vae;
pub(crate) mod weights;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use denoiser::{Denoiser, DenoiserConfig};
pub use math::Gaussian;
pub use vae::{IMAGE, LATENT, Vae, VaeConfig};

use layers::{Param, Visit};

/// The weight file's format tag (metadata `format`).
pub const WEIGHTS_FORMAT: &str = "aura-tiny-weights/v1";

/// Errors of the tiny model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weight file could not be read.
    #[error("invalid weight file: {0}")]
    Weights(String),
    /// The text encoder failed or does not match the model.
    #[error("text encoder: {0}")]
    TextEncoder(String),
    /// A request the model cannot serve.
    #[error("{0}")]
    Invalid(String),
    /// The caller stopped the generation (its progress callback said so).
    #[error("the generation was cancelled")]
    Cancelled,
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Turns prompts into fixed-length vectors (the model's conditioning).
pub trait TextEncoder: Send + Sync {
    /// Names the encoder and its weights (part of a model's identity: a model only runs
    /// with the encoder it was trained with).
    fn id(&self) -> String;
    /// Length of each vector.
    fn dimension(&self) -> usize;
    /// One vector per text.
    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error>;
}

/// all-MiniLM-L6-v2 sentence embeddings through `aura-infer`, named by the SHA-256 of its
/// weights.
pub struct MiniLm {
    model: aura_infer::EmbeddingModel,
    id: String,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm").field("id", &self.id).finish()
    }
}

impl MiniLm {
    /// Loads the encoder from a directory holding `config.json`, `tokenizer.json` and
    /// `model.safetensors` (what `scripts/fetch-models.sh` puts in `minilm/`).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        Self::load_files(
            &dir.join("config.json"),
            &dir.join("tokenizer.json"),
            &dir.join("model.safetensors"),
        )
    }

    /// Loads the encoder from its three files wherever they are (a model package names
    /// them differently; see [`crate::tiny::package`]).
    pub fn load_files(config: &Path, tokenizer: &Path, weights: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(weights).map_err(|source| Error::Io {
            path: weights.to_owned(),
            source,
        })?;
        let id = format!(
            "all-MiniLM-L6-v2@sha256:{}",
            hex::encode(Sha256::digest(&bytes))
        );
        drop(bytes);
        let files = aura_infer::ModelFiles::Safetensors {
            config: config.to_owned(),
            tokenizer: tokenizer.to_owned(),
            tokenizer_config: None,
            weights: vec![weights.to_owned()],
        };
        let model = aura_infer::EmbeddingModel::load(&files, &aura_infer::LoadOptions::default())
            .map_err(|e| Error::TextEncoder(e.to_string()))?;
        Ok(Self { model, id })
    }
}

impl TextEncoder for MiniLm {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn dimension(&self) -> usize {
        self.model.dimension()
    }

    fn encode(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        Ok(self
            .model
            .embed(texts)
            .map_err(|e| Error::TextEncoder(e.to_string()))?
            .vectors)
    }
}

/// A prompt as the model sees it: lower case, single spaces, trimmed (emoji names are upper
/// case in the dataset; MiniLM is uncased anyway, this only keeps captions canonical).
pub fn normalize_prompt(prompt: &str) -> String {
    prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleOptions {
    /// Seeds the initial noise.
    pub seed: u64,
    /// DDIM steps.
    pub steps: usize,
    /// Classifier-free guidance scale (1 = none).
    pub guidance: f32,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 20,
            guidance: 3.0,
        }
    }
}

/// An 8-bit RGB image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB bytes.
    pub rgb: Vec<u8>,
}

impl Image {
    /// PNG bytes: the engine's own deterministic encoder ([`crate::png`]), so the same
    /// pixels give the same bytes whatever library versions.
    pub fn to_png(&self) -> Vec<u8> {
        crate::png::encode_png(&crate::png::RgbImage {
            width: self.width,
            height: self.height,
            pixels: self.rgb.clone(),
        })
    }

    /// From values in [-1, 1] (NHWC, one image).
    pub(crate) fn from_signed(x: &[f32], side: usize) -> Self {
        Self {
            width: side as u32,
            height: side as u32,
            rgb: x
                .iter()
                .map(|v| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8)
                .collect(),
        }
    }
}

/// One denoising step done, as [`TinyModel::generate_guided`] reports it.
pub struct Progress<'a> {
    /// Steps done.
    pub step: usize,
    /// Steps this generation runs.
    pub steps: usize,
    /// The current latent, scaled (`latent_channels x 8 x 8`, channel-major).
    pub latent: &'a [f32],
    /// The clean latent the model predicts at this step, scaled like `latent`.
    predicted: &'a [f32],
    model: &'a TinyModel,
}

impl std::fmt::Debug for Progress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("step", &self.step)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Progress<'_> {
    /// Where the picture is heading: the clean latent predicted at this step through the
    /// VAE's decoder, at full size (64x64). The tiny decoder costs about as much as a few
    /// denoising steps, so a caller asks for it only at the steps it shows.
    pub fn preview(&self) -> Image {
        let mut images = self.model.decode_latents(self.predicted.to_vec(), 1);
        images.pop().unwrap_or(Image {
            width: IMAGE as u32,
            height: IMAGE as u32,
            rgb: vec![0; IMAGE * IMAGE * 3],
        })
    }
}

/// Aura's tiny text-to-image model.
#[derive(Clone, Debug)]
pub struct TinyModel {
    pub(crate) vae: Vae,
    pub(crate) denoiser: Denoiser,
    /// Multiplies the VAE's latent means so the denoiser sees unit variance.
    pub(crate) latent_scale: f32,
    /// The [`TextEncoder::id`] it was trained with.
    pub(crate) text_encoder: String,
}

/// The configuration stored in a weight file's metadata (`config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The VAE.
    pub vae: VaeConfig,
    /// The denoiser.
    pub denoiser: DenoiserConfig,
    /// The text encoder it was trained with.
    pub text_encoder: String,
}

impl TinyModel {
    /// A freshly initialised model (training starts here).
    pub fn new(config: &ModelConfig, seed: u64) -> Self {
        Self::build(config, &mut Gaussian::new(seed, 100))
    }

    fn build(config: &ModelConfig, rng: &mut Gaussian) -> Self {
        let vae = Vae::new(config.vae, rng);
        let denoiser = Denoiser::new(config.denoiser, rng);
        Self {
            vae,
            denoiser,
            latent_scale: 1.0,
            text_encoder: config.text_encoder.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> ModelConfig {
        ModelConfig {
            vae: self.vae.config(),
            denoiser: self.denoiser.config(),
            text_encoder: self.text_encoder.clone(),
        }
    }

    /// The text encoder this model needs.
    pub fn text_encoder(&self) -> &str {
        &self.text_encoder
    }

    /// Every parameter (VAE, then denoiser) in the fixed naming order.
    pub(crate) fn params(&mut self) -> Vec<(String, &mut Param)> {
        let mut out = self.vae.param_list("vae.");
        self.denoiser.params("denoiser.", &mut out);
        out
    }

    /// The weight file (canonical safetensors; see [`weights`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut tensors = BTreeMap::new();
        let mut me = self.clone();
        for (name, p) in me.params() {
            tensors.insert(
                name,
                weights::Tensor {
                    shape: p.shape.clone(),
                    data: p.w.clone(),
                },
            );
        }
        tensors.insert(
            "latent_scale".to_owned(),
            weights::Tensor {
                shape: vec![1],
                data: vec![self.latent_scale],
            },
        );
        let mut meta = BTreeMap::new();
        meta.insert("format".to_owned(), WEIGHTS_FORMAT.to_owned());
        meta.insert(
            "config".to_owned(),
            serde_json::to_string(&self.config()).unwrap_or_default(),
        );
        weights::write(&tensors, &meta)
    }

    /// The SHA-256 of [`Self::to_bytes`], hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.to_bytes()))
    }

    /// Reads a weight file: every tensor the configuration names must be present with its
    /// shape, and nothing else.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (mut tensors, meta) = weights::read(bytes)?;
        if meta.get("format").map(String::as_str) != Some(WEIGHTS_FORMAT) {
            return Err(Error::Weights(format!("not a {WEIGHTS_FORMAT} file")));
        }
        let config: ModelConfig =
            serde_json::from_str(meta.get("config").map(String::as_str).unwrap_or(""))
                .map_err(|e| Error::Weights(format!("config: {e}")))?;
        check_config(&config)?;
        let mut model = Self::build(&config, &mut Gaussian::zeros());
        let mut missing = Vec::new();
        for (name, p) in model.params() {
            match tensors.remove(&name) {
                Some(t) if t.shape == p.shape => p.w = t.data,
                Some(t) => missing.push(format!(
                    "{name} has shape {:?}, expected {:?}",
                    t.shape, p.shape
                )),
                None => missing.push(format!("{name} is missing")),
            }
        }
        if let Some(m) = missing.first() {
            return Err(Error::Weights(m.clone()));
        }
        match tensors.remove("latent_scale") {
            Some(t) if t.data.len() == 1 && t.data[0].is_finite() && t.data[0] > 0.0 => {
                model.latent_scale = t.data[0];
            }
            _ => {
                return Err(Error::Weights(
                    "latent_scale is missing or not a positive number".into(),
                ));
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::Weights(format!("unexpected tensor {extra}")));
        }
        Ok(model)
    }

    /// The VAE's reconstruction of one 64×64 RGB image in [-1, 1] (NHWC): the best the
    /// model can draw that image.
    pub fn reconstruct(&self, rgb: &[f32]) -> Result<Image, Error> {
        if rgb.len() != IMAGE * IMAGE * 3 {
            return Err(Error::Invalid("expected one 64×64 RGB image".into()));
        }
        let (mean, _) = self.vae.encode(rgb, 1);
        Ok(Image::from_signed(&self.vae.decode(&mean, 1), IMAGE))
    }

    /// Generates one image for a prompt.
    pub fn generate(
        &self,
        encoder: &dyn TextEncoder,
        prompt: &str,
        opts: &SampleOptions,
    ) -> Result<Image, Error> {
        if encoder.id() != self.text_encoder {
            return Err(Error::TextEncoder(format!(
                "this model was trained with {}, not {}",
                self.text_encoder,
                encoder.id()
            )));
        }
        self.generate_with_progress(encoder, prompt, opts, &mut |_, _| {})
    }

    /// [`Self::generate`], calling `progress(step, steps)` after each denoising step (for
    /// live previews and cancellation-free progress bars; it cannot change the image).
    pub fn generate_with_progress(
        &self,
        encoder: &dyn TextEncoder,
        prompt: &str,
        opts: &SampleOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Image, Error> {
        if encoder.id() != self.text_encoder {
            return Err(Error::TextEncoder(format!(
                "this model was trained with {}, not {}",
                self.text_encoder,
                encoder.id()
            )));
        }
        self.generate_guided(encoder, prompt, "", opts, &mut |p| {
            progress(p.step, p.steps);
            ControlFlow::Continue(())
        })
    }

    /// [`Self::generate_with_progress`] with a negative prompt and a progress callback that
    /// sees each step's latent (and can draw a preview) and may stop the generation
    /// ([`Error::Cancelled`]).
    ///
    /// A non-empty `negative` prompt takes the place of the unconditional input of
    /// classifier-free guidance (its embedding instead of the zero vector the model was
    /// trained with as "no prompt"), so guidance pushes away from it, as Stable Diffusion's
    /// negative prompts do; an empty one changes no bit of the image.
    pub fn generate_guided(
        &self,
        encoder: &dyn TextEncoder,
        prompt: &str,
        negative: &str,
        opts: &SampleOptions,
        progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
    ) -> Result<Image, Error> {
        if encoder.id() != self.text_encoder {
            return Err(Error::TextEncoder(format!(
                "this model was trained with {}, not {}",
                self.text_encoder,
                encoder.id()
            )));
        }
        let e = encoder.encode(&[normalize_prompt(prompt)])?;
        let negative = normalize_prompt(negative);
        let uncond = if negative.is_empty() {
            None
        } else {
            Some(encoder.encode(&[negative])?)
        };
        let latents =
            self.sample_latents_with(&e, uncond.as_deref(), &[opts.seed], opts, progress)?;
        let mut images = self.decode_latents(latents, 1);
        images
            .pop()
            .ok_or_else(|| Error::Invalid("no image".into()))
    }

    /// Generates one image per text embedding, each from its own seed; batching changes no
    /// bit of any image.
    pub fn generate_from_embeddings(
        &self,
        embeddings: &[Vec<f32>],
        seeds: &[u64],
        opts: &SampleOptions,
    ) -> Result<Vec<Image>, Error> {
        let latents = self.sample_latents(embeddings, seeds, opts, &mut |_, _| {})?;
        Ok(self.decode_latents(latents, embeddings.len()))
    }

    /// Decodes `n` scaled latents into images.
    fn decode_latents(&self, latents: Vec<f32>, n: usize) -> Vec<Image> {
        let mut z = latents;
        layers::scale(&mut z, 1.0 / self.latent_scale);
        let px = self.vae.decode(&z, n);
        px.chunks_exact(IMAGE * IMAGE * 3)
            .map(|x| Image::from_signed(x, IMAGE))
            .collect()
    }

    /// Runs the sampler: scaled latents, `n × latent_len`.
    pub(crate) fn sample_latents(
        &self,
        embeddings: &[Vec<f32>],
        seeds: &[u64],
        opts: &SampleOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f32>, Error> {
        self.sample_latents_with(embeddings, None, seeds, opts, &mut |p| {
            progress(p.step, p.steps);
            ControlFlow::Continue(())
        })
    }

    /// The sampler, with the unconditional inputs of guidance (`uncond`: one embedding per
    /// prompt; zero vectors when None) and a progress callback that may stop it.
    pub(crate) fn sample_latents_with(
        &self,
        embeddings: &[Vec<f32>],
        uncond: Option<&[Vec<f32>]>,
        seeds: &[u64],
        opts: &SampleOptions,
        progress: &mut dyn FnMut(Progress<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<f32>, Error> {
        let cfg = self.denoiser.config();
        if seeds.len() != embeddings.len() {
            return Err(Error::Invalid("one seed per prompt".into()));
        }
        if let Some(u) = uncond
            && (u.len() != embeddings.len() || u.iter().any(|e| e.len() != cfg.text))
        {
            return Err(Error::Invalid(
                "one unconditional embedding of the text's size per prompt".into(),
            ));
        }
        if opts.steps == 0 || opts.steps > 1000 {
            return Err(Error::Invalid("steps must be between 1 and 1000".into()));
        }
        if !opts.guidance.is_finite() || !(0.0..=50.0).contains(&opts.guidance) {
            return Err(Error::Invalid("guidance must be between 0 and 50".into()));
        }
        if let Some(e) = embeddings.iter().find(|e| e.len() != cfg.text) {
            return Err(Error::Invalid(format!(
                "text embedding has {} numbers, expected {}",
                e.len(),
                cfg.text
            )));
        }
        let n = embeddings.len();
        let d = cfg.latent;
        let mut z = vec![0.0; n * d];
        // The initial noise is the image engine's: `AuraRng`'s stream 0 of the seed, the
        // same generator every sampler in this crate draws from.
        for (row, &seed) in z.chunks_exact_mut(d).zip(seeds) {
            crate::rng::AuraRng::new(seed).fill_normal(row);
        }
        let guided = opts.guidance != 1.0;
        // Conditional rows first, then (with guidance) the unconditional ones: zero vectors
        // (the model's "no prompt"), or the negative prompt's embeddings.
        let mut text: Vec<f32> = embeddings.iter().flatten().copied().collect();
        if guided {
            match uncond {
                Some(u) => text.extend(u.iter().flatten().copied()),
                None => text.extend(std::iter::repeat_n(0.0, n * cfg.text)),
            }
        }
        let mut predicted = vec![0.0f32; n * d];
        let ts = schedule::timesteps(opts.steps);
        for (step, w) in ts.windows(2).enumerate() {
            let rows = if guided { 2 * n } else { n };
            let mut zin = z.clone();
            if guided {
                zin.extend_from_slice(&z);
            }
            let t = vec![w[0]; rows];
            let v = self.denoiser.forward(&zin, &t, &text);
            let v = if guided {
                let (c, u) = v.split_at(n * d);
                c.iter()
                    .zip(u)
                    .map(|(c, u)| u + opts.guidance * (c - u))
                    .collect()
            } else {
                v
            };
            // The clean latent this step predicts (`x̂₀ = α z − σ v̂`), for previews only: it
            // is computed beside the step and changes none of its numbers.
            let (a, sg) = schedule::alpha_sigma(w[0]);
            for ((x, z), v) in predicted.iter_mut().zip(&z).zip(&v) {
                *x = a * z - sg * v;
            }
            schedule::ddim_step(&mut z, &v, w[0], w[1]);
            let report = Progress {
                step: step + 1,
                steps: opts.steps,
                latent: &z,
                predicted: &predicted,
                model: self,
            };
            if progress(report).is_break() {
                return Err(Error::Cancelled);
            }
        }
        Ok(z)
    }
}

/// Refuses configurations that would be absurd to build (a hostile file cannot make the
/// loader allocate gigabytes).
fn check_config(c: &ModelConfig) -> Result<(), Error> {
    let v = c.vae;
    let d = c.denoiser;
    let ok = (1..=64).contains(&v.latent_channels)
        && v.channels.iter().all(|c| (1..=1024).contains(c))
        && d.latent == v.latent_len()
        && (1..=4096).contains(&d.hidden)
        && (1..=16384).contains(&d.ff)
        && (1..=64).contains(&d.blocks)
        && (1..=4096).contains(&d.text)
        && (2..=1024).contains(&d.time)
        && d.time.is_multiple_of(2);
    if ok {
        Ok(())
    } else {
        Err(Error::Weights("implausible model configuration".into()))
    }
}

#[cfg(test)]
mod bench {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::gemm::{View, matmul};

    fn cpu_ns() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    #[ignore = "timing, run by hand"]
    fn gemm_speed() {
        for &(m, n, k) in &[
            (256, 1024, 1024),
            (1024, 1024, 256),
            (4096, 64, 576),
            (576, 64, 16384),
            (16384, 64, 288),
            (2, 1024, 1024),
        ] {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0.0f32; m * n];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let reps = 5;
            let (cpu, wall) = pool.install(|| {
                let t = std::time::Instant::now();
                let c0 = cpu_ns();
                for _ in 0..reps {
                    matmul(View::new(&a, m, k), View::new(&b, k, n), &mut c, false);
                }
                (cpu_ns() - c0, t.elapsed())
            });
            let flop = 2.0 * (m * n * k) as f64 * reps as f64;
            println!(
                "{m}x{n}x{k}: {:.1} GFLOP per cpu-second, {:.1} per wall-second",
                flop / cpu.max(1) as f64,
                flop / wall.as_secs_f64() / 1e9
            );
        }
    }
}
