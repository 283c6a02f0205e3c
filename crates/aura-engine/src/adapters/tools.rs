//! [`Tools`] over `aura-tools`: the registry prepares, runs and compensates calls; the
//! adapter turns its effects into the kernel's recorded form.

use std::sync::Arc;

use async_trait::async_trait;
use aura_kernel::{Effect, Outbound, ToolCall};
use aura_tools::{
    Call, Compensation, ErrorKind, Limits, NetworkGrant, Outcome, Registry, ToolContext, ToolError,
};
use serde_json::Value;

use crate::ports::{ExecContext, Proposal, Target, ToolSpec, Tools};

/// The node's tool registry as the engine sees it.
#[derive(Debug, Clone)]
pub struct RegistryTools {
    registry: Arc<Registry>,
    limits: Limits,
    /// Whether commands may ever ask for network access (policy must still allow it).
    command_network: bool,
}

impl RegistryTools {
    pub fn new(registry: Arc<Registry>, limits: Limits, command_network: bool) -> Self {
        RegistryTools {
            registry,
            limits,
            command_network,
        }
    }

    fn context(&self, ctx: &ExecContext) -> ToolContext {
        ToolContext {
            mission: ctx.mission,
            agent: ctx.agent,
            namespace: ctx.namespace.clone(),
            workspace: ctx.workspace.clone(),
            token: ctx.token.clone(),
            trust: ctx.trust.clone(),
            now: ctx.now,
            mission_active: ctx.mission_active,
            network: NetworkGrant {
                http_hosts: ctx.network.clone(),
                command_network: self.command_network,
            },
            limits: self.limits,
            heartbeat: ctx.heartbeat.clone(),
        }
    }
}

fn target(t: &aura_tools::Target) -> Target {
    match t {
        aura_tools::Target::Path { path } => Target::Path { path: path.clone() },
        aura_tools::Target::Command { command, network } => Target::Command {
            command: command.clone(),
            network: *network,
        },
        aura_tools::Target::Host { host, port, scheme } => Target::Host {
            host: host.clone(),
            port: *port,
            scheme: scheme.clone(),
        },
        aura_tools::Target::Agent { agent } => Target::Agent { agent: *agent },
        aura_tools::Target::Mission => Target::Mission,
        aura_tools::Target::McpTool {
            server,
            tool,
            trusted,
        } => Target::McpTool {
            server: server.clone(),
            tool: tool.clone(),
            trusted: *trusted,
        },
        aura_tools::Target::Image {
            model,
            width,
            height,
            path,
        } => Target::Image {
            model: model.clone(),
            width: *width,
            height: *height,
            path: path.clone(),
        },
        aura_tools::Target::Plugin {
            name,
            version,
            publisher,
            digest,
            workspace,
            hosts,
        } => Target::Plugin {
            name: name.clone(),
            version: version.clone(),
            publisher: publisher.clone(),
            digest: digest.clone(),
            workspace: workspace.clone(),
            hosts: hosts.clone(),
        },
        aura_tools::Target::Memory { shared } => Target::Memory {
            shared: shared.clone(),
        },
    }
}

fn call(c: &ToolCall) -> Call {
    Call {
        id: c.id.clone(),
        tool: c.name.clone(),
        arguments: c.arguments.clone(),
    }
}

/// The kernel's record of a tool's effect. A failure keeps its kind apart, by its
/// recorded name, for the engine's retry decision; the message the reasoner reads still
/// starts with the kind as people read it.
pub(crate) fn recorded(e: aura_tools::Effect) -> Effect {
    let (ok, output, error, error_kind) = match e.outcome {
        Outcome::Ok { value } => (true, value, None, None),
        Outcome::Failed { kind, message } => (
            false,
            Value::Null,
            Some(format!("{}: {message}", kind.as_str())),
            Some(kind.recorded_name()),
        ),
    };
    Effect {
        call_id: e.call_id,
        tool: e.tool,
        ok,
        output,
        error,
        error_kind,
        compensation: e.compensation.and_then(|c| serde_json::to_value(c).ok()),
        message: e.message.map(|m| Outbound {
            to: m.to,
            body: m.body,
        }),
        finish: e.finish,
    }
}

#[async_trait]
impl Tools for RegistryTools {
    fn specs(&self, names: &[String]) -> Vec<ToolSpec> {
        self.registry
            .descriptors()
            .into_iter()
            .filter(|d| names.contains(&d.name))
            .map(|d| ToolSpec {
                name: d.name.clone(),
                description: d.description.clone(),
                parameters: d.parameters.clone(),
            })
            .collect()
    }

    fn prepare(&self, c: &ToolCall) -> Result<Proposal, ToolError> {
        let prepared = self.registry.prepare(&call(c))?;
        Ok(Proposal {
            call: c.clone(),
            target: target(&prepared.target),
            destructive: prepared.destructive,
        })
    }

    async fn execute(&self, ctx: &ExecContext, proposal: &Proposal) -> Effect {
        let tool_ctx = self.context(ctx);
        // Prepared again by the registry from the call itself: what runs is exactly what
        // policy judged, or nothing.
        match self.registry.prepare(&call(&proposal.call)) {
            Ok(prepared) => recorded(self.registry.execute(&tool_ctx, &prepared).await),
            Err(e) => recorded(aura_tools::Effect::failed(
                &proposal.call.name,
                &proposal.call.id,
                e,
            )),
        }
    }

    async fn compensate(
        &self,
        ctx: &ExecContext,
        tool: &str,
        compensation: &Value,
    ) -> Result<(), ToolError> {
        let compensation: Compensation =
            serde_json::from_value(compensation.clone()).map_err(|e| {
                ToolError::new(
                    ErrorKind::InvalidArguments,
                    format!("the recorded compensation is unreadable: {e}"),
                )
            })?;
        self.registry
            .compensate(&self.context(ctx), tool, &compensation)
            .await
    }
}
