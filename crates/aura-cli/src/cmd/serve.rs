//! `aura serve`: run this node: its engine (agents and missions) behind the HTTP API, and,
//! when the cell runtime runs (root) and `aura pki init` has made `<home>/pki`, the gRPC
//! cell API (Aurae v0 and Aura's own) and the model inference service on
//! `<home>/aurae.sock` with mTLS.

use std::net::SocketAddr;
use std::sync::Arc;

use aura_core::door::{OsEntropy, SystemClock};
use aura_identity::TrustSet;
use aura_store::Store;
use serde::Serialize;

use aura_cell::tools::CellRunner;
use aura_cell::{HostPaths, Options as CellOptions, Runtime, WorkspaceOptions, Workspaces};

use crate::hinted;
use crate::home::Home;
use crate::output::Output;
use aura_host::{DEFAULT_MODEL, Metering, ModelHost, is_installed};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Listen on this address [default: from aura.toml, else 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Keep the ledger in this PostgreSQL database, shared with the cluster [default:
    /// `[store] url` in aura.toml, else the SQLite file in the data directory]
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

#[derive(Serialize)]
struct Ready {
    listening: String,
    node_id: String,
    public_key: String,
    auth: &'static str,
    policies: usize,
    tools: Vec<String>,
    reasoners: Vec<String>,
    default_reasoner: Option<String>,
    cells: bool,
    /// The gRPC cell API's Unix socket, when it is served.
    grpc_socket: Option<String>,
    grpc_tcp: Option<String>,
    /// The espeak-ng behind `/v1/audio/speech`, when the node speaks.
    speech: Option<String>,
}

/// What only the binary links in: the cell runner and the in-process models. Cells need
/// root; without them the node still runs, with `cmd.run` refusing every call. Returns
/// why cells are off, if they are, to say once the node is up. The node's home is
/// protected: no cell ever mounts it, but for its workspaces root.
async fn parts(
    home: &Home,
    models: &Arc<ModelHost>,
    workspaces: &std::path::Path,
) -> (aura_node::services::Parts, Option<Runtime>, Option<String>) {
    let mut parts = aura_node::services::Parts {
        local: Some(models.reasoners()),
        // Missions make images on the same host as the Images API (`image.generate`).
        extra_tools: vec![aura_node::images_tool::tool(models.clone())],
        ..Default::default()
    };
    let mut options = CellOptions::new(home.dir().join("cells"));
    options.protected = vec![home.dir().to_owned()];
    options.workspaces_root = Some(workspaces.to_owned());
    match Runtime::start(options).await {
        Ok(cells) => {
            parts.command_runner = Some(Arc::new(CellRunner::new(cells.clone())));
            (parts, Some(cells), None)
        }
        Err(e) => (
            parts,
            None,
            Some(format!(
                "note: cmd.run is off: cells cannot start here: {e}"
            )),
        ),
    }
}

/// What cells may be given of the host: the node's workspaces (owned by the cells' root,
/// each a file system of the workspace quota's size) and the allowlist of host binds,
/// which may neither hold nor lie inside the node's home.
fn cell_access(
    home: &Home,
    config: &aura_node::Config,
    workspaces: &std::path::Path,
    cells: Option<&Runtime>,
) -> anyhow::Result<(aura_cell::CellAccess, Arc<Workspaces>)> {
    let config_path = aura_node::Config::path(home.dir());
    let quota = config.cells.workspace_quota().map_err(|e| {
        hinted(
            format!("{}: {e}", config_path.display()),
            "see docs/cells.md",
        )
    })?;
    // Without cells nothing but the node writes in a workspace (and cannot run as a
    // cell's root); quotas and owners are for what cells write.
    let owner = cells.map(|rt| (rt.options().id_base, rt.options().id_base));
    let workspaces = Arc::new(
        Workspaces::new(WorkspaceOptions {
            root: workspaces.to_owned(),
            owner,
            quota: quota.filter(|_| cells.is_some()),
        })
        .map_err(|e| match e.hint() {
            Some(h) => hinted(e.to_string(), h),
            None => anyhow::Error::new(e),
        })?,
    );
    let host_paths = HostPaths::new(&config.cells.host_binds).map_err(|e| {
        hinted(
            format!("[cells] host_binds in {}: {e}", config_path.display()),
            "list existing absolute directories, outside the node's home",
        )
    })?;
    let home_dir = std::fs::canonicalize(home.dir()).unwrap_or_else(|_| home.dir().to_owned());
    if let Some(p) = host_paths
        .allowed()
        .iter()
        .find(|p| p.starts_with(&home_dir) || home_dir.starts_with(p))
    {
        return Err(hinted(
            format!(
                "[cells] host_binds in {} allows {}, which holds or lies in the node's home {}",
                config_path.display(),
                p.display(),
                home_dir.display()
            ),
            "the node's keys and database are never mountable; list directories outside it",
        ));
    }
    Ok((
        aura_cell::CellAccess {
            workspaces: Some(workspaces.clone()),
            host_paths,
        },
        workspaces,
    ))
}

/// Starts the MCP servers of `[[mcp.servers]]` (stdio ones each in a cell of its own,
/// streamable-HTTP ones by URL when the allowlist holds them), and returns
/// their tools (`mcp.<server>.<tool>`) with what to record of each registration. A server
/// that does not start or list its tools stops the node from starting: the operator
/// asked for it, and a node that silently ran without it would surprise them.
async fn mcp_servers(
    config: &aura_node::Config,
    cells: Option<&Runtime>,
) -> anyhow::Result<(Vec<Arc<dyn aura_mcp::Tool>>, Vec<aura_mcp::Registration>)> {
    let mut tools = Vec::new();
    let mut registered = Vec::new();
    for s in &config.mcp.servers {
        let hint = "check its [[mcp.servers]] table in aura.toml (docs/mcp.md)";
        let transport = match (&s.url, s.command.is_empty()) {
            (Some(url), true) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(hinted(
                        format!(
                            "MCP server `{}`: url `{url}` is not http:// or https://",
                            s.name
                        ),
                        hint,
                    ));
                }
                if !aura_mcp::http::allowed(url, &config.mcp.http_allowlist) {
                    return Err(hinted(
                        format!(
                            "MCP server `{}`: `{url}` is not on [mcp] http_allowlist",
                            s.name
                        ),
                        "add the URL (or a prefix of it ending in /) to http_allowlist in aura.toml",
                    ));
                }
                let bearer = match &s.bearer_env {
                    None => None,
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        hinted(
                            format!("MCP server `{}`: the environment has no {var}", s.name),
                            "export the server's token in that variable before `aura serve`",
                        )
                    })?),
                };
                aura_mcp::Transport::Http(aura_mcp::http::Endpoint {
                    url: url.clone(),
                    bearer,
                    connect_timeout: std::time::Duration::from_secs(10),
                })
            }
            (None, false) => {
                let Some(runtime) = cells else {
                    return Err(hinted(
                        "aura.toml registers stdio MCP servers, but cells cannot start here",
                        "stdio MCP servers run only inside cells: run `aura serve` as root, or give the server a url instead",
                    ));
                };
                aura_mcp::Transport::Cell {
                    runtime: runtime.clone(),
                    spec: aura_mcp::cell::StdioSpec {
                        argv: s.command.clone(),
                        env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        binds: s.binds.clone(),
                        workspace: None,
                        network: s.network,
                        memory_max: Some(1 << 30),
                        pids_max: Some(256),
                    },
                }
            }
            _ => {
                return Err(hinted(
                    format!("MCP server `{}` needs either a command or a url", s.name),
                    hint,
                ));
            }
        };
        let options = aura_mcp::ServerOptions {
            name: s.name.clone(),
            trusted: s.trusted,
            call_timeout: std::time::Duration::from_secs(s.call_timeout_secs.max(1)),
            client: aura_mcp::Options::default(),
            transport,
        };
        let (_server, offered, registration) =
            aura_mcp::Server::register(options).await.map_err(|e| {
                hinted(
                    format!("{:#}", anyhow::Error::new(e)),
                    "check its [[mcp.servers]] table in aura.toml (docs/mcp.md)",
                )
            })?;
        tools.extend(offered);
        registered.push(registration);
    }
    Ok((tools, registered))
}

