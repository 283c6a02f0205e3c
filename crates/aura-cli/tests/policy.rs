//! `aura policy` through the real binary: validating files (every problem with its line,
//! exit 1, nothing changed), deciding hypothetical requests from flags and from JSON, the
//! policies in the data directory, and printing the defaults and the schema.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::PathBuf;

use support::Aura;

const FETCH_DOCS: &str = r#"
// Agents of team-a may read the documentation site.
@id("team-a.fetch-docs")
permit (principal in Aura::Namespace::"team-a", action == Aura::Action::"http.fetch", resource is Aura::Host)
when { resource.host == "docs.example.com" };
"#;

const BAD: &str = r#"@id("one")
permit (principal, action, resource)
when { context.in_cell && };

@id("two")
permit (principal, action == Aura::Action::"fs.read", resource)
when { resource.size > 3 };
"#;

fn write(a: &Aura, name: &str, text: &str) -> PathBuf {
    let path = a.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn validate_accepts_good_files() {
    let a = Aura::new();
    let good = write(&a, "docs.cedar", FETCH_DOCS);
    let out = a.run(&["policy", "validate", s(&good)]).ok();
    assert_eq!(out.stdout, format!("ok: {} (1 policy)\n", s(&good)));
    let json = a
        .run(&["--json", "policy", "validate", s(&good)])
        .ok()
        .json();
    assert_eq!(json[0]["policies"], 1);
    assert_eq!(json[0]["problems"].as_array().unwrap().len(), 0);
    // Validating reads files only: no data directory appears.
    assert!(!a.home().exists());
}

#[test]
fn validate_lists_every_problem_with_its_line() {
    let a = Aura::new();
    let bad = write(&a, "bad.cedar", BAD);
    let good = write(&a, "docs.cedar", FETCH_DOCS);
    let out = a
        .run(&["policy", "validate", s(&bad), s(&good)])
        .one_line_error(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with(&format!("{}:3:27: unexpected token", s(&bad))),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!("{}:7:8: attribute `size`", s(&bad))),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], format!("ok: {} (1 policy)", s(&good)));
    assert_eq!(
        out.stderr.lines().next().unwrap(),
        "error: 2 problems in 1 policy file"
    );
    assert!(!a.home().exists());

    let json = a
        .run(&["--json", "policy", "validate", s(&bad)])
        .one_line_error(1)
        .json();
    let problems = json[0]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[0]["line"], 3);
    assert_eq!(problems[0]["column"], 27);
    assert_eq!(problems[1]["line"], 7);
}

