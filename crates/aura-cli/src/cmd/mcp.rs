//! `aura mcp serve`: Aura as an MCP server over stdio, or over streamable HTTP with
//! `--http`, for MCP clients (assistants, IDEs, the official SDKs). Each tool is one call
//! of a running node's HTTP API made with an API key: over stdio the one given
//! (`--api-key` or `AURA_API_KEY`); over HTTP the one each client sends as its bearer
//! token (checked with the node when its session opens), so an MCP client can do exactly
//! what that key's role allows, and the node records and judges everything as it does for
//! any client. The protocol is aura-mcp's; this file is the mapping of tools to
//! the API. docs/mcp.md lists the tools.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aura_mcp::jsonrpc::{INVALID_PARAMS, RpcError};
use aura_mcp::server::{Handler, ToolInfo, ToolOutput, serve_stdio};
use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::home::Home;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Serve MCP over stdin and stdout (or streamable HTTP with --http), acting on a running node with an API key
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The largest message accepted, in bytes
    #[arg(long, default_value_t = aura_mcp::jsonrpc::MAX_MESSAGE)]
    max_message: usize,
    /// Serve streamable HTTP at http://ADDR/mcp instead of stdio; each client sends an API key of the node as its bearer token
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
}

/// Opens an HTTP session for a client's API key, once the node has accepted the key.
struct KeySessions {
    /// The node's URL.
    base: String,
}

#[async_trait]
impl aura_mcp::http::Sessions for KeySessions {
    async fn open(&self, token: &str) -> Result<Arc<dyn Handler>, String> {
        let client =
            Client::at(self.base.clone(), Some(token.to_owned())).map_err(|e| e.to_string())?;
        // Every role may list agents; no key may not: a cheap check of the key.
        client
            .get::<Value>("/v1/agents")
            .await
            .map_err(|e| format!("the node refused this key: {e:#}"))?;
        Ok(Arc::new(Api { client }))
    }
}

pub(crate) async fn run(home: &Home, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) if args.http.is_some() => {
            let addr = args.http.unwrap_or_else(|| unreachable!());
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                crate::hinted(
                    format!("cannot listen on {addr}: {e}"),
                    "choose a free address, such as --http 127.0.0.1:8765",
                )
            })?;
            let bound = listener.local_addr()?;
            if !bound.ip().is_loopback() {
                eprintln!(
                    "warning: serving MCP on {bound}, beyond this machine: every client still needs an API key, but use TLS in front of it"
                );
            }
            eprintln!("serving MCP (streamable HTTP) at http://{bound}/mcp");
            let sessions = Arc::new(KeySessions {
                base: Client::new(home, &args.node)?.base().to_owned(),
            });
            aura_mcp::http::serve(listener, sessions, args.max_message, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| anyhow::anyhow!("the MCP server failed: {e}"))
        }
        Command::Serve(args) => {
            let client = Client::new(home, &args.node)?;
            let handler = Arc::new(Api { client });
            serve_stdio(
                handler,
                tokio::io::stdin(),
                tokio::io::stdout(),
                args.max_message,
            )
            .await
            .map_err(|e| anyhow::anyhow!("the MCP session failed: {e}"))
        }
    }
}

/// The node's API as MCP tools.
struct Api {
    client: Client,
}

/// The longest `mission_wait` waits in one call.
const MAX_WAIT_SECS: u64 = 600;

fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> ToolInfo {
    let mut input_schema = json!({
        "type": "object",
        "required": required,
        "additionalProperties": false,
    });
    input_schema["properties"] = properties;
    ToolInfo {
        name: name.into(),
        description: description.into(),
        input_schema,
    }
}

fn string_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, RpcError> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(INVALID_PARAMS, format!("`{key}` must be a string")))
}

/// An id or agent name goes into a URL path: only the characters ids have.
fn path_part<'a>(args: &'a Value, key: &str) -> Result<&'a str, RpcError> {
    let s = string_arg(args, key)?;
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(RpcError::new(
            INVALID_PARAMS,
            format!("`{key}` is not an id"),
        ));
    }
    Ok(s)
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|v| {
                let encoded: String = v
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                format!("{k}={encoded}")
            })
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn number(args: &Value, key: &str) -> Option<String> {
    args.get(key).and_then(Value::as_u64).map(|n| n.to_string())
}

