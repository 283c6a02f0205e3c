//! Missions driven end to end through the engine, with the real tool registry working in
//! real workspaces. The reasoner and the policy are doubles (`support`): a script of
//! turns and a small rule table.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use aura_core::Timestamp;
use aura_core::door::{SeededEntropy, SystemClock};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId};
use aura_engine::test_util::Answer;
use aura_engine::{Error, NewAgent, Sender};
use aura_identity::{Answers, Approval, ApprovalId, Credential, Level, Namespace, Signed, Verdict};
use aura_kernel::{Event, MissionState, Recorded, Role};
use serde_json::json;

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_reads_writes_and_completes() {
    let w = world().await;
    std::fs::create_dir_all(ws(&w, "one")).unwrap();
    std::fs::write(ws(&w, "one").join("notes.md"), "hello").unwrap();
    w.script.extend([
        Answer::calls([("fs.read", json!({"path": "notes.md"}))]),
        Answer::calls([(
            "fs.write",
            json!({"path": "summary.md", "content": "notes say hello"}),
        )]),
    ]);
    let id = w
        .engine
        .submit(
            w.agent,
            spec(&["fs.read", "fs.write", "mission.finish"], "one", 60),
        )
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Completed
    );
    assert_eq!(
        std::fs::read_to_string(ws(&w, "one").join("summary.md")).unwrap(),
        "notes say hello"
    );
    let m = w.engine.mission(id).unwrap();
    assert_eq!(m.summary.as_deref(), Some("done"));
    // Replay from the ledger reproduces the mission exactly.
    assert_eq!(w.engine.replay(id).await.unwrap().unwrap(), *m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_delete_waits_for_a_sufficient_approval() {
    let w = world().await;
    std::fs::create_dir_all(ws(&w, "two")).unwrap();
    std::fs::write(ws(&w, "two").join("old.log"), "x").unwrap();
    w.script
        .push(Answer::calls([("fs.delete", json!({"path": "old.log"}))]));
    let id = w
        .engine
        .submit(w.agent, spec(&["fs.delete", "mission.finish"], "two", 60))
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, |s| s == MissionState::Escalated).await,
        MissionState::Escalated
    );
    assert!(
        ws(&w, "two").join("old.log").exists(),
        "nothing runs while escalated"
    );
    let esc = w.engine.mission(id).unwrap().escalation.clone().unwrap();
    assert_eq!(esc.level, Level::L3);

    let e = SeededEntropy::new(5);
    let sign = |level: Level, key: &Signer| {
        let cred = w
            .engine
            .issue_operator_credential(
                "alice",
                key.public_key(),
                level,
                Namespace::new("default").unwrap(),
            )
            .unwrap();
        let now = aura_core::door::Clock::now(&SystemClock);
        let approval = Approval {
            id: ApprovalId::from_bytes([7; 16]),
            mission: id,
            answers: w.engine.mission(id).unwrap().escalation_answers(),
            request: esc.request,
            verdict: Verdict::Approve,
            reason: "fine".into(),
            issued_at: now,
            expires_at: now.saturating_add(Duration::from_secs(60)),
            approver: key.public_key(),
        };
        (Signed::sign(approval, key).unwrap(), cred)
    };
    let low_key = Signer::ephemeral("bob", &e).unwrap();
    let (approval, cred) = sign(Level::L2, &low_key);
    let err = w.engine.answer(id, approval, cred).await.unwrap_err();
    assert!(err.to_string().contains("level L2"), "{err}");
    assert_eq!(w.engine.mission(id).unwrap().state, MissionState::Escalated);

    let key = Signer::ephemeral("alice", &e).unwrap();
    let (approval, cred) = sign(Level::L3, &key);
    w.engine.answer(id, approval, cred).await.unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Completed
    );
    assert!(!ws(&w, "two").join("old.log").exists());
    w.engine.replay(id).await.unwrap().unwrap();
}

/// Alice, a person at L3 in namespace `default`: her key and the credential the node
/// issued her.
fn alice(w: &World) -> (Signer, Signed<Credential>) {
    let key = Signer::ephemeral("alice", &SeededEntropy::new(5)).unwrap();
    let cred = w
        .engine
        .issue_operator_credential(
            "alice",
            key.public_key(),
            Level::L3,
            Namespace::new("default").unwrap(),
        )
        .unwrap();
    (key, cred)
}

