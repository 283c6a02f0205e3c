//! Image models on the host: packages whose architecture names an image engine, verified
//! and licensed like text packages, and the metered image request every front end runs
//! (the Images API, the A1111 routes, the gRPC service, the CLI, the `image.generate`
//! tool): checked in one place ([`ImageRequest::check`]), authorised against the
//! package's license before anything runs, one signed receipt per image after, the
//! receipt's id and the image's parameters written into the PNG.
//!
//! # Which engine
//!
//! A package's manifest `architecture` picks the engine ([`ImageEngine`]):
//! `stable-diffusion` and `stable-diffusion-xl` (diffusers folders imported with
//! `aura model import`) run on aura-image's latent-diffusion pipeline; Aura's own tiny
//! model (`aura-tiny-emoji`, `aura model pull aura-tiny-emoji`) on its own engine
//! (aura-image's `tiny::package::Pipeline`): 64x64 only, its own DDIM, guidance with
//! negative prompts, no edits, so a request for anything else is refused with a 400 that
//! names the field. Both take the same path here: the same checks, previews, cancellation,
//! metering and receipts, the engine's runtime fingerprint in each receipt.
//!
//! # What a receipt of an image says
//!
//! Each image is one request of the usage-receipt format (`inference-receipt/v1`,
//! docs/models.md), so images settle like text. Its input hash is
//! `io_hash(canonical JSON of the image's parameters record)` (format
//! `aura-image-params/v1`: package digest, LoRA name and file digest, SHA-256 of the
//! prompt and of the negative prompt, size, steps, guidance, scheduler, seed, strength and
//! the starting image's SHA-256), its output hash `io_hash(the PNG bytes as delivered)`,
//! its prompt tokens the bytes of both prompts and its completion tokens the UNet steps
//! run. The PNG carries `{"receipt": id, "parameters": record}` as canonical JSON in an
//! `iTXt` chunk with the keyword `aura`, so anyone holding the file can recompute both
//! hashes and check them against the signed receipt.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use aura_core::hash::Hash;
use aura_image::{RgbImage, SchedulerKind};
use aura_model::ReceiptId;
use serde_json::{Value, json};

use crate::error::ModelError;
use crate::host::{Engine, Measured, ModelHost, Served};
use crate::requests::invalid;

pub use crate::image_engine::{
    DEFAULT_IMAGE_MODEL, DIFFUSION_ARCHITECTURES, ImageEngine, MAX_IMAGES, MAX_INIT_IMAGE_BYTES,
    MAX_PARTIAL_IMAGES, MAX_PROMPT_CHARS, MAX_SIDE, MAX_STEPS, PARAMS_FORMAT, PNG_KEYWORD,
    TINY_ARCHITECTURE, is_image, loras_of, preview,
};
use crate::image_engine::{lora_file, not_image};

/// Which previews a request wants while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Previews {
    /// None (progress events only).
    #[default]
    None,
    /// This many, spread evenly over the steps (OpenAI's `partial_images`).
    Partial(u32),
    /// One after every step (the studio's live preview, the WebSocket stream).
    Every,
}

/// An image request as every front end reads it; `None` takes the model's default.
#[derive(Debug, Clone, Default)]
pub struct ImageRequest {
    pub prompt: String,
    pub negative_prompt: String,
    /// Images to make (each its own seed: `seed`, `seed + 1`, …).
    pub n: Option<u32>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub steps: Option<u32>,
    pub guidance_scale: Option<f32>,
    /// A scheduler name (`ddim`, `euler`, `euler_a`, `dpmpp_2m`, `lcm`).
    pub scheduler: Option<String>,
    /// 0 when unset, so the same request gives the same image.
    pub seed: Option<u64>,
    /// How much of the schedule an edit runs (0 < strength <= 1; default 0.75).
    pub strength: Option<f32>,
    /// The starting image of an edit, as PNG bytes.
    pub init_image: Option<Vec<u8>>,
    pub previews: Previews,
    /// The file each image is written as (PNG unless asked; previews are always PNG).
    pub output: aura_image::OutputFormat,
}

