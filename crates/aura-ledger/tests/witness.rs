//! Witnesses: a witness cosigns a log's checkpoint only when it extends the last one it
//! cosigned (c2sp.org/tlog-witness), and a bundle carries cosignatures (version 3) that
//! a verifier trusting the witness checks.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use aura_core::door::SeededEntropy;
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, Timestamp};
use aura_ledger::bundle::{BundleWriter, Expect, verify_bundle, verify_bundle_with};
use aura_ledger::entry::{Entry, Kind, leaf_hash};
use aura_ledger::merkle::MemoryTree;
use aura_ledger::note::{self, KeyType, Note, NoteSignature, VerifierKey};
use aura_ledger::verify::Reason;
use aura_ledger::witness::{self, AddCheckpoint, Log, Refusal};
use aura_ledger::{Checkpoint, SignedCheckpoint};

/// A log: its signer and entries `0..n` of the node's stream, with `salt` in each body so
/// two logs with different salts are two histories under one key.
struct TestLog {
    signer: Signer,
    encoded: Vec<Vec<u8>>,
    tree: MemoryTree,
}

impl TestLog {
    fn new(n: u64, salt: &str) -> TestLog {
        let signer = Signer::ephemeral("node", &SeededEntropy::new(31)).unwrap();
        let mut encoded = Vec::new();
        let mut leaves = Vec::new();
        let mut prev = Hash::ZERO;
        for i in 0..n {
            let e = Entry {
                index: i,
                agent: AgentId::NODE,
                seq: i + 1,
                prev,
                kind: Kind::new("note").unwrap(),
                recorded_at: Timestamp::from_secs(1_800_000_000 + i),
                body: format!("{salt} {i}").into_bytes(),
            };
            let bytes = e.encode().unwrap();
            prev = Entry::hash_encoded(&bytes);
            leaves.push(leaf_hash(&prev));
            encoded.push(bytes);
        }
        TestLog {
            signer,
            encoded,
            tree: MemoryTree::new(leaves),
        }
    }

    fn checkpoint(&self, size: u64) -> SignedCheckpoint {
        Checkpoint {
            node: self.signer.public_key().node_id(),
            tree_size: size,
            root: self.tree.root(size),
            time: Timestamp::from_secs(1_800_000_000 + size),
        }
        .sign(&self.signer)
    }

    fn note(&self, size: u64) -> Note {
        note::checkpoint_note(&self.checkpoint(size), &self.signer).unwrap()
    }

    /// The add-checkpoint request for `size`, with a proof from `old`.
    fn request(&self, old: u64, size: u64) -> AddCheckpoint {
        AddCheckpoint {
            old,
            proof: self.tree.consistency_proof(old, size).unwrap(),
            note: self.note(size),
        }
    }

    fn log(&self) -> Log {
        let key = VerifierKey::aura_node(self.signer.public_key());
        Log {
            origin: key.name.clone(),
            key,
        }
    }

    /// A bundle with a checkpoint after every `every` entries, each followed by the
    /// cosignatures `cosign` gives for it.
    fn bundle(
        &self,
        every: u64,
        cosign: impl Fn(&SignedCheckpoint) -> Vec<NoteSignature>,
    ) -> Vec<u8> {
        let mut w = BundleWriter::new(Vec::new(), &self.signer.public_key()).unwrap();
        let n = self.encoded.len() as u64;
        for (i, e) in self.encoded.iter().enumerate() {
            w.entry(e, &Entry::hash_encoded(e)).unwrap();
            let size = i as u64 + 1;
            if size.is_multiple_of(every) || size == n {
                let cp = self.checkpoint(size);
                w.checkpoint(&cp).unwrap();
                for sig in cosign(&cp) {
                    w.cosignature(&sig).unwrap();
                }
            }
        }
        w.finish().unwrap()
    }
}

/// A witness that keeps its last cosigned head as a real one does.
struct TestWitness {
    signer: Signer,
    name: &'static str,
    last: Option<(u64, Hash)>,
}

impl TestWitness {
    fn new(seed: u64, name: &'static str) -> TestWitness {
        TestWitness {
            signer: Signer::ephemeral("witness", &SeededEntropy::new(seed)).unwrap(),
            name,
            last: None,
        }
    }

    fn key(&self) -> VerifierKey {
        VerifierKey::new(self.name, KeyType::Cosignature, self.signer.public_key()).unwrap()
    }

