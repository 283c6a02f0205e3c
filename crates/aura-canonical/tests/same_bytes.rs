//! What Aura hashes or signs is the same bytes whether serde_json keeps maps in insertion
//! order (`preserve_order`, on in every node build through cedar) or sorts them: a signed
//! receipt as its ledger body, a signed manifest, a license (its JSON and its file form) and
//! a mission's record bodies (versions 2 and 3, with the state hashes they carry) are compared
//! with the bytes checked in under `tests/expected/`. This file is built twice, with and
//! without the crate's `preserve-order` feature; both builds must match the same files.
//!
//! The values fed in hold JSON objects with unsorted keys, read from text the way a
//! reasoner's tool arguments or a tool's result arrive, so that a build that writes maps in
//! their own order would write other bytes. (Before RFC 8785 was adopted, mission bodies
//! were written so: `missions_written_by_the_old_rule_depend_on_the_build` shows it.)
//!
//! To write the expected files anew (only when a format's version changes):
//! `AURA_WRITE_EXPECTED=1 cargo nextest run -p aura-canonical`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::PathBuf;

use aura_core::door::SeededEntropy;
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::signed::Signed;
use aura_core::{AgentId, MissionId, Timestamp, jcs};
use aura_identity::{Level, Namespace};
use aura_kernel::{
    Authority, Budget, Decision, Effect, Event, MissionSpec, MissionState, Outcome, RecordFormat,
    Recorded, Step, ToolCall, Turn,
};
use aura_model::license::{self, Allowance, License, LicenseId, Licensee, Uses};
use aura_model::manifest::SignedManifest;
use aura_model::receipt::{Charge, Receipt, ReceiptId, Role};
use aura_model::{Runtime, io_hash};
use serde_json::Value;

fn expected(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/expected")
        .join(name)
}

/// Compares `bytes` with the checked-in file `name` (or writes it, when asked to).
fn check(name: &str, bytes: &[u8]) {
    let path = expected(name);
    if std::env::var_os("AURA_WRITE_EXPECTED").is_some() {
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        want == bytes,
        "{name} differs from the checked-in bytes in this build (preserve_order {}):\n{}",
        preserve_order_is_on(),
        String::from_utf8_lossy(bytes)
    );
}

/// JSON read from text, keys in the order written (not sorted).
fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn key(name: &str, seed: u64) -> Signer {
    Signer::ephemeral(name, &SeededEntropy::new(seed)).unwrap()
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(1_800_000_000 + secs)
}