/// Alice's approval `n` of `request` in `mission`, naming `answers` (`None`: version 1).
fn approval_by(
    key: &Signer,
    n: u8,
    mission: MissionId,
    answers: Option<Answers>,
    request: Hash,
) -> Signed<Approval> {
    let now = aura_core::door::Clock::now(&SystemClock);
    let approval = Approval {
        id: ApprovalId::from_bytes([n; 16]),
        mission,
        answers,
        request,
        verdict: Verdict::Approve,
        reason: "stale log".into(),
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(600)),
        approver: key.public_key(),
    };
    Signed::sign(approval, key).unwrap()
}

/// One signed approval approved two escalations: in one mission a delete was escalated
/// and approved; a second delete of the same file (the same request, so the same digest)
/// was escalated, and the same approval was accepted again. An approval now names the
/// escalation it answers and is used once; the second delete needs a second decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_approval_cannot_approve_a_second_escalated_delete() {
    let w = cedar_world().await;
    let dir = ws(&w, "twice");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("old.log"), "x").unwrap();
    w.script.extend([
        Answer::calls([("fs.delete", json!({"path": "old.log"}))]),
        Answer::calls([("fs.write", json!({"path": "old.log", "content": "again"}))]),
        Answer::calls([("fs.delete", json!({"path": "old.log"}))]),
    ]);
    let id = w
        .engine
        .submit(
            w.agent,
            spec(&["fs.delete", "fs.write", "mission.finish"], "twice", 60),
        )
        .await
        .unwrap();
    until(&w.engine, id, |s| s == MissionState::Escalated).await;
    let m = w.engine.mission(id).unwrap();
    let request = m.escalation.as_ref().unwrap().request;
    let first_call = m.escalation_answers().unwrap();
    let (key, cred) = alice(&w);
    let first = approval_by(&key, 1, id, Some(first_call.clone()), request);
    w.engine
        .answer(id, first.clone(), cred.clone())
        .await
        .unwrap();

    // The first delete ran, the file was written again, and the second delete waits.
    let mut second_call = None;
    for _ in 0..500 {
        let m = w.engine.mission(id).unwrap();
        if m.state == MissionState::Escalated && m.steps == 3 {
            assert_eq!(m.escalation.as_ref().unwrap().request, request);
            second_call = m.escalation_answers();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second_call = second_call.expect("the second delete escalates");
    assert_ne!(second_call, first_call);
    assert_eq!(
        std::fs::read_to_string(dir.join("old.log")).unwrap(),
        "again"
    );

    let refused = |result: Result<(), Error>, why: &str| match result {
        Err(Error::Forbidden(e)) => assert!(e.contains(why), "{e}"),
        other => panic!("not refused ({why}): {other:?}"),
    };
    // The same approval again.
    refused(
        w.engine.answer(id, first.clone(), cred.clone()).await,
        "already used",
    );
    // A new approval, but of the first escalation.
    refused(
        w.engine
            .answer(
                id,
                approval_by(&key, 2, id, Some(first_call), request),
                cred.clone(),
            )
            .await,
        "answers call",
    );
    // A new approval of version 1, which names no escalation.
    refused(
        w.engine
            .answer(id, approval_by(&key, 3, id, None, request), cred.clone())
            .await,
        "version 1",
    );
    let m = w.engine.mission(id).unwrap();
    assert_eq!(m.state, MissionState::Escalated);
    assert!(dir.join("old.log").exists(), "nothing ran");

    // A second decision of its own answers the second escalation.
    let second = approval_by(&key, 4, id, Some(second_call), request);
    w.engine.answer(id, second, cred).await.unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Completed
    );
    assert!(!dir.join("old.log").exists());
    let m = w.engine.mission(id).unwrap();
    let used: Vec<ApprovalId> = m.used_approvals.iter().copied().collect();
    assert_eq!(
        used,
        [
            ApprovalId::from_bytes([1; 16]),
            ApprovalId::from_bytes([4; 16])
        ]
    );
    assert_eq!(w.engine.replay(id).await.unwrap().unwrap(), *m);
}

