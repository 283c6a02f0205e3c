//! The `image.generate` tool's image maker: the node's model host, so a mission's image is
//! verified, licensed, metered and receipted exactly as one made over the Images API.

use std::sync::Arc;

use async_trait::async_trait;
use aura_host::{DEFAULT_IMAGE_MODEL, ImageRequest, ModelError, ModelHost};
use aura_tools::{ErrorKind, ImageGenerator, ImageJob, MadeImage, ToolError};

/// The `image.generate` tool making its images on `host`.
pub fn tool(host: Arc<ModelHost>) -> Arc<dyn aura_tools::Tool> {
    Arc::new(aura_tools::ImageGenerate::new(Arc::new(HostImages::new(
        host,
    ))))
}

/// [`ImageGenerator`] over a [`ModelHost`].
#[derive(Debug, Clone)]
pub struct HostImages {
    host: Arc<ModelHost>,
}

impl HostImages {
    pub fn new(host: Arc<ModelHost>) -> Self {
        HostImages { host }
    }
}

/// A host's refusal as the tool's error: the request's faults are not retried, a node
/// that is stopping or failing inside is.
fn tool_error(e: &ModelError) -> ToolError {
    let kind = match e.status {
        400 | 422 => ErrorKind::InvalidArguments,
        402 | 403 => ErrorKind::Unauthorized,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Unavailable,
        413 => ErrorKind::TooLarge,
        _ => ErrorKind::Internal,
    };
    ToolError::new(kind, format!("image.generate: {}", e.message))
}

#[async_trait]
impl ImageGenerator for HostImages {
    fn default_model(&self) -> String {
        DEFAULT_IMAGE_MODEL.to_owned()
    }

    async fn generate(&self, job: ImageJob) -> Result<MadeImage, ToolError> {
        let served = self
            .host
            .open_image(Some(job.model.as_str()), None)
            .await
            .map_err(|e| tool_error(&e))?;
        let request = ImageRequest {
            prompt: job.prompt,
            negative_prompt: job.negative_prompt,
            n: Some(1),
            width: Some(job.width),
            height: Some(job.height),
            steps: job.steps,
            guidance_scale: job.guidance_scale,
            seed: Some(job.seed),
            ..ImageRequest::default()
        };
        let made = self
            .host
            .generate_images(&served, &request, None)
            .await
            .map_err(|e| tool_error(&e))?;
        let image = made.images.into_iter().next().ok_or_else(|| {
            ToolError::new(
                ErrorKind::Internal,
                "image.generate: the model host made no image",
            )
        })?;
        Ok(MadeImage {
            png: image.png,
            receipt: image.receipt.to_string(),
            parameters: image.parameters,
        })
    }
}