    fn add(&mut self, log: &Log, request: &AddCheckpoint) -> Result<NoteSignature, Refusal> {
        let head = witness::check(log, self.last, request)?;
        self.last = Some((head.size, head.root));
        Ok(note::cosign(request.note.text(), 1_800_000_500, self.name, &self.signer).unwrap())
    }
}

#[test]
fn a_witness_cosigns_only_checkpoints_that_extend_the_last_it_cosigned() {
    let log = TestLog::new(40, "a");
    let mut w = TestWitness::new(1, "witness.example/w1");
    // First contact: old 0, empty proof.
    let sig = w.add(&log.log(), &log.request(0, 10)).unwrap();
    assert!(w.key().verify(log.note(10).text(), &sig).is_ok());
    // Growth with a proof from the last cosigned size.
    w.add(&log.log(), &log.request(10, 25)).unwrap();
    // The same checkpoint again is fine (old = new, same root).
    w.add(&log.log(), &log.request(25, 25)).unwrap();
    // A client that thinks the witness is elsewhere hears where it is (409).
    let err = w.add(&log.log(), &log.request(10, 30)).unwrap_err();
    assert_eq!(
        err,
        Refusal::Conflict {
            old: 10,
            latest: 25
        }
    );
    assert_eq!(err.status(), 409);
    // Smaller than the last cosigned: refused, whatever the old size claims.
    let smaller = AddCheckpoint {
        old: 25,
        proof: Vec::new(),
        note: log.note(20),
    };
    let err = w.add(&log.log(), &smaller).unwrap_err();
    assert!(matches!(err, Refusal::OldTooLarge { .. }), "{err}");
    let err = w.add(&log.log(), &log.request(0, 20)).unwrap_err();
    assert!(matches!(err, Refusal::Conflict { .. }), "{err}");
    // A proof that does not lead from the last head: refused (422).
    let mut bad = log.request(25, 40);
    bad.proof[0].0[0] ^= 1;
    assert_eq!(w.add(&log.log(), &bad).unwrap_err().status(), 422);
    // Nothing refused changed the witness's state.
    assert_eq!(w.last.map(|l| l.0), Some(25));
    w.add(&log.log(), &log.request(25, 40)).unwrap();
}

