//! `cmd.run` through [`CellRunner`] (needs root): real cells behind aura-tools'
//! `CommandRunner`: the workspace is writable, no network means loopback only, a timeout
//! kills, exit codes and signals come back, output is cut at the limit, a memory hog is
//! reported as OOM-killed, and bad requests fail before anything runs.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aura_cell::tools::CellRunner;
use aura_tools::{CellLimits, CommandOutput, CommandRequest, CommandRunner, ErrorKind};

fn request(workspace: &Path, command: &str) -> CommandRequest {
    CommandRequest {
        command: command.into(),
        workspace: workspace.to_path_buf(),
        env: BTreeMap::new(),
        network: false,
        limits: CellLimits::default(),
        timeout: Duration::from_secs(20),
        output_bytes: 64 * 1024,
    }
}

async fn run(runner: &CellRunner, r: CommandRequest) -> CommandOutput {
    runner.run(r).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn root_cmd_run_writes_into_the_workspace_and_reports_exit_codes() {
    let c = common::cells().await;
    let runner = CellRunner::new(c.rt.clone());
    let ws = c.workspace("ws");

    let mut r = request(&ws, "printf '%s' \"$GREETING\" > out.txt && pwd && exit 7");
    r.env.insert("GREETING".into(), "hello from a cell".into());
    let out = run(&runner, r).await;
    assert_eq!(out.exit_code, Some(7), "{out:?}");
    assert_eq!(out.signal, None);
    assert!(!out.timed_out && !out.oom_killed && !out.truncated);
    assert_eq!(out.stdout.trim(), "/workspace");
    assert_eq!(
        std::fs::read_to_string(ws.join("out.txt")).unwrap(),
        "hello from a cell"
    );

    // A child killed by a signal: the shell reports it the shell's way.
    let out = run(&runner, request(&ws, "sh -c 'kill -TERM $$'")).await;
    assert_eq!(
        (out.exit_code, out.signal),
        (Some(128 + libc::SIGTERM), None),
        "{out:?}"
    );

    // Output to stderr arrives separately.
    let out = run(&runner, request(&ws, "echo oops >&2; false")).await;
    assert_eq!(out.exit_code, Some(1));
    assert_eq!(out.stderr, "oops\n");
    assert_eq!(out.stdout, "");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_cmd_run_without_network_sees_only_loopback() {
    let c = common::cells().await;
    let runner = CellRunner::new(c.rt.clone());
    let ws = c.workspace("ws");
    let list = "tail -n +3 /proc/net/dev | cut -d: -f1";
    let out = run(&runner, request(&ws, list)).await;
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(out.stdout.split_whitespace().collect::<Vec<_>>(), ["lo"]);

    // With the network granted, the cell sees the host's interfaces.
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    let mut host: Vec<&str> = host
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    let mut r = request(&ws, list);
    r.network = true;
    let out = run(&runner, r).await;
    let mut seen: Vec<&str> = out.stdout.split_whitespace().collect();
    seen.sort_unstable();
    host.sort_unstable();
    assert_eq!(seen, host);
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_cmd_run_timeout_kills_the_command() {
    let c = common::cells().await;
    let runner = CellRunner::new(c.rt.clone());
    let ws = c.workspace("ws");
    let mut r = request(&ws, "echo started; sleep 30; touch not-reached");
    r.timeout = Duration::from_millis(500);
    let t = Instant::now();
    let out = run(&runner, r).await;
    assert!(out.timed_out, "{out:?}");
    assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGKILL)));
    assert_eq!(out.stdout, "started\n");
    // Killed at the deadline: the shell does not go on to its next command.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(!ws.join("not-reached").exists());
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_cmd_run_output_is_cut_at_the_limit_and_oom_is_reported() {
    let c = common::cells().await;
    let runner = CellRunner::new(c.rt.clone());
    let ws = c.workspace("ws");
    let mut r = request(&ws, "head -c 100000 /dev/zero | tr '\\0' a; echo done >&2");
    r.output_bytes = 1000;
    let out = run(&runner, r).await;
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert!(out.truncated);
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout.bytes().all(|b| b == b'a'));
    assert_eq!(out.stderr, "done\n");

    let mut r = request(&ws, "head -c 200000000 /dev/zero | tail > /dev/null");
    r.limits.memory_bytes = 32 << 20;
    let out = run(&runner, r).await;
    assert!(out.oom_killed, "{out:?}");
    assert_ne!(out.exit_code, Some(0));
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_cmd_run_bad_requests_fail_before_anything_runs() {
    let c = common::cells().await;
    let runner = CellRunner::new(c.rt.clone());
    let ws = c.workspace("ws");
    let err = runner
        .run(request(&ws.join("missing"), "touch x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArguments, "{err:?}");
    assert!(err.message.starts_with("cmd.run: "), "{}", err.message);

    let mut r = request(&ws, "touch x");
    r.limits.pids = 0;
    let err = runner.run(r).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArguments, "{err:?}");
    assert_eq!(std::fs::read_dir(&ws).unwrap().count(), 0, "nothing ran");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_cmd_run_dropped_before_the_command_ends_stops_it() {
    let c = common::cells().await;
    let runner = CellRunner::new(c.rt.clone());
    let ws = c.workspace("dropped");
    // The node stops waiting (a cancel, a missed heartbeat): the command must not go on
    // to write its file 3 s later.
    let r = request(&ws, "touch started; sleep 3; touch finished");
    let waited = tokio::time::timeout(Duration::from_millis(1500), runner.run(r)).await;
    assert!(waited.is_err(), "the command ended early: {waited:?}");
    assert!(ws.join("started").exists(), "the command never started");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !ws.join("finished").exists(),
        "the command ran on after its caller went away"
    );
}

/// A mission's `cmd.run` of `cp /bin/sh /workspace/suid-sh && chmod 4755
/// /workspace/suid-sh` left `-rwsr-xr-x root root` on the host. In a workspace the node
/// made, the file belongs to the cells' root and its setuid bit is gone when the call
/// returns.
#[tokio::test(flavor = "multi_thread")]
async fn root_cmd_run_leaves_no_setuid_root_file_in_a_mission_workspace() {
    use std::os::unix::fs::MetadataExt as _;
    let c = common::cells().await;
    let base = c.rt.options().id_base;
    let w = aura_cell::Workspaces::new(aura_cell::WorkspaceOptions {
        root: c.dir.path().join("workspaces"),
        owner: Some((base, base)),
        quota: None,
    })
    .unwrap();
    let ws = w.ensure("default", "m1").unwrap();
    let runner = CellRunner::new(c.rt.clone());
    let out = run(
        &runner,
        request(
            &ws,
            "cp /bin/sh /workspace/suid-sh && chmod 4755 /workspace/suid-sh && stat -c %a suid-sh",
        ),
    )
    .await;
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "4755", "the cell saw its own chmod");
    let m = std::fs::metadata(ws.join("suid-sh")).unwrap();
    assert_eq!((m.uid(), m.gid()), (base, base));
    assert_eq!(m.mode() & 0o7777, 0o755);
    c.finish().await;
}
