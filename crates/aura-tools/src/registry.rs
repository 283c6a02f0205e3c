//! The registry: the tools a node offers, and the one door every call goes through.
//!
//! [`Registry::execute`] checks the mission's execution token before any tool code runs;
//! a refused call becomes a failed [`Effect`] of kind [`ErrorKind::Unauthorized`], so it is
//! recorded like any other outcome and nothing panics.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aura_core::AgentId;
use aura_identity::{Namespace, TokenError, verify_token};

use crate::call::{Call, Prepared, ToolDescriptor};
use crate::cmd::{CmdRun, CommandRunner};
use crate::context::ToolContext;
use crate::effect::{Compensation, Effect, ErrorKind, ToolError};
use crate::http::{HttpFetch, HttpOptions};
use crate::tool::Tool;
use crate::{agent, fs};

/// Why a call was refused before its tool ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the execution token was issued to agent {found}, not {expected}")]
    OtherAgent { expected: AgentId, found: AgentId },
    #[error("the execution token is for namespace `{found}`, not `{expected}`")]
    OtherNamespace {
        expected: Namespace,
        found: Namespace,
    },
}

/// Checks that `ctx` lets its mission call `tool` now: a token is presented, the mission
/// is still active, and the token is signed by a trusted issuer, for this mission, agent
/// and namespace, unexpired, with `tool` in its scope.
pub fn authorize(ctx: &ToolContext, tool: &str) -> Result<(), Unauthorized> {
    let token = ctx.token.as_ref().ok_or(TokenError::Missing)?;
    if !ctx.mission_active {
        return Err(TokenError::MissionEnded(ctx.mission).into());
    }
    let statement = verify_token(Some(token), &ctx.trust, ctx.now, ctx.mission, tool)?;
    check_holder(ctx, statement)
}

/// Checks that `ctx` may compensate a call of `tool`: the token is signed by a trusted
/// issuer, for this mission, agent and namespace, with `tool` in its scope. Neither
/// expiry nor the end of the mission stop a compensation: compensations run exactly when
/// a mission is failing, often because it ran out of time, and they only put back what
/// the mission's own recorded effects changed.
pub fn authorize_compensation(ctx: &ToolContext, tool: &str) -> Result<(), Unauthorized> {
    let token = ctx.token.as_ref().ok_or(TokenError::Missing)?;
    ctx.trust.check(token).map_err(TokenError::from)?;
    let statement = &token.statement;
    if statement.mission != ctx.mission {
        return Err(TokenError::WrongMission {
            expected: ctx.mission,
            found: statement.mission,
        }
        .into());
    }
    if !statement.tools.iter().any(|t| t == tool) {
        return Err(TokenError::OutOfScope(tool.to_owned()).into());
    }
    check_holder(ctx, statement)
}

fn check_holder(
    ctx: &ToolContext,
    statement: &aura_identity::ExecutionToken,
) -> Result<(), Unauthorized> {
    if statement.agent != ctx.agent {
        return Err(Unauthorized::OtherAgent {
            expected: ctx.agent,
            found: statement.agent,
        });
    }
    if statement.namespace != ctx.namespace {
        return Err(Unauthorized::OtherNamespace {
            expected: ctx.namespace.clone(),
            found: statement.namespace.clone(),
        });
    }
    Ok(())
}

/// Why a tool could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("a tool named `{0}` is already registered")]
    Duplicate(String),
    #[error(
        "`{0}` is not a valid tool name: use 1-128 of a-z, 0-9, '.', '_' and '-', starting with a letter"
    )]
    InvalidName(String),
}

/// How the built-in tools are set up on this node.
#[derive(Clone, Default)]
pub struct BuiltinOptions {
    /// Runs `cmd.run`'s commands in a sandbox (aura-cell). Without one, `cmd.run` refuses
    /// every call: it never runs a command on the host.
    pub command_runner: Option<Arc<dyn CommandRunner>>,
    pub http: HttpOptions,
}

impl fmt::Debug for BuiltinOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltinOptions")
            .field("command_runner", &self.command_runner.is_some())
            .field("http", &self.http)
            .finish()
    }
}

