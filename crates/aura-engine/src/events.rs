//! The event stream: every committed ledger entry, in commit order, with its ledger index
//! as the sequence number; plus ephemeral progress (reasoner token deltas) that is not
//! recorded and so cannot be replayed.

use std::sync::Arc;

use aura_core::{AgentId, MissionId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A committed ledger entry. `seq` is its index in the ledger.
    Entry {
        seq: u64,
        agent: AgentId,
        agent_seq: u64,
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        mission: Option<MissionId>,
        recorded_at: Timestamp,
        body: Value,
    },
    /// Text a reasoner is producing, before its turn is recorded. Not replayable.
    Delta { mission: MissionId, text: String },
    /// The subscriber fell behind and missed events; it should resume from `next_seq`.
    Lagged { next_seq: u64 },
}

impl StreamEvent {
    pub fn seq(&self) -> Option<u64> {
        match self {
            StreamEvent::Entry { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    pub fn mission(&self) -> Option<MissionId> {
        match self {
            StreamEvent::Entry { mission, .. } => *mission,
            StreamEvent::Delta { mission, .. } => Some(*mission),
            StreamEvent::Lagged { .. } => None,
        }
    }

    pub fn agent(&self) -> Option<AgentId> {
        match self {
            StreamEvent::Entry { agent, .. } => Some(*agent),
            _ => None,
        }
    }
}

/// Publishes stream events to every subscriber.
#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<StreamEvent>>,
}

impl EventHub {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        EventHub { tx }
    }

    pub fn publish(&self, event: StreamEvent) {
        // No subscribers is fine: the ledger keeps everything that matters.
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StreamEvent>> {
        self.tx.subscribe()
    }

    /// Whether anyone listens: with no one, an event would be built only to be dropped.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}

/// The body of an entry as JSON if it is JSON, else as a string of base64.
pub fn body_value(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| {
        Value::String(body.iter().map(|b| format!("{b:02x}")).collect::<String>())
    })
}