/// Records each MCP server's registration (what it runs, whether it is trusted, the
/// tools it offers) in the node's own stream, before any mission can call them.
async fn record_mcp(
    store: &Arc<dyn Store>,
    registered: &[aura_mcp::Registration],
) -> anyhow::Result<()> {
    if registered.is_empty() {
        return Ok(());
    }
    let kind = aura_ledger::Kind::new("mcp.registered")
        .map_err(|e| anyhow::anyhow!("cannot record an MCP server: {e}"))?;
    let now = aura_core::door::Clock::now(&SystemClock);
    let mut batch = Vec::new();
    for r in registered {
        batch.push(aura_store::NewEntry {
            agent: aura_core::AgentId::NODE,
            seq: aura_store::Seq::Next,
            kind: kind.clone(),
            recorded_at: now,
            body: aura_core::jcs::to_vec(r)
                .map_err(|e| anyhow::anyhow!("cannot record an MCP server: {e}"))?,
        });
    }
    store
        .append(batch)
        .await
        .map_err(|e| anyhow::anyhow!("cannot record the MCP servers: {e}"))?;
    Ok(())
}

/// The node's memory (docs/memory.md), unless `[memory] enabled = false`: in the
/// cluster's PostgreSQL database when the node has one, else in `<home>/memory.db`, its
/// index rebuilt from the records (on a blocking thread: it reads and indexes every one).
async fn memory(
    home: &Home,
    config: &aura_node::Config,
    store_url: Option<&str>,
    models: &Arc<ModelHost>,
) -> anyhow::Result<Option<Arc<aura_node::memory::MemoryService>>> {
    if !config.memory.enabled {
        return Ok(None);
    }
    let url = store_url.map(str::to_owned);
    let path = home.dir().join("memory.db");
    let opened = tokio::task::spawn_blocking(move || {
        let persist: Arc<dyn aura_memory::Persist> = match url {
            Some(url) => Arc::new(aura_memory::postgres::PgMemory::open(&url)?),
            None => Arc::new(aura_memory::SqliteMemory::open(&path)?),
        };
        aura_memory::Memory::open(
            persist,
            aura_node::memory::DIMENSION,
            aura_memory::Options::default(),
        )
    })
    .await
    .map_err(|e| anyhow::anyhow!("the memory's task failed: {e}"))?
    .map_err(|e| {
        hinted(
            format!("cannot open the node's memory: {e}"),
            "check the database it lives in, or set `[memory] enabled = false` in aura.toml",
        )
    })?;
    Ok(Some(Arc::new(aura_node::memory::MemoryService::new(
        Arc::new(opened),
        models.clone(),
        config.memory.model.clone(),
    ))))
}

