//! Routing in a cluster: a request any node receives is served by the node that should
//! serve it, and the node that received it relays the answer.
//!
//! - A request about an agent (`/v1/agents/{id}/…`, a mission submitted for it, a
//!   mission's controls and approvals) goes to the node holding the agent's shard lease.
//! - An inference request (`/v1/chat/completions`, streamed or not, `/v1/completions`,
//!   `/v1/embeddings`) for a model this node does not hold goes to a live node that
//!   advertises it in its heartbeat, the least loaded first, within the regions the
//!   request allows (the `aura-regions` header).
//!
//! The receiving node forwards the request itself over the authenticated node-to-node
//! channel: it authenticates the caller with its own API keys, then sends the request to
//! the other node's advertised URL with a node token ([`crate::node_token`]) that names
//! the caller and covers the exact request, never with the caller's key (keys are per
//! node). The serving node checks the token against the node keys enrolled in the
//! cluster's log and acts for the caller with the role the token names. A forwarded
//! request is never forwarded again, so two nodes that disagree for a moment about an
//! owner cannot bounce a request between them. With `[store] redirect = true` an agent's
//! requests are answered `307` to the owner instead, as before forwarding existed (the
//! client then needs a key on the owner).
//!
//! Reads need no forwarding: the ledger's routes read the shared database, and
//! `GET /v1/missions`, `GET /v1/missions/{id}` and `GET /v1/agents` add what other nodes
//! run to what this node runs by reading their records from it.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aura_core::keystore::Signer;
use aura_core::{AgentId, NodeId, PublicKey};
use aura_store::postgres::{PgStore, shard_of};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::AppState;
use crate::auth::Caller;
use crate::cluster::{Leases, advert_matches};
use crate::error::ApiError;
use crate::node_token::{self, Claims, Verifier};
use crate::routes::Authenticated;

/// The header in which a request names the regions whose nodes may serve it
/// (comma-separated region labels, as nodes were enrolled with).
pub const REGIONS_HEADER: &str = "aura-regions";

/// The header a forwarded response carries: the id of the node that served it.
pub const SERVED_BY_HEADER: &str = "aura-served-by";

/// How long a node waits to connect to another before trying the next or giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the enrolled node keys read from the log are trusted to be all of them: a
/// token signed by a key not among them makes the node read them again, at most this
/// often.
const ENROLLED_REFRESH: Duration = Duration::from_secs(1);

/// How a node routes (`[store]` in `aura.toml`).
#[derive(Debug, Clone)]
pub struct RouteOptions {
    /// Answer an agent's requests with `307` to the owner rather than forwarding them.
    pub redirect: bool,
    /// This node's region, from its enrollment.
    pub region: String,
    /// The cluster's lease: a node whose heartbeat is older is not sent anything.
    pub lease: Duration,
}

/// What the HTTP API needs to send requests to the node that serves them, and to accept
/// requests other nodes forward.
#[derive(Debug, Clone)]
pub struct Routing {
    pub leases: Arc<Leases>,
    pub store: PgStore,
    channel: Arc<Channel>,
}

#[derive(Debug)]
struct Channel {
    signer: Arc<Signer>,
    options: RouteOptions,
    client: reqwest::Client,
    verifier: Verifier,
    /// The enrolled node keys, and when they were read.
    enrolled: RwLock<(Option<Instant>, HashSet<PublicKey>)>,
}

/// Why a chat could not be had from another node.
#[derive(Debug)]
pub(crate) enum ElsewhereError {
    /// No live node of the cluster advertises the model.
    NoHolder,
    /// The database, or every node holding the model, could not be reached.
    Unavailable(String),
}

/// A request another node forwarded here, with the node that did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarded(pub(crate) NodeId);

/// Why a forward did not get an answer.
#[derive(Debug)]
enum ForwardError {
    /// The other node could not be reached: nothing was sent, another may be tried.
    Unreachable(String),
    /// The request went out and no answer came back.
    Failed(String),
}

