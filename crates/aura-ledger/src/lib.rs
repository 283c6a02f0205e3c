//! Aura's ledger mathematics. Pure: no IO, no clock, no randomness.
//!
//! - [`entry`]: an entry and its canonical encoding and hash.
//! - [`merkle`]: the RFC 9162 Merkle tree over all entries in commit order: roots,
//!   incremental appends, inclusion and consistency proofs and their verification.
//! - [`checkpoint`]: the tree head a node signs at the end of every commit batch.
//! - [`proof`]: self-contained proof documents that can be checked offline with only the
//!   node's public key.
//! - [`verify`]: a streaming verifier that checks a whole ledger and names the first bad
//!   entry and why.
//! - [`bundle`]: the export file format.
//! - [`note`]: checkpoints as C2SP signed notes, verifier keys and witness cosignatures.
//! - [`witness`]: a witness's decision to cosign a log's new checkpoint.
//!
//! The formats are specified in docs/ledger.md; the test vectors there are checked by
//! `tests/vectors.rs`.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod checkpoint;
pub mod cluster;
pub mod entry;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod verify;
pub mod witness;

pub use checkpoint::{Checkpoint, SignedCheckpoint};
pub use entry::{Entry, Kind};
pub use merkle::Frontier;
pub use proof::{ConsistencyProof, InclusionProof};
pub use verify::{Failure, Verifier};
