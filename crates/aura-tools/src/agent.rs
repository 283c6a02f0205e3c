//! The tools that act on other agents and on the mission itself: `agent.send` and
//! `mission.finish`. Neither does IO: their effects carry what the node and the kernel
//! then do (deliver the message, complete the mission).

use std::sync::Arc;

use async_trait::async_trait;
use aura_core::AgentId;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::args::{parse, schema_for};
use crate::call::{Call, Capability, Prepared, Target, ToolDescriptor};
use crate::context::ToolContext;
use crate::effect::{Effect, ErrorKind, OutboundMessage, ToolError};
use crate::tool::Tool;

/// Arguments of `agent.send`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendArgs {
    /// The receiving agent's id (`agent_...`).
    pub to: String,
    /// The message: any JSON value.
    pub body: serde_json::Value,
}

/// Arguments of `mission.finish`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishArgs {
    /// What was done and how the objective was reached.
    pub summary: String,
}

/// `agent.send`.
#[derive(Debug)]
pub struct AgentSend {
    descriptor: ToolDescriptor,
}

impl AgentSend {
    pub const NAME: &'static str = "agent.send";

    pub fn new() -> Self {
        AgentSend {
            descriptor: ToolDescriptor {
                name: Self::NAME.to_owned(),
                description: "Send a JSON message to another agent's inbox.".to_owned(),
                parameters: schema_for::<SendArgs>(),
                destructive: false,
                compensable: false,
                needs: Capability::Messaging,
            },
        }
    }

    fn recipient(args: &SendArgs) -> Result<AgentId, ToolError> {
        args.to.parse::<AgentId>().map_err(|e| {
            ToolError::new(ErrorKind::InvalidArguments, format!("{}: {e}", Self::NAME))
        })
    }
}

impl Default for AgentSend {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Tool for AgentSend {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let args: SendArgs = parse(Self::NAME, &call.arguments)?;
        let agent = Self::recipient(&args)?;
        Ok(Prepared {
            call: call.clone(),
            target: Target::Agent { agent },
            destructive: false,
        })
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let id = &prepared.call.id;
        let result = parse::<SendArgs>(Self::NAME, &prepared.call.arguments).and_then(|args| {
            let to = Self::recipient(&args)?;
            let size = serde_json::to_vec(&args.body).map_or(usize::MAX, |b| b.len());
            if size > ctx.limits.message_bytes {
                return Err(ToolError::new(
                    ErrorKind::TooLarge,
                    format!(
                        "{}: the message body is {size} bytes; the limit is {}",
                        Self::NAME,
                        ctx.limits.message_bytes
                    ),
                ));
            }
            Ok(OutboundMessage {
                from: ctx.agent,
                to,
                namespace: ctx.namespace.clone(),
                mission: ctx.mission,
                body: args.body,
            })
        });
        match result {
            Ok(message) => {
                let mut effect = Effect::ok(
                    Self::NAME,
                    id,
                    json!({ "to": message.to.to_string(), "queued": true }),
                );
                effect.message = Some(message);
                effect
            }
            Err(e) => Effect::failed(Self::NAME, id, e),
        }
    }
}

/// `mission.finish`.
#[derive(Debug)]
pub struct MissionFinish {
    descriptor: ToolDescriptor,
}

impl MissionFinish {
    pub const NAME: &'static str = "mission.finish";

    pub fn new() -> Self {
        MissionFinish {
            descriptor: ToolDescriptor {
                name: Self::NAME.to_owned(),
                description: "Declare the mission's objective reached, with a summary of what was done. The mission completes.".to_owned(),
                parameters: schema_for::<FinishArgs>(),
                destructive: false,
                compensable: false,
                needs: Capability::Lifecycle,
            },
        }
    }

    fn check(args: &FinishArgs) -> Result<(), ToolError> {
        if args.summary.trim().is_empty() {
            return Err(ToolError::new(
                ErrorKind::InvalidArguments,
                format!("{}: `summary` is empty", Self::NAME),
            ));
        }
        Ok(())
    }
}

impl Default for MissionFinish {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Tool for MissionFinish {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let args: FinishArgs = parse(Self::NAME, &call.arguments)?;
        Self::check(&args)?;
        Ok(Prepared {
            call: call.clone(),
            target: Target::Mission,
            destructive: false,
        })
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let id = &prepared.call.id;
        let result = parse::<FinishArgs>(Self::NAME, &prepared.call.arguments).and_then(|args| {
            Self::check(&args)?;
            if args.summary.len() > ctx.limits.summary_bytes {
                return Err(ToolError::new(
                    ErrorKind::TooLarge,
                    format!(
                        "{}: the summary is {} bytes; the limit is {}",
                        Self::NAME,
                        args.summary.len(),
                        ctx.limits.summary_bytes
                    ),
                ));
            }
            Ok(args.summary)
        });
        match result {
            Ok(summary) => {
                let mut effect = Effect::ok(Self::NAME, id, json!({ "finished": true }));
                effect.finish = Some(summary);
                effect
            }
            Err(e) => Effect::failed(Self::NAME, id, e),
        }
    }
}

pub(crate) fn all() -> Vec<Arc<dyn Tool>> {
    vec![Arc::new(AgentSend::new()), Arc::new(MissionFinish::new())]
}
