//! `aura memory`: store, search, list and forget the memories of a namespace's spaces
//! through a running node (`/v1/memory`, operators only; docs/memory.md).

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

/// Which memory: a namespace and one of its spaces.
#[derive(Debug, clap::Args)]
struct Where {
    /// The namespace
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The space: shared:<name> (shared with agents by policy), agent:<agent id> (that
    /// agent's own) or episodes:<agent id> (its past missions, read-only)
    #[arg(long, default_value = "shared:default")]
    space: String,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Embed and store a fact or document (recorded in the node's ledger)
    Store {
        #[command(flatten)]
        at: Where,
        /// The text to remember
        text: String,
        /// Its name in the space [default: m- and the text's SHA-256's first 16 hex digits]
        #[arg(long)]
        id: Option<String>,
        /// What it is, such as fact or document
        #[arg(long, default_value = "fact")]
        kind: String,
    },
    /// The memories most similar to a query, most similar first
    Search {
        #[command(flatten)]
        at: Where,
        query: String,
        /// How many to show (1-50)
        #[arg(short, long, default_value_t = 5)]
        k: u32,
    },
    /// A space's memories, in the order they were stored
    List {
        #[command(flatten)]
        at: Where,
    },
    /// Forget a memory (recorded in the node's ledger; it cannot be undone)
    Forget {
        #[command(flatten)]
        at: Where,
        id: String,
    },
}

/// The space's path on the node; names are checked by the node, but a `/` or `?` here
/// would address another route, so it is refused first.
fn path(at: &Where) -> anyhow::Result<String> {
    for (what, value) in [("namespace", &at.namespace), ("space", &at.space)] {
        if value.is_empty()
            || value.contains(['/', '?', '#', '%'])
            || value.contains(char::is_whitespace)
        {
            return Err(hinted(
                format!("`{value}` is not a {what}"),
                "spaces look like shared:handbook or agent:agent_...; namespaces like team-a",
            ));
        }
    }
    Ok(format!("/v1/memory/{}/{}", at.namespace, at.space))
}

fn text_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// One memory as a line: id, kind, score (for searches), and the text's first line.
fn memory_line(m: &Value) -> String {
    let text = text_of(m, "text");
    let first = text.lines().next().unwrap_or_default();
    let short: String = first.chars().take(100).collect();
    let more = if short.len() < text.len() { "…" } else { "" };
    match m["score"].as_str() {
        Some(score) => format!(
            "{score}  {}  [{}]  {short}{more}\n",
            text_of(m, "id"),
            text_of(m, "kind")
        ),
        None => format!(
            "{}  [{}]  {short}{more}\n",
            text_of(m, "id"),
            text_of(m, "kind")
        ),
    }
}

fn memories(v: &Value, empty: &str) -> String {
    match v["memories"].as_array() {
        Some(list) if !list.is_empty() => list.iter().map(memory_line).collect(),
        _ => format!("{empty}\n"),
    }
}

pub(crate) async fn run(home: &Home, out: &Output, args: Args) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    match args.command {
        Command::Store { at, text, id, kind } => {
            let mut body = json!({"text": text, "kind": kind});
            if let Some(id) = id {
                body["id"] = Value::String(id);
            }
            let stored: Value = client.post(&path(&at)?, &body).await?;
            out.print(&stored, || {
                format!(
                    "stored {} in {} of namespace {} (ledger entry {}; text sha256 {})\n",
                    text_of(&stored, "id"),
                    at.space,
                    at.namespace,
                    stored["entry"],
                    text_of(&stored, "text_sha256"),
                )
            })
        }
        Command::Search { at, query, k } => {
            let found: Value = client
                .post(
                    &format!("{}/search", path(&at)?),
                    &json!({"query": query, "k": k}),
                )
                .await?;
            out.print(&found, || memories(&found, "nothing found"))
        }
        Command::List { at } => {
            let listed: Value = client.get(&path(&at)?).await?;
            out.print(&listed, || memories(&listed, "no memories"))
        }
        Command::Forget { at, id } => {
            let forgotten: Value = client
                .post(&format!("{}/forget", path(&at)?), &json!({"id": id}))
                .await?;
            out.print(&forgotten, || {
                format!(
                    "forgot {id} in {} of namespace {} (ledger entry {})\n",
                    at.space, at.namespace, forgotten["entry"]
                )
            })
        }
    }
}
