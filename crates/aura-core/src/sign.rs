//! Ed25519 public keys and signatures as boundary types.
//!
//! Verification is here; signing is only possible through a [`crate::keystore::Signer`],
//! which holds the secret and never hands it out.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{Domain, Hash};
use crate::id::NodeId;

/// An Ed25519 public key (32 bytes), shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

/// A byte string is not a valid Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid ed25519 public key (expected 64 hex digits of a curve point)")]
pub struct InvalidPublicKey;

/// A signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify under key {key}")]
pub struct BadSignature {
    pub key: String,
}

impl PublicKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, InvalidPublicKey> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| InvalidPublicKey)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    pub(crate) fn from_dalek(key: VerifyingKey) -> Self {
        PublicKey(key)
    }

    /// Verifies `signature` over `message`, with the strict checks of RFC 8032 (no
    /// malleable or small-order signatures).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), BadSignature> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| BadSignature {
                key: self.fingerprint(),
            })
    }

    /// A short, stable id for this key: the first 16 bytes of a tagged hash, in hex.
    pub fn key_id(&self) -> String {
        hex::encode(&Hash::tagged(Domain::KeyId, self.0.as_bytes()).0[..16])
    }

    /// The first 16 hex digits of the key id, for people.
    pub fn fingerprint(&self) -> String {
        self.key_id()[..16].to_owned()
    }

    /// The node id of a node whose key this is.
    pub fn node_id(&self) -> NodeId {
        let h = Hash::tagged(Domain::NodeId, self.0.as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.0[..16]);
        NodeId(id)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl FromStr for PublicKey {
    type Err = InvalidPublicKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| InvalidPublicKey)?;
        PublicKey::from_bytes(&bytes)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An Ed25519 signature (64 bytes), shown as 128 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub const LEN: usize = 64;

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", &self.to_hex()[..16])
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ed25519 signature (expected 128 hex digits)")]
pub struct InvalidSignature;

impl FromStr for Signature {
    type Err = InvalidSignature;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| InvalidSignature)?;
        Ok(Signature(bytes))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
