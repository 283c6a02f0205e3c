//! What a tool is: the [`Tool`] trait every tool implements, and the helper tools use to
//! run blocking work.
//!
//! This module is a leaf: the tools and the registry both depend on it, and it depends on
//! neither, so the registry can construct the built-in tools without the tools reaching
//! back into the registry (the same split as Restate's invoker, whose handle and commands
//! live apart from the service that runs them).

use std::fmt;

use async_trait::async_trait;

use crate::call::{Call, Prepared, ToolDescriptor};
use crate::context::ToolContext;
use crate::effect::{Compensation, Effect, ErrorKind, ToolError};

/// A tool. Implementations validate their arguments in [`Tool::prepare`] (no IO), do
/// their work in [`Tool::execute`], and undo it in [`Tool::compensate`].
#[async_trait]
pub trait Tool: Send + Sync + fmt::Debug {
    fn descriptor(&self) -> &ToolDescriptor;

    /// Validates the call's arguments and says what it would touch. Does no IO.
    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError>;

    /// Does the work and reports what happened. Every failure is an [`Effect`] with
    /// [`crate::Outcome::Failed`]; this never panics. The registry has already checked
    /// the token.
    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect;

    /// Undoes a completed call from the compensation its effect recorded. Idempotent.
    async fn compensate(
        &self,
        _ctx: &ToolContext,
        _compensation: &Compensation,
    ) -> Result<(), ToolError> {
        Err(ToolError::new(
            ErrorKind::Unavailable,
            format!("{}: this tool has no compensation", self.descriptor().name),
        ))
    }
}

/// Runs blocking work (file system calls) on tokio's blocking threads. A panic in `f` is
/// reported as an [`ErrorKind::Internal`] error rather than taking the caller down.
pub(crate) async fn blocking<T, F>(tool: &str, f: F) -> Result<T, ToolError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ToolError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(ToolError::new(
            ErrorKind::Internal,
            format!("{tool}: the tool's task failed: {e}"),
        )),
    }
}
