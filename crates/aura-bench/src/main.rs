//! `aura-bench`: Aura's benchmarks.
//!
//! Each benchmark prints a Markdown table with Aura's figure beside its peer's, both
//! measured in the same run on the same machine, so that docs/PERFORMANCE.md can quote
//! them as they are. Run with `cargo run --release -p aura-bench -- <benchmark>`.

mod cells;
mod durability;
mod http_load;
mod http_peer;
mod image;
mod image_tiny;
mod infer;
mod ledger;
mod mcp;
mod memory;
mod missions;
mod model;
mod policy;
mod reasoner;
mod recovery;
mod speech;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "aura-bench", about = "Aura's benchmarks, each beside its peer")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Ledger: durable appends (vs raw SQLite), commit latency, verification, proofs
    Ledger(ledger::Args),
    /// Cells: a hardened one-shot cell (vs bubblewrap), executables per second in a cell
    Cells(cells::Args),
    /// Inference: SmolLM2 prefill, decode and time to first token vs llama.cpp
    Infer(infer::Args),
    /// Images: SD 1.5-shaped UNet steps and whole images vs stable-diffusion.cpp
    Image(image::Args),
    /// Images: Aura's default model (aura-tiny-emoji), prompt to 64x64 PNG, and 4 requests vs 1
    ImageTiny(image_tiny::Args),
    /// One engine measurement of `image` in a process of its own (run by `image`)
    #[command(hide = true)]
    ImageWorker(image::WorkerArgs),
    /// Reasoner: decoding a provider's response stream (vs eventsource-stream)
    Reasoner(reasoner::Args),
    /// Model packages: manifest verification GB/s beside sha256sum on the same files
    ModelVerify(model::Args),
    /// Missions: kernel step overhead (vs raw SQLite commits) and 3-step missions/s
    Missions(missions::Args),
    /// Durability: a mission step and a raw append with fsync (FULL) vs without, as a ratio
    Durability(durability::Args),
    /// Recovery: a node killed with SIGKILL with N running missions; time until all run again
    Recovery(recovery::Args),
    /// The peer server of scripts/bench-http.sh (a minimal authenticated JSON GET)
    HttpPeer(http_peer::Args),
    /// An open-loop load generator at a fixed rate (scripts/bench-http.sh drives it)
    HttpLoad(http_load::Args),
    /// Policy: decision latency with 200 policies loaded (vs Cedar's own evaluation)
    Policy(policy::Args),
    /// MCP: a governed MCP tool call (policy, ledger, cell) vs the SDK calling the server directly
    Mcp(mcp::Args),
    /// Speech: /v1/audio/speech time to first audio byte and real-time factor vs espeak-ng
    /// alone (scripts/bench-speech.sh starts the node)
    Speech(speech::Args),
    /// Memory: search p50/p99 at 10,000 and 100,000 vectors, HNSW vs exact, with recall@10
    Memory(memory::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Pure CPU work on the engines' own threads: no async runtime needed.
    match &cli.bench {
        Bench::Infer(args) => return infer::run(args),
        Bench::Image(args) => return image::run(args),
        Bench::ImageWorker(args) => return image::worker(args),
        Bench::ImageTiny(args) => return image_tiny::run(args),
        Bench::Memory(args) => return memory::run(args),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.bench {
        Bench::Ledger(args) => rt.block_on(ledger::run(args)),
        Bench::Cells(args) => rt.block_on(cells::run(args)),
        Bench::Infer(_)
        | Bench::Image(_)
        | Bench::ImageWorker(_)
        | Bench::ImageTiny(_)
        | Bench::Memory(_) => Ok(()),
        Bench::Reasoner(args) => reasoner::run(&args, &rt),
        Bench::ModelVerify(args) => model::run(&args),
        Bench::Policy(args) => policy::run(&args),
        Bench::Missions(args) => rt.block_on(missions::run(args)),
        Bench::Recovery(args) => rt.block_on(recovery::run(args)),
        Bench::Durability(args) => rt.block_on(durability::run(args)),
        Bench::HttpPeer(args) => rt.block_on(http_peer::run(args)),
        Bench::HttpLoad(args) => rt.block_on(http_load::run(args)),
        Bench::Mcp(args) => rt.block_on(mcp::run(args)),
        Bench::Speech(args) => rt.block_on(speech::run(args)),
    }
}

/// The p-th percentile (0-100) of sorted samples.
pub(crate) fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Formats a duration in the unit that suits it.
pub(crate) fn fmt_duration(d: std::time::Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}
