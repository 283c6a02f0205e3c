//! `/v1/missions`, `/v1/approvals` and `/v1/credentials/operators`: submit and follow
//! missions, answer escalations with signed approvals, enroll the people who approve;
//! and, for operators of every namespace, prune the records of old finished missions.

use std::collections::BTreeMap;
use std::sync::Arc;

use aura_core::{AgentId, MissionId, PublicKey, Timestamp};
use aura_identity::{Approval, Credential, Level, Namespace, Signed};
use aura_kernel::{Authority, Budget, Mission, MissionSpec, MissionState, StepPolicy};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::{require, visible_agent};
use aura_engine::Control;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiJson};
use crate::wire::{EscalationView, MissionView, PendingApproval, PruneView, ReplayView, StuckView};

/// A mission declaration.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitMission {
    /// The agent that carries it out (an agent key may only name its own agent).
    #[schema(value_type = String)]
    agent: AgentId,
    objective: String,
    /// The only tools the mission may use.
    tools: Vec<String>,
    /// The authority it acts under (default: the agent's credential level).
    #[schema(value_type = Option<String>)]
    level: Option<Level>,
    /// Seconds until it times out: 1 to 2592000 (30 days).
    timeout_secs: u64,
    #[serde(default)]
    max_steps: Option<u32>,
    #[serde(default)]
    max_tokens: Option<u64>,
    /// A configured reasoner (default: the node's).
    #[serde(default)]
    reasoner: Option<String>,
    /// Hosts `http.fetch` may reach, if policy also allows.
    #[serde(default)]
    network: Vec<String>,
    /// A named workspace of the namespace (default: a fresh one).
    #[serde(default)]
    workspace: Option<String>,
    /// How steps are retried and timed (docs/missions.md): `retry` (`initial_interval_ms`,
    /// `multiplier_percent`, `max_interval_ms`, `max_attempts`, `non_retryable`),
    /// `start_to_close_ms`, `schedule_to_start_ms`, `heartbeat_ms`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    steps: Option<StepPolicy>,
    /// Per tool name, in place of `steps` for that tool's calls.
    #[serde(default)]
    #[schema(value_type = Object)]
    tool_steps: BTreeMap<String, StepPolicy>,
    /// The mission's boundary in a cluster: the regions whose nodes may run it (default:
    /// any). A node outside them refuses it (403) and never runs it (docs/cluster.md).
    #[serde(default)]
    regions: Vec<String>,
}

fn view(m: &Mission, full: bool) -> MissionView {
    let escalation = m
        .escalation
        .as_ref()
        .filter(|e| e.approved_by.is_none())
        .map(|e| {
            let arguments = e
                .call_id
                .as_ref()
                .and_then(|id| m.calls.iter().find(|c| &c.call.id == id))
                .map(|c| c.call.arguments.clone());
            EscalationView {
                action: e.action.clone(),
                level: e.level,
                request: e.request.to_hex(),
                call_id: e.call_id.clone(),
                answers: m.escalation_answers(),
                arguments,
            }
        });
    MissionView {
        id: m.id,
        agent: m.agent,
        namespace: m.spec.namespace.clone(),
        state: m.state,
        objective: m.spec.objective.clone(),
        tools: m.spec.tools.clone(),
        level: m.spec.authority.level,
        reasoner: m.spec.reasoner.clone(),
        workspace: m.spec.workspace.clone(),
        submitted_at: m.submitted_at,
        deadline: m.deadline,
        steps: m.steps,
        tokens: m.tokens,
        summary: m.summary.clone(),
        reason: m.reason.clone(),
        escalation,
        history: m.history.clone(),
        state_hash: m.state_hash.to_hex(),
        paused: m.paused,
        calls: m.calls.clone(),
        pruned: false,
        conversation: full.then(|| m.conversation.iter().cloned().collect()),
        regions: m.spec.regions.clone(),
    }
}

