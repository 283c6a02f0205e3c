//! `cmd.run` over cells: [`CellRunner`] is aura-tools' [`CommandRunner`] backed by this
//! crate, so that every command an agent runs gets a fresh, fully hardened cell of its
//! own (the mission's workspace read-write as its working directory, loopback only
//! unless the request asks for the network, the request's limits as cgroup limits),
//! which is killed at the timeout and removed when the command ends.
//!
//! The dependency points from the sandbox to the tools crate because aura-tools owns the
//! `cmd.run` vocabulary (request, output, error kinds) and must not depend on Linux
//! namespaces itself; the node builds a [`CellRunner`] and hands it to `CmdRun::new`.

use async_trait::async_trait;
use aura_tools::{
    CellLimits, CommandOutput, CommandRequest, CommandRunner, ErrorKind as ToolErrorKind,
    ToolError, WorkspaceSetup,
};

use crate::error::{Error, ErrorKind};
use crate::run::{RunOutcome, RunSpec};
use crate::runtime::{ExitStatus, Runtime};
use crate::spec::CpuMax;

/// Runs `cmd.run` requests, each in a fresh one-shot cell of one [`Runtime`].
#[derive(Debug, Clone)]
pub struct CellRunner {
    cells: Runtime,
}

impl CellRunner {
    /// Uses a started runtime (one per process; cloning it is cheap).
    pub fn new(cells: Runtime) -> Self {
        CellRunner { cells }
    }

    /// The runtime the commands run in.
    pub fn runtime(&self) -> &Runtime {
        &self.cells
    }
}

#[async_trait]
impl CommandRunner for CellRunner {
    async fn run(&self, request: CommandRequest) -> Result<CommandOutput, ToolError> {
        let spec = run_spec(&request)?;
        let running = self.cells.spawn(spec).await.map_err(|e| tool_error(&e))?;
        // If the caller stops waiting (the node cancelled the call or gave up on it), the
        // command must not go on running to its timeout: dropping this future stops it.
        let stop_on_drop = StopOnDrop(Some(running.stopper()));
        let outcome = running.wait().await;
        stop_on_drop.disarm();
        Ok(command_output(outcome.map_err(|e| tool_error(&e))?))
    }
}

/// The engine prepares missions' workspaces through the node's [`crate::Workspaces`].
impl WorkspaceSetup for crate::workspace::Workspaces {
    fn ensure(&self, dir: &std::path::Path) -> Result<(), String> {
        self.ensure_dir(dir).map_err(|e| {
            let mut message = e.to_string();
            if let Some(source) = std::error::Error::source(&e) {
                message.push_str(&format!(": {source}"));
            }
            if let Some(hint) = e.hint() {
                message.push_str(&format!(" (hint: {hint})"));
            }
            message
        })
    }
}

/// Kills a run when dropped, unless disarmed once the run ended.
struct StopOnDrop(Option<crate::run::Stopper>);

impl StopOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stopper) = self.0.take() {
            stopper.kill();
        }
    }
}

/// The cell for one request. Fails with `invalid_arguments` for limits or environment
/// variables a cell cannot take, before anything runs.
pub fn run_spec(request: &CommandRequest) -> Result<RunSpec, ToolError> {
    let mut spec = RunSpec::shell(request.command.clone())
        .workspace(&request.workspace)
        .network(request.network)
        .timeout(request.timeout)
        .output_limit(request.output_bytes);
    spec.limits = limits(request.limits)?;
    for (key, value) in &request.env {
        spec = spec.env(key, value);
    }
    spec.validate().map_err(|e| tool_error(&e))?;
    Ok(spec)
}

fn limits(l: CellLimits) -> Result<crate::spec::Limits, ToolError> {
    if l.cpu_millis == 0 {
        return Err(ToolError::new(
            ToolErrorKind::InvalidArguments,
            "cmd.run: the cell's CPU limit must be above zero",
        ));
    }
    let cpu = CpuMax::cpus(f64::from(l.cpu_millis) / 1000.0).map_err(|e| tool_error(&e))?;
    Ok(crate::spec::Limits {
        memory_max: Some(l.memory_bytes),
        pids_max: Some(u64::from(l.pids)),
        cpu_max: Some(cpu),
        ..crate::spec::Limits::default()
    })
}

