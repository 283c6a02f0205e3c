//! MCP's streamable HTTP transport (protocol revisions 2025-03-26 and later), both ways.
//!
//! - **Client** ([`connect`]): the [`Client`] of [`crate::client`] speaks to a byte stream;
//!   here a bridge task turns each line it writes into a `POST` of that JSON-RPC message to
//!   the server's endpoint (`Accept: application/json, text/event-stream`, the session id
//!   and protocol revision headers once known) and writes back, as lines, every message the
//!   answer carries: one JSON body, or the `data` of each server-sent event until the server
//!   ends the stream. So deadlines, pings and closing work exactly as over stdio. A server
//!   that cannot be reached, answers an HTTP error to a request (a JSON-RPC error for that
//!   request is synthesised), or sends more than the message bound is handled as a
//!   stdio server that broke the protocol: the connection closes with the reason and the
//!   tool layer starts a new one for the next call. Redirects are not followed, so an
//!   allowlisted URL cannot send the node elsewhere.
//! - **Server** ([`serve`]): `POST /mcp` answers one JSON-RPC message with one JSON body
//!   (notifications and responses get `202 Accepted`); `GET /mcp` is `405` (this server
//!   never starts a stream of its own); `DELETE /mcp` ends a session. Every request needs
//!   `Authorization: Bearer <token>`; `initialize` opens a session (`Mcp-Session-Id`) bound
//!   to that token, and later requests must carry the session id and the same token. A
//!   browser's `Origin` other than a loopback one is refused (DNS rebinding), as the
//!   specification asks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio::io::{AsyncWriteExt as _, BufReader, DuplexStream};

use crate::client::{Client, CloseReason, Error, Options};
use crate::framing::{Frame, read_frame};
use crate::jsonrpc::{INTERNAL_ERROR, INVALID_REQUEST, Message, RpcError};
use crate::server::{Dispatcher, Handler};

/// The session header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The protocol revision header a client sends after the handshake.
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// Where and how to reach a streamable-HTTP server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The server's MCP endpoint (`http://` or `https://`).
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer: Option<String>,
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
}

/// Connects to the server at `endpoint` and completes the MCP handshake.
pub async fn connect(endpoint: Endpoint, options: Options) -> Result<Client, Error> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(endpoint.connect_timeout)
        .build()
        .map_err(|e| Error::Start(format!("cannot make an HTTP client: {e}")))?;
    // The client writes into `to_bridge`; the bridge writes answers into `from_bridge`.
    let (client_out, bridge_in) = tokio::io::duplex(1 << 16);
    let (bridge_out, client_in) = tokio::io::duplex(1 << 16);
    let reason: CloseReason = Arc::default();
    tokio::spawn(bridge(
        http,
        endpoint,
        options.max_message,
        BufReader::new(bridge_in),
        bridge_out,
        reason.clone(),
    ));
    Client::connect(client_in, client_out, options, Some(reason)).await
}

#[derive(Default)]
struct Session {
    id: Option<String>,
    version: Option<String>,
}

/// Moves messages between the client's pipe and the server until either side ends; its
/// return drops the pipe to the client, which then closes with `reason`.
async fn bridge(
    http: reqwest::Client,
    endpoint: Endpoint,
    max: usize,
    mut from_client: BufReader<DuplexStream>,
    to_client: DuplexStream,
    reason: CloseReason,
) {
    let to_client = Arc::new(tokio::sync::Mutex::new(to_client));
    let session = Arc::new(Mutex::new(Session::default()));
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::channel::<String>(1);
    let mut posts = tokio::task::JoinSet::new();
    let why = loop {
        let line = tokio::select! {
            frame = read_frame(&mut from_client, max) => match frame {
                Ok(Frame::Line(line)) => line,
                // The client is gone (dropped): nothing more to do.
                Ok(Frame::Eof) | Err(_) => break None,
                Ok(Frame::TooLarge) => break Some("the client wrote a message over the bound".to_owned()),
            },
            Some(why) = failed_rx.recv() => break Some(why),
        };
        let post = Post {
            http: http.clone(),
            endpoint: endpoint.clone(),
            session: session.clone(),
            to_client: to_client.clone(),
            max,
        };
        let failed = failed_tx.clone();
        posts.spawn(async move {
            if let Err(why) = post.send(line).await {
                let _ = failed.try_send(why);
            }
        });
        while posts.try_join_next().is_some() {}
    };
    posts.abort_all();
    if let Some(why) = why
        && let Ok(mut r) = reason.lock()
    {
        r.get_or_insert(why);
    }
    let id = session.lock().ok().and_then(|s| s.id.clone());
    if let Some(id) = id {
        // Ending the session is a courtesy: a server that is gone has ended it already.
        let mut end = http.delete(&endpoint.url).header(SESSION_HEADER, id);
        if let Some(b) = &endpoint.bearer {
            end = end.bearer_auth(b);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), end.send()).await;
    }
}

