//! SHA-256 with domain tags.
//!
//! Every hash Aura computes is tagged with the purpose it serves, so that bytes hashed for
//! one purpose can never be passed off as bytes hashed for another (an entry as a
//! checkpoint, a checkpoint as a node id). The tags are listed once, in [`Domain`]; the
//! RFC 9162 Merkle tree keeps its own one-byte prefixes (0x00 leaf, 0x01 node), which
//! cannot collide with these tags because every tag starts with `aura/`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash: the "previous hash" of an agent's first entry.
    pub const ZERO: Hash = Hash([0; 32]);

    pub const LEN: usize = 32;

    /// Plain SHA-256 of `data`, without a domain tag. Use this only where an external
    /// format fixes the input (file digests, RFC 9162 tree nodes).
    pub fn sha256(data: &[u8]) -> Hash {
        Hash(Sha256::digest(data).into())
    }

    /// SHA-256 over `domain`'s tag followed by `data`.
    pub fn tagged(domain: Domain, data: &[u8]) -> Hash {
        let mut hasher = TaggedHasher::new(domain);
        hasher.update(data);
        hasher.finish()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first `n` hex digits, for human output.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

/// The text was not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a sha-256 hash: expected 64 hex digits")]
pub struct ParseHashError;

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| ParseHashError)?;
        Ok(Hash(out))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a hash is for. The tag of each domain is part of the canonical format
/// (docs/ledger.md); changing one is a breaking change of the format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// A ledger entry's canonical encoding.
    Entry,
    /// The message a node signs for a checkpoint.
    Checkpoint,
    /// A node id, derived from the node's public key.
    NodeId,
    /// A key id, derived from any public key.
    KeyId,
    /// Reserved for later crates: a mission's state hash.
    State,
    /// Reserved for later crates: a signed statement (credential, token, approval, license,
    /// receipt), the message its signer signs.
    Statement,
    /// A model package's digest: the canonical encoding of its manifest (aura-model).
    ModelPackage,
    /// The input or output of one inference request, as recorded in its receipt.
    InferenceIo,
    /// A policy request (aura-policy): the digest an approval names to answer an
    /// escalation of exactly that request.
    PolicyRequest,
}

impl Domain {
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Domain::Entry => b"aura/ledger/entry/v1\0",
            Domain::Checkpoint => b"aura/ledger/checkpoint/v1\0",
            Domain::NodeId => b"aura/identity/node-id/v1\0",
            Domain::KeyId => b"aura/identity/key-id/v1\0",
            Domain::State => b"aura/kernel/state/v1\0",
            Domain::Statement => b"aura/statement/v1\0",
            Domain::ModelPackage => b"aura/model/package/v1\0",
            Domain::InferenceIo => b"aura/inference/io/v1\0",
            Domain::PolicyRequest => b"aura/policy/request/v1\0",
        }
    }
}

/// An incremental SHA-256 that starts with a domain tag.
#[derive(Clone)]
pub struct TaggedHasher(Sha256);

impl fmt::Debug for TaggedHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaggedHasher")
    }
}

impl TaggedHasher {
    pub fn new(domain: Domain) -> Self {
        let mut h = Sha256::new();
        h.update(domain.tag());
        TaggedHasher(h)
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Hash {
        Hash(self.0.finalize().into())
    }
}

/// RFC 9162 leaf hash: SHA-256(0x00 || data).
pub fn merkle_leaf(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Hash(h.finalize().into())
}

/// RFC 9162 interior node hash: SHA-256(0x01 || left || right).
pub fn merkle_node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_distinct_and_never_look_like_merkle_prefixes() {
        let all = [
            Domain::Entry,
            Domain::Checkpoint,
            Domain::NodeId,
            Domain::KeyId,
            Domain::State,
            Domain::Statement,
            Domain::ModelPackage,
            Domain::InferenceIo,
            Domain::PolicyRequest,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(a.tag().starts_with(b"aura/"));
            assert!(a.tag().ends_with(b"\0"));
            for b in &all[i + 1..] {
                assert_ne!(a.tag(), b.tag());
            }
        }
    }

    #[test]
    fn sha256_matches_known_vector() {
        // FIPS 180-2 test vector "abc".
        assert_eq!(
            Hash::sha256(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn empty_tree_leaf_and_node_follow_rfc9162() {
        // The hash of an empty leaf is SHA-256(0x00).
        assert_eq!(
            merkle_leaf(b"").to_hex(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let h = Hash::tagged(Domain::Entry, b"x");
        assert_eq!(h.to_hex().parse::<Hash>(), Ok(h));
        assert!("zz".parse::<Hash>().is_err());
        assert!(h.to_hex()[..63].parse::<Hash>().is_err());
    }
}
