//! `GET /metrics`: the node's metrics in the Prometheus text format (docs/metrics.md), and
//! the layer that counts HTTP requests by route template and status.
//!
//! Metrics are the whole node's (every namespace's tools, models and missions), so like
//! `/v1/receipts` they need an operator key for all namespaces; a node without keys serves
//! them on loopback to anyone who can reach it, like every other route.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::require;
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;

/// The exposition format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The node's metrics in the Prometheus text exposition format 0.0.4.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    require(&caller, &[Role::Operator])?;
    if caller.namespaces.is_some() {
        return Err(ApiError::forbidden(
            "metrics are the whole node's; they need an operator key for all namespaces (`*`)",
        ));
    }
    // Missions by state are counted now from the engine's missions (every state is shown,
    // zeros included, so a dashboard's series never vanish).
    let mut by_state = [0u64; aura_kernel::MissionState::ALL.len()];
    for m in state.engine.missions(None, None, None) {
        if let Some(i) = aura_kernel::MissionState::ALL
            .iter()
            .position(|s| *s == m.state)
        {
            by_state[i] += 1;
        }
    }
    let gauges: Vec<_> = aura_kernel::MissionState::ALL
        .iter()
        .zip(by_state)
        .map(|(s, n)| {
            (
                &aura_metrics::MISSIONS,
                vec![s.as_str().to_owned()],
                n as f64,
            )
        })
        .collect();
    let body = aura_metrics::global().render(&gauges);
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    Ok(response)
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Counts every request by the route it matched (the template, such as
/// `/v1/missions/{id}`, never the raw path, so the number of series stays bounded), its
/// method and its status, and times it to the response head. Requests that matched no
/// route are counted under `unmatched`.
pub(crate) async fn count(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Methods outside the standard set are counted as `other`, for the same reason.
    let method = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let metrics = aura_metrics::global();
    metrics.inc(
        &aura_metrics::HTTP_REQUESTS,
        &[&route, method, response.status().as_str()],
    );
    metrics.observe(
        &aura_metrics::HTTP_SECONDS,
        &[&route],
        started.elapsed().as_secs_f64(),
    );
    response
}
