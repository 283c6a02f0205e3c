//! Data made by earlier versions of Aura keeps verifying: a signed manifest, licenses in
//! their file form, and a ledger export holding signed receipts and settlement statements,
//! all written by the code as it stood before canonical JSON (RFC 8785) was adopted, and
//! checked in under `tests/fixtures/v1/`. Their bytes must decode, verify and re-encode
//! to exactly what was signed.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use aura_core::PublicKey;
use aura_ledger::bundle::{BundleReader, Frame, verify_bundle};
use aura_ledger::entry::Entry;
use aura_model::license::SignedLicense;
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
    assert_eq!(signed.manifest.encode().unwrap(), signed.encoding);
}

#[test]
fn licenses_signed_before_canonical_json_still_verify() {
    let index = index();
    let licenses = index["licenses"].as_array().unwrap();
    assert_eq!(licenses.len(), 3);
    for l in licenses {
        let text = read(l["file"].as_str().unwrap());
        let signed = SignedLicense::from_json(&text).unwrap();
        signed.verify_signature().unwrap();
        assert_eq!(signed.to_bytes().unwrap(), hex_at(&l["bytes"]));
        assert_eq!(
            SignedLicense::from_bytes(&hex_at(&l["bytes"])).unwrap(),
            signed
        );
        // The file form is written the same way it was.
        assert_eq!(signed.to_json().as_bytes(), &text[..]);
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
                let signed = SignedReceipt::from_body(&e.body).unwrap();
                signed.verify(&key, *i).unwrap();
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
        s.verify(&key, &|i| receipts.get(&i).cloned(), Some(&all))
            .unwrap();
        assert_eq!(s.to_bytes().unwrap(), hex_at(want));
    }
}

