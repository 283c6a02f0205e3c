//! The approval path end to end: a request escalates, a person signs an approval naming
//! the request's digest, `aura_identity::verify_approval` checks it, and the request is
//! decided again with the verified approval in its context. Approvals by too low a level,
//! expired, forged, rejecting, or for another request never turn into a permit.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use aura_core::door::SeededEntropy;
use aura_core::keystore::Signer;
use aura_core::{Signature, Timestamp};
use aura_identity::Level::{L2, L3, L4};
use aura_identity::{
    Answers, Approval, ApprovalError, ApprovalId, Credential, CredentialId, Escalation, Level,
    OperatorName, Signed, Subject, TrustSet, Verdict, VerifiedApproval, verify_approval,
};
use aura_policy::{Outcome, PolicySet, Request, decide, request_digest};
use common::*;

const T0: u64 = 1_800_000_000;

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(T0 + secs)
}

struct World {
    node: Signer,
    alice: Signer,
    mallory: Signer,
    trust: TrustSet,
}

fn world() -> World {
    let e = SeededEntropy::new(11);
    let node = Signer::ephemeral("node", &e).unwrap();
    let alice = Signer::ephemeral("alice", &e).unwrap();
    let mallory = Signer::ephemeral("mallory", &e).unwrap();
    let trust = TrustSet::new([node.public_key()]);
    World {
        node,
        alice,
        mallory,
        trust,
    }
}

/// Alice's credential, issued by the node, at `level` in team-a, valid for an hour.
fn credential(w: &World, level: Level) -> Signed<Credential> {
    let c = Credential {
        id: CredentialId::from_bytes([1; 16]),
        subject: Subject::Operator(OperatorName::new("alice@example.com").unwrap()),
        key: w.alice.public_key(),
        level,
        namespace: ns("team-a"),
        not_before: t(0),
        not_after: t(3600),
        issuer: w.node.public_key(),
    };
    Signed::sign(c, &w.node).unwrap()
}

/// The escalated call the approvals of these tests answer.
static CALL: std::sync::LazyLock<Answers> = std::sync::LazyLock::new(|| Answers::Call {
    turn: 1,
    id: "call_1".into(),
});

/// Alice's approval of `request`, valid for ten minutes from t(60).
fn approval(w: &World, request: &Request, verdict: Verdict) -> Signed<Approval> {
    let a = Approval {
        id: ApprovalId::from_bytes([2; 16]),
        mission: MISSION,
        answers: Some(CALL.clone()),
        request: request_digest(request),
        verdict,
        reason: "looked at the diff".to_owned(),
        issued_at: t(60),
        expires_at: t(660),
        approver: w.alice.public_key(),
    };
    Signed::sign(a, &w.alice).unwrap()
}

fn escalation(request: &Request, required: Level) -> Escalation<'_> {
    Escalation {
        mission: MISSION,
        namespace: &request.principal.namespace,
        answers: &CALL,
        request: request_digest(request),
        required,
    }
}

fn with_approval(request: &Request, approval: VerifiedApproval) -> Request {
    let mut r = request.clone();
    r.context.approval = Some(approval);
    r
}

fn delete_request() -> Request {
    let mut r = req(L2, "fs.delete", path("team-a", "notes/old.md"));
    r.context.mission = Some(MISSION);
    r
}

#[test]
fn escalate_approve_verify_decide_again_permit() {
    let w = world();
    let policies = PolicySet::defaults();
    let request = delete_request();

    let first = decide(&policies, &request);
    assert_eq!(first.outcome, Outcome::Escalate { level: L3 }, "{first:?}");

    let signed = approval(&w, &request, Verdict::Approve);
    let verified = verify_approval(
        &signed,
        &credential(&w, L3),
        &w.trust,
        t(120),
        escalation(&request, L3),
    )
    .unwrap();
    assert_eq!(verified.level, L3);

    let again = with_approval(&request, verified);
    // The approval answers the request; it does not change which request it is.
    assert_eq!(request_digest(&again), request_digest(&request));
    let second = decide(&policies, &again);
    assert_eq!(second.outcome, Outcome::Permit, "{second:?}");
    assert_eq!(second.deciding, ["aura.workspace.delete"]);

    // An L4 approver may answer an L3 escalation.
    let verified = verify_approval(
        &signed,
        &credential(&w, L4),
        &w.trust,
        t(120),
        escalation(&request, L3),
    )
    .unwrap();
    assert_eq!(
        decide(&policies, &with_approval(&request, verified)).outcome,
        Outcome::Permit
    );
}

#[test]
fn too_low_a_level_is_refused_and_never_permits() {
    let w = world();
    let policies = PolicySet::defaults();
    let request = delete_request();
    let signed = approval(&w, &request, Verdict::Approve);
    let err = verify_approval(
        &signed,
        &credential(&w, L2),
        &w.trust,
        t(120),
        escalation(&request, L3),
    )
    .unwrap_err();
    assert_eq!(err, ApprovalError::LevelTooLow { have: L2, need: L3 });

    // Even if a caller skipped verification and passed an L2 approval, policy asks again.
    let forced = VerifiedApproval {
        id: ApprovalId::from_bytes([2; 16]),
        verdict: Verdict::Approve,
        approver: Subject::Operator(OperatorName::new("alice@example.com").unwrap()),
        level: L2,
        request: request_digest(&request),
    };
    let d = decide(&policies, &with_approval(&request, forced));
    assert_eq!(d.outcome, Outcome::Escalate { level: L3 }, "{d:?}");
}

