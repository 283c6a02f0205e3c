//! `aura pki` and `aura cell allocate|start|stop|free|list|logs` against a real
//! `aura serve` (needs root, for its cell runtime): the node serves the gRPC cell API on
//! `<home>/aurae.sock` once `aura pki init` has run, the CLI talks to it as `admin`, an
//! observer is refused changes, and errors are one line with a hint.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use support::{Aura, serve};

#[test]
fn root_cells_on_a_node_through_the_grpc_socket() {
    let a = Aura::new();
    a.init();
    // Before `aura pki init` there is no socket, and the CLI says what to do.
    let out = a.run(&["cell", "list"]).one_line_error(1);
    assert!(out.stderr.contains("aura pki init"), "{}", out.stderr);

    let made = a
        .run(&[
            "--json",
            "pki",
            "init",
            "--san",
            "node.example",
            "--days",
            "30",
        ])
        .ok()
        .json();
    assert_eq!(
        made["server_sans"],
        serde_json::json!(["server.unsafe.aurae.io", "localhost", "node.example"])
    );
    let config = std::fs::read_to_string(made["client"]["config"].as_str().unwrap()).unwrap();
    assert!(
        config.contains("[auth]") && config.contains("client_key = "),
        "{config}"
    );
    assert!(
        config.contains("[system]") && config.contains("aurae.sock"),
        "{config}"
    );
    a.run(&["pki", "client", "watcher", "--role", "observer"])
        .ok();
    a.run(&["pki", "init"]).one_line_error(1);

    let (node, ready) = serve(&a);
    let socket = a.home().join("aurae.sock");
    assert_eq!(ready["grpc_socket"], socket.to_str().unwrap(), "{ready}");

    a.run(&[
        "cell", "allocate", "web", "--memory", "128M", "--pids", "64",
    ])
    .ok();
    a.run(&["cell", "allocate", "web/api", "--cpus", "0.5"])
        .ok();
    let started = a
        .run(&[
            "--json",
            "cell",
            "start",
            "web/api",
            "hello",
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exec sleep 30",
        ])
        .ok()
        .json();
    assert!(started["pid"].as_i64().unwrap() > 0);

    // The logs so far, each stream to its own.
    let mut logs = a.run(&["cell", "logs", "web/api", "hello"]).ok();
    for _ in 0..100 {
        if logs.stdout == "hi\n" && logs.stderr == "oops\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        logs = a.run(&["cell", "logs", "web/api", "hello"]).ok();
    }
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        ("hi\n", "oops\n")
    );

    let listed = a.run(&["--json", "cell", "list"]).ok().json();
    assert_eq!(listed[0]["name"], "web");
    let api = &listed[0]["children"][0];
    assert_eq!(api["name"], "web/api");
    assert_eq!(api["executables"][0]["running"], true);

    // An observer may look, not change.
    let watcher = a.home().join("pki/clients/watcher.toml");
    let watcher = watcher.to_str().unwrap();
    a.run(&["cell", "list", "--client-config", watcher]).ok();
    let out = a
        .run(&["cell", "free", "web", "--client-config", watcher])
        .one_line_error(1);
    assert!(out.stderr.contains("needs admin"), "{}", out.stderr);

    let stopped = a
        .run(&["--json", "cell", "stop", "web/api", "hello"])
        .ok()
        .json();
    assert_eq!(stopped["signal"], libc::SIGTERM);
    // Following an ended executable prints its history and ends.
    let out = a
        .run(&["cell", "logs", "web/api", "hello", "--follow", "--stdout"])
        .ok();
    assert_eq!(out.stdout, "hi\n");

    let out = a.run(&["cell", "free", "ghost"]).one_line_error(1);
    assert!(
        out.stderr.contains("`ghost` does not exist"),
        "{}",
        out.stderr
    );
    let out = a.run(&["cell", "allocate", "bad name"]).one_line_error(1);
    assert!(out.stderr.contains("invalid cell name"), "{}", out.stderr);

    a.run(&["cell", "free", "web"]).ok();
    assert_eq!(a.run(&["cell", "list"]).ok().stdout, "no cells\n");
    drop(node);
    assert!(!socket.exists(), "the socket outlived the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_cells_over_http_for_operators_with_a_key() {
    use serde_json::{Value, json};
    let a = Aura::new();
    a.init();
    let key = a
        .run(&["--json", "apikey", "create", "ops", "--role", "operator"])
        .ok()
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let (node, ready) = serve(&a);
    assert_eq!(ready["cells"], true, "{ready}");
    let http = reqwest::Client::new();
    let call = |method: &str, path: &str, body: Option<Value>| {
        let mut r = http
            .request(method.parse().unwrap(), format!("{}{path}", node.url))
            .bearer_auth(&key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            )
        }
    };

    // Bad specs allocate nothing.
    for (body, status) in [
        (json!({"name": "bad name"}), 400),
        (json!({"name": "c", "limits": {"pids_max": 0}}), 400),
        (json!({"name": "nope/child"}), 404),
        (json!({"name": "c", "unknown": 1}), 400),
        // The node's home as a workspace (a workspace is a name, never a host path) or as
        // a bind (the allowlist is empty, and the home is never in it).
        (json!({"name": "c", "workspace": a.home()}), 400),
        (
            json!({"name": "c", "binds": [{"source": a.home(), "target": "/data"}]}),
            403,
        ),
    ] {
        let (got, answer) = call("POST", "/v1/cells", Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    assert_eq!(call("GET", "/v1/cells", None).await.1["cells"], json!([]));

    let (status, answer) = call(
        "POST",
        "/v1/cells",
        Some(json!({"name": "web", "limits": {"memory_max": 134217728u64, "pids_max": 64}})),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, _) = call("POST", "/v1/cells", Some(json!({"name": "web"}))).await;
    assert_eq!(status, 409);
    let (status, answer) = call("POST", "/v1/cells", Some(json!({"name": "web/api"}))).await;
    assert_eq!(status, 201, "{answer}");

    // Start, wait, read the logs with their channels and timestamps.
    let (status, started) = call(
        "POST",
        "/v1/cells/web%2Fapi/executables",
        Some(json!({"name": "hello", "command": {"shell": "echo hi; echo oops >&2"}})),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    assert!(started["pid"].as_i64().unwrap() > 0);
    let (status, exited) = call(
        "POST",
        "/v1/cells/web%2Fapi/executables/hello/wait?timeout_ms=10000",
        None,
    )
    .await;
    assert_eq!(status, 200, "{exited}");
    assert_eq!(exited["exit"]["status"]["exited"], 0, "{exited}");
    let (_, lines) = call("GET", "/v1/cells/web%2Fapi/executables/hello/logs", None).await;
    let lines: Vec<(String, String)> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert!(l["timestamp"].is_string() || l["timestamp"].is_u64(), "{l}");
            (
                l["channel"].as_str().unwrap().to_owned(),
                l["line"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(lines.contains(&("stdout".into(), "hi".into())), "{lines:?}");
    assert!(
        lines.contains(&("stderr".into(), "oops".into())),
        "{lines:?}"
    );
    // A long runner: a late follower gets the history, then it is stopped by SIGTERM.
    let (status, _) = call(
        "POST",
        "/v1/cells/web/executables",
        Some(json!({"name": "long", "command": {"argv": ["sh", "-c", "echo started; exec sleep 60"]}})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        "POST",
        "/v1/cells/web/executables",
        Some(json!({"name": "long", "command": {"shell": "true"}})),
    )
    .await;
    assert_eq!(status, 409, "a running executable's name is taken");
    let (status, running) = call(
        "POST",
        "/v1/cells/web/executables/long/wait?timeout_ms=300",
        None,
    )
    .await;
    assert_eq!(status, 202, "{running}");
    let mut follow = http
        .get(format!(
            "{}/v1/cells/web/executables/long/logs?follow=true",
            node.url
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let first = String::from_utf8(follow.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.contains("\"started\""), "{first}");
    let (status, stopped) = call(
        "POST",
        "/v1/cells/web/executables/long/stop",
        Some(json!({"grace_ms": 2000})),
    )
    .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(
        stopped["exit"]["status"]["signaled"],
        libc::SIGTERM,
        "{stopped}"
    );
    drop(follow);

    // Usage from the cgroup, then the tree, then free.
    let (status, web) = call("GET", "/v1/cells/web", None).await;
    assert_eq!(status, 200, "{web}");
    assert!(web["usage"].is_object(), "{web}");
    let (_, tree) = call("GET", "/v1/cells", None).await;
    assert_eq!(tree["cells"][0]["cell"]["spec"]["name"], "web", "{tree}");
    let (status, _) = call("DELETE", "/v1/cells/web", None).await;
    assert_eq!(status, 204);
    let (status, _) = call("GET", "/v1/cells/web", None).await;
    assert_eq!(status, 404);
    assert_eq!(call("GET", "/v1/cells", None).await.1["cells"], json!([]));
    drop(node);
}

/// `aura serve` with `[cells] host_binds` listing the node's home (or a path above it)
/// would have let an operator bind its keys and database into a cell: the node refuses
/// to start, in one line with a hint, and serves nothing.
#[test]
fn root_serve_refuses_host_binds_that_hold_the_nodes_home() {
    let a = Aura::new();
    a.init();
    let home = a.home();
    for entry in [home.clone(), home.parent().unwrap().to_owned()] {
        std::fs::write(
            home.join("aura.toml"),
            format!(
                "[cells]\nhost_binds = [{:?}]\n",
                entry.display().to_string()
            ),
        )
        .unwrap();
        let out = a
            .run(&["serve", "--listen", "127.0.0.1:0"])
            .one_line_error(1);
        assert!(
            out.stderr.contains("host_binds") && out.stderr.contains("node's home"),
            "{}",
            out.stderr
        );
    }
}
