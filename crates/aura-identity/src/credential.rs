//! Credentials: an issuer vouches that a key belongs to an agent or an operator, at an
//! authority level, in a namespace, for a time.
//!
//! ```text
//! u8 version = 1, [16] id, u8 subject kind (1 agent, 2 operator),
//!   agent: [16] agent id | operator: u16+ name,
//! [32] subject key, u8 level, u16+ namespace, u64 not_before, u64 not_after, [32] issuer
//! ```

use aura_core::encoding::{DecodeError, DecodeErrorKind, Decoder, Encoder};
use aura_core::signed::{Issuer, Signed, Statement};
use aura_core::{AgentId, PublicKey, Timestamp, typed_id};
use serde::{Deserialize, Serialize};

use crate::level::{Level, Namespace};

use crate::statement::{BadStatement, TrustSet, get_key, get_str, put_key, put_str};

typed_id!(
    /// A credential.
    CredentialId,
    "cred"
);

/// Whom a credential is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Subject {
    Agent(AgentId),
    /// A person (an operator or approver), by a name the issuer chose.
    Operator(OperatorName),
}

/// A person's name in a credential: 1-128 printable characters without spaces at the
/// ends, like `alice@example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid operator name: use 1-128 printable characters")]
pub struct InvalidOperatorName(pub String);

impl OperatorName {
    pub fn new(s: &str) -> Result<Self, InvalidOperatorName> {
        let ok =
            !s.is_empty() && s.len() <= 128 && s.trim() == s && !s.chars().any(char::is_control);
        if ok {
            Ok(OperatorName(s.to_owned()))
        } else {
            Err(InvalidOperatorName(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OperatorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for OperatorName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OperatorName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        OperatorName::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Agent(a) => write!(f, "{a}"),
            Subject::Operator(name) => write!(f, "operator {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub id: CredentialId,
    pub subject: Subject,
    /// The subject's own key: what it signs with (approvals, messages).
    pub key: PublicKey,
    pub level: Level,
    pub namespace: Namespace,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub issuer: PublicKey,
}

const VERSION: u8 = 1;

impl Statement for Credential {
    const KIND: &'static str = "credential/v1";

    fn encode(&self, e: &mut Encoder) {
        e.u8(VERSION).raw(self.id.as_bytes());
        match &self.subject {
            Subject::Agent(a) => {
                e.u8(1).raw(a.as_bytes());
            }
            Subject::Operator(name) => {
                e.u8(2);
                put_str(e, name.as_str());
            }
        }
        put_key(e, &self.key);
        e.u8(self.level.as_u8());
        put_str(e, self.namespace.as_str());
        e.u64(self.not_before.as_nanos())
            .u64(self.not_after.as_nanos());
        put_key(e, &self.issuer);
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let v = d.u8("version")?;
        if v != VERSION {
            return Err(d.error(DecodeErrorKind::UnknownVersion {
                field: "version",
                value: v.into(),
            }));
        }
        let id = CredentialId::from_bytes(d.array("id")?);
        let subject = match d.u8("subject kind")? {
            1 => Subject::Agent(AgentId::from_bytes(d.array("agent")?)),
            2 => Subject::Operator(
                OperatorName::new(&get_str(d, "operator")?)
                    .map_err(|_| d.invalid("operator", "is not a valid name"))?,
            ),
            _ => return Err(d.invalid("subject kind", "is not 1 (agent) or 2 (operator)")),
        };
        let key = get_key(d, "key")?;
        let level =
            Level::from_u8(d.u8("level")?).ok_or_else(|| d.invalid("level", "is not 1-4"))?;
        let namespace = Namespace::new(&get_str(d, "namespace")?)
            .map_err(|_| d.invalid("namespace", "is not a valid namespace"))?;
        Ok(Credential {
            id,
            subject,
            key,
            level,
            namespace,
            not_before: Timestamp::from_nanos(d.u64("not_before")?),
            not_after: Timestamp::from_nanos(d.u64("not_after")?),
            issuer: get_key(d, "issuer")?,
        })
    }

    fn issuer(&self) -> Issuer<'_> {
        Issuer::Key(&self.issuer)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the credential is not valid until {0}")]
    NotYetValid(Timestamp),
    #[error("the credential expired at {0}")]
    Expired(Timestamp),
    #[error("the credential is not trustworthy: {0}")]
    Untrusted(#[from] BadStatement),
}

/// Checks a credential: signed by a trusted issuer and valid at `now`.
pub fn verify_credential<'a>(
    c: &'a Signed<Credential>,
    trust: &TrustSet,
    now: Timestamp,
) -> Result<&'a Credential, CredentialError> {
    trust.check(c)?;
    let s = &c.statement;
    if now < s.not_before {
        return Err(CredentialError::NotYetValid(s.not_before));
    }
    if now >= s.not_after {
        return Err(CredentialError::Expired(s.not_after));
    }
    Ok(s)
}
