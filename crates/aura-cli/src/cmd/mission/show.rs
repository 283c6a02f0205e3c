//! `aura mission list` and `aura mission show`: missions as the node reports them.

use serde_json::Value;

use crate::client::Client;
use crate::output::Output;

pub(super) async fn list(
    client: &Client,
    out: &Output,
    state: Option<String>,
    agent: Option<String>,
    limit: usize,
) -> anyhow::Result<()> {
    let mut query = vec![format!("limit={limit}")];
    if let Some(s) = state {
        query.push(format!("state={s}"));
    }
    if let Some(a) = agent {
        query.push(format!("agent={a}"));
    }
    let missions: Vec<Value> = client
        .get(&format!("/v1/missions?{}", query.join("&")))
        .await?;
    out.print(&missions, || {
        if missions.is_empty() {
            return "no missions\n".into();
        }
        missions
            .iter()
            .map(|m| format!("{}\n", one_line(m)))
            .collect()
    })
}

pub(super) async fn show(
    client: &Client,
    out: &Output,
    id: &str,
    full: bool,
) -> anyhow::Result<()> {
    let detail = if full { "?detail=full" } else { "" };
    let m: Value = client.get(&format!("/v1/missions/{id}{detail}")).await?;
    out.print(&m, || describe(&m))
}

pub(super) fn one_line(m: &Value) -> String {
    format!(
        "{}  {:<12} {}  {}",
        m["id"].as_str().unwrap_or("?"),
        m["state"].as_str().unwrap_or("?"),
        m["agent"].as_str().unwrap_or("?"),
        m["objective"]
            .as_str()
            .unwrap_or("?")
            .chars()
            .take(60)
            .collect::<String>()
    )
}

pub(super) fn describe(m: &Value) -> String {
    let mut text = format!(
        "mission    {}\nagent      {}\nnamespace  {}\nstate      {}\nobjective  {}\ntools      {}\nauthority  {}\nsteps      {} ({} tokens)\n",
        m["id"].as_str().unwrap_or("?"),
        m["agent"].as_str().unwrap_or("?"),
        m["namespace"].as_str().unwrap_or("?"),
        m["state"].as_str().unwrap_or("?"),
        m["objective"].as_str().unwrap_or("?"),
        m["tools"]
            .as_array()
            .map(|t| t
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        m["level"].as_str().unwrap_or("?"),
        m["steps"],
        m["tokens"],
    );
    if let Some(s) = m["summary"].as_str() {
        text.push_str(&format!("summary    {s}\n"));
    }
    if let Some(r) = m["reason"].as_str() {
        text.push_str(&format!("reason     {r}\n"));
    }
    if m["paused"].as_bool() == Some(true) {
        text.push_str("paused     resume with: aura mission resume ID\n");
    }
    for c in m["calls"].as_array().into_iter().flatten() {
        if let Some(error) = c["last_error"].as_str() {
            text.push_str(&format!(
                "call       {} `{}`: {} attempt(s), last failed: {error}{}\n",
                c["call"]["id"].as_str().unwrap_or("?"),
                c["call"]["name"].as_str().unwrap_or("?"),
                c["attempts"],
                c["retry_at"]
                    .as_str()
                    .map(|t| format!("; next at {t}"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(e) = m["escalation"].as_object() {
        text.push_str(&format!(
            "waiting    for approval at {} of `{}` {}\n           approve with: aura approve {} --as NAME\n",
            e["level"].as_str().unwrap_or("?"),
            e["action"].as_str().unwrap_or("?"),
            e["arguments"],
            m["id"].as_str().unwrap_or("?")
        ));
    }
    text.push_str("history\n");
    for c in m["history"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "  {}  {} -> {}  {}\n",
            c["at"].as_str().unwrap_or("?"),
            c["from"].as_str().unwrap_or("?"),
            c["to"].as_str().unwrap_or("?"),
            c["reason"].as_str().unwrap_or("")
        ));
    }
    text
}
