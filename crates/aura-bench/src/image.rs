//! `aura-bench image`: the image engine beside stable-diffusion.cpp on the same
//! checkpoint, in the same run: seconds per UNet step (classifier-free guidance, so two
//! UNet passes) and per whole image (text encoding, the steps, VAE decoding, PNG), with
//! each engine's peak resident memory, at SD 1.5's shapes with random weights, in f16 and
//! f32; and the cost of determinism (4 concurrent requests against 1).
//!
//! No registry ships Stable Diffusion weights, so the benchmark writes its own SD 1.5
//! single-file checkpoint (the LDM names A1111 uses, every shape of the real model, random
//! weights scaled like an initialisation) once into `--dir`, as f16 and as f32; both
//! engines load the same file. Each measurement runs in a fresh process (Aura: this binary's
//! hidden `image-worker`; the peer: `peers/sd_cpp_peer.py` on stable-diffusion-cpp-python,
//! installed by `scripts/setup-bench-image.sh`) so peak memory is that engine's alone, and
//! the engines alternate (Aura, peer, Aura, peer...) so a change in the machine's load
//! falls on both.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use aura_image::{
    GenerateRequest, ImageModel, LoadOptions, ModelFiles, SchedulerKind, WeightDtype,
};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the random checkpoints are written (about 2 GB in f16 and 4 GB in f32) [default: ~/.cache/aura/bench-image]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Model cache holding CLIP's vocabulary (scripts/fetch-models.sh) [default: $AURA_MODEL_CACHE or ~/.cache/aura/models]
    #[arg(long)]
    models: Option<PathBuf>,
    /// Python with stable-diffusion-cpp-python [default: $AURA_BENCH_IMAGE_VENV/bin/python or ~/.cache/aura/bench-image-venv/bin/python]
    #[arg(long)]
    python: Option<PathBuf>,
    /// Image sides to measure (256 keeps a run short; 512 is SD 1.5's native size)
    #[arg(long, value_delimiter = ',', default_values_t = [256])]
    sizes: Vec<u32>,
    /// Weight types to measure
    #[arg(long, value_delimiter = ',', default_values_t = ["f16".to_owned(), "f32".to_owned()])]
    dtypes: Vec<String>,
    /// Sampling steps per image
    #[arg(long, default_value_t = 2)]
    steps: u32,
    /// Rounds (each engine once per round, alternating); the median is reported
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Threads for both engines [default: the machine's cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Concurrent requests in the determinism-cost figure (0 skips it)
    #[arg(long, default_value_t = 4)]
    concurrent: usize,
    /// Measure Aura only
    #[arg(long)]
    no_peer: bool,
}

/// What one engine measured in one process.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Figures {
    /// Seconds to load the checkpoint.
    load_s: f64,
    /// Seconds per sampling step (the median of the steps; each step is two UNet passes).
    step_s: f64,
    /// Seconds for the whole image, load excluded.
    image_s: f64,
    /// CPU seconds (all threads) per step, median: steadier than wall time on a busy
    /// machine, though an engine whose threads spin while they wait counts the spinning.
    #[serde(default)]
    step_cpu_s: f64,
    /// CPU seconds for the whole image.
    #[serde(default)]
    image_cpu_s: f64,
    /// Peak resident memory of the process, bytes (filled in by the parent).
    #[serde(default)]
    peak_rss: u64,
    /// SHA-256 of the PNG (Aura's must be the same in every round).
    #[serde(default)]
    png_sha256: String,
}

/// The hidden worker: one engine measurement in a process of its own.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    vocab: PathBuf,
    #[arg(long)]
    dtype: String,
    #[arg(long)]
    size: u32,
    #[arg(long)]
    steps: u32,
    #[arg(long)]
    threads: usize,
    /// Run this many requests at once after a lone one and report both wall times.
    #[arg(long, default_value_t = 0)]
    concurrent: usize,
}

