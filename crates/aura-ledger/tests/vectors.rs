//! The checked-in test vectors, docs/ledger-vectors.json: RFC 6962/9162 reference trees
//! and proofs, and Aura's own format vectors (entries, checkpoints, proof documents,
//! bundles of every version), all read from the file. They were reproduced
//! independently from docs/ledger.md (scripts/check-ledger-vectors.py).
//!
//! Sections the current code writes are also regenerated and compared, so a change to
//! an encoding shows up here; frozen sections (bundles of older versions) are only read
//! and verified, so old data keeps verifying. `AURA_WRITE_VECTORS=1` rewrites the
//! regenerated sections into the file (for a deliberate format change, never to make a
//! failing test pass).

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use aura_core::hash::{Hash, merkle_leaf};
use aura_core::keystore::Signer;
use aura_core::{AgentId, PublicKey, Signature, Timestamp};
use aura_ledger::bundle::{BundleWriter, Expect, verify_bundle, verify_bundle_with};
use aura_ledger::entry::{Entry, Kind, leaf_hash};
use aura_ledger::merkle::{self, MemoryTree, root_of};
use aura_ledger::note::{self, KeyType, VerifierKey};
use aura_ledger::proof::Proof;
use aura_ledger::{Checkpoint, ConsistencyProof, Frontier, InclusionProof, SignedCheckpoint};
use serde_json::{Value, json};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/ledger-vectors.json"
);
const WITNESS_NAME: &str = "witness.example/w1";
const COSIGNATURE_TIME: u64 = 1_790_000_100;

fn h(s: &str) -> Hash {
    s.parse().unwrap()
}

fn vectors() -> Value {
    serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| h(x.as_str().unwrap()))
        .collect()
}

fn hexes(hs: &[Hash]) -> Value {
    hs.iter().map(|x| Value::from(x.to_hex())).collect()
}

fn signer(v: &Value) -> Signer {
    let seed: [u8; 32] = unhex(&v["node_seed"]).try_into().unwrap();
    Signer::from_seed_bytes("node", &seed).unwrap()
}

/// The vectors' entries, encoded, in index order.
fn entries(v: &Value) -> Vec<Entry> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Entry {
            index: e["index"].as_u64().unwrap(),
            agent: AgentId::from_bytes(unhex(&e["agent_hex"]).try_into().unwrap()),
            seq: e["seq"].as_u64().unwrap(),
            prev: h(e["prev"].as_str().unwrap()),
            kind: Kind::new(e["kind"].as_str().unwrap()).unwrap(),
            recorded_at: Timestamp::from_nanos(e["recorded_at_ns"].as_u64().unwrap()),
            body: unhex(&e["body_hex"]),
        })
        .collect()
}