/// Parses an OpenAI `size` (`WIDTHxHEIGHT`, or `auto` for the model's default).
pub fn parse_size(size: &str) -> Result<Option<(u32, u32)>, ModelError> {
    if size == "auto" {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "size",
            format!("`{size}` is not WIDTHxHEIGHT (such as 512x512) or auto"),
        )
    };
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    let side = |s: &str| {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u32>().map_err(|_| bad())
    };
    Ok(Some((side(w)?, side(h)?)))
}

/// A request checked against its model: what runs.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub n: u32,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance_scale: f32,
    pub scheduler: SchedulerKind,
    pub seed: u64,
    pub strength: Option<f32>,
    prompt: String,
    negative_prompt: String,
    init: Option<(RgbImage, Hash)>,
    previews: Previews,
    output: aura_image::OutputFormat,
}

impl ImageRequest {
    /// Checks the request against `engine`, every refusal naming its field.
    pub fn check(&self, engine: &ImageEngine) -> Result<ImagePlan, ModelError> {
        if self.prompt.trim().is_empty() {
            return Err(invalid("prompt", "must not be empty"));
        }
        for (field, text) in [
            ("prompt", &self.prompt),
            ("negative_prompt", &self.negative_prompt),
        ] {
            let chars = text.chars().count();
            if chars > MAX_PROMPT_CHARS {
                return Err(invalid(
                    field,
                    format!("is {chars} characters; the most is {MAX_PROMPT_CHARS}"),
                ));
            }
        }
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_IMAGES).contains(&n) {
            return Err(invalid("n", format!("must be between 1 and {MAX_IMAGES}")));
        }
        let side = engine.default_size();
        let (width, height) = (self.width.unwrap_or(side), self.height.unwrap_or(side));
        if let Some(only) = engine.only_size()
            && (width, height) != (only, only)
        {
            return Err(invalid(
                "size",
                format!(
                    "{width}x{height} is not supported; this model makes {only}x{only} images only"
                ),
            ));
        }
        for v in [width, height] {
            if !(64..=MAX_SIDE).contains(&v) || v % 8 != 0 {
                return Err(invalid(
                    "size",
                    format!(
                        "{width}x{height} is not supported; each side must be a multiple of 8 from 64 to {MAX_SIDE} (this model's default is {side}x{side})"
                    ),
                ));
            }
        }
        let steps = self.steps.unwrap_or_else(|| engine.default_steps());
        if !(1..=MAX_STEPS).contains(&steps) {
            return Err(invalid(
                "steps",
                format!("must be between 1 and {MAX_STEPS}"),
            ));
        }
        let guidance_scale = self
            .guidance_scale
            .unwrap_or_else(|| engine.default_guidance());
        if !(guidance_scale.is_finite() && (0.0..=30.0).contains(&guidance_scale)) {
            return Err(invalid("guidance_scale", "must be between 0 and 30"));
        }
        let scheduler = match &self.scheduler {
            None => engine.default_scheduler(),
            Some(s) => SchedulerKind::from_name(s).ok_or_else(|| {
                invalid(
                    "scheduler",
                    format!("`{s}` is not one of ddim, euler, euler_a, dpmpp_2m, lcm"),
                )
            })?,
        };
        if !engine.runs_scheduler(scheduler) {
            return Err(invalid(
                "scheduler",
                format!(
                    "`{}` is not one this model runs; it samples with {} only",
                    scheduler.name(),
                    engine.default_scheduler().name()
                ),
            ));
        }
        if let Previews::Partial(k) = self.previews
            && k > MAX_PARTIAL_IMAGES
        {
            return Err(invalid(
                "partial_images",
                format!("must be between 0 and {MAX_PARTIAL_IMAGES}"),
            ));
        }
        let strength = match (&self.init_image, self.strength) {
            (None, Some(_)) => {
                return Err(invalid(
                    "strength",
                    "applies only to an edit (an image to start from)",
                ));
            }
            (None, None) => None,
            (Some(_), s) => {
                let s = s.unwrap_or(0.75);
                if !(s > 0.0 && s <= 1.0) {
                    return Err(invalid("strength", "must be more than 0 and at most 1"));
                }
                Some(s)
            }
        };
        let init = match &self.init_image {
            None => None,
            Some(_) if !engine.can_edit() => {
                return Err(invalid("image", "this model cannot start from an image"));
            }
            Some(bytes) => {
                let img = decode_png(bytes)?;
                if (img.width, img.height) != (width, height) {
                    return Err(invalid(
                        "image",
                        format!(
                            "is {}x{}, but the request's size is {width}x{height}; send an image of the size asked for",
                            img.width, img.height
                        ),
                    ));
                }
                Some((img, Hash::sha256(bytes)))
            }
        };
        Ok(ImagePlan {
            n,
            width,
            height,
            steps,
            guidance_scale,
            scheduler,
            seed: self.seed.unwrap_or(0),
            strength,
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            init,
            previews: self.previews,
            output: self.output,
        })
    }
}