#[test]
fn a_witness_refuses_a_forked_history_and_strangers() {
    let log = TestLog::new(30, "a");
    let fork = TestLog::new(30, "b");
    let mut w = TestWitness::new(2, "witness.example/w2");
    w.add(&log.log(), &log.request(0, 20)).unwrap();
    // Same key, another history: same size, other root.
    let err = w.add(&log.log(), &fork.request(20, 20)).unwrap_err();
    assert_eq!(err, Refusal::Fork { size: 20 });
    // A larger tree of the other history has no proof from the cosigned one.
    let mut req = fork.request(0, 30);
    req.old = 20;
    req.proof = fork.tree.consistency_proof(20, 30).unwrap();
    assert!(matches!(
        w.add(&log.log(), &req).unwrap_err(),
        Refusal::Inconsistent { .. }
    ));
    // Signed by another key: 403. Another origin: 404.
    let stranger = TestLog {
        signer: Signer::ephemeral("node", &SeededEntropy::new(99)).unwrap(),
        ..TestLog::new(30, "a")
    };
    let mut req = log.request(20, 30);
    req.note = Note::parse(
        note::checkpoint_note(&log.checkpoint(30), &log.signer)
            .unwrap()
            .encode()
            .replace(&log.log().origin, "aura.node/other")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(w.add(&log.log(), &req).unwrap_err().status(), 404);
    let mut signed_by_stranger = log.note(30);
    signed_by_stranger.signatures = vec![
        note::sign(
            signed_by_stranger.text(),
            &log.log().origin,
            &stranger.signer,
        )
        .unwrap(),
    ];
    req.note = signed_by_stranger;
    assert_eq!(w.add(&log.log(), &req).unwrap_err().status(), 403);
    assert_eq!(w.last.map(|l| l.0), Some(20));
}

#[test]
fn add_checkpoint_requests_round_trip_and_parse_the_specs_example() {
    let log = TestLog::new(9, "a");
    let req = log.request(3, 9);
    assert_eq!(AddCheckpoint::parse(req.encode().as_bytes()).unwrap(), req);
    // The example body of c2sp.org/tlog-witness.
    let example = "old 20852014\n\
        PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
        jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
        5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
        /6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
        \n\
        example.com/behind-the-sofa\n\
        20852163\n\
        CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
        \n\
        \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
        \u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n";
    let parsed = AddCheckpoint::parse(example.as_bytes()).unwrap();
    assert_eq!((parsed.old, parsed.proof.len()), (20852014, 4));
    assert_eq!(parsed.note.signatures.len(), 2);
    let head = note::TreeHead::parse(parsed.note.text()).unwrap();
    assert_eq!(
        (head.origin.as_str(), head.size),
        ("example.com/behind-the-sofa", 20852163)
    );
    assert_eq!(parsed.encode(), example);
    for bad in [
        "old 01\n\n".to_owned(),
        "old x\n\n".to_owned(),
        format!("old 1\n{}", "AAAA\n"),
        format!(
            "old 1\n{}\n{}",
            "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n".repeat(64),
            log.note(9).encode()
        ),
    ] {
        assert!(AddCheckpoint::parse(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn a_bundle_carries_cosignatures_that_a_trusting_verifier_checks() {
    let log = TestLog::new(20, "a");
    let w1 = TestWitness::new(3, "witness.example/w1");
    let w2 = TestWitness::new(4, "witness.example/w2");
    let cosign = |cp: &SignedCheckpoint| {
        let text = note::checkpoint_text(&cp.checkpoint);
        [&w1, &w2]
            .iter()
            .map(|w| {
                note::cosign(
                    &text,
                    1_800_000_000 + cp.checkpoint.tree_size,
                    w.name,
                    &w.signer,
                )
                .unwrap()
            })
            .collect()
    };
    let bytes = log.bundle(5, cosign);
    assert_eq!(bytes[8], aura_ledger::bundle::VERSION);
    let key = log.signer.public_key();
    // Without witness keys the cosignatures are counted, not believed.
    let s = verify_bundle(&bytes[..], &key).unwrap();
    assert_eq!((s.cosigned.len(), s.unknown_cosignatures), (0, 8));
    let expect = Expect {
        witnesses: vec![w1.key()],
        heads: Vec::new(),
    };
    let s = verify_bundle_with(&bytes[..], &key, &expect).unwrap();
    assert_eq!((s.cosigned.len(), s.unknown_cosignatures), (4, 4));
    assert_eq!(s.cosigned[3].tree_size, 20);
    assert_eq!(s.cosigned[3].time, 1_800_000_020);

    // A cosignature of one checkpoint moved to another does not verify.
    let moved = log.bundle(5, |cp| {
        let other = log.checkpoint(cp.checkpoint.tree_size - 1);
        vec![
            note::cosign(
                &note::checkpoint_text(&other.checkpoint),
                1,
                w1.name,
                &w1.signer,
            )
            .unwrap(),
        ]
    });
    let failure = verify_bundle_with(&moved[..], &key, &expect).unwrap_err();
    assert!(
        matches!(failure.reason, Reason::BadCosignature { .. }),
        "{failure}"
    );

    // Every single-byte change of a cosigned bundle is refused, or leaves fewer
    // cosignatures believed (a damaged cosignature line may become a stranger's, which
    // is ignored as the signed-note spec says); never a false one.
    let both = Expect {
        witnesses: vec![w1.key(), w2.key()],
        heads: Vec::new(),
    };
    assert_eq!(
        verify_bundle_with(&bytes[..], &key, &both)
            .unwrap()
            .cosigned
            .len(),
        8
    );
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        if let Ok(s) = verify_bundle_with(&b[..], &key, &both) {
            assert!(s.cosigned.len() < 8, "byte {i} went unnoticed");
            assert_eq!(s.entries, 20, "byte {i}");
        }
    }
}

#[test]
fn a_cosignature_frame_must_follow_a_checkpoint_and_is_refused_in_older_versions() {
    let log = TestLog::new(4, "a");
    let w = TestWitness::new(5, "w");
    let sig = note::cosign(log.note(4).text(), 1, w.name, &w.signer).unwrap();
    let mut writer = BundleWriter::new(Vec::new(), &log.signer.public_key()).unwrap();
    writer
        .entry(&log.encoded[0], &Entry::hash_encoded(&log.encoded[0]))
        .unwrap();
    assert!(writer.cosignature(&sig).is_err());
    // A version 3 bundle relabelled as version 2 (trailer shortened to match) is refused
    // at its cosignature frame.
    let mut bytes = log.bundle(4, |_| vec![sig.clone()]);
    bytes[8] = aura_ledger::bundle::VERSION_2;
    bytes.truncate(bytes.len() - 8);
    let failure = verify_bundle(&bytes[..], &log.signer.public_key()).unwrap_err();
    assert!(
        failure.to_string().contains("unknown frame type 4"),
        "{failure}"
    );
}
