//! The engines image packages run on, picked by their architecture ([`ImageEngine`]),
//! and the package's LoRA files: what the host's loader needs of images, a leaf below
//! `host` (the requests and their metering are in `images`).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use aura_core::hash::Hash;
use aura_image::SchedulerKind;
use aura_model::Verified;

use crate::error::ModelError;

fn invalid(param: &str, message: impl std::fmt::Display) -> ModelError {
    ModelError::invalid(format!("{param}: {message}"))
}

/// Architectures run by aura-image's latent-diffusion pipeline.
pub const DIFFUSION_ARCHITECTURES: &[&str] = &["stable-diffusion", "stable-diffusion-xl"];
/// Aura's own tiny text-to-image model's architecture (64x64, trained by `aura image
/// train`; aura-image's `tiny::package`).
pub const TINY_ARCHITECTURE: &str = aura_image::tiny::package::ARCHITECTURE;
/// The image model a request that names none runs.
pub const DEFAULT_IMAGE_MODEL: &str = "aura-tiny-emoji";
/// The format of the parameters record an image's receipt hashes and its PNG carries.
pub const PARAMS_FORMAT: &str = "aura-image-params/v1";
/// The PNG text chunk's keyword.
pub const PNG_KEYWORD: &str = "aura";
/// Most images per request (OpenAI's limit).
pub const MAX_IMAGES: u32 = 10;
/// Longest prompt (and negative prompt), in characters (OpenAI's limit for DALL-E 3).
pub const MAX_PROMPT_CHARS: usize = 4000;
/// Largest side, in pixels.
pub const MAX_SIDE: u32 = 2048;
/// Most sampling steps.
pub const MAX_STEPS: u32 = 150;
/// Most partial images a streamed request asks for (OpenAI's limit).
pub const MAX_PARTIAL_IMAGES: u32 = 3;
/// Largest starting image accepted, in bytes of PNG.
pub const MAX_INIT_IMAGE_BYTES: usize = 16 * 1024 * 1024;

/// Whether a package of this architecture is an image model.
pub fn is_image(architecture: &str) -> bool {
    DIFFUSION_ARCHITECTURES.contains(&architecture) || architecture == TINY_ARCHITECTURE
}

pub(crate) fn not_text(name: &str) -> ModelError {
    ModelError::new(
        400,
        "model_not_text",
        format!("model `{name}` makes images; use it with /v1/images/generations"),
    )
}

pub(crate) fn not_image(name: &str) -> ModelError {
    ModelError::new(
        400,
        "model_not_image",
        format!(
            "model `{name}` is not an image model; hint: `aura model list` shows each model's kind"
        ),
    )
}

/// The engine an image package runs on, picked by its architecture.
#[derive(Debug, Clone)]
pub enum ImageEngine {
    /// Latent diffusion (SD 1.5, 2.1, XL, Turbo) from a diffusers folder.
    Diffusion(Arc<aura_image::ImageModel>),
    /// Aura's own tiny model ([`TINY_ARCHITECTURE`]): 64x64 only, its own seeded DDIM on
    /// a cosine schedule, classifier-free guidance with negative prompts, no image to
    /// start from.
    Tiny(Arc<aura_image::tiny::package::Pipeline>),
}

/// One step of an image being made, whatever the engine: how far it got, and a preview
/// drawn only when asked for (it costs more than the step's bookkeeping).
pub(crate) struct Step<'a> {
    pub(crate) step: u32,
    pub(crate) steps: u32,
    preview: &'a dyn Fn() -> aura_image::RgbImage,
}

impl Step<'_> {
    /// The picture so far: for latent diffusion a projection of the latent (an eighth of
    /// the image's side, never the VAE); for the tiny model its predicted clean latent
    /// through its own 64x64 decoder, which costs about as much as a few steps.
    pub(crate) fn preview(&self) -> aura_image::RgbImage {
        (self.preview)()
    }
}

/// Projects a latent (`4 x h x w`, SD's latent space) to RGB with a fixed linear map, the
/// approximation preview tools use: cheap enough to run after every step.
pub fn preview(latent: &[f32], width: u32, height: u32) -> aura_image::RgbImage {
    // Rows: the latent channels; columns: their weights for R, G and B.
    const FACTORS: [[f32; 3]; 4] = [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ];
    let (w, h) = ((width / 8).max(1) as usize, (height / 8).max(1) as usize);
    let plane = w * h;
    let mut pixels = Vec::with_capacity(plane * 3);
    for i in 0..plane {
        for rgb in 0..3 {
            let mut v = 0.0f32;
            for (c, f) in FACTORS.iter().enumerate() {
                v += latent.get(c * plane + i).copied().unwrap_or(0.0) * f[rgb];
            }
            let v = ((v + 1.0) * 127.5).clamp(0.0, 255.0);
            pixels.push(v as u8);
        }
    }
    aura_image::RgbImage {
        width: w as u32,
        height: h as u32,
        pixels,
    }
}

