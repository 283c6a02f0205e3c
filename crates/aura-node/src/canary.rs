//! Model aliases and canary releases: a name clients ask for (`"model": "chat"`) that the
//! node resolves, per request, to one of two installed models, the stable one or a canary,
//! and rolls back to the stable one by itself when the canary fails too often.
//!
//! An alias is configured in `aura.toml` (`[aliases.NAME]`, [`AliasConfig`]):
//!
//! ```toml
//! [aliases.chat]
//! model = "smollm2"             # the stable target (an installed model's name)
//! canary = "smollm2-ft"         # the canary target
//! canary_percent = 10           # the share of requests sent to the canary, 0 to 100
//! rollback_error_percent = 50   # roll back once the canary's error rate passes this...
//! rollback_window = 20          # ...over its last this many requests
//! regions = ["eu"]              # optional: only nodes in these regions serve it
//! ```
//!
//! **Deterministic choice.** Whether a request goes to the canary depends only on the
//! alias's name and the request's id (the `x-request-id` header, or one the node draws and
//! returns in that header): the first eight bytes of SHA-256 over
//! `"aura/model-alias/canary/v1\0" || alias || "\0" || request id`, read big-endian, modulo
//! 10,000, below the share in hundredths of a percent ([`canary_bucket`]). The same request
//! id always takes the same side, on any node, so a request can be replayed to the same
//! package; every answer names the model that served it (`aura-model`), and its usage
//! receipt names that model and its package digest, as receipts always do.
//!
//! **Automatic rollback.** The node counts the outcome of each canary request (a `5xx`, a
//! `404` because no node holds the canary, or a `409` because its package fails its
//! integrity checks, is a failure; a client's own mistakes are not, [`is_failure`]): once
//! at least `rollback_window` canary requests were counted and more than
//! `rollback_error_percent` of the last `rollback_window` failed, the alias rolls back:
//! every later request goes to the stable model, and the node records the rollback in its
//! own ledger stream (an entry of kind [`ROLLED_BACK_KIND`], [`RolledBack`]), so the
//! decision is signed, replayable and auditable. When the node starts it reads those
//! entries back: a canary rolled back stays rolled back (in a cluster, whichever node
//! rolled it back) until the alias names another canary. Each node counts the requests it
//! resolves; a rollback by one node reaches the others when they next start.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use aura_core::AgentId;
use aura_core::door::Entropy as _;
use aura_core::hash::Hash;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::routes::Authenticated;

/// The ledger entry kind of a rollback, in the node's own stream.
pub const ROLLED_BACK_KIND: &str = "model.alias.rolled_back";

/// The version of [`RolledBack`] this node writes.
pub const ROLLED_BACK_VERSION: u8 = 1;

/// The response header naming the model an alias resolved to.
pub const MODEL_HEADER: &str = "aura-model";

/// The header carrying a request's id, which decides its side of a canary.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the canary choice hashes first.
const DOMAIN: &[u8] = b"aura/model-alias/canary/v1\0";

/// The longest request id taken from a client; longer ones are refused.
const MAX_REQUEST_ID: usize = 128;

/// The largest rollback window (outcomes kept per alias).
const MAX_WINDOW: u32 = 10_000;

/// One `[aliases.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    /// The stable target: an installed model's name.
    pub model: String,
    /// The canary target, if a canary is under way.
    #[serde(default)]
    pub canary: Option<String>,
    /// The share of requests sent to the canary, in percent (0 to 100, to 0.01).
    #[serde(default)]
    pub canary_percent: f64,
    /// The canary's error rate, in percent, past which it is rolled back.
    #[serde(default = "default_error_percent")]
    pub rollback_error_percent: f64,
    /// How many of the canary's latest requests the error rate is measured over (and how
    /// many must have been seen before it is judged at all).
    #[serde(default = "default_window")]
    pub rollback_window: u32,
    /// Only nodes in these regions serve the alias (the request's `aura-regions`, if it
    /// names any, narrows them further). Empty: any region.
    #[serde(default)]
    pub regions: Vec<String>,
}

fn default_error_percent() -> f64 {
    50.0
}