fn request(size: u32, steps: u32, seed: u64) -> GenerateRequest {
    GenerateRequest {
        prompt: "a lighthouse on a cliff at dawn, oil painting".into(),
        negative_prompt: "blurry, low quality".into(),
        width: size,
        height: size,
        steps,
        guidance_scale: 7.5,
        scheduler: SchedulerKind::EulerAncestral,
        seed,
        ..GenerateRequest::default()
    }
}

pub(crate) fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    let dtype = match args.dtype.as_str() {
        "f16" => WeightDtype::F16,
        "f32" => WeightDtype::F32,
        other => bail!("unknown dtype {other}"),
    };
    let t0 = Instant::now();
    let model = ImageModel::load(
        &ModelFiles::SingleFile {
            checkpoint: args.checkpoint.clone(),
            vocab: args.vocab.clone(),
        },
        &LoadOptions {
            threads: Some(args.threads),
            dtype,
            vae_encoder: false,
            ..LoadOptions::default()
        },
    )?;
    let load_s = t0.elapsed().as_secs_f64();
    if args.concurrent > 0 {
        let t0 = Instant::now();
        let lone = model.generate(&request(args.size, args.steps, 1), &mut |_| {
            std::ops::ControlFlow::Continue(())
        })?;
        let one = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let outs: Vec<anyhow::Result<aura_image::Generation>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..args.concurrent)
                .map(|_| {
                    let model = &model;
                    s.spawn(move || {
                        Ok(
                            model.generate(&request(args.size, args.steps, 1), &mut |_| {
                                std::ops::ControlFlow::Continue(())
                            })?,
                        )
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a request panicked")))
                })
                .collect()
        });
        let all = t0.elapsed().as_secs_f64();
        let same = outs
            .iter()
            .all(|o| o.as_ref().is_ok_and(|g| g.png == lone.png));
        println!(
            "{}",
            serde_json::json!({"one_s": one, "all_s": all, "same": same})
        );
        return Ok(());
    }
    let mut marks = Vec::new();
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let g = model.generate(&request(args.size, args.steps, 1), &mut |_| {
        marks.push((Instant::now(), cpu_seconds()));
        std::ops::ControlFlow::Continue(())
    })?;
    let (image_s, image_cpu_s) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    // A step's time is from the previous step's end (the first: from the start, which
    // also holds the text encoding, so it is left out when there are more).
    let mut all = vec![(t0, c0)];
    all.extend(marks);
    let per: Vec<(f64, f64)> = all
        .windows(2)
        .map(|w| ((w[1].0 - w[0].0).as_secs_f64(), w[1].1 - w[0].1))
        .collect();
    let per = if per.len() > 1 { &per[1..] } else { &per[..] };
    let figures = Figures {
        load_s,
        step_s: median(per.iter().map(|p| p.0).collect()),
        image_s,
        step_cpu_s: median(per.iter().map(|p| p.1).collect()),
        image_cpu_s,
        peak_rss: 0,
        png_sha256: sha256_hex(&g.png),
    };
    println!("{}", serde_json::to_string(&figures)?);
    eprintln!("peak_rss={}", peak_rss());
    Ok(())
}

/// CPU time consumed by this process so far, all threads.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

// ---- The random SD 1.5 checkpoint, in the LDM layout, written tensor by tensor.

fn lin(v: &mut Vec<(String, Vec<usize>)>, name: &str, out: usize, inp: usize, bias: bool) {
    v.push((format!("{name}.weight"), vec![out, inp]));
    if bias {
        v.push((format!("{name}.bias"), vec![out]));
    }
}

fn conv(v: &mut Vec<(String, Vec<usize>)>, name: &str, out: usize, inp: usize, k: usize) {
    v.push((format!("{name}.weight"), vec![out, inp, k, k]));
    v.push((format!("{name}.bias"), vec![out]));
}

