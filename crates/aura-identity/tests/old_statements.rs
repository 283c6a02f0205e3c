//! Statements signed by earlier versions of Aura keep verifying: credentials, execution
//! tokens and approvals (versions 1 and 2), written by the code as it stood before the
//! signed-statement codec moved into aura-core, and checked in under
//! `tests/fixtures/v1/statements.json` with their canonical bytes, their JSON form and
//! their digests. Each must decode, verify and re-encode to exactly what was signed.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use aura_identity::*;
use serde::de::DeserializeOwned;

fn fixtures() -> serde_json::Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/statements.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn check<T: Statement + PartialEq + DeserializeOwned>(v: &serde_json::Value) {
    let bytes = hex::decode(v["bytes"].as_str().unwrap()).unwrap();
    let signed = Signed::<T>::from_bytes(&bytes).unwrap();
    signed.verify_signature().unwrap();
    assert_eq!(signed.to_bytes(), bytes, "{}", v["kind"]);
    assert_eq!(signed.statement.kind(), v["kind"].as_str().unwrap());
    assert_eq!(
        signed.statement.digest().to_hex(),
        v["digest"].as_str().unwrap()
    );
    let from_json: Signed<T> = serde_json::from_str(v["json"].as_str().unwrap()).unwrap();
    assert_eq!(from_json, signed);
    // Any change to the signed bytes is detected.
    let mut tampered = bytes.clone();
    tampered[1] ^= 1;
    if let Ok(t) = Signed::<T>::from_bytes(&tampered) {
        assert!(t.verify_signature().is_err());
    }
}

#[test]
fn statements_signed_before_the_shared_codec_still_verify() {
    let all = fixtures();
    let all = all.as_array().unwrap();
    let mut kinds = Vec::new();
    for v in all {
        let kind = v["kind"].as_str().unwrap();
        match kind {
            "credential/v1" => check::<Credential>(v),
            "execution-token/v1" => check::<ExecutionToken>(v),
            "approval/v1" | "approval/v2" => check::<Approval>(v),
            other => panic!("unknown kind {other}"),
        }
        kinds.push(kind);
    }
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "approval/v1",
            "approval/v2",
            "credential/v1",
            "execution-token/v1"
        ]
    );
}

/// Writes the fixture from the code as it stands. Kept only to show how it was made (run
/// once, before the codec moved):
/// `AURA_WRITE_FIXTURES=1 cargo test -p aura-identity --test old_statements -- --ignored`.
#[test]
#[ignore = "writes the fixture"]
fn make_fixture() {
    use aura_core::door::SeededEntropy;
    use aura_core::hash::Hash;
    use aura_core::keystore::Signer;
    use aura_core::{AgentId, MissionId, Timestamp};
    use serde::Serialize;

    if std::env::var_os("AURA_WRITE_FIXTURES").is_none() {
        return;
    }
    let e = SeededEntropy::new(7);
    let node = Signer::ephemeral("node", &e).unwrap();
    let alice = Signer::ephemeral("alice", &e).unwrap();
    let ns = Namespace::new("team-a").unwrap();
    let t = |s: u64| Timestamp::from_secs(1_800_000_000 + s);
    fn entry<T: Statement + Serialize>(s: &Signed<T>) -> serde_json::Value {
        serde_json::json!({
            "kind": s.statement.kind(),
            "json": serde_json::to_string(s).unwrap(),
            "bytes": hex::encode(s.to_bytes()),
            "digest": s.statement.digest().to_hex(),
        })
    }
    let agent_cred = Credential {
        id: CredentialId::from_bytes([1; 16]),
        subject: Subject::Agent(AgentId::from_bytes([2; 16])),
        key: alice.public_key(),
        level: Level::L2,
        namespace: ns.clone(),
        not_before: t(0),
        not_after: t(3600),
        issuer: node.public_key(),
    };
    let operator_cred = Credential {
        id: CredentialId::from_bytes([3; 16]),
        subject: Subject::Operator(OperatorName::new("alice@example.com").unwrap()),
        key: alice.public_key(),
        level: Level::L3,
        namespace: ns.clone(),
        not_before: t(0),
        not_after: t(3600),
        issuer: node.public_key(),
    };
    let token = ExecutionToken {
        id: TokenId::from_bytes([4; 16]),
        mission: MissionId::from_bytes([5; 16]),
        agent: AgentId::from_bytes([2; 16]),
        namespace: ns.clone(),
        tools: vec!["fs.read".into(), "fs.write".into(), "mission.finish".into()],
        issued_at: t(10),
        expires_at: t(70),
        issuer: node.public_key(),
    };
    let approval = |answers, n| Approval {
        id: ApprovalId::from_bytes([n; 16]),
        mission: MissionId::from_bytes([5; 16]),
        answers,
        request: Hash::sha256(b"request"),
        verdict: Verdict::Approve,
        reason: "stale log, ok to delete".into(),
        issued_at: t(20),
        expires_at: t(620),
        approver: alice.public_key(),
    };
    let out = vec![
        entry(&Signed::sign(agent_cred, &node).unwrap()),
        entry(&Signed::sign(operator_cred, &node).unwrap()),
        entry(&Signed::sign(token, &node).unwrap()),
        entry(&Signed::sign(approval(None, 6), &alice).unwrap()),
        entry(
            &Signed::sign(
                approval(
                    Some(Answers::Call {
                        turn: 2,
                        id: "call_1".into(),
                    }),
                    7,
                ),
                &alice,
            )
            .unwrap(),
        ),
        entry(&Signed::sign(approval(Some(Answers::Declaration), 8), &alice).unwrap()),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("statements.json"),
        serde_json::to_string_pretty(&out).unwrap() + "\n",
    )
    .unwrap();
}