fn tiny_error(e: aura_image::tiny::Error) -> aura_image::Error {
    match e {
        aura_image::tiny::Error::Cancelled => aura_image::Error::Cancelled,
        aura_image::tiny::Error::Invalid(m) => aura_image::Error::InvalidRequest(m),
        other => aura_image::Error::InvalidModel(other.to_string()),
    }
}

impl ImageEngine {
    /// Loads the verified package `name` with its LoRA `lora` merged in, on `threads`.
    pub(crate) fn load(
        name: &str,
        verified: &Verified,
        lora: Option<&str>,
        threads: Option<usize>,
    ) -> Result<(ImageEngine, aura_model::Runtime), ModelError> {
        let architecture = verified.model().manifest().architecture.as_str();
        let cannot = |reason: String| {
            ModelError::new(
                409,
                "model_not_loadable",
                format!("model `{name}` cannot be loaded: {reason}"),
            )
        };
        if architecture == TINY_ARCHITECTURE {
            return load_tiny(name, verified, lora, threads);
        }
        if !DIFFUSION_ARCHITECTURES.contains(&architecture) {
            return Err(cannot(format!(
                "this node has no engine for the image architecture `{architecture}`"
            )));
        }
        let aura_model::ModelFiles::Diffusers(dir) = verified.files() else {
            return Err(cannot("its files are not a diffusers folder".into()));
        };
        let mut options = aura_image::LoadOptions {
            threads,
            ..aura_image::LoadOptions::default()
        };
        if let Some(l) = lora {
            let (path, _) = lora_file(verified, name, l)?;
            options
                .loras
                .push(aura_image::LoraFile { path, scale: 1.0 });
        }
        let model =
            aura_image::ImageModel::load(&aura_image::ModelFiles::Diffusers(dir.clone()), &options)
                .map_err(|e| cannot(e.to_string()))?;
        let runtime = runtime_of(model.fingerprint());
        Ok((ImageEngine::Diffusion(Arc::new(model)), runtime))
    }

    /// The side a request that names no size gets.
    pub fn default_size(&self) -> u32 {
        match self {
            ImageEngine::Diffusion(m) => m.info().default_size,
            ImageEngine::Tiny(_) => aura_image::tiny::IMAGE as u32,
        }
    }

    /// The only size it makes, if it makes only one (the tiny model: 64x64).
    pub fn only_size(&self) -> Option<u32> {
        match self {
            ImageEngine::Diffusion(_) => None,
            ImageEngine::Tiny(_) => Some(aura_image::tiny::IMAGE as u32),
        }
    }

    /// Whether it can start from an image (edits, img2img).
    pub fn can_edit(&self) -> bool {
        match self {
            ImageEngine::Diffusion(m) => m.info().has_vae_encoder,
            ImageEngine::Tiny(_) => false,
        }
    }

    /// Steps a request that names none runs.
    pub fn default_steps(&self) -> u32 {
        match self {
            ImageEngine::Diffusion(_) => 20,
            ImageEngine::Tiny(_) => aura_image::tiny::SampleOptions::default().steps as u32,
        }
    }

    /// The guidance scale a request that names none runs with.
    pub fn default_guidance(&self) -> f32 {
        match self {
            ImageEngine::Diffusion(_) => 7.5,
            ImageEngine::Tiny(_) => aura_image::tiny::SampleOptions::default().guidance,
        }
    }

    /// The scheduler a request that names none runs with.
    pub fn default_scheduler(&self) -> SchedulerKind {
        match self {
            ImageEngine::Diffusion(_) => SchedulerKind::EulerAncestral,
            // Its own deterministic DDIM (eta 0), the only one it runs.
            ImageEngine::Tiny(_) => SchedulerKind::Ddim { eta: 0.0 },
        }
    }

    /// The schedulers it runs: all of aura-image's for latent diffusion; the tiny model
    /// only its own deterministic DDIM (on the cosine schedule it was trained on).
    pub fn runs_scheduler(&self, kind: SchedulerKind) -> bool {
        match self {
            ImageEngine::Diffusion(_) => true,
            ImageEngine::Tiny(_) => kind == SchedulerKind::Ddim { eta: 0.0 },
        }
    }

