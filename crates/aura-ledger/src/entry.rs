//! Ledger entries and their canonical encoding (format version 1).
//!
//! ```text
//! u8       version      = 1
//! u64      index        position in the whole ledger, from 0
//! [16]     agent        the agent, or all zeros for the node's own stream
//! u64      seq          position in the agent's stream, from 1, without gaps
//! [32]     prev         hash of the agent's previous entry; zeros when seq = 1
//! u8+      kind         1-64 bytes of [a-z0-9._-], after a u8 length
//! u64      recorded_at  nanoseconds since the Unix epoch
//! u32+     body         0-16 MiB of opaque bytes, after a u32 length
//! ```
//!
//! The entry hash is SHA-256 over the `Entry` domain tag and this encoding. The index is
//! inside the hashed bytes so that an entry cannot be moved to another position without
//! changing its hash.
//!
//! A **pruned** entry is one whose body was removed to save space while its hash is kept
//! (docs/ledger.md, "Pruned entries"). What remains is a [`PrunedEntry`], written in its
//! own encoding that differs from an entry's in the first byte, so that neither can be
//! read as the other:
//!
//! ```text
//! u8       version      = 0x81 (PRUNED_VERSION: the entry version with the top bit set)
//! u64 index, [16] agent, u64 seq, [32] prev, u8+ kind, u64 recorded_at   as in the entry
//! u32      body_len     how long the removed body was
//! ```
//!
//! The stub cannot be hashed back to the entry hash (the hash covers the body), so the hash
//! travels beside it and is proven by what commits to it: the agent's next entry names it
//! as `prev`, and its Merkle leaf is under every signed root.

use std::fmt;
use std::str::FromStr;

