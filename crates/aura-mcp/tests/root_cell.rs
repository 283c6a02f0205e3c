//! MCP servers inside cells (needs root): the official `mcp` SDK's server
//! (`fixtures/server.py`, unchanged SDK from `scripts/setup-python.sh mcp`) started as a
//! stdio server in a hardened cell; its tools as Aura tools in missions judged by the
//! real Cedar policy and recorded in the ledger; and a server that crashes, hangs or sends
//! too much giving a clear error, with the next call served by a fresh server.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aura_core::door::{OsEntropy, SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId};
use aura_engine::adapters::policy::CedarPolicy;
use aura_engine::adapters::tools::RegistryTools;
use aura_engine::test_util::{Answer, OneReasoner, ScriptedReasoner};
use aura_engine::{Handle, NewAgent, Options as EngineOptions, Services};
use aura_identity::{Approval, ApprovalId, Level, Namespace, Signed, TrustSet, Verdict};
use aura_kernel::{Authority, Budget, Event, MissionSpec, MissionState, Outcome, Recorded};
use aura_mcp::cell::StdioSpec;
use aura_mcp::{Error, Options, Server, ServerOptions, Transport};
use aura_policy::PolicySet;
use aura_store::SqliteStore;
use serde_json::{Value, json};

/// The interpreter, its prefix and the SDK's directory, as the cell must see them.
struct Python {
    exe: PathBuf,
    prefix: PathBuf,
    sdk: PathBuf,
    /// The test server's files where a cell can bind them (see [`fixtures`]).
    fixtures: tempfile::TempDir,
}

fn python() -> Python {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-python.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("mcp")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let sdk = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable)); print(sys.base_prefix)",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    Python {
        exe: PathBuf::from(lines.next().unwrap()),
        prefix: PathBuf::from(lines.next().unwrap()),
        sdk,
        fixtures: fixtures(),
    }
}