#[test]
fn validate_refuses_ids_the_defaults_or_another_file_use() {
    let a = Aura::new();
    let clash = write(
        &a,
        "clash.cedar",
        "@id(\"aura.workspace.read\") permit (principal, action, resource);",
    );
    let out = a.run(&["policy", "validate", s(&clash)]).one_line_error(1);
    assert!(
        out.stdout
            .contains("the policy id `aura.workspace.read` is already used at defaults.cedar:"),
        "{}",
        out.stdout
    );
    let one = write(&a, "one.cedar", FETCH_DOCS);
    let two = write(&a, "two.cedar", FETCH_DOCS);
    let out = a
        .run(&["policy", "validate", s(&one), s(&two)])
        .one_line_error(1);
    assert!(
        out.stdout.contains(&format!(
            "{}:3:1: the policy id `team-a.fetch-docs` is already used at {}:3:1",
            s(&two),
            s(&one)
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn validate_refuses_unreadable_files_with_one_line() {
    let a = Aura::new();
    a.run(&["policy", "validate", "/nonexistent/x.cedar"])
        .one_line_error(1);
    let binary = a.dir.path().join("binary.cedar");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let out = a.run(&["policy", "validate", s(&binary)]).one_line_error(1);
    assert!(out.stderr.contains("not UTF-8"), "{}", out.stderr);
    let huge = write(&a, "huge.cedar", &"// x\n".repeat(300_000));
    let out = a.run(&["policy", "validate", s(&huge)]).one_line_error(1);
    assert!(out.stderr.contains("larger than"), "{}", out.stderr);
}

/// `check(args, outcome, deciding)` through the binary, with --json.
#[track_caller]
fn check(a: &Aura, args: &[&str], outcome: &str, deciding: &[&str]) -> serde_json::Value {
    let mut full = vec!["--json", "policy", "check"];
    full.extend_from_slice(args);
    let json = a.run(&full).ok().json();
    assert_eq!(json["outcome"], outcome, "{args:?}: {json:#}");
    let got: Vec<&str> = json["deciding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got, deciding, "{args:?}: {json:#}");
    json
}

#[test]
fn check_decides_from_flags() {
    let a = Aura::new();
    let team = ["--namespace", "team-a"];
    let with = |more: &[&'static str]| -> Vec<&'static str> {
        let mut v = team.to_vec();
        v.extend_from_slice(more);
        v
    };
    check(
        &a,
        &with(&["--action", "fs.read", "--path", "notes/x.md"]),
        "permit",
        &["aura.workspace.read"],
    );
    check(
        &a,
        &with(&["--action", "fs.write", "--path", "notes/x.md"]),
        "deny",
        &[],
    );
    check(
        &a,
        &with(&[
            "--agent-level",
            "L3",
            "--action",
            "fs.write",
            "--path",
            "notes/x.md",
        ]),
        "permit",
        &["aura.workspace.write"],
    );
    let j = check(
        &a,
        &with(&[
            "--agent-level",
            "L2",
            "--action",
            "fs.delete",
            "--path",
            "old.md",
        ]),
        "escalate",
        &["aura.destructive.escalate"],
    );
    assert_eq!(j["level"], "L3");
    assert_eq!(j["deciding_policies"][0]["source"], "defaults.cedar");
    assert_eq!(j["request_digest"].as_str().unwrap().len(), 64);
    // The same request, answered as if an L3 person had approved it, or an L2 one.
    check(
        &a,
        &with(&[
            "--agent-level",
            "L2",
            "--action",
            "fs.delete",
            "--path",
            "old.md",
            "--approval-level",
            "L3",
        ]),
        "permit",
        &["aura.workspace.delete"],
    );
    check(
        &a,
        &with(&[
            "--agent-level",
            "L2",
            "--action",
            "fs.delete",
            "--path",
            "old.md",
            "--approval-level",
            "L2",
        ]),
        "escalate",
        &["aura.destructive.escalate"],
    );
    check(
        &a,
        &with(&[
            "--agent-level",
            "L2",
            "--action",
            "cmd.run",
            "--command",
            "make",
            "--in-cell",
        ]),
        "permit",
        &["aura.cmd.run"],
    );
    check(
        &a,
        &with(&[
            "--agent-level",
            "L2",
            "--action",
            "cmd.run",
            "--command",
            "make",
        ]),
        "deny",
        &["aura.cmd.cell-only"],
    );
    check(
        &a,
        &with(&[
            "--action",
            "fs.read",
            "--path",
            "x",
            "--resource-namespace",
            "team-b",
        ]),
        "deny",
        &["aura.namespace-isolation"],
    );
    let j = check(
        &a,
        &with(&["--action", "fs.read", "--path", "../etc/passwd"]),
        "deny",
        &[],
    );
    assert!(j["errors"][0].as_str().unwrap().contains("`..`"), "{j}");

    // The text for people: the outcome, the deciding policies with their place, why.
    let out = a
        .run(&[
            "policy",
            "check",
            "--namespace",
            "team-a",
            "--agent-level",
            "L2",
            "--action",
            "fs.delete",
            "--path",
            "old.md",
        ])
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "ESCALATE to L3");
    assert!(
        lines[1].starts_with("  aura.destructive.escalate  (defaults.cedar:"),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines[2],
        "escalated by aura.destructive.escalate: needs an approval at L3 or above"
    );
}

#[test]
fn check_loads_policies_from_files_and_the_data_directory() {
    let a = Aura::new();
    let fetch = [
        "--namespace",
        "team-a",
        "--action",
        "http.fetch",
        "--host",
        "docs.example.com",
    ];
    check(&a, &fetch, "deny", &[]);
    let file = write(&a, "docs.cedar", FETCH_DOCS);
    let mut with_file = fetch.to_vec();
    with_file.extend_from_slice(&["--policies", s(&file)]);
    check(&a, &with_file, "permit", &["team-a.fetch-docs"]);

    // Files in <home>/policies are in force without naming them.
    std::fs::create_dir_all(a.home().join("policies")).unwrap();
    std::fs::write(a.home().join("policies/docs.cedar"), FETCH_DOCS).unwrap();
    let j = check(&a, &fetch, "permit", &["team-a.fetch-docs"]);
    assert_eq!(j["deciding_policies"][0]["source"], "policies/docs.cedar");
    let listed = a.run(&["--json", "policy", "list"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 18);
    // ...so the same file again is a duplicate.
    let mut args = vec!["policy", "check"];
    args.extend_from_slice(&with_file);
    let out = a.run(&args).one_line_error(1);
    assert!(out.stderr.contains("already used"), "{}", out.stderr);

    // A bad file in the data directory refuses every check, pointing at the file.
    std::fs::write(a.home().join("policies/bad.cedar"), BAD).unwrap();
    let out = a
        .run(&["policy", "check", "--action", "fs.read", "--path", "x"])
        .one_line_error(1);
    assert!(
        out.stderr.contains("policies/bad.cedar:3:27"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: run `aura policy validate policies/bad.cedar`"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_reads_a_json_request() {
    let a = Aura::new();
    let request = r#"{
        "principal": {"agent": "agent_01j8tpm400c5tq4r9dc5kpavkm", "level": "L2", "namespace": "team-a"},
        "action": "acme.deploy",
        "resource": {"type": "command", "namespace": "team-a", "command": "deploy web", "network": false},
        "context": {"destructive": true, "extra": {"ticket": "CHG-1"}}
    }"#;
    let file = write(&a, "request.json", request);
    let j = check(
        &a,
        &["--request", s(&file)],
        "deny",
        &["aura.destructive.escalate"],
    );
    assert_eq!(j["request"]["action"], "acme.deploy");
    let from_stdin = a
        .run_in(&["--json", "policy", "check", "--request", "-"], request)
        .ok()
        .json();
    assert_eq!(from_stdin["request_digest"], j["request_digest"]);

    for bad in [
        "not json",
        r#"{"principal": {"agent": "x", "level": "L2", "namespace": "team-a"}}"#,
        &request.replace("\"L2\"", "\"L9\""),
        &request.replace("\"extra\"", "\"approved\": true, \"extra\""),
    ] {
        let out = a
            .run_in(&["policy", "check", "--request", "-"], bad)
            .one_line_error(1);
        assert!(out.stderr.contains("is not valid"), "{}", out.stderr);
    }
}

#[test]
fn check_usage_errors_are_one_line() {
    let a = Aura::new();
    // No action.
    a.run(&["policy", "check", "--path", "x"]).one_line_error(2);
    // Two resources.
    a.run(&[
        "policy", "check", "--action", "fs.read", "--path", "x", "--host", "h",
    ])
    .one_line_error(2);
    // No resource.
    a.run(&["policy", "check", "--action", "fs.read"])
        .one_line_error(1);
    // Not a level, not a namespace, not KEY=VALUE.
    a.run(&[
        "policy",
        "check",
        "--agent-level",
        "L7",
        "--action",
        "fs.read",
        "--path",
        "x",
    ])
    .one_line_error(2);
    a.run(&[
        "policy",
        "check",
        "--namespace",
        "Team A",
        "--action",
        "fs.read",
        "--path",
        "x",
    ])
    .one_line_error(2);
    a.run(&[
        "policy", "check", "--action", "fs.read", "--path", "x", "--extra", "novalue",
    ])
    .one_line_error(1);
    // Flags that the request file would override.
    a.run(&["policy", "check", "--request", "-", "--action", "fs.read"])
        .one_line_error(2);
}

#[test]
fn defaults_and_schema_print_as_they_are() {
    let a = Aura::new();
    let defaults = a.run(&["policy", "show-defaults"]).ok().stdout;
    assert!(defaults.contains("@id(\"aura.destructive.escalate\")"));
    assert!(defaults.contains("@escalate(\"L3\")"));
    let schema = a.run(&["policy", "schema"]).ok().stdout;
    assert!(schema.contains("namespace Aura {"));
    let json = a.run(&["--json", "policy", "schema"]).ok().json();
    assert_eq!(json["schema"].as_str().unwrap().trim(), schema.trim());
    // What show-defaults prints validates as a policy file of its own... except that its
    // ids are the defaults' own, which validation (against the defaults) reports.
    let file = write(&a, "defaults.cedar", &defaults);
    let out = a.run(&["policy", "validate", s(&file)]).one_line_error(1);
    assert_eq!(out.stdout.lines().count(), 17, "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .all(|l| l.contains("is already used at defaults.cedar"))
    );
}

#[test]
fn policy_help_is_stable() {
    let a = Aura::new();
    insta::assert_snapshot!(a.run(&["policy", "--help"]).ok().stdout);
}
