//! Inclusion and consistency proofs over random trees: every (size, index) and every
//! (old, new) pair verifies, and altered proofs fail.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use aura_core::door::{Entropy as _, SeededEntropy};
use aura_core::hash::{Hash, merkle_leaf};
use aura_core::keystore::Signer;
use aura_core::{AgentId, Timestamp};
use aura_ledger::entry::{Entry, Kind, leaf_hash};
use aura_ledger::merkle::{
    self, consistency_ranges, fold_range, inclusion_ranges, perfect_decomposition,
};
use aura_ledger::proof::Proof;
use aura_ledger::{Checkpoint, ConsistencyProof, Frontier, InclusionProof};
use proptest::prelude::*;

/// Every perfect subtree hash of a tree, level by level, so any range hash costs
/// O(log n): enough to test millions of proofs quickly.
struct LevelTree {
    levels: Vec<Vec<Hash>>,
}

impl LevelTree {
    fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().unwrap().len() > 1 {
            let next: Vec<Hash> = levels
                .last()
                .unwrap()
                .chunks_exact(2)
                .map(|p| aura_core::hash::merkle_node(&p[0], &p[1]))
                .collect();
            if next.is_empty() {
                break;
            }
            levels.push(next);
        }
        LevelTree { levels }
    }

    fn range(&self, a: u64, b: u64) -> Hash {
        let parts: Vec<Hash> = perfect_decomposition(a, b)
            .iter()
            .map(|id| self.levels[id.level as usize][id.index as usize])
            .collect();
        fold_range(&parts)
    }

    fn root(&self, size: u64) -> Hash {
        self.range(0, size)
    }

    fn path(&self, ranges: Vec<(u64, u64)>) -> Vec<Hash> {
        ranges.into_iter().map(|(a, b)| self.range(a, b)).collect()
    }
}

fn random_leaves(seed: u64, n: usize) -> Vec<Hash> {
    let e = SeededEntropy::new(seed);
    (0..n).map(|_| merkle_leaf(&e.array::<32>())).collect()
}

const N: u64 = 2048;

/// One large random tree; a tree of any smaller size is a prefix of it, with the same
/// perfect subtrees, so every test case can share it.
fn big_tree() -> &'static (Vec<Hash>, LevelTree) {
    static TREE: std::sync::OnceLock<(Vec<Hash>, LevelTree)> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        let leaves = random_leaves(42, 4096);
        (leaves.clone(), LevelTree::new(leaves))
    })
}

#[test]
fn every_inclusion_proof_verifies_up_to_2048_leaves() {
    let leaves = random_leaves(1, N as usize);
    let tree = LevelTree::new(leaves.clone());
    for size in 1..=N {
        let root = tree.root(size);
        for index in 0..size {
            let path = tree.path(inclusion_ranges(index, size).unwrap());
            if let Err(e) =
                merkle::verify_inclusion(&leaves[index as usize], index, size, &path, &root)
            {
                panic!("size {size} index {index}: {e}");
            }
        }
    }
}

#[test]
fn every_consistency_proof_verifies_up_to_2048_leaves() {
    let tree = LevelTree::new(random_leaves(2, N as usize));
    let roots: Vec<Hash> = (0..=N).map(|s| tree.root(s)).collect();
    for new in 1..=N {
        for old in 0..=new {
            let path = tree.path(consistency_ranges(old, new).unwrap());
            if let Err(e) = merkle::verify_consistency(
                old,
                new,
                &roots[old as usize],
                &roots[new as usize],
                &path,
            ) {
                panic!("old {old} new {new}: {e}");
            }
        }
    }
}

#[test]
fn the_frontier_agrees_with_the_level_tree() {
    let leaves = random_leaves(3, 3000);
    let tree = LevelTree::new(leaves.clone());
    let mut f = Frontier::new();
    for (i, l) in leaves.iter().enumerate() {
        f.push(*l, |id, h| {
            assert_eq!(h, tree.levels[id.level as usize][id.index as usize]);
        });
        assert_eq!(f.root(), tree.root(i as u64 + 1));
    }
}

/// An alteration of a raw proof path.
#[derive(Debug, Clone)]
enum Alter {
    FlipBit { element: usize, bit: usize },
    Drop { element: usize },
    Append,
    Prepend,
    SwapAdjacent { element: usize },
    OtherIndex { delta: i64 },
    FlipRoot { bit: usize },
}

fn arb_alter() -> impl Strategy<Value = Alter> {
    prop_oneof![
        (any::<usize>(), 0..256usize).prop_map(|(element, bit)| Alter::FlipBit { element, bit }),
        any::<usize>().prop_map(|element| Alter::Drop { element }),
        Just(Alter::Append),
        Just(Alter::Prepend),
        any::<usize>().prop_map(|element| Alter::SwapAdjacent { element }),
        prop_oneof![Just(-1i64), Just(1), Just(7)].prop_map(|delta| Alter::OtherIndex { delta }),
        (0..256usize).prop_map(|bit| Alter::FlipRoot { bit }),
    ]
}