/// A refused `agent.send` told the sender that an agent existed in another namespace:
/// policy refused it for crossing namespaces, where an agent that does not exist was
/// refused as unknown. Both are now refused alike, word for word, by the mission's tool
/// and by `Handle::send`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_namespace_is_refused_as_one_that_does_not_exist() {
    let w = cedar_world().await;
    let elsewhere = w
        .engine
        .create_agent(NewAgent {
            name: "elsewhere".into(),
            level: Level::L2,
            namespace: Namespace::new("team-b").unwrap(),
            public_key: None,
        })
        .await
        .unwrap()
        .id;
    let nobody = AgentId::from_bytes([9; 16]);
    w.script.extend([
        Answer::calls([(
            "agent.send",
            json!({"to": elsewhere.to_string(), "body": "hi"}),
        )]),
        Answer::calls([(
            "agent.send",
            json!({"to": nobody.to_string(), "body": "hi"}),
        )]),
    ]);
    let id = w
        .engine
        .submit(w.agent, spec(&["agent.send", "mission.finish"], "send", 60))
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Completed
    );
    // What the sender's reasoner was told.
    let m = w.engine.mission(id).unwrap();
    let told: Vec<&str> = m
        .conversation
        .iter()
        .filter(|c| c.role == Role::Tool)
        .map(|c| c.content.as_str())
        .take(2)
        .collect();
    assert_eq!(told.len(), 2);
    assert_eq!(told[0], told[1]);
    // What the record says policy decided, the agent's id aside.
    let mut decided = Vec::new();
    for e in w.engine.record(w.agent, 1, 1000).await.unwrap() {
        if e.entry.kind.as_str() == "mission.decided" {
            let r = Recorded::from_body(e.body().unwrap()).unwrap();
            if let Event::Decided { decision, .. } = r.event
                && decision.action == "agent.send"
            {
                decided.push(serde_json::to_string(&decision).unwrap());
            }
        }
    }
    assert_eq!(decided.len(), 2);
    assert_eq!(
        decided[0].replace(&elsewhere.to_string(), "AGENT"),
        decided[1].replace(&nobody.to_string(), "AGENT")
    );
    assert!(!decided[0].contains("team-b"), "{}", decided[0]);
    // Nothing reached the other namespace.
    assert_eq!(w.engine.record(elsewhere, 1, 100).await.unwrap().len(), 1);

    // The engine's own delivery answers alike.
    let send = |to| w.engine.send(to, Sender::Agent(w.agent), json!("hi"));
    let (a, b) = (send(elsewhere).await, send(nobody).await);
    let (Err(Error::NotFound(a)), Err(Error::NotFound(b))) = (a, b) else {
        panic!("both are refused as not found");
    };
    assert_eq!(
        a.replace(&elsewhere.to_string(), "AGENT"),
        b.replace(&nobody.to_string(), "AGENT")
    );
}

