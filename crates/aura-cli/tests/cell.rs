//! `aura cell run` through the real binary (needs root, like every cell): output
//! streamed and exit codes passed through, the workspace writable, loopback only without
//! `--network`, a timeout killing the command (128 + 9), the `--json` summary, and bad
//! input refused with one error line before anything runs.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use support::Aura;

#[test]
fn root_cell_run_passes_output_and_exit_codes_through() {
    let a = Aura::new();
    let out = a.run(&[
        "cell",
        "run",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");

    let out = a.run(&["cell", "run", "--", "true"]).ok();
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
}

#[test]
fn root_cell_run_writes_only_the_workspace_and_has_no_network() {
    let a = Aura::new();
    // A user's directory: the command runs as that user, and its files stay theirs.
    let ws = a.dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(1000), Some(1000)).unwrap();
    let out = a
        .run(&[
            "cell",
            "run",
            "--workspace",
            ws.to_str().unwrap(),
            "--memory",
            "256M",
            "--pids",
            "32",
            "--cpus",
            "0.5",
            "-e",
            "WHO=cell",
            "--",
            "sh",
            "-c",
            "echo \"$WHO\" > made-here; pwd; tail -n +3 /proc/net/dev | wc -l; touch /etc/x 2>/dev/null || echo read-only",
        ])
        .ok();
    assert_eq!(out.stdout, "/workspace\n1\nread-only\n");
    assert_eq!(
        std::fs::read_to_string(ws.join("made-here")).unwrap(),
        "cell\n"
    );
    {
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(std::fs::metadata(ws.join("made-here")).unwrap().uid(), 1000);
    }
}

#[test]
fn root_cell_run_timeout_kills_and_json_summarises() {
    let a = Aura::new();
    let out = a.run(&["cell", "run", "--timeout", "0.3", "--", "sleep", "30"]);
    assert_eq!(out.code, 128 + 9, "{out:?}");
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);

    let out = a.run(&[
        "cell",
        "run",
        "--json",
        "--",
        "sh",
        "-c",
        "echo hi; echo there >&2; exit 4",
    ]);
    assert_eq!(out.code, 4, "{out:?}");
    let v = out.json();
    assert_eq!(v["code"], 4);
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["signal"], serde_json::Value::Null);
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["stderr"], "there\n");
    assert_eq!(v["timed_out"], false);
    assert_eq!(v["oom_killed"], false);
    assert!(v["duration_ms"].is_u64());
}

#[test]
fn root_cell_run_refuses_bad_input_with_one_line() {
    let a = Aura::new();
    // Usage errors: exit 2.
    a.run(&["cell", "run", "--memory", "12Q", "--", "true"])
        .one_line_error(2);
    a.run(&["cell", "run", "--timeout", "0", "--", "true"])
        .one_line_error(2);
    a.run(&["cell", "run"]).one_line_error(2);
    // Refused before anything runs: exit 1 with a hint.
    let missing = a.dir.path().join("missing");
    let out = a
        .run(&[
            "cell",
            "run",
            "--workspace",
            missing.to_str().unwrap(),
            "--",
            "true",
        ])
        .one_line_error(1);
    assert!(out.stderr.contains("workspace"), "{}", out.stderr);
    // A directory of the host's root: whatever a cell wrote there would be root's.
    let rooted = a.dir.path().join("rooted");
    std::fs::create_dir(&rooted).unwrap();
    let out = a
        .run(&[
            "cell",
            "run",
            "--workspace",
            rooted.to_str().unwrap(),
            "--",
            "true",
        ])
        .one_line_error(1);
    assert!(out.stderr.contains("belongs to root"), "{}", out.stderr);
    assert!(
        out.stderr.contains("hint: give it to the cells"),
        "{}",
        out.stderr
    );
    a.run(&["cell", "run", "--cpus", "0", "--", "true"])
        .one_line_error(1);
    a.run(&["cell", "run", "-e", "=x", "--", "true"])
        .one_line_error(1);
    let out = a
        .run(&["cell", "run", "--", "no-such-command-here"])
        .one_line_error(1);
    assert!(
        out.stderr.contains("no-such-command-here"),
        "{}",
        out.stderr
    );
}

#[test]
fn cell_run_help_is_stable() {
    let a = Aura::new();
    insta::assert_snapshot!(a.run(&["cell", "run", "--help"]).ok().stdout);
}
