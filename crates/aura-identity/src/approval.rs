//! Approvals: a person's signed answer to an escalation.
//!
//! When policy escalates a request, the node records the request and its digest. An
//! approver signs an [`Approval`] naming the escalation it answers (the mission's
//! declaration, or one call: the reasoner turn that proposed it and its id) and that
//! digest, with their own key; the approval counts only if the approver's credential (from
//! a trusted issuer) binds that key to a level at least the one policy asked for, in the
//! mission's namespace, and neither has expired. The request is then evaluated again with
//! the verified approval in its context. Each approval answers one escalation: the node
//! records the ids it used and refuses one used before.
//!
//! The canonical encoding (big-endian; `u16+` is a u16 byte length, then the UTF-8 bytes),
//! signed under the statement kind `approval/v2`:
//!
//! ```text
//! u8 version = 2, [16] id, [16] mission,
//! u8 answers (1 the declaration, 2 a call) [, u32 turn, u16+ call id (a call only)],
//! [32] request digest, u8 verdict (1 approve, 2 reject), u16+ reason,
//! u64 issued_at, u64 expires_at, [32] approver key
//! ```
//!
//! Version 1 (kind `approval/v1`) lacked `answers`: it named only the request digest, so
//! one approval could answer any later escalation of an identical request in the same
//! mission. Version 1 approvals still decode and their signatures still verify (old
//! ledgers hold them), but [`verify_approval`] refuses them for new escalations.
//!
//! ```text
//! u8 version = 1, [16] id, [16] mission, [32] request digest, u8 verdict (1 approve,
//! 2 reject), u16+ reason, u64 issued_at, u64 expires_at, [32] approver key
//! ```

use aura_core::encoding::{DecodeError, DecodeErrorKind, Decoder, Encoder};
use aura_core::hash::Hash;
use aura_core::signed::{Issuer, Signed, Statement};
use aura_core::{MissionId, PublicKey, Timestamp, typed_id};
use serde::{Deserialize, Serialize};

use crate::credential::{Credential, CredentialError, Subject, verify_credential};
use crate::level::{Level, Namespace};

use crate::statement::{BadStatement, TrustSet, get_key, get_str, put_key, put_str};

typed_id!(
    /// An approval.
    ApprovalId,
    "appr"
);

/// The longest reason an approval may give.
pub const MAX_REASON: usize = 4096;

/// The longest call id an approval may name.
pub const MAX_CALL_ID: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
}

/// The escalation an approval answers, named exactly: a mission's declaration is judged
/// once, and a call is one of the calls a reasoner turn proposed. Call ids come from the
/// reasoner and may repeat from one turn to the next, so a call is named by its turn too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Answers {
    /// The mission's declaration (`mission.submit`).
    Declaration,
    /// A proposed tool call: the reasoner turn that proposed it (the mission's first turn
    /// is 1) and the call's id.
    Call { turn: u32, id: String },
}

impl std::fmt::Display for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answers::Declaration => f.write_str("the mission's declaration"),
            Answers::Call { turn, id } => write!(f, "call `{id}` of turn {turn}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub id: ApprovalId,
    pub mission: MissionId,
    /// The escalation this answers; `None` only in a version 1 approval, which named the
    /// request digest alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Answers>,
    /// The digest of the escalated request this answers.
    pub request: Hash,
    pub verdict: Verdict,
    pub reason: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// The approver's own key; the approval is signed with it.
    pub approver: PublicKey,
}

/// Version 1: no `answers`.
const V1: u8 = 1;
/// Version 2: `answers` after the mission.
const V2: u8 = 2;

impl Statement for Approval {
    const KIND: &'static str = "approval/v2";

    fn kind(&self) -> &'static str {
        if self.answers.is_some() {
            Self::KIND
        } else {
            "approval/v1"
        }
    }

    fn encode(&self, e: &mut Encoder) {
        e.u8(if self.answers.is_some() { V2 } else { V1 })
            .raw(self.id.as_bytes())
            .raw(self.mission.as_bytes());
        match &self.answers {
            None => {}
            Some(Answers::Declaration) => {
                e.u8(1);
            }
            Some(Answers::Call { turn, id }) => {
                e.u8(2).u32(*turn);
                put_str(e, id);
            }
        }
        e.hash(&self.request);
        e.u8(match self.verdict {
            Verdict::Approve => 1,
            Verdict::Reject => 2,
        });
        put_str(e, &self.reason);
        e.u64(self.issued_at.as_nanos())
            .u64(self.expires_at.as_nanos());
        put_key(e, &self.approver);
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let v = d.u8("version")?;
        if v != V1 && v != V2 {
            return Err(d.error(DecodeErrorKind::UnknownVersion {
                field: "version",
                value: v.into(),
            }));
        }
        let id = ApprovalId::from_bytes(d.array("id")?);
        let mission = MissionId::from_bytes(d.array("mission")?);
        let answers = if v == V1 {
            None
        } else {
            Some(match d.u8("answers")? {
                1 => Answers::Declaration,
                2 => Answers::Call {
                    turn: d.u32("turn")?,
                    id: get_str(d, "call id")?,
                },
                _ => return Err(d.invalid("answers", "is not 1 (declaration) or 2 (call)")),
            })
        };
        let request = d.hash("request")?;
        let verdict = match d.u8("verdict")? {
            1 => Verdict::Approve,
            2 => Verdict::Reject,
            _ => return Err(d.invalid("verdict", "is not 1 (approve) or 2 (reject)")),
        };
        Ok(Approval {
            id,
            mission,
            answers,
            request,
            verdict,
            reason: get_str(d, "reason")?,
            issued_at: Timestamp::from_nanos(d.u64("issued_at")?),
            expires_at: Timestamp::from_nanos(d.u64("expires_at")?),
            approver: get_key(d, "approver")?,
        })
    }

    fn issuer(&self) -> Issuer<'_> {
        Issuer::Key(&self.approver)
    }
}

