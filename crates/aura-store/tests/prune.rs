//! Pruning bodies: a pruned store reads back its entries marked as pruned, still
//! verifies (in place and as an export), and still detects tampering.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::Path;

use aura_ledger::bundle::verify_bundle;
use aura_store::sqlite::Options;
use aura_store::{EntryRef, Error, Seq, SqliteStore, Store, Verification};
use common::{agent, note, open, signer};
use rusqlite::Connection;

/// 40 entries over 4 agents, each body 1 KiB and naming its index.
async fn filled(path: &Path) -> SqliteStore {
    let store = open(path, &signer(1));
    for i in 0..40u64 {
        let body = format!("{i:04}{}", "x".repeat(1020));
        store
            .append(vec![note(agent((i % 4) as u8), Seq::Next, &body)])
            .await
            .unwrap();
    }
    store
}

/// Entries 8..24: none is its agent's first or last.
fn middle() -> Vec<u64> {
    (8..24).collect()
}

async fn verified(store: &SqliteStore) -> aura_ledger::verify::Summary {
    match store.verify(Box::new(|_| {})).await.unwrap() {
        Verification::Ok(s) => s,
        Verification::Failed(f) => panic!("{f}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_entries_keep_their_hashes_and_the_store_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let store = filled(&path).await;
    let before = store.entries(0, 100).await.unwrap();
    let root = store.latest_checkpoint().await.unwrap().unwrap();

    let outcome = store.prune(middle()).await.unwrap();
    assert_eq!(outcome.pruned, 16);
    assert_eq!(outcome.already_pruned, 0);
    // Each body was 1024 bytes; the stub is the entry's encoding without them.
    assert_eq!(outcome.bytes_freed, 16 * 1024);

    let after = store.entries(0, 100).await.unwrap();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.entry.index, b.entry.index);
        assert_eq!(a.entry.kind, b.entry.kind);
        if middle().contains(&a.entry.index) {
            assert_eq!(a.pruned.unwrap().body_len, 1024);
            assert_eq!(a.body(), None, "a pruned body must not read as empty");
            assert!(a.entry.body.is_empty());
        } else {
            assert_eq!(a, b);
            assert_eq!(a.body(), Some(&b.entry.body[..]));
        }
    }
    // Nothing the proofs rest on moved.
    assert_eq!(store.latest_checkpoint().await.unwrap().unwrap(), root);
    let summary = verified(&store).await;
    assert_eq!((summary.entries, summary.pruned), (40, 16));

    // Appends go on after a prune, and a restart reads the same.
    store
        .append(vec![note(agent(1), Seq::Next, "after")])
        .await
        .unwrap();
    store.close();
    let store = open(&path, &signer(1));
    let e = store.entry(EntryRef::Index(9)).await.unwrap().unwrap();
    assert!(e.pruned.is_some());
    assert_eq!(verified(&store).await.pruned, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_is_all_or_nothing_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(&dir.path().join("l.db")).await;
    let err = store.prune(vec![10, 11, 400]).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound(ref what) if what == "entry #400"),
        "{err}"
    );
    assert!(err.is_refusal());
    let e = store.entry(EntryRef::Index(10)).await.unwrap().unwrap();
    assert!(e.pruned.is_none(), "a refused prune changed an entry");

    let first = store.prune(vec![10, 11, 11]).await.unwrap();
    assert_eq!((first.pruned, first.already_pruned), (2, 0));
    let again = store.prune(vec![10, 11, 12]).await.unwrap();
    assert_eq!((again.pruned, again.already_pruned), (1, 2));
    assert_eq!(again.bytes_freed, 1024);
    assert_eq!(verified(&store).await.pruned, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_refuses_to_prune() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    filled(&path).await.close();
    let ro = SqliteStore::open_read_only(&path, Options::default()).unwrap();
    assert!(matches!(ro.prune(vec![1]).await, Err(Error::ReadOnly)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusion_proofs_of_pruned_entries_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(&dir.path().join("l.db")).await;
    store.prune(vec![9]).await.unwrap();
    let err = store.inclusion_proof(9, None).await.unwrap_err();
    assert!(matches!(err, Error::Pruned { index: 9 }), "{err}");
    // Its neighbours' proofs still verify: their paths use the kept hash.
    let p = store.inclusion_proof(8, None).await.unwrap();
    p.verify(&store.node_key()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_entry_is_not_pruned() {
    // Pruning a body that no longer matches its hash would erase the evidence.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    filled(&path).await.close();
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE entries SET raw = CAST(substr(raw, 1, length(raw) - 1) || X'21' AS BLOB) WHERE idx = 12",
        [],
    )
    .unwrap();
    drop(conn);
    let store = open(&path, &signer(1));
    let err = store.prune(vec![11, 12]).await.unwrap_err();
    assert!(
        err.to_string().contains("entry #12 does not match"),
        "{err}"
    );
    let e = store.entry(EntryRef::Index(11)).await.unwrap().unwrap();
    assert!(e.pruned.is_none(), "a refused prune changed an entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_of_a_pruned_store_verifies_offline_and_shows_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(&dir.path().join("l.db")).await;
    store.prune(middle()).await.unwrap();
    let path = dir.path().join("export.bundle");
    let file = std::fs::File::create(&path).unwrap();
    store
        .export(Box::new(file), Box::new(|_| {}))
        .await
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let summary = verify_bundle(&bytes[..], &store.node_key()).unwrap();
    assert_eq!((summary.entries, summary.pruned), (40, 16));
    assert!(
        bytes.len() < 40 * 1024,
        "the export still carries pruned bodies ({} bytes)",
        bytes.len()
    );

    // The kept hash of entry #9 is what the chain and the roots rest on.
    let entry = store.entry(EntryRef::Index(9)).await.unwrap().unwrap();
    let at = bytes
        .windows(32)
        .position(|w| w == entry.hash.as_bytes())
        .unwrap();
    let mut tampered = bytes.clone();
    tampered[at + 5] ^= 1;
    assert!(verify_bundle(&tampered[..], &store.node_key()).is_err());
}

/// Changes the store with `sql` after pruning the middle entries, then verifies.
async fn check(sql: &str, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let store = filled(&path).await;
    store.prune(middle()).await.unwrap();
    store.close();
    let conn = Connection::open(&path).unwrap();
    assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
    drop(conn);
    let ro = SqliteStore::open_read_only(&path, Options::default()).unwrap();
    match ro.verify(Box::new(|_| {})).await.unwrap() {
        Verification::Ok(_) => panic!("went unnoticed: {sql}"),
        Verification::Failed(f) => assert!(f.to_string().contains(expect), "{sql}: {f}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_a_pruned_store_is_detected() {
    // The kept hash of a pruned entry: the signed root that covers it (and its agent's
    // next entry, which names the old one) gives it away.
    check(
        "UPDATE entries SET hash = zeroblob(32) WHERE idx = 13",
        "is not the root",
    )
    .await;
    // A pruned entry's stub moved in its chain.
    check(
        "UPDATE entries SET raw = CAST(substr(raw, 1, 33) || zeroblob(32) || substr(raw, 66) AS BLOB) WHERE idx = 14",
        "is not the hash of the agent's previous entry",
    )
    .await;
    // A body that was not pruned is still checked against its hash.
    check(
        "UPDATE entries SET raw = CAST(substr(raw, 1, length(raw) - 1) || X'21' AS BLOB) WHERE idx = 30",
        "does not match its recorded hash",
    )
    .await;
    // A flag that lies about the encoding it marks.
    check(
        "UPDATE entries SET pruned = 0 WHERE idx = 15",
        "unknown `version`",
    )
    .await;
    check(
        "UPDATE entries SET pruned = 1 WHERE idx = 30",
        "unknown `version`",
    )
    .await;
    check(
        "UPDATE entries SET pruned = 2 WHERE idx = 16",
        "pruned flag is neither 0 nor 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_pruning_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    filled(&path).await.close();
    // Make it what the first schema wrote.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("ALTER TABLE entries DROP COLUMN pruned; PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);
    let err = SqliteStore::open_read_only(&path, Options::default()).unwrap_err();
    assert!(err.to_string().contains("needs migrating"), "{err}");
    let store = open(&path, &signer(1));
    assert_eq!(verified(&store).await.entries, 40);
    store.prune(vec![10]).await.unwrap();
    assert_eq!(verified(&store).await.pruned, 1);
}
