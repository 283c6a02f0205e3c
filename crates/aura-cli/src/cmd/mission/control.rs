//! `aura mission cancel|pause|resume|retry|stuck`: an operator's hand on running missions.

use std::time::Duration;

use aura_engine::StuckReason;
use aura_node::wire::{MissionView, StuckView};
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::Output;

use super::print_as;
use super::show::{describe, one_line};

pub(super) async fn cancel(
    client: &Client,
    out: &Output,
    id: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let m: Value = client
        .post(
            &format!("/v1/missions/{id}/cancel"),
            &json!({ "reason": reason }),
        )
        .await?;
    print_as(out, &m, |m: MissionView| describe(&m))
}

pub(super) async fn pause(
    client: &Client,
    out: &Output,
    id: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let m: Value = client
        .post(
            &format!("/v1/missions/{id}/pause"),
            &json!({ "reason": reason }),
        )
        .await?;
    print_as(out, &m, |m: MissionView| {
        format!("paused {}\n", one_line(&m))
    })
}

pub(super) async fn resume(client: &Client, out: &Output, id: &str) -> anyhow::Result<()> {
    let m: Value = client
        .post(&format!("/v1/missions/{id}/resume"), &json!({}))
        .await?;
    print_as(out, &m, |m: MissionView| {
        format!("resumed {}\n", one_line(&m))
    })
}

pub(super) async fn retry(client: &Client, out: &Output, id: &str) -> anyhow::Result<()> {
    let m: Value = client
        .post(&format!("/v1/missions/{id}/retry"), &json!({}))
        .await?;
    print_as(out, &m, |m: MissionView| {
        format!("retrying now {}\n", one_line(&m))
    })
}

pub(super) async fn stuck(
    client: &Client,
    out: &Output,
    escalated_for: Duration,
) -> anyhow::Result<()> {
    let stuck: Value = client
        .get(&format!(
            "/v1/missions/stuck?escalated_for_secs={}",
            escalated_for.as_secs()
        ))
        .await?;
    print_as(out, &stuck, |stuck: Vec<StuckView>| describe_stuck(&stuck))
}

/// One line per stuck mission: id, state, why, since.
fn describe_stuck(stuck: &[StuckView]) -> String {
    if stuck.is_empty() {
        return "no mission is stuck\n".into();
    }
    let mut text = String::new();
    for s in stuck {
        let detail = match &s.why {
            StuckReason::Escalated { action, level } => {
                format!("escalated: `{action}` waits for approval at {level}")
            }
            StuckReason::Retrying {
                call,
                attempts,
                last_error,
                retry_at,
            } => format!(
                "retrying {} after {attempts} attempt(s){}{}",
                call.as_deref().unwrap_or("the reasoner's turn"),
                last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
                retry_at
                    .map(|t| format!(" (next at {t})"))
                    .unwrap_or_default()
            ),
            StuckReason::Paused => "paused".to_owned(),
        };
        text.push_str(&format!(
            "{}  {:<11} since {}  {detail}\n",
            s.mission,
            s.state.as_str(),
            s.since,
        ));
    }
    text.push_str("hint: `aura mission retry ID` runs a waiting retry now; `aura mission resume ID` resumes a paused one\n");
    text
}
