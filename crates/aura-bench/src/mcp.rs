//! The MCP benchmark (issue 17): what a governed MCP tool call costs through Aura against
//! calling the same server directly with the official SDK. Needs root (the cell) and the
//! `mcp` SDK (`scripts/setup-python.sh mcp`).
//!
//! Aura's figure is one call end to end as a mission's call runs it: the registry prepares
//! it, Cedar decides (`aura_policy::decide` with the default policy set, as the engine
//! builds the request), the attempt is appended durably to a SQLite ledger, the tool asks
//! the server (the SDK's server from `aura-mcp/tests/fixtures/server.py`, a stdio server
//! in a hardened cell) over aura-mcp's client, and the effect is appended durably. The
//! execution token check is left out (a signature check, microseconds).
//!
//! The peer is the SDK's own client (`peers/mcp_sdk_peer.py`) calling `add` on the same
//! server script started on the host without a cell. Both run in blocks of `--block`
//! calls, alternating, so that they see the same noise.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aura_core::door::{Clock as _, SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId};
use aura_identity::{Level, Namespace};
use aura_ledger::Kind;
use aura_policy::{Context, Outcome, PolicySet, Principal, Request, Resource, decide};
use aura_store::{NewEntry, Seq, SqliteStore, Store};
use aura_tools::{Call, Target, ToolContext};
use serde_json::json;

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Timed calls on each side
    #[arg(long, default_value_t = 400)]
    calls: usize,
    /// Calls per block; the two sides alternate block by block
    #[arg(long, default_value_t = 20)]
    block: usize,
    /// The Python interpreter (with the SDK on PYTHONPATH from setup-python.sh)
    #[arg(long, default_value = "python3")]
    python: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sdk() -> anyhow::Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo().join("scripts/setup-python.sh"))
        .arg("mcp")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/setup-python.sh mcp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn python_paths(python: &str) -> anyhow::Result<(String, PathBuf)> {
    let out = Command::new(python)
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable)); print(sys.base_prefix)",
        ])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    let exe = lines.next().unwrap_or_default().to_owned();
    let prefix = PathBuf::from(lines.next().unwrap_or_default());
    Ok((exe, prefix))
}

