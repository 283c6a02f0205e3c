//! Proof documents: self-contained, checkable offline with only the node's public key.
//!
//! An inclusion proof carries the entry itself, the audit path and the signed checkpoint
//! it proves membership in; a consistency proof carries two signed checkpoints and the
//! path that shows the older tree is a prefix of the newer one.
//!
//! ```text
//! inclusion:   u8 version = 1, u8 type = 1,
//!              u32+ entry encoding, u8 n, n × [32] path, signed checkpoint
//! consistency: u8 version = 1, u8 type = 2,
//!              signed checkpoint (old), signed checkpoint (new), u8 n, n × [32] path
//! ```

use aura_core::PublicKey;
use aura_core::encoding::{DecodeError, DecodeErrorKind, Decoder, Encoder};
use aura_core::hash::Hash;

use crate::checkpoint::{CheckpointError, SignedCheckpoint};
use crate::entry::{self, Entry};
use crate::merkle::{self, ProofError};

pub const VERSION: u8 = 1;
const TYPE_INCLUSION: u8 = 1;
const TYPE_CONSISTENCY: u8 = 2;

/// A tree of 2^64 leaves needs at most 64 hashes.
pub const MAX_PATH_LEN: usize = 64;

/// Proof that an entry is in the tree a signed checkpoint commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The entry's canonical encoding (its index is inside).
    pub entry: Vec<u8>,
    pub path: Vec<Hash>,
    pub checkpoint: SignedCheckpoint,
}

/// Proof that one signed tree is a prefix of another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old: SignedCheckpoint,
    pub new: SignedCheckpoint,
    pub path: Vec<Hash>,
}

/// Either kind of proof, as read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    Inclusion(InclusionProof),
    Consistency(ConsistencyProof),
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("the proof's entry is malformed: {0}")]
    Entry(DecodeError),
    #[error("the checkpoint is not valid: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the audit path does not lead to the signed root: {0}")]
    Path(#[from] ProofError),
    #[error("the two checkpoints are from different nodes")]
    DifferentNodes,
}

/// What a verified inclusion proof establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedInclusion {
    pub entry: Entry,
    pub entry_hash: Hash,
    pub checkpoint: SignedCheckpoint,
}

fn write_path(e: &mut Encoder, path: &[Hash]) {
    e.u8(path.len() as u8);
    for h in path {
        e.hash(h);
    }
}

fn read_path(d: &mut Decoder<'_>) -> Result<Vec<Hash>, DecodeError> {
    let n = d.u8("path length")? as usize;
    if n > MAX_PATH_LEN {
        return Err(d.invalid("path length", "is over 64"));
    }
    (0..n).map(|_| d.hash("path")).collect()
}

impl InclusionProof {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(self.entry.len() + 200 + 32 * self.path.len());
        e.u8(VERSION).u8(TYPE_INCLUSION);
        e.u32(self.entry.len() as u32).raw(&self.entry);
        write_path(&mut e, &self.path);
        e.raw(&self.checkpoint.encode());
        e.finish()
    }

    /// Checks the checkpoint's signature under `key`, then the path from the entry to the
    /// signed root.
    pub fn verify(&self, key: &PublicKey) -> Result<VerifiedInclusion, CheckError> {
        self.checkpoint.verify(key)?;
        let entry = Entry::decode(&self.entry).map_err(CheckError::Entry)?;
        let entry_hash = Entry::hash_encoded(&self.entry);
        let cp = &self.checkpoint.checkpoint;
        merkle::verify_inclusion(
            &entry::leaf_hash(&entry_hash),
            entry.index,
            cp.tree_size,
            &self.path,
            &cp.root,
        )?;
        Ok(VerifiedInclusion {
            entry,
            entry_hash,
            checkpoint: self.checkpoint,
        })
    }
}

impl ConsistencyProof {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.u8(VERSION).u8(TYPE_CONSISTENCY);
        e.raw(&self.old.encode()).raw(&self.new.encode());
        write_path(&mut e, &self.path);
        e.finish()
    }

    /// Checks both signatures under `key`, then the path between the two roots.
    pub fn verify(&self, key: &PublicKey) -> Result<(), CheckError> {
        self.old.verify(key)?;
        self.new.verify(key)?;
        if self.old.checkpoint.node != self.new.checkpoint.node {
            return Err(CheckError::DifferentNodes);
        }
        merkle::verify_consistency(
            self.old.checkpoint.tree_size,
            self.new.checkpoint.tree_size,
            &self.old.checkpoint.root,
            &self.new.checkpoint.root,
            &self.path,
        )?;
        Ok(())
    }
}

impl Proof {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Proof::Inclusion(p) => p.encode(),
            Proof::Consistency(p) => p.encode(),
        }
    }

    /// Decodes a proof document, refusing anything but exactly one well-formed proof.
    pub fn decode(bytes: &[u8]) -> Result<Proof, DecodeError> {
        let mut d = Decoder::new(bytes);
        let version = d.u8("version")?;
        if version != VERSION {
            return Err(DecodeError {
                offset: 0,
                kind: DecodeErrorKind::UnknownVersion {
                    field: "version",
                    value: version.into(),
                },
            });
        }
        let proof = match d.u8("type")? {
            TYPE_INCLUSION => {
                let entry = d.bytes32("entry", entry::MAX_BODY_LEN + 512)?.to_vec();
                let path = read_path(&mut d)?;
                let checkpoint = SignedCheckpoint::decode_from(&mut d)?;
                Proof::Inclusion(InclusionProof {
                    entry,
                    path,
                    checkpoint,
                })
            }
            TYPE_CONSISTENCY => {
                let old = SignedCheckpoint::decode_from(&mut d)?;
                let new = SignedCheckpoint::decode_from(&mut d)?;
                let path = read_path(&mut d)?;
                Proof::Consistency(ConsistencyProof { old, new, path })
            }
            other => {
                return Err(DecodeError {
                    offset: 1,
                    kind: DecodeErrorKind::UnknownVersion {
                        field: "type",
                        value: other.into(),
                    },
                });
            }
        };
        d.finish()?;
        Ok(proof)
    }
}
