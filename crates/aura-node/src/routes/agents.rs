//! `/v1/agents`: create agents with credentials, list and read them, send them messages,
//! read their records.

use aura_core::{AgentId, PublicKey};
use aura_engine::{AgentInfo, NewAgent, Sender};
use aura_identity::{Credential, Level, Namespace, Signed};
use aura_store::StoredEntry;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiJson};
use crate::wire::{AgentView, EntryView, RecordView};

impl From<AgentInfo> for AgentView {
    fn from(i: AgentInfo) -> Self {
        AgentView {
            id: i.id,
            name: i.name,
            namespace: i.namespace,
            level: i.level,
            public_key: i.public_key,
            credential: i.credential,
            created_at: i.created_at,
        }
    }
}

/// Create an agent: either the node issues its credential (`level`, `namespace`, and
/// optionally the agent's own `public_key`), or an issuer the node trusts already did
/// (`credential`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAgent {
    name: String,
    #[schema(value_type = Option<String>)]
    level: Option<Level>,
    #[schema(value_type = Option<String>)]
    namespace: Option<Namespace>,
    #[schema(value_type = Option<String>)]
    public_key: Option<PublicKey>,
    #[schema(value_type = Option<Object>)]
    credential: Option<Signed<Credential>>,
}

/// Creates an agent and records its credential as the first entry of its stream.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = CreateAgent,
    responses((status = 201, body = AgentView), (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn create_agent(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    require(&caller, &[Role::Operator])?;
    let info = match (req.credential, req.level, req.namespace) {
        (Some(credential), None, None) => {
            if !caller.may_use_namespace(&credential.statement.namespace) {
                return Err(ApiError::forbidden(
                    "this key may not act in that namespace",
                ));
            }
            state.engine.register_agent(&req.name, credential).await?
        }
        (None, Some(level), Some(namespace)) => {
            if !caller.may_use_namespace(&namespace) {
                return Err(ApiError::forbidden(
                    "this key may not act in that namespace",
                ));
            }
            state
                .engine
                .create_agent(NewAgent {
                    name: req.name,
                    level,
                    namespace,
                    public_key: req.public_key,
                })
                .await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give either `level` and `namespace` (the node issues the credential) or `credential`",
            ));
        }
    };
    Ok((StatusCode::CREATED, Json(info.into())))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListAgents {
    /// Only agents of this namespace.
    namespace: Option<String>,
}

/// Lists the agents the caller may see.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(ListAgents),
    responses((status = 200, body = Vec<AgentView>)), security(("bearer" = [])))]
async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListAgents>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    let filter = q
        .namespace
        .map(|n| {
            Namespace::new(&n)
                .map_err(|e| ApiError::bad_request("invalid_namespace", e.to_string()))
        })
        .transpose()?;
    let mut all = state.engine.agents(filter.as_ref());
    // In a cluster, the agents other nodes run, from their records in the shared database.
    if state.cluster.is_some() {
        let elsewhere = state.engine.recorded_agents(None).await?;
        all.extend(
            elsewhere
                .into_iter()
                .filter(|a| filter.as_ref().is_none_or(|n| &a.namespace == n)),
        );
        all.sort_by_key(|a| a.id);
        all.dedup_by_key(|a| a.id);
    }
    let visible = all
        .into_iter()
        .filter(|a| state.may_see(&caller, &a.namespace))
        .map(AgentView::from)
        .collect();
    Ok(Json(visible))
}

