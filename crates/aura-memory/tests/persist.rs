//! One suite, two databases: every check here runs against SQLite and against PostgreSQL
//! (a throwaway server per test process; skipped only where no server binaries exist and
//! `AURA_REQUIRE_POSTGRES` is unset). Storing, searching, listing, forgetting, reopening,
//! bad input, and (PostgreSQL) two nodes sharing one database.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;

use aura_memory::postgres::PgMemory;
use aura_memory::{Error, Memory, Options, Persist, SqliteMemory};

const DIM: usize = 384;

/// A seeded unit-free vector (SplitMix64 to [-1, 1)): the same on every run.
fn vector(seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..DIM)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = s;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^= x >> 31;
            ((x >> 11) as f64 / (1u64 << 52) as f64 - 1.0) as f32
        })
        .collect()
}

/// Opens the same database again each time it is called.
type Opener = Box<dyn Fn() -> Arc<dyn Persist>>;

/// The databases the suite runs against: SQLite always, PostgreSQL where a server can
/// start. The temporary directory lives as long as the opener.
fn backends() -> Vec<(&'static str, Opener)> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let path = dir.path().join("memory.db");
    let mut out: Vec<(&'static str, Opener)> = vec![(
        "sqlite",
        Box::new(move || {
            let _keep = &dir;
            Arc::new(SqliteMemory::open(&path).unwrap()) as Arc<dyn Persist>
        }),
    )];
    if let Some(url) = postgres_url() {
        out.push((
            "postgres",
            Box::new(move || Arc::new(PgMemory::open(&url).unwrap()) as Arc<dyn Persist>),
        ));
    }
    out
}

fn postgres_url() -> Option<String> {
    let cluster = aura_store::postgres::testing::TestCluster::get()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some(rt.block_on(cluster.database()))
}

fn open(opener: &Opener) -> Memory {
    Memory::open(opener(), DIM, Options::default()).unwrap()
}

#[test]
fn search_finds_what_was_stored_and_never_another_namespaces() {
    for (name, opener) in backends() {
        let m = open(&opener);
        for i in 0..60u64 {
            let ns = if i % 2 == 0 { "a" } else { "b" };
            m.store(
                ns,
                &format!("{ns}{i}"),
                "fact",
                &format!("text {i}"),
                &vector(i),
            )
            .unwrap();
        }
        // The same vector in both namespaces: each finds only its own copy.
        m.store("a", "same", "fact", "a's", &vector(1000)).unwrap();
        m.store("b", "same", "fact", "b's", &vector(1000)).unwrap();
        for i in 0..60u64 {
            let ns = if i % 2 == 0 { "a" } else { "b" };
            let hits = m.search(ns, &vector(i), 5).unwrap();
            assert_eq!(hits[0].id, format!("{ns}{i}"), "{name}");
            assert!(
                hits.iter().all(|h| h.id.starts_with(ns) || h.id == "same"),
                "{name}: {hits:?}"
            );
        }
        assert_eq!(
            m.search("a", &vector(1000), 1).unwrap()[0].text,
            "a's",
            "{name}"
        );
        assert_eq!(
            m.search("b", &vector(1000), 1).unwrap()[0].text,
            "b's",
            "{name}"
        );
        assert!(
            m.search("c", &vector(1000), 5).unwrap().is_empty(),
            "{name}"
        );
        let listed = m.list("a").unwrap();
        assert_eq!(listed.len(), 31, "{name}");
        assert_eq!(listed[0].id, "a0", "{name}: in the order stored");
        assert!(m.contains("a", "a0").unwrap() && !m.contains("a", "b1").unwrap());
    }
}

