//! Credentials, execution tokens and approvals: each defect refused for its own reason,
//! tampering with any signed field detected, encodings round-tripping.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use aura_core::door::{Entropy as _, SeededEntropy};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::*;
use proptest::prelude::*;

const T0: u64 = 1_800_000_000;

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(T0 + secs)
}

struct World {
    node: Signer,
    stranger: Signer,
    alice: Signer,
    trust: TrustSet,
    ns: Namespace,
}

fn world() -> World {
    let e = SeededEntropy::new(7);
    let node = Signer::ephemeral("node", &e).unwrap();
    let stranger = Signer::ephemeral("stranger", &e).unwrap();
    let alice = Signer::ephemeral("alice", &e).unwrap();
    let trust = TrustSet::new([node.public_key()]);
    World {
        node,
        stranger,
        alice,
        trust,
        ns: Namespace::new("team-a").unwrap(),
    }
}

fn operator_cred(w: &World, key: &Signer, level: Level, issuer: &Signer) -> Signed<Credential> {
    let c = Credential {
        id: CredentialId::from_bytes([1; 16]),
        subject: Subject::Operator(OperatorName::new("alice@example.com").unwrap()),
        key: key.public_key(),
        level,
        namespace: w.ns.clone(),
        not_before: t(0),
        not_after: t(3600),
        issuer: issuer.public_key(),
    };
    Signed::sign(c, issuer).unwrap()
}

#[test]
fn credentials_check_issuer_signature_and_time() {
    let w = world();
    let cred = operator_cred(&w, &w.alice, Level::L3, &w.node);
    assert_eq!(
        verify_credential(&cred, &w.trust, t(10)).unwrap().level,
        Level::L3
    );
    assert!(matches!(
        verify_credential(&cred, &w.trust, t(3600)),
        Err(CredentialError::Expired(_))
    ));
    assert!(matches!(
        verify_credential(&cred, &w.trust, Timestamp::from_secs(T0 - 1)),
        Err(CredentialError::NotYetValid(_))
    ));
    let foreign = operator_cred(&w, &w.alice, Level::L4, &w.stranger);
    assert!(matches!(
        verify_credential(&foreign, &w.trust, t(10)),
        Err(CredentialError::Untrusted(BadStatement::UntrustedIssuer(_)))
    ));
    // Signing in someone else's name is refused up front.
    let mut c = cred.statement;
    c.issuer = w.node.public_key();
    assert!(matches!(
        Signed::sign(c, &w.stranger),
        Err(BadStatement::WrongSigner { .. })
    ));
}

#[test]
fn any_edited_field_breaks_the_signature() {
    let w = world();
    let cred = operator_cred(&w, &w.alice, Level::L2, &w.node);
    let json = serde_json::to_value(&cred).unwrap();
    let edits: Vec<(&str, serde_json::Value)> = vec![
        ("level", "L4".into()),
        ("namespace", "team-b".into()),
        (
            "not_after",
            Timestamp::from_secs(T0 + 999_999).to_string().into(),
        ),
        ("key", w.stranger.public_key().to_hex().into()),
        (
            "subject",
            serde_json::json!({"type": "operator", "id": "mallory"}),
        ),
    ];
    for (field, value) in edits {
        let mut j = json.clone();
        j["statement"][field] = value;
        let edited: Signed<Credential> = serde_json::from_value(j).unwrap();
        assert!(
            verify_credential(&edited, &w.trust, t(10)).is_err(),
            "editing {field} went unnoticed"
        );
    }
    // Unknown fields are refused when reading, rather than silently ignored.
    let mut j = json;
    j["statement"]["admin"] = true.into();
    assert!(serde_json::from_value::<Signed<Credential>>(j).is_err());
}

