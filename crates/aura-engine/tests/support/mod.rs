//! The doubles and the world the engine's mission tests share: a script of reasoner
//! turns (aura-engine's `test_util::ScriptedReasoner`), a small rule table for policy, and
//! an engine over a real SQLite ledger with the real tool registry working in real
//! workspaces.

#![allow(dead_code, reason = "each test file uses its own part of the world")]

use std::sync::Arc;
use std::time::Duration;

use aura_core::door::{OsEntropy, SeededEntropy, SystemClock};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId};
use aura_engine::adapters::tools::RegistryTools;
use aura_engine::ports::{Policy, Query, Reasoners};
use aura_engine::test_util::{OneReasoner, ScriptedReasoner};
use aura_engine::{Handle, NewAgent, Options, Services};
use aura_identity::{Level, Namespace, TrustSet};
use aura_kernel::{Authority, Budget, Decision, MissionSpec, MissionState, Outcome};
use aura_store::SqliteStore;

/// Permits everything at L1 and up, except deletes, which escalate to L3 unless approved.
#[derive(Debug)]
pub(crate) struct Rules;

impl Policy for Rules {
    fn decide(&self, q: &Query) -> Decision {
        let outcome = match (&q.action[..], &q.approval) {
            ("fs.delete", Some(a)) if a.level >= Level::L3 => Outcome::Permit,
            ("fs.delete", _) => Outcome::Escalate { level: Level::L3 },
            _ => Outcome::Permit,
        };
        let target = q
            .target
            .as_ref()
            .map(|t| serde_json::to_value(t).unwrap())
            .unwrap_or_default();
        Decision {
            action: q.action.clone(),
            resource: target.clone(),
            destructive: q.destructive,
            outcome,
            deciding: vec!["test-rule".into()],
            errors: vec![],
            request: Hash::sha256(format!("{}{}{target}", q.mission, q.action).as_bytes()),
        }
    }
}

pub(crate) struct World {
    pub dir: tempfile::TempDir,
    pub signer: Arc<Signer>,
    pub engine: Handle,
    pub script: Arc<ScriptedReasoner>,
    pub agent: AgentId,
}

pub(crate) async fn open_engine(
    dir: &std::path::Path,
    signer: &Arc<Signer>,
    script: Arc<ScriptedReasoner>,
) -> Handle {
    start_engine(dir, signer, Arc::new(Rules), Arc::new(OneReasoner(script))).await
}

/// An engine over the SQLite ledger in `dir` with the real tool registry, working in
/// `dir/workspaces`, under `policy` and `reasoners`.
pub(crate) async fn start_engine(
    dir: &std::path::Path,
    signer: &Arc<Signer>,
    policy: Arc<dyn Policy>,
    reasoners: Arc<dyn Reasoners>,
) -> Handle {
    let store = SqliteStore::open(
        dir.join("ledger.db"),
        signer.clone(),
        Arc::new(SystemClock),
        Default::default(),
    )
    .unwrap();
    let registry = aura_tools::Registry::builtin(aura_tools::BuiltinOptions::default());
    Handle::start(
        Options {
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
            policy,
            tools: Arc::new(RegistryTools::new(
                Arc::new(registry),
                aura_tools::Limits::default(),
                false,
            )),
            reasoners,
        },
    )
    .await
    .unwrap()
}

/// An agent at L2 in namespace `default`, its key kept by the node.
pub(crate) async fn create_agent(engine: &Handle) -> AgentId {
    engine
        .create_agent(NewAgent {
            name: "w".into(),
            level: Level::L2,
            namespace: Namespace::new("default").unwrap(),
            public_key: None,
        })
        .await
        .unwrap()
        .id
}

pub(crate) async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1)).unwrap());
    let script = Arc::new(ScriptedReasoner::new());
    let engine = open_engine(dir.path(), &signer, script.clone()).await;
    let agent = create_agent(&engine).await;
    World {
        dir,
        signer,
        engine,
        script,
        agent,
    }
}

/// A world whose policy is the real one: Cedar with the node's default policy set.
pub(crate) async fn cedar_world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1)).unwrap());
    let script = Arc::new(ScriptedReasoner::new());
    let policy = aura_engine::adapters::policy::CedarPolicy::new(Arc::new(
        aura_policy::PolicySet::defaults(),
    ));
    let engine = start_engine(
        dir.path(),
        &signer,
        Arc::new(policy),
        Arc::new(OneReasoner(script.clone())),
    )
    .await;
    let agent = create_agent(&engine).await;
    World {
        dir,
        signer,
        engine,
        script,
        agent,
    }
}

pub(crate) fn spec(tools: &[&str], workspace: &str, timeout: u64) -> MissionSpec {
    MissionSpec {
        regions: Vec::new(),
        objective: "tidy the workspace".into(),
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        authority: Authority {
            credential: None,
            level: Level::L2,
        },
        timeout_secs: timeout,
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

pub(crate) async fn until(
    engine: &Handle,
    id: MissionId,
    pred: impl Fn(MissionState) -> bool,
) -> MissionState {
    for _ in 0..500 {
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

/// Why the mission ended (it must have a reason).
pub(crate) fn reason(w: &World, id: MissionId) -> String {
    w.engine.mission(id).unwrap().reason.clone().unwrap()
}

pub(crate) fn ws(w: &World, name: &str) -> std::path::PathBuf {
    w.dir.path().join("workspaces/default").join(name)
}
