//! WASM plugins through the real binaries: the example components (plugins/examples, built
//! here for wasm32-wasip2) packed and signed with a key of the keystore (`aura plugin
//! pack`), refused by `aura plugin install` while their publisher is untrusted, tampered
//! or unsigned, installed once trusted, and called by a mission of `aura serve`: the
//! example's answer is in the agent's record, the hostile plugin's escapes (endless loop,
//! unbounded memory, a file outside its workspace, a socket) each reach the mission as a
//! clear tool error and the mission goes on, and a call Cedar denies is recorded as
//! denied.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Aura, Node, serve};

/// The examples' components, built into the target directory (shared with aura-plugin's
/// tests, so the second build is a no-op).
fn component(name: &str) -> PathBuf {
    // target/debug/deps/<test binary>: the target directory is three levels up.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().join("wasm-plugins");
    let manifest =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/examples/Cargo.toml");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the example plugins failed (is the wasm32-wasip2 target installed? \
         `rustup target add wasm32-wasip2`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join(format!("wasm32-wasip2/release/{name}.wasm"))
}

fn at(aura: &Aura, node: &Node, args: &[&str]) -> support::Out {
    let mut c = aura.cmd(args);
    c.env("AURA_NODE", &node.url);
    aura.run_with(c, None)
}

