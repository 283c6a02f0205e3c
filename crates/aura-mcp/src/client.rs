//! An MCP client over stdio: the initialize handshake, `tools/list` (all pages) and
//! `tools/call`, each request with a deadline, over a byte stream to one server.
//!
//! A reader task owns the server's output: it matches responses to waiting requests,
//! answers the server's `ping`, refuses its other requests (this client offers no
//! capabilities), and drops notifications. When the stream ends, breaks the framing or
//! sends more than the bound in one message, the connection is closed for good: every
//! waiting request and every later one fails with the reason, and the owner starts a new
//! connection if it wants one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::oneshot;

use crate::framing::{Frame, read_frame};
use crate::jsonrpc::{METHOD_NOT_FOUND, Message, PROTOCOL_VERSIONS, RpcError};

/// Why a request to a server failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The connection is gone: the server exited, closed its output or broke the protocol.
    #[error("the MCP server's connection is closed: {0}")]
    Closed(String),
    /// The server could not be started.
    #[error("the MCP server could not be started: {0}")]
    Start(String),
    /// A request too large to send.
    #[error("the request to the MCP server is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    /// No answer in time. The caller should drop the connection (the server may be hung).
    #[error("the MCP server did not answer `{method}` within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    /// The server answered with a JSON-RPC error.
    #[error("the MCP server refused `{method}`: {error}")]
    Rpc { method: String, error: RpcError },
    /// The server answered with something that is not what the method returns.
    #[error("the MCP server's answer to `{method}` is malformed: {reason}")]
    Protocol { method: String, reason: String },
}

/// What a connection needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bound on one message in either direction.
    pub max_message: usize,
    /// How long the handshake and `tools/list` may take.
    pub setup_timeout: Duration,
    /// The client's name in `clientInfo`.
    pub client_name: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_message: crate::jsonrpc::MAX_MESSAGE,
            setup_timeout: Duration::from_secs(30),
            client_name: "aura".into(),
        }
    }
}

/// A tool as the server lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteTool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    /// `annotations.destructiveHint`, only when the server set it.
    pub destructive: Option<bool>,
}

type Waiters = Arc<Mutex<Waiting>>;
type Writer = Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

#[derive(Default)]
struct Waiting {
    pending: HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>,
    /// Set once the connection is gone; later requests fail at once with it.
    closed: Option<String>,
}

