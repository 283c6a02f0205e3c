//! The kernel: random missions driven through every path reproduce every state hash on
//! replay; tampering with a record names the divergent entry; refused events leave no
//! trace; the escalation, rejection, cancellation and timeout paths end where DESIGN.md
//! says.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use aura_core::door::{Entropy as _, SeededEntropy};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::{Answers, Approval, ApprovalId, Level, Namespace, Signed, Verdict};
use aura_kernel::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(1_800_000_000 + secs)
}

fn spec(tools: &[&str]) -> MissionSpec {
    MissionSpec {
        regions: Vec::new(),
        objective: "summarise the workspace".into(),
        tools: tools.iter().map(|s| (*s).to_owned()).collect(),
        authority: Authority {
            credential: None,
            level: Level::L2,
        },
        timeout_secs: 600,
        namespace: Namespace::new("default").unwrap(),
        budget: Budget {
            max_steps: 50,
            max_tokens: 1_000_000,
        },
        reasoner: String::new(),
        network: Vec::new(),
        workspace: None,
        steps: None,
        tool_steps: Default::default(),
    }
}

fn decision(action: &str, outcome: Outcome) -> Decision {
    Decision {
        action: action.into(),
        resource: json!({"path": "notes.md"}),
        destructive: action == "fs.delete",
        outcome,
        deciding: vec!["default-policy".into()],
        errors: Vec::new(),
        request: Hash::sha256(action.as_bytes()),
    }
}

fn turn(calls: Vec<ToolCall>, content: &str) -> Event {
    Event::Turn {
        turn: Turn {
            content: content.into(),
            tool_calls: calls,
            finish: "tool_calls".into(),
            prompt_tokens: 100,
            completion_tokens: 20,
            provider: "scripted".into(),
            model: "test".into(),
        },
        at: t(1),
    }
}

fn call(id: &str, name: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: json!({"path": "notes.md"}),
    }
}

fn effect(id: &str, name: &str, ok: bool, compensable: bool, finish: Option<&str>) -> Event {
    Event::Effect {
        effect: Effect {
            call_id: id.into(),
            tool: name.into(),
            ok,
            output: json!({"bytes": 12}),
            error: (!ok).then(|| "disk full".to_owned()),
            error_kind: None,
            compensation: compensable.then(|| json!({"restore": "notes.md", "previous": null})),
            message: None,
            finish: finish.map(str::to_owned),
        },
        at: t(2),
    }
}

fn transition(to: MissionState) -> Event {
    Event::Transition {
        to,
        reason: format!("to {to}"),
        at: t(3),
    }
}

/// The mission of these tests.
const MISSION: MissionId = MissionId::from_bytes([1; 16]);

/// A person's signed approval (or rejection) of the request `action` decided about (see
/// [`decision`]), as the node records it: `answers` `None` makes a version 1 approval,
/// which old records hold.
fn signed(id: u8, answers: Option<Answers>, action: &str, verdict: Verdict) -> Value {
    let key = Signer::ephemeral("alice", &SeededEntropy::new(3)).unwrap();
    let approval = Approval {
        id: ApprovalId::from_bytes([id; 16]),
        mission: MISSION,
        answers,
        request: Hash::sha256(action.as_bytes()),
        verdict,
        reason: "looked at it".into(),
        issued_at: t(4),
        expires_at: t(600),
        approver: key.public_key(),
    };
    serde_json::to_value(Signed::sign(approval, &key).unwrap()).unwrap()
}

fn call_of(turn: u32, id: &str) -> Option<Answers> {
    Some(Answers::Call {
        turn,
        id: id.into(),
    })
}

fn approved(approval: Value) -> Event {
    Event::Approved {
        approval,
        approver: "alice".into(),
        level: Level::L3,
        at: t(5),
    }
}

fn submit() -> Step {
    submit_in(RecordFormat::CURRENT)
}

fn submit_in(format: RecordFormat) -> Step {
    Step::submit_in(
        Event::Submitted {
            mission: MISSION,
            agent: AgentId::from_bytes([2; 16]),
            spec: spec(&["fs.read", "fs.write", "fs.delete", "mission.finish"]),
            at: t(0),
        },
        format,
    )
    .unwrap()
}

/// Drives a mission to Running.
fn running() -> Step {
    let mut s = submit();
    s.push(Event::Judged {
        decision: decision("mission.submit", Outcome::Permit),
    })
    .unwrap();
    s.push(transition(MissionState::Authorized)).unwrap();
    s.push(transition(MissionState::Running)).unwrap();
    s
}

#[test]
fn the_happy_path_completes() {
    let mut s = running();
    s.push(turn(
        vec![call("c1", "fs.read"), call("c2", "fs.write")],
        "reading",
    ))
    .unwrap();
    s.push(Event::Decided {
        call_id: "c1".into(),
        decision: decision("fs.read", Outcome::Permit),
    })
    .unwrap();
    s.push(Event::Decided {
        call_id: "c2".into(),
        decision: decision("fs.write", Outcome::Permit),
    })
    .unwrap();
    assert_eq!(s.mission().permitted().count(), 2);
    s.push(effect("c1", "fs.read", true, false, None)).unwrap();
    s.push(effect("c2", "fs.write", true, true, None)).unwrap();
    s.push(turn(vec![call("c3", "mission.finish")], "done"))
        .unwrap();
    s.push(Event::Decided {
        call_id: "c3".into(),
        decision: decision("mission.finish", Outcome::Permit),
    })
    .unwrap();
    s.push(effect(
        "c3",
        "mission.finish",
        true,
        false,
        Some("wrote a summary"),
    ))
    .unwrap();
    s.push(transition(MissionState::Completed)).unwrap();
    let (m, records) = s.finish();
    assert_eq!(m.state, MissionState::Completed);
    assert_eq!(m.summary.as_deref(), Some("wrote a summary"));
    let replayed = replay(records.iter().enumerate().map(|(i, r)| (i as u64, r))).unwrap();
    assert_eq!(replayed, m);
}

