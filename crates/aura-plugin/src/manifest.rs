//! The plugin manifest (`plugin-manifest/v1`): what a plugin is (its name, version and
//! the SHA-256 of its WebAssembly component), who publishes it, what it may touch and how
//! much it may spend. The publisher signs it as an Aura statement (aura-core's
//! `signed`), so the signature covers the canonical binary encoding below, and the JSON
//! file a package carries (`plugin.json`) may be re-serialised freely.
//!
//! Encoding (big-endian, aura-core's `encoding` rules), in this order: name (u8 length),
//! version (u8 length), description (u16 length), publisher key (32 bytes), component
//! SHA-256 (32 bytes), component size (u64), workspace access (u8: 0 none, 1 read, 2
//! write), hosts (u8 count, then each with a u8 length), fuel (u64), memory limit in bytes
//! (u64), timeout in milliseconds (u32), output limit in bytes (u32), input schema
//! (RFC 8785 canonical JSON, u32 length).

use aura_core::encoding::{DecodeError, Decoder, Encoder};
use aura_core::hash::Hash;
use aura_core::sign::PublicKey;
use aura_core::signed::{Invalid, Issuer, Statement};
use serde::{Deserialize, Serialize};

/// The statement kind the publisher signs.
pub const KIND: &str = "plugin-manifest/v1";
/// The file format of `plugin.json`.
pub const FORMAT: &str = "aura-plugin/v1";

/// The most fuel a manifest may ask for (about a few seconds of work).
pub const MAX_FUEL: u64 = 10_000_000_000;
/// The most linear memory a plugin may ask for.
pub const MAX_MEMORY: u64 = 1 << 30;
/// The longest a call may run.
pub const MAX_TIMEOUT_MS: u32 = 600_000;
/// The most a plugin may write to stdout (its answer) or stderr.
pub const MAX_OUTPUT: u32 = 16 << 20;
/// The largest component a package may carry.
pub const MAX_COMPONENT: u64 = 64 << 20;
const MAX_HOSTS: usize = 32;
const MAX_SCHEMA: usize = 64 << 10;

/// What a plugin may do with the mission's workspace, mounted at `/workspace` in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAccess {
    /// Nothing: no directory is mounted.
    None,
    /// Read files and list directories.
    Read,
    /// Read, create, write and remove.
    Write,
}

impl WorkspaceAccess {
    fn tag(self) -> u8 {
        match self {
            WorkspaceAccess::None => 0,
            WorkspaceAccess::Read => 1,
            WorkspaceAccess::Write => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(WorkspaceAccess::None),
            1 => Some(WorkspaceAccess::Read),
            2 => Some(WorkspaceAccess::Write),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceAccess::None => "none",
            WorkspaceAccess::Read => "read",
            WorkspaceAccess::Write => "write",
        }
    }
}

/// What a plugin declares it needs. It never gets more; the policy may grant it less.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    pub workspace: WorkspaceAccess,
    /// `host:port` pairs it may open TCP connections to (names are resolved by the node
    /// when a call starts; nothing else is reachable).
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// What one call may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// WebAssembly fuel: roughly one unit per instruction executed.
    pub fuel: u64,
    /// Linear memory, in bytes, over all its memories.
    pub memory_bytes: u64,
    /// Wall-clock time, in milliseconds.
    pub timeout_ms: u32,
    /// Bytes of stdout (the answer) and of stderr, each.
    pub output_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 1_000_000_000,
            memory_bytes: 64 << 20,
            timeout_ms: 10_000,
            output_bytes: 1 << 20,
        }
    }
}

/// A plugin's manifest: the statement its publisher signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    /// Lowercase letters, digits and `-`, 1 to 64 of them; the tool is `plugin.<name>`.
    pub name: String,
    pub version: String,
    pub description: String,
    pub publisher: PublicKey,
    /// SHA-256 of `plugin.wasm`.
    pub component_sha256: Hash,
    pub component_size: u64,
    pub capabilities: Capabilities,
    pub limits: Limits,
    /// The JSON schema of the call's arguments.
    pub input_schema: serde_json::Value,
}

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

impl PluginManifest {
    /// The tool name a mission calls it by.
    pub fn tool_name(&self) -> String {
        format!("plugin.{}", self.name)
    }

    fn schema_bytes(&self) -> Result<Vec<u8>, Invalid> {
        let raw = serde_json::to_vec(&self.input_schema).map_err(|e| invalid(e.to_string()))?;
        aura_core::jcs::canonicalize(&raw).map_err(|e| invalid(format!("input schema: {e}")))
    }

