//! `aura pki` and `aura cell allocate|start|stop|free|list|logs` against a real
//! `aura serve` (needs root, for its cell runtime): the node serves the gRPC cell API on
//! `<home>/aurae.sock` once `aura pki init` has run, the CLI talks to it as `admin`, an
//! observer is refused changes, and errors are one line with a hint.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use support::Aura;

/// A running `aura serve`, stopped with SIGTERM (so it frees its cells) when dropped.
struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn serve(aura: &Aura) -> (Node, serde_json::Value) {
    let mut child = aura
        .cmd(&["--json", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (Node { child }, ready)
}

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
