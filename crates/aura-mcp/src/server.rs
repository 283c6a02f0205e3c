//! Aura as an MCP server: the protocol side of `aura mcp serve`. A [`Handler`] says which
//! tools there are and runs them; [`serve_stdio`] speaks MCP over a byte stream (one
//! message per line) and [`Dispatcher`] answers one message, for any transport.
//!
//! Requests run concurrently (a long `tools/call` does not hold up a `ping`); answers are
//! written whole, one line each. Malformed JSON-RPC gets its JSON-RPC error and the
//! session goes on; a message over the bound is dropped unread past the bound, answered
//! with an error, and the session goes on.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};

use crate::framing::{Frame, read_frame};
use crate::jsonrpc::{
    INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, Message, PROTOCOL_VERSIONS, RpcError,
};

/// A tool the server offers.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    /// A JSON Schema object for the arguments.
    pub input_schema: Value,
}

/// What a tool call gave: text for the client to read and, where the answer is JSON,
/// the same value as `structuredContent`. `is_error` marks a failure the tool reports
/// (the node refused, a mission failed) as opposed to a protocol error.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub value: Value,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(value: Value) -> Self {
        ToolOutput {
            value,
            is_error: false,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        ToolOutput {
            value: Value::String(message.into()),
            is_error: true,
        }
    }

    fn to_result(&self) -> Value {
        let text = match &self.value {
            Value::String(s) => s.clone(),
            v => serde_json::to_string_pretty(v).unwrap_or_default(),
        };
        let mut r = json!({
            "content": [{"type": "text", "text": text}],
            "isError": self.is_error,
        });
        if self.value.is_object() {
            r["structuredContent"] = self.value.clone();
        }
        r
    }
}

/// What `aura mcp serve` exposes.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The server's name and version for `serverInfo`.
    fn info(&self) -> (String, String);
    fn tools(&self) -> Vec<ToolInfo>;
    /// Runs a tool. `Err` is a protocol error (unknown tool, arguments that are not an
    /// object); a failure of the tool's own work is an `Ok` with `is_error`.
    async fn call(&self, name: &str, arguments: Value) -> Result<ToolOutput, RpcError>;
}

/// Answers messages for one handler.
#[derive(Clone)]
pub struct Dispatcher {
    handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("server", &self.handler.info())
            .finish()
    }
}

impl Dispatcher {
    pub fn new(handler: Arc<dyn Handler>) -> Self {
        Dispatcher { handler }
    }

    /// The answer to one message; `None` for notifications and responses.
    pub async fn answer(&self, message: Message) -> Option<Message> {
        let (id, method, params) = match message {
            Message::Request { id, method, params } => (id, method, params),
            // `notifications/initialized`, `notifications/cancelled` and answers to
            // requests this server never sends need nothing back.
            Message::Notification { .. } | Message::Response { .. } => return None,
        };
        let result = self.request(&method, params.unwrap_or(Value::Null)).await;
        Some(Message::Response { id, result })
    }

    async fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        match method {
            "initialize" => {
                let asked = params.get("protocolVersion").and_then(Value::as_str);
                // The client's revision when this server speaks it, else the newest.
                let version = asked
                    .filter(|v| PROTOCOL_VERSIONS.contains(v))
                    .unwrap_or(PROTOCOL_VERSIONS[0]);
                let (name, ver) = self.handler.info();
                Ok(json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": name, "version": ver},
                    "instructions": "Aura: submit and watch governed missions, answer approvals, read the ledger and its proofs, use local models. What you may do is what your API key's role allows.",
                }))
            }
            "ping" => Ok(json!({})),
            "tools/list" => {
                let tools: Vec<Value> = self
                    .handler
                    .tools()
                    .into_iter()
                    .map(|t| {
                        json!({
                            "name": t.name,
                            "description": t.description,
                            "inputSchema": t.input_schema,
                        })
                    })
                    .collect();
                Ok(json!({ "tools": tools }))
            }
            "tools/call" => {
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| RpcError::new(INVALID_PARAMS, "`name` must be a string"))?;
                let arguments = match params.get("arguments") {
                    None | Some(Value::Null) => json!({}),
                    Some(a @ Value::Object(_)) => a.clone(),
                    Some(_) => {
                        return Err(RpcError::new(
                            INVALID_PARAMS,
                            "`arguments` must be an object",
                        ));
                    }
                };
                if !self.handler.tools().iter().any(|t| t.name == name) {
                    return Err(RpcError::new(
                        INVALID_PARAMS,
                        format!("unknown tool: {name}"),
                    ));
                }
                Ok(self.handler.call(name, arguments).await?.to_result())
            }
            other => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("method not found: {other}"),
            )),
        }
    }
}

/// Serves one MCP session over a byte stream until the client closes its end.
pub async fn serve_stdio<R, W>(
    handler: Arc<dyn Handler>,
    input: R,
    output: W,
    max_message: usize,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let dispatcher = Dispatcher::new(handler);
    let out = Arc::new(tokio::sync::Mutex::new(output));
    let mut input = BufReader::new(input);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let line = match read_frame(&mut input, max_message).await? {
            Frame::Eof => break,
            Frame::TooLarge => {
                let error = Message::error(
                    Value::Null,
                    RpcError::new(
                        INVALID_REQUEST,
                        format!("the message is over the {max_message}-byte limit"),
                    ),
                );
                write(&out, &error).await?;
                continue;
            }
            Frame::Line(line) => line,
        };
        match Message::parse(&line) {
            Err(bad) => {
                let bad = *bad;
                write(&out, &Message::error(bad.id, bad.error)).await?;
            }
            Ok(message) => {
                let dispatcher = dispatcher.clone();
                let out = out.clone();
                tasks.spawn(async move {
                    if let Some(answer) = dispatcher.answer(message).await {
                        let _ = write(&out, &answer).await;
                    }
                });
            }
        }
        // Reap what finished, so a long session does not keep every task's slot.
        while tasks.try_join_next().is_some() {}
    }
    // The client closed its end: let answers in flight go out before returning.
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn write<W: AsyncWrite + Unpin>(
    out: &tokio::sync::Mutex<W>,
    message: &Message,
) -> std::io::Result<()> {
    let mut line = message.to_line();
    line.push(b'\n');
    let mut out = out.lock().await;
    out.write_all(&line).await?;
    out.flush().await
}
