//! `aura-bench durability`: what durability costs per mission step. The same workload
//! runs on a store with `synchronous=FULL` (the store's only setting for real use: every
//! commit waits for fsync) and on one with `Durability::NoSync` (`synchronous=OFF`: no
//! fsync at all, unsafe for real use), in the same process, the two alternating round by
//! round so that a change in the machine's load or the disk's speed falls on both.
//!
//! Workloads, each run end to end through the engine (the real store, signed checkpoints,
//! the default Cedar policy set, the built-in `fs.read` on a real workspace):
//!
//! 1. **One mission** of S steps, alone: the time between two reasoner calls of the
//!    mission is one whole step, whatever the engine records for it (the turn, the
//!    decision, the attempt, the effect) and however many commits it takes.
//! 2. **N missions at once**, one per agent, S steps each: the same per-step times, and
//!    steps per second over the run; group commit shares fsyncs between the missions.
//! 3. **Raw `Store::append`**: one writer appending one small entry at a time.
//!
//! The figure is the ratio FULL / NoSync: how much slower a step is because the store
//! waits for the disk. Commits per step are counted from the signed checkpoints (one per
//! commit), so a change in how often the engine commits shows up beside the ratio.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aura_core::door::{SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId, Timestamp};
use aura_kernel::MissionState;
use aura_ledger::entry::Kind;
use aura_store::sqlite::{Durability, Options};
use aura_store::{NewEntry, Seq, SqliteStore, Store};
use serde_json::json;

use crate::missions::{Arrivals, by_step, create_agent, engine_with, spec};
use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Missions run at once in the concurrent workload (one agent each)
    #[arg(long, default_value_t = 16)]
    missions: u32,
    /// Steps per mission (the last is `mission.finish`)
    #[arg(long, default_value_t = 100)]
    steps: u32,
    /// Rounds; each runs every workload once with each durability, in alternating order
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Single-entry appends per round in the raw store workload
    #[arg(long, default_value_t = 2_000)]
    appends: u32,
    /// Where to put the databases [default: a temporary directory]
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// What one durability setting gathered over the rounds, per workload.
#[derive(Debug, Default)]
struct Tally {
    /// Per-step (or per-append) latencies.
    samples: Vec<Duration>,
    /// Steps (or appends) completed, and the wall time they took.
    done: u64,
    elapsed: Duration,
    /// Commits (signed checkpoints) over the run.
    commits: u64,
    /// Each round's p50, to show how far the ratio moves from round to round.
    round_p50s: Vec<Duration>,
}

impl Tally {
    /// Closes a round: its samples are those gathered since `from`.
    fn round(&mut self, from: usize) {
        let mut r = self.samples[from..].to_vec();
        r.sort();
        self.round_p50s.push(percentile(&r, 50.0));
    }
}

impl Tally {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn label(d: Durability) -> &'static str {
    match d {
        Durability::Full => "full",
        Durability::NoSync => "nosync",
    }
}

fn options(durability: Durability) -> Options {
    Options {
        durability,
        ..Default::default()
    }
}

/// Runs `missions` missions of `steps` steps at once on a fresh engine.
async fn missions(
    dir: &std::path::Path,
    durability: Durability,
    missions: u32,
    steps: u32,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    // `fs.read` until the last step, then `mission.finish`.
    let arrivals = Arrivals::default();
    let reasoner = by_step(&arrivals, move |step| {
        if step + 1 < steps as usize {
            ("fs.read", json!({"path": "data.txt"}))
        } else {
            ("mission.finish", json!({"summary": "done"}))
        }
    });
    let (engine, workspaces) = engine_with(dir, Arc::new(reasoner), options(durability)).await?;
    let mut agents = Vec::new();
    for i in 0..missions {
        agents.push(create_agent(&engine, &format!("d{i}")).await?);
        let ws = workspaces.join("default").join(format!("w{i}"));
        std::fs::create_dir_all(&ws)?;
        std::fs::write(ws.join("data.txt"), "y".repeat(100))?;
    }
    let before = engine.store().tree_size().await?;
    let start = Instant::now();
    let mut submits = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let engine = engine.clone();
        let agent: AgentId = *agent;
        let spec = spec(
            &["fs.read", "mission.finish"],
            Some(format!("w{i}")),
            steps + 1,
        );
        submits.push(tokio::spawn(
            async move { engine.submit(agent, spec).await },
        ));
    }
    let mut ids: Vec<MissionId> = Vec::new();
    for s in submits {
        ids.push(s.await??);
    }
    for id in &ids {
        loop {
            match engine.mission(*id).map(|m| m.state) {
                Some(MissionState::Completed) => break,
                Some(s) if s.is_terminal() => {
                    let reason = engine.mission(*id).and_then(|m| m.reason.clone());
                    anyhow::bail!("mission {id} ended {s}: {reason:?}");
                }
                _ => tokio::time::sleep(Duration::from_micros(500)).await,
            }
        }
    }
    tally.elapsed += start.elapsed();
    tally.done += u64::from(missions) * u64::from(steps);
    tally.commits += engine.store().checkpoints(before, 1_000_000).await?.len() as u64;
    {
        let calls = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for times in calls.values() {
            tally.samples.extend(times.windows(2).map(|w| w[1] - w[0]));
        }
    }
    engine.shutdown().await;
    Ok(())
}

