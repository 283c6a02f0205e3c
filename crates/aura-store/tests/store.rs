//! The stores' behaviour: appends, reads, proofs, conflicts, concurrency and reopening on
//! both backends (SQLite and PostgreSQL); read-only access, locking and damaged files of
//! the SQLite store.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use aura_core::AgentId;
use aura_core::door::SystemClock;
use aura_core::hash::Hash;
use aura_ledger::proof::Proof;
use aura_store::sqlite::Options;
use aura_store::{EntryRef, Error, Seq, SqliteStore, Store, Verification};
use common::{Ledger, agent, note, open, signer};

both_backends!(
    append_read_prove_and_reopen,
    a_sequence_conflict_is_refused_whole_and_changes_nothing,
    refusals_in_a_group_leave_the_other_callers_alone,
    concurrent_appends_keep_every_stream_whole_and_ordered,
    proofs_from_the_store_check_offline_at_many_sizes,
);

async fn append_read_prove_and_reopen(l: Ledger) {
    let s = l.signer.clone();
    let b = l.base();
    let store = l.open().await;
    let a = agent(1);
    let r1 = store
        .append(vec![
            note(a, Seq::Exactly(1), "one"),
            note(a, Seq::Next, "two"),
        ])
        .await
        .unwrap();
    assert_eq!(
        r1.entries
            .iter()
            .map(|e| (e.index, e.seq))
            .collect::<Vec<_>>(),
        [(b, 1), (b + 1, 2)]
    );
    assert_eq!(r1.checkpoint.checkpoint.tree_size, b + 2);
    r1.checkpoint.verify(&s.public_key()).unwrap();
    let r2 = store
        .append(vec![note(AgentId::NODE, Seq::Next, "node")])
        .await
        .unwrap();
    assert_eq!(r2.entries[0].index, b + 2);

    let e = store
        .entry(EntryRef::AgentSeq(a, 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.entry.body, b"two");
    assert_eq!(e.entry.prev, r1.entries[0].hash);
    assert_eq!(store.head(a).await.unwrap().unwrap().seq, 2);
    assert_eq!(store.tree_size().await.unwrap(), b + 3);

    for i in b..b + 3 {
        let p = store.inclusion_proof(i, None).await.unwrap();
        let v = p.verify(&s.public_key()).unwrap();
        assert_eq!(v.entry.index, i);
        let old = store
            .inclusion_proof(i, Some(if i < b + 2 { b + 2 } else { b + 3 }))
            .await
            .unwrap();
        old.verify(&s.public_key()).unwrap();
    }
    let c = store.consistency_proof(b + 2, None).await.unwrap();
    c.verify(&s.public_key()).unwrap();
    assert!(matches!(
        store.inclusion_proof(b, Some(b + 1)).await,
        Err(Error::NotFound(_))
    ));

    drop(store);
    let store = l.open().await;
    assert_eq!(store.tree_size().await.unwrap(), b + 3);
    let r3 = store
        .append(vec![note(a, Seq::Exactly(3), "three")])
        .await
        .unwrap();
    assert_eq!(r3.entries[0].index, b + 3);
    match store.verify(Box::new(|_| {})).await.unwrap() {
        Verification::Ok(s) => {
            assert_eq!((s.entries, s.agents, s.checkpoints), (b + 4, b + 2, b + 3));
        }
        Verification::Failed(f) => panic!("{f}"),
    }
    // The export verifies with the key the ledger trusts, and with no other.
    let out = SharedBuf::default();
    store
        .export(Box::new(out.clone()), Box::new(|_| {}))
        .await
        .unwrap();
    let bytes = out.0.lock().unwrap().clone();
    let summary = aura_ledger::bundle::verify_bundle(&bytes[..], &l.trusted).unwrap();
    assert_eq!(summary.entries, b + 4);
    assert!(aura_ledger::bundle::verify_bundle(&bytes[..], &signer(99).public_key()).is_err());
}

/// A writer the test can read back after handing it to an export.
#[derive(Clone, Default)]
struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn a_sequence_conflict_is_refused_whole_and_changes_nothing(l: Ledger) {
    let b = l.base();
    let store = l.open().await;
    let a = agent(1);
    store.append(vec![note(a, Seq::Next, "1")]).await.unwrap();
    let err = store
        .append(vec![
            note(agent(2), Seq::Next, "fine"),
            note(a, Seq::Exactly(5), "gap"),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SequenceConflict {
                expected: 2,
                requested: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.tree_size().await.unwrap(), b + 1);
    assert!(store.head(agent(2)).await.unwrap().is_none());
    let err = store
        .append(vec![note(a, Seq::Exactly(1), "dup")])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::SequenceConflict {
            expected: 2,
            requested: 1,
            ..
        }
    ));
}

async fn refusals_in_a_group_leave_the_other_callers_alone(l: Ledger) {
    let store = l.open().await;
    // Many callers race for seq 1 of the same agent: exactly one wins; every other
    // caller's own agent gets its entry regardless.
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let contested = store
                .append(vec![note(
                    agent(200),
                    Seq::Exactly(1),
                    &format!("race {i}"),
                )])
                .await;
            let own = store
                .append(vec![note(agent(i), Seq::Exactly(1), "mine")])
                .await;
            (contested.is_ok(), own.is_ok())
        }));
    }
    let mut wins = 0;
    for t in tasks {
        let (won, own) = t.await.unwrap();
        wins += usize::from(won);
        assert!(own);
    }
    assert_eq!(wins, 1);
    assert_eq!(store.tree_size().await.unwrap(), l.base() + 51);
}

