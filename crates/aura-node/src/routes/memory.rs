//! `/v1/memory`: operators store, search, list and forget memories of a namespace's spaces
//! (docs/memory.md), the same memory missions reach with the `memory.*` tools.
//!
//! A space is `shared:<name>` (shared with agents by policies of the operator's),
//! `agent:<agent id>` (that agent's own memory) or `episodes:<agent id>` (its past
//! missions, read-only: they are derived from its record). Only operators may use these
//! routes, and only in the namespaces their key allows. Each store and forget is recorded
//! in the node's own ledger stream (`memory.stored`, `memory.forgotten`) with the id and
//! the SHA-256 of the text, never the vector.

use aura_core::AgentId;
use aura_identity::Namespace;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiJson};
use crate::memory::{self as node_memory, MemoryService};
use crate::routes::agents::require;

/// A memory to store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreRequest {
    text: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// A search.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchRequest {
    query: String,
    #[serde(default)]
    k: Option<u32>,
}

/// A memory to forget.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForgetRequest {
    id: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_memory_request", message)
}

/// The namespace and space a request names, checked, with the service: operators only,
/// in namespaces their key allows. `write` refuses the read-only episodes.
fn open<'a>(
    state: &'a AppState,
    caller: &Caller,
    namespace: &str,
    space: &str,
    write: bool,
) -> Result<(&'a MemoryService, String), ApiError> {
    require(caller, &[Role::Operator])?;
    let ns = Namespace::new(namespace).map_err(|e| invalid(e.to_string()))?;
    if !caller.may_use_namespace(&ns) {
        return Err(ApiError::forbidden(format!(
            "this key may not use namespace `{ns}`"
        )));
    }
    let episodes = match space.split_once(':') {
        Some(("shared", name)) if aura_tools::valid_space_name(name) => false,
        Some(("agent", id)) if id.parse::<AgentId>().is_ok() => false,
        Some(("episodes", id)) if id.parse::<AgentId>().is_ok() => true,
        _ => {
            return Err(invalid(format!(
                "`{}` is not a memory space: use shared:<name>, agent:<agent id> or episodes:<agent id>",
                space.chars().take(80).collect::<String>()
            )));
        }
    };
    if write && episodes {
        return Err(invalid(
            "episodes are read-only: they are made from the agent's mission records",
        ));
    }
    let service = state.memory.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "memory_off",
            "this node serves no memory (it needs a model host; see [memory] in aura.toml)",
        )
    })?;
    Ok((service, node_memory::key(&ns, space)))
}