impl Routing {
    /// Routing for this node, whose key is `signer`'s (the key the store signs with).
    pub fn new(
        leases: Arc<Leases>,
        store: PgStore,
        signer: Arc<Signer>,
        options: RouteOptions,
    ) -> Result<Routing, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A forwarded request goes where the cluster says, never where an answer or
            // the environment's proxy settings point.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the node-to-node client: {e}"))?;
        let me = signer.public_key().node_id();
        Ok(Routing {
            leases,
            store,
            channel: Arc::new(Channel {
                signer,
                options,
                client,
                verifier: Verifier::new(me),
                enrolled: RwLock::new((None, HashSet::new())),
            }),
        })
    }

    /// Whether `key` is enrolled in the cluster's log, reading the enrollments again when
    /// it is not among those last read (at most once per [`ENROLLED_REFRESH`]).
    async fn is_enrolled(&self, key: &PublicKey) -> Result<bool, aura_store::Error> {
        let stale = {
            let known = self
                .channel
                .enrolled
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if known.1.contains(key) {
                return Ok(true);
            }
            known.0.is_none_or(|at| at.elapsed() >= ENROLLED_REFRESH)
        };
        if !stale {
            return Ok(false);
        }
        let keys: HashSet<PublicKey> = self
            .store
            .enrolled()
            .await?
            .into_iter()
            .map(|e| e.node_key)
            .collect();
        let found = keys.contains(key);
        *self
            .channel
            .enrolled
            .write()
            .unwrap_or_else(|e| e.into_inner()) = (Some(Instant::now()), keys);
        Ok(found)
    }

    /// Checks that a node token is well formed and signed by an enrolled node, before its
    /// request's body is read.
    pub(crate) async fn precheck(&self, token: &str) -> Result<(), ApiError> {
        let from = Claims::open(token, |_| true).map_err(|e| refused(&e))?.from;
        let enrolled = self
            .is_enrolled(&from)
            .await
            .map_err(|e| ApiError::store_unavailable(&e))?;
        Claims::open(token, |k| enrolled && *k == from).map_err(|e| refused(&e))?;
        Ok(())
    }

    /// Checks a forwarded request's node token against the request; the caller it
    /// vouches for and the node that sent it.
    pub(crate) async fn accept(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(Caller, NodeId), ApiError> {
        // Who signed it, so that the enrollments are read only when they must be.
        let from = Claims::open(token, |_| true).map_err(|e| refused(&e))?.from;
        let enrolled = self
            .is_enrolled(&from)
            .await
            .map_err(|e| ApiError::store_unavailable(&e))?;
        let claims = self
            .channel
            .verifier
            .check(token, method, path, body, node_token::now_ms(), |k| {
                enrolled && *k == from
            })
            .map_err(|e| refused(&e))?;
        Ok((claims.caller(), claims.from.node_id()))
    }

    /// Sends a request to node `to` at `url` for `caller`, and relays the answer as it
    /// comes (a stream stays a stream).
    async fn forward(
        &self,
        parts: &axum::http::request::Parts,
        body: Bytes,
        caller: &Caller,
        to: NodeId,
        url: &str,
    ) -> Result<Response, ForwardError> {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", axum::http::uri::PathAndQuery::as_str);
        let answer = self
            .send(&parts.method, path, &parts.headers, body, caller, to, url)
            .await?;
        Ok(relay(answer, to))
    }

    /// Sends a request over the node-to-node channel: `method` and `path` (with its
    /// query) to node `to` at `url`, for `caller`, with the content headers of `headers`.
    #[allow(
        clippy::too_many_arguments,
        reason = "one request's parts, each needed"
    )]
    async fn send(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        caller: &Caller,
        to: NodeId,
        url: &str,
    ) -> Result<reqwest::Response, ForwardError> {
        let token = Claims::new(
            &self.channel.signer,
            to,
            method.as_str(),
            path,
            &body,
            caller,
        )
        .sign(&self.channel.signer)
        .map_err(|e| ForwardError::Failed(e.to_string()))?;
        let target = format!("{}{path}", url.trim_end_matches('/'));
        let mut out = self
            .channel
            .client
            .request(method.clone(), target.as_str())
            .header(node_token::HEADER, token);
        for name in [header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(v) = headers.get(&name) {
                out = out.header(name, v);
            }
        }
        out.body(body).send().await.map_err(|e| {
            if e.is_connect() {
                ForwardError::Unreachable(e.to_string())
            } else {
                ForwardError::Failed(e.to_string())
            }
        })
    }

    /// The live nodes other than this one that advertise `model`, within `regions` when
    /// some are named, the least loaded first (the fewest unfinished missions, then the
    /// freshest heartbeat).
    async fn holders(
        &self,
        model: &str,
        regions: Option<&[String]>,
    ) -> Result<Vec<aura_store::postgres::NodeState>, aura_store::Error> {
        let me = self.store.node_id();
        let live_within = u64::try_from(self.lease().as_millis()).unwrap_or(u64::MAX);
        let mut holders: Vec<_> = self
            .store
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.node != me && n.heartbeat_ms < live_within)
            .filter(|n| n.advert.models.iter().any(|m| advert_matches(m, model)))
            .filter(|n| regions.is_none_or(|r| r.contains(&n.advert.region)))
            .collect();
        holders.sort_by_key(|n| (n.advert.missions, n.heartbeat_ms));
        Ok(holders)
    }

    /// Asks a live node holding `model` for a chat completion (an OpenAI request `body`,
    /// not streamed) for `caller`, trying the next holder when one cannot be reached: the
    /// status and body of the answer, and the node that gave it. For a mission's local
    /// reasoner on a model this node does not hold ([`crate::remote_reasoner`]).
    pub(crate) async fn chat_elsewhere(
        &self,
        model: &str,
        body: Bytes,
        caller: &Caller,
    ) -> Result<(u16, Bytes, NodeId), ElsewhereError> {
        let holders = self
            .holders(model, None)
            .await
            .map_err(|e| ElsewhereError::Unavailable(e.to_string()))?;
        if holders.is_empty() {
            return Err(ElsewhereError::NoHolder);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut why = String::new();
        for n in &holders {
            match self
                .send(
                    &Method::POST,
                    "/v1/chat/completions",
                    &headers,
                    body.clone(),
                    caller,
                    n.node,
                    &n.advert.url,
                )
                .await
            {
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    let bytes = answer
                        .bytes()
                        .await
                        .map_err(|e| ElsewhereError::Unavailable(e.to_string()))?;
                    return Ok((status, bytes, n.node));
                }
                Err(ForwardError::Unreachable(e)) => why = e,
                Err(ForwardError::Failed(e)) => return Err(ElsewhereError::Unavailable(e)),
            }
        }
        Err(ElsewhereError::Unavailable(why))
    }

    fn lease(&self) -> Duration {
        self.channel.options.lease
    }
}

