//! `aura mission watch`: a mission's recorded events, narrated as they happen.
//!
//! The stream's events are decoded into the engine's `StreamEvent` and each mission
//! entry's body into the kernel's `Recorded`; the narration matches every kind of event
//! the kernel records, so a new kind does not compile until it is told here.

use aura_core::MissionId;
use aura_engine::StreamEvent;
use aura_kernel::{Decision, Event, MissionState, Outcome, Recorded};
use futures_util::StreamExt as _;
use serde_json::Value;

use crate::client::Client;
use crate::hinted;
use crate::output::Output;

use super::decode;

/// Prints a mission's events as they happen, from its start, until it ends.
pub(super) async fn watch(client: &Client, out: &Output, id: &str) -> anyhow::Result<()> {
    let mission: MissionId = id.parse().map_err(|_| {
        hinted(
            format!("`{id}` is not a mission id"),
            "`aura mission list` shows them",
        )
    })?;
    let mut ws = client.events(&format!("mission={mission}&from=0")).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| anyhow::anyhow!("the event stream broke: {e}"))?;
        let tokio_tungstenite::tungstenite::Message::Text(text) = msg else {
            continue;
        };
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("the event stream sent something not JSON: {e}"))?;
        // Text deltas are not printed for people: they race the recorded entries on the
        // stream, and each turn's text is shown whole once it is recorded. `--json` passes
        // them through for programs that want them.
        let entry = read_entry(&decode::<StreamEvent>(&raw)?)?;
        if !out.is_json()
            && let Some(line) = entry.as_ref().and_then(ReadEntry::line)
        {
            println!("{line}");
        }
        let recorded = entry.and_then(|e| e.recorded);
        if out.is_json() {
            println!("{raw}");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let Some(Recorded {
            event: Event::Transition { to, reason, .. },
            ..
        }) = recorded
        else {
            continue;
        };
        match to {
            MissionState::Completed => return Ok(()),
            MissionState::Failed | MissionState::Cancelled => {
                return Err(hinted(
                    format!("mission {mission} {to}: {reason}"),
                    format!("`aura mission show {mission}` shows its whole record"),
                ));
            }
            MissionState::Escalated => {
                if !out.is_json() {
                    println!(
                        "   waiting for a person: `aura approvals` lists it; `aura approve {mission} --as NAME` or `aura reject {mission} --as NAME` answers it"
                    );
                }
            }
            MissionState::Submitted
            | MissionState::Authorized
            | MissionState::Running
            | MissionState::Compensating => {}
        }
    }
    Ok(())
}

/// A recorded entry of the event stream, read once: its place and kind, and its mission
/// record when it is one. Shared by `aura mission watch` and `aura tui`.
pub(crate) struct ReadEntry {
    pub(crate) seq: u64,
    pub(crate) kind: String,
    pub(crate) recorded: Option<Recorded>,
}

impl ReadEntry {
    /// The entry narrated on one line, for people; `None` for bookkeeping.
    pub(crate) fn line(&self) -> Option<String> {
        match &self.recorded {
            Some(r) => narrate(self.seq, r),
            None => Some(format!("#{} {}", self.seq, self.kind)),
        }
    }
}

/// Reads a stream event's entry, decoding a mission entry's body into the kernel's
/// `Recorded`; `None` for what is not a recorded entry (text deltas, lag notices).
pub(crate) fn read_entry(event: &StreamEvent) -> anyhow::Result<Option<ReadEntry>> {
    let StreamEvent::Entry {
        seq, kind, body, ..
    } = event
    else {
        return Ok(None);
    };
    let recorded = if kind.starts_with("mission.") {
        Some(decode::<Recorded>(body)?)
    } else {
        None
    };
    Ok(Some(ReadEntry {
        seq: *seq,
        kind: kind.clone(),
        recorded,
    }))
}

