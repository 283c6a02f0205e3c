//! Pruning finished missions through the engine: their bulky records lose their bodies,
//! the ledger still verifies, missions under way are untouched, and the node still lists
//! a pruned mission (marked pruned) after a restart, while replaying it says "pruned".
//! The reasoner and policy are the doubles of `support`, shared with `missions.rs`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use aura_core::door::{Clock as _, SystemClock};
use aura_core::{AgentId, Timestamp};
use aura_engine::test_util::Answer;
use aura_engine::{Error, Handle};
use aura_kernel::MissionState;
use aura_store::Verification;
use serde_json::json;

mod support;

use support::*;

fn in_an_hour() -> Timestamp {
    SystemClock.now().saturating_add(Duration::from_secs(3600))
}

async fn verified(engine: &Handle) -> aura_ledger::verify::Summary {
    match engine.store().verify(Box::new(|_| {})).await.unwrap() {
        Verification::Ok(s) => s,
        Verification::Failed(f) => panic!("{f}"),
    }
}

/// Every `mission.*` entry of the agent: (index, kind, pruned).
async fn mission_entries(engine: &Handle, agent: AgentId) -> Vec<(u64, String, bool)> {
    engine
        .store()
        .agent_entries(agent, 1, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.entry.kind.as_str().starts_with("mission."))
        .map(|e| (e.entry.index, e.entry.kind.to_string(), e.pruned.is_some()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_missions_are_pruned_running_ones_are_not_and_a_restart_still_lists_them() {
    let w = world().await;
    std::fs::create_dir_all(ws(&w, "one")).unwrap();
    std::fs::create_dir_all(ws(&w, "two")).unwrap();
    std::fs::write(ws(&w, "two").join("gone.txt"), "bye").unwrap();
    let bulky = "x".repeat(20_000);
    w.script.extend([
        Answer::calls([("fs.write", json!({"path": "big.txt", "content": bulky}))]),
        Answer::calls([("fs.write", json!({"path": "big2.txt", "content": bulky}))]),
    ]);
    let done = w
        .engine
        .submit(w.agent, spec(&["fs.write", "mission.finish"], "one", 60))
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, done, MissionState::is_terminal).await,
        MissionState::Completed
    );
    w.script
        .push(Answer::calls([("fs.delete", json!({"path": "gone.txt"}))]));
    let waiting = w
        .engine
        .submit(w.agent, spec(&["fs.delete", "mission.finish"], "two", 600))
        .await
        .unwrap();
    until(&w.engine, waiting, |s| s == MissionState::Escalated).await;
    let before = w.engine.mission(done).unwrap();
    let waiting_entries = mission_entries(&w.engine, w.agent).await;

    // A cutoff before the mission ended prunes nothing.
    let none = w
        .engine
        .prune_missions(before.submitted_at, false)
        .await
        .unwrap();
    assert!(none.missions.is_empty() && none.entries == 0, "{none:?}");

    // A dry run reports and changes nothing.
    let dry = w.engine.prune_missions(in_an_hour(), true).await.unwrap();
    assert_eq!(dry.missions, vec![done]);
    assert!(dry.entries >= 4 && dry.bytes_freed > 40_000, "{dry:?}");
    assert_eq!(dry.kept, 2);
    assert_eq!(mission_entries(&w.engine, w.agent).await, waiting_entries);
    assert!(!w.engine.is_pruned(done));

    let report = w.engine.prune_missions(in_an_hour(), false).await.unwrap();
    assert_eq!(report.missions, vec![done]);
    assert_eq!(report.entries, dry.entries);
    assert!(
        report.bytes_freed >= dry.bytes_freed,
        "{report:?} vs {dry:?}"
    );
    assert!(w.engine.is_pruned(done));
    assert!(!w.engine.is_pruned(waiting));

    // Exactly the finished mission's entries lost their bodies, less its first and last.
    let entries = mission_entries(&w.engine, w.agent).await;
    let mut pruned_kinds = Vec::new();
    for (index, kind, pruned) in &entries {
        let of_done = w
            .engine
            .store()
            .entry(aura_store::EntryRef::Index(*index))
            .await
            .unwrap()
            .unwrap();
        if *pruned {
            pruned_kinds.push(kind.clone());
        } else if let Ok(r) = aura_kernel::Recorded::from_body(of_done.body().unwrap())
            && r.mission == done
        {
            assert!(
                kind == "mission.submitted" || kind == "mission.transition",
                "{kind} of the pruned mission was kept"
            );
        }
    }
    assert_eq!(pruned_kinds.len() as u64, report.entries);
    assert!(
        pruned_kinds.iter().any(|k| k == "mission.effect"),
        "{pruned_kinds:?}"
    );
    let summary = verified(&w.engine).await;
    assert_eq!(summary.pruned, report.entries);

    // The pruned mission is listed as it ended; replaying it says why it cannot be.
    let after = w.engine.mission(done).unwrap();
    assert_eq!(
        (
            after.state,
            &after.history,
            &after.summary,
            after.state_hash,
            after.steps
        ),
        (
            before.state,
            &before.history,
            &before.summary,
            before.state_hash,
            before.steps
        )
    );
    assert!(matches!(w.engine.replay(done).await, Err(Error::Pruned(m)) if m == done));
    w.engine.replay(waiting).await.unwrap().unwrap();

    // Pruning again finds nothing new.
    let again = w.engine.prune_missions(in_an_hour(), false).await.unwrap();
    assert!(again.missions.is_empty(), "{again:?}");

    // After a restart: the same listing, the same refusal to replay, the waiting mission
    // still waiting.
    let World {
        dir,
        signer,
        engine,
        script,
        ..
    } = w;
    engine.shutdown().await;
    drop(engine);
    let engine = open_engine(dir.path(), &signer, script).await;
    let listed = engine
        .mission(done)
        .expect("a pruned mission vanished on restart");
    assert_eq!(
        (
            listed.state,
            &listed.history,
            &listed.summary,
            listed.state_hash
        ),
        (
            before.state,
            &before.history,
            &before.summary,
            before.state_hash
        )
    );
    assert!(engine.is_pruned(done));
    assert!(matches!(engine.replay(done).await, Err(Error::Pruned(_))));
    assert_eq!(
        engine.mission(waiting).unwrap().state,
        MissionState::Escalated
    );
    assert!(!engine.is_pruned(waiting));
    engine.replay(waiting).await.unwrap().unwrap();
    assert!(
        engine
            .prune_missions(in_an_hour(), false)
            .await
            .unwrap()
            .missions
            .is_empty()
    );
}
