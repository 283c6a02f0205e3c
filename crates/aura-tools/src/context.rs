//! What a tool runs with: the mission it acts for, its token, its workspace, its network
//! grant and its limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::{ExecutionToken, Namespace, Signed, TrustSet};

/// Everything a tool call runs with. The node builds one per call from the mission's
/// record; tools read nothing else about the world.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub mission: MissionId,
    pub agent: AgentId,
    pub namespace: Namespace,
    /// The mission's workspace directory. File tools never reach outside it.
    pub workspace: PathBuf,
    /// The mission's execution token; without a valid one nothing runs.
    pub token: Option<Signed<ExecutionToken>>,
    /// The issuers whose tokens the node accepts.
    pub trust: TrustSet,
    /// The time of the step, as recorded (the kernel's clock, not the tool's).
    pub now: Timestamp,
    /// False once the mission has reached a terminal state: its token is then refused.
    pub mission_active: bool,
    pub network: NetworkGrant,
    pub limits: Limits,
    /// Where a long-running tool reports that it is alive and how far it got; the node
    /// fails an attempt that stops heartbeating (when the mission asks it to).
    pub heartbeat: Option<Heartbeat>,
}

/// A tool's line back to the node while it runs: each call is a heartbeat with progress
/// details (a small JSON value). Cheap to clone; calling it never blocks.
#[derive(Clone)]
pub struct Heartbeat(std::sync::Arc<dyn Fn(serde_json::Value) + Send + Sync>);

impl Heartbeat {
    pub fn new(beat: impl Fn(serde_json::Value) + Send + Sync + 'static) -> Self {
        Heartbeat(std::sync::Arc::new(beat))
    }

    pub fn beat(&self, details: serde_json::Value) {
        (self.0)(details);
    }
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Heartbeat")
    }
}

/// What network access the mission was granted. Nothing by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkGrant {
    /// Hosts `http.fetch` may reach: exact names (`api.example.com`), `*.example.com` for
    /// any subdomain (not the domain itself), or IP literals. Compared case-insensitively,
    /// without a trailing dot. Empty: `http.fetch` refuses every call.
    pub http_hosts: Vec<String>,
    /// Whether `cmd.run` may ask for a cell with network access.
    pub command_network: bool,
}

impl NetworkGrant {
    /// Whether `host` (already lowercased, without a trailing dot) is allowlisted.
    pub fn allows_host(&self, host: &str) -> bool {
        self.http_hosts.iter().any(|pattern| {
            let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => host == pattern,
            }
        })
    }
}

/// Resource limits for a cell that runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellLimits {
    /// Memory, in bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u32,
    /// CPU, in thousandths of a CPU (1000 = one full CPU).
    pub cpu_millis: u32,
}

impl Default for CellLimits {
    fn default() -> Self {
        CellLimits {
            memory_bytes: 512 << 20,
            pids: 128,
            cpu_millis: 1000,
        }
    }
}

/// Size and time limits for the built-in tools. The defaults are documented in
/// docs/tools.md; a call may ask for less than a limit, never more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes `fs.read` returns (default 1 MiB); longer files are truncated.
    pub read_bytes: u64,
    /// Most bytes `fs.write` writes, and the largest file `fs.write` or `fs.delete` will
    /// replace or remove, since the old content goes into the effect (default 1 MiB).
    pub write_bytes: u64,
    /// Most entries `fs.list` returns (default 1,000).
    pub list_entries: usize,
    /// Longest path accepted, in bytes (default 4,096).
    pub path_bytes: usize,
    /// Largest `agent.send` body, as JSON text (default 64 KiB).
    pub message_bytes: usize,
    /// Longest `mission.finish` summary (default 16 KiB).
    pub summary_bytes: usize,
    /// Longest a command may run (default 60 s).
    pub command_timeout: Duration,
    /// Most bytes of a command's stdout and of its stderr kept (default 64 KiB each).
    pub command_output_bytes: usize,
    pub cell: CellLimits,
    /// Most bytes of an HTTP response body kept (default 1 MiB).
    pub http_response_bytes: usize,
    /// Longest an HTTP fetch may take, connecting included (default 30 s).
    pub http_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_bytes: 1 << 20,
            write_bytes: 1 << 20,
            list_entries: 1000,
            path_bytes: 4096,
            message_bytes: 64 << 10,
            summary_bytes: 16 << 10,
            command_timeout: Duration::from_secs(60),
            command_output_bytes: 64 << 10,
            cell: CellLimits::default(),
            http_response_bytes: 1 << 20,
            http_timeout: Duration::from_secs(30),
        }
    }
}

/// Makes a mission's workspace ready before anything uses it. The node's implementation
/// (aura-cell's `Workspaces`) creates it 0700, owned by the host uid a cell's root maps
/// to, as a file system of the workspace quota's size, and mounts it again after a
/// reboot; without one the engine makes a plain 0700 directory.
pub trait WorkspaceSetup: Send + Sync + std::fmt::Debug {
    /// Blocking (it may format and mount a file system). `dir` is
    /// `<workspaces root>/<namespace>/<name>`; an error is one lowercase line.
    fn ensure(&self, dir: &Path) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let grant = NetworkGrant {
            http_hosts: vec!["Example.com.".into(), "*.docs.rs".into()],
            command_network: false,
        };
        let check =
            |host: &str, expect: bool| assert_eq!(grant.allows_host(host), expect, "{host}");
        check("example.com", true);
        check("www.example.com", false);
        check("a.docs.rs", true);
        check("a.b.docs.rs", true);
        check("docs.rs", false);
        check("evildocs.rs", false);
        check(".docs.rs", false);
        assert!(!NetworkGrant::default().allows_host("example.com"));
    }
}
