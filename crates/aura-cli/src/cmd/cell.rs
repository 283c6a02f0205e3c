//! `aura cell`: run a command in a hardened cell on this host without a node (`run`), or
//! manage long-lived cells on a running node over its gRPC socket (`allocate`, `start`,
//! `stop`, `free`, `list`, `logs`; see `cell_node.rs`).
//!
//! `aura cell run` starts a private cell runtime (its state in a temporary directory, its
//! cgroups under `aura/cli-<pid>`, which a later run sweeps if this one is killed), runs
//! one command in a fresh cell, streams its output, and exits with the command's exit
//! code, or 128 + the signal that killed it, as a shell would. It needs root.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use aura_cell::{Channel, Env, ExitStatus, Options, RunOutcome, RunSpec, Runtime};
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

/// Output kept for the `--json` summary, per stream.
const JSON_OUTPUT_LIMIT: usize = 1024 * 1024;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Run one command in a fresh hardened cell and exit with its exit code
    #[command(
        after_help = "The cell has its own user, pid, mount, network, ipc and uts \
namespaces, no capabilities, a seccomp filter, a read-only view of the host's system \
directories and a private /tmp. Only --workspace is writable. Exit code: the command's, \
or 128 + the signal that killed it (a timeout or the memory limit). Needs root.

Examples:
  sudo aura cell run -- uname -a
  sudo aura cell run --workspace . --memory 512M --pids 64 --cpus 0.5 -- make test
  sudo aura cell run --timeout 10 --json -- sh -c 'echo hi; exit 3'"
    )]
    Run(RunArgs),
    /// Allocate a long-lived cell on the running node
    #[command(
        after_help = "Talks to the node started with `aura serve` over its gRPC socket \
(mTLS), as the client in <home>/pki/clients/admin.toml unless --client-config names another \
Aurae-format client config.

