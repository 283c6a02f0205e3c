//! The streaming verifier: feed it a ledger's entries and checkpoints in order and it
//! names the first thing that is wrong.
//!
//! It checks, for every entry: that it decodes; that its index is its position; that a
//! stored hash (where the source keeps one) matches the recomputed one; that the agent's
//! sequence number follows the previous one without a gap; and that `prev` is the hash of
//! the agent's previous entry. For every checkpoint: that it covers exactly the entries
//! seen so far; that it grows; that it names the node and carries the node's valid
//! signature; that its root is the RFC 9162 root over those entries; and that its time is
//! not before the previous checkpoint's. At the end: that every entry is covered by a
//! signed checkpoint.
//!
//! Two more checks need knowledge from outside the ledger, and run when the caller has
//! it. Witness cosignatures of a checkpoint ([`Verifier::cosignature`]) are verified
//! under the witness keys the caller trusts. Tree heads the caller holds from elsewhere
//! ([`Verifier::expect_heads`], for example a newer checkpoint a witness cosigned) must
//! agree with the ledger: the ledger's root at that size must be theirs (else it forked),
//! and the ledger must reach that size (else it was cut back). Nothing inside a ledger
//! can show that it was cut back to an earlier checkpoint: only such a head can.
//!
//! A pruned entry (its body removed, its stub and hash kept) gets every check but the
//! recomputation of its hash, which needs the body. Its stored hash is still proven: the
//! agent's next entry must name it as `prev`, and its leaf is under every later signed
//! root. What a pruned entry's stub says of its kind and time is not proven by anything.
//!
//! A log written by several nodes of a cluster (see [`crate::cluster`]) is verified with
//! the cluster key: enrollment entries signed by it teach the verifier node keys, and a
//! checkpoint is accepted when the trusted key or a key enrolled before it signed it. An
//! enrollment entry in the cluster's stream that the trusted key did not sign fails.
//!
//! Memory grows with the number of agents (one head each), not with the ledger.

use std::collections::HashMap;
use std::fmt;

use aura_core::encoding::DecodeError;
use aura_core::hash::Hash;
use aura_core::{AgentId, NodeId, PublicKey, Timestamp};
use serde::Serialize;

use crate::checkpoint::{CheckpointError, SignedCheckpoint};
use crate::cluster;
use crate::entry::{self, Entry, PrunedEntry};
use crate::merkle::{self, Frontier};
use crate::note::{self, NoteError, NoteSignature, VerifierKey};

/// Where verification failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "at", rename_all = "snake_case")]
pub enum Location {
    /// The entry at this position of the ledger; agent and seq once it decoded.
    Entry {
        position: u64,
        agent: Option<AgentId>,
        seq: Option<u64>,
    },
    /// The checkpoint that follows `after_entries` entries.
    Checkpoint {
        after_entries: u64,
        tree_size: Option<u64>,
    },
    /// The end of the ledger.
    End { entries: u64 },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Entry {
                position,
                agent: Some(agent),
                seq: Some(seq),
            } => {
                write!(f, "entry #{position} ({agent} seq {seq})")
            }
            Location::Entry { position, .. } => write!(f, "entry #{position}"),
            Location::Checkpoint {
                after_entries,
                tree_size: Some(size),
            } => {
                write!(
                    f,
                    "checkpoint of size {size} (after entry #{})",
                    after_entries.saturating_sub(1)
                )
            }
            Location::Checkpoint {
                after_entries,
                tree_size: None,
            } => {
                write!(f, "checkpoint after {after_entries} entries")
            }
            Location::End { entries } => write!(f, "end of ledger ({entries} entries)"),
        }
    }
}

