//! Tampering with an exported ledger: every single-byte mutation, deletion or insertion,
//! and every reordering, deletion or duplication of entries, is detected by verification,
//! which names the entry concerned.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use aura_core::door::{Entropy as _, SeededEntropy};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, Timestamp};
use aura_ledger::bundle::{BundleWriter, verify_bundle};
use aura_ledger::entry::{Entry, Kind, leaf_hash};
use aura_ledger::verify::Location;
use aura_ledger::{Checkpoint, Frontier, SignedCheckpoint};
use proptest::prelude::*;

/// A frame of a test ledger, kept separately so tests can rearrange them.
#[derive(Clone)]
enum Frame {
    Entry {
        encoded: Vec<u8>,
        hash: Hash,
        position: u64,
    },
    /// An entry whose body was pruned: its stub and hash.
    Pruned {
        stub: Vec<u8>,
        hash: Hash,
        position: u64,
        kind_len: usize,
    },
    Checkpoint(SignedCheckpoint),
}

/// A random ledger: `n` entries over `agents` agents, checkpoints after random batches.
fn random_ledger(seed: u64, n: u64, agents: usize) -> (Signer, Vec<Frame>) {
    let rng = SeededEntropy::new(seed);
    let signer = Signer::ephemeral("node", &rng).unwrap();
    let ids: Vec<AgentId> = (0..agents)
        .map(|i| {
            if i == 0 {
                AgentId::NODE
            } else {
                AgentId::from_bytes(rng.array())
            }
        })
        .collect();
    let mut heads: Vec<(u64, Hash)> = vec![(0, Hash::ZERO); agents];
    let mut frontier = Frontier::new();
    let mut frames = Vec::new();
    for index in 0..n {
        let a = (rng.u64() % agents as u64) as usize;
        let body_len = (rng.u64() % 64) as usize;
        let mut body = vec![0u8; body_len];
        rng.fill(&mut body);
        let e = Entry {
            index,
            agent: ids[a],
            seq: heads[a].0 + 1,
            prev: heads[a].1,
            kind: Kind::new(["note", "mission.step", "tool.effect"][(rng.u64() % 3) as usize])
                .unwrap(),
            recorded_at: Timestamp::from_nanos(1_800_000_000_000_000_000 + index * 1000),
            body,
        };
        let encoded = e.encode().unwrap();
        let hash = Entry::hash_encoded(&encoded);
        heads[a] = (e.seq, hash);
        frontier.push(leaf_hash(&hash), |_, _| {});
        frames.push(Frame::Entry {
            encoded,
            hash,
            position: index,
        });
        if index == n - 1 || rng.u64().is_multiple_of(4) {
            let cp = Checkpoint {
                node: signer.public_key().node_id(),
                tree_size: index + 1,
                root: frontier.root(),
                time: Timestamp::from_nanos(1_800_000_000_000_000_000 + index * 1000 + 1),
            };
            frames.push(Frame::Checkpoint(cp.sign(&signer)));
        }
    }
    (signer, frames)
}

/// Serialises frames; returns the bytes and, for each byte, the entry position of the
/// entry frame it belongs to and the byte's offset in that frame (None for header,
/// checkpoints and trailer).
fn export(signer: &Signer, frames: &[Frame]) -> (Vec<u8>, Vec<Option<(u64, usize)>>) {
    let mut w = BundleWriter::new(Vec::new(), &signer.public_key()).unwrap();
    let mut owner = vec![None; 41];
    let mut len = 41;
    for f in frames {
        match f {
            Frame::Entry {
                encoded,
                hash,
                position,
            } => {
                w.entry(encoded, hash).unwrap();
                let frame_len = 1 + 4 + encoded.len() + 32;
                owner.extend((0..frame_len).map(|offset| Some((*position, offset))));
                len += frame_len;
            }
            Frame::Pruned {
                stub,
                hash,
                position,
                ..
            } => {
                w.pruned(stub, hash).unwrap();
                let frame_len = 1 + 4 + stub.len() + 32;
                owner.extend((0..frame_len).map(|offset| Some((*position, offset))));
                len += frame_len;
            }
            Frame::Checkpoint(cp) => {
                w.checkpoint(cp).unwrap();
                owner.extend(std::iter::repeat_n(None, 1 + cp.encode().len()));
                len += 1 + cp.encode().len();
            }
        }
    }
    let bytes = w.finish().unwrap();
    owner.extend(std::iter::repeat_n(None, bytes.len() - len));
    (bytes, owner)
}