/// The tool's view of a finished run. Output that is not UTF-8 (or was cut inside a
/// character at the limit) keeps its valid parts, with U+FFFD for the rest.
pub fn command_output(o: RunOutcome) -> CommandOutput {
    let (exit_code, signal) = match o.status {
        ExitStatus::Exited(code) => (Some(code), None),
        ExitStatus::Signaled(signal) => (None, Some(signal)),
    };
    CommandOutput {
        exit_code,
        signal,
        oom_killed: o.oom_killed,
        timed_out: o.timed_out,
        truncated: o.stdout_truncated || o.stderr_truncated,
        stdout: text(o.stdout),
        stderr: text(o.stderr),
        duration_ms: u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A cell error as a tool error: the caller's mistakes stay the caller's, a host that
/// cannot run cells is `unavailable` (the tool fails closed), and the rest are the
/// operating system's failures.
pub fn tool_error(e: &Error) -> ToolError {
    let kind = match e.kind() {
        ErrorKind::InvalidArgument => ToolErrorKind::InvalidArguments,
        ErrorKind::NotFound => ToolErrorKind::NotFound,
        ErrorKind::PermissionDenied => ToolErrorKind::Confinement,
        ErrorKind::FailedPrecondition | ErrorKind::Unavailable => ToolErrorKind::Unavailable,
        ErrorKind::AlreadyExists | ErrorKind::Internal => ToolErrorKind::Io,
    };
    // The display of a cell error leaves out its cause; a tool error has only its text.
    let mut message = format!("cmd.run: {e}");
    if let Some(source) = std::error::Error::source(e) {
        message.push_str(&format!(": {source}"));
    }
    if let Some(hint) = e.hint() {
        message.push_str(&format!(" (hint: {hint})"));
    }
    ToolError::new(kind, message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn request() -> CommandRequest {
        CommandRequest {
            command: "true".into(),
            workspace: std::env::temp_dir(),
            env: BTreeMap::new(),
            network: false,
            limits: CellLimits::default(),
            timeout: Duration::from_secs(5),
            output_bytes: 1024,
        }
    }

    #[test]
    fn limits_map_onto_the_cgroup() {
        let spec = run_spec(&CommandRequest {
            limits: CellLimits {
                memory_bytes: 256 << 20,
                pids: 32,
                cpu_millis: 500,
            },
            ..request()
        })
        .unwrap();
        assert_eq!(spec.limits.memory_max, Some(256 << 20));
        assert_eq!(spec.limits.pids_max, Some(32));
        let cpu = spec.limits.cpu_max.unwrap();
        assert_eq!(cpu.quota_us * 2, cpu.period_us);
        assert_eq!(spec.timeout, Some(Duration::from_secs(5)));
        assert_eq!(spec.output_limit, 1024);
        assert!(!spec.network);
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        let check = |r: CommandRequest| {
            let e = run_spec(&r).unwrap_err();
            assert_eq!(e.kind, ToolErrorKind::InvalidArguments, "{e:?}");
        };
        check(CommandRequest {
            limits: CellLimits {
                cpu_millis: 0,
                ..CellLimits::default()
            },
            ..request()
        });
        check(CommandRequest {
            limits: CellLimits {
                pids: 0,
                ..CellLimits::default()
            },
            ..request()
        });
        check(CommandRequest {
            limits: CellLimits {
                memory_bytes: 100,
                ..CellLimits::default()
            },
            ..request()
        });
        check(CommandRequest {
            timeout: Duration::ZERO,
            ..request()
        });
        check(CommandRequest {
            env: BTreeMap::from([("A=B".into(), "c".into())]),
            ..request()
        });
        check(CommandRequest {
            command: "echo \0".into(),
            ..request()
        });
    }

    #[test]
    fn errors_keep_their_meaning() {
        let unsupported = Error::Unsupported {
            what: "cells need root".into(),
            hint: "run aura as root".into(),
        };
        let e = tool_error(&unsupported);
        assert_eq!(e.kind, ToolErrorKind::Unavailable);
        assert!(e.message.contains("run aura as root"), "{}", e.message);
        assert_eq!(
            tool_error(&Error::invalid("no")).kind,
            ToolErrorKind::InvalidArguments
        );
    }
}