fn flip(h: &mut Hash, bit: usize) {
    h.0[bit / 8] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn altered_inclusion_proofs_fail(size in 1u64..=4096, index_seed in any::<u64>(), alter in arb_alter()) {
        let (leaves, tree) = big_tree();
        let index = index_seed % size;
        let mut root = tree.root(size);
        let mut path = tree.path(inclusion_ranges(index, size).unwrap());
        let mut leaf_index = index;
        match alter {
            Alter::FlipBit { element, bit } => {
                prop_assume!(!path.is_empty());
                let n = path.len();
                flip(&mut path[element % n], bit);
            }
            Alter::Drop { element } => {
                prop_assume!(!path.is_empty());
                let n = path.len();
                path.remove(element % n);
            }
            Alter::Append => path.push(merkle_leaf(b"extra")),
            Alter::Prepend => path.insert(0, merkle_leaf(b"extra")),
            Alter::SwapAdjacent { element } => {
                prop_assume!(path.len() >= 2);
                let i = element % (path.len() - 1);
                prop_assume!(path[i] != path[i + 1]);
                path.swap(i, i + 1);
            }
            Alter::OtherIndex { delta } => {
                let other = index as i64 + delta;
                prop_assume!(other >= 0 && (other as u64) < size && leaves[other as usize] != leaves[index as usize]);
                leaf_index = other as u64;
            }
            Alter::FlipRoot { bit } => flip(&mut root, bit),
        }
        prop_assert!(merkle::verify_inclusion(&leaves[index as usize], leaf_index, size, &path, &root).is_err());
    }

    #[test]
    fn altered_consistency_proofs_fail(new in 2u64..=4096, old_seed in any::<u64>(), alter in arb_alter()) {
        let (_, tree) = big_tree();
        let old = 1 + old_seed % (new - 1);
        let old_root = tree.root(old);
        let mut new_root = tree.root(new);
        let mut path = tree.path(consistency_ranges(old, new).unwrap());
        match alter {
            Alter::FlipBit { element, bit } => {
                let n = path.len();
                flip(&mut path[element % n], bit);
            }
            Alter::Drop { element } => {
                let n = path.len();
                path.remove(element % n);
            }
            Alter::Append => path.push(merkle_leaf(b"extra")),
            Alter::Prepend => path.insert(0, merkle_leaf(b"extra")),
            Alter::SwapAdjacent { element } => {
                prop_assume!(path.len() >= 2);
                let i = element % (path.len() - 1);
                prop_assume!(path[i] != path[i + 1]);
                path.swap(i, i + 1);
            }
            Alter::OtherIndex { .. } => {
                // A different old size, same proof: must not verify against the old root.
                let other = if old > 1 { old - 1 } else { old + 1 };
                prop_assume!(other < new && tree.root(other) != old_root);
                prop_assert!(merkle::verify_consistency(other, new, &old_root, &new_root, &path).is_err());
                return Ok(());
            }
            Alter::FlipRoot { bit } => flip(&mut new_root, bit),
        }
        prop_assert!(merkle::verify_consistency(old, new, &old_root, &new_root, &path).is_err());
    }
}

fn signed_tree(n: u64) -> (Signer, Vec<Vec<u8>>, LevelTree) {
    let signer = Signer::ephemeral("node", &SeededEntropy::new(n)).unwrap();
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
            body: format!("entry {i}").into_bytes(),
        };
        let bytes = e.encode().unwrap();
        prev = Entry::hash_encoded(&bytes);
        leaves.push(leaf_hash(&prev));
        encoded.push(bytes);
    }
    (signer, encoded, LevelTree::new(leaves))
}

fn checkpoint(signer: &Signer, tree: &LevelTree, size: u64) -> aura_ledger::SignedCheckpoint {
    Checkpoint {
        node: signer.public_key().node_id(),
        tree_size: size,
        root: tree.root(size),
        time: Timestamp::from_secs(size),
    }
    .sign(signer)
}

/// Any single-byte change to an encoded proof document is refused, by the decoder or by
/// verification.
#[test]
fn every_byte_of_a_proof_document_is_protected() {
    let (signer, encoded, tree) = signed_tree(37);
    let key = signer.public_key();
    for (index, size) in [(0u64, 1u64), (5, 37), (36, 37), (16, 17)] {
        let proof = InclusionProof {
            entry: encoded[index as usize].clone(),
            path: tree.path(inclusion_ranges(index, size).unwrap()),
            checkpoint: checkpoint(&signer, &tree, size),
        };
        let verified = proof.verify(&key).unwrap();
        assert_eq!(verified.entry.index, index);
        let bytes = Proof::Inclusion(proof).encode();
        assert_all_flips_refused(&bytes, &key);
    }
    for (old, new) in [(1u64, 2u64), (4, 37), (13, 37), (37, 37)] {
        let proof = ConsistencyProof {
            old: checkpoint(&signer, &tree, old),
            new: checkpoint(&signer, &tree, new),
            path: tree.path(consistency_ranges(old, new).unwrap()),
        };
        proof.verify(&key).unwrap();
        assert_all_flips_refused(&Proof::Consistency(proof).encode(), &key);
    }
}

fn assert_all_flips_refused(bytes: &[u8], key: &aura_core::PublicKey) {
    for i in 0..bytes.len() {
        for delta in [0x01u8, 0x80] {
            let mut b = bytes.to_vec();
            b[i] ^= delta;
            let ok = match Proof::decode(&b) {
                Ok(Proof::Inclusion(p)) => p.verify(key).is_ok(),
                Ok(Proof::Consistency(p)) => p.verify(key).is_ok(),
                Err(_) => false,
            };
            assert!(!ok, "flipping byte {i} by {delta:#x} went unnoticed");
        }
    }
    // Truncation and extension too.
    for cut in 0..bytes.len() {
        assert!(Proof::decode(&bytes[..cut]).is_err());
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(Proof::decode(&longer).is_err());
}

#[test]
fn proofs_signed_by_another_key_are_refused() {
    let (signer, encoded, tree) = signed_tree(8);
    let other = Signer::ephemeral("node", &SeededEntropy::new(999)).unwrap();
    let proof = InclusionProof {
        entry: encoded[3].clone(),
        path: tree.path(inclusion_ranges(3, 8).unwrap()),
        checkpoint: checkpoint(&signer, &tree, 8),
    };
    assert!(proof.verify(&other.public_key()).is_err());
}