fn default_window() -> u32 {
    20
}

/// A rollback, as the ledger records it (canonical JSON, version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolledBack {
    pub v: u8,
    pub alias: String,
    /// The stable model every request goes to from now on.
    pub model: String,
    /// The canary rolled back.
    pub canary: String,
    /// Failed canary requests among the last `window`.
    pub errors: u32,
    pub window: u32,
    /// The threshold passed, in hundredths of a percent (integers keep the entry's
    /// encoding exact).
    pub threshold_bp: u32,
    /// The last failure's status code.
    pub last_status: u16,
}

/// The canary bucket of a request, 0 to 9,999 (see the module's documentation).
pub fn canary_bucket(alias: &str, request_id: &str) -> u32 {
    let mut bytes = Vec::with_capacity(DOMAIN.len() + alias.len() + 1 + request_id.len());
    bytes.extend_from_slice(DOMAIN);
    bytes.extend_from_slice(alias.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(request_id.as_bytes());
    let digest = Hash::sha256(&bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    (u64::from_be_bytes(first) % 10_000) as u32
}

/// A percentage as hundredths of a percent, for a value already checked to be 0 to 100.
fn basis_points(percent: f64) -> u32 {
    (percent * 100.0).round().clamp(0.0, 10_000.0) as u32
}

/// Where an alias sent one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub alias: String,
    /// The model that serves it.
    pub model: String,
    /// Whether that is the canary.
    pub canary: bool,
    /// The regions allowed to serve it, from the alias (empty: any).
    pub regions: Vec<String>,
}

#[derive(Debug)]
struct Alias {
    config: AliasConfig,
    share_bp: u32,
    threshold_bp: u32,
    state: Mutex<Health>,
}

/// The canary's recent outcomes.
#[derive(Debug, Default)]
struct Health {
    rolled_back: bool,
    /// `true` for a failure, newest last, at most the window.
    outcomes: VecDeque<bool>,
}

/// The node's aliases. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Aliases {
    by_name: BTreeMap<String, Alias>,
}

