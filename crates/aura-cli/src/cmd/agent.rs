//! `aura agent`: create agents, list them, message them and read their records, through a
//! running node.

use std::io::Read as _;

use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create an agent; the node issues its credential
    Create {
        name: String,
        /// Authority level: L1, L2, L3 or L4
        #[arg(long, default_value = "L2")]
        level: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The agent's own public key (hex), if it holds its key itself
        #[arg(long)]
        public_key: Option<String>,
    },
    /// List agents
    List {
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Show one agent and its credential
    Show { id: String },
    /// Send an agent a message (JSON from --body, or stdin)
    Send {
        id: String,
        /// The message: any JSON (a plain string is sent as a JSON string)
        #[arg(long)]
        body: Option<String>,
    },
    /// Read an agent's record
    Record {
        id: String,
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

pub(crate) async fn run(home: &Home, out: &Output, args: Args) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    match args.command {
        Command::Create {
            name,
            level,
            namespace,
            public_key,
        } => {
            let mut body = json!({ "name": name, "level": level, "namespace": namespace });
            if let Some(k) = public_key {
                body["public_key"] = Value::String(k);
            }
            let agent: Value = client.post("/v1/agents", &body).await?;
            out.print(&agent, || {
                format!(
                    "created {} `{}` at {} in namespace {}\n",
                    agent["id"].as_str().unwrap_or("?"),
                    agent["name"].as_str().unwrap_or("?"),
                    agent["level"].as_str().unwrap_or("?"),
                    agent["namespace"].as_str().unwrap_or("?")
                )
            })
        }
        Command::List { namespace } => {
            let path = match namespace {
                Some(ns) => format!("/v1/agents?namespace={ns}"),
                None => "/v1/agents".into(),
            };
            let agents: Vec<Value> = client.get(&path).await?;
            out.print(&agents, || {
                if agents.is_empty() {
                    return "no agents\n".into();
                }
                agents
                    .iter()
                    .map(|a| {
                        format!(
                            "{}  {:<24} {}  {}\n",
                            a["id"].as_str().unwrap_or("?"),
                            a["name"].as_str().unwrap_or("?"),
                            a["level"].as_str().unwrap_or("?"),
                            a["namespace"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
        }
        Command::Show { id } => {
            let agent: Value = client.get(&format!("/v1/agents/{id}")).await?;
            out.print(&agent, || {
                serde_json::to_string_pretty(&agent).unwrap_or_default() + "\n"
            })
        }
        Command::Send { id, body } => {
            let text = match body {
                Some(b) => b,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            let text = text.trim();
            if text.is_empty() {
                return Err(hinted(
                    "the message is empty",
                    "give --body JSON or pipe it in",
                ));
            }
            let value: Value =
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
            let sent: Value = client
                .post(
                    &format!("/v1/agents/{id}/messages"),
                    &json!({ "body": value }),
                )
                .await?;
            out.print(&sent, || {
                format!("delivered: ledger entry #{}\n", sent["index"])
            })
        }
        Command::Record { id, from, limit } => {
            let page: Value = client
                .get(&format!("/v1/agents/{id}/record?from={from}&limit={limit}"))
                .await?;
            out.print(&page, || {
                let mut text: String = page["entries"]
                    .as_array()
                    .map(|es| {
                        es.iter()
                            .map(|e| {
                                format!(
                                    "#{:<6} seq {:<5} {:<24} {}\n",
                                    e["index"],
                                    e["seq"],
                                    e["kind"].as_str().unwrap_or("?"),
                                    e["body"]
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(next) = page["next"].as_u64() {
                    text.push_str(&format!("… more from seq {next} (--from {next})\n"));
                }
                text
            })
        }
    }
}
