//! Checkpoints: the tree head a node signs at the end of every commit batch.
//!
//! ```text
//! u8    version    = 1
//! [16]  node       the node id (derived from the signing key)
//! u64   tree_size  number of entries covered
//! [32]  root       RFC 9162 root over those entries
//! u64   time       nanoseconds since the Unix epoch
//! ```
//!
//! The node signs the `Checkpoint` domain tag followed by this encoding with Ed25519. A
//! signed checkpoint is the encoding followed by the 64-byte signature.

use aura_core::encoding::{DecodeError, DecodeErrorKind, Decoder, Encoder};
use aura_core::hash::{Domain, Hash};
use aura_core::keystore::Signer;
use aura_core::sign::BadSignature;
use aura_core::{NodeId, PublicKey, Signature, Timestamp};
use serde::{Deserialize, Serialize};

pub const VERSION: u8 = 1;
pub const ENCODED_LEN: usize = 1 + 16 + 8 + 32 + 8;
pub const SIGNED_LEN: usize = ENCODED_LEN + 64;

/// An unsigned tree head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub node: NodeId,
    pub tree_size: u64,
    pub root: Hash,
    pub time: Timestamp,
}

/// A checkpoint with the node's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    pub signature: Signature,
}

/// Why a signed checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint is from node {found}, expected {expected}")]
    WrongNode { expected: NodeId, found: NodeId },
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut e = Encoder::with_capacity(ENCODED_LEN);
        e.u8(VERSION)
            .raw(self.node.as_bytes())
            .u64(self.tree_size)
            .hash(&self.root)
            .u64(self.time.as_nanos());
        let mut out = [0u8; ENCODED_LEN];
        out.copy_from_slice(e.as_slice());
        out
    }

    pub(crate) fn decode_from(d: &mut Decoder<'_>) -> Result<Checkpoint, DecodeError> {
        let at = d.position();
        let version = d.u8("checkpoint version")?;
        if version != VERSION {
            return Err(DecodeError {
                offset: at,
                kind: DecodeErrorKind::UnknownVersion {
                    field: "checkpoint version",
                    value: version.into(),
                },
            });
        }
        Ok(Checkpoint {
            node: NodeId::from_bytes(d.array("node")?),
            tree_size: d.u64("tree_size")?,
            root: d.hash("root")?,
            time: Timestamp::from_nanos(d.u64("time")?),
        })
    }

    /// The bytes the node signs.
    pub fn signing_message(&self) -> Vec<u8> {
        let tag = Domain::Checkpoint.tag();
        let mut msg = Vec::with_capacity(tag.len() + ENCODED_LEN);
        msg.extend_from_slice(tag);
        msg.extend_from_slice(&self.encode());
        msg
    }

    pub fn sign(self, signer: &Signer) -> SignedCheckpoint {
        SignedCheckpoint {
            signature: signer.sign(&self.signing_message()),
            checkpoint: self,
        }
    }
}

impl SignedCheckpoint {
    pub fn encode(&self) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        out[..ENCODED_LEN].copy_from_slice(&self.checkpoint.encode());
        out[ENCODED_LEN..].copy_from_slice(&self.signature.0);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SignedCheckpoint, DecodeError> {
        let mut d = Decoder::new(bytes);
        let cp = SignedCheckpoint::decode_from(&mut d)?;
        d.finish()?;
        Ok(cp)
    }

    pub(crate) fn decode_from(d: &mut Decoder<'_>) -> Result<SignedCheckpoint, DecodeError> {
        let checkpoint = Checkpoint::decode_from(d)?;
        let signature = Signature(d.array("signature")?);
        Ok(SignedCheckpoint {
            checkpoint,
            signature,
        })
    }

    /// Checks that `key` signed this checkpoint and that it names `key`'s node.
    pub fn verify(&self, key: &PublicKey) -> Result<(), CheckpointError> {
        let expected = key.node_id();
        if self.checkpoint.node != expected {
            return Err(CheckpointError::WrongNode {
                expected,
                found: self.checkpoint.node,
            });
        }
        key.verify(&self.checkpoint.signing_message(), &self.signature)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aura_core::door::SeededEntropy;

    #[test]
    fn sign_verify_and_tamper() {
        let signer = Signer::ephemeral("node", &SeededEntropy::new(9)).unwrap();
        let key = signer.public_key();
        let cp = Checkpoint {
            node: key.node_id(),
            tree_size: 10,
            root: Hash::sha256(b"r"),
            time: Timestamp::from_secs(100),
        }
        .sign(&signer);
        cp.verify(&key).unwrap();
        let bytes = cp.encode();
        assert_eq!(SignedCheckpoint::decode(&bytes).unwrap(), cp);
        for i in 0..SIGNED_LEN {
            let mut b = bytes;
            b[i] ^= 0x40;
            if let Ok(c) = SignedCheckpoint::decode(&b) {
                assert!(c.verify(&key).is_err(), "flip at byte {i} went unnoticed");
            }
        }
        let other = Signer::ephemeral("node", &SeededEntropy::new(10)).unwrap();
        assert!(matches!(
            cp.verify(&other.public_key()),
            Err(CheckpointError::WrongNode { .. })
        ));
    }
}
