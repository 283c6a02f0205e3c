//! The engines image packages run on, picked by their architecture ([`ImageEngine`]),
//! and the package's LoRA files: what the host's loader needs of images, a leaf below
//! `host` (the requests and their metering are in `images`).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use aura_core::hash::Hash;
use aura_model::Verified;

use crate::error::ModelError;

fn invalid(param: &str, message: impl std::fmt::Display) -> ModelError {
    ModelError::invalid(format!("{param}: {message}"))
}

/// Architectures run by aura-image's latent-diffusion pipeline.
pub const DIFFUSION_ARCHITECTURES: &[&str] = &["stable-diffusion", "stable-diffusion-xl"];
/// Aura's own tiny text-to-image model's architecture (64x64, trained by `aura image
/// train`); its engine takes the slot in [`ImageEngine`] when it lands.
pub const TINY_ARCHITECTURE: &str = "aura-tiny-emoji";
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
    // Aura's tiny emoji model (`TINY_ARCHITECTURE`) takes its variant here when
    // aura-image's `tiny` module lands: its `load` arm, `default_size`, `can_edit`
    // and `generate` arms below.
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
        let f = model.fingerprint();
        let runtime = aura_model::Runtime {
            // The encodings results depend on (random stream, PNG) are part of what ran.
            version: format!("{} {} {}", f.engine, f.version, f.formats),
            backend: f.backend,
            device: f.device,
            dtype: f.dtype,
            kernel: f.kernel,
        };
        Ok((ImageEngine::Diffusion(Arc::new(model)), runtime))
    }

    /// The side a request that names no size gets.
    pub fn default_size(&self) -> u32 {
        match self {
            ImageEngine::Diffusion(m) => m.info().default_size,
        }
    }

    /// Whether it can start from an image (edits, img2img).
    pub fn can_edit(&self) -> bool {
        match self {
            ImageEngine::Diffusion(m) => m.info().has_vae_encoder,
        }
    }

    /// Steps a request that names none runs.
    pub fn default_steps(&self) -> u32 {
        20
    }

    pub(crate) fn generate(
        &self,
        request: &aura_image::GenerateRequest,
        progress: &mut (dyn FnMut(aura_image::Progress<'_>) -> ControlFlow<()> + Send),
    ) -> aura_image::Result<aura_image::Generation> {
        match self {
            ImageEngine::Diffusion(m) => m.generate(request, progress),
        }
    }
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
