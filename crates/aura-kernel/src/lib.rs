//! Aura's kernel: missions, their eight states, the deterministic step, and replay.
//! Pure: no IO, no clock, no randomness; every input arrives as a recorded event.
//!
//! A mission changes only by [`Mission::apply`]ing an [`Event`]. The node drives a
//! **step**: it takes one transaction from the agent's inbox, and with a [`Step`] records
//! what happens — the reasoner's turn, policy's decision on each proposed call, the effects
//! of the permitted calls, transitions — each event applied as it is recorded, so that an
//! event the kernel refuses is never recorded. The step's events are then appended to the
//! agent's ledger stream in one atomic batch, each entry carrying the mission's state hash
//! after it.
//!
//! [`replay`] re-applies a recorded mission's events and checks every state hash, naming the
//! first entry where the kernel would now derive something different.

#![forbid(unsafe_code)]

mod durable;
mod list;
mod mission;
mod recipe;
mod record;
mod state;

pub use durable::{RetryPolicy, StepPolicy, kinds};
pub use list::AppendList;
pub use mission::{
    CallState, Change, Completed, Context, Escalation, KernelError, Mission, is_workspace_name,
};
pub use recipe::{
    FORGET_TOOL, MAX_PARAM_VALUE, MAX_RECIPE_BYTES, MAX_RECIPE_CALLS, MAX_RECIPE_PARAMS,
    NOT_IN_RECIPES, RECIPE_FORMAT, RUN_TOOL, Recipe, RecipeCall, RecipeError, RecipeRun, RunArgs,
    SAVE_TOOL, valid_recipe_name,
};
pub use record::{
    Authority, Budget, Decision, Effect, Event, Message, MissionSpec, Outbound, Outcome,
    RecordFormat, Recorded, Role, ToolCall, Turn, Unserialisable,
};
pub use state::{IllegalTransition, MissionState, UnknownState, check_transition};

use aura_core::MissionId;
use aura_core::hash::Hash;

/// The events of one step, applied as they are recorded.
#[derive(Debug, Clone)]
pub struct Step {
    mission: Mission,
    recorded: Vec<Recorded>,
}

impl Step {
    /// The first step of a new mission: its `Submitted` event, in the current format.
    pub fn submit(event: Event) -> Result<Step, KernelError> {
        Step::submit_in(event, RecordFormat::CURRENT)
    }

    /// The first step of a new mission recorded in `format`: for test vectors and
    /// fixtures of older formats, which a node no longer writes.
    pub fn submit_in(event: Event, format: RecordFormat) -> Result<Step, KernelError> {
        let mission = Mission::submitted_in(&event, format)?;
        let recorded = vec![Recorded {
            v: mission.format,
            mission: mission.id,
            event,
            state_hash: mission.state_hash,
        }];
        Ok(Step { mission, recorded })
    }

    /// A step of an existing mission.
    pub fn begin(mission: &Mission) -> Step {
        Step {
            mission: mission.clone(),
            recorded: Vec::new(),
        }
    }

    /// Applies `event`; if the kernel refuses it, nothing is recorded and the step is as
    /// it was.
    pub fn push(&mut self, event: Event) -> Result<&Mission, KernelError> {
        self.mission = self.mission.apply(&event)?;
        self.recorded.push(Recorded {
            v: self.mission.format,
            mission: self.mission.id,
            event,
            state_hash: self.mission.state_hash,
        });
        Ok(&self.mission)
    }

    /// The mission as it stands after the events pushed so far.
    pub fn mission(&self) -> &Mission {
        &self.mission
    }

    pub fn is_empty(&self) -> bool {
        self.recorded.is_empty()
    }

    /// The mission after the step, and the entries to append.
    pub fn finish(self) -> (Mission, Vec<Recorded>) {
        (self.mission, self.recorded)
    }
}

/// Where replay parted from the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Divergence {
    #[error("entry {entry}: the kernel refuses the recorded event: {error}")]
    Refused { entry: u64, error: KernelError },
    #[error("entry {entry}: the state hash is {derived}, the record says {recorded}")]
    HashMismatch {
        entry: u64,
        derived: Hash,
        recorded: Hash,
    },
    #[error("entry {entry}: the entry belongs to mission {found}, not {expected}")]
    OtherMission {
        entry: u64,
        expected: MissionId,
        found: MissionId,
    },
    #[error("the record of the mission is empty")]
    Empty,
    #[error("entry {entry} is recorded in format {found:?}, the mission's record in {expected:?}")]
    FormatChanged {
        entry: u64,
        expected: RecordFormat,
        found: RecordFormat,
    },
}

/// Replays one mission from its recorded entries (`(ledger index, entry body)` in order),
/// reproducing every state hash, or naming the first entry where it diverges.
pub fn replay<'a>(
    records: impl IntoIterator<Item = (u64, &'a Recorded)>,
) -> Result<Mission, Divergence> {
    let mut mission: Option<Mission> = None;
    for (entry, rec) in records {
        let next = match &mission {
            None => Mission::submitted_in(&rec.event, rec.v)
                .map_err(|error| Divergence::Refused { entry, error })?,
            Some(m) => {
                if rec.v != m.format {
                    return Err(Divergence::FormatChanged {
                        entry,
                        expected: m.format,
                        found: rec.v,
                    });
                }
                if rec.mission != m.id {
                    return Err(Divergence::OtherMission {
                        entry,
                        expected: m.id,
                        found: rec.mission,
                    });
                }
                m.apply(&rec.event)
                    .map_err(|error| Divergence::Refused { entry, error })?
            }
        };
        if next.state_hash != rec.state_hash {
            return Err(Divergence::HashMismatch {
                entry,
                derived: next.state_hash,
                recorded: rec.state_hash,
            });
        }
        mission = Some(next);
    }
    mission.ok_or(Divergence::Empty)
}
