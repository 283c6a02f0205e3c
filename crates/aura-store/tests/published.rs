//! The published checkpoint: a store opened with `Options::published` writes its latest
//! checkpoint there as a signed note, and refuses to open for writing a database that
//! fell behind it (cut back, restored from an older copy) or whose history differs.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aura_core::door::SystemClock;
use aura_core::keystore::Signer;
use aura_ledger::note;
use aura_store::sqlite::Options;
use aura_store::{Error, Seq, SqliteStore, Store};
use common::{agent, note as entry, signer};

fn options(published: &Path) -> Options {
    Options {
        published: Some(published.to_owned()),
        ..Options::default()
    }
}

fn open(db: &Path, published: &Path, signer: &Arc<Signer>) -> Result<SqliteStore, Error> {
    SqliteStore::open(
        db,
        signer.clone(),
        Arc::new(SystemClock),
        options(published),
    )
}

async fn append(store: &SqliteStore, n: usize, text: &str) {
    let batch = (0..n)
        .map(|i| entry(agent(1), Seq::Next, &format!("{text} {i}")))
        .collect();
    store.append(batch).await.unwrap();
}

/// The size of the published checkpoint, which must verify under the node's key.
fn published_size(file: &Path, signer: &Signer) -> u64 {
    let bytes = std::fs::read(file).unwrap();
    note::open_checkpoint(&bytes, &signer.public_key())
        .unwrap()
        .head
        .size
}

struct Paths {
    _dir: tempfile::TempDir,
    db: PathBuf,
    published: PathBuf,
}

fn paths() -> Paths {
    let dir = tempfile::tempdir().unwrap();
    Paths {
        db: dir.path().join("ledger.db"),
        published: dir.path().join("published").join("checkpoint.note"),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_checkpoint_is_published_and_flushed_on_close() {
    let p = paths();
    let signer = signer(1);
    let store = open(&p.db, &p.published, &signer).unwrap();
    for round in 0..5 {
        append(&store, 3, &format!("round {round}")).await;
    }
    store.close();
    // Written at most once a second, but always once more when the store closes.
    assert_eq!(published_size(&p.published, &signer), 15);
    let note = std::fs::read_to_string(&p.published).unwrap();
    assert!(
        note.starts_with(&format!(
            "aura.node/{}\n15\n",
            signer.public_key().node_id()
        )),
        "{note}"
    );
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(p.published.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["checkpoint.note"]);
}

/// Regression (security item 11): a ledger cut back to an earlier checkpoint on disk
/// verified and opened as if nothing had happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_back_below_the_published_checkpoint_refuses_to_open() {
    let p = paths();
    let signer = signer(2);
    let store = open(&p.db, &p.published, &signer).unwrap();
    append(&store, 4, "early").await;
    store.close();
    let old_copy = p.db.with_extension("old");
    std::fs::copy(&p.db, &old_copy).unwrap();
    let store = open(&p.db, &p.published, &signer).unwrap();
    append(&store, 6, "late").await;
    store.close();
    assert_eq!(published_size(&p.published, &signer), 10);

    std::fs::copy(&old_copy, &p.db).unwrap();
    let published_before = std::fs::read(&p.published).unwrap();
    match open(&p.db, &p.published, &signer) {
        Err(Error::CutBack {
            entries, published, ..
        }) => assert_eq!((entries, published), (4, 10)),
        other => panic!("expected a cut-back refusal, got {other:?}"),
    }
    // The refusal changed nothing: the published checkpoint still says 10.
    assert_eq!(std::fs::read(&p.published).unwrap(), published_before);
    // The old copy still verifies on its own: nothing inside it can tell.
    let ro = SqliteStore::open_read_only(&p.db, Options::default()).unwrap();
    assert!(matches!(
        ro.verify(Box::new(|_| {})).await.unwrap(),
        aura_store::Verification::Ok(_)
    ));
    drop(ro);
    // Moving the published checkpoint away is the operator's way to accept the copy.
    std::fs::remove_file(&p.published).unwrap();
    open(&p.db, &p.published, &signer).unwrap().close();
    assert_eq!(published_size(&p.published, &signer), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_another_history_refuses_to_open() {
    let a = paths();
    let b = paths();
    let signer = signer(3);
    // Two databases of one node (one key), with different entries.
    let store = open(&a.db, &a.published, &signer).unwrap();
    append(&store, 5, "this").await;
    store.close();
    let store = open(&b.db, &b.published, &signer).unwrap();
    append(&store, 8, "that").await;
    store.close();
    match open(&b.db, &a.published, &signer) {
        Err(Error::Forked { size, .. }) => assert_eq!(size, 5),
        other => panic!("expected a fork refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_foreign_published_checkpoint_refuses_to_open() {
    let p = paths();
    let signer = signer(4);
    let store = open(&p.db, &p.published, &signer).unwrap();
    append(&store, 2, "x").await;
    store.close();
    let good = std::fs::read(&p.published).unwrap();
    let mut damaged = good.clone();
    let at = good.len() / 2;
    damaged[at] ^= 0x01;
    std::fs::write(&p.published, &damaged).unwrap();
    assert!(matches!(
        open(&p.db, &p.published, &signer),
        Err(Error::BadPublished { .. })
    ));
    // Another node's checkpoint in its place.
    let other = common::signer(5);
    let q = paths();
    let s = open(&q.db, &q.published, &other).unwrap();
    append(&s, 1, "y").await;
    s.close();
    std::fs::copy(&q.published, &p.published).unwrap();
    assert!(matches!(
        open(&p.db, &p.published, &signer),
        Err(Error::BadPublished { .. })
    ));
    // Without the option, nothing is published and nothing checked.
    std::fs::write(&p.published, b"garbage").unwrap();
    common::open(&p.db, &signer).close();
    assert_eq!(std::fs::read(&p.published).unwrap(), b"garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_a_published_checkpoint_publishes_when_it_opens() {
    // A store from before publishing existed: it opens, and is covered from then on.
    let p = paths();
    let signer = signer(6);
    let store = common::open(&p.db, &signer);
    append(&store, 3, "before").await;
    store.close();
    assert!(!p.published.exists());
    open(&p.db, &p.published, &signer).unwrap().close();
    assert_eq!(published_size(&p.published, &signer), 3);
}