fn named_position(loc: &Location) -> Option<u64> {
    match loc {
        Location::Entry { position, .. } => Some(*position),
        _ => None,
    }
}

/// Does the failure point at the entry frame a changed byte belongs to? A changed frame
/// tag turns the entry frame into a checkpoint or trailer frame, so then the failure is
/// reported for whatever frame the reader found at that entry's place.
fn names_the_frame(loc: &Location, position: u64, offset: usize) -> bool {
    match loc {
        Location::Entry { position: p, .. } => *p == position,
        Location::Checkpoint { after_entries, .. }
        | Location::End {
            entries: after_entries,
        } => offset == 0 && *after_entries == position,
    }
}

#[test]
fn an_untouched_export_verifies() {
    let (signer, frames) = random_ledger(1, 200, 5);
    let (bytes, _) = export(&signer, &frames);
    let summary = verify_bundle(&bytes[..], &signer.public_key()).unwrap();
    assert_eq!(summary.entries, 200);
    assert_eq!(summary.agents, 5);
}

#[test]
fn every_single_byte_mutation_is_detected_and_named() {
    for seed in 0..3 {
        let (signer, frames) = random_ledger(seed, 24, 3);
        let (bytes, owner) = export(&signer, &frames);
        for i in 0..bytes.len() {
            for delta in [0x01u8, 0x10, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= delta;
                let Err(failure) = verify_bundle(&b[..], &signer.public_key()) else {
                    panic!("seed {seed}: changing byte {i} by {delta:#x} went unnoticed");
                };
                if let Some((position, offset)) = owner[i] {
                    // A change inside an entry's frame is reported at that entry; a
                    // changed length prefix may make the reader run into later frames,
                    // but it still stops at this entry.
                    assert!(
                        names_the_frame(&failure.location, position, offset),
                        "seed {seed} byte {i} delta {delta:#x}: {failure}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_single_byte_deletion_or_insertion_is_detected() {
    let (signer, frames) = random_ledger(7, 16, 3);
    let (bytes, _) = export(&signer, &frames);
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b.remove(i);
        assert!(
            verify_bundle(&b[..], &signer.public_key()).is_err(),
            "deleting byte {i}"
        );
        for v in [0u8, 1, 2, 0xff] {
            let mut b = bytes.clone();
            b.insert(i, v);
            assert!(
                verify_bundle(&b[..], &signer.public_key()).is_err(),
                "inserting {v} at {i}"
            );
        }
    }
    let mut b = bytes;
    b.push(0);
    assert!(
        verify_bundle(&b[..], &signer.public_key()).is_err(),
        "appending a byte"
    );
}

fn entry_positions(frames: &[Frame]) -> Vec<usize> {
    frames
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Frame::Entry { .. }))
        .map(|(i, _)| i)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Removing one entry is reported at the position it left empty.
    #[test]
    fn a_deleted_entry_is_named(seed in any::<u64>(), n in 2u64..80, pick in any::<prop::sample::Index>()) {
        let (signer, mut frames) = random_ledger(seed, n, 4);
        let slots = entry_positions(&frames);
        let slot = slots[pick.index(slots.len())];
        let Frame::Entry { position, .. } = frames[slot].clone() else { unreachable!() };
        frames.remove(slot);
        let (bytes, _) = export(&signer, &frames);
        let failure = verify_bundle(&bytes[..], &signer.public_key()).unwrap_err();
        let msg = failure.to_string();
        prop_assert!(
            named_position(&failure.location) == Some(position) || msg.contains(&format!("entry #{position} is missing")),
            "deleted #{position}: {msg}"
        );
    }

    /// Swapping two entries is reported at the first of them.
    #[test]
    fn reordered_entries_are_named(seed in any::<u64>(), n in 2u64..80, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let (signer, mut frames) = random_ledger(seed, n, 4);
        let slots = entry_positions(&frames);
        let (x, y) = (slots[a.index(slots.len())], slots[b.index(slots.len())]);
        prop_assume!(x != y);
        let first = x.min(y);
        let Frame::Entry { position, .. } = frames[first].clone() else { unreachable!() };
        frames.swap(x, y);
        let (bytes, _) = export(&signer, &frames);
        let failure = verify_bundle(&bytes[..], &signer.public_key()).unwrap_err();
        prop_assert_eq!(named_position(&failure.location), Some(position), "{}", failure);
    }

    /// A duplicated (replayed) entry is reported where the copy sits.
    #[test]
    fn an_inserted_entry_is_named(seed in any::<u64>(), n in 1u64..80, pick in any::<prop::sample::Index>(), to in any::<prop::sample::Index>()) {
        let (signer, mut frames) = random_ledger(seed, n, 4);
        let slots = entry_positions(&frames);
        let copy = frames[slots[pick.index(slots.len())]].clone();
        let at = to.index(frames.len() + 1);
        frames.insert(at, copy.clone());
        // The copy now occupies the position of the first entry frame at or after `at`.
        let expected = frames[..at].iter().filter(|f| matches!(f, Frame::Entry { .. })).count() as u64;
        // A copy placed just before its original is indistinguishable from it; then
        // the second of the two identical entries is the one out of place.
        let Frame::Entry { position: copied, .. } = copy else { unreachable!() };
        let acceptable = if copied == expected { vec![expected, expected + 1] } else { vec![expected] };
        let (bytes, _) = export(&signer, &frames);
        let failure = verify_bundle(&bytes[..], &signer.public_key()).unwrap_err();
        let named = named_position(&failure.location);
        let msg = failure.to_string();
        prop_assert!(
            named.is_some_and(|p| acceptable.contains(&p)) || msg.contains(&format!("entry #{expected} comes before")),
            "copy at {}: {}", expected, msg
        );
    }

    /// Any single-byte change to a random ledger is detected.
    #[test]
    fn random_mutations_are_detected(seed in any::<u64>(), n in 1u64..120, at in any::<prop::sample::Index>(), delta in 1u8..=255) {
        let (signer, frames) = random_ledger(seed, n, 6);
        let (mut bytes, owner) = export(&signer, &frames);
        let i = at.index(bytes.len());
        bytes[i] ^= delta;
        let failure = verify_bundle(&bytes[..], &signer.public_key());
        prop_assert!(failure.is_err());
        if let Some((position, offset)) = owner[i] {
            let failure = failure.unwrap_err();
            prop_assert!(names_the_frame(&failure.location, position, offset), "{}", failure);
        }
    }
}

#[test]
fn a_bundle_from_another_node_is_refused() {
    let (signer, frames) = random_ledger(3, 10, 2);
    let (bytes, _) = export(&signer, &frames);
    let other = Signer::ephemeral("node", &SeededEntropy::new(77)).unwrap();
    let failure = verify_bundle(&bytes[..], &other.public_key()).unwrap_err();
    assert!(
        failure.to_string().contains("not the trusted key"),
        "{failure}"
    );
}

#[test]
fn dropping_the_last_checkpoint_leaves_entries_uncovered() {
    let (signer, mut frames) = random_ledger(4, 10, 2);
    assert!(matches!(frames.pop(), Some(Frame::Checkpoint(_))));
    let (bytes, _) = export(&signer, &frames);
    let failure = verify_bundle(&bytes[..], &signer.public_key()).unwrap_err();
    assert!(
        failure
            .to_string()
            .contains("not covered by any signed checkpoint"),
        "{failure}"
    );
}

/// Prunes the bodies of the entries at `positions`, as a store does.
fn prune(frames: &mut [Frame], positions: &[u64]) {
    for f in frames.iter_mut() {
        if let Frame::Entry {
            encoded,
            hash,
            position,
        } = f
            && positions.contains(position)
        {
            let entry = Entry::decode(encoded).unwrap();
            *f = Frame::Pruned {
                stub: entry.pruned().unwrap().encode(),
                hash: *hash,
                position: *position,
                kind_len: entry.kind.as_str().len(),
            };
        }
    }
}

/// Entries of the ledger that are not their agent's first or last: pruning them leaves
/// neighbours on both sides in their stream.
fn inner_entries(frames: &[Frame]) -> Vec<u64> {
    let entries: Vec<Entry> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Entry { encoded, .. } => Some(Entry::decode(encoded).unwrap()),
            _ => None,
        })
        .collect();
    entries
        .iter()
        .filter(|e| e.seq > 1 && entries.iter().any(|l| l.agent == e.agent && l.seq > e.seq))
        .map(|e| e.index)
        .collect()
}

