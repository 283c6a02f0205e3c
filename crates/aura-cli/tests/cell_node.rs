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