#[test]
fn forgotten_memories_are_gone_and_reopening_gives_the_same_answers() {
    for (name, opener) in backends() {
        let before = {
            let m = open(&opener);
            for i in 0..200u64 {
                m.store("ns", &format!("m{i}"), "fact", &format!("t{i}"), &vector(i))
                    .unwrap();
            }
            for i in (0..200).step_by(7) {
                assert!(m.forget("ns", &format!("m{i}")).unwrap(), "{name}");
            }
            assert!(!m.forget("ns", "m0").unwrap(), "{name}: already forgotten");
            assert!(
                !m.forget("other", "m1").unwrap(),
                "{name}: another namespace's"
            );
            assert!(!m.contains("ns", "m0").unwrap());
            assert!(m.list("ns").unwrap().iter().all(|l| l.id != "m0"));
            (300..320u64)
                .map(|q| m.search("ns", &vector(q), 10).unwrap())
                .collect::<Vec<_>>()
        };
        for hits in &before {
            assert!(hits.iter().all(|h| {
                let i: usize = h.id[1..].parse().unwrap();
                !i.is_multiple_of(7)
            }));
        }
        let m = open(&opener);
        let after: Vec<_> = (300..320u64)
            .map(|q| m.search("ns", &vector(q), 10).unwrap())
            .collect();
        assert_eq!(before, after, "{name}: the same graph after reopening");
        let rows = opener().load().unwrap();
        assert_eq!(rows.len(), 200, "{name}: tombstones stay");
        assert!(
            rows.iter()
                .filter(|r| r.forgotten)
                .all(|r| r.text.is_empty() && r.vector.is_empty()),
            "{name}: forgotten text and vectors are erased"
        );
        // A forgotten id can be used again.
        m.store("ns", "m0", "fact", "again", &vector(0)).unwrap();
        assert_eq!(m.search("ns", &vector(0), 1).unwrap()[0].text, "again");
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    for (name, opener) in backends() {
        let persist = opener();
        let m = Memory::open(persist.clone(), DIM, Options::default()).unwrap();
        let good = vector(1);
        assert!(
            matches!(
                m.store("ns", "short", "fact", "x", &good[..10]),
                Err(Error::Dimension { got: 10, want: DIM })
            ),
            "{name}"
        );
        let mut nan = good.clone();
        nan[3] = f32::NAN;
        assert!(matches!(
            m.store("ns", "nan", "fact", "x", &nan),
            Err(Error::NotFinite)
        ));
        let mut inf = good.clone();
        inf[0] = f32::INFINITY;
        assert!(matches!(m.search("ns", &inf, 3), Err(Error::NotFinite)));
        m.store("ns", "one", "fact", "x", &good).unwrap();
        assert!(
            matches!(
                m.store("ns", "one", "fact", "y", &good),
                Err(Error::Exists(_))
            ),
            "{name}"
        );
        assert_eq!(persist.load().unwrap().len(), 1, "{name}");
        assert_eq!(m.search("ns", &good, 3).unwrap().len(), 1, "{name}");
    }
}

/// Two nodes of a cluster on one database: what one stores or forgets, the other finds
/// (or no longer finds) at its next search, and both index the records in the database's
/// order, so they give the same answers.
#[test]
fn nodes_sharing_a_postgres_database_see_each_others_writes() {
    let Some(url) = postgres_url() else {
        return;
    };
    let a = Memory::open(
        Arc::new(PgMemory::open(&url).unwrap()),
        DIM,
        Options::default(),
    )
    .unwrap();
    let b = Memory::open(
        Arc::new(PgMemory::open(&url).unwrap()),
        DIM,
        Options::default(),
    )
    .unwrap();
    for i in 0..40u64 {
        let node = if i % 2 == 0 { &a } else { &b };
        node.store("ns", &format!("m{i}"), "fact", "t", &vector(i))
            .unwrap();
    }
    assert_eq!(b.search("ns", &vector(4), 1).unwrap()[0].id, "m4");
    assert_eq!(a.search("ns", &vector(5), 1).unwrap()[0].id, "m5");
    // Both nodes stored a memory under the same name: the database keeps the first.
    assert!(matches!(
        a.store("ns", "m5", "fact", "t", &vector(5)),
        Err(Error::Exists(_))
    ));
    assert!(b.forget("ns", "m4").unwrap());
    assert!(
        a.search("ns", &vector(4), 10)
            .unwrap()
            .iter()
            .all(|h| h.id != "m4")
    );
    for q in 100..110u64 {
        assert_eq!(
            a.search("ns", &vector(q), 10).unwrap(),
            b.search("ns", &vector(q), 10).unwrap()
        );
    }
}

/// A URL that is not PostgreSQL's, and a server that is not there, are errors, not panics.
#[test]
fn a_bad_postgres_url_is_an_error() {
    assert!(matches!(
        PgMemory::open("not a url at all"),
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        PgMemory::open("postgresql://nobody@localhost/none?host=/nonexistent&port=1"),
        Err(Error::Unavailable(_))
    ));
}