    fn check(&self) -> Result<(), Invalid> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.name.starts_with('-');
        if !name_ok {
            return Err(invalid(format!(
                "plugin name `{}` must be 1 to 64 lowercase letters, digits or `-`",
                self.name
            )));
        }
        if self.version.is_empty() || self.version.len() > 64 {
            return Err(invalid("version must be 1 to 64 bytes"));
        }
        if self.description.len() > 4096 {
            return Err(invalid("description is over 4096 bytes"));
        }
        if self.component_size == 0 || self.component_size > MAX_COMPONENT {
            return Err(invalid(format!(
                "component size {} is not within 1 byte to {MAX_COMPONENT}",
                self.component_size
            )));
        }
        if self.capabilities.hosts.len() > MAX_HOSTS {
            return Err(invalid(format!("more than {MAX_HOSTS} hosts")));
        }
        for h in &self.capabilities.hosts {
            let port_ok = h
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok || h.len() > 255 {
                return Err(invalid(format!("host `{h}` is not `host:port`")));
            }
        }
        let l = &self.limits;
        if l.fuel == 0 || l.fuel > MAX_FUEL {
            return Err(invalid(format!("fuel must be 1 to {MAX_FUEL}")));
        }
        if l.memory_bytes < (1 << 16) || l.memory_bytes > MAX_MEMORY {
            return Err(invalid(format!(
                "memory limit must be 64 KiB to {MAX_MEMORY} bytes"
            )));
        }
        if l.timeout_ms == 0 || l.timeout_ms > MAX_TIMEOUT_MS {
            return Err(invalid(format!("timeout must be 1 to {MAX_TIMEOUT_MS} ms")));
        }
        if l.output_bytes == 0 || l.output_bytes > MAX_OUTPUT {
            return Err(invalid(format!(
                "output limit must be 1 to {MAX_OUTPUT} bytes"
            )));
        }
        if !self.input_schema.is_object() {
            return Err(invalid("input schema must be a JSON object"));
        }
        if self.schema_bytes()?.len() > MAX_SCHEMA {
            return Err(invalid("input schema is over 64 KiB"));
        }
        Ok(())
    }
}

fn utf8(d: &Decoder<'_>, field: &'static str, bytes: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| d.invalid(field, "not UTF-8"))
}

impl Statement for PluginManifest {
    const KIND: &'static str = KIND;
    const FIELD: &'static str = "manifest";
    const FORMAT: Option<&'static str> = Some(FORMAT);

    fn issuer(&self) -> Issuer<'_> {
        Issuer::Key(&self.publisher)
    }

    fn validate(&self) -> Result<(), Invalid> {
        self.check()
    }

    fn encode(&self, e: &mut Encoder) {
        // `validate` ran first (`Statement::to_bytes`), so every length fits its prefix
        // and the schema canonicalises.
        let schema = self.schema_bytes().unwrap_or_default();
        let _ = e.bytes8("name", self.name.as_bytes());
        let _ = e.bytes8("version", self.version.as_bytes());
        let _ = e.bytes16("description", self.description.as_bytes());
        e.raw(&self.publisher.to_bytes());
        e.hash(&self.component_sha256);
        e.u64(self.component_size);
        e.u8(self.capabilities.workspace.tag());
        e.u8(u8::try_from(self.capabilities.hosts.len()).unwrap_or(u8::MAX));
        for h in &self.capabilities.hosts {
            let _ = e.bytes8("host", h.as_bytes());
        }
        e.u64(self.limits.fuel);
        e.u64(self.limits.memory_bytes);
        e.u32(self.limits.timeout_ms);
        e.u32(self.limits.output_bytes);
        let _ = e.bytes32("input_schema", &schema);
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let name = d.bytes8("name")?;
        let name = utf8(d, "name", name)?;
        let version = d.bytes8("version")?;
        let version = utf8(d, "version", version)?;
        let description = d.bytes16("description")?;
        let description = utf8(d, "description", description)?;
        let publisher = PublicKey::from_bytes(&d.array("publisher")?)
            .map_err(|_| d.invalid("publisher", "not an ed25519 public key"))?;
        let component_sha256 = d.hash("component_sha256")?;
        let component_size = d.u64("component_size")?;
        let workspace = WorkspaceAccess::from_tag(d.u8("workspace")?)
            .ok_or_else(|| d.invalid("workspace", "unknown access"))?;
        let n = usize::from(d.u8("hosts")?);
        if n > MAX_HOSTS {
            return Err(d.invalid("hosts", "too many"));
        }
        let mut hosts = Vec::with_capacity(n);
        for _ in 0..n {
            let h = d.bytes8("host")?;
            hosts.push(utf8(d, "host", h)?);
        }
        let limits = Limits {
            fuel: d.u64("fuel")?,
            memory_bytes: d.u64("memory_bytes")?,
            timeout_ms: d.u32("timeout_ms")?,
            output_bytes: d.u32("output_bytes")?,
        };
        let schema = d.bytes32("input_schema", MAX_SCHEMA)?;
        let input_schema: serde_json::Value =
            serde_json::from_slice(schema).map_err(|_| d.invalid("input_schema", "not JSON"))?;
        let m = PluginManifest {
            name,
            version,
            description,
            publisher,
            component_sha256,
            component_size,
            capabilities: Capabilities { workspace, hosts },
            limits,
            input_schema,
        };
        m.check()
            .map_err(|_| d.invalid("manifest", "breaks a rule of the format"))?;
        // Canonical means one encoding: a schema that was not in canonical form is refused.
        if m.schema_bytes().ok().as_deref() != Some(schema) {
            return Err(d.invalid("input_schema", "not canonical JSON"));
        }
        Ok(m)
    }
}
