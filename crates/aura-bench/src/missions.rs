//! `aura-bench missions`: the governed runtime under load, end to end through the engine
//! with real parts: the SQLite store (WAL, synchronous=FULL, signed checkpoints), the
//! default Cedar policy set, the built-in fs tools on a real workspace.
//!
//! 1. **Step overhead.** One mission at a time doing many small steps (`fs.read` of a
//!    100-byte file). The reasoner answers at once, so the time between two consecutive
//!    reasoner calls of a mission is one whole kernel step: record the turn, ask policy,
//!    run the tool, record the effect, commit durably under a signed checkpoint. The peer
//!    is raw SQLite committing the same number of rows of the same size per transaction,
//!    with the same durability: the floor any durable step must pay.
//! 2. **Throughput.** Many 3-step missions (`fs.write`, `fs.read`, `mission.finish`)
//!    across many agents at once: completed missions per second, submission included.
//!
//! The reasoner is aura-engine's scripted test double, answering by step number (each
//! mission gets the same script, whatever the interleaving); its time is excluded by
//! construction since it answers without waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aura_core::door::{OsEntropy, SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId};
use aura_engine::ports::Reasoner;
use aura_engine::test_util::{Answer, OneReasoner, ScriptedReasoner};
use aura_engine::{Handle, NewAgent, Options, Services};
use aura_identity::{Level, Namespace, TrustSet};
use aura_kernel::{Authority, Budget, MissionSpec, MissionState};
use aura_store::SqliteStore;
use serde_json::json;

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Steps in the step-overhead run
    #[arg(long, default_value_t = 2_000)]
    steps: u32,
    /// Missions in the throughput run
    #[arg(long, default_value_t = 4_000)]
    missions: u32,
    /// Agents the throughput missions are spread over (each agent runs one at a time)
    #[arg(long, default_value_t = 64)]
    agents: u32,
    /// Where to put the databases [default: a temporary directory]
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Which runs to make: both, or one alone (`throughput` alone is what to profile:
    /// run it under callgrind with two mission counts and take the difference per mission)
    #[arg(long, value_enum, default_value_t = Part::Both)]
    run: Part,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Both,
    Steps,
    Throughput,
}

/// What the scripted reasoner does.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// `fs.read` forever (the step-overhead run ends it with a budget).
    Reads,
    /// `fs.write`, `fs.read`, then `mission.finish`.
    ThreeSteps,
}

/// When each reasoner call of each mission arrived, keyed by the mission's system prompt
/// (which names the mission).
pub(crate) type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// aura-engine's scripted reasoner answering by the mission's step with `answer`'s call,
/// noting in `arrivals` when each call arrives.
pub(crate) fn by_step(
    arrivals: &Arrivals,
    answer: impl Fn(usize) -> (&'static str, serde_json::Value) + Send + Sync + 'static,
) -> ScriptedReasoner {
    let arrivals = arrivals.clone();
    ScriptedReasoner::by_step(move |step, request| {
        let now = Instant::now();
        let key = request
            .messages
            .first()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        if let Ok(mut calls) = arrivals.lock() {
            calls.entry(key).or_default().push(now);
        }
        let (name, arguments) = answer(step);
        Answer::call(name, arguments)
    })
}

struct Node {
    engine: Handle,
    arrivals: Arrivals,
    workspaces: std::path::PathBuf,
}

async fn node(dir: &std::path::Path, script: Script) -> anyhow::Result<Node> {
    let arrivals = Arrivals::default();
    let reasoner = by_step(&arrivals, move |step| match (script, step) {
        (Script::Reads, _) => ("fs.read", json!({"path": "data.txt"})),
        (Script::ThreeSteps, 0) => (
            "fs.write",
            json!({"path": "out.txt", "content": "x".repeat(100)}),
        ),
        (Script::ThreeSteps, 1) => ("fs.read", json!({"path": "out.txt"})),
        (Script::ThreeSteps, _) => ("mission.finish", json!({"summary": "done"})),
    });
    let (engine, workspaces) = engine_on(dir, Arc::new(reasoner)).await?;
    Ok(Node {
        engine,
        arrivals,
        workspaces,
    })
}

/// An engine on the store in `dir` (created, or reopened and recovered), with the default
/// policy set, the built-in tools and `reasoner` for every mission; returns it with its
/// workspaces directory.
pub(crate) async fn engine_on(
    dir: &std::path::Path,
    reasoner: Arc<dyn Reasoner>,
) -> anyhow::Result<(Handle, std::path::PathBuf)> {
    engine_with(dir, reasoner, Default::default()).await
}

/// [`engine_on`] with the store opened under `store` options.
pub(crate) async fn engine_with(
    dir: &std::path::Path,
    reasoner: Arc<dyn Reasoner>,
    store: aura_store::sqlite::Options,
) -> anyhow::Result<(Handle, std::path::PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1))?);
    let store = SqliteStore::open(
        dir.join("ledger.db"),
        signer.clone(),
        Arc::new(SystemClock),
        store,
    )?;
    let registry = aura_tools::Registry::builtin(Default::default());
    let services = Services {
        policy: Arc::new(aura_engine::adapters::policy::CedarPolicy::new(Arc::new(
            aura_policy::PolicySet::defaults(),
        ))),
        tools: Arc::new(aura_engine::adapters::tools::RegistryTools::new(
            Arc::new(registry),
            aura_tools::Limits::default(),
            false,
        )),
        reasoners: Arc::new(OneReasoner(reasoner)),
    };
    let workspaces = dir.join("workspaces");
    let engine = Handle::start(
        Options {
            keystore: Some(dir.join("keys")),
            workspaces: workspaces.clone(),
            ..Default::default()
        },
        Arc::new(store),
        signer.clone(),
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        TrustSet::new([signer.public_key()]),
        services,
    )
    .await?;
    Ok((engine, workspaces))
}