#[test]
fn an_export_with_pruned_entries_verifies_and_counts_them() {
    let (signer, mut frames) = random_ledger(11, 120, 4);
    let pruned: Vec<u64> = inner_entries(&frames).into_iter().step_by(2).collect();
    assert!(pruned.len() > 10);
    prune(&mut frames, &pruned);
    let (bytes, _) = export(&signer, &frames);
    let summary = verify_bundle(&bytes[..], &signer.public_key()).unwrap();
    assert_eq!(summary.entries, 120);
    assert_eq!(summary.pruned, pruned.len() as u64);
}

/// Every byte of a pruned ledger that something commits to is checked: every byte of the
/// whole entries, and of a stub its frame, version, index, agent, seq, prev, the kind's
/// length and the kept hash. A stub's kind, time and body length are not committed to by
/// anything once the body is gone (docs/ledger.md says so); changing them goes unnoticed.
#[test]
fn every_committed_byte_of_a_pruned_export_is_checked() {
    for seed in 20..23 {
        let (signer, mut frames) = random_ledger(seed, 30, 3);
        let inner = inner_entries(&frames);
        prune(&mut frames, &inner);
        let kinds: std::collections::HashMap<u64, usize> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Pruned {
                    position, kind_len, ..
                } => Some((*position, *kind_len)),
                _ => None,
            })
            .collect();
        let (bytes, owner) = export(&signer, &frames);
        for i in 0..bytes.len() {
            if let Some((position, offset)) = owner[i]
                && let Some(k) = kinds.get(&position)
            {
                // Frame: tag, u32 length, stub (version, index, agent, seq, prev, kind
                // length, kind, recorded_at, body_len), hash. The unproven fields:
                let unproven = 5 + 1 + 8 + 16 + 8 + 32 + 1..5 + 1 + 8 + 16 + 8 + 32 + 1 + k + 8 + 4;
                if unproven.contains(&offset) {
                    continue;
                }
            }
            for delta in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= delta;
                assert!(
                    verify_bundle(&b[..], &signer.public_key()).is_err(),
                    "seed {seed}: changing byte {i} ({:?}) by {delta:#x} went unnoticed",
                    owner[i]
                );
            }
        }
    }
}

