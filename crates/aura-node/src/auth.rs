//! API keys and roles.
//!
//! Keys live in `<home>/api-keys.json` (mode 0600) as SHA-256 digests, never as secrets. A
//! key is `aura_<id>_<secret>`; the id finds the record, the secret's digest is compared in
//! constant time. Roles:
//!
//! - `operator`: everything, in its namespaces (`*` for all);
//! - `approver`: reads missions and approvals in its namespaces, and answers escalations;
//! - `agent`: acts as one agent: its own record, messages from itself to its namespace,
//!   missions for itself.
//!
//! With no keys at all, the node serves loopback only, and every caller is a local
//! operator.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use aura_core::door::Entropy;
use aura_core::hash::Hash;
use aura_core::{AgentId, Timestamp};
use aura_identity::Namespace;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Approver,
    Agent,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Agent => "agent",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "operator" => Ok(Role::Operator),
            "approver" => Ok(Role::Approver),
            "agent" => Ok(Role::Agent),
            other => Err(format!(
                "`{other}` is not a role (operator, approver or agent)"
            )),
        }
    }
}

/// One stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Namespaces it may act in; `*` means all.
    pub namespaces: Vec<String>,
    /// For `agent` keys: the agent it acts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    pub sha256: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<KeyRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{} is readable by other users; refusing to use it", path.display())]
    Permissions { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

/// The set of API keys a node accepts.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<KeyRecord>,
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key: Option<String>,
    pub name: String,
    pub role: Role,
    /// `None` means every namespace.
    pub namespaces: Option<Vec<Namespace>>,
    pub agent: Option<AgentId>,
}

impl Caller {
    /// The caller when the node runs without keys (loopback only).
    pub fn local_operator() -> Caller {
        Caller {
            key: None,
            name: "local".into(),
            role: Role::Operator,
            namespaces: None,
            agent: None,
        }
    }

    pub fn may_use_namespace(&self, ns: &Namespace) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.contains(ns))
    }
}

fn digest(secret: &str) -> String {
    Hash::sha256(secret.as_bytes()).to_hex()
}

/// Compares two strings in time that does not depend on where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl ApiKeys {
    pub fn path(home: &Path) -> PathBuf {
        home.join("api-keys.json")
    }

    /// Loads the keys; a missing file means no keys.
    pub fn load(path: &Path) -> Result<ApiKeys, KeyError> {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ApiKeys::default()),
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
            });
        }
        let text = fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let file: KeyFile = serde_json::from_slice(&text).map_err(|e| KeyError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(ApiKeys { keys: file.keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn records(&self) -> &[KeyRecord] {
        &self.keys
    }

    /// Creates a key and returns its record and the secret (shown once, never stored).
    pub fn create(
        &mut self,
        name: &str,
        role: Role,
        namespaces: Vec<String>,
        agent: Option<AgentId>,
        now: Timestamp,
        entropy: &dyn Entropy,
    ) -> Result<(KeyRecord, String), KeyError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            return Err(KeyError::Invalid(
                "a key name is 1-64 of letters, digits and -_.@".into(),
            ));
        }
        if (role == Role::Agent) != agent.is_some() {
            return Err(KeyError::Invalid(
                "an agent key names exactly one agent (--agent), other roles none".into(),
            ));
        }
        for ns in &namespaces {
            if ns != "*" && Namespace::new(ns).is_err() {
                return Err(KeyError::Invalid(format!("`{ns}` is not a namespace")));
            }
        }
        let namespaces = if namespaces.is_empty() {
            vec!["*".to_owned()]
        } else {
            namespaces
        };
        let mut id_bytes = [0u8; 5];
        entropy.fill(&mut id_bytes);
        let id = aura_core::id::encode_base32(&{
            let mut b = [0u8; 16];
            b[11..].copy_from_slice(&id_bytes);
            b
        })[18..]
            .to_owned();
        let mut secret_bytes = [0u8; 16];
        entropy.fill(&mut secret_bytes);
        let secret_part = aura_core::id::encode_base32(&secret_bytes);
        let secret = format!("aura_{id}_{secret_part}");
        let record = KeyRecord {
            id,
            name: name.to_owned(),
            role,
            namespaces,
            agent,
            sha256: digest(&secret),
            created_at: now,
        };
        self.keys.push(record.clone());
        Ok((record, secret))
    }

    /// Removes a key by id or name.
    pub fn revoke(&mut self, id_or_name: &str) -> Option<KeyRecord> {
        let pos = self
            .keys
            .iter()
            .position(|k| k.id == id_or_name || k.name == id_or_name)?;
        Some(self.keys.remove(pos))
    }

    /// Writes the keys atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("json.partial");
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let body = serde_json::to_vec_pretty(&KeyFile {
            keys: self.keys.clone(),
        })
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
        f.write_all(&body).and_then(|()| f.sync_all()).map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }

    /// The caller a bearer token stands for, if it is a key of this node.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let rest = token.strip_prefix("aura_")?;
        let (id, _) = rest.split_once('_')?;
        let record = self.keys.iter().find(|k| k.id == id)?;
        if !constant_time_eq(&digest(token), &record.sha256) {
            return None;
        }
        Some(Self::caller_of(record))
    }

    /// The caller the key with this id stands for now, if the key still exists. For
    /// re-checking a caller authenticated earlier (an open WebSocket) against the current
    /// keys: a revoked key gives `None`.
    pub fn caller(&self, id: &str) -> Option<Caller> {
        self.keys.iter().find(|k| k.id == id).map(Self::caller_of)
    }

    fn caller_of(record: &KeyRecord) -> Caller {
        let namespaces = if record.namespaces.iter().any(|n| n == "*") {
            None
        } else {
            Some(
                record
                    .namespaces
                    .iter()
                    .filter_map(|n| Namespace::new(n).ok())
                    .collect(),
            )
        };
        Caller {
            key: Some(record.id.clone()),
            name: record.name.clone(),
            role: record.role,
            namespaces,
            agent: record.agent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aura_core::door::SeededEntropy;

    #[test]
    fn keys_authenticate_only_with_their_secret() {
        let e = SeededEntropy::new(1);
        let mut keys = ApiKeys::default();
        let (rec, secret) = keys
            .create(
                "ci",
                Role::Operator,
                vec![],
                None,
                Timestamp::from_secs(1),
                &e,
            )
            .unwrap();
        assert_eq!(keys.authenticate(&secret).unwrap().role, Role::Operator);
        assert!(
            keys.authenticate(&secret.replace(&rec.id, "zzzzzzzz"))
                .is_none()
        );
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push('0');
        assert!(keys.authenticate(&wrong).is_none() || wrong == secret);
        assert!(keys.authenticate("Bearer x").is_none());
        assert!(!serde_json::to_string(&keys.keys).unwrap().contains(&secret));
    }

    #[test]
    fn agent_keys_name_an_agent() {
        let e = SeededEntropy::new(2);
        let mut keys = ApiKeys::default();
        assert!(
            keys.create("a", Role::Agent, vec![], None, Timestamp::EPOCH, &e)
                .is_err()
        );
        assert!(
            keys.create(
                "a",
                Role::Operator,
                vec![],
                Some(AgentId::NODE),
                Timestamp::EPOCH,
                &e
            )
            .is_err()
        );
        assert!(
            keys.create("a b", Role::Operator, vec![], None, Timestamp::EPOCH, &e)
                .is_err()
        );
        assert!(
            keys.create(
                "a",
                Role::Operator,
                vec!["Bad NS".into()],
                None,
                Timestamp::EPOCH,
                &e
            )
            .is_err()
        );
    }
}
