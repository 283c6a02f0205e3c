//! Mission records written by earlier versions of Aura keep replaying: a ledger export
//! made by the engine as it stood before canonical JSON (RFC 8785) was adopted, with
//! real Cedar decisions, tool effects and a signed approval, checked in under
//! `tests/fixtures/v1-missions.bundle`. Its record bodies hold JSON objects in the order
//! they were built (every node build has serde_json's `preserve_order` on), and replaying
//! each mission must reproduce every recorded state hash.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use aura_core::{MissionId, PublicKey};
use aura_kernel::{MissionState, Recorded, replay};
use aura_ledger::bundle::{BundleReader, Frame, verify_bundle};
use aura_ledger::entry::Entry;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn missions_recorded_before_canonical_json_still_replay() {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("v1-missions.json")).unwrap())
            .unwrap();
    let key: PublicKey = index["node_public_key"].as_str().unwrap().parse().unwrap();
    let bundle = std::fs::read(fixtures().join("v1-missions.bundle")).unwrap();
    verify_bundle(&bundle[..], &key).unwrap();
    let mut reader = BundleReader::new(&bundle[..]).unwrap();
    let mut missions: BTreeMap<MissionId, Vec<(u64, Recorded)>> = BTreeMap::new();
    let mut unsorted = false;
    while let Some(frame) = reader.next_frame().unwrap() {
        let Frame::Entry { encoded, .. } = frame else {
            continue;
        };
        let e = Entry::decode(&encoded).unwrap();
        if !e.kind.as_str().starts_with("mission.") {
            continue;
        }
        // A tool call's arguments as the reasoner gave them: `path` before `content`.
        unsorted |= String::from_utf8_lossy(&e.body).contains(r#"{"path":"notes.md","content""#);
        let r = Recorded::from_body(&e.body).unwrap();
        missions.entry(r.mission).or_default().push((e.index, r));
    }
    assert!(unsorted, "the fixture holds objects with unsorted keys");
    assert_eq!(missions.len(), 2);
    for records in missions.values() {
        let mission = replay(records.iter().map(|(i, r)| (*i, r))).unwrap();
        assert_eq!(mission.state_hash, records.last().unwrap().1.state_hash);
        assert_eq!(mission.state, MissionState::Completed);
    }
}

/// Writes the fixture from the engine as it stands. Kept only to show how it was made (run
/// once, before the formats changed):
/// `AURA_WRITE_FIXTURES=1 cargo test -p aura-engine --test old_records -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture"]
async fn make_fixture() {
    use std::time::Duration;

    use aura_core::door::{Clock as _, SeededEntropy, SystemClock};
    use aura_core::keystore::Signer;
    use aura_engine::test_util::Answer;
    use aura_identity::{Approval, ApprovalId, Level, Namespace, Signed, Verdict};
    use serde_json::json;
    use support::{cedar_world, spec, until};

    if std::env::var_os("AURA_WRITE_FIXTURES").is_none() {
        return;
    }
    let w = cedar_world().await;
    w.script.extend([
        Answer::call("fs.write", json!({"path": "notes.md", "content": "hello"})),
        Answer::call("mission.finish", json!({"summary": "wrote the notes"})),
    ]);
    let one = w
        .engine
        .submit(w.agent, spec(&["fs.write", "mission.finish"], "one", 60))
        .await
        .unwrap();
    until(&w.engine, one, MissionState::is_terminal).await;

    let dir = w.dir.path().join("workspaces/default/two");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("old.log"), "x").unwrap();
    w.script.extend([
        Answer::call("fs.delete", json!({"path": "old.log"})),
        Answer::call("mission.finish", json!({"summary": "deleted the log"})),
    ]);
    let two = w
        .engine
        .submit(w.agent, spec(&["fs.delete", "mission.finish"], "two", 60))
        .await
        .unwrap();
    until(&w.engine, two, |s| s == MissionState::Escalated).await;
    let m = w.engine.mission(two).unwrap();
    let alice = Signer::ephemeral("alice", &SeededEntropy::new(5)).unwrap();
    let cred = w
        .engine
        .issue_operator_credential(
            "alice",
            alice.public_key(),
            Level::L3,
            Namespace::new("default").unwrap(),
        )
        .unwrap();
    let now = SystemClock.now();
    let approval = Approval {
        id: ApprovalId::from_bytes([1; 16]),
        mission: two,
        answers: m.escalation_answers(),
        request: m.escalation.as_ref().unwrap().request,
        verdict: Verdict::Approve,
        reason: "stale log".into(),
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(600)),
        approver: alice.public_key(),
    };
    w.engine
        .answer(two, Signed::sign(approval, &alice).unwrap(), cred)
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, two, MissionState::is_terminal).await,
        MissionState::Completed
    );
    w.engine.shutdown().await;
    let file = std::fs::File::create(fixtures().join("v1-missions.bundle")).unwrap();
    w.engine
        .store()
        .export(Box::new(file), Box::new(|_| {}))
        .await
        .unwrap();
    let index = json!({
        "made_by": "aura-engine tests/old_records.rs make_fixture, before RFC 8785",
        "node_public_key": w.signer.public_key().to_hex(),
        "missions": [one.to_string(), two.to_string()],
    });
    std::fs::write(
        fixtures().join("v1-missions.json"),
        serde_json::to_string_pretty(&index).unwrap() + "\n",
    )
    .unwrap();
}
