//! `image.generate`: an image made by one of the node's installed image models and written
//! into the mission's workspace as a PNG.
//!
//! The tool itself runs no model: the node hands it an [`ImageGenerator`] (its model host,
//! which verifies, licenses and meters the package and records a signed receipt per image,
//! as for every other front end). What policy judges is an [`Target::Image`]: the model's
//! package name, the size in pixels and the workspace path, so a policy decides which
//! models and sizes an agent may use (docs/policy.md). The PNG is written exactly as
//! `fs.write` writes a file (confined beneath the workspace, the previous content kept), so
//! compensation restores what was there; the effect names the image's receipt.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::args::{parse, schema_for};
use crate::call::{Call, Capability, Prepared, Target, ToolDescriptor};
use crate::context::ToolContext;
use crate::effect::{Compensation, Effect, ErrorKind, Outcome, ToolError};
use crate::fs::FsWrite;
use crate::tool::Tool;

/// The largest side a call may ask for (the model host refuses what its model cannot make).
const MAX_SIDE: u32 = 8192;

/// Arguments of `image.generate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageArgs {
    /// What the image shows.
    pub prompt: String,
    /// WIDTHxHEIGHT in pixels, such as 64x64 (Aura's own model makes 64x64 only).
    pub size: String,
    /// The image model's package name (default: the node's default image model,
    /// aura-tiny-emoji).
    #[serde(default)]
    pub model: Option<String>,
    /// The seed (default 0): the same request and seed give the same image.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Sampling steps (default: the model's).
    #[serde(default)]
    pub steps: Option<u32>,
    /// Classifier-free guidance scale (default: the model's).
    #[serde(default)]
    pub guidance_scale: Option<f32>,
    /// What the image should not show.
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// Where the PNG goes, relative to the workspace (default `image-<seed>.png`). An
    /// existing file is replaced, its previous content kept for compensation.
    #[serde(default)]
    pub path: Option<String>,
}

/// One image to make, as the tool asks its [`ImageGenerator`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageJob {
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub steps: Option<u32>,
    pub guidance_scale: Option<f32>,
}

/// An image made, with what its signed receipt says.
#[derive(Debug, Clone)]
pub struct MadeImage {
    /// The PNG (carrying its receipt id and parameters in a text chunk).
    pub png: Vec<u8>,
    /// The id of the image's receipt in the node's ledger.
    pub receipt: String,
    /// The parameters record the receipt hashes.
    pub parameters: serde_json::Value,
}

/// Makes images for the tool: the node's model host. Its errors use the tool's kinds
/// (`InvalidArguments` for a request the model refuses, `NotFound` for a model that is not
/// installed, `Unauthorized` for one without a license, `Unavailable` otherwise).
#[async_trait]
pub trait ImageGenerator: Send + Sync + fmt::Debug {
    /// The model a call that names none uses (no IO: policy judges it before anything runs).
    fn default_model(&self) -> String;

    /// Makes one image, metered, with its receipt recorded.
    async fn generate(&self, job: ImageJob) -> Result<MadeImage, ToolError>;
}

/// `image.generate`.
#[derive(Debug)]
pub struct ImageGenerate {
    descriptor: ToolDescriptor,
    generator: Arc<dyn ImageGenerator>,
    write: FsWrite,
}

impl ImageGenerate {
    pub const NAME: &'static str = "image.generate";

    pub fn new(generator: Arc<dyn ImageGenerator>) -> Self {
        ImageGenerate {
            descriptor: ToolDescriptor {
                name: Self::NAME.to_owned(),
                description: "Make an image with an installed image model and write it into the mission's workspace as a PNG. Undone by restoring what was at the path.".to_owned(),
                parameters: schema_for::<ImageArgs>(),
                destructive: false,
                compensable: true,
                needs: Capability::Workspace,
            },
            generator,
            write: FsWrite::new(),
        }
    }

