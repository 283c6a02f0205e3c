//! Fault injection at every persistence step of the SQLite append path (the failpoints
//! listed in `aura_store::sqlite`): each failure gives the caller a clear error, leaves
//! nothing half-written, keeps the ledger verifiable, and the store carries on from
//! exactly what the database holds, in this process and after reopening.
//!
//! Built only with the `failpoints` feature (the workspace's test build enables it through
//! aura-engine's dev-dependencies). Failpoints are process-wide: nextest runs every test
//! in its own process; under `cargo test` the tests of this file share one, and
//! `FailScenario::setup` holds a global lock until the scenario ends, which serialises
//! them.

#![cfg(feature = "failpoints")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::Path;

use aura_core::AgentId;
use aura_store::{Error, Seq, SqliteStore, Store, Verification};
use common::{agent, note, open, signer};
use fail::FailScenario;

/// Entries committed before the failure: enough that the failed batch would complete a
/// stored Merkle tile (every 256 entries), so a half-written group would show up as a
/// tile without its entries.
const BEFORE: u64 = 250;
const FAILED_BATCH: u64 = 10;

/// Every entry's body in ledger order, read from a freshly opened store.
async fn bodies(store: &SqliteStore) -> Vec<String> {
    store
        .entries(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.entry.body).unwrap())
        .collect()
}