/// Decodes a PNG into 8-bit RGB (aura-image's decoder: grey, palette and alpha images
/// converted, alpha dropped), refusing anything else with a reason.
pub fn decode_png(bytes: &[u8]) -> Result<RgbImage, ModelError> {
    if bytes.len() > MAX_INIT_IMAGE_BYTES {
        return Err(invalid(
            "image",
            format!("is more than {} MiB", MAX_INIT_IMAGE_BYTES >> 20),
        ));
    }
    aura_image::png::decode_png(bytes, u64::from(MAX_SIDE) * u64::from(MAX_SIDE))
        .map_err(|e| invalid("image", format!("is not a PNG this node reads: {e}")))
}

/// What happens while a request runs, for a front end to pass on.
#[derive(Debug, Clone)]
pub enum ImageEvent {
    /// `step` of `steps` done on image `image` (0-based).
    Progress { image: u32, step: u32, steps: u32 },
    /// A preview of image `image` after `step`, as PNG: for latent diffusion a cheap
    /// projection of the latent (an eighth of the image's size), never the VAE; for the
    /// tiny model the clean latent it predicts at that step through its own 64x64 decoder.
    /// `index` counts the request's previews from 0.
    Preview {
        image: u32,
        step: u32,
        index: u32,
        png: Vec<u8>,
    },
    /// Image `image` is done: its file, as [`MadeImage::png`].
    Image { image: u32, png: Vec<u8> },
}

/// One image made.
#[derive(Debug, Clone)]
pub struct MadeImage {
    /// The image file with its `aura` record: a PNG (its `iTXt` chunk) unless the request's
    /// [`ImageRequest::output`] asked for JPEG (a comment segment) or WebP (its XMP chunk);
    /// see [`aura_image::encode`].
    pub png: Vec<u8>,
    pub seed: u64,
    pub receipt: ReceiptId,
    /// The parameters record its receipt hashes.
    pub parameters: Value,
}

/// A request's images and what it counted.
#[derive(Debug, Clone)]
pub struct ImagesOutcome {
    pub images: Vec<MadeImage>,
    pub width: u32,
    pub height: u32,
    /// Bytes of the prompts, per image, summed.
    pub input_tokens: u64,
    /// UNet steps run, summed.
    pub output_tokens: u64,
}