/// A copy of `tests/fixtures` under /var/tmp. A cell sees host directories at the same
/// paths, and it mounts a /tmp of its own, so a checkout under /tmp (as CI's fresh clone)
/// cannot be bound where it is.
fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("aura-mcp-fixtures-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// The test server as a stdio server in a cell: the interpreter's prefix (unless it is
/// under /usr, which every cell has), the SDK and the script bound read-only.
fn spec(py: &Python) -> StdioSpec {
    let mut binds = vec![py.sdk.clone(), py.fixtures.path().to_owned()];
    if !py.prefix.starts_with("/usr") {
        binds.push(py.prefix.clone());
    }
    StdioSpec {
        argv: vec![
            py.exe.display().to_string(),
            py.fixtures.path().join("server.py").display().to_string(),
        ],
        env: vec![("PYTHONPATH".into(), py.sdk.display().to_string())],
        binds,
        workspace: None,
        network: false,
        memory_max: Some(512 << 20),
        pids_max: Some(64),
    }
}

async fn cells(dir: &Path) -> aura_cell::Runtime {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut opts = aura_cell::Options::new(dir.join("cells"));
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    opts.instance = Some(format!("mcp-test-{}-{n}", std::process::id()));
    opts.stop_grace = Duration::from_millis(500);
    aura_cell::Runtime::start(opts).await.unwrap()
}

fn server(
    name: &str,
    trusted: bool,
    runtime: &aura_cell::Runtime,
    py: &Python,
    max_message: usize,
) -> ServerOptions {
    ServerOptions {
        name: name.into(),
        trusted,
        call_timeout: Duration::from_secs(3),
        client: Options {
            max_message,
            ..Options::default()
        },
        transport: Transport::Cell {
            runtime: runtime.clone(),
            spec: spec(py),
        },
    }
}

fn host_ns(ns: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_a_stdio_server_runs_in_a_cell_and_survives_crashes_hangs_and_floods() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let rt = cells(dir.path()).await;
    let (srv, tools, reg) = Server::register(server("probe", true, &rt, &py, 64 * 1024))
        .await
        .unwrap();
    let mut names: Vec<String> = tools.iter().map(|t| t.descriptor().name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "mcp.probe.add",
            "mcp.probe.crash",
            "mcp.probe.echo",
            "mcp.probe.flood",
            "mcp.probe.hang",
            "mcp.probe.whereami"
        ]
    );
    assert_eq!(reg.tools.len(), 6);
    assert!(reg.skipped.is_empty());
    let add = tools
        .iter()
        .find(|t| t.descriptor().name == "mcp.probe.add")
        .unwrap();
    assert_eq!(add.descriptor().parameters["required"], json!(["a", "b"]));

    // The server is process 1 of a cell with namespaces of its own, all of them.
    let r = srv.call("whereami", json!({})).await.unwrap();
    let me: Value = serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(me["pid"], json!(1), "{r}");
    for ns in ["user", "pid", "mnt", "net", "uts", "ipc", "cgroup"] {
        let inside = me["namespaces"][ns].as_str().unwrap();
        assert!(inside.starts_with(&format!("{ns}:[")), "{ns}: {inside}");
        assert_ne!(
            inside,
            host_ns(ns),
            "the cell shares the host's {ns} namespace"
        );
    }

    let r = srv.call("add", json!({"a": 2, "b": 40})).await.unwrap();
    assert_eq!(r["structuredContent"]["result"], json!(42), "{r}");

    // A crash is a clear error naming the exit, and the next call gets a fresh server.
    let e = srv.call("crash", json!({})).await.unwrap_err();
    assert!(
        matches!(&e, Error::Closed(m) if m.contains("exited with code 3")),
        "{e}"
    );
    let r = srv.call("echo", json!({"text": "again"})).await.unwrap();
    assert_eq!(r["structuredContent"]["result"], json!("again"));

    // A hung call times out; the hung server is dropped.
    let e = srv.call("hang", json!({})).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    let r = srv.call("add", json!({"a": 1, "b": 1})).await.unwrap();
    assert_eq!(r["structuredContent"]["result"], json!(2));

    // A message over the bound closes the connection instead of being buffered.
    let e = srv.call("flood", json!({"n": 200_000})).await.unwrap_err();
    assert!(e.to_string().contains("65536-byte limit"), "{e}");
    let r = srv.call("flood", json!({"n": 10})).await.unwrap();
    assert_eq!(r["structuredContent"]["result"], json!("x".repeat(10)));

    // A refused request (unknown tool) is the server's JSON-RPC error or an `isError`
    // result, and the connection stays up.
    match srv.call("nope", json!({})).await {
        Err(Error::Rpc { .. }) => {}
        Ok(r) => assert_eq!(r["isError"], json!(true), "{r}"),
        Err(e) => panic!("{e}"),
    }
    let r = srv.call("add", json!({"a": 3, "b": 4})).await.unwrap();
    assert_eq!(r["structuredContent"]["result"], json!(7));
    drop(srv);
    drop(tools);
    rt.shutdown().await;
}

/// An engine over a real ledger with the built-in tools and the MCP servers' tools, under
/// the default Cedar policy plus `extra`.
async fn engine(
    dir: &Path,
    tools: Vec<Arc<dyn aura_tools::Tool>>,
    extra: &str,
    script: Arc<ScriptedReasoner>,
) -> (Handle, Arc<Signer>) {
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1)).unwrap());
    let store = SqliteStore::open(
        dir.join("ledger.db"),
        signer.clone(),
        Arc::new(SystemClock),
        Default::default(),
    )
    .unwrap();
    let mut registry = aura_tools::Registry::builtin(aura_tools::BuiltinOptions::default());
    for t in tools {
        registry.register(t).unwrap();
    }
    let policies = PolicySet::defaults()
        .merge(PolicySet::parse("operator.cedar", extra).unwrap())
        .unwrap();
    let handle = Handle::start(
        EngineOptions {
            keystore: Some(dir.join("keys")),
            workspaces: dir.join("workspaces"),
            ..Default::default()
        },
        Arc::new(store),
        signer.clone(),
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        TrustSet::new([signer.public_key()]),
        Services {
            policy: Arc::new(CedarPolicy::new(Arc::new(policies))),
            tools: Arc::new(RegistryTools::new(
                Arc::new(registry),
                aura_tools::Limits::default(),
                false,
            )),
            reasoners: Arc::new(OneReasoner(script)),
        },
    )
    .await
    .unwrap();
    (handle, signer)
}