fn refused(e: &node_token::Refused) -> ApiError {
    ApiError::unauthorized(format!(
        "{e} (hint: node tokens come only from the cluster's enrolled nodes)"
    ))
}

/// The other node's answer as this node's: its status, its headers but those about the
/// connection, the node that served it, and its body as it arrives.
fn relay(answer: reqwest::Response, served_by: NodeId) -> Response {
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        let hop = [
            header::CONNECTION,
            header::TRANSFER_ENCODING,
            header::CONTENT_LENGTH,
            header::HeaderName::from_static("keep-alive"),
        ];
        if !hop.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&served_by.to_string()) {
        headers.insert(HeaderName::from_static(SERVED_BY_HEADER), v);
    }
    // Once the other node's body fails, the stream ends with that error (the client sees
    // a cut answer, never a made-up end).
    let chunks = futures_util::stream::unfold(Some(answer), |answer| async move {
        let mut answer = answer?;
        match answer.chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(answer))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Reads a request's body within the node's limit.
async fn body_of(
    state: &AppState,
    request: Request,
) -> Result<(axum::http::request::Parts, Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, state.limits.body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "body_too_large",
                "the request body is larger than this node accepts, or did not arrive",
            )
        })?;
    Ok((parts, bytes))
}

/// The caller the authentication middleware found: a request is forwarded only for a
/// caller this node authenticated.
fn caller_of(parts: &axum::http::request::Parts) -> Result<Caller, ApiError> {
    match parts.extensions.get::<Authenticated>() {
        Some(Authenticated(found)) => found.clone(),
        None => Err(ApiError::unauthorized("the request was not authenticated")),
    }
}

