//! `/v1/schedules`: durable schedules that submit a mission from a template at the
//! instants of a cron expression in a time zone, or every so often (docs/automatons.md).
//!
//! Who may do what follows missions: operators and agent keys (for their own agent)
//! create, pause, resume and delete; anyone who may see the agent's namespace reads.
//! Schedules of namespaces a caller may not see are not found, as agents are.

use aura_engine::schedule::View;
use aura_engine::{Missed, NewSchedule, ScheduleId, Template, Trigger};
use aura_identity::Namespace;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::{require, visible_agent};
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiJson};

/// A new schedule.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSchedule {
    /// The agent whose missions it submits (an agent key may only name its own agent).
    agent: String,
    /// A name for people.
    #[serde(default)]
    name: String,
    /// The mission it submits: `objective`, `tools`, `timeout_secs`, and optionally
    /// `level`, `max_steps`, `max_tokens`, `reasoner`, `network`, `workspace`, `steps`,
    /// `tool_steps` (as `POST /v1/missions` takes them).
    #[schema(value_type = Object)]
    template: Template,
    /// `{"kind": "cron", "expr": "0 9 * * MON-FRI", "zone": "Europe/Paris"}` or
    /// `{"kind": "every", "secs": 900}`.
    #[schema(value_type = Object)]
    trigger: Trigger,
    /// What happens to instants missed while the node was down: `skip` (default) or
    /// `catch-up-once`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    missed: Missed,
    /// Create it paused.
    #[serde(default)]
    paused: bool,
}

/// Creates a schedule; answers once it is recorded.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = CreateSchedule,
    responses((status = 201, body = Object), (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSchedule>,
) -> Result<(StatusCode, Json<View>), ApiError> {
    let agent = visible_agent(&state, &caller, &req.agent)?;
    require(&caller, &[Role::Operator, Role::Agent])?;
    if caller.role == Role::Agent && caller.agent != Some(agent.id) {
        return Err(ApiError::forbidden(
            "an agent key may create schedules only for its own agent",
        ));
    }
    let view = state
        .schedules
        .create(
            NewSchedule {
                agent: agent.id,
                name: req.name,
                template: req.template,
                trigger: req.trigger,
                missed: req.missed,
                paused: req.paused,
            },
            &caller.name,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListSchedules {
    namespace: Option<String>,
    /// At most this many (oldest first; 1-1000, default 100).
    limit: Option<usize>,
}

/// Lists the schedules the caller may see.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", params(ListSchedules),
    responses((status = 200, body = Object), (status = 400, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListSchedules>,
) -> Result<Json<Vec<View>>, ApiError> {
    let ns = q
        .namespace
        .map(|n| {
            Namespace::new(&n)
                .map_err(|e| ApiError::bad_request("invalid_namespace", e.to_string()))
        })
        .transpose()?;
    let out = state
        .schedules
        .list(ns.as_ref())
        .into_iter()
        .filter(|v| visible(&state, &caller, v))
        .take(super::page(q.limit))
        .collect();
    Ok(Json(out))
}

/// Whether `caller` may see the schedule: its namespace, and for an agent key its own
/// agent's schedules only.
fn visible(state: &AppState, caller: &Caller, v: &View) -> bool {
    state.may_see(caller, &v.schedule.namespace)
        && (caller.role != Role::Agent || caller.agent == Some(v.schedule.agent))
}

/// The schedule named `id`, if the caller may see it; otherwise not found, so ids cannot
/// be probed across namespaces.
fn find(state: &AppState, caller: &Caller, id: &str) -> Result<View, ApiError> {
    let not_found = || ApiError::not_found(format!("no schedule `{id}`"));
    let id: ScheduleId = id.parse().map_err(|_| not_found())?;
    state
        .schedules
        .get(id)
        .filter(|v| visible(state, caller, v))
        .ok_or_else(not_found)
}

/// Who may change a schedule: operators, and an agent key for its own agent's.
fn may_change(caller: &Caller, v: &View) -> Result<(), ApiError> {
    require(caller, &[Role::Operator, Role::Agent])?;
    if caller.role == Role::Agent && caller.agent != Some(v.schedule.agent) {
        return Err(ApiError::forbidden(
            "an agent key may change only its own agent's schedules",
        ));
    }
    Ok(())
}

/// Reads a schedule: its template, trigger, policy, the next instant it fires and what
/// it has done.
#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, body = Object), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<View>, ApiError> {
    Ok(Json(find(&state, &caller, &id)?))
}

/// Deletes a schedule: it never fires again. Its records stay in the ledger and the
/// missions it submitted carry on.
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, body = Object), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<View>, ApiError> {
    let v = find(&state, &caller, &id)?;
    may_change(&caller, &v)?;
    Ok(Json(
        state.schedules.delete(v.schedule.id, &caller.name).await?,
    ))
}

/// Pauses a schedule: it does not fire until resumed, and what falls due meanwhile is
/// not a missed run.
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules", params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, body = Object), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<View>, ApiError> {
    set_enabled(&state, &caller, &id, false).await
}

/// Resumes a paused schedule from now.
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", tag = "schedules", params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, body = Object), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<View>, ApiError> {
    set_enabled(&state, &caller, &id, true).await
}

async fn set_enabled(
    state: &AppState,
    caller: &Caller,
    id: &str,
    enabled: bool,
) -> Result<Json<View>, ApiError> {
    let v = find(state, caller, id)?;
    may_change(caller, &v)?;
    Ok(Json(
        state
            .schedules
            .set_enabled(v.schedule.id, enabled, &caller.name)
            .await?,
    ))
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, delete))
        .routes(routes!(pause))
        .routes(routes!(resume))
}