/// The tools a node offers, by name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The built-in tools: `fs.read`, `fs.write`, `fs.list`, `fs.delete`, `cmd.run`,
    /// `http.fetch`, `agent.send` and `mission.finish`.
    pub fn builtin(options: BuiltinOptions) -> Self {
        let mut tools: Vec<Arc<dyn Tool>> = fs::all();
        tools.push(Arc::new(CmdRun::new(options.command_runner)));
        tools.push(Arc::new(HttpFetch::new(options.http)));
        tools.extend(agent::all());
        let mut registry = Registry::new();
        for tool in tools {
            let name = tool.descriptor().name.clone();
            registry.tools.insert(name, tool);
        }
        registry
    }

    /// Adds a tool. Names are unique.
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), RegisterError> {
        let name = tool.descriptor().name.clone();
        if !valid_tool_name(&name) {
            return Err(RegisterError::InvalidName(name));
        }
        if self.tools.contains_key(&name) {
            return Err(RegisterError::Duplicate(name));
        }
        self.tools.insert(name, tool);
        Ok(())
    }

    /// Every tool's descriptor, by name.
    pub fn descriptors(&self) -> Vec<&ToolDescriptor> {
        self.tools.values().map(|t| t.descriptor()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    fn tool(&self, name: &str) -> Result<&Arc<dyn Tool>, ToolError> {
        self.tools.get(name).ok_or_else(|| {
            ToolError::new(
                ErrorKind::UnknownTool,
                format!("there is no tool named `{name}`"),
            )
        })
    }

    /// Validates a call's arguments and reports its target, without doing anything.
    pub fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        self.tool(&call.tool)?.prepare(call)
    }

    /// Runs a prepared call: checks the token, checks that `prepared` is what its call's
    /// arguments say (so policy judged the real target), then runs the tool. Every
    /// refusal and failure comes back as a failed effect.
    pub async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let call = &prepared.call;
        let tool = match self.tool(&call.tool) {
            Ok(tool) => tool,
            Err(e) => return Effect::failed(&call.tool, &call.id, e),
        };
        if let Err(refusal) = authorize(ctx, &call.tool) {
            return Effect::failed(
                &call.tool,
                &call.id,
                ToolError::new(
                    ErrorKind::Unauthorized,
                    format!("{}: refused: {refusal}", call.tool),
                ),
            );
        }
        let fresh = match tool.prepare(call) {
            Ok(fresh) => fresh,
            Err(e) => return Effect::failed(&call.tool, &call.id, e),
        };
        if fresh.target != prepared.target || fresh.destructive != prepared.destructive {
            return Effect::failed(
                &call.tool,
                &call.id,
                ToolError::new(
                    ErrorKind::InvalidArguments,
                    format!(
                        "{}: the prepared call's target does not match its arguments; refusing",
                        call.tool
                    ),
                ),
            );
        }
        tool.execute(ctx, &fresh).await
    }

    /// Runs the compensation a completed call of `tool` recorded. See
    /// [`authorize_compensation`] for what it requires of the token.
    pub async fn compensate(
        &self,
        ctx: &ToolContext,
        tool: &str,
        compensation: &Compensation,
    ) -> Result<(), ToolError> {
        let found = self.tool(tool)?;
        authorize_compensation(ctx, tool).map_err(|refusal| {
            ToolError::new(
                ErrorKind::Unauthorized,
                format!("{tool}: compensation refused: {refusal}"),
            )
        })?;
        found.compensate(ctx, compensation).await
    }
}

/// Tool names: what a token's scope and Cedar actions can carry.
fn valid_tool_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= aura_identity::MAX_TOOL_NAME
        && b[0].is_ascii_lowercase()
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names() {
        for good in ["fs.read", "a", "my_tool-2.x"] {
            assert!(valid_tool_name(good), "{good}");
        }
        for bad in ["", "Fs.read", "1abc", "a b", "a/b", &"a".repeat(129)] {
            assert!(!valid_tool_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn builtin_names_are_valid_and_complete() {
        let registry = Registry::builtin(BuiltinOptions::default());
        let names: Vec<&str> = registry
            .descriptors()
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "agent.send",
                "cmd.run",
                "fs.delete",
                "fs.list",
                "fs.read",
                "fs.write",
                "http.fetch",
                "mission.finish"
            ]
        );
        assert!(names.iter().all(|n| valid_tool_name(n)));
    }
}
