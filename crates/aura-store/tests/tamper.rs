//! Tampering with a stored ledger: every change to its content is detected by verify,
//! which names the entry concerned; a flipped byte anywhere in the database file is either
//! detected or provably changed nothing in the ledger.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::{Path, PathBuf};

use aura_core::door::{Entropy as _, SeededEntropy};
use aura_ledger::verify::Location;
use aura_store::sqlite::Options;
use aura_store::{Seq, SqliteStore, Store, Verification};
use common::{agent, note, open, signer};
use proptest::prelude::*;
use rusqlite::{Connection, params};

const ENTRIES: u64 = 300;

/// A store with `ENTRIES` entries over 5 agents in uneven batches, built once per test
/// process and copied for each case.
fn pristine() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = open(&path, &signer(1));
            let rng = SeededEntropy::new(5);
            let mut n = 0;
            while n < ENTRIES {
                let size = (1 + rng.u64() % 9).min(ENTRIES - n);
                let batch = (0..size)
                    .map(|i| {
                        note(
                            agent((rng.u64() % 5) as u8),
                            Seq::Next,
                            &format!("entry {} {}", n + i, rng.u64()),
                        )
                    })
                    .collect();
                store.append(batch).await.unwrap();
                n += size;
            }
            store.close();
        });
        (dir, path)
    })
    .1
}

fn copy_store(into: &Path) -> PathBuf {
    let to = into.join("l.db");
    std::fs::copy(pristine(), &to).unwrap();
    to
}

fn verify(path: &Path) -> Result<Verification, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store =
            SqliteStore::open_read_only(path, Options::default()).map_err(|e| e.to_string())?;
        store
            .verify(Box::new(|_| {}))
            .await
            .map_err(|e| e.to_string())
    })
}

fn failure(path: &Path) -> aura_ledger::Failure {
    match verify(path) {
        Ok(Verification::Failed(f)) => f,
        Ok(Verification::Ok(_)) => panic!("tampering went unnoticed"),
        Err(e) => panic!("verify errored instead of naming the problem: {e}"),
    }
}

fn names_entry(f: &aura_ledger::Failure, position: u64) -> bool {
    matches!(f.location, Location::Entry { position: p, .. } if p == position)
        || f.to_string().contains(&format!("#{position} "))
        || f.to_string().contains(&format!("#{position})"))
}

#[test]
fn the_pristine_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_store(dir.path());
    match verify(&path).unwrap() {
        Verification::Ok(s) => assert_eq!(s.entries, ENTRIES),
        Verification::Failed(f) => panic!("{f}"),
    }
}

#[derive(Debug, Clone)]
enum Tamper {
    MutateRaw {
        row: u64,
        at: prop::sample::Index,
        delta: u8,
    },
    MutateHash {
        row: u64,
        at: usize,
        delta: u8,
    },
    DeleteRow {
        row: u64,
    },
    SwapRows {
        a: u64,
        b: u64,
    },
    InsertCopy {
        of: u64,
        at: u64,
    },
    MutateColumns {
        row: u64,
    },
}

fn arb_tamper() -> impl Strategy<Value = Tamper> {
    let row = 0..ENTRIES;
    prop_oneof![
        (row.clone(), any::<prop::sample::Index>(), 1u8..=255)
            .prop_map(|(row, at, delta)| Tamper::MutateRaw { row, at, delta }),
        (row.clone(), 0..32usize, 1u8..=255).prop_map(|(row, at, delta)| Tamper::MutateHash {
            row,
            at,
            delta
        }),
        row.clone().prop_map(|row| Tamper::DeleteRow { row }),
        (row.clone(), row.clone())
            .prop_filter("distinct", |(a, b)| a != b)
            .prop_map(|(a, b)| Tamper::SwapRows { a, b }),
        (row.clone(), 0..=ENTRIES).prop_map(|(of, at)| Tamper::InsertCopy { of, at }),
        row.prop_map(|row| Tamper::MutateColumns { row }),
    ]
}

