//! API errors: one JSON shape for every failure, `{"error":{"message","type","code"}}`,
//! with the HTTP status that fits. The `type` values follow OpenAI's, so one client-side
//! handler serves Aura's own API and its OpenAI-compatible one.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// One lowercase line saying what went wrong.
    message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `conflict_error`, `rate_limit_error` or `api_error`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// A stable machine-readable code.
    code: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            message,
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "forbidden",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "not_found",
            message,
        )
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict_error", code, message)
    }

    /// 507: the node's disk is full, so it stores nothing more until there is room.
    pub fn disk_full(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "api_error",
            "disk_full",
            format!("{} (hint: free space on the node's disk)", message.into()),
        )
    }

    /// The cluster's database cannot be reached, or this node's lease of the shard moved:
    /// nothing was done, and the same request may succeed shortly. The database's own
    /// message stays in the node's log, not in the answer.
    pub fn store_unavailable(e: &aura_store::Error) -> Self {
        let (code, message) = match e {
            aura_store::Error::Fenced { shard } => (
                "not_owner",
                format!(
                    "this node no longer holds shard {shard}, so it wrote nothing (hint: retry: the request goes to the shard's new owner)"
                ),
            ),
            aura_store::Error::CommitFailed(_) => (
                "unavailable",
                "the cluster's database failed during a commit, so the write may or may not be recorded (hint: read it back before retrying)".to_owned(),
            ),
            _ => (
                "unavailable",
                "the cluster's database is unavailable (hint: retry shortly; see the node's log for the cause)".to_owned(),
            ),
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal",
            message,
        )
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limited",
            "too many requests",
        );
        e.retry_after = Some(retry_after);
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message,
                kind: self.kind,
                code: self.code,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The deadline of a body that did not arrive in time, if that is what `e` came from.
fn body_timed_out(e: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<crate::routes::BodyTimedOut>() {
            return Some(t.0);
        }
        cause = c.source();
    }
    None
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if let Some(secs) = body_timed_out(&r) {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
                format!("the request body did not arrive within {secs} seconds"),
            );
        }
        match &r {
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "body_too_large",
                    "the request body is larger than this node accepts",
                )
            }
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::bad_request("invalid_content_type", "send the body as application/json")
            }
            _ => ApiError::bad_request("invalid_json", r.body_text().to_lowercase()),
        }
    }
}

impl From<aura_engine::Error> for ApiError {
    fn from(e: aura_engine::Error) -> Self {
        use aura_engine::Error as E;
        let message = error_line(&e);
        match &e {
            E::NotFound(_) => ApiError::not_found(message),
            E::Invalid(_) | E::Kernel(_) => ApiError::bad_request("invalid_request", message),
            E::Forbidden(_) => ApiError::forbidden(message),
            E::Conflict(_) => ApiError::conflict("conflict", message),
            E::Pruned(_) => ApiError::new(StatusCode::GONE, "gone_error", "pruned", message),
            E::Closed | E::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "unavailable",
                message,
            ),
            E::Store(s) if s.is_refusal() => ApiError::conflict("conflict", message),
            E::Store(aura_store::Error::DiskFull { .. }) => ApiError::disk_full(message),
            E::Store(s) if is_unavailable(s) => {
                tracing::warn!(error = %message, "a request met a store error");
                ApiError::store_unavailable(s)
            }
            _ => ApiError::internal(message),
        }
    }
}

impl From<aura_store::Error> for ApiError {
    fn from(e: aura_store::Error) -> Self {
        let message = error_line(&e);
        match e {
            aura_store::Error::NotFound(_) => ApiError::not_found(message),
            aura_store::Error::DiskFull { .. } => ApiError::disk_full(message),
            e if e.is_refusal() => ApiError::conflict("conflict", message),
            e if is_unavailable(&e) => {
                tracing::warn!(error = %message, "a request met a store error");
                ApiError::store_unavailable(&e)
            }
            _ => ApiError::internal(message),
        }
    }
}

/// Whether a store error is the cluster's database being away or this node's lease
/// moving (503: retry), rather than a fault of the node (500).
fn is_unavailable(e: &aura_store::Error) -> bool {
    matches!(
        e,
        aura_store::Error::Postgres(_)
            | aura_store::Error::Unavailable(_)
            | aura_store::Error::Fenced { .. }
            | aura_store::Error::CommitFailed(_)
    )
}

/// An error and its causes on one line.
pub fn error_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

/// A JSON body extractor whose failures are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster node whose database went away, or whose shard lease moved under a
    /// write, answered 500 with the database's own message: it is now 503 with a hint
    /// (retry), through the engine and from the store, and the cause stays in the log.
    #[test]
    fn a_database_outage_or_a_moved_lease_is_answered_503_not_500() {
        let errors = || {
            [
                (
                    aura_store::Error::Unavailable(
                        "pool timed out: connection refused at 10.0.0.7".into(),
                    ),
                    "unavailable",
                ),
                (aura_store::Error::Fenced { shard: 7 }, "not_owner"),
                (
                    aura_store::Error::CommitFailed(std::sync::Arc::new(std::io::Error::other(
                        "connection reset",
                    ))),
                    "unavailable",
                ),
            ]
        };
        let answers = errors()
            .into_iter()
            .map(|(e, code)| (ApiError::from(e), code))
            .chain(
                errors()
                    .into_iter()
                    .map(|(e, code)| (ApiError::from(aura_engine::Error::Store(e)), code)),
            );
        for (answer, code) in answers {
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(answer.code, code);
            assert!(answer.message.contains("hint:"), "{}", answer.message);
            assert!(!answer.message.contains("10.0.0.7"), "{}", answer.message);
            assert!(!answer.message.contains("reset"), "{}", answer.message);
        }
    }

    /// A node whose disk filled up answered appends with 500 and "may or may not be
    /// stored": a full disk is now 507 `disk_full` with a hint, from the store directly
    /// and through the engine, so a client can tell it from a broken node.
    #[test]
    fn a_full_disk_is_answered_507_not_500() {
        let full = || aura_store::Error::DiskFull {
            path: "/var/lib/aura/ledger.db".into(),
        };
        for e in [
            ApiError::from(full()),
            ApiError::from(aura_engine::Error::Store(full())),
        ] {
            assert_eq!(e.status, StatusCode::INSUFFICIENT_STORAGE);
            assert_eq!(e.code, "disk_full");
            assert!(
                e.message.contains("is full: nothing was stored"),
                "{}",
                e.message
            );
            assert!(e.message.contains("hint:"), "{}", e.message);
        }
    }
}
