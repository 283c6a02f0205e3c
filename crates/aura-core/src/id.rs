//! Typed 128-bit ids.
//!
//! Every id is 16 bytes on the wire and in hashes, and `prefix_<26 base32 digits>` for
//! people (Crockford's alphabet, lowercase, like a ULID), so an agent id can never be
//! passed where a mission id is expected, in code or on the command line. Generated ids
//! start with the millisecond time so that they sort by creation.

use std::fmt;
use std::str::FromStr;

use crate::door::{Clock, Entropy};

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Encodes 128 bits as 26 Crockford base32 digits (the first digit carries 3 bits).
pub fn encode_base32(bytes: &[u8; 16]) -> String {
    let mut n = u128::from_be_bytes(*bytes);
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n & 31) as usize];
        n >>= 5;
    }
    // Every byte came from ALPHABET, which is ASCII.
    out.iter().map(|&b| b as char).collect()
}

/// Decodes 26 Crockford base32 digits (either case) into 128 bits.
pub fn decode_base32(s: &str) -> Option<[u8; 16]> {
    if s.len() != 26 {
        return None;
    }
    let mut n: u128 = 0;
    for (i, c) in s.bytes().enumerate() {
        let c = c.to_ascii_lowercase();
        let v = ALPHABET.iter().position(|&a| a == c)? as u128;
        // The first digit holds only the top 3 bits of 128.
        if i == 0 && v > 7 {
            return None;
        }
        n = (n << 5) | v;
    }
    Some(n.to_be_bytes())
}

/// An id string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {kind} id")]
pub struct ParseIdError {
    pub kind: &'static str,
    pub input: String,
}

/// Defines a typed 128-bit id with a display prefix.
#[macro_export]
macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                $name(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// A new id: 48 bits of millisecond time, then 80 random bits.
            pub fn generate(
                clock: &dyn $crate::door::Clock,
                entropy: &dyn $crate::door::Entropy,
            ) -> Self {
                $name($crate::id::generate_bytes(clock, entropy))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}_{}", $prefix, $crate::id::encode_base32(&self.0))
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || $crate::id::ParseIdError { kind: $prefix, input: s.to_owned() };
                let rest = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or_else(err)?;
                $crate::id::decode_base32(rest).map($name).ok_or_else(err)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

#[doc(hidden)]
pub fn generate_bytes(clock: &dyn Clock, entropy: &dyn Entropy) -> [u8; 16] {
    let millis = clock.now().as_nanos() / 1_000_000;
    let mut out = [0u8; 16];
    out[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    entropy.fill(&mut out[6..]);
    out
}

typed_id!(
    /// A node: derived from the node's Ed25519 public key, so anyone holding the key can
    /// check the id.
    NodeId,
    "node"
);

typed_id!(
    /// A mission instance.
    MissionId,
    "mission"
);

/// An agent, or the node itself. The node's own ledger stream uses [`AgentId::NODE`],
/// written `node` for people.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AgentId(pub [u8; 16]);

impl AgentId {
    pub const PREFIX: &'static str = "agent";

    /// The node's own stream in the ledger.
    pub const NODE: AgentId = AgentId([0; 16]);

    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        AgentId(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn is_node(&self) -> bool {
        *self == AgentId::NODE
    }

    pub fn generate(clock: &dyn Clock, entropy: &dyn Entropy) -> Self {
        let id = AgentId(generate_bytes(clock, entropy));
        // A clock at the epoch and an all-zero random draw would collide with the node's
        // stream; astronomically unlikely, but cheap to rule out.
        if id.is_node() {
            AgentId([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        } else {
            id
        }
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_node() {
            f.write_str("node")
        } else {
            write!(f, "agent_{}", encode_base32(&self.0))
        }
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for AgentId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "node" {
            return Ok(AgentId::NODE);
        }
        let err = || ParseIdError {
            kind: "agent",
            input: s.to_owned(),
        };
        let rest = s.strip_prefix("agent_").ok_or_else(err)?;
        decode_base32(rest).map(AgentId).ok_or_else(err)
    }
}

impl serde::Serialize for AgentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for AgentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::{ManualClock, SeededEntropy};
    use crate::time::Timestamp;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn base32_round_trips(bytes in any::<[u8; 16]>()) {
            let s = encode_base32(&bytes);
            prop_assert_eq!(s.len(), 26);
            prop_assert_eq!(decode_base32(&s), Some(bytes));
            prop_assert_eq!(decode_base32(&s.to_uppercase()), Some(bytes));
        }

        #[test]
        fn agent_ids_round_trip(bytes in any::<[u8; 16]>()) {
            let id = AgentId(bytes);
            prop_assert_eq!(id.to_string().parse::<AgentId>(), Ok(id));
        }
    }

    #[test]
    fn known_encoding() {
        assert_eq!(encode_base32(&[0; 16]), "00000000000000000000000000");
        assert_eq!(encode_base32(&[0xff; 16]), "7zzzzzzzzzzzzzzzzzzzzzzzzz");
        assert_eq!(decode_base32("80000000000000000000000000"), None);
        assert_eq!(decode_base32("0000000000000000000000000u"), None);
    }

    #[test]
    fn the_node_stream_reads_as_node() {
        assert_eq!(AgentId::NODE.to_string(), "node");
        assert_eq!("node".parse::<AgentId>(), Ok(AgentId::NODE));
    }

    #[test]
    fn typed_ids_do_not_mix() {
        let c = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let e = SeededEntropy::new(1);
        let m = MissionId::generate(&c, &e);
        assert!(m.to_string().starts_with("mission_"));
        assert!(m.to_string().parse::<NodeId>().is_err());
        assert!(m.to_string().parse::<AgentId>().is_err());
        assert_eq!(m.to_string().parse::<MissionId>(), Ok(m));
    }

    #[test]
    fn generated_ids_sort_by_time() {
        let c = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let e = SeededEntropy::new(1);
        let a = AgentId::generate(&c, &e);
        c.advance(std::time::Duration::from_millis(1));
        let b = AgentId::generate(&c, &e);
        assert!(a < b);
    }
}
