//! `aura-bench infer`: the inference engine beside llama.cpp, on the same GGUF files, in
//! the same run: prefill tokens/s, decode tokens/s and time to first token at 1 and 2
//! threads for SmolLM2-135M as Q4_1 (the shipped file), Q8_0 and f32 (both made from
//! the shipped file by `prepare`, so both engines run exactly the same bytes), and the
//! cost of determinism: decode throughput of 8 concurrent requests against 1.
//!
//! Both engines are measured the same way: a fresh sequence, the prompt fed as one batch,
//! then greedy steps of one token each, with the arg-max taken over the logits at every
//! step. llama.cpp runs through llama-cpp-python's low-level C API
//! (`peers/llama_cpp_peer.py`; install it with `scripts/setup-bench-infer.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aura_infer::{ChatMessage, LoadOptions, Model, ModelFiles};
use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Model cache (as scripts/fetch-models.sh fills it) [default: $AURA_MODEL_CACHE or ~/.cache/aura/models]
    #[arg(long)]
    models: Option<PathBuf>,
    /// Python with llama-cpp-python [default: $AURA_BENCH_VENV/bin/python or ~/.cache/aura/bench-venv/bin/python]
    #[arg(long)]
    python: Option<PathBuf>,
    /// Thread counts to measure
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
    threads: Vec<usize>,
    /// Weight formats to measure (q4_1, q8_0, f32)
    #[arg(long, value_delimiter = ',', default_values_t = ["q4_1".to_owned(), "q8_0".to_owned(), "f32".to_owned()])]
    formats: Vec<String>,
    /// Prompt length for the prefill figure
    #[arg(long, default_value_t = 128)]
    prefill_tokens: usize,
    /// Greedy steps for the decode figure
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Repetitions of each measurement (the median is reported)
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Concurrent requests in the determinism-cost figure
    #[arg(long, default_value_t = 8)]
    concurrent: usize,
    /// Measure Aura only
    #[arg(long)]
    no_peer: bool,
}

/// One engine's figures for one file and thread count.
#[derive(Debug, Default, Clone, serde::Deserialize)]
struct Figures {
    prefill_tok_s: f64,
    ttft_ms: f64,
    decode_tok_s: f64,
    /// Decode tokens per second of process CPU time: steadier than wall time on a busy
    /// machine, and meaningful at one thread (with more, idle spinning counts too).
    decode_tok_cpu_s: f64,
    /// Prefill tokens per second of process CPU time.
    prefill_tok_cpu_s: f64,
    tokens: Vec<u32>,
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

pub(crate) fn default_cache() -> PathBuf {
    std::env::var_os("AURA_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/aura/models")
        })
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let cache = args.models.clone().unwrap_or_else(default_cache);
    let shipped = cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !shipped.is_file() {
        bail!(
            "{} is missing\nhint: run scripts/fetch-models.sh",
            shipped.display()
        );
    }
    let python = args.python.clone().unwrap_or_else(|| {
        std::env::var_os("AURA_BENCH_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/aura/bench-venv")
            })
            .join("bin/python")
    });
    if !args.no_peer && !python.is_file() {
        bail!(
            "{} is missing\nhint: run scripts/setup-bench-infer.sh (or pass --no-peer)",
            python.display()
        );
    }
    let peer_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/llama_cpp_peer.py");

    println!("## Inference: SmolLM2-135M-Instruct, Aura vs llama.cpp (same GGUF files)\n");
    println!(
        "machine: {} cores; {}; load average at start {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::ledger::cpu_model(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let mut rows = Vec::new();
    for format in &args.formats {
        let path = prepare(&shipped, format)?;
        for &threads in &args.threads {
            let model = Model::load(
                &ModelFiles::Gguf(path.clone()),
                &LoadOptions {
                    threads: Some(threads),
                    ..LoadOptions::default()
                },
            )?;
            let prefill = prefill_prompt(&model, args.prefill_tokens)?;
            let chat = chat_prompt(&model)?;
            let aura = measure(&model, &prefill, &chat, args.decode_tokens, args.repeats)?;
            let peer = if args.no_peer {
                None
            } else {
                Some(run_peer(
                    &python,
                    &peer_script,
                    &path,
                    threads,
                    &prefill,
                    &chat,
                    args,
                )?)
            };
            eprintln!("{format} x{threads}: aura {aura:?} / llama.cpp {peer:?}");
            rows.push((
                format.clone(),
                threads,
                model.fingerprint().to_string(),
                aura,
                peer,
            ));
        }
    }

    println!(
        "| file | threads | prefill tok/s Aura | llama.cpp | ratio | decode tok/s Aura | llama.cpp | ratio | TTFT ms Aura | llama.cpp | ratio | same greedy tokens |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (format, threads, _, a, p) in &rows {
        let p = p.clone().unwrap_or_default();
        let ratio = |x: f64, y: f64| {
            if y > 0.0 {
                format!("{:.2}", x / y)
            } else {
                "-".into()
            }
        };
        let agree = a
            .tokens
            .iter()
            .zip(&p.tokens)
            .take_while(|(x, y)| x == y)
            .count();
        println!(
            "| {format} | {threads} | {:.0} | {:.0} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | first {agree} of {} |",
            a.prefill_tok_s,
            p.prefill_tok_s,
            ratio(a.prefill_tok_s, p.prefill_tok_s),
            a.decode_tok_s,
            p.decode_tok_s,
            ratio(a.decode_tok_s, p.decode_tok_s),
            a.ttft_ms,
            p.ttft_ms,
            ratio(p.ttft_ms, a.ttft_ms),
            a.tokens.len(),
        );
    }
    println!(
        "\n(ratios are Aura / llama.cpp for throughput and llama.cpp / Aura for TTFT: above 1 means Aura is faster)\n"
    );
    println!(
        "Per second of CPU time (one thread only: steadier than wall time on a shared machine):\n"
    );
    println!(
        "| file | prefill tok/CPU-s Aura | llama.cpp | ratio | decode tok/CPU-s Aura | llama.cpp | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (format, threads, _, a, p) in rows.iter().filter(|r| r.1 == 1) {
        let _ = threads;
        let p = p.clone().unwrap_or_default();
        let ratio = |x: f64, y: f64| {
            if y > 0.0 {
                format!("{:.2}", x / y)
            } else {
                "-".into()
            }
        };
        println!(
            "| {format} | {:.0} | {:.0} | {} | {:.1} | {:.1} | {} |",
            a.prefill_tok_cpu_s,
            p.prefill_tok_cpu_s,
            ratio(a.prefill_tok_cpu_s, p.prefill_tok_cpu_s),
            a.decode_tok_cpu_s,
            p.decode_tok_cpu_s,
            ratio(a.decode_tok_cpu_s, p.decode_tok_cpu_s),
        );
    }
    println!();
    if let Some((_, _, fp, _, _)) = rows.first() {
        println!("Aura runtime fingerprint: {fp}\n");
    }

    if args.concurrent > 1 {
        concurrency(&shipped, args.concurrent, args.decode_tokens)?;
    }
    Ok(())
}

