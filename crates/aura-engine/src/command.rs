//! What others send an agent's actor: the commands of its inbox ([`Inbox`]), the
//! operator's [`Control`]s, and the [`Mailbox`] they go through.
//!
//! A leaf module: the handle that sends commands and the actor that takes them both
//! depend on it, and it on neither (Restate keeps its invoker's handle and commands
//! apart from the invoker in the same way), so the two never import each other.

use std::sync::Arc;

use aura_core::{AgentId, MissionId};
use aura_identity::{Approval, Credential, Signed};
use aura_kernel::MissionSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;

/// Who sent a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Sender {
    Agent(AgentId),
    Operator(String),
}

/// A transaction for an agent.
#[derive(Debug)]
pub(crate) enum Inbox {
    /// A message from another agent or a person. Answered with its ledger index.
    Message {
        from: Sender,
        body: Value,
        reply: oneshot::Sender<Result<u64, Error>>,
    },
    /// A new mission for this agent, under `id` if one was drawn in advance (a
    /// schedule's firing records it first); an id already known is answered as submitted.
    Submit {
        spec: Box<MissionSpec>,
        id: Option<MissionId>,
        reply: oneshot::Sender<Result<MissionId, Error>>,
    },
    /// A person's signed answer to an escalation.
    Answer {
        mission: MissionId,
        approval: Box<Signed<Approval>>,
        credential: Box<Signed<Credential>>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Stop a mission.
    Cancel {
        mission: MissionId,
        by: String,
        reason: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// A mission's deadline passed.
    Deadline { mission: MissionId },
    /// A mission's retry is due.
    Wake { mission: MissionId },
    /// An operator pauses, resumes or hurries a mission.
    Control {
        mission: MissionId,
        control: Control,
        by: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

/// What an operator can do to a mission besides cancelling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// No step starts until it is resumed (a step under way finishes first).
    Pause {
        reason: String,
    },
    Resume,
    /// Waiting retries run now instead of at their due time.
    RetryNow,
}

/// The sending side of an agent's inbox.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    tx: mpsc::Sender<Inbox>,
    /// Woken when something that must not wait for a reasoner's turn arrives (a cancel, a
    /// deadline): the actor drops the turn in flight, unrecorded, and handles it first.
    pub(crate) interrupt: Arc<tokio::sync::Notify>,
}

impl Mailbox {
    /// A new inbox holding at most `capacity` commands: its sending side, and the
    /// receiving side for the actor.
    pub(crate) fn new(capacity: usize) -> (Mailbox, mpsc::Receiver<Inbox>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mailbox = Mailbox {
            tx,
            interrupt: Arc::new(tokio::sync::Notify::new()),
        };
        (mailbox, rx)
    }

    pub(crate) async fn send(&self, item: Inbox) -> Result<(), Error> {
        let urgent = matches!(item, Inbox::Cancel { .. } | Inbox::Deadline { .. });
        self.tx.send(item).await.map_err(|_| Error::Closed)?;
        if urgent {
            // Only a turn being awaited right now is interrupted; nothing is stored for
            // later, so a later turn is never dropped for a cancel already handled.
            self.interrupt.notify_waiters();
        }
        Ok(())
    }
}