fn mission(tools: &[&str], workspace: &str) -> MissionSpec {
    let mut tools: Vec<String> = tools.iter().map(|t| (*t).to_owned()).collect();
    tools.push("mission.finish".into());
    MissionSpec {
        regions: Vec::new(),
        objective: "use the MCP tools".into(),
        tools,
        authority: Authority {
            credential: None,
            level: Level::L2,
        },
        timeout_secs: 60,
        namespace: Namespace::new("default").unwrap(),
        budget: Budget {
            max_steps: 10,
            max_tokens: 10_000,
        },
        reasoner: String::new(),
        network: vec![],
        workspace: Some(workspace.into()),
        steps: None,
        tool_steps: Default::default(),
    }
}

async fn until(
    engine: &Handle,
    id: MissionId,
    pred: impl Fn(MissionState) -> bool,
) -> MissionState {
    for _ in 0..3000 {
        if let Some(m) = engine.mission(id)
            && pred(m.state)
        {
            return m.state;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "mission {id} did not get there: {:?}",
        engine.mission(id).map(|m| m.state)
    );
}

/// The mission's recorded decisions and effects for `tool`: (outcome, effect JSON).
async fn recorded(
    engine: &Handle,
    agent: AgentId,
    id: MissionId,
    tool: &str,
) -> (Vec<Outcome>, Vec<Value>) {
    let mut decisions = Vec::new();
    let mut effects = Vec::new();
    for e in engine.record(agent, 1, 10_000).await.unwrap() {
        let Ok(r) = Recorded::from_body(&e.entry.body) else {
            continue;
        };
        if r.mission != id {
            continue;
        }
        match r.event {
            Event::Decided { decision, .. } if decision.action == tool => {
                decisions.push(decision.outcome);
            }
            Event::Effect { effect, .. } if effect.tool == tool => {
                effects.push(serde_json::to_value(&effect).unwrap());
            }
            _ => {}
        }
    }
    (decisions, effects)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_missions_call_mcp_tools_under_cedar_and_the_ledger_records_every_call() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let rt = cells(dir.path()).await;
    let (_known, mut tools, _) = Server::register(server("probe", true, &rt, &py, 1 << 20))
        .await
        .unwrap();
    let (_unknown, more, _) = Server::register(server("stranger", false, &rt, &py, 1 << 20))
        .await
        .unwrap();
    tools.extend(more);
    // The operator refuses one tool outright.
    let forbid = r#"
        @id("ops.no-echo")
        forbid (principal, action == Aura::Action::"mcp.call", resource is Aura::McpTool)
        when { resource.server == "probe" && resource.tool == "echo" };
    "#;
    let script = Arc::new(ScriptedReasoner::new());
    let (engine, signer) = engine(dir.path(), tools, forbid, script.clone()).await;
    let agent = engine
        .create_agent(NewAgent {
            name: "w".into(),
            level: Level::L2,
            namespace: Namespace::new("default").unwrap(),
            public_key: None,
        })
        .await
        .unwrap()
        .id;

    // A known server's tool is permitted at L2; the call and its result are recorded.
    script.push(Answer::call("mcp.probe.add", json!({"a": 2, "b": 3})));
    let id = engine
        .submit(agent, mission(&["mcp.probe.add"], "a"))
        .await
        .unwrap();
    assert_eq!(
        until(&engine, id, MissionState::is_terminal).await,
        MissionState::Completed
    );
    let (decisions, effects) = recorded(&engine, agent, id, "mcp.probe.add").await;
    assert_eq!(decisions, [Outcome::Permit]);
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0]["ok"], json!(true), "{}", effects[0]);
    assert_eq!(
        effects[0]["output"]["structuredContent"]["result"],
        json!(5),
        "{}",
        effects[0]
    );
    assert!(engine.replay(id).await.unwrap().is_ok());

    // A denied tool is refused, never reaches the server, and the refusal is recorded.
    script.push(Answer::call("mcp.probe.echo", json!({"text": "hi"})));
    let id = engine
        .submit(agent, mission(&["mcp.probe.echo"], "b"))
        .await
        .unwrap();
    until(&engine, id, MissionState::is_terminal).await;
    let (decisions, effects) = recorded(&engine, agent, id, "mcp.probe.echo").await;
    assert_eq!(decisions, [Outcome::Deny]);
    assert!(
        effects.iter().all(|e| e["ok"] != json!(true)),
        "{effects:?}"
    );
    let m = engine.mission(id).unwrap();
    assert!(
        m.conversation
            .iter()
            .any(|c| c.content.contains("ops.no-echo") || c.content.contains("denied")),
        "{:?}",
        m.conversation
    );

    // An unknown server's tool escalates at L3 and runs once approved.
    script.push(Answer::call("mcp.stranger.add", json!({"a": 20, "b": 22})));
    let id = engine
        .submit(agent, mission(&["mcp.stranger.add"], "c"))
        .await
        .unwrap();
    assert_eq!(
        until(&engine, id, |s| s == MissionState::Escalated).await,
        MissionState::Escalated
    );
    let esc = engine.mission(id).unwrap().escalation.clone().unwrap();
    assert_eq!(esc.level, Level::L3);
    let (_, effects) = recorded(&engine, agent, id, "mcp.stranger.add").await;
    assert!(effects.is_empty(), "nothing runs while escalated");
    let key = Signer::ephemeral("alice", &SeededEntropy::new(5)).unwrap();
    let cred = engine
        .issue_operator_credential(
            "alice",
            key.public_key(),
            Level::L3,
            Namespace::new("default").unwrap(),
        )
        .unwrap();
    let now = aura_core::door::Clock::now(&SystemClock);
    let approval = Approval {
        id: ApprovalId::from_bytes([7; 16]),
        mission: id,
        answers: engine.mission(id).unwrap().escalation_answers(),
        request: esc.request,
        verdict: Verdict::Approve,
        reason: "fine".into(),
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(60)),
        approver: key.public_key(),
    };
    engine
        .answer(id, Signed::sign(approval, &key).unwrap(), cred)
        .await
        .unwrap();
    assert_eq!(
        until(&engine, id, MissionState::is_terminal).await,
        MissionState::Completed
    );
    let (decisions, effects) = recorded(&engine, agent, id, "mcp.stranger.add").await;
    assert_eq!(
        decisions.first(),
        Some(&Outcome::Escalate { level: Level::L3 })
    );
    assert_eq!(decisions.last(), Some(&Outcome::Permit));
    assert_eq!(
        effects[0]["output"]["structuredContent"]["result"],
        json!(42)
    );

    // A server that crashes mid-call: a clear error in the mission, recorded; the mission
    // goes on, and the ledger replays.
    script.extend([
        Answer::call("mcp.probe.crash", json!({})),
        Answer::call("mcp.probe.add", json!({"a": 1, "b": 2})),
    ]);
    let id = engine
        .submit(agent, mission(&["mcp.probe.crash", "mcp.probe.add"], "d"))
        .await
        .unwrap();
    assert_eq!(
        until(&engine, id, MissionState::is_terminal).await,
        MissionState::Completed
    );
    let (_, effects) = recorded(&engine, agent, id, "mcp.probe.crash").await;
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(effects[0]["ok"], json!(false));
    let error = effects[0]["error"].as_str().unwrap();
    assert!(error.contains("exited with code 3"), "{error}");
    let (_, effects) = recorded(&engine, agent, id, "mcp.probe.add").await;
    assert_eq!(
        effects[0]["output"]["structuredContent"]["result"],
        json!(3)
    );
    assert!(engine.replay(id).await.unwrap().is_ok());

    drop(signer);
    engine.shutdown().await;
    rt.shutdown().await;
}
