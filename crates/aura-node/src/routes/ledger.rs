//! `/v1/ledger`: the signed checkpoint, inclusion and consistency proofs, and a full
//! verification. Proofs carry the entry they prove, so a caller gets proofs only of entries
//! it may read.

use aura_core::AgentId;
use aura_ledger::SignedCheckpoint;
use aura_ledger::proof::Proof;
use aura_store::{EntryRef, Verification};
use axum::Json;
use axum::extract::{Query, State};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::require;
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::wire::{CheckpointView, EntryView};

/// The latest checkpoint the node signed.
#[utoipa::path(get, path = "/v1/ledger/checkpoint", tag = "ledger",
    responses((status = 200, body = CheckpointView), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn checkpoint(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<CheckpointView>, ApiError> {
    let checkpoint = state
        .engine
        .store()
        .latest_checkpoint()
        .await?
        .ok_or_else(|| ApiError::not_found("the ledger is empty"))?;
    Ok(Json(CheckpointView {
        public_key: state.engine.node_key(),
        checkpoint,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct InclusionQuery {
    /// The entry's index in the ledger.
    index: Option<u64>,
    /// Or the entry as agent and sequence number.
    agent: Option<String>,
    seq: Option<u64>,
    /// Prove against the checkpoint of this tree size (default: the latest).
    size: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct InclusionView {
    entry: EntryView,
    path: Vec<String>,
    #[schema(value_type = Object)]
    checkpoint: SignedCheckpoint,
    /// The proof document (docs/ledger.md), for `aura ledger check-proof`.
    proof_base64: String,
}

/// Proof that an entry is in the signed ledger, checkable offline with the node's key.
#[utoipa::path(get, path = "/v1/ledger/proof/inclusion", tag = "ledger", params(InclusionQuery),
    responses((status = 200, body = InclusionView), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn inclusion(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<InclusionView>, ApiError> {
    let at = match (q.index, q.agent, q.seq) {
        (Some(i), None, None) => EntryRef::Index(i),
        (None, Some(a), Some(s)) => {
            let a: AgentId = a
                .parse()
                .map_err(|_| ApiError::bad_request("invalid_agent", "not an agent id"))?;
            EntryRef::AgentSeq(a, s)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give `index`, or `agent` and `seq`",
            ));
        }
    };
    let store = state.engine.store();
    let entry = store
        .entry(at)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no entry {at}")))?;
    let readable = match state.engine.agent(entry.entry.agent) {
        Some(a) => state.may_see(&caller, &a.namespace),
        // The node's own stream and streams that are not agents': operators only.
        None => caller.role == Role::Operator && caller.namespaces.is_none(),
    };
    if !readable {
        return Err(ApiError::not_found(format!("no entry {at}")));
    }
    let proof = store.inclusion_proof(entry.entry.index, q.size).await?;
    let proof_base64 = BASE64.encode(Proof::Inclusion(proof.clone()).encode());
    Ok(Json(InclusionView {
        entry: EntryView::from(&entry),
        path: proof.path.iter().map(|h| h.to_hex()).collect(),
        checkpoint: proof.checkpoint,
        proof_base64,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConsistencyQuery {
    /// Tree size of the older checkpoint.
    old: u64,
    /// Tree size of the newer checkpoint (default: the latest).
    new: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ConsistencyView {
    #[schema(value_type = Object)]
    old: SignedCheckpoint,
    #[schema(value_type = Object)]
    new: SignedCheckpoint,
    path: Vec<String>,
    proof_base64: String,
}

/// Proof that an older signed ledger is a prefix of a newer one.
#[utoipa::path(get, path = "/v1/ledger/proof/consistency", tag = "ledger", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyView), (status = 404, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn consistency(
    State(state): State<AppState>,
    _caller: Caller,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyView>, ApiError> {
    let proof = state.engine.store().consistency_proof(q.old, q.new).await?;
    let proof_base64 = BASE64.encode(Proof::Consistency(proof.clone()).encode());
    Ok(Json(ConsistencyView {
        old: proof.old,
        new: proof.new,
        path: proof.path.iter().map(|h| h.to_hex()).collect(),
        proof_base64,
    }))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct VerifyView {
    ok: bool,
    entries: Option<u64>,
    agents: Option<u64>,
    checkpoints: Option<u64>,
    root: Option<String>,
    /// What is wrong and where, when `ok` is false.
    failure: Option<String>,
}

/// Verifies the whole ledger: every entry, chain, tree and checkpoint signature.
#[utoipa::path(post, path = "/v1/ledger/verify", tag = "ledger",
    responses((status = 200, body = VerifyView), (status = 403, body = crate::error::ErrorBody)), security(("bearer" = [])))]
async fn verify(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<VerifyView>, ApiError> {
    require(&caller, &[Role::Operator])?;
    let view = match state.engine.store().verify(Box::new(|_| {})).await? {
        Verification::Ok(s) => VerifyView {
            ok: true,
            entries: Some(s.entries),
            agents: Some(s.agents),
            checkpoints: Some(s.checkpoints),
            root: Some(s.root.to_hex()),
            failure: None,
        },
        Verification::Failed(f) => VerifyView {
            ok: false,
            entries: None,
            agents: None,
            checkpoints: None,
            root: None,
            failure: Some(f.to_string()),
        },
    };
    Ok(Json(view))
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkpoint))
        .routes(routes!(inclusion))
        .routes(routes!(consistency))
        .routes(routes!(verify))
}