/// The agent a request is about, if it names one: `/v1/agents/{id}/…`, a mission's
/// controls (`/v1/missions/{id}/…`) and approvals (`POST /v1/approvals/{id}`) by the
/// mission's agent (found in this node's index, else in the records in the database), or
/// the `agent` of a mission submitted with `POST /v1/missions` (the body is read, within
/// the node's body limit, and put back). `GET /v1/missions/{id}` names none: any node
/// answers it from the database.
async fn agent_of(
    state: &AppState,
    request: Request,
) -> Result<(Option<AgentId>, Request), ApiError> {
    let path = request.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "v1", "agents", id, ..] => Ok((id.parse().ok(), request)),
        ["", "v1", "missions", _] if *request.method() == Method::GET => Ok((None, request)),
        ["", "v1", "missions", id, ..] => {
            let agent = mission_agent(state, id).await?;
            Ok((agent, request))
        }
        ["", "v1", "approvals", id] if *request.method() == Method::POST => {
            let agent = mission_agent(state, id).await?;
            Ok((agent, request))
        }
        ["", "v1", "missions"] if *request.method() == Method::POST => {
            let (parts, bytes) = body_of(state, request).await?;
            #[derive(serde::Deserialize)]
            struct Named {
                agent: Option<String>,
            }
            let agent = serde_json::from_slice::<Named>(&bytes)
                .ok()
                .and_then(|n| n.agent)
                .and_then(|a| a.parse().ok());
            Ok((agent, Request::from_parts(parts, Body::from(bytes))))
        }
        _ => Ok((None, request)),
    }
}

/// The agent of a mission: from this node's index, else from the records in the
/// database; `None` for an id that is not a mission's.
async fn mission_agent(state: &AppState, id: &str) -> Result<Option<AgentId>, ApiError> {
    let Ok(id) = id.parse::<aura_core::MissionId>() else {
        return Ok(None);
    };
    if let Some(m) = state.engine.mission(id) {
        return Ok(Some(m.agent));
    }
    Ok(state.engine.recorded_mission(id).await?.map(|m| m.agent))
}

fn no_owner(agent: AgentId, shard: u32) -> Response {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        "no_owner",
        format!(
            "agent {agent}'s shard {shard} is between owners (a node failed or the cluster is rebalancing) (hint: retry in a few seconds)"
        ),
    );
    e.retry_after = Some(1);
    e.into_response()
}

fn redirect(agent: AgentId, owner: NodeId, url: &str, request: &Request) -> Response {
    let target = format!(
        "{}{}",
        url.trim_end_matches('/'),
        request
            .uri()
            .path_and_query()
            .map_or("", axum::http::uri::PathAndQuery::as_str)
    );
    let mut response = ApiError::new(
        StatusCode::TEMPORARY_REDIRECT,
        "api_error",
        "moved",
        format!(
            "agent {agent} runs on node {owner} (hint: send the request to {target}; clients that follow redirects do)"
        ),
    )
    .into_response();
    if let Ok(location) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn unreachable_node(what: &str, why: &str) -> Response {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        "node_unreachable",
        format!(
            "{what} cannot be reached: {why} (hint: retry in a few seconds; `aura cluster status` shows the nodes)"
        ),
    );
    e.retry_after = Some(1);
    e.into_response()
}