fn token(w: &World, mission: MissionId, tools: &[&str], expires: u64) -> Signed<ExecutionToken> {
    let tok = ExecutionToken {
        id: TokenId::from_bytes([9; 16]),
        mission,
        agent: AgentId::from_bytes([3; 16]),
        namespace: w.ns.clone(),
        tools: tools.iter().map(|s| (*s).to_owned()).collect(),
        issued_at: t(0),
        expires_at: t(expires),
        issuer: w.node.public_key(),
    };
    Signed::sign(tok, &w.node).unwrap()
}

#[test]
fn execution_tokens_are_refused_for_every_defect() {
    let w = world();
    let m = MissionId::from_bytes([5; 16]);
    let other = MissionId::from_bytes([6; 16]);
    let tok = token(&w, m, &["fs.read", "fs.write"], 60);
    let check = |tok: Option<&Signed<ExecutionToken>>, now: u64, mission: MissionId, tool: &str| {
        verify_token(tok, &w.trust, t(now), mission, tool).map(|_| ())
    };
    assert_eq!(check(Some(&tok), 10, m, "fs.write"), Ok(()));
    assert_eq!(check(None, 10, m, "fs.write"), Err(TokenError::Missing));
    assert!(matches!(
        check(Some(&tok), 60, m, "fs.write"),
        Err(TokenError::Expired(_))
    ));
    assert!(matches!(
        check(Some(&tok), 10, other, "fs.write"),
        Err(TokenError::WrongMission { .. })
    ));
    assert_eq!(
        check(Some(&tok), 10, m, "cmd.run"),
        Err(TokenError::OutOfScope("cmd.run".into()))
    );
    // Widening the scope in transit breaks the signature.
    let mut j = serde_json::to_value(&tok).unwrap();
    j["statement"]["tools"] = serde_json::json!(["fs.read", "fs.write", "cmd.run"]);
    let widened: Signed<ExecutionToken> = serde_json::from_value(j).unwrap();
    assert!(matches!(
        check(Some(&widened), 10, m, "cmd.run"),
        Err(TokenError::Untrusted(_))
    ));
    // A token from an issuer the node does not trust.
    let mut foreign = tok.statement;
    foreign.issuer = w.stranger.public_key();
    let foreign = Signed::sign(foreign, &w.stranger).unwrap();
    assert!(matches!(
        check(Some(&foreign), 10, m, "fs.read"),
        Err(TokenError::Untrusted(_))
    ));
}

fn approval(
    w: &World,
    signer: &Signer,
    request: Hash,
    mission: MissionId,
    expires: u64,
) -> Signed<Approval> {
    let a = Approval {
        id: ApprovalId::from_bytes([4; 16]),
        mission,
        request,
        verdict: Verdict::Approve,
        reason: "looks right".into(),
        issued_at: t(0),
        expires_at: t(expires),
        approver: signer.public_key(),
    };
    let _ = w;
    Signed::sign(a, signer).unwrap()
}