fn norm(v: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize) {
    v.push((format!("{name}.weight"), vec![c]));
    v.push((format!("{name}.bias"), vec![c]));
}

fn ldm_res(v: &mut Vec<(String, Vec<usize>)>, p: &str, cin: usize, cout: usize) {
    norm(v, &format!("{p}.in_layers.0"), cin);
    conv(v, &format!("{p}.in_layers.2"), cout, cin, 3);
    lin(v, &format!("{p}.emb_layers.1"), cout, 1280, true);
    norm(v, &format!("{p}.out_layers.0"), cout);
    conv(v, &format!("{p}.out_layers.3"), cout, cout, 3);
    if cin != cout {
        conv(v, &format!("{p}.skip_connection"), cout, cin, 1);
    }
}

fn ldm_attn(v: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize) {
    norm(v, &format!("{p}.norm"), c);
    conv(v, &format!("{p}.proj_in"), c, c, 1);
    let b = format!("{p}.transformer_blocks.0");
    for (a, ctx) in [("attn1", c), ("attn2", 768)] {
        lin(v, &format!("{b}.{a}.to_q"), c, c, false);
        lin(v, &format!("{b}.{a}.to_k"), c, ctx, false);
        lin(v, &format!("{b}.{a}.to_v"), c, ctx, false);
        lin(v, &format!("{b}.{a}.to_out.0"), c, c, true);
    }
    lin(v, &format!("{b}.ff.net.0.proj"), 8 * c, c, true);
    lin(v, &format!("{b}.ff.net.2"), c, 4 * c, true);
    for n in ["norm1", "norm2", "norm3"] {
        norm(v, &format!("{b}.{n}"), c);
    }
    conv(v, &format!("{p}.proj_out"), c, c, 1);
}

fn vae_res(v: &mut Vec<(String, Vec<usize>)>, p: &str, cin: usize, cout: usize) {
    norm(v, &format!("{p}.norm1"), cin);
    conv(v, &format!("{p}.conv1"), cout, cin, 3);
    norm(v, &format!("{p}.norm2"), cout);
    conv(v, &format!("{p}.conv2"), cout, cout, 3);
    if cin != cout {
        conv(v, &format!("{p}.nin_shortcut"), cout, cin, 1);
    }
}

fn vae_mid(v: &mut Vec<(String, Vec<usize>)>, p: &str) {
    vae_res(v, &format!("{p}.mid.block_1"), 512, 512);
    norm(v, &format!("{p}.mid.attn_1.norm"), 512);
    for n in ["q", "k", "v", "proj_out"] {
        conv(v, &format!("{p}.mid.attn_1.{n}"), 512, 512, 1);
    }
    vae_res(v, &format!("{p}.mid.block_2"), 512, 512);
}

