//! Aura's runtime: agents as single-writer actors with inboxes, missions driven step by
//! step through the kernel, and the stream of what happened.
//!
//! - Every agent is an actor ([`agent`]): one task owns the agent's ledger stream and takes
//!   one transaction at a time from its inbox (a message, a mission step, an approval, a
//!   timer), so an agent's record is written by exactly one writer, in order, without gaps.
//!   Appends name the exact sequence number they expect, so even a bug could not interleave
//!   two writers unnoticed.
//! - The [`events`] hub publishes every committed entry with its ledger index as the
//!   sequence number, so a client can resume a stream from any point by reading the ledger.
//!
//! The engine is IO at the edge around the pure kernel: it owns the store, the node's
//! signer, the clock and the randomness, and hands the kernel only recorded values.

#![forbid(unsafe_code)]

pub mod adapters;
pub mod events;
pub mod ports;

mod agent;
mod engine;
mod mission;

pub use agent::Control;
pub use engine::{
    AgentInfo, Error, Handle, KIND_MISSIONS_PRUNED, NewAgent, Options, PruneReport, PrunedMission,
    Sender, Services, Stuck, StuckReason, stream_event,
};
pub use events::{EventHub, StreamEvent};
