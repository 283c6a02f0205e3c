//! The text-to-image and image-to-image pipeline: text conditioning (with a negative
//! prompt and classifier-free guidance), the sampling loop over Aura's schedulers, VAE
//! decoding and PNG encoding, on the model's own thread pool.
//!
//! # Reproducibility
//!
//! The same files, request and [`RuntimeFingerprint`] give the same PNG bytes at any
//! thread count, alone or beside concurrent requests: the networks' arithmetic is fixed
//! (see `kernels` and `ops`), requests never share state, and all randomness comes from
//! [`AuraRng`] streams of the request's seed:
//!
//! - stream 0: the initial noise, drawn as a `4 x h/8 x w/8` (channel, row, column)
//!   tensor in that order;
//! - stream 1: the scheduler's fresh noise (ancestral and LCM steps, DDIM with eta > 0),
//!   each draw a whole latent in the same order;
//! - stream 2: the VAE encoder's latent sample (image-to-image).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clip::TextEncoder;
use crate::error::{Error, Result};
use crate::kernels::{KernelVariant, WeightDtype};
use crate::load::{self, Family, Layout};
use crate::lora::{LoraFile, LoraSet, Resolver};
use crate::ops::{Act, Ctx};
use crate::png::{RgbImage, encode_png};
use crate::rng::AuraRng;
use crate::scheduler::{NoiseSchedule, Prediction, SchedulerKind};
use crate::tokenizer::ClipTokenizer;
use crate::unet::{Added, Unet};
use crate::vae::{Vae, VaeTiling};
use crate::weights::Loader;

/// Files the package layer has verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelFiles {
    /// A diffusers folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, and for SDXL `text_encoder_2/`, `tokenizer_2/`).
    Diffusers(PathBuf),
    /// A single-file checkpoint and CLIP's BPE vocabulary
    /// (`bpe_simple_vocab_16e6.txt.gz`), which single files do not carry.
    SingleFile {
        /// The `.safetensors` checkpoint.
        checkpoint: PathBuf,
        /// The gzipped BPE merges.
        vocab: PathBuf,
    },
}

/// How to load a model.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Threads for this model's work (a pool of its own); None takes rayon's default.
    /// Results do not depend on it.
    pub threads: Option<usize>,
    /// How weights are stored in memory (f16 halves memory; computation is f32 either
    /// way, and f16 files give identical results in both).
    pub dtype: WeightDtype,
    /// Force a kernel variant (it must be supported by the CPU); None picks the best.
    /// Results do not depend on it either.
    pub kernel: Option<KernelVariant>,
    /// LoRA files merged into the weights, in order.
    pub loras: Vec<LoraFile>,
    /// Load the VAE encoder (needed for image-to-image).
    pub vae_encoder: bool,
    /// What a single-file SD 2.x checkpoint predicts (default v); ignored for folders,
    /// whose scheduler config says.
    pub prediction: Option<Prediction>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            threads: None,
            dtype: WeightDtype::F16,
            kernel: None,
            loras: Vec::new(),
            vae_encoder: true,
            prediction: None,
        }
    }
}

/// Everything about the runtime that could change numerics; part of every receipt.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuntimeFingerprint {
    /// Always `aura-image`.
    pub engine: String,
    /// This crate's version.
    pub version: String,
    /// `cpu`.
    pub backend: String,
    /// The device, `cpu`.
    pub device: String,
    /// Weights as stored (every type found, joined by `+`) and as held, e.g. `f16->f16`
    /// or `f16+f32->f16`.
    pub dtype: String,
    /// The kernel variant (`scalar`, `avx2`, `avx512`); results are identical across
    /// variants, but a receipt says what ran.
    pub kernel: String,
    /// The versions of the encodings that results depend on: the random stream and the
    /// PNG encoder (`rng1 png1`).
    pub formats: String,
}

impl std::fmt::Display for RuntimeFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} {} {} {} {} {}",
            self.engine,
            self.version,
            self.backend,
            self.device,
            self.dtype,
            self.kernel,
            self.formats
        )
    }
}

/// What a loaded model is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `sd1`, `sd2` or `sdxl`.
    pub family: String,
    /// The UNet's channels per level.
    pub unet_channels: Vec<usize>,
    /// The width of the text context.
    pub context_dim: usize,
    /// The default image side (512, 768 or 1024).
    pub default_size: u32,
    /// Whether image-to-image is available.
    pub has_vae_encoder: bool,
    /// LoRA files merged.
    pub loras: usize,
    /// Bytes of weights in memory.
    pub weight_bytes: usize,
}

