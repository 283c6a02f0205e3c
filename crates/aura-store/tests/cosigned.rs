//! Exports with witness cosignatures (bundle version 3): they follow the checkpoints they
//! cosign, and a cosignature that fits no checkpoint of the ledger refuses the export.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use aura_core::door::SeededEntropy;
use aura_core::keystore::Signer;
use aura_ledger::bundle::{Expect, verify_bundle_with};
use aura_ledger::note::{self, KeyType, VerifierKey};
use aura_store::sqlite::Cosignatures;
use aura_store::{Error, Seq, SqliteStore, Store};
use common::{agent, note as entry, open, signer};

async fn ledger(dir: &std::path::Path) -> SqliteStore {
    let store = open(&dir.join("l.db"), &signer(1));
    for i in 0..4 {
        store
            .append(vec![entry(agent(1), Seq::Next, &format!("e {i}"))])
            .await
            .unwrap();
    }
    store
}

async fn export(store: &SqliteStore, cosignatures: Cosignatures) -> Result<Vec<u8>, Error> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let file = out.reopen().unwrap();
    store
        .export_cosigned(Box::new(file), cosignatures, Box::new(|_| {}))
        .await?;
    Ok(std::fs::read(out.path()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosignatures_follow_their_checkpoints_and_must_fit_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let store = ledger(dir.path()).await;
    let witness = Signer::ephemeral("witness", &SeededEntropy::new(8)).unwrap();
    let w = VerifierKey::new("w.example/1", KeyType::Cosignature, witness.public_key()).unwrap();
    let cosign = |size: u64, cp: &aura_ledger::SignedCheckpoint| {
        let mut c = Cosignatures::new();
        let sig = note::cosign(
            &note::checkpoint_text(&cp.checkpoint),
            1_800_000_000,
            &w.name,
            &witness,
        )
        .unwrap();
        c.insert(size, (cp.checkpoint.root, vec![sig]));
        c
    };
    let cp3 = store.checkpoint(3).await.unwrap().unwrap();
    let bytes = export(&store, cosign(3, &cp3)).await.unwrap();
    let expect = Expect {
        witnesses: vec![w.clone()],
        heads: Vec::new(),
    };
    let s = verify_bundle_with(&bytes[..], &store.node_key(), &expect).unwrap();
    assert_eq!(s.cosigned.len(), 1);
    assert_eq!(s.cosigned[0].tree_size, 3);

    // Another root at that size: another history.
    let mut other = cp3;
    other.checkpoint.root.0[0] ^= 1;
    let err = export(&store, cosign(3, &other)).await.unwrap_err();
    assert!(err.to_string().contains("refusing to export"), "{err}");
    // A size beyond the ledger: it was cut back.
    let mut larger = cp3;
    larger.checkpoint.tree_size = 9;
    let err = export(&store, cosign(9, &larger)).await.unwrap_err();
    assert!(err.to_string().contains("cut back"), "{err}");
}