#[test]
fn expired_and_not_yet_valid_approvals_are_refused() {
    let w = world();
    let request = delete_request();
    let signed = approval(&w, &request, Verdict::Approve);
    let cred = credential(&w, L3);
    for (now, expired) in [(t(660), true), (t(3000), true), (t(59), false)] {
        let err =
            verify_approval(&signed, &cred, &w.trust, now, escalation(&request, L3)).unwrap_err();
        if expired {
            assert!(matches!(err, ApprovalError::Expired(_)), "{err:?}");
        } else {
            assert!(matches!(err, ApprovalError::NotYetValid(_)), "{err:?}");
        }
    }
}

#[test]
fn forged_approvals_are_refused() {
    let w = world();
    let request = delete_request();
    let cred = credential(&w, L3);
    let esc = || escalation(&request, L3);

    // A field changed after signing: the signature no longer covers it.
    let mut tampered = approval(&w, &request, Verdict::Reject);
    tampered.statement.verdict = Verdict::Approve;
    assert!(matches!(
        verify_approval(&tampered, &cred, &w.trust, t(120), esc()),
        Err(ApprovalError::BadSignature(_))
    ));

    // Mallory signs an approval in Alice's name.
    let mut forged = approval(&w, &request, Verdict::Approve);
    forged.signature = w.mallory.sign(b"anything at all");
    assert!(matches!(
        verify_approval(&forged, &cred, &w.trust, t(120), esc()),
        Err(ApprovalError::BadSignature(_))
    ));
    forged.signature = Signature([0; 64]);
    assert!(matches!(
        verify_approval(&forged, &cred, &w.trust, t(120), esc()),
        Err(ApprovalError::BadSignature(_))
    ));

    // Mallory approves with her own key but Alice's credential.
    let mut a = approval(&w, &request, Verdict::Approve).statement;
    a.approver = w.mallory.public_key();
    let by_mallory = Signed::sign(a, &w.mallory).unwrap();
    assert_eq!(
        verify_approval(&by_mallory, &cred, &w.trust, t(120), esc()),
        Err(ApprovalError::KeyMismatch)
    );

    // Mallory issues herself an L4 credential: she is not a trusted issuer.
    let mut c = cred.statement;
    c.key = w.mallory.public_key();
    c.level = L4;
    c.issuer = w.mallory.public_key();
    let self_issued = Signed::sign(c, &w.mallory).unwrap();
    assert!(matches!(
        verify_approval(&by_mallory, &self_issued, &w.trust, t(120), esc()),
        Err(ApprovalError::Credential(_))
    ));
}

#[test]
fn an_approval_for_another_request_does_not_carry_over() {
    let w = world();
    let policies = PolicySet::defaults();
    let request = delete_request();
    // Approved: deleting notes/old.md. Attempted: deleting notes/important.md.
    let signed = approval(&w, &request, Verdict::Approve);
    let verified = verify_approval(
        &signed,
        &credential(&w, L3),
        &w.trust,
        t(120),
        escalation(&request, L3),
    )
    .unwrap();
    let mut other = req(L2, "fs.delete", path("team-a", "notes/important.md"));
    other.context.mission = Some(MISSION);
    assert_eq!(
        verify_approval(
            &signed,
            &credential(&w, L3),
            &w.trust,
            t(120),
            escalation(&other, L3)
        ),
        Err(ApprovalError::WrongRequest)
    );
    let d = decide(&policies, &with_approval(&other, verified));
    assert_eq!(d.outcome, Outcome::Deny, "{d:?}");
    assert!(d.errors[0].contains("different request"), "{d:?}");
}

#[test]
fn a_rejection_denies() {
    let w = world();
    let policies = PolicySet::defaults();
    let request = delete_request();
    let signed = approval(&w, &request, Verdict::Reject);
    let verified = verify_approval(
        &signed,
        &credential(&w, L3),
        &w.trust,
        t(120),
        escalation(&request, L3),
    )
    .unwrap();
    assert_eq!(verified.verdict, Verdict::Reject);
    let d = decide(&policies, &with_approval(&request, verified));
    assert_eq!(d.outcome, Outcome::Deny, "{d:?}");
    assert!(d.errors[0].contains("rejects"), "{d:?}");
}

#[test]
fn an_approval_cannot_lift_a_hard_forbid_or_a_higher_escalation() {
    let policies = PolicySet::defaults()
        .merge(
            PolicySet::parse(
                "prod.cedar",
                r#"
@id("prod-l4")
@escalate("L4")
forbid (principal, action, resource is Aura::Path)
when { resource.path like "prod/*" }
unless { context has approval && context.approval.level >= 4 };
@id("no-secrets")
forbid (principal, action, resource is Aura::Path) when { resource.path like "secrets/*" };
"#,
            )
            .unwrap(),
        )
        .unwrap();
    let approve = |r: &Request, level: Level| {
        with_approval(
            r,
            VerifiedApproval {
                id: ApprovalId::from_bytes([3; 16]),
                verdict: Verdict::Approve,
                approver: Subject::Operator(OperatorName::new("bob").unwrap()),
                level,
                request: request_digest(r),
            },
        )
    };
    let prod = req(L2, "fs.delete", path("team-a", "prod/db"));
    assert_eq!(
        decide(&policies, &prod).outcome,
        Outcome::Escalate { level: L4 }
    );
    // An L3 approval answers the destructive escalation but not prod's: ask for L4.
    let d = decide(&policies, &approve(&prod, L3));
    assert_eq!(d.outcome, Outcome::Escalate { level: L4 }, "{d:?}");
    assert_eq!(d.deciding, ["prod-l4"]);
    assert_eq!(
        decide(&policies, &approve(&prod, L4)).outcome,
        Outcome::Permit
    );

    let secret = req(L2, "fs.delete", path("team-a", "secrets/key"));
    assert_eq!(decide(&policies, &secret).outcome, Outcome::Deny);
    assert_eq!(
        decide(&policies, &approve(&secret, L4)).outcome,
        Outcome::Deny
    );
}