impl Aliases {
    /// The aliases of `[aliases]`, checked: each a name of 1-128 characters with a stable
    /// model, a canary other than it, shares and thresholds from 0 to 100, a window of 1
    /// to 10,000.
    pub fn new(config: &BTreeMap<String, AliasConfig>) -> Result<Aliases, String> {
        let mut by_name = BTreeMap::new();
        for (name, c) in config {
            let bad = |why: String| format!("[aliases.{name}]: {why}");
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return Err(bad("an alias's name is 1 to 128 characters".into()));
            }
            if c.model.trim().is_empty() {
                return Err(bad("`model` names no model".into()));
            }
            if let Some(canary) = &c.canary
                && (canary.trim().is_empty() || *canary == c.model)
            {
                return Err(bad(
                    "`canary` must name another installed model than `model`".into(),
                ));
            }
            for (key, v) in [
                ("canary_percent", c.canary_percent),
                ("rollback_error_percent", c.rollback_error_percent),
            ] {
                if !(0.0..=100.0).contains(&v) {
                    return Err(bad(format!("`{key}` is {v}; it must be from 0 to 100")));
                }
            }
            if !(1..=MAX_WINDOW).contains(&c.rollback_window) {
                return Err(bad(format!(
                    "`rollback_window` is {}; it must be from 1 to {MAX_WINDOW}",
                    c.rollback_window
                )));
            }
            let label = |r: &String| {
                (1..=64).contains(&r.len())
                    && r.trim() == r
                    && !r.contains(',')
                    && !r.chars().any(char::is_control)
            };
            if !c.regions.iter().all(label) {
                return Err(bad(
                    "`regions` holds a label that is empty, over 64 bytes, or holds a comma or control character".into(),
                ));
            }
            by_name.insert(
                name.clone(),
                Alias {
                    share_bp: basis_points(c.canary_percent),
                    threshold_bp: basis_points(c.rollback_error_percent),
                    config: c.clone(),
                    state: Mutex::new(Health::default()),
                },
            );
        }
        Ok(Aliases { by_name })
    }

    /// Whether no alias is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Where `name` sends the request `request_id`, if `name` is an alias.
    pub fn resolve(&self, name: &str, request_id: &str) -> Option<Resolved> {
        let alias = self.by_name.get(name)?;
        let rolled_back = alias.lock().rolled_back;
        let canary = match &alias.config.canary {
            Some(canary) if !rolled_back && canary_bucket(name, request_id) < alias.share_bp => {
                Some(canary.clone())
            }
            _ => None,
        };
        Some(Resolved {
            alias: name.to_owned(),
            canary: canary.is_some(),
            model: canary.unwrap_or_else(|| alias.config.model.clone()),
            regions: alias.config.regions.clone(),
        })
    }

    /// Counts a canary request's outcome (`failed`, with its status); the rollback to
    /// record when this outcome made the error rate pass the threshold (once per canary).
    pub fn outcome(&self, name: &str, failed: bool, status: u16) -> Option<RolledBack> {
        let alias = self.by_name.get(name)?;
        let canary = alias.config.canary.clone()?;
        let window = alias.config.rollback_window as usize;
        let mut health = alias.lock();
        if health.rolled_back {
            return None;
        }
        health.outcomes.push_back(failed);
        while health.outcomes.len() > window {
            health.outcomes.pop_front();
        }
        if health.outcomes.len() < window {
            return None;
        }
        let errors = health.outcomes.iter().filter(|f| **f).count() as u64;
        // errors / window > threshold, in integers: errors * 10,000 > threshold * window.
        if errors * 10_000 <= u64::from(alias.threshold_bp) * window as u64 {
            return None;
        }
        health.rolled_back = true;
        Some(RolledBack {
            v: ROLLED_BACK_VERSION,
            alias: name.to_owned(),
            model: alias.config.model.clone(),
            canary,
            errors: errors as u32,
            window: window as u32,
            threshold_bp: alias.threshold_bp,
            last_status: status,
        })
    }

    /// Whether `name`'s canary was rolled back.
    pub fn is_rolled_back(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|a| a.lock().rolled_back)
    }

    /// Marks as rolled back the canaries that recorded rollbacks name (the alias and the
    /// same canary): read when the node starts, so a rollback outlives a restart.
    pub fn recall<'a>(&self, recorded: impl IntoIterator<Item = &'a RolledBack>) -> usize {
        let done: BTreeSet<(&str, &str)> = recorded
            .into_iter()
            .map(|r| (r.alias.as_str(), r.canary.as_str()))
            .collect();
        let mut n = 0;
        for (name, alias) in &self.by_name {
            if let Some(canary) = &alias.config.canary
                && done.contains(&(name.as_str(), canary.as_str()))
            {
                alias.lock().rolled_back = true;
                n += 1;
            }
        }
        n
    }

    /// Reads the rollbacks recorded in the node's own stream (`store`'s) and recalls them.
    /// An entry that does not decode is skipped with a warning: it cannot un-roll-back a
    /// canary, only fail to roll one back, and the rollback is recorded again then.
    pub async fn recall_from(
        &self,
        store: &dyn aura_store::Store,
    ) -> Result<usize, aura_store::Error> {
        if self.is_empty() {
            return Ok(0);
        }
        let mut recorded = Vec::new();
        let mut from = 1;
        loop {
            let page = store.agent_entries(AgentId::NODE, from, 1000).await?;
            for e in &page {
                if e.entry.kind.as_str() != ROLLED_BACK_KIND {
                    continue;
                }
                match e.body().map(serde_json::from_slice::<RolledBack>) {
                    Some(Ok(r)) => recorded.push(r),
                    _ => tracing::warn!(
                        index = e.entry.index,
                        "a canary rollback entry does not decode; skipped"
                    ),
                }
            }
            match page.last() {
                Some(last) if page.len() == 1000 => from = last.entry.seq + 1,
                _ => break,
            }
        }
        Ok(self.recall(&recorded))
    }
}