/// Every tensor of SD 1.5's single-file checkpoint (UNet, VAE, CLIP ViT-L/14).
fn sd15_tensors() -> Vec<(String, Vec<usize>)> {
    let mut v = Vec::new();
    let u = "model.diffusion_model";
    let ch = [320, 640, 1280, 1280];
    lin(&mut v, &format!("{u}.time_embed.0"), 1280, 320, true);
    lin(&mut v, &format!("{u}.time_embed.2"), 1280, 1280, true);
    conv(&mut v, &format!("{u}.input_blocks.0.0"), 320, 4, 3);
    let mut skips = vec![320];
    let mut cur = 320;
    for (i, &c) in ch.iter().enumerate() {
        for j in 0..2 {
            let n = 3 * i + j + 1;
            ldm_res(&mut v, &format!("{u}.input_blocks.{n}.0"), cur, c);
            cur = c;
            if i < 3 {
                ldm_attn(&mut v, &format!("{u}.input_blocks.{n}.1"), c);
            }
            skips.push(c);
        }
        if i < 3 {
            conv(
                &mut v,
                &format!("{u}.input_blocks.{}.0.op", 3 * (i + 1)),
                c,
                c,
                3,
            );
            skips.push(c);
        }
    }
    ldm_res(&mut v, &format!("{u}.middle_block.0"), 1280, 1280);
    ldm_attn(&mut v, &format!("{u}.middle_block.1"), 1280);
    ldm_res(&mut v, &format!("{u}.middle_block.2"), 1280, 1280);
    for i in 0..4 {
        let c = ch[3 - i];
        for j in 0..3 {
            let n = 3 * i + j;
            let skip = skips.pop().unwrap_or(0);
            ldm_res(&mut v, &format!("{u}.output_blocks.{n}.0"), cur + skip, c);
            cur = c;
            if i > 0 {
                ldm_attn(&mut v, &format!("{u}.output_blocks.{n}.1"), c);
            }
        }
        if i < 3 {
            let slot = if i == 0 { 1 } else { 2 };
            conv(
                &mut v,
                &format!("{u}.output_blocks.{}.{slot}.conv", 3 * i + 2),
                c,
                c,
                3,
            );
        }
    }
    norm(&mut v, &format!("{u}.out.0"), 320);
    conv(&mut v, &format!("{u}.out.2"), 4, 320, 3);

    let f = "first_stage_model";
    let vch = [128, 256, 512, 512];
    conv(&mut v, &format!("{f}.encoder.conv_in"), 128, 3, 3);
    let mut cur = 128;
    for (i, &c) in vch.iter().enumerate() {
        for j in 0..2 {
            vae_res(&mut v, &format!("{f}.encoder.down.{i}.block.{j}"), cur, c);
            cur = c;
        }
        if i < 3 {
            conv(
                &mut v,
                &format!("{f}.encoder.down.{i}.downsample.conv"),
                c,
                c,
                3,
            );
        }
    }
    vae_mid(&mut v, &format!("{f}.encoder"));
    norm(&mut v, &format!("{f}.encoder.norm_out"), 512);
    conv(&mut v, &format!("{f}.encoder.conv_out"), 8, 512, 3);
    conv(&mut v, &format!("{f}.quant_conv"), 8, 8, 1);
    conv(&mut v, &format!("{f}.post_quant_conv"), 4, 4, 1);
    conv(&mut v, &format!("{f}.decoder.conv_in"), 512, 4, 3);
    vae_mid(&mut v, &format!("{f}.decoder"));
    let mut cur = 512;
    for i in (0..4).rev() {
        let c = vch[i];
        for j in 0..3 {
            vae_res(&mut v, &format!("{f}.decoder.up.{i}.block.{j}"), cur, c);
            cur = c;
        }
        if i > 0 {
            conv(
                &mut v,
                &format!("{f}.decoder.up.{i}.upsample.conv"),
                c,
                c,
                3,
            );
        }
    }
    norm(&mut v, &format!("{f}.decoder.norm_out"), 128);
    conv(&mut v, &format!("{f}.decoder.conv_out"), 3, 128, 3);

    let t = "cond_stage_model.transformer.text_model";
    v.push((
        format!("{t}.embeddings.token_embedding.weight"),
        vec![49408, 768],
    ));
    v.push((
        format!("{t}.embeddings.position_embedding.weight"),
        vec![77, 768],
    ));
    for i in 0..12 {
        let p = format!("{t}.encoder.layers.{i}");
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            lin(&mut v, &format!("{p}.self_attn.{n}"), 768, 768, true);
        }
        norm(&mut v, &format!("{p}.layer_norm1"), 768);
        lin(&mut v, &format!("{p}.mlp.fc1"), 3072, 768, true);
        lin(&mut v, &format!("{p}.mlp.fc2"), 768, 3072, true);
        norm(&mut v, &format!("{p}.layer_norm2"), 768);
    }
    norm(&mut v, &format!("{t}.final_layer_norm"), 768);
    v
}

