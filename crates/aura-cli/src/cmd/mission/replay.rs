//! `aura replay`: re-run missions' records on the node and check every state hash.

use aura_kernel::MissionState;
use aura_node::wire::{MissionView, ReplayView};
use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::home::Home;
use crate::output::Output;

use super::decode;

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// A mission id, or an agent id (replays every mission of the agent)
    id: String,
}

pub(crate) async fn replay(home: &Home, out: &Output, args: ReplayArgs) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    let missions: Vec<String> = if args.id.starts_with("agent_") {
        let list: Value = client
            .get(&format!("/v1/missions?agent={}&limit=1000", args.id))
            .await?;
        decode::<Vec<MissionView>>(&list)?
            .iter()
            .map(|m| m.id.to_string())
            .collect()
    } else {
        vec![args.id.clone()]
    };
    let mut results = Vec::new();
    let mut text = String::new();
    let mut diverged = 0;
    for id in &missions {
        let raw: Value = client.get(&format!("/v1/missions/{id}/replay")).await?;
        let r: ReplayView = decode(&raw)?;
        if r.ok {
            text.push_str(&format!(
                "{id}  ok: every state hash reproduced ({}, {})\n",
                r.state.map_or("?", MissionState::as_str),
                r.state_hash
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(12)
                    .collect::<String>()
            ));
        } else {
            diverged += 1;
            text.push_str(&format!(
                "{id}  DIVERGED: {}\n",
                r.divergence.as_deref().unwrap_or("?")
            ));
        }
        results.push(json!({ "mission": id, "replay": raw }));
    }
    out.print(&results, || text)?;
    if diverged > 0 {
        return Err(crate::VerificationFailed(format!(
            "{diverged} of {} missions do not replay",
            missions.len()
        ))
        .into());
    }
    Ok(())
}
