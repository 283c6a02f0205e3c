//! `aura apikey`: the API keys a node accepts. Secrets are shown once, at creation; the
//! node stores only their digests.

use aura_core::AgentId;
use aura_core::door::{Clock as _, OsEntropy, SystemClock};
use aura_node::{ApiKeys, Role};
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Create a key; its secret is printed once
    Create {
        /// A name for the key (who or what uses it)
        name: String,
        /// operator, approver or agent
        #[arg(long)]
        role: Role,
        /// Namespaces it may act in (repeat; default: all)
        #[arg(long = "namespace", value_name = "NS")]
        namespaces: Vec<String>,
        /// For --role agent: the agent it acts as
        #[arg(long, value_name = "ID")]
        agent: Option<AgentId>,
    },
    /// List the keys (never their secrets)
    List,
    /// Revoke a key by id or name
    Revoke { key: String },
}

#[derive(Serialize)]
struct Created {
    id: String,
    name: String,
    role: Role,
    namespaces: Vec<String>,
    agent: Option<AgentId>,
    /// Shown once; store it now.
    secret: String,
}

pub(crate) fn run(home: &Home, out: &Output, cmd: Command) -> anyhow::Result<()> {
    home.require_init()?;
    let path = ApiKeys::path(home.dir());
    let mut keys = ApiKeys::load(&path)?;
    match cmd {
        Command::Create {
            name,
            role,
            namespaces,
            agent,
        } => {
            if keys.records().iter().any(|k| k.name == name) {
                return Err(hinted(
                    format!("a key named `{name}` exists"),
                    "choose another name, or revoke the old key first",
                ));
            }
            let (record, secret) = keys
                .create(
                    &name,
                    role,
                    namespaces,
                    agent,
                    SystemClock.now(),
                    &OsEntropy,
                )
                .map_err(|e| hinted(e.to_string(), "see `aura apikey create --help`"))?;
            keys.save(&path)?;
            let c = Created {
                id: record.id,
                name: record.name,
                role,
                namespaces: record.namespaces,
                agent,
                secret,
            };
            out.print(&c, || {
                format!(
                    "created {} key `{}` ({})\n\n  {}\n\nthis secret is shown once; the node keeps only its digest.\n\
                     a running node started without keys keeps serving loopback without them until restarted.\n",
                    c.role, c.name, c.id, c.secret
                )
            })
        }
        Command::List => {
            let records = keys.records().to_vec();
            out.print(&records, || {
                if records.is_empty() {
                    return "no API keys: the node serves loopback only, without authentication\n"
                        .into();
                }
                records
                    .iter()
                    .map(|k| {
                        format!(
                            "{}  {:<20} {:<9} namespaces {}{}\n",
                            k.id,
                            k.name,
                            k.role,
                            k.namespaces.join(","),
                            k.agent.map(|a| format!("  agent {a}")).unwrap_or_default()
                        )
                    })
                    .collect()
            })
        }
        Command::Revoke { key } => {
            let Some(removed) = keys.revoke(&key) else {
                return Err(hinted(
                    format!("no key `{key}`"),
                    "`aura apikey list` shows the keys",
                ));
            };
            keys.save(&path)?;
            out.print(&removed, || {
                format!("revoked key `{}` ({})\n", removed.name, removed.id)
            })
        }
    }
}
