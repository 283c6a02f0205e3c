//! The RFC 9162 Merkle tree (section 2.1) over all ledger entries in commit order.
//!
//! Leaves are `SHA-256(0x00 || entry hash)` and interior nodes
//! `SHA-256(0x01 || left || right)`. The tree over `n` leaves splits at the largest power
//! of two below `n`, so every proof path is a list of hashes of *ranges* of leaves, and
//! each such range is a run of perfect, aligned subtrees. This module works in those
//! terms:
//!
//! - [`Frontier`] holds the perfect subtrees that make up the tree so far (one per set
//!   bit of its size) and computes roots as leaves are appended;
//! - [`inclusion_ranges`] and [`consistency_ranges`] say which ranges a proof needs;
//! - [`perfect_decomposition`] splits a range into perfect subtrees, which a store can
//!   look up or compute, and [`fold_range`] combines their hashes;
//! - [`verify_inclusion`] and [`verify_consistency`] are the RFC's algorithms.

use aura_core::encoding::{DecodeError, Decoder, Encoder};
use aura_core::hash::{Hash, merkle_node};

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Hash::sha256(b"")
}

/// Coordinates of a perfect subtree: it covers leaves `[index << level, (index+1) << level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn start(&self) -> u64 {
        self.index << self.level
    }

    pub fn end(&self) -> u64 {
        (self.index + 1) << self.level
    }
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {old} is larger than {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the recomputed root does not match")]
    RootMismatch,
}

/// The perfect subtrees making up the tree so far, largest (leftmost) first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Rebuilds a frontier from the hashes of the perfect subtrees of `size`, largest
    /// first (as [`Frontier::node_ids`] lists them).
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier { size, nodes })
    }

    /// The perfect subtrees that make up a tree of `size` leaves, largest first.
    pub fn node_ids(size: u64) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1 << level) != 0 {
                out.push(NodeId {
                    level,
                    index: start >> level,
                });
                start += 1 << level;
            }
        }
        out
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf hash. `completed` is told of every perfect subtree this completes,
    /// level 1 and up, lowest first.
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(NodeId, Hash)) {
        let mut carry = leaf;
        let mut level = 0u8;
        while self.size & (1 << level) != 0 {
            // One node per set bit of `size`, and this bit is set.
            let Some(left) = self.nodes.pop() else { break };
            carry = merkle_node(&left, &carry);
            level += 1;
            completed(
                NodeId {
                    level,
                    index: ((self.size + 1) >> level) - 1,
                },
                carry,
            );
        }
        self.nodes.push(carry);
        self.size += 1;
    }

    /// The tree head (root hash) over every leaf pushed so far.
    pub fn root(&self) -> Hash {
        match self.nodes.split_last() {
            None => empty_root(),
            Some((last, rest)) => rest.iter().rev().fold(*last, |acc, n| merkle_node(n, &acc)),
        }
    }
}

/// The root over a list of leaf hashes, by the RFC's recursive definition. For tests and
/// small trees.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            merkle_node(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The ranges of leaves whose hashes form the inclusion proof of `index` in a tree of
/// `size` leaves (RFC 9162 2.1.3.1), in proof order (from the leaf upwards).
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    let (mut lo, mut hi, m) = (0u64, size, index);
    // Walk down from the root, remembering the sibling range at each split; the proof
    // lists them from the bottom up.
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if m < lo + k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
        }
    }
    out.reverse();
    Ok(out)
}

/// The ranges whose hashes form the consistency proof from `old` to `new` leaves
/// (RFC 9162 2.1.4.1), in proof order. Empty when `old` is 0 or equals `new`.
pub fn consistency_ranges(old: u64, new: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new, old, true);
    loop {
        if m == hi - lo {
            if !whole {
                out.push((lo, hi));
            }
            break;
        }
        let k = split_point(hi - lo);
        if m <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// Splits the range `[start, end)` into perfect aligned subtrees, largest first, as the
/// RFC's recursion does. Every range a proof asks for decomposes this way.
pub fn perfect_decomposition(start: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let remaining = end - pos;
        // The largest power of two that fits in what remains and is aligned at `pos`.
        let mut level = 63 - remaining.leading_zeros() as u8;
        while level > 0 && pos & ((1u64 << level) - 1) != 0 {
            level -= 1;
        }
        out.push(NodeId {
            level,
            index: pos >> level,
        });
        pos += 1 << level;
    }
    out
}

/// Combines the hashes of a range's perfect subtrees (largest first) into the range's
/// hash.
pub fn fold_range(parts: &[Hash]) -> Hash {
    match parts.split_last() {
        None => empty_root(),
        Some((last, rest)) => rest.iter().rev().fold(*last, |acc, n| merkle_node(n, &acc)),
    }
}

/// Reduces the hashes of `2^k` adjacent, aligned nodes of one level to the hash of their
/// common ancestor `k` levels up. Returns `None` if the count is not a power of two.
pub fn reduce_perfect(nodes: &[Hash]) -> Option<Hash> {
    if nodes.is_empty() || !nodes.len().is_power_of_two() {
        return None;
    }
    let mut level: Vec<Hash> = nodes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|p| merkle_node(&p[0], &p[1]))
            .collect();
    }
    Some(level[0])
}