/// Submits a mission; answers once it is recorded and judged by policy.
#[utoipa::path(post, path = "/v1/missions", tag = "missions", request_body = SubmitMission,
    responses((status = 201, body = MissionView), (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SubmitMission>,
) -> Result<(StatusCode, Json<MissionView>), ApiError> {
    let agent = visible_agent(&state, &caller, &req.agent.to_string())?;
    require(&caller, &[Role::Operator, Role::Agent])?;
    if caller.role == Role::Agent && caller.agent != Some(agent.id) {
        return Err(ApiError::forbidden(
            "an agent key may submit missions only for its own agent",
        ));
    }
    let spec = MissionSpec {
        regions: req.regions,
        objective: req.objective,
        tools: req.tools,
        authority: Authority {
            credential: Some(agent.credential.statement.id),
            level: req.level.unwrap_or(agent.level),
        },
        timeout_secs: req.timeout_secs,
        namespace: agent.namespace.clone(),
        budget: Budget {
            max_steps: req.max_steps.unwrap_or(Budget::default().max_steps),
            max_tokens: req.max_tokens.unwrap_or(Budget::default().max_tokens),
        },
        reasoner: req.reasoner.unwrap_or_default(),
        network: req.network,
        workspace: req.workspace,
        steps: req.steps,
        tool_steps: req.tool_steps,
    };
    let id = state.engine.submit(agent.id, spec).await?;
    let mission = state
        .engine
        .mission(id)
        .ok_or_else(|| ApiError::internal("the mission vanished"))?;
    Ok((StatusCode::CREATED, Json(view(&mission, false))))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListMissions {
    /// Only missions in this state.
    state: Option<String>,
    agent: Option<String>,
    namespace: Option<String>,
    /// At most this many (newest first; 1-1000, default 100).
    limit: Option<usize>,
}

/// Lists missions the caller may see, newest first.
#[utoipa::path(get, path = "/v1/missions", tag = "missions", params(ListMissions),
    responses((status = 200, body = Vec<MissionView>), (status = 400, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListMissions>,
) -> Result<Json<Vec<MissionView>>, ApiError> {
    let want_state = q
        .state
        .map(|s| {
            s.parse::<MissionState>()
                .map_err(|e| ApiError::bad_request("invalid_state", e.to_string()))
        })
        .transpose()?;
    let agent = q
        .agent
        .map(|a| {
            a.parse::<AgentId>()
                .map_err(|_| ApiError::bad_request("invalid_agent", "`agent` is not an agent id"))
        })
        .transpose()?;
    let ns = q
        .namespace
        .map(|n| {
            Namespace::new(&n)
                .map_err(|e| ApiError::bad_request("invalid_namespace", e.to_string()))
        })
        .transpose()?;
    let limit = super::page(q.limit);
    let mut all = state.engine.missions(ns.as_ref(), agent, want_state);
    // In a cluster, the missions of the agents other nodes run, from their records in
    // the shared database.
    if state.cluster.is_some() {
        let elsewhere = state.engine.recorded_missions(agent).await?;
        all.extend(
            elsewhere
                .into_iter()
                .filter(|m| ns.as_ref().is_none_or(|n| &m.spec.namespace == n))
                .filter(|m| want_state.is_none_or(|s| m.state == s))
                .map(Arc::new),
        );
        // Newest first; an agent that moved between the two reads is listed once.
        all.sort_by_key(|m| std::cmp::Reverse(m.id));
        all.dedup_by_key(|m| m.id);
    }
    let out = all
        .iter()
        .filter(|m| visible_mission(&state, &caller, m))
        .take(limit)
        .map(|m| MissionView {
            pruned: state.engine.is_pruned(m.id),
            ..view(m, false)
        })
        .collect();
    Ok(Json(out))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Detail {
    /// `full` includes the conversation.
    detail: Option<String>,
}

/// Reads a mission, with its state history.
#[utoipa::path(get, path = "/v1/missions/{id}", tag = "missions", params(("id" = String, Path, description = "mission id"), Detail),
    responses((status = 200, body = MissionView), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<Detail>,
) -> Result<Json<MissionView>, ApiError> {
    let m = find_anywhere(&state, &caller, &id).await?;
    Ok(Json(MissionView {
        pruned: state.engine.is_pruned(m.id),
        ..view(&m, q.detail.as_deref() == Some("full"))
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cancel {
    #[serde(default)]
    reason: Option<String>,
}

/// Cancels a mission: its completed steps are undone, in reverse order, first.
#[utoipa::path(post, path = "/v1/missions/{id}/cancel", tag = "missions", request_body = Cancel,
    params(("id" = String, Path, description = "mission id")),
    responses((status = 200, body = MissionView), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Cancel>,
) -> Result<Json<MissionView>, ApiError> {
    let m = find(&state, &caller, &id)?;
    require(&caller, &[Role::Operator, Role::Agent])?;
    if caller.role == Role::Agent && caller.agent != Some(m.agent) {
        return Err(ApiError::forbidden(
            "an agent key may cancel only its own agent's missions",
        ));
    }
    let reason = req
        .reason
        .unwrap_or_else(|| "cancelled through the API".into());
    state.engine.cancel(m.id, &caller.name, &reason).await?;
    let m = state
        .engine
        .mission(m.id)
        .ok_or_else(|| ApiError::internal("the mission vanished"))?;
    Ok(Json(view(&m, false)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pause {
    /// Why, for the record.
    #[serde(default)]
    reason: Option<String>,
}

/// Pauses a mission: no step starts until it is resumed (a step under way finishes).
/// Its deadline still runs. Operators only.
#[utoipa::path(post, path = "/v1/missions/{id}/pause", tag = "missions", request_body = Pause,
    params(("id" = String, Path, description = "mission id")),
    responses((status = 200, body = MissionView), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Pause>,
) -> Result<Json<MissionView>, ApiError> {
    let reason = req
        .reason
        .unwrap_or_else(|| "paused through the API".into());
    control(&state, &caller, &id, Control::Pause { reason }).await
}

/// Resumes a paused mission. Operators only.
#[utoipa::path(post, path = "/v1/missions/{id}/resume", tag = "missions",
    params(("id" = String, Path, description = "mission id")),
    responses((status = 200, body = MissionView), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MissionView>, ApiError> {
    control(&state, &caller, &id, Control::Resume).await
}

/// Runs a mission's waiting retries now instead of at their due time. Operators only;
/// 409 when nothing waits.
#[utoipa::path(post, path = "/v1/missions/{id}/retry", tag = "missions",
    params(("id" = String, Path, description = "mission id")),
    responses((status = 200, body = MissionView), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<MissionView>, ApiError> {
    control(&state, &caller, &id, Control::RetryNow).await
}

async fn control(
    state: &AppState,
    caller: &Caller,
    id: &str,
    control: Control,
) -> Result<Json<MissionView>, ApiError> {
    let m = find(state, caller, id)?;
    require(caller, &[Role::Operator])?;
    state.engine.control(m.id, control, &caller.name).await?;
    let m = state
        .engine
        .mission(m.id)
        .ok_or_else(|| ApiError::internal("the mission vanished"))?;
    Ok(Json(view(&m, false)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StuckQuery {
    /// An escalation counts as stuck after this many seconds (default 3600).
    escalated_for_secs: Option<u64>,
}

/// Missions that need a person's look: escalated too long, retrying a failed step, or
/// paused; oldest first. Operators only, within their namespace.
#[utoipa::path(get, path = "/v1/missions/stuck", tag = "missions", params(StuckQuery),
    responses((status = 200, body = Vec<StuckView>), (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn stuck(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<StuckQuery>,
) -> Result<Json<Vec<StuckView>>, ApiError> {
    require(&caller, &[Role::Operator])?;
    let escalated_for = std::time::Duration::from_secs(q.escalated_for_secs.unwrap_or(3600));
    let stuck = state
        .engine
        .stuck(escalated_for)
        .into_iter()
        .filter(|s| find(&state, &caller, &s.mission.to_string()).is_ok())
        .map(|s| StuckView {
            mission: s.mission,
            agent: s.agent,
            state: s.state,
            why: s.why,
            since: s.since,
        })
        .collect();
    Ok(Json(stuck))
}

/// Replays a mission from its record in the ledger, reproducing every state hash. A pruned
/// mission answers 410: its record is gone.
#[utoipa::path(get, path = "/v1/missions/{id}/replay", tag = "missions", params(("id" = String, Path, description = "mission id")),
    responses((status = 200, body = ReplayView), (status = 404, body = crate::error::ErrorBody), (status = 410, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReplayView>, ApiError> {
    let m = find(&state, &caller, &id)?;
    Ok(Json(match state.engine.replay(m.id).await? {
        Ok(r) => ReplayView {
            ok: true,
            state: Some(r.state),
            state_hash: Some(r.state_hash.to_hex()),
            divergence: None,
        },
        Err(d) => ReplayView {
            ok: false,
            state: None,
            state_hash: None,
            divergence: Some(d.to_string()),
        },
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PruneMissions {
    /// Prune missions that ended (completed, failed or cancelled) at least this many
    /// seconds ago, by the node's clock.
    older_than_secs: u64,
    /// Report what would be pruned and change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Prunes the records of old finished missions: their entries keep their hashes (so the
/// ledger still verifies) and lose their bodies, except each mission's submission and
/// final transition. The missions stay listed, marked `pruned`. Operators with every
/// namespace only: the ledger is the whole node's.
#[utoipa::path(post, path = "/v1/missions/prune", tag = "missions", request_body = PruneMissions,
    responses((status = 200, body = PruneView), (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn prune(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PruneMissions>,
) -> Result<Json<PruneView>, ApiError> {
    require(&caller, &[Role::Operator])?;
    if caller.namespaces.is_some() {
        return Err(ApiError::forbidden(
            "pruning touches every namespace's missions; it needs an operator key for all namespaces (`*`)",
        ));
    }
    let older_than = Timestamp::from_nanos(
        state
            .engine
            .now()
            .as_nanos()
            .saturating_sub(req.older_than_secs.saturating_mul(1_000_000_000)),
    );
    let r = state.engine.prune_missions(older_than, req.dry_run).await?;
    Ok(Json(PruneView {
        dry_run: r.dry_run,
        older_than: r.older_than,
        missions: r.missions,
        entries: r.entries,
        kept: r.kept,
        bytes_freed: r.bytes_freed,
    }))
}

/// Lists escalations waiting for a person, in the caller's namespaces.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals",
    responses((status = 200, body = Vec<PendingApproval>), (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn pending(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<PendingApproval>>, ApiError> {
    require(&caller, &[Role::Operator, Role::Approver])?;
    let mut all = state
        .engine
        .missions(None, None, Some(MissionState::Escalated));
    // In a cluster, the escalations of missions other nodes run too: an answer sent to
    // this node is forwarded to the mission's node.
    if state.cluster.is_some() {
        all.extend(
            state
                .engine
                .recorded_missions(None)
                .await?
                .into_iter()
                .filter(|m| m.state == MissionState::Escalated)
                .map(Arc::new),
        );
        all.sort_by_key(|m| std::cmp::Reverse(m.id));
        all.dedup_by_key(|m| m.id);
    }
    let out = all
        .iter()
        .filter(|m| visible_mission(&state, &caller, m))
        .filter_map(|m| {
            let v = view(m, false);
            v.escalation.map(|escalation| PendingApproval {
                mission: m.id,
                agent: m.agent,
                namespace: m.spec.namespace.clone(),
                objective: m.spec.objective.clone(),
                escalation,
            })
        })
        .collect();
    Ok(Json(out))
}

/// A person's signed answer: the approval (its verdict approves or rejects) and the
/// credential that makes their key count.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Answer {
    #[schema(value_type = Object)]
    approval: Signed<Approval>,
    #[schema(value_type = Object)]
    credential: Signed<Credential>,
}

/// Answers a mission's escalation. The approval is checked (signature, the approver's
/// credential and level, the escalation and the request it names, expiry, that its id was
/// not used before in the mission) before it counts; an approved request is then decided
/// again with the approval in its context. An approval of version 1, which names no
/// escalation, is refused (403).
#[utoipa::path(post, path = "/v1/approvals/{mission}", tag = "approvals", request_body = Answer,
    params(("mission" = String, Path, description = "mission id")),
    responses((status = 200, body = MissionView), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn answer(
    State(state): State<AppState>,
    caller: Caller,
    Path(mission): Path<String>,
    ApiJson(req): ApiJson<Answer>,
) -> Result<Json<MissionView>, ApiError> {
    let m = find(&state, &caller, &mission)?;
    require(&caller, &[Role::Operator, Role::Approver])?;
    state
        .engine
        .answer(m.id, req.approval, req.credential)
        .await?;
    let m = state
        .engine
        .mission(m.id)
        .ok_or_else(|| ApiError::internal("the mission vanished"))?;
    Ok(Json(view(&m, false)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnrollOperator {
    /// The person's name, like `alice@example.com`.
    name: String,
    /// Their own public key (hex); their approvals are signed with it.
    #[schema(value_type = String)]
    public_key: PublicKey,
    #[schema(value_type = String)]
    level: Level,
    #[schema(value_type = String)]
    namespace: Namespace,
}

/// Issues a credential to a person, so their signed approvals count at a level.
#[utoipa::path(post, path = "/v1/credentials/operators", tag = "approvals", request_body = EnrollOperator,
    responses((status = 201, body = Object), (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn enroll(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<EnrollOperator>,
) -> Result<(StatusCode, Json<Signed<Credential>>), ApiError> {
    require(&caller, &[Role::Operator])?;
    if !caller.may_use_namespace(&req.namespace) {
        return Err(ApiError::forbidden(
            "this key may not act in that namespace",
        ));
    }
    let cred = state.engine.issue_operator_credential(
        &req.name,
        req.public_key,
        req.level,
        req.namespace,
    )?;
    Ok((StatusCode::CREATED, Json(cred)))
}

fn visible_mission(state: &AppState, caller: &Caller, m: &Mission) -> bool {
    state.may_see(caller, &m.spec.namespace)
}

/// The mission named by `id`, if the caller may see it; otherwise "not found".
fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Arc<Mission>, ApiError> {
    let not_found = || ApiError::not_found(format!("no mission `{id}`"));
    let id: MissionId = id.parse().map_err(|_| not_found())?;
    let m = state.engine.mission(id).ok_or_else(not_found)?;
    if !visible_mission(state, caller, &m) {
        return Err(not_found());
    }
    Ok(m)
}

/// [`find`], and in a cluster, when this node does not run the mission's agent, the
/// mission as its record in the shared database replays.
async fn find_anywhere(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Arc<Mission>, ApiError> {
    let not_here = match find(state, caller, id) {
        Ok(m) => return Ok(m),
        Err(e) => e,
    };
    let Some(mission) = state
        .cluster
        .as_ref()
        .and_then(|_| id.parse::<MissionId>().ok())
    else {
        return Err(not_here);
    };
    match state.engine.recorded_mission(mission).await? {
        Some(m) if visible_mission(state, caller, &m) => Ok(Arc::new(m)),
        _ => Err(not_here),
    }
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit, list))
        .routes(routes!(get))
        .routes(routes!(cancel))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(retry))
        .routes(routes!(stuck))
        .routes(routes!(replay))
        .routes(routes!(prune))
        .routes(routes!(pending))
        .routes(routes!(answer))
        .routes(routes!(enroll))
}