/// What the node records of each plugin it serves, in its own stream, before any mission
/// can call it.
#[derive(Serialize)]
struct PluginLoaded {
    name: String,
    version: String,
    tool: String,
    digest: String,
    publisher: String,
    workspace: &'static str,
    hosts: Vec<String>,
}

/// The installed plugins a node serves: the tools, what to record of each, and a note for
/// each plugin it refused.
#[derive(Default)]
struct Plugins {
    tools: Vec<Arc<dyn aura_mcp::Tool>>,
    loaded: Vec<PluginLoaded>,
    notes: Vec<String>,
}

/// The installed WASM plugins (`aura plugin install`) as tools `plugin.<name>`, each
/// package verified again against the publishers trusted now; a plugin that no longer
/// verifies (its publisher untrusted, its files changed) is not served, with a note.
fn plugins(installed: &aura_plugin::installed::Installed) -> anyhow::Result<Plugins> {
    let opened = installed.open_all().map_err(|e| {
        hinted(
            format!("cannot read the installed plugins: {e}"),
            "`aura plugin list` shows what is wrong; fix or remove it",
        )
    })?;
    let mut found = Plugins::default();
    if opened.is_empty() {
        return Ok(found);
    }
    let runtime = aura_plugin::Runtime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the WASM plugin runtime: {e}"))?;
    for (name, package) in opened {
        let package = match package {
            Ok(p) => p,
            Err(e) => {
                found
                    .notes
                    .push(format!("note: plugin `{name}` is not served: {e}"));
                continue;
            }
        };
        match aura_plugin::PluginTool::new(runtime.clone(), &package) {
            Ok(tool) => {
                let m = &package.manifest.statement;
                found.loaded.push(PluginLoaded {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    tool: m.tool_name(),
                    digest: package.digest.to_hex(),
                    publisher: m.publisher.to_hex(),
                    workspace: m.capabilities.workspace.as_str(),
                    hosts: m.capabilities.hosts.clone(),
                });
                found.tools.push(Arc::new(tool));
            }
            Err(e) => found
                .notes
                .push(format!("note: plugin `{name}` is not served: {e}")),
        }
    }
    Ok(found)
}