/// A connection to one MCP server. Cheap to share behind an `Arc`.
pub struct Client {
    /// The server's input, shared with the reader task (which answers pings).
    out: Writer,
    waiting: Waiters,
    next_id: AtomicU64,
    options: Options,
    reader: tokio::task::JoinHandle<()>,
    /// What the server said of itself in the handshake.
    pub server_info: Value,
    /// The protocol revision the server chose.
    pub protocol_version: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server_info", &self.server_info)
            .field("protocol_version", &self.protocol_version)
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Where the reader learns why a stream ended, if its owner knows better than "end of
/// file" (a process's exit status and the tail of its stderr).
pub type CloseReason = Arc<Mutex<Option<String>>>;

impl Client {
    /// Connects over a server's stdout (`input`) and stdin (`output`) and completes the
    /// handshake: `initialize` with this crate's newest protocol revision, a check that the
    /// server chose one this crate speaks, then `notifications/initialized`.
    pub async fn connect<R, W>(
        input: R,
        output: W,
        options: Options,
        close_reason: Option<CloseReason>,
    ) -> Result<Client, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let waiting: Waiters = Arc::default();
        let out: Writer = Arc::new(tokio::sync::Mutex::new(Box::new(output)));
        let reader = tokio::spawn(read_loop(
            BufReader::new(input),
            waiting.clone(),
            out.clone(),
            options.max_message,
            close_reason,
        ));
        let mut client = Client {
            out,
            waiting,
            next_id: AtomicU64::new(1),
            options,
            reader,
            server_info: Value::Null,
            protocol_version: String::new(),
        };
        let init = client
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSIONS[0],
                    "capabilities": {},
                    "clientInfo": {"name": client.options.client_name, "version": env!("CARGO_PKG_VERSION")},
                }),
                client.options.setup_timeout,
            )
            .await?;
        let version = init
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !PROTOCOL_VERSIONS.contains(&version.as_str()) {
            return Err(Error::Protocol {
                method: "initialize".into(),
                reason: format!(
                    "the server chose protocol revision `{version}`; this client speaks {}",
                    PROTOCOL_VERSIONS.join(", ")
                ),
            });
        }
        client.protocol_version = version;
        client.server_info = init.get("serverInfo").cloned().unwrap_or(Value::Null);
        client
            .send(&Message::Notification {
                method: "notifications/initialized".into(),
                params: None,
            })
            .await?;
        Ok(client)
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.waiting
            .lock()
            .map(|w| w.closed.is_some())
            .unwrap_or(true)
    }

    async fn send(&self, message: &Message) -> Result<(), Error> {
        let mut line = message.to_line();
        if line.len() > self.options.max_message {
            return Err(Error::TooLarge {
                size: line.len(),
                limit: self.options.max_message,
            });
        }
        line.push(b'\n');
        let mut out = self.out.lock().await;
        let written = async {
            out.write_all(&line).await?;
            out.flush().await
        }
        .await;
        written.map_err(|e| {
            let reason = self.close(format!("writing to the server failed: {e}"));
            Error::Closed(reason)
        })
    }

    /// Marks the connection closed (keeping the first reason) and fails every waiter.
    fn close(&self, reason: String) -> String {
        close_all(&self.waiting, reason)
    }

    /// Sends a request and waits up to `timeout` for its answer.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self
                .waiting
                .lock()
                .map_err(|_| Error::Closed("the client's state is poisoned".into()))?;
            if let Some(reason) = &w.closed {
                return Err(Error::Closed(reason.clone()));
            }
            w.pending.insert(id, tx);
        }
        let sent = self
            .send(&Message::Request {
                id: json!(id),
                method: method.into(),
                params: Some(params),
            })
            .await;
        if let Err(e) = sent {
            self.forget(id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(error))) => Err(Error::Rpc {
                method: method.into(),
                error,
            }),
            Ok(Err(_)) => Err(Error::Closed(
                self.waiting
                    .lock()
                    .ok()
                    .and_then(|w| w.closed.clone())
                    .unwrap_or_else(|| "the connection ended".into()),
            )),
            Err(_) => {
                self.forget(id);
                // Tell the server it may stop; its answer, if one comes, is dropped.
                let _ = self
                    .send(&Message::Notification {
                        method: "notifications/cancelled".into(),
                        params: Some(json!({"requestId": id, "reason": "timed out"})),
                    })
                    .await;
                Err(Error::Timeout {
                    method: method.into(),
                    timeout,
                })
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Ok(mut w) = self.waiting.lock() {
            w.pending.remove(&id);
        }
    }

    /// Every tool the server lists, following `nextCursor` (at most 100 pages).
    pub async fn list_tools(&self) -> Result<Vec<RemoteTool>, Error> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let page = self
                .request("tools/list", params, self.options.setup_timeout)
                .await?;
            let bad = |reason: &str| Error::Protocol {
                method: "tools/list".into(),
                reason: reason.into(),
            };
            let list = page
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("it has no `tools` array"))?;
            for t in list {
                let name = t
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("a tool has no name"))?;
                let input_schema = t
                    .get("inputSchema")
                    .filter(|s| s.is_object())
                    .cloned()
                    .ok_or_else(|| bad("a tool has no `inputSchema` object"))?;
                tools.push(RemoteTool {
                    name: name.to_owned(),
                    description: t
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    input_schema,
                    destructive: t
                        .pointer("/annotations/destructiveHint")
                        .and_then(Value::as_bool),
                });
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(tools),
            }
        }
        Err(Error::Protocol {
            method: "tools/list".into(),
            reason: "more than 100 pages of tools".into(),
        })
    }

    /// Calls a tool and returns the server's `CallToolResult` as it sent it (`content`,
    /// `structuredContent`, `isError`), after checking it has a `content` array.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let result = self
            .request(
                "tools/call",
                json!({"name": name, "arguments": arguments}),
                timeout,
            )
            .await?;
        if !result.get("content").is_some_and(Value::is_array) {
            return Err(Error::Protocol {
                method: "tools/call".into(),
                reason: "the result has no `content` array".into(),
            });
        }
        Ok(result)
    }
}

fn close_all(waiting: &Waiters, reason: String) -> String {
    let Ok(mut w) = waiting.lock() else {
        return reason;
    };
    let reason = w.closed.get_or_insert(reason).clone();
    // Dropping the senders wakes every waiter with the closed reason.
    w.pending.clear();
    reason
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut input: BufReader<R>,
    waiting: Waiters,
    out: Writer,
    max: usize,
    close_reason: Option<CloseReason>,
) {
    let reason = loop {
        let line = match read_frame(&mut input, max).await {
            Ok(Frame::Line(line)) => line,
            Ok(Frame::TooLarge) => {
                break format!("the server sent a message over the {max}-byte limit");
            }
            Ok(Frame::Eof) => {
                break close_reason
                    .as_ref()
                    .and_then(|r| r.lock().ok().and_then(|r| r.clone()))
                    .unwrap_or_else(|| "the server closed its output".into());
            }
            Err(e) => break format!("reading from the server failed: {e}"),
        };
        let message = match Message::parse(&line) {
            Ok(m) => m,
            Err(e) => {
                break format!("the server sent a malformed message: {}", e.error.message);
            }
        };
        match message {
            Message::Response { id, result } => {
                let waiter = id
                    .as_u64()
                    .and_then(|id| waiting.lock().ok().and_then(|mut w| w.pending.remove(&id)));
                // An answer nobody waits for (a request that timed out) is dropped.
                if let Some(tx) = waiter {
                    let _ = tx.send(result);
                }
            }
            Message::Request { id, method, .. } => {
                let answer = if method == "ping" {
                    Message::Response {
                        id,
                        result: Ok(json!({})),
                    }
                } else {
                    Message::error(
                        id,
                        RpcError::new(
                            METHOD_NOT_FOUND,
                            format!("this client offers no `{method}`"),
                        ),
                    )
                };
                let mut line = answer.to_line();
                line.push(b'\n');
                let mut w = out.lock().await;
                if w.write_all(&line).await.is_err() || w.flush().await.is_err() {
                    break "writing to the server failed".into();
                }
            }
            Message::Notification { .. } => {}
        }
    };
    close_all(&waiting, reason);
}