/// Values in the random table the weights are cut from (a power of two).
const TABLE: usize = 1 << 20;

/// Writes a safetensors file tensor by tensor (the header first, then each tensor's
/// bytes), so a 4 GB file never sits in memory. Values: a table of `TABLE` uniforms on
/// [-1, 1) from a splitmix64 stream, scaled to the standard deviation of an
/// initialisation (`1/sqrt(fan_in)` for weights, 0.02 for embeddings, 0 for biases, 1 for
/// norm scales) and encoded once per scale; each tensor reads its scale's bytes cyclically
/// from an offset of its own. Timing does not care that values repeat every `TABLE`, and
/// copying encoded bytes keeps writing the file I/O-bound even in a debug build.
fn write_random(path: &Path, tensors: &[(String, Vec<usize>)], f16: bool) -> anyhow::Result<()> {
    let width = if f16 { 2 } else { 4 };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * width;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": if f16 { "F16" } else { "F32" }, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut head = serde_json::to_vec(&header)?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let part = path.with_extension("part");
    let mut out = BufWriter::with_capacity(
        1 << 22,
        std::fs::File::create(&part).with_context(|| format!("cannot write {}", part.display()))?,
    );
    out.write_all(&(head.len() as u64).to_le_bytes())?;
    out.write_all(&head)?;
    let mut state = 0x853c_49e6_748f_ea9bu64;
    let uniforms: Vec<f32> = (0..TABLE)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    // Encoded tables by kind (constant or noise) and the bits of their scale.
    let mut encoded: std::collections::HashMap<(bool, u32), Vec<u8>> =
        std::collections::HashMap::new();
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let scale = if shape.len() == 1 {
            if name.ends_with(".weight") { 1.0 } else { 0.0 }
        } else if name.contains("embedding") {
            0.02
        } else {
            // Uniform on [-b, b] has standard deviation b / sqrt(3).
            3f32.sqrt() / (shape[1..].iter().product::<usize>() as f32).sqrt()
        };
        let table = encoded
            .entry((shape.len() == 1, scale.to_bits()))
            .or_insert_with(|| {
                // Norm scales are exactly 1 and biases exactly 0, not scaled noise.
                let values: Vec<f32> = if shape.len() == 1 {
                    vec![scale; TABLE]
                } else {
                    uniforms.iter().map(|u| u * scale).collect()
                };
                if f16 {
                    values
                        .iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect()
                } else {
                    values.iter().flat_map(|v| v.to_le_bytes()).collect()
                }
            });
        // Each tensor starts at its own place in the table (an odd stride, so tensors differ).
        let mut at = (i * 40_503) % TABLE;
        let mut left = n;
        while left > 0 {
            let take = left.min(TABLE - at);
            out.write_all(&table[at * width..(at + take) * width])?;
            left -= take;
            at = 0;
        }
    }
    out.flush()?;
    drop(out);
    std::fs::rename(&part, path)?;
    Ok(())
}

fn checkpoint(dir: &Path, dtype: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("sd15-random-v2-{dtype}.safetensors"));
    if !path.is_file() {
        eprintln!("writing {} (once)", path.display());
        write_random(&path, &sd15_tensors(), dtype == "f16")?;
    }
    Ok(path)
}