#[test]
fn a_pruned_entry_with_another_hash_breaks_its_chain() {
    let (signer, mut frames) = random_ledger(5, 60, 3);
    let target = inner_entries(&frames)[0];
    prune(&mut frames, &[target]);
    for f in &mut frames {
        if let Frame::Pruned { hash, .. } = f {
            hash.0[0] ^= 1;
        }
    }
    let (bytes, _) = export(&signer, &frames);
    let failure = verify_bundle(&bytes[..], &signer.public_key()).unwrap_err();
    assert!(
        failure
            .to_string()
            .contains("is not the hash of the agent's previous entry")
            || failure.to_string().contains("is not the root"),
        "{failure}"
    );
}

#[test]
fn a_pruned_body_put_back_wrong_is_detected() {
    // Pruning drops a body; "restoring" another body in its place must not verify.
    let (signer, mut frames) = random_ledger(6, 40, 3);
    let target = inner_entries(&frames)[0];
    for f in &mut frames {
        if let Frame::Entry {
            encoded, position, ..
        } = f
            && *position == target
        {
            let mut e = Entry::decode(encoded).unwrap();
            e.body = b"not what was recorded".to_vec();
            *encoded = e.encode().unwrap();
        }
    }
    let (bytes, _) = export(&signer, &frames);
    let failure = verify_bundle(&bytes[..], &signer.public_key()).unwrap_err();
    assert_eq!(named_position(&failure.location), Some(target), "{failure}");
}

/// A bundle as an older version writes it: the version byte, and a trailer without the
/// cosignature count (versions 1 and 2 have no cosignature frames).
fn as_version(mut bytes: Vec<u8>, version: u8) -> Vec<u8> {
    assert_eq!(bytes[8], aura_ledger::bundle::VERSION);
    bytes[8] = version;
    let cosignatures = bytes.split_off(bytes.len() - 8);
    assert_eq!(
        cosignatures, [0; 8],
        "a bundle with cosignatures has no older form"
    );
    bytes
}

#[test]
fn version_1_bundles_are_read_and_may_not_hold_pruned_entries() {
    let (signer, mut frames) = random_ledger(8, 30, 3);
    let (bytes, _) = export(&signer, &frames);
    let bytes = as_version(bytes, aura_ledger::bundle::VERSION_1);
    verify_bundle(&bytes[..], &signer.public_key()).unwrap();

    let inner = inner_entries(&frames);
    prune(&mut frames, &inner[..1]);
    let (bytes, _) = export(&signer, &frames);
    let bytes = as_version(bytes, aura_ledger::bundle::VERSION_1);
    let failure = verify_bundle(&bytes[..], &signer.public_key()).unwrap_err();
    assert!(
        failure.to_string().contains("unknown frame type 3"),
        "{failure}"
    );
    // Version 2 reads the same pruned bundle.
    let (bytes, _) = export(&signer, &frames);
    let bytes = as_version(bytes, aura_ledger::bundle::VERSION_2);
    verify_bundle(&bytes[..], &signer.public_key()).unwrap();
}

