//! `/v1/cells`: Aura's own cell API over HTTP, the same operations as the gRPC
//! `aura.cells.v1.Cells` (docs/cells-grpc.md) on the node's one cell runtime: allocate a
//! cell, start executables in it, stop and wait for them, read their logs (history, then
//! optionally followed as server-sent events), inspect usage, list the tree, free.
//!
//! Cells can bind host paths, so this is root's power: only operators with an API key may
//! use it. A node running without keys (loopback) refuses every cell route rather than
//! hand that power to any local process. Nested cells are named `parent/child`; in a URL
//! the `/` is written `%2F`.

use std::convert::Infallible;
use std::time::Duration;

use aura_cell::{CellName, CellSpec, ExecutableName, ExecutableSpec};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiJson};
use crate::routes::agents::require;

/// Longest wait a caller may ask for in one request.
const MAX_WAIT: Duration = Duration::from_secs(300);

impl From<aura_cell::Error> for ApiError {
    fn from(e: aura_cell::Error) -> Self {
        use aura_cell::ErrorKind as K;
        match e.kind() {
            K::InvalidArgument => ApiError::bad_request("invalid_cell_request", e.to_string()),
            K::NotFound => ApiError::not_found(e.to_string()),
            K::AlreadyExists => ApiError::conflict("already_exists", e.to_string()),
            K::FailedPrecondition => ApiError::conflict("failed_precondition", e.to_string()),
            K::PermissionDenied => ApiError::forbidden(e.to_string()),
            K::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "unavailable",
                e.to_string(),
            ),
            K::Internal => ApiError::internal(e.to_string()),
        }
    }
}

/// The runtime, for an operator who holds a key.
fn runtime<'a>(state: &'a AppState, caller: &Caller) -> Result<&'a aura_cell::Runtime, ApiError> {
    require(caller, &[Role::Operator])?;
    if caller.key.is_none() {
        return Err(ApiError::forbidden(
            "the cell API needs an operator API key (cells can bind host paths); \
             create one with `aura apikey create NAME --role operator`",
        ));
    }
    state.cells.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "cells_off",
            "this node runs no cells (the cell runtime needs root)",
        )
    })
}

fn cell_name(name: &str) -> Result<CellName, ApiError> {
    Ok(CellName::new(name)?)
}

fn exe_name(name: &str) -> Result<ExecutableName, ApiError> {
    Ok(ExecutableName::new(name)?)
}

fn json_of<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::internal(e.to_string()))
}

/// Lists the cells as a tree (each with its executables and resource usage).
#[utoipa::path(get, path = "/v1/cells", tag = "cells",
    responses((status = 200, description = "The cell tree"), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list_cells(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let rt = runtime(&state, &caller)?;
    Ok(Json(json!({
        "cgroup_v2": rt.cgroup_version() == aura_cell::CgroupVersion::V2,
        "cells": json_of(&rt.list().await)?,
    })))
}

/// Allocates a cell from its spec (name, limits, network, workspace, binds, env).
#[utoipa::path(post, path = "/v1/cells", tag = "cells",
    request_body(content = Object, description = "A cell spec: {name, limits?, network?, workspace?, binds?, env?}"),
    responses((status = 201, description = "Allocated"), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn allocate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(spec): ApiJson<CellSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rt = runtime(&state, &caller)?;
    let name = spec.name.to_string();
    let allocated = rt.allocate(spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "cgroup_v2": allocated.cgroup_v2})),
    ))
}

