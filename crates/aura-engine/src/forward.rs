//! Event forwarding: every commit the store makes is published to the [`EventHub`] as a
//! stream event, in ledger order, with nothing skipped.

use std::sync::Arc;

use aura_store::{Store, StoredEntry};
use tokio::sync::watch;

use crate::events::{EventHub, StreamEvent, body_value};

/// Turns a stored entry into a stream event.
pub fn stream_event(e: &StoredEntry) -> StreamEvent {
    let body = body_value(&e.entry.body);
    let mission = body
        .get("mission")
        .and_then(|m| m.as_str())
        .and_then(|m| m.parse().ok());
    StreamEvent::Entry {
        seq: e.entry.index,
        agent: e.entry.agent,
        agent_seq: e.entry.seq,
        kind: e.entry.kind.to_string(),
        mission,
        recorded_at: e.entry.recorded_at,
        body,
    }
}

/// Publishes every commit to the hub in ledger order. If it ever falls behind the store's
/// commit stream, it reads what it missed from the ledger, so no entry is skipped.
pub(crate) async fn forward_commits(
    store: Arc<dyn Store>,
    events: EventHub,
    mut stopping: watch::Receiver<bool>,
    mut next: u64,
) {
    let mut rx = store.subscribe();
    loop {
        let received = tokio::select! {
            r = rx.recv() => r,
            _ = stopping.changed() => return,
        };
        let batch = match received {
            Ok(batch) => batch,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                catch_up(store.as_ref(), &events, &mut next, u64::MAX).await;
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(first) = batch.entries.first().map(|e| e.entry.index) else {
            continue;
        };
        if first > next {
            catch_up(store.as_ref(), &events, &mut next, first).await;
        }
        // Building an event parses the entry's body; with no one subscribed it would be
        // dropped at once, so it is not built. Nothing is lost by that: a subscriber
        // subscribes before it reads the ledger (aura-node's event stream does), and
        // these entries were durable before they reached us, so it reads them there.
        let listening = events.has_subscribers();
        for e in &batch.entries {
            if e.entry.index == next {
                if listening {
                    events.publish(stream_event(e));
                }
                next += 1;
            }
        }
    }
}

async fn catch_up(store: &dyn Store, events: &EventHub, next: &mut u64, until: u64) {
    while *next < until {
        let Ok(entries) = store.entries(*next, 1000).await else {
            return;
        };
        if entries.is_empty() {
            return;
        }
        for e in entries.iter().take_while(|e| e.entry.index < until) {
            events.publish(stream_event(e));
            *next = e.entry.index + 1;
        }
        if entries.last().is_some_and(|e| e.entry.index + 1 >= until) {
            return;
        }
    }
}
