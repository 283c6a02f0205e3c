//! An engine that shares its ledger with others runs only the agents it holds
//! (`Options::ownership`, a cluster's shard leases): it starts none it does not hold,
//! creates agents only where it holds them, stops an agent's actor at once when told it
//! no longer holds it (`Handle::relinquish`), and the engine that takes the agent over
//! (`Handle::adopt`) replays its record and carries its mission to the end.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use aura_core::AgentId;
use aura_core::door::{OsEntropy, SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_engine::adapters::tools::RegistryTools;
use aura_engine::test_util::{Answer, OneReasoner, ScriptedReasoner};
use aura_engine::{Handle, NewAgent, Options, Ownership, Services};
use aura_identity::{Level, Namespace, TrustSet};
use aura_kernel::MissionState;
use aura_store::{SqliteStore, Store};
use serde_json::json;
use support::{Rules, spec, until};

/// Holds every agent while `owner` names this side.
#[derive(Debug)]
struct Side {
    me: u8,
    owner: Arc<AtomicU8>,
}

impl Ownership for Side {
    fn holds(&self, _agent: AgentId) -> bool {
        self.owner.load(Ordering::SeqCst) == self.me
    }
}

async fn engine(
    dir: &std::path::Path,
    store: Arc<dyn Store>,
    signer: &Arc<Signer>,
    me: u8,
    owner: &Arc<AtomicU8>,
    script: Arc<ScriptedReasoner>,
) -> Handle {
    engine_in(None, dir, store, signer, me, owner, script).await
}

/// An engine on a node labelled `region` (none: a node in no cluster region).
async fn engine_in(
    region: Option<&str>,
    dir: &std::path::Path,
    store: Arc<dyn Store>,
    signer: &Arc<Signer>,
    me: u8,
    owner: &Arc<AtomicU8>,
    script: Arc<ScriptedReasoner>,
) -> Handle {
    let registry = aura_tools::Registry::builtin(aura_tools::BuiltinOptions::default());
    Handle::start(
        Options {
            keystore: Some(dir.join("keys")),
            workspaces: dir.join(format!("workspaces-{me}")),
            ownership: Some(Arc::new(Side {
                me,
                owner: owner.clone(),
            })),
            region: region.map(str::to_owned),
            ..Default::default()
        },
        store,
        signer.clone(),
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        TrustSet::new([signer.public_key()]),
        Services {
            policy: Arc::new(Rules),
            tools: Arc::new(RegistryTools::new(
                Arc::new(registry),
                aura_tools::Limits::default(),
                false,
            )),
            reasoners: Arc::new(OneReasoner(script)),
        },
    )
    .await
    .unwrap()
}

fn new_agent() -> NewAgent {
    NewAgent {
        name: "w".into(),
        level: Level::L2,
        namespace: Namespace::new("default").unwrap(),
        public_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relinquished_agent_stops_mid_mission_and_the_adopter_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(7)).unwrap());
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            dir.path().join("ledger.db"),
            signer.clone(),
            Arc::new(SystemClock),
            Default::default(),
        )
        .unwrap(),
    );
    let owner = Arc::new(AtomicU8::new(1));
    let (script_a, script_b) = (
        Arc::new(ScriptedReasoner::new()),
        Arc::new(ScriptedReasoner::new()),
    );
    let a = engine(
        dir.path(),
        store.clone(),
        &signer,
        1,
        &owner,
        script_a.clone(),
    )
    .await;
    let b = engine(
        dir.path(),
        store.clone(),
        &signer,
        2,
        &owner,
        script_b.clone(),
    )
    .await;
    let agent = a.create_agent(new_agent()).await.unwrap().id;
    // B holds nothing: it runs no agent and creates none.
    assert!(b.agents(None).is_empty());
    let refused = b.create_agent(new_agent()).await.unwrap_err();
    assert!(
        matches!(refused, aura_engine::Error::Unavailable(_)),
        "{refused:?}"
    );

    // A's mission writes a file, then its second turn is in flight when A loses the agent.
    script_a.push(Answer::call(
        "fs.write",
        json!({ "path": "a.txt", "content": "one" }),
    ));
    script_a.hold_from(1);
    let id = a
        .submit(agent, spec(&["fs.write", "mission.finish"], "w", 600))
        .await
        .unwrap();
    script_a.started(2).await;
    let head = store.head(agent).await.unwrap().unwrap();
    owner.store(2, Ordering::SeqCst);
    assert_eq!(a.relinquish(), 1);
    assert!(a.agent(agent).is_none());
    assert!(a.mission(id).is_none());
    // The turn A was waiting for comes back to no one: nothing more is recorded by A.
    script_a.release();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(store.head(agent).await.unwrap().unwrap().seq, head.seq);

    // B adopts the agent once, replays its record and finishes the mission.
    assert_eq!(b.adopt().await.unwrap(), 1);
    assert_eq!(b.adopt().await.unwrap(), 0, "one actor per agent");
    assert_eq!(
        until(&b, id, |s| s.is_terminal()).await,
        MissionState::Completed
    );
    let replayed = b.replay(id).await.unwrap().unwrap();
    assert_eq!(replayed.state, MissionState::Completed);
    let record = b.record(agent, 1, 1000).await.unwrap();
    for (i, e) in record.iter().enumerate() {
        assert_eq!(e.entry.seq, i as u64 + 1);
    }
    // The completed write was not run again by B: it was recorded once, by A.
    let writes = record
        .iter()
        .filter(|e| {
            e.entry.kind.as_str() == "mission.effect"
                && String::from_utf8_lossy(e.body().unwrap()).contains("fs.write")
        })
        .count();
    assert!(writes <= 1, "{writes} effects of the one write");
    assert!(
        !dir.path().join("workspaces-2/default/w/a.txt").exists(),
        "b ran the completed write again"
    );

    // A node starting while another holds the agent does not run it.
    let c = engine(
        dir.path(),
        store.clone(),
        &signer,
        3,
        &owner,
        Arc::new(ScriptedReasoner::new()),
    )
    .await;
    assert!(c.agents(None).is_empty());
    for e in [a, b, c] {
        e.shutdown().await;
    }
}

