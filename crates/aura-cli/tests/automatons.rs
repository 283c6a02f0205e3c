//! Schedules and automatons through the real binaries: `aura serve` as a child process,
//! driven by `aura schedule` and `aura automaton`. A dev loop fixes a failing Python test
//! with `cmd.run` in real cells (root), every step in the ledger and replayable; schedules
//! fire through a running node, survive its restart with each missed-run policy, never
//! fire an instant twice, and refuse bad input with one line.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Aura, Node, start};

fn at(aura: &Aura, node: &Node, args: &[&str]) -> support::Out {
    let mut c = aura.cmd(args);
    c.env("AURA_NODE", &node.url);
    aura.run_with(c, None)
}

/// A node whose default reasoner is a scripted one that only ever says it is done (the
/// scheduled missions here are about when they are submitted, not what they do).
const DEMO: &str = "[reasoners.demo]\nprovider = \"scripted\"\npath = \"demo.jsonl\"\n";

fn serve_demo(aura: &Aura) -> Node {
    std::fs::write(
        aura.home().join("demo.jsonl"),
        "{\"content\": \"done\", \"tool_calls\": [{\"name\": \"mission_finish\", \"arguments\": {\"summary\": \"done\"}}]}\n",
    )
    .unwrap();
    start(aura, DEMO, "demo")
}

fn create_agent(aura: &Aura, node: &Node) -> String {
    let agent = at(
        aura,
        node,
        &["--json", "agent", "create", "worker", "--level", "L2"],
    )
    .ok()
    .json();
    agent["id"].as_str().unwrap().to_owned()
}

/// Waits (generously: CI runs on two loaded cores) until `done` holds of the value `read`
/// gives, or panics with the last one.
fn wait_until(
    what: &str,
    secs: u64,
    read: impl Fn() -> Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let v = read();
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's `schedule.<what>` bodies, read from the ledger (the node may be stopped).
fn records(aura: &Aura, what: &str) -> Vec<Value> {
    let entries = aura
        .run(&[
            "--json", "ledger", "show", "--agent", "node", "--limit", "100000",
        ])
        .ok()
        .json();
    entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == format!("schedule.{what}"))
        .map(|e| e["body"].clone())
        .collect()
}

/// A scripted dev loop on a small Python project: the first turns lay the project down
/// (a function with a bug and its unittest), then the loop proper runs the tests in a
/// cell, reads the failure (the script asserts the reasoner was shown it), reads the
/// file, fixes it, runs the tests again and finishes once they pass.
const DEV_LOOP_SCRIPT: &str = r#"{"content": "I lay the project down.", "tool_calls": [{"name": "fs_write", "arguments": {"path": "calc.py", "content": "def add(a, b):\n    return a - b\n"}}], "expect": {"last_user_contains": "Work as a dev loop", "tools_offered": ["fs_list", "fs_read", "fs_write", "cmd_run", "mission_finish"]}}
{"content": "And its test.", "tool_calls": [{"name": "fs_write", "arguments": {"path": "test_calc.py", "content": "import unittest\nfrom calc import add\n\nclass Add(unittest.TestCase):\n    def test_two_and_three(self):\n        self.assertEqual(add(2, 3), 5)\n\nunittest.main()\n"}}]}
{"content": "I run the tests.", "tool_calls": [{"name": "cmd_run", "arguments": {"command": "python3 -B test_calc.py"}}], "expect": {"last_tool_result_contains": "test_calc.py"}}
{"content": "They fail: add(2, 3) is -1. I read calc.py.", "tool_calls": [{"name": "fs_read", "arguments": {"path": "calc.py"}}], "expect": {"last_tool_result_contains": "AssertionError: -1 != 5"}}
{"content": "The function subtracts. I fix it.", "tool_calls": [{"name": "fs_write", "arguments": {"path": "calc.py", "content": "def add(a, b):\n    \"\"\"The sum of a and b.\"\"\"\n    return a + b\n"}}], "expect": {"last_tool_result_contains": "a - b"}}
{"content": "I run the tests again.", "tool_calls": [{"name": "cmd_run", "arguments": {"command": "python3 -B test_calc.py"}}]}
{"content": "Green.", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "calc.add subtracted; it adds now and the tests pass"}}], "expect": {"last_tool_result_contains": "OK"}}
"#;

