//! Agents as actors: one task per agent owns its ledger stream and handles its inbox one
//! transaction at a time. This is what makes "one writer per agent" true: nothing else
//! appends to an agent's stream once its actor runs.

use std::sync::Arc;

use aura_core::AgentId;
use aura_ledger::entry::Kind;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Error, KIND_MESSAGE, Sender, Shared};

/// A transaction for an agent.
#[derive(Debug)]
pub(crate) enum Inbox {
    /// A message from another agent or a person. Answered with its ledger index.
    Message {
        from: Sender,
        body: Value,
        reply: oneshot::Sender<Result<u64, Error>>,
    },
}

/// The sending side of an agent's inbox.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    tx: mpsc::Sender<Inbox>,
}

impl Mailbox {
    pub(crate) async fn send(&self, item: Inbox) -> Result<(), Error> {
        self.tx.send(item).await.map_err(|_| Error::Closed)
    }
}

/// Starts an agent's actor; `next_seq` is the sequence number its next entry gets.
pub(crate) fn spawn(shared: Arc<Shared>, agent: AgentId, next_seq: u64) -> Mailbox {
    let (tx, rx) = mpsc::channel(shared.options.inbox_capacity.max(1));
    tokio::spawn(run(shared, agent, next_seq, rx));
    Mailbox { tx }
}

async fn run(
    shared: Arc<Shared>,
    agent: AgentId,
    mut next_seq: u64,
    mut rx: mpsc::Receiver<Inbox>,
) {
    while let Some(item) = rx.recv().await {
        match item {
            Inbox::Message { from, body, reply } => {
                let entry = json!({ "from": from, "body": body });
                let kind = Kind::new(KIND_MESSAGE).unwrap_or_else(|_| unreachable!("valid kind"));
                let outcome = shared
                    .append(
                        agent,
                        next_seq,
                        vec![(kind, entry.to_string().into_bytes())],
                    )
                    .await
                    .map(|r| r.entries[0].index);
                if outcome.is_ok() {
                    next_seq += 1;
                } else {
                    // A failed append leaves the stream as it was; but if the store was
                    // unsure (a failed fsync), re-read the head rather than trust memory.
                    if let Ok(Some(head)) = shared.store.head(agent).await {
                        next_seq = head.seq + 1;
                    }
                }
                let _ = reply.send(outcome);
            }
        }
    }
}