/// A mission declared with a `timeout_secs` of 2^64-1 was accepted. A declaration may ask
/// for 1 s to 30 days; anything else is refused, naming the field, and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_beyond_thirty_days_is_refused() {
    let w = world().await;
    for timeout in [0, aura_kernel::MissionSpec::MAX_TIMEOUT_SECS + 1, u64::MAX] {
        match w
            .engine
            .submit(w.agent, spec(&["mission.finish"], "t", timeout))
            .await
        {
            Err(Error::Invalid(e)) => assert!(e.contains("`timeout_secs`"), "{e}"),
            other => panic!("a timeout of {timeout} s: {other:?}"),
        }
    }
    assert!(w.engine.missions(None, None, None).is_empty());
    let id = w
        .engine
        .submit(
            w.agent,
            spec(
                &["mission.finish"],
                "t",
                aura_kernel::MissionSpec::MAX_TIMEOUT_SECS,
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_undoes_completed_writes_in_reverse_order() {
    let w = world().await;
    std::fs::create_dir_all(ws(&w, "three")).unwrap();
    std::fs::write(ws(&w, "three").join("a.txt"), "original a").unwrap();
    // Two writes, then a delete that escalates and so holds the mission still.
    w.script.extend([
        Answer::calls([("fs.write", json!({"path": "a.txt", "content": "changed a"}))]),
        Answer::calls([(
            "fs.write",
            json!({"path": "b/new.txt", "content": "brand new"}),
        )]),
        Answer::calls([("fs.delete", json!({"path": "a.txt"}))]),
    ]);
    let id = w
        .engine
        .submit(
            w.agent,
            spec(&["fs.write", "fs.delete", "mission.finish"], "three", 60),
        )
        .await
        .unwrap();
    until(&w.engine, id, |s| s == MissionState::Escalated).await;
    assert_eq!(
        std::fs::read_to_string(ws(&w, "three").join("a.txt")).unwrap(),
        "changed a"
    );
    w.engine
        .cancel(id, "operator", "wrong workspace")
        .await
        .unwrap();
    let m = w.engine.mission(id).unwrap();
    assert_eq!(m.state, MissionState::Cancelled);
    assert_eq!(
        std::fs::read_to_string(ws(&w, "three").join("a.txt")).unwrap(),
        "original a"
    );
    assert!(!ws(&w, "three").join("b/new.txt").exists());
    assert!(m.history.iter().any(|c| c.to == MissionState::Compensating));
    // Reverse order: the second write was undone first.
    let r = w.engine.replay(id).await.unwrap().unwrap();
    assert_eq!(r.completed.iter().filter(|c| c.compensated).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_does_not_wait_for_a_reasoner_that_never_answers() {
    let w = world().await;
    w.script.extend([
        Answer::calls([("fs.write", json!({"path": "a.txt", "content": "new"}))]),
        Answer::Hang,
    ]);
    let id = w
        .engine
        .submit(w.agent, spec(&["fs.write", "mission.finish"], "hung", 600))
        .await
        .unwrap();
    // Once the second turn has started, it is in flight and never returns; the first
    // turn's write is done by then.
    w.script.started(2).await;
    assert!(ws(&w, "hung").join("a.txt").exists());
    tokio::time::timeout(
        Duration::from_secs(10),
        w.engine.cancel(id, "operator", "stuck"),
    )
    .await
    .expect("the cancel was answered")
    .unwrap();
    let m = w.engine.mission(id).unwrap();
    assert_eq!(m.state, MissionState::Cancelled);
    assert!(
        !ws(&w, "hung").join("a.txt").exists(),
        "the write was undone"
    );
    // The dropped turn left no trace: one turn recorded, and the record replays.
    let r = w.engine.replay(id).await.unwrap().unwrap();
    assert_eq!(r.steps, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_does_not_wait_for_a_reasoner_that_never_answers() {
    let w = world().await;
    w.script.push(Answer::Hang);
    let id = w
        .engine
        .submit(w.agent, spec(&["mission.finish"], "late", 1))
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Failed
    );
    assert!(reason(&w, id).contains("timed out"), "{:?}", reason(&w, id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_past_its_deadline_fails() {
    let w = world().await;
    // The delete escalates; nobody answers; the deadline passes.
    w.script
        .push(Answer::calls([("fs.delete", json!({"path": "x"}))]));
    let id = w
        .engine
        .submit(w.agent, spec(&["fs.delete", "mission.finish"], "four", 1))
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Failed
    );
    assert!(reason(&w, id).contains("timed out"), "{:?}", reason(&w, id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_that_never_finishes_runs_out_of_budget() {
    let w = world().await;
    w.script
        .extend((0..20).map(|_| Answer::calls([("fs.list", json!({"path": "."}))])));
    let id = w
        .engine
        .submit(w.agent, spec(&["fs.list", "mission.finish"], "five", 60))
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Failed
    );
    assert!(reason(&w, id).contains("budget"), "{:?}", reason(&w, id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_declarations_are_refused_before_anything_is_recorded() {
    let w = world().await;
    let before = w.engine.store().tree_size().await.unwrap();
    let mut s = spec(&["fs.read"], "x", 60);
    s.namespace = Namespace::new("elsewhere").unwrap();
    assert!(w.engine.submit(w.agent, s).await.is_err());
    let mut s = spec(&["fs.read"], "x", 60);
    s.authority.level = Level::L4;
    assert!(w.engine.submit(w.agent, s).await.is_err());
    assert!(
        w.engine
            .submit(w.agent, spec(&["no.such.tool"], "x", 60))
            .await
            .is_err()
    );
    let mut s = spec(&["fs.read"], "x", 60);
    s.reasoner = "missing".into();
    assert!(w.engine.submit(w.agent, s).await.is_err());
    assert!(
        w.engine
            .submit(w.agent, spec(&["fs.read"], "../escape", 60))
            .await
            .is_err()
    );
    assert_eq!(w.engine.store().tree_size().await.unwrap(), before);
}

/// Regression test for the engine flattening the kernel's refusals into a string: a
/// declaration the kernel refuses (no objective) reached callers as `Error::Invalid` with
/// the kernel's message copied in, so nothing could tell a kernel refusal from the
/// engine's own checks or reach the `KernelError` behind it. It is now kept whole, with
/// the same message and API code as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaration_the_kernel_refuses_comes_back_as_the_kernels_error() {
    let w = world().await;
    let before = w.engine.store().tree_size().await.unwrap();
    let mut s = spec(&["fs.read"], "x", 60);
    s.objective = "  ".into();
    let err = w.engine.submit(w.agent, s).await.unwrap_err();
    match &err {
        Error::Kernel(aura_kernel::KernelError::Invalid(why)) => {
            assert_eq!(why, "a mission needs an objective");
        }
        other => panic!("not the kernel's refusal: {other:?}"),
    }
    assert_eq!(err.to_string(), "a mission needs an objective");
    assert_eq!(err.code(), "invalid_request");
    assert_eq!(w.engine.store().tree_size().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_mission_survives_a_restart_and_resumes_when_approved() {
    let w = world().await;
    w.script
        .push(Answer::calls([("fs.delete", json!({"path": "gone.txt"}))]));
    std::fs::create_dir_all(ws(&w, "six")).unwrap();
    std::fs::write(ws(&w, "six").join("gone.txt"), "bye").unwrap();
    let id = w
        .engine
        .submit(w.agent, spec(&["fs.delete", "mission.finish"], "six", 600))
        .await
        .unwrap();
    until(&w.engine, id, |s| s == MissionState::Escalated).await;
    let request = w
        .engine
        .mission(id)
        .unwrap()
        .escalation
        .clone()
        .unwrap()
        .request;
    // A new engine over the same ledger: the store's lock must be free first.
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
    let m = engine.mission(id).unwrap();
    assert_eq!(m.state, MissionState::Escalated);
    let key = Signer::ephemeral("alice", &SeededEntropy::new(8)).unwrap();
    let cred = engine
        .issue_operator_credential(
            "alice",
            key.public_key(),
            Level::L3,
            Namespace::new("default").unwrap(),
        )
        .unwrap();
    let now = Timestamp::from_nanos(aura_core::door::Clock::now(&SystemClock).as_nanos());
    let approval = Approval {
        id: ApprovalId::from_bytes([1; 16]),
        mission: id,
        answers: m.escalation_answers(),
        request,
        verdict: Verdict::Approve,
        reason: "later".into(),
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(60)),
        approver: key.public_key(),
    };
    engine
        .answer(id, Signed::sign(approval, &key).unwrap(), cred)
        .await
        .unwrap();
    let end = until(&engine, id, MissionState::is_terminal).await;
    assert_eq!(
        end,
        MissionState::Completed,
        "{:?}",
        engine.mission(id).unwrap().reason
    );
    assert!(!dir.path().join("workspaces/default/six/gone.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reasoner_that_only_talks_fails_the_mission_after_three_turns() {
    let w = world().await;
    // One turn with a call between idle turns resets the count; then three in a row.
    w.script.extend([
        Answer::Calls(vec![]),
        Answer::Calls(vec![]),
        Answer::calls([("fs.list", json!({"path": "."}))]),
        Answer::Calls(vec![]),
        Answer::Calls(vec![]),
        Answer::Calls(vec![]),
        Answer::calls([("fs.list", json!({"path": "."}))]),
    ]);
    let id = w
        .engine
        .submit(w.agent, spec(&["fs.list", "mission.finish"], "five", 60))
        .await
        .unwrap();
    assert_eq!(
        until(&w.engine, id, MissionState::is_terminal).await,
        MissionState::Failed
    );
    let why = reason(&w, id);
    assert!(
        why.contains("3 times in a row without calling a tool"),
        "{why}"
    );
    // The last scripted turn was never asked for.
    assert_eq!(w.script.remaining(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_hung_turn_and_the_next_start_asks_again() {
    let w = world().await;
    w.script.push(Answer::Hang);
    let id = w
        .engine
        .submit(w.agent, spec(&["fs.write", "mission.finish"], "hang", 600))
        .await
        .unwrap();
    // Once the first turn has started, it is in flight and never returns.
    w.script.started(1).await;
    assert_eq!(w.engine.mission(id).unwrap().state, MissionState::Running);
    let World {
        dir,
        signer,
        engine,
        script,
        ..
    } = w;
    tokio::time::timeout(Duration::from_secs(10), engine.shutdown())
        .await
        .expect("the shutdown did not wait for the hung turn");
    drop(engine);
    // The dropped turn left no trace; the mission is recovered as running, its reasoner is
    // asked again (this time it answers), and it completes.
    let engine = open_engine(dir.path(), &signer, script).await;
    let end = until(&engine, id, MissionState::is_terminal).await;
    assert_eq!(
        end,
        MissionState::Completed,
        "{:?}",
        engine.mission(id).unwrap().reason
    );
    let r = engine.replay(id).await.unwrap().unwrap();
    assert_eq!(r.steps, 1, "only the answered turn is recorded");
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_failing_at_step_k_undoes_steps_k_minus_1_to_1_in_reverse_byte_for_byte() {
    let steps = [
        json!({"path": "a.txt", "content": "alpha, changed"}),
        json!({"path": "new/n.txt", "content": "brand new"}),
        json!({"path": "sub/c.bin", "content": "\u{0}\u{1}binary\u{ff} changed"}),
        json!({"path": "a.txt", "content": "alpha, changed twice"}),
        json!({"path": "b.txt", "content": ""}),
    ];
    for k in 1..=steps.len() + 1 {
        let w = world().await;
        let name = format!("saga-{k}");
        let dir = ws(&w, &name);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "alpha").unwrap();
        std::fs::write(dir.join("b.txt"), "beta\n").unwrap();
        std::fs::write(dir.join("sub/c.bin"), [0u8, 159, 146, 150, 255]).unwrap();
        let before = snapshot(&dir);
        // Steps 1..k-1 write; step k's turn fails and the mission may not retry it.
        w.script.extend(
            steps
                .iter()
                .take(k - 1)
                .map(|args| Answer::calls([("fs.write", args.clone())])),
        );
        w.script.push(Answer::Fail("the provider is down".into()));
        let mut mission = spec(&["fs.write", "mission.finish"], &name, 60);
        mission.steps = Some(aura_kernel::StepPolicy {
            retry: aura_kernel::RetryPolicy {
                max_attempts: 1,
                ..Default::default()
            },
            ..Default::default()
        });
        let id = w.engine.submit(w.agent, mission).await.unwrap();
        until(&w.engine, id, MissionState::is_terminal).await;
        let m = w.engine.mission(id).unwrap();
        assert_eq!(m.state, MissionState::Failed, "k = {k}");
        assert!(reason(&w, id).contains("the provider is down"), "k = {k}");
        // Every file exactly as before (directories a write created may stay, empty).
        assert_eq!(
            snapshot(&dir),
            before,
            "k = {k}: the workspace is not restored"
        );
        // Exactly steps k-1 ... 1 were undone, in that order.
        let written: Vec<String> = m.completed.iter().map(|c| c.call_id.clone()).collect();
        assert_eq!(written.len(), k - 1);
        assert!(m.completed.iter().all(|c| c.compensated));
        let entries = w.engine.record(w.agent, 1, 10_000).await.unwrap();
        let undone: Vec<String> = entries
            .iter()
            .filter_map(|e| aura_kernel::Recorded::from_body(&e.entry.body).ok())
            .filter(|r| r.mission == id)
            .filter_map(|r| match r.event {
                aura_kernel::Event::Compensated {
                    call_id, ok: true, ..
                } => Some(call_id),
                _ => None,
            })
            .collect();
        assert_eq!(
            undone,
            written.into_iter().rev().collect::<Vec<_>>(),
            "k = {k}"
        );
        assert!(w.engine.replay(id).await.unwrap().is_ok());
    }
}
