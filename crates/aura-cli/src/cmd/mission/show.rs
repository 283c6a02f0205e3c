//! `aura mission list` and `aura mission show`: missions as the node reports them.

use aura_node::wire::MissionView;
use serde_json::Value;

use crate::client::Client;
use crate::output::Output;

use super::print_as;

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
    let missions: Value = client
        .get(&format!("/v1/missions?{}", query.join("&")))
        .await?;
    print_as(out, &missions, |missions: Vec<MissionView>| {
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
    print_as(out, &m, |m: MissionView| describe(&m))
}

/// A mission in one line: id, state, agent and the start of its objective.
pub(super) fn one_line(m: &MissionView) -> String {
    format!(
        "{}  {:<12} {}  {}",
        m.id,
        m.state.as_str(),
        m.agent,
        m.objective.chars().take(60).collect::<String>()
    )
}

/// A mission for people: what it is, where it stands, what it waits for, its history.
pub(super) fn describe(m: &MissionView) -> String {
    let mut text = format!(
        "mission    {}\nagent      {}\nnamespace  {}\nstate      {}\nobjective  {}\ntools      {}\nauthority  {}\nsteps      {} ({} tokens)\n",
        m.id,
        m.agent,
        m.namespace,
        m.state,
        m.objective,
        m.tools.join(", "),
        m.level,
        m.steps,
        m.tokens,
    );
    if let Some(s) = &m.summary {
        text.push_str(&format!("summary    {s}\n"));
    }
    if let Some(r) = &m.reason {
        text.push_str(&format!("reason     {r}\n"));
    }
    if m.paused {
        text.push_str("paused     resume with: aura mission resume ID\n");
    }
    for c in &m.calls {
        if let Some(error) = &c.last_error {
            text.push_str(&format!(
                "call       {} `{}`: {} attempt(s), last failed: {error}{}\n",
                c.call.id,
                c.call.name,
                c.attempts,
                c.retry_at
                    .map(|t| format!("; next at {t}"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(e) = &m.escalation {
        text.push_str(&format!(
            "waiting    for approval at {} of `{}` {}\n           approve with: aura approve {} --as NAME\n",
            e.level,
            e.action,
            e.arguments.as_ref().unwrap_or(&Value::Null),
            m.id
        ));
    }
    text.push_str("history\n");
    for c in &m.history {
        text.push_str(&format!(
            "  {}  {} -> {}  {}\n",
            c.at, c.from, c.to, c.reason
        ));
    }
    text
}
