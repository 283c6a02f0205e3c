//! `aura tui` as an operator meets it: the real binary in a real terminal (tmux, installed
//! by `scripts/setup-speech.sh --tmux`), against `aura serve` with API keys, driven with
//! `send-keys` and read back with `capture-pane`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Aura, Node, bin, start};

/// A tmux server of its own (its own socket) running one command in a 150x40 window;
/// killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(aura: &Aura, node: &Node, key: &str, args: &str) -> Tmux {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "aura-tui-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        // The shell stays after the TUI exits, so the screen shows how it ended.
        let command = format!(
            "{} tui {args}; echo \"[aura tui exited $?]\"; sleep 600",
            bin()
        );
        let home = format!("AURA_HOME={}", aura.home().display());
        let node_url = format!("AURA_NODE={}", node.url);
        let api_key = format!("AURA_API_KEY={key}");
        let out = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "150", "-y", "40", "-s", "tui"])
            .args(["-e", &home, "-e", &node_url, "-e", &api_key])
            .args(["-e", "NO_COLOR=1", "-e", "TERM=xterm-256color"])
            .arg(command)
            .output()
            .expect("tmux is missing; run scripts/setup-speech.sh --tmux");
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmux { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "tui"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "tui"])
            .args(keys)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux send-keys {keys:?}");
    }

    /// Waits until the screen no longer holds `text`; returns the screen.
    fn wait_until_gone(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if !screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the screen still shows {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the screen holds `text`; returns the screen.
    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the screen never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// Runs a command against the node with the operator's key.
fn at(aura: &Aura, node: &Node, key: &str, args: &[&str]) -> support::Out {
    let mut c = aura.cmd(args);
    c.env("AURA_NODE", &node.url).env("AURA_API_KEY", key);
    aura.run_with(c, None)
}

/// A node with the demo's scripted reasoner and an operator key, which it returns.
fn keyed_node(aura: &Aura) -> (Node, String) {
    aura.init();
    let key = aura
        .run(&["--json", "apikey", "create", "ops", "--role", "operator"])
        .ok()
        .json();
    let key = key["secret"].as_str().unwrap().to_owned();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../demo/summarise.jsonl");
    let config = format!(
        "[reasoners.demo]\nprovider = \"scripted\"\npath = \"{}\"\n",
        script.display()
    );
    (start(aura, &config, "demo"), key)
}

/// The demo mission, which policy escalates on its delete; returns its id.
fn submit_demo(aura: &Aura, node: &Node, key: &str) -> String {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../demo/workspace");
    let ws = aura.home().join("workspaces/default/project");
    std::fs::create_dir_all(&ws).unwrap();
    for name in ["plan.md", "notes.md", "build.log"] {
        std::fs::copy(demo.join(name), ws.join(name)).unwrap();
    }
    let agent = at(
        aura,
        node,
        key,
        &["--json", "agent", "create", "writer", "--level", "L2"],
    )
    .ok()
    .json();
    let mut args = vec![
        "--json",
        "mission",
        "submit",
        "--agent",
        agent["id"].as_str().unwrap(),
        "--objective",
        "Summarise the plan and the notes and clean up stale files",
        "--timeout",
        "600",
        "--workspace",
        "project",
    ];
    for tool in [
        "fs.list",
        "fs.read",
        "fs.write",
        "fs.delete",
        "mission.finish",
    ] {
        args.extend(["--tool", tool]);
    }
    let m = at(aura, node, key, &args).ok().json();
    m["id"].as_str().unwrap().to_owned()
}

#[test]
fn an_escalation_approved_in_the_tui_completes_the_mission_on_screen() {
    let aura = Aura::new();
    let (node, key) = keyed_node(&aura);
    at(
        &aura,
        &node,
        &key,
        &["operator", "enroll", "alice", "--level", "L3"],
    )
    .ok();
    let tui = Tmux::start(&aura, &node, &key, "--as alice --refresh-ms 500");
    tui.wait_for("connected to");

    // Submitted after the TUI started: it appears, and moves live to its escalation.
    let id = submit_demo(&aura, &node, &key);
    // The TUI shows the last eight characters of an id.
    let short = &id[id.len() - 8..];
    let screen = tui.wait_for("escalated");
    assert!(screen.contains(short), "{screen}");

    tui.keys(&["?"]);
    // Waiting for a line of the help's body, not its title: the screen is read while the
    // TUI may be half-way through drawing it, top to bottom.
    let help = tui.wait_for("approve the selected escalation, signed as --as NAME");
    assert!(help.contains("Keys (any key closes)"), "{help}");
    tui.keys(&["Escape"]);
    let screen = tui.wait_until_gone("Keys (any key closes)");
    assert!(screen.contains("Missions (newest first)"), "{screen}");

    tui.keys(&["2"]);
    let screen = tui.wait_for("needs L3 for `fs.delete`");
    assert!(screen.contains("as alice"), "{screen}");
    tui.keys(&["a"]);
    tui.wait_for(&format!("approved {short}"));

    tui.keys(&["1"]);
    let screen = tui.wait_for("completed");
    assert!(
        screen.contains("summary"),
        "the detail shows the summary:\n{screen}"
    );
    tui.keys(&["3"]);
    tui.wait_for("Ledger tail");
    // The tail's line (`#N -> completed (…)`), not the detail's history left on screen.
    let screen = tui.wait_for("-> completed (objective reached)");
    assert!(screen.contains("approved by"), "{screen}");
    assert!(screen.contains(short), "{screen}");
    // Above the tail, the latest checkpoint the node signed.
    assert!(screen.contains("Latest signed checkpoint"), "{screen}");
    assert!(screen.contains("tree size"), "{screen}");

    // The agents page lists the mission's agent with its missions, and creates one.
    tui.keys(&["4"]);
    let screen = tui.wait_for("credential");
    assert!(screen.contains("writer"), "{screen}");
    assert!(screen.contains(short), "the agent's missions:\n{screen}");
    tui.keys(&["n"]);
    tui.wait_for("new agent: name");
    tui.keys(&["-l", "scout L3"]);
    tui.keys(&["Enter"]);
    tui.wait_for("created agent scout");
    let agents = at(&aura, &node, &key, &["--json", "agent", "list"])
        .ok()
        .json();
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "scout" && a["level"] == "L3"),
        "{agents}"
    );

    let m = at(&aura, &node, &key, &["--json", "mission", "show", &id])
        .ok()
        .json();
    assert_eq!(m["state"], "completed", "{m}");

    tui.keys(&["q"]);
    tui.wait_for("[aura tui exited 0]");
}

#[test]
fn a_key_the_node_refuses_shows_on_the_status_line_and_the_tui_keeps_running() {
    let aura = Aura::new();
    let (node, key) = keyed_node(&aura);
    let id = submit_demo(&aura, &node, &key);

    let tui = Tmux::start(&aura, &node, "aura_not-a-key", "");
    let screen = tui.wait_for("cannot read the missions");
    assert!(
        !screen.contains(&id[id.len() - 8..]),
        "nothing is shown to a bad key:\n{screen}"
    );
    // Approving without an approver is refused by the TUI itself, and it keeps running.
    tui.keys(&["?"]);
    tui.wait_for("Keys (any key closes)");
    tui.keys(&["q"]);
    tui.wait_for("[aura tui exited 0]");

    // Outside a terminal it says what to use instead.
    let mut c = aura.cmd(&["tui"]);
    c.env("AURA_NODE", &node.url);
    let out = aura.run_with(c, None).one_line_error(1);
    assert!(out.stderr.contains("needs a terminal"), "{}", out.stderr);
}