/// The bench's files: the shipped Q4_1, and Q8_0 and f32 made from it (once, cached).
fn prepare(shipped: &Path, format: &str) -> anyhow::Result<PathBuf> {
    let (target, file_type) = match format {
        "q4_1" => return Ok(shipped.to_owned()),
        "q8_0" => (GgmlDType::Q8_0, 7u32),
        "f32" => (GgmlDType::F32, 0u32),
        other => bail!("unknown format {other} (q4_1, q8_0, f32)"),
    };
    let out = shipped.with_file_name(format!(
        "SmolLM2-135M-Instruct.{}.gguf",
        format.to_uppercase()
    ));
    if out.is_file() {
        return Ok(out);
    }
    eprintln!("making {} from {}", out.display(), shipped.display());
    let mut reader = std::io::BufReader::new(std::fs::File::open(shipped)?);
    let content = gguf_file::Content::read(&mut reader)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::new();
    for name in names {
        let t = content.tensor(&mut reader, name, &Device::Cpu)?;
        // Norms stay f32; Q4_1 matrices are dequantized and requantized; in the f32 file
        // everything is f32. The Q8_0 embedding stays as it is in the Q8_0 file.
        let keep = t.dtype() == GgmlDType::F32
            || (target == GgmlDType::Q8_0 && t.dtype() == GgmlDType::Q8_0);
        let t = if keep {
            t
        } else {
            QTensor::quantize(&t.dequantize(&Device::Cpu)?, target)?
        };
        tensors.push((name.clone(), t));
    }
    let mut meta: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in &mut meta {
        if k == "general.file_type" {
            *v = gguf_file::Value::U32(file_type);
        }
    }
    let part = out.with_extension("gguf.part");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&part)?);
    let meta_refs: Vec<(&str, &gguf_file::Value)> =
        meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &meta_refs, &tensor_refs)?;
    drop(w);
    std::fs::rename(&part, &out)?;
    Ok(out)
}

