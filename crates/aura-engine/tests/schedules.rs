//! Schedules over a real SQLite ledger and the real engine, on a manual clock: cron
//! instants in a time zone across a daylight-saving change, restarts of the engine (the
//! store closed and opened again), a clock jump forward with each missed-run policy,
//! no instant ever firing twice, and a firing cut short by a crash finished under its own
//! mission id.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use aura_core::door::{Clock as _, ManualClock, OsEntropy, SeededEntropy};
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId, Timestamp};
use aura_engine::adapters::tools::RegistryTools;
use aura_engine::schedule::ScheduleId;
use aura_engine::test_util::{OneReasoner, ScriptedReasoner};
use aura_engine::{Handle, Missed, NewSchedule, Schedules, Services, Template, Trigger};
use aura_identity::TrustSet;
use aura_ledger::entry::Kind;
use aura_store::{NewEntry, Seq, SqliteStore};
use serde_json::{Value, json};

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The engine over the ledger in `dir`, on `clock`, with its schedules started.
async fn start(
    dir: &std::path::Path,
    signer: &Arc<Signer>,
    clock: &Arc<ManualClock>,
) -> (Handle, Schedules) {
    let store = SqliteStore::open(
        dir.join("ledger.db"),
        signer.clone(),
        clock.clone(),
        Default::default(),
    )
    .unwrap();
    let registry = aura_tools::Registry::builtin(aura_tools::BuiltinOptions::default());
    let engine = Handle::start(
        aura_engine::Options {
            keystore: Some(dir.join("keys")),
            workspaces: dir.join("workspaces"),
            ..Default::default()
        },
        Arc::new(store),
        signer.clone(),
        clock.clone(),
        Arc::new(OsEntropy),
        TrustSet::new([signer.public_key()]),
        Services {
            policy: Arc::new(support::Rules),
            tools: Arc::new(RegistryTools::new(
                Arc::new(registry),
                aura_tools::Limits::default(),
                false,
            )),
            reasoners: Arc::new(OneReasoner(Arc::new(ScriptedReasoner::new()))),
        },
    )
    .await
    .unwrap();
    let schedules = Schedules::start(engine.clone()).await.unwrap();
    (engine, schedules)
}

fn template() -> Template {
    serde_json::from_value(json!({
        "objective": "tidy up",
        "tools": ["fs.list", "mission.finish"],
        "timeout_secs": 600,
    }))
    .unwrap()
}

fn cron(expr: &str, zone: &str) -> Trigger {
    Trigger::Cron {
        expr: expr.into(),
        zone: zone.into(),
    }
}

async fn create(s: &Schedules, agent: AgentId, trigger: Trigger, missed: Missed) -> ScheduleId {
    s.create(
        NewSchedule {
            agent,
            name: "t".into(),
            template: template(),
            trigger,
            missed,
            paused: false,
        },
        "test",
    )
    .await
    .unwrap()
    .schedule
    .id
}

/// The node's `schedule.<what>` bodies, in ledger order.
async fn records(engine: &Handle, what: &str) -> Vec<Value> {
    let entries = engine
        .store()
        .agent_entries(AgentId::NODE, 1, 100_000)
        .await
        .unwrap();
    entries
        .iter()
        .filter(|e| e.entry.kind.as_str() == format!("schedule.{what}"))
        .map(|e| serde_json::from_slice(e.body().unwrap()).unwrap())
        .collect()
}

/// An instant as a record holds it.
fn instant(v: &Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

/// The due instants `schedule` fired at, with how many each stood for, in order.
async fn fired(engine: &Handle, schedule: ScheduleId) -> Vec<(Timestamp, u64)> {
    records(engine, "fired")
        .await
        .into_iter()
        .filter(|r| r["schedule"] == schedule.to_string())
        .map(|r| (instant(&r["due"]), r["missed"].as_u64().unwrap()))
        .collect()
}

/// Every mission a firing names exists in the engine, once.
async fn every_firing_has_its_mission(engine: &Handle) {
    let fired = records(engine, "fired").await;
    let mut ids: Vec<MissionId> = fired
        .iter()
        .map(|r| r["mission"].as_str().unwrap().parse().unwrap())
        .collect();
    for id in &ids {
        assert!(
            engine.mission(*id).is_some(),
            "the firing's mission {id} was never submitted"
        );
    }
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "two firings share a mission");
    assert_eq!(
        engine.missions(None, None, None).len(),
        n,
        "one mission per firing, no more"
    );
}

