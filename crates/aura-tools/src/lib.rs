//! Aura's tools: what a governed agent can do, and the record of what it did.
//!
//! The kernel uses this crate in three moves:
//!
//! 1. **Prepare.** [`Registry::prepare`] validates a proposed [`Call`]'s arguments against
//!    the tool's schema and reports its [`Target`] (the file, command, host, agent or
//!    mission it touches) and whether it is destructive. No IO. Policy judges this
//!    [`Prepared`] call.
//! 2. **Execute.** [`Registry::execute`] runs a permitted call under a [`ToolContext`]. It
//!    first checks the mission's execution token ([`authorize`]): missing, expired, for
//!    another mission, agent or namespace, out of scope, or presented after the mission
//!    ended, and the tool never runs. Whatever happens comes back as an [`Effect`], a plain
//!    serialisable value the kernel records in the ledger and reuses on replay instead of
//!    running the tool again.
//! 3. **Compensate.** A failing mission undoes its completed steps in reverse order with
//!    [`Registry::compensate`], from the [`Compensation`] each effect recorded
//!    (`fs.write` and `fs.delete` record the previous content, byte for byte).
//!
//! The built-in tools ([`Registry::builtin`]; `image.generate` is registered by a node
//! that hosts models, with its [`ImageGenerator`], and the `memory.*` tools by a node with
//! a memory, with its [`MemoryBackend`]):
//!
//! | tool | target | destructive | compensation |
//! |---|---|---|---|
//! | `fs.read` | path | no | none |
//! | `fs.write` | path | no (the old bytes are kept) | restore the previous content, or remove the new file |
//! | `fs.list` | path | no | none |
//! | `fs.delete` | path | yes | recreate the file with the same bytes and mode |
//! | `cmd.run` | command | no (confined to its cell) | a compensating command, if the call declared one |
//! | `http.fetch` | host | no | none |
//! | `agent.send` | agent | no | none |
//! | `mission.finish` | mission | no | none |
//! | `image.generate` | image (model, size, path) | no (the old bytes are kept) | restore the previous content, or remove the new file |
//! | `memory.store`, `memory.search`, `memory.recall` | memory (own or a shared space) | no | none |
//! | `memory.forget` | memory (own or a shared space) | yes | none |
//!
//! File tools resolve every path with `openat2(2)` beneath the workspace (no `..`, no
//! absolute paths, no symbolic links, a swapped-in link cannot redirect them); `cmd.run`
//! only ever runs through a [`CommandRunner`] (the cell) and refuses without one;
//! `http.fetch` is off unless the node enables it and the mission's [`NetworkGrant`] lists
//! the host, and connects only to vetted public addresses. docs/tools.md describes each
//! tool's arguments and limits, and how to add a tool.

#![forbid(unsafe_code)]

mod agent;
mod args;
mod call;
mod cmd;
mod context;
mod effect;
mod fs;
pub mod http;
mod image;
mod memory;
mod registry;
mod tool;

pub use agent::{AgentSend, FinishArgs, MissionFinish, SendArgs};
pub use args::schema_for;
pub use call::{Call, Capability, Prepared, Target, ToolDescriptor};
pub use cmd::{
    CmdRun, CommandOutput, CommandRequest, CommandRunner, MAX_COMMAND_BYTES, MAX_ENV, RunArgs,
};
pub use context::{CellLimits, Heartbeat, Limits, NetworkGrant, ToolContext, WorkspaceSetup};
pub use effect::{
    Compensation, EFFECT_VERSION, Effect, EffectVersion, ErrorKind, OutboundMessage, Outcome,
    ToolError,
};
pub use fs::{
    DeleteArgs, Encoding, FsDelete, FsList, FsRead, FsWrite, ListArgs, ReadArgs, WriteArgs,
};
pub use http::{FetchArgs, HttpFetch, HttpOptions, Method};
pub use image::{ImageArgs, ImageGenerate, ImageGenerator, ImageJob, MadeImage};
pub use memory::{
    DEFAULT_K, ForgetArgs, MAX_K, MAX_MEMORY_TEXT, MAX_QUERY, MemoryBackend, MemorySpace,
    MemoryTool, RecallArgs, Remembered, SearchArgs, StoreArgs, memory_tools, text_sha256,
    valid_memory_id, valid_space_name,
};
pub use registry::{
    BuiltinOptions, RegisterError, Registry, Unauthorized, authorize, authorize_compensation,
};
pub use tool::Tool;
