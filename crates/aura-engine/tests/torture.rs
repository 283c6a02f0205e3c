//! kill -9 torture: a node running many concurrent missions is SIGKILLed at random
//! moments, again and again, and restarted on the same ledger. Afterwards every mission
//! is terminal, no completed step ran twice, no acknowledged entry is lost, the ledger
//! verifies and every mission replays to its recorded state hashes.
//!
//! The node is this test binary run again as a child (`torture_child`, ignored unless
//! asked for by name): a real engine on a real SQLite ledger (`synchronous=FULL`) with the
//! real file tools, a scripted reasoner that follows each mission's plan, and `count.run`,
//! a command-like tool whose side effect is a line appended to a file. Every execution of
//! every tool is also logged (one `write(2)` before the tool runs, which a SIGKILL cannot
//! undo), so the parent can hold executions against the attempts the ledger recorded.
//! The child prints each entry the store acknowledged (`ack <index> <hash>`), after the
//! commit, so the parent knows what must survive.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aura_core::MissionId;
use aura_core::door::{OsEntropy, SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_engine::adapters::tools::RegistryTools;
use aura_engine::ports::{
    ErrorKind, ExecContext, Proposal, Target, ToolError, ToolSpec, Tools, failed_effect,
};
use aura_engine::test_util::{self, Answer, OneReasoner, PermitAll, ScriptedReasoner};
use aura_engine::{Handle, NewAgent, Options, Services};
use aura_identity::{Level, Namespace, TrustSet};
use aura_kernel::{
    Authority, Budget, Effect, Event, MissionSpec, Recorded, RetryPolicy, StepPolicy, ToolCall,
};
use aura_store::{EntryRef, SqliteStore, Store, Verification};
use serde_json::{Value, json};

const CHILD_DIR: &str = "AURA_TORTURE_DIR";
const CHILD_TARGET: &str = "AURA_TORTURE_MISSIONS";
const CHILD_SUBMIT: &str = "AURA_TORTURE_SUBMIT";
const AGENTS: usize = 8;
/// Missions each life submits (the last one submits all that are left).
const PER_LIFE: usize = 2;

// ---------------------------------------------------------------------------------------
// The child: a node that runs missions until it is killed.

/// Follows the plan in the mission's objective (`plan: wcw`: `w` writes a file, `c` runs
/// `count.run`), one call per turn, then finishes. Call ids are `s<step>`; `count.run`
/// reads its step from them.
fn plan_reasoner() -> ScriptedReasoner {
    ScriptedReasoner::by_step(|step, req| {
        let Some(objective) = req
            .messages
            .iter()
            .find_map(|m| m.content.strip_prefix("Objective: plan: "))
        else {
            return Answer::Fail("no plan".into());
        };
        let call = match objective.as_bytes().get(step) {
            Some(b'w') => ToolCall {
                id: format!("s{step}"),
                name: "fs.write".into(),
                arguments: json!({ "path": format!("f{step}.txt"), "content": format!("step {step}") }),
            },
            Some(_) => ToolCall {
                id: format!("s{step}"),
                name: "count.run".into(),
                arguments: json!({}),
            },
            None => ToolCall {
                id: format!("s{step}"),
                name: "mission.finish".into(),
                arguments: json!({ "summary": "plan done" }),
            },
        };
        Answer::Turn(test_util::turn(vec![call]))
    })
}

/// The real tools plus `count.run`; every execution logged before it happens.
#[derive(Debug)]
struct Counted {
    real: RegistryTools,
    log: PathBuf,
}

impl Counted {
    fn log(&self, line: &str) -> usize {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        f.write_all(format!("{line}\n").as_bytes()).unwrap();
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| *l == line)
            .count()
    }
}

#[async_trait]
impl Tools for Counted {
    fn specs(&self, names: &[String]) -> Vec<ToolSpec> {
        let mut specs = self.real.specs(names);
        if names.iter().any(|n| n == "count.run") {
            specs.push(ToolSpec {
                name: "count.run".into(),
                description: "appends a line to count.txt".into(),
                parameters: json!({ "type": "object" }),
            });
        }
        specs
    }

    fn prepare(&self, call: &ToolCall) -> Result<Proposal, ToolError> {
        if call.name == "count.run" {
            return Ok(Proposal {
                call: call.clone(),
                target: Target::Mission,
                destructive: false,
            });
        }
        self.real.prepare(call)
    }

