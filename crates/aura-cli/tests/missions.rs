//! Governed missions through the real binaries: `aura serve` as a child process on a
//! loopback port, driven by the CLI the way an operator would drive it: create an agent,
//! submit a mission, see policy escalate a delete, answer with a signed approval or
//! rejection, then replay the record and verify the ledger.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

#[path = "../../aura-image/tests/support/tiny_package.rs"]
mod tiny_package;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{Aura, Node, start};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../demo/summarise.jsonl")
}

/// Initialises a node configured with the demo's scripted reasoner and starts it.
fn serve(aura: &Aura) -> Node {
    aura.init();
    let config = format!(
        "[reasoners.demo]\nprovider = \"scripted\"\npath = \"{}\"\n",
        script().display()
    );
    start(aura, &config, "demo")
}

/// Runs a command against the node.
fn at(aura: &Aura, node: &Node, args: &[&str]) -> support::Out {
    let mut c = aura.cmd(args);
    c.env("AURA_NODE", &node.url);
    aura.run_with(c, None)
}

fn mission_json(aura: &Aura, node: &Node, id: &str) -> serde_json::Value {
    at(aura, node, &["--json", "mission", "show", id])
        .ok()
        .json()
}

/// Waits until the mission is in `state`, or panics with where it is.
fn wait_for(aura: &Aura, node: &Node, id: &str, state: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let m = mission_json(aura, node, id);
        if m["state"] == state {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "mission {id} never reached {state}: {m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates an agent through the node (extra flags such as `--level L2`); returns its id.
fn create_agent(aura: &Aura, node: &Node, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["--json", "agent", "create", name];
    args.extend_from_slice(extra);
    let agent = at(aura, node, &args).ok().json();
    agent["id"].as_str().unwrap().to_owned()
}

/// Submits a mission with a 600 s timeout and the given tools and other flags; returns its
/// id.
fn submit(aura: &Aura, node: &Node, agent: &str, objective: &str, flags: &[&str]) -> String {
    let mut args = vec![
        "--json",
        "mission",
        "submit",
        "--agent",
        agent,
        "--objective",
        objective,
        "--timeout",
        "600",
    ];
    args.extend_from_slice(flags);
    let submitted = at(aura, node, &args).ok().json();
    submitted["id"].as_str().unwrap().to_owned()
}

/// A node initialised in `aura`, SmolLM2 pulled (pip, network on first run) and no
/// reasoner configured, so SmolLM2 is its default.
fn node_on_pulled_smollm2(aura: &Aura) -> Node {
    aura.init();
    aura.run(&["model", "pull", "smollm2"]).ok();
    start(aura, "", "smollm2")
}

/// Creates the agent, copies the demo's files into the workspace `project` and submits the
/// demo mission; returns the mission id once it is escalated on its delete.
fn escalated_mission(aura: &Aura, node: &Node) -> String {
    copy_demo_workspace(aura);
    let agent = create_agent(aura, node, "writer", &["--level", "L2"]);
    let id = submit(
        aura,
        node,
        &agent,
        "Summarise the plan and the notes into summary.md and clean up stale files",
        &[
            "--workspace",
            "project",
            "--tool",
            "fs.list",
            "--tool",
            "fs.read",
            "--tool",
            "fs.write",
            "--tool",
            "fs.delete",
            "--tool",
            "mission.finish",
        ],
    );
    let m = wait_for(aura, node, &id, "escalated");
    assert_eq!(m["escalation"]["action"], "fs.delete", "{m}");
    assert_eq!(m["escalation"]["level"], "L3", "{m}");
    id
}

/// Copies the demo's files into the workspace `project`.
fn copy_demo_workspace(aura: &Aura) {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../demo/workspace");
    let ws = workspace(aura);
    std::fs::create_dir_all(&ws).unwrap();
    for name in ["plan.md", "notes.md", "build.log"] {
        std::fs::copy(demo.join(name), ws.join(name)).unwrap();
    }
}

fn workspace(aura: &Aura) -> PathBuf {
    aura.home().join("workspaces/default/project")
}

#[test]
fn an_escalated_delete_runs_after_a_signed_cli_approval_and_the_record_replays() {
    let aura = Aura::new();
    let node = serve(&aura);
    let id = escalated_mission(&aura, &node);
    // While it waits, the summary is written and the delete has not happened.
    assert!(workspace(&aura).join("summary.md").exists());
    assert!(workspace(&aura).join("build.log").exists());

    let pending = at(&aura, &node, &["--json", "approvals"]).ok().json();
    assert_eq!(pending[0]["mission"], id.as_str(), "{pending}");

    // An approver below the required level is refused, and the mission keeps waiting.
    at(
        &aura,
        &node,
        &["operator", "enroll", "bob", "--level", "L2"],
    )
    .ok();
    at(&aura, &node, &["approve", &id, "--as", "bob"]).one_line_error(1);
    assert_eq!(mission_json(&aura, &node, &id)["state"], "escalated");

    at(
        &aura,
        &node,
        &["operator", "enroll", "alice", "--level", "L3"],
    )
    .ok();
    at(
        &aura,
        &node,
        &["approve", &id, "--as", "alice", "--reason", "stale log"],
    )
    .ok();
    let m = wait_for(&aura, &node, &id, "completed");
    assert!(m["summary"].as_str().unwrap().contains("summary.md"), "{m}");
    let ws = workspace(&aura);
    assert!(!ws.join("build.log").exists());
    assert!(ws.join("plan.md").exists() && ws.join("notes.md").exists());
    assert!(
        std::fs::read_to_string(ws.join("summary.md"))
            .unwrap()
            .contains("governed runtime")
    );

    // `watch` on a finished mission prints its whole record and exits 0.
    let watched = at(&aura, &node, &["mission", "watch", &id]).ok();
    assert!(
        watched.stdout.contains("approved by operator alice at L3"),
        "{}",
        watched.stdout
    );
    assert!(
        watched.stdout.contains("-> completed"),
        "{}",
        watched.stdout
    );

    let replay = at(&aura, &node, &["--json", "replay", &id]).ok().json();
    assert_eq!(replay[0]["replay"]["ok"], true, "{replay}");
    assert_eq!(
        replay[0]["replay"]["state_hash"], m["state_hash"],
        "{replay}"
    );
    // Verification checks the approval's and the agent's credential's signatures too.
    let verified = at(&aura, &node, &["--json", "ledger", "verify"])
        .ok()
        .json();
    assert_eq!(verified["signatures"]["approvals"], 1, "{verified}");
    assert!(
        verified["signatures"]["credentials"].as_u64() >= Some(1),
        "{verified}"
    );
}

#[test]
fn operators_list_stuck_missions_and_pause_and_resume_them_from_the_cli() {
    let aura = Aura::new();
    let node = serve(&aura);
    let id = escalated_mission(&aura, &node);
    let stuck = at(
        &aura,
        &node,
        &["--json", "mission", "stuck", "--escalated-for", "0s"],
    )
    .ok()
    .json();
    assert_eq!(stuck[0]["mission"], id.as_str(), "{stuck}");
    assert_eq!(stuck[0]["why"]["kind"], "escalated", "{stuck}");
    let human = at(&aura, &node, &["mission", "stuck", "--escalated-for", "0s"]).ok();
    assert!(
        human
            .stdout
            .contains("escalated: `fs.delete` waits for approval at L3"),
        "{}",
        human.stdout
    );
    let later = at(&aura, &node, &["mission", "stuck", "--escalated-for", "1d"]).ok();
    assert!(
        later.stdout.contains("no mission is stuck"),
        "{}",
        later.stdout
    );

    at(
        &aura,
        &node,
        &["mission", "pause", &id, "--reason", "look first"],
    )
    .ok();
    assert_eq!(mission_json(&aura, &node, &id)["paused"], true);
    at(&aura, &node, &["mission", "pause", &id]).one_line_error(1);

    // Approved while paused: the delete waits for the resume.
    at(
        &aura,
        &node,
        &["operator", "enroll", "alice", "--level", "L3"],
    )
    .ok();
    // No waiting: the node answers the approval once the agent's actor has handled it,
    // which decides the call again and, the mission being paused, leaves it unrun with
    // nothing queued. The record shows the delete permitted and never attempted.
    at(&aura, &node, &["approve", &id, "--as", "alice"]).ok();
    let m = mission_json(&aura, &node, &id);
    assert_eq!(
        (m["state"].as_str(), m["paused"].as_bool()),
        (Some("running"), Some(true)),
        "{m}"
    );
    let delete = &m["calls"][0];
    assert_eq!(
        (
            delete["call"]["name"].as_str(),
            delete["decision"]["outcome"].as_str(),
            delete["attempts"].as_u64().unwrap_or(0),
        ),
        (Some("fs.delete"), Some("permit"), 0),
        "{m}"
    );
    assert!(workspace(&aura).join("build.log").exists());

    at(&aura, &node, &["mission", "resume", &id]).ok();
    wait_for(&aura, &node, &id, "completed");
    assert!(!workspace(&aura).join("build.log").exists());
    at(&aura, &node, &["mission", "retry", &id]).one_line_error(1);
    let watched = at(&aura, &node, &["mission", "watch", &id]).ok().stdout;
    assert!(watched.contains(": look first"), "{watched}");
    assert!(watched.contains("resumed by"), "{watched}");
    assert!(!watched.contains("mission.attempt"), "{watched}");
    let replay = at(&aura, &node, &["--json", "replay", &id]).ok().json();
    assert_eq!(replay[0]["replay"]["ok"], true, "{replay}");
}

#[test]
fn a_rejected_escalation_fails_the_mission_and_undoes_its_writes() {
    let aura = Aura::new();
    let node = serve(&aura);
    let id = escalated_mission(&aura, &node);
    let ws = workspace(&aura);
    assert!(ws.join("summary.md").exists() && ws.join("build.log").exists());

    at(
        &aura,
        &node,
        &["operator", "enroll", "alice", "--level", "L3"],
    )
    .ok();
    at(
        &aura,
        &node,
        &["reject", &id, "--as", "alice", "--reason", "keep the draft"],
    )
    .ok();
    let m = wait_for(&aura, &node, &id, "failed");
    assert!(
        m["reason"].as_str().unwrap().contains("keep the draft"),
        "{m}"
    );
    // The write was compensated: the summary the mission created is gone; the files it
    // only read, and the one it was not allowed to delete, are untouched.
    assert!(!ws.join("summary.md").exists());
    for name in ["plan.md", "notes.md", "build.log"] {
        assert_eq!(
            std::fs::read(ws.join(name)).unwrap(),
            std::fs::read(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../demo/workspace")
                    .join(name)
            )
            .unwrap(),
            "{name}"
        );
    }
    let watched = at(&aura, &node, &["mission", "watch", &id]).one_line_error(1);
    assert!(watched.stderr.contains("failed"), "{}", watched.stderr);
    at(&aura, &node, &["ledger", "verify"]).ok();
}

#[test]
fn a_node_with_a_broken_reasoner_or_policy_file_refuses_to_start() {
    let aura = Aura::new();
    aura.init();
    std::fs::write(
        aura.home().join("aura.toml"),
        "[reasoners.demo]\nprovider = \"scripted\"\n",
    )
    .unwrap();
    let out = aura
        .run(&["serve", "--listen", "127.0.0.1:0"])
        .one_line_error(1);
    assert!(out.stderr.contains("reasoner `demo`"), "{}", out.stderr);

    std::fs::write(aura.home().join("aura.toml"), "").unwrap();
    std::fs::create_dir_all(aura.home().join("policies")).unwrap();
    std::fs::write(
        aura.home().join("policies/bad.cedar"),
        "permit (principal, action == Aura::Action::\"no.such.tool\", resource);",
    )
    .unwrap();
    let out = aura
        .run(&["serve", "--listen", "127.0.0.1:0"])
        .one_line_error(1);
    assert!(out.stderr.contains("bad.cedar"), "{}", out.stderr);
}

#[test]
fn a_node_runs_local_models_only_from_installed_packages() {
    let aura = Aura::new();
    aura.init();
    let model = aura.home().join("model.gguf");
    std::fs::write(&model, b"GGUF").unwrap();
    let cases = [
        (model.display().to_string(), "installed packages only"),
        (
            "nosuch".to_owned(),
            "no model package `nosuch` is installed",
        ),
    ];
    for (reference, expected) in cases {
        std::fs::write(
            aura.home().join("aura.toml"),
            format!("[reasoners.mine]\nprovider = \"local\"\nmodel = \"{reference}\"\n"),
        )
        .unwrap();
        let out = aura
            .run(&["serve", "--listen", "127.0.0.1:0"])
            .one_line_error(1);
        assert!(out.stderr.contains("reasoner `mine`"), "{}", out.stderr);
        assert!(out.stderr.contains(expected), "{}", out.stderr);
    }
}

/// The default local model end to end: pulled as a signed package (pip, network on first
/// run), verified and licensed when the node starts, the default reasoner of a node that
/// configures none, and a mission on it ends (the 135M model rarely finishes a task; a
/// failure for lack of steps is an ending too) with a record that replays and verifies,
/// and one signed usage receipt per turn whose tokens add up to the mission's.
#[test]
fn a_node_runs_missions_on_the_pulled_default_model_needs_network() {
    let aura = Aura::new();
    let node = node_on_pulled_smollm2(&aura);
    copy_demo_workspace(&aura);
    let agent = create_agent(&aura, &node, "reader", &[]);
    let id = submit(
        &aura,
        &node,
        &agent,
        "Read plan.md and say what it is about",
        &[
            "--workspace",
            "project",
            "--tool",
            "fs.read",
            "--tool",
            "mission.finish",
            "--max-steps",
            "2",
        ],
    );
    let start = Instant::now();
    let m = loop {
        let m = mission_json(&aura, &node, &id);
        if ["completed", "failed"].contains(&m["state"].as_str().unwrap()) {
            break m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "mission {id} never ended: {m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The model's turns were taken and counted (real tokens from the local engine).
    let steps = m["steps"].as_u64().unwrap();
    assert!(steps >= 1, "{m}");
    assert!(m["tokens"].as_u64().unwrap() > 100, "{m}");
    at(&aura, &node, &["replay", &id]).ok();
    at(&aura, &node, &["ledger", "verify"]).ok();
    // Every turn left one signed usage receipt, under the node's own license.
    drop(node);
    let receipts = aura.run(&["--json", "receipts", "list"]).ok().json();
    let receipts = receipts.as_array().unwrap();
    assert_eq!(receipts.len() as u64, steps, "{receipts:?}");
    let tokens: u64 = receipts
        .iter()
        .map(|r| {
            assert_eq!(r["package_name"], "smollm2", "{r}");
            r["prompt_tokens"].as_u64().unwrap() + r["completion_tokens"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(tokens, m["tokens"].as_u64().unwrap(), "{receipts:?}");
    aura.run(&["receipts", "verify"]).ok();
}

/// Licenses are checked on every turn, not only at start-up: with the node's license
/// gone, the next turn is refused and the mission fails saying why, with no receipt.
#[test]
fn a_turn_without_a_license_fails_the_mission_needs_network() {
    let aura = Aura::new();
    let node = node_on_pulled_smollm2(&aura);
    for license in std::fs::read_dir(aura.home().join("licenses")).unwrap() {
        std::fs::remove_file(license.unwrap().path()).unwrap();
    }
    let agent = create_agent(&aura, &node, "reader", &[]);
    let id = submit(
        &aura,
        &node,
        &agent,
        "Say hello",
        &["--tool", "mission.finish"],
    );
    let m = wait_for(&aura, &node, &id, "failed");
    let reason = m["reason"].as_str().unwrap();
    assert!(reason.contains("no license"), "{m}");
    drop(node);
    let receipts = aura.run(&["--json", "receipts", "list"]).ok().json();
    assert_eq!(receipts.as_array().unwrap().len(), 0, "{receipts}");
}

/// Settings that replace what changes from run to run in what people read (ids, times,
/// hashes, the data directory, the node's port) with placeholders, as uv's snapshot tests
/// do, so that a snapshot shows the layout and the words and nothing that varies.
fn screen_filters(aura: &Aura, node: &Node) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.set_snapshot_path("snapshots/screens");
    let home = aura.dir.path().display().to_string();
    s.add_filter(&literal(&home), "[DATA]");
    s.add_filter(&literal(&node.url), "[NODE]");
    s.add_filter(r"\b([a-z]+)_[0-9a-hjkmnp-tv-z]{26}\b", "${1}_[ID]");
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]");
    s.add_filter(r"\b[0-9a-f]{64}\b", "[HASH]");
    s.add_filter(r"\b[0-9a-f]{12}\)", "[HASH])");
    s
}

/// `text` as a regular expression that matches exactly it.
fn literal(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// What people read of a mission, from the real binary against a real node: `mission show`
/// while it waits and once it has ended, `mission watch`, the one-line errors with their
/// hints, and a failing `ledger verify`. A change to any of these shows up as a snapshot
/// to review (`cargo insta review`), not as a `?` nobody noticed.
#[test]
fn what_people_read_of_a_mission_is_snapshotted() {
    let aura = Aura::new();
    let node = serve(&aura);
    let id = escalated_mission(&aura, &node);
    let settings = screen_filters(&aura, &node);
    let _bound = settings.bind_to_scope();

    insta::assert_snapshot!(
        "mission_show_escalated",
        at(&aura, &node, &["mission", "show", &id]).ok().stdout
    );
    insta::assert_snapshot!("approvals", at(&aura, &node, &["approvals"]).ok().stdout);
    insta::assert_snapshot!(
        "mission_stuck",
        at(&aura, &node, &["mission", "stuck", "--escalated-for", "0s"])
            .ok()
            .stdout
    );

    // The one-line errors with their hints.
    at(
        &aura,
        &node,
        &["operator", "enroll", "bob", "--level", "L2"],
    )
    .ok();
    insta::assert_snapshot!(
        "error_approver_below_the_level",
        at(&aura, &node, &["approve", &id, "--as", "bob"])
            .one_line_error(1)
            .stderr
    );
    insta::assert_snapshot!(
        "error_approver_not_enrolled",
        at(&aura, &node, &["approve", &id, "--as", "carol"])
            .one_line_error(1)
            .stderr
    );
    insta::assert_snapshot!(
        "error_unknown_mission",
        at(
            &aura,
            &node,
            &["mission", "show", "mission_00000000000000000000000000"]
        )
        .one_line_error(1)
        .stderr
    );
    insta::assert_snapshot!(
        "error_watch_not_a_mission_id",
        at(&aura, &node, &["mission", "watch", "summary.md"])
            .one_line_error(1)
            .stderr
    );

    at(
        &aura,
        &node,
        &["operator", "enroll", "alice", "--level", "L3"],
    )
    .ok();
    let approved = at(
        &aura,
        &node,
        &["approve", &id, "--as", "alice", "--reason", "stale log"],
    )
    .ok()
    .stdout;
    // The node answers with the mission as it stands just after the approval, and the
    // scripted turn that follows may already have finished it.
    let mut racy = insta::Settings::clone_current();
    racy.add_filter(
        r"mission is now (running|completed)",
        "mission is now [running or completed]",
    );
    racy.bind(|| insta::assert_snapshot!("approve", approved));
    wait_for(&aura, &node, &id, "completed");
    insta::assert_snapshot!(
        "mission_show_completed",
        at(&aura, &node, &["mission", "show", &id]).ok().stdout
    );
    insta::assert_snapshot!(
        "mission_watch_completed",
        at(&aura, &node, &["mission", "watch", &id]).ok().stdout
    );
    insta::assert_snapshot!(
        "error_approve_a_completed_mission",
        at(&aura, &node, &["approve", &id, "--as", "alice"])
            .one_line_error(1)
            .stderr
    );
    insta::assert_snapshot!("replay", at(&aura, &node, &["replay", &id]).ok().stdout);

    // With the node stopped: a command that needs it says how to start one, and a ledger
    // changed behind the node's back fails verification.
    let url = node.url.clone();
    drop(node);
    let mut c = aura.cmd(&["mission", "show", &id]);
    c.env("AURA_NODE", &url);
    insta::assert_snapshot!(
        "error_node_not_running",
        aura.run_with(c, None).one_line_error(1).stderr
    );
    let db = rusqlite::Connection::open(aura.home().join("ledger.db")).unwrap();
    let (index, raw): (i64, Vec<u8>) = db
        .query_row(
            "SELECT idx, raw FROM entries ORDER BY idx LIMIT 1 OFFSET 2",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut entry = aura_ledger::entry::Entry::decode(&raw).unwrap();
    let mut body = entry.body.clone();
    let last = body.len() - 2;
    body[last] ^= 0x01;
    entry.body = body;
    db.execute(
        "UPDATE entries SET raw = ?1 WHERE idx = ?2",
        rusqlite::params![entry.encode().unwrap(), index],
    )
    .unwrap();
    drop(db);
    insta::assert_snapshot!(
        "error_ledger_verify_tampered",
        aura.run(&["ledger", "verify"]).one_line_error(3).stderr
    );
}

/// `image.generate` in a mission, on a small `aura-tiny-emoji` package (fresh weights): the
/// permitted call writes its PNG into the workspace and names its receipt; a model the
/// default policy does not permit, and a size an operator's policy forbids, are denied and
/// write nothing (the scripted reasoner checks each tool result it reads).
#[test]
fn image_generate_writes_a_permitted_png_and_policy_denies_other_models_and_sizes() {
    let aura = Aura::new();
    aura.init();
    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("aura-tiny-emoji");
    tiny_package::write_small_package(&folder, 5);
    for name in ["aura-tiny-emoji", "other"] {
        let dir = folder.to_str().unwrap();
        aura.run(&["model", "import", dir, "--name", name]).ok();
    }
    std::fs::create_dir_all(aura.home().join("policies")).unwrap();
    std::fs::write(
        aura.home().join("policies/images.cedar"),
        "@id(\"ops.small-images\")\nforbid (principal, action == Aura::Action::\"image.generate\", resource is Aura::Image)\nwhen { resource.width > 64 || resource.height > 64 };\n",
    )
    .unwrap();
    let call = |args: serde_json::Value, expect: Option<&str>| {
        let mut turn = serde_json::json!({
            "content": "I make an image.",
            "tool_calls": [{"name": "image_generate", "arguments": args}],
        });
        if let Some(e) = expect {
            turn["expect"] = serde_json::json!({"last_tool_result_contains": e});
        }
        turn.to_string()
    };
    let script = [
        call(
            serde_json::json!({"prompt": "red apple", "size": "64x64", "seed": 9, "steps": 4, "path": "art/apple.png"}),
            None,
        ),
        call(
            serde_json::json!({"prompt": "red apple", "size": "64x64", "model": "other", "path": "art/other.png"}),
            Some("rcpt_"),
        ),
        call(
            serde_json::json!({"prompt": "red apple", "size": "128x128", "path": "art/big.png"}),
            Some("denied by policy"),
        ),
        serde_json::json!({
            "content": "Done.",
            "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "one apple"}}],
            "expect": {"last_tool_result_contains": "denied by policy"},
        })
        .to_string(),
    ];
    let script_path = src.path().join("images.jsonl");
    std::fs::write(&script_path, script.join("\n") + "\n").unwrap();
    let config = format!(
        "[reasoners.demo]\nprovider = \"scripted\"\npath = \"{}\"\n",
        script_path.display()
    );
    let node = start(&aura, &config, "demo");
    let agent = create_agent(&aura, &node, "artist", &["--level", "L2"]);
    let id = submit(
        &aura,
        &node,
        &agent,
        "Draw a red apple",
        &[
            "--workspace",
            "project",
            "--tool",
            "image.generate",
            "--tool",
            "mission.finish",
        ],
    );
    let done = wait_for(&aura, &node, &id, "completed");
    assert_eq!(done["summary"], "one apple", "{done}");
    let art = workspace(&aura).join("art");
    let png = std::fs::read(art.join("apple.png")).unwrap();
    let chunk: serde_json::Value =
        serde_json::from_str(&aura_image::png::text_of(&png, "aura").unwrap()).unwrap();
    assert_eq!(chunk["parameters"]["model"], "aura-tiny-emoji");
    assert_eq!(chunk["parameters"]["seed"], 9);
    assert!(
        !art.join("other.png").exists(),
        "a denied model wrote nothing"
    );
    assert!(!art.join("big.png").exists(), "a denied size wrote nothing");
    drop(node);
    // One image, one receipt: the denied calls never reached the model.
    let verified = aura.run(&["--json", "receipts", "verify"]).ok().json();
    assert_eq!(
        (verified["ok"].clone(), verified["receipts"].clone()),
        (serde_json::json!(true), serde_json::json!(1)),
        "{verified}"
    );
    let listed = aura.run(&["--json", "receipts", "list"]).ok().json();
    assert!(
        listed
            .to_string()
            .contains(chunk["receipt"].as_str().unwrap()),
        "{listed}"
    );
}