pub(crate) fn spec(tools: &[&str], workspace: Option<String>, max_steps: u32) -> MissionSpec {
    MissionSpec {
        regions: Vec::new(),
        objective: "bench".into(),
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        authority: Authority {
            credential: None,
            level: Level::L2,
        },
        timeout_secs: 3600,
        namespace: Namespace::default_namespace(),
        budget: Budget {
            max_steps,
            max_tokens: u64::MAX,
        },
        reasoner: String::new(),
        network: Vec::new(),
        workspace,
        steps: None,
        tool_steps: Default::default(),
    }
}

async fn until_terminal(engine: &Handle, id: MissionId) -> MissionState {
    loop {
        if let Some(m) = engine.mission(id)
            && m.state.is_terminal()
        {
            return m.state;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    println!("## Missions (real store, default policy, fs tools)\n");
    println!(
        "machine: {} cores; {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::ledger::cpu_model()
    );

    if args.run != Part::Throughput {
        steps(&args, &dir).await?;
    }
    if args.run != Part::Steps {
        throughput(&args, &dir).await?;
    }
    Ok(())
}

/// 1. Step overhead: one mission, many steps, nothing else running.
async fn steps(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let n = node(&dir.join("steps"), Script::Reads).await?;
    let agent = create_agent(&n.engine, "stepper").await?;
    let ws = n.workspaces.join("default").join("steps");
    std::fs::create_dir_all(&ws)?;
    std::fs::write(ws.join("data.txt"), "y".repeat(100))?;
    let before = n.engine.store().tree_size().await?;
    let id = n
        .engine
        .submit(agent, spec(&["fs.read"], Some("steps".into()), args.steps))
        .await?;
    let state = until_terminal(&n.engine, id).await;
    let after = n.engine.store().tree_size().await?;
    // One signed checkpoint per commit: how many commits (and fsyncs) a step pays.
    let step_commits = n.engine.store().checkpoints(before, 1_000_000).await?.len();
    let mut gaps: Vec<Duration> = {
        let calls = n.arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let times = calls.values().next().cloned().unwrap_or_default();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    };
    gaps.sort();
    // What a step writes: entries per step and their average encoded size.
    let entries = n
        .engine
        .store()
        .entries(before, (after - before) as usize)
        .await?;
    let bytes: usize = entries.iter().map(|e| e.encoded.len()).sum();
    let per_step = entries.len() as f64 / f64::from(args.steps.max(1));
    let row_bytes = bytes / entries.len().max(1);
    n.engine.shutdown().await;
    let rows_per_commit = per_step.round().max(1.0) as u64;
    let mut raw = raw_commits(&dir.join("raw.db"), 2_000, rows_per_commit, row_bytes)?;
    raw.sort();
    println!(
        "| one mission, {} steps ({state}) | p50 | p99 | mean | commits per step |\n|---|---:|---:|---:|---:|",
        gaps.len() + 1
    );
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
    println!(
        "| Aura kernel step (turn, policy, fs.read, effect; durable + signed) | {} | {} | {} | {:.2} |",
        fmt_duration(percentile(&gaps, 50.0)),
        fmt_duration(percentile(&gaps, 99.0)),
        fmt_duration(mean(&gaps)),
        step_commits as f64 / f64::from(args.steps.max(1)),
    );
    println!(
        "| raw SQLite: {rows_per_commit} rows of {row_bytes} B per commit (WAL, synchronous=FULL) | {} | {} | {} | 1 |",
        fmt_duration(percentile(&raw, 50.0)),
        fmt_duration(percentile(&raw, 99.0)),
        fmt_duration(mean(&raw)),
    );
    println!(
        "| Aura / raw (p50) | {:.2}× | | | |\n",
        percentile(&gaps, 50.0).as_secs_f64() / percentile(&raw, 50.0).as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// 2. Throughput: many 3-step missions over many agents.
async fn throughput(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let n = node(&dir.join("throughput"), Script::ThreeSteps).await?;
    let mut agents = Vec::new();
    for i in 0..args.agents {
        agents.push(create_agent(&n.engine, &format!("a{i}")).await?);
    }
    let before = n.engine.store().tree_size().await?;
    let start = Instant::now();
    let mut handles = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let engine = n.engine.clone();
        let agent = *agent;
        let count =
            args.missions / args.agents + u32::from((i as u32) < args.missions % args.agents);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..count {
                let id = engine
                    .submit(
                        agent,
                        spec(&["fs.write", "fs.read", "mission.finish"], None, 10),
                    )
                    .await?;
                ids.push(id);
            }
            let mut completed = 0u32;
            for id in ids {
                if until_terminal(&engine, id).await == MissionState::Completed {
                    completed += 1;
                }
            }
            anyhow::Ok(completed)
        }));
    }
    let mut completed = 0;
    for h in handles {
        completed += h.await??;
    }
    let elapsed = start.elapsed();
    // Commits of the whole run (submission and start included), per step; concurrent
    // missions share commits (group commit), so this is below a lone mission's figure.
    let commits = n
        .engine
        .store()
        .checkpoints(before, 10_000_000)
        .await?
        .len();
    n.engine.shutdown().await;
    println!(
        "| {} three-step missions over {} agents | completed | seconds | missions/s | steps/s | commits per step |\n|---|---:|---:|---:|---:|---:|",
        args.missions, args.agents
    );
    println!(
        "| Aura (submit, 3 steps each, durable + signed) | {completed} | {:.2} | {:.0} | {:.0} | {:.2} |",
        elapsed.as_secs_f64(),
        f64::from(completed) / elapsed.as_secs_f64(),
        f64::from(completed) * 3.0 / elapsed.as_secs_f64(),
        commits as f64 / (f64::from(completed) * 3.0).max(1.0),
    );
    if completed != args.missions {
        anyhow::bail!(
            "{} of {} missions did not complete",
            args.missions - completed,
            args.missions
        );
    }
    Ok(())
}

