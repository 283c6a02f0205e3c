//! `cmd.run`: a shell command, always run through a [`CommandRunner`] (the Linux cell
//! from aura-cell). Without a runner it refuses every call; it never starts a process on
//! the host itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::args::{parse, schema_for};
use crate::call::{Call, Capability, Prepared, Target, ToolDescriptor};
use crate::context::{CellLimits, ToolContext};
use crate::effect::{Compensation, Effect, ErrorKind, ToolError};
use crate::tool::Tool;

/// Longest command text accepted.
pub const MAX_COMMAND_BYTES: usize = 16 << 10;
/// Most environment variables a call may set.
pub const MAX_ENV: usize = 64;

/// What to run in a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// Run as `sh -c <command>` inside the cell.
    pub command: String,
    /// The mission's workspace, mounted writable in the cell as its working directory.
    pub workspace: PathBuf,
    /// Extra environment variables; the cell starts from a minimal environment.
    pub env: BTreeMap<String, String>,
    /// Whether the cell gets a network; false means no network namespace access at all.
    pub network: bool,
    pub limits: CellLimits,
    /// Wall-clock limit; the cell is killed when it passes.
    pub timeout: Duration,
    /// Most bytes of stdout and of stderr to keep.
    pub output_bytes: usize,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandOutput {
    /// The exit status, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Whether the cell's memory limit killed it.
    pub oom_killed: bool,
    /// Whether it was killed for passing its timeout.
    #[serde(default)]
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// Whether stdout or stderr was cut at the output limit.
    pub truncated: bool,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
}

/// Runs commands in a sandbox. aura-cell provides the real one; the node wires it in.
#[async_trait]
pub trait CommandRunner: Send + Sync {
    async fn run(&self, request: CommandRequest) -> Result<CommandOutput, ToolError>;
}

/// Arguments of `cmd.run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// The shell command, run as `sh -c` in the workspace inside a sandbox.
    pub command: String,
    /// Ask for network access (the mission's grant must allow it; default false).
    #[serde(default)]
    pub network: bool,
    /// Seconds before the command is killed (never more than the node's limit).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A command that undoes this one, run the same way if the mission fails later.
    #[serde(default)]
    pub compensate: Option<String>,
}

/// `cmd.run`.
pub struct CmdRun {
    descriptor: ToolDescriptor,
    runner: Option<Arc<dyn CommandRunner>>,
}

impl fmt::Debug for CmdRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmdRun")
            .field("runner", &self.runner.is_some())
            .finish()
    }
}

impl CmdRun {
    pub const NAME: &'static str = "cmd.run";

    pub fn new(runner: Option<Arc<dyn CommandRunner>>) -> Self {
        CmdRun {
            descriptor: ToolDescriptor {
                name: Self::NAME.to_owned(),
                description: "Run a shell command in a sandboxed cell whose working directory is the mission's workspace; returns exit code, stdout and stderr. Give `compensate` to declare a command that undoes it.".to_owned(),
                parameters: schema_for::<RunArgs>(),
                // Not destructive in policy's sense: the command is confined to its cell,
                // whose only writable place is the workspace; policy's cell rules judge it.
                destructive: false,
                compensable: true,
                needs: Capability::Command,
            },
            runner,
        }
    }

    fn check(args: &RunArgs) -> Result<(), ToolError> {
        let invalid = |why: &str| {
            ToolError::new(
                ErrorKind::InvalidArguments,
                format!("{}: {why}", Self::NAME),
            )
        };
        for (what, text) in [
            ("command", Some(&args.command)),
            ("compensate", args.compensate.as_ref()),
        ] {
            let Some(text) = text else { continue };
            if text.trim().is_empty() {
                return Err(invalid(&format!("`{what}` is empty")));
            }
            if text.len() > MAX_COMMAND_BYTES {
                return Err(invalid(&format!(
                    "`{what}` is longer than {MAX_COMMAND_BYTES} bytes"
                )));
            }
            if text.contains('\0') {
                return Err(invalid(&format!("`{what}` contains a NUL byte")));
            }
        }
        if args.env.len() > MAX_ENV {
            return Err(invalid(&format!(
                "more than {MAX_ENV} environment variables"
            )));
        }
        for (name, value) in &args.env {
            let ok = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
            if !ok {
                return Err(invalid(&format!(
                    "`{name}` is not a valid environment variable name"
                )));
            }
            if value.contains('\0') {
                return Err(invalid(&format!(
                    "the value of `{name}` contains a NUL byte"
                )));
            }
        }
        if args.timeout_secs == Some(0) {
            return Err(invalid("`timeout_secs` must be at least 1"));
        }
        Ok(())
    }

