//! Data made by earlier versions of Aura keeps verifying: a signed manifest, licenses in
//! their file form, and a ledger export holding signed receipts and settlement statements,
//! all written by the code as it stood before canonical JSON (RFC 8785) was adopted, and
//! checked in under `tests/fixtures/v1/`. Their bytes must decode, verify and re-encode
//! to exactly what was signed. (The fixtures were written by `make_fixtures` in this file
//! as of commit 601518b, with serde_json's `preserve_order` on as in a node build.)

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use aura_core::signed::Statement as _;
use aura_core::{PublicKey, jcs};
use aura_ledger::bundle::{BundleReader, Frame, verify_bundle};
use aura_ledger::entry::Entry;
use aura_model::license::{self, SignedLicense};
use aura_model::manifest::SignedManifest;
use aura_model::receipt::{self, LedgerReceipt, SignedReceipt};
use aura_model::settle::{self, SignedStatement};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

fn index() -> serde_json::Value {
    serde_json::from_slice(&read("index.json")).unwrap()
}

fn hex_at(v: &serde_json::Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn node_key() -> PublicKey {
    index()["node_public_key"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_manifest_signed_before_canonical_json_still_verifies() {
    let bytes = read("mix.manifest.aura");
    let signed = SignedManifest::from_bytes(&bytes).unwrap();
    assert_eq!(signed.to_bytes(), bytes);
    assert_eq!(
        signed.digest.to_hex(),
        index()["manifest_digest"].as_str().unwrap()
    );
    assert_eq!(signed.manifest().to_bytes().unwrap(), signed.encoding);
}

#[test]
fn licenses_signed_before_canonical_json_still_verify() {
    let index = index();
    let licenses = index["licenses"].as_array().unwrap();
    assert_eq!(licenses.len(), 3);
    for l in licenses {
        let text = read(l["file"].as_str().unwrap());
        let signed = license::from_file(&text).unwrap();
        license::verify_signature(&signed).unwrap();
        assert_eq!(signed.to_bytes().unwrap(), hex_at(&l["bytes"]));
        assert_eq!(
            SignedLicense::from_bytes(&hex_at(&l["bytes"])).unwrap(),
            signed
        );
        // The file form is written the same way it was.
        assert_eq!(license::to_file(&signed).unwrap().as_bytes(), &text[..]);
    }
}

/// The receipts and statements of the exported ledger, by ledger index.
fn ledger() -> (BTreeMap<u64, (Entry, aura_core::Hash)>, usize) {
    let bytes = read("ledger.bundle");
    verify_bundle(&bytes[..], &node_key()).unwrap();
    let mut reader = BundleReader::new(&bytes[..]).unwrap();
    let mut entries = BTreeMap::new();
    let mut checkpoints = 0;
    while let Some(frame) = reader.next_frame().unwrap() {
        match frame {
            Frame::Entry { encoded, hash } => {
                let e = Entry::decode(&encoded).unwrap();
                entries.insert(e.index, (e, hash));
            }
            Frame::Checkpoint(_) => checkpoints += 1,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    (entries, checkpoints)
}

#[test]
fn receipts_and_statements_recorded_before_canonical_json_still_verify() {
    let index = index();
    let key = node_key();
    let (entries, checkpoints) = ledger();
    assert!(checkpoints > 0);
    let mut receipts = BTreeMap::new();
    let mut statements = Vec::new();
    let mut unsorted = 0;
    for (i, (e, hash)) in &entries {
        match e.kind.as_str() {
            receipt::LEDGER_KIND => {
                let signed = SignedReceipt::from_json(&e.body).unwrap();
                receipt::verify(&signed, &key, *i).unwrap();
                // Written today, the same receipt's body is the old one made canonical.
                assert_eq!(
                    signed.to_json().unwrap(),
                    jcs::canonicalize(&e.body).unwrap()
                );
                receipts.insert(
                    *i,
                    LedgerReceipt {
                        index: *i,
                        seq: e.seq,
                        entry_hash: *hash,
                        signed,
                    },
                );
                // Written by a build with serde_json's `preserve_order` (as every node
                // build is): the fields in declaration order, not sorted.
                if e.body.starts_with(b"{\"receipt\":{\"id\"") {
                    unsorted += 1;
                }
            }
            settle::LEDGER_KIND => statements.push(SignedStatement::from_json(&e.body).unwrap()),
            _ => {}
        }
    }
    assert_eq!(receipts.len(), 3);
    assert_eq!(unsorted, 3, "the fixture holds bodies with unsorted keys");
    for r in index["receipts"].as_array().unwrap() {
        let at = r["index"].as_u64().unwrap();
        assert_eq!(
            receipts[&at].signed.to_bytes().unwrap(),
            hex_at(&r["bytes"])
        );
    }
    assert_eq!(statements.len(), 3);
    let all: Vec<LedgerReceipt> = receipts.values().cloned().collect();
    for (s, want) in statements
        .iter()
        .zip(index["statements"].as_array().unwrap())
    {
        settle::verify(s, &key, &|i| receipts.get(&i).cloned(), Some(&all)).unwrap();
        assert_eq!(s.to_bytes().unwrap(), hex_at(want));
    }
}