use aura_core::encoding::{DecodeError, DecodeErrorKind, Decoder, Encoder};
use aura_core::hash::{Domain, Hash, TaggedHasher};
use aura_core::{AgentId, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const VERSION: u8 = 1;

/// The first byte of a pruned entry's stub encoding.
pub const PRUNED_VERSION: u8 = 0x80 | VERSION;

/// The largest body an entry may carry. Bulky payloads (file contents, model outputs)
/// belong in bodies, but a ledger entry is not a blob store.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;

pub const MAX_KIND_LEN: usize = 64;

/// Bytes of an encoding that are not the kind or the body.
pub const FIXED_LEN: usize = 1 + 8 + 16 + 8 + 32 + 1 + 8 + 4;

/// What an entry records, like `mission.submitted` or `note`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid entry kind `{0}`: use 1-64 of a-z, 0-9, '.', '_' and '-'")]
pub struct InvalidKind(pub String);

impl Kind {
    pub fn new(kind: &str) -> Result<Self, InvalidKind> {
        if is_valid_kind(kind.as_bytes()) {
            Ok(Kind(kind.to_owned()))
        } else {
            Err(InvalidKind(kind.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_valid_kind(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= MAX_KIND_LEN
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c))
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kind({})", self.0)
    }
}

impl FromStr for Kind {
    type Err = InvalidKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::new(s)
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Kind::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub agent: AgentId,
    pub seq: u64,
    pub prev: Hash,
    pub kind: Kind,
    pub recorded_at: Timestamp,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry body is {0} bytes, more than the {MAX_BODY_LEN} allowed")]
pub struct BodyTooLarge(pub usize);

impl Entry {
    /// The canonical encoding. Fails only for a body over [`MAX_BODY_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, BodyTooLarge> {
        if self.body.len() > MAX_BODY_LEN {
            return Err(BodyTooLarge(self.body.len()));
        }
        let mut e = Encoder::with_capacity(FIXED_LEN + self.kind.0.len() + self.body.len());
        e.u8(VERSION)
            .u64(self.index)
            .raw(self.agent.as_bytes())
            .u64(self.seq)
            .hash(&self.prev);
        // Both lengths were checked above and by `Kind::new`.
        e.u8(self.kind.0.len() as u8).raw(self.kind.0.as_bytes());
        e.u64(self.recorded_at.as_nanos());
        e.u32(self.body.len() as u32).raw(&self.body);
        Ok(e.finish())
    }

    /// Decodes one canonical encoding, refusing anything that is not exactly one valid
    /// entry.
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
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
        let (index, agent, seq, prev, kind, recorded_at) = decode_header(&mut d)?;
        let body = d.bytes32("body", MAX_BODY_LEN)?.to_vec();
        d.finish()?;
        Ok(Entry {
            index,
            agent,
            seq,
            prev,
            kind,
            recorded_at,
            body,
        })
    }

    /// The entry hash of a canonical encoding.
    pub fn hash_encoded(encoded: &[u8]) -> Hash {
        let mut h = TaggedHasher::new(Domain::Entry);
        h.update(encoded);
        h.finish()
    }

    /// The entry hash. Fails only for a body over [`MAX_BODY_LEN`].
    pub fn hash(&self) -> Result<Hash, BodyTooLarge> {
        Ok(Entry::hash_encoded(&self.encode()?))
    }
}

/// What is left of an entry after its body was pruned: every field but the body, and the
/// body's length. The entry hash is kept beside it by whoever holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedEntry {
    pub index: u64,
    pub agent: AgentId,
    pub seq: u64,
    pub prev: Hash,
    pub kind: Kind,
    pub recorded_at: Timestamp,
    /// The length of the body that was removed.
    pub body_len: u32,
}

/// Bytes of a stub encoding that are not the kind.
pub const PRUNED_FIXED_LEN: usize = FIXED_LEN;

impl Entry {
    /// The stub that stays when this entry's body is pruned.
    pub fn pruned(&self) -> Result<PrunedEntry, BodyTooLarge> {
        if self.body.len() > MAX_BODY_LEN {
            return Err(BodyTooLarge(self.body.len()));
        }
        Ok(PrunedEntry {
            index: self.index,
            agent: self.agent,
            seq: self.seq,
            prev: self.prev,
            kind: self.kind.clone(),
            recorded_at: self.recorded_at,
            // Checked just above.
            body_len: self.body.len() as u32,
        })
    }
}

impl PrunedEntry {
    /// The stub encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::with_capacity(PRUNED_FIXED_LEN + self.kind.0.len());
        e.u8(PRUNED_VERSION)
            .u64(self.index)
            .raw(self.agent.as_bytes())
            .u64(self.seq)
            .hash(&self.prev);
        // The kind's length was checked by `Kind::new`.
        e.u8(self.kind.0.len() as u8).raw(self.kind.0.as_bytes());
        e.u64(self.recorded_at.as_nanos()).u32(self.body_len);
        e.finish()
    }

    /// Decodes one stub encoding, refusing anything else (an entry's encoding included).
    pub fn decode(bytes: &[u8]) -> Result<PrunedEntry, DecodeError> {
        let mut d = Decoder::new(bytes);
        let version = d.u8("version")?;
        if version != PRUNED_VERSION {
            return Err(DecodeError {
                offset: 0,
                kind: DecodeErrorKind::UnknownVersion {
                    field: "version",
                    value: version.into(),
                },
            });
        }
        let header = decode_header(&mut d)?;
        let body_len_at = d.position();
        let body_len = d.u32("body_len")?;
        if body_len as usize > MAX_BODY_LEN {
            return Err(DecodeError {
                offset: body_len_at,
                kind: DecodeErrorKind::Invalid {
                    field: "body_len",
                    reason: "is over the body limit",
                },
            });
        }
        d.finish()?;
        let (index, agent, seq, prev, kind, recorded_at) = header;
        Ok(PrunedEntry {
            index,
            agent,
            seq,
            prev,
            kind,
            recorded_at,
            body_len,
        })
    }
}

type Header = (u64, AgentId, u64, Hash, Kind, Timestamp);