/// Many tasks append to many agents at once; afterwards (and after reopening) every
/// acknowledged entry is there, and each agent's stream has no gaps, no duplicates and
/// keeps the order in which each writer appended.
async fn concurrent_appends_keep_every_stream_whole_and_ordered(l: Ledger) {
    let store = l.open().await;
    const WRITERS: u8 = 64;
    const PER_WRITER: usize = 60;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..PER_WRITER {
                // Writers share agents (8 writers per agent) and append batches of 1-3.
                let a = agent(w % 8);
                let n = 1 + (k % 3);
                let batch = (0..n)
                    .map(|j| note(a, Seq::Next, &format!("w{w} k{k} j{j}")))
                    .collect();
                let receipt = store.append(batch).await.unwrap();
                for e in receipt.entries {
                    acked.push((e.agent, e.seq, e.hash, format!("w{w} k{k}")));
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    drop(store);

    let store = l.open().await;
    let mut streams: HashMap<AgentId, Vec<(u64, Hash, Vec<u8>)>> = HashMap::new();
    let total = store.tree_size().await.unwrap();
    assert_eq!(total, l.base() + acked.len() as u64);
    for e in store.entries(l.base(), usize::MAX).await.unwrap() {
        streams
            .entry(e.entry.agent)
            .or_default()
            .push((e.entry.seq, e.hash, e.entry.body));
    }
    for (a, stream) in &streams {
        let seqs: Vec<u64> = stream.iter().map(|x| x.0).collect();
        assert_eq!(
            seqs,
            (1..=stream.len() as u64).collect::<Vec<_>>(),
            "gaps or duplicates for {a}"
        );
        // Each writer's own entries appear in the order it appended them.
        let mut last: HashMap<String, usize> = HashMap::new();
        for (_, _, body) in stream {
            let body = String::from_utf8(body.clone()).unwrap();
            let mut parts = body.split(' ');
            let (w, k) = (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap()[1..].parse::<usize>().unwrap(),
            );
            if let Some(prev) = last.insert(w.clone(), k) {
                assert!(k >= prev, "{w} reordered in {a}");
            }
        }
    }
    for (a, seq, hash, _) in acked {
        let e = store
            .entry(EntryRef::AgentSeq(a, seq))
            .await
            .unwrap()
            .expect("acknowledged entry lost");
        assert_eq!(e.hash, hash);
    }
    assert!(matches!(
        store.verify(Box::new(|_| {})).await.unwrap(),
        Verification::Ok(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_process_is_locked_out_but_readers_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let s = signer(5);
    let store = open(&path, &s);
    store
        .append(vec![note(agent(1), Seq::Next, "x")])
        .await
        .unwrap();
    let err =
        SqliteStore::open(&path, s.clone(), Arc::new(SystemClock), Options::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("open for writing in another process"),
        "{err}"
    );
    let reader = SqliteStore::open_read_only(&path, Options::default()).unwrap();
    assert_eq!(reader.tree_size().await.unwrap(), 1);
    assert!(matches!(
        reader.append(vec![note(agent(1), Seq::Next, "y")]).await,
        Err(Error::ReadOnly)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_key_cannot_open_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    open(&path, &signer(6)).close();
    let err =
        SqliteStore::open(&path, signer(7), Arc::new(SystemClock), Options::default()).unwrap_err();
    assert!(matches!(err, Error::WrongNode { .. }), "{err}");
}

/// Every file in `dir` with the SHA-256 of its content.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Hash)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                Hash::sha256(&std::fs::read(e.path()).unwrap()),
            )
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_access_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let store = open(&path, &signer(8));
    for i in 0..20 {
        store
            .append(vec![note(agent(i % 3), Seq::Next, "x")])
            .await
            .unwrap();
    }
    store.close();
    let before = snapshot(dir.path());
    let reader = SqliteStore::open_read_only(&path, Options::default()).unwrap();
    assert!(matches!(
        reader.verify(Box::new(|_| {})).await.unwrap(),
        Verification::Ok(_)
    ));
    reader.inclusion_proof(5, None).await.unwrap();
    reader
        .export(Box::new(std::io::sink()), Box::new(|_| {}))
        .await
        .unwrap();
    drop(reader);
    // The database is byte for byte the same. A reader of a WAL database needs SQLite's
    // shared-memory index beside it, so SQLite may create that and an empty WAL; neither
    // holds data.
    let mut after = snapshot(dir.path());
    after.retain(|(name, hash)| {
        !(name == "l.db-shm" || (name == "l.db-wal" && *hash == Hash::sha256(b"")))
    });
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    std::fs::write(&path, b"this is not a database, just some text that is long enough to have a header ...........................................").unwrap();
    let before = snapshot(dir.path());
    let err =
        SqliteStore::open(&path, signer(9), Arc::new(SystemClock), Options::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let err = SqliteStore::open_read_only(&path, Options::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let mut after = snapshot(dir.path());
    // The lock file is the only thing the writable open may leave behind.
    after.retain(|(name, _)| name != "l.lock");
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_sqlite_database_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, signer(10), Arc::new(SystemClock), Options::default())
        .unwrap_err();
    assert!(err.to_string().contains("not an Aura store"), "{err}");
}

async fn proofs_from_the_store_check_offline_at_many_sizes(l: Ledger) {
    let s = l.signer.clone();
    let store = l.open().await;
    let mut sizes = Vec::new();
    // Uneven batches so that tiles at level 8 are completed mid-batch.
    let mut n = l.base();
    for b in 0..90u64 {
        let batch: Vec<_> = (0..(1 + b % 13))
            .map(|_| note(agent((b % 5) as u8), Seq::Next, "p"))
            .collect();
        n += batch.len() as u64;
        store.append(batch).await.unwrap();
        sizes.push(n);
    }
    assert!(n > 512);
    let key = s.public_key();
    for &size in sizes.iter().step_by(7) {
        for index in [l.base(), size / 3, size - 1] {
            let p = store.inclusion_proof(index, Some(size)).await.unwrap();
            let bytes = Proof::Inclusion(p).encode();
            let Proof::Inclusion(decoded) = Proof::decode(&bytes).unwrap() else {
                panic!()
            };
            decoded.verify(&key).unwrap();
        }
    }
    for (i, &old) in sizes.iter().enumerate().step_by(5) {
        for &new in &sizes[i..] {
            store
                .consistency_proof(old, Some(new))
                .await
                .unwrap()
                .verify(&key)
                .unwrap();
        }
    }
    assert!(matches!(
        store.verify(Box::new(|_| {})).await.unwrap(),
        Verification::Ok(_)
    ));
}
