//! A full disk under the store (needs root, to mount a small tmpfs): appends are refused
//! with a typed error that says nothing was stored, nothing already acknowledged is lost
//! or damaged, the store keeps refusing while the disk is full, and appends go on once
//! there is room, in this process and after reopening.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use aura_store::{Error, Seq, SqliteStore, Store, Verification};
use common::{agent, note, open, signer};

/// A tmpfs of `size` mounted at a directory, unmounted when dropped (even when an
/// assertion fails).
struct Disk(PathBuf);

impl Disk {
    fn mount(dir: &Path, size: &str) -> Disk {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        Disk(dir.to_owned())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn verified(store: &SqliteStore, entries: u64) {
    match store.verify(Box::new(|_| {})).await.unwrap() {
        Verification::Ok(s) => assert_eq!(s.entries, entries, "entries verified"),
        Verification::Failed(f) => panic!("the store does not verify: {f}"),
    }
    assert_eq!(store.tree_size().await.unwrap(), entries);
}

/// A node whose disk filled up answered appends with "a commit failed, so the entries
/// may or may not be stored" (or worse, with nothing at all to tell a full disk from a
/// broken one). Now it refuses them with `DiskFull`: nothing stored, nothing damaged.
#[tokio::test(flavor = "multi_thread")]
async fn root_a_full_disk_refuses_appends_loudly_and_corrupts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::mount(&dir.path().join("disk"), "1M");
    let path = disk.0.join("ledger.db");
    let s = signer(1);
    let store = open(&path, &s);
    let a = agent(1);
    let body = "x".repeat(8 * 1024);
    let mut stored = 0u64;
    let err = loop {
        match store.append(vec![note(a, Seq::Next, &body)]).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 1_000, "a 1 MiB disk never filled");
    };
    assert!(stored > 0, "{err:?}");
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is full: nothing was stored"),
        "{err}"
    );
    // Nothing changed, and the store keeps refusing, loudly, while the disk is full.
    assert_eq!(store.tree_size().await.unwrap(), stored);
    assert_eq!(store.head(a).await.unwrap().unwrap().seq, stored);
    let again = store
        .append(vec![note(a, Seq::Exactly(stored + 1), &body)])
        .await
        .unwrap_err();
    assert!(matches!(again, Error::DiskFull { .. }), "{again:?}");
    // Reads and verification still work, and everything acknowledged is there.
    verified(&store, stored).await;

    // With room again, appends carry on from exactly what is stored.
    disk.resize("8M");
    store
        .append(vec![note(a, Seq::Exactly(stored + 1), "after")])
        .await
        .unwrap();
    drop(store);
    let store = open(&path, &s);
    verified(&store, stored + 1).await;
    assert_eq!(store.head(a).await.unwrap().unwrap().seq, stored + 1);
    drop(store);
    drop(disk);
}