fn prefill_prompt(model: &Model, n: usize) -> anyhow::Result<Vec<u32>> {
    let text = "The history of the printing press begins in the fifteenth century, when movable metal type \
        made books cheaper to produce than ever before. Within decades, presses spread across Europe, \
        carrying news, science and religious debate to readers who had never owned a book. "
        .repeat(8);
    let mut ids = model.tokenizer().encode(&text, false)?;
    if ids.len() < n {
        bail!("prefill text too short for {n} tokens");
    }
    ids.truncate(n);
    Ok(ids)
}

fn chat_prompt(model: &Model) -> anyhow::Result<Vec<u32>> {
    let text = model.render_chat(
        &[ChatMessage::new("user", "What is the capital of France?")],
        &[],
        true,
    )?;
    Ok(model.tokenizer().encode(&text, true)?)
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(
    model: &Model,
    prefill: &[u32],
    chat: &[u32],
    decode: usize,
    repeats: usize,
) -> anyhow::Result<Figures> {
    let (mut pre, mut ttft, mut dec) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pre_cpu, mut dec_cpu) = (Vec::new(), Vec::new());
    let mut tokens = Vec::new();
    for _ in 0..repeats.max(1) {
        let mut s = model.session();
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let logits = s.feed(prefill)?;
        let _ = argmax(&logits);
        pre.push(prefill.len() as f64 / t0.elapsed().as_secs_f64());
        pre_cpu.push(prefill.len() as f64 / (cpu_seconds() - c0));

        let mut s = model.session();
        let t0 = Instant::now();
        let mut tok = argmax(&s.feed(chat)?);
        ttft.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokens = vec![tok];
        let (t0, c0) = (Instant::now(), cpu_seconds());
        for _ in 0..decode {
            tok = argmax(&s.feed(&[tok])?);
            tokens.push(tok);
        }
        dec.push(decode as f64 / t0.elapsed().as_secs_f64());
        dec_cpu.push(decode as f64 / (cpu_seconds() - c0));
    }
    Ok(Figures {
        prefill_tok_s: median(pre),
        ttft_ms: median(ttft),
        decode_tok_s: median(dec),
        decode_tok_cpu_s: median(dec_cpu),
        prefill_tok_cpu_s: median(pre_cpu),
        tokens,
    })
}

fn run_peer(
    python: &Path,
    script: &Path,
    model: &Path,
    threads: usize,
    prefill: &[u32],
    chat: &[u32],
    args: &Args,
) -> anyhow::Result<Figures> {
    let cfg = serde_json::json!({
        "model": model, "threads": threads, "prefill": prefill, "chat": chat,
        "decode": args.decode_tokens, "repeats": args.repeats,
    });
    let out = Command::new(python)
        .arg(script)
        .arg(cfg.to_string())
        .output()
        .context("cannot run the llama.cpp peer")?;
    if !out.status.success() {
        bail!(
            "the llama.cpp peer failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("unreadable peer output: {line}"))
}

/// The cost of determinism: requests never share matrix products, so 8 concurrent
/// requests do 8 times the weight reads of one. Decode throughput (all requests'
/// tokens per second of wall time) with 1 and with `n` concurrent requests, on a pool of
/// as many threads as the machine has cores.
fn concurrency(shipped: &Path, n: usize, decode: usize) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = Model::load(
        &ModelFiles::Gguf(shipped.to_owned()),
        &LoadOptions {
            threads: Some(cores),
            ..LoadOptions::default()
        },
    )?;
    let chat = chat_prompt(&model)?;
    let one = |model: &Model| -> anyhow::Result<(Duration, Vec<u32>)> {
        let mut s = model.session();
        let mut tok = argmax(&s.feed(&chat)?);
        let mut tokens = vec![tok];
        let t0 = Instant::now();
        for _ in 0..decode {
            tok = argmax(&s.feed(&[tok])?);
            tokens.push(tok);
        }
        Ok((t0.elapsed(), tokens))
    };
    let (alone, reference) = one(&model)?;
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<(Duration, Vec<u32>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(|| one(&model))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a request panicked")))
            })
            .collect()
    });
    let wall = t0.elapsed();
    let mut identical = 0;
    for r in results {
        if r?.1 == reference {
            identical += 1;
        }
    }
    let single = decode as f64 / alone.as_secs_f64();
    let together = (n * decode) as f64 / wall.as_secs_f64();
    println!(
        "| Q4_1, {cores} threads | decode tok/s (all requests) | per request | identical to the lone request |"
    );
    println!("|---|---:|---:|---:|");
    println!("| 1 request | {single:.1} | {single:.1} | - |");
    println!(
        "| {n} concurrent | {together:.1} | {:.1} | {identical} of {n} |",
        together / n as f64
    );
    println!(
        "\n{n} concurrent / 1: {:.2}x throughput (prefill of each request included in the wall time)\n",
        together / single
    );
    Ok(())
}
