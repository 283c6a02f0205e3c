//! Approvals: a person's signed answer to an escalation.
//!
//! When policy escalates a request, the node records the request and its digest. An
//! approver signs an [`Approval`] naming that digest with their own key; the approval counts
//! only if the approver's credential (from a trusted issuer) binds that key to a level at
//! least the one policy asked for, in the mission's namespace, and neither has expired. The
//! request is then evaluated again with the verified approval in its context.
//!
//! ```text
//! u8 version = 1, [16] id, [16] mission, [32] request digest, u8 verdict (1 approve,
//! 2 reject), u16+ reason, u64 issued_at, u64 expires_at, [32] approver key
//! ```

use aura_core::encoding::{DecodeError, DecodeErrorKind, Decoder, Encoder};
use aura_core::hash::Hash;
use aura_core::{MissionId, PublicKey, Timestamp, typed_id};
use serde::{Deserialize, Serialize};

use crate::credential::{Credential, CredentialError, Subject, verify_credential};
use crate::level::{Level, Namespace};
use crate::statement::{
    BadStatement, Signed, Statement, TrustSet, get_key, get_str, put_key, put_str,
};

typed_id!(
    /// An approval.
    ApprovalId,
    "appr"
);

/// The longest reason an approval may give.
pub const MAX_REASON: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub id: ApprovalId,
    pub mission: MissionId,
    /// The digest of the escalated request this answers.
    pub request: Hash,
    pub verdict: Verdict,
    pub reason: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// The approver's own key; the approval is signed with it.
    pub approver: PublicKey,
}

const VERSION: u8 = 1;

impl Statement for Approval {
    const KIND: &'static str = "approval/v1";

    fn encode(&self, e: &mut Encoder) {
        e.u8(VERSION)
            .raw(self.id.as_bytes())
            .raw(self.mission.as_bytes())
            .hash(&self.request);
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
        if v != VERSION {
            return Err(d.error(DecodeErrorKind::UnknownVersion {
                field: "version",
                value: v.into(),
            }));
        }
        let id = ApprovalId::from_bytes(d.array("id")?);
        let mission = MissionId::from_bytes(d.array("mission")?);
        let request = d.hash("request")?;
        let verdict = match d.u8("verdict")? {
            1 => Verdict::Approve,
            2 => Verdict::Reject,
            _ => return Err(d.invalid("verdict", "is not 1 (approve) or 2 (reject)")),
        };
        Ok(Approval {
            id,
            mission,
            request,
            verdict,
            reason: get_str(d, "reason")?,
            issued_at: Timestamp::from_nanos(d.u64("issued_at")?),
            expires_at: Timestamp::from_nanos(d.u64("expires_at")?),
            approver: get_key(d, "approver")?,
        })
    }

    fn signer(&self) -> &PublicKey {
        &self.approver
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
}

/// What an approval must answer.
#[derive(Debug, Clone, Copy)]
pub struct Escalation<'a> {
    pub mission: MissionId,
    pub namespace: &'a Namespace,
    pub request: Hash,
    pub required: Level,
}

/// Checks `approval` against the escalation it claims to answer, with the approver's
/// credential. Both the approval and the credential must hold at `now`.
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
    approval.verify_signature()?;
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
