//! The Model Context Protocol for Aura, both directions, on serde_json alone.
//!
//! - [`jsonrpc`]: JSON-RPC 2.0 messages, parsed strictly, with the standard error codes,
//!   and the protocol revisions spoken.
//! - [`framing`]: stdio's one-message-per-line framing with a bound on a line.
//! - [`client`]: a client over a byte stream (initialize, `tools/list`, `tools/call`,
//!   deadlines, pings, a connection that closes for good on the first protocol fault).
//! - [`cell`]: stdio servers started inside a hardened cell (aura-cell).
//! - [`http`]: the streamable HTTP transport, as a client (a bridge under [`Client`]) and
//!   as a server (`aura mcp serve --http`).
//! - [`tool`]: a registered server's tools as Aura tools, `mcp.<server>.<tool>`, judged by
//!   policy as `mcp.call` on an `McpTool` resource and recorded like every call.
//! - [`server`]: Aura as an MCP server: the dispatcher for any [`server::Handler`] and the
//!   stdio loop (`aura mcp serve`).
//!
//! The crate knows nothing of the node: the node and the CLI compose it with their own
//! parts. docs/mcp.md is the user's guide.

#![forbid(unsafe_code)]

pub mod cell;
pub mod client;
pub mod framing;
pub mod http;
pub mod jsonrpc;
pub mod server;
pub mod tool;

pub use aura_tools::Tool;
pub use client::{Client, Error, Options, RemoteTool};
pub use tool::{McpTool, RegisterError, Registration, Server, ServerOptions, Transport};