/// Runs `cmd` to completion and returns its last stdout line and the peak resident
/// memory it reported on stderr (`peak_rss=<bytes>`, its VmHWM at exit).
fn run_measured(cmd: &mut Command) -> anyhow::Result<(String, u64)> {
    let out = cmd.output().context("cannot start a measurement process")?;
    if !out.status.success() {
        bail!(
            "a measurement process failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next_back().unwrap_or_default().to_owned();
    let peak = String::from_utf8_lossy(&out.stderr)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peak_rss="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((line, peak))
}

/// This process's peak resident memory (VmHWM), bytes.
pub(crate) fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn gib(b: u64) -> String {
    format!("{:.2}", b as f64 / (1u64 << 30) as f64)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| home.join(".cache/aura/bench-image"));
    let models = args.models.clone().unwrap_or_else(|| {
        std::env::var_os("AURA_MODEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/aura/models"))
    });
    let vocab = models.join("clip/bpe_simple_vocab_16e6.txt.gz");
    if !vocab.is_file() {
        bail!(
            "{} is missing\nhint: run scripts/fetch-models.sh",
            vocab.display()
        );
    }
    let python = args.python.clone().unwrap_or_else(|| {
        std::env::var_os("AURA_BENCH_IMAGE_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/aura/bench-image-venv"))
            .join("bin/python")
    });
    if !args.no_peer && !python.is_file() {
        bail!(
            "{} is missing\nhint: run scripts/setup-bench-image.sh (or pass --no-peer)",
            python.display()
        );
    }
    let peer_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/sd_cpp_peer.py");
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let me = std::env::current_exe()?;
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };

    println!(
        "## Images: SD 1.5 shapes (random weights), Aura vs stable-diffusion.cpp (same checkpoint)\n"
    );
    println!(
        "machine: {} cores; {}; {threads} threads; {} steps of Euler ancestral with guidance 7.5 (two UNet passes a step); load average at start {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::ledger::cpu_model(),
        args.steps,
        load()
    );
    let mut rows = Vec::new();
    // Every measurement in the order it ran, with the load average right after it.
    let mut log = Vec::new();
    let mut record = |round: usize, engine: &str, dtype: &str, size: u32, f: &Figures| {
        let line = format!(
            "| {round} | {engine} | {dtype} | {size} | {:.2} | {:.2} | {} | {} |",
            f.step_s,
            f.image_s,
            gib(f.peak_rss),
            load()
        );
        eprintln!("{line}");
        log.push(line);
    };
    for dtype in &args.dtypes {
        let ckpt = checkpoint(&dir, dtype)?;
        for &size in &args.sizes {
            let (mut aura, mut peer) = (Vec::<Figures>::new(), Vec::<Figures>::new());
            for round in 0..args.rounds {
                let (line, peak) = run_measured(
                    Command::new(&me)
                        .arg("image-worker")
                        .arg("--checkpoint")
                        .arg(&ckpt)
                        .arg("--vocab")
                        .arg(&vocab)
                        .arg("--dtype")
                        .arg(dtype)
                        .arg("--size")
                        .arg(size.to_string())
                        .arg("--steps")
                        .arg(args.steps.to_string())
                        .arg("--threads")
                        .arg(threads.to_string()),
                )?;
                let mut f: Figures = serde_json::from_str(&line)
                    .with_context(|| format!("unreadable worker output: {line}"))?;
                f.peak_rss = peak;
                record(round, "Aura", dtype, size, &f);
                aura.push(f);
                if !args.no_peer {
                    let cfg = serde_json::json!({
                        "model": ckpt, "size": size, "steps": args.steps, "threads": threads,
                        "prompt": request(size, args.steps, 1).prompt, "negative": request(size, args.steps, 1).negative_prompt,
                        "cfg": 7.5, "seed": 1, "wtype": dtype,
                    });
                    let (line, peak) =
                        run_measured(Command::new(&python).arg(&peer_script).arg(cfg.to_string()))?;
                    let mut f: Figures = serde_json::from_str(&line)
                        .with_context(|| format!("unreadable peer output: {line}"))?;
                    f.peak_rss = peak;
                    record(round, "stable-diffusion.cpp", dtype, size, &f);
                    peer.push(f);
                }
            }
            let replays = aura.windows(2).all(|w| w[0].png_sha256 == w[1].png_sha256);
            rows.push((dtype.clone(), size, aura, peer, replays));
        }
    }
    println!(
        "| weights | size | s/step Aura | sd.cpp | ratio | s/image Aura | sd.cpp | ratio | CPU-s/step Aura | sd.cpp | ratio | CPU-s/image Aura | sd.cpp | ratio | peak GiB Aura | sd.cpp | load s Aura | sd.cpp | Aura PNG same every round |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for (dtype, size, a, p, replays) in &rows {
        let m = |v: &[Figures], f: fn(&Figures) -> f64| median(v.iter().map(f).collect());
        let (as_, ps) = (m(a, |f| f.step_s), m(p, |f| f.step_s));
        let (ai, pi) = (m(a, |f| f.image_s), m(p, |f| f.image_s));
        let ratio = |x: f64, y: f64| {
            if x > 0.0 && y > 0.0 {
                format!("{:.2}", y / x)
            } else {
                "-".into()
            }
        };
        let peak = |v: &[Figures]| v.iter().map(|f| f.peak_rss).max().unwrap_or(0);
        // Without the peer (`--no-peer`) its columns say so instead of showing zeros.
        let peer_figure = |x: f64| {
            if p.is_empty() {
                "-".to_owned()
            } else {
                format!("{x:.2}")
            }
        };
        let (asc, psc) = (m(a, |f| f.step_cpu_s), m(p, |f| f.step_cpu_s));
        let (aic, pic) = (m(a, |f| f.image_cpu_s), m(p, |f| f.image_cpu_s));
        println!(
            "| {dtype} | {size} | {as_:.2} | {} | {} | {ai:.2} | {} | {} | {asc:.2} | {} | {} | {aic:.2} | {} | {} | {} | {} | {:.1} | {} | {} |",
            peer_figure(ps),
            ratio(as_, ps),
            peer_figure(pi),
            ratio(ai, pi),
            peer_figure(psc),
            ratio(asc, psc),
            peer_figure(pic),
            ratio(aic, pic),
            gib(peak(a)),
            if p.is_empty() {
                "-".into()
            } else {
                gib(peak(p))
            },
            m(a, |f| f.load_s),
            if p.is_empty() {
                "-".into()
            } else {
                format!("{:.1}", m(p, |f| f.load_s))
            },
            if *replays { "yes" } else { "NO" },
        );
    }
    println!(
        "\n(ratios are sd.cpp / Aura time: above 1 means Aura is faster; load average at end {})\n",
        load()
    );
    println!("Every measurement, in the order run (load average after each):\n");
    println!("| round | engine | weights | size | s/step | s/image | peak GiB | load average |");
    println!("|---:|---|---|---:|---:|---:|---:|---|");
    for line in &log {
        println!("{line}");
    }
    println!();

    if args.concurrent > 0 {
        let dtype = args.dtypes.first().map_or("f16", String::as_str);
        let size = *args.sizes.first().unwrap_or(&256);
        let (line, _) = run_measured(
            Command::new(&me)
                .arg("image-worker")
                .arg("--checkpoint")
                .arg(checkpoint(&dir, dtype)?)
                .arg("--vocab")
                .arg(&vocab)
                .arg("--dtype")
                .arg(dtype)
                .arg("--size")
                .arg(size.to_string())
                .arg("--steps")
                .arg(args.steps.to_string())
                .arg("--threads")
                .arg(threads.to_string())
                .arg("--concurrent")
                .arg(args.concurrent.to_string()),
        )?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let (one, all) = (
            v["one_s"].as_f64().unwrap_or(0.0),
            v["all_s"].as_f64().unwrap_or(0.0),
        );
        println!(
            "Cost of determinism ({dtype}, {size}px, {threads} threads): one request {one:.1} s; {n} concurrent requests {all:.1} s in all, {:.2} images/s against {:.2} alone ({:.2}x), every one the lone request's PNG: {}\n",
            args.concurrent as f64 / all,
            1.0 / one,
            (args.concurrent as f64 / all) / (1.0 / one),
            if v["same"].as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            },
            n = args.concurrent,
        );
    }
    Ok(())
}
