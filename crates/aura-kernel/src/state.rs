//! The mission state machine: eight states and the transitions between them, exactly as
//! DESIGN.md defines them. An illegal transition is refused and never recorded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissionState {
    /// Declared and recorded, not yet judged.
    Submitted,
    /// Policy permitted the declaration; waiting for a worker.
    Authorized,
    /// The kernel is taking steps.
    Running,
    /// Waiting for a human approval (at start or at a step).
    Escalated,
    /// Undoing completed steps in reverse order.
    Compensating,
    /// Objective reached (terminal).
    Completed,
    /// Denied, errored, timed out or rejected (terminal, with a reason).
    Failed,
    /// Stopped on request (terminal).
    Cancelled,
}

use MissionState::*;

impl MissionState {
    pub const ALL: [MissionState; 8] = [
        Submitted,
        Authorized,
        Running,
        Escalated,
        Compensating,
        Completed,
        Failed,
        Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Completed | Failed | Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Submitted => "submitted",
            Authorized => "authorized",
            Running => "running",
            Escalated => "escalated",
            Compensating => "compensating",
            Completed => "completed",
            Failed => "failed",
            Cancelled => "cancelled",
        }
    }

    /// The states this one may move to (DESIGN.md, "Missions and the kernel").
    pub fn successors(self) -> &'static [MissionState] {
        match self {
            Submitted => &[Authorized, Escalated, Failed, Cancelled],
            Authorized => &[Running, Cancelled],
            Running => &[Escalated, Completed, Compensating, Failed, Cancelled],
            Escalated => &[Authorized, Running, Compensating, Failed, Cancelled],
            Compensating => &[Failed, Cancelled],
            Completed | Failed | Cancelled => &[],
        }
    }

    pub fn can_move_to(self, to: MissionState) -> bool {
        self.successors().contains(&to)
    }
}

impl fmt::Display for MissionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a mission state")]
pub struct UnknownState(pub String);

impl FromStr for MissionState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MissionState::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A refused transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IllegalTransition {
    #[error("a mission cannot move from {from} to {to}")]
    NotInTable {
        from: MissionState,
        to: MissionState,
    },
    #[error("a mission with completed steps to undo must pass through compensating before {to}")]
    MustCompensate { to: MissionState },
}

/// Checks a transition against the table and the compensation rule: Failed and Cancelled
/// go through Compensating whenever a completed step has a compensation.
pub fn check_transition(
    from: MissionState,
    to: MissionState,
    has_compensations: bool,
) -> Result<(), IllegalTransition> {
    if !from.can_move_to(to) {
        return Err(IllegalTransition::NotInTable { from, to });
    }
    if has_compensations && matches!(to, Failed | Cancelled) && from != Compensating {
        return Err(IllegalTransition::MustCompensate { to });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pair of states: legal exactly when DESIGN.md's table says so.
    #[test]
    fn the_transition_table() {
        let legal: &[(MissionState, MissionState)] = &[
            (Submitted, Authorized),
            (Submitted, Escalated),
            (Submitted, Failed),
            (Submitted, Cancelled),
            (Authorized, Running),
            (Authorized, Cancelled),
            (Running, Escalated),
            (Running, Completed),
            (Running, Compensating),
            (Running, Failed),
            (Running, Cancelled),
            (Escalated, Authorized),
            (Escalated, Running),
            (Escalated, Compensating),
            (Escalated, Failed),
            (Escalated, Cancelled),
            (Compensating, Failed),
            (Compensating, Cancelled),
        ];
        let mut count = 0;
        for from in MissionState::ALL {
            for to in MissionState::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(
                    check_transition(from, to, false).is_ok(),
                    expected,
                    "{from} -> {to}"
                );
                count += usize::from(expected);
            }
        }
        assert_eq!(count, legal.len());
    }

    #[test]
    fn failure_and_cancellation_pass_through_compensating_when_there_is_something_to_undo() {
        for from in [Running, Escalated, Submitted] {
            for to in [Failed, Cancelled] {
                if from.can_move_to(to) {
                    assert_eq!(
                        check_transition(from, to, true),
                        Err(IllegalTransition::MustCompensate { to })
                    );
                }
            }
        }
        assert!(check_transition(Compensating, Failed, true).is_ok());
        assert!(check_transition(Compensating, Cancelled, true).is_ok());
        assert!(check_transition(Running, Compensating, true).is_ok());
    }

    #[test]
    fn names_round_trip() {
        for s in MissionState::ALL {
            assert_eq!(s.as_str().parse::<MissionState>(), Ok(s));
        }
    }
}
