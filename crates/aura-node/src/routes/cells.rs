//! `/v1/cells`: Aura's own cell API over HTTP, the same operations as the gRPC
//! `aura.cells.v1.Cells` (docs/cells-grpc.md) on the node's one cell runtime: allocate a
//! cell, start executables in it, stop and wait for them, read their logs (history, then
//! optionally followed as server-sent events), inspect usage, list the tree, free.
//!
//! Only operators with an API key may use it; a node running without keys (loopback)
//! refuses every cell route rather than hand cells to any local process. A cell belongs
//! to a namespace, and an operator key scoped to namespaces sees and touches only the
//! cells of those (others do not exist for it). An API caller never names a host path
//! for its workspace: it names one of its namespace's workspaces, which the node creates
//! under its workspaces root, private to the cells' root and bounded by the workspace
//! quota. Only an operator for all namespaces may bind host paths, and only from the
//! allowlist in aura.toml (`[cells] host_binds`); the node's home, keys and database are
//! never mountable (the runtime refuses them whatever the allowlist says). Nested cells
//! are named `parent/child`; in a URL the `/` is written `%2F`.

use std::convert::Infallible;
use std::time::Duration;

use aura_cell::{
    Bind, CellInfo, CellName, CellSpec, CellTree, Env, ExecutableName, ExecutableSpec, Limits,
};
use aura_identity::Namespace;
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
            K::FailedPrecondition => ApiError::conflict("failed_precondition", with_hint(&e)),
            K::PermissionDenied => ApiError::forbidden(with_hint(&e)),
            K::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "unavailable",
                with_hint(&e),
            ),
            K::Internal => ApiError::internal(e.to_string()),
        }
    }
}

/// An error's line with its hint, where it has one.
fn with_hint(e: &aura_cell::Error) -> String {
    match e.hint() {
        Some(h) => format!("{e} (hint: {h})"),
        None => e.to_string(),
    }
}

/// The runtime, for an operator who holds a key.
fn runtime<'a>(state: &'a AppState, caller: &Caller) -> Result<&'a aura_cell::Runtime, ApiError> {
    require(caller, &[Role::Operator])?;
    if caller.key.is_none() {
        return Err(ApiError::forbidden(
            "the cell API needs an operator API key; create one with `aura apikey create NAME --role operator`",
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

/// Whether `caller` may see a cell: an operator for all namespaces sees every cell; a
/// key scoped to namespaces sees only cells allocated in one of them (never the local
/// operator's or the gRPC API's, which have no namespace).
fn may_see(caller: &Caller, cell: &CellInfo) -> bool {
    match (&caller.namespaces, &cell.owner) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(_), Some(owner)) => {
            Namespace::new(owner).is_ok_and(|ns| caller.may_use_namespace(&ns))
        }
    }
}

/// The cell, if the caller may see it; a cell it may not see does not exist for it.
async fn visible(
    rt: &aura_cell::Runtime,
    caller: &Caller,
    name: &CellName,
) -> Result<CellInfo, ApiError> {
    let not_found = || ApiError::not_found(format!("cell `{name}` does not exist"));
    let info = rt.inspect(name).await.map_err(|e| match e.kind() {
        aura_cell::ErrorKind::NotFound => not_found(),
        _ => e.into(),
    })?;
    if may_see(caller, &info) {
        Ok(info)
    } else {
        Err(not_found())
    }
}

/// The tree without the cells the caller may not see.
fn visible_tree(caller: &Caller, trees: Vec<CellTree>) -> Vec<CellTree> {
    trees
        .into_iter()
        .filter(|t| may_see(caller, &t.cell))
        .map(|t| CellTree {
            children: visible_tree(caller, t.children),
            cell: t.cell,
        })
        .collect()
}

/// The namespace a new cell belongs to: the one the request names (which the key must
/// allow), else the key's only namespace, else `default` for an operator of all.
fn namespace_for(caller: &Caller, asked: Option<&str>) -> Result<Namespace, ApiError> {
    match (asked, &caller.namespaces) {
        (Some(ns), _) => {
            let ns = Namespace::new(ns)
                .map_err(|e| ApiError::bad_request("invalid_cell_request", e.to_string()))?;
            if caller.may_use_namespace(&ns) {
                Ok(ns)
            } else {
                Err(ApiError::forbidden(format!(
                    "this key may not use namespace `{ns}`"
                )))
            }
        }
        (None, None) => Ok(Namespace::default_namespace()),
        (None, Some(list)) if list.len() == 1 => Ok(list[0].clone()),
        (None, Some(_)) => Err(ApiError::bad_request(
            "invalid_cell_request",
            "this key has several namespaces: say which the cell belongs to with `namespace`",
        )),
    }
}

/// A cell as an HTTP caller asks for it: the runtime's spec, except that the workspace
/// is the name of one of the namespace's workspaces, never a host path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CellRequest {
    name: CellName,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    network: bool,
    /// The namespace the cell belongs to.
    #[serde(default)]
    namespace: Option<String>,
    /// A workspace of the cell's namespace, by name (made if it does not exist yet).
    #[serde(default)]
    workspace: Option<String>,
    /// Host paths from the allowlist; only for an operator of all namespaces.
    #[serde(default)]
    binds: Vec<Bind>,
    #[serde(default)]
    env: Env,
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

/// Lists the cells the caller may see, as a tree (each with its executables and resource
/// usage).
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
        "cells": json_of(&visible_tree(&caller, rt.list().await))?,
    })))
}