fn summary(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let sdk = sdk()?;
    let (exe, prefix) = python_paths(&args.python)?;
    let fixtures = std::fs::canonicalize(repo().join("crates/aura-mcp/tests/fixtures"))?;
    let server_py = fixtures.join("server.py");

    let dir = tempfile::tempdir()?;
    let mut opts = aura_cell::Options::new(dir.path().join("cells"));
    opts.instance = Some(format!("bench-mcp-{}", std::process::id()));
    let rt = aura_cell::Runtime::start(opts).await?;
    let mut binds = vec![sdk.clone(), fixtures.clone()];
    if !prefix.starts_with("/usr") {
        binds.push(prefix);
    }
    let (_server, tools, _) = aura_mcp::Server::register(aura_mcp::ServerOptions {
        name: "bench".into(),
        trusted: true,
        call_timeout: Duration::from_secs(30),
        client: aura_mcp::Options::default(),
        transport: aura_mcp::Transport::Cell {
            runtime: rt.clone(),
            spec: aura_mcp::cell::StdioSpec {
                argv: vec![exe.clone(), server_py.display().to_string()],
                env: vec![("PYTHONPATH".into(), sdk.display().to_string())],
                binds,
                ..Default::default()
            },
        },
    })
    .await?;
    let mut registry = aura_tools::Registry::new();
    for t in tools {
        registry.register(t)?;
    }
    let signer = Arc::new(Signer::ephemeral("bench", &SeededEntropy::new(1))?);
    let store = SqliteStore::open(
        dir.path().join("ledger.db"),
        signer.clone(),
        Arc::new(SystemClock),
        Default::default(),
    )?;
    let policies = PolicySet::defaults();
    let agent = AgentId::from_bytes([1; 16]);
    let mission = MissionId::from_bytes([2; 16]);
    let namespace = Namespace::new("default")?;
    let ctx = ToolContext {
        mission,
        agent,
        namespace: namespace.clone(),
        workspace: dir.path().to_owned(),
        token: None,
        trust: aura_identity::TrustSet::new([signer.public_key()]),
        now: SystemClock.now(),
        mission_active: true,
        network: Default::default(),
        limits: Default::default(),
        heartbeat: None,
    };
    let kind = Kind::new("bench.mcp")?;
    let mut n = 0u64;
    let mut aura_once = async || -> anyhow::Result<Duration> {
        n += 1;
        let t = Instant::now();
        let call = Call {
            id: format!("c{n}"),
            tool: "mcp.bench.add".into(),
            arguments: json!({"a": n, "b": 1}),
        };
        let prepared = registry.prepare(&call)?;
        let Target::McpTool {
            server,
            tool,
            trusted,
        } = &prepared.target
        else {
            anyhow::bail!("unexpected target {:?}", prepared.target);
        };
        let request = Request {
            principal: Principal {
                agent,
                level: Level::L2,
                namespace: namespace.clone(),
            },
            action: call.tool.clone(),
            resource: Resource::McpTool {
                server: server.clone(),
                tool: tool.clone(),
                trusted: *trusted,
            },
            context: Context {
                mission: Some(mission),
                ..Context::default()
            },
        };
        let decision = decide(&policies, &request);
        anyhow::ensure!(decision.outcome == Outcome::Permit, "{decision:?}");
        let entry = |body: Vec<u8>| NewEntry {
            agent,
            seq: Seq::Next,
            kind: kind.clone(),
            recorded_at: SystemClock.now(),
            body,
        };
        store
            .append(vec![entry(serde_json::to_vec(&prepared)?)])
            .await?;
        let tool = registry
            .get(&call.tool)
            .ok_or_else(|| anyhow::anyhow!("no tool"))?;
        let effect = tool.execute(&ctx, &prepared).await;
        anyhow::ensure!(effect.is_ok(), "{effect:?}");
        store.append(vec![entry(effect.to_json())]).await?;
        Ok(t.elapsed())
    };

    let mut peer = Command::new(&args.python)
        .arg(repo().join("crates/aura-bench/peers/mcp_sdk_peer.py"))
        .arg(&exe)
        .arg(&server_py)
        .env("PYTHONPATH", &sdk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_peer = peer
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no peer stdin"))?;
    let mut from_peer = BufReader::new(
        peer.stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no peer stdout"))?,
    );
    let mut peer_block = |n: usize| -> anyhow::Result<Vec<Duration>> {
        writeln!(to_peer, "{n}")?;
        to_peer.flush()?;
        let mut line = String::new();
        from_peer.read_line(&mut line)?;
        let ns: Vec<u64> = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("the peer said {line:?}: {e}"))?;
        Ok(ns.into_iter().map(Duration::from_nanos).collect())
    };

    // Warm up both sides.
    for _ in 0..20 {
        aura_once().await?;
    }
    peer_block(20)?;
    let mut aura = Vec::with_capacity(args.calls);
    let mut sdk_direct = Vec::with_capacity(args.calls);
    while aura.len() < args.calls {
        let b = args.block.min(args.calls - aura.len()).max(1);
        for _ in 0..b {
            aura.push(aura_once().await?);
        }
        sdk_direct.extend(peer_block(b)?);
    }
    drop(to_peer);
    let _ = peer.wait();
    let (a50, a99) = summary(aura);
    let (p50, p99) = summary(sdk_direct);
    println!(
        "| MCP tool call (`add`), {} calls | p50 | p99 |",
        args.calls
    );
    println!("|---|---|---|");
    println!(
        "| Aura: policy + durable ledger (2 appends) + server in a cell | {} | {} |",
        fmt_duration(a50),
        fmt_duration(a99)
    );
    println!(
        "| peer: the `mcp` SDK's client, same server on the host | {} | {} |",
        fmt_duration(p50),
        fmt_duration(p99)
    );
    println!(
        "| ratio (Aura / peer) | {:.2} | {:.2} |",
        a50.as_secs_f64() / p50.as_secs_f64().max(1e-9),
        a99.as_secs_f64() / p99.as_secs_f64().max(1e-9)
    );
    drop(registry);
    rt.shutdown().await;
    Ok(())
}