/// The RFC 6962 reference leaves' hashes.
fn ct_leaves(v: &Value) -> Vec<Hash> {
    v["rfc6962"]["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| merkle_leaf(&unhex(x)))
        .collect()
}

/// The sections the current code produces, computed from the vectors' inputs (seed,
/// entries, times, reference leaves).
fn generated(v: &Value) -> Value {
    let signer = signer(v);
    let key = signer.public_key();
    let entries = entries(v);
    let encoded: Vec<Vec<u8>> = entries.iter().map(|e| e.encode().unwrap()).collect();
    let leaves: Vec<Hash> = encoded
        .iter()
        .map(|e| leaf_hash(&Entry::hash_encoded(e)))
        .collect();
    let tree = MemoryTree::new(leaves);

    // Checkpoints after entry 0 and after entry 2.
    let times = [1_790_000_000_250_000_000u64, 1_790_000_002_000_000_000];
    let checkpoints: Vec<SignedCheckpoint> = [1u64, 3]
        .iter()
        .zip(times)
        .map(|(&size, time)| {
            Checkpoint {
                node: key.node_id(),
                tree_size: size,
                root: tree.root(size),
                time: Timestamp::from_nanos(time),
            }
            .sign(&signer)
        })
        .collect();

    let ct = MemoryTree::new(ct_leaves(v));
    let inclusion: Vec<Value> = [(0u64, 8u64), (5, 8), (6, 7), (2, 3), (0, 1)]
        .iter()
        .map(|&(index, size)| {
            json!({"index": index, "size": size,
                   "path": hexes(&ct.inclusion_proof(index, size).unwrap())})
        })
        .collect();
    let consistency: Vec<Value> = [(1u64, 8u64), (2, 5), (2, 8), (4, 8), (6, 8), (3, 7)]
        .iter()
        .map(|&(old, new)| {
            json!({"old": old, "new": new,
                   "path": hexes(&ct.consistency_proof(old, new).unwrap())})
        })
        .collect();

    let inclusion_doc = Proof::Inclusion(InclusionProof {
        entry: encoded[1].clone(),
        path: tree.inclusion_proof(1, 3).unwrap(),
        checkpoint: checkpoints[1],
    })
    .encode();
    let consistency_doc = Proof::Consistency(ConsistencyProof {
        old: checkpoints[0],
        new: checkpoints[1],
        path: tree.consistency_proof(1, 3).unwrap(),
    })
    .encode();

    // The last checkpoint as a signed note, cosigned by a witness.
    let witness = Signer::from_seed_bytes("witness", &[9; 32]).unwrap();
    let witness_key =
        VerifierKey::new(WITNESS_NAME, KeyType::Cosignature, witness.public_key()).unwrap();
    let signed_note = note::checkpoint_note(&checkpoints[1], &signer).unwrap();
    let mut cosigned_note = signed_note.clone();
    cosigned_note.add_signature(
        note::cosign(signed_note.text(), COSIGNATURE_TIME, WITNESS_NAME, &witness).unwrap(),
    );
    let cosign = |cp: &SignedCheckpoint| {
        note::cosign(
            &note::checkpoint_text(&cp.checkpoint),
            COSIGNATURE_TIME,
            WITNESS_NAME,
            &witness,
        )
        .unwrap()
    };

    json!({
        "note": {
            "comment": "The checkpoint of size 3 as a C2SP signed note (docs/ledger.md, \"Checkpoints as signed notes\"), and cosigned by a witness (cosignature/v1). The witness key is Ed25519 with seed witness_seed.",
            "text": signed_note.text(),
            "key_id_ed25519": format!("{:08x}", VerifierKey::aura_node(key).key_id()),
            "vkey": VerifierKey::aura_node(key).to_string(),
            "note": signed_note.encode(),
            "witness_seed": hex::encode([9u8; 32]),
            "witness_name": WITNESS_NAME,
            "witness_vkey": witness_key.to_string(),
            "cosignature_time": COSIGNATURE_TIME,
            "cosigned_note": cosigned_note.encode(),
        },
        "checkpoints": checkpoints.iter().map(|c| json!({
            "tree_size": c.checkpoint.tree_size,
            "time_ns": c.checkpoint.time.as_nanos(),
            "root": c.checkpoint.root.to_hex(),
            "signed_hex": hex::encode(c.encode()),
        })).collect::<Vec<_>>(),
        "rfc6962_generated": {
            "roots": (0..=8u64).map(|n| Value::from(ct.root(n).to_hex())).collect::<Vec<_>>(),
            "inclusion": inclusion,
            "consistency": consistency,
        },
        "proofs": {
            "inclusion": {"entry_index": 1, "tree_size": 3, "hex": hex::encode(inclusion_doc)},
            "consistency": {"old": 1, "new": 3, "hex": hex::encode(consistency_doc)},
        },
        "bundles": bundles(&signer, &entries, &encoded, &checkpoints, &cosign),
    })
}

/// Bundles in the current version: the three entries with both checkpoints, and the
/// same with entry 0's body pruned. They join the bundles of older versions in the file.
fn bundles(
    signer: &Signer,
    entries: &[Entry],
    encoded: &[Vec<u8>],
    checkpoints: &[SignedCheckpoint],
    cosign: &dyn Fn(&SignedCheckpoint) -> note::NoteSignature,
) -> Value {
    let write = |pruned: bool, cosigned: bool| {
        let mut w = BundleWriter::new(Vec::new(), &signer.public_key()).unwrap();
        for (i, e) in encoded.iter().enumerate() {
            let hash = Entry::hash_encoded(e);
            if pruned && i == 0 {
                w.pruned(&entries[0].pruned().unwrap().encode(), &hash)
                    .unwrap();
            } else {
                w.entry(e, &hash).unwrap();
            }
            if let Some(cp) = checkpoints
                .iter()
                .find(|c| c.checkpoint.tree_size == i as u64 + 1)
            {
                w.checkpoint(cp).unwrap();
                if cosigned {
                    w.cosignature(&cosign(cp)).unwrap();
                }
            }
        }
        hex::encode(w.finish().unwrap())
    };
    let version = aura_ledger::bundle::VERSION;
    json!({
        format!("v{version}"): {"version": version, "pruned": 0, "hex": write(false, false)},
        format!("v{version}_pruned"): {"version": version, "pruned": 1, "hex": write(true, false)},
        format!("v{version}_cosigned"):
            {"version": version, "pruned": 0, "cosigned": 2, "hex": write(false, true)},
    })
}

/// Merges `generated` into `file`: whole sections, except that bundles join the ones
/// already there (older versions stay).
fn merge(file: &mut Value, generated: &Value) {
    let map = file.as_object_mut().unwrap();
    for (k, section) in generated.as_object().unwrap() {
        match (k.as_str(), map.get_mut(k).and_then(Value::as_object_mut)) {
            ("bundles", Some(old)) => {
                for (name, b) in section.as_object().unwrap() {
                    old.insert(name.clone(), b.clone());
                }
            }
            _ => {
                map.insert(k.clone(), section.clone());
            }
        }
    }
}

#[test]
fn regenerated_sections_match_the_file() {
    let mut v = vectors();
    let generated = generated(&v);
    if std::env::var_os("AURA_WRITE_VECTORS").is_some() {
        merge(&mut v, &generated);
        std::fs::write(PATH, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
        return;
    }
    let mut merged = v.clone();
    merge(&mut merged, &generated);
    for (k, _) in generated.as_object().unwrap() {
        assert_eq!(
            v[k], merged[k],
            "section `{k}` of {PATH} is not what the code makes"
        );
    }
}

#[test]
fn rfc6962_reference_trees_and_proofs() {
    let v = vectors();
    let leaves = ct_leaves(&v);
    let roots = hashes(&v["rfc6962"]["roots"]);
    let mut frontier = Frontier::new();
    assert_eq!(frontier.root(), roots[0]);
    for (n, leaf) in leaves.iter().enumerate() {
        frontier.push(*leaf, |_, _| {});
        assert_eq!(root_of(&leaves[..=n]), roots[n + 1], "size {}", n + 1);
        assert_eq!(frontier.root(), roots[n + 1], "size {}", n + 1);
    }
    let tree = MemoryTree::new(leaves.clone());
    for (section, case) in [("rfc6962", "inclusion"), ("rfc6962_generated", "inclusion")] {
        for p in v[section][case].as_array().unwrap() {
            let (index, size) = (p["index"].as_u64().unwrap(), p["size"].as_u64().unwrap());
            let path = hashes(&p["path"]);
            assert_eq!(tree.inclusion_proof(index, size).unwrap(), path);
            merkle::verify_inclusion(
                &leaves[index as usize],
                index,
                size,
                &path,
                &roots[size as usize],
            )
            .unwrap();
        }
    }
    for (section, case) in [
        ("rfc6962", "consistency"),
        ("rfc6962_generated", "consistency"),
    ] {
        for p in v[section][case].as_array().unwrap() {
            let (old, new) = (p["old"].as_u64().unwrap(), p["new"].as_u64().unwrap());
            let path = hashes(&p["path"]);
            assert_eq!(tree.consistency_proof(old, new).unwrap(), path);
            merkle::verify_consistency(old, new, &roots[old as usize], &roots[new as usize], &path)
                .unwrap();
        }
    }
    // The generated roots are the reference roots.
    assert_eq!(v["rfc6962_generated"]["roots"], v["rfc6962"]["roots"]);
    // Consistency "proofs" with empty paths, which RFC 9162's verification rejects and
    // Aura (like c2sp.org/tlog-witness) accepts on conditions of their own.
    for p in v["rfc6962"]["empty_paths"].as_array().unwrap() {
        let (old, new) = (p["old"].as_u64().unwrap(), p["new"].as_u64().unwrap());
        assert_eq!(p["rfc9162"], "rejected");
        merkle::verify_consistency(old, new, &roots[old as usize], &roots[new as usize], &[])
            .unwrap();
        assert!(tree.consistency_proof(old, new).unwrap().is_empty());
        // The conditions: old = 0 needs the empty tree's root, old = new equal roots,
        // and neither takes a path.
        assert!(
            merkle::verify_consistency(old, new, &roots[1], &roots[new as usize], &[]).is_err()
        );
        assert!(
            merkle::verify_consistency(
                old,
                new,
                &roots[old as usize],
                &roots[new as usize],
                &[roots[1]]
            )
            .is_err()
        );
    }
}

#[test]
fn aura_format_vectors() {
    let v = vectors();
    let signer = signer(&v);
    assert_eq!(
        signer.public_key().to_hex(),
        v["node_public_key"].as_str().unwrap()
    );
    assert_eq!(
        signer.public_key().node_id().to_string(),
        v["node_id"].as_str().unwrap()
    );

    let mut frontier = Frontier::new();
    for (entry, e) in entries(&v).iter().zip(v["entries"].as_array().unwrap()) {
        assert_eq!(entry.agent.to_string(), e["agent"].as_str().unwrap());
        let encoded = entry.encode().unwrap();
        assert_eq!(hex::encode(&encoded), e["encoding"].as_str().unwrap());
        assert_eq!(&Entry::decode(&encoded).unwrap(), entry);
        let hash = Entry::hash_encoded(&encoded);
        assert_eq!(hash.to_hex(), e["hash"].as_str().unwrap());
        assert_eq!(leaf_hash(&hash).to_hex(), e["leaf_hash"].as_str().unwrap());
        frontier.push(leaf_hash(&hash), |_, _| {});
    }

    let c = &v["checkpoint"];
    let cp = Checkpoint {
        node: signer.public_key().node_id(),
        tree_size: c["tree_size"].as_u64().unwrap(),
        root: frontier.root(),
        time: Timestamp::from_nanos(c["time_ns"].as_u64().unwrap()),
    };
    assert_eq!(cp.root.to_hex(), c["root"].as_str().unwrap());
    assert_eq!(hex::encode(cp.encode()), c["encoding"].as_str().unwrap());
    assert_eq!(
        hex::encode(cp.signing_message()),
        c["signing_message"].as_str().unwrap()
    );
    let signed = cp.sign(&signer);
    let expected: Signature = c["signature"].as_str().unwrap().parse().unwrap();
    // Ed25519 signatures are deterministic (RFC 8032), so the vector pins them too.
    assert_eq!(signed.signature, expected);
    SignedCheckpoint {
        checkpoint: cp,
        signature: expected,
    }
    .verify(&signer.public_key())
    .unwrap();
    // The same checkpoint in the list of signed checkpoints.
    let last = &v["checkpoints"][1];
    assert_eq!(
        SignedCheckpoint::decode(&unhex(&last["signed_hex"])).unwrap(),
        signed
    );
}

fn key(v: &Value) -> PublicKey {
    v["node_public_key"].as_str().unwrap().parse().unwrap()
}

#[test]
fn proof_documents_from_the_file_verify() {
    let v = vectors();
    let key = key(&v);
    let Proof::Inclusion(p) = Proof::decode(&unhex(&v["proofs"]["inclusion"]["hex"])).unwrap()
    else {
        panic!("not an inclusion proof")
    };
    let verified = p.verify(&key).unwrap();
    assert_eq!(verified.entry.index, 1);
    assert_eq!(verified.checkpoint.checkpoint.tree_size, 3);
    let Proof::Consistency(p) = Proof::decode(&unhex(&v["proofs"]["consistency"]["hex"])).unwrap()
    else {
        panic!("not a consistency proof")
    };
    p.verify(&key).unwrap();
    assert_eq!(
        (p.old.checkpoint.tree_size, p.new.checkpoint.tree_size),
        (1, 3)
    );
}

#[test]
fn checkpoint_notes_from_the_file() {
    let v = vectors();
    let key = key(&v);
    let n = &v["note"];
    let opened = note::open_checkpoint(n["note"].as_str().unwrap().as_bytes(), &key).unwrap();
    let expected = SignedCheckpoint::decode(&unhex(&v["checkpoints"][1]["signed_hex"])).unwrap();
    assert_eq!(opened.checkpoint, Some(expected));
    assert_eq!(opened.note.text(), n["text"].as_str().unwrap());
    let vkey = VerifierKey::parse(n["vkey"].as_str().unwrap()).unwrap();
    assert_eq!(vkey, VerifierKey::aura_node(key));
    let witness = VerifierKey::parse(n["witness_vkey"].as_str().unwrap()).unwrap();
    let cosigned = note::Note::parse(n["cosigned_note"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(
        cosigned.verify(&witness).unwrap(),
        n["cosignature_time"].as_u64()
    );
    cosigned.verify(&vkey).unwrap();
}

/// Bundles of every version ever written still verify, with the same summary.
#[test]
fn bundles_of_every_version_verify() {
    let v = vectors();
    let key = key(&v);
    let root = v["checkpoint"]["root"].as_str().unwrap();
    let bundles = v["bundles"].as_object().unwrap();
    assert!(bundles.len() >= 3, "v1, v2 and v2 pruned at least");
    let witness = VerifierKey::parse(v["note"]["witness_vkey"].as_str().unwrap()).unwrap();
    let expect = Expect {
        witnesses: vec![witness],
        heads: Vec::new(),
    };
    for (name, b) in bundles {
        let bytes = unhex(&b["hex"]);
        assert_eq!(
            u64::from(bytes[8]),
            b["version"].as_u64().unwrap(),
            "{name}"
        );
        verify_bundle(&bytes[..], &key).unwrap_or_else(|f| panic!("{name}: {f}"));
        let s =
            verify_bundle_with(&bytes[..], &key, &expect).unwrap_or_else(|f| panic!("{name}: {f}"));
        assert_eq!(
            s.cosigned.len() as u64,
            b["cosigned"].as_u64().unwrap_or(0),
            "{name}"
        );
        assert_eq!(s.entries, 3, "{name}");
        assert_eq!(s.checkpoints, 2, "{name}");
        assert_eq!(s.pruned, b["pruned"].as_u64().unwrap(), "{name}");
        assert_eq!(s.root.to_hex(), root, "{name}");
    }
}

/// The independent implementation (Python's hashlib and `cryptography`, written from
/// docs/ledger.md) agrees with every vector. Skipped, saying so, where python3 or the
/// `cryptography` package is missing.
#[test]
fn an_independent_implementation_agrees_with_the_vectors() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let has_python = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        eprintln!("skipped: python3 with the `cryptography` package is not installed");
        return;
    }
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/scripts/check-ledger-vectors.py"))
        .arg(PATH)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
