//! `aura-bench image-tiny`: Aura's default image model (`aura-tiny-emoji`) end to end, prompt
//! to PNG, as the node runs it (the shipped weights, the MiniLM text encoder, the default
//! 20 steps with guidance and a negative prompt, the PNG encoder), against the goal
//! of one 64×64 image in under a second on two cores; and the cost of determinism: 4
//! requests at once against one alone, each of the 4 giving the lone request's PNG bytes.
//!
//! There is no peer: no other engine runs this model. The figures are Aura against the goal
//! and against itself (1 thread vs all, 1 request vs 4).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aura_image::tiny::package::Pipeline;
use aura_image::tiny::{MiniLm, SampleOptions, TinyModel};

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The model's weights [default: the shipped crates/aura-image/models/aura-tiny-emoji.safetensors]
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Model cache holding MiniLM (scripts/fetch-models.sh) [default: $AURA_MODEL_CACHE or ~/.cache/aura/models]
    #[arg(long)]
    models: Option<PathBuf>,
    /// Timed images per configuration (after one untimed)
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Requests run at once in the determinism-cost figure
    #[arg(long, default_value_t = 4)]
    concurrent: usize,
}

const PROMPT: &str = "red apple";
const NEGATIVE: &str = "green apple";

fn opts(seed: u64) -> SampleOptions {
    SampleOptions {
        seed,
        ..SampleOptions::default()
    }
}

/// One image, prompt to PNG bytes, as the node's tiny engine makes it.
fn one(p: &Pipeline, seed: u64) -> anyhow::Result<Vec<u8>> {
    let image = p.generate(PROMPT, NEGATIVE, &opts(seed), &mut |_| {
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(image.to_png())
}

fn pipeline(weights: &[u8], minilm: &std::path::Path, threads: usize) -> anyhow::Result<Pipeline> {
    let model = TinyModel::from_bytes(weights)?;
    let encoder = MiniLm::load(minilm).with_context(|| {
        format!(
            "MiniLM in {}: run scripts/fetch-models.sh",
            minilm.display()
        )
    })?;
    Ok(Pipeline::from_parts(model, encoder)?.with_threads(threads)?)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let weights_path = args.weights.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../aura-image/models/aura-tiny-emoji.safetensors")
    });
    let weights = std::fs::read(&weights_path)
        .with_context(|| format!("reading {}", weights_path.display()))?;
    let cache = args.models.clone().unwrap_or_else(|| {
        std::env::var_os("AURA_MODEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/aura/models")
            })
    });
    let minilm = cache.join("minilm");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let defaults = SampleOptions::default();
    println!(
        "aura-tiny-emoji, 64x64, prompt {PROMPT:?}, negative {NEGATIVE:?}, {} steps, guidance {}, {} timed images per row, {cores} cores\n",
        defaults.steps, defaults.guidance, args.rounds
    );

    // Prompt to PNG, alone, on 1 thread and on all cores, alternated image by image.
    let configs = if cores > 1 { vec![1, cores] } else { vec![1] };
    let pipes: Vec<Pipeline> = configs
        .iter()
        .map(|&t| pipeline(&weights, &minilm, t))
        .collect::<anyhow::Result<_>>()?;
    let reference = one(&pipes[0], 7)?;
    for p in &pipes[1..] {
        if one(p, 7)? != reference {
            bail!("the PNG depends on the thread count");
        }
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); pipes.len()];
    for round in 0..args.rounds {
        for (i, p) in pipes.iter().enumerate() {
            let t0 = Instant::now();
            let png = one(p, 7)?;
            times[i].push(t0.elapsed());
            if png != reference {
                bail!("round {round}: a different PNG for the same request");
            }
        }
    }
    println!("| threads | p50 | p90 | max | goal (< 1 s on 2 cores) |");
    println!("|---:|---:|---:|---:|---|");
    for (t, mut v) in configs.iter().zip(times) {
        v.sort();
        let p50 = percentile(&v, 50.0);
        println!(
            "| {t} | {} | {} | {} | {} |",
            fmt_duration(p50),
            fmt_duration(percentile(&v, 90.0)),
            fmt_duration(*v.last().unwrap_or(&Duration::ZERO)),
            if p50 < Duration::from_secs(1) {
                "met"
            } else {
                "not met"
            }
        );
    }

    // The cost of determinism: n requests at once on one shared pipeline (as the node
    // shares its loaded model), each must give the lone request's bytes.
    let shared = &pipes[pipes.len() - 1];
    let n = args.concurrent.max(1);
    let mut lone = Vec::new();
    let mut together = Vec::new();
    for _ in 0..args.rounds.div_ceil(4).max(2) {
        let t0 = Instant::now();
        let png = one(shared, 7)?;
        lone.push(t0.elapsed());
        if png != reference {
            bail!("a lone request gave a different PNG");
        }
        let t0 = Instant::now();
        let outs: Vec<anyhow::Result<Vec<u8>>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..n).map(|_| s.spawn(|| one(shared, 7))).collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a request panicked")))
                })
                .collect()
        });
        together.push(t0.elapsed());
        for o in outs {
            if o? != reference {
                bail!("a concurrent request gave a different PNG from the lone one");
            }
        }
    }
    lone.sort();
    together.sort();
    let (one_s, all_s) = (
        percentile(&lone, 50.0).as_secs_f64(),
        percentile(&together, 50.0).as_secs_f64(),
    );
    println!(
        "\nCost of determinism ({} threads): one request {} alone; {n} at once {} in all (p50 of {} rounds): {:.2} images/s against {:.2} alone ({:.2}x), every one the lone request's PNG",
        configs[configs.len() - 1],
        fmt_duration(percentile(&lone, 50.0)),
        fmt_duration(percentile(&together, 50.0)),
        lone.len(),
        n as f64 / all_s,
        1.0 / one_s,
        (n as f64 / all_s) / (1.0 / one_s),
    );
    Ok(())
}
