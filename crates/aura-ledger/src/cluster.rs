//! Cluster enrollment: how one log written by several nodes verifies with one key.
//!
//! A cluster's log has one trusted key, the **cluster key**. Each node that integrates
//! entries signs its checkpoints with its own node key, and that key is enrolled in the
//! log itself, by an entry of kind [`KIND`] whose body is an [`Enrollment`] signed by the
//! cluster key. A verifier that trusts the cluster key learns each node key from the log
//! as it reads it, so a cluster export checks with the cluster key alone; a checkpoint
//! signed by a key not enrolled before it is refused.
//!
//! Enrollment entries belong to the cluster's own stream, whose agent id is
//! [`cluster_agent`] (the cluster key's node id). The body's encoding, version 1:
//!
//! ```text
//! u8    version      = 1
//! [32]  cluster key  the key that signs this enrollment
//! [32]  node key     the node key enrolled
//! u64   time         nanoseconds since the Unix epoch
//! u16+  region       UTF-8, at most 64 bytes (empty: none)
//! [64]  signature    Ed25519 by the cluster key over TAG || everything above
//! ```
//!
//! `TAG` is `"aura/ledger/node-enrollment/v1\0"`.

use aura_core::encoding::{DecodeError, Decoder, Encoder};
use aura_core::keystore::Signer;
use aura_core::sign::BadSignature;
use aura_core::{AgentId, PublicKey, Signature, Timestamp};

/// The kind of an enrollment entry.
pub const KIND: &str = "node.joined";
/// The encoding's version.
pub const VERSION: u8 = 1;
/// The domain tag of the message the cluster key signs.
pub const TAG: &[u8] = b"aura/ledger/node-enrollment/v1\0";
/// The longest region label.
pub const MAX_REGION_LEN: usize = 64;

/// The agent id of a cluster's own stream (enrollments): the cluster key's node id.
pub fn cluster_agent(cluster_key: &PublicKey) -> AgentId {
    AgentId::from_bytes(*cluster_key.node_id().as_bytes())
}

/// A node key enrolled by the cluster key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub cluster_key: PublicKey,
    pub node_key: PublicKey,
    pub time: Timestamp,
    pub region: String,
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentError {
    #[error("malformed enrollment: {0}")]
    Malformed(#[from] DecodeError),
    #[error("the enrollment's key is not valid")]
    BadKey,
    #[error("the region label is over {MAX_REGION_LEN} bytes")]
    RegionTooLong,
    #[error("the region label is not UTF-8")]
    BadRegion,
    #[error("the enrollment is signed by another cluster's key")]
    OtherCluster,
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
}

impl Enrollment {
    fn unsigned(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(1 + 32 + 32 + 8 + 2 + self.region.len());
        e.u8(VERSION)
            .raw(&self.cluster_key.to_bytes())
            .raw(&self.node_key.to_bytes())
            .u64(self.time.as_nanos());
        // The region's length was checked by the caller (at most 64 bytes).
        let _ = e.bytes16("region", self.region.as_bytes());
        e.finish()
    }

    fn message(unsigned: &[u8]) -> Vec<u8> {
        let mut msg = Vec::with_capacity(TAG.len() + unsigned.len());
        msg.extend_from_slice(TAG);
        msg.extend_from_slice(unsigned);
        msg
    }

    /// Signs the enrollment with the cluster key and returns the entry body. `cluster`
    /// must hold [`Enrollment::cluster_key`].
    pub fn sign(&self, cluster: &Signer) -> Result<Vec<u8>, EnrollmentError> {
        if self.region.len() > MAX_REGION_LEN {
            return Err(EnrollmentError::RegionTooLong);
        }
        if cluster.public_key() != self.cluster_key {
            return Err(EnrollmentError::OtherCluster);
        }
        let mut body = self.unsigned();
        let sig = cluster.sign(&Self::message(&body));
        body.extend_from_slice(&sig.0);
        Ok(body)
    }

    /// Reads an enrollment body and checks that `cluster_key` signed it.
    pub fn open(body: &[u8], cluster_key: &PublicKey) -> Result<Enrollment, EnrollmentError> {
        let mut d = Decoder::new(body);
        let version = d.u8("enrollment version")?;
        if version != VERSION {
            return Err(EnrollmentError::Malformed(DecodeError {
                offset: 0,
                kind: aura_core::encoding::DecodeErrorKind::UnknownVersion {
                    field: "enrollment version",
                    value: version.into(),
                },
            }));
        }
        let cluster =
            PublicKey::from_bytes(&d.array("cluster key")?).map_err(|_| EnrollmentError::BadKey)?;
        let node =
            PublicKey::from_bytes(&d.array("node key")?).map_err(|_| EnrollmentError::BadKey)?;
        let time = Timestamp::from_nanos(d.u64("time")?);
        let region = d.bytes16("region")?;
        if region.len() > MAX_REGION_LEN {
            return Err(EnrollmentError::RegionTooLong);
        }
        let region = String::from_utf8(region.to_vec()).map_err(|_| EnrollmentError::BadRegion)?;
        let signed_len = d.position();
        let signature = Signature(d.array("signature")?);
        d.finish()?;
        if cluster != *cluster_key {
            return Err(EnrollmentError::OtherCluster);
        }
        cluster.verify(&Self::message(&body[..signed_len]), &signature)?;
        Ok(Enrollment {
            cluster_key: cluster,
            node_key: node,
            time,
            region,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aura_core::door::SeededEntropy;
    use aura_core::hash::Hash;

    /// The format's vector: keys from seeds 1 (cluster) and 2 (node), region "eu-west",
    /// time 7 s. Ed25519 is deterministic, so the body is fixed; a change to the encoding
    /// or the signing message changes its digest.
    #[test]
    fn enrollment_vector() {
        let cluster = Signer::ephemeral("cluster", &SeededEntropy::new(1)).unwrap();
        let node = Signer::ephemeral("node", &SeededEntropy::new(2)).unwrap();
        let body = Enrollment {
            cluster_key: cluster.public_key(),
            node_key: node.public_key(),
            time: Timestamp::from_secs(7),
            region: "eu-west".into(),
        }
        .sign(&cluster)
        .unwrap();
        assert_eq!(body.len(), 1 + 32 + 32 + 8 + 2 + 7 + 64);
        assert_eq!(
            Hash::sha256(&body).to_hex(),
            "a2a7016e20e4be24de0456e5fc34d39189312caafd10e60156300ff2ede0f159"
        );
    }

    #[test]
    fn enrollment_round_trips_and_tampering_is_refused() {
        let cluster = Signer::ephemeral("cluster", &SeededEntropy::new(1)).unwrap();
        let node = Signer::ephemeral("node", &SeededEntropy::new(2)).unwrap();
        let e = Enrollment {
            cluster_key: cluster.public_key(),
            node_key: node.public_key(),
            time: Timestamp::from_secs(7),
            region: "eu-west".into(),
        };
        let body = e.sign(&cluster).unwrap();
        assert_eq!(Enrollment::open(&body, &cluster.public_key()).unwrap(), e);
        for i in 0..body.len() {
            let mut b = body.clone();
            b[i] ^= 0x01;
            assert!(
                Enrollment::open(&b, &cluster.public_key()).is_err(),
                "a flip at byte {i} went unnoticed"
            );
        }
        assert_eq!(
            Enrollment::open(&body, &node.public_key()),
            Err(EnrollmentError::OtherCluster)
        );
        assert!(e.sign(&node).is_err(), "only the cluster key may sign");
    }
}