impl Alias {
    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a canary request's answer counts as the canary failing: the server's errors
/// (`5xx`: a node that cannot be reached, a model that fails), no node holding the model
/// (`404`), its package failing its integrity checks (`409`); not the client's own
/// mistakes (bad requests, keys, roles, rate limits), which the stable model would answer
/// alike.
pub fn is_failure(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT
}

/// The request's id from [`REQUEST_ID_HEADER`], or a fresh one (16 random bytes, hex).
/// A client's id must be 1 to 128 visible ASCII characters.
fn request_id(headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    match headers.get(REQUEST_ID_HEADER) {
        Some(v) => {
            let id = v.to_str().unwrap_or_default();
            if id.is_empty()
                || id.len() > MAX_REQUEST_ID
                || !id.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(ApiError::bad_request(
                    "invalid_request_id",
                    format!(
                        "`{REQUEST_ID_HEADER}` must be 1 to {MAX_REQUEST_ID} visible ASCII characters"
                    ),
                ));
            }
            Ok(id.to_owned())
        }
        None => {
            let mut bytes = [0u8; 16];
            aura_core::door::OsEntropy.fill(&mut bytes);
            Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}

/// The regions a request may be served in once the alias's own are applied: the alias's
/// when the request names none, else those of the request's that the alias allows (an
/// empty intersection is refused).
fn narrowed(request: Option<&str>, alias: &[String]) -> Result<Option<String>, ApiError> {
    if alias.is_empty() {
        return Ok(request.map(str::to_owned));
    }
    let Some(asked) = request else {
        return Ok(Some(alias.join(",")));
    };
    let both: Vec<&str> = asked
        .split(',')
        .map(str::trim)
        .filter(|r| alias.iter().any(|a| a == r))
        .collect();
    if both.is_empty() {
        return Err(ApiError::forbidden(format!(
            "the model alias may be served only in region {}, and the request allows none of them (hint: widen `{}` or leave it out)",
            alias.join(", "),
            crate::forward::REGIONS_HEADER
        )));
    }
    Ok(Some(both.join(",")))
}

/// Resolves a model alias in an inference request (`/v1/chat/completions`,
/// `/v1/completions`, `/v1/embeddings`) before it is routed or served: the body's `model`
/// becomes the chosen target, the alias's regions bound the request, and the answer
/// names the model (`aura-model`) and the request's id. Requests another node forwarded
/// were resolved there and pass as they are.
pub(crate) async fn resolve(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.aliases.is_empty()
        || request
            .extensions()
            .get::<crate::forward::Forwarded>()
            .is_some()
        || !crate::forward::is_inference(&request)
        || !matches!(
            request.extensions().get::<Authenticated>(),
            Some(Authenticated(Ok(_)))
        )
    {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, state.limits.body_bytes).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            "the request body is larger than this node accepts, or did not arrive",
        )
        .into_response();
    };
    // Not JSON, or no model: the handler says what is wrong.
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let Some(name) = json
        .get("model")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
    else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    if !state.aliases.by_name.contains_key(&name) {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    }
    let id = match request_id(&parts.headers) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let Some(resolved) = state.aliases.resolve(&name, &id) else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    // The alias's regions bound the request's (a header that is not text is left for the
    // router to refuse).
    let regions_header = HeaderName::from_static(crate::forward::REGIONS_HEADER);
    let asked = parts.headers.get(&regions_header).map(|v| v.to_str());
    if !resolved.regions.is_empty() && !matches!(asked, Some(Err(_))) {
        let asked = asked.and_then(Result::ok).map(str::to_owned);
        match narrowed(asked.as_deref(), &resolved.regions) {
            Ok(Some(regions)) => match HeaderValue::from_str(&regions) {
                Ok(v) => {
                    parts.headers.insert(regions_header, v);
                }
                Err(_) => {
                    return ApiError::bad_request(
                        "invalid_regions",
                        "the alias's regions are not a header value",
                    )
                    .into_response();
                }
            },
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
    }
    json["model"] = serde_json::Value::String(resolved.model.clone());
    let body = match serde_json::to_vec(&json) {
        Ok(b) => b,
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&id) {
        parts.headers.insert(REQUEST_ID_HEADER, v);
    }
    let mut response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let status = response.status();
    if let Ok(v) = HeaderValue::from_str(&resolved.model) {
        response.headers_mut().insert(MODEL_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    if resolved.canary
        && let Some(rollback) =
            state
                .aliases
                .outcome(&resolved.alias, is_failure(status), status.as_u16())
    {
        record_rollback(&state, &rollback).await;
    }
    response
}

/// Records a rollback in the node's own stream. A rollback the ledger refuses still
/// holds on this node (the canary stays off); the failure is logged.
async fn record_rollback(state: &AppState, rollback: &RolledBack) {
    tracing::warn!(
        alias = %rollback.alias,
        canary = %rollback.canary,
        errors = rollback.errors,
        window = rollback.window,
        "the canary failed too often: the alias is rolled back to its stable model"
    );
    let entry = aura_ledger::Kind::new(ROLLED_BACK_KIND)
        .map_err(|e| e.to_string())
        .and_then(|kind| {
            aura_core::jcs::to_vec(rollback)
                .map(|body| (kind, body))
                .map_err(|e| e.to_string())
        });
    let (kind, body) = match entry {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a canary rollback");
            return;
        }
    };
    let appended = state
        .engine
        .store()
        .append(vec![aura_store::NewEntry {
            agent: AgentId::NODE,
            seq: aura_store::Seq::Next,
            kind,
            recorded_at: state.engine.now(),
            body,
        }])
        .await;
    if let Err(e) = appended {
        tracing::error!(error = %e, "cannot record a canary rollback in the ledger");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use proptest::prelude::*;

    use super::*;

    fn aliases(canary_percent: f64, window: u32, error_percent: f64) -> Aliases {
        let mut config = BTreeMap::new();
        config.insert(
            "chat".to_owned(),
            AliasConfig {
                model: "stable".into(),
                canary: Some("canary".into()),
                canary_percent,
                rollback_error_percent: error_percent,
                rollback_window: window,
                regions: Vec::new(),
            },
        );
        Aliases::new(&config).unwrap()
    }

    /// The test vector: the bucket of request `req-1` of alias `chat`.
    #[test]
    fn the_canary_bucket_test_vector_holds() {
        let mut bytes = b"aura/model-alias/canary/v1\0chat\0req-1".to_vec();
        let d = Hash::sha256(&bytes);
        let first = u64::from_be_bytes(d.as_bytes()[..8].try_into().unwrap());
        assert_eq!(canary_bucket("chat", "req-1"), (first % 10_000) as u32);
        assert_eq!(canary_bucket("chat", "req-1"), CANARY_VECTOR);
        bytes.push(b'x');
        assert_ne!(Hash::sha256(&bytes), d);
    }

    /// `canary_bucket("chat", "req-1")`, as docs/openai.md gives it.
    const CANARY_VECTOR: u32 = 9045;

    /// The split over 1,000 requests (ids `req-0` to `req-999`) is within 5 points of the
    /// share asked, for every share; the same id always takes the same side.
    #[test]
    fn a_canary_takes_its_share_of_a_thousand_requests() {
        for percent in [0.0, 1.0, 5.0, 10.0, 25.0, 50.0, 90.0, 100.0] {
            let a = aliases(percent, 20, 50.0);
            let canary = (0..1000)
                .filter(|i| a.resolve("chat", &format!("req-{i}")).unwrap().canary)
                .count();
            let got = canary as f64 / 10.0;
            assert!((got - percent).abs() <= 5.0, "{percent}%: {got}%");
            for i in 0..50 {
                let id = format!("req-{i}");
                assert_eq!(a.resolve("chat", &id), a.resolve("chat", &id));
            }
        }
    }

    proptest! {
        /// Any share, any 1,000 distinct request ids: within 5 points.
        #[test]
        fn any_thousand_requests_split_within_five_points(
            percent in 0.0f64..=100.0,
            seed in any::<u64>(),
        ) {
            let a = aliases(percent, 20, 50.0);
            let canary = (0..1000u64)
                .filter(|i| a.resolve("chat", &format!("{seed:x}-{i}")).unwrap().canary)
                .count();
            let got = canary as f64 / 10.0;
            prop_assert!((got - percent).abs() <= 5.0, "{}%: {}%", percent, got);
        }
    }

    #[test]
    fn the_canary_rolls_back_once_its_error_rate_passes_the_threshold() {
        let a = aliases(100.0, 4, 50.0);
        // Fewer than four seen, then two failures in four: 50% does not pass 50%.
        for failed in [false, false, true, true] {
            assert_eq!(
                a.outcome("chat", failed, if failed { 503 } else { 200 }),
                None
            );
        }
        assert!(!a.is_rolled_back("chat"));
        // A third failure in the last four: 75%.
        let r = a.outcome("chat", true, 502).unwrap();
        assert_eq!(
            r,
            RolledBack {
                v: 1,
                alias: "chat".into(),
                model: "stable".into(),
                canary: "canary".into(),
                errors: 3,
                window: 4,
                threshold_bp: 5000,
                last_status: 502,
            }
        );
        assert!(a.is_rolled_back("chat"));
        // Once, and every request now goes to the stable model.
        assert_eq!(a.outcome("chat", true, 503), None);
        for i in 0..100 {
            let r = a.resolve("chat", &format!("{i}")).unwrap();
            assert_eq!((r.model.as_str(), r.canary), ("stable", false));
        }
    }

    #[test]
    fn a_recorded_rollback_is_recalled_for_the_same_canary_only() {
        let a = aliases(100.0, 4, 50.0);
        let other = RolledBack {
            v: 1,
            alias: "chat".into(),
            model: "stable".into(),
            canary: "an-older-canary".into(),
            errors: 4,
            window: 4,
            threshold_bp: 5000,
            last_status: 503,
        };
        assert_eq!(a.recall([&other]), 0);
        assert!(!a.is_rolled_back("chat"));
        let same = RolledBack {
            canary: "canary".into(),
            ..other
        };
        assert_eq!(a.recall([&same]), 1);
        assert!(a.resolve("chat", "x").unwrap().model == "stable");
    }

    #[test]
    fn bad_alias_tables_are_refused() {
        let check = |edit: fn(&mut AliasConfig), says: &str| {
            let mut c = AliasConfig {
                model: "stable".into(),
                canary: Some("canary".into()),
                canary_percent: 10.0,
                rollback_error_percent: 50.0,
                rollback_window: 20,
                regions: Vec::new(),
            };
            edit(&mut c);
            let e = Aliases::new(&BTreeMap::from([("chat".to_owned(), c)])).unwrap_err();
            assert!(e.contains(says), "{e}");
        };
        check(|c| c.model = " ".into(), "`model`");
        check(|c| c.canary = Some("stable".into()), "`canary`");
        check(|c| c.canary_percent = 101.0, "canary_percent");
        check(|c| c.canary_percent = f64::NAN, "canary_percent");
        check(
            |c| c.rollback_error_percent = -1.0,
            "rollback_error_percent",
        );
        check(|c| c.rollback_window = 0, "rollback_window");
        check(|c| c.regions = vec![String::new()], "regions");
    }

    #[test]
    fn an_alias_s_regions_narrow_the_request_s() {
        let eu = vec!["eu".to_owned(), "ch".to_owned()];
        assert_eq!(narrowed(None, &[]).unwrap(), None);
        assert_eq!(narrowed(Some("us"), &[]).unwrap().as_deref(), Some("us"));
        assert_eq!(narrowed(None, &eu).unwrap().as_deref(), Some("eu,ch"));
        assert_eq!(
            narrowed(Some("us, ch"), &eu).unwrap().as_deref(),
            Some("ch")
        );
        assert_eq!(
            narrowed(Some("us"), &eu).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn request_ids_are_taken_or_drawn() {
        let mut h = axum::http::HeaderMap::new();
        let drawn = request_id(&h).unwrap();
        assert_eq!(drawn.len(), 32);
        assert_ne!(drawn, request_id(&h).unwrap());
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-1"));
        assert_eq!(request_id(&h).unwrap(), "abc-1");
        for bad in ["", "a b", &"x".repeat(129)] {
            h.insert(REQUEST_ID_HEADER, HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                request_id(&h).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
    }
}