/// A daily 02:30 in Paris: on time the day before the clocks go forward, at 03:30 CEST on
/// the day they do (after a restart), then a clock jump of four days with the node
/// stopped: `skip` records the four instants and fires none, `catch-up-once` fires exactly
/// once for all of them. Restarting and ticking again fires nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_instants_across_a_dst_change_a_restart_and_a_clock_jump() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(7)).unwrap());
    // Friday 27 March 2026, noon UTC; Paris goes from CET to CEST on Sunday the 29th.
    let clock = Arc::new(ManualClock::new(at("2026-03-27T12:00:00Z")));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    let agent = support::create_agent(&engine).await;
    let skip = create(
        &schedules,
        agent,
        cron("30 2 * * *", "Europe/Paris"),
        Missed::Skip,
    )
    .await;
    let once = create(
        &schedules,
        agent,
        cron("30 2 * * *", "Europe/Paris"),
        Missed::CatchUpOnce,
    )
    .await;
    assert_eq!(
        schedules.get(skip).unwrap().next_due,
        Some(at("2026-03-28T01:30:00Z")),
        "02:30 CET"
    );

    // A second after 02:30 CET on Saturday: both fire, once, however often asked.
    clock.set(at("2026-03-28T01:30:01Z"));
    schedules.tick().await.unwrap();
    schedules.tick().await.unwrap();
    assert_eq!(
        fired(&engine, skip).await,
        [(at("2026-03-28T01:30:00Z"), 0)]
    );
    assert_eq!(
        fired(&engine, once).await,
        [(at("2026-03-28T01:30:00Z"), 0)]
    );

    // Stopped, and started again 30 s after Sunday's 02:30, which reads as 03:30 CEST
    // (01:30 UTC): within the grace, so on time for both policies.
    engine.shutdown().await;
    drop((engine, schedules));
    clock.set(at("2026-03-29T01:30:30Z"));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    assert_eq!(
        schedules.get(skip).unwrap().last_due,
        Some(at("2026-03-28T01:30:00Z"))
    );
    schedules.tick().await.unwrap();
    assert_eq!(fired(&engine, skip).await.len(), 2);
    assert_eq!(
        fired(&engine, skip).await[1],
        (at("2026-03-29T01:30:00Z"), 0)
    );
    assert_eq!(
        fired(&engine, once).await[1],
        (at("2026-03-29T01:30:00Z"), 0)
    );
    // From now on 02:30 is CEST: 00:30 UTC.
    assert_eq!(
        schedules.get(skip).unwrap().next_due,
        Some(at("2026-03-30T00:30:00Z"))
    );

    // Stopped for four days; the clock is noon on Thursday 2 April when it starts again.
    engine.shutdown().await;
    drop((engine, schedules));
    clock.set(at("2026-04-02T12:00:00Z"));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    schedules.tick().await.unwrap();
    assert_eq!(
        fired(&engine, skip).await.len(),
        2,
        "skip fires none of the missed"
    );
    let skipped = records(&engine, "skipped").await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["schedule"], skip.to_string());
    assert_eq!(skipped[0]["count"], 4);
    assert_eq!(instant(&skipped[0]["first"]), at("2026-03-30T00:30:00Z"));
    assert_eq!(instant(&skipped[0]["last"]), at("2026-04-02T00:30:00Z"));
    assert_eq!(
        fired(&engine, once).await[2..],
        [(at("2026-04-02T00:30:00Z"), 3)],
        "catch-up-once fires once, for the latest, counting the three before it"
    );

    // Again, and across another restart at the same instant: nothing more.
    schedules.tick().await.unwrap();
    engine.shutdown().await;
    drop((engine, schedules));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    schedules.tick().await.unwrap();
    assert_eq!(fired(&engine, skip).await.len(), 2);
    assert_eq!(fired(&engine, once).await.len(), 3);
    assert_eq!(records(&engine, "skipped").await.len(), 1);
    let view = schedules.get(once).unwrap();
    assert_eq!((view.fired, view.skipped), (3, 0));
    assert_eq!(schedules.get(skip).unwrap().skipped, 4);
    assert_eq!(view.next_due, Some(at("2026-04-03T00:30:00Z")));
    every_firing_has_its_mission(&engine).await;
    engine.shutdown().await;
}