pub(crate) async fn create_agent(engine: &Handle, name: &str) -> anyhow::Result<AgentId> {
    Ok(engine
        .create_agent(NewAgent {
            name: name.into(),
            level: Level::L2,
            namespace: Namespace::default_namespace(),
            public_key: None,
        })
        .await?
        .id)
}

/// Raw SQLite, one transaction per "step": `rows` rows of `row_bytes` bytes, WAL and
/// synchronous=FULL. Returns each commit's latency.
fn raw_commits(
    path: &std::path::Path,
    commits: u32,
    rows: u64,
    row_bytes: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut conn = rusqlite::Connection::open(path)?;
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE entries (idx INTEGER PRIMARY KEY, agent BLOB NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL, raw BLOB NOT NULL);
         CREATE UNIQUE INDEX entries_by_agent ON entries (agent, seq);",
    )?;
    let raw = vec![7u8; row_bytes];
    let mut out = Vec::with_capacity(commits as usize);
    let mut idx = 0i64;
    for _ in 0..commits {
        let t = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO entries (idx, agent, seq, hash, raw) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for _ in 0..rows {
                stmt.execute(rusqlite::params![idx, [1u8; 16], idx, [7u8; 32], raw])?;
                idx += 1;
            }
        }
        tx.commit()?;
        out.push(t.elapsed());
    }
    Ok(out)
}
