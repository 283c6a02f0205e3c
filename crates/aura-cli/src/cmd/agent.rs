//! `aura agent`: create agents, list them, message them and read their records, through a
//! running node.

use std::io::Read as _;

use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::hinted;
use crate::home::Home;
use crate::output::Output;

use super::print_as;
use aura_node::wire::{AgentView, RecordView};

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
            print_as(out, &agent, |a: AgentView| {
                format!(
                    "created {} `{}` at {} in namespace {}\n",
                    a.id, a.name, a.level, a.namespace
                )
            })
        }
        Command::List { namespace } => {
            let path = match namespace {
                Some(ns) => format!("/v1/agents?namespace={ns}"),
                None => "/v1/agents".into(),
            };
            let agents: Value = client.get(&path).await?;
            print_as(out, &agents, |agents: Vec<AgentView>| {
                if agents.is_empty() {
                    return "no agents\n".into();
                }
                agents.iter().map(|a| agent_line(a) + "\n").collect()
            })
        }
        Command::Show { id } => {
            let agent: Value = client.get(&format!("/v1/agents/{id}")).await?;
            print_as(out, &agent, |a: AgentView| describe(&a))
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
            print_as(out, &page, |page: RecordView| {
                let mut text: String = page
                    .entries
                    .iter()
                    .map(|e| {
                        format!(
                            "#{:<6} seq {:<5} {:<24} {}\n",
                            e.index, e.seq, e.kind, e.body
                        )
                    })
                    .collect();
                if let Some(next) = page.next {
                    text.push_str(&format!("… more from seq {next} (--from {next})\n"));
                }
                text
            })
        }
    }
}

/// One agent on one line: id, name, level and namespace.
pub(crate) fn agent_line(a: &AgentView) -> String {
    format!("{}  {:<24} {}  {}", a.id, a.name, a.level, a.namespace)
}

/// An agent for people: who it is, its key, and the credential its issuer signed.
pub(crate) fn describe(a: &AgentView) -> String {
    let c = &a.credential.statement;
    format!(
        "agent       {}\nname        {}\nnamespace   {}\nlevel       {}\npublic key  {}\ncreated     {}\ncredential  {} issued by {}, valid {} to {}\n",
        a.id,
        a.name,
        a.namespace,
        a.level,
        a.public_key,
        a.created_at,
        c.id,
        c.issuer,
        c.not_before,
        c.not_after
    )
}
