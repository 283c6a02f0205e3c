//! A loaded plugin as an Aura tool, `plugin.<name>`: the registry prepares its calls
//! (arguments checked against the manifest's input schema, the target naming the plugin,
//! its publisher, digest and declared capabilities, which Cedar judges as `plugin.call` on
//! an `Aura::Plugin`), and runs permitted ones on the node's wasmtime [`Runtime`] with the
//! mission's workspace and network grant. Every failure of the plugin (fuel, memory, time,
//! a trap, a non-zero exit, an answer that is not JSON) comes back as a failed effect with
//! a one-line reason, so the mission records it and goes on.

use std::sync::Arc;

use async_trait::async_trait;
use aura_core::hash::Hash;
use aura_tools::{
    Call, Capability, Effect, ErrorKind, Prepared, Target, Tool, ToolContext, ToolDescriptor,
    ToolError,
};

use crate::manifest::WorkspaceAccess;
use crate::package::VerifiedPackage;
use crate::runtime::{Grant, Plugin, RunError, Runtime};
use crate::schema;

/// One installed plugin, ready to be registered as a tool.
pub struct PluginTool {
    runtime: Runtime,
    plugin: Arc<Plugin>,
    digest: Hash,
    descriptor: ToolDescriptor,
}

impl std::fmt::Debug for PluginTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginTool")
            .field("name", &self.descriptor.name)
            .field("digest", &self.digest.to_hex())
            .finish_non_exhaustive()
    }
}

impl PluginTool {
    /// Compiles a verified package on `runtime` and describes it as a tool.
    pub fn new(runtime: Runtime, package: &VerifiedPackage) -> Result<Self, RunError> {
        let plugin = runtime.load(package)?;
        let m = plugin.manifest();
        let descriptor = ToolDescriptor {
            name: m.tool_name(),
            description: m.description.clone(),
            parameters: m.input_schema.clone(),
            // A plugin that may write can overwrite what was there, and nothing records
            // the old bytes to put back.
            destructive: m.capabilities.workspace == WorkspaceAccess::Write,
            compensable: false,
            needs: Capability::Plugin,
        };
        Ok(PluginTool {
            runtime,
            plugin: Arc::new(plugin),
            digest: package.digest,
            descriptor,
        })
    }

    /// The signed manifest's digest: what the ledger and policy name the plugin by.
    pub fn digest(&self) -> Hash {
        self.digest
    }

    fn target(&self) -> Target {
        let m = self.plugin.manifest();
        Target::Plugin {
            name: m.name.clone(),
            version: m.version.clone(),
            publisher: m.publisher.to_hex(),
            digest: self.digest.to_hex(),
            workspace: m.capabilities.workspace.as_str().to_owned(),
            hosts: m.capabilities.hosts.clone(),
        }
    }

    /// What the mission grants the call: its workspace (the runtime gives the plugin the
    /// lesser of this and what its manifest declares), and the network only if the
    /// mission's declaration lists every host the plugin declares.
    fn grant(&self, ctx: &ToolContext) -> Grant {
        let caps = &self.plugin.manifest().capabilities;
        let workspace = (caps.workspace != WorkspaceAccess::None)
            .then(|| (ctx.workspace.clone(), WorkspaceAccess::Write));
        let network = !caps.hosts.is_empty()
            && caps.hosts.iter().all(|h| {
                h.rsplit_once(':').is_some_and(|(host, _)| {
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    ctx.network
                        .allows_host(&host.trim_end_matches('.').to_ascii_lowercase())
                })
            });
        Grant { workspace, network }
    }
}

/// The kind a runtime failure is recorded as. Limits and the plugin's own failures are
/// not retried: a plugin is a deterministic function of its input and workspace, so the
/// same call would fail the same way. A timeout is, like any tool's.
fn kind_of(e: &RunError) -> ErrorKind {
    match e {
        RunError::OutOfFuel(_) | RunError::Memory(_) => ErrorKind::TooLarge,
        RunError::Timeout(_) => ErrorKind::Timeout,
        RunError::Load(_)
        | RunError::Setup(_)
        | RunError::Exit { .. }
        | RunError::Trap { .. }
        | RunError::Answer(_) => ErrorKind::Unavailable,
    }
}

#[async_trait]
impl Tool for PluginTool {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let name = &self.descriptor.name;
        if !call.arguments.is_object() {
            return Err(ToolError::new(
                ErrorKind::InvalidArguments,
                format!("{name}: the arguments must be a JSON object"),
            ));
        }
        schema::check(&self.plugin.manifest().input_schema, &call.arguments).map_err(|e| {
            ToolError::new(
                ErrorKind::InvalidArguments,
                format!("{name}: the arguments do not fit the plugin's input schema {e}"),
            )
        })?;
        Ok(Prepared {
            call: call.clone(),
            target: self.target(),
            destructive: self.descriptor.destructive,
        })
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let call = &prepared.call;
        let name = &self.descriptor.name;
        let grant = self.grant(ctx);
        match self
            .runtime
            .call(&self.plugin, &call.arguments, &grant)
            .await
        {
            Ok(outcome) => Effect::ok(name, &call.id, outcome.answer),
            Err(e) => Effect::failed(
                name,
                &call.id,
                ToolError::new(kind_of(&e), format!("{name}: {e}")),
            ),
        }
    }
}