/// What was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("malformed: {0}")]
    Malformed(DecodeError),
    #[error(
        "its index is {found}, but it is at position {expected} (moved, inserted or a neighbour deleted)"
    )]
    WrongIndex { expected: u64, found: u64 },
    #[error("its content does not match its recorded hash {stored} (recomputed {computed})")]
    HashMismatch { stored: Hash, computed: Hash },
    #[error(
        "sequence number {found} follows {previous} in this agent's stream (expected {expected})"
    )]
    SequenceGap {
        previous: u64,
        expected: u64,
        found: u64,
    },
    #[error("its prev hash {found} is not the hash of the agent's previous entry {expected}")]
    BrokenChain { expected: Hash, found: Hash },
    #[error("first entry of its agent must have prev = 0")]
    FirstEntryHasPrev,
    #[error("it covers {found} entries, but {expected} precede it{}", missing_note(*.expected, *.found))]
    CheckpointSize { expected: u64, found: u64 },
    #[error("it does not grow the tree (previous checkpoint already had {previous} entries)")]
    CheckpointNotGrowing { previous: u64 },
    #[error("root {found} is not the root {expected} of the entries before it")]
    RootMismatch { expected: Hash, found: Hash },
    #[error("its time {found} is before the previous checkpoint's {previous}")]
    TimeGoesBack {
        previous: Timestamp,
        found: Timestamp,
    },
    #[error("the cosignature by witness {witness} does not verify: {error}")]
    BadCosignature {
        witness: String,
        error: Box<NoteError>,
    },
    #[error(
        "the ledger was cut back: {known} is a tree of {size} entries, but this ledger ends after {entries}"
    )]
    CutBack {
        size: u64,
        entries: u64,
        known: String,
    },
    #[error(
        "the ledger forked: its tree of {} entries has root {}, but {} has root {}",
        .0.size, .0.found, .0.known, .0.expected
    )]
    Forked(Box<Fork>),
    #[error("{0}")]
    Signature(CheckpointError),
    #[error("entries from #{first_uncovered} on are not covered by any signed checkpoint")]
    Uncovered { first_uncovered: u64 },
    #[error("{0}")]
    Other(String),
}

/// Two histories: the ledger's root at a size differs from a known head's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    pub size: u64,
    /// The known head's root.
    pub expected: Hash,
    /// The ledger's root.
    pub found: Hash,
    /// Where the known head came from.
    pub known: String,
}

