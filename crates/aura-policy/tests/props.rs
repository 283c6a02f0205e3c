//! Property tests: `decide` never panics, whatever the request holds, and its answer is a
//! function of the request alone (the same request, decided again or under a clone of the
//! set, gets the same decision).

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use aura_core::{AgentId, MissionId};
use aura_identity::{
    ApprovalId, Level, Namespace, OperatorName, Subject, Verdict, VerifiedApproval,
};
use aura_policy::{
    Context, Outcome, PolicySet, Principal, Request, Resource, decide, decide_unsliced,
    request_digest,
};
use proptest::prelude::*;
use serde_json::Value;

fn level() -> impl Strategy<Value = Level> {
    prop::sample::select(Level::ALL.to_vec())
}

fn namespace() -> impl Strategy<Value = Namespace> {
    prop_oneof![
        Just("team-a".to_owned()),
        Just("team-b".to_owned()),
        "[a-z0-9][a-z0-9-]{0,8}",
    ]
    .prop_map(|s| Namespace::new(&s).unwrap())
}

/// Any text, weighted towards the characters that matter to paths, hosts and Cedar.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z./*\"\\\\-]{0,20}",
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("notes/x.md".to_owned()),
    ]
}

fn action() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "fs.read",
            "fs.list",
            "fs.write",
            "fs.delete",
            "cmd.run",
            "http.fetch",
            "agent.send",
            "mission.finish",
            "model.use",
            "mission.submit",
            "mission.cancel",
            "mission.read",
            "record.read",
            "tool.custom",
            "tool",
            "lifecycle",
            "db.query",
        ])
        .prop_map(str::to_owned),
        text(),
    ]
}

/// A plugin resource with any text in it.
fn plugin_resource() -> impl Strategy<Value = Resource> {
    (
        namespace(),
        (text(), text(), text(), text(), text()),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(namespace, (name, version, publisher, digest, workspace), hosts)| Resource::Plugin {
                namespace,
                name,
                version,
                publisher,
                digest,
                workspace,
                hosts,
            },
        )
        .boxed()
}

fn resource() -> impl Strategy<Value = Resource> {
    // Two groups, boxed: one union of eight arms of tuples makes a value tree too large
    // for a debug test thread's stack.
    let others = prop_oneof![
        (namespace(), text()).prop_map(|(namespace, path)| Resource::Path { namespace, path }),
        (namespace(), text(), any::<bool>()).prop_map(|(namespace, command, network)| {
            Resource::Command {
                namespace,
                command,
                network,
            }
        }),
        (text(), any::<u16>(), text()).prop_map(|(host, port, scheme)| Resource::Host {
            host,
            port,
            scheme
        }),
        (text(), text()).prop_map(|(name, digest)| Resource::Model { name, digest }),
        (namespace(), text(), any::<u32>(), any::<u32>(), text()).prop_map(
            |(namespace, model, width, height, path)| Resource::Image {
                namespace,
                model,
                width,
                height,
                path
            }
        ),
        (namespace(), any::<[u8; 16]>()).prop_map(|(namespace, id)| Resource::Mission {
            namespace,
            id: MissionId::from_bytes(id)
        }),
        (namespace(), any::<[u8; 16]>()).prop_map(|(namespace, id)| Resource::Agent {
            namespace,
            id: AgentId::from_bytes(id)
        }),
    ];
    prop_oneof![7 => others.boxed(), 1 => plugin_resource().boxed()]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn context() -> impl Strategy<Value = (bool, bool, Option<[u8; 16]>)> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::option::of(any::<[u8; 16]>()),
    )
}

/// Requests of every shape, most of them malformed: what a confused or hostile caller
/// might send.
fn hostile() -> impl Strategy<Value = Request> {
    (
        level(),
        namespace(),
        action(),
        resource(),
        context(),
        prop::collection::btree_map(text(), json(), 0..4),
    )
        .prop_map(
            |(level, namespace, action, resource, (destructive, in_cell, mission), extra)| {
                Request {
                    principal: Principal {
                        agent: AgentId::from_bytes([7; 16]),
                        level,
                        namespace,
                    },
                    action,
                    resource,
                    context: Context {
                        mission: mission.map(MissionId::from_bytes),
                        destructive,
                        in_cell,
                        approval: None,
                        extra: extra.into_iter().collect(),
                        node_region: None,
                        regions: None,
                    },
                }
            },
        )
}

