//! The decision table: PERMIT, DENY and ESCALATE under the default set and under user
//! policies merged into it; evaluation errors deny; forbid wins; levels inherit; namespaces
//! stay isolated even under a user policy that permits everything.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use aura_identity::Level::{self, L1, L2, L3, L4};
use aura_policy::{Outcome, PolicySet, Request, decide};
use common::*;
use serde_json::json;

const PERMIT: Outcome = Outcome::Permit;
const DENY: Outcome = Outcome::Deny;
const fn escalate(level: Level) -> Outcome {
    Outcome::Escalate { level }
}

/// Decides every row and reports every row that came out differently, at once.
#[track_caller]
fn check(set: &PolicySet, rows: Vec<(&str, Request, Outcome, &[&str])>) {
    let mut wrong = Vec::new();
    for (name, request, outcome, deciding) in rows {
        let d = decide(set, &request);
        if d.outcome != outcome || d.deciding != deciding {
            wrong.push(format!(
                "{name}: expected {outcome} by {deciding:?}, got {} by {:?} ({}; errors {:?})",
                d.outcome, d.deciding, d.reason, d.errors
            ));
        }
        // Any error means DENY.
        assert!(d.errors.is_empty() || d.outcome == DENY, "{name}: {d:?}");
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

const READ: &[&str] = &["aura.workspace.read"];
const WRITE: &[&str] = &["aura.workspace.write"];
const DESTRUCTIVE: &[&str] = &["aura.destructive.escalate"];
const ISOLATION: &[&str] = &["aura.namespace-isolation"];
const NONE: &[&str] = &[];

#[test]
fn defaults() {
    let set = PolicySet::defaults();
    assert!(set.warnings().is_empty(), "{:?}", set.warnings());
    let p = || path("team-a", "notes/x.md");
    check(
        &set,
        vec![
            // Workspace reads at L1, and every level above inherits them.
            ("read at L1", req(L1, "fs.read", p()), PERMIT, READ),
            (
                "list the root at L1",
                req(L1, "fs.list", path("team-a", ".")),
                PERMIT,
                READ,
            ),
            ("read at L4", req(L4, "fs.read", p()), PERMIT, READ),
            // Writes at L2: L1 gets nothing, L2 and above get the permit.
            ("write at L1", req(L1, "fs.write", p()), DENY, NONE),
            ("write at L2", req(L2, "fs.write", p()), PERMIT, WRITE),
            ("write at L3", req(L3, "fs.write", p()), PERMIT, WRITE),
            ("write at L4", req(L4, "fs.write", p()), PERMIT, WRITE),
            // Destructive actions escalate to L3, unless the agent is L3 itself.
            (
                "delete at L2",
                req(L2, "fs.delete", p()),
                escalate(L3),
                DESTRUCTIVE,
            ),
            (
                "delete at L3",
                req(L3, "fs.delete", p()),
                PERMIT,
                &["aura.workspace.delete"],
            ),
            // An L1 agent may not delete even with an approval: no escalation to offer.
            ("delete at L1", req(L1, "fs.delete", p()), DENY, DESTRUCTIVE),
            (
                "destructive write at L2",
                req(L2, "fs.write", p()).destructive(),
                escalate(L3),
                DESTRUCTIVE,
            ),
            (
                "destructive write at L4",
                req(L4, "fs.write", p()).destructive(),
                PERMIT,
                WRITE,
            ),
            // Commands at L2, in a cell, without network.
            (
                "command in a cell at L2",
                req(L2, "cmd.run", command("team-a", "cargo test", false)).in_cell(),
                PERMIT,
                &["aura.cmd.run"],
            ),
            (
                "command in a cell at L1",
                req(L1, "cmd.run", command("team-a", "ls", false)).in_cell(),
                DENY,
                NONE,
            ),
            (
                "command outside a cell",
                req(L4, "cmd.run", command("team-a", "ls", false)),
                DENY,
                &["aura.cmd.cell-only"],
            ),
            (
                "command with network",
                req(L4, "cmd.run", command("team-a", "curl x", true)).in_cell(),
                DENY,
                NONE,
            ),
            (
                "destructive command in a cell at L2",
                req(L2, "cmd.run", command("team-a", "rm -rf target", false))
                    .in_cell()
                    .destructive(),
                escalate(L3),
                DESTRUCTIVE,
            ),
            // A hard forbid and an escalating one: no approval can help, so deny.
            (
                "destructive command outside a cell",
                req(L2, "cmd.run", command("team-a", "rm -rf target", false)).destructive(),
                DENY,
                &["aura.cmd.cell-only", "aura.destructive.escalate"],
            ),
            // No network by default, whatever the level.
            (
                "fetch at L4",
                req(L4, "http.fetch", host("example.com", 443, "https")),
                DENY,
                NONE,
            ),
            // Messages, missions, records and models within the namespace.
            (
                "send at L1",
                req(L1, "agent.send", agent("team-a")),
                PERMIT,
                &["aura.agent.send"],
            ),
            (
                "send to oneself",
                req(
                    L1,
                    "agent.send",
                    aura_policy::Resource::Agent {
                        namespace: ns("team-a"),
                        id: AGENT,
                    },
                ),
                PERMIT,
                &["aura.agent.send"],
            ),
            (
                "finish at L1",
                req(L1, "mission.finish", mission("team-a")),
                PERMIT,
                &["aura.mission.finish"],
            ),
            (
                "submit at L1",
                req(L1, "mission.submit", mission("team-a")),
                PERMIT,
                &["aura.mission.lifecycle"],
            ),
            (
                "cancel at L1",
                req(L1, "mission.cancel", mission("team-a")),
                PERMIT,
                &["aura.mission.lifecycle"],
            ),
            (
                "read a record at L1",
                req(L1, "record.read", agent("team-a")),
                PERMIT,
                &["aura.mission.lifecycle"],
            ),
            (
                "use a model at L1",
                req(L1, "model.use", model()),
                PERMIT,
                &["aura.model.use"],
            ),
            // A tool Aura does not know is permitted by nothing in the defaults.
            (
                "custom tool",
                req(L4, "db.query", path("team-a", "db")),
                DENY,
                NONE,
            ),
            (
                "custom destructive tool at L2",
                req(L2, "db.drop", path("team-a", "db")).destructive(),
                DENY,
                DESTRUCTIVE,
            ),
        ],
    );
}

#[test]
fn namespace_isolation() {
    // A user file that permits everything, to everyone.
    let permissive = PolicySet::parse(
        "yolo.cedar",
        r#"@id("yolo") permit (principal, action, resource);"#,
    )
    .unwrap();
    let merged = PolicySet::defaults().merge(permissive.clone()).unwrap();
    for set in [&PolicySet::defaults(), &merged, &permissive] {
        check(
            set,
            vec![
                (
                    "read",
                    req(L4, "fs.read", path("team-b", "x")),
                    DENY,
                    ISOLATION,
                ),
                (
                    "write",
                    req(L4, "fs.write", path("team-b", "x")),
                    DENY,
                    ISOLATION,
                ),
                (
                    "command",
                    req(L4, "cmd.run", command("team-b", "ls", false)).in_cell(),
                    DENY,
                    ISOLATION,
                ),
                (
                    "submit",
                    req(L4, "mission.submit", mission("team-b")),
                    DENY,
                    ISOLATION,
                ),
                (
                    "cancel",
                    req(L4, "mission.cancel", mission("team-b")),
                    DENY,
                    ISOLATION,
                ),
                (
                    "read mission",
                    req(L4, "mission.read", mission("team-b")),
                    DENY,
                    ISOLATION,
                ),
                (
                    "finish",
                    req(L4, "mission.finish", mission("team-b")),
                    DENY,
                    ISOLATION,
                ),
                (
                    "record",
                    req(L4, "record.read", mission("team-b")),
                    DENY,
                    ISOLATION,
                ),
                (
                    "agent record",
                    req(L4, "record.read", agent("team-b")),
                    DENY,
                    ISOLATION,
                ),
                (
                    "send",
                    req(L4, "agent.send", agent("team-b")),
                    DENY,
                    ISOLATION,
                ),
                (
                    "custom tool",
                    req(L4, "db.query", path("team-b", "db")),
                    DENY,
                    ISOLATION,
                ),
            ],
        );
    }
    // The permissive policy works inside the namespace, but cannot lift a forbid.
    check(
        &merged,
        vec![
            (
                "write at L1",
                req(L1, "fs.write", path("team-a", "x")),
                PERMIT,
                &["yolo"],
            ),
            (
                "fetch",
                req(L1, "http.fetch", host("example.com", 443, "https")),
                PERMIT,
                &["yolo"],
            ),
            (
                "command outside a cell",
                req(L4, "cmd.run", command("team-a", "ls", false)),
                DENY,
                &["aura.cmd.cell-only"],
            ),
            // With a permit for L1 now, the destructive escalation has something to offer.
            (
                "delete at L1",
                req(L1, "fs.delete", path("team-a", "x")),
                escalate(L3),
                DESTRUCTIVE,
            ),
        ],
    );
}

#[test]
fn user_policies() {
    let user = PolicySet::parse(
        "team-a.cedar",
        r#"
// Agents of team-a may fetch the documentation site, over https only.
@id("team-a.fetch-docs")
permit (
  principal in Aura::Namespace::"team-a",
  action == Aura::Action::"http.fetch",
  resource is Aura::Host
) when { resource.scheme == "https" && resource.host == "docs.example.com" };

// Writing under prod/ needs an L4 person's approval.
@id("team-a.prod-needs-l4")
@escalate("L4")
forbid (principal, action == Aura::Action::"fs.write", resource is Aura::Path)
when { resource.path like "prod/*" }
unless { context has approval && context.approval.level >= 4 };

// The deploy tool (not one of Aura's) at L3, with a change ticket.
@id("team-a.deploy")
permit (principal in Aura::Level::"L3", action == Aura::Action::"tool.custom", resource is Aura::Command)
when {
  context.tool == "acme.deploy" &&
  context.extra.hasTag("ticket") && context.extra.getTag("ticket") like "CHG-*"
};

// Nobody touches secrets/, ever.
@id("team-a.no-secrets")
forbid (principal, action in Aura::Action::"fs", resource is Aura::Path)
when { resource.path like "secrets/*" };
"#,
    )
    .unwrap();
    assert!(user.warnings().is_empty(), "{:?}", user.warnings());
    let set = PolicySet::defaults().merge(user).unwrap();
    let deploy = |ticket: &str| {
        req(L3, "acme.deploy", command("team-a", "deploy web", false))
            .extra("ticket", json!(ticket))
    };
    check(
        &set,
        vec![
            (
                "fetch docs",
                req(L1, "http.fetch", host("docs.example.com", 443, "https")),
                PERMIT,
                &["team-a.fetch-docs"],
            ),
            (
                "fetch docs over http",
                req(L1, "http.fetch", host("docs.example.com", 80, "http")),
                DENY,
                NONE,
            ),
            (
                "fetch elsewhere",
                req(L1, "http.fetch", host("evil.example.com", 443, "https")),
                DENY,
                NONE,
            ),
            // Hosts that only look alike are not in canonical form: denied, not guessed at.
            (
                "fetch DOCS",
                req(L1, "http.fetch", host("DOCS.example.com", 443, "https")),
                DENY,
                NONE,
            ),
            (
                "fetch docs.",
                req(L1, "http.fetch", host("docs.example.com.", 443, "https")),
                DENY,
                NONE,
            ),
            (
                "write prod at L2",
                req(L2, "fs.write", path("team-a", "prod/app.toml")),
                escalate(L4),
                &["team-a.prod-needs-l4"],
            ),
            // Both escalations decide: the higher level is needed.
            (
                "destructive write prod at L2",
                req(L2, "fs.write", path("team-a", "prod/app.toml")).destructive(),
                escalate(L4),
                &["aura.destructive.escalate", "team-a.prod-needs-l4"],
            ),
            (
                "write elsewhere at L2",
                req(L2, "fs.write", path("team-a", "notes/x")),
                PERMIT,
                WRITE,
            ),
            (
                "deploy with a ticket",
                deploy("CHG-42"),
                PERMIT,
                &["team-a.deploy"],
            ),
            ("deploy with a bad ticket", deploy("please"), DENY, NONE),
            (
                "deploy without a ticket",
                req(L3, "acme.deploy", command("team-a", "deploy web", false)),
                DENY,
                NONE,
            ),
            (
                "deploy at L2",
                req(L2, "acme.deploy", command("team-a", "deploy web", false))
                    .extra("ticket", json!("CHG-42")),
                DENY,
                NONE,
            ),
            // Forbid wins over the default permits, at every level.
            (
                "read a secret at L4",
                req(L4, "fs.read", path("team-a", "secrets/key")),
                DENY,
                &["team-a.no-secrets"],
            ),
            // ...and over an escalation: no approval can lift a hard forbid.
            (
                "delete a secret at L2",
                req(L2, "fs.delete", path("team-a", "secrets/key")),
                DENY,
                &["aura.destructive.escalate", "team-a.no-secrets"],
            ),
            // A path that would escape a `like` pattern is refused as it stands.
            (
                "dot-dot into secrets",
                req(L4, "fs.read", path("team-a", "notes/../secrets/key")),
                DENY,
                NONE,
            ),
        ],
    );
}

#[test]
fn evaluation_errors_deny() {
    // This permit overflows for every request it reaches; a second permit would allow.
    let user = PolicySet::parse(
        "broken.cedar",
        r#"
@id("broken")
permit (principal, action == Aura::Action::"fs.write", resource)
when { 9223372036854775807 + 1 > 0 };
"#,
    )
    .unwrap();
    let set = PolicySet::defaults().merge(user).unwrap();
    let d = decide(&set, &req(L2, "fs.write", path("team-a", "x")));
    assert_eq!(d.outcome, DENY, "{d:?}");
    assert_eq!(d.deciding, ["broken"]);
    assert_eq!(d.errors.len(), 1);
    assert!(
        d.errors[0].contains("broken") && d.errors[0].contains("overflow"),
        "{d:?}"
    );
    // Requests the broken policy does not reach are unaffected.
    assert_eq!(
        decide(&set, &req(L1, "fs.read", path("team-a", "x"))).outcome,
        PERMIT
    );

    // An error in a forbid denies too, even though the forbid would not have applied.
    let user = PolicySet::parse(
        "broken-forbid.cedar",
        r#"
@id("broken-forbid")
forbid (principal, action, resource is Aura::Host)
when { resource.port * 9223372036854775807 < 0 };
@id("fetch-all") permit (principal, action == Aura::Action::"http.fetch", resource);
"#,
    )
    .unwrap();
    let d = decide(
        &user,
        &req(L1, "http.fetch", host("example.com", 443, "https")),
    );
    assert_eq!(d.outcome, DENY, "{d:?}");
    assert_eq!(d.deciding, ["broken-forbid"]);
    // Port 0 multiplies without overflow: the permit then decides.
    let d = decide(
        &user,
        &req(L1, "http.fetch", host("example.com", 0, "https")),
    );
    assert_eq!(d.outcome, PERMIT, "{d:?}");
}

#[test]
fn escalating_forbids_that_ignore_approvals_deny() {
    let user = PolicySet::parse(
        "stubborn.cedar",
        r#"
@id("stubborn")
@escalate("L2")
forbid (principal, action == Aura::Action::"fs.write", resource)
when { resource.path like "locked/*" };
"#,
    )
    .unwrap();
    // Loading warns that no approval can lift it...
    assert_eq!(user.warnings().len(), 1, "{:?}", user.warnings());
    assert!(user.warnings()[0].reason.contains("context.approval"));
    // ...and deciding denies rather than ask a person for an approval that cannot help.
    let set = PolicySet::defaults().merge(user).unwrap();
    let d = decide(&set, &req(L2, "fs.write", path("team-a", "locked/x")));
    assert_eq!(d.outcome, DENY, "{d:?}");
    assert_eq!(d.deciding, ["stubborn"]);
}

#[test]
fn malformed_requests_deny_with_a_reason() {
    let set = PolicySet::defaults();
    let cases = [
        (
            req(L4, "fs.write", host("example.com", 443, "https")),
            "does not apply to a host",
        ),
        (
            req(L4, "fs.read", path("team-a", "/etc/passwd")),
            "is absolute",
        ),
        (req(L4, "fs.read", path("team-a", "a/../b")), "`..`"),
        (req(L4, "fs.read", path("team-a", "")), "is empty"),
        (
            req(L4, "http.fetch", host("Example.com", 443, "https")),
            "canonical",
        ),
        (
            req(L4, "http.fetch", host("example.com", 443, "HTTPS")),
            "canonical",
        ),
        (
            req(L4, "tool", path("team-a", "x")),
            "not an action a request may name",
        ),
        (
            req(L4, "tool.custom", path("team-a", "x")),
            "not an action a request may name",
        ),
        (
            req(L4, "mission.delete", mission("team-a")),
            "not an action a request may name",
        ),
        (req(L4, "", path("team-a", "x")), "not a valid action name"),
        (
            req(L4, "fs read", path("team-a", "x")),
            "not a valid action name",
        ),
        (
            req(L4, "cmd.run", command("team-a", "", false)).in_cell(),
            "is empty",
        ),
        (
            req(L4, "fs.read", path("team-a", "x")).extra("", json!(1)),
            "not 1-128 printable",
        ),
        (
            req(L4, "fs.read", path("team-a", "x")).extra("big", json!("x".repeat(20_000))),
            "longer than",
        ),
        // Floats do not survive JSON bit for bit, so a recorded request could change.
        (
            req(L4, "fs.read", path("team-a", "x")).extra("ratio", json!({"r": 0.5})),
            "fractional number",
        ),
    ];
    for (request, why) in cases {
        let d = decide(&set, &request);
        assert_eq!(d.outcome, DENY, "{request:?}");
        assert!(
            d.errors.len() == 1 && d.errors[0].contains(why),
            "{request:?}: {d:?}"
        );
    }
    let mut deep = json!(null);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    let d = decide(
        &set,
        &req(L4, "fs.read", path("team-a", "x")).extra("deep", deep),
    );
    assert_eq!(d.outcome, DENY);
    assert!(d.errors[0].contains("nests deeper"), "{d:?}");
    let mut r = req(L4, "fs.read", path("team-a", "x"));
    for i in 0..65 {
        r = r.extra(&format!("k{i}"), json!(i));
    }
    assert!(decide(&set, &r).errors[0].contains("entries"));
}

#[test]
fn extra_values_reach_policies_as_text() {
    let user = PolicySet::parse(
        "extra.cedar",
        r#"
@id("extra")
permit (principal, action == Aura::Action::"fs.read", resource)
when {
  context.extra.hasTag("n") && context.extra.getTag("n") == "3" &&
  context.extra.hasTag("o") && context.extra.getTag("o") == "{\"a\":[true,null],\"b\":1}"
};
"#,
    )
    .unwrap();
    let r = req(L1, "fs.read", path("team-a", "x"))
        .extra("n", json!(3))
        .extra("o", json!({"b": 1, "a": [true, null]}));
    assert_eq!(decide(&user, &r).outcome, PERMIT);
    assert_eq!(decide(&user, &r.extra("n", json!(4))).outcome, DENY);
}

#[test]
fn an_empty_set_denies_everything() {
    let set = PolicySet::empty();
    let d = decide(&set, &req(L4, "fs.read", path("team-a", "x")));
    assert_eq!((d.outcome, d.deciding.len()), (DENY, 0));
    assert_eq!(d.reason, "denied: no policy permits this");
}

#[test]
fn decisions_serialise_for_the_record() {
    let set = PolicySet::defaults();
    let d = decide(&set, &req(L2, "fs.delete", path("team-a", "x")));
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        json!({
            "outcome": "escalate",
            "level": "L3",
            "deciding": ["aura.destructive.escalate"],
            "errors": [],
            "reason": "escalated by aura.destructive.escalate: needs an approval at L3 or above",
        })
    );
    let d = decide(&set, &req(L2, "fs.write", path("team-a", "x")));
    assert_eq!(serde_json::to_value(&d).unwrap()["outcome"], "permit");
}

#[test]
fn requests_round_trip_through_json() {
    let r = req(L2, "cmd.run", command("team-a", "make", false))
        .in_cell()
        .extra("ticket", json!("CHG-1"));
    let text = serde_json::to_string(&r).unwrap();
    let back: Request = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    // Unknown fields and bad values are refused, not ignored.
    let mut v = serde_json::to_value(&r).unwrap();
    v["context"]["approved"] = json!(true);
    assert!(serde_json::from_value::<Request>(v).is_err());
    let mut v = serde_json::to_value(&r).unwrap();
    v["principal"]["level"] = json!("L5");
    assert!(serde_json::from_value::<Request>(v).is_err());
    let mut v = serde_json::to_value(&r).unwrap();
    v["resource"]["namespace"] = json!("Team A");
    assert!(serde_json::from_value::<Request>(v).is_err());
}

fn mcp_tool(server: &str, tool: &str, trusted: bool) -> aura_policy::Resource {
    aura_policy::Resource::McpTool {
        server: server.into(),
        tool: tool.into(),
        trusted,
    }
}

#[test]
fn mcp_tools_under_the_defaults_and_an_operator_forbid() {
    const MCP: &[&str] = &["aura.mcp.call"];
    const UNKNOWN: &[&str] = &["aura.mcp.unknown-server.escalate"];
    let known = || mcp_tool("files", "read", true);
    let unknown = || mcp_tool("stranger", "read", false);
    check(
        &PolicySet::defaults(),
        vec![
            (
                "a known server's tool at L1",
                req(L1, "mcp.files.read", known()),
                DENY,
                NONE,
            ),
            (
                "a known server's tool at L2",
                req(L2, "mcp.files.read", known()),
                PERMIT,
                MCP,
            ),
            (
                "an unknown server's tool at L2",
                req(L2, "mcp.stranger.read", unknown()),
                escalate(L3),
                UNKNOWN,
            ),
            (
                "an unknown server's tool at L3",
                req(L3, "mcp.stranger.read", unknown()),
                PERMIT,
                MCP,
            ),
            // The name must be the resource's: a request cannot be judged as one tool and
            // name another, nor use the MCP resource under another action.
            (
                "a name that is not the resource's",
                req(L4, "mcp.files.write", known()),
                DENY,
                NONE,
            ),
            ("the bare action", req(L4, "mcp.call", known()), DENY, NONE),
            (
                "another action on an MCP tool",
                req(L4, "fs.read", known()),
                DENY,
                NONE,
            ),
            (
                "a custom tool on an MCP tool",
                req(L4, "acme.deploy", known()),
                DENY,
                NONE,
            ),
            (
                "an MCP name on a path",
                req(L4, "mcp.files.read", path("team-a", "x")),
                DENY,
                NONE,
            ),
        ],
    );
    let operator = PolicySet::parse(
        "ops.cedar",
        r#"@id("ops.no-delete")
forbid (principal, action == Aura::Action::"mcp.call", resource is Aura::McpTool)
when { resource.server == "files" && resource.tool == "delete" };"#,
    )
    .unwrap();
    let set = PolicySet::defaults().merge(operator).unwrap();
    check(
        &set,
        vec![
            (
                "the forbidden tool",
                req(L4, "mcp.files.delete", mcp_tool("files", "delete", true)),
                DENY,
                &["ops.no-delete"],
            ),
            (
                "another tool of the server",
                req(L2, "mcp.files.read", known()),
                PERMIT,
                MCP,
            ),
        ],
    );
}

fn plugin(namespace: &str, name: &str, workspace: &str, hosts: &[&str]) -> aura_policy::Resource {
    aura_policy::Resource::Plugin {
        namespace: ns(namespace),
        name: name.into(),
        version: "1.0.0".into(),
        publisher: "ab".repeat(32),
        digest: "cd".repeat(32),
        workspace: workspace.into(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
    }
}

#[test]
fn plugins_under_the_defaults_and_an_operator_forbid() {
    const PLUGIN: &[&str] = &["aura.plugin.call"];
    const POWERFUL: &[&str] = &["aura.plugin.powerful.escalate"];
    let reader = || plugin("team-a", "wordcount", "read", &[]);
    let writer = || plugin("team-a", "wordcount", "write", &[]);
    let online = || plugin("team-a", "fetcher", "none", &["example.com:443"]);
    check(
        &PolicySet::defaults(),
        vec![
            (
                "a reading plugin at L1",
                req(L1, "plugin.wordcount", reader()),
                DENY,
                NONE,
            ),
            (
                "a reading plugin at L2",
                req(L2, "plugin.wordcount", reader()),
                PERMIT,
                PLUGIN,
            ),
            (
                "a writing plugin at L2",
                req(L2, "plugin.wordcount", writer()),
                escalate(L3),
                POWERFUL,
            ),
            (
                "a writing plugin at L3",
                req(L3, "plugin.wordcount", writer()),
                PERMIT,
                PLUGIN,
            ),
            (
                "a networked plugin at L2",
                req(L2, "plugin.fetcher", online()),
                escalate(L3),
                POWERFUL,
            ),
            // The name must be the resource's, and the resource only a plugin's.
            (
                "a name that is not the resource's",
                req(L4, "plugin.other", reader()),
                DENY,
                NONE,
            ),
            (
                "the bare action",
                req(L4, "plugin.call", reader()),
                DENY,
                NONE,
            ),
            (
                "a plugin name on a path",
                req(L4, "plugin.wordcount", path("team-a", "x")),
                DENY,
                NONE,
            ),
            (
                "another action on a plugin",
                req(L4, "fs.read", reader()),
                DENY,
                NONE,
            ),
            (
                "a plugin of another namespace",
                req(
                    L4,
                    "plugin.wordcount",
                    plugin("team-b", "wordcount", "read", &[]),
                ),
                DENY,
                &["aura.namespace-isolation"],
            ),
            (
                "a workspace access that is not one",
                req(
                    L4,
                    "plugin.wordcount",
                    plugin("team-a", "wordcount", "all", &[]),
                ),
                DENY,
                NONE,
            ),
        ],
    );
    let operator = PolicySet::parse(
        "ops.cedar",
        r#"@id("ops.no-wordcount")
forbid (principal, action == Aura::Action::"plugin.call", resource is Aura::Plugin)
when { resource.name == "wordcount" };"#,
    )
    .unwrap();
    let set = PolicySet::defaults().merge(operator).unwrap();
    check(
        &set,
        vec![
            (
                "the forbidden plugin",
                req(L4, "plugin.wordcount", reader()),
                DENY,
                &["ops.no-wordcount"],
            ),
            (
                "another plugin",
                req(L3, "plugin.fetcher", online()),
                PERMIT,
                PLUGIN,
            ),
        ],
    );
}

fn image(namespace: &str, model: &str, side: u32) -> aura_policy::Resource {
    aura_policy::Resource::Image {
        namespace: ns(namespace),
        model: model.into(),
        width: side,
        height: side,
        path: "art/apple.png".into(),
    }
}

#[test]
fn images_under_the_defaults_and_an_operator_size_limit() {
    const IMAGE: &[&str] = &["aura.image.generate"];
    check(
        &PolicySet::defaults(),
        vec![
            (
                "Aura's own model at L1",
                req(L1, "image.generate", image("team-a", "aura-tiny-emoji", 64)),
                DENY,
                NONE,
            ),
            (
                "Aura's own model at L2",
                req(L2, "image.generate", image("team-a", "aura-tiny-emoji", 64)),
                PERMIT,
                IMAGE,
            ),
            (
                "another model, even at L4",
                req(L4, "image.generate", image("team-a", "sd15", 512)),
                DENY,
                NONE,
            ),
            (
                "an image in another namespace's workspace",
                req(L4, "image.generate", image("team-b", "aura-tiny-emoji", 64)),
                DENY,
                ISOLATION,
            ),
            (
                "another action on an image",
                req(L4, "fs.write", image("team-a", "aura-tiny-emoji", 64)),
                DENY,
                NONE,
            ),
        ],
    );
    let operator = PolicySet::parse(
        "ops.cedar",
        r#"@id("ops.sd15")
permit (principal in Aura::Level::"L2", action == Aura::Action::"image.generate", resource is Aura::Image)
when { resource.model == "sd15" };
@id("ops.small-images")
forbid (principal, action == Aura::Action::"image.generate", resource is Aura::Image)
when { resource.width > 512 || resource.height > 512 };"#,
    )
    .unwrap();
    let set = PolicySet::defaults().merge(operator).unwrap();
    check(
        &set,
        vec![
            (
                "the permitted model at a permitted size",
                req(L2, "image.generate", image("team-a", "sd15", 512)),
                PERMIT,
                &["ops.sd15"],
            ),
            (
                "the permitted model too large",
                req(L4, "image.generate", image("team-a", "sd15", 1024)),
                DENY,
                &["ops.small-images"],
            ),
        ],
    );
}

/// An agent's own memory is its alone; shared spaces open only where an operator says so;
/// forgetting is destructive.
#[test]
fn memory_under_the_defaults_and_an_operator_shared_space() {
    const OWN: &[&str] = &["aura.memory.own"];
    let own = format!("agent:{AGENT}");
    let other = format!("agent:{OTHER_AGENT}");
    check(
        &PolicySet::defaults(),
        vec![
            (
                "storing in its own memory at L1",
                req(L1, "memory.store", memory("team-a", &own)),
                PERMIT,
                OWN,
            ),
            (
                "searching its own memory",
                req(L1, "memory.search", memory("team-a", &own)),
                PERMIT,
                OWN,
            ),
            (
                "recalling its own missions",
                req(L1, "memory.recall", memory("team-a", &own)),
                PERMIT,
                OWN,
            ),
            (
                "another agent's memory, even at L4",
                req(L4, "memory.search", memory("team-a", &other)),
                DENY,
                NONE,
            ),
            (
                "a shared space without an operator's policy",
                req(L4, "memory.search", memory("team-a", "shared:handbook")),
                DENY,
                NONE,
            ),
            (
                "its own memory named in another namespace",
                req(L4, "memory.search", memory("team-b", &own)),
                DENY,
                ISOLATION,
            ),
            (
                "a space that is not a space",
                req(L4, "memory.search", memory("team-a", "handbook")),
                DENY,
                NONE,
            ),
            (
                "another action on a memory",
                req(L4, "fs.read", memory("team-a", &own)),
                DENY,
                NONE,
            ),
            (
                "memory.store on a path",
                req(L4, "memory.store", path("team-a", "x")),
                DENY,
                NONE,
            ),
        ],
    );
    // Forgetting is destructive: the engine asks with `destructive` set.
    let mut forget = req(L2, "memory.forget", memory("team-a", &own));
    forget.context.destructive = true;
    let mut forget_l3 = forget.clone();
    forget_l3.principal.level = L3;
    check(
        &PolicySet::defaults(),
        vec![
            ("forgetting below L3", forget, escalate(L3), DESTRUCTIVE),
            ("forgetting at L3", forget_l3, PERMIT, OWN),
        ],
    );
    // Procedural memory: saving and running recipes in its own memory at L1, never in
    // another agent's; forgetting one is destructive like forgetting a memory.
    let mut recipe_forget = req(L2, "memory.recipe.forget", memory("team-a", &own));
    recipe_forget.context.destructive = true;
    check(
        &PolicySet::defaults(),
        vec![
            (
                "saving a recipe in its own memory",
                req(L1, "memory.recipe.save", memory("team-a", &own)),
                PERMIT,
                OWN,
            ),
            (
                "running its own recipe",
                req(L1, "recipe.run", memory("team-a", &own)),
                PERMIT,
                OWN,
            ),
            (
                "running another agent's recipe, even at L4",
                req(L4, "recipe.run", memory("team-a", &other)),
                DENY,
                NONE,
            ),
            (
                "forgetting a recipe below L3",
                recipe_forget,
                escalate(L3),
                DESTRUCTIVE,
            ),
        ],
    );
    let operator = PolicySet::parse(
        "ops.cedar",
        r#"@id("ops.handbook")
permit (principal in Aura::Namespace::"team-a", action == Aura::Action::"memory.search", resource is Aura::Memory)
when { resource.space == "shared:handbook" };"#,
    )
    .unwrap();
    let set = PolicySet::defaults().merge(operator).unwrap();
    check(
        &set,
        vec![
            (
                "searching the shared handbook",
                req(L1, "memory.search", memory("team-a", "shared:handbook")),
                PERMIT,
                &["ops.handbook"],
            ),
            (
                "writing the shared handbook",
                req(L4, "memory.store", memory("team-a", "shared:handbook")),
                DENY,
                NONE,
            ),
            (
                "another shared space",
                req(L4, "memory.search", memory("team-a", "shared:secrets")),
                DENY,
                NONE,
            ),
            (
                "another agent's memory, whatever operators permit",
                req(L4, "memory.search", memory("team-a", &other)),
                DENY,
                NONE,
            ),
        ],
    );
}

/// In a cluster, policy sees the deciding node's region (`context.node_region`) and a
/// mission's boundary (`context.regions`), and may keep work out of regions with them;
/// outside a cluster, or for a mission without a boundary, the attributes are absent.
#[test]
fn policies_see_the_node_s_region_and_the_mission_s_boundary() {
    let user = PolicySet::parse(
        "regions.cedar",
        r#"
@id("stay-in-bounds")
forbid (principal, action == Aura::Action::"mission.submit", resource)
when { context has regions && !(context has node_region && context.regions.contains(context.node_region)) };
@id("eu-only-writes")
forbid (principal, action == Aura::Action::"fs.write", resource)
when { context has node_region && context.node_region != "eu" };
"#,
    )
    .unwrap();
    assert!(user.warnings().is_empty(), "{:?}", user.warnings());
    let set = PolicySet::defaults().merge(user).unwrap();
    let at = |node: Option<&str>, regions: Option<&[&str]>, action: &str, resource| {
        let mut r = req(L2, action, resource);
        r.context.node_region = node.map(str::to_owned);
        r.context.regions = regions.map(|r| r.iter().map(|s| (*s).to_owned()).collect());
        r
    };
    const BOUNDS: &[&str] = &["stay-in-bounds"];
    const EU_ONLY: &[&str] = &["eu-only-writes"];
    const LIFECYCLE: &[&str] = &["aura.mission.lifecycle"];
    let m = || mission("team-a");
    let w = || path("team-a", "x.md");
    check(
        &set,
        vec![
            (
                "unbounded, no cluster",
                at(None, None, "mission.submit", m()),
                PERMIT,
                LIFECYCLE,
            ),
            (
                "unbounded, in us",
                at(Some("us"), None, "mission.submit", m()),
                PERMIT,
                LIFECYCLE,
            ),
            (
                "bounded to eu, in eu",
                at(Some("eu"), Some(&["eu", "ap"]), "mission.submit", m()),
                PERMIT,
                LIFECYCLE,
            ),
            (
                "bounded to eu, in us",
                at(Some("us"), Some(&["eu"]), "mission.submit", m()),
                DENY,
                BOUNDS,
            ),
            (
                "bounded, no region known",
                at(None, Some(&["eu"]), "mission.submit", m()),
                DENY,
                BOUNDS,
            ),
            (
                "a write in eu",
                at(Some("eu"), None, "fs.write", w()),
                PERMIT,
                WRITE,
            ),
            (
                "a write in us",
                at(Some("us"), None, "fs.write", w()),
                DENY,
                EU_ONLY,
            ),
            (
                "a write outside a cluster",
                at(None, None, "fs.write", w()),
                PERMIT,
                WRITE,
            ),
        ],
    );
}
