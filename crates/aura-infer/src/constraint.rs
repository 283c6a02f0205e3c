//! Constrained decoding: JSON objects, JSON schemas and tool calls, as token masks.
//!
//! Not built yet in this version: requests that carry a constraint are refused with a
//! clear error rather than answered unconstrained.

use crate::error::{Error, Result};
use crate::{Constraint, Model};

/// The per-request state of a constraint.
pub(crate) struct Matcher {}

impl Matcher {
    pub(crate) fn new(_model: &Model, _constraint: &Constraint) -> Result<Self> {
        Err(Error::Constraint(
            "constrained decoding is not available in this build".into(),
        ))
    }

    /// Sets the logits of disallowed tokens to -inf.
    pub(crate) fn mask(&mut self, _logits: &mut [f32]) -> Result<()> {
        Ok(())
    }

    /// Accepts a token; returns true when the constrained output is complete.
    pub(crate) fn advance(&mut self, _token: u32) -> Result<bool> {
        Ok(false)
    }

    /// Whether ending now would leave the output incomplete.
    pub(crate) fn forbids_stop(&self) -> bool {
        false
    }
}
