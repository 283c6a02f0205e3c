//! Aura's node surfaces: the HTTP API (axum) with its OpenAPI document at `/openapi.json`,
//! the WebSocket event stream, API keys and roles, and request limits.
//!
//! The node does no agent work itself: it authenticates and authorises callers, checks
//! input, and calls the engine ([`aura_engine::Handle`]). Every route is registered through
//! `utoipa-axum`, so the OpenAPI document cannot miss one.
//!
//! Security by default: without API keys the node listens on loopback only and refuses any
//! other address; with keys every route but `/health` and `/openapi.json` needs one. Every
//! request must name a host the node answers to, and web pages of other origins may not
//! change anything or open the event stream (`guard.rs`); requests are rate-limited per
//! verified key or per source address (`rate.rs`); heads and bodies must arrive in time
//! (`server.rs`, [`Limits`]).

#![forbid(unsafe_code)]

pub mod auth;
pub mod canary;
pub mod cluster;
pub mod config;
pub mod error;
pub mod images_tool;
pub mod memory;
pub mod node_token;
pub mod remote_reasoner;
pub mod services;
pub mod speech;

mod forward;
mod guard;
mod rate;
mod routes;
mod server;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use aura_engine::Handle;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use tokio::net::TcpListener;

pub use aura_cell::CellAccess;
pub use auth::{ApiKeys, Caller, Role};
pub use config::{Config, Limits};
pub use error::ApiError;
pub use guard::AccessError;

/// What the node needs to serve.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// The API key file (`<home>/api-keys.json`); re-read when it changes.
    pub keys_file: std::path::PathBuf,
    pub limits: Limits,
    /// Host names requests may name besides the listen address (`[http] allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    /// Web origins whose pages may change things and open WebSockets, besides the node's
    /// own (`[http] allowed_origins`).
    pub allowed_origins: Vec<String>,
    /// The models served over the OpenAI-compatible API; without a host those routes
    /// answer 503.
    pub models: Option<Arc<aura_host::ModelHost>>,
    /// The cell runtime served at `/v1/cells` (to operators with a key); without one those
    /// routes answer 503.
    pub cells: Option<aura_cell::Runtime>,
    /// The workspaces and host paths cells may be given.
    pub cell_access: CellAccess,
    /// espeak-ng for `/v1/audio/speech`; without it that route answers 503.
    pub speech: Option<speech::Speech>,
    /// The memory served at `/v1/memory`; without it those routes answer 503.
    pub memory: Option<Arc<memory::MemoryService>>,
    /// Model aliases and their canaries (`[aliases]`, docs/openai.md); none without.
    pub aliases: Option<Arc<canary::Aliases>>,
}

/// Shared by every request.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Handle,
    /// The node's schedules (`/v1/schedules`), fired through `engine`.
    pub(crate) schedules: aura_engine::Schedules,
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) limits: Limits,
    pub(crate) rate: Arc<rate::RateLimiter>,
    pub(crate) access: Arc<guard::Access>,
    pub(crate) models: Option<Arc<aura_host::ModelHost>>,
    pub(crate) cells: Option<aura_cell::Runtime>,
    pub(crate) cell_access: CellAccess,
    pub(crate) speech: Option<speech::Speech>,
    pub(crate) memory: Option<Arc<memory::MemoryService>>,
    /// Model aliases, resolved before inference requests are routed.
    pub(crate) aliases: Arc<canary::Aliases>,
    /// Turns true when the server stops: open WebSockets close.
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
    /// In a cluster: where to send requests for agents this node does not run.
    pub(crate) cluster: Option<cluster::Routing>,
}

/// The API keys, re-read from their file when it changes (at most once a second).
///
/// Whether the node runs without keys is decided once, at start: a node started with keys
/// never falls back to the keyless mode if its key file is later emptied or removed. It then
/// refuses every request instead, failing closed.
#[derive(Debug)]
pub(crate) struct KeyCache {
    path: std::path::PathBuf,
    open: bool,
    current: std::sync::RwLock<(
        Option<std::time::SystemTime>,
        std::time::Instant,
        Arc<ApiKeys>,
    )>,
}

impl KeyCache {
    fn load(path: std::path::PathBuf) -> Result<KeyCache, auth::KeyError> {
        let keys = ApiKeys::load(&path)?;
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok(KeyCache {
            open: keys.is_empty(),
            current: std::sync::RwLock::new((mtime, std::time::Instant::now(), Arc::new(keys))),
            path,
        })
    }

    /// Whether the node runs without keys (then on loopback only).
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Who a request is, from its `Authorization` header: the local operator on a node
    /// without keys, else the key's caller once its secret verified.
    pub(crate) fn authenticate(&self, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
        if self.open {
            return Ok(Caller::local_operator());
        }
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // Browsers cannot set headers on a WebSocket, so an upgrade may carry the key as
        // a subprotocol instead (`aura.key.<key>`).
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .or_else(|| ws_protocol_key(headers));
        let Some(token) = token else {
            return Err(ApiError::unauthorized(
                "this node needs an API key: send `Authorization: Bearer <key>`",
            ));
        };
        self.keys()
            .authenticate(token.trim())
            .ok_or_else(|| ApiError::unauthorized("the API key is not valid"))
    }

    /// Whether a caller authenticated earlier is still the same caller under the keys in
    /// force now: false once its key was revoked, or its role or namespaces changed.
    pub(crate) fn still_valid(&self, caller: &Caller) -> bool {
        if self.open {
            return true;
        }
        caller
            .key
            .as_deref()
            .and_then(|id| self.keys().caller(id))
            .is_some_and(|now| now == *caller)
    }