/// Records each plugin the node serves (`plugin.loaded`) in the node's own stream.
async fn record_plugins(store: &Arc<dyn Store>, loaded: &[PluginLoaded]) -> anyhow::Result<()> {
    if loaded.is_empty() {
        return Ok(());
    }
    let kind = aura_ledger::Kind::new("plugin.loaded")
        .map_err(|e| anyhow::anyhow!("cannot record a plugin: {e}"))?;
    let now = aura_core::door::Clock::now(&SystemClock);
    let mut batch = Vec::new();
    for p in loaded {
        batch.push(aura_store::NewEntry {
            agent: aura_core::AgentId::NODE,
            seq: aura_store::Seq::Next,
            kind: kind.clone(),
            recorded_at: now,
            body: aura_core::jcs::to_vec(p)
                .map_err(|e| anyhow::anyhow!("cannot record a plugin: {e}"))?,
        });
    }
    store
        .append(batch)
        .await
        .map_err(|e| anyhow::anyhow!("cannot record the plugins: {e}"))?;
    Ok(())
}

/// espeak-ng for `/v1/audio/speech`, unless `[speech] enabled = false`; a note when the
/// node will not speak.
async fn speech(config: &aura_node::Config) -> (Option<aura_node::speech::Speech>, Option<String>) {
    if !config.speech.enabled {
        return (None, None);
    }
    match aura_node::speech::Speech::start(config.speech.options()).await {
        Ok(speech) => (Some(speech), None),
        Err(e) => (
            None,
            Some(format!(
                "note: /v1/audio/speech is off: {e} (scripts/setup-speech.sh installs espeak-ng)"
            )),
        ),
    }
}

/// With no reasoner in `aura.toml`, the node runs the default local model if it is
/// installed, so a fresh node that pulled it can run missions at once.
fn with_default_reasoner(mut config: aura_node::Config, home: &Home) -> aura_node::Config {
    if config.reasoners.is_empty() && is_installed(home.dir(), DEFAULT_MODEL) {
        let mut table = toml::Table::new();
        table.insert("provider".into(), "local".into());
        table.insert("model".into(), DEFAULT_MODEL.into());
        // A small model left to run on repeats itself; a turn is a call, not an essay.
        table.insert("max_tokens".into(), toml::Value::Integer(256));
        config.reasoners.insert(DEFAULT_MODEL.to_owned(), table);
    }
    config
}