#[test]
fn illegal_events_are_refused_and_leave_no_trace() {
    let mut s = running();
    let before = s.mission().clone();
    let recorded_before = s.clone().finish().1.len();
    let refused = [
        transition(MissionState::Submitted),
        transition(MissionState::Authorized),
        transition(MissionState::Completed), // no mission.finish yet
        transition(MissionState::Escalated), // nothing to approve
        effect("nope", "fs.read", true, false, None),
        Event::Decided {
            call_id: "nope".into(),
            decision: decision("fs.read", Outcome::Permit),
        },
        Event::Compensated {
            attempts: 0,
            call_id: "x".into(),
            ok: true,
            error: None,
            at: t(9),
        },
        Event::Approved {
            approval: json!({}),
            approver: "alice".into(),
            level: Level::L4,
            at: t(9),
        },
    ];
    for e in refused {
        assert!(s.push(e.clone()).is_err(), "{e:?} was accepted");
        assert_eq!(s.mission(), &before);
    }
    assert_eq!(s.finish().1.len(), recorded_before);
}

#[test]
fn a_call_without_permission_cannot_have_an_effect() {
    let mut s = running();
    s.push(turn(vec![call("c1", "fs.delete")], "")).unwrap();
    assert!(s.push(effect("c1", "fs.delete", true, true, None)).is_err());
    s.push(Event::Decided {
        call_id: "c1".into(),
        decision: decision("fs.delete", Outcome::Deny),
    })
    .unwrap();
    assert!(s.push(effect("c1", "fs.delete", true, true, None)).is_err());
    // The denial went back to the reasoner as a tool message.
    assert!(
        s.mission()
            .conversation
            .last()
            .unwrap()
            .content
            .contains("denied by policy")
    );
}

#[test]
fn an_escalated_step_waits_for_approval_then_runs() {
    let mut s = running();
    s.push(turn(vec![call("c1", "fs.delete")], "cleaning up"))
        .unwrap();
    s.push(Event::Decided {
        call_id: "c1".into(),
        decision: decision("fs.delete", Outcome::Escalate { level: Level::L3 }),
    })
    .unwrap();
    s.push(transition(MissionState::Escalated)).unwrap();
    // Too low an approval is refused by the kernel even if the node let it through.
    assert!(
        s.push(Event::Approved {
            approval: json!({}),
            approver: "bob".into(),
            level: Level::L2,
            at: t(5)
        })
        .is_err()
    );
    // No effect while escalated.
    assert!(s.push(effect("c1", "fs.delete", true, true, None)).is_err());
    s.push(Event::Approved {
        approval: json!({}),
        approver: "alice".into(),
        level: Level::L3,
        at: t(5),
    })
    .unwrap();
    s.push(Event::Decided {
        call_id: "c1".into(),
        decision: decision("fs.delete", Outcome::Permit),
    })
    .unwrap();
    s.push(transition(MissionState::Running)).unwrap();
    s.push(effect("c1", "fs.delete", true, true, None)).unwrap();
    assert_eq!(s.mission().state, MissionState::Running);
    assert!(s.mission().escalation.is_none());
}

/// Proposes a delete `call_id` in a new turn, which policy escalates.
fn escalate_delete(s: &mut Step, call_id: &str) {
    s.push(turn(vec![call(call_id, "fs.delete")], "cleaning up"))
        .unwrap();
    s.push(Event::Decided {
        call_id: call_id.into(),
        decision: decision("fs.delete", Outcome::Escalate { level: Level::L3 }),
    })
    .unwrap();
    s.push(transition(MissionState::Escalated)).unwrap();
}

/// The escalated delete is approved with `approval`, permitted and run.
fn approve_and_run(s: &mut Step, call_id: &str, approval: Value) {
    s.push(approved(approval)).unwrap();
    s.push(Event::Decided {
        call_id: call_id.into(),
        decision: decision("fs.delete", Outcome::Permit),
    })
    .unwrap();
    s.push(transition(MissionState::Running)).unwrap();
    s.push(effect(call_id, "fs.delete", true, true, None))
        .unwrap();
}