/// Well-formed requests that reach Cedar: the action fits the resource, strings are in
/// canonical form, and the namespace is usually the agent's own.
fn well_formed() -> impl Strategy<Value = Request> {
    let ns = || {
        prop_oneof![4 => Just("team-a"), 1 => Just("team-b")]
            .prop_map(|s| Namespace::new(s).unwrap())
    };
    let path = "(prod|notes|secrets|src)(/[a-z.]{1,5}){0,3}";
    // Two groups, boxed, as in `resource`.
    let others = prop_oneof![
        (
            prop::sample::select(vec![
                "fs.read",
                "fs.list",
                "fs.write",
                "fs.delete",
                "db.query"
            ]),
            ns(),
            path
        )
            .prop_map(|(a, namespace, path)| (a, Resource::Path { namespace, path })),
        (ns(), "[a-z]{1,6}( [a-z-]{1,6}){0,2}", any::<bool>()).prop_map(
            |(namespace, command, network)| {
                (
                    "cmd.run",
                    Resource::Command {
                        namespace,
                        command,
                        network,
                    },
                )
            }
        ),
        (
            "[a-z]{1,6}\\.example\\.com",
            any::<u16>(),
            prop::sample::select(vec!["https", "http"])
        )
            .prop_map(|(host, port, scheme)| (
                "http.fetch",
                Resource::Host {
                    host,
                    port,
                    scheme: scheme.to_owned()
                }
            )),
        ("[a-z0-9-]{1,12}", "[0-9a-f]{64}")
            .prop_map(|(name, digest)| ("model.use", Resource::Model { name, digest })),
        (
            ns(),
            "[a-z0-9-]{1,12}",
            1u32..4096,
            1u32..4096,
            "[a-z]{1,8}\\.png"
        )
            .prop_map(|(namespace, model, width, height, path)| (
                "image.generate",
                Resource::Image {
                    namespace,
                    model,
                    width,
                    height,
                    path
                }
            )),
        (
            prop::sample::select(vec![
                "mission.submit",
                "mission.cancel",
                "mission.read",
                "mission.finish",
                "record.read"
            ]),
            ns()
        )
            .prop_map(|(a, namespace)| (
                a,
                Resource::Mission {
                    namespace,
                    id: MissionId::from_bytes([9; 16])
                }
            )),
        (
            prop::sample::select(vec!["agent.send", "record.read"]),
            ns()
        )
            .prop_map(|(a, namespace)| (
                a,
                Resource::Agent {
                    namespace,
                    id: AgentId::from_bytes([8; 16])
                }
            )),
    ];
    let plugin = (
        ns(),
        prop::sample::select(vec!["wordcount", "fetcher"]),
        prop::sample::select(vec!["none", "read", "write"]),
        prop::collection::vec("[a-z]{1,6}\\.example\\.com:443", 0..2),
    )
        .prop_map(|(namespace, name, workspace, hosts)| {
            (
                if name == "wordcount" {
                    "plugin.wordcount"
                } else {
                    "plugin.fetcher"
                },
                Resource::Plugin {
                    namespace,
                    name: name.to_owned(),
                    version: "1.0.0".to_owned(),
                    publisher: "ab".repeat(32),
                    digest: "cd".repeat(32),
                    workspace: workspace.to_owned(),
                    hosts,
                },
            )
        })
        .boxed();
    let resource = prop_oneof![7 => others.boxed(), 1 => plugin];
    let value = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "[a-z*\"]{0,8}".prop_map(Value::from),
    ];
    (
        level(),
        resource,
        context(),
        prop::collection::btree_map(prop::sample::select(vec!["ok", "ticket", "n"]), value, 0..3),
    )
        .prop_map(
            |(level, (action, resource), (destructive, in_cell, mission), extra)| Request {
                principal: Principal {
                    agent: AgentId::from_bytes([7; 16]),
                    level,
                    namespace: Namespace::new("team-a").unwrap(),
                },
                action: action.to_owned(),
                resource,
                context: Context {
                    mission: mission.map(MissionId::from_bytes),
                    destructive,
                    in_cell,
                    approval: None,
                    extra: extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    node_region: None,
                    regions: None,
                },
            },
        )
}

/// Either kind, with an approval (matching the request or not, approving or rejecting)
/// a third of the time.
fn request() -> impl Strategy<Value = Request> {
    (
        prop_oneof![1 => hostile(), 3 => well_formed()],
        prop::option::weighted(0.33, (level(), any::<bool>(), any::<bool>())),
    )
        .prop_map(|(mut r, approval)| {
            if let Some((level, approve, matching)) = approval {
                r.context.approval = Some(VerifiedApproval {
                    id: ApprovalId::from_bytes([1; 16]),
                    verdict: if approve {
                        Verdict::Approve
                    } else {
                        Verdict::Reject
                    },
                    approver: Subject::Operator(OperatorName::new("alice").unwrap()),
                    level,
                    request: if matching {
                        request_digest(&r)
                    } else {
                        aura_core::Hash::ZERO
                    },
                });
            }
            r
        })
}

