//! `aura mission cancel|pause|resume|retry|stuck`: an operator's hand on running missions.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Client;
use crate::output::Output;

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
    out.print(&m, || describe(&m))
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
    out.print(&m, || format!("paused {}\n", one_line(&m)))
}

pub(super) async fn resume(client: &Client, out: &Output, id: &str) -> anyhow::Result<()> {
    let m: Value = client
        .post(&format!("/v1/missions/{id}/resume"), &json!({}))
        .await?;
    out.print(&m, || format!("resumed {}\n", one_line(&m)))
}

pub(super) async fn retry(client: &Client, out: &Output, id: &str) -> anyhow::Result<()> {
    let m: Value = client
        .post(&format!("/v1/missions/{id}/retry"), &json!({}))
        .await?;
    out.print(&m, || format!("retrying now {}\n", one_line(&m)))
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
    out.print(&stuck, || describe_stuck(&stuck))
}

/// One line per stuck mission: id, state, why, since.
fn describe_stuck(stuck: &Value) -> String {
    let rows = stuck.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        return "no mission is stuck\n".into();
    }
    let mut text = String::new();
    for s in rows {
        let why = &s["why"];
        let detail = match why["kind"].as_str().unwrap_or("?") {
            "escalated" => format!(
                "escalated: `{}` waits for approval at {}",
                why["action"].as_str().unwrap_or("?"),
                why["level"].as_str().unwrap_or("?")
            ),
            "retrying" => format!(
                "retrying {} after {} attempt(s){}{}",
                why["call"].as_str().unwrap_or("the reasoner's turn"),
                why["attempts"],
                why["last_error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
                why["retry_at"]
                    .as_str()
                    .map(|t| format!(" (next at {t})"))
                    .unwrap_or_default()
            ),
            other => other.to_owned(),
        };
        text.push_str(&format!(
            "{}  {:<11} since {}  {detail}\n",
            s["mission"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            s["since"].as_str().unwrap_or("?"),
        ));
    }
    text.push_str("hint: `aura mission retry ID` runs a waiting retry now; `aura mission resume ID` resumes a paused one\n");
    text
}