/// A mission bounded to region `eu` runs on the node labelled `eu`; the node labelled `us`
/// refuses it at submission (nothing recorded), and when the agent moves there (a
/// failover) pauses the mission rather than run a single turn of it; back on an `eu` node
/// and resumed, it finishes. A node in no region refuses bounded missions (fail closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_never_runs_on_a_node_outside_its_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(8)).unwrap());
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            dir.path().join("ledger.db"),
            signer.clone(),
            Arc::new(SystemClock),
            Default::default(),
        )
        .unwrap(),
    );
    let owner = Arc::new(AtomicU8::new(1));
    let (script_eu, script_us) = (
        Arc::new(ScriptedReasoner::new()),
        Arc::new(ScriptedReasoner::new()),
    );
    let eu = engine_in(
        Some("eu"),
        dir.path(),
        store.clone(),
        &signer,
        1,
        &owner,
        script_eu.clone(),
    )
    .await;
    let us = engine_in(
        Some("us"),
        dir.path(),
        store.clone(),
        &signer,
        2,
        &owner,
        script_us.clone(),
    )
    .await;
    let agent = eu.create_agent(new_agent()).await.unwrap().id;
    let bounded = |regions: &[&str]| {
        let mut s = spec(&["fs.write", "mission.finish"], "w", 600);
        s.regions = regions.iter().map(|r| (*r).to_owned()).collect();
        s
    };

    // The eu node runs it: a first turn, then the second is held in flight.
    script_eu.push(Answer::call(
        "fs.write",
        json!({ "path": "a.txt", "content": "one" }),
    ));
    script_eu.hold_from(1);
    let id = eu.submit(agent, bounded(&["eu", "ap"])).await.unwrap();
    script_eu.started(2).await;
    assert_eq!(eu.mission(id).unwrap().spec.regions, ["eu", "ap"]);

    // The agent moves to the us node, which adopts it: the mission is paused there, with
    // the reason, and the us node's reasoner is never asked.
    owner.store(2, Ordering::SeqCst);
    assert_eq!(eu.relinquish(), 1);
    script_eu.release();
    assert_eq!(us.adopt().await.unwrap(), 1);
    let paused = |e: &Handle| {
        let e = e.clone();
        async move {
            for _ in 0..500 {
                if e.mission(id).is_some_and(|m| m.paused) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the mission was not paused: {:?}", e.mission(id));
        }
    };
    paused(&us).await;
    assert_eq!(us.mission(id).unwrap().state, MissionState::Running);
    let record = us.record(agent, 1, 1000).await.unwrap();
    let why = record
        .iter()
        .filter(|e| e.entry.kind.as_str() == "mission.paused")
        .map(|e| String::from_utf8_lossy(e.body().unwrap()).into_owned())
        .collect::<Vec<_>>();
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].contains("may run only in region eu, ap; this node is in region us"),
        "{why:?}"
    );
    // Resumed by an operator there, it is paused again; no turn ever starts on us.
    us.control(id, aura_engine::Control::Resume, "ops")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    paused(&us).await;
    assert_eq!(
        script_us.turns_started(),
        0,
        "a turn ran outside the boundary"
    );
    // A new bounded mission is refused on us, and nothing of it is recorded.
    let head = store.head(agent).await.unwrap().unwrap().seq;
    let refused = us.submit(agent, bounded(&["eu"])).await.unwrap_err();
    assert!(
        matches!(&refused, aura_engine::Error::Forbidden(m) if m.contains("region us")),
        "{refused:?}"
    );
    assert_eq!(store.head(agent).await.unwrap().unwrap().seq, head);
    // A mission bounded to us, or not bounded, runs there.
    script_us.push(Answer::finish());
    let here = us.submit(agent, bounded(&["us"])).await.unwrap();
    assert_eq!(
        until(&us, here, |s| s.is_terminal()).await,
        MissionState::Completed
    );

    // Back to eu, resumed: it finishes there.
    owner.store(1, Ordering::SeqCst);
    assert_eq!(us.relinquish(), 1);
    assert_eq!(eu.adopt().await.unwrap(), 1);
    script_eu.push(Answer::finish());
    eu.control(id, aura_engine::Control::Resume, "ops")
        .await
        .unwrap();
    assert_eq!(
        until(&eu, id, |s| s.is_terminal()).await,
        MissionState::Completed
    );

    // A node in no region (outside a cluster) refuses bounded missions.
    let nowhere = engine(
        dir.path(),
        store.clone(),
        &signer,
        3,
        &owner,
        Arc::new(ScriptedReasoner::new()),
    )
    .await;
    owner.store(3, Ordering::SeqCst);
    assert_eq!(eu.relinquish(), 1);
    assert_eq!(nowhere.adopt().await.unwrap(), 1);
    let refused = nowhere.submit(agent, bounded(&["eu"])).await.unwrap_err();
    assert!(
        matches!(&refused, aura_engine::Error::Forbidden(m) if m.contains("in no cluster region")),
        "{refused:?}"
    );
    for e in [eu, us, nowhere] {
        e.shutdown().await;
    }
}
