//! Missions whose commits fail at each of the store's failpoints (see `aura_store::sqlite`):
//! the submitter hears a clear error, or the mission the engine shows is the one the
//! ledger holds; the ledger verifies; and after a restart on the same store every
//! mission replays and runs to its end.
//!
//! The engine, the real tool registry and the real SQLite store are as in missions.rs; the
//! reasoner is a script (aura-engine's `test_util::ScriptedReasoner`) that, when a chosen
//! turn starts, arms a failpoint for the commits that follow, so the failure falls on that
//! step's own commits whatever else the engine records. Tests wait for turns to start,
//! and hold the next turn while they look, rather than sleep. Failpoints are
//! process-wide: nextest runs each test in its own process; under `cargo test`
//! `FailScenario::setup` holds a global lock that serialises these tests.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aura_core::door::SeededEntropy;
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId};
use aura_engine::Handle;
use aura_engine::test_util::{Answer, OneReasoner, PermitAll, ScriptedReasoner};
use aura_identity::{Level, Namespace};
use aura_kernel::{Authority, Budget, MissionSpec, MissionState};
use aura_store::Verification;
use fail::FailScenario;
use serde_json::json;

struct World {
    dir: tempfile::TempDir,
    signer: Arc<Signer>,
    script: Arc<ScriptedReasoner>,
    engine: Handle,
    agent: AgentId,
}

async fn open_engine(
    dir: &std::path::Path,
    signer: &Arc<Signer>,
    script: Arc<ScriptedReasoner>,
) -> Handle {
    support::start_engine(
        dir,
        signer,
        Arc::new(PermitAll),
        Arc::new(OneReasoner(script)),
    )
    .await
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1)).unwrap());
    let script = Arc::new(ScriptedReasoner::new());
    let engine = open_engine(dir.path(), &signer, script.clone()).await;
    let agent = support::create_agent(&engine).await;
    World {
        dir,
        signer,
        script,
        engine,
        agent,
    }
}

impl World {
    /// Stops the engine and starts a new one on the same store.
    async fn restart(self) -> World {
        let World {
            dir,
            signer,
            script,
            engine,
            agent,
        } = self;
        engine.shutdown().await;
        // The store's lock is free once the last handle on it is gone.
        drop(engine);
        let engine = open_engine(dir.path(), &signer, script.clone()).await;
        World {
            dir,
            signer,
            script,
            engine,
            agent,
        }
    }

    fn ws(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join("workspaces/default").join(name)
    }

    async fn submit(&self, workspace: &str) -> Result<MissionId, aura_engine::Error> {
        let spec = MissionSpec {
            regions: Vec::new(),
            objective: "write then read".into(),
            tools: ["fs.write", "fs.read", "mission.finish"]
                .map(String::from)
                .to_vec(),
            authority: Authority {
                credential: None,
                level: Level::L2,
            },
            timeout_secs: 120,
            namespace: Namespace::new("default").unwrap(),
            budget: Budget {
                max_steps: 10,
                max_tokens: 10_000,
            },
            reasoner: String::new(),
            network: vec![],
            workspace: Some(workspace.into()),
            steps: None,
            tool_steps: Default::default(),
        };
        self.engine.submit(self.agent, spec).await
    }

    /// Two tool steps, then `mission.finish`.
    fn script(&self) {
        self.script.extend([
            Answer::call("fs.write", json!({"path": "out.txt", "content": "written"})),
            Answer::call("fs.read", json!({"path": "out.txt"})),
        ]);
    }