/// Writes the fixtures above from the code as it stands. Kept only to show how they were
/// made (run once, before the formats changed, with serde_json's `preserve_order` on as
/// in a node build):
/// `AURA_WRITE_FIXTURES=1 cargo test -p aura-model --features serde_json/preserve_order
/// --test old_formats -- --ignored make_fixtures`.
#[test]
#[ignore = "writes the fixtures"]
fn make_fixtures() {
    use aura_core::Timestamp;
    use aura_core::door::{Clock as _, SeededEntropy};
    use aura_model::import::Options;
    use aura_model::license::{Allowance, License, LicenseId, Licensee, Uses};
    use aura_model::meter::Outcome;
    use aura_model::settle::StatementId;
    use aura_model::{Meter, io_hash, no_progress};
    use aura_store::Store as _;
    use common::{T0, World, key, moe_dir, pack_dir};

    if std::env::var_os("AURA_WRITE_FIXTURES").is_none() {
        return;
    }
    let w = World::new();
    let (carol, alice, bob) = (key("carol", 31), key("alice", 32), key("bob", 33));
    let src = w.src();
    let pack = |name: &str, experts: &[u32], seed, owner| {
        let (p, own) = w
            .import_as(
                &pack_dir(&src, name, experts, seed),
                &Options {
                    expert_pack: true,
                    ..Options::default()
                },
                owner,
            )
            .unwrap();
        std::fs::remove_file(w.registry.licenses().path_of(own.id())).unwrap();
        p
    };
    let pa = pack("experts-a", &[0, 1], 5, &alice);
    let pb = pack("experts-b", &[2, 3], 6, &bob);
    let (mix, own) = w
        .import_as(
            &moe_dir(&src, "mix", &[]),
            &Options {
                expert_packs: vec!["experts-a".into(), "experts-b".into()],
                ..Options::default()
            },
            &carol,
        )
        .unwrap();
    std::fs::remove_file(w.registry.licenses().path_of(own.id())).unwrap();
    let out = fixtures();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("mix.manifest.aura"), mix.signed.to_bytes()).unwrap();
    let mut licenses = Vec::new();
    for (i, (signer, digest, name, price)) in [
        (&carol, mix.digest(), "mix", 100),
        (&alice, pa.digest(), "experts-a", 40),
        (&bob, pb.digest(), "experts-b", 30),
    ]
    .into_iter()
    .enumerate()
    {
        let l = License {
            id: LicenseId::from_bytes([i as u8 + 1; 16]),
            licensor: signer.public_key(),
            package: digest,
            package_name: name.into(),
            licensee: Licensee::Node(w.node()),
            not_before: Timestamp::from_secs(T0 - 1),
            not_after: Timestamp::from_secs(T0 + 86_400),
            allowance: Allowance::Tokens(1_000_000),
            price_per_1000_tokens: price,
            currency: "usd-micro".into(),
            uses: Uses::INFERENCE,
            issued_at: Timestamp::from_secs(T0 - 1),
        };
        let signed = l.sign(signer).unwrap();
        w.registry.licenses().install(&signed).unwrap();
        let file = format!("license-{name}.json");
        std::fs::write(out.join(&file), signed.to_json()).unwrap();
        licenses.push(serde_json::json!({
            "file": file,
            "bytes": hex::encode(signed.to_bytes().unwrap()),
        }));
    }
    common::runtime().block_on(async {
        let store = w.store();
        let meter = Meter::open(&store).await.unwrap();
        let verified = w
            .registry
            .packages()
            .load("mix", None, &no_progress)
            .unwrap();
        let entropy = SeededEntropy::new(3);
        for (i, (prompt, completion, experts)) in [
            (6u64, 4u64, [5u64, 5, 6, 4]),
            (900, 100, [1, 1, 1, 0]),
            (5, 2, [0, 0, 0, 0]),
        ]
        .into_iter()
        .enumerate()
        {
            let auth = meter
                .authorize(
                    &verified,
                    w.registry.licenses(),
                    w.node(),
                    w.clock.now(),
                    Uses::INFERENCE,
                    prompt + completion,
                )
                .unwrap();
            w.clock.advance(std::time::Duration::from_secs(1));
            meter
                .record(
                    &store,
                    &w.node_key,
                    auth,
                    Outcome {
                        input_hash: io_hash(format!("prompt {i}").as_bytes()),
                        output_hash: io_hash(format!("answer {i}").as_bytes()),
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        expert_tokens: experts.to_vec(),
                        runtime: aura_model::Runtime {
                            version: "0.1.0".into(),
                            backend: "candle".into(),
                            device: "cpu".into(),
                            dtype: "bf16".into(),
                            kernel: "generic".into(),
                        },
                    },
                    w.clock.as_ref(),
                    &entropy,
                )
                .await
                .unwrap();
        }
        let mut all = Vec::new();
        receipt::scan(&store, 1, |r| {
            all.push(r);
            Ok(())
        })
        .await
        .unwrap();
        let mut n = 0u8;
        let statements = settle::settle(
            &all,
            Timestamp::from_secs(T0),
            Timestamp::from_secs(T0 + 3600),
            w.node(),
            w.clock.now(),
            &mut || {
                n += 1;
                StatementId::from_bytes([n; 16])
            },
        )
        .unwrap();
        let recorded = settle::record(&store, &w.node_key, statements)
            .await
            .unwrap();
        let file = std::fs::File::create(out.join("ledger.bundle")).unwrap();
        store
            .export(Box::new(file), Box::new(|_| {}))
            .await
            .unwrap();
        let index = serde_json::json!({
            "made_by": "aura-model tests/old_formats.rs make_fixtures, before RFC 8785",
            "node_public_key": w.node_key.public_key().to_hex(),
            "manifest_digest": mix.digest().to_hex(),
            "licenses": licenses,
            "receipts": all.iter().map(|r| serde_json::json!({
                "index": r.index,
                "bytes": hex::encode(r.signed.to_bytes().unwrap()),
            })).collect::<Vec<_>>(),
            "statements": recorded.iter().map(|(s, _)| hex::encode(s.to_bytes().unwrap()))
                .collect::<Vec<_>>(),
        });
        std::fs::write(
            out.join("index.json"),
            serde_json::to_string_pretty(&index).unwrap() + "\n",
        )
        .unwrap();
    });
}
