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
//!
//! Modules, leaves first: `error`; `command` (what is sent to an agent's actor: its inbox's
//! commands, operators' controls, the mailbox); `prune` (the pruned missions and pruning);
//! `shared` (options, services and the state the handle and the actors share); `forward`
//! (store commits to the event hub); `recipes` (procedural memory's tools and the recipe
//! book read from an agent's record); `agent` (the actor) and `mission` (the mission
//! driver, the actor's mission transactions); `handle` (the [`Handle`]); `cron` (cron
//! expressions in a time zone, pure), `schedule` (schedules, their records and the
//! missed-run rule, pure) and `scheduler` (the service that fires them through the
//! handle). No module uses one that uses it back (aura-archtest checks).

#![forbid(unsafe_code)]

pub mod adapters;
pub mod audit;
pub mod cron;
pub mod events;
pub mod ports;
#[cfg(feature = "test-util")]
pub mod test_util;

mod agent;
mod command;
mod error;
mod forward;
mod handle;
mod mission;
mod observe;
mod prune;
mod recipes;
mod recorded;
pub mod schedule;
mod scheduler;
mod shared;

pub use command::{Control, Sender};
pub use error::Error;
pub use events::{EventHub, StreamEvent};
pub use forward::stream_event;
pub use handle::{Handle, NewAgent, Stuck, StuckReason};
pub use prune::{KIND_MISSIONS_PRUNED, PruneReport, PrunedMission};
pub use schedule::{Missed, NewSchedule, Schedule, ScheduleId, Template, Trigger};
pub use scheduler::{Firing, Schedules};
pub use shared::{AgentInfo, Options, Ownership, Services};
