//! Trains Aura's default image model on the emoji dataset from the command line (until
//! `aura image train` wires the same library calls), then evaluates it and writes samples.
//!
//! ```text
//! scripts/fetch-models.sh && scripts/fetch-emoji.sh
//! cargo run --release -p aura-image --example train_emoji -- --out /tmp/aura-tiny --threads 2
//! cargo run --release -p aura-image --example train_emoji -- --eval-only crates/aura-image/models/aura-tiny-emoji.safetensors
//! ```
//!
//! Options: `--out DIR`, `--threads N`, `--seed N`, `--recipe FILE` (JSON, default: the
//! built-in emoji recipe), `--limit-steps N`, `--eval-only WEIGHTS`, `--guidance X`,
//! `--steps N` (sampling), `--no-eval`; for experiments `--subset N` (train on every k-th
//! emoji only), `--vae-from WEIGHTS` (keep that model's VAE) and `--validation` (evaluate on
//! other prompts than the test's, to tune without touching the test).
#![allow(clippy::print_stdout, reason = "a command-line tool")]

use std::path::PathBuf;
use std::time::Instant;

use aura_image::dataset::EmojiDataset;
use aura_image::tiny::{MiniLm, SampleOptions, TinyModel};
use aura_image::train::{self, Options, Recipe, TrainingSet, eval};

fn cpu_seconds() -> f64 {
    // utime and stime of this process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("/tmp/aura-tiny");
    let mut threads = 0usize;
    let mut seed = 0u64;
    let mut recipe = Recipe::emoji();
    let mut limit = None;
    let mut eval_only = None;
    let mut no_eval = false;
    let mut subset_of = None;
    let mut vae_from = None;
    let mut validation = false;
    let mut sample = SampleOptions::default();
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--out" => out = PathBuf::from(val()?),
            "--threads" => threads = val()?.parse()?,
            "--seed" => seed = val()?.parse()?,
            "--recipe" => recipe = serde_json::from_slice(&std::fs::read(val()?)?)?,
            "--limit-steps" => limit = Some(val()?.parse()?),
            "--subset" => subset_of = Some(val()?.parse::<usize>()?),
            "--vae-from" => vae_from = Some(PathBuf::from(val()?)),
            "--validation" => validation = true,
            "--eval-only" => eval_only = Some(PathBuf::from(val()?)),
            "--guidance" => sample.guidance = val()?.parse()?,
            "--steps" => sample.steps = val()?.parse()?,
            "--no-eval" => no_eval = true,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let cache = EmojiDataset::default_cache();
    let t0 = Instant::now();
    let dataset = EmojiDataset::open(&EmojiDataset::path_in(&cache))?;
    let encoder = MiniLm::load(&cache.join("minilm"))?;
    println!(
        "dataset {} samples, digest {}, read in {:.1}s; load {}",
        dataset.len(),
        dataset.digest,
        t0.elapsed().as_secs_f64(),
        load()
    );
    std::fs::create_dir_all(&out)?;
    let model = if let Some(path) = eval_only {
        TinyModel::from_bytes(&std::fs::read(path)?)?
    } else {
        let mut set = TrainingSet::emoji(&dataset);
        if let Some(n) = subset_of {
            // Experiments: every k-th sample only (the digest then no longer names it).
            let k = (set.samples.len() / n.max(1)).max(1);
            set.samples = set.samples.into_iter().step_by(k).collect();
            set.digest = format!("subset of {} every {k}", set.digest);
        }
        let reuse_vae = match &vae_from {
            Some(p) => Some(TinyModel::from_bytes(&std::fs::read(p)?)?),
            None => None,
        };
        let opts = Options {
            threads,
            checkpoint_dir: Some(out.join("checkpoints")),
            embedding_cache: Some(out.join("cache")),
            limit_steps: limit,
            reuse_vae,
        };
        let (start, cpu0) = (Instant::now(), cpu_seconds());
        let mut window = (0.0f64, 0usize);
        let mut last_stage = None;
        let mut report = |p: &train::Progress| {
            if last_stage != Some(p.stage) {
                window = (0.0, 0);
                last_stage = Some(p.stage);
            }
            window.0 += p.loss;
            window.1 += 1;
            if p.step.is_multiple_of(100) || p.step == p.steps {
                println!(
                    "{:?} {}/{} loss {:.5}  wall {:.0}s cpu {:.0}s load {}",
                    p.stage,
                    p.step,
                    p.steps,
                    window.0 / window.1 as f64,
                    start.elapsed().as_secs_f64(),
                    cpu_seconds() - cpu0,
                    load()
                );
                window = (0.0, 0);
            }
        };
        let outcome = train::train(&set, &encoder, &recipe, seed, &opts, &mut report)?;
        println!(
            "trained in {:.0}s wall, {:.0}s cpu, load {}",
            start.elapsed().as_secs_f64(),
            cpu_seconds() - cpu0,
            load()
        );
        std::fs::write(
            out.join("aura-tiny-emoji.safetensors"),
            outcome.model.to_bytes(),
        )?;
        std::fs::write(
            out.join("training-record.json"),
            serde_json::to_vec_pretty(&outcome.record)?,
        )?;
        println!("weights sha256 {}", outcome.record.weights_sha256);
        outcome.model
    };
    if no_eval {
        return Ok(());
    }
    let subset: Vec<usize> = (0..dataset.len()).step_by(19).collect();
    let rec = eval::reconstruction_hits(&model, &dataset, &subset);
    println!("vae reconstructions recognised: {rec}/{}", subset.len());
    let t = Instant::now();
    // The test's prompts, or (--validation) others: base emoji named neither there nor
    // with a skin tone, from the whole set or the experiment's subset.
    let prompts: Vec<String> = if validation {
        let k = subset_of.map_or(1, |n| (dataset.len() / n.max(1)).max(1));
        dataset
            .emoji
            .iter()
            .step_by(k)
            .map(|e| e.name.clone())
            .filter(|n| !n.contains(':') && !eval::PROMPTS.contains(&n.as_str()))
            .step_by(if subset_of.is_some() { 1 } else { 13 })
            .take(50)
            .collect()
    } else {
        eval::PROMPTS.iter().map(|p| (*p).to_owned()).collect()
    };
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (report, images) = eval::recognisability(&model, &encoder, &dataset, &prompts, &sample)?;
    println!(
        "recognisability: {}/{} top-{} (pixel L2: {}), {:.1}s",
        report.hits,
        report.total,
        eval::TOP,
        report.hits_pixel,
        t.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(out.join("samples"))?;
    for (r, img) in report.results.iter().zip(&images) {
        println!(
            "  {:>4} {:>4}  {:<30} {:?}",
            r.rank,
            r.rank_pixel,
            r.prompt,
            &r.nearest[..3]
        );
        std::fs::write(
            out.join("samples")
                .join(format!("{}.png", r.prompt.replace(' ', "-"))),
            img.to_png(),
        )?;
    }
    std::fs::write(
        out.join("recognisability.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(())
}
