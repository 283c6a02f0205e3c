//! A real node for tests: a SQLite store in a temporary directory, the engine, and the HTTP
//! server on a loopback port, with API keys of every role.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::sync::Arc;

use aura_core::door::{OsEntropy, SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, Timestamp};
use aura_engine::{Handle, NewAgent};
use aura_identity::{Level, Namespace, TrustSet};
use aura_node::{ApiKeys, Limits, Role, Server};
use aura_store::SqliteStore;
use serde_json::Value;

pub(crate) struct Node {
    pub dir: tempfile::TempDir,
    pub engine: Handle,
    pub server: Option<Server>,
    pub url: String,
    pub http: reqwest::Client,
    /// Keys by name: operator, approver_a, agent_a, operator_b.
    pub keys: std::collections::HashMap<&'static str, String>,
    pub agent_a: AgentId,
    pub agent_b: AgentId,
    /// The cell runtime, for nodes started with [`start_with_cells`].
    pub cells: Option<aura_cell::Runtime>,
    /// Host directories beside the node's home (for binds): `allowed` is in the
    /// allowlist, `elsewhere` is not.
    pub host: Option<tempfile::TempDir>,
}

/// The node's test policies: the defaults plus one that escalates every mission
/// declaration to L3, so missions wait in `escalated` and tests see them in a known state.
const HOLD_MISSIONS: &str = r#"
@id("test.hold-missions")
@escalate("L3")
forbid (principal, action == Aura::Action::"mission.submit", resource)
unless { context has approval && context.approval.level >= 3 };
"#;

pub(crate) async fn start_with(limits: Limits, with_keys: bool) -> Node {
    start_node(limits, with_keys, false, &[], &[], None).await
}

/// A node that serves cells (needs root): its home is protected, its workspaces live
/// under `<home>/workspaces`, and `<host>/allowed` is the allowlist of host binds.
pub(crate) async fn start_with_cells(with_keys: bool) -> Node {
    start_node(Limits::default(), with_keys, true, &[], &[], None).await
}

/// A node with these `[http] allowed_hosts` and `allowed_origins`.
pub(crate) async fn start_configured(
    limits: Limits,
    with_keys: bool,
    allowed_hosts: &[&str],
    allowed_origins: &[&str],
) -> Node {
    start_node(
        limits,
        with_keys,
        false,
        allowed_hosts,
        allowed_origins,
        None,
    )
    .await
}

/// A node that speaks with `speech` (espeak-ng), otherwise as [`start_configured`].
pub(crate) async fn start_speaking(
    limits: Limits,
    with_keys: bool,
    allowed_hosts: &[&str],
    allowed_origins: &[&str],
    speech: Option<aura_node::speech::Speech>,
) -> Node {
    start_node(
        limits,
        with_keys,
        false,
        allowed_hosts,
        allowed_origins,
        speech,
    )
    .await
}

/// The scripted reasoner's turns for nodes started without a script of their own: one
/// turn that finishes the mission.
const FINISH: &str = r#"{"content": "done", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "ok"}}]}"#;

/// A node (with keys) whose scripted reasoner answers `script` (JSON lines of turns, taken
/// in order across all missions).
pub(crate) async fn start_scripted(script: &str) -> Node {
    start_node_scripted(Limits::default(), true, false, &[], &[], None, script).await
}

async fn start_node(
    limits: Limits,
    with_keys: bool,
    with_cells: bool,
    allowed_hosts: &[&str],
    allowed_origins: &[&str],
    speech: Option<aura_node::speech::Speech>,
) -> Node {
    start_node_scripted(
        limits,
        with_keys,
        with_cells,
        allowed_hosts,
        allowed_origins,
        speech,
        FINISH,
    )
    .await
}