impl From<node_memory::Error> for ApiError {
    fn from(e: node_memory::Error) -> Self {
        use node_memory::Error as E;
        match &e {
            E::Embed { cause, .. } if cause.status == 404 => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "memory_model_missing",
                format!(
                    "{e} (hint: import all-MiniLM-L6-v2 with `aura model import <dir> --name minilm`)"
                ),
            ),
            E::Embed { cause, .. } if cause.status < 500 => {
                ApiError::bad_request("invalid_memory_request", e.to_string())
            }
            E::Memory(aura_memory::Error::Exists(_)) => ApiError::conflict(
                "memory_exists",
                format!("{e} (hint: forget it first, or choose another id)"),
            ),
            E::Memory(aura_memory::Error::Sqlite(_) | aura_memory::Error::Unavailable(_)) => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    "unavailable",
                    format!("{e} (hint: retry shortly; see the node's log)"),
                )
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// Records an operator's memory write in the node's own stream; returns the entry's index.
async fn record(state: &AppState, kind: &str, body: &Value) -> Result<u64, ApiError> {
    let kind = aura_ledger::Kind::new(kind).map_err(|e| ApiError::internal(e.to_string()))?;
    let body = aura_core::jcs::to_vec(body).map_err(|e| ApiError::internal(e.to_string()))?;
    let receipt = state
        .engine
        .store()
        .append(vec![aura_store::NewEntry {
            agent: AgentId::NODE,
            seq: aura_store::Seq::Next,
            kind,
            recorded_at: state.engine.now(),
            body,
        }])
        .await?;
    Ok(receipt.entries.first().map_or(0, |a| a.index))
}

#[utoipa::path(get, path = "/v1/memory/{namespace}/{space}", tag = "memory",
    params(("namespace" = String, Path, description = "The namespace"),
        ("space" = String, Path, description = "shared:<name>, agent:<agent id> or episodes:<agent id>")),
    responses((status = 200, description = "The space's live memories, in the order stored"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, space)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (service, key) = open(&state, &caller, &namespace, &space, false)?;
    let listed = service.list(&key).await?;
    let memories: Vec<Value> = listed
        .into_iter()
        .map(|l| {
            json!({"id": l.id, "kind": l.kind, "text_sha256": aura_tools::text_sha256(&l.text), "text": l.text})
        })
        .collect();
    Ok(Json(
        json!({"namespace": namespace, "space": space, "memories": memories}),
    ))
}

#[utoipa::path(post, path = "/v1/memory/{namespace}/{space}", tag = "memory",
    params(("namespace" = String, Path, description = "The namespace"),
        ("space" = String, Path, description = "shared:<name> or agent:<agent id>")),
    request_body(content = Object, description = "{text, id?, kind?}: the id defaults to m- and the text's SHA-256's first 16 hex digits, the kind to fact"),
    responses((status = 201, description = "Stored, embedded and recorded"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn store(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, space)): Path<(String, String)>,
    ApiJson(request): ApiJson<StoreRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (service, key) = open(&state, &caller, &namespace, &space, true)?;
    if request.text.trim().is_empty() {
        return Err(invalid("the text is empty"));
    }
    if request.text.len() > aura_tools::MAX_MEMORY_TEXT {
        return Err(invalid(format!(
            "the text is longer than {} bytes",
            aura_tools::MAX_MEMORY_TEXT
        )));
    }
    let sha = aura_tools::text_sha256(&request.text);
    let id = request.id.unwrap_or_else(|| format!("m-{}", &sha[..16]));
    if !aura_tools::valid_memory_id(&id) {
        return Err(invalid(
            "an id is 1-128 of letters, digits, '.', '_', '-' and ':'",
        ));
    }
    let kind = request.kind.unwrap_or_else(|| "fact".to_owned());
    if kind.is_empty()
        || kind.len() > 32
        || !kind
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
    {
        return Err(invalid("a kind is 1-32 of a-z, 0-9, '_' and '-'"));
    }
    let seq = service.store(&key, &id, &kind, &request.text).await?;
    let body = json!({
        "namespace": namespace, "space": space, "id": id, "kind": kind,
        "text_sha256": sha, "bytes": request.text.len(), "by": caller.name,
    });
    // Recorded once it is stored; a memory that cannot be recorded is forgotten again, so
    // nothing stays in memory that the ledger does not show.
    let entry = match record(&state, "memory.stored", &body).await {
        Ok(entry) => entry,
        Err(e) => {
            let _ = service.forget(&key, &id).await;
            return Err(e);
        }
    };
    let mut answer = body;
    answer["seq"] = json!(seq);
    answer["entry"] = json!(entry);
    Ok((StatusCode::CREATED, Json(answer)))
}

#[utoipa::path(post, path = "/v1/memory/{namespace}/{space}/search", tag = "memory",
    params(("namespace" = String, Path, description = "The namespace"),
        ("space" = String, Path, description = "shared:<name>, agent:<agent id> or episodes:<agent id>")),
    request_body(content = Object, description = "{query, k?}: k is 1-50, 5 by default"),
    responses((status = 200, description = "The most similar memories, most similar first"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, space)): Path<(String, String)>,
    ApiJson(request): ApiJson<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let (service, key) = open(&state, &caller, &namespace, &space, false)?;
    if request.query.trim().is_empty() || request.query.len() > aura_tools::MAX_QUERY {
        return Err(invalid(format!(
            "the query must be 1 to {} bytes",
            aura_tools::MAX_QUERY
        )));
    }
    let k = request.k.unwrap_or(aura_tools::DEFAULT_K);
    if !(1..=aura_tools::MAX_K).contains(&k) {
        return Err(invalid(format!(
            "k is {k}; ask for 1 to {}",
            aura_tools::MAX_K
        )));
    }
    let hits = service.search(&key, &request.query, k as usize).await?;
    let memories: Vec<Value> = hits
        .into_iter()
        .map(|h| json!({"id": h.id, "kind": h.kind, "text": h.text, "score": format!("{:.4}", h.score)}))
        .collect();
    Ok(Json(
        json!({"namespace": namespace, "space": space, "memories": memories}),
    ))
}

#[utoipa::path(post, path = "/v1/memory/{namespace}/{space}/forget", tag = "memory",
    params(("namespace" = String, Path, description = "The namespace"),
        ("space" = String, Path, description = "shared:<name> or agent:<agent id>")),
    request_body(content = Object, description = "{id}"),
    responses((status = 200, description = "Forgotten and recorded"),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn forget(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, space)): Path<(String, String)>,
    ApiJson(request): ApiJson<ForgetRequest>,
) -> Result<Json<Value>, ApiError> {
    let (service, key) = open(&state, &caller, &namespace, &space, true)?;
    if !aura_tools::valid_memory_id(&request.id) {
        return Err(invalid(
            "an id is 1-128 of letters, digits, '.', '_', '-' and ':'",
        ));
    }
    if !service.forget(&key, &request.id).await? {
        return Err(ApiError::not_found(format!(
            "there is no memory `{}` in {space} of namespace {namespace}",
            request.id
        )));
    }
    let body = json!({"namespace": namespace, "space": space, "id": request.id, "by": caller.name});
    // Forgetting cannot be undone; if it cannot be recorded, the caller hears so.
    let entry = record(&state, "memory.forgotten", &body).await?;
    let mut answer = body;
    answer["forgotten"] = json!(true);
    answer["entry"] = json!(entry);
    Ok(Json(answer))
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, store))
        .routes(routes!(search))
        .routes(routes!(forget))
}
