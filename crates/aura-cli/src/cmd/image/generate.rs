//! `aura image generate`: makes images with an installed image model in this process,
//! opened the way the node opens it (verified against its signed manifest, licensed for
//! this node), a progress bar per image on a terminal, and one signed usage receipt per
//! image in the ledger (so the node must not be running on the same data directory).
//! Each PNG carries its receipt id and parameters (docs/images.md).

use std::path::PathBuf;
use std::sync::Arc;

use aura_host::images::parse_size;
use aura_host::{ImageEvent, ImageRequest, Metering, ModelHost, OutputFormat, Previews};
use aura_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to draw
    prompt: String,
    /// The installed image model (see `aura model list`) [default: aura-tiny-emoji]
    #[arg(long)]
    model: Option<String>,
    /// One of the model package's own LoRAs to merge in
    #[arg(long)]
    lora: Option<String>,
    /// What to steer away from
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// WIDTHxHEIGHT, or auto for the model's own size
    #[arg(long, default_value = "auto")]
    size: String,
    /// Images to make (seeds seed, seed+1, …)
    #[arg(short, long, default_value_t = 1)]
    n: u32,
    /// Sampling steps [default: the model's]
    #[arg(long)]
    steps: Option<u32>,
    /// Classifier-free guidance scale
    #[arg(long)]
    guidance_scale: Option<f32>,
    /// ddim, euler, euler_a, dpmpp_2m or lcm
    #[arg(long)]
    scheduler: Option<String>,
    /// The seed (the same seed and parameters give the same image)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start from this PNG (image-to-image)
    #[arg(long, value_name = "PNG")]
    image: Option<PathBuf>,
    /// How much of the schedule image-to-image runs (0 < strength <= 1)
    #[arg(long)]
    strength: Option<f32>,
    /// Where to write the images: a directory (image-<seed>.png, .jpg or .webp in it) [default: .]
    #[arg(short, long, default_value = ".")]
    out: PathBuf,
    /// The file format: png, jpeg or webp (lossless); each carries its receipt id and parameters
    #[arg(long, default_value = "png")]
    format: String,
    /// JPEG quality, 1-100 (only with --format jpeg) [default: 100]
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    quality: Option<u8>,
    /// Threads for the model's work (images do not depend on it) [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Serialize)]
struct Made {
    path: String,
    seed: u64,
    receipt: String,
    width: u32,
    height: u32,
    parameters: serde_json::Value,
}

pub(crate) async fn run(home: &Home, out: &Output, args: Args) -> anyhow::Result<()> {
    home.require_init()?;
    let (width, height) = match parse_size(&args.size)
        .map_err(|e| hinted(e.message, "use WIDTHxHEIGHT such as 512x512, or auto"))?
    {
        Some((w, h)) => (Some(w), Some(h)),
        None => (None, None),
    };
    let init_image = match &args.image {
        None => None,
        Some(p) => Some(std::fs::read(p).map_err(|e| {
            hinted(
                format!("cannot read {}: {e}", p.display()),
                "give the path of a PNG file",
            )
        })?),
    };
    // Checked before anything opens, so a bad format costs nothing.
    let output = OutputFormat::parse(&args.format, args.quality).map_err(|(field, why)| {
        let flag = if field == "output_format" {
            "--format"
        } else {
            "--quality"
        };
        hinted(
            format!("{flag}: {why}"),
            "--format png, jpeg or webp; --quality 1-100 with jpeg only",
        )
    })?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let (store, signer) = home.open_store_and_signer()?;
    let store: Arc<dyn Store> = Arc::new(store);
    let metering = Metering::open(store, signer)
        .await
        .map_err(anyhow::Error::msg)?;
    let host = Arc::new(ModelHost::new(home.dir(), metering, args.threads));
    let served = host
        .open_image(args.model.as_deref(), args.lora.as_deref())
        .await
        .map_err(|e| {
            let hint = match e.status {
                404 if args.model.is_none() => {
                    "install the default image model (`aura image train`, or `aura model import` of a diffusers folder), or name one with --model"
                }
                404 => "see `aura model list`, or import a diffusers folder with `aura model import`",
                403 => "see `aura license list`: this node needs a license for the model",
                409 => "see `aura model verify`",
                _ => "see docs/images.md",
            };
            hinted(e.message, hint)
        })?;
    let request = ImageRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        n: Some(args.n),
        width,
        height,
        steps: args.steps,
        guidance_scale: args.guidance_scale,
        scheduler: args.scheduler.clone(),
        seed: Some(args.seed),
        strength: args.strength,
        init_image,
        previews: Previews::None,
        output,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let show = !out.is_json() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = tokio::spawn(async move {
        let mut bar: Option<(u32, ProgressBar)> = None;
        while let Some(event) = rx.recv().await {
            if let ImageEvent::Progress { image, step, steps } = event {
                if !show {
                    continue;
                }
                if bar.as_ref().is_none_or(|(i, _)| *i != image) {
                    if let Some((_, b)) = bar.take() {
                        b.finish();
                    }
                    let b = ProgressBar::new(u64::from(steps));
                    b.set_style(
                        ProgressStyle::with_template(
                            "image {msg} [{bar:40}] step {pos}/{len} ({eta} left)",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_message((image + 1).to_string());
                    bar = Some((image, b));
                }
                if let Some((_, b)) = &bar {
                    b.set_position(u64::from(step));
                }
            }
        }
        if let Some((_, b)) = bar {
            b.finish();
        }
    });
    let outcome = host
        .generate_images(&served, &request, Some(tx))
        .await
        .map_err(|e| {
            hinted(
                e.message,
                "see docs/images.md for the fields and their ranges",
            )
        })?;
    let _ = progress.await;
    let mut made = Vec::new();
    for image in &outcome.images {
        let extension = match output {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg { .. } => "jpg",
            OutputFormat::Webp => "webp",
        };
        let path = args.out.join(format!("image-{}.{extension}", image.seed));
        std::fs::write(&path, &image.png)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        made.push(Made {
            path: path.display().to_string(),
            seed: image.seed,
            receipt: image.receipt.to_string(),
            width: outcome.width,
            height: outcome.height,
            parameters: image.parameters.clone(),
        });
    }
    out.print(&made, || {
        made.iter()
            .map(|m| {
                format!(
                    "{} ({}x{}, seed {}, receipt {})\n",
                    m.path, m.width, m.height, m.seed, m.receipt
                )
            })
            .collect()
    })
}
