//! The HTTP routes. Each module registers its handlers through `utoipa-axum`, so the
//! OpenAPI document at `/openapi.json` lists exactly the routes that exist.

mod agents;
pub(crate) mod cells;
mod events;
mod health;
mod ledger;
mod missions;
mod openai;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::error::ApiError;

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
        .split_for_parts();
    let doc = serde_json::to_value(&api).unwrap_or_default();
    api_router
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { axum::Json(doc.clone()) }),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(middleware::from_fn_with_state(state.clone(), limit_rate))
        .layer(DefaultBodyLimit::max(state.limits.body_bytes))
        .with_state(state)
}

/// Refuses callers who exceed their rate, keyed by API key id or, without keys, address.
async fn limit_rate(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let who = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer aura_"))
        .and_then(|t| t.split('_').next())
        .map_or_else(|| addr.ip().to_string(), |id| format!("key:{id}"));
    match state.rate.check(&who) {
        Ok(()) => next.run(request).await,
        Err(retry_after) => ApiError::rate_limited(retry_after).into_response(),
    }
}

/// Pagination bounds shared by list routes.
pub(crate) const MAX_PAGE: usize = 1000;

pub(crate) fn page(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, MAX_PAGE)
}
