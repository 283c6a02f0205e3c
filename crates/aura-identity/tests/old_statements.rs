//! Statements signed by earlier versions of Aura keep verifying: credentials, execution
//! tokens and approvals (versions 1 and 2), written by the code as it stood before the
//! signed-statement codec moved into aura-core, and checked in under
//! `tests/fixtures/v1/statements.json` with their canonical bytes, their JSON form and
//! their digests. Each must decode, verify and re-encode to exactly what was signed. (The
//! fixture was written by `make_fixture` in this file as of commit 601518b, the code before
//! the move.)

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use aura_identity::*;
use serde::de::DeserializeOwned;

fn fixtures() -> serde_json::Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/statements.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn check<T: Statement + PartialEq + std::fmt::Debug + DeserializeOwned>(v: &serde_json::Value) {
    let bytes = hex::decode(v["bytes"].as_str().unwrap()).unwrap();
    let signed = Signed::<T>::from_bytes(&bytes).unwrap();
    signed.verify_signature().unwrap();
    assert_eq!(signed.to_bytes().unwrap(), bytes, "{}", v["kind"]);
    assert_eq!(signed.statement.kind(), v["kind"].as_str().unwrap());
    assert_eq!(
        signed.statement.digest().unwrap().to_hex(),
        v["digest"].as_str().unwrap()
    );
    let from_json: Signed<T> = serde_json::from_str(v["json"].as_str().unwrap()).unwrap();
    assert_eq!(from_json, signed);
    // Any change to the signed bytes is detected.
    let mut tampered = bytes;
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
