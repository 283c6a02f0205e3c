//! The node's configuration: `<home>/aura.toml`. Every setting has a safe default, so a node
//! runs with no file at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub limits: Limits,
    pub trust: TrustConfig,
    pub missions: MissionsConfig,
    pub tools: ToolsConfig,
    pub cells: CellsConfig,
    pub speech: SpeechConfig,
    pub store: StoreConfig,
    pub telemetry: TelemetryConfig,
    /// `[[mcp.servers]]`: MCP servers whose tools agents may call (docs/mcp.md).
    pub mcp: McpConfig,
    /// `[memory]`: the `memory.*` tools and `/v1/memory` (docs/memory.md).
    pub memory: MemoryConfig,
    /// `[models]`: how the node runs its text models (docs/openai.md).
    pub models: ModelsConfig,
    /// Reasoners by name: `[reasoners.NAME]` tables, each with a `provider` and that
    /// provider's settings (docs/reasoners.md). Checked when the node starts.
    pub reasoners: BTreeMap<String, toml::Table>,
    /// Model aliases by name: `[aliases.NAME]` tables, each a stable model and optionally
    /// a canary with its share and rollback threshold (docs/openai.md). Checked when the
    /// node starts.
    pub aliases: BTreeMap<String, crate::canary::AliasConfig>,
}

/// Where the ledger lives: `[store]`. Without a URL, the embedded SQLite file in the data
/// directory; with one, the PostgreSQL database this node shares with its cluster
/// (docs/cluster.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://...` or `postgresql://...`: the cluster's database.
    pub url: Option<String>,
    /// How long a shard lease lasts unless renewed, in milliseconds (default 3000): a
    /// dead node's agents resume on another node within about this and a third more.
    pub lease_ms: Option<u64>,
    /// The URL other nodes and clients reach this node's API at (default
    /// `http://<listen address>`): where requests for the agents it runs are sent.
    pub advertise: Option<String>,
    /// Answer requests for another node's agents with `307` to that node instead of
    /// forwarding them over the node-to-node channel (the default); the client then needs
    /// an API key valid on that node too.
    pub redirect: bool,
}

/// `[telemetry]`: where the node's traces go (docs/metrics.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// An OpenTelemetry collector's OTLP/gRPC endpoint (`http://127.0.0.1:4317`). Unset
    /// (the default): no traces leave the node. Needs a binary built with the `otlp`
    /// feature; one without it refuses to start when this is set.
    pub otlp_endpoint: Option<String>,
}

/// `[mcp]`: the MCP servers the operator registered. Their tools appear as
/// `mcp.<server>.<tool>`, judged by policy like every tool (docs/mcp.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    pub servers: Vec<McpServerConfig>,
    /// URL prefixes a streamable-HTTP server's `url` must lie under (each a whole URL, or
    /// ending in `/`); a server elsewhere is refused when the node starts. Empty: none.
    pub http_allowlist: Vec<String>,
}

