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
        Err(aura_core::signed::Error::WrongSigner { .. })
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

/// The escalated call the approvals of these tests answer.
fn delete_call() -> Answers {
    Answers::Call {
        turn: 2,
        id: "call_1".into(),
    }
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
        answers: Some(delete_call()),
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
    let call = delete_call();
    let esc = |required| Escalation {
        mission: m,
        namespace: &w.ns,
        answers: &call,
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
    forged.signature = w.stranger.sign(&ok.statement.signing_message().unwrap());
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
    // The same request, but another escalation: the same call id proposed again in a later
    // turn, another call of the same turn, or the declaration.
    for other in [
        Answers::Call {
            turn: 3,
            id: "call_1".into(),
        },
        Answers::Call {
            turn: 2,
            id: "call_2".into(),
        },
        Answers::Declaration,
    ] {
        let escalation = Escalation {
            answers: &other,
            ..esc(Level::L3)
        };
        assert!(
            matches!(
                verify_approval(&ok, &cred_l3, &w.trust, t(10), escalation),
                Err(ApprovalError::WrongEscalation { .. })
            ),
            "{other}"
        );
    }
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

/// An approval of version 1 named only the request digest, so one approval answered every
/// escalation of an identical request in its mission (two deletes of the same file were
/// both approved by one signature). Version 1 approvals still decode and verify as
/// signatures, but no longer answer an escalation.
#[test]
fn an_approval_that_names_no_call_answers_no_escalation() {
    let w = world();
    let m = MissionId::from_bytes([5; 16]);
    let request = Hash::sha256(b"delete /workspace/build");
    let cred = operator_cred(&w, &w.alice, Level::L3, &w.node);
    let mut v1 = approval(&w, &w.alice, request, m, 600).statement;
    v1.answers = None;
    let v1 = Signed::sign(v1, &w.alice).unwrap();
    v1.verify_signature().unwrap();
    assert_eq!(
        Signed::<Approval>::from_bytes(&v1.to_bytes().unwrap()).unwrap(),
        v1
    );
    for answers in [delete_call(), Answers::Declaration] {
        let escalation = Escalation {
            mission: m,
            namespace: &w.ns,
            answers: &answers,
            request,
            required: Level::L3,
        };
        assert_eq!(
            verify_approval(&v1, &cred, &w.trust, t(10), escalation),
            Err(ApprovalError::Unnamed)
        );
    }
    // Nor can a version 1 signature be passed off as version 2 or the other way round:
    // the version and the kind are signed.
    let mut upgraded = v1;
    upgraded.statement.answers = Some(delete_call());
    assert!(upgraded.verify_signature().is_err());
    let ok = approval(&w, &w.alice, request, m, 600);
    let mut downgraded = ok;
    downgraded.statement.answers = None;
    assert!(downgraded.verify_signature().is_err());
}

/// Test vectors for the approval's canonical encodings, computed independently of this
/// crate (Python's `cryptography`, RFC 8032's first test key): the encoding, the signature
/// over the `Statement` tag, kind and encoding, and the statement digest. Version 1 is the
/// encoding approvals had before version 2; old ledgers hold it.
#[test]
fn approval_encodings_match_their_test_vectors() {
    let seed: [u8; 32] =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
    let key = Signer::from_seed_bytes("rfc8032", &seed).unwrap();
    let approval = |answers| Approval {
        id: ApprovalId::from_bytes([1; 16]),
        mission: MissionId::from_bytes([2; 16]),
        answers,
        request: Hash([3; 32]),
        verdict: Verdict::Approve,
        reason: "stale log".into(),
        issued_at: Timestamp::from_secs(1_700_000_000),
        expires_at: Timestamp::from_secs(1_700_000_600),
        approver: key.public_key(),
    };
    let tail = "03030303030303030303030303030303030303030303030303030303030303030100097374616c65206c6f6717979cfe362a000017979d89e8f37000d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let ids = "0101010101010101010101010101010102020202020202020202020202020202";
    let cases = [
        (
            None,
            format!("01{ids}{tail}"),
            "ca9b0132186140cbda7c030f4bb4aea4d7908bd0206ce131d7578b1ed28639f4e31ac0f26a476c9dcd9e1da61c50bcf183bd047631f1fafa37776f111cb9680c",
            "0618b3dafcdf37ee40d1559870dce978231d1e7a6cca392415ce3d3e126e01ca",
        ),
        (
            Some(Answers::Call {
                turn: 3,
                id: "call_1".into(),
            }),
            format!("02{ids}0200000003000663616c6c5f31{tail}"),
            "a6eb5ae2e9196559b50584bf1c74cd9f8cbcac1f00e8a3080f71f499af4f32ee2387d1c7ba5ee698d0b5589c6e280c4b89a03213947ce4fdb4775bd745478e01",
            "7bebaba50fda67e30ae7428dc76b3e3d12e54f68354fcc0c5273c7de7f80bc70",
        ),
        (
            Some(Answers::Declaration),
            format!("02{ids}01{tail}"),
            "280639e374b2f5d6721e5da75d518a1e8bce3d68799f26ab845b5970b602b095a37f4d4fc5d6a20ceb25f7a868b76d71f6817d39dbe5fe185409382f06821a05",
            "21603d9c0e807d49e02868fac45b7c58c0aa647d72fe18eba4bb059a817fa98d",
        ),
    ];
    for (answers, encoding, signature, digest) in cases {
        let a = approval(answers);
        assert_eq!(
            hex::encode(a.to_bytes().unwrap()),
            encoding,
            "{:?}",
            a.answers
        );
        assert_eq!(a.digest().unwrap().to_hex(), digest, "{:?}", a.answers);
        let signed = Signed::sign(a, &key).unwrap();
        assert_eq!(hex::encode(signed.signature.0), signature);
        signed.verify_signature().unwrap();
        let bytes = hex::decode(format!("{encoding}{signature}")).unwrap();
        assert_eq!(Signed::<Approval>::from_bytes(&bytes).unwrap(), signed);
    }
}

fn arb_answers() -> impl Strategy<Value = Option<Answers>> {
    prop_oneof![
        Just(None),
        Just(Some(Answers::Declaration)),
        (any::<u32>(), "[a-zA-Z0-9_-]{1,40}")
            .prop_map(|(turn, id)| Some(Answers::Call { turn, id })),
    ]
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
        prop_assert_eq!(Signed::<Credential>::from_bytes(&s.to_bytes().unwrap()).unwrap(), s);
    }

    #[test]
    fn approval_encoding_round_trips(
        answers in arb_answers(),
        id in any::<[u8; 16]>(),
        reject in any::<bool>(),
        reason in ".{0,40}",
        times in any::<(u64, u64)>(),
        seed in any::<u64>(),
    ) {
        let key = Signer::ephemeral("k", &SeededEntropy::new(seed)).unwrap();
        let a = Approval {
            id: ApprovalId::from_bytes(id),
            mission: MissionId::from_bytes([9; 16]),
            answers,
            request: Hash::sha256(&id),
            verdict: if reject { Verdict::Reject } else { Verdict::Approve },
            reason,
            issued_at: Timestamp::from_nanos(times.0),
            expires_at: Timestamp::from_nanos(times.1),
            approver: key.public_key(),
        };
        let s = Signed::sign(a, &key).unwrap();
        let back = Signed::<Approval>::from_bytes(&s.to_bytes().unwrap()).unwrap();
        back.verify_signature().unwrap();
        prop_assert_eq!(&back, &s);
        let json: Signed<Approval> = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        prop_assert_eq!(json, s);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Signed::<Credential>::from_bytes(&bytes);
        let _ = Signed::<ExecutionToken>::from_bytes(&bytes);
        let _ = Signed::<Approval>::from_bytes(&bytes);
    }
}
