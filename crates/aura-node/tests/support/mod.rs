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
}

pub(crate) async fn start_with(limits: Limits, with_keys: bool) -> Node {
    let dir = tempfile::tempdir().unwrap();
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
            ..Default::default()
        },
        Arc::new(store),
        signer.clone(),
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
        TrustSet::new([signer.public_key()]),
        aura_engine::Services::deny_all(),
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
    let server = aura_node::serve(
        aura_node::Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            keys_file,
            limits,
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
