//! The node's composition: the engine's services (policy, tools, reasoners) built from
//! `aura.toml`, the policy set in force and the parts only the binary can provide (the
//! cell runner, the in-process model). `aura serve` and the node's tests build a node the
//! same way, through [`build`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aura_engine::Services;
use aura_engine::adapters::policy::CedarPolicy;
use aura_engine::adapters::reasoner::{Configured, ProviderReasoner};
use aura_engine::adapters::tools::RegistryTools;
use aura_policy::PolicySet;
use aura_tools::{BuiltinOptions, CommandRunner, HttpOptions, Registry};

use crate::config::Config;

/// What only the binary can provide.
#[derive(Default)]
pub struct Parts {
    /// Runs `cmd.run` in a cell; without one `cmd.run` refuses every call.
    pub command_runner: Option<Arc<dyn CommandRunner>>,
    /// Opens `provider = "local"` reasoners (models run in-process, which the binary
    /// links in); without it they are refused.
    pub local: Option<Arc<dyn aura_reasoner::LocalModels>>,
    /// Reasoners added by name besides the configured ones (tests, embedders).
    pub extra_reasoners: Vec<(String, Arc<dyn aura_reasoner::Reasoner>)>,
    /// Tools besides the built-in ones: the registered MCP servers' tools.
    pub extra_tools: Vec<Arc<dyn aura_tools::Tool>>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("command_runner", &self.command_runner.is_some())
            .field("local", &self.local.is_some())
            .field("extra_reasoners", &self.extra_reasoners.len())
            .field("extra_tools", &self.extra_tools.len())
            .finish()
    }
}

/// A configuration the node cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ServicesError {
    pub message: String,
    pub hint: String,
}

fn refuse(message: impl Into<String>, hint: impl Into<String>) -> ServicesError {
    ServicesError {
        message: message.into(),
        hint: hint.into(),
    }
}

/// What was built, for the node's start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub policies: usize,
    pub tools: Vec<String>,
    pub reasoners: Vec<String>,
    /// The default reasoner, if any.
    pub default_reasoner: Option<String>,
    pub cells: bool,
}

/// Builds the engine's services. A relative `path` in a reasoner table (a scripted
/// reasoner's script) is read against `home`; a local model is named by its package.
pub fn build(
    home: &Path,
    config: &Config,
    policies: PolicySet,
    parts: Parts,
) -> Result<(Services, Summary), ServicesError> {
    let policy_count = policies.len();
    let policy = CedarPolicy::new(Arc::new(policies));

    let cells = parts.command_runner.is_some();
    let mut registry = Registry::builtin(BuiltinOptions {
        command_runner: parts.command_runner,
        http: HttpOptions {
            enabled: config.tools.http,
            ..HttpOptions::default()
        },
    });
    for tool in parts.extra_tools {
        registry
            .register(tool)
            .map_err(|e| refuse(e.to_string(), "give each MCP server a name of its own"))?;
    }
    let tool_names = registry
        .descriptors()
        .iter()
        .map(|d| d.name.clone())
        .collect();
    let tools = RegistryTools::new(
        Arc::new(registry),
        aura_tools::Limits::default(),
        config.tools.command_network,
    );

    let mut reasoners = Configured::new();
    let mut names = Vec::new();
    for (name, table) in &config.reasoners {
        let reasoner = build_reasoner(home, name, table, parts.local.clone())?;
        let info = reasoner.describe();
        let description = format!("{} {}", info.provider, info.model);
        reasoners.add(name, Arc::new(ProviderReasoner::new(reasoner)), description);
        names.push(name.clone());
    }
    for (name, reasoner) in parts.extra_reasoners {
        let info = reasoner.describe();
        let description = format!("{} {}", info.provider, info.model);
        reasoners.add(
            &name,
            Arc::new(ProviderReasoner::new(reasoner)),
            description,
        );
        names.push(name);
    }
    // The default: the one named, else the only one there is.
    let default = match &config.missions.default_reasoner {
        Some(name) => Some(name.clone()),
        None if names.len() == 1 => names.first().cloned(),
        None => None,
    };
    if let Some(name) = &default
        && !reasoners.set_default(name)
    {
        return Err(refuse(
            format!("the default reasoner `{name}` is not configured"),
            format!("add a [reasoners.{name}] table to aura.toml, or name another default"),
        ));
    }
    let summary = Summary {
        policies: policy_count,
        tools: tool_names,
        reasoners: names,
        default_reasoner: default,
        cells,
    };
    Ok((
        Services {
            policy: Arc::new(policy),
            tools: Arc::new(tools),
            reasoners: Arc::new(reasoners),
        },
        summary,
    ))
}

fn build_reasoner(
    home: &Path,
    name: &str,
    table: &toml::Table,
    local: Option<Arc<dyn aura_reasoner::LocalModels>>,
) -> Result<Arc<dyn aura_reasoner::Reasoner>, ServicesError> {
    let hint = "see docs/reasoners.md for each provider's settings";
    let mut table = table.clone();
    // A local model is named by its installed package, not by a path: nothing to resolve.
    resolve(home, &mut table, "path");
    let config: aura_reasoner::Config =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                refuse(
                    format!(
                        "reasoner `{name}` in aura.toml: {}",
                        e.message().trim().replace('\n', " ")
                    ),
                    hint,
                )
            })?;
    let mut context = aura_reasoner::Context::system();
    if let Some(local) = local {
        context = context.with_local(local);
    }
    aura_reasoner::build(&config, &context)
        .map_err(|e| refuse(format!("reasoner `{name}`: {e}"), hint))
}

/// Makes a relative path setting absolute against the data directory.
fn resolve(home: &Path, table: &mut toml::Table, key: &str) {
    if let Some(toml::Value::String(p)) = table.get(key) {
        let path = PathBuf::from(p);
        if path.is_relative() {
            let full = home.join(path).display().to_string();
            table.insert(key.to_owned(), toml::Value::String(full));
        }
    }
}
