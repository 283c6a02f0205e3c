//! The plugin benchmark (issue 17): what a call of a WASM plugin costs against the same
//! logic as a built-in tool.
//!
//! Aura's figure is one call of the example plugin `plugin.wordcount` (plugins/examples,
//! built for wasm32-wasip2 and packed, signed and verified like an installed plugin) as the
//! registry runs it: arguments checked against the manifest's schema, then a fresh
//! wasmtime store with its fuel, memory and time limits, the workspace preopened read-only,
//! the arguments on stdin and the JSON answer read back from stdout. The peer is a native
//! tool doing the same work in Rust (the same schema check, the same file read from the
//! workspace, the same counting, the same JSON answer). Policy and the ledger are left out
//! on both sides: they cost the same for any tool (see `aura-bench missions` and `policy`).
//!
//! The two alternate call by call (A, B, A, B, ...) over `--rounds` rounds, so they see the
//! same noise; the table gives p50 and p99 of each and their ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aura_core::door::{Clock as _, SeededEntropy, SystemClock};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId};
use aura_identity::Namespace;
use aura_plugin::{Capabilities, Limits, PluginManifest, PluginTool, WorkspaceAccess};
use aura_tools::{
    Call, Capability, Effect, ErrorKind, Prepared, Registry, Target, Tool, ToolContext,
    ToolDescriptor, ToolError,
};
use serde_json::json;

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Rounds; each calls the plugin once and the native tool once
    #[arg(long, default_value_t = 2000)]
    rounds: usize,
    /// The wordcount component [default: built from plugins/examples with cargo]
    #[arg(long, value_name = "WASM")]
    component: Option<PathBuf>,
    /// Bytes of text in the counted file
    #[arg(long, default_value_t = 4096)]
    file_bytes: usize,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the example plugins for wasm32-wasip2 (as aura-plugin's tests do).
fn build_component() -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("wasm-plugins");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--manifest-path")
        .arg(repo().join("plugins/examples/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "building the example plugins failed (`rustup target add wasm32-wasip2`?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(target.join("wasm32-wasip2/release/wordcount.wasm"))
}

fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
        "additionalProperties": false
    })
}

/// The peer: wordcount's logic as a native tool.
#[derive(Debug)]
struct NativeWordcount {
    descriptor: ToolDescriptor,
}

impl NativeWordcount {
    fn new() -> Self {
        NativeWordcount {
            descriptor: ToolDescriptor {
                name: "bench.wordcount".into(),
                description: "counts lines, words and bytes of a workspace file".into(),
                parameters: schema(),
                destructive: false,
                compensable: false,
                needs: Capability::Workspace,
            },
        }
    }
}

fn escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[async_trait]
impl Tool for NativeWordcount {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        aura_plugin::schema::check(&self.descriptor.parameters, &call.arguments)
            .map_err(|e| ToolError::new(ErrorKind::InvalidArguments, e.to_string()))?;
        let path = call.arguments["path"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // The plugin's own check: a path relative to the workspace, never leaving it.
        if path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(ToolError::new(
                ErrorKind::InvalidArguments,
                "`path` must be relative to the workspace",
            ));
        }
        Ok(Prepared {
            call: call.clone(),
            target: Target::Path { path },
            destructive: false,
        })
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let call = &prepared.call;
        let Target::Path { path } = &prepared.target else {
            return Effect::failed(
                &call.tool,
                &call.id,
                ToolError::new(ErrorKind::Internal, "not a path"),
            );
        };
        let text = match tokio::fs::read(ctx.workspace.join(path)).await {
            Ok(t) => t,
            Err(e) => {
                return Effect::failed(
                    &call.tool,
                    &call.id,
                    ToolError::new(ErrorKind::Io, e.to_string()),
                );
            }
        };
        let s = String::from_utf8_lossy(&text);
        // The same answer the plugin writes, written and parsed the same way.
        let answer = format!(
            "{{\"path\":{},\"lines\":{},\"words\":{},\"bytes\":{}}}",
            escape(path),
            s.lines().count(),
            s.split_whitespace().count(),
            text.len()
        );
        match serde_json::from_str(&answer) {
            Ok(value) => Effect::ok(&call.tool, &call.id, value),
            Err(e) => Effect::failed(
                &call.tool,
                &call.id,
                ToolError::new(ErrorKind::Internal, e.to_string()),
            ),
        }
    }
}

