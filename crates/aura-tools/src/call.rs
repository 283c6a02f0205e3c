//! What a tool is and what a call to it asks for: descriptors, calls, and the prepared
//! form policy judges before anything runs.

use aura_core::AgentId;
use serde::{Deserialize, Serialize};

/// What a tool needs from the node to do its work. Policy and the node use it to decide
/// which missions may be offered the tool at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Files in the mission's workspace.
    Workspace,
    /// Running a command (always inside a cell).
    Command,
    /// Reaching hosts on the network.
    Network,
    /// Sending messages to other agents.
    Messaging,
    /// The mission's own lifecycle (declaring it finished).
    Lifecycle,
    /// A tool of an MCP server the operator registered (stdio servers run in a cell).
    Mcp,
    /// A WASM plugin installed on the node (run on wasmtime with its manifest's limits).
    Plugin,
    /// The node's memory (embedded facts, the agent's past missions).
    Memory,
}

/// A tool as the reasoner and policy see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDescriptor {
    /// The tool's name, e.g. `fs.write`; also the Cedar action.
    pub name: String,
    /// One or two sentences for the reasoner.
    pub description: String,
    /// A JSON Schema (2020-12) of the arguments object. It accepts exactly what the tool's
    /// argument parser accepts.
    pub parameters: serde_json::Value,
    /// Whether a call may change or remove something that existed before it.
    pub destructive: bool,
    /// Whether a call's effect can carry a [`crate::Compensation`] that undoes it.
    pub compensable: bool,
    pub needs: Capability,
}

/// What a call touches, as policy sees it. The node turns it into aura-policy's resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A file or directory, normalised and relative to the workspace (`.` is the
    /// workspace itself).
    Path { path: String },
    /// A shell command run in a cell; `network` says whether the call asks for network
    /// access (which the mission's grant must also allow).
    Command { command: String, network: bool },
    /// A host reached over the network.
    Host {
        host: String,
        port: u16,
        scheme: String,
    },
    /// Another agent, addressed by a message.
    Agent { agent: AgentId },
    /// The calling mission itself.
    Mission,
    /// An image to make: the image model's package name, the size in pixels and the
    /// normalised workspace path its PNG is written to.
    Image {
        model: String,
        width: u32,
        height: u32,
        path: String,
    },
    /// A memory space: the calling agent's own (`shared` is `None`), or the shared space
    /// of its namespace that `shared` names.
    Memory { shared: Option<String> },
    /// A tool of an MCP server: the server's registered name, the tool's name on it, and
    /// whether the operator marked the server trusted.
    McpTool {
        server: String,
        tool: String,
        trusted: bool,
    },
    /// An installed WASM plugin: its name and version, its publisher's key and its signed
    /// manifest's digest (hex), and the capabilities the manifest declares (workspace
    /// access `none`, `read` or `write`; `host:port`s it may connect to).
    Plugin {
        name: String,
        version: String,
        publisher: String,
        digest: String,
        workspace: String,
        hosts: Vec<String>,
    },
}

/// A call the reasoner proposed: an id it chose (unique within its step), the tool's name
/// and the arguments as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
}

/// A call whose arguments have been validated and whose target is known; nothing has been
/// done yet. This is what policy judges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepared {
    pub call: Call,
    pub target: Target,
    pub destructive: bool,
}
