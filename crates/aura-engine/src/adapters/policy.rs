//! [`Policy`] over `aura-policy`: the engine's query becomes a Cedar request in Aura's
//! schema, and the answer becomes the kernel's recorded decision with the digest an
//! approval must name.

use std::sync::Arc;

use aura_policy::{Context, PolicySet, Principal, Request, Resource, decide, request_digest};
use serde_json::Value;

use crate::ports::{Policy, Query, Target};

/// The node's loaded policy set (the defaults plus the operator's files).
#[derive(Debug, Clone)]
pub struct CedarPolicy {
    policies: Arc<PolicySet>,
}

impl CedarPolicy {
    pub fn new(policies: Arc<PolicySet>) -> Self {
        CedarPolicy { policies }
    }

    /// The set this adapter decides with.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }
}

/// The resource a query is about, in policy's terms. Targets that have no namespace of
/// their own (paths, commands, the mission) live in the asking agent's namespace: paths
/// are relative to the mission's workspace, which is in that namespace.
fn resource(query: &Query) -> Result<Resource, String> {
    let namespace = query.namespace.clone();
    Ok(match &query.target {
        None | Some(Target::Mission) => Resource::Mission {
            namespace,
            id: query.mission,
        },
        Some(Target::Path { path }) => Resource::Path {
            namespace,
            path: path.clone(),
        },
        Some(Target::Command { command, network }) => Resource::Command {
            namespace,
            command: command.clone(),
            network: *network,
        },
        Some(Target::Host { host, port, scheme }) => Resource::Host {
            host: host.clone(),
            port: *port,
            scheme: scheme.clone(),
        },
        Some(Target::McpTool {
            server,
            tool,
            trusted,
        }) => Resource::McpTool {
            server: server.clone(),
            tool: tool.clone(),
            trusted: *trusted,
        },
        // The PNG lands in the mission's workspace, which is in the agent's namespace.
        Some(Target::Image {
            model,
            width,
            height,
            path,
        }) => Resource::Image {
            namespace,
            model: model.clone(),
            width: *width,
            height: *height,
            path: path.clone(),
        },
        // The plugin sees the mission's workspace, which is in the agent's namespace.
        Some(Target::Plugin {
            name,
            version,
            publisher,
            digest,
            workspace,
            hosts,
        }) => Resource::Plugin {
            namespace,
            name: name.clone(),
            version: version.clone(),
            publisher: publisher.clone(),
            digest: digest.clone(),
            workspace: workspace.clone(),
            hosts: hosts.clone(),
        },
        // An agent's own memory is named by its id, so that policy (and the check before
        // it) can tell it from another agent's; shared spaces by their name.
        Some(Target::Memory { shared }) => Resource::Memory {
            namespace,
            space: match shared {
                None => format!("agent:{}", query.agent),
                Some(name) => format!("shared:{name}"),
            },
        },
        Some(Target::Agent { agent }) => Resource::Agent {
            // An agent the node does not know has no namespace to be judged in: refuse
            // rather than guess one, so a message to nowhere is never permitted.
            namespace: query
                .target_namespace
                .clone()
                .ok_or_else(|| format!("there is no agent {agent} on this node"))?,
            id: *agent,
        },
    })
}

fn kernel_outcome(outcome: aura_policy::Outcome) -> aura_kernel::Outcome {
    match outcome {
        aura_policy::Outcome::Permit => aura_kernel::Outcome::Permit,
        aura_policy::Outcome::Deny => aura_kernel::Outcome::Deny,
        aura_policy::Outcome::Escalate { level } => aura_kernel::Outcome::Escalate { level },
    }
}