fn summary(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

fn write_text(ws: &Path, bytes: usize) -> anyhow::Result<()> {
    let words = [
        "governed",
        "sandboxed",
        "signed",
        "replayable",
        "agents",
        "run",
    ];
    let mut text = String::with_capacity(bytes + 16);
    let mut i = 0usize;
    while text.len() < bytes {
        text.push_str(words[i % words.len()]);
        text.push(if i % 9 == 8 { '\n' } else { ' ' });
        i += 1;
    }
    std::fs::write(ws.join("notes.txt"), text)?;
    Ok(())
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let wasm_path = match &args.component {
        Some(p) => p.clone(),
        None => build_component()?,
    };
    let wasm = std::fs::read(&wasm_path)?;
    let dir = tempfile::tempdir()?;
    let ws = dir.path().join("workspace");
    std::fs::create_dir(&ws)?;
    write_text(&ws, args.file_bytes)?;

    let publisher = Signer::ephemeral("publisher", &SeededEntropy::new(7))?;
    let manifest = PluginManifest {
        name: "wordcount".into(),
        version: "1.0.0".into(),
        description: "counts lines, words and bytes of a workspace file".into(),
        publisher: publisher.public_key(),
        component_sha256: Hash::ZERO,
        component_size: 1,
        capabilities: Capabilities {
            workspace: WorkspaceAccess::Read,
            hosts: Vec::new(),
        },
        limits: Limits::default(),
        input_schema: schema(),
    };
    let pkg_dir = dir.path().join("package");
    aura_plugin::package::pack(&wasm, manifest, &publisher, &pkg_dir)?;
    let package = aura_plugin::package::open(&pkg_dir, &[publisher.public_key()])?;
    let runtime = aura_plugin::Runtime::new()?;
    let mut registry = Registry::new();
    // Compiling the component is paid once, when the node starts, not per call.
    let compiling = Instant::now();
    let tool = PluginTool::new(runtime, &package)?;
    let compiled_in = compiling.elapsed();
    registry.register(Arc::new(tool))?;
    registry.register(Arc::new(NativeWordcount::new()))?;

    let ctx = ToolContext {
        mission: MissionId::from_bytes([2; 16]),
        agent: AgentId::from_bytes([1; 16]),
        namespace: Namespace::new("default")?,
        workspace: ws.clone(),
        token: None,
        trust: aura_identity::TrustSet::new([publisher.public_key()]),
        now: SystemClock.now(),
        mission_active: true,
        network: Default::default(),
        limits: Default::default(),
        heartbeat: None,
    };
    // Both through the registry's prepare and the tool's execute (the token check, the
    // same for both, is left out).
    let once = async |tool: &str, n: usize| -> anyhow::Result<(Duration, serde_json::Value)> {
        let call = Call {
            id: format!("c{n}"),
            tool: tool.into(),
            arguments: json!({"path": "notes.txt"}),
        };
        let t = Instant::now();
        let prepared = registry.prepare(&call)?;
        let found = registry
            .get(tool)
            .ok_or_else(|| anyhow::anyhow!("no tool {tool}"))?;
        let effect = found.execute(&ctx, &prepared).await;
        let elapsed = t.elapsed();
        match effect.outcome {
            aura_tools::Outcome::Ok { value } => Ok((elapsed, value)),
            aura_tools::Outcome::Failed { message, .. } => anyhow::bail!("{tool}: {message}"),
        }
    };

    // The two must agree before either is timed.
    let (_, a) = once("plugin.wordcount", 0).await?;
    let (_, b) = once("bench.wordcount", 0).await?;
    anyhow::ensure!(a == b, "the plugin answered {a}, the native tool {b}");
    for n in 0..20 {
        once("plugin.wordcount", n).await?;
        once("bench.wordcount", n).await?;
    }
    let mut plugin = Vec::with_capacity(args.rounds);
    let mut native = Vec::with_capacity(args.rounds);
    for n in 0..args.rounds {
        plugin.push(once("plugin.wordcount", n).await?.0);
        native.push(once("bench.wordcount", n).await?.0);
    }
    let (p50, p99) = summary(plugin);
    let (n50, n99) = summary(native);
    println!(
        "| wordcount of a {}-byte file, {} rounds (ABAB) | p50 | p99 |",
        args.file_bytes, args.rounds
    );
    println!("|---|---|---|");
    println!(
        "| Aura: WASM plugin (schema check, fresh store, fuel, memory and time limits) | {} | {} |",
        fmt_duration(p50),
        fmt_duration(p99)
    );
    println!(
        "| peer: the same logic as a native tool | {} | {} |",
        fmt_duration(n50),
        fmt_duration(n99)
    );
    println!(
        "| ratio (plugin / native) | {:.2} | {:.2} |",
        p50.as_secs_f64() / n50.as_secs_f64().max(1e-9),
        p99.as_secs_f64() / n99.as_secs_f64().max(1e-9)
    );
    println!();
    println!(
        "Compiling the {}-byte component (once, when the node starts): {}.",
        wasm.len(),
        fmt_duration(compiled_in)
    );
    Ok(())
}
