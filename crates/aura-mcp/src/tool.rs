//! MCP servers' tools as Aura tools: each tool of a registered server becomes
//! `mcp.<server>.<tool>` in the registry, with the server's JSON schema, judged by policy
//! as the action `mcp.call` on an `McpTool` resource (server, tool, trusted) and recorded
//! like every call.
//!
//! A server is started when it is registered (to list its tools) and again, lazily, after
//! it crashed, hung past a call's deadline or broke the protocol: the failed call is a
//! failed effect with a clear message, and the next call gets a fresh server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aura_tools::{
    Call, Capability, Effect, ErrorKind, Prepared, Target, Tool, ToolContext, ToolDescriptor,
    ToolError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cell::{CellProcess, StdioSpec, launch};
use crate::client::{Client, Error, Options, RemoteTool};
use crate::jsonrpc::INVALID_PARAMS;

/// How a server is reached.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A stdio server started inside a cell of this runtime.
    Cell {
        runtime: aura_cell::Runtime,
        spec: StdioSpec,
    },
    /// A streamable-HTTP server at a URL (checked against the operator's allowlist by
    /// whoever builds this).
    Http(crate::http::Endpoint),
}

/// A registered server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `[a-z][a-z0-9_-]{0,31}`: the middle part of its tools' names.
    pub name: String,
    /// The operator's word that the server is known (policy sees it as `resource.trusted`).
    pub trusted: bool,
    /// How long one tool call may take before the server is taken for hung and dropped.
    pub call_timeout: Duration,
    pub client: Options,
    pub transport: Transport,
}

/// Why a server could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "`{0}` is not a valid MCP server name: use 1-32 of a-z, 0-9, '_' and '-', starting with a letter"
    )]
    InvalidName(String),
    #[error("MCP server `{server}`")]
    Server {
        server: String,
        #[source]
        source: Error,
    },
}

/// What registering a server found, for the ledger: the tools it offers under their Aura
/// names, and those skipped because their names cannot be Aura tool names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub server: String,
    pub transport: String,
    pub trusted: bool,
    pub protocol_version: String,
    pub server_info: Value,
    pub tools: Vec<String>,
    pub skipped: Vec<String>,
}

/// A registered server and its live connection, if any.
#[derive(Debug)]
pub struct Server {
    options: ServerOptions,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

#[derive(Debug)]
struct Conn {
    client: Arc<Client>,
    _process: Option<CellProcess>,
}

fn valid_server_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

/// Whether `mcp.<server>.<tool>` is a name the registry and policy accept.
fn valid_tool_part(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.')
        })
}

impl Server {
    /// Starts the server, lists its tools and returns them as Aura tools, with what the
    /// ledger should record of the registration.
    pub async fn register(
        options: ServerOptions,
    ) -> Result<(Arc<Server>, Vec<Arc<dyn Tool>>, Registration), RegisterError> {
        if !valid_server_name(&options.name) {
            return Err(RegisterError::InvalidName(options.name));
        }
        let name = options.name.clone();
        let server = Arc::new(Server {
            options,
            conn: tokio::sync::Mutex::new(None),
        });
        let wrap = |source| RegisterError::Server {
            server: name.clone(),
            source,
        };
        let client = server.connect().await.map_err(wrap)?;
        let listed = client.list_tools().await.map_err(wrap)?;
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        let mut names = Vec::new();
        let mut skipped = Vec::new();
        for remote in listed {
            if !valid_tool_part(&remote.name) {
                skipped.push(remote.name);
                continue;
            }
            let tool = McpTool::new(server.clone(), remote);
            names.push(tool.descriptor.name.clone());
            tools.push(Arc::new(tool));
        }
        let registration = Registration {
            server: name.clone(),
            transport: server.describe(),
            trusted: server.options.trusted,
            protocol_version: client.protocol_version.clone(),
            server_info: client.server_info.clone(),
            tools: names,
            skipped,
        };
        Ok((server, tools, registration))
    }

    /// The transport in words, for the record.
    fn describe(&self) -> String {
        match &self.options.transport {
            Transport::Cell { spec, .. } => format!("stdio in a cell: {}", spec.argv.join(" ")),
            Transport::Http(endpoint) => format!("streamable HTTP: {}", endpoint.url),
        }
    }