async fn start_node_scripted(
    limits: Limits,
    with_keys: bool,
    with_cells: bool,
    allowed_hosts: &[&str],
    allowed_origins: &[&str],
    speech: Option<aura_node::speech::Speech>,
    script: &str,
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    // Real services, built as `aura serve` builds them: Cedar policy, the built-in tools,
    // and a scripted reasoner from aura.toml (never reached while missions are held).
    std::fs::write(dir.path().join("script.jsonl"), script).unwrap();
    let config: aura_node::Config =
        toml::from_str("[reasoners.script]\nprovider = \"scripted\"\npath = \"script.jsonl\"\n")
            .unwrap();
    let policies = aura_policy::PolicySet::defaults()
        .merge(aura_policy::PolicySet::parse("hold.cedar", HOLD_MISSIONS).unwrap())
        .unwrap();
    let (services, _) =
        aura_node::services::build(dir.path(), &config, policies, Default::default()).unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1)).unwrap());
    let store = SqliteStore::open(
        dir.path().join("ledger.db"),
        signer.clone(),
        Arc::new(SystemClock),
        Default::default(),
    )
    .unwrap();
    let engine = Handle::start(
        aura_engine::Options {
            keystore: Some(dir.path().join("keys")),
            workspaces: dir.path().join("workspaces"),
            ..Default::default()
        },
        Arc::new(store),
        signer.clone(),
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        TrustSet::new([signer.public_key()]),
        services,
    )
    .await
    .unwrap();
    let a = engine
        .create_agent(NewAgent {
            name: "a".into(),
            level: Level::L2,
            namespace: Namespace::new("team-a").unwrap(),
            public_key: None,
        })
        .await
        .unwrap();
    let b = engine
        .create_agent(NewAgent {
            name: "b".into(),
            level: Level::L2,
            namespace: Namespace::new("team-b").unwrap(),
            public_key: None,
        })
        .await
        .unwrap();
    let keys_file = dir.path().join("api-keys.json");
    let mut names = std::collections::HashMap::new();
    if with_keys {
        let e = SeededEntropy::new(9);
        let mut keys = ApiKeys::default();
        let now = Timestamp::from_secs(1);
        let mut add = |name: &'static str, role, ns: Vec<String>, agent| {
            let (_, secret) = keys.create(name, role, ns, agent, now, &e).unwrap();
            names.insert(name, secret);
        };
        add("operator", Role::Operator, vec![], None);
        add("approver_a", Role::Approver, vec!["team-a".into()], None);
        add("agent_a", Role::Agent, vec!["team-a".into()], Some(a.id));
        add("operator_b", Role::Operator, vec!["team-b".into()], None);
        keys.save(&keys_file).unwrap();
    }
    let (cells, cell_access, host) = if with_cells {
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(host.path().join("allowed/data")).unwrap();
        std::fs::create_dir_all(host.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path(), host.path().join("allowed/home-link")).unwrap();
        let mut opts = aura_cell::Options::new(dir.path().join("cells"));
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        opts.instance = Some(format!("test-{}-{n}", std::process::id()));
        opts.protected = vec![dir.path().to_owned()];
        opts.workspaces_root = Some(dir.path().join("workspaces"));
        let rt = aura_cell::Runtime::start(opts).await.unwrap();
        let base = rt.options().id_base;
        let access = aura_cell::CellAccess {
            workspaces: Some(Arc::new(
                aura_cell::Workspaces::new(aura_cell::WorkspaceOptions {
                    root: dir.path().join("workspaces"),
                    owner: Some((base, base)),
                    quota: None,
                })
                .unwrap(),
            )),
            host_paths: aura_cell::HostPaths::new([host.path().join("allowed")]).unwrap(),
        };
        (Some(rt), access, Some(host))
    } else {
        (None, aura_cell::CellAccess::default(), None)
    };
    let server = aura_node::serve(
        aura_node::Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            keys_file,
            limits,
            allowed_hosts: allowed_hosts.iter().map(|h| (*h).to_owned()).collect(),
            allowed_origins: allowed_origins.iter().map(|o| (*o).to_owned()).collect(),
            models: None,
            cells: cells.clone(),
            cell_access,
            speech,
            memory: None,
            aliases: None,
        },
        engine.clone(),
    )
    .await
    .unwrap();
    let url = format!("http://{}", server.addr);
    Node {
        dir,
        engine,
        url,
        server: Some(server),
        http: reqwest::Client::new(),
        keys: names,
        agent_a: a.id,
        agent_b: b.id,
        cells,
        host,
    }
}

pub(crate) async fn start() -> Node {
    start_with(Limits::default(), true).await
}

/// A response: status and JSON body.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub body: Value,
}

impl Node {
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(k) = key {
            r = r.bearer_auth(self.keys.get(k).map_or(k, String::as_str));
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, body }
    }

    pub(crate) fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.url.replacen("http://", "ws://", 1))
    }

    /// The server's address, `127.0.0.1:PORT`.
    pub(crate) fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// Sends `request` as it is over a fresh connection (closed after one answer) and
    /// returns the status and the body: for what a client library would not send.
    pub(crate) async fn raw(&self, request: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut socket = tokio::net::TcpStream::connect(self.addr()).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            socket.read_to_end(&mut answer),
        )
        .await
        .expect("no answer within 10 s")
        .unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// Rewrites the key file without the key `name` (as `aura apikey revoke` does).
    pub(crate) fn revoke(&self, name: &str) {
        let path = self.dir.path().join("api-keys.json");
        let mut keys = ApiKeys::load(&path).unwrap();
        keys.revoke(name).unwrap();
        keys.save(&path).unwrap();
    }
}

/// Asserts the body is Aura's JSON error shape.
pub(crate) fn assert_error_shape(r: &Resp) {
    let e = &r.body["error"];
    assert!(
        e["message"].is_string() && e["type"].is_string() && e["code"].is_string(),
        "not an error body: {:?}",
        r.body
    );
}

/// A person's key, made from a seed.
pub(crate) fn person_key(seed: u64) -> Signer {
    Signer::ephemeral("person", &SeededEntropy::new(seed)).unwrap()
}

/// A real signed answer approving `mission`'s escalation of its declaration (`request`),
/// from a person at L3 in team-a whose credential the node issued: the body of
/// `POST /v1/approvals/{mission}`.
pub(crate) fn approval(n: &Node, mission: &str, request: aura_core::hash::Hash) -> Value {
    use aura_identity::{Answers, Approval, ApprovalId, Signed, Verdict};
    let key = person_key(2);
    let credential = n
        .engine
        .issue_operator_credential(
            "alice",
            key.public_key(),
            Level::L3,
            Namespace::new("team-a").unwrap(),
        )
        .unwrap();
    let now = aura_core::door::Clock::now(&SystemClock);
    let approval = Approval {
        id: ApprovalId::from_bytes([7; 16]),
        mission: mission.parse().unwrap(),
        answers: Some(Answers::Declaration),
        request,
        verdict: Verdict::Approve,
        reason: "fine".into(),
        issued_at: now,
        expires_at: now.saturating_add(std::time::Duration::from_secs(600)),
        approver: key.public_key(),
    };
    serde_json::json!({
        "approval": Signed::sign(approval, &key).unwrap(),
        "credential": credential,
    })
}
