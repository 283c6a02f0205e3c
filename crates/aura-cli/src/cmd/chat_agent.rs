//! `aura chat --agent`: a durable conversation with an agent through a running node.
//!
//! An automaton, not engine code: each message is a mission of the agent (tool
//! `mission.finish` only; the reply is its summary), and the missions of one conversation
//! share a workspace named `chat-<conversation>`, which is the conversation's id. Each
//! mission's objective carries the conversation so far, read back from the node's earlier
//! missions of that conversation, so the conversation is in the ledger (every turn judged
//! by policy, recorded, replayable) and survives restarts of the node and of this command.

use std::io::BufRead as _;

use aura_node::wire::MissionView;
use serde::Serialize;
use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::hinted;
use crate::home::Home;
use crate::output::Output;

use super::automaton::until_ended;
use super::decode;

/// How many earlier exchanges each message carries.
const HISTORY: usize = 20;
/// Where the user's message starts and ends in a turn's objective.
const SAYS: &str = "\nThe user says:\n";
const REPLY: &str = "\n\nReply by calling mission.finish with your answer as the summary.";
/// The longest message taken (a message is a mission's objective, not a file).
const MAX_MESSAGE: usize = 8 * 1024;

/// What one `aura chat --agent` needs.
#[derive(Debug)]
pub(crate) struct AgentChat {
    pub(crate) node: NodeArgs,
    pub(crate) agent: String,
    pub(crate) conversation: String,
    pub(crate) reasoner: Option<String>,
    pub(crate) timeout_secs: u64,
}

#[derive(Serialize)]
struct Reply<'a> {
    mission: &'a str,
    state: &'a str,
    reply: &'a str,
}

/// The conversation's workspace name, which is its id.
fn workspace(conversation: &str) -> String {
    format!("chat-{conversation}")
}

/// The conversation so far: (what the user said, what the agent answered), oldest first,
/// from the agent's completed missions in the conversation's workspace.
async fn history(client: &Client, c: &AgentChat) -> anyhow::Result<Vec<(String, String)>> {
    let all: Value = client
        .get(&format!("/v1/missions?agent={}&limit=1000", c.agent))
        .await?;
    let mut turns: Vec<MissionView> = decode::<Vec<MissionView>>(&all)?
        .into_iter()
        .filter(|m| m.workspace.as_deref() == Some(workspace(&c.conversation).as_str()))
        .filter(|m| m.state.as_str() == "completed")
        .collect();
    turns.sort_by_key(|m| m.submitted_at);
    Ok(turns
        .into_iter()
        .filter_map(|m| {
            let said = m.objective.split_once(SAYS)?.1;
            let said = said.split_once(REPLY).map_or(said, |(s, _)| s);
            Some((said.to_owned(), m.summary.unwrap_or_default()))
        })
        .collect())
}

fn objective(c: &AgentChat, earlier: &[(String, String)], message: &str) -> String {
    let mut text = format!(
        "You are in a conversation with a person (conversation `{}`, message {}).",
        c.conversation,
        earlier.len() + 1
    );
    let recent = &earlier[earlier.len().saturating_sub(HISTORY)..];
    if !recent.is_empty() {
        text.push_str(" The conversation so far:\n");
        for (said, answered) in recent {
            text.push_str(&format!("User: {said}\nYou: {answered}\n"));
        }
    }
    text.push_str(SAYS);
    text.push_str(message);
    text.push_str(REPLY);
    text
}

pub(crate) async fn run(home: &Home, out: &Output, c: &AgentChat) -> anyhow::Result<()> {
    if c.conversation.is_empty()
        || c.conversation.len() > 64
        || !c
            .conversation
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        return Err(hinted(
            format!("`{}` is not a conversation name", c.conversation),
            "use 1-64 letters, digits, - and _",
        ));
    }
    let client = Client::new(home, &c.node)?;
    let interactive = !out.is_json() && std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut earlier = history(&client, c).await?;
    if interactive {
        eprintln!(
            "chatting with {} (conversation `{}`, {} earlier messages); /exit or Ctrl-D ends",
            c.agent,
            c.conversation,
            earlier.len()
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" => break,
            _ => {}
        }
        if text.len() > MAX_MESSAGE {
            return Err(hinted(
                format!(
                    "the message is {} bytes; at most {MAX_MESSAGE} are taken",
                    text.len()
                ),
                "send a shorter message",
            ));
        }
        let mut body = json!({
            "agent": c.agent,
            "objective": objective(c, &earlier, text),
            "tools": ["mission.finish"],
            "timeout_secs": c.timeout_secs,
            "workspace": workspace(&c.conversation),
            "max_steps": 4,
        });
        if let Some(r) = &c.reasoner {
            body["reasoner"] = json!(r);
        }
        let m: Value = client.post("/v1/missions", &body).await?;
        let id = decode::<MissionView>(&m)?.id.to_string();
        let end = until_ended(&client, &id, c.timeout_secs).await?;
        let view = decode::<MissionView>(&end)?;
        let state = view.state.as_str();
        let reply = match (&view.summary, &view.reason) {
            (Some(s), _) if state == "completed" => s.clone(),
            (_, Some(r)) => r.clone(),
            _ => String::new(),
        };
        out.line(
            &Reply {
                mission: &id,
                state,
                reply: &reply,
            },
            || {
                if state == "completed" {
                    reply.clone()
                } else {
                    format!("({id} {state}: {reply})")
                }
            },
        )?;
        if state == "completed" {
            earlier.push((text.to_owned(), reply));
        }
    }
    Ok(())
}