fn missing_note(expected: u64, found: u64) -> String {
    match found.checked_sub(expected) {
        Some(1) => format!(" (entry #{expected} is missing)"),
        Some(n) if n > 1 => format!(" (entries #{expected} to #{} are missing)", found - 1),
        Some(_) => String::new(),
        None if expected - found == 1 => {
            format!(" (entry #{found} comes before a checkpoint that does not cover it)")
        }
        None => format!(
            " (entries #{found} to #{} come before a checkpoint that does not cover them)",
            expected - 1
        ),
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct Failure {
    pub location: Location,
    pub reason: Reason,
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub node: NodeId,
    pub entries: u64,
    pub agents: u64,
    pub checkpoints: u64,
    pub root: Hash,
    pub last_checkpoint: Option<SignedCheckpoint>,
    /// Entries whose bodies were pruned (only their hashes were checked).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pruned: u64,
    /// Verified cosignatures by the witnesses the caller trusts, in ledger order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cosigned: Vec<Cosigned>,
    /// Cosignatures by witnesses the caller did not name (not checked).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unknown_cosignatures: u64,
    /// Tree heads from elsewhere that the ledger was checked against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_heads: Vec<KnownHead>,
}

/// A checkpoint a trusted witness cosigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cosigned {
    pub witness: String,
    pub tree_size: u64,
    /// When the witness cosigned, in seconds since the Unix epoch.
    pub time: u64,
}

/// A tree head the verifier learnt from outside the ledger (a checkpoint note the node
/// signed, perhaps cosigned by witnesses), which the ledger must agree with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownHead {
    pub tree_size: u64,
    pub root: Hash,
    /// Where it came from, for messages (`the checkpoint in head.note`).
    pub source: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Streaming verifier; see the module documentation for what it checks.
#[derive(Debug)]
pub struct Verifier {
    key: PublicKey,
    node: NodeId,
    /// Node keys the trusted (cluster) key enrolled in the log so far.
    enrolled: HashMap<NodeId, PublicKey>,
    position: u64,
    heads: HashMap<AgentId, (u64, Hash)>,
    frontier: Frontier,
    last_checkpoint: Option<SignedCheckpoint>,
    checkpoints: u64,
    pruned: u64,
    witnesses: Vec<VerifierKey>,
    cosigned: Vec<Cosigned>,
    unknown_cosignatures: u64,
    /// Known heads not yet reached, largest size first.
    pending_heads: Vec<KnownHead>,
    known_heads: Vec<KnownHead>,
}

impl Verifier {
    /// A verifier that trusts checkpoints signed by `key` (the node's public key).
    pub fn new(key: PublicKey) -> Self {
        Verifier {
            node: key.node_id(),
            key,
            enrolled: HashMap::new(),
            position: 0,
            heads: HashMap::new(),
            frontier: Frontier::new(),
            last_checkpoint: None,
            checkpoints: 0,
            pruned: 0,
            witnesses: Vec::new(),
            cosigned: Vec::new(),
            unknown_cosignatures: 0,
            pending_heads: Vec::new(),
            known_heads: Vec::new(),
        }
    }

    /// Trusts cosignatures by these witnesses (keys of type cosignature/v1); others are
    /// counted and ignored.
    pub fn with_witnesses(mut self, witnesses: Vec<VerifierKey>) -> Self {
        self.witnesses = witnesses;
        self
    }

    /// Tree heads from outside the ledger that it must agree with: at each head's size,
    /// the ledger's root must be the head's, and the ledger must reach every head's size.
    /// Give them before the first entry.
    pub fn expect_heads(mut self, mut heads: Vec<KnownHead>) -> Self {
        heads.sort_by_key(|h| std::cmp::Reverse(h.tree_size));
        self.known_heads = heads.clone();
        self.pending_heads = heads;
        self
    }

    pub fn entries_seen(&self) -> u64 {
        self.position
    }

    /// Each agent's last sequence number and entry hash, as seen so far.
    pub fn heads(&self) -> &HashMap<AgentId, (u64, Hash)> {
        &self.heads
    }

    /// Checks the next entry. `stored_hash` is the hash the source recorded beside the
    /// entry, if it keeps one. `completed` hears of each Merkle subtree this entry
    /// completes, so a store can compare them with the ones it keeps.
    pub fn entry(
        &mut self,
        encoded: &[u8],
        stored_hash: Option<&Hash>,
        completed: impl FnMut(merkle::NodeId, Hash),
    ) -> Result<(), Failure> {
        let position = self.position;
        let fail = |agent: Option<AgentId>, seq: Option<u64>, reason: Reason| Failure {
            location: Location::Entry {
                position,
                agent,
                seq,
            },
            reason,
        };
        let entry = Entry::decode(encoded).map_err(|e| fail(None, None, Reason::Malformed(e)))?;
        let (agent, seq) = (Some(entry.agent), Some(entry.seq));
        let computed = Entry::hash_encoded(encoded);
        if let Some(stored) = stored_hash
            && *stored != computed
        {
            return Err(fail(
                agent,
                seq,
                Reason::HashMismatch {
                    stored: *stored,
                    computed,
                },
            ));
        }
        self.link(
            &(entry.index, entry.agent, entry.seq, entry.prev),
            computed,
            completed,
        )?;
        if entry.kind.as_str() == cluster::KIND && entry.agent == cluster::cluster_agent(&self.key)
        {
            let enrollment = cluster::Enrollment::open(&entry.body, &self.key).map_err(|e| {
                fail(
                    agent,
                    seq,
                    Reason::Other(format!("a node enrollment is not valid: {e}")),
                )
            })?;
            let node = enrollment.node_key;
            self.enrolled.insert(node.node_id(), node);
        }
        Ok(())
    }

    /// Checks the next entry when its body was pruned: `stub` is its
    /// [`PrunedEntry`](crate::entry::PrunedEntry) encoding and `hash` the entry hash kept
    /// beside it, which cannot be recomputed and is taken as the entry's hash.
    pub fn pruned_entry(
        &mut self,
        stub: &[u8],
        hash: &Hash,
        completed: impl FnMut(merkle::NodeId, Hash),
    ) -> Result<(), Failure> {
        let stub = PrunedEntry::decode(stub).map_err(|e| Failure {
            location: Location::Entry {
                position: self.position,
                agent: None,
                seq: None,
            },
            reason: Reason::Malformed(e),
        })?;
        let header = (stub.index, stub.agent, stub.seq, stub.prev);
        self.link(&header, *hash, completed)?;
        self.pruned += 1;
        Ok(())
    }

    /// The checks every entry gets, pruned or not: its place, its agent's sequence and
    /// chain; then it becomes the agent's head and a leaf of the tree.
    fn link(
        &mut self,
        &(index, agent_id, entry_seq, prev): &(u64, AgentId, u64, Hash),
        computed: Hash,
        completed: impl FnMut(merkle::NodeId, Hash),
    ) -> Result<(), Failure> {
        let position = self.position;
        let (agent, seq) = (Some(agent_id), Some(entry_seq));
        let fail = |agent: Option<AgentId>, seq: Option<u64>, reason: Reason| Failure {
            location: Location::Entry {
                position,
                agent,
                seq,
            },
            reason,
        };
        if index != position {
            return Err(fail(
                agent,
                seq,
                Reason::WrongIndex {
                    expected: position,
                    found: index,
                },
            ));
        }
        match self.heads.get(&agent_id) {
            None => {
                if entry_seq != 1 {
                    return Err(fail(
                        agent,
                        seq,
                        Reason::SequenceGap {
                            previous: 0,
                            expected: 1,
                            found: entry_seq,
                        },
                    ));
                }
                if prev != Hash::ZERO {
                    return Err(fail(agent, seq, Reason::FirstEntryHasPrev));
                }
            }
            Some(&(prev_seq, prev_hash)) => {
                if entry_seq != prev_seq + 1 {
                    return Err(fail(
                        agent,
                        seq,
                        Reason::SequenceGap {
                            previous: prev_seq,
                            expected: prev_seq + 1,
                            found: entry_seq,
                        },
                    ));
                }
                if prev != prev_hash {
                    return Err(fail(
                        agent,
                        seq,
                        Reason::BrokenChain {
                            expected: prev_hash,
                            found: prev,
                        },
                    ));
                }
            }
        }
        self.heads.insert(agent_id, (entry_seq, computed));
        self.frontier.push(entry::leaf_hash(&computed), completed);
        self.position += 1;
        self.check_known_heads()
    }

    /// Compares the heads of the current size with the ledger's root.
    fn check_known_heads(&mut self) -> Result<(), Failure> {
        while self
            .pending_heads
            .last()
            .is_some_and(|h| h.tree_size <= self.position)
        {
            let Some(head) = self.pending_heads.pop() else {
                break;
            };
            // Heads are popped in size order, as the ledger reaches them (size 0 when
            // the ledger ends empty or at the first entry).
            let found = if head.tree_size == self.position {
                self.frontier.root()
            } else if head.tree_size == 0 {
                merkle::empty_root()
            } else {
                continue;
            };
            if found != head.root {
                return Err(Failure {
                    location: Location::Checkpoint {
                        after_entries: head.tree_size,
                        tree_size: Some(head.tree_size),
                    },
                    reason: Reason::Forked(Box::new(Fork {
                        size: head.tree_size,
                        expected: head.root,
                        found,
                        known: head.source,
                    })),
                });
            }
        }
        Ok(())
    }

    /// Checks the next checkpoint, which must cover exactly the entries seen so far.
    pub fn checkpoint(&mut self, cp: &SignedCheckpoint) -> Result<(), Failure> {
        let after_entries = self.position;
        let fail = |reason: Reason| Failure {
            location: Location::Checkpoint {
                after_entries,
                tree_size: Some(cp.checkpoint.tree_size),
            },
            reason,
        };
        if let Some(prev) = &self.last_checkpoint
            && cp.checkpoint.tree_size <= prev.checkpoint.tree_size
        {
            return Err(fail(Reason::CheckpointNotGrowing {
                previous: prev.checkpoint.tree_size,
            }));
        }
        if cp.checkpoint.tree_size != self.position {
            return Err(fail(Reason::CheckpointSize {
                expected: self.position,
                found: cp.checkpoint.tree_size,
            }));
        }
        // The trusted key, or a node key it enrolled earlier in the log.
        let signer = self.enrolled.get(&cp.checkpoint.node).unwrap_or(&self.key);
        cp.verify(signer).map_err(|e| fail(Reason::Signature(e)))?;
        let expected = self.frontier.root();
        if cp.checkpoint.root != expected {
            return Err(fail(Reason::RootMismatch {
                expected,
                found: cp.checkpoint.root,
            }));
        }
        // docs/ledger.md promises that checkpoint times never decrease; a validly signed
        // checkpoint dated before its predecessor breaks that promise.
        if let Some(prev) = &self.last_checkpoint
            && cp.checkpoint.time < prev.checkpoint.time
        {
            return Err(fail(Reason::TimeGoesBack {
                previous: prev.checkpoint.time,
                found: cp.checkpoint.time,
            }));
        }
        self.last_checkpoint = Some(*cp);
        self.checkpoints += 1;
        Ok(())
    }

    /// Checks a witness's cosignature of the last checkpoint: verified if the witness is
    /// one the caller trusts, counted and ignored otherwise.
    pub fn cosignature(&mut self, sig: &NoteSignature) -> Result<(), Failure> {
        let Some(cp) = self.last_checkpoint else {
            return Err(Failure {
                location: Location::Checkpoint {
                    after_entries: self.position,
                    tree_size: None,
                },
                reason: Reason::Other("a cosignature follows no checkpoint".into()),
            });
        };
        let Some(witness) = self
            .witnesses
            .iter()
            .find(|w| w.name == sig.name && w.key_id() == sig.key_id)
        else {
            self.unknown_cosignatures += 1;
            return Ok(());
        };
        let text = note::checkpoint_text(&cp.checkpoint);
        let fail = |error: NoteError| Failure {
            location: Location::Checkpoint {
                after_entries: self.position,
                tree_size: Some(cp.checkpoint.tree_size),
            },
            reason: Reason::BadCosignature {
                witness: witness.name.clone(),
                error: Box::new(error),
            },
        };
        let time = witness.verify(&text, sig).map_err(fail)?;
        self.cosigned.push(Cosigned {
            witness: witness.name.clone(),
            tree_size: cp.checkpoint.tree_size,
            time: time.unwrap_or_default(),
        });
        Ok(())
    }

    /// Ends verification: every entry must be covered by a checkpoint, and the ledger
    /// must reach every known head.
    pub fn finish(mut self) -> Result<Summary, Failure> {
        self.check_known_heads()?;
        if let Some(head) = self.pending_heads.first() {
            return Err(Failure {
                location: Location::End {
                    entries: self.position,
                },
                reason: Reason::CutBack {
                    size: head.tree_size,
                    entries: self.position,
                    known: head.source.clone(),
                },
            });
        }
        let covered = self.last_checkpoint.map_or(0, |c| c.checkpoint.tree_size);
        if covered != self.position {
            return Err(Failure {
                location: Location::End {
                    entries: self.position,
                },
                reason: Reason::Uncovered {
                    first_uncovered: covered,
                },
            });
        }
        Ok(Summary {
            node: self.node,
            entries: self.position,
            agents: self.heads.len() as u64,
            checkpoints: self.checkpoints,
            root: self.frontier.root(),
            last_checkpoint: self.last_checkpoint,
            pruned: self.pruned,
            cosigned: self.cosigned,
            unknown_cosignatures: self.unknown_cosignatures,
            known_heads: self.known_heads,
        })
    }
}