fn forward_failed(what: &str, why: &str) -> Response {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "api_error",
        "forward_failed",
        format!("{what} did not answer the forwarded request: {why} (hint: retry; the node's log says more)"),
    )
    .into_response()
}

/// Sends requests to the node that serves them (see the module's documentation). Runs
/// after authentication; requests that need no routing go on to their handlers.
pub(crate) async fn route(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(routing) = state.cluster.clone() else {
        return next.run(request).await;
    };
    let forwarded = request.extensions().get::<Forwarded>().map(|f| f.0);
    if forwarded.is_none() && is_inference(&request) {
        return route_inference(&state, &routing, request, next).await;
    }
    let (agent, request) = match agent_of(&state, request).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let Some(agent) = agent else {
        return next.run(request).await;
    };
    let shard = shard_of(agent);
    if routing.leases.holds_shard(shard) {
        return next.run(request).await;
    }
    if let Some(from) = forwarded {
        // The shard moved while the request travelled: never sent on (no loops).
        tracing::info!(%from, %agent, shard, "a forwarded request's agent is not run here");
        return no_owner(agent, shard);
    }
    let me = routing.store.node_id();
    match routing.store.owner(shard).await {
        Ok(Some((owner, url))) if owner != me => {
            if routing.channel.options.redirect {
                return redirect(agent, owner, &url, &request);
            }
            let (parts, body) = match body_of(&state, request).await {
                Ok(read) => read,
                Err(e) => return e.into_response(),
            };
            let caller = match caller_of(&parts) {
                Ok(c) => c,
                Err(e) => return e.into_response(),
            };
            let what = format!("node {owner}, which runs agent {agent},");
            match routing.forward(&parts, body, &caller, owner, &url).await {
                Ok(answer) => answer,
                Err(ForwardError::Unreachable(why)) => unreachable_node(&what, &why),
                Err(ForwardError::Failed(why)) => forward_failed(&what, &why),
            }
        }
        Ok(_) => no_owner(agent, shard),
        Err(e) => ApiError::store_unavailable(&e).into_response(),
    }
}

/// The routes whose requests name a model to run.
pub(crate) fn is_inference(request: &Request) -> bool {
    *request.method() == Method::POST
        && matches!(
            request.uri().path(),
            "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings"
        )
}