/// Policies with every kind of scope constraint, for comparing sliced and whole
/// evaluation.
static SCOPED: std::sync::LazyLock<PolicySet> = std::sync::LazyLock::new(|| {
    let agent = AgentId::from_bytes([7; 16]);
    let other = AgentId::from_bytes([8; 16]);
    let text = format!(
        r#"
@id("p-eq") permit (principal == Aura::Agent::"{agent}", action == Aura::Action::"fs.read", resource);
@id("p-in-ns") permit (principal in Aura::Namespace::"team-b", action, resource);
@id("p-is-in") permit (principal is Aura::Agent in Aura::Level::"L3", action in [Aura::Action::"fs.write", Aura::Action::"cmd.run"], resource);
@id("p-is") forbid (principal is Aura::Agent, action in Aura::Action::"read", resource) when {{ context.destructive }};
@id("r-eq") permit (principal, action == Aura::Action::"agent.send", resource == Aura::Agent::"{other}");
@id("r-self") forbid (principal, action == Aura::Action::"agent.send", resource == Aura::Agent::"{agent}");
@id("r-in-level") @escalate("L4") forbid (principal, action, resource in Aura::Level::"L2")
  unless {{ context has approval && context.approval.level >= 4 }};
@id("r-is-in") permit (principal, action, resource is Aura::Mission in Aura::Namespace::"team-a");
@id("r-is") forbid (principal in Aura::Level::"L4", action in Aura::Action::"tool", resource is Aura::Host);
@id("a-group") permit (principal, action in Aura::Action::"lifecycle", resource) when {{ context.in_cell }};
@id("err") permit (principal in Aura::Level::"L2", action == Aura::Action::"model.use", resource)
  when {{ 9223372036854775807 + 1 > 0 }};
"#
    );
    let user = PolicySet::parse("scoped.cedar", &text).unwrap();
    PolicySet::defaults().merge(user).unwrap()
});

/// Built once: loading validates every policy, which costs far more than a decision.
static POLICIES: std::sync::LazyLock<PolicySet> = std::sync::LazyLock::new(|| {
    let user = PolicySet::parse(
        "props.cedar",
        r#"
@id("fetch") permit (principal, action == Aura::Action::"http.fetch", resource)
when { resource.host like "*.example.com" && resource.port < 1024 };
@id("custom") permit (principal in Aura::Level::"L2", action == Aura::Action::"tool.custom", resource)
when { context.extra.hasTag("ok") && context.extra.getTag("ok") == "true" };
@id("prod") @escalate("L4")
forbid (principal, action, resource is Aura::Path) when { resource.path like "prod/*" }
unless { context has approval && context.approval.level >= 4 };
"#,
    )
    .unwrap();
    PolicySet::defaults().merge(user).unwrap()
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decide_never_panics_and_is_a_function_of_the_request(r in request()) {
        let set = &*POLICIES;
        let first = decide(set, &r);
        // Errors always deny; escalations name a level and the forbids that asked for it.
        if !first.errors.is_empty() {
            prop_assert_eq!(first.outcome, Outcome::Deny);
        }
        if let Outcome::Escalate { .. } = first.outcome {
            prop_assert!(!first.deciding.is_empty());
        }
        // A request that crosses namespaces is never permitted.
        if let Some(ns) = r.resource.namespace() && ns != &r.principal.namespace {
            prop_assert_eq!(first.outcome, Outcome::Deny);
        }
        // A rejecting approval never permits.
        if r.context.approval.as_ref().is_some_and(|a| a.verdict == Verdict::Reject) {
            prop_assert_eq!(first.outcome, Outcome::Deny);
        }
        prop_assert_eq!(&decide(set, &r), &first);
        let copy = r.clone();
        prop_assert_eq!(&decide(&set.clone(), &copy), &first);
        // The same request, through JSON (as `aura policy check --request` reads it).
        let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        prop_assert_eq!(&decide(set, &back), &first);
        prop_assert_eq!(request_digest(&back), request_digest(&r));
    }

    /// Evaluating only the policies whose scope matches gives the same answer as
    /// evaluating them all: decision, deciding policies, errors and reason.
    #[test]
    fn slicing_changes_nothing(r in request()) {
        for set in [&*POLICIES, &*SCOPED] {
            prop_assert_eq!(decide(set, &r), decide_unsliced(set, &r));
        }
    }
}
