//! `GET /v1/events`: the event stream over a WebSocket. Every committed ledger entry the
//! caller may see, in ledger order, each with its ledger index as `seq`; plus live
//! reasoner token deltas (`type: delta`), which are not recorded and not replayed.
//!
//! `?from=N` resumes from ledger index N: the server reads the ledger from N up to the live
//! edge, then follows new commits, so a client that reconnects with the last `seq` it saw
//! plus one misses nothing and sees nothing twice.
//!
//! Who sees what: an entry exactly when its caller may read that agent's record over
//! HTTP (`GET /v1/agents/{id}/record`: the agent's namespace, and for an agent key only
//! its own agent; the node's own stream only to operators of every namespace); a delta
//! when its caller may read the record of the mission's agent, where the turn it belongs to
//! will be recorded. The key is checked again a few times a second: a socket whose key was
//! revoked (or whose role or namespaces changed) is closed with code 1008 within about a
//! second of the key file changing. A stopping node closes every socket (1001).

use std::sync::Arc;
use std::time::Duration;

use aura_core::{AgentId, MissionId};
use aura_engine::StreamEvent;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::may_read_record;
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;

/// How often an open socket's key is checked against the key file.
const KEY_CHECK: Duration = Duration::from_millis(250);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Resume from this ledger index (default: only new events).
    from: Option<u64>,
    /// Only this agent's events.
    agent: Option<String>,
    /// Only this mission's events.
    mission: Option<String>,
}

struct Filter {
    caller: Caller,
    agent: Option<AgentId>,
    mission: Option<MissionId>,
}

impl Filter {
    fn admits(&self, state: &AppState, event: &StreamEvent) -> bool {
        if let (Some(want), Some(m)) = (self.mission, event.mission())
            && want != m
        {
            return false;
        }
        if self.mission.is_some() && event.mission().is_none() {
            return false;
        }
        if let (Some(want), Some(a)) = (self.agent, event.agent())
            && want != a
        {
            return false;
        }
        match event {
            StreamEvent::Lagged { .. } => true,
            StreamEvent::Entry { agent, .. } => may_read_record(state, &self.caller, *agent),
            // A delta is part of a turn the mission's agent will record: it goes to whoever
            // may read that record. A mission the node does not know (pruned, say) is its
            // operators' of every namespace only.
            StreamEvent::Delta { mission, .. } => match state.engine.mission(*mission) {
                Some(m) => may_read_record(state, &self.caller, m.agent),
                None => self.caller.role == Role::Operator && self.caller.namespaces.is_none(),
            },
        }
    }
}

/// Streams events over a WebSocket (JSON text frames).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 101, description = "switching to the WebSocket protocol"), (status = 400, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn events(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let agent = q
        .agent
        .map(|a| {
            a.parse::<AgentId>()
                .map_err(|_| ApiError::bad_request("invalid_agent", "`agent` is not an agent id"))
        })
        .transpose()?;
    let mission = q
        .mission
        .map(|m| {
            m.parse::<MissionId>().map_err(|_| {
                ApiError::bad_request("invalid_mission", "`mission` is not a mission id")
            })
        })
        .transpose()?;
    let filter = Filter {
        caller,
        agent,
        mission,
    };
    let limit = state.limits.ws_frame_bytes;
    Ok(ws
        // Browsers send their key as a subprotocol (see `crate::WS_KEY_PROTOCOL`) and fail
        // the connection unless the server picks one of theirs: this is the one to pick.
        .protocols([crate::WS_PROTOCOL])
        .max_frame_size(limit)
        .max_message_size(limit)
        .on_upgrade(move |socket| stream(socket, state, filter, q.from)))
}

async fn send(socket: &mut WebSocket, event: &StreamEvent) -> bool {
    match serde_json::to_string(event) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => true,
    }
}

/// Closes the socket with `code` and a reason.
async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

const REVOKED: &str = "the api key was revoked or changed";

/// Sends ledger entries from `next` to the live edge; returns where it stopped.
async fn backfill(
    socket: &mut WebSocket,
    state: &AppState,
    filter: &Filter,
    mut next: u64,
) -> Option<u64> {
    loop {
        // A long backfill must not outlive its key either.
        if !state.keys.still_valid(&filter.caller) {
            return None;
        }
        let entries = state.engine.store().entries(next, 500).await.ok()?;
        for e in &entries {
            let event = aura_engine::stream_event(e);
            if filter.admits(state, &event) && !send(socket, &event).await {
                return None;
            }
            next = e.entry.index + 1;
        }
        if entries.len() < 500 {
            return Some(next);
        }
    }
}

async fn stream(mut socket: WebSocket, state: AppState, filter: Filter, from: Option<u64>) {
    // Subscribe before reading the ledger, so that nothing committed in between is lost.
    let mut rx = state.engine.events().subscribe();
    let mut next = match from {
        Some(from) => match backfill(&mut socket, &state, &filter, from).await {
            Some(n) => n,
            None if !state.keys.still_valid(&filter.caller) => {
                return close(socket, close_code::POLICY, REVOKED).await;
            }
            None => return,
        },
        None => state.engine.store().tree_size().await.unwrap_or(0),
    };
    let mut stopping = state.stopping.clone();
    let mut check = tokio::time::interval(KEY_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Ok(event) => {
                    let event: Arc<StreamEvent> = event;
                    if let Some(seq) = event.seq() {
                        if seq < next {
                            continue;
                        }
                        next = seq + 1;
                    }
                    if filter.admits(&state, &event) && !send(&mut socket, &event).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Fell behind the hub: read what was missed from the ledger.
                    match backfill(&mut socket, &state, &filter, next).await {
                        Some(n) => next = n,
                        None if !state.keys.still_valid(&filter.caller) => {
                            return close(socket, close_code::POLICY, REVOKED).await;
                        }
                        None => return,
                    }
                }
                Err(RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = check.tick() => {
                if !state.keys.still_valid(&filter.caller) {
                    return close(socket, close_code::POLICY, REVOKED).await;
                }
            }
            () = crate::server::stopped(&mut stopping) => {
                return close(socket, close_code::AWAY, "the node is stopping").await;
            }
        }
    }
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}