    /// Waits until `n` reasoner turns have started (at most a minute).
    async fn turns_started(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(60), self.script.started(n))
            .await
            .unwrap_or_else(|_| {
                panic!("only {} of {n} turns started", self.script.turns_started())
            });
    }

    /// The whole ledger verifies.
    async fn verified(&self) {
        match self.engine.store().verify(Box::new(|_| {})).await.unwrap() {
            Verification::Ok(_) => {}
            Verification::Failed(f) => panic!("the ledger does not verify: {f}"),
        }
    }

    /// Every mission the engine knows replays from the ledger to exactly the state the
    /// engine shows.
    async fn every_mission_is_what_the_ledger_holds(&self) {
        for m in self.engine.missions(None, Some(self.agent), None) {
            let replayed = self.engine.replay(m.id).await.unwrap().unwrap();
            assert_eq!(replayed, *m, "mission {} in memory is not its record", m.id);
        }
    }

    /// Every mission runs to its end and replays.
    async fn every_mission_ends(&self) -> Vec<MissionState> {
        let mut ends = Vec::new();
        for m in self.engine.missions(None, Some(self.agent), None) {
            ends.push(until_terminal(&self.engine, m.id).await);
        }
        self.every_mission_is_what_the_ledger_holds().await;
        ends
    }
}

async fn until_terminal(engine: &Handle, id: MissionId) -> MissionState {
    for _ in 0..1000 {
        if let Some(m) = engine.mission(id)
            && m.state.is_terminal()
        {
            return m.state;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "mission {id} did not end: {:?}",
        engine.mission(id).map(|m| m.state)
    );
}

/// Counts failed commits: the store re-reads its state after every one, and the
/// `sqlite.append.reload` failpoint, given a callback, runs it there and carries on. This
/// tells a test that the failure it armed happened, and happened once, even where the
/// engine's answer does not show it.
fn count_failures() -> Arc<AtomicUsize> {
    let failed = Arc::new(AtomicUsize::new(0));
    let counter = failed.clone();
    fail::cfg_callback("sqlite.append.reload", move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    failed
}

/// An error and its causes on one line, as a client would be shown it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

/// The commit of a mission's submission fails. Where it was rolled back, the submitter
/// hears an error that says the outcome is unknown, and the mission never runs; where it
/// was stored after all, the engine sees the batch at the agent's head and takes the
/// submission as made: the submitter gets the mission's id and it runs. Either way the
/// agent's next mission works, and after a restart whatever the ledger holds runs to its
/// end.
async fn submit_fails(failpoint: &'static str, action: &str, kept: bool) {
    let scenario = FailScenario::setup();
    let w = world().await;
    w.script();
    let failed = count_failures();
    fail::cfg(failpoint, &format!("1*{action}->off")).unwrap();
    let first = w.submit("first").await;
    assert_eq!(failed.load(Ordering::SeqCst), 1, "failed commits");
    match (&first, kept) {
        (Ok(id), true) => {
            assert_eq!(
                until_terminal(&w.engine, *id).await,
                MissionState::Completed
            );
        }
        (Err(err), false) => {
            let line = chain(err);
            assert!(line.contains("may or may not be stored"), "{line}");
            assert!(!line.contains('\n'), "{line}");
            assert!(w.engine.missions(None, Some(w.agent), None).is_empty());
        }
        (outcome, _) => panic!("kept = {kept}, but the submission answered {outcome:?}"),
    }
    w.verified().await;
    w.every_mission_is_what_the_ledger_holds().await;

    // The agent's next write follows what was stored.
    w.script();
    let second = w.submit("second").await.unwrap();
    assert_eq!(
        until_terminal(&w.engine, second).await,
        MissionState::Completed
    );
    w.verified().await;

    let w = w.restart().await;
    let missions = w.engine.missions(None, Some(w.agent), None);
    assert_eq!(missions.len(), if kept { 2 } else { 1 });
    assert!(
        w.every_mission_ends()
            .await
            .iter()
            .all(|s| *s == MissionState::Completed)
    );
    w.verified().await;
    scenario.teardown();
}

/// Runs a mission whose `nth` commit after the reasoner's second turn fails (0: the one
/// recording the turn; 1: the next, whatever the engine records in it), and waits until
/// that step is over: until the next turn has started, which the script holds (nothing of
/// it recorded) until the caller releases it.
async fn fail_a_step(failpoint: &'static str, action: &str, nth: usize) -> (World, MissionId) {
    let w = world().await;
    w.script();
    let spec = if nth == 0 {
        format!("1*{action}->off")
    } else {
        format!("{nth}*off->1*{action}->off")
    };
    w.script
        .on_turn(1, move || fail::cfg(failpoint, &spec).unwrap());
    w.script.hold_from(2);
    let failed = count_failures();
    let id = w.submit("m").await.unwrap();
    // Whether the failed commit was kept (the step goes on) or rolled back (the step is
    // tried again a moment later), the mission's next turn comes once the failure is
    // handled; held, it leaves the engine waiting with nothing more to record.
    w.turns_started(3).await;
    assert_eq!(failed.load(Ordering::SeqCst), 1, "failed commits");
    (w, id)
}

/// A step's commit fails. The ledger verifies, and the mission the engine shows is the
/// one its record replays to: where the commit was kept after all, the engine takes it as
/// made; where it was rolled back, the step is tried again a moment later. Either way the
/// mission finishes without a restart, and after a restart it is still complete.
async fn step_fails(failpoint: &'static str, action: &str, nth: usize, kept: bool) {
    let scenario = FailScenario::setup();
    let (w, id) = fail_a_step(failpoint, action, nth).await;
    w.verified().await;
    w.every_mission_is_what_the_ledger_holds().await;
    // Kept or rolled back, the mission finishes without a restart: a rolled-back step is
    // tried again a moment later.
    let _ = kept;
    w.script.release();
    assert_eq!(until_terminal(&w.engine, id).await, MissionState::Completed);
    w.every_mission_is_what_the_ledger_holds().await;

    let w = w.restart().await;
    assert_eq!(w.every_mission_ends().await, [MissionState::Completed]);
    assert_eq!(
        std::fs::read_to_string(w.ws("m").join("out.txt")).unwrap(),
        "written"
    );
    let m = w.engine.mission(id).unwrap();
    assert_eq!(m.summary.as_deref(), Some("done"));
    w.verified().await;
    scenario.teardown();
}

macro_rules! cases {
    ($($name:ident: $failpoint:literal, $action:literal, kept = $kept:literal;)*) => {
        mod submit {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::submit_fails($failpoint, $action, $kept).await;
                }
            )*
        }
        mod step_turn_commit {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::step_fails($failpoint, $action, 0, $kept).await;
                }
            )*
        }
        mod step_next_commit {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::step_fails($failpoint, $action, 1, $kept).await;
                }
            )*
        }
    };
}