/// One image to make.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from (empty: nothing; SDXL then uses zero embeddings, as its
    /// reference pipeline does).
    pub negative_prompt: String,
    /// Width in pixels (a multiple of 8).
    pub width: u32,
    /// Height in pixels (a multiple of 8).
    pub height: u32,
    /// Sampling steps (for image-to-image, of the full schedule: `strength` of them run).
    pub steps: u32,
    /// Classifier-free guidance; 1 or less runs the prompt alone (one UNet pass a step).
    pub guidance_scale: f32,
    /// The sampler.
    pub scheduler: SchedulerKind,
    /// The seed of every random draw.
    pub seed: u64,
    /// The starting image for image-to-image (its size must equal `width x height`).
    pub init_image: Option<RgbImage>,
    /// How much of the schedule image-to-image runs (0 < strength <= 1).
    pub strength: f32,
    /// Decode in tiles; None decodes whole up to 1024x1024 pixels and in default tiles
    /// beyond.
    pub vae_tiling: Option<VaeTiling>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            width: 512,
            height: 512,
            steps: 20,
            guidance_scale: 7.5,
            scheduler: SchedulerKind::EulerAncestral,
            seed: 0,
            init_image: None,
            strength: 0.75,
            vae_tiling: None,
        }
    }
}

/// Progress of a request, after each step.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Steps done.
    pub step: usize,
    /// Steps this request runs.
    pub steps: usize,
    /// The current latent, `4 x h/8 x w/8` (channel, row, column).
    pub latent: &'a [f32],
}

/// The result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// The pixels.
    pub image: RgbImage,
    /// The PNG file.
    pub png: Vec<u8>,
    /// UNet steps run.
    pub steps_run: u32,
}

/// The text context (`n x tokens x dim`), its token count, and SDXL's pooled text
/// embedding of each prompt.
type Conditioning = (Vec<f32>, usize, Option<Vec<Vec<f32>>>);

struct Text {
    encoder: TextEncoder,
    pad: u32,
}

/// A loaded image model, shared by concurrent requests (`Send + Sync`).
pub struct ImageModel {
    family: Family,
    tokenizer: ClipTokenizer,
    text: Text,
    text2: Option<Text>,
    unet: Unet,
    vae: Vae,
    schedule: NoiseSchedule,
    ctx: Ctx,
    pool: Arc<rayon::ThreadPool>,
    info: ModelInfo,
    fingerprint: RuntimeFingerprint,
}

impl std::fmt::Debug for ImageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageModel")
            .field("info", &self.info)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Largest side accepted, in pixels.
const MAX_SIDE: u32 = 4096;