    pub(crate) fn generate(
        &self,
        request: &aura_image::GenerateRequest,
        progress: &mut (dyn FnMut(Step<'_>) -> ControlFlow<()> + Send),
    ) -> aura_image::Result<aura_image::Generation> {
        match self {
            ImageEngine::Diffusion(m) => {
                let (w, h) = (request.width, request.height);
                m.generate(request, &mut |p| {
                    progress(Step {
                        step: p.step as u32,
                        steps: p.steps as u32,
                        preview: &|| preview(p.latent, w, h),
                    })
                })
            }
            ImageEngine::Tiny(pipeline) => {
                let opts = aura_image::tiny::SampleOptions {
                    seed: request.seed,
                    steps: request.steps as usize,
                    guidance: request.guidance_scale,
                };
                let image = pipeline
                    .generate(&request.prompt, &request.negative_prompt, &opts, &mut |p| {
                        progress(Step {
                            step: p.step as u32,
                            steps: p.steps as u32,
                            preview: &|| rgb(p.preview()),
                        })
                    })
                    .map_err(tiny_error)?;
                let image = rgb(image);
                Ok(aura_image::Generation {
                    png: aura_image::encode_png(&image),
                    image,
                    steps_run: request.steps,
                })
            }
        }
    }
}

fn rgb(image: aura_image::tiny::Image) -> aura_image::RgbImage {
    aura_image::RgbImage {
        width: image.width,
        height: image.height,
        pixels: image.rgb,
    }
}

/// A receipt's runtime from an engine's fingerprint.
fn runtime_of(f: aura_image::RuntimeFingerprint) -> aura_model::Runtime {
    aura_model::Runtime {
        // The encodings results depend on (random stream, PNG) are part of what ran.
        version: format!("{} {} {}", f.engine, f.version, f.formats),
        backend: f.backend,
        device: f.device,
        dtype: f.dtype,
        kernel: f.kernel,
    }
}

/// Loads Aura's tiny model from a verified package (its files per aura-image's
/// `tiny::package`), with the package's LoRA `lora` merged in.
fn load_tiny(
    name: &str,
    verified: &Verified,
    lora: Option<&str>,
    threads: Option<usize>,
) -> Result<(ImageEngine, aura_model::Runtime), ModelError> {
    let cannot = |reason: String| {
        ModelError::new(
            409,
            "model_not_loadable",
            format!("model `{name}` cannot be loaded: {reason}"),
        )
    };
    let files = verified.model().dir().join(aura_model::package::FILES_DIR);
    let mut pipeline = aura_image::tiny::package::Pipeline::load(&files)
        .and_then(|p| p.with_threads(threads.unwrap_or(0)))
        .map_err(|e| cannot(e.to_string()))?;
    if let Some(l) = lora {
        let (path, _) = lora_file(verified, name, l)?;
        let bytes =
            std::fs::read(&path).map_err(|e| cannot(format!("cannot read its LoRA `{l}`: {e}")))?;
        let weights = aura_image::train::lora::LoraWeights::from_bytes(&bytes)
            .map_err(|e| cannot(format!("its LoRA `{l}` is not an aura-tiny LoRA: {e}")))?;
        pipeline = pipeline
            .with_lora(&weights, 1.0)
            .map_err(|e| cannot(format!("its LoRA `{l}` does not fit it: {e}")))?;
    }
    let runtime = runtime_of(pipeline.fingerprint());
    Ok((ImageEngine::Tiny(Arc::new(pipeline)), runtime))
}

/// The LoRA files an image package carries (`loras/<name>.safetensors`), by name.
pub fn loras_of(verified: &Verified) -> Vec<String> {
    verified
        .model()
        .manifest()
        .files
        .iter()
        .filter_map(|f| {
            f.path
                .strip_prefix("loras/")
                .and_then(|n| n.strip_suffix(".safetensors"))
                .map(str::to_owned)
        })
        .collect()
}

/// The path and signed digest of the package's LoRA `lora`.
pub(crate) fn lora_file(
    verified: &Verified,
    name: &str,
    lora: &str,
) -> Result<(PathBuf, Hash), ModelError> {
    let rel = format!("loras/{lora}.safetensors");
    let entry = verified
        .model()
        .manifest()
        .files
        .iter()
        .find(|f| f.path == rel)
        .ok_or_else(|| {
            let known = loras_of(verified);
            invalid(
                "lora",
                format!(
                    "model `{name}` has no LoRA `{lora}`{}",
                    if known.is_empty() {
                        String::from(" (it carries none)")
                    } else {
                        format!("; it carries {}", known.join(", "))
                    }
                ),
            )
        })?;
    Ok((
        verified
            .model()
            .dir()
            .join(aura_model::package::FILES_DIR)
            .join(&entry.path),
        entry.sha256,
    ))
}