cases! {
    checkpoint_write_fails: "sqlite.append.checkpoint", "return", kept = false;
    error_before_commit: "sqlite.append.before_commit", "return", kept = false;
    fsync_fails_and_the_commit_is_lost: "sqlite.append.fsync", "return", kept = false;
    fsync_fails_but_the_commit_was_kept: "sqlite.append.fsync", "return(kept)", kept = true;
    error_after_commit: "sqlite.append.after_commit", "return", kept = true;
}

/// Regression test for a mission left behind its record: a step's commit stored although
/// the store answered `CommitFailed` left the engine's mission as it was before the step,
/// so a cancel that followed was chained to that stale state, the mission's record no
/// longer replayed, and the mission was lost at the next start. The failing commit is the
/// step's first (its turn); the mission is cancelled during its next reasoner turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_a_step_kept_despite_its_error_keeps_the_record_replayable() {
    let scenario = FailScenario::setup();
    let w = world().await;
    w.script();
    // The third turn never answers, so the cancel finds the mission running.
    w.script.push(Answer::Hang);
    w.script.on_turn(1, || {
        fail::cfg("sqlite.append.after_commit", "1*return->off").unwrap();
    });
    let failed = count_failures();
    let id = w.submit("m").await.unwrap();
    // The third turn is in flight once it has started.
    w.turns_started(3).await;
    assert_eq!(w.script.turns_started(), 3, "turns taken");
    assert_eq!(failed.load(Ordering::SeqCst), 1, "failed commits");
    w.engine.cancel(id, "operator", "stop").await.unwrap();
    assert_eq!(w.engine.mission(id).unwrap().state, MissionState::Cancelled);
    w.every_mission_is_what_the_ledger_holds().await;
    w.verified().await;
    let w = w.restart().await;
    assert_eq!(
        w.engine.mission(id).map(|m| m.state),
        Some(MissionState::Cancelled)
    );
    w.every_mission_is_what_the_ledger_holds().await;
    scenario.teardown();
}