/// One signed approval answered two escalations: a delete was escalated and approved,
/// a second delete (the same request, the same call id, in the next turn) was escalated,
/// and the same approval was accepted again. An approval now names the escalation it
/// answers, and its id is used once.
#[test]
fn one_approval_cannot_answer_a_second_escalation() {
    let mut s = running();
    escalate_delete(&mut s, "c1");
    let first = signed(1, call_of(1, "c1"), "fs.delete", Verdict::Approve);
    approve_and_run(&mut s, "c1", first.clone());
    escalate_delete(&mut s, "c1");
    let before = s.mission().clone();
    let refused = |s: &mut Step, approval: Value, why: &str| {
        let err = s.push(approved(approval)).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
        assert_eq!(s.mission(), &before, "a refused approval leaves no trace");
    };
    // The first approval again: it answers the call of turn 1.
    refused(&mut s, first, "answers call `c1` of turn 1");
    // Its id again, even naming this call: each escalation needs its own decision.
    refused(
        &mut s,
        signed(1, call_of(2, "c1"), "fs.delete", Verdict::Approve),
        "was already used",
    );
    // An approval of another call, of the declaration, of another request or mission,
    // or a rejection recorded as an approval.
    refused(
        &mut s,
        signed(2, call_of(2, "c2"), "fs.delete", Verdict::Approve),
        "not the escalation waiting",
    );
    refused(
        &mut s,
        signed(2, Some(Answers::Declaration), "fs.delete", Verdict::Approve),
        "not the escalation waiting",
    );
    refused(
        &mut s,
        signed(2, call_of(2, "c1"), "fs.write", Verdict::Approve),
        "a different request",
    );
    refused(
        &mut s,
        signed(2, call_of(2, "c1"), "fs.delete", Verdict::Reject),
        "the other verdict",
    );
    let mut elsewhere = signed(2, call_of(2, "c1"), "fs.delete", Verdict::Approve);
    elsewhere["statement"]["mission"] = json!(MissionId::from_bytes([9; 16]));
    refused(&mut s, elsewhere, "is for mission");
    refused(
        &mut s,
        json!({"statement": {"id": "nonsense"}, "signature": ""}),
        "malformed",
    );
    // A second approval of its own answers the second escalation.
    approve_and_run(
        &mut s,
        "c1",
        signed(2, call_of(2, "c1"), "fs.delete", Verdict::Approve),
    );
    let used: Vec<ApprovalId> = s.mission().used_approvals.iter().copied().collect();
    assert_eq!(
        used,
        [
            ApprovalId::from_bytes([1; 16]),
            ApprovalId::from_bytes([2; 16])
        ]
    );
    let (mission, records) = s.finish();
    assert_eq!(replay(indexed(&records)).unwrap(), mission);
}