/// The checkpoints of a ledger, in order.
fn checkpoints(frames: &[Frame]) -> Vec<SignedCheckpoint> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Checkpoint(cp) => Some(*cp),
            _ => None,
        })
        .collect()
}

/// Regression: docs/ledger.md promised that checkpoint times never decrease, but a
/// validly signed bundle whose checkpoint times went backwards verified (found by an
/// outside auditor).
#[test]
fn a_validly_signed_checkpoint_dated_before_its_predecessor_is_refused() {
    let (signer, mut frames) = random_ledger(21, 40, 3);
    let cps = checkpoints(&frames);
    assert!(cps.len() >= 3);
    let (before, target) = (cps[1], cps[2]);
    for f in &mut frames {
        if let Frame::Checkpoint(cp) = f
            && *cp == target
        {
            let mut c = cp.checkpoint;
            c.time = Timestamp::from_nanos(before.checkpoint.time.as_nanos() - 1);
            *cp = c.sign(&signer);
        }
    }
    let (bytes, _) = export(&signer, &frames);
    let failure = verify_bundle(&bytes[..], &signer.public_key()).unwrap_err();
    assert!(
        matches!(
            failure.reason,
            aura_ledger::verify::Reason::TimeGoesBack { .. }
        ),
        "{failure}"
    );
    assert!(
        matches!(failure.location, Location::Checkpoint { tree_size: Some(s), .. } if s == target.checkpoint.tree_size),
        "{failure}"
    );
    // Equal times are allowed: times never decrease, they may stand still.
    let (signer, mut frames) = random_ledger(21, 40, 3);
    for f in &mut frames {
        if let Frame::Checkpoint(cp) = f {
            let mut c = cp.checkpoint;
            c.time = Timestamp::from_secs(1_800_000_000);
            *cp = c.sign(&signer);
        }
    }
    let (bytes, _) = export(&signer, &frames);
    verify_bundle(&bytes[..], &signer.public_key()).unwrap();
}

/// A bundle cut back to an earlier checkpoint, its trailer rewritten, is a valid bundle
/// of the shorter ledger: nothing in it can tell. A tree head from elsewhere that is
/// larger (here the original's last checkpoint) catches it; one that disagrees at its
/// size catches a fork.
#[test]
fn a_bundle_cut_back_to_an_earlier_checkpoint_is_caught_only_by_a_newer_head() {
    use aura_ledger::bundle::{Expect, verify_bundle_with};
    use aura_ledger::verify::{KnownHead, Reason};
    let (signer, frames) = random_ledger(22, 60, 3);
    let cps = checkpoints(&frames);
    let last = *cps.last().unwrap();
    let cut_at = frames
        .iter()
        .position(|f| matches!(f, Frame::Checkpoint(cp) if *cp == cps[cps.len() / 2]))
        .unwrap();
    let (cut, _) = export(&signer, &frames[..=cut_at]);
    let summary = verify_bundle(&cut[..], &signer.public_key()).unwrap();
    assert!(summary.entries < last.checkpoint.tree_size);

    let head = |cp: &SignedCheckpoint| KnownHead {
        tree_size: cp.checkpoint.tree_size,
        root: cp.checkpoint.root,
        source: "the checkpoint in head.note".into(),
    };
    let expect = Expect {
        witnesses: Vec::new(),
        heads: vec![head(&last)],
    };
    let failure = verify_bundle_with(&cut[..], &signer.public_key(), &expect).unwrap_err();
    assert!(
        matches!(failure.reason, Reason::CutBack { size, entries, .. }
            if size == last.checkpoint.tree_size && entries == summary.entries),
        "{failure}"
    );
    assert!(failure.to_string().contains("cut back"), "{failure}");
    // The whole bundle agrees with the same head, and with an older one.
    let (whole, _) = export(&signer, &frames);
    let expect = Expect {
        witnesses: Vec::new(),
        heads: vec![head(&last), head(&cps[1])],
    };
    let s = verify_bundle_with(&whole[..], &signer.public_key(), &expect).unwrap();
    assert_eq!(s.known_heads.len(), 2);
    // A head of the right size with another root: the ledger forked.
    let mut forked = head(&cps[1]);
    forked.root.0[0] ^= 1;
    let expect = Expect {
        witnesses: Vec::new(),
        heads: vec![forked],
    };
    let failure = verify_bundle_with(&whole[..], &signer.public_key(), &expect).unwrap_err();
    assert!(
        matches!(&failure.reason, Reason::Forked(f) if f.size == cps[1].checkpoint.tree_size),
        "{failure}"
    );
}
