//! The node's mission answers, read back into the wire types the `aura` command decodes
//! them with (`aura_node::wire`, the event stream's `StreamEvent`, the kernel's
//! `Recorded`): each must decode and serialise again to the very JSON the node sent.
//!
//! Regression: `aura mission show` and `watch` read the node's JSON by string keys, so a
//! field renamed on the node's side printed `?` and no test noticed. The CLI now decodes
//! these types; this test fails when what the node sends and what they read drift apart.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use aura_engine::StreamEvent;
use aura_kernel::{Event, MissionState, Recorded};
use aura_node::wire::{
    AgentView, CheckpointView, MissionView, PendingApproval, PruneView, RecordView, ReplayView,
    StuckView,
};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::start;

/// Decodes `raw` as `T` and checks that `T` serialises back to exactly `raw`.
fn reads_back<T: DeserializeOwned + Serialize>(what: &str, raw: &Value) -> T {
    let typed: T = serde_json::from_value(raw.clone())
        .unwrap_or_else(|e| panic!("{what} does not decode: {e}\n{raw:#}"));
    let again = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &again, raw,
        "{what} does not read back to what the node sent"
    );
    typed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mission_answer_reads_back_into_the_wire_type_the_cli_decodes() {
    let n = start().await;
    let ok = |r: &support::Resp, status: u16| assert_eq!(r.status, status, "{:?}", r.body);

    // Held in `escalated` by the test policy, with an escalation to answer.
    let submitted = n
        .call(
            "POST",
            "/v1/missions",
            Some("operator"),
            Some(json!({"agent": n.agent_a.to_string(), "objective": "finish", "tools": ["fs.read", "mission.finish"], "timeout_secs": 600})),
        )
        .await;
    ok(&submitted, 201);
    let m: MissionView = reads_back("a submitted mission", &submitted.body);
    assert_eq!(m.state, MissionState::Escalated);
    let escalation = m.escalation.clone().unwrap();
    assert!(escalation.answers.is_some(), "{escalation:?}");
    let id = m.id.to_string();

    let list = n.call("GET", "/v1/missions", Some("operator"), None).await;
    ok(&list, 200);
    reads_back::<Vec<MissionView>>("the mission list", &list.body);
    let full = n
        .call(
            "GET",
            &format!("/v1/missions/{id}?detail=full"),
            Some("operator"),
            None,
        )
        .await;
    ok(&full, 200);
    reads_back::<MissionView>("a mission with its conversation", &full.body);
    let pending = n.call("GET", "/v1/approvals", Some("operator"), None).await;
    ok(&pending, 200);
    let pending: Vec<PendingApproval> = reads_back("the pending approvals", &pending.body);
    assert_eq!(pending.len(), 1);

    // Stuck while escalated, then while paused.
    let stuck = n
        .call(
            "GET",
            "/v1/missions/stuck?escalated_for_secs=0",
            Some("operator"),
            None,
        )
        .await;
    ok(&stuck, 200);
    let stuck: Vec<StuckView> = reads_back("an escalated stuck mission", &stuck.body);
    assert_eq!(stuck.len(), 1);
    let paused = n
        .call(
            "POST",
            &format!("/v1/missions/{id}/pause"),
            Some("operator"),
            Some(json!({"reason": "a look"})),
        )
        .await;
    ok(&paused, 200);
    assert!(reads_back::<MissionView>("a paused mission", &paused.body).paused);
    let stuck = n
        .call("GET", "/v1/missions/stuck", Some("operator"), None)
        .await;
    ok(&stuck, 200);
    reads_back::<Vec<StuckView>>("a paused stuck mission", &stuck.body);
    let resumed = n
        .call(
            "POST",
            &format!("/v1/missions/{id}/resume"),
            Some("operator"),
            None,
        )
        .await;
    ok(&resumed, 200);
    reads_back::<MissionView>("a resumed mission", &resumed.body);

    // Approved, it runs the scripted turn to the end.
    let request = escalation.request.parse().unwrap();
    let answered = n
        .call(
            "POST",
            &format!("/v1/approvals/{id}"),
            Some("operator"),
            Some(support::approval(&n, &id, request)),
        )
        .await;
    ok(&answered, 200);
    reads_back::<MissionView>("an approved mission", &answered.body);

    // Every event of its record, as the stream sends it, until it completes.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        n.ws_url(&format!("/v1/events?mission={id}&from=0")),
    )
    .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", n.keys["operator"]).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut kinds = BTreeSet::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the mission did not complete in time")
            .unwrap()
            .unwrap();
        let tokio_tungstenite::tungstenite::Message::Text(text) = msg else {
            continue;
        };
        let raw: Value = serde_json::from_str(&text).unwrap();
        let StreamEvent::Entry { kind, body, .. } = reads_back("a stream event", &raw) else {
            continue;
        };
        let recorded: Recorded = reads_back(&format!("the body of a {kind} entry"), &body);
        assert_eq!(recorded.event.kind(), kind);
        kinds.insert(kind);
        if let Event::Transition {
            to: MissionState::Completed,
            ..
        } = recorded.event
        {
            break;
        }
    }
    for kind in [
        "mission.submitted",
        "mission.judged",
        "mission.transition",
        "mission.approved",
        "mission.turn",
        "mission.decided",
        "mission.attempt",
        "mission.effect",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }

    // The transition is on the stream once it is committed, a moment before the engine's
    // view of the mission catches up with it.
    let started = std::time::Instant::now();
    let done = loop {
        let done = n
            .call(
                "GET",
                &format!("/v1/missions/{id}?detail=full"),
                Some("operator"),
                None,
            )
            .await;
        ok(&done, 200);
        let done: MissionView = reads_back("a completed mission", &done.body);
        if done.state == MissionState::Completed {
            break done;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never completed: {done:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        done.summary.is_some() && done.conversation.is_some(),
        "{done:?}"
    );
    let replay = n
        .call(
            "GET",
            &format!("/v1/missions/{id}/replay"),
            Some("operator"),
            None,
        )
        .await;
    ok(&replay, 200);
    assert!(reads_back::<ReplayView>("a replay", &replay.body).ok);
    let prune = n
        .call(
            "POST",
            "/v1/missions/prune",
            Some("operator"),
            Some(json!({"older_than_secs": 0, "dry_run": true})),
        )
        .await;
    ok(&prune, 200);
    reads_back::<PruneView>("a prune", &prune.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_ledger_answers_read_back_into_the_wire_types_the_cli_decodes() {
    // Regression: `aura agent` and the TUI's agents and ledger pages read these by string
    // keys, so a renamed field printed `?`.
    let n = start().await;
    let ok = |r: &support::Resp| assert_eq!(r.status, 200, "{:?}", r.body);
    let list = n.call("GET", "/v1/agents", Some("operator"), None).await;
    ok(&list);
    let agents: Vec<AgentView> = reads_back("the agent list", &list.body);
    assert!(agents.iter().any(|a| a.id == n.agent_a), "{agents:?}");
    let one = n
        .call(
            "GET",
            &format!("/v1/agents/{}", n.agent_a),
            Some("operator"),
            None,
        )
        .await;
    ok(&one);
    let agent: AgentView = reads_back("an agent", &one.body);
    assert_eq!(agent.credential.statement.key, agent.public_key);
    let record = n
        .call(
            "GET",
            &format!("/v1/agents/{}/record?limit=1", n.agent_a),
            Some("operator"),
            None,
        )
        .await;
    ok(&record);
    let page: RecordView = reads_back("a page of an agent's record", &record.body);
    assert_eq!(page.entries.len(), 1, "{page:?}");
    let checkpoint = n
        .call("GET", "/v1/ledger/checkpoint", Some("operator"), None)
        .await;
    ok(&checkpoint);
    let cp: CheckpointView = reads_back("the latest checkpoint", &checkpoint.body);
    assert!(cp.checkpoint.checkpoint.tree_size >= 1, "{cp:?}");
}
