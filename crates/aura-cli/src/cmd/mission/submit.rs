//! `aura mission submit`: a mission from a file or flags, optionally followed live.

use std::path::PathBuf;

use aura_node::wire::MissionView;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::Client;
use crate::hinted;
use crate::output::Output;

use super::show::one_line;
use super::watch::watch;
use super::{decode, print_as};

#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// A mission file (TOML, or JSON if it ends in .json)
    file: Option<PathBuf>,
    /// The agent that carries it out
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    objective: Option<String>,
    /// A tool it may use (repeat)
    #[arg(long = "tool", value_name = "TOOL")]
    tools: Vec<String>,
    /// Seconds until it times out
    #[arg(long = "timeout", value_name = "SECS")]
    timeout_secs: Option<u64>,
    /// Authority level (default: the agent's)
    #[arg(long)]
    level: Option<String>,
    /// A named workspace of the namespace
    #[arg(long)]
    workspace: Option<String>,
    /// A configured reasoner (default: the node's)
    #[arg(long)]
    reasoner: Option<String>,
    #[arg(long)]
    max_steps: Option<u32>,
    /// In a cluster: a region whose nodes may run it (repeat; default: any)
    #[arg(long = "region", value_name = "REGION")]
    regions: Vec<String>,
    /// Follow the mission until it ends
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MissionFile {
    agent: Option<String>,
    objective: Option<String>,
    #[serde(default)]
    tools: Vec<String>,
    timeout_secs: Option<u64>,
    level: Option<String>,
    workspace: Option<String>,
    reasoner: Option<String>,
    max_steps: Option<u32>,
    max_tokens: Option<u64>,
    #[serde(default)]
    network: Vec<String>,
    /// Retry policy and step timeouts, checked by the node.
    steps: Option<Value>,
    tool_steps: Option<Value>,
    /// The regions whose nodes may run it (its boundary in a cluster).
    #[serde(default)]
    regions: Vec<String>,
}

pub(super) async fn submit(client: &Client, out: &Output, s: SubmitArgs) -> anyhow::Result<()> {
    let mut f = match &s.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let parsed = if path.extension().is_some_and(|e| e == "json") {
                serde_json::from_str::<MissionFile>(&text).map_err(|e| e.to_string())
            } else {
                toml::from_str::<MissionFile>(&text)
                    .map_err(|e| e.to_string().trim().replace('\n', " "))
            };
            parsed.map_err(|e| {
                hinted(
                    format!("{} is not a mission file: {e}", path.display()),
                    "see `aura mission submit --help`",
                )
            })?
        }
        None => MissionFile {
            agent: None,
            objective: None,
            tools: Vec::new(),
            timeout_secs: None,
            level: None,
            workspace: None,
            reasoner: None,
            max_steps: None,
            max_tokens: None,
            network: Vec::new(),
            steps: None,
            tool_steps: None,
            regions: Vec::new(),
        },
    };
    // Flags override the file.
    f.agent = s.agent.or(f.agent);
    f.objective = s.objective.or(f.objective);
    if !s.tools.is_empty() {
        f.tools = s.tools;
    }
    f.timeout_secs = s.timeout_secs.or(f.timeout_secs);
    f.level = s.level.or(f.level);
    f.workspace = s.workspace.or(f.workspace);
    f.reasoner = s.reasoner.or(f.reasoner);
    f.max_steps = s.max_steps.or(f.max_steps);
    if !s.regions.is_empty() {
        f.regions = s.regions;
    }
    let missing = |what: &str| {
        hinted(
            format!("the mission needs {what}"),
            "give it in the file or as a flag; see `aura mission submit --help`",
        )
    };
    let body = json!({
        "agent": f.agent.ok_or_else(|| missing("an agent (--agent)"))?,
        "objective": f.objective.ok_or_else(|| missing("an objective (--objective)"))?,
        "tools": if f.tools.is_empty() { return Err(missing("at least one tool (--tool)")) } else { f.tools },
        "timeout_secs": f.timeout_secs.ok_or_else(|| missing("a timeout (--timeout SECS)"))?,
        "level": f.level,
        "workspace": f.workspace,
        "reasoner": f.reasoner,
        "max_steps": f.max_steps,
        "max_tokens": f.max_tokens,
        "network": f.network,
        "steps": f.steps,
        "tool_steps": f.tool_steps.unwrap_or_else(|| json!({})),
        "regions": f.regions,
    });
    let m: Value = client.post("/v1/missions", &body).await?;
    if s.watch {
        let id = decode::<MissionView>(&m)?.id.to_string();
        if !out.is_json() {
            println!("submitted {id}");
        }
        return watch(client, out, &id).await;
    }
    print_as(out, &m, |m: MissionView| {
        format!("submitted {}\n", one_line(&m))
    })
}
