//! Aura's shared primitives.
//!
//! Everything that more than one crate must agree on bit for bit lives here: typed ids,
//! the canonical binary encoding, domain-tagged SHA-256, Ed25519 keys behind a keystore
//! that never hands out a secret, and the one door through which the clock and
//! randomness enter the system.
//!
//! This crate does IO in exactly one place, the [`keystore`], which reads and writes key
//! files in the data directory.

#![forbid(unsafe_code)]

pub mod door;
pub mod encoding;
pub mod hash;
pub mod id;
pub mod jcs;
pub mod keystore;
pub mod sign;
pub mod signed;
pub mod time;

pub use hash::{Domain, Hash};
pub use id::{AgentId, MissionId, NodeId};
pub use sign::{PublicKey, Signature};
pub use signed::{Signed, Statement};
pub use time::Timestamp;
