//! `GET /v1/events`: the event stream over a WebSocket. Every committed ledger entry the
//! caller may see, in ledger order, each with its ledger index as `seq`; plus live
//! reasoner token deltas (`type: delta`), which are not recorded and not replayed.
//!
//! `?from=N` resumes from ledger index N: the server reads the ledger from N up to the live
//! edge, then follows new commits, so a client that reconnects with the last `seq` it saw
//! plus one misses nothing and sees nothing twice.

use std::sync::Arc;

use aura_core::{AgentId, MissionId};
use aura_engine::StreamEvent;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;

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
        if let StreamEvent::Lagged { .. } = event {
            return true;
        }
        let agent = match event {
            StreamEvent::Entry { agent, .. } => Some(*agent),
            _ => None,
        };
        if let (Some(want), Some(a)) = (self.agent, agent)
            && want != a
        {
            return false;
        }
        match agent {
            Some(a) => match state.engine.agent(a) {
                Some(info) => state.may_see(&self.caller, &info.namespace),
                None => self.caller.role == Role::Operator && self.caller.namespaces.is_none(),
            },
            // Deltas: visible to whoever may see the mission's agent; the engine tags them
            // with the mission only, so operators of every namespace see them.
            None => self.caller.role == Role::Operator,
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

/// Sends ledger entries from `next` to the live edge; returns where it stopped.
async fn backfill(
    socket: &mut WebSocket,
    state: &AppState,
    filter: &Filter,
    mut next: u64,
) -> Option<u64> {
    loop {
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
            None => return,
        },
        None => state.engine.store().tree_size().await.unwrap_or(0),
    };
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
                        None => return,
                    }
                }
                Err(RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}