/// Allocates a cell: `{name, namespace?, limits?, network?, workspace?, binds?, env?}`.
/// `workspace` names a workspace of the cell's namespace (never a host path); `binds`
/// need an operator key for all namespaces and sources from `[cells] host_binds`.
#[utoipa::path(post, path = "/v1/cells", tag = "cells",
    request_body(content = Object, description = "A cell: {name, namespace?, limits?, network?, workspace? (a name), binds?, env?}"),
    responses((status = 201, description = "Allocated"), (status = 400, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn allocate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CellRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rt = runtime(&state, &caller)?;
    let parent = match request.name.parent() {
        Some(p) => Some(visible(rt, &caller, &p).await?),
        None => None,
    };
    // A nested cell is of its parent's namespace unless the request says otherwise.
    let asked = request
        .namespace
        .as_deref()
        .or(parent.as_ref().and_then(|p| p.owner.as_deref()));
    let namespace = namespace_for(&caller, asked)?;
    if let Some(parent) = &parent
        && let Some(owner) = &parent.owner
        && owner != namespace.as_str()
    {
        return Err(ApiError::bad_request(
            "invalid_cell_request",
            format!(
                "a cell of namespace `{namespace}` cannot nest in `{}`, a cell of `{owner}`",
                parent.spec.name
            ),
        ));
    }
    if !request.binds.is_empty() && caller.namespaces.is_some() {
        return Err(ApiError::forbidden(
            "binding host paths into a cell needs an operator key for all namespaces (hint: use a workspace)",
        ));
    }
    let mut spec = CellSpec::new(request.name);
    spec.limits = request.limits;
    spec.network = request.network;
    spec.env = request.env;
    spec.binds = state.cell_access.binds(request.binds)?;
    if let Some(ws) = &request.workspace {
        spec.workspace = Some(state.cell_access.workspace(namespace.as_str(), ws).await?);
    }
    let name = spec.name.to_string();
    let allocated = rt.allocate_owned(spec, Some(namespace.to_string())).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "namespace": namespace, "cgroup_v2": allocated.cgroup_v2})),
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
    Ok(Json(json_of(
        &visible(rt, &caller, &cell_name(&cell)?).await?,
    )?))
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
    let cell = cell_name(&cell)?;
    visible(rt, &caller, &cell).await?;
    rt.free(&cell).await?;
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
    let cell = cell_name(&cell)?;
    visible(rt, &caller, &cell).await?;
    let started = rt.start_executable(&cell, spec).await?;
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
    let cell = cell_name(&cell)?;
    visible(rt, &caller, &cell).await?;
    let info = rt.executable_info(&cell, &exe_name(&exe)?).await?;
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
    let cell = cell_name(&cell)?;
    visible(rt, &caller, &cell).await?;
    // The body is optional: none, or `{"grace_ms": N}`.
    let body: StopBody = if body.iter().all(u8::is_ascii_whitespace) {
        StopBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the body: {e}")))?
    };
    let grace = body.grace_ms.map(Duration::from_millis);
    let info = rt.stop(&cell, &exe_name(&exe)?, grace).await?;
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
    visible(rt, &caller, &cell).await?;
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
    let cell = cell_name(&cell)?;
    visible(rt, &caller, &cell).await?;
    let store = rt.logs(&cell, &exe_name(&exe)?).await?;
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