    async fn execute(&self, ctx: &ExecContext, proposal: &Proposal) -> Effect {
        let call = &proposal.call;
        let nth = self.log(&format!("{} {}", ctx.mission, call.id));
        if call.name != "count.run" {
            return self.real.execute(ctx, proposal).await;
        }
        // Every third command fails its first execution with a transient error, so
        // retries happen under the kills too.
        let transient = call.id.ends_with('1') || call.id.ends_with('4');
        if transient && nth == 1 {
            return failed_effect(call, ErrorKind::Io, "the disk hiccupped");
        }
        // A command takes a while (20-110 ms), so that kills land while calls are in
        // flight.
        let step: u64 = call.id.trim_start_matches('s').parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(20 + step * 37 % 91)).await;
        std::fs::create_dir_all(&ctx.workspace).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ctx.workspace.join("count.txt"))
            .unwrap();
        f.write_all(format!("{}\n", call.id).as_bytes()).unwrap();
        Effect {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            ok: true,
            output: json!({ "counted": true }),
            error: None,
            error_kind: None,
            compensation: None,
            message: None,
            finish: None,
        }
    }

    async fn compensate(
        &self,
        ctx: &ExecContext,
        tool: &str,
        compensation: &Value,
    ) -> Result<(), ToolError> {
        self.real.compensate(ctx, tool, compensation).await
    }
}

fn signer() -> Arc<Signer> {
    Arc::new(Signer::ephemeral("node", &SeededEntropy::new(9)).unwrap())
}

async fn engine(dir: &Path, store: Arc<dyn Store>, signer: Arc<Signer>) -> Handle {
    let registry = aura_tools::Registry::builtin(aura_tools::BuiltinOptions::default());
    Handle::start(
        Options {
            keystore: Some(dir.join("keys")),
            workspaces: dir.join("workspaces"),
            ..Default::default()
        },
        store,
        signer.clone(),
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        TrustSet::new([signer.public_key()]),
        Services {
            policy: Arc::new(PermitAll),
            tools: Arc::new(Counted {
                real: RegistryTools::new(Arc::new(registry), aura_tools::Limits::default(), false),
                log: dir.join("executions.log"),
            }),
            reasoners: Arc::new(OneReasoner(Arc::new(plan_reasoner()))),
        },
    )
    .await
    .unwrap()
}

fn plan(agent: usize, n: usize) -> String {
    let steps = 4 + (agent + n) % 6;
    (0..steps)
        .map(|i| {
            if (agent * 7 + n * 3 + i).is_multiple_of(3) {
                'c'
            } else {
                'w'
            }
        })
        .collect()
}

fn spec(plan: &str) -> MissionSpec {
    MissionSpec {
        regions: Vec::new(),
        objective: format!("plan: {plan}"),
        tools: vec![
            "fs.write".into(),
            "count.run".into(),
            "mission.finish".into(),
        ],
        authority: Authority {
            credential: None,
            level: Level::L2,
        },
        timeout_secs: 3_600,
        namespace: Namespace::new("default").unwrap(),
        budget: Budget::default(),
        reasoner: String::new(),
        network: vec![],
        workspace: None,
        // Kills count as failed attempts: retry without limit, quickly.
        steps: Some(StepPolicy {
            retry: RetryPolicy {
                initial_interval_ms: 5,
                max_interval_ms: 20,
                max_attempts: 0,
                ..RetryPolicy::default()
            },
            ..StepPolicy::default()
        }),
        tool_steps: Default::default(),
    }
}