pub(crate) async fn run(home: &Home, out: &Output, args: Args) -> anyhow::Result<()> {
    home.require_init()?;
    let config_path = aura_node::Config::path(home.dir());
    let config = aura_node::Config::load(&config_path)?;
    // Logs and traces first, so that everything the node does from here is seen.
    let telemetry = crate::telemetry::init(&config.telemetry)?;
    // On a cluster's database, the engine runs only the agents of the shards whose
    // leases this node holds (docs/cluster.md); the lease manager starts once the API
    // listens, since the URL it advertises is the API's.
    let mut cluster: Option<(
        aura_store::postgres::PgStore,
        Arc<aura_node::cluster::Leases>,
    )> = None;
    let store_url = home.store_url(args.store.clone())?;
    let (store, signer): (Arc<dyn Store>, _) = match store_url.clone() {
        Some(url) => {
            let (store, signer) = home.open_cluster_store(&url).await?;
            cluster = Some((store.clone(), Arc::default()));
            (Arc::new(store), signer)
        }
        None => {
            let (store, signer) = home.open_store_and_signer()?;
            (Arc::new(store), signer)
        }
    };
    let node_key = signer.public_key();
    // Forwarded requests are signed with the node's key (docs/cluster.md, node tokens).
    let routing_signer = signer.clone();
    let config = with_default_reasoner(config, home);
    let listen = args.listen.unwrap_or(config.http.listen);
    let mut issuers = Vec::new();
    for hex in &config.trust.issuers {
        issuers.push(hex.parse().map_err(|_| {
            hinted(
                format!("`{hex}` in {} is not a public key", config_path.display()),
                "list trusted issuers as 64 hex digits",
            )
        })?);
    }
    issuers.push(node_key);
    // In a cluster every enrolled node issues credentials (to the agents it creates, to
    // operators), and any node may come to run those agents or check those approvals.
    if let Some((store, _)) = &cluster {
        let enrolled = store
            .enrolled()
            .await
            .map_err(|e| anyhow::Error::new(e).context("cannot read the cluster's nodes"))?;
        issuers.extend(enrolled.into_iter().map(|e| e.node_key));
    }
    let policies = crate::cmd::policy::load(home, &[])?;
    let aliases = Arc::new(
        aura_node::canary::Aliases::new(&config.aliases).map_err(|e| {
            hinted(
                e,
                "fix the alias in aura.toml; docs/openai.md explains `[aliases]`",
            )
        })?,
    );
    let metering = Metering::open(store.clone(), signer.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    // One host serves the missions' local reasoners and the OpenAI-compatible API, so a
    // model is loaded once.
    let models = Arc::new(
        ModelHost::new(home.dir(), metering, None)
            .with_prompt_cache(config.models.prompt_cache_bytes()),
    );
    let workspaces = match &config.missions.workspaces {
        Some(dir) if dir.is_relative() => home.dir().join(dir),
        Some(dir) => dir.clone(),
        None => home.dir().join("workspaces"),
    };
    // In a cluster, the node's region (its enrollment's) bounds where missions run and
    // which requests it serves (docs/cluster.md).
    let region = match &cluster {
        Some((store, _)) => Some(region_of(store).await),
        None => None,
    };
    // In a cluster, requests and reasoner turns go to the node that serves them, over the
    // node-to-node channel (docs/cluster.md).
    let routing = match &cluster {
        Some((store, leases)) => Some(
            aura_node::cluster::Routing::new(
                leases.clone(),
                store.clone(),
                routing_signer,
                aura_node::cluster::RouteOptions {
                    redirect: config.store.redirect,
                    region: region.clone().unwrap_or_default(),
                    lease: lease(&config.store),
                },
            )
            .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let (mut parts, cells, cells_note) = parts(home, &models, &workspaces).await;
    // A mission's local reasoner on a model another node holds runs its turns there.
    if let Some(routing) = &routing
        && let Some(local) = parts.local.take()
    {
        parts.local = Some(aura_node::remote_reasoner::ClusterModels::opener(
            local,
            models.clone(),
            routing.clone(),
        ));
    }
    // Missions remember through the same memory operators reach at `/v1/memory`.
    let memory = match memory(home, &config, store_url.as_deref(), &models).await {
        Ok(memory) => memory,
        Err(e) => {
            if let Some(cells) = cells {
                cells.shutdown().await;
            }
            return Err(e);
        }
    };
    if let Some(memory) = &memory {
        parts
            .extra_tools
            .extend(aura_node::memory::tools(memory.clone()));
    }
    // The installed WASM plugins, verified again now, as tools `plugin.<name>`; compiling
    // their components is CPU work, so it runs off the async threads.
    let installed = crate::cmd::plugin::plugin_dir(home);
    let plugged = tokio::task::spawn_blocking(move || plugins(&installed))
        .await
        .map_err(|e| anyhow::anyhow!("the plugins' task failed: {e}"))
        .and_then(|found| found)
        .map(|found| {
            parts.extra_tools.extend(found.tools);
            (found.loaded, found.notes)
        });
    let (plugins_loaded, plugin_notes) = match plugged {
        Ok(p) => p,
        Err(e) => {
            if let Some(cells) = cells {
                cells.shutdown().await;
            }
            return Err(e);
        }
    };
    let registered = match mcp_servers(&config, cells.as_ref()).await {
        Ok((tools, registered)) => {
            parts.extra_tools.extend(tools);
            registered
        }
        Err(e) => {
            if let Some(cells) = cells {
                cells.shutdown().await;
            }
            return Err(e);
        }
    };
    let built = aura_node::services::build(home.dir(), &config, policies, parts)
        .map_err(|e| hinted(e.message, e.hint))
        .and_then(|built| {
            Ok((
                built,
                cell_access(home, &config, &workspaces, cells.as_ref())?,
            ))
        });
    let ((services, built), (access, node_workspaces)) = match built {
        Ok(built) => built,
        Err(e) => {
            if let Some(cells) = cells {
                cells.shutdown().await;
            }
            return Err(e);
        }
    };
    record_mcp(&store, &registered).await?;
    record_plugins(&store, &plugins_loaded).await?;
    let engine = aura_engine::Handle::start(
        aura_engine::Options {
            keystore: Some(home.keystore().dir().to_owned()),
            workspaces,
            workspace_setup: Some(node_workspaces.clone()),
            ownership: cluster
                .as_ref()
                .map(|(_, leases)| leases.clone() as Arc<dyn aura_engine::Ownership>),
            // An enrollment without a region label is in no region: bounded missions
            // are refused there.
            region: region.filter(|r| !r.is_empty()),
            ..Default::default()
        },
        store,
        signer,
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        TrustSet::new(issuers),
        services,
    )
    .await?;
    if let Some(memory) = &memory {
        // Episodes are made of the engine's missions, so the engine comes first.
        memory.attach(engine.clone());
    }
    // A canary rolled back before (by this node or, in a cluster, another) stays so.
    match aliases.recall_from(engine.store().as_ref()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(canaries = n, "canaries rolled back before stay rolled back"),
        Err(e) => tracing::warn!(error = %e, "cannot read the canary rollbacks from the ledger"),
    }
    let (speech, speech_note) = speech(&config).await;
    let keys_file = aura_node::ApiKeys::path(home.dir());
    let open = aura_node::ApiKeys::load(&keys_file)?.is_empty();
    let server = aura_node::serve_in_cluster(
        aura_node::Options {
            listen,
            keys_file,
            allowed_hosts: allowed_hosts(&config),
            limits: config.limits,
            allowed_origins: config.http.allowed_origins.clone(),
            models: Some(models.clone()),
            cells: cells.clone(),
            cell_access: access.clone(),
            speech: speech.clone(),
            memory: memory.clone(),
            aliases: Some(aliases.clone()),
        },
        engine.clone(),
        routing,
    )
    .await
    .map_err(|e| match e.hint() {
        Some(h) => hinted(e.to_string(), h),
        None => e.into(),
    })?;
    let (grpc, grpc_note) = match &cells {
        Some(runtime) => match grpc(home, runtime, models.clone(), access).await {
            Ok(served) => served,
            Err(e) => {
                server.shutdown().await;
                engine.shutdown().await;
                runtime.shutdown().await;
                return Err(e);
            }
        },
        None => (None, None),
    };
    let membership = match cluster {
        Some((store, leases)) => Some(
            join_cluster(
                &config.store,
                &models,
                server.addr,
                store,
                engine.clone(),
                leases,
            )
            .await,
        ),
        None => None,
    };
    let ready = Ready {
        listening: server.addr.to_string(),
        node_id: node_key.node_id().to_string(),
        public_key: node_key.to_hex(),
        auth: if open {
            "none (loopback only)"
        } else {
            "api keys"
        },
        policies: built.policies,
        tools: built.tools,
        reasoners: built.reasoners,
        default_reasoner: built.default_reasoner,
        cells: built.cells,
        grpc_socket: grpc.as_ref().map(|g| g.socket().display().to_string()),
        grpc_tcp: grpc
            .as_ref()
            .and_then(|g| g.tcp_addr())
            .map(|a| a.to_string()),
        speech: speech.map(|s| format!("espeak-ng {}", s.version())),
    };
    for note in [cells_note, grpc_note, speech_note]
        .into_iter()
        .flatten()
        .chain(plugin_notes)
    {
        eprintln!("{note}");
    }
    out.line(&ready, || {
        let reasoner = match &ready.default_reasoner {
            Some(name) => format!("default reasoner `{name}`"),
            None if ready.reasoners.is_empty() => {
                "no reasoner configured: missions are refused (see docs/reasoners.md)".into()
            }
            None => format!("reasoners {} (no default)", ready.reasoners.join(", ")),
        };
        let grpc = match (&ready.grpc_socket, &ready.grpc_tcp) {
            (Some(socket), Some(tcp)) => {
                format!(", gRPC cells and inference on unix:{socket} and {tcp} (mTLS)")
            }
            (Some(socket), None) => format!(", gRPC cells and inference on unix:{socket} (mTLS)"),
            _ => String::new(),
        };
        format!(
            "aura node {} listening on http://{}{grpc} (auth: {}); {} policies, {} tools{}; {reasoner}; stop with Ctrl-C",
            ready.node_id,
            ready.listening,
            ready.auth,
            ready.policies,
            ready.tools.len(),
            if ready.cells { "" } else { " (cmd.run off: no cell runner)" },
        )
    })?;
    shutdown_signal().await;
    // Missions first: their reasoner turns in flight are dropped unrecorded (asked again
    // on the next start). Then every generation the APIs are running stops at its next
    // token, so that no request holds the servers, which then close what is left after a
    // short grace.
    engine.shutdown().await;
    // Then the shards go back, so that the other nodes take them at once.
    if let Some(membership) = membership {
        membership.shutdown().await;
    }
    models.shutdown();
    if let Some(grpc) = grpc {
        grpc.shutdown().await;
    }
    server.shutdown().await;
    if let Some(cells) = cells {
        cells.shutdown().await;
    }
    // Workspace file systems stay mounted, so that their files stay where operators
    // look for them; after a reboot the node mounts each again when it is next used.
    drop(node_workspaces);
    // The spans still queued for the collector are flushed.
    drop(telemetry);
    Ok(())
}

/// Starts the cluster's lease manager: the node advertises its API's URL (or `[store]
/// advertise`), its region (from its enrollment) and its models, and takes its share of
/// the shards before it says it is ready.
async fn join_cluster(
    config: &aura_node::config::StoreConfig,
    models: &Arc<ModelHost>,
    addr: SocketAddr,
    store: aura_store::postgres::PgStore,
    engine: aura_engine::Handle,
    leases: Arc<aura_node::cluster::Leases>,
) -> aura_node::cluster::Service {
    let region = region_of(&store).await;
    let options = aura_node::cluster::Options {
        lease: lease(config),
        url: config
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
        region,
        // Listed at every heartbeat, as `name@digest`.
        models: Vec::new(),
        host: Some(models.clone()),
    };
    aura_node::cluster::Service::start(options, store, engine, leases).await
}

/// The host names the node answers to: `[http] allowed_hosts`, and the host of `[store]
/// advertise`, since the cluster's other nodes forward requests to that URL.
fn allowed_hosts(config: &aura_node::Config) -> Vec<String> {
    let mut hosts = config.http.allowed_hosts.clone();
    if let Some(authority) = config
        .store
        .advertise
        .as_deref()
        .and_then(|url| url.split_once("://"))
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .filter(|a| !a.is_empty() && !a.contains('@'))
    {
        hosts.push(authority.to_owned());
    }
    hosts
}

/// This node's region, as its enrollment in the cluster's log says.
async fn region_of(store: &aura_store::postgres::PgStore) -> String {
    let me = store.signer_key();
    store
        .enrolled()
        .await
        .ok()
        .and_then(|all| all.into_iter().find(|e| e.node_key == me))
        .map(|e| e.region)
        .unwrap_or_default()
}

/// The cluster's lease, from `[store] lease_ms` (at least 300 ms).
fn lease(config: &aura_node::config::StoreConfig) -> std::time::Duration {
    config
        .lease_ms
        .map_or(aura_node::cluster::DEFAULT_LEASE, |ms| {
            std::time::Duration::from_millis(ms.max(300))
        })
}

/// The gRPC cell API (and model inference beside it), served when `aura pki init` has made the certificates; a note when
/// it is not. A PKI that is there but broken is an error: the operator asked for it.
async fn grpc(
    home: &Home,
    cells: &Runtime,
    models: Arc<ModelHost>,
    access: aura_cell::CellAccess,
) -> anyhow::Result<(Option<aura_grpc::Server>, Option<String>)> {
    let pki = crate::cmd::pki::pki(home);
    if !pki.exists() {
        return Ok((
            None,
            Some("note: the gRPC cell API is off: run `aura pki init` to serve it".into()),
        ));
    }
    let to_error = |e: aura_grpc::Error| match e.hint() {
        Some(h) => hinted(e.to_string(), h),
        None => anyhow::Error::new(e),
    };
    let options = aura_grpc::Options::from_pki(&pki, crate::cmd::pki::default_socket(home))
        .map_err(to_error)?
        .with_models(models)
        .with_cell_access(access);
    let server = aura_grpc::serve(cells.clone(), options)
        .await
        .map_err(to_error)?;
    Ok((Some(server), None))
}

/// Waits for Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