    /// The call's job and the `fs.write` call that stores its PNG (content added later).
    fn plan(&self, call: &Call) -> Result<(ImageJob, Call), ToolError> {
        let args: ImageArgs = parse(Self::NAME, &call.arguments)?;
        let (width, height) = parse_size(&args.size)?;
        let seed = args.seed.unwrap_or(0);
        let job = ImageJob {
            model: args
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| self.generator.default_model()),
            prompt: args.prompt,
            negative_prompt: args.negative_prompt.unwrap_or_default(),
            width,
            height,
            seed,
            steps: args.steps,
            guidance_scale: args.guidance_scale,
        };
        let path = args.path.unwrap_or_else(|| format!("image-{seed}.png"));
        let write = Call {
            id: call.id.clone(),
            tool: FsWrite::NAME.to_owned(),
            arguments: json!({"path": path, "content": "", "encoding": "base64"}),
        };
        Ok((job, write))
    }
}

fn parse_size(size: &str) -> Result<(u32, u32), ToolError> {
    let bad = || {
        ToolError::new(
            ErrorKind::InvalidArguments,
            format!(
                "{}: size `{size}` is not WIDTHxHEIGHT in pixels, such as 64x64",
                ImageGenerate::NAME
            ),
        )
    };
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    let side = |s: &str| {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match s.parse::<u32>() {
            Ok(v) if (1..=MAX_SIDE).contains(&v) => Ok(v),
            _ => Err(bad()),
        }
    };
    Ok((side(w)?, side(h)?))
}

#[async_trait]
impl Tool for ImageGenerate {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let (job, write) = self.plan(call)?;
        // The path is checked and normalised as fs.write's is.
        let Target::Path { path } = self.write.prepare(&write)?.target else {
            return Err(ToolError::new(
                ErrorKind::Internal,
                format!("{}: fs.write judged something else than a path", Self::NAME),
            ));
        };
        Ok(Prepared {
            call: call.clone(),
            target: Target::Image {
                model: job.model,
                width: job.width,
                height: job.height,
                path,
            },
            destructive: false,
        })
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let id = &prepared.call.id;
        let (job, mut write) = match self.plan(&prepared.call) {
            Ok(planned) => planned,
            Err(e) => return Effect::failed(Self::NAME, id, e),
        };
        let (width, height, model, seed) = (job.width, job.height, job.model.clone(), job.seed);
        let made = match self.generator.generate(job).await {
            Ok(made) => made,
            Err(e) => return Effect::failed(Self::NAME, id, e),
        };
        write.arguments["content"] = json!(STANDARD.encode(&made.png));
        let written = match self.write.prepare(&write) {
            Ok(p) => self.write.execute(ctx, &p).await,
            Err(e) => Effect::failed(FsWrite::NAME, id, e),
        };
        let value = match written.outcome {
            Outcome::Ok { value } => value,
            Outcome::Failed { kind, message } => {
                // The image was made (and its receipt recorded) but could not be stored.
                return Effect::failed(
                    Self::NAME,
                    id,
                    ToolError::new(
                        kind,
                        format!(
                            "{}: the image (receipt {}) was made but not stored: {message}",
                            Self::NAME,
                            made.receipt
                        ),
                    ),
                );
            }
        };
        Effect {
            tool: Self::NAME.to_owned(),
            outcome: Outcome::Ok {
                value: json!({
                    "path": value.get("path").cloned().unwrap_or_default(),
                    "bytes": made.png.len(),
                    "model": model,
                    "width": width,
                    "height": height,
                    "seed": seed,
                    "receipt": made.receipt,
                    "parameters": made.parameters,
                }),
            },
            ..written
        }
    }

    async fn compensate(
        &self,
        ctx: &ToolContext,
        compensation: &Compensation,
    ) -> Result<(), ToolError> {
        self.write.compensate(ctx, compensation).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64x64").unwrap(), (64, 64));
        assert_eq!(parse_size("512x768").unwrap(), (512, 768));
        for bad in [
            "", "64", "64x", "x64", "0x64", "64x-1", "64X64", "99999x64", " 64x64",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
