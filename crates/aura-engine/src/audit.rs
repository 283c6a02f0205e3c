//! The signatures a ledger entry's body carries, checked offline: what `aura ledger verify`
//! adds to the ledger's own structural checks (chains, tree, checkpoint signatures).
//!
//! Two kinds of entries hold statements signed by someone other than the node: an
//! `agent.created` entry holds the agent's credential, signed by its issuer, and a
//! `mission.approved` or `mission.rejected` entry holds the approver's signed approval.
//! The node checked both when they arrived (with the clock and the trusted keys); here each
//! signature is checked again against the key the statement names, so an approval or a
//! credential altered after the fact, even by someone able to re-sign the node's
//! checkpoints, is found. Whether the signer was trusted (an enrolled operator of the
//! right level, an issuer the node trusts) is replay's question (`aura replay`), not this.

use aura_identity::{Approval, Credential, Signed};
use aura_kernel::{Event, Recorded};
use serde::Deserialize;

use crate::handle::KIND_CREATED;

/// What one entry's body held, once its signatures checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignaturesChecked {
    pub credentials: u64,
    pub approvals: u64,
}

impl SignaturesChecked {
    pub fn add(&mut self, other: SignaturesChecked) {
        self.credentials += other.credentials;
        self.approvals += other.approvals;
    }
}

/// Why an entry's signed statement does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the agent's credential is unreadable: {0}")]
    CredentialMalformed(String),
    #[error("the agent's credential is not signed by the issuer it names: {0}")]
    CredentialSignature(String),
    #[error("the mission record is unreadable: {0}")]
    RecordMalformed(String),
    #[error("the recorded approval is unreadable: {0}")]
    ApprovalMalformed(String),
    #[error("the recorded approval is not signed by the approver it names: {0}")]
    ApprovalSignature(String),
}

/// The part of an `agent.created` body that is signed.
#[derive(Deserialize)]
struct CreatedCredential {
    credential: Signed<Credential>,
}

/// Checks the signatures in one entry's body. `body` is `None` for a pruned entry (its body
/// is gone; its hash still chains), which has nothing left to check.
pub fn check_entry_signatures(
    kind: &str,
    body: Option<&[u8]>,
) -> Result<SignaturesChecked, SignatureError> {
    let mut checked = SignaturesChecked::default();
    let Some(body) = body else {
        return Ok(checked);
    };
    if kind == KIND_CREATED {
        let created: CreatedCredential = serde_json::from_slice(body)
            .map_err(|e| SignatureError::CredentialMalformed(e.to_string()))?;
        created
            .credential
            .verify_signature()
            .map_err(|e| SignatureError::CredentialSignature(e.to_string()))?;
        checked.credentials = 1;
    } else if kind.starts_with("mission.") {
        let recorded = Recorded::from_body(body)
            .map_err(|e| SignatureError::RecordMalformed(e.to_string()))?;
        let (Event::Approved { approval, .. } | Event::Rejected { approval, .. }) = &recorded.event
        else {
            return Ok(checked);
        };
        // The engine records every approval whole; one without a statement (as the
        // kernel's own unit tests write) has no signature, so it fails here: closed.
        let signed = Signed::<Approval>::deserialize(approval)
            .map_err(|e| SignatureError::ApprovalMalformed(e.to_string()))?;
        signed
            .verify_signature()
            .map_err(|e| SignatureError::ApprovalSignature(e.to_string()))?;
        checked.approvals = 1;
    }
    Ok(checked)
}