/// One `[[mcp.servers]]` table: a stdio server run inside a cell (`command`), or a
/// streamable-HTTP server at a URL on the allowlist (`url`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// 1-32 of a-z, 0-9, `_` and `-`: the middle part of its tools' names.
    pub name: String,
    /// The program (an absolute path as the cell sees it) and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// A streamable-HTTP server's MCP endpoint, instead of `command`.
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the bearer token to send to `url` (so the token
    /// stays out of aura.toml).
    #[serde(default)]
    pub bearer_env: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Host directories the cell sees read-only at the same paths (an interpreter's
    /// prefix, the server's files); `/usr`, `/bin` and `/lib` are always there.
    #[serde(default)]
    pub binds: Vec<PathBuf>,
    /// Give the cell the host's network (default: loopback only).
    #[serde(default)]
    pub network: bool,
    /// The operator knows this server: the default policy lets agents at L2 call its
    /// tools. An untrusted server's tools escalate to L3.
    #[serde(default)]
    pub trusted: bool,
    /// How long one call may take before the server is taken for hung and restarted.
    #[serde(default = "default_mcp_call_timeout")]
    pub call_timeout_secs: u64,
}

fn default_mcp_call_timeout() -> u64 {
    60
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MissionsConfig {
    /// The reasoner missions use when they name none (default: the only one configured).
    pub default_reasoner: Option<String>,
    /// Where workspaces live (default `<home>/workspaces`).
    pub workspaces: Option<PathBuf>,
}

/// `[cells]`: what cells may be given of the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CellsConfig {
    /// Host directories an operator key for all namespaces (or a gRPC `admin`
    /// certificate) may bind into cells, each with what lies under it. Symbolic links are
    /// resolved when the node starts; a directory that holds or lies inside the node's
    /// home is refused. Empty (the default): no host paths at all.
    pub host_binds: Vec<PathBuf>,
    /// The size limit of each workspace: `1G`, `512M`, or `unlimited`. Each workspace is
    /// a file system of this size (a sparse image, loop-mounted), so a cell that writes
    /// past it gets "no space left on device" in its workspace instead of filling the
    /// node's disk.
    pub workspace_quota: String,
}

impl Default for CellsConfig {
    fn default() -> Self {
        CellsConfig {
            host_binds: Vec::new(),
            workspace_quota: "1G".into(),
        }
    }
}

impl CellsConfig {
    /// The quota in bytes; `None` for `unlimited`.
    pub fn workspace_quota(&self) -> Result<Option<u64>, String> {
        let q = self.workspace_quota.trim();
        if q.eq_ignore_ascii_case("unlimited") {
            return Ok(None);
        }
        parse_size(q).map(Some).ok_or_else(|| {
            format!(
                "[cells] workspace_quota `{q}` is not a size: use a number of bytes with K, M, G or T (`1G`), or `unlimited`"
            )
        })
    }
}

/// `512M`-style sizes: a whole number with an optional K, M, G or T (powers of 1024).
fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// Switches for the built-in tools. Both are off by default: an operator turns on what
/// agents may reach, and policy must still permit each call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// Whether `http.fetch` may make requests at all.
    pub http: bool,
    /// Whether `cmd.run` may ever give a cell a network.
    pub command_network: bool,
}

/// `[memory]`: the node's memory (docs/memory.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Whether the node serves memory at all (the `memory.*` tools and `/v1/memory`).
    pub enabled: bool,
    /// The installed text encoder memories are embedded with (default `minilm`, the name
    /// docs give all-MiniLM-L6-v2 when importing it).
    pub model: String,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            enabled: true,
            model: "minilm".to_owned(),
        }
    }
}

/// `[models]`: how the node runs its text models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// MiB of KV state each loaded text model keeps in its prompt cache, so that a
    /// conversation re-sending its history prefills only what is new (results are the
    /// same without it); 0 disables the cache.
    pub prompt_cache_mib: u64,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            prompt_cache_mib: (aura_host::DEFAULT_PROMPT_CACHE_BYTES >> 20) as u64,
        }
    }
}