struct Post {
    http: reqwest::Client,
    endpoint: Endpoint,
    session: Arc<Mutex<Session>>,
    to_client: Arc<tokio::sync::Mutex<DuplexStream>>,
    max: usize,
}

impl Post {
    /// POSTs one message and passes on what comes back. `Err` closes the connection.
    async fn send(self, line: Vec<u8>) -> Result<(), String> {
        let sent: Option<Message> = Message::parse(&line).ok();
        let request_id = match &sent {
            Some(Message::Request { id, .. }) => Some(id.clone()),
            _ => None,
        };
        let is_initialize =
            matches!(&sent, Some(Message::Request { method, .. }) if method == "initialize");
        let mut req = self
            .http
            .post(&self.endpoint.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(line);
        if let Some(b) = &self.endpoint.bearer {
            req = req.bearer_auth(b);
        }
        {
            let s = self.session.lock().map_err(|_| "poisoned".to_owned())?;
            if let Some(id) = &s.id {
                req = req.header(SESSION_HEADER, id);
            }
            if let Some(v) = &s.version {
                req = req.header(VERSION_HEADER, v);
            }
        }
        let mut response = req
            .send()
            .await
            .map_err(|e| format!("the server cannot be reached: {e}"))?;
        let status = response.status();
        if is_initialize
            && let Some(id) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
            && let Ok(mut s) = self.session.lock()
        {
            s.id = Some(id.to_owned());
        }
        if status == StatusCode::ACCEPTED {
            return Ok(());
        }
        if status == StatusCode::NOT_FOUND && self.has_session() {
            return Err("the server ended the session (HTTP 404)".into());
        }
        let kind = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !status.is_success() {
            let body = read_bounded(&mut response, 4096).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            let why = format!(
                "HTTP {}{}{}",
                status.as_u16(),
                if text.is_empty() { "" } else { ": " },
                text.chars().take(300).collect::<String>()
            );
            // A refused request is that request's error; anything else ends the link.
            return match request_id {
                Some(id) => {
                    let error = Message::error(id, RpcError::new(INTERNAL_ERROR, why));
                    self.deliver(&error.to_line()).await
                }
                None => Err(why),
            };
        }
        if kind.starts_with("text/event-stream") {
            self.events(&mut response, is_initialize).await
        } else if kind.starts_with("application/json") {
            let body = read_bounded(&mut response, self.max).await?;
            self.message(&body, is_initialize).await
        } else {
            Err(format!(
                "the server answered with `{kind}`, not JSON or an event stream"
            ))
        }
    }

    fn has_session(&self) -> bool {
        self.session.lock().is_ok_and(|s| s.id.is_some())
    }

    /// Passes on one JSON-RPC message from the server (noting the protocol revision the
    /// server chose, which later requests name).
    async fn message(&self, body: &[u8], is_initialize: bool) -> Result<(), String> {
        let text = std::str::from_utf8(body).map_err(|_| "the server sent invalid UTF-8")?;
        let text = text.trim();
        if text.contains('\n') {
            return Err("the server sent a message that spans lines".into());
        }
        if is_initialize
            && let Ok(v) = serde_json::from_str::<Value>(text)
            && let Some(version) = v.pointer("/result/protocolVersion").and_then(Value::as_str)
            && let Ok(mut s) = self.session.lock()
        {
            s.version = Some(version.to_owned());
        }
        self.deliver(text.as_bytes()).await
    }

    async fn deliver(&self, line: &[u8]) -> Result<(), String> {
        let mut out = self.to_client.lock().await;
        let written = async {
            out.write_all(line).await?;
            out.write_all(b"\n").await?;
            out.flush().await
        }
        .await;
        written.map_err(|_| "the client is gone".to_owned())
    }

    /// Reads server-sent events until the server ends the stream; each event's data is one
    /// message.
    async fn events(
        &self,
        response: &mut reqwest::Response,
        is_initialize: bool,
    ) -> Result<(), String> {
        let mut pending: Vec<u8> = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| format!("the server's event stream broke: {e}"))?;
            let Some(chunk) = chunk else { break };
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = pending.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.is_empty() {
                    // The end of an event.
                    if !data.is_empty() {
                        let message = std::mem::take(&mut data);
                        self.message(&message, is_initialize).await?;
                    }
                } else if let Some(rest) = line.strip_prefix(b"data:") {
                    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                    if !data.is_empty() {
                        data.push(b'\n');
                    }
                    data.extend_from_slice(rest);
                }
                // `event:`, `id:`, `retry:` and comments carry nothing this client needs.
                if data.len() > self.max {
                    return Err(format!(
                        "the server sent a message over the {}-byte limit",
                        self.max
                    ));
                }
            }
            if pending.len() > self.max {
                return Err(format!(
                    "the server sent a line over the {}-byte limit",
                    self.max
                ));
            }
        }
        if !data.is_empty() {
            self.message(&data, is_initialize).await?;
        }
        Ok(())
    }
}

