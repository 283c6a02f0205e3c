//! Who may act, and on whose word: Aura's identity statements. Pure: no IO, no clock
//! (callers pass the time), no randomness (callers pass ids).
//!
//! - [`Level`]: authority levels L1 < L2 < L3 < L4.
//! - [`Namespace`]: the isolation unit for agents, missions, records and workspaces.
//! - [`Credential`]: an issuer vouches that a key belongs to an agent or an operator, at a
//!   level, in a namespace, for a time.
//! - [`ExecutionToken`]: the instance-scoped token a mission runs under: one mission, its
//!   tools, an expiry, a unique id. Executors refuse calls without a valid one.
//! - [`Approval`]: a person's signed answer to an escalation.
//!
//! Every statement is signed as [`Signed<T>`] (`aura_core::signed`, shared with aura-model):
//! the signer signs the `Statement` domain tag, the statement's kind and its canonical
//! encoding (docs/models.md, "Signed statements"). Verification takes
//! the set of issuers the node trusts ([`TrustSet`]) and the current time, and fails
//! closed with a reason for each defect.

#![forbid(unsafe_code)]

mod approval;
mod credential;
mod level;
mod statement;
mod token;

pub use approval::{
    Answers, Approval, ApprovalError, ApprovalId, Escalation, MAX_CALL_ID, MAX_REASON, Verdict,
    VerifiedApproval, verify_approval,
};
pub use aura_core::signed::{Issuer, Signed, Statement};
pub use credential::{
    Credential, CredentialError, CredentialId, InvalidOperatorName, OperatorName, Subject,
    verify_credential,
};
pub use level::{InvalidLevel, InvalidNamespace, Level, Namespace};
pub use statement::{BadStatement, TrustSet};
pub use token::{ExecutionToken, MAX_TOOL_NAME, MAX_TOOLS, TokenError, TokenId, verify_token};