/// One writer appending `n` single small entries, one at a time, to a fresh store.
async fn appends(
    dir: &std::path::Path,
    durability: Durability,
    n: u32,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1))?);
    let store = SqliteStore::open(
        dir.join("ledger.db"),
        signer,
        Arc::new(SystemClock),
        options(durability),
    )?;
    let agent = AgentId::from_bytes([3; 16]);
    let kind = Kind::new("bench.note")?;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        store
            .append(vec![NewEntry {
                agent,
                seq: Seq::Next,
                kind: kind.clone(),
                recorded_at: Timestamp::from_secs(1_800_000_000),
                body: vec![b'x'; 100],
            }])
            .await?;
        tally.samples.push(t.elapsed());
    }
    tally.elapsed += start.elapsed();
    tally.done += u64::from(n);
    tally.commits += u64::from(n);
    store.close();
    Ok(())
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let started = Instant::now();
    println!("## Durability cost per step (synchronous=FULL vs no fsync)\n");
    println!(
        "machine: {} cores; {}; load average at start {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::ledger::cpu_model(),
        crate::load_average(),
    );
    let settings = [Durability::Full, Durability::NoSync];
    // Per workload, per setting.
    let mut one: HashMap<Durability, Tally> = HashMap::new();
    let mut many: HashMap<Durability, Tally> = HashMap::new();
    let mut raw: HashMap<Durability, Tally> = HashMap::new();
    for round in 0..args.rounds {
        // Alternate which setting goes first, so neither always runs on a warmer cache
        // or a quieter disk.
        let order: Vec<Durability> = if round % 2 == 0 {
            settings.to_vec()
        } else {
            settings.iter().rev().copied().collect()
        };
        for d in order {
            let base = dir.join(format!("r{round}-{}", label(d)));
            let t = one.entry(d).or_default();
            let from = t.samples.len();
            missions(&base.join("one"), d, 1, args.steps, t).await?;
            t.round(from);
            let t = many.entry(d).or_default();
            let from = t.samples.len();
            missions(&base.join("many"), d, args.missions, args.steps, t).await?;
            t.round(from);
            let t = raw.entry(d).or_default();
            let from = t.samples.len();
            appends(&base.join("raw"), d, args.appends, t).await?;
            t.round(from);
            // Each round's databases go once measured, so the disk does not fill.
            std::fs::remove_dir_all(&base)?;
        }
    }

    println!(
        "| workload | FULL steps/s | no-fsync steps/s | FULL p50 | no-fsync p50 | FULL p99 | no-fsync p99 | FULL / no-fsync (p50) | per round | commits per step |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rows = [
        (
            format!("1 mission × {} `fs.read` steps", args.steps),
            &mut one,
        ),
        (
            format!(
                "{} missions at once × {} `fs.read` steps",
                args.missions, args.steps
            ),
            &mut many,
        ),
        (
            "raw `Store::append`, 1 entry of 100 B per call".to_owned(),
            &mut raw,
        ),
    ];
    for (name, tallies) in rows {
        for t in tallies.values_mut() {
            t.samples.sort();
        }
        let full = &tallies[&Durability::Full];
        let off = &tallies[&Durability::NoSync];
        let p = |t: &Tally, q: f64| percentile(&t.samples, q);
        let ratios: Vec<f64> = full
            .round_p50s
            .iter()
            .zip(&off.round_p50s)
            .map(|(f, o)| f.as_secs_f64() / o.as_secs_f64().max(1e-9))
            .collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        println!(
            "| {name} | {:.0} | {:.0} | {} | {} | {} | {} | {:.2} | {lo:.2}-{hi:.2} | {:.2} |",
            full.rate(),
            off.rate(),
            fmt_duration(p(full, 50.0)),
            fmt_duration(p(off, 50.0)),
            fmt_duration(p(full, 99.0)),
            fmt_duration(p(off, 99.0)),
            p(full, 50.0).as_secs_f64() / p(off, 50.0).as_secs_f64().max(1e-9),
            full.commits as f64 / full.done.max(1) as f64,
        );
    }
    println!(
        "\n{} rounds, FULL and no-fsync alternating; per-step latency is the time between two \
         reasoner calls of a mission; \"per round\" is the lowest and highest of the \
         rounds' p50 ratios; {:.1} s in all; load average at the end {}",
        args.rounds,
        started.elapsed().as_secs_f64(),
        crate::load_average(),
    );
    Ok(())
}