#[test]
fn approvals_need_the_right_person_level_request_and_time() {
    let w = world();
    let m = MissionId::from_bytes([5; 16]);
    let request = Hash::sha256(b"delete /workspace/build");
    let esc = |required| Escalation {
        mission: m,
        namespace: &w.ns,
        request,
        required,
    };
    let cred_l3 = operator_cred(&w, &w.alice, Level::L3, &w.node);
    let ok = approval(&w, &w.alice, request, m, 600);
    let v = verify_approval(&ok, &cred_l3, &w.trust, t(10), esc(Level::L3)).unwrap();
    assert_eq!((v.level, v.verdict), (Level::L3, Verdict::Approve));

    // A level too low.
    assert!(matches!(
        verify_approval(&ok, &cred_l3, &w.trust, t(10), esc(Level::L4)),
        Err(ApprovalError::LevelTooLow {
            have: Level::L3,
            need: Level::L4
        })
    ));
    // Expired.
    assert!(matches!(
        verify_approval(&ok, &cred_l3, &w.trust, t(600), esc(Level::L3)),
        Err(ApprovalError::Expired(_))
    ));
    // A forged signature: the stranger signs an approval naming Alice's key.
    let mut forged = ok.clone();
    forged.signature = w.stranger.sign(&ok.statement.signing_message());
    assert!(matches!(
        verify_approval(&forged, &cred_l3, &w.trust, t(10), esc(Level::L3)),
        Err(ApprovalError::BadSignature(_))
    ));
    // Someone with their own key but Alice's credential.
    let by_stranger = approval(&w, &w.stranger, request, m, 600);
    assert!(matches!(
        verify_approval(&by_stranger, &cred_l3, &w.trust, t(10), esc(Level::L3)),
        Err(ApprovalError::KeyMismatch)
    ));
    // Another request, another mission.
    let other_request = approval(&w, &w.alice, Hash::sha256(b"rm -rf /"), m, 600);
    assert!(matches!(
        verify_approval(&other_request, &cred_l3, &w.trust, t(10), esc(Level::L3)),
        Err(ApprovalError::WrongRequest)
    ));
    let other_mission = approval(&w, &w.alice, request, MissionId::from_bytes([8; 16]), 600);
    assert!(matches!(
        verify_approval(&other_mission, &cred_l3, &w.trust, t(10), esc(Level::L3)),
        Err(ApprovalError::WrongMission { .. })
    ));
    // A credential from an untrusted issuer, and one for an agent rather than a person.
    let self_issued = operator_cred(&w, &w.alice, Level::L4, &w.alice);
    assert!(matches!(
        verify_approval(&ok, &self_issued, &w.trust, t(10), esc(Level::L3)),
        Err(ApprovalError::Credential(_))
    ));
    let mut agent_cred = cred_l3.statement.clone();
    agent_cred.subject = Subject::Agent(AgentId::from_bytes([2; 16]));
    let agent_cred = Signed::sign(agent_cred, &w.node).unwrap();
    assert!(matches!(
        verify_approval(&ok, &agent_cred, &w.trust, t(10), esc(Level::L3)),
        Err(ApprovalError::NotAPerson)
    ));
    // A person from another namespace.
    let mut elsewhere = cred_l3.statement;
    elsewhere.namespace = Namespace::new("team-b").unwrap();
    let elsewhere = Signed::sign(elsewhere, &w.node).unwrap();
    assert!(matches!(
        verify_approval(&ok, &elsewhere, &w.trust, t(10), esc(Level::L3)),
        Err(ApprovalError::WrongNamespace { .. })
    ));
}

fn arb_cred() -> impl Strategy<Value = Credential> {
    (
        any::<[u8; 16]>(),
        any::<bool>(),
        1u8..=4,
        "[a-z0-9][a-z0-9-]{0,20}",
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(id, agent, level, ns, nb, na, seed)| {
            let e = SeededEntropy::new(seed);
            let k = Signer::ephemeral("k", &e).unwrap().public_key();
            Credential {
                id: CredentialId::from_bytes(id),
                subject: if agent {
                    Subject::Agent(AgentId::from_bytes(e.array()))
                } else {
                    Subject::Operator(OperatorName::new("op").unwrap())
                },
                key: k,
                level: Level::from_u8(level).unwrap(),
                namespace: Namespace::new(&ns).unwrap(),
                not_before: Timestamp::from_nanos(nb),
                not_after: Timestamp::from_nanos(na),
                issuer: k,
            }
        })
}

proptest! {
    #[test]
    fn credential_encoding_round_trips(c in arb_cred(), sig in any::<[u8; 32]>()) {
        let mut sig64 = [0u8; 64];
        sig64[..32].copy_from_slice(&sig);
        let s = Signed { statement: c, signature: aura_core::Signature(sig64) };
        prop_assert_eq!(Signed::<Credential>::from_bytes(&s.to_bytes()).unwrap(), s);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Signed::<Credential>::from_bytes(&bytes);
        let _ = Signed::<ExecutionToken>::from_bytes(&bytes);
        let _ = Signed::<Approval>::from_bytes(&bytes);
    }
}