/// A float as the shortest decimal that reads back as the same `f32` (so 7.5 and 0.75
/// stay as written in the canonical JSON that is hashed).
fn decimal(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

impl ImagePlan {
    /// Steps after which image `image`'s previews are taken.
    fn preview_steps(&self) -> BTreeSet<u32> {
        let run = self.steps_run();
        match self.previews {
            Previews::None => BTreeSet::new(),
            Previews::Every => (1..=run).collect(),
            Previews::Partial(k) => (1..=k)
                .map(|j| ((u64::from(run) * u64::from(j)) / u64::from(k + 1)).max(1) as u32)
                .filter(|s| *s < run)
                .collect(),
        }
    }

    /// The UNet steps each image runs.
    fn steps_run(&self) -> u32 {
        match self.strength {
            // As the pipeline does: `strength` of the schedule, at least one step.
            Some(s) => ((self.steps as f32 * s) as u32).clamp(1, self.steps),
            None => self.steps,
        }
    }

    /// The parameters record of image `index` (see the module documentation).
    fn record(&self, served: &Served, index: u32) -> Value {
        let mut r = json!({
            "format": PARAMS_FORMAT,
            "model": served.name(),
            "package": served.digest().to_hex(),
            "prompt_sha256": Hash::sha256(self.prompt.as_bytes()).to_hex(),
            "negative_prompt_sha256": Hash::sha256(self.negative_prompt.as_bytes()).to_hex(),
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance_scale": decimal(self.guidance_scale),
            "scheduler": self.scheduler.name(),
            "seed": self.seed.wrapping_add(u64::from(index)),
        });
        if let Some(l) = &served.lora
            && let Ok((_, digest)) = lora_file(&served.verified, served.name(), l)
        {
            r["lora"] = json!({"name": l, "sha256": digest.to_hex()});
        }
        if let (Some(s), Some((_, digest))) = (self.strength, &self.init) {
            r["strength"] = decimal(s);
            r["init_image_sha256"] = json!(digest.to_hex());
        }
        // Named only when not PNG, so a PNG's record is what it always was.
        match self.output {
            aura_image::OutputFormat::Png => {}
            aura_image::OutputFormat::Jpeg { quality } => {
                r["output_format"] = json!("jpeg");
                r["output_compression"] = json!(quality);
            }
            aura_image::OutputFormat::Webp => r["output_format"] = json!("webp"),
        }
        r
    }
}

fn engine_error(e: aura_image::Error) -> ModelError {
    match e {
        aura_image::Error::InvalidRequest(m) => ModelError::invalid(m),
        aura_image::Error::Cancelled => ModelError::new(499, "cancelled", "the caller went away"),
        other => ModelError::new(500, "model_error", other.to_string()),
    }
}

impl ModelHost {
    /// The image model `name` (the default image model when None) with its package's
    /// LoRA `lora` merged in, verified, licensed and loaded on first use: a model that is
    /// not an image model is refused.
    pub async fn open_image(
        self: &Arc<Self>,
        name: Option<&str>,
        lora: Option<&str>,
    ) -> Result<Arc<Served>, ModelError> {
        let host = self.clone();
        let name = name.unwrap_or(DEFAULT_IMAGE_MODEL).to_owned();
        let lora = lora.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            // The package first, plain: a text model is refused as such, not as a
            // model without LoRA.
            if let Some(l) = &lora {
                let plain = host.open_variant(&name, None, host.threads)?;
                if !matches!(plain.engine(), Engine::Image(_)) {
                    return Err(not_image(&name));
                }
                lora_file(&plain.verified, &name, l)?;
            }
            let served = host.open_variant(&name, lora.as_deref(), host.threads)?;
            match served.engine() {
                Engine::Image(_) => Ok(served),
                _ => Err(not_image(&name)),
            }
        })
        .await
        .map_err(|e| ModelError::internal(format!("the loading thread failed: {e}")))?
    }

    /// Makes the images of `request` on `served`, metered: the request is checked and
    /// authorised against the package's license (for every image) before anything runs;
    /// each image then leaves one signed receipt. `events` gets progress, previews and
    /// each image as it is done; a closed `events` (the caller went away), a dropped
    /// future or a stopping host stops the work at its next step, and nothing further is
    /// recorded.
    pub async fn generate_images(
        &self,
        served: &Arc<Served>,
        request: &ImageRequest,
        events: Option<tokio::sync::mpsc::UnboundedSender<ImageEvent>>,
    ) -> Result<ImagesOutcome, ModelError> {
        let Engine::Image(engine) = served.engine() else {
            return Err(not_image(served.name()));
        };
        let plan = request.check(engine)?;
        let (cancel, _cancel_on_drop) = self.request_cancel()?;
        let prompt_bytes = (plan.prompt.len() + plan.negative_prompt.len()) as u64;
        let per_image = prompt_bytes.saturating_add(u64::from(plan.steps));
        // Every image's allowance is reserved before the first runs, so a request the
        // license cannot cover makes nothing.
        let mut admitted = Vec::with_capacity(plan.n as usize);
        for _ in 0..plan.n {
            admitted.push(self.admit(served, per_image)?);
        }
        let mut images = Vec::with_capacity(plan.n as usize);
        let mut output_tokens = 0u64;
        let preview_steps = plan.preview_steps();
        let mut preview_index = 0u32;
        for (index, admitted) in (0u32..).zip(admitted) {
            let seed = plan.seed.wrapping_add(u64::from(index));
            let req = aura_image::GenerateRequest {
                prompt: plan.prompt.clone(),
                negative_prompt: plan.negative_prompt.clone(),
                width: plan.width,
                height: plan.height,
                steps: plan.steps,
                guidance_scale: plan.guidance_scale,
                scheduler: plan.scheduler,
                seed,
                init_image: plan.init.as_ref().map(|(img, _)| img.clone()),
                strength: plan.strength.unwrap_or(0.75),
                vae_tiling: None,
            };
            let engine = engine.clone();
            let stop = cancel.clone();
            let tx = events.clone();
            let steps_at = preview_steps.clone();
            let first_preview = preview_index;
            let generation = tokio::task::spawn_blocking(move || {
                let mut next_preview = first_preview;
                let result = engine.generate(&req, &mut |p| {
                    if stop.is_cancelled() {
                        return ControlFlow::Break(());
                    }
                    let Some(tx) = &tx else {
                        return ControlFlow::Continue(());
                    };
                    let (step, steps) = (p.step, p.steps);
                    let mut sent = tx.send(ImageEvent::Progress {
                        image: index,
                        step,
                        steps,
                    });
                    if sent.is_ok() && steps_at.contains(&step) {
                        let png = aura_image::encode_png(&p.preview());
                        sent = tx.send(ImageEvent::Preview {
                            image: index,
                            step,
                            index: next_preview,
                            png,
                        });
                        next_preview += 1;
                    }
                    if sent.is_err() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
                (result, next_preview)
            })
            .await
            .map_err(|e| ModelError::internal(format!("the image thread failed: {e}")))?;
            let (generation, next_preview) = generation;
            preview_index = next_preview;
            if cancel.is_cancelled() && self.stopping.is_cancelled() {
                return Err(ModelError::stopping());
            }
            let generation = generation.map_err(engine_error)?;
            let receipt = ModelHost::new_receipt_id();
            let record = plan.record(served, index);
            let input = aura_core::jcs::to_vec(&record)
                .map_err(|e| ModelError::internal(format!("cannot encode the parameters: {e}")))?;
            // As read back from its canonical form (5.0 is written 5), so that the record
            // handed out is the one the PNG carries.
            let record: Value = serde_json::from_slice(&input)
                .map_err(|e| ModelError::internal(format!("cannot read the parameters: {e}")))?;
            let chunk = aura_core::jcs::to_vec(&json!({
                "receipt": receipt.to_string(),
                "parameters": record,
            }))
            .map_err(|e| ModelError::internal(format!("cannot encode the parameters: {e}")))?;
            let chunk = String::from_utf8(chunk)
                .map_err(|e| ModelError::internal(format!("cannot encode the parameters: {e}")))?;
            let png = match plan.output {
                aura_image::OutputFormat::Png => {
                    aura_image::png::with_text(&generation.png, PNG_KEYWORD, &chunk)
                        .ok_or_else(|| ModelError::internal("the engine's PNG has no header"))?
                }
                other => aura_image::encode::encode(&generation.image, other, PNG_KEYWORD, &chunk)
                    .map_err(|e| ModelError::internal(format!("cannot write the image: {e}")))?,
            };
            let id = self
                .record(
                    admitted,
                    Measured {
                        input,
                        output: png.clone(),
                        prompt_tokens: prompt_bytes,
                        completion_tokens: u64::from(generation.steps_run),
                        expert_tokens: Vec::new(),
                    },
                    Some(receipt),
                )
                .await?;
            output_tokens += u64::from(generation.steps_run);
            if let Some(tx) = &events {
                // A caller gone now still gets its receipt recorded: the image was made.
                let _ = tx.send(ImageEvent::Image {
                    image: index,
                    png: png.clone(),
                });
            }
            images.push(MadeImage {
                png,
                seed,
                receipt: id,
                parameters: record,
            });
        }
        Ok(ImagesOutcome {
            images,
            width: plan.width,
            height: plan.height,
            input_tokens: prompt_bytes * u64::from(plan.n),
            output_tokens,
        })
    }
}