/// Whether this build's serde_json keeps object members in insertion order.
fn preserve_order_is_on() -> bool {
    let v = value(r#"{"b":1,"a":2}"#);
    v.as_object().unwrap().keys().next().unwrap() == "b"
}

#[test]
fn the_build_is_the_one_its_features_say() {
    // Without this, both runs could silently test the same build.
    assert_eq!(
        preserve_order_is_on(),
        cfg!(feature = "preserve-order"),
        "run this crate alone (`cargo nextest run -p aura-canonical`, with and without \
         `--features preserve-order`): in a workspace build cedar turns serde_json's \
         preserve_order on for every crate"
    );
}

#[test]
fn a_receipt_is_the_same_bytes() {
    let node = key("node", 1);
    let publisher = key("publisher", 2);
    // What the node hashes as a request's input: the request as canonical JSON.
    let request =
        value(r#"{"model":"mix","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#);
    let receipt = Receipt {
        id: ReceiptId::from_bytes([7; 16]),
        node: node.public_key().node_id(),
        package: Hash::sha256(b"package"),
        package_name: "mix".into(),
        uses: Uses::INFERENCE,
        charges: vec![Charge {
            role: Role::Model,
            subject: Hash::sha256(b"package"),
            license: LicenseId::from_bytes([1; 16]),
            licensor: publisher.public_key(),
            price_per_1000_tokens: 100,
            currency: "usd-micro".into(),
            experts: Vec::new(),
        }],
        input_hash: io_hash(&jcs::to_vec(&request).unwrap()),
        output_hash: io_hash(b"hello"),
        prompt_tokens: 6,
        completion_tokens: 2,
        expert_tokens: Vec::new(),
        runtime: Runtime {
            version: "0.1.0".into(),
            backend: "candle".into(),
            device: "cpu".into(),
            dtype: "bf16".into(),
            kernel: "generic".into(),
        },
        started_at: t(1),
        finished_at: t(2),
    };
    let signed = receipt.sign(&node).unwrap();
    // The ledger body of an `inference.receipt` entry.
    check("receipt.json", &signed.to_json().unwrap());
    check("receipt.bin", &signed.to_bytes().unwrap());
}

#[test]
fn a_license_is_the_same_bytes() {
    let publisher = key("publisher", 2);
    let node = key("node", 1);
    let signed = License {
        id: LicenseId::from_bytes([1; 16]),
        licensor: publisher.public_key(),
        package: Hash::sha256(b"package"),
        package_name: "mix".into(),
        licensee: Licensee::Node(node.public_key().node_id()),
        not_before: t(0),
        not_after: t(86_400),
        allowance: Allowance::Tokens(1_000_000),
        price_per_1000_tokens: 100,
        currency: "usd-micro".into(),
        uses: Uses::INFERENCE,
        issued_at: t(0),
    }
    .sign(&publisher)
    .unwrap();
    check("license.json", &signed.to_json().unwrap());
    check(
        "license.file",
        license::to_file(&signed).unwrap().as_bytes(),
    );
    check("license.bin", &signed.to_bytes().unwrap());
}

#[test]
fn a_manifest_is_the_same_bytes() {
    // A real manifest (a mixture with expert packs), signed again by this test's key.
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../aura-model/tests/fixtures/v1/mix.manifest.aura");
    let old = SignedManifest::from_bytes(&std::fs::read(fixture).unwrap()).unwrap();
    let publisher = key("publisher", 2);
    let mut manifest = old.manifest().clone();
    manifest.publisher = publisher.public_key();
    let signed = manifest.sign(&publisher).unwrap();
    check("manifest.aura", &signed.to_bytes());
    check("manifest.json", &signed.signed.to_json().unwrap());
}

/// A mission's record in `format`: tool arguments, a policy resource and a tool's result
/// with keys out of order, as they arrive.
fn mission_records(format: RecordFormat) -> Vec<Recorded> {
    let spec = MissionSpec {
        regions: Vec::new(),
        objective: "write the notes".into(),
        tools: vec!["fs.write".into(), "mission.finish".into()],
        authority: Authority {
            credential: None,
            level: Level::L2,
        },
        timeout_secs: 600,
        namespace: Namespace::new("default").unwrap(),
        budget: Budget {
            max_steps: 10,
            max_tokens: 10_000,
        },
        reasoner: String::new(),
        network: Vec::new(),
        workspace: None,
        steps: None,
        tool_steps: Default::default(),
    };
    let decision = |action: &str| Decision {
        action: action.into(),
        resource: value(r#"{"path":"notes.md","kind":"file"}"#),
        destructive: false,
        outcome: Outcome::Permit,
        deciding: vec!["default-policy".into()],
        errors: Vec::new(),
        request: Hash::sha256(action.as_bytes()),
    };
    let transition = |to, at| Event::Transition {
        to,
        reason: format!("to {to}"),
        at: t(at),
    };
    let mut s = Step::submit_in(
        Event::Submitted {
            mission: MissionId::from_bytes([1; 16]),
            agent: AgentId::from_bytes([2; 16]),
            spec,
            at: t(0),
        },
        format,
    )
    .unwrap();
    s.push(Event::Judged {
        decision: decision("mission.submit"),
    })
    .unwrap();
    s.push(transition(MissionState::Authorized, 1)).unwrap();
    s.push(transition(MissionState::Running, 1)).unwrap();
    s.push(Event::Turn {
        turn: Turn {
            content: "writing".into(),
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "fs.write".into(),
                arguments: value(r#"{"path":"notes.md","content":"hello","mode":{"z":1,"a":2}}"#),
            }],
            finish: "tool_calls".into(),
            prompt_tokens: 10,
            completion_tokens: 5,
            provider: "scripted".into(),
            model: "test".into(),
        },
        at: t(2),
    })
    .unwrap();
    s.push(Event::Decided {
        call_id: "c1".into(),
        decision: decision("fs.write"),
    })
    .unwrap();
    s.push(Event::Effect {
        effect: Effect {
            call_id: "c1".into(),
            tool: "fs.write".into(),
            ok: true,
            output: value(r#"{"path":"notes.md","bytes":5,"created":true}"#),
            error: None,
            error_kind: None,
            compensation: Some(value(
                r#"{"type":"restore_file","path":"notes.md","previous":null}"#,
            )),
            message: None,
            finish: None,
        },
        at: t(3),
    })
    .unwrap();
    let (_, records) = s.finish();
    records
}

/// Format 2's bodies and state hashes, checked in before format 3 replaced it for new
/// missions: the kernel still writes (and so replays) them byte for byte.
#[test]
fn mission_record_bodies_are_the_same_bytes() {
    check_mission_records(RecordFormat::V2, "mission-records.jsonl");
}

#[test]
fn mission_record_bodies_of_format_3_are_the_same_bytes() {
    check_mission_records(RecordFormat::V3, "mission-records-v3.jsonl");
}

fn check_mission_records(format: RecordFormat, name: &str) {
    let records = mission_records(format);
    assert!(records.iter().all(|r| r.v == format));
    let mut bodies = Vec::new();
    for r in &records {
        let body = r.to_body().unwrap();
        // Each body is its own canonical form.
        assert_eq!(jcs::canonicalize(&body).unwrap(), body);
        bodies.extend_from_slice(&body);
        bodies.push(b'\n');
    }
    // The bodies carry the state hashes, so these are the same in both builds too.
    check(name, &bodies);
}

#[test]
fn missions_written_by_the_old_rule_depend_on_the_build() {
    // The defect this crate guards against: version 1 wrote serde_json's own order, so
    // the same event gave other bytes (and another state hash) in a build with
    // `preserve_order`. If this ever fails, serde_json sorts in both builds and the test
    // above would not show anything.
    let r = &mission_records(RecordFormat::CURRENT)[4];
    let v1 = Recorded {
        v: RecordFormat::V1,
        ..r.clone()
    }
    .to_body()
    .unwrap();
    let sorted = String::from_utf8(v1)
        .unwrap()
        .contains(r#"{"content":"hello","mode":{"a":2,"z":1},"path":"notes.md"}"#);
    assert_eq!(sorted, !preserve_order_is_on());
}

#[test]
fn signed_statements_read_back_from_their_canonical_json() {
    let node = key("node", 1);
    let signed = License {
        id: LicenseId::from_bytes([2; 16]),
        licensor: node.public_key(),
        package: Hash::sha256(b"p"),
        package_name: "p".into(),
        licensee: Licensee::AnyNode,
        not_before: t(0),
        not_after: t(1),
        allowance: Allowance::Unlimited,
        price_per_1000_tokens: 0,
        currency: "usd".into(),
        uses: Uses::INFERENCE,
        issued_at: t(0),
    }
    .sign(&node)
    .unwrap();
    let json = signed.to_json().unwrap();
    assert_eq!(Signed::<License>::from_json(&json).unwrap(), signed);
}