Examples:
  aura cell allocate web --memory 512M --pids 128
  aura cell allocate web/api --cpus 0.5"
    )]
    Allocate(super::cell_node::AllocateArgs),
    /// Start an executable in a cell on the running node
    #[command(after_help = "Examples:
  aura cell start web server -- python3 -m http.server 8000
  aura cell start web job -e MODE=fast -- sh -c 'make test'")]
    Start(super::cell_node::StartArgs),
    /// Stop an executable (SIGTERM, then SIGKILL after the grace period)
    Stop(super::cell_node::StopArgs),
    /// Free a cell: stop its executables, remove it and its children
    Free(super::cell_node::FreeArgs),
    /// List the node's cells as a tree, with their executables and usage
    List(super::cell_node::ListArgs),
    /// Print an executable's output: everything so far, then with --follow new lines
    Logs(super::cell_node::LogsArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Memory limit in bytes (suffixes K, M, G: 512M)
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    memory: Option<u64>,
    /// Most processes and threads in the cell
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// CPU limit in CPUs (0.5 = half of one)
    #[arg(long, value_name = "F")]
    cpus: Option<f64>,
    /// Share the host's network (otherwise the cell has only loopback)
    #[arg(long)]
    network: bool,
    /// A directory mounted read-write at /workspace, the working directory; the command
    /// runs as its owner (not the host's root: such a directory is refused)
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Kill the command after this many seconds
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// Set an environment variable in the cell (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The command and its arguments (PATH is searched inside the cell)
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) async fn run(home: &Home, out: &Output, command: Command) -> anyhow::Result<()> {
    use super::cell_node as node;
    match command {
        Command::Allocate(args) => node::allocate(home, out, args).await,
        Command::Start(args) => node::start(home, out, args).await,
        Command::Stop(args) => node::stop(home, out, args).await,
        Command::Free(args) => node::free(home, out, args).await,
        Command::List(args) => node::list(home, out, args).await,
        Command::Logs(args) => node::logs(home, out, args).await,
        Command::Run(args) => {
            let code = run_one(out, args).await?;
            if code != 0 {
                // The runtime is shut down and everything is printed; nothing is left
                // for destructors to do, so the command's own code can be the process's.
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
struct Summary {
    /// The exit code, or 128 + the signal (what `aura cell run` exits with).
    code: i32,
    exit_code: Option<i32>,
    signal: Option<i32>,
    signal_name: Option<&'static str>,
    oom_killed: bool,
    timed_out: bool,
    duration_ms: u64,
    cpu_time_us: u64,
    memory_peak_bytes: Option<u64>,
    stdout: String,
    stderr: String,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

fn spec(args: RunArgs) -> anyhow::Result<RunSpec> {
    let mut spec = RunSpec::argv(args.command).network(args.network);
    if let Some(ws) = args.workspace {
        spec = spec.workspace(ws);
    }
    if let Some(bytes) = args.memory {
        spec = spec.memory_max(bytes);
    }
    if let Some(n) = args.pids {
        spec = spec.pids_max(n);
    }
    if let Some(cpus) = args.cpus {
        spec = spec.cpus(cpus).map_err(|e| cell_error(&e))?;
    }
    if let Some(t) = args.timeout {
        spec = spec.timeout(t);
    }
    spec.env = Env::parse(&args.env).map_err(|e| cell_error(&e))?;
    spec.validate().map_err(|e| cell_error(&e))?;
    Ok(spec)
}

async fn run_one(out: &Output, args: RunArgs) -> anyhow::Result<i32> {
    let spec = spec(args)?;
    let state = tempfile::Builder::new()
        .prefix("aura-cell-")
        .tempdir()
        .map_err(|e| anyhow::anyhow!("cannot create a state directory for the cell: {e}"))?;
    let mut options = Options::new(state.path().join("cells"));
    options.instance = Some(format!("cli-{}", std::process::id()));
    let cells = Runtime::start(options).await.map_err(|e| cell_error(&e))?;
    let result = run_in(&cells, out, spec).await;
    cells.shutdown().await;
    let outcome = result?;
    let code = outcome.code();
    if out.is_json() {
        out.print(&summary(&outcome), String::new)?;
    } else if let Some(note) = note(&outcome) {
        eprintln!("aura: {note}");
    }
    Ok(code)
}

async fn run_in(cells: &Runtime, out: &Output, spec: RunSpec) -> anyhow::Result<RunOutcome> {
    if out.is_json() {
        // Everything goes into the summary; nothing is streamed.
        let spec = spec.output_limit(JSON_OUTPUT_LIMIT);
        return cells.run(spec).await.map_err(|e| cell_error(&e));
    }
    // Streamed as it comes; the outcome keeps none of it.
    let mut running = cells
        .spawn(spec.output_limit(0))
        .await
        .map_err(|e| cell_error(&e))?;
    let mut interrupted = false;
    loop {
        tokio::select! {
            chunk = running.next_output() => {
                let Some(chunk) = chunk else { break };
                // A closed stdout (`| head`) must not stop the command's other stream.
                let _ = match chunk.channel {
                    Channel::Stdout => {
                        let mut w = std::io::stdout().lock();
                        w.write_all(&chunk.data).and_then(|()| w.flush())
                    }
                    Channel::Stderr => {
                        let mut w = std::io::stderr().lock();
                        w.write_all(&chunk.data).and_then(|()| w.flush())
                    }
                };
            }
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                // Stop the cell (SIGTERM, then SIGKILL) and keep draining its output.
                interrupted = true;
                running.stop();
            }
        }
    }
    running.wait().await.map_err(|e| cell_error(&e))
}

fn summary(o: &RunOutcome) -> Summary {
    let (exit_code, signal) = match o.status {
        ExitStatus::Exited(c) => (Some(c), None),
        ExitStatus::Signaled(s) => (None, Some(s)),
    };
    Summary {
        code: o.code(),
        exit_code,
        signal,
        signal_name: signal.map(aura_cell::signal_name),
        oom_killed: o.oom_killed,
        timed_out: o.timed_out,
        duration_ms: u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX),
        cpu_time_us: o.usage.cpu_time_us,
        memory_peak_bytes: o.usage.memory_peak_bytes,
        stdout: o.stdout_text(),
        stderr: o.stderr_text(),
        stdout_truncated: o.stdout_truncated,
        stderr_truncated: o.stderr_truncated,
    }
}

/// A line for people when the command did not simply exit.
fn note(o: &RunOutcome) -> Option<String> {
    if o.timed_out {
        Some(format!(
            "the command timed out and was stopped ({})",
            o.status
        ))
    } else if o.oom_killed {
        Some(format!(
            "the cell ran out of memory; the kernel killed a process ({})",
            o.status
        ))
    } else if let ExitStatus::Signaled(_) = o.status {
        Some(format!("the command was {}", o.status))
    } else {
        None
    }
}

/// A cell error, with its hint where it has one.
fn cell_error(e: &aura_cell::Error) -> anyhow::Error {
    let mut message = e.to_string();
    if let Some(source) = std::error::Error::source(e) {
        message.push_str(&format!(": {source}"));
    }
    match e.hint() {
        Some(hint) => hinted(message, hint),
        None => match e.kind() {
            aura_cell::ErrorKind::InvalidArgument => hinted(message, "see `aura cell run --help`"),
            _ => anyhow::anyhow!(message),
        },
    }
}

/// `512M` and the like: bytes with an optional K, M or G (powers of 1024).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size in bytes (like 67108864 or 512M)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Seconds, whole or not: `10`, `0.5`.
pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("`{s}` must be a number of seconds above zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_seconds_parse() {
        for (input, expect) in [
            ("1024", Some(1024)),
            ("512M", Some(512 << 20)),
            ("2g", Some(2 << 30)),
            ("64k", Some(64 << 10)),
            ("", None),
            ("M", None),
            ("-1", None),
            ("1.5G", None),
            ("99999999999999999999G", None),
            ("18446744073709551615G", None),
        ] {
            assert_eq!(parse_bytes(input).ok(), expect, "{input:?}");
        }
        for (input, expect) in [
            ("10", Some(Duration::from_secs(10))),
            ("0.5", Some(Duration::from_millis(500))),
            ("0", None),
            ("-3", None),
            ("inf", None),
            ("NaN", None),
            ("ten", None),
        ] {
            assert_eq!(parse_seconds(input).ok(), expect, "{input:?}");
        }
    }
}