/// One cell: its spec, executables and resource usage (cpu time, memory peak, pids).
#[utoipa::path(get, path = "/v1/cells/{cell}", tag = "cells",
    params(("cell" = String, Path, description = "The cell's name (`parent%2Fchild` when nested)")),
    responses((status = 200, description = "The cell"), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn inspect(
    State(state): State<AppState>,
    caller: Caller,
    Path(cell): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rt = runtime(&state, &caller)?;
    Ok(Json(json_of(&rt.inspect(&cell_name(&cell)?).await?)?))
}

/// Frees a cell: stops what runs in it and removes its cgroups and mounts.
#[utoipa::path(delete, path = "/v1/cells/{cell}", tag = "cells",
    params(("cell" = String, Path, description = "The cell's name")),
    responses((status = 204, description = "Freed"), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn free(
    State(state): State<AppState>,
    caller: Caller,
    Path(cell): Path<String>,
) -> Result<StatusCode, ApiError> {
    let rt = runtime(&state, &caller)?;
    rt.free(&cell_name(&cell)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts an executable in a cell: `{name, command: {shell: "..."} | {argv: [...]}, env?,
/// cwd?, uid?, gid?, description?}`.
#[utoipa::path(post, path = "/v1/cells/{cell}/executables", tag = "cells",
    params(("cell" = String, Path, description = "The cell's name")),
    request_body(content = Object, description = "An executable spec"),
    responses((status = 201, description = "Started: pid, uid, gid"), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(cell): Path<String>,
    ApiJson(spec): ApiJson<ExecutableSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rt = runtime(&state, &caller)?;
    let started = rt.start_executable(&cell_name(&cell)?, spec).await?;
    Ok((StatusCode::CREATED, Json(json_of(&started)?)))
}

/// An executable: its argv, pid, exit status (code or signal, OOM kill) and usage.
#[utoipa::path(get, path = "/v1/cells/{cell}/executables/{executable}", tag = "cells",
    params(("cell" = String, Path, description = "The cell's name"), ("executable" = String, Path, description = "The executable's name")),
    responses((status = 200, description = "The executable"), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn executable(
    State(state): State<AppState>,
    caller: Caller,
    Path((cell, exe)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let rt = runtime(&state, &caller)?;
    let info = rt
        .executable_info(&cell_name(&cell)?, &exe_name(&exe)?)
        .await?;
    Ok(Json(json_of(&info)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct StopBody {
    /// Milliseconds between SIGTERM and SIGKILL (the runtime's default when absent).
    grace_ms: Option<u64>,
}

/// Stops an executable: SIGTERM, a grace period, then SIGKILL; answers its final state.
#[utoipa::path(post, path = "/v1/cells/{cell}/executables/{executable}/stop", tag = "cells",
    params(("cell" = String, Path, description = "The cell's name"), ("executable" = String, Path, description = "The executable's name")),
    request_body(content = Object, description = "{grace_ms?}"),
    responses((status = 200, description = "The stopped executable"), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path((cell, exe)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let rt = runtime(&state, &caller)?;
    // The body is optional: none, or `{"grace_ms": N}`.
    let body: StopBody = if body.iter().all(u8::is_ascii_whitespace) {
        StopBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the body: {e}")))?
    };
    let grace = body.grace_ms.map(Duration::from_millis);
    let info = rt.stop(&cell_name(&cell)?, &exe_name(&exe)?, grace).await?;
    Ok(Json(json_of(&info)?))
}

#[derive(Deserialize, IntoParams)]
pub(crate) struct WaitQuery {
    /// Milliseconds to wait at most (up to 300,000); without it, the longest wait.
    timeout_ms: Option<u64>,
}

/// Waits until an executable exits: 200 with its final state, or 202 with its current one
/// when the time ran out first.
#[utoipa::path(post, path = "/v1/cells/{cell}/executables/{executable}/wait", tag = "cells",
    params(("cell" = String, Path, description = "The cell's name"), ("executable" = String, Path, description = "The executable's name"), WaitQuery),
    responses((status = 200, description = "Exited"), (status = 202, description = "Still running"), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn wait(
    State(state): State<AppState>,
    caller: Caller,
    Path((cell, exe)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rt = runtime(&state, &caller)?;
    let (cell, exe) = (cell_name(&cell)?, exe_name(&exe)?);
    let timeout = q
        .timeout_ms
        .map_or(MAX_WAIT, Duration::from_millis)
        .min(MAX_WAIT);
    match rt.wait(&cell, &exe, Some(timeout)).await? {
        Some(info) => Ok((StatusCode::OK, Json(json_of(&info)?))),
        None => Ok((
            StatusCode::ACCEPTED,
            Json(json_of(&rt.executable_info(&cell, &exe).await?)?),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
pub(crate) struct LogsQuery {
    /// Keep the response open and send new lines as they come (server-sent events).
    #[serde(default)]
    follow: bool,
}

/// An executable's output, line by line with timestamps: the whole history as JSON, or,
/// with `follow=true`, the history then new lines as server-sent events until it exits.
#[utoipa::path(get, path = "/v1/cells/{cell}/executables/{executable}/logs", tag = "cells",
    params(("cell" = String, Path, description = "The cell's name"), ("executable" = String, Path, description = "The executable's name"), LogsQuery),
    responses((status = 200, description = "Log lines: {seq, channel, timestamp, line}"), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path((cell, exe)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let rt = runtime(&state, &caller)?;
    let store = rt.logs(&cell_name(&cell)?, &exe_name(&exe)?).await?;
    if !q.follow {
        return Ok(Json(json_of(&store.history(0))?).into_response());
    }
    let sub = store.subscribe(true);
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        let line = sub.next().await?;
        let data = serde_json::to_string(&line).unwrap_or_default();
        Some((Ok::<_, Infallible>(Event::default().data(data)), sub))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_cells, allocate))
        .routes(routes!(inspect, free))
        .routes(routes!(start))
        .routes(routes!(executable))
        .routes(routes!(stop))
        .routes(routes!(wait))
        .routes(routes!(logs))
}