/// Must hold: `aura automaton dev-loop` with the scripted reasoner goes from red to green
/// through `cmd.run` in real cells; the record holds every step, replays to the same state
/// hash, and the ledger verifies.
#[test]
fn root_a_dev_loop_fixes_a_failing_python_test_in_a_cell_and_replays() {
    let aura = Aura::new();
    aura.init();
    let script = aura.home().join("dev-loop.jsonl");
    std::fs::write(&script, DEV_LOOP_SCRIPT).unwrap();
    let config = format!(
        "[reasoners.dev]\nprovider = \"scripted\"\npath = \"{}\"\n\n[cells]\nworkspace_quota = \"unlimited\"\n",
        script.display()
    );
    let node = start(&aura, &config, "dev");
    let agent = create_agent(&aura, &node);
    // The template is what an automaton is: printed, it is the dev loop's whole recipe.
    let template = at(
        &aura,
        &node,
        &[
            "--json",
            "automaton",
            "dev-loop",
            "--test",
            "python3 -B test_calc.py",
            "--print-template",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        template["tools"],
        serde_json::json!([
            "fs.list",
            "fs.read",
            "fs.write",
            "cmd.run",
            "mission.finish"
        ])
    );
    let submitted = at(
        &aura,
        &node,
        &[
            "--json",
            "automaton",
            "dev-loop",
            "--agent",
            &agent,
            "--test",
            "python3 -B test_calc.py",
            "--workspace",
            "calc",
            "--max-steps",
            "12",
        ],
    )
    .ok()
    .json();
    let id = submitted["id"].as_str().unwrap().to_owned();
    let m = wait_until(
        "the dev loop did not finish",
        120,
        || {
            at(&aura, &node, &["--json", "mission", "show", &id, "--full"])
                .ok()
                .json()
        },
        |m| {
            matches!(
                m["state"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        },
    );
    assert_eq!(m["state"], "completed", "{m}");
    let fixed =
        std::fs::read_to_string(aura.home().join("workspaces/default/calc/calc.py")).unwrap();
    assert!(fixed.contains("a + b"), "{fixed}");
    // The conversation holds the red run before the green one.
    let conversation = m["conversation"].to_string();
    let red = conversation
        .find("AssertionError")
        .expect("the failure is in the record");
    let green = conversation.rfind("Ran 1 test").unwrap();
    assert!(
        red < green && conversation[green..].contains("OK"),
        "{conversation}"
    );
    // Replay reproduces every state hash from the ledger alone.
    let replay = at(&aura, &node, &["--json", "replay", &id]).ok().json();
    assert_eq!(replay[0]["replay"]["ok"], true, "{replay}");
    assert_eq!(
        replay[0]["replay"]["state_hash"], m["state_hash"],
        "{replay}"
    );
    drop(node);
    aura.run(&["ledger", "verify"]).ok();
}

/// An interval schedule fires through a running node, the mission it submits exists, and
/// pause, list, show and delete do what they say.
#[test]
fn a_schedule_fires_through_the_node_and_is_paused_and_deleted() {
    let aura = Aura::new();
    aura.init();
    let node = serve_demo(&aura);
    let agent = create_agent(&aura, &node);
    let created = at(
        &aura,
        &node,
        &[
            "--json",
            "schedule",
            "create",
            "--agent",
            &agent,
            "--name",
            "tick",
            "--objective",
            "look around",
            "--tool",
            "fs.list",
            "--tool",
            "mission.finish",
            "--timeout",
            "60",
            "--every",
            "2s",
        ],
    )
    .ok()
    .json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["trigger"],
        serde_json::json!({"kind": "every", "secs": 2})
    );
    assert_eq!(created["missed"], "skip");
    let fired = wait_until(
        "the schedule never fired",
        60,
        || {
            at(&aura, &node, &["--json", "schedule", "show", &id])
                .ok()
                .json()
        },
        |v| v["fired"].as_u64().unwrap_or(0) >= 1,
    );
    let mission = fired["last_mission"].as_str().unwrap();
    let m = at(&aura, &node, &["--json", "mission", "show", mission])
        .ok()
        .json();
    assert_eq!(m["objective"], "look around");
    assert_eq!(m["agent"], agent.as_str());
    let paused = at(&aura, &node, &["--json", "schedule", "pause", &id])
        .ok()
        .json();
    assert_eq!(paused["enabled"], false);
    assert!(paused["next_due"].is_null());
    let text = at(&aura, &node, &["schedule", "list"]).ok().stdout;
    assert!(text.contains(&id) && text.contains("paused"), "{text}");
    let shown = at(&aura, &node, &["schedule", "show", &id]).ok().stdout;
    assert!(
        shown.contains("every 2 s") && shown.contains("look around"),
        "{shown}"
    );
    at(&aura, &node, &["schedule", "delete", &id]).ok();
    at(&aura, &node, &["schedule", "show", &id]).one_line_error(1);
    let listed = at(&aura, &node, &["--json", "schedule", "list"])
        .ok()
        .json();
    assert_eq!(listed, serde_json::json!([]));
}

/// Bad schedules are refused with one error line (and a hint where there is one), and
/// nothing is created.
#[test]
fn bad_schedules_get_one_line_errors() {
    let aura = Aura::new();
    aura.init();
    let node = serve_demo(&aura);
    let agent = create_agent(&aura, &node);
    let base: [&str; 10] = [
        "schedule",
        "create",
        "--agent",
        &agent,
        "--objective",
        "x",
        "--tool",
        "fs.list",
        "--timeout",
        "60",
    ];
    for (extra, code, says) in [
        (&["--cron", "61 * * * *"][..], 1, "outside 0-59"),
        (
            &["--cron", "0 9 * * MON-FRI", "--tz", "Europe/Atlantis"][..],
            1,
            "not a time zone",
        ),
        (&["--every", "0s"][..], 1, "between 1 s"),
        (&["--every", "15 minutes"][..], 2, "not an age"),
        (
            &["--every", "1m", "--missed", "sometimes"][..],
            2,
            "sometimes",
        ),
        (
            &["--every", "1m", "--cron", "@daily"][..],
            2,
            "cannot be used with",
        ),
        (&[][..], 2, "required"),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        let out = at(&aura, &node, &args).one_line_error(code);
        assert!(out.stderr.contains(says), "{extra:?}: {}", out.stderr);
    }
    let listed = at(&aura, &node, &["--json", "schedule", "list"])
        .ok()
        .json();
    assert_eq!(listed, serde_json::json!([]));
}

/// Instants that fall due while the node is stopped: `skip` records them skipped and fires
/// none of them; `catch-up-once` fires once for them. A second restart fires nothing
/// again, and every firing's mission exists once.
#[test]
fn missed_instants_across_a_restart_follow_each_policy_and_never_fire_twice() {
    let aura = Aura::new();
    aura.init();
    let node = serve_demo(&aura);
    let agent = create_agent(&aura, &node);
    let create = |missed: &str| {
        let v = at(
            &aura,
            &node,
            &[
                "--json",
                "schedule",
                "create",
                "--agent",
                &agent,
                "--objective",
                "x",
                "--tool",
                "fs.list",
                "--timeout",
                "60",
                "--every",
                "10s",
                "--missed",
                missed,
            ],
        )
        .ok()
        .json();
        v["id"].as_str().unwrap().to_owned()
    };
    let skip = create("skip");
    let once = create("catch-up-once");
    let created = Instant::now();
    drop(node);
    // Down past the first instant (10 s after creation) by more than its grace (5 s, half
    // the period): it is missed.
    std::thread::sleep(Duration::from_secs(17).saturating_sub(created.elapsed()));
    let node = start(&aura, DEMO, "demo");
    // The restarted node deals with the missed instant at once.
    wait_until(
        "the restarted node did not deal with the missed instants",
        60,
        || {
            at(&aura, &node, &["--json", "schedule", "list"])
                .ok()
                .json()
        },
        |all| {
            all.as_array()
                .unwrap()
                .iter()
                .all(|s| s["fired"].as_u64().unwrap_or(0) + s["skipped"].as_u64().unwrap_or(0) >= 1)
        },
    );
    drop(node);
    let node = start(&aura, DEMO, "demo");
    std::thread::sleep(Duration::from_secs(1));
    drop(node);
    let fired = records(&aura, "fired");
    let skipped = records(&aura, "skipped");
    let of = |records: &[Value], id: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["schedule"] == id)
            .cloned()
            .collect()
    };
    // The first instant: skipped by `skip`, never fired by it.
    let skip_skipped = of(&skipped, &skip);
    let first_skipped = &skip_skipped[0];
    let first_due = first_skipped["first"].as_str().unwrap().to_owned();
    assert!(
        of(&fired, &skip)
            .iter()
            .all(|f| f["due"] != first_due.as_str()),
        "skip fired a missed instant: {fired:?}"
    );
    // `catch-up-once`'s own first instant (10 s after its creation) is covered by its
    // first firing: at it, or at the next one standing for it too if the restart took long.
    let created = records(&aura, "created");
    let once_created: aura_core::Timestamp = created
        .iter()
        .find(|c| c["schedule"]["id"] == once.as_str())
        .unwrap()["schedule"]["created_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let once_first = once_created.saturating_add(Duration::from_secs(10));
    let once_fired = of(&fired, &once);
    assert!(!once_fired.is_empty(), "catch-up-once never fired");
    let due: aura_core::Timestamp = once_fired[0]["due"].as_str().unwrap().parse().unwrap();
    assert!(
        due == once_first || (due > once_first && once_fired[0]["missed"].as_u64() >= Some(1)),
        "{once_fired:?}"
    );
    // No instant of either schedule fired twice, and every firing has its own mission.
    for id in [&skip, &once] {
        let dues: Vec<String> = of(&fired, id)
            .iter()
            .map(|f| f["due"].as_str().unwrap().to_owned())
            .collect();
        let unique: BTreeSet<&String> = dues.iter().collect();
        assert_eq!(unique.len(), dues.len(), "an instant fired twice: {dues:?}");
    }
    let missions: BTreeSet<String> = fired
        .iter()
        .map(|f| f["mission"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(missions.len(), fired.len(), "two firings share a mission");
    assert!(records(&aura, "failed").is_empty());
}

/// `aura chat --agent`: each message is a mission of the agent, and the conversation is
/// read back from the node's missions, so it carries across a restart of the node (the
/// second node's scripted reasoner asserts it was told the first exchange).
#[test]
fn a_chat_with_an_agent_carries_across_a_node_restart() {
    let aura = Aura::new();
    aura.init();
    let script = |name: &str, text: &str| {
        let path = aura.home().join(name);
        std::fs::write(&path, text).unwrap();
        format!(
            "[reasoners.chat]\nprovider = \"scripted\"\npath = \"{}\"\n",
            path.display()
        )
    };
    let first = script(
        "chat-1.jsonl",
        r#"{"content": "", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "Hello Ada."}}], "expect": {"last_user_contains": "The user says:\nmy name is Ada"}}"#,
    );
    let node = start(&aura, &first, "chat");
    let agent = create_agent(&aura, &node);
    let say = |node: &Node, text: &str| {
        let mut c = aura.cmd(&["chat", "--agent", &agent, "--conversation", "c1"]);
        c.env("AURA_NODE", &node.url);
        aura.run_with(c, Some(text)).ok().stdout
    };
    let said = say(&node, "my name is Ada\n");
    assert!(said.contains("Hello Ada."), "{said}");
    drop(node);
    let second = script(
        "chat-2.jsonl",
        r#"{"content": "", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "Your name is Ada."}}], "expect": {"last_user_contains": "User: my name is Ada\nYou: Hello Ada.\n\nThe user says:\nwhat is my name?"}}"#,
    );
    let node = start(&aura, &second, "chat");
    let said = say(&node, "what is my name?\n");
    assert!(said.contains("Your name is Ada."), "{said}");
    // Another conversation starts afresh, and a bad name is refused in one line.
    let mut c = aura.cmd(&["chat", "--agent", &agent, "--conversation", "no such/name"]);
    c.env("AURA_NODE", &node.url);
    aura.run_with(c, Some("hi\n")).one_line_error(1);
}

/// The task runner: one mission per task, in order; the first task that does not complete
/// stops the run (exit 1, naming it) and the tasks after it are never submitted.
#[test]
fn the_task_runner_runs_tasks_in_order_and_stops_at_a_failure() {
    let aura = Aura::new();
    aura.init();
    let script = aura.home().join("tasks.jsonl");
    std::fs::write(
        &script,
        concat!(
            r#"{"content": "", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "did the first"}}], "expect": {"last_user_contains": "the first task"}}"#,
            "\n",
            r#"{"content": "", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "did the second"}}], "expect": {"last_user_contains": "the second task"}}"#,
            "\n",
            // The third task's mission gets only talk: three turns without a call fail it.
            r#"{"content": "I would rather not."}"#,
            "\n",
            r#"{"content": "Really not."}"#,
            "\n",
            r#"{"content": "No."}"#,
            "\n",
        ),
    )
    .unwrap();
    let config = format!(
        "[reasoners.tasks]\nprovider = \"scripted\"\npath = \"{}\"\n",
        script.display()
    );
    let node = start(&aura, &config, "tasks");
    let agent = create_agent(&aura, &node);
    let ran = at(
        &aura,
        &node,
        &[
            "automaton",
            "tasks",
            "--agent",
            &agent,
            "--task",
            "the first task",
            "--task",
            "the second task",
            "--timeout",
            "120",
        ],
    )
    .ok();
    assert!(
        ran.stdout.contains("task 1/2") && ran.stdout.contains("task 2/2"),
        "{}",
        ran.stdout
    );
    let stopped = at(
        &aura,
        &node,
        &[
            "automaton",
            "tasks",
            "--agent",
            &agent,
            "--task",
            "the third task",
            "--task",
            "the fourth task",
            "--timeout",
            "120",
        ],
    )
    .one_line_error(1);
    assert!(
        stopped.stderr.contains("task 1 of 2 ended failed"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("1 left undone"),
        "{}",
        stopped.stderr
    );
    let missions = at(&aura, &node, &["--json", "mission", "list"]).ok().json();
    assert_eq!(
        missions.as_array().unwrap().len(),
        3,
        "the fourth task was never submitted"
    );
}