/// The fields an entry and its stub share, after the version byte.
fn decode_header(d: &mut Decoder<'_>) -> Result<Header, DecodeError> {
    let index = d.u64("index")?;
    let agent = AgentId::from_bytes(d.array("agent")?);
    let seq_at = d.position();
    let seq = d.u64("seq")?;
    if seq == 0 {
        return Err(DecodeError {
            offset: seq_at,
            kind: DecodeErrorKind::Invalid {
                field: "seq",
                reason: "must start at 1",
            },
        });
    }
    let prev = d.hash("prev")?;
    let kind_at = d.position();
    let kind = d.bytes8("kind")?;
    if !is_valid_kind(kind) {
        return Err(DecodeError {
            offset: kind_at,
            kind: DecodeErrorKind::Invalid {
                field: "kind",
                reason: "is not 1-64 of [a-z0-9._-]",
            },
        });
    }
    // Validated as ASCII just above.
    let kind = Kind(String::from_utf8_lossy(kind).into_owned());
    let recorded_at = Timestamp::from_nanos(d.u64("recorded_at")?);
    Ok((index, agent, seq, prev, kind, recorded_at))
}

/// The Merkle leaf of an entry: RFC 9162's leaf hash over the entry hash.
pub fn leaf_hash(entry_hash: &Hash) -> Hash {
    aura_core::hash::merkle_leaf(&entry_hash.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            any::<u64>(),
            any::<[u8; 16]>(),
            1..u64::MAX,
            any::<[u8; 32]>(),
            "[a-z0-9._-]{1,64}",
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..512),
        )
            .prop_map(|(index, agent, seq, prev, kind, t, body)| Entry {
                index,
                agent: AgentId::from_bytes(agent),
                seq,
                prev: Hash(prev),
                kind: Kind::new(&kind).unwrap(),
                recorded_at: Timestamp::from_nanos(t),
                body,
            })
    }

    proptest! {
        #[test]
        fn encoding_round_trips(entry in arb_entry()) {
            let bytes = entry.encode().unwrap();
            prop_assert_eq!(bytes.len(), FIXED_LEN + entry.kind.as_str().len() + entry.body.len());
            prop_assert_eq!(Entry::decode(&bytes).unwrap(), entry);
        }

        #[test]
        fn stubs_round_trip_and_are_never_read_as_entries(entry in arb_entry()) {
            let stub = entry.pruned().unwrap();
            let bytes = stub.encode();
            prop_assert_eq!(bytes.len(), PRUNED_FIXED_LEN + entry.kind.as_str().len());
            prop_assert_eq!(PrunedEntry::decode(&bytes).unwrap(), stub);
            prop_assert!(Entry::decode(&bytes).is_err());
            prop_assert!(PrunedEntry::decode(&entry.encode().unwrap()).is_err());
        }

        #[test]
        fn decoding_arbitrary_stubs_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(b) = bytes.first_mut() {
                *b = PRUNED_VERSION;
            }
            let _ = PrunedEntry::decode(&bytes);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Entry::decode(&bytes);
        }

        #[test]
        fn every_single_byte_change_changes_the_hash_or_fails_to_decode(
            entry in arb_entry(), pos in any::<prop::sample::Index>(), delta in 1u8..=255
        ) {
            let mut bytes = entry.encode().unwrap();
            let i = pos.index(bytes.len());
            bytes[i] ^= delta;
            if let Ok(other) = Entry::decode(&bytes) {
                prop_assert_ne!(other.hash().unwrap(), entry.hash().unwrap());
            }
        }
    }

    #[test]
    fn kinds_are_validated() {
        assert!(Kind::new("mission.submitted").is_ok());
        for bad in ["", "Note", "a b", "é", &"x".repeat(65)] {
            assert!(Kind::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seq_zero_and_bad_version_are_refused() {
        let e = Entry {
            index: 0,
            agent: AgentId::NODE,
            seq: 1,
            prev: Hash::ZERO,
            kind: Kind::new("note").unwrap(),
            recorded_at: Timestamp::from_secs(1),
            body: vec![],
        };
        let mut bytes = e.encode().unwrap();
        bytes[0] = 2;
        assert!(matches!(
            Entry::decode(&bytes).unwrap_err().kind,
            DecodeErrorKind::UnknownVersion { .. }
        ));
        let mut bytes = e.encode().unwrap();
        bytes[1 + 8 + 16 + 7] = 0;
        assert!(Entry::decode(&bytes).is_err());
    }
}