    fn refuse_without_runner() -> ToolError {
        ToolError::new(
            ErrorKind::Unavailable,
            format!(
                "{}: cmd.run needs a sandbox; refusing to run on the host",
                Self::NAME
            ),
        )
    }
}

#[async_trait]
impl Tool for CmdRun {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let args: RunArgs = parse(Self::NAME, &call.arguments)?;
        Self::check(&args)?;
        Ok(Prepared {
            call: call.clone(),
            target: Target::Command {
                command: args.command,
                network: args.network,
            },
            destructive: false,
        })
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        let id = &prepared.call.id;
        let fail = |e: ToolError| Effect::failed(Self::NAME, id, e);
        let args: RunArgs = match parse(Self::NAME, &prepared.call.arguments) {
            Ok(args) => args,
            Err(e) => return fail(e),
        };
        if let Err(e) = Self::check(&args) {
            return fail(e);
        }
        let Some(runner) = &self.runner else {
            return fail(Self::refuse_without_runner());
        };
        if args.network && !ctx.network.command_network {
            return fail(ToolError::new(
                ErrorKind::Confinement,
                format!(
                    "{}: the mission is not granted network access for commands",
                    Self::NAME
                ),
            ));
        }
        let timeout = args.timeout_secs.map_or(ctx.limits.command_timeout, |s| {
            Duration::from_secs(s).min(ctx.limits.command_timeout)
        });
        let request = CommandRequest {
            command: args.command,
            workspace: ctx.workspace.clone(),
            env: args.env,
            network: args.network,
            limits: ctx.limits.cell,
            timeout,
            output_bytes: ctx.limits.command_output_bytes,
        };
        let run = runner.run(request);
        let result = match &ctx.heartbeat {
            None => run.await,
            Some(heartbeat) => heartbeating(run, heartbeat).await,
        };
        match result {
            Ok(output) => {
                let value = serde_json::to_value(&output).unwrap_or_default();
                let mut effect = Effect::ok(Self::NAME, id, value);
                effect.compensation = args
                    .compensate
                    .map(|command| Compensation::Command { command });
                effect
            }
            Err(e) => fail(e),
        }
    }

    async fn compensate(
        &self,
        ctx: &ToolContext,
        compensation: &Compensation,
    ) -> Result<(), ToolError> {
        let Compensation::Command { command } = compensation else {
            return Err(ToolError::new(
                ErrorKind::InvalidArguments,
                format!("{}: this compensation is not a command", Self::NAME),
            ));
        };
        let Some(runner) = &self.runner else {
            return Err(Self::refuse_without_runner());
        };
        let request = CommandRequest {
            command: command.clone(),
            workspace: ctx.workspace.clone(),
            env: BTreeMap::new(),
            network: false,
            limits: ctx.limits.cell,
            timeout: ctx.limits.command_timeout,
            output_bytes: ctx.limits.command_output_bytes,
        };
        let output = runner.run(request).await?;
        if output.exit_code == Some(0) {
            Ok(())
        } else {
            Err(ToolError::new(
                ErrorKind::Io,
                format!(
                    "{}: the compensating command failed ({}): {}",
                    Self::NAME,
                    ended(&output),
                    output.stderr.lines().next_back().unwrap_or_default()
                ),
            ))
        }
    }
}

/// How often a running command heartbeats.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Awaits `run`, heartbeating every [`HEARTBEAT_EVERY`] with how long it has run, so the
/// node can tell a long command from a wedged executor.
async fn heartbeating<T>(
    run: impl std::future::Future<Output = T>,
    heartbeat: &crate::Heartbeat,
) -> T {
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
    tokio::pin!(run);
    loop {
        tokio::select! {
            out = &mut run => return out,
            _ = ticks.tick() => {
                let running_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                heartbeat.beat(serde_json::json!({ "running_ms": running_ms }));
            }
        }
    }
}

fn ended(output: &CommandOutput) -> String {
    match (output.exit_code, output.signal) {
        _ if output.oom_killed => "killed for using too much memory".to_owned(),
        _ if output.timed_out => "killed after its timeout".to_owned(),
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "no exit status".to_owned(),
    }
}