/// An interval counts from the schedule's creation; a pause is not a missed run; a
/// deleted schedule never fires again and its records stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_pauses_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(8)).unwrap());
    let t0 = at("2026-06-01T00:00:00Z");
    let clock = Arc::new(ManualClock::new(t0));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    let agent = support::create_agent(&engine).await;
    let every = create(
        &schedules,
        agent,
        Trigger::Every { secs: 900 },
        Missed::Skip,
    )
    .await;
    clock.set(at("2026-06-01T00:15:00Z"));
    schedules.tick().await.unwrap();
    clock.set(at("2026-06-01T00:30:10Z"));
    schedules.tick().await.unwrap();
    assert_eq!(
        fired(&engine, every).await,
        [
            (at("2026-06-01T00:15:00Z"), 0),
            (at("2026-06-01T00:30:00Z"), 0)
        ]
    );
    // Paused for two hours: what fell due meanwhile is neither fired nor skipped.
    schedules.set_enabled(every, false, "test").await.unwrap();
    assert_eq!(schedules.get(every).unwrap().next_due, None);
    clock.set(at("2026-06-01T02:31:00Z"));
    schedules.tick().await.unwrap();
    schedules.set_enabled(every, true, "test").await.unwrap();
    schedules.tick().await.unwrap();
    assert_eq!(fired(&engine, every).await.len(), 2);
    assert!(records(&engine, "skipped").await.is_empty());
    // The interval still counts from creation: the next is 02:45.
    assert_eq!(
        schedules.get(every).unwrap().next_due,
        Some(at("2026-06-01T02:45:00Z"))
    );
    // The paused and resumed schedule survives a restart as it stands.
    engine.shutdown().await;
    drop((engine, schedules));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    let view = schedules.get(every).unwrap();
    assert!(view.enabled);
    assert_eq!(view.next_due, Some(at("2026-06-01T02:45:00Z")));
    schedules.delete(every, "test").await.unwrap();
    clock.set(at("2026-06-01T02:45:01Z"));
    schedules.tick().await.unwrap();
    assert_eq!(fired(&engine, every).await.len(), 2);
    assert!(schedules.get(every).is_none());
    assert_eq!(records(&engine, "deleted").await.len(), 1);
    assert_eq!(records(&engine, "paused").await.len(), 1);
    assert_eq!(records(&engine, "resumed").await.len(), 1);
    // After a restart it is still gone.
    engine.shutdown().await;
    drop((engine, schedules));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    assert!(schedules.list(None).is_empty());
    every_firing_has_its_mission(&engine).await;
    engine.shutdown().await;
}

/// A crash between the firing's record and the mission's submission: the next start
/// submits the mission under the id the firing drew, once; later starts do nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_cut_short_by_a_crash_is_finished_once_under_its_own_id() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(9)).unwrap());
    let clock = Arc::new(ManualClock::new(at("2026-06-01T00:00:00Z")));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    let agent = support::create_agent(&engine).await;
    let every = create(
        &schedules,
        agent,
        Trigger::Every { secs: 3600 },
        Missed::Skip,
    )
    .await;
    // What a node that died right after recording the firing leaves: the record, no
    // mission.
    let mission = MissionId::generate(clock.as_ref(), &SeededEntropy::new(99));
    let body = aura_core::jcs::to_vec(&json!({
        "v": 1, "schedule": every.to_string(), "due": "2026-06-01T01:00:00Z",
        "mission": mission.to_string(), "missed": 0, "at": "2026-06-01T01:00:00Z",
    }))
    .unwrap();
    engine
        .store()
        .append(vec![NewEntry {
            agent: AgentId::NODE,
            seq: Seq::Next,
            kind: Kind::new("schedule.fired").unwrap(),
            recorded_at: clock.now(),
            body,
        }])
        .await
        .unwrap();
    engine.shutdown().await;
    drop((engine, schedules));
    clock.set(at("2026-06-01T01:00:05Z"));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    assert!(
        engine.mission(mission).is_some(),
        "the start finished the firing"
    );
    assert_eq!(
        schedules.get(every).unwrap().last_due,
        Some(at("2026-06-01T01:00:00Z"))
    );
    schedules.tick().await.unwrap();
    assert_eq!(
        fired(&engine, every).await.len(),
        1,
        "the instant does not fire again"
    );
    engine.shutdown().await;
    drop((engine, schedules));
    let (engine, _schedules) = start(dir.path(), &signer, &clock).await;
    every_firing_has_its_mission(&engine).await;
    engine.shutdown().await;
}

/// The scheduler's own loop fires a due schedule without being asked (it looks at the
/// clock at least every `MAX_NAP`), so a node needs no tick from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_fires_by_itself_when_the_clock_reaches_a_due_instant() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(10)).unwrap());
    let clock = Arc::new(ManualClock::new(at("2026-06-01T00:00:00Z")));
    let (engine, schedules) = start(dir.path(), &signer, &clock).await;
    let agent = support::create_agent(&engine).await;
    let every = create(&schedules, agent, Trigger::Every { secs: 60 }, Missed::Skip).await;
    clock.advance(Duration::from_secs(61));
    // The loop naps at most 10 s between looks at the clock; three naps is plenty.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fired(&engine, every).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the loop never fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    every_firing_has_its_mission(&engine).await;
    engine.shutdown().await;
}