/// An approval that held up: who approved, at what level, and what they said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedApproval {
    pub id: ApprovalId,
    pub verdict: Verdict,
    pub approver: Subject,
    pub level: Level,
    pub request: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("the approval is not signed by the key it names: {0}")]
    BadSignature(#[from] BadStatement),
    #[error("the approver's credential does not hold: {0}")]
    Credential(#[from] CredentialError),
    #[error(
        "the approver's credential is for a different key than the one that signed the approval"
    )]
    KeyMismatch,
    #[error("the approver is an agent; only people may approve")]
    NotAPerson,
    #[error("the approver's credential is for namespace `{found}`, not `{expected}`")]
    WrongNamespace {
        expected: Namespace,
        found: Namespace,
    },
    #[error("the approval answers a different request")]
    WrongRequest,
    #[error(
        "the approval is of version 1, which does not name the call it answers; sign a new one (version 2)"
    )]
    Unnamed,
    #[error("the approval answers {found}, but the escalation waiting is {expected}")]
    WrongEscalation { expected: Answers, found: Answers },
    #[error("the approval is for mission {found}, not {expected}")]
    WrongMission {
        expected: MissionId,
        found: MissionId,
    },
    #[error("the approver is at level {have}, but this needs {need}")]
    LevelTooLow { have: Level, need: Level },
    #[error("the approval expired at {0}")]
    Expired(Timestamp),
    #[error("the approval is not valid until {0}")]
    NotYetValid(Timestamp),
    #[error("the approval's reason is longer than {MAX_REASON} bytes")]
    ReasonTooLong,
    #[error("the approval's call id is longer than {MAX_CALL_ID} bytes")]
    CallIdTooLong,
}

/// What an approval must answer.
#[derive(Debug, Clone, Copy)]
pub struct Escalation<'a> {
    pub mission: MissionId,
    pub namespace: &'a Namespace,
    /// The declaration or the call waiting.
    pub answers: &'a Answers,
    pub request: Hash,
    pub required: Level,
}

/// Checks `approval` against the escalation it claims to answer, with the approver's
/// credential. Both the approval and the credential must hold at `now`. A version 1
/// approval is refused: it does not say which escalation it answers. (Whether its id was
/// used before is the caller's to check: the mission's record knows.)
pub fn verify_approval(
    approval: &Signed<Approval>,
    approver: &Signed<Credential>,
    trust: &TrustSet,
    now: Timestamp,
    escalation: Escalation<'_>,
) -> Result<VerifiedApproval, ApprovalError> {
    let a = &approval.statement;
    if a.reason.len() > MAX_REASON {
        return Err(ApprovalError::ReasonTooLong);
    }
    if matches!(&a.answers, Some(Answers::Call { id, .. }) if id.len() > MAX_CALL_ID) {
        return Err(ApprovalError::CallIdTooLong);
    }
    approval.verify_signature().map_err(BadStatement::from)?;
    let cred: &Credential = verify_credential(approver, trust, now)?;
    if cred.key != a.approver {
        return Err(ApprovalError::KeyMismatch);
    }
    if !matches!(cred.subject, Subject::Operator(_)) {
        return Err(ApprovalError::NotAPerson);
    }
    if &cred.namespace != escalation.namespace {
        return Err(ApprovalError::WrongNamespace {
            expected: escalation.namespace.clone(),
            found: cred.namespace.clone(),
        });
    }
    if a.mission != escalation.mission {
        return Err(ApprovalError::WrongMission {
            expected: escalation.mission,
            found: a.mission,
        });
    }
    let Some(answers) = &a.answers else {
        return Err(ApprovalError::Unnamed);
    };
    if answers != escalation.answers {
        return Err(ApprovalError::WrongEscalation {
            expected: escalation.answers.clone(),
            found: answers.clone(),
        });
    }
    if a.request != escalation.request {
        return Err(ApprovalError::WrongRequest);
    }
    if now < a.issued_at {
        return Err(ApprovalError::NotYetValid(a.issued_at));
    }
    if now >= a.expires_at {
        return Err(ApprovalError::Expired(a.expires_at));
    }
    if cred.level < escalation.required {
        return Err(ApprovalError::LevelTooLow {
            have: cred.level,
            need: escalation.required,
        });
    }
    Ok(VerifiedApproval {
        id: a.id,
        verdict: a.verdict,
        approver: cred.subject.clone(),
        level: cred.level,
        request: a.request,
    })
}