impl ModelsConfig {
    /// The prompt cache's budget in bytes (saturating on absurd values).
    pub fn prompt_cache_bytes(&self) -> usize {
        usize::try_from(self.prompt_cache_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// `[speech]`: `/v1/audio/speech` with espeak-ng, run as a separate process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechConfig {
    /// Whether the node speaks at all (when espeak-ng is found).
    pub enabled: bool,
    /// The espeak-ng program: a path, or a name looked up on `PATH` at start.
    pub program: PathBuf,
    /// The most one synthesis may take before espeak-ng is killed.
    pub timeout_secs: u64,
    /// How many syntheses may run at once.
    pub max_concurrent: usize,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        let d = crate::speech::Options::default();
        SpeechConfig {
            enabled: true,
            program: d.program,
            timeout_secs: d.timeout.as_secs(),
            max_concurrent: d.max_concurrent,
        }
    }
}

impl SpeechConfig {
    pub fn options(&self) -> crate::speech::Options {
        crate::speech::Options {
            program: self.program.clone(),
            timeout: std::time::Duration::from_secs(self.timeout_secs.max(1)),
            max_concurrent: self.max_concurrent.max(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the HTTP API listens. Anything but loopback needs API keys.
    pub listen: SocketAddr,
    /// Host names (`name`, or `name:port`) requests may name besides the listen address
    /// and, on loopback, `localhost`: the names of a reverse proxy in front of the node.
    /// Any other `Host` is refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Web origins (`https://console.example.com`) whose pages may open WebSockets and
    /// send requests that change something, besides the node's own origin.
    pub allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest request body accepted.
    pub body_bytes: usize,
    /// Sustained requests per second per caller: per API key for requests whose key
    /// verified, per source address (an IPv6 /64) for all others.
    pub requests_per_second: u32,
    /// Requests a caller may make at once above the sustained rate.
    pub burst: u32,
    /// The largest WebSocket frame and message accepted from a client.
    pub ws_frame_bytes: usize,
    /// Seconds a client has to send a request's head (line and headers), and the most an
    /// idle keep-alive connection is kept open.
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's whole body, counted from its head.
    pub body_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 1024 * 1024,
            requests_per_second: 200,
            burst: 400,
            ws_frame_bytes: 64 * 1024,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Organisation keys (hex) whose credentials this node accepts, besides its own.
    pub issuers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl Config {
    pub fn path(home: &Path) -> PathBuf {
        home.join("aura.toml")
    }

    /// Reads the configuration; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                path: path.to_owned(),
                reason: e.to_string().trim().replace('\n', " "),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn workspace_quotas_parse() {
        let q = |s: &str| {
            CellsConfig {
                workspace_quota: s.into(),
                ..Default::default()
            }
            .workspace_quota()
        };
        assert_eq!(q("1G").unwrap(), Some(1 << 30));
        assert_eq!(q("512M").unwrap(), Some(512 << 20));
        assert_eq!(q("4096").unwrap(), Some(4096));
        assert_eq!(q("unlimited").unwrap(), None);
        assert_eq!(
            CellsConfig::default().workspace_quota().unwrap(),
            Some(1 << 30)
        );
        for bad in ["", "G", "1.5G", "-1G", "1X", "99999999999T"] {
            assert!(q(bad).is_err(), "{bad}");
        }
        let c: Config = toml::from_str(
            "[cells]\nhost_binds = [\"/srv/data\"]\nworkspace_quota = \"unlimited\"\n",
        )
        .unwrap();
        assert_eq!(c.cells.host_binds, vec![PathBuf::from("/srv/data")]);
        assert!(toml::from_str::<Config>("[cells]\nbinds = []\n").is_err());
    }

    #[test]
    fn the_prompt_cache_budget_defaults_to_256_mib_and_0_turns_it_off() {
        assert_eq!(Config::default().models.prompt_cache_bytes(), 256 << 20);
        let c: Config = toml::from_str("[models]\nprompt_cache_mib = 0\n").unwrap();
        assert_eq!(c.models.prompt_cache_bytes(), 0);
        let c: Config = toml::from_str("[models]\nprompt_cache_mib = 1024\n").unwrap();
        assert_eq!(c.models.prompt_cache_bytes(), 1 << 30);
        // Absurd values saturate rather than wrap.
        let c: Config =
            toml::from_str("[models]\nprompt_cache_mib = 9223372036854775807\n").unwrap();
        assert_eq!(c.models.prompt_cache_bytes(), usize::MAX);
        for bad in [
            "prompt_cache_mib = -1",
            "prompt_cache_mib = \"big\"",
            "cache = 1",
        ] {
            assert!(
                toml::from_str::<Config>(&format!("[models]\n{bad}\n")).is_err(),
                "{bad}"
            );
        }
    }
}
