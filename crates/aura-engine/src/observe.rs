//! What the engine tells `/metrics` about the missions it records: counted from the events
//! of each commit once the store has made it durable, so the counters say exactly what the
//! ledger says (a refused or failed commit counts nothing).

use aura_kernel::{Effect, Event, Outcome, Recorded};

/// Counts the events of a commit that the store acknowledged.
pub(crate) fn committed(recorded: &[Recorded]) {
    let metrics = aura_metrics::global();
    for r in recorded {
        match &r.event {
            Event::Transition { to, reason, .. } => {
                metrics.inc(&aura_metrics::MISSION_TRANSITIONS, &[to.as_str()]);
                tracing::info!(mission_id = %r.mission, state = to.as_str(), %reason, "mission transition");
            }
            Event::Judged { decision } | Event::Decided { decision, .. } => {
                metrics.inc(
                    &aura_metrics::POLICY_DECISIONS,
                    &[effect(&decision.outcome)],
                );
            }
            Event::Effect { effect, .. } => {
                metrics.inc(
                    &aura_metrics::TOOL_CALLS,
                    &[&effect.tool, effect_outcome(effect)],
                );
            }
            _ => {}
        }
    }
}

/// A decision's effect as `/metrics` and the spans name it.
pub(crate) fn effect(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Permit => "permit",
        Outcome::Deny => "deny",
        Outcome::Escalate { .. } => "escalate",
    }
}

/// An effect's outcome as spans and `/metrics` name it: `ok`, or the error kind (one of
/// aura-tools' `ErrorKind` names, a bounded set).
pub(crate) fn effect_outcome(effect: &Effect) -> &str {
    match (effect.ok, &effect.error_kind) {
        (true, _) => "ok",
        (false, Some(kind)) => kind.as_str(),
        (false, None) => "failed",
    }
}