fn text(args: &Value, key: &str) -> Option<String> {
    args.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn is_terminal(view: &Value) -> bool {
    matches!(
        view.get("state").and_then(Value::as_str),
        Some("completed" | "failed" | "cancelled")
    )
}

impl Api {
    async fn get(&self, path: &str) -> ToolOutput {
        match self.client.get::<Value>(path).await {
            Ok(v) => ToolOutput::ok(wrap(v)),
            Err(e) => ToolOutput::error(format!("{e:#}")),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> ToolOutput {
        match self.client.post::<Value, Value>(path, body).await {
            Ok(v) => ToolOutput::ok(wrap(v)),
            Err(e) => ToolOutput::error(format!("{e:#}")),
        }
    }

    async fn wait(&self, id: &str, secs: u64) -> ToolOutput {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs.min(MAX_WAIT_SECS));
        loop {
            let view = match self
                .client
                .get::<Value>(&format!("/v1/missions/{id}"))
                .await
            {
                Ok(v) => v,
                Err(e) => return ToolOutput::error(format!("{e:#}")),
            };
            let escalated = view.get("state").and_then(Value::as_str) == Some("escalated");
            if is_terminal(&view) || escalated || tokio::time::Instant::now() >= deadline {
                let failed = matches!(
                    view.get("state").and_then(Value::as_str),
                    Some("failed" | "cancelled")
                );
                return ToolOutput {
                    value: view,
                    is_error: failed,
                };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `structuredContent` must be an object: a list comes back as `{"items": [...]}`.
fn wrap(v: Value) -> Value {
    if v.is_object() {
        v
    } else {
        json!({ "items": v })
    }
}

#[async_trait]
impl Handler for Api {
    fn info(&self) -> (String, String) {
        ("aura".into(), env!("CARGO_PKG_VERSION").into())
    }

    fn tools(&self) -> Vec<ToolInfo> {
        let id = json!({"type": "string", "description": "a mission id (mis_...)"});
        vec![
            tool(
                "mission_submit",
                "Submit a governed mission to an agent: an objective, the only tools it may use, and a timeout. Returns the mission (its id and state).",
                json!({
                    "agent": {"type": "string", "description": "the agent's id"},
                    "objective": {"type": "string"},
                    "tools": {"type": "array", "items": {"type": "string"}},
                    "timeout_secs": {"type": "integer", "minimum": 1},
                    "level": {"type": "string", "enum": ["L1", "L2", "L3", "L4"]},
                    "workspace": {"type": "string"},
                    "reasoner": {"type": "string"},
                    "max_steps": {"type": "integer", "minimum": 1},
                }),
                &["agent", "objective", "tools", "timeout_secs"],
            ),
            tool(
                "mission_get",
                "A mission's state, summary or failure reason, escalation and history.",
                json!({"id": id}),
                &["id"],
            ),
            tool(
                "mission_wait",
                "Wait until a mission ends or waits for an approval (at most timeout_secs, 600 at most), then return it.",
                json!({"id": id, "timeout_secs": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS}}),
                &["id"],
            ),
            tool(
                "missions_list",
                "List missions, newest first.",
                json!({"state": {"type": "string"}, "agent": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}}),
                &[],
            ),
            tool(
                "mission_cancel",
                "Cancel a mission; its completed steps are undone first.",
                json!({"id": id, "reason": {"type": "string"}}),
                &["id"],
            ),
            tool(
                "approvals_list",
                "The escalations waiting for a person's signed approval (`aura approve` signs one).",
                json!({}),
                &[],
            ),
            tool(
                "agent_record",
                "An agent's ledger entries (its hash-chained record), from a sequence number on.",
                json!({"agent": {"type": "string"}, "from": {"type": "integer", "minimum": 1}, "limit": {"type": "integer", "minimum": 1}}),
                &["agent"],
            ),
            tool(
                "ledger_checkpoint",
                "The ledger's latest signed checkpoint (tree size, root, signature).",
                json!({}),
                &[],
            ),
            tool(
                "ledger_inclusion_proof",
                "A proof that an entry (by index, or by agent and seq) is in the signed tree.",
                json!({"index": {"type": "integer", "minimum": 0}, "agent": {"type": "string"}, "seq": {"type": "integer", "minimum": 1}, "size": {"type": "integer", "minimum": 1}}),
                &[],
            ),
            tool(
                "ledger_consistency_proof",
                "A proof that the tree at `old` entries is a prefix of the tree at `new` (default: now).",
                json!({"old": {"type": "integer", "minimum": 1}, "new": {"type": "integer", "minimum": 1}}),
                &["old"],
            ),
            tool(
                "models_list",
                "The node's verified, licensed local models.",
                json!({}),
                &[],
            ),
            tool(
                "chat",
                "Ask a local model; the answer comes with the id of its signed receipt.",
                json!({"model": {"type": "string"}, "prompt": {"type": "string"}, "max_tokens": {"type": "integer", "minimum": 1}}),
                &["model", "prompt"],
            ),
        ]
    }

    async fn call(&self, name: &str, args: Value) -> Result<ToolOutput, RpcError> {
        Ok(match name {
            "mission_submit" => {
                let mut body = serde_json::Map::new();
                for key in [
                    "agent",
                    "objective",
                    "tools",
                    "timeout_secs",
                    "level",
                    "workspace",
                    "reasoner",
                    "max_steps",
                ] {
                    if let Some(v) = args.get(key) {
                        body.insert(key.into(), v.clone());
                    }
                }
                self.post("/v1/missions", &Value::Object(body)).await
            }
            "mission_get" => {
                self.get(&format!("/v1/missions/{}", path_part(&args, "id")?))
                    .await
            }
            "mission_wait" => {
                let secs = args
                    .get("timeout_secs")
                    .and_then(Value::as_u64)
                    .unwrap_or(60);
                self.wait(path_part(&args, "id")?, secs).await
            }
            "missions_list" => {
                let q = query(&[
                    ("state", text(&args, "state")),
                    ("agent", text(&args, "agent")),
                    ("limit", number(&args, "limit")),
                ]);
                self.get(&format!("/v1/missions{q}")).await
            }
            "mission_cancel" => {
                let reason = text(&args, "reason").unwrap_or_else(|| "cancelled over MCP".into());
                self.post(
                    &format!("/v1/missions/{}/cancel", path_part(&args, "id")?),
                    &json!({"reason": reason}),
                )
                .await
            }
            "approvals_list" => self.get("/v1/approvals").await,
            "agent_record" => {
                let q = query(&[
                    ("from", number(&args, "from")),
                    ("limit", number(&args, "limit")),
                ]);
                self.get(&format!(
                    "/v1/agents/{}/record{q}",
                    path_part(&args, "agent")?
                ))
                .await
            }
            "ledger_checkpoint" => self.get("/v1/ledger/checkpoint").await,
            "ledger_inclusion_proof" => {
                let q = query(&[
                    ("index", number(&args, "index")),
                    ("agent", text(&args, "agent")),
                    ("seq", number(&args, "seq")),
                    ("size", number(&args, "size")),
                ]);
                self.get(&format!("/v1/ledger/proof/inclusion{q}")).await
            }
            "ledger_consistency_proof" => {
                let q = query(&[("old", number(&args, "old")), ("new", number(&args, "new"))]);
                self.get(&format!("/v1/ledger/proof/consistency{q}")).await
            }
            "models_list" => self.get("/v1/models").await,
            "chat" => {
                let mut body = json!({
                    "model": string_arg(&args, "model")?,
                    "messages": [{"role": "user", "content": string_arg(&args, "prompt")?}],
                });
                if let Some(n) = args.get("max_tokens").and_then(Value::as_u64) {
                    body["max_tokens"] = json!(n);
                }
                self.post("/v1/chat/completions", &body).await
            }
            other => {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    format!("unknown tool: {other}"),
                ));
            }
        })
    }
}
