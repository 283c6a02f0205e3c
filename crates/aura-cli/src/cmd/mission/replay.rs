//! `aura replay`: re-run missions' records on the node and check every state hash.

use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::home::Home;
use crate::output::Output;

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
        let list: Vec<Value> = client
            .get(&format!("/v1/missions?agent={}&limit=1000", args.id))
            .await?;
        list.iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect()
    } else {
        vec![args.id.clone()]
    };
    let mut results = Vec::new();
    let mut diverged = 0;
    for id in &missions {
        let r: Value = client.get(&format!("/v1/missions/{id}/replay")).await?;
        if r["ok"] != true {
            diverged += 1;
        }
        results.push(json!({ "mission": id, "replay": r }));
    }
    out.print(&results, || {
        results
            .iter()
            .map(|r| {
                let rep = &r["replay"];
                if rep["ok"] == true {
                    format!(
                        "{}  ok: every state hash reproduced ({}, {})\n",
                        r["mission"].as_str().unwrap_or("?"),
                        rep["state"].as_str().unwrap_or("?"),
                        &rep["state_hash"].as_str().unwrap_or("")
                            [..12.min(rep["state_hash"].as_str().unwrap_or("").len())]
                    )
                } else {
                    format!(
                        "{}  DIVERGED: {}\n",
                        r["mission"].as_str().unwrap_or("?"),
                        rep["divergence"].as_str().unwrap_or("?")
                    )
                }
            })
            .collect()
    })?;
    if diverged > 0 {
        return Err(crate::VerificationFailed(format!(
            "{diverged} of {} missions do not replay",
            missions.len()
        ))
        .into());
    }
    Ok(())
}
