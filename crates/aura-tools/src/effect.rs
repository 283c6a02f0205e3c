//! What a call did: effects, their outcomes, compensations and outbound messages, and the
//! error type every tool reports.
//!
//! An [`Effect`] is what the kernel records in the ledger. On replay and after a crash the
//! recorded effect is used instead of running the tool again, and a failing mission runs
//! the recorded compensations in reverse order, so an effect is a plain value with a
//! stable JSON form that holds everything needed to undo it. Its JSON form is versioned
//! (`"v": 1`); any other version, and any unknown field, is refused when reading.

use std::fmt;

use aura_core::{AgentId, MissionId};
use aura_identity::Namespace;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version of the effect's JSON form.
pub const EFFECT_VERSION: u8 = 1;

/// Why a call failed, in a form the reasoner and policy can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The execution token was missing, expired, for another mission or agent, out of
    /// scope, or the mission has ended. The tool did not run.
    Unauthorized,
    /// No tool of that name is registered.
    UnknownTool,
    /// The arguments do not fit the tool's schema, or a value in them is not acceptable
    /// (a path with `..`, an agent id that does not parse).
    InvalidArguments,
    /// The call would reach outside what it is confined to: a path leaving the workspace
    /// or passing through a symbolic link, a host not allowlisted, a private address.
    Confinement,
    /// The named file or directory does not exist.
    NotFound,
    /// The path names something of the wrong type (a directory where a file is needed, a
    /// device, a socket).
    WrongType,
    /// Something is larger than the limits allow.
    TooLarge,
    /// The node cannot do this safely here: no sandbox for `cmd.run`, no `openat2` for the
    /// file tools, HTTP switched off. Fail-closed refusals.
    Unavailable,
    /// The call ran out of time.
    Timeout,
    /// The network failed (connection, TLS, protocol).
    Network,
    /// The operating system refused or failed an operation.
    Io,
    /// A defect inside Aura (a tool task that panicked). Never expected.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::UnknownTool => "unknown_tool",
            ErrorKind::InvalidArguments => "invalid_arguments",
            ErrorKind::Confinement => "confinement",
            ErrorKind::NotFound => "not_found",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool's error: a kind and one lowercase line that starts with the tool's name, e.g.
/// ``fs.write: missing field `path` ``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
#[serde(deny_unknown_fields)]
pub struct ToolError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ToolError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ToolError {
            kind,
            message: message.into(),
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The tool did its work; `value` is its result for the reasoner.
    Ok { value: serde_json::Value },
    /// The tool refused or failed; nothing it would have changed was changed, except
    /// where the message says otherwise (a command that ran and then timed out).
    Failed { kind: ErrorKind, message: String },
}

/// How to undo a completed call. Compensations are idempotent: running one twice leaves
/// the same state as running it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Compensation {
    /// Put a workspace file back as it was: `previous` is its content before the call
    /// (base64 in JSON), or `null` when it did not exist, in which case the file is
    /// removed. `created_dirs` are directories the call created (outermost first), removed
    /// again when empty. `mode` is the file's permission bits where the call removed the
    /// file, so that it is recreated with them.
    RestoreFile {
        path: String,
        #[serde(with = "base64_opt")]
        previous: Option<Vec<u8>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        created_dirs: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// Run a compensating command the call declared, in a cell like the original, without
    /// network.
    Command { command: String },
}

/// A message for another agent's inbox, produced by `agent.send`; the node delivers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundMessage {
    pub from: AgentId,
    pub to: AgentId,
    /// The namespace of the sender; the node refuses delivery across namespaces unless
    /// policy allowed it.
    pub namespace: Namespace,
    pub mission: MissionId,
    pub body: serde_json::Value,
}

/// What a call did, as recorded in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Effect {
    pub v: EffectVersion,
    pub tool: String,
    pub call_id: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Compensation>,
    /// For `agent.send`: the message to deliver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<OutboundMessage>,
    /// For `mission.finish`: the reasoner's summary; the kernel completes the mission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<String>,
}

impl Effect {
    /// A successful effect with `value` as its result and nothing else attached.
    pub fn ok(tool: &str, call_id: &str, value: serde_json::Value) -> Self {
        Effect {
            v: EffectVersion,
            tool: tool.to_owned(),
            call_id: call_id.to_owned(),
            outcome: Outcome::Ok { value },
            compensation: None,
            message: None,
            finish: None,
        }
    }

    /// A failed effect: nothing attached.
    pub fn failed(tool: &str, call_id: &str, error: ToolError) -> Self {
        Effect {
            v: EffectVersion,
            tool: tool.to_owned(),
            call_id: call_id.to_owned(),
            outcome: Outcome::Failed {
                kind: error.kind,
                message: error.message,
            },
            compensation: None,
            message: None,
            finish: None,
        }
    }

    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    /// The failure's kind, if the call failed.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match &self.outcome {
            Outcome::Ok { .. } => None,
            Outcome::Failed { kind, .. } => Some(*kind),
        }
    }

    /// The result value, if the call succeeded.
    pub fn value(&self) -> Option<&serde_json::Value> {
        match &self.outcome {
            Outcome::Ok { value } => Some(value),
            Outcome::Failed { .. } => None,
        }
    }

    /// The stable JSON form. `serde_json` keeps object keys sorted (the workspace does not
    /// enable its `preserve_order` feature), so equal effects give equal bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these plain types cannot fail: every map key is a string.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the JSON form, refusing unknown fields and other versions.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The effect format's version marker: serialises as `1` and accepts nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EffectVersion;

impl Serialize for EffectVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(EFFECT_VERSION)
    }
}

impl<'de> Deserialize<'de> for EffectVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        if v == u64::from(EFFECT_VERSION) {
            Ok(EffectVersion)
        } else {
            Err(serde::de::Error::custom(format!(
                "effect version {v} is not supported (this build reads version {EFFECT_VERSION})"
            )))
        }
    }
}

/// `Option<Vec<u8>>` as standard base64 (with padding) or `null`.
mod base64_opt {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => STANDARD
                .decode(text.as_bytes())
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}"))),
            None => Ok(None),
        }
    }
}