/// One line for a recorded mission event, for people; `None` for bookkeeping.
fn narrate(seq: u64, r: &Recorded) -> Option<String> {
    Some(match &r.event {
        Event::Submitted { spec, .. } => format!("#{seq} submitted: {}", spec.objective),
        Event::Judged { decision } => format!(
            "#{seq} policy on the declaration: {} {}",
            outcome_name(decision.outcome),
            ids(&decision.deciding)
        ),
        Event::Transition { to, reason, .. } => format!("#{seq} -> {to} ({reason})"),
        Event::Turn { turn, .. } => {
            let calls: Vec<String> = turn
                .tool_calls
                .iter()
                .map(|c| format!("{}({})", c.name, c.arguments))
                .collect();
            let content = turn.content.trim();
            format!(
                "#{seq} reasoner: {}{}",
                if content.is_empty() {
                    String::new()
                } else {
                    format!("{content} ")
                },
                calls.join(", ")
            )
        }
        Event::Decided { call_id, decision } => decided(seq, call_id, decision),
        Event::Effect { effect, .. } => {
            if effect.ok {
                let mut out = effect.output.to_string();
                if out.chars().count() > 100 {
                    out = out.chars().take(99).collect::<String>() + "…";
                }
                format!("#{seq} {} ok: {out}", effect.tool)
            } else {
                format!(
                    "#{seq} {} failed: {}",
                    effect.tool,
                    effect.error.as_deref().unwrap_or("")
                )
            }
        }
        Event::Approved {
            approver, level, ..
        } => format!("#{seq} approved by {approver} at {level}"),
        Event::Rejected {
            approver, reason, ..
        } => format!("#{seq} rejected by {approver}: {reason}"),
        Event::CancelRequested { by, reason, .. } => {
            format!("#{seq} cancel requested by {by}: {reason}")
        }
        Event::TimedOut { .. } => format!("#{seq} timed out"),
        Event::Compensated {
            call_id, ok, error, ..
        } => format!(
            "#{seq} undid {call_id}: {}",
            if *ok {
                "ok"
            } else {
                error.as_deref().unwrap_or("failed")
            }
        ),
        Event::Message { from, body, .. } => format!("#{seq} message from {from}: {body}"),
        // A first attempt and heartbeats are bookkeeping; retries are news.
        Event::Attempt { attempt: 1, .. } | Event::Heartbeat { .. } => return None,
        Event::Attempt {
            call_id, attempt, ..
        } => format!("#{seq} retrying {call_id} (attempt {attempt})"),
        Event::AttemptFailed {
            call_id,
            attempt,
            kind,
            error,
            retry_at,
            ..
        } => format!(
            "#{seq} {} attempt {attempt} failed: {kind}: {error}{}",
            call_id.as_deref().unwrap_or("the reasoner's turn"),
            retry_at.map_or_else(
                || "; giving up".to_owned(),
                |t| format!("; next attempt at {t}")
            )
        ),
        Event::Paused { by, reason, .. } => format!("#{seq} paused by {by}: {reason}"),
        Event::Resumed { by, .. } => format!("#{seq} resumed by {by}"),
        Event::RetryRequested { by, .. } => format!("#{seq} retry now, asked by {by}"),
        Event::Expanded {
            call_id,
            recipe,
            calls,
            ..
        } => format!(
            "#{seq} {call_id}: recipe `{}` v{} expanded into {} call{}",
            recipe.name,
            recipe.version,
            calls.len(),
            if calls.len() == 1 { "" } else { "s" }
        ),
    })
}

/// Policy's decision on one proposed call.
fn decided(seq: u64, call_id: &str, d: &Decision) -> String {
    let outcome = match d.outcome {
        Outcome::Escalate { level } => format!("escalate to {level}"),
        Outcome::Permit | Outcome::Deny => outcome_name(d.outcome).to_owned(),
    };
    let errors = d.errors.join("; ");
    format!(
        "#{seq} policy on {} ({call_id}): {outcome} {}{}",
        d.action,
        ids(&d.deciding),
        if errors.is_empty() {
            String::new()
        } else {
            format!(" — {errors}")
        }
    )
}

/// The outcome's name as recorded: `permit`, `deny` or `escalate`.
fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Permit => "permit",
        Outcome::Deny => "deny",
        Outcome::Escalate { .. } => "escalate",
    }
}

/// Policy ids as `[a, b]`, or nothing when there are none.
fn ids(list: &[String]) -> String {
    if list.is_empty() {
        String::new()
    } else {
        format!("[{}]", list.join(", "))
    }
}