/// Applies the tampering and says which entry positions verify may name for it.
fn apply(conn: &Connection, t: &Tamper) -> Vec<u64> {
    match t {
        Tamper::MutateRaw { row, at, delta } => {
            let mut raw: Vec<u8> = conn
                .query_row(
                    "SELECT raw FROM entries WHERE idx = ?1",
                    [*row as i64],
                    |r| r.get(0),
                )
                .unwrap();
            let i = at.index(raw.len());
            raw[i] ^= delta;
            conn.execute(
                "UPDATE entries SET raw = ?1 WHERE idx = ?2",
                params![raw, *row as i64],
            )
            .unwrap();
            vec![*row]
        }
        Tamper::MutateHash { row, at, delta } => {
            let mut h: Vec<u8> = conn
                .query_row(
                    "SELECT hash FROM entries WHERE idx = ?1",
                    [*row as i64],
                    |r| r.get(0),
                )
                .unwrap();
            h[*at] ^= delta;
            conn.execute(
                "UPDATE entries SET hash = ?1 WHERE idx = ?2",
                params![h, *row as i64],
            )
            .unwrap();
            vec![*row]
        }
        Tamper::DeleteRow { row } => {
            conn.execute("DELETE FROM entries WHERE idx = ?1", [*row as i64])
                .unwrap();
            vec![*row]
        }
        Tamper::SwapRows { a, b } => {
            conn.execute("UPDATE entries SET idx = -1 WHERE idx = ?1", [*a as i64])
                .unwrap();
            conn.execute(
                "UPDATE entries SET idx = ?1 WHERE idx = ?2",
                [*a as i64, *b as i64],
            )
            .unwrap();
            conn.execute("UPDATE entries SET idx = ?1 WHERE idx = -1", [*b as i64])
                .unwrap();
            vec![(*a).min(*b)]
        }
        Tamper::InsertCopy { of, at } => {
            // An attacker who can write the file can drop the unique index first.
            conn.execute_batch("DROP INDEX entries_by_agent").unwrap();
            let (agent, seq, hash, raw): (Vec<u8>, i64, Vec<u8>, Vec<u8>) = conn
                .query_row(
                    "SELECT agent, seq, hash, raw FROM entries WHERE idx = ?1",
                    [*of as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .unwrap();
            // Shift later rows up by one, from the end, to make room.
            let max: i64 = conn
                .query_row("SELECT MAX(idx) FROM entries", [], |r| r.get(0))
                .unwrap();
            for i in (*at as i64..=max).rev() {
                conn.execute("UPDATE entries SET idx = ?1 WHERE idx = ?2", [i + 1, i])
                    .unwrap();
            }
            conn.execute(
                "INSERT INTO entries (idx, agent, seq, hash, raw) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![*at as i64, agent, seq, hash, raw],
            )
            .unwrap();
            // A copy right before its original is indistinguishable from it.
            if *of == *at {
                vec![*at, *at + 1]
            } else {
                vec![*at]
            }
        }
        Tamper::MutateColumns { row } => {
            conn.execute(
                "UPDATE entries SET seq = seq + 1000 WHERE idx = ?1",
                [*row as i64],
            )
            .unwrap();
            vec![*row]
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    #[test]
    fn every_row_tampering_is_detected_and_named(t in arb_tamper()) {
        let dir = tempfile::tempdir().unwrap();
        let path = copy_store(dir.path());
        let names = {
            let conn = Connection::open(&path).unwrap();
            apply(&conn, &t)
        };
        let f = failure(&path);
        prop_assert!(names.iter().any(|&p| names_entry(&f, p)), "{:?} reported as: {}", t, f);
    }
}

fn tamper_sql(sql: &str) -> aura_ledger::Failure {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_store(dir.path());
    Connection::open(&path).unwrap().execute_batch(sql).unwrap();
    failure(&path)
}

#[test]
fn checkpoint_tampering_is_detected() {
    // A byte of a signed checkpoint (here inside its root).
    let f = tamper_sql(
        "UPDATE checkpoints SET signed = substr(signed, 1, 40) || X'FF' || substr(signed, 42)
         WHERE tree_size = (SELECT tree_size FROM checkpoints LIMIT 1 OFFSET 3)",
    );
    assert!(matches!(f.location, Location::Checkpoint { .. }), "{f}");
    let f = tamper_sql(
        "DELETE FROM checkpoints WHERE tree_size = (SELECT MAX(tree_size) FROM checkpoints)",
    );
    assert!(f.to_string().contains("not covered"), "{f}");
    let f = tamper_sql(
        "UPDATE checkpoints SET tree_size = tree_size + 1 WHERE tree_size = (SELECT MIN(tree_size) FROM checkpoints)",
    );
    assert!(
        matches!(
            f.location,
            Location::Checkpoint { .. } | Location::Entry { .. }
        ),
        "{f}"
    );
}

#[test]
fn derived_tables_are_checked_too() {
    let f = tamper_sql("UPDATE merkle_tiles SET hash = zeroblob(32)");
    assert!(f.to_string().contains("Merkle node"), "{f}");
    let f = tamper_sql("DELETE FROM merkle_tiles");
    assert!(f.to_string().contains("Merkle node"), "{f}");
    let f = tamper_sql(
        "UPDATE heads SET seq = seq - 1 WHERE agent = (SELECT agent FROM heads LIMIT 1)",
    );
    assert!(f.to_string().contains("stored head"), "{f}");
    let f = tamper_sql(
        "INSERT INTO heads (agent, seq, hash) VALUES (zeroblob(15) || X'77', 1, zeroblob(32))",
    );
    assert!(f.to_string().contains("stored head"), "{f}");
}

/// A row as `content` reads it: key, then two byte columns.
type ContentRow = (i64, Vec<u8>, Vec<u8>);

/// The ledger as a reader sees it: every entry row and every checkpoint.
fn content(path: &Path) -> Option<Vec<ContentRow>> {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let mut rows = Vec::new();
    let mut stmt = conn
        .prepare("SELECT idx, hash, raw FROM entries ORDER BY idx")
        .ok()?;
    let mut q = stmt.query([]).ok()?;
    while let Ok(Some(r)) = q.next() {
        rows.push((r.get(0).ok()?, r.get(1).ok()?, r.get(2).ok()?));
    }
    let mut stmt = conn
        .prepare("SELECT tree_size, signed, signed FROM checkpoints ORDER BY tree_size")
        .ok()?;
    let mut q = stmt.query([]).ok()?;
    while let Ok(Some(r)) = q.next() {
        rows.push((r.get(0).ok()?, r.get(1).ok()?, r.get(2).ok()?));
    }
    Some(rows)
}

#[test]
fn a_flipped_byte_in_the_file_is_detected_or_harmless() {
    let original = content(pristine()).unwrap();
    let len = std::fs::metadata(pristine()).unwrap().len();
    let rng = SeededEntropy::new(99);
    let (mut detected, mut harmless) = (0, 0);
    for _ in 0..400 {
        let dir = tempfile::tempdir().unwrap();
        let path = copy_store(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (rng.u64() % len) as usize;
        bytes[at] ^= 1 + (rng.u64() % 255) as u8;
        std::fs::write(&path, &bytes).unwrap();
        match verify(&path) {
            Ok(Verification::Ok(_)) => {
                // Verification passed, so the flip must have hit bytes that hold no
                // ledger data (free space, unused parts of pages).
                let now = content(&path).unwrap_or_default();
                if now != original {
                    let diff = now.iter().zip(&original).position(|(a, b)| a != b);
                    panic!(
                        "flip at byte {at} changed the ledger undetected: {} rows now, {} before; first difference at row {diff:?}: {:?}",
                        now.len(),
                        original.len(),
                        diff.map(|i| (
                            now[i].0,
                            original[i].0,
                            now[i].1.len(),
                            original[i].1.len()
                        ))
                    );
                }
                harmless += 1;
            }
            Ok(Verification::Failed(_)) | Err(_) => detected += 1,
        }
    }
    assert!(
        detected > 0 && harmless > 0,
        "detected {detected}, harmless {harmless}"
    );
}

/// Regression: a checkpoint row replaced by a validly signed checkpoint dated before its
/// predecessor verified, although docs/ledger.md promises that times never decrease.
#[test]
fn a_checkpoint_dated_before_its_predecessor_is_refused() {
    use aura_ledger::SignedCheckpoint;
    let dir = tempfile::tempdir().unwrap();
    let path = copy_store(dir.path());
    let conn = Connection::open(&path).unwrap();
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT tree_size, signed FROM checkpoints ORDER BY tree_size")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let middle = rows.len() / 2;
    let before = SignedCheckpoint::decode(&rows[middle - 1].1).unwrap();
    let target = SignedCheckpoint::decode(&rows[middle].1).unwrap();
    let mut earlier = target.checkpoint;
    earlier.time = aura_core::Timestamp::from_nanos(before.checkpoint.time.as_nanos() - 1);
    let resigned = earlier.sign(&signer(1));
    conn.execute(
        "UPDATE checkpoints SET signed = ?2 WHERE tree_size = ?1",
        params![rows[middle].0, resigned.encode().to_vec()],
    )
    .unwrap();
    drop(conn);
    let f = failure(&path);
    assert!(
        matches!(f.reason, aura_ledger::verify::Reason::TimeGoesBack { .. }),
        "{f}"
    );
    assert!(
        matches!(f.location, Location::Checkpoint { tree_size: Some(s), .. } if s == target.checkpoint.tree_size),
        "{f}"
    );
}
