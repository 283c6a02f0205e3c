//! Execution tokens: what a mission instance runs under.
//!
//! A token names one mission instance (its audience), the agent, the namespace, the tools
//! the mission declared (its scope), when it was issued and when it expires, and carries a
//! unique id. Executors refuse a call whose token is missing, expired, for another mission,
//! outside its scope, or presented after the mission ended.
//!
//! ```text
//! u8 version = 1, [16] id, [16] mission, [16] agent, u16+ namespace,
//! u16 n, n × u16+ tool, u64 issued_at, u64 expires_at, [32] issuer
//! ```

use aura_core::encoding::{DecodeError, DecodeErrorKind, Decoder, Encoder};
use aura_core::signed::{Issuer, Signed, Statement};
use aura_core::{AgentId, MissionId, PublicKey, Timestamp, typed_id};
use serde::{Deserialize, Serialize};

use crate::level::Namespace;

use crate::statement::{BadStatement, TrustSet, get_key, get_str, put_key, put_str};

typed_id!(
    /// An execution token.
    TokenId,
    "tok"
);

/// Tools a token may name, and how long a tool name may be.
pub const MAX_TOOLS: usize = 256;
pub const MAX_TOOL_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionToken {
    pub id: TokenId,
    pub mission: MissionId,
    pub agent: AgentId,
    pub namespace: Namespace,
    pub tools: Vec<String>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub issuer: PublicKey,
}

const VERSION: u8 = 1;

impl Statement for ExecutionToken {
    const KIND: &'static str = "execution-token/v1";

    fn encode(&self, e: &mut Encoder) {
        e.u8(VERSION)
            .raw(self.id.as_bytes())
            .raw(self.mission.as_bytes())
            .raw(self.agent.as_bytes());
        put_str(e, self.namespace.as_str());
        e.u16(u16::try_from(self.tools.len()).unwrap_or(u16::MAX));
        for t in self.tools.iter().take(usize::from(u16::MAX)) {
            put_str(e, t);
        }
        e.u64(self.issued_at.as_nanos())
            .u64(self.expires_at.as_nanos());
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
        let id = TokenId::from_bytes(d.array("id")?);
        let mission = MissionId::from_bytes(d.array("mission")?);
        let agent = AgentId::from_bytes(d.array("agent")?);
        let namespace = Namespace::new(&get_str(d, "namespace")?)
            .map_err(|_| d.invalid("namespace", "is not a valid namespace"))?;
        let n = usize::from(d.u16("tools")?);
        if n > MAX_TOOLS {
            return Err(d.invalid("tools", "are too many"));
        }
        let mut tools = Vec::with_capacity(n);
        for _ in 0..n {
            tools.push(get_str(d, "tool")?);
        }
        Ok(ExecutionToken {
            id,
            mission,
            agent,
            namespace,
            tools,
            issued_at: Timestamp::from_nanos(d.u64("issued_at")?),
            expires_at: Timestamp::from_nanos(d.u64("expires_at")?),
            issuer: get_key(d, "issuer")?,
        })
    }

    fn issuer(&self) -> Issuer<'_> {
        Issuer::Key(&self.issuer)
    }
}

/// Why an executor refuses a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no execution token was presented")]
    Missing,
    #[error("the execution token expired at {0}")]
    Expired(Timestamp),
    #[error("the execution token is not valid until {0}")]
    NotYetValid(Timestamp),
    #[error("the execution token is for mission {found}, not {expected}")]
    WrongMission {
        expected: MissionId,
        found: MissionId,
    },
    #[error("the execution token does not cover the tool `{0}`")]
    OutOfScope(String),
    #[error("mission {0} has ended; its token is no longer accepted")]
    MissionEnded(MissionId),
    #[error("the execution token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the execution token is not trustworthy: {0}")]
    Untrusted(#[from] BadStatement),
}

/// Checks that `token` lets mission `mission` call `tool` at `now`. Whether the mission
/// is still running is the caller's to know: it passes `MissionEnded` itself.
pub fn verify_token<'a>(
    token: Option<&'a Signed<ExecutionToken>>,
    trust: &TrustSet,
    now: Timestamp,
    mission: MissionId,
    tool: &str,
) -> Result<&'a ExecutionToken, TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let t = &token.statement;
    if t.tools.len() > MAX_TOOLS
        || t.tools
            .iter()
            .any(|n| n.is_empty() || n.len() > MAX_TOOL_NAME)
    {
        return Err(TokenError::Malformed("its tool list is out of bounds"));
    }
    trust.check(token)?;
    if t.mission != mission {
        return Err(TokenError::WrongMission {
            expected: mission,
            found: t.mission,
        });
    }
    if now < t.issued_at {
        return Err(TokenError::NotYetValid(t.issued_at));
    }
    if now >= t.expires_at {
        return Err(TokenError::Expired(t.expires_at));
    }
    if !t.tools.iter().any(|n| n == tool) {
        return Err(TokenError::OutOfScope(tool.to_owned()));
    }
    Ok(t)
}
