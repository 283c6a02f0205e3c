//! The HTTP routes. Each module registers its handlers through `utoipa-axum`, so the
//! OpenAPI document at `/openapi.json` lists exactly the routes that exist.

mod agents;
mod audio;
pub(crate) mod cells;
mod events;
mod health;
mod images;
mod ledger;
mod memory;
mod metrics;
mod missions;
mod openai;
mod receipts;
mod schedules;
mod system;
pub(crate) mod ui;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::rate::Bucket;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aura node API",
        description = "Governed, sandboxed, signed and replayable AI agents. Errors are `{\"error\":{\"message\",\"type\",\"code\"}}`. \
                       Authenticate with `Authorization: Bearer <key>` unless the node runs without keys on loopback."
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(crate) fn router(state: AppState) -> axum::Router {
    let (api_router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(agents::routes())
        .merge(ledger::routes())
        .merge(events::routes())
        .merge(missions::routes())
        .merge(openai::routes())
        .merge(cells::routes())
        .merge(system::routes())
        .merge(receipts::routes())
        .merge(audio::routes())
        .merge(metrics::routes())
        .merge(images::routes())
        .merge(schedules::routes())
        .merge(memory::routes())
        .split_for_parts();
    let doc = serde_json::to_value(&api).unwrap_or_default();
    // Layers run outermost first: the request count, the host and origin checks, then who
    // is calling and their rate, then the body's deadline.
    api_router
        .merge(ui::routes())
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { axum::Json(doc.clone()) }),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(DefaultBodyLimit::max(state.limits.body_bytes))
        // In a cluster, requests for another node's agents go there (once authenticated).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::cluster::route,
        ))
        // Model aliases resolve to their stable or canary model before routing (once
        // authenticated; docs/openai.md).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::canary::resolve,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), body_deadline))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::guard::check,
        ))
        // Outermost, so refusals by the guard, authentication and rate limit are counted.
        .layer(middleware::from_fn(metrics::count))
        .with_state(state)
}

/// Who a request is, as the [`Caller`](crate::Caller) extractor hands it to handlers.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub(crate) Result<Caller, ApiError>);

/// Authenticates the request, then takes a token from its caller's bucket: the key's, if
/// its secret verified; otherwise (no key, an unknown id, a forged secret) the source
/// address's, so that naming a key never spends that key's requests.
async fn authenticate(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    // A request another node of the cluster forwarded: its node token, not a key, says
    // who the caller is (the forwarding node authenticated them and charged their rate).
    if let Some(token) = request.headers().get(crate::node_token::HEADER) {
        let token = token.to_str().unwrap_or_default().to_owned();
        return match forwarded(&state, &token, request).await {
            Ok(request) => next.run(request).await,
            // A refused token spends its source address's requests, as a forged key does.
            Err(e) => match state.rate.check(&Bucket::of_address(addr.ip())) {
                Ok(()) => e.into_response(),
                Err(retry_after) => ApiError::rate_limited(retry_after).into_response(),
            },
        };
    }
    let caller = state.keys.authenticate(request.headers());
    let bucket = match &caller {
        Ok(Caller { key: Some(id), .. }) => Bucket::Key(id.clone()),
        _ => Bucket::of_address(addr.ip()),
    };
    if let Err(retry_after) = state.rate.check(&bucket) {
        return ApiError::rate_limited(retry_after).into_response();
    }
    request.extensions_mut().insert(Authenticated(caller));
    next.run(request).await
}

/// Checks a forwarded request's node token against the request (its body is read, within
/// the node's limit, and put back) and marks the request with the caller the token vouches
/// for. Refused (401) on a node outside a cluster, and for any token that does not hold.
async fn forwarded(state: &AppState, token: &str, request: Request) -> Result<Request, ApiError> {
    let Some(routing) = &state.cluster else {
        return Err(ApiError::unauthorized(
            "this node is not in a cluster: it accepts no node tokens",
        ));
    };
    // The signature first, so that a body is awaited only for a token an enrolled node
    // signed; then the body, within the node's deadline for bodies.
    routing.precheck(token).await?;
    let (mut parts, body) = request.into_parts();
    let secs = state.limits.body_timeout_secs.max(1);
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(secs),
        axum::body::to_bytes(body, state.limits.body_bytes),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            format!("the request body did not arrive within {secs} seconds"),
        )
    })?
    .map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            "the request body is larger than this node accepts, or did not arrive",
        )
    })?;
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str)
        .to_owned();
    let (caller, from) = routing
        .accept(token, parts.method.as_str(), &path, &body)
        .await?;
    parts.extensions.insert(Authenticated(Ok(caller)));
    parts.extensions.insert(crate::forward::Forwarded(from));
    Ok(Request::from_parts(parts, Body::from(body)))
}

/// Gives a request's body until [`Limits::body_timeout_secs`](crate::Limits) after its
/// head to arrive; a body still arriving then fails to read, and the request is answered
/// 408 ([`BodyTimedOut`]). A body trickled a byte at a time cannot hold a connection.
async fn body_deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if !has_body {
        return next.run(request).await;
    }
    let secs = state.limits.body_timeout_secs.max(1);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    let request = request.map(|body| {
        let frames = body.into_data_stream();
        Body::from_stream(futures_util::stream::unfold(
            Some(frames),
            move |frames| async move {
                let mut frames = frames?;
                match tokio::time::timeout_at(deadline, frames.next()).await {
                    Ok(Some(frame)) => Some((frame, Some(frames))),
                    Ok(None) => None,
                    Err(_) => Some((Err(axum::Error::new(BodyTimedOut(secs))), None)),
                }
            },
        ))
    });
    next.run(request).await
}

/// A request body that did not arrive within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} s")]
pub(crate) struct BodyTimedOut(pub(crate) u64);

/// Pagination bounds shared by list routes.
pub(crate) const MAX_PAGE: usize = 1000;

pub(crate) fn page(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, MAX_PAGE)
}