/// The node: on a fresh directory it creates the agents and submits the missions; then
/// says `ready` and runs, printing what the store acknowledges, until killed (or until
/// every mission is terminal, when it says `done`). The first life is never killed
/// before `ready`, so that every mission exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child node of the kill -9 torture; run by `kill_dash_nine_*`"]
async fn torture_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let signer = signer();
    let store = Arc::new(
        SqliteStore::open(
            dir.join("ledger.db"),
            signer.clone(),
            Arc::new(SystemClock),
            Default::default(),
        )
        .unwrap(),
    );
    let mut commits = store.subscribe();
    tokio::spawn(async move {
        while let Ok(c) = commits.recv().await {
            let mut out = std::io::stdout().lock();
            for e in &c.entries {
                writeln!(out, "ack {} {}", e.entry.index, e.hash.to_hex()).unwrap();
            }
        }
    });
    let engine = engine(&dir, store, signer).await;
    if engine.agents(None).is_empty() {
        for a in 0..AGENTS {
            engine
                .create_agent(NewAgent {
                    name: format!("t{a}"),
                    level: Level::L2,
                    namespace: Namespace::new("default").unwrap(),
                    public_key: None,
                })
                .await
                .unwrap();
        }
    }
    let mut agents = engine.agents(None);
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    // Each life brings a little new work, so that kills keep landing on missions in
    // flight rather than on a node with nothing left to do.
    let target: usize = std::env::var(CHILD_TARGET).unwrap().parse().unwrap();
    let submit: usize = std::env::var(CHILD_SUBMIT).unwrap().parse().unwrap();
    let have = engine.missions(None, None, None).len();
    for n in have..(have + submit).min(target) {
        let a = n % AGENTS;
        engine
            .submit(agents[a].id, spec(&plan(a, n)))
            .await
            .unwrap();
    }
    println!("ready");
    let started = Instant::now();
    loop {
        let missions = engine.missions(None, None, None);
        if missions.len() == target && missions.iter().all(|m| m.state.is_terminal()) {
            println!("done");
        } else if started.elapsed() > Duration::from_secs(20) {
            // For the parent's report, should this life never finish.
            for m in missions.iter().filter(|m| !m.state.is_terminal()) {
                println!(
                    "stuck {} {} paused={} calls={:?} turn_retry_at={:?}",
                    m.id, m.state, m.paused, m.calls, m.turn_retry_at
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The parent: kill, restart, check.

/// A small deterministic generator for kill moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One life of the node: started, then SIGKILLed `kill_after` after it is ready (or, with `None`, once
/// it says every mission is done). Returns the acknowledged entries and whether it got
/// to `done`.
fn life(dir: &Path, target: usize, kill_after: Option<Duration>) -> (Vec<(u64, String)>, bool) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "torture_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_TARGET, target.to_string())
        .env(
            CHILD_SUBMIT,
            if kill_after.is_some() {
                PER_LIFE
            } else {
                target
            }
            .to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    let mut done = false;
    let mut up_at: Option<Instant> = None;
    let mut stuck = None;
    let started = Instant::now();
    loop {
        let wait = match (up_at, kill_after) {
            (Some(at), Some(after)) => after.saturating_sub(at.elapsed()),
            _ => Duration::from_millis(50),
        };
        match rx.recv_timeout(wait) {
            // libtest may have begun the line (`test torture_child ... `).
            Ok(line) if line.ends_with("ready") => up_at = Some(Instant::now()),
            Ok(line) if line.ends_with("done") => {
                done = true;
                if kill_after.is_none() {
                    break;
                }
            }
            Ok(line) if line.starts_with("stuck ") => stuck = Some(line),
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("ack ") {
                    let (i, h) = rest.split_once(' ').unwrap();
                    acks.push((i.parse().unwrap(), h.to_owned()));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the node died by itself: {:?}", child.wait());
            }
        }
        if let (Some(at), Some(after)) = (up_at, kill_after)
            && at.elapsed() >= after
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the node does not get there: {stuck:?}"
        );
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What it printed before it died was acknowledged before it was printed.
    for line in rx.iter() {
        if let Some(rest) = line.strip_prefix("ack ") {
            let (i, h) = rest.split_once(' ').unwrap();
            acks.push((i.parse().unwrap(), h.to_owned()));
        }
    }
    reader.join().unwrap();
    (acks, done)
}

fn torture(kills: u32, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(seed);
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let target = kills as usize / 2 + AGENTS;
    for _ in 0..kills {
        let (acks, _) = life(dir, target, Some(Duration::from_millis(5 + rng.below(120))));
        acked.extend(acks);
    }
    // The last life runs until every mission is terminal.
    let (acks, done) = life(dir, target, None);
    acked.extend(acks);
    assert!(done, "the missions did not all end");

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(check(dir, &acked, kills as usize, target));
}

async fn check(dir: &Path, acked: &BTreeMap<u64, String>, kills: usize, target: usize) {
    let signer = signer();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            dir.join("ledger.db"),
            signer.clone(),
            Arc::new(SystemClock),
            Default::default(),
        )
        .unwrap(),
    );

    // The ledger verifies, and holds every acknowledged entry with the hash it had.
    match store.verify(Box::new(|_| {})).await.unwrap() {
        Verification::Ok(_) => {}
        Verification::Failed(f) => panic!("the ledger does not verify: {f:?}"),
    }
    assert!(!acked.is_empty());
    for (index, hash) in acked {
        let e = store.entry(EntryRef::Index(*index)).await.unwrap();
        let e = e.unwrap_or_else(|| panic!("acknowledged entry {index} is lost"));
        assert_eq!(&e.hash.to_hex(), hash, "entry {index} changed");
    }

    // Every mission is terminal and replays to its recorded hashes.
    let engine = engine(dir, store.clone(), signer).await;
    let missions = engine.missions(None, None, None);
    assert_eq!(missions.len(), target);
    let mut attempts: BTreeMap<(MissionId, String), (u32, u32, bool)> = BTreeMap::new();
    let mut interrupted = BTreeSet::new();
    for m in &missions {
        assert!(m.state.is_terminal(), "{} is {}", m.id, m.state);
        let replayed = engine.replay(m.id).await.unwrap().unwrap();
        assert_eq!(replayed.state_hash, m.state_hash);
        let entries = engine.record(m.agent, 1, 100_000).await.unwrap();
        for e in entries
            .iter()
            .filter(|e| e.entry.kind.as_str().starts_with("mission."))
        {
            let r = Recorded::from_body(&e.entry.body).unwrap();
            if r.mission != m.id {
                continue;
            }
            match r.event {
                Event::Attempt { call_id, .. } => {
                    attempts.entry((m.id, call_id)).or_default().0 += 1;
                }
                Event::AttemptFailed {
                    call_id: Some(call_id),
                    kind,
                    ..
                } => {
                    if kind == aura_kernel::kinds::INTERRUPTED {
                        interrupted.insert((m.id, call_id.clone()));
                    }
                    attempts.entry((m.id, call_id)).or_default().1 += 1;
                }
                Event::Effect { effect, .. } => {
                    attempts.entry((m.id, effect.call_id)).or_default().2 = true;
                }
                _ => {}
            }
        }
    }
    engine.shutdown().await;

    // Held against the execution log: nothing ran without a recorded attempt before it,
    // and a call whose effect is recorded ran at most once per recorded attempt, with
    // every attempt but the last recorded as failed: a completed step never ran again.
    let log = std::fs::read_to_string(dir.join("executions.log")).unwrap_or_default();
    let mut executions: BTreeMap<(String, String), u32> = BTreeMap::new();
    for line in log.lines() {
        let (m, c) = line.split_once(' ').unwrap();
        *executions.entry((m.to_owned(), c.to_owned())).or_default() += 1;
    }
    let mut completed_calls = 0;
    let mut retried = BTreeSet::new();
    for ((mission, call), (started, failed, effect)) in &attempts {
        let ran = executions
            .get(&(mission.to_string(), call.clone()))
            .copied()
            .unwrap_or(0);
        assert!(
            ran <= *started,
            "{mission} {call}: ran {ran} times but only {started} attempts were recorded"
        );
        if *effect {
            completed_calls += 1;
            assert!(ran >= 1, "{mission} {call}: an effect without an execution");
            assert_eq!(
                failed + 1,
                *started,
                "{mission} {call}: the completed call was attempted after it completed"
            );
        }
        if *failed > 0 {
            retried.insert((mission, call));
        }
    }
    for (key, ran) in &executions {
        let id: MissionId = key.0.parse().unwrap();
        assert!(
            attempts.contains_key(&(id, key.1.clone())),
            "{key:?} ran {ran} times without any recorded attempt"
        );
    }
    let interrupted = interrupted.len();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for m in &missions {
        *states.entry(m.state.to_string()).or_default() += 1;
        if m.state != aura_kernel::MissionState::Completed {
            println!("{} {}: {:?}", m.id, m.state, m.reason);
        }
    }
    println!("{states:?}");
    println!(
        "{completed_calls} calls completed, {} retried, {interrupted} interrupted by a kill",
        retried.len()
    );
    assert!(completed_calls > target, "too little ran");
    assert!(
        interrupted * 10 >= kills,
        "only {interrupted} calls were in flight at {kills} kills: the torture did not bite"
    );
}

#[test]
fn kill_dash_nine_torture_first_half() {
    torture(
        std::env::var("AURA_TORTURE_KILLS").map_or(250, |k| k.parse().unwrap()),
        0x9e37_79b9_7f4a_7c15,
    );
}

#[test]
fn kill_dash_nine_torture_second_half() {
    torture(250, 0xd1b5_4a32_d192_ed03);
}
