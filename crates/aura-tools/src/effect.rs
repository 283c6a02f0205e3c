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
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Unauthorized,
        ErrorKind::UnknownTool,
        ErrorKind::InvalidArguments,
        ErrorKind::Confinement,
        ErrorKind::NotFound,
        ErrorKind::WrongType,
        ErrorKind::TooLarge,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Network,
        ErrorKind::Io,
        ErrorKind::Internal,
    ];

    /// Whether a failure of this kind says nothing about the call itself (the network,
    /// the disk, a timeout, a defect), so that another attempt may succeed. Every other
    /// failure (bad arguments, confinement, a missing file...) is the call's answer: the
    /// reasoner is told and works around it, and running the call again would only give
    /// the same answer.
    ///
    /// The engine decides retries from this, never from the kind's name or its message,
    /// so a kind that is renamed keeps its retries. The match has no catch-all on purpose:
    /// a new kind must say whether it is transient.
    pub fn is_transient(self) -> bool {
        match self {
            ErrorKind::Timeout | ErrorKind::Network | ErrorKind::Io | ErrorKind::Internal => true,
            ErrorKind::Unauthorized
            | ErrorKind::UnknownTool
            | ErrorKind::InvalidArguments
            | ErrorKind::Confinement
            | ErrorKind::NotFound
            | ErrorKind::WrongType
            | ErrorKind::TooLarge
            | ErrorKind::Unavailable => false,
        }
    }

    /// The kind's name as the ledger records it (its serde name, e.g. `invalid_arguments`).
    /// Records keep this name whatever [`ErrorKind::as_str`] shows people.
    pub fn recorded_name(self) -> String {
        // A unit variant always serialises to its name.
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => name,
            _ => self.as_str().to_owned(),
        }
    }

    /// The kind a record names ([`ErrorKind::recorded_name`]); `None` for a name this
    /// build does not know.
    pub fn from_recorded_name(name: &str) -> Option<ErrorKind> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

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
    /// The tool did its work; `value` is its result for the reasoner. Its object keys
    /// are written sorted, so equal values give equal bytes whatever order they were
    /// built in.
    Ok {
        #[serde(serialize_with = "serialize_sorted")]
        value: serde_json::Value,
    },
    /// The tool refused or failed; nothing it would have changed was changed, except
    /// where the message says otherwise (a command that ran and then timed out).
    Failed { kind: ErrorKind, message: String },
}

/// Writes a JSON value with every object's keys in sorted order.
fn serialize_sorted<S: serde::Serializer>(
    value: &serde_json::Value,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    SortedKeys(value).serialize(serializer)
}

/// A JSON value that serialises with sorted object keys, at every depth.
struct SortedKeys<'a>(&'a serde_json::Value);

impl Serialize for SortedKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &SortedKeys(value))?;
                }
                out.end()
            }
            serde_json::Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&SortedKeys(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
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

    /// The stable JSON form: equal effects give equal bytes. Result values are written
    /// with sorted keys on purpose: a dependency (cedar) turns on `serde_json`'s
    /// `preserve_order`, so a map's own order is insertion order in this workspace.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    /// `ErrorKind::ALL` lists every kind once: the match below has no catch-all, so a new
    /// kind does not compile until it is placed here, and then the assertion wants it in
    /// `ALL` too.
    #[test]
    fn all_lists_every_kind_once() {
        fn position(kind: ErrorKind) -> usize {
            match kind {
                ErrorKind::Unauthorized => 0,
                ErrorKind::UnknownTool => 1,
                ErrorKind::InvalidArguments => 2,
                ErrorKind::Confinement => 3,
                ErrorKind::NotFound => 4,
                ErrorKind::WrongType => 5,
                ErrorKind::TooLarge => 6,
                ErrorKind::Unavailable => 7,
                ErrorKind::Timeout => 8,
                ErrorKind::Network => 9,
                ErrorKind::Io => 10,
                ErrorKind::Internal => 11,
            }
        }
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(position(kind), i, "{kind:?}");
        }
    }

    #[test]
    fn recorded_names_round_trip_and_unknown_names_are_none() {
        for kind in ErrorKind::ALL {
            let name = kind.recorded_name();
            assert_eq!(ErrorKind::from_recorded_name(&name), Some(kind), "{name}");
            // The recorded name is the serde name the effect's JSON form uses.
            assert_eq!(serde_json::to_value(kind).unwrap(), name.as_str());
        }
        assert_eq!(ErrorKind::from_recorded_name("no_such_kind"), None);
        assert_eq!(ErrorKind::from_recorded_name(""), None);
    }

    /// The kinds' recorded names are a format, apart from how kinds are shown
    /// ([`ErrorKind::as_str`]): effects and `attempt_failed` records carry them, and
    /// missions' `non_retryable` lists name them. A renamed one would leave older records
    /// and specs naming a kind this build does not know, so they are pinned here.
    #[test]
    fn recorded_names_are_pinned_because_records_and_retry_policies_name_them() {
        let names: Vec<String> = ErrorKind::ALL
            .into_iter()
            .map(ErrorKind::recorded_name)
            .collect();
        assert_eq!(
            names,
            [
                "unauthorized",
                "unknown_tool",
                "invalid_arguments",
                "confinement",
                "not_found",
                "wrong_type",
                "too_large",
                "unavailable",
                "timeout",
                "network",
                "io",
                "internal",
            ]
        );
    }

    /// The kinds the engine retries: the four the engine's hard-coded list named before
    /// the decision moved here, and no others.
    #[test]
    fn transient_kinds_are_timeout_network_io_and_internal() {
        let transient: Vec<ErrorKind> = ErrorKind::ALL
            .into_iter()
            .filter(|k| k.is_transient())
            .collect();
        assert_eq!(
            transient,
            [
                ErrorKind::Timeout,
                ErrorKind::Network,
                ErrorKind::Io,
                ErrorKind::Internal
            ]
        );
    }
}
