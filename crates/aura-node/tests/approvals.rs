//! Answering escalations and declaring missions over HTTP, through a real socket: an
//! approval must name the escalation waiting, in its own mission, in the current version;
//! a declaration's timeout is bounded.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use aura_core::door::SystemClock;
use aura_core::hash::Hash;
use aura_identity::{Answers, Approval, ApprovalId, Level, Namespace, Signed, Verdict};
use serde_json::{Value, json};
use support::{Node, assert_error_shape, person_key, start};

/// Submits a mission of agent a; the test policy holds it in `escalated`. Its id and the
/// request digest an approval must name.
async fn held_mission(n: &Node) -> (String, Hash) {
    let r = n
        .call(
            "POST",
            "/v1/missions",
            Some("operator"),
            Some(json!({"agent": n.agent_a.to_string(), "objective": "read", "tools": ["fs.read"], "timeout_secs": 600})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["state"], "escalated", "{:?}", r.body);
    assert_eq!(
        r.body["escalation"]["answers"],
        json!({"kind": "declaration"}),
        "the view says what an approval must name: {:?}",
        r.body
    );
    let request = r.body["escalation"]["request"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (r.body["id"].as_str().unwrap().to_owned(), request)
}

/// Alice's signed answer `n` for `mission`, naming `answers` (`None`: version 1).
fn answer(node: &Node, n: u8, mission: &str, answers: Option<Answers>, request: Hash) -> Value {
    let key = person_key(2);
    let credential = node
        .engine
        .issue_operator_credential(
            "alice",
            key.public_key(),
            Level::L3,
            Namespace::new("team-a").unwrap(),
        )
        .unwrap();
    let now = aura_core::door::Clock::now(&SystemClock);
    let approval = Approval {
        id: ApprovalId::from_bytes([n; 16]),
        mission: mission.parse().unwrap(),
        answers,
        request,
        verdict: Verdict::Approve,
        reason: "fine".into(),
        issued_at: now,
        expires_at: now.saturating_add(std::time::Duration::from_secs(600)),
        approver: key.public_key(),
    };
    json!({"approval": Signed::sign(approval, &key).unwrap(), "credential": credential})
}

/// An approval named only the request digest, so one approval could answer any later
/// escalation of an identical request. Over HTTP, an approval that names no escalation
/// (version 1), another escalation, or another mission is refused (403) and changes
/// nothing; the right one is accepted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_must_name_the_escalation_waiting_in_its_mission() {
    let n = start().await;
    let (m1, request) = held_mission(&n).await;
    let (m2, request2) = held_mission(&n).await;
    let post = |mission: String, body: Value| {
        let n = &n;
        async move {
            n.call(
                "POST",
                &format!("/v1/approvals/{mission}"),
                Some("approver_a"),
                Some(body),
            )
            .await
        }
    };
    let call = Answers::Call {
        turn: 1,
        id: "call_1_1".into(),
    };
    let refused = [
        (answer(&n, 1, &m1, None, request), "version 1"),
        (
            answer(&n, 2, &m1, Some(call), request),
            "answers call `call_1_1` of turn 1",
        ),
        (
            answer(&n, 3, &m1, Some(Answers::Declaration), request2),
            "different request",
        ),
    ];
    for (body, why) in refused {
        let r = post(m1.clone(), body).await;
        assert_eq!(r.status, 403, "{why}: {:?}", r.body);
        assert_error_shape(&r);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
    }
    let right = answer(&n, 4, &m1, Some(Answers::Declaration), request);
    // Another mission's approval, replayed against this one.
    let r = post(m2.clone(), right.clone()).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("is for mission {m1}")),
        "{:?}",
        r.body
    );
    for m in [&m1, &m2] {
        let r = n
            .call("GET", &format!("/v1/missions/{m}"), Some("operator"), None)
            .await;
        assert_eq!(
            r.body["state"], "escalated",
            "nothing changed: {:?}",
            r.body
        );
    }
    let r = post(m1.clone(), right.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_ne!(r.body["state"], "escalated");
    let r = post(m1, right).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
}

/// A mission declared with a `timeout_secs` of 2^64-1 was accepted. Over HTTP a timeout
/// outside 1 s to 30 days is a 400 naming the field, and no mission is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_beyond_thirty_days_is_a_bad_request() {
    let n = start().await;
    for timeout in [json!(u64::MAX), json!(2_592_001), json!(0)] {
        let r = n
            .call(
                "POST",
                "/v1/missions",
                Some("operator"),
                Some(json!({"agent": n.agent_a.to_string(), "objective": "read", "tools": ["fs.read"], "timeout_secs": timeout})),
            )
            .await;
        assert_eq!(r.status, 400, "{timeout}: {:?}", r.body);
        assert_error_shape(&r);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("`timeout_secs`"), "{message}");
    }
    let r = n.call("GET", "/v1/missions", Some("operator"), None).await;
    assert_eq!(r.body, json!([]));
}
