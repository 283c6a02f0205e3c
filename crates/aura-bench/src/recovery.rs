//! `aura-bench recovery`: how long a node takes to have every non-terminal mission running
//! again after it was killed with SIGKILL.
//!
//! A child process (this binary, `recovery --populate`) starts a node on a fresh store,
//! creates one agent per mission, submits the missions and waits until every one of them
//! is running with its first reasoner turn in flight (the reasoner never answers), then
//! says so; the parent kills it with SIGKILL. The parent then starts a node on the same
//! store and times (a) the engine's start, which replays every agent's record and
//! recovers the non-terminal missions, and (b) the moment the last recovered mission has
//! asked its reasoner again, i.e. is running again. The goal (durable-missions issue) is
//! (b) ≤ 2 s for 10,000 missions.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aura_engine::test_util::ScriptedReasoner;
use aura_kernel::MissionState;

use crate::missions::{create_agent, engine_on, spec};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Non-terminal missions the killed node leaves behind
    #[arg(long, default_value_t = 10_000)]
    missions: u32,
    /// Where to put the store [default: a temporary directory]
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// (internal) Be the node that is killed: populate `--dir`, then wait
    #[arg(long, hide = true)]
    populate: bool,
}

/// Waits until `silent` (a reasoner that never answers) has been asked for `n` turns.
async fn until_asked(silent: &ScriptedReasoner, n: u32, limit: Duration) -> anyhow::Result<()> {
    let n = n as usize;
    if tokio::time::timeout(limit, silent.started(n))
        .await
        .is_err()
    {
        anyhow::bail!(
            "only {} of {n} missions reached their reasoner within {limit:?}",
            silent.turns_started()
        );
    }
    Ok(())
}

/// The node that is killed: missions submitted and running, then it waits to die.
async fn populate(dir: &std::path::Path, missions: u32) -> anyhow::Result<()> {
    let silent = Arc::new(ScriptedReasoner::silent());
    let (engine, _) = engine_on(dir, silent.clone()).await?;
    for i in 0..missions {
        let agent = create_agent(&engine, &format!("a{i}")).await?;
        engine
            .submit(agent, spec(&["fs.read", "mission.finish"], None, 10))
            .await?;
    }
    until_asked(&silent, missions, Duration::from_secs(600)).await?;
    println!("ready");
    std::future::pending::<()>().await;
    Ok(())
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().join("node"));
    if args.populate {
        return populate(&dir, args.missions).await;
    }
    println!("## Recovery after SIGKILL\n");
    let populating = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["recovery", "--populate", "--missions"])
        .arg(args.missions.to_string())
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        anyhow::bail!("the populating node did not get ready: {line:?}");
    }
    child.kill()?; // SIGKILL: no shutdown, nothing flushed beyond what was committed
    child.wait()?;
    let populated = populating.elapsed();

    let silent = Arc::new(ScriptedReasoner::silent());
    let start = Instant::now();
    let (engine, _) = engine_on(&dir, silent.clone()).await?;
    let started = start.elapsed();
    until_asked(&silent, args.missions, Duration::from_secs(600)).await?;
    let all_running = start.elapsed();
    let running = engine
        .missions(None, None, Some(MissionState::Running))
        .len();
    engine.shutdown().await;
    println!(
        "populated by the killed node in {:.1} s: {} agents, one running mission each\n",
        populated.as_secs_f64(),
        args.missions
    );
    println!(
        "| missions left running at SIGKILL | engine start (replay + recovery) | all running again | goal |\n|---:|---:|---:|---:|"
    );
    println!(
        "| {} | {} | {} | ≤ 2 s |",
        args.missions,
        crate::fmt_duration(started),
        crate::fmt_duration(all_running),
    );
    if running != args.missions as usize {
        anyhow::bail!(
            "{running} of {} missions are running after recovery",
            args.missions
        );
    }
    Ok(())
}