/// The regions a request allows, from [`REGIONS_HEADER`]; `None` when it names none.
fn allowed_regions(headers: &HeaderMap) -> Result<Option<Vec<String>>, ApiError> {
    let Some(value) = headers.get(REGIONS_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_regions",
            format!(
                "`{REGIONS_HEADER}` must be a comma-separated list of region labels, like `eu, us`"
            ),
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    let regions: Vec<String> = text
        .split(',')
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    if regions.is_empty() || regions.iter().any(|r| r.len() > 64) {
        return Err(bad());
    }
    Ok(Some(regions))
}

/// Serves an inference request here when this node holds the model (in an allowed
/// region), else forwards it to a live node that advertises it, the least loaded first,
/// trying the next when one cannot be reached.
async fn route_inference(
    state: &AppState,
    routing: &Routing,
    request: Request,
    next: Next,
) -> Response {
    // Only an authenticated caller's request is routed (nothing about the cluster's models
    // is told to anyone else); the handler answers the others.
    if !matches!(
        request.extensions().get::<Authenticated>(),
        Some(Authenticated(Ok(_)))
    ) {
        return next.run(request).await;
    }
    let regions = match allowed_regions(request.headers()) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (parts, body) = match body_of(state, request).await {
        Ok(read) => read,
        Err(e) => return e.into_response(),
    };
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<String>,
    }
    let model = serde_json::from_slice::<Named>(&body)
        .ok()
        .and_then(|n| n.model);
    let here = regions
        .as_ref()
        .is_none_or(|r| r.contains(&routing.channel.options.region));
    // Without a model name the handler says what is wrong with the request.
    let Some(model) = model else {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    };
    if here && holds_model(state, &model).await {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    }
    let candidates = match routing.holders(&model, regions.as_deref()).await {
        Ok(holders) => holders,
        Err(e) => return ApiError::store_unavailable(&e).into_response(),
    };
    if candidates.is_empty() {
        let within = regions
            .map(|r| format!(" in region {}", r.join(" or ")))
            .unwrap_or_default();
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "no live node of this cluster holds the model `{model}`{within} (hint: `aura cluster status` lists each node's models; install it with `aura model pull` on a node)"
            ),
        )
        .into_response();
    }
    let caller = match caller_of(&parts) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut why = String::new();
    for n in &candidates {
        match routing
            .forward(&parts, body.clone(), &caller, n.node, &n.advert.url)
            .await
        {
            Ok(answer) => return answer,
            Err(ForwardError::Unreachable(e)) => {
                tracing::warn!(node = %n.node, error = %e, "a node holding the model cannot be reached; trying the next");
                why = e;
            }
            Err(ForwardError::Failed(e)) => {
                return forward_failed(&format!("node {}, which holds `{model}`,", n.node), &e);
            }
        }
    }
    unreachable_node(
        &format!("no node holding `{model}` ({} tried)", candidates.len()),
        &why,
    )
}

/// Whether this node's host holds a model of that name (requests name models by name; the
/// package digests advertised beside the names say which package each node holds).
async fn holds_model(state: &AppState, model: &str) -> bool {
    let Some(host) = &state.models else {
        return false;
    };
    host.list_async()
        .await
        .is_ok_and(|cards| cards.iter().any(|c| c.name == model))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    /// One check helper: the `aura-regions` header value (none when `None`) and the regions
    /// read from it, or `Err` when it is refused.
    fn check(value: Option<&[u8]>, expect: Result<Option<Vec<&str>>, ()>) {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(REGIONS_HEADER, HeaderValue::from_bytes(v).unwrap());
        }
        let got = allowed_regions(&headers).map_err(|e| {
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        });
        let expect = expect.map(|r| r.map(|r| r.into_iter().map(str::to_owned).collect()));
        assert_eq!(got, expect, "{value:?}");
    }

    #[test]
    fn regions_are_read_or_refused() {
        check(None, Ok(None));
        check(Some(b"eu".as_slice()), Ok(Some(vec!["eu"])));
        check(Some(b" eu , us,".as_slice()), Ok(Some(vec!["eu", "us"])));
        check(Some(b"".as_slice()), Err(()));
        check(Some(b" , ".as_slice()), Err(()));
        check(Some("x".repeat(65).as_bytes()), Err(()));
        check(Some(b"\xffeu".as_slice()), Err(()));
    }

    #[test]
    fn adverts_match_by_name() {
        assert!(advert_matches("minilm@ab12", "minilm"));
        assert!(advert_matches("minilm", "minilm"));
        assert!(!advert_matches("minilm@ab12", "ab12"));
        assert!(!advert_matches("minilm2@ab12", "minilm"));
        assert!(!advert_matches("mini", "minilm"));
    }

    #[test]
    fn only_inference_routes_are_routed_by_model() {
        let req = |method: Method, path: &str| {
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap()
        };
        assert!(is_inference(&req(Method::POST, "/v1/chat/completions")));
        assert!(is_inference(&req(Method::POST, "/v1/embeddings")));
        assert!(is_inference(&req(Method::POST, "/v1/completions")));
        assert!(!is_inference(&req(Method::GET, "/v1/chat/completions")));
        assert!(!is_inference(&req(Method::POST, "/v1/images/generations")));
        assert!(!is_inference(&req(Method::POST, "/v1/missions")));
    }
}
