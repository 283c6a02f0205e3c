//! `cmd.run`: refuses without a sandbox, never runs anything itself, and hands the runner
//! exactly the request the mission's limits and grant allow.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aura_tools::{
    BuiltinOptions, CommandOutput, CommandRequest, CommandRunner, Compensation, ErrorKind,
    Registry, Target, ToolError,
};
use serde_json::json;
use support::{World, builtin, call, run};

/// A runner that records requests and answers with a fixed exit code. It stands in for
/// aura-cell in these tests only.
#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<CommandRequest>>,
    exit_code: i32,
}

#[async_trait]
impl CommandRunner for Recorder {
    async fn run(&self, request: CommandRequest) -> Result<CommandOutput, ToolError> {
        let stdout = format!("ran: {}", request.command);
        self.requests.lock().unwrap().push(request);
        Ok(CommandOutput {
            exit_code: Some(self.exit_code),
            signal: None,
            oom_killed: false,
            timed_out: false,
            stdout,
            stderr: "last line".into(),
            truncated: false,
            duration_ms: 7,
        })
    }
}

fn with_runner(exit_code: i32) -> (Registry, Arc<Recorder>) {
    let recorder = Arc::new(Recorder {
        exit_code,
        ..Recorder::default()
    });
    let registry = Registry::builtin(BuiltinOptions {
        command_runner: Some(recorder.clone()),
        ..BuiltinOptions::default()
    });
    (registry, recorder)
}

#[tokio::test]
async fn without_a_sandbox_it_refuses() {
    let w = World::new();
    let r = builtin();
    let marker = w.ws("marker");
    let command = format!("touch {}", marker.display());
    let e = run(
        &r,
        &w.ctx(),
        "cmd.run",
        json!({"command": command, "compensate": "true"}),
    )
    .await;
    assert_eq!(e.error_kind(), Some(ErrorKind::Unavailable));
    match &e.outcome {
        aura_tools::Outcome::Failed { message, .. } => {
            assert_eq!(
                message,
                "cmd.run: cmd.run needs a sandbox; refusing to run on the host"
            );
        }
        aura_tools::Outcome::Ok { .. } => panic!("ran"),
    }
    assert!(e.compensation.is_none());
    assert!(!marker.exists(), "a command ran on the host");
    let err = r
        .compensate(
            &w.ctx(),
            "cmd.run",
            &Compensation::Command {
                command: "true".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
}

#[tokio::test]
async fn the_runner_gets_the_request_within_the_missions_limits() {
    let w = World::new();
    let (r, recorder) = with_runner(0);
    let mut ctx = w.ctx();
    ctx.limits.command_timeout = Duration::from_secs(30);

    let prepared = r
        .prepare(&call(
            "cmd.run",
            json!({"command": "make test", "timeout_secs": 500, "env": {"CI": "1"}}),
        ))
        .unwrap();
    assert_eq!(
        prepared.target,
        Target::Command {
            command: "make test".into(),
            network: false
        }
    );
    assert!(prepared.destructive);
    let e = r.execute(&ctx, &prepared).await;
    assert!(e.is_ok(), "{e:?}");
    let v = e.value().unwrap();
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["stdout"], "ran: make test");
    assert!(e.compensation.is_none());

    let requests = recorder.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.workspace, w.workspace());
    assert_eq!(
        req.timeout,
        Duration::from_secs(30),
        "the call may not raise the node's limit"
    );
    assert!(!req.network);
    assert_eq!(req.env.get("CI").map(String::as_str), Some("1"));
    assert_eq!(req.limits, ctx.limits.cell);
    assert_eq!(req.output_bytes, ctx.limits.command_output_bytes);
}

#[tokio::test]
async fn network_needs_the_missions_grant() {
    let w = World::new();
    let (r, recorder) = with_runner(0);
    let mut ctx = w.ctx();
    let args = json!({"command": "curl example.com", "network": true});
    let prepared = r.prepare(&call("cmd.run", args.clone())).unwrap();
    assert_eq!(
        prepared.target,
        Target::Command {
            command: "curl example.com".into(),
            network: true
        }
    );
    let e = r.execute(&ctx, &prepared).await;
    assert_eq!(e.error_kind(), Some(ErrorKind::Confinement), "{e:?}");
    assert!(
        recorder.requests.lock().unwrap().is_empty(),
        "the runner was called"
    );

    ctx.network.command_network = true;
    let e = run(&r, &ctx, "cmd.run", args).await;
    assert!(e.is_ok(), "{e:?}");
    assert!(recorder.requests.lock().unwrap()[0].network);
}

#[tokio::test]
async fn a_declared_compensation_is_recorded_and_run_through_the_runner() {
    let w = World::new();
    let (r, recorder) = with_runner(0);
    let ctx = w.ctx();
    let e = run(
        &r,
        &ctx,
        "cmd.run",
        json!({"command": "mkdir build", "compensate": "rmdir build"}),
    )
    .await;
    let comp = e.compensation.clone().unwrap();
    assert_eq!(
        comp,
        Compensation::Command {
            command: "rmdir build".into()
        }
    );
    r.compensate(&ctx, "cmd.run", &comp).await.unwrap();
    let requests = recorder.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].command, "rmdir build");
    assert!(!requests[1].network, "compensations run without network");

    // A compensating command that fails is reported as a failure.
    let (r, _) = with_runner(3);
    let err = r.compensate(&ctx, "cmd.run", &comp).await.unwrap_err();
    assert!(err.message.contains("exit code 3"), "{err}");
    // A file compensation handed to cmd.run is refused.
    let err = r
        .compensate(
            &ctx,
            "cmd.run",
            &Compensation::RestoreFile {
                path: "f".into(),
                previous: None,
                created_dirs: vec![],
                mode: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArguments);
}

#[test]
fn bad_arguments_are_refused_when_preparing() {
    let (r, _) = with_runner(0);
    let check = |args: serde_json::Value, expect: &str| {
        let err = r.prepare(&call("cmd.run", args.clone())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArguments, "{args}");
        assert_eq!(err.message, expect, "{args}");
    };
    check(json!({}), "cmd.run: missing field `command`");
    check(json!({"command": "  "}), "cmd.run: `command` is empty");
    check(
        json!({"command": "a\u{0}b"}),
        "cmd.run: `command` contains a NUL byte",
    );
    check(
        json!({"command": "x", "compensate": ""}),
        "cmd.run: `compensate` is empty",
    );
    check(
        json!({"command": "x", "env": {"A=B": "1"}}),
        "cmd.run: `A=B` is not a valid environment variable name",
    );
    check(
        json!({"command": "x", "timeout_secs": 0}),
        "cmd.run: `timeout_secs` must be at least 1",
    );
    check(
        json!({"command": "x", "sudo": true}),
        "cmd.run: unknown field `sudo`, expected one of `command`, `network`, `timeout_secs`, `env`, `compensate`",
    );
    check(
        json!({"command": 5}),
        "cmd.run: invalid type: integer `5`, expected a string",
    );
    check(json!("ls"), "cmd.run: arguments must be a JSON object");
    check(
        json!({"command": "x".repeat(aura_tools::MAX_COMMAND_BYTES + 1)}),
        &format!(
            "cmd.run: `command` is longer than {} bytes",
            aura_tools::MAX_COMMAND_BYTES
        ),
    );
}