/// RFC 9162 2.1.3.2: does `path` prove `leaf` at `index` in the tree of `size` with `root`?
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fn_, mut sn, mut r) = (index, size - 1, *leaf);
    for p in path {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = merkle_node(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = merkle_node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 2.1.4.2: does `path` prove that the tree of `old` leaves with `old_root` is a
/// prefix of the tree of `new` leaves with `new_root`?
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if old == new {
        if !path.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old == 0 {
        // Every tree extends the empty tree; the proof is empty.
        if !path.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if *old_root == empty_root() {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if path.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = path.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = merkle_node(c, &fr);
            sr = merkle_node(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = merkle_node(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Encodes a frontier (size, then its hashes) for storage.
pub fn encode_frontier(f: &Frontier) -> Vec<u8> {
    let mut e = Encoder::with_capacity(9 + 32 * f.nodes.len());
    e.u64(f.size).u8(f.nodes.len() as u8);
    for n in &f.nodes {
        e.hash(n);
    }
    e.finish()
}

pub fn decode_frontier(bytes: &[u8]) -> Result<Frontier, DecodeError> {
    let mut d = Decoder::new(bytes);
    let size = d.u64("size")?;
    let count = d.u8("count")? as usize;
    if count != size.count_ones() as usize {
        return Err(d.invalid("count", "does not match the size"));
    }
    let mut nodes = Vec::with_capacity(count);
    for _ in 0..count {
        nodes.push(d.hash("node")?);
    }
    d.finish()?;
    Ok(Frontier { size, nodes })
}

/// A whole tree in memory: leaf hashes only, subtree hashes computed on demand. Used by
/// tests and by tools that already hold every leaf.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    pub fn new(leaves: Vec<Hash>) -> Self {
        MemoryTree { leaves }
    }

    pub fn len(&self) -> u64 {
        self.leaves.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    pub fn push(&mut self, leaf: Hash) {
        self.leaves.push(leaf);
    }

    pub fn range_hash(&self, start: u64, end: u64) -> Hash {
        root_of(&self.leaves[start as usize..end as usize])
    }

    pub fn root(&self, size: u64) -> Hash {
        self.range_hash(0, size)
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        Ok(inclusion_ranges(index, size)?
            .into_iter()
            .map(|(a, b)| self.range_hash(a, b))
            .collect())
    }

    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        Ok(consistency_ranges(old, new)?
            .into_iter()
            .map(|(a, b)| self.range_hash(a, b))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aura_core::hash::merkle_leaf;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| merkle_leaf(&i.to_be_bytes())).collect()
    }

    #[test]
    fn frontier_root_matches_recursive_definition() {
        let ls = leaves(300);
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        for (i, l) in ls.iter().enumerate() {
            f.push(*l, |_, _| {});
            assert_eq!(f.root(), root_of(&ls[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn frontier_reports_completed_subtrees() {
        let ls = leaves(256);
        let mut f = Frontier::new();
        let mut seen = Vec::new();
        for l in &ls {
            f.push(*l, |id, h| seen.push((id, h)));
        }
        // 128 + 64 + ... + 1 interior nodes complete in a perfect tree of 256 leaves.
        assert_eq!(seen.len(), 255);
        for (id, h) in seen {
            assert_eq!(
                h,
                root_of(&ls[id.start() as usize..id.end() as usize]),
                "{id:?}"
            );
        }
    }

    #[test]
    fn decomposition_covers_ranges_exactly() {
        for (a, b) in [
            (0u64, 1u64),
            (0, 7),
            (8, 13),
            (4, 6),
            (0, 1000),
            (512, 1000),
        ] {
            let parts = perfect_decomposition(a, b);
            let mut pos = a;
            for p in &parts {
                assert_eq!(p.start(), pos);
                pos = p.end();
            }
            assert_eq!(pos, b);
        }
    }

    #[test]
    fn range_hash_from_decomposition_matches_recursion() {
        let ls = leaves(1000);
        let t = MemoryTree::new(ls);
        for size in [1u64, 2, 3, 5, 8, 13, 100, 999, 1000] {
            for index in [0, size / 2, size - 1] {
                for (a, b) in inclusion_ranges(index, size).unwrap() {
                    let parts: Vec<Hash> = perfect_decomposition(a, b)
                        .iter()
                        .map(|id| t.range_hash(id.start(), id.end()))
                        .collect();
                    assert_eq!(fold_range(&parts), t.range_hash(a, b));
                }
            }
        }
    }

    #[test]
    fn reduce_perfect_needs_a_power_of_two() {
        let ls = leaves(8);
        assert_eq!(reduce_perfect(&ls), Some(root_of(&ls)));
        assert_eq!(reduce_perfect(&ls[..3]), None);
        assert_eq!(reduce_perfect(&[]), None);
    }

    #[test]
    fn frontier_encoding_round_trips() {
        let mut f = Frontier::new();
        for l in leaves(37) {
            f.push(l, |_, _| {});
        }
        assert_eq!(decode_frontier(&encode_frontier(&f)).unwrap(), f);
        assert!(decode_frontier(&encode_frontier(&f)[..40]).is_err());
    }
}