    pub(crate) fn keys(&self) -> Arc<ApiKeys> {
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.1.elapsed() < std::time::Duration::from_secs(1) {
                return current.2.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        current.1 = std::time::Instant::now();
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime != current.0 {
            // A file that cannot be read now means no valid keys: fail closed.
            current.2 = Arc::new(ApiKeys::load(&self.path).unwrap_or_default());
            current.0 = mtime;
        }
        current.2.clone()
    }
}

impl AppState {
    /// Whether `caller` may see things of namespace `ns`: its key must allow the namespace,
    /// and an agent key sees only its own agent's namespace.
    pub(crate) fn may_see(&self, caller: &Caller, ns: &aura_identity::Namespace) -> bool {
        if !caller.may_use_namespace(ns) {
            return false;
        }
        match (caller.role, caller.agent) {
            (Role::Agent, Some(own)) => self.engine.agent(own).is_some_and(|a| &a.namespace == ns),
            (Role::Agent, None) => false,
            _ => true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0} without API keys")]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Keys(#[from] auth::KeyError),
    #[error(transparent)]
    Access(#[from] guard::AccessError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The node's schedules could not be read back from its ledger.
    #[error("cannot start the schedules")]
    Schedules(#[source] aura_engine::Error),
}

impl ServeError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ServeError::NotLoopback(_) => Some(
                "create a key with `aura apikey create NAME --role operator`, or listen on 127.0.0.1".into(),
            ),
            ServeError::Bind { .. } => Some("is another node running? choose another address with --listen".into()),
            ServeError::Keys(_) => Some("fix or remove the API key file (`aura apikey list` shows what it holds)".into()),
            ServeError::Access(_) => Some("list bare host names (`aura.example.com` or `aura.example.com:8443`) in allowed_hosts and origins (`https://console.example.com`) in allowed_origins".into()),
            ServeError::Schedules(_) => Some("`aura ledger verify` checks the ledger; the entry named is the node's own".into()),
        }
    }
}

/// A running HTTP server.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Stops accepting, closes the event streams, lets requests in flight finish for a
    /// few seconds, closes what is still open, and waits.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (it stops only on `shutdown` or an error).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Builds the router: every route, with its OpenAPI description.
pub(crate) fn router(state: AppState) -> axum::Router {
    routes::router(state)
}

/// The WebSocket subprotocol the event stream speaks; the server picks it when a client
/// offers it.
pub const WS_PROTOCOL: &str = "aura.v1";

/// The prefix of the subprotocol that carries an API key on a WebSocket handshake:
/// browsers cannot set `Authorization` on a WebSocket, so the web UI offers
/// `Sec-WebSocket-Protocol: aura.v1, aura.key.<key>` (as Kubernetes does with its bearer
/// subprotocol). The key travels in a request header either way; the server never echoes
/// it (it answers `aura.v1`).
pub const WS_KEY_PROTOCOL: &str = "aura.key.";

/// The API key a WebSocket handshake offers as a subprotocol, if it is one.
fn ws_protocol_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_KEY_PROTOCOL))
}

/// Starts serving `engine` over HTTP.
pub async fn serve(options: Options, engine: Handle) -> Result<Server, ServeError> {
    serve_in_cluster(options, engine, None).await
}

/// Starts serving `engine` over HTTP as a node of a cluster: requests for agents whose
/// shard another node holds are sent there ([`cluster::route`]).
pub async fn serve_in_cluster(
    options: Options,
    engine: Handle,
    cluster: Option<cluster::Routing>,
) -> Result<Server, ServeError> {
    let keys = KeyCache::load(options.keys_file)?;
    if keys.is_open() && !options.listen.ip().is_loopback() {
        return Err(ServeError::NotLoopback(options.listen));
    }
    let access = guard::Access::new(
        options.listen,
        &options.allowed_hosts,
        &options.allowed_origins,
    )?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let header_timeout = std::time::Duration::from_secs(options.limits.header_timeout_secs.max(1));
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
    // Schedules start once the engine has recovered its missions, so that a firing cut
    // short by a crash is finished under its own mission id, never twice; and only once
    // nothing else can fail, so that a node that did not start leaves no scheduler
    // running (two would fire the same instants).
    let schedules = aura_engine::Schedules::start(engine.clone())
        .await
        .map_err(ServeError::Schedules)?;
    let state = AppState {
        engine,
        schedules,
        keys: Arc::new(keys),
        rate: Arc::new(rate::RateLimiter::new(
            options.limits.requests_per_second,
            options.limits.burst,
        )),
        access: Arc::new(access),
        limits: options.limits,
        models: options.models,
        cells: options.cells,
        cell_access: options.cell_access,
        speech: options.speech,
        memory: options.memory,
        aliases: options.aliases.unwrap_or_default(),
        stopping: stopping.clone(),
        cluster,
    };
    let app = router(state);
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: options.listen,
        source,
    })?;
    let task = tokio::spawn(server::run(listener, app, header_timeout, stopping));
    Ok(Server {
        addr,
        shutdown: stop,
        task,
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// The caller the rate-limiting middleware authenticated (it has to know who calls
    /// before it can pick the bucket); a request that did not pass through it is refused.
    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Caller, ApiError> {
        parts.extensions.get::<routes::Authenticated>().map_or_else(
            || Err(ApiError::unauthorized("the request was not authenticated")),
            |a| a.0.clone(),
        )
    }
}
