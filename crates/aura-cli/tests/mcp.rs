//! MCP both ways through the real binaries (needs root for the cell, and pip for the
//! official `mcp` SDK, installed by `scripts/setup-python.sh mcp`): `aura serve` with an
//! MCP server registered in aura.toml (the SDK's server, run in a cell), and the SDK's
//! client driving `aura mcp serve` with an API key: it lists Aura's tools, submits a
//! mission whose agent calls the MCP server's tool, gets the mission's result, reads the
//! record; an approver's key cannot submit.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{Aura, start};

/// The interpreter's real path and prefix.
fn python() -> (String, String) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable)); print(sys.base_prefix)",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_owned(),
        lines.next().unwrap().to_owned(),
    )
}

fn key(aura: &Aura, name: &str, role: &str) -> String {
    let key = aura
        .run(&["--json", "apikey", "create", name, "--role", role])
        .ok()
        .json();
    key["secret"]
        .as_str()
        .or_else(|| key["key"].as_str())
        .unwrap_or_else(|| panic!("no secret in {key}"))
        .to_owned()
}

#[test]
fn root_the_mcp_sdk_drives_aura_and_a_mission_calls_an_mcp_server_in_a_cell() {
    let sdk = support::python_libs(support::PythonLibs::Mcp);
    let (exe, prefix) = python();
    // Copied under /var/tmp: a cell sees host directories at the same paths and mounts a
    // /tmp of its own, so a checkout under /tmp (as CI's fresh clone) cannot be bound.
    let copy = tempfile::Builder::new()
        .prefix("aura-mcp-fixtures-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../aura-mcp/tests/fixtures");
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    let fixtures = copy.path().to_owned();
    let aura = Aura::new();
    aura.init();
    // The agent adds with the MCP server's tool, then finishes with what it read.
    let script = aura.home().join("mcp-turns.jsonl");
    std::fs::write(
        &script,
        concat!(
            r#"{"content": "I add.", "tool_calls": [{"name": "mcp_probe_add", "arguments": {"a": 2, "b": 3}}], "expect": {"tools_offered": ["mcp_probe_add", "mission_finish"]}}"#,
            "\n",
            r#"{"content": "Done.", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "the sum is 5"}}], "expect": {"last_tool_result_contains": "5"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let mut binds = vec![
        format!("{:?}", sdk.display().to_string()),
        format!("{:?}", fixtures.display().to_string()),
    ];
    if !prefix.starts_with("/usr") {
        binds.push(format!("{prefix:?}"));
    }
    let config = format!(
        "[reasoners.demo]\nprovider = \"scripted\"\npath = {script:?}\n\n\
         [[mcp.servers]]\nname = \"probe\"\ncommand = [{exe:?}, {server:?}]\n\
         binds = [{binds}]\ntrusted = true\nenv = {{ PYTHONPATH = {sdk:?} }}\n",
        script = script.display().to_string(),
        server = fixtures.join("server.py").display().to_string(),
        binds = binds.join(", "),
        sdk = sdk.display().to_string(),
    );
    let operator = key(&aura, "ops", "operator");
    let approver = key(&aura, "ok", "approver");
    let node = start(&aura, &config, "demo");

    let mut c = aura.cmd(&["--json", "agent", "create", "adder", "--level", "L2"]);
    c.env("AURA_NODE", &node.url).env("AURA_API_KEY", &operator);
    let agent = aura.run_with(c, None).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_client.py");
    let out = Command::new("python3")
        .arg(&client)
        .arg(support::bin())
        .arg(&agent)
        .env("PYTHONPATH", &sdk)
        .env("AURA_HOME", aura.home())
        .env("AURA_NODE", &node.url)
        .env("AURA_API_KEY", &operator)
        .env("AURA_API_KEY_APPROVER", &approver)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "mission_submit",
        "mission_wait",
        "approvals_list",
        "agent_record",
        "ledger_inclusion_proof",
        "chat",
    ] {
        assert!(tools.contains(&t), "{t} missing from {tools:?}");
    }
    assert_eq!(seen["submit_is_error"], false, "{seen}");
    assert_eq!(seen["mission"]["state"], "completed", "{seen}");
    assert_eq!(seen["mission"]["summary"], "the sum is 5", "{seen}");
    // The call of the MCP tool and its result are in the agent's record.
    let record = seen["record"].as_str().unwrap();
    assert!(record.contains("mcp.probe.add"), "{record}");
    assert!(seen["checkpoint"]["public_key"].is_string(), "{seen}");
    assert!(
        seen["bad_id"].as_str().unwrap().contains("not an id"),
        "{seen}"
    );
    assert_eq!(seen["approver_submit_is_error"], true, "{seen}");

    // The operator's registration of the server is in the node's own record.
    let ledger = aura
        .run(&["--json", "ledger", "show", "--agent", "node"])
        .ok();
    assert!(
        ledger.stdout.contains("mcp.registered"),
        "{}",
        ledger.stdout
    );
    drop(node);
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port` (the SDK's server takes a while to start on a
/// loaded machine).
fn wait_listening(port: u16) {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("nothing listens on {port} after 60 s");
}

#[test]
fn streamable_http_both_ways_a_mission_calls_an_allowlisted_http_server_and_the_sdk_drives_aura_over_http()
 {
    let sdk = support::python_libs(support::PythonLibs::Mcp);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../aura-mcp/tests/fixtures");
    // The SDK's own server, over streamable HTTP on the host (no cell: HTTP servers are
    // reached by URL).
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = free_port();
    let _server = Kill(
        Command::new("python3")
            .arg(fixtures.join("server.py"))
            .arg("--http")
            .arg(port.to_string())
            .env("PYTHONPATH", &sdk)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);

    let aura = Aura::new();
    aura.init();
    let script = aura.home().join("mcp-turns.jsonl");
    std::fs::write(
        &script,
        concat!(
            r#"{"content": "I add.", "tool_calls": [{"name": "mcp_web_add", "arguments": {"a": 2, "b": 3}}], "expect": {"tools_offered": ["mcp_web_add", "mission_finish"]}}"#,
            "\n",
            r#"{"content": "Done.", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "the sum is 5"}}], "expect": {"last_tool_result_contains": "5"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let reasoner = format!(
        "[reasoners.demo]\nprovider = \"scripted\"\npath = {:?}\n\n",
        script.display().to_string()
    );
    let server_table = format!(
        "[[mcp.servers]]\nname = \"web\"\nurl = \"http://127.0.0.1:{port}/mcp\"\ntrusted = true\n"
    );
    // Not on the allowlist: the node refuses to start, saying so.
    std::fs::write(
        aura.home().join("aura.toml"),
        format!("{reasoner}[mcp]\nhttp_allowlist = [\"http://127.0.0.1:1/\"]\n\n{server_table}"),
    )
    .unwrap();
    let refused = aura
        .run(&["serve", "--listen", "127.0.0.1:0"])
        .one_line_error(1);
    assert!(
        refused.stderr.contains("is not on [mcp] http_allowlist"),
        "{}",
        refused.stderr
    );
    let config = format!(
        "{reasoner}[mcp]\nhttp_allowlist = [\"http://127.0.0.1:{port}/\"]\n\n{server_table}"
    );
    let operator = key(&aura, "ops", "operator");
    let node = start(&aura, &config, "demo");
    let mut c = aura.cmd(&["--json", "agent", "create", "adder", "--level", "L2"]);
    c.env("AURA_NODE", &node.url).env("AURA_API_KEY", &operator);
    let agent = aura.run_with(c, None).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // `aura mcp serve --http`: each client brings its own API key as its bearer token.
    let mcp_port = free_port();
    let mut serve = aura.cmd(&["mcp", "serve", "--http", &format!("127.0.0.1:{mcp_port}")]);
    serve
        .env("AURA_NODE", &node.url)
        .env_remove("AURA_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _mcp = Kill(serve.spawn().unwrap());
    wait_listening(mcp_port);

    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_http_client.py");
    let url = format!("http://127.0.0.1:{mcp_port}/mcp");
    let out = Command::new("python3")
        .arg(&client)
        .arg(&url)
        .arg(&operator)
        .arg(&agent)
        .env("PYTHONPATH", &sdk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        seen["tools"]
            .as_array()
            .unwrap()
            .contains(&"mission_submit".into()),
        "{seen}"
    );
    assert_eq!(seen["submit_is_error"], false, "{seen}");
    assert_eq!(seen["mission"]["state"], "completed", "{seen}");
    assert_eq!(seen["mission"]["summary"], "the sum is 5", "{seen}");
    assert!(
        seen["record"].as_str().unwrap().contains("mcp.web.add"),
        "{seen}"
    );

    // A key the node does not know cannot open a session.
    let bad = Command::new("python3")
        .arg(&client)
        .arg(&url)
        .arg("not-a-key")
        .arg(&agent)
        .env("PYTHONPATH", &sdk)
        .output()
        .unwrap();
    assert!(!bad.status.success(), "a bad key opened a session");

    // The registration names the HTTP transport.
    let ledger = aura
        .run(&["--json", "ledger", "show", "--agent", "node"])
        .ok();
    assert!(
        ledger.stdout.contains("streamable HTTP: http://127.0.0.1:"),
        "{}",
        ledger.stdout
    );
    drop(node);
}
