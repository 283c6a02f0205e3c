//! Prints the format test vectors of docs/ledger-vectors.json. Run it after a deliberate
//! format change: `cargo run -p aura-ledger --example gen_vectors > docs/ledger-vectors.json`.

use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, Timestamp};
use aura_ledger::entry::{Entry, Kind, leaf_hash};
use aura_ledger::{Checkpoint, Frontier};

fn main() {
    let seed = [7u8; 32];
    let signer = Signer::from_seed_bytes("node", &seed).expect("valid name");
    let agent = AgentId::from_bytes(*b"\x01\x92\x35\x6a\x10\x00aura-agent");
    let first = Entry {
        index: 0,
        agent,
        seq: 1,
        prev: Hash::ZERO,
        kind: Kind::new("note").expect("valid kind"),
        recorded_at: Timestamp::from_nanos(1_790_000_000_000_000_000),
        body: br#"{"text":"hello"}"#.to_vec(),
    };
    let first_hash = first.hash().expect("small body");
    let second = Entry {
        index: 1,
        agent,
        seq: 2,
        prev: first_hash,
        kind: Kind::new("mission.submitted").expect("valid kind"),
        recorded_at: Timestamp::from_nanos(1_790_000_000_500_000_000),
        body: vec![],
    };
    let second_hash = second.hash().expect("small body");
    let node_entry = Entry {
        index: 2,
        agent: AgentId::NODE,
        seq: 1,
        prev: Hash::ZERO,
        kind: Kind::new("node.started").expect("valid kind"),
        recorded_at: Timestamp::from_nanos(1_790_000_001_000_000_000),
        body: vec![0, 1, 2, 255],
    };
    let mut frontier = Frontier::new();
    let entries = [&first, &second, &node_entry];
    let mut out_entries = Vec::new();
    for e in entries {
        let enc = e.encode().expect("small body");
        let h = Entry::hash_encoded(&enc);
        frontier.push(leaf_hash(&h), |_, _| {});
        out_entries.push(serde_json::json!({
            "index": e.index,
            "agent": e.agent.to_string(),
            "agent_hex": hex::encode(e.agent.as_bytes()),
            "seq": e.seq,
            "prev": e.prev.to_hex(),
            "kind": e.kind.as_str(),
            "recorded_at_ns": e.recorded_at.as_nanos(),
            "body_hex": hex::encode(&e.body),
            "encoding": hex::encode(&enc),
            "hash": h.to_hex(),
            "leaf_hash": leaf_hash(&h).to_hex(),
        }));
    }
    let _ = second_hash;
    let cp = Checkpoint {
        node: signer.public_key().node_id(),
        tree_size: 3,
        root: frontier.root(),
        time: Timestamp::from_nanos(1_790_000_002_000_000_000),
    };
    let signed = cp.sign(&signer);
    let doc = serde_json::json!({
        "comment": "Aura ledger format v1 test vectors; see docs/ledger.md. Checked by crates/aura-ledger/tests/vectors.rs.",
        "node_seed": hex::encode(seed),
        "node_public_key": signer.public_key().to_hex(),
        "node_id": signer.public_key().node_id().to_string(),
        "node_id_hex": hex::encode(signer.public_key().node_id().as_bytes()),
        "entries": out_entries,
        "checkpoint": {
            "tree_size": 3,
            "root": cp.root.to_hex(),
            "time_ns": cp.time.as_nanos(),
            "encoding": hex::encode(cp.encode()),
            "signing_message": hex::encode(cp.signing_message()),
            "signature": signed.signature.to_hex(),
        }
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
}