/// Verifies the whole store (chains, tiles, heads, every checkpoint's signature) and that
/// it holds `entries` entries, all covered by the last checkpoint.
async fn verified(store: &SqliteStore, entries: u64) {
    match store.verify(Box::new(|_| {})).await.unwrap() {
        Verification::Ok(s) => assert_eq!(s.entries, entries, "entries verified"),
        Verification::Failed(f) => panic!("the store does not verify: {f}"),
    }
    assert_eq!(store.tree_size().await.unwrap(), entries);
    let cp = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(
        cp.checkpoint.tree_size, entries,
        "the last checkpoint covers it all"
    );
    // No stray rows beside the entries: one checkpoint per successful commit.
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let over: i64 = conn
        .query_row(
            "SELECT count(*) FROM checkpoints WHERE tree_size > ?1",
            [entries as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(over, 0, "a checkpoint beyond the stored entries");
}

fn reopen(path: &Path, store: SqliteStore) -> SqliteStore {
    store.close();
    open(path, &signer(1))
}

/// One failpoint on one append: `action` is its fail-rs action, `stored` whether the
/// failed batch must be in the store afterwards.
async fn check(failpoint: &str, action: &str, stored: bool) {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = open(&path, &signer(1));
    let (a, b) = (agent(1), agent(2));
    let mut expected: Vec<String> = Vec::new();
    let history: Vec<_> = (1..=BEFORE)
        .map(|i| {
            expected.push(format!("a{i}"));
            note(a, Seq::Exactly(i), &format!("a{i}"))
        })
        .collect();
    store.append(history).await.unwrap();

    fail::cfg(failpoint, action).unwrap();
    let batch: Vec<_> = (1..=FAILED_BATCH)
        .map(|i| {
            let (who, seq) = if i % 2 == 0 {
                (b, i / 2)
            } else {
                (a, BEFORE + i / 2 + 1)
            };
            note(who, Seq::Exactly(seq), &format!("failed{i}"))
        })
        .collect();
    let err = store.append(batch).await.unwrap_err();
    fail::remove(failpoint);

    // A clear outcome: one line saying the result is unknown and what to do, with the
    // cause behind it.
    assert!(
        matches!(err, Error::CommitFailed(_)),
        "{failpoint}: {err:?}"
    );
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("may or may not be stored"), "{line}");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("injected by a failpoint"), "{cause}");

    // The batch is there whole or not at all, as the failpoint says, and the store's
    // reads agree.
    let mut size = BEFORE;
    if stored {
        size += FAILED_BATCH;
        expected.extend((1..=FAILED_BATCH).map(|i| format!("failed{i}")));
    }
    verified(&store, size).await;
    assert_eq!(bodies(&store).await, expected, "{failpoint}");
    let head_a = store.head(a).await.unwrap().unwrap().seq;
    let head_b = store.head(b).await.unwrap().map(|h| h.seq);
    assert_eq!(head_a, if stored { BEFORE + 5 } else { BEFORE });
    assert_eq!(head_b, stored.then_some(5));

    // The writer's own idea of the heads is what the database holds: an append at the
    // head as read goes through (a writer that kept its old idea would refuse it as a
    // sequence conflict, or, after a kept commit, lay it over the stored batch).
    let r = store
        .append(vec![note(a, Seq::Exactly(head_a + 1), "after")])
        .await
        .unwrap();
    assert_eq!((r.entries[0].index, r.entries[0].seq), (size, head_a + 1));
    expected.push("after".into());
    verified(&store, size + 1).await;

    // Reopened, the store holds exactly what was committed.
    let store = reopen(&path, store);
    verified(&store, size + 1).await;
    assert_eq!(bodies(&store).await, expected);
    store.close();
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_writing_the_checkpoint_rolls_the_whole_group_back() {
    check("sqlite.append.checkpoint", "return", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_before_commit_rolls_the_whole_group_back() {
    check("sqlite.append.before_commit", "return", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_that_lost_the_commit_leaves_nothing() {
    check("sqlite.append.fsync", "return", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_that_kept_the_commit_is_followed_by_the_store() {
    check("sqlite.append.fsync", "return(kept)", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_after_commit_is_followed_by_the_store() {
    check("sqlite.append.after_commit", "return", true).await;
}

/// Many callers at once while one group's commit fails: every caller's answer matches
/// what the store holds (an "ok" is stored; a failure of a rolled-back group is absent, of
/// a kept one present), and every stream stays whole.
async fn concurrent(failpoint: &str, kept: bool) {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = open(&path, &signer(1));
    // Fail exactly one group, whichever callers it gathered.
    fail::cfg(failpoint, "1*return->off").unwrap();
    let mut tasks = Vec::new();
    for n in 0..16u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let me = agent(n);
            let mut answers = Vec::new();
            for i in 0..20 {
                let body = format!("{n}-{i}");
                let r = store.append(vec![note(me, Seq::Next, &body)]).await;
                answers.push((body, r));
            }
            answers
        }));
    }
    let mut failed = 0;
    let mut oks = Vec::new();
    let mut fails = Vec::new();
    for t in tasks {
        for (body, r) in t.await.unwrap() {
            match r {
                Ok(_) => oks.push(body),
                Err(Error::CommitFailed(_)) => {
                    failed += 1;
                    fails.push(body);
                }
                Err(e) => panic!("an unexpected error: {e}"),
            }
        }
    }
    assert!(failed >= 1, "the failpoint never fired");
    let store = reopen(&path, store);
    let stored = bodies(&store).await;
    for body in &oks {
        assert!(
            stored.contains(body),
            "{body} was acknowledged but is not stored"
        );
    }
    for body in &fails {
        assert_eq!(
            stored.contains(body),
            kept,
            "{body}: failed, stored = {kept}?"
        );
    }
    let total = oks.len() + if kept { fails.len() } else { 0 };
    assert_eq!(stored.len(), total);
    verified(&store, total as u64).await;
    // Every agent's stream is gapless: its seqs are 1..=n in ledger order.
    let mut seqs: std::collections::HashMap<AgentId, u64> = Default::default();
    for e in store.entries(0, 10_000).await.unwrap() {
        let s = seqs.entry(e.entry.agent).or_default();
        *s += 1;
        assert_eq!(e.entry.seq, *s);
    }
    store.close();
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_of_a_group_rolled_back_before_commit_all_hear_it() {
    concurrent("sqlite.append.before_commit", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_of_a_group_kept_after_commit_find_it_stored() {
    concurrent("sqlite.append.after_commit", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_reload_refuses_writes_until_reopened() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = open(&path, &signer(1));
    let a = agent(1);
    store
        .append(vec![note(a, Seq::Exactly(1), "one")])
        .await
        .unwrap();
    fail::cfg("sqlite.append.after_commit", "return").unwrap();
    fail::cfg("sqlite.append.reload", "return").unwrap();
    let err = store
        .append(vec![note(a, Seq::Exactly(2), "two")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CommitFailed(_)), "{err:?}");
    fail::remove("sqlite.append.after_commit");
    fail::remove("sqlite.append.reload");

    // Unsure of its state, the writer refuses, clearly, rather than guess.
    let refused = store
        .append(vec![note(a, Seq::Next, "three")])
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Poisoned), "{refused:?}");
    assert!(
        refused.to_string().contains("restart to recover"),
        "{refused}"
    );
    // Reads still work, and the ledger is whole.
    verified(&store, 2).await;

    let store = reopen(&path, store);
    let r = store
        .append(vec![note(a, Seq::Exactly(3), "three")])
        .await
        .unwrap();
    assert_eq!(r.entries[0].index, 2);
    verified(&store, 3).await;
    assert_eq!(bodies(&store).await, ["one", "two", "three"]);
    store.close();
    scenario.teardown();
}
