//! A witness's decision: whether to cosign a log's new checkpoint.
//!
//! A witness keeps, for each log it follows, the tree head it last cosigned. It cosigns a
//! new checkpoint only if the log's key signed it and a consistency proof shows that the
//! last cosigned tree is a prefix of it, so it never cosigns two views of one log that
//! disagree, nor a tree smaller than one it cosigned. Anyone holding a cosigned head
//! then catches a log cut back below it or forked away from it.
//!
//! The request is c2sp.org/tlog-witness's `add-checkpoint` body, so that Aura's witness
//! and the logs it serves speak the protocol other witnesses and logs speak:
//!
//! ```text
//! old <size the witness last cosigned>
//! <consistency proof hash, base64>        zero to 63 lines
//! <empty line>
//! <checkpoint note>
//! ```
//!
//! This module is pure: it decides; the caller keeps the state (atomically: the check
//! and the update must not interleave with another request's) and signs.

use aura_core::hash::Hash;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::merkle::{self, empty_root};
use crate::note::{Note, NoteError, TreeHead, VerifierKey};

/// The most consistency proof lines a request may carry (tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// An `add-checkpoint` request: the size the client believes the witness last cosigned,
/// a consistency proof from it, and the new checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old: u64,
    pub proof: Vec<Hash>,
    pub note: Note,
}

/// Why a witness refused to cosign. Each maps to one of tlog-witness's HTTP answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: the request is malformed.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// 404: the witness follows no log with this origin.
    #[error("this witness follows no log with origin `{0}`")]
    UnknownLog(String),
    /// 403: no signature by the log's key verifies.
    #[error("the checkpoint is not signed by the log's key: {0}")]
    NotSigned(NoteError),
    /// 400: the old size is larger than the new checkpoint's.
    #[error("the old size {old} is larger than the checkpoint's size {size}")]
    OldTooLarge { old: u64, size: u64 },
    /// 409: the client's old size is not the size the witness last cosigned.
    #[error("the witness last cosigned a tree of {latest} entries, not {old}")]
    Conflict { old: u64, latest: u64 },
    /// 409: same size as the last cosigned tree, other root: the log forked.
    #[error("the log signed two different trees of {size} entries (fork)")]
    Fork { size: u64 },
    /// 422: the consistency proof does not verify: the new tree does not extend the last.
    #[error(
        "the checkpoint of {size} entries is not consistent with the last cosigned tree of {old} entries: {reason}"
    )]
    Inconsistent {
        old: u64,
        size: u64,
        reason: merkle::ProofError,
    },
}

impl Refusal {
    /// The HTTP status tlog-witness gives this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) | Refusal::OldTooLarge { .. } => 400,
            Refusal::NotSigned(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } | Refusal::Fork { .. } => 409,
            Refusal::Inconsistent { .. } => 422,
        }
    }
}

impl AddCheckpoint {
    pub fn parse(bytes: &[u8]) -> Result<AddCheckpoint, Refusal> {
        let bad = |why: &str| Refusal::Malformed(why.to_owned());
        let text = std::str::from_utf8(bytes).map_err(|_| bad("the request is not UTF-8"))?;
        let (first, mut rest) = text.split_once('\n').ok_or_else(|| bad("no `old` line"))?;
        let old = first
            .strip_prefix("old ")
            .filter(|n| !n.is_empty() && (*n == "0" || !n.starts_with('0')))
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad("the first line is not `old <size>`"))?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = rest
                .split_once('\n')
                .ok_or_else(|| bad("no empty line before the checkpoint"))?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let hash = BASE64
                .decode(line)
                .ok()
                .and_then(|h| Hash::from_slice(&h))
                .ok_or_else(|| bad("a proof line is not a base64 hash"))?;
            proof.push(hash);
        }
        let note = Note::parse(rest.as_bytes()).map_err(|e| Refusal::Malformed(e.to_string()))?;
        Ok(AddCheckpoint { old, proof, note })
    }

    pub fn encode(&self) -> String {
        let mut out = format!("old {}\n", self.old);
        for h in &self.proof {
            out.push_str(&BASE64.encode(h.0));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note.encode());
        out
    }
}

/// A log a witness follows: its origin and the key that signs its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub origin: String,
    pub key: VerifierKey,
}

/// Decides on a request for the log `log`, whose last cosigned tree head is `last`
/// (`None` if the witness never cosigned one). Returns the tree head to cosign.
pub fn check(
    log: &Log,
    last: Option<(u64, Hash)>,
    request: &AddCheckpoint,
) -> Result<TreeHead, Refusal> {
    let head =
        TreeHead::parse(request.note.text()).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if head.origin != log.origin {
        return Err(Refusal::UnknownLog(head.origin));
    }
    request.note.verify(&log.key).map_err(Refusal::NotSigned)?;
    if request.old > head.size {
        return Err(Refusal::OldTooLarge {
            old: request.old,
            size: head.size,
        });
    }
    let (last_size, last_root) = last.unwrap_or((0, empty_root()));
    if request.old != last_size {
        return Err(Refusal::Conflict {
            old: request.old,
            latest: last_size,
        });
    }
    if last_size == head.size && last_root != head.root {
        return Err(Refusal::Fork { size: head.size });
    }
    merkle::verify_consistency(last_size, head.size, &last_root, &head.root, &request.proof)
        .map_err(|reason| Refusal::Inconsistent {
            old: last_size,
            size: head.size,
            reason,
        })?;
    Ok(head)
}