/// Writes a manifest template for `aura plugin pack` and packs `wasm` with it.
fn pack(
    aura: &Aura,
    dir: &Path,
    name: &str,
    wasm: &Path,
    key: &str,
    schema: &serde_json::Value,
) -> PathBuf {
    let template = dir.join(format!("{name}.json"));
    std::fs::write(
        &template,
        json!({
            "name": name,
            "version": "1.0.0",
            "description": format!("the {name} example"),
            "capabilities": {"workspace": "read", "hosts": []},
            "limits": {"fuel": 200_000_000u64, "memory_bytes": 32 << 20, "timeout_ms": 5000, "output_bytes": 65536},
            "input_schema": schema,
        })
        .to_string(),
    )
    .unwrap();
    let out = dir.join(name);
    let packed = aura
        .run(&[
            "--json",
            "plugin",
            "pack",
            template.to_str().unwrap(),
            wasm.to_str().unwrap(),
            "--key",
            key,
            "--out",
            out.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(packed["tool"], format!("plugin.{name}"), "{packed}");
    out
}

fn copy_package(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["plugin.json", "plugin.wasm"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn a_mission_calls_an_installed_plugin_and_each_escape_of_a_hostile_one_is_a_clear_error() {
    let wordcount = component("wordcount");
    let hostile = component("hostile");
    let aura = Aura::new();
    aura.init();
    aura.run(&["key", "new", "acme"]).ok();
    aura.run(&["key", "new", "mallory"]).ok();
    let src = tempfile::tempdir().unwrap();
    let wc_schema = json!({
        "type": "object",
        "properties": {"path": {"type": "string"}, "save_to": {"type": "string"}},
        "required": ["path"],
        "additionalProperties": false
    });
    let wc = pack(
        &aura,
        src.path(),
        "wordcount",
        &wordcount,
        "acme",
        &wc_schema,
    );
    let hostile_pkg = pack(
        &aura,
        src.path(),
        "hostile",
        &hostile,
        "acme",
        &json!({"type": "object", "required": ["do"]}),
    );
    // The same component under another name, which an operator's policy forbids.
    let banned = pack(&aura, src.path(), "banned", &wordcount, "acme", &wc_schema);
    let strangers = pack(
        &aura,
        src.path(),
        "strangers",
        &wordcount,
        "mallory",
        &json!({"type": "object"}),
    );
    let installed = aura.home().join("plugins/installed");

    // Not trusted yet: refused, with the command that would trust it.
    let refused = aura
        .run(&["plugin", "install", wc.to_str().unwrap()])
        .one_line_error(1);
    assert!(
        refused.stderr.contains("is not trusted by this node"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("hint: `aura plugin trust "),
        "{}",
        refused.stderr
    );
    let trusted = aura
        .run(&["--json", "plugin", "trust", "acme", "--name", "acme"])
        .ok()
        .json();
    assert_eq!(trusted["added"], true, "{trusted}");

    // A tampered component, a manifest whose signature is gone, and a package signed by a
    // key nobody trusted are refused, and nothing is installed.
    let tampered = src.path().join("tampered");
    copy_package(&wc, &tampered);
    let mut bytes = std::fs::read(tampered.join("plugin.wasm")).unwrap();
    bytes[300] ^= 0x01;
    std::fs::write(tampered.join("plugin.wasm"), &bytes).unwrap();
    let out = aura
        .run(&["plugin", "install", tampered.to_str().unwrap()])
        .one_line_error(1);
    assert!(
        out.stderr
            .contains("is not the component the manifest names"),
        "{}",
        out.stderr
    );
    let unsigned = src.path().join("unsigned");
    copy_package(&wc, &unsigned);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unsigned.join("plugin.json")).unwrap()).unwrap();
    manifest.as_object_mut().unwrap().remove("signature");
    std::fs::write(unsigned.join("plugin.json"), manifest.to_string()).unwrap();
    let out = aura
        .run(&["plugin", "install", unsigned.to_str().unwrap()])
        .one_line_error(1);
    assert!(
        out.stderr.contains("refusing the package"),
        "{}",
        out.stderr
    );
    let out = aura
        .run(&["plugin", "install", strangers.to_str().unwrap()])
        .one_line_error(1);
    assert!(out.stderr.contains("is not trusted"), "{}", out.stderr);
    assert!(!installed.exists() || std::fs::read_dir(&installed).unwrap().next().is_none());

    for pkg in [&wc, &hostile_pkg, &banned] {
        let got = aura
            .run(&["--json", "plugin", "install", pkg.to_str().unwrap()])
            .ok()
            .json();
        assert!(got["digest"].as_str().unwrap().len() == 64, "{got}");
    }
    let again = aura
        .run(&["plugin", "install", wc.to_str().unwrap()])
        .one_line_error(1);
    assert!(again.stderr.contains("--replace"), "{}", again.stderr);
    let listed = aura.run(&["--json", "plugin", "list"]).ok().json();
    let names: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["banned", "hostile", "wordcount"], "{listed}");
    assert!(
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["ok"] == true),
        "{listed}"
    );

    // The operator forbids one plugin outright.
    std::fs::create_dir_all(aura.home().join("policies")).unwrap();
    std::fs::write(
        aura.home().join("policies/plugins.cedar"),
        "@id(\"ops.no-banned\")\nforbid (principal, action == Aura::Action::\"plugin.call\", resource is Aura::Plugin)\nwhen { resource.name == \"banned\" };\n",
    )
    .unwrap();

    // The mission: count words, then each of the hostile plugin's escapes, then the
    // forbidden plugin; each turn checks the result of the call before it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let calls = [
        ("plugin_wordcount", json!({"path": "notes.txt"}), None),
        ("plugin_wordcount", json!({"path": 3}), Some("\"words\":5")),
        // Arguments that do not fit the plugin's schema are refused before policy.
        (
            "plugin_hostile",
            json!({"do": "spin"}),
            Some("aura:tool-check"),
        ),
        (
            "plugin_hostile",
            json!({"do": "allocate"}),
            Some("ran out of fuel"),
        ),
        (
            "plugin_hostile",
            json!({"do": "read", "path": "/etc/passwd"}),
            Some("bytes of memory"),
        ),
        (
            "plugin_hostile",
            json!({"do": "dial", "addr": addr}),
            Some("cannot read /etc/passwd"),
        ),
        (
            "plugin_banned",
            json!({"path": "notes.txt"}),
            Some("cannot connect to"),
        ),
        (
            "mission_finish",
            json!({"summary": "five words"}),
            Some("ops.no-banned"),
        ),
    ];
    let mut script = String::new();
    for (tool, args, expect) in calls {
        let mut turn =
            json!({"content": "Next.", "tool_calls": [{"name": tool, "arguments": args}]});
        if let Some(e) = expect {
            turn["expect"] = json!({"last_tool_result_contains": e});
        }
        script.push_str(&turn.to_string());
        script.push('\n');
    }
    let script_path = src.path().join("plugins.jsonl");
    std::fs::write(&script_path, script).unwrap();
    let config = format!(
        "[reasoners.demo]\nprovider = \"scripted\"\npath = \"{}\"\n",
        script_path.display()
    );
    std::fs::write(aura.home().join("aura.toml"), &config).unwrap();
    let (node, ready) = serve(&aura);
    assert_eq!(ready["default_reasoner"], "demo", "{ready}");
    // Served from the start: every installed plugin is one of the node's tools.
    for tool in ["plugin.banned", "plugin.hostile", "plugin.wordcount"] {
        assert!(
            ready["tools"].as_array().unwrap().iter().any(|t| t == tool),
            "{tool} is not served: {ready}"
        );
    }
    let ws = aura.home().join("workspaces/default/project");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("notes.txt"), "one two three\nfour five\n").unwrap();

    let agent = at(
        &aura,
        &node,
        &["--json", "agent", "create", "counter", "--level", "L2"],
    )
    .ok()
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let submitted = at(
        &aura,
        &node,
        &[
            "--json",
            "mission",
            "submit",
            "--agent",
            &agent,
            "--objective",
            "Count the words",
            "--timeout",
            "600",
            "--workspace",
            "project",
            "--tool",
            "plugin.wordcount",
            "--tool",
            "plugin.hostile",
            "--tool",
            "plugin.banned",
            "--tool",
            "mission.finish",
        ],
    )
    .ok()
    .json();
    let id = submitted["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let done = loop {
        let m = at(&aura, &node, &["--json", "mission", "show", &id])
            .ok()
            .json();
        if m["state"] == "completed" || m["state"] == "failed" {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "mission {id} is stuck: {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["summary"], "five words", "{done}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the plugin reached no socket");

    // The calls, their results and the denial are in the agent's record; the node
    // recorded which plugins it served.
    let record = at(
        &aura,
        &node,
        &[
            "--json", "ledger", "show", "--agent", &agent, "--limit", "1000",
        ],
    )
    .ok()
    .stdout;
    for needle in [
        "plugin.wordcount",
        "plugin.hostile",
        "ran out of fuel",
        "ops.no-banned",
    ] {
        assert!(
            record.contains(needle),
            "{needle} is not in the record: {record}"
        );
    }
    let node_record = at(
        &aura,
        &node,
        &[
            "--json", "ledger", "show", "--agent", "node", "--limit", "1000",
        ],
    )
    .ok()
    .stdout;
    assert!(node_record.contains("plugin.loaded"), "{node_record}");
    drop(node);
    let verified = aura.run(&["--json", "ledger", "verify"]).ok().json();
    assert_eq!(verified["ok"], true, "{verified}");

    // Revoked trust: the installed plugins are refused from then on (listed as refused,
    // not served by the next start, not installable), and removal works.
    let untrusted = aura
        .run(&["--json", "plugin", "untrust", "acme"])
        .ok()
        .json();
    assert_eq!(untrusted["removed"], true, "{untrusted}");
    let listed = aura.run(&["--json", "plugin", "list"]).ok().json();
    let plugins = listed["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 3, "{listed}");
    assert!(
        plugins
            .iter()
            .all(|p| p["ok"] == false && p["error"].as_str().unwrap().contains("is not trusted")),
        "{listed}"
    );
    let (node, ready) = serve(&aura);
    assert!(
        !ready["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().starts_with("plugin.")),
        "an untrusted publisher's plugin is served: {ready}"
    );
    drop(node);
    let out = aura
        .run(&["plugin", "install", "--replace", wc.to_str().unwrap()])
        .one_line_error(1);
    assert!(out.stderr.contains("is not trusted"), "{}", out.stderr);
    assert!(installed.join("wordcount/plugin.wasm").exists());

    aura.run(&["plugin", "remove", "banned"]).ok();
    let out = aura.run(&["plugin", "remove", "banned"]).one_line_error(1);
    assert!(out.stderr.contains("no plugin named"), "{}", out.stderr);
    assert!(!installed.join("banned").exists());
    // A name is never a path: nothing outside the plugins' directory can be removed.
    aura.run(&["plugin", "remove", "../installed"])
        .one_line_error(1);
    assert!(installed.join("wordcount").exists());
    let listed = aura.run(&["plugin", "list"]).ok().stdout;
    assert!(
        listed.contains("hostile") && !listed.contains("banned"),
        "{listed}"
    );
}

/// `aura plugin --help` lists the subcommands with one line each.
#[test]
fn plugin_help_is_stable() {
    let aura = Aura::new();
    insta::assert_snapshot!("plugin_help", aura.run(&["plugin", "--help"]).ok().stdout);
}
