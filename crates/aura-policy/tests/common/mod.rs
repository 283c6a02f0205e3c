//! Builders for requests, shared by the policy tests.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use aura_core::{AgentId, MissionId};
use aura_identity::{Level, Namespace};
use aura_policy::{Context, Principal, Request, Resource};

pub(crate) fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

pub(crate) const AGENT: AgentId = AgentId::from_bytes([7; 16]);
pub(crate) const OTHER_AGENT: AgentId = AgentId::from_bytes([8; 16]);
pub(crate) const MISSION: MissionId = MissionId::from_bytes([9; 16]);

/// An agent of `team-a` at `level` asking to do `action` on `resource`.
pub(crate) fn req(level: Level, action: &str, resource: Resource) -> Request {
    Request {
        principal: Principal {
            agent: AGENT,
            level,
            namespace: ns("team-a"),
        },
        action: action.to_owned(),
        resource,
        context: Context::default(),
    }
}

pub(crate) fn path(namespace: &str, p: &str) -> Resource {
    Resource::Path {
        namespace: ns(namespace),
        path: p.to_owned(),
    }
}

pub(crate) fn command(namespace: &str, c: &str, network: bool) -> Resource {
    Resource::Command {
        namespace: ns(namespace),
        command: c.to_owned(),
        network,
    }
}

pub(crate) fn host(h: &str, port: u16, scheme: &str) -> Resource {
    Resource::Host {
        host: h.to_owned(),
        port,
        scheme: scheme.to_owned(),
    }
}

pub(crate) fn mission(namespace: &str) -> Resource {
    Resource::Mission {
        namespace: ns(namespace),
        id: MISSION,
    }
}

pub(crate) fn agent(namespace: &str) -> Resource {
    Resource::Agent {
        namespace: ns(namespace),
        id: OTHER_AGENT,
    }
}

pub(crate) fn model() -> Resource {
    Resource::Model {
        name: "smollm2-135m-instruct".to_owned(),
        digest: "ab".repeat(32),
    }
}

pub(crate) trait With {
    fn in_cell(self) -> Self;
    fn destructive(self) -> Self;
    fn extra(self, key: &str, value: serde_json::Value) -> Self;
}

impl With for Request {
    fn in_cell(mut self) -> Self {
        self.context.in_cell = true;
        self
    }
    fn destructive(mut self) -> Self {
        self.context.destructive = true;
        self
    }
    fn extra(mut self, key: &str, value: serde_json::Value) -> Self {
        self.context.extra.insert(key.to_owned(), value);
        self
    }
}

/// A memory space of `namespace`: `agent:<id>` or `shared:<name>`.
pub(crate) fn memory(namespace: &str, space: &str) -> Resource {
    Resource::Memory {
        namespace: ns(namespace),
        space: space.to_owned(),
    }
}