async fn read_bounded(response: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("the server's answer broke off: {e}"))?
    {
        if body.len() + chunk.len() > max {
            return Err(format!(
                "the server sent a message over the {max}-byte limit"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Makes the handler for a client that presented `token`, or refuses it (`Err` is the
/// reason, answered as 401).
#[async_trait::async_trait]
pub trait Sessions: Send + Sync + 'static {
    async fn open(&self, token: &str) -> Result<Arc<dyn Handler>, String>;
}

struct Open {
    token_hash: [u8; 32],
    dispatcher: Dispatcher,
}

struct ServerState {
    sessions: Arc<dyn Sessions>,
    open: Mutex<HashMap<String, Open>>,
    max_message: usize,
}

/// The most sessions open at once; `initialize` beyond it is refused (503).
pub const MAX_SESSIONS: usize = 1024;

/// Serves MCP over streamable HTTP at `/mcp` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sessions: Arc<dyn Sessions>,
    max_message: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(ServerState {
        sessions,
        open: Mutex::new(HashMap::new()),
        max_message,
    });
    let app = Router::new()
        .route(
            "/mcp",
            post(on_post)
                .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                .delete(on_delete),
        )
        .layer(axum::extract::DefaultBodyLimit::max(max_message))
        .with_state(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let body = Message::error(Value::Null, RpcError::new(INVALID_REQUEST, message)).to_line();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A browser page from another site must not reach a local server (DNS rebinding): only
/// requests without `Origin` (programs) or from a loopback origin pass.
fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// 128 random bits from the randomness door, as hex.
fn new_session_id() -> String {
    use aura_core::door::Entropy as _;
    let raw: [u8; 16] = aura_core::door::OsEntropy.array();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session a request names, checked against its token.
fn session_of(
    state: &ServerState,
    headers: &HeaderMap,
    token: &str,
) -> Result<Dispatcher, Box<Response>> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "no Mcp-Session-Id: send initialize first, then the session id it returned",
        )));
    };
    let open = state
        .open
        .lock()
        .map_err(|_| Box::new(refuse(StatusCode::INTERNAL_SERVER_ERROR, "poisoned")))?;
    match open.get(id) {
        None => Err(Box::new(refuse(
            StatusCode::NOT_FOUND,
            "no such session: it ended; initialize a new one",
        ))),
        Some(s) if s.token_hash != token_hash(token) => Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "this session belongs to another token",
        ))),
        Some(s) => Ok(s.dispatcher.clone()),
    }
}

async fn on_post(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !origin_allowed(&headers) {
        return refuse(StatusCode::FORBIDDEN, "this Origin may not use the server");
    }
    let Some(token) = bearer(&headers) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <an Aura API key>",
        );
    };
    if body.len() > state.max_message {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the message is over the {}-byte limit", state.max_message),
        );
    }
    let message = match Message::parse(&body) {
        Ok(m) => m,
        Err(bad) => {
            let bad = *bad;
            return json_response(StatusCode::OK, &Message::error(bad.id, bad.error), None);
        }
    };
    let is_initialize =
        matches!(&message, Message::Request { method, .. } if method == "initialize");
    let (dispatcher, new_session) = if is_initialize {
        let handler = match state.sessions.open(token).await {
            Ok(h) => h,
            Err(why) => return refuse(StatusCode::UNAUTHORIZED, &why),
        };
        let id = new_session_id();
        let dispatcher = Dispatcher::new(handler);
        {
            let Ok(mut open) = state.open.lock() else {
                return refuse(StatusCode::INTERNAL_SERVER_ERROR, "poisoned");
            };
            if open.len() >= MAX_SESSIONS {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many open sessions; end one (DELETE) and retry",
                );
            }
            open.insert(
                id.clone(),
                Open {
                    token_hash: token_hash(token),
                    dispatcher: dispatcher.clone(),
                },
            );
        }
        (dispatcher, Some(id))
    } else {
        match session_of(&state, &headers, token) {
            Ok(d) => (d, None),
            Err(refused) => return *refused,
        }
    };
    match dispatcher.answer(message).await {
        Some(answer) => json_response(StatusCode::OK, &answer, new_session),
        None => StatusCode::ACCEPTED.into_response(),
    }
}

async fn on_delete(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <token>",
        );
    };
    if let Err(refused) = session_of(&state, &headers, token) {
        return *refused;
    }
    if let (Some(id), Ok(mut open)) = (
        headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()),
        state.open.lock(),
    ) {
        open.remove(id);
    }
    StatusCode::NO_CONTENT.into_response()
}

fn json_response(status: StatusCode, message: &Message, session: Option<String>) -> Response {
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        message.to_line(),
    )
        .into_response();
    if let Some(id) = session
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    response
}

/// Whether `url` lies under one of the `allowed` URL prefixes (an operator's allowlist of
/// streamable-HTTP servers). Prefixes compare on whole URLs, so `http://10.0.0.5:8000/`
/// does not allow `http://10.0.0.5:8000.evil/`: a prefix must end with `/` or be the
/// whole URL.
pub fn allowed(url: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|p| url == p || (p.ends_with('/') && url.starts_with(p.as_str())))
}