impl ImageModel {
    /// Loads a model from verified files.
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let variant = match opts.kernel {
            Some(v) if !v.is_supported() => {
                return Err(Error::Options(format!(
                    "this cpu cannot run the {} kernels",
                    v.name()
                )));
            }
            Some(v) => v,
            None => KernelVariant::detect(),
        };
        let threads = match opts.threads {
            Some(0) => return Err(Error::Options("threads must be at least 1".into())),
            Some(n) => n,
            None => rayon::current_num_threads(),
        };
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("aura-image-{i}"))
                .build()
                .map_err(|e| Error::Options(format!("cannot start {threads} threads: {e}")))?,
        );
        let (mut layout, tokenizer) = match files {
            ModelFiles::Diffusers(dir) => {
                let layout = load::diffusers(dir)?;
                let tokenizer = match &layout.tokenizer_files {
                    Some((vocab, merges)) => ClipTokenizer::from_vocab_merges(vocab, merges)?,
                    None => {
                        return Err(Error::model(format!(
                            "{} has no tokenizer/vocab.json and merges.txt",
                            dir.display()
                        )));
                    }
                };
                (layout, tokenizer)
            }
            ModelFiles::SingleFile { checkpoint, vocab } => (
                load::single_file(checkpoint, opts.prediction)?,
                ClipTokenizer::from_bpe_gz(vocab)?,
            ),
        };
        let ctx = Ctx { variant };
        let loaded = pool.install(|| Self::load_networks(&mut layout, opts, &tokenizer))?;
        let (text, text2, unet, vae, bytes) = loaded;
        let family = layout.family;
        let source = layout
            .store
            .source_dtypes
            .iter()
            .copied()
            .collect::<Vec<_>>()
            .join("+");
        let held = opts.dtype.name();
        let info = ModelInfo {
            family: family.name().into(),
            unet_channels: layout.unet.block_out_channels.clone(),
            context_dim: layout.unet.cross_attention_dim,
            default_size: match family {
                Family::Sd1 => 512,
                Family::Sd2 => 768,
                Family::Sdxl => 1024,
            },
            has_vae_encoder: vae.has_encoder(),
            loras: opts.loras.len(),
            weight_bytes: bytes,
        };
        let fingerprint = RuntimeFingerprint {
            engine: "aura-image".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            backend: "cpu".into(),
            device: "cpu".into(),
            dtype: format!("{source}->{held}"),
            kernel: variant.name().into(),
            formats: "rng1 png1".into(),
        };
        Ok(Self {
            family,
            tokenizer,
            text,
            text2,
            unet,
            vae,
            schedule: layout.schedule,
            ctx,
            pool,
            info,
            fingerprint,
        })
    }

    #[allow(clippy::type_complexity, reason = "one private constructor's parts")]
    fn load_networks(
        layout: &mut Layout,
        opts: &LoadOptions,
        tokenizer: &ClipTokenizer,
    ) -> Result<(Text, Option<Text>, Unet, Vae, usize)> {
        let prefixes = load::unet_prefixes(&layout.unet);
        let lora = if opts.loras.is_empty() {
            None
        } else {
            let names: Vec<String> = layout
                .store
                .names_under("")
                .into_iter()
                .map(str::to_owned)
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let ldm = |diffusers: &str| load::ldm_unet_name(&prefixes, diffusers);
            Some(LoraSet::load(&opts.loras, &Resolver::new(&names, &ldm))?)
        };
        let eos = tokenizer.eos();
        let mut bytes = 0;
        let mut l = Loader::new(
            &mut layout.store,
            "text_encoder.",
            opts.dtype,
            lora.as_ref(),
        );
        let encoder = TextEncoder::load(&mut l, &layout.text.cfg)?;
        bytes += l.bytes + encoder_bytes(&encoder);
        let text = Text {
            encoder,
            pad: layout.text.pad.unwrap_or(eos),
        };
        let text2 = match &layout.text2 {
            Some(spec) => {
                let mut l = Loader::new(
                    &mut layout.store,
                    "text_encoder_2.",
                    opts.dtype,
                    lora.as_ref(),
                );
                let encoder = TextEncoder::load(&mut l, &spec.cfg)?;
                bytes += l.bytes + encoder_bytes(&encoder);
                Some(Text {
                    encoder,
                    pad: spec.pad.unwrap_or(eos),
                })
            }
            None => None,
        };
        let mut l = Loader::new(&mut layout.store, "unet.", opts.dtype, lora.as_ref());
        let unet = Unet::load(&mut l, &layout.unet)?;
        bytes += l.bytes;
        let mut l = Loader::new(&mut layout.store, "vae.", opts.dtype, lora.as_ref());
        let vae = Vae::load(&mut l, &layout.vae, opts.vae_encoder)?;
        bytes += l.bytes;
        if let Some(lora) = &lora {
            let left = lora.unmerged();
            if !left.is_empty() {
                return Err(Error::InvalidLora(format!(
                    "deltas for {} weight(s) the model does not load, such as {}",
                    left.len(),
                    left[0]
                )));
            }
            if lora.is_empty() {
                return Err(Error::InvalidLora("the lora files hold no deltas".into()));
            }
        }
        Ok((text, text2, unet, vae, bytes))
    }

    /// What the model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The runtime fingerprint for receipts.
    pub fn fingerprint(&self) -> RuntimeFingerprint {
        self.fingerprint.clone()
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The noise schedule the model was trained with (from the folder's scheduler config,
    /// or the family's default).
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// Threads this model's work runs on.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Makes one image; `progress` is called after every step and may stop the request.
    pub fn generate(
        &self,
        req: &GenerateRequest,
        progress: &mut (dyn FnMut(Progress<'_>) -> ControlFlow<()> + Send),
    ) -> Result<Generation> {
        self.validate(req)?;
        self.pool.install(|| self.run(req, progress))
    }

    fn validate(&self, req: &GenerateRequest) -> Result<()> {
        let f = self.vae.cfg.factor() as u32;
        for (name, v) in [("width", req.width), ("height", req.height)] {
            if v < f || v > MAX_SIDE || v % f != 0 {
                return Err(Error::request(format!(
                    "{name} must be a multiple of {f} between {f} and {MAX_SIDE}, not {v}"
                )));
            }
        }
        if req.steps == 0 || req.steps > 1000 {
            return Err(Error::request("steps must be between 1 and 1000"));
        }
        if !(req.guidance_scale.is_finite() && (0.0..=100.0).contains(&req.guidance_scale)) {
            return Err(Error::request("guidance_scale must be between 0 and 100"));
        }
        if req.prompt.len() > 100_000 || req.negative_prompt.len() > 100_000 {
            return Err(Error::request("prompts are limited to 100,000 bytes"));
        }
        if let Some(img) = &req.init_image {
            if !(req.strength > 0.0 && req.strength <= 1.0) {
                return Err(Error::request("strength must be in (0, 1]"));
            }
            if img.width != req.width || img.height != req.height {
                return Err(Error::request(format!(
                    "the init image is {}x{}, the request {}x{}",
                    img.width, img.height, req.width, req.height
                )));
            }
            if img.pixels.len() != (img.width * img.height * 3) as usize {
                return Err(Error::request(
                    "the init image's pixels do not match its size",
                ));
            }
            if !self.vae.has_encoder() {
                return Err(Error::request(
                    "this model was loaded without the vae encoder; hint: load it with vae_encoder on for image-to-image",
                ));
            }
        }
        Ok(())
    }

    /// The text context (`n x 77 x dim`) and SDXL's pooled embeddings, uncond first.
    fn condition(&self, req: &GenerateRequest, guided: bool) -> Result<Conditioning> {
        let prompts: Vec<&str> = if guided {
            vec![&req.negative_prompt, &req.prompt]
        } else {
            vec![&req.prompt]
        };
        let eos = self.tokenizer.eos();
        let tokens = |pad: u32| -> Vec<Vec<u32>> {
            prompts
                .iter()
                .map(|p| self.tokenizer.encode_padded(p, pad))
                .collect()
        };
        let ctx = self.ctx;
        match (&self.text2, self.family) {
            (Some(t2), Family::Sdxl) => {
                let e1 = self.text.encoder.encode(ctx, &tokens(self.text.pad), eos)?;
                let e2 = t2.encoder.encode(ctx, &tokens(t2.pad), eos)?;
                let (d1, d2) = (
                    self.text.encoder.cfg.hidden_size,
                    t2.encoder.cfg.hidden_size,
                );
                let t = crate::tokenizer::CONTEXT_LENGTH;
                let mut context = Vec::with_capacity(prompts.len() * t * (d1 + d2));
                for r in 0..prompts.len() * t {
                    context.extend_from_slice(&e1.penultimate[r * d1..(r + 1) * d1]);
                    context.extend_from_slice(&e2.penultimate[r * d2..(r + 1) * d2]);
                }
                let pw = e2.pooled.len() / prompts.len();
                let mut pooled: Vec<Vec<f32>> =
                    e2.pooled.chunks_exact(pw).map(<[f32]>::to_vec).collect();
                if guided && req.negative_prompt.is_empty() {
                    // SDXL's reference pipeline conditions an empty negative prompt on zeros.
                    context[..t * (d1 + d2)].iter_mut().for_each(|v| *v = 0.0);
                    pooled[0].iter_mut().for_each(|v| *v = 0.0);
                }
                Ok((context, t, Some(pooled)))
            }
            _ => {
                let e = self.text.encoder.encode(ctx, &tokens(self.text.pad), eos)?;
                Ok((e.last, crate::tokenizer::CONTEXT_LENGTH, None))
            }
        }
    }

    fn run(
        &self,
        req: &GenerateRequest,
        progress: &mut (dyn FnMut(Progress<'_>) -> ControlFlow<()> + Send),
    ) -> Result<Generation> {
        let ctx = self.ctx;
        let guided = req.guidance_scale > 1.0;
        let (context, tc, pooled) = self.condition(req, guided)?;
        if context.len() / tc / if guided { 2 } else { 1 } != self.unet.cfg.cross_attention_dim {
            return Err(Error::model(
                "the text encoders' width does not match the unet's context",
            ));
        }
        let added: Option<Vec<Added>> = pooled.map(|p| {
            let (h, w) = (req.height as f32, req.width as f32);
            p.into_iter()
                .map(|text_embeds| Added {
                    text_embeds,
                    time_ids: [h, w, 0.0, 0.0, h, w],
                })
                .collect()
        });
        let f = self.vae.cfg.factor();
        let (lh, lw, lc) = (
            req.height as usize / f,
            req.width as usize / f,
            self.unet.cfg.in_channels,
        );
        let n = lc * lh * lw;
        let mut sched = req.scheduler.build(&self.schedule, req.steps as usize)?;
        let steps = sched.timesteps().len();
        let noise = AuraRng::with_stream(req.seed, 0).normal_vec(n);
        let mut step_rng = AuraRng::with_stream(req.seed, 1);
        let (mut x, start) = match &req.init_image {
            None => {
                let s = sched.init_noise_sigma();
                (noise.iter().map(|v| v * s).collect::<Vec<f32>>(), 0)
            }
            Some(img) => {
                let run = ((steps as f64 * f64::from(req.strength)) as usize).min(steps);
                if run == 0 {
                    return Err(Error::request(format!(
                        "strength {} runs none of the {steps} steps; raise it or the steps",
                        req.strength
                    )));
                }
                let start = steps - run;
                let pixels: Vec<f32> = img
                    .pixels
                    .iter()
                    .map(|&p| f32::from(p) / 127.5 - 1.0)
                    .collect();
                let image = Act::new(pixels, 1, img.height as usize, img.width as usize, 3);
                let latent =
                    self.vae
                        .encode(ctx, &image, &mut AuraRng::with_stream(req.seed, 2))?;
                let clean = nhwc_to_nchw(&latent.data, lh, lw, lc);
                let mut x = vec![0.0f32; n];
                sched.add_noise(start, &clean, &noise, &mut x)?;
                (x, start)
            }
        };
        let batch = if guided { 2 } else { 1 };
        for i in start..steps {
            let scale = sched.input_scale(i);
            let scaled: Vec<f32> = x.iter().map(|v| v * scale).collect();
            let one = nchw_to_nhwc(&scaled, lh, lw, lc);
            let mut input = Vec::with_capacity(batch * n);
            for _ in 0..batch {
                input.extend_from_slice(&one);
            }
            let out = self.unet.forward(
                ctx,
                &Act::new(input, batch, lh, lw, lc),
                f64::from(sched.timesteps()[i]),
                &context,
                tc,
                added.as_deref(),
            )?;
            let eps_nhwc: Vec<f32> = if guided {
                let (u, c) = out.data.split_at(n);
                let g = req.guidance_scale;
                u.iter().zip(c).map(|(&u, &c)| u + g * (c - u)).collect()
            } else {
                out.data
            };
            let eps = nhwc_to_nchw(&eps_nhwc, lh, lw, lc);
            sched.step(i, &eps, &mut x, &mut step_rng)?;
            if progress(Progress {
                step: i + 1 - start,
                steps: steps - start,
                latent: &x,
            })
            .is_break()
            {
                return Err(Error::Cancelled);
            }
        }
        let latent = Act::new(nchw_to_nhwc(&x, lh, lw, lc), 1, lh, lw, lc);
        let tiling = req
            .vae_tiling
            .or_else(|| (lh * lw > 128 * 128).then(VaeTiling::default));
        let pixels = match tiling {
            Some(t) => self.vae.decode_tiled(ctx, &latent, t)?,
            None => self.vae.decode(ctx, &latent),
        };
        let image = RgbImage {
            width: req.width,
            height: req.height,
            pixels: pixels.data.iter().map(|&v| to_u8(v)).collect(),
        };
        let png = encode_png(&image);
        Ok(Generation {
            image,
            png,
            steps_run: (steps - start) as u32,
        })
    }
}

/// A decoded value in -1..1 to a byte: `floor(clamp((v + 1) / 2, 0, 1) * 255 + 0.5)`.
fn to_u8(v: f32) -> u8 {
    let v = (v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0 + 0.5;
    v as u8
}

fn nchw_to_nhwc(x: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for ch in 0..c {
        for p in 0..h * w {
            out[p * c + ch] = x[ch * h * w + p];
        }
    }
    out
}

fn nhwc_to_nchw(x: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for ch in 0..c {
        for p in 0..h * w {
            out[ch * h * w + p] = x[p * c + ch];
        }
    }
    out
}

fn encoder_bytes(e: &TextEncoder) -> usize {
    let c = &e.cfg;
    (c.vocab_size + c.max_positions) * c.hidden_size * 4
}