/// A record in which one approval answered two escalations (made by a node with the bug
/// above: version 1 approvals, named by digest alone) replayed as if nothing were wrong.
/// Replay now refuses it at the entry that used the approval a second time. The record
/// was made by the kernel before the fix, so its hashes are all consistent.
#[test]
fn a_record_that_uses_one_approval_twice_no_longer_replays() {
    let records: Vec<Recorded> = include_str!("fixtures/records-approval-used-twice.jsonl")
        .lines()
        .map(|l| Recorded::from_body(l.as_bytes()).unwrap())
        .collect();
    let approvals: Vec<u64> = indexed(&records)
        .filter(|(_, r)| matches!(r.event, Event::Approved { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(approvals.len(), 2);
    let Event::Approved { approval, .. } = &records[approvals[1] as usize].event else {
        unreachable!()
    };
    assert!(approval["statement"].get("answers").is_none(), "version 1");
    match replay(indexed(&records)) {
        Err(Divergence::Refused { entry, error }) => {
            assert_eq!(entry, approvals[1]);
            assert!(error.to_string().contains("was already used"), "{error}");
        }
        other => panic!("the record replays: {other:?}"),
    }
    // Up to that entry, the record replays to its hashes.
    let prefix = replay(indexed(&records[..approvals[1] as usize])).unwrap();
    assert_eq!(
        prefix.state_hash,
        records[approvals[1] as usize - 1].state_hash
    );
}

#[test]
fn rejection_and_cancellation_compensate_in_reverse_order() {
    let mut s = running();
    s.push(turn(vec![call("a", "fs.write"), call("b", "fs.write")], ""))
        .unwrap();
    for id in ["a", "b"] {
        s.push(Event::Decided {
            call_id: id.into(),
            decision: decision("fs.write", Outcome::Permit),
        })
        .unwrap();
        s.push(effect(id, "fs.write", true, true, None)).unwrap();
    }
    s.push(Event::CancelRequested {
        by: "operator".into(),
        reason: "wrong target".into(),
        at: t(4),
    })
    .unwrap();
    // With compensations pending, Cancelled must go through Compensating.
    assert!(matches!(
        s.push(transition(MissionState::Cancelled)),
        Err(KernelError::Illegal(
            IllegalTransition::MustCompensate { .. }
        ))
    ));
    s.push(transition(MissionState::Compensating)).unwrap();
    assert_eq!(s.mission().next_compensation().unwrap().call_id, "b");
    assert!(
        s.push(Event::Compensated {
            attempts: 0,
            call_id: "a".into(),
            ok: true,
            error: None,
            at: t(5)
        })
        .is_err()
    );
    s.push(Event::Compensated {
        attempts: 0,
        call_id: "b".into(),
        ok: true,
        error: None,
        at: t(5),
    })
    .unwrap();
    s.push(Event::Compensated {
        attempts: 0,
        call_id: "a".into(),
        ok: true,
        error: None,
        at: t(5),
    })
    .unwrap();
    s.push(transition(MissionState::Cancelled)).unwrap();
    assert_eq!(s.mission().state, MissionState::Cancelled);
}

/// A reasoner that gave the same call id in two turns (ids are the reasoner's, and some
/// repeat them) left two completed calls of one id. Undoing the later one marked it; the
/// record of undoing the earlier one marked the later one again, so the earlier one was
/// never undone and a node winding the mission down ran its compensation forever.
#[test]
fn calls_of_one_id_in_two_turns_are_each_undone_once() {
    let mut s = running();
    for text in ["first", "second"] {
        s.push(turn(vec![call("c1", "fs.write")], text)).unwrap();
        s.push(Event::Decided {
            call_id: "c1".into(),
            decision: decision("fs.write", Outcome::Permit),
        })
        .unwrap();
        s.push(effect("c1", "fs.write", true, true, None)).unwrap();
    }
    s.push(Event::CancelRequested {
        by: "op".into(),
        reason: "stop".into(),
        at: t(10),
    })
    .unwrap();
    s.push(transition(MissionState::Compensating)).unwrap();
    for _ in 0..2 {
        assert_eq!(s.mission().next_compensation().unwrap().call_id, "c1");
        s.push(Event::Compensated {
            attempts: 0,
            call_id: "c1".into(),
            ok: true,
            error: None,
            at: t(20),
        })
        .unwrap();
    }
    assert!(s.mission().completed.iter().all(|c| c.compensated));
    assert!(s.mission().next_compensation().is_none());
    s.push(transition(MissionState::Cancelled)).unwrap();
}

#[test]
fn a_timeout_without_compensations_fails_directly() {
    let mut s = running();
    s.push(Event::TimedOut { at: t(601) }).unwrap();
    s.push(transition(MissionState::Failed)).unwrap();
    assert!(s.mission().reason.as_deref().unwrap().contains("timed out"));
}

/// A random mission, driven the way the node drives one, with a seeded RNG.
fn simulate(seed: u64) -> (Mission, Vec<Recorded>) {
    simulate_in(seed, RecordFormat::CURRENT)
}

/// [`simulate`], recorded in `format`.
fn simulate_in(seed: u64, format: RecordFormat) -> (Mission, Vec<Recorded>) {
    let rng = SeededEntropy::new(seed);
    let pick = |n: u64| rng.u64() % n;
    let mut s = submit_in(format);
    let judged = match pick(10) {
        0 => Outcome::Deny,
        1 => Outcome::Escalate { level: Level::L3 },
        _ => Outcome::Permit,
    };
    s.push(Event::Judged {
        decision: decision("mission.submit", judged),
    })
    .unwrap();
    match judged {
        Outcome::Deny => {
            s.push(transition(MissionState::Failed)).unwrap();
            return s.finish();
        }
        Outcome::Escalate { .. } => {
            s.push(transition(MissionState::Escalated)).unwrap();
            s.push(Event::Approved {
                approval: signed(
                    0,
                    Some(Answers::Declaration),
                    "mission.submit",
                    Verdict::Approve,
                ),
                approver: "alice".into(),
                level: Level::L3,
                at: t(1),
            })
            .unwrap();
            s.push(transition(MissionState::Authorized)).unwrap();
        }
        Outcome::Permit => {
            s.push(transition(MissionState::Authorized)).unwrap();
        }
    }
    s.push(transition(MissionState::Running)).unwrap();
    let tools = ["fs.read", "fs.write", "fs.delete"];
    let mut n = 0;
    // Each escalation gets its own approval; call ids repeat from turn to turn, as some
    // reasoners' do.
    let mut approvals = 0;
    for turn_no in 1..=(1 + pick(8)) {
        n = if pick(3) == 0 { 0 } else { n };
        let calls: Vec<ToolCall> = (0..pick(4))
            .map(|_| {
                n += 1;
                call(&format!("c{n}"), tools[pick(3) as usize])
            })
            .collect();
        s.push(turn(
            calls.clone(),
            &format!("turn with {} calls", calls.len()),
        ))
        .unwrap();
        for c in &calls {
            let outcome = match pick(8) {
                0 => Outcome::Deny,
                1 => Outcome::Escalate { level: Level::L3 },
                _ => Outcome::Permit,
            };
            s.push(Event::Decided {
                call_id: c.id.clone(),
                decision: decision(&c.name, outcome),
            })
            .unwrap();
            if let Outcome::Escalate { .. } = outcome {
                s.push(transition(MissionState::Escalated)).unwrap();
                approvals += 1;
                let answers = call_of(u32::try_from(turn_no).unwrap(), &c.id);
                if pick(4) == 0 {
                    s.push(Event::Rejected {
                        approval: signed(approvals, answers, &c.name, Verdict::Reject),
                        approver: "alice".into(),
                        reason: "no".into(),
                        at: t(9),
                    })
                    .unwrap();
                    return wind_down(s, MissionState::Failed);
                }
                s.push(Event::Approved {
                    approval: signed(approvals, answers, &c.name, Verdict::Approve),
                    approver: "alice".into(),
                    level: Level::L4,
                    at: t(9),
                })
                .unwrap();
                s.push(Event::Decided {
                    call_id: c.id.clone(),
                    decision: decision(&c.name, Outcome::Permit),
                })
                .unwrap();
                s.push(transition(MissionState::Running)).unwrap();
            }
        }
        let permitted: Vec<ToolCall> = s.mission().permitted().cloned().collect();
        for c in permitted {
            s.push(effect(
                &c.id,
                &c.name,
                pick(6) != 0,
                c.name != "fs.read",
                None,
            ))
            .unwrap();
        }
        if pick(10) == 0 {
            s.push(Event::CancelRequested {
                by: "op".into(),
                reason: "stop".into(),
                at: t(10),
            })
            .unwrap();
            return wind_down(s, MissionState::Cancelled);
        }
        if pick(12) == 0 {
            s.push(Event::TimedOut { at: t(700) }).unwrap();
            return wind_down(s, MissionState::Failed);
        }
    }
    let id = format!("c{}", n + 1);
    s.push(turn(vec![call(&id, "mission.finish")], "done"))
        .unwrap();
    s.push(Event::Decided {
        call_id: id.clone(),
        decision: decision("mission.finish", Outcome::Permit),
    })
    .unwrap();
    s.push(effect(&id, "mission.finish", true, false, Some("summary")))
        .unwrap();
    s.push(transition(MissionState::Completed)).unwrap();
    s.finish()
}

/// Ends a mission in `end`, compensating first where needed.
fn wind_down(mut s: Step, end: MissionState) -> (Mission, Vec<Recorded>) {
    if s.mission().has_compensations() {
        s.push(transition(MissionState::Compensating)).unwrap();
        while let Some(c) = s.mission().next_compensation().cloned() {
            s.push(Event::Compensated {
                attempts: 0,
                call_id: c.call_id,
                ok: true,
                error: None,
                at: t(20),
            })
            .unwrap();
        }
    }
    s.push(transition(end)).unwrap();
    s.finish()
}

fn indexed(records: &[Recorded]) -> impl Iterator<Item = (u64, &Recorded)> {
    records.iter().enumerate().map(|(i, r)| (i as u64, r))
}

#[test]
fn new_missions_are_recorded_in_canonical_json_version_3() {
    let (_, records) = running().finish();
    for r in &records {
        assert_eq!(r.v, RecordFormat::V3);
        let body = r.to_body().unwrap();
        assert!(
            body.ends_with(b",\"v\":3}"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(aura_core::jcs::canonicalize(&body).unwrap(), body);
        assert_eq!(Recorded::from_body(&body).unwrap(), *r);
    }
    // A version this build does not know is refused, not read as another.
    let body = String::from_utf8(records[0].to_body().unwrap()).unwrap();
    assert!(Recorded::from_body(body.replace("\"v\":3", "\"v\":4").as_bytes()).is_err());
}

/// The state-hash rule of record format 3, pinned: a mission that completes two calls
/// (one with a compensation), is cancelled and undoes the first. Another implementation
/// of docs/missions.md's rule must reach these hashes; a change to the rule fails here.
#[test]
fn format_3_state_hashes_are_the_documented_vector() {
    let mut s = running();
    s.push(turn(vec![call("c1", "fs.write")], "write")).unwrap();
    s.push(Event::Decided {
        call_id: "c1".into(),
        decision: decision("fs.write", Outcome::Permit),
    })
    .unwrap();
    s.push(effect("c1", "fs.write", true, true, None)).unwrap();
    s.push(turn(vec![call("c2", "fs.read")], "read")).unwrap();
    s.push(Event::Decided {
        call_id: "c2".into(),
        decision: decision("fs.read", Outcome::Permit),
    })
    .unwrap();
    s.push(effect("c2", "fs.read", true, false, None)).unwrap();
    s.push(Event::CancelRequested {
        by: "operator".into(),
        reason: "enough".into(),
        at: t(9),
    })
    .unwrap();
    s.push(transition(MissionState::Compensating)).unwrap();
    s.push(Event::Compensated {
        call_id: "c1".into(),
        ok: true,
        error: None,
        at: t(10),
        attempts: 0,
    })
    .unwrap();
    s.push(transition(MissionState::Cancelled)).unwrap();
    let (mission, records) = s.finish();
    assert!(records.iter().all(|r| r.v == RecordFormat::V3));
    let hashes: Vec<String> = records.iter().map(|r| r.state_hash.to_hex()).collect();
    assert_eq!(hashes, FORMAT_3_VECTOR, "{hashes:#?}");
    assert_eq!(replay(indexed(&records)).unwrap(), mission);

    // The same events recorded in format 2 hash the whole list of completed calls where
    // format 3 hashes its digest (the empty list's digest is zero, not `[]`), so every
    // hash differs, and each record replays by its own rule.
    let v2: Vec<Recorded> = {
        let mut s = Step::submit_in(records[0].event.clone(), RecordFormat::V2).unwrap();
        for r in &records[1..] {
            s.push(r.event.clone()).unwrap();
        }
        s.finish().1
    };
    assert!(v2.iter().all(|r| r.v == RecordFormat::V2));
    for (i, (a, b)) in records.iter().zip(&v2).enumerate() {
        assert_ne!(a.state_hash, b.state_hash, "entry {i}");
    }
    assert_eq!(replay(indexed(&v2)).unwrap().state, MissionState::Cancelled);
}

/// A running mission of `n` steps, each a completed, compensable `fs.write`.
fn long_mission(format: RecordFormat, n: usize) -> Step {
    let mut s = submit_in(format);
    s.push(Event::Judged {
        decision: decision("mission.submit", Outcome::Permit),
    })
    .unwrap();
    s.push(transition(MissionState::Authorized)).unwrap();
    s.push(transition(MissionState::Running)).unwrap();
    for i in 0..n {
        let id = format!("c{i}");
        s.push(turn(vec![call(&id, "fs.write")], "write")).unwrap();
        s.push(Event::Decided {
            call_id: id.clone(),
            decision: decision("fs.write", Outcome::Permit),
        })
        .unwrap();
        s.push(effect(&id, "fs.write", true, true, None)).unwrap();
    }
    s
}

/// Regression: the state hash covered the whole list of completed calls, so hashing a
/// step cost more the longer the mission (a step at 2,000 calls took four times one at
/// 32). From format 3 what is hashed beside the event stays the same size; format 2,
/// still replayed, grows as it did.
#[test]
fn the_hashed_state_does_not_grow_with_a_missions_history() {
    let summary = |format, n| {
        long_mission(format, n)
            .mission()
            .state_summary()
            .unwrap()
            .len()
    };
    let (early, late) = (
        summary(RecordFormat::V3, 10),
        summary(RecordFormat::V3, 300),
    );
    // Only the counters' digits grow.
    assert!(
        late <= early + 16,
        "{early} bytes at 10 steps, {late} at 300"
    );
    let (early, late) = (
        summary(RecordFormat::V2, 10),
        summary(RecordFormat::V2, 300),
    );
    assert!(
        late > early + 290 * 50,
        "{early} bytes at 10 steps, {late} at 300"
    );
    // A long mission still replays, and copying it copies none of its history.
    let (mission, records) = long_mission(RecordFormat::V3, 300).finish();
    assert_eq!(replay(indexed(&records)).unwrap(), mission);
    assert_eq!(mission.completed.len(), 300);
    assert_eq!(mission.conversation.len(), 600);
}

/// The hashes of `format_3_state_hashes_are_the_documented_vector`, also in
/// docs/missions.md.
const FORMAT_3_VECTOR: [&str; 14] = [
    "cb0713f4b1169956df33a3929c7470763a78b52db05e2284aa2742e66ee236fb",
    "31d0dd3c0efc0b1702327fdf30e956c47c12797b2fe77156df0d1ff6715a5aef",
    "2eca5a99a1f451ba8a123beee0b0538f7e114ddc7b2501723e670e9378d63572",
    "b69249b783294d8a0d83063961194f760304fc3ce27210b55c90c0122c9e7cc3",
    "8223fa81d3cd1f803a39a107f33d359f9322ba618537e4855af7b8a3b5acee11",
    "90c9a4bb164f338bf9c4aed45581f9f1b1cdeca11404bb8de24e4f8ba312346f",
    "a016c137903900af7e746a916332f5c9483a84fadd37ed05785d0858d82cc9af",
    "a97e644c5ac93b9aab167d1b5e80290a7797b17b45aa033d26caea779446ca38",
    "60a45163c6d2906df5001bce0a6398b397c4d8ec32500af3e39626b25ba040e1",
    "13a1ffe5a234a4f33017e5ffd2444d602dad22d74753a3eaa2c5b5e826989805",
    "07303c85efe721c16d1efd00aece794b02cf7b67b62790a008d7ed3b2feba0b4",
    "61c8d48b1ad052961dc486b571d7cad67c0fa7d10a8ad8bf3170a74670e741b5",
    "f78af459b47c6731b6bce67b45f349ad260b12a8ee401da0fc6b109f32ab0ead",
    "305d2b0cf7bf27f2ada206a4ffcfb9e96c7d1436dc1314e990e4fbf73c0b784f",
];

#[test]
fn a_record_switching_format_mid_mission_is_named() {
    // One mission's record is in one format: an entry in another (a version 1 body spliced
    // into a version 2 record) is a divergence, not a silent change of hashing rule.
    let (_, mut records) = running().finish();
    records[2].v = RecordFormat::V1;
    assert!(matches!(
        replay(indexed(&records)),
        Err(Divergence::FormatChanged { entry: 2, .. })
    ));
}

#[test]
fn an_event_without_canonical_json_is_refused_not_hashed_as_empty() {
    // The defect: the kernel wrote `unwrap_or_default()` of the JSON it hashes, so a value
    // with no JSON form would have been hashed (and recorded) as an empty body. Canonical
    // JSON refuses values nested deeper than it allows; the event must be refused.
    let mut deep = json!(1);
    for _ in 0..aura_core::jcs::MAX_DEPTH + 1 {
        deep = json!([deep]);
    }
    let mut s = running();
    let before = s.mission().clone();
    let err = s
        .push(turn(
            vec![ToolCall {
                id: "c1".into(),
                name: "fs.read".into(),
                arguments: deep,
            }],
            "deep",
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot write the record as JSON"),
        "{err}"
    );
    assert_eq!(*s.mission(), before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn replay_reproduces_every_state_hash(seed in any::<u64>()) {
        let (mission, records) = simulate(seed);
        prop_assert!(mission.state.is_terminal());
        // Through the ledger body encoding, too.
        let decoded: Vec<Recorded> = records.iter().map(|r| Recorded::from_body(&r.to_body().unwrap()).unwrap()).collect();
        prop_assert_eq!(&decoded, &records);
        let replayed = replay(indexed(&decoded)).unwrap();
        prop_assert_eq!(replayed, mission);
    }

    #[test]
    fn a_tampered_record_names_the_divergent_entry(seed in any::<u64>(), which in any::<prop::sample::Index>(), how in 0u8..4) {
        let (_, mut records) = simulate(seed);
        let i = which.index(records.len());
        let mut changed = true;
        match how {
            // Change a recorded timestamp or text inside the event, keeping its hash.
            0 => match &mut records[i].event {
                Event::Transition { reason, .. } => reason.push('!'),
                Event::Turn { turn, .. } => turn.completion_tokens += 1,
                Event::Effect { effect, .. } => effect.output = json!({"bytes": 13}),
                Event::Decided { decision, .. } => decision.deciding.push("extra".into()),
                Event::Approved { approver, .. } | Event::Rejected { approver, .. } => approver.push('x'),
                Event::Submitted { spec, .. } => spec.objective.push('.'),
                Event::Judged { decision } => decision.errors.push("e".into()),
                Event::CancelRequested { reason, .. } => reason.push('?'),
                Event::RetryRequested { by, .. } | Event::Resumed { by, .. } | Event::Paused { by, .. } => by.push('!'),
                Event::Attempt { attempt, .. } | Event::AttemptFailed { attempt, .. } | Event::Heartbeat { attempt, .. } => *attempt += 1,
                Event::TimedOut { at } | Event::Message { at, .. } | Event::Compensated { at, .. } | Event::Expanded { at, .. } => {
                    *at = Timestamp::from_nanos(at.as_nanos() + 1);
                }
            },
            // Change a recorded hash.
            1 => records[i].state_hash.0[0] ^= 1,
            // Drop an entry.
            2 => { records.remove(i); }
            // Swap with the next entry.
            _ => {
                if i + 1 < records.len() && records[i] != records[i + 1] {
                    records.swap(i, i + 1);
                } else {
                    changed = false;
                }
            }
        }
        prop_assume!(changed && !records.is_empty());
        match replay(indexed(&records)) {
            Ok(_) if how == 2 && i == records.len() => {} // dropping the last entry leaves a valid prefix
            Ok(_) => prop_assert!(false, "tampering at entry {} ({}) went unnoticed", i, how),
            Err(Divergence::HashMismatch { entry, .. } | Divergence::Refused { entry, .. }) => {
                prop_assert_eq!(entry, i as u64);
            }
            Err(other) => prop_assert!(false, "unexpected divergence {}", other),
        }
    }
}

/// Records written in format 2 by the kernel before format 3 (40 missions of `simulate`,
/// seeds 0 to 39, written at commit 057678d; one entry body per line, a blank line
/// between missions) still replay to the same state hashes by format 2's rule, and the
/// same events recorded anew in format 2 give the very same bytes.
#[test]
fn records_made_in_format_2_still_replay() {
    let text = include_str!("fixtures/records-v2.jsonl");
    let mut missions = 0;
    for (seed, block) in text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .enumerate()
    {
        let records: Vec<Recorded> = block
            .lines()
            .map(|l| Recorded::from_body(l.as_bytes()).unwrap())
            .collect();
        assert!(records.iter().all(|r| r.v == RecordFormat::V2));
        let mission = replay(indexed(&records)).unwrap();
        assert_eq!(mission.state_hash, records.last().unwrap().state_hash);
        let (_, again) = simulate_in(seed as u64, RecordFormat::V2);
        assert_eq!(again, records, "seed {seed}");
        missions += 1;
    }
    assert_eq!(missions, 40);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Format 2 is still written for the fixtures and vectors; its records replay.
    #[test]
    fn format_2_records_still_replay(seed in any::<u64>()) {
        let (mission, records) = simulate_in(seed, RecordFormat::V2);
        prop_assert!(records.iter().all(|r| r.v == RecordFormat::V2));
        prop_assert_eq!(replay(indexed(&records)).unwrap(), mission);
    }
}

/// Writes `fixtures/records-v2.jsonl` from the kernel as it stands (run at 057678d, the
/// last commit that wrote format 2, to make the fixture).
#[test]
#[ignore = "writes the fixture"]
fn make_v2_fixture() {
    let mut out = String::new();
    for seed in 0..40 {
        let (_, records) = simulate_in(seed, RecordFormat::V2);
        for r in records {
            out.push_str(std::str::from_utf8(&r.to_body().unwrap()).unwrap());
            out.push('\n');
        }
        out.push('\n');
    }
    std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/records-v2.jsonl"
        ),
        out,
    )
    .unwrap();
}

/// Records written before attempts, heartbeats and pauses were recorded (40 simulated
/// missions, one entry body per line, a blank line between missions) still replay to
/// the same state hashes: the new fields stay out of the hashed state while unused.
#[test]
fn records_made_before_attempts_existed_still_replay() {
    let text = include_str!("fixtures/records-before-attempts.jsonl");
    let mut missions = 0;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let records: Vec<Recorded> = block
            .lines()
            .map(|l| Recorded::from_body(l.as_bytes()).unwrap())
            .collect();
        let mission = replay(indexed(&records)).unwrap();
        assert_eq!(mission.state_hash, records.last().unwrap().state_hash);
        missions += 1;
    }
    assert_eq!(missions, 40);
}

/// The effect's error kind is additive: every record of the fixture (made before it
/// existed, failed effects among them) reads back without one and encodes to the very
/// same bytes, so its entries hash and replay as before; an effect recorded with a kind
/// keeps it.
#[test]
fn effects_recorded_without_an_error_kind_encode_as_before_and_a_kind_round_trips() {
    let text = include_str!("fixtures/records-before-attempts.jsonl");
    let mut failed_effects = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let record = Recorded::from_body(line.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(record.to_body().unwrap()).unwrap(), line);
        if let Event::Effect { effect, .. } = &record.event
            && !effect.ok
        {
            assert_eq!(effect.error_kind, None);
            failed_effects += 1;
        }
    }
    assert!(failed_effects > 0, "the fixture holds failed effects");

    let Event::Effect { effect, .. } = effect("c1", "fs.write", false, false, None) else {
        unreachable!("an effect");
    };
    let with_kind = Effect {
        error_kind: Some("io".into()),
        ..effect
    };
    let json = serde_json::to_string(&with_kind).unwrap();
    assert!(
        json.contains(r#""error":"disk full","error_kind":"io""#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<Effect>(&json).unwrap(), with_kind);
}

/// The recipe of the recipe tests: write a note, then read it back.
fn tidy() -> Recipe {
    Recipe {
        v: RECIPE_FORMAT,
        name: "tidy".into(),
        version: 1,
        params: vec!["path".into()],
        calls: vec![
            RecipeCall {
                tool: "fs.write".into(),
                arguments: json!({"path": "{{path}}", "content": "hi"}),
            },
            RecipeCall {
                tool: "fs.read".into(),
                arguments: json!({"path": "{{path}}"}),
            },
        ],
    }
}

/// A running mission whose turn asked for `recipe.run` of [`tidy`] as call `r1`,
/// permitted.
fn running_a_recipe() -> Step {
    let mut s = running();
    s.push(turn(
        vec![ToolCall {
            id: "r1".into(),
            name: RUN_TOOL.into(),
            arguments: json!({"name": "tidy", "arguments": {"path": "a.md"}}),
        }],
        "running tidy",
    ))
    .unwrap();
    s.push(Event::Decided {
        call_id: "r1".into(),
        decision: decision(RUN_TOOL, Outcome::Permit),
    })
    .unwrap();
    s
}

fn expanded(recipe: &Recipe, calls: Vec<ToolCall>) -> Event {
    Event::Expanded {
        call_id: "r1".into(),
        recipe: recipe.clone(),
        digest: recipe.digest().unwrap(),
        calls,
        at: t(2),
    }
}

#[test]
fn a_recipes_expansion_must_be_what_the_recipe_gives_and_its_result_is_derived() {
    let mut s = running_a_recipe();
    let recipe = tidy();
    let args = std::collections::BTreeMap::from([("path".to_owned(), "a.md".to_owned())]);
    let calls = recipe.expand("r1", &args).unwrap();
    let events = s.mission().events;
    // Tampered expansions are refused and leave no trace.
    let mut forged = calls.clone();
    forged[0].arguments["path"] = json!("../../etc/passwd");
    let mut wrong_digest = expanded(&recipe, calls.clone());
    if let Event::Expanded { digest, .. } = &mut wrong_digest {
        digest.0[0] ^= 1;
    }
    let mut other = tidy();
    other.name = "other".into();
    for bad in [
        expanded(&recipe, forged),
        wrong_digest,
        expanded(&other, other.expand("r1", &args).unwrap()),
        expanded(&recipe, calls[..1].to_vec()),
    ] {
        assert!(s.push(bad).is_err());
        assert_eq!(s.mission().events, events);
    }
    s.push(expanded(&recipe, calls.clone())).unwrap();
    // The recipe's calls are the turn's now, undecided; `recipe.run` is not run itself.
    assert_eq!(s.mission().undecided().count(), 2);
    assert!(
        s.push(Event::Attempt {
            call_id: "r1".into(),
            attempt: 1,
            at: t(2)
        })
        .is_err()
    );
    for c in &calls {
        s.push(Event::Decided {
            call_id: c.id.clone(),
            decision: decision(&c.name, Outcome::Permit),
        })
        .unwrap();
    }
    assert_eq!(
        s.mission()
            .permitted()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["r1/1", "r1/2"]
    );
    assert!(s.mission().recipe_ready().is_none());
    s.push(effect("r1/1", "fs.write", true, true, None))
        .unwrap();
    // Its result cannot be given while a call is unresolved, nor made up after.
    assert!(s.push(effect("r1", RUN_TOOL, true, false, None)).is_err());
    s.push(effect("r1/2", "fs.read", true, false, None))
        .unwrap();
    let result = s.mission().recipe_ready().unwrap();
    assert!(result.ok);
    assert_eq!(result.output["results"].as_array().unwrap().len(), 2);
    let mut lie = result.clone();
    lie.output["results"] = json!([]);
    assert!(
        s.push(Event::Effect {
            effect: lie,
            at: t(3)
        })
        .is_err()
    );
    s.push(Event::Effect {
        effect: result,
        at: t(3),
    })
    .unwrap();
    let m = s.mission().clone();
    assert!(m.calls.is_empty());
    // One message for the reasoner's one call; the recipe's calls can be undone.
    let answered: Vec<&str> = m
        .conversation
        .iter()
        .filter(|msg| msg.role == Role::Tool)
        .filter_map(|msg| msg.tool_call_id.as_deref())
        .collect();
    assert_eq!(answered, ["r1"]);
    assert_eq!(m.next_compensation().unwrap().call_id, "r1/1");
    let (m, records) = s.finish();
    assert_eq!(replay(indexed(&records)).unwrap(), m);
}

#[test]
fn a_denied_call_stops_its_recipe_and_names_the_call() {
    let mut s = running_a_recipe();
    let recipe = tidy();
    let args = std::collections::BTreeMap::from([("path".to_owned(), "a.md".to_owned())]);
    s.push(expanded(&recipe, recipe.expand("r1", &args).unwrap()))
        .unwrap();
    s.push(Event::Decided {
        call_id: "r1/1".into(),
        decision: decision("fs.write", Outcome::Deny),
    })
    .unwrap();
    // The rest of the recipe goes with it: nothing is left to decide or run.
    assert_eq!(s.mission().undecided().count(), 0);
    assert_eq!(s.mission().permitted().count(), 0);
    let result = s.mission().recipe_ready().unwrap();
    assert!(!result.ok);
    assert_eq!(result.error_kind.as_deref(), Some("unauthorized"));
    let error = result.error.clone().unwrap();
    assert!(
        error.starts_with("recipe `tidy` stopped at call 1 of 2 (`fs.write`, id r1/1): denied by policy (default-policy)"),
        "{error}"
    );
    s.push(Event::Effect {
        effect: result,
        at: t(3),
    })
    .unwrap();
    assert!(s.mission().calls.is_empty());
    assert!(s.mission().completed.is_empty());
    let (m, records) = s.finish();
    assert_eq!(replay(indexed(&records)).unwrap(), m);
}