    /// The live connection, or a new one.
    pub async fn connect(&self) -> Result<Arc<Client>, Error> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref()
            && !c.client.is_closed()
        {
            return Ok(c.client.clone());
        }
        // A closed connection's cell is killed when it is replaced.
        *conn = None;
        let fresh = match &self.options.transport {
            Transport::Cell { runtime, spec } => {
                let (client, process) = launch(runtime, spec, self.options.client.clone()).await?;
                Conn {
                    client: Arc::new(client),
                    _process: Some(process),
                }
            }
            Transport::Http(endpoint) => Conn {
                client: Arc::new(
                    crate::http::connect(endpoint.clone(), self.options.client.clone()).await?,
                ),
                _process: None,
            },
        };
        let client = fresh.client.clone();
        *conn = Some(fresh);
        Ok(client)
    }

    /// Drops the connection `client` if it is still the current one (killing its cell).
    async fn drop_conn(&self, client: &Arc<Client>) {
        let mut conn = self.conn.lock().await;
        if conn
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.client, client))
        {
            *conn = None;
        }
    }

    /// Calls one of the server's tools by its own name.
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<Value, Error> {
        let client = self.connect().await?;
        let result = client
            .call_tool(tool, arguments, self.options.call_timeout)
            .await;
        if let Err(e) = &result
            && !matches!(e, Error::Rpc { .. })
        {
            // A hung, crashed or confused server is not asked again: the next call starts
            // a fresh one.
            self.drop_conn(&client).await;
        }
        result
    }
}

/// One tool of one server.
#[derive(Debug)]
pub struct McpTool {
    server: Arc<Server>,
    remote: RemoteTool,
    descriptor: ToolDescriptor,
}

impl McpTool {
    fn new(server: Arc<Server>, remote: RemoteTool) -> Self {
        let descriptor = ToolDescriptor {
            name: format!("mcp.{}.{}", server.options.name, remote.name),
            description: remote.description.clone(),
            parameters: remote.input_schema.clone(),
            destructive: remote.destructive == Some(true),
            compensable: false,
            needs: Capability::Mcp,
        };
        McpTool {
            server,
            remote,
            descriptor,
        }
    }
}

#[async_trait]
impl Tool for McpTool {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    /// Checks what can be checked without the server: the arguments are an object with
    /// every property the schema requires. The server validates the rest.
    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let name = &self.descriptor.name;
        let Value::Object(args) = &call.arguments else {
            return Err(ToolError::new(
                ErrorKind::InvalidArguments,
                format!("{name}: the arguments must be a JSON object"),
            ));
        };
        if let Some(required) = self
            .remote
            .input_schema
            .get("required")
            .and_then(Value::as_array)
        {
            for key in required.iter().filter_map(Value::as_str) {
                if !args.contains_key(key) {
                    return Err(ToolError::new(
                        ErrorKind::InvalidArguments,
                        format!("{name}: the argument `{key}` is required"),
                    ));
                }
            }
        }
        Ok(Prepared {
            call: call.clone(),
            target: Target::McpTool {
                server: self.server.options.name.clone(),
                tool: self.remote.name.clone(),
                trusted: self.server.options.trusted,
            },
            destructive: self.descriptor.destructive,
        })
    }

    async fn execute(&self, _ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let call = &prepared.call;
        let name = &self.descriptor.name;
        match self
            .server
            .call(&self.remote.name, call.arguments.clone())
            .await
        {
            // A result the tool itself marks `isError` is still the tool's answer: the
            // reasoner reads it, as it reads a command's non-zero exit.
            Ok(result) => Effect::ok(name, &call.id, result),
            Err(e) => {
                let kind = match &e {
                    Error::Timeout { .. } => ErrorKind::Timeout,
                    Error::Rpc { error, .. } if error.code == INVALID_PARAMS => {
                        ErrorKind::InvalidArguments
                    }
                    Error::TooLarge { .. } => ErrorKind::TooLarge,
                    // A server that sent too much, crashed or broke the protocol is dropped;
                    // the call is not retried on its own (the effect may have happened).
                    Error::Rpc { .. }
                    | Error::Protocol { .. }
                    | Error::Closed(_)
                    | Error::Start(_) => ErrorKind::Unavailable,
                };
                Effect::failed(name, &call.id, ToolError::new(kind, format!("{name}: {e}")))
            }
        }
    }
}
