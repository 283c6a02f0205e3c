//! Properties of the memory under any sequence of stores and forgets (SQLite in memory,
//! small vectors so that search is exhaustive): it holds exactly what a plain map says,
//! a live memory is its own nearest neighbour, a forgotten one is never returned, bad
//! vectors change nothing, and reopening the database gives the same memory.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::BTreeMap;
use std::sync::Arc;

use aura_memory::{Error, Memory, Options, Persist, SqliteMemory};
use proptest::prelude::*;

const DIM: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Store { ns: u8, id: u8, seed: u32 },
    Forget { ns: u8, id: u8 },
    Bad { ns: u8, id: u8, len: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2u8, 0..12u8, any::<u32>()).prop_map(|(ns, id, seed)| Op::Store { ns, id, seed }),
        2 => (0..2u8, 0..12u8).prop_map(|(ns, id)| Op::Forget { ns, id }),
        1 => (0..2u8, 0..12u8, 0..20usize).prop_map(|(ns, id, len)| Op::Bad { ns, id, len }),
    ]
}

/// A vector unlike the others (seeded), never zero.
fn vector(seed: u32) -> Vec<f32> {
    let mut s = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..DIM)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            if x == 0.0 { 0.25 } else { x }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_memory_holds_what_a_map_says(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let m = Memory::open(Arc::new(SqliteMemory::open(&path).unwrap()), DIM, Options::default()).unwrap();
        // (namespace, id) -> seed of the live memory.
        let mut model: BTreeMap<(String, String), u32> = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Store { ns, id, seed } => {
                    let key = (format!("ns{ns}"), format!("m{id}"));
                    let got = m.store(&key.0, &key.1, "fact", &format!("t{seed}"), &vector(*seed));
                    match model.entry(key) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            prop_assert!(matches!(got, Err(Error::Exists(_))), "{got:?}");
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            prop_assert!(got.is_ok(), "{got:?}");
                            v.insert(*seed);
                        }
                    }
                }
                Op::Forget { ns, id } => {
                    let key = (format!("ns{ns}"), format!("m{id}"));
                    let forgot = m.forget(&key.0, &key.1).unwrap();
                    prop_assert_eq!(forgot, model.remove(&key).is_some());
                }
                Op::Bad { ns, id, len } => {
                    let mut v = vec![0.5; *len];
                    if *len == DIM {
                        v[0] = f32::NAN;
                    }
                    let got = m.store(&format!("ns{ns}"), &format!("bad{id}"), "fact", "x", &v);
                    prop_assert!(matches!(got, Err(Error::Dimension { .. } | Error::NotFinite)), "{got:?}");
                }
            }
        }
        let check = |m: &Memory| -> Result<(), TestCaseError> {
            for ns in ["ns0", "ns1"] {
                let live: Vec<String> = model
                    .keys()
                    .filter(|(n, _)| n == ns)
                    .map(|(_, id)| id.clone())
                    .collect();
                let mut listed: Vec<String> = m.list(ns).unwrap().into_iter().map(|l| l.id).collect();
                listed.sort();
                prop_assert_eq!(&listed, &live);
                for ((n, id), seed) in &model {
                    if n != ns {
                        continue;
                    }
                    let hits = m.search(ns, &vector(*seed), live.len().max(1)).unwrap();
                    prop_assert!(hits.iter().all(|h| live.contains(&h.id)), "{hits:?}");
                    prop_assert!(hits.iter().any(|h| &h.id == id), "{id} not found: {hits:?}");
                }
            }
            Ok(())
        };
        check(&m)?;
        drop(m);
        let reopened = Memory::open(Arc::new(SqliteMemory::open(&path).unwrap()), DIM, Options::default()).unwrap();
        check(&reopened)?;
        let rows = SqliteMemory::open(&path).unwrap().load().unwrap();
        prop_assert!(rows.iter().filter(|r| r.forgotten).all(|r| r.text.is_empty() && r.vector.is_empty()));
    }
}