/// Reads one agent.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "agent id")),
    responses((status = 200, body = AgentView), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn get_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = visible_agent(&state, &caller, &id)?;
    Ok(Json(agent.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendMessage {
    /// Any JSON.
    #[schema(value_type = Object)]
    body: Value,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Delivered {
    /// The message's index in the ledger.
    index: u64,
}

/// Delivers a message into the agent's inbox; answers once it is recorded. Agent keys send
/// as their agent, to agents of their namespace; other keys send as the key's name.
#[utoipa::path(post, path = "/v1/agents/{id}/messages", tag = "agents", request_body = SendMessage,
    params(("id" = String, Path, description = "recipient agent id")),
    responses((status = 201, body = Delivered), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SendMessage>,
) -> Result<(StatusCode, Json<Delivered>), ApiError> {
    // Visibility first: what the caller may not see must not exist for it, whatever its
    // role, or roles would let ids be probed across namespaces.
    let target = visible_agent(&state, &caller, &id)?;
    require(&caller, &[Role::Operator, Role::Agent])?;
    let from = match caller.agent {
        Some(a) => Sender::Agent(a),
        None => Sender::Operator(caller.name.clone()),
    };
    let index = state.engine.send(target.id, from, req.body).await?;
    Ok((StatusCode::CREATED, Json(Delivered { index })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RecordPage {
    /// First sequence number to return (from 1).
    from: Option<u64>,
    /// At most this many entries (1-1000, default 100).
    limit: Option<usize>,
}

impl From<&StoredEntry> for EntryView {
    fn from(e: &StoredEntry) -> Self {
        EntryView {
            index: e.entry.index,
            agent: e.entry.agent,
            seq: e.entry.seq,
            kind: e.entry.kind.to_string(),
            recorded_at: e.entry.recorded_at,
            prev: e.entry.prev.to_hex(),
            hash: e.hash.to_hex(),
            body: aura_engine::events::body_value(&e.entry.body),
        }
    }
}

/// Reads an agent's record (its ledger stream), a page at a time.
#[utoipa::path(get, path = "/v1/agents/{id}/record", tag = "agents", params(("id" = String, Path, description = "agent id"), RecordPage),
    responses((status = 200, body = RecordView), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn record(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RecordPage>,
) -> Result<Json<RecordView>, ApiError> {
    let agent = visible_agent(&state, &caller, &id)?;
    if caller.role == Role::Agent && caller.agent != Some(agent.id) {
        return Err(ApiError::forbidden(
            "an agent key may read only its own agent's record",
        ));
    }
    let limit = super::page(q.limit);
    let entries = state
        .engine
        .record(agent.id, q.from.unwrap_or(1), limit + 1)
        .await?;
    let next = entries.get(limit).map(|e| e.entry.seq);
    Ok(Json(RecordView {
        entries: entries.iter().take(limit).map(EntryView::from).collect(),
        next,
    }))
}

pub(crate) fn require(caller: &Caller, roles: &[Role]) -> Result<(), ApiError> {
    if roles.contains(&caller.role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "a key with role `{}` may not do this",
            caller.role
        )))
    }
}

/// The agent named by `id`, if the caller may see it. Agents the caller may not see are
/// reported as not found, so that ids cannot be probed across namespaces.
pub(crate) fn visible_agent(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<AgentInfo, ApiError> {
    let not_found = || ApiError::not_found(format!("no agent `{id}`"));
    let id: AgentId = id.parse().map_err(|_| not_found())?;
    let agent = state.engine.agent(id).ok_or_else(not_found)?;
    if !state.may_see(caller, &agent.namespace) {
        return Err(not_found());
    }
    Ok(agent)
}

/// Whether `caller` may read `agent`'s record: what `GET /v1/agents/{id}/record` answers
/// 200 to (an agent of a namespace the caller may see, and for an agent key its own agent
/// only). Streams that are no agent's (the node's own) are for operators of every
/// namespace, as their inclusion proofs are. The event stream filters by this.
pub(crate) fn may_read_record(state: &AppState, caller: &Caller, agent: AgentId) -> bool {
    match state.engine.agent(agent) {
        Some(info) => {
            state.may_see(caller, &info.namespace)
                && (caller.role != Role::Agent || caller.agent == Some(agent))
        }
        None => caller.role == Role::Operator && caller.namespaces.is_none(),
    }
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(get_agent))
        .routes(routes!(send_message))
        .routes(routes!(record))
}
