//! Shared set-up for the integration tests: a node key, a mission with a signed execution
//! token, and a context whose workspace is a fresh temporary directory.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support module"
)]

use std::path::{Path, PathBuf};

use aura_core::door::SeededEntropy;
use aura_core::keystore::Signer;
use aura_core::{AgentId, MissionId, Timestamp};
use aura_identity::{ExecutionToken, Namespace, Signed, TokenId, TrustSet};
use aura_tools::{BuiltinOptions, Call, Effect, Limits, NetworkGrant, Registry, ToolContext};

pub(crate) const T0: u64 = 1_800_000_000;

pub(crate) fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(T0 + secs)
}

pub(crate) const ALL_TOOLS: [&str; 8] = [
    "fs.read",
    "fs.write",
    "fs.list",
    "fs.delete",
    "cmd.run",
    "http.fetch",
    "agent.send",
    "mission.finish",
];

pub(crate) struct World {
    pub(crate) node: Signer,
    pub(crate) stranger: Signer,
    pub(crate) trust: TrustSet,
    pub(crate) mission: MissionId,
    pub(crate) agent: AgentId,
    pub(crate) namespace: Namespace,
    /// Holds the temporary directory: `root` has `workspace/` and `outside/`.
    pub(crate) dir: tempfile::TempDir,
}

impl World {
    pub(crate) fn new() -> World {
        let e = SeededEntropy::new(11);
        let node = Signer::ephemeral("node", &e).unwrap();
        let stranger = Signer::ephemeral("stranger", &e).unwrap();
        let trust = TrustSet::new([node.public_key()]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("workspace")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret"), b"outside secret").unwrap();
        World {
            node,
            stranger,
            trust,
            mission: MissionId::from_bytes([5; 16]),
            agent: AgentId::from_bytes([3; 16]),
            namespace: Namespace::new("team-a").unwrap(),
            dir,
        }
    }

    pub(crate) fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    pub(crate) fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    pub(crate) fn ws(&self, rel: &str) -> PathBuf {
        self.workspace().join(rel)
    }

    /// A token for this world's mission and agent, covering `tools`, valid from t(0) to
    /// t(expires), signed by `signer`.
    pub(crate) fn token_with(
        &self,
        mission: MissionId,
        tools: &[&str],
        expires: u64,
        signer: &Signer,
    ) -> Signed<ExecutionToken> {
        let token = ExecutionToken {
            id: TokenId::from_bytes([9; 16]),
            mission,
            agent: self.agent,
            namespace: self.namespace.clone(),
            tools: tools.iter().map(|s| (*s).to_owned()).collect(),
            issued_at: t(0),
            expires_at: t(expires),
            issuer: signer.public_key(),
        };
        Signed::sign(token, signer).unwrap()
    }

    pub(crate) fn token(&self) -> Signed<ExecutionToken> {
        self.token_with(self.mission, &ALL_TOOLS, 3600, &self.node)
    }

    /// A context at t(10) with a valid token for every built-in tool.
    pub(crate) fn ctx(&self) -> ToolContext {
        ToolContext {
            mission: self.mission,
            agent: self.agent,
            namespace: self.namespace.clone(),
            workspace: self.workspace(),
            token: Some(self.token()),
            trust: self.trust.clone(),
            now: t(10),
            mission_active: true,
            network: NetworkGrant::default(),
            limits: Limits::default(),
            heartbeat: None,
        }
    }
}

pub(crate) fn call(tool: &str, arguments: serde_json::Value) -> Call {
    Call {
        id: "c1".to_owned(),
        tool: tool.to_owned(),
        arguments,
    }
}

/// Prepares and executes one call; a preparation failure panics (tests that expect one
/// call `registry.prepare` themselves).
pub(crate) async fn run(
    registry: &Registry,
    ctx: &ToolContext,
    tool: &str,
    arguments: serde_json::Value,
) -> Effect {
    let prepared = registry
        .prepare(&call(tool, arguments))
        .unwrap_or_else(|e| panic!("prepare failed: {e}"));
    registry.execute(ctx, &prepared).await
}

pub(crate) fn builtin() -> Registry {
    Registry::builtin(BuiltinOptions::default())
}

pub(crate) fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}