impl Policy for CedarPolicy {
    fn decide(&self, query: &Query) -> aura_kernel::Decision {
        let resource = match resource(query) {
            Ok(r) => r,
            Err(error) => {
                return aura_kernel::Decision {
                    action: query.action.clone(),
                    resource: Value::Null,
                    destructive: query.destructive,
                    outcome: aura_kernel::Outcome::Deny,
                    deciding: Vec::new(),
                    errors: vec![error],
                    request: aura_core::hash::Hash::ZERO,
                };
            }
        };
        let in_cell = matches!(resource, Resource::Command { .. });
        let request = Request {
            principal: Principal {
                agent: query.agent,
                level: query.level,
                namespace: query.namespace.clone(),
            },
            action: query.action.clone(),
            resource,
            context: Context {
                mission: Some(query.mission),
                destructive: query.destructive,
                // `cmd.run` never starts a process outside a cell: without a cell runner
                // the tool refuses every call, so a command is always judged as in a cell.
                in_cell,
                approval: query.approval.clone(),
                extra: serde_json::Map::new(),
                node_region: query.node_region.clone(),
                regions: (!query.regions.is_empty()).then(|| query.regions.clone()),
            },
        };
        let decision = decide(&self.policies, &request);
        let mut errors = decision.errors;
        if errors.is_empty() && decision.outcome == aura_policy::Outcome::Deny {
            errors.push(decision.reason);
        }
        aura_kernel::Decision {
            action: query.action.clone(),
            resource: serde_json::to_value(&request.resource).unwrap_or(Value::Null),
            destructive: query.destructive,
            outcome: kernel_outcome(decision.outcome),
            deciding: decision.deciding,
            errors,
            request: request_digest(&request),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use aura_core::{AgentId, MissionId};
    use aura_identity::{Level, Namespace};
    use aura_kernel::Outcome;

    use super::*;

    fn query(level: Level, action: &str, target: Target, destructive: bool) -> Query {
        Query {
            agent: AgentId::from_bytes([1; 16]),
            level,
            namespace: Namespace::new("team-a").unwrap(),
            action: action.into(),
            target: Some(target),
            target_namespace: None,
            destructive,
            mission: MissionId::from_bytes([2; 16]),
            approval: None,
            node_region: None,
            regions: Vec::new(),
        }
    }

    fn path(p: &str) -> Target {
        Target::Path { path: p.into() }
    }

    #[test]
    fn the_default_set_answers_through_the_adapter() {
        let policy = CedarPolicy::new(Arc::new(PolicySet::defaults()));
        let cases = [
            (Level::L1, "fs.read", path("notes.md"), false, "permit"),
            (Level::L1, "fs.write", path("notes.md"), false, "deny"),
            (Level::L2, "fs.write", path("notes.md"), false, "permit"),
            (Level::L2, "fs.delete", path("notes.md"), true, "escalate"),
            (
                Level::L2,
                "cmd.run",
                Target::Command {
                    command: "ls".into(),
                    network: false,
                },
                false,
                "permit",
            ),
        ];
        for (level, action, target, destructive, expect) in cases {
            let d = policy.decide(&query(level, action, target.clone(), destructive));
            let got = match d.outcome {
                Outcome::Permit => "permit",
                Outcome::Deny => "deny",
                Outcome::Escalate { .. } => "escalate",
            };
            assert_eq!(got, expect, "{level:?} {action} {target:?}: {d:?}");
            assert_ne!(d.request, aura_core::hash::Hash::ZERO);
            if got == "deny" {
                assert!(!d.errors.is_empty() || !d.deciding.is_empty(), "{d:?}");
            }
        }
    }

    #[test]
    fn memory_is_the_agents_own_unless_an_operator_shares_a_space() {
        let policy = CedarPolicy::new(Arc::new(PolicySet::defaults()));
        let own = policy.decide(&query(
            Level::L1,
            "memory.store",
            Target::Memory { shared: None },
            false,
        ));
        assert_eq!(own.outcome, Outcome::Permit, "{own:?}");
        assert_eq!(
            own.resource["space"],
            format!("agent:{}", AgentId::from_bytes([1; 16]))
        );
        let shared = policy.decide(&query(
            Level::L4,
            "memory.search",
            Target::Memory {
                shared: Some("handbook".into()),
            },
            false,
        ));
        assert_eq!(shared.outcome, Outcome::Deny, "{shared:?}");
        let forget = policy.decide(&query(
            Level::L2,
            "memory.forget",
            Target::Memory { shared: None },
            true,
        ));
        assert!(
            matches!(forget.outcome, Outcome::Escalate { .. }),
            "{forget:?}"
        );
    }

    #[test]
    fn a_message_to_an_unknown_agent_is_denied() {
        let policy = CedarPolicy::new(Arc::new(PolicySet::defaults()));
        let d = policy.decide(&query(
            Level::L4,
            "agent.send",
            Target::Agent {
                agent: AgentId::from_bytes([9; 16]),
            },
            false,
        ));
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.errors[0].contains("no agent"), "{:?}", d.errors);
    }

    #[test]
    fn the_digest_ignores_the_approval_but_not_the_request() {
        let policy = CedarPolicy::new(Arc::new(PolicySet::defaults()));
        let a = policy.decide(&query(Level::L2, "fs.delete", path("a.md"), true));
        let b = policy.decide(&query(Level::L2, "fs.delete", path("b.md"), true));
        assert_ne!(a.request, b.request);
        let again = policy.decide(&query(Level::L2, "fs.delete", path("a.md"), true));
        assert_eq!(a.request, again.request);
    }

    /// The node's region and the mission's boundary reach Cedar as `context.node_region`
    /// and `context.regions`, and stay out of the request's digest (an approval answers
    /// the request wherever the mission runs).
    #[test]
    fn policies_see_the_node_s_region_and_the_mission_s_boundary() {
        let user = PolicySet::parse(
            "regions.cedar",
            r#"@id("writes-in-eu-only")
forbid (principal, action == Aura::Action::"fs.write", resource)
when { context has regions && context.regions.contains("eu")
       && !(context has node_region && context.node_region == "eu") };"#,
        )
        .unwrap();
        let policy = CedarPolicy::new(Arc::new(PolicySet::defaults().merge(user).unwrap()));
        let at = |node: Option<&str>, regions: &[&str]| {
            let mut q = query(Level::L2, "fs.write", path("notes.md"), false);
            q.node_region = node.map(str::to_owned);
            q.regions = regions.iter().map(|r| (*r).to_owned()).collect();
            policy.decide(&q)
        };
        assert_eq!(at(Some("eu"), &["eu"]).outcome, Outcome::Permit);
        assert_eq!(at(Some("us"), &[]).outcome, Outcome::Permit);
        let denied = at(Some("us"), &["eu", "us"]);
        assert_eq!(denied.outcome, Outcome::Deny, "{denied:?}");
        assert_eq!(denied.deciding, ["writes-in-eu-only"]);
        assert_eq!(at(None, &["eu"]).outcome, Outcome::Deny);
        assert_eq!(at(Some("eu"), &["eu"]).request, at(None, &[]).request);
    }
}
