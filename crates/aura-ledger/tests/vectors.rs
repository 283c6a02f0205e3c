//! The checked-in test vectors: RFC 6962/9162 reference trees, and Aura's own format
//! vectors from docs/ledger-vectors.json (cross-checked independently when written).

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use aura_core::hash::{Hash, merkle_leaf};
use aura_core::keystore::Signer;
use aura_core::{AgentId, Signature, Timestamp};
use aura_ledger::entry::{Entry, Kind, leaf_hash};
use aura_ledger::merkle::{self, MemoryTree, root_of};
use aura_ledger::{Checkpoint, Frontier, SignedCheckpoint};

fn h(s: &str) -> Hash {
    s.parse().unwrap()
}

/// RFC 6962's reference leaves (as used by Certificate Transparency implementations).
fn ct_leaves() -> Vec<Hash> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|x| merkle_leaf(&hex::decode(x).unwrap()))
    .collect()
}

const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn rfc6962_reference_roots() {
    let leaves = ct_leaves();
    let mut frontier = Frontier::new();
    assert_eq!(frontier.root(), h(CT_ROOTS[0]));
    for (n, leaf) in leaves.iter().enumerate() {
        frontier.push(*leaf, |_, _| {});
        assert_eq!(root_of(&leaves[..=n]), h(CT_ROOTS[n + 1]), "size {}", n + 1);
        assert_eq!(frontier.root(), h(CT_ROOTS[n + 1]), "size {}", n + 1);
    }
}

#[test]
fn rfc6962_reference_proofs() {
    let tree = MemoryTree::new(ct_leaves());
    let root8 = h(CT_ROOTS[8]);
    let cases: [(u64, [&str; 3]); 2] = [
        (
            0,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, path) in cases {
        let path: Vec<Hash> = path.iter().map(|s| h(s)).collect();
        assert_eq!(tree.inclusion_proof(index, 8).unwrap(), path);
        merkle::verify_inclusion(&ct_leaves()[index as usize], index, 8, &path, &root8).unwrap();
    }
    let c28 = vec![
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ];
    assert_eq!(tree.consistency_proof(2, 8).unwrap(), c28);
    merkle::verify_consistency(2, 8, &h(CT_ROOTS[2]), &root8, &c28).unwrap();
    let c25 = vec![
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ];
    assert_eq!(tree.consistency_proof(2, 5).unwrap(), c25);
    merkle::verify_consistency(2, 5, &h(CT_ROOTS[2]), &h(CT_ROOTS[5]), &c25).unwrap();
}

#[test]
fn aura_format_vectors() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/ledger-vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let seed: [u8; 32] = hex::decode(v["node_seed"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let signer = Signer::from_seed_bytes("node", &seed).unwrap();
    assert_eq!(
        signer.public_key().to_hex(),
        v["node_public_key"].as_str().unwrap()
    );
    assert_eq!(
        signer.public_key().node_id().to_string(),
        v["node_id"].as_str().unwrap()
    );

    let mut frontier = Frontier::new();
    for e in v["entries"].as_array().unwrap() {
        let agent: [u8; 16] = hex::decode(e["agent_hex"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let entry = Entry {
            index: e["index"].as_u64().unwrap(),
            agent: AgentId::from_bytes(agent),
            seq: e["seq"].as_u64().unwrap(),
            prev: h(e["prev"].as_str().unwrap()),
            kind: Kind::new(e["kind"].as_str().unwrap()).unwrap(),
            recorded_at: Timestamp::from_nanos(e["recorded_at_ns"].as_u64().unwrap()),
            body: hex::decode(e["body_hex"].as_str().unwrap()).unwrap(),
        };
        assert_eq!(entry.agent.to_string(), e["agent"].as_str().unwrap());
        let encoded = entry.encode().unwrap();
        assert_eq!(hex::encode(&encoded), e["encoding"].as_str().unwrap());
        assert_eq!(Entry::decode(&encoded).unwrap(), entry);
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
}
