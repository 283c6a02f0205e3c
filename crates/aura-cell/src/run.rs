//! One-shot runs: one command in a fresh, fully hardened cell that exists only for it.
//!
//! This is what the agents' `cmd.run` tool and `aura cell run` use. The command is
//! process 1 of its cell (through the in-cell init, which executes it), straight in its
//! own cgroup; when it exits, the kernel ends everything it left running, and the cgroup
//! is removed. See the crate documentation for an example.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aura_core::Timestamp;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, mpsc};

use crate::cgroup::Usage;
use crate::error::{Error, Result};
use crate::logs::{Capture, Channel};
use crate::rootfs::CellFs;
use crate::runtime::{ExitStatus, ProcessSetup, Runtime, Stdio};
use crate::spawn;
use crate::spec::{Bind, Command, CpuMax, Env, Limits, validate_process};

/// What to run, and how. Build it with [`RunSpec::shell`] or [`RunSpec::argv`] and the
/// builder methods; everything not set is locked down: no network, no workspace, no
/// limits beyond the defaults, a 1 MiB cap on each captured stream.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub command: Command,
    /// Mounted read-write (nosuid, nodev) at `/workspace`, and the working directory. The
    /// command runs as the directory's owner: a cell's root for a directory of the cells'
    /// ids (host uid `id_base`, what a node's workspaces belong to), the same user for a
    /// directory of an unprivileged host user (id-mapped, that user alone). A directory
    /// of the host's root is refused. Setuid bits and device nodes are swept out of it
    /// when the run ends.
    pub workspace: Option<PathBuf>,
    /// Share the host's network; otherwise only loopback.
    pub network: bool,
    pub limits: Limits,
    pub env: Env,
    /// The working directory inside the cell; `/workspace` or `/` by default.
    pub cwd: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Extra host paths, read-only unless marked writable.
    pub binds: Vec<Bind>,
    /// After this, every process of the cell is killed at once (SIGKILL), so that nothing
    /// runs past the deadline: a shell at the top, being process 1 of its namespace,
    /// would ignore SIGTERM and carry on with its script. ([`Running::stop`] is the
    /// gentle way: SIGTERM, then SIGKILL after the runtime's grace.)
    pub timeout: Option<Duration>,
    /// Bytes of stdout and of stderr kept in the outcome; the rest is counted as
    /// truncated (it is still streamed to a [`Running`]'s reader).
    pub output_limit: usize,
    /// Bytes fed to the command's stdin (then end-of-file); `/dev/null` when absent.
    pub stdin: Option<Vec<u8>>,
    /// Keep the command's stdin open as a pipe the caller writes to
    /// ([`Running::take_stdin`]) instead: for long-lived servers that read requests, such
    /// as MCP servers over stdio. Refused together with [`RunSpec::stdin`].
    pub stdin_pipe: bool,
}

/// The default cap on each captured stream.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

impl RunSpec {
    fn new(command: Command) -> Self {
        RunSpec {
            command,
            workspace: None,
            network: false,
            limits: Limits::default(),
            env: Env::default(),
            cwd: None,
            uid: None,
            gid: None,
            binds: Vec::new(),
            timeout: None,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            stdin: None,
            stdin_pipe: false,
        }
    }

    /// `sh -c LINE`.
    pub fn shell(line: impl Into<String>) -> Self {
        Self::new(Command::shell(line))
    }

    /// An argv, `PATH` searched inside the cell.
    pub fn argv<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Self {
        Self::new(Command::argv(args))
    }

    pub fn workspace(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workspace = Some(dir.into());
        self
    }

    pub fn network(mut self, on: bool) -> Self {
        self.network = on;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn memory_max(mut self, bytes: u64) -> Self {
        self.limits.memory_max = Some(bytes);
        self
    }

    pub fn pids_max(mut self, n: u64) -> Self {
        self.limits.pids_max = Some(n);
        self
    }

    /// A CPU bandwidth limit in CPUs (0.5 = half a CPU).
    pub fn cpus(mut self, cpus: f64) -> Result<Self> {
        self.limits.cpu_max = Some(CpuMax::cpus(cpus)?);
        Ok(self)
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.set(key, value);
        self
    }

    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.uid = Some(uid);
        self.gid = Some(gid);
        self
    }

    pub fn bind(mut self, bind: Bind) -> Self {
        self.binds.push(bind);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// Keeps stdin open as a pipe; see [`RunSpec::stdin_pipe`].
    pub fn stdin_pipe(mut self) -> Self {
        self.stdin_pipe = true;
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn validate(&self) -> Result<()> {
        if self.stdin_pipe && self.stdin.is_some() {
            return Err(Error::invalid(
                "a run takes either stdin bytes or a stdin pipe, not both",
            ));
        }
        self.command.validate()?;
        self.limits.validate()?;
        self.env.validate()?;
        validate_process(self.cwd.as_deref(), self.uid, self.gid)?;
        for b in &self.binds {
            b.validate()?;
        }
        if let Some(t) = self.timeout
            && t.is_zero()
        {
            return Err(Error::invalid("the timeout must be above zero"));
        }
        if self.command.bytes() + self.env.bytes() > crate::spec::MAX_COMMAND_BYTES {
            return Err(Error::invalid("the command and environment are too long"));
        }
        Ok(())
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOutcome {
    pub status: ExitStatus,
    /// The cell hit its memory limit and the kernel's OOM killer killed a process in it:
    /// the command itself, or one it started (a shell pipeline's stage, a compiler), in
    /// which case the command usually exits with an error of its own.
    pub oom_killed: bool,
    /// It was stopped because its timeout passed.
    pub timed_out: bool,
    #[serde(skip)]
    pub stdout: Vec<u8>,
    #[serde(skip)]
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The cell's CPU time and peak memory, from its cgroup.
    pub usage: Usage,
    pub started_at: Timestamp,
    pub duration: Duration,
    /// The host pid the command had.
    pub pid: i32,
}

impl RunOutcome {
    /// The exit code, or 128 + the signal, as a shell reports it.
    pub fn code(&self) -> i32 {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A chunk of output as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub channel: Channel,
    pub data: Vec<u8>,
}

/// Stops a run from elsewhere (see [`Running::stopper`]). A run that already ended is
/// not affected.
#[derive(Debug, Clone)]
pub struct Stopper {
    stop: Arc<Notify>,
    kill: Arc<Notify>,
}

impl Stopper {
    /// SIGTERM to every process, SIGKILL after the grace period.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// SIGKILL to the whole cell at once: for a run nobody waits for any more, where a
    /// shell at the top would go on to its next command after its child took SIGTERM.
    pub fn kill(&self) {
        self.kill.notify_one();
    }
}

/// A run in progress: its output as it comes, then its outcome.
#[derive(Debug)]
pub struct Running {
    pid: i32,
    cgroup: crate::cgroup::Cgroup,
    output: mpsc::Receiver<Output>,
    stop: Arc<Notify>,
    kill: Arc<Notify>,
    done: tokio::task::JoinHandle<Result<RunOutcome>>,
    stdin: Option<tokio::net::unix::pipe::Sender>,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The cell's resource usage so far, from its cgroup.
    pub fn usage(&self) -> Usage {
        self.cgroup.usage()
    }

    /// The writing end of the command's stdin, once, for a run started with
    /// [`RunSpec::stdin_pipe`]. Dropping it closes the command's stdin.
    pub fn take_stdin(&mut self) -> Option<tokio::net::unix::pipe::Sender> {
        self.stdin.take()
    }

    /// The next chunk of output; `None` once both streams have ended.
    pub async fn next_output(&mut self) -> Option<Output> {
        self.output.recv().await
    }

    /// Stops the run now: SIGTERM to every process, SIGKILL after the grace period.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// A handle that stops the run, usable after [`Running::wait`] took the run.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            kill: self.kill.clone(),
        }
    }

    /// Waits for the run to end (output not read yet is kept up to the limit).
    pub async fn wait(mut self) -> Result<RunOutcome> {
        // Nobody will read the stream any more; closing it lets the pumps keep going.
        self.output.close();
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(Error::io(
                "the run's task failed",
                std::io::Error::other(e.to_string()),
            )),
        }
    }
}

impl Runtime {
    /// Runs one command in a fresh cell and returns its exit status and output.
    pub async fn run(&self, spec: RunSpec) -> Result<RunOutcome> {
        self.spawn(spec).await?.wait().await
    }

    /// Starts one command in a fresh cell; read its output as it comes with
    /// [`Running::next_output`], then [`Running::wait`].
    pub async fn spawn(&self, spec: RunSpec) -> Result<Running> {
        spec.validate()?;
        let binds = self.resolve_binds(&spec.binds)?;
        let workspace = self.workspace(spec.workspace.as_deref()).await?;
        let (wuid, wgid) = workspace.as_ref().map_or((0, 0), |w| w.ids);
        let uid = spec.uid.unwrap_or(wuid);
        let gid = spec
            .gid
            .unwrap_or(if spec.uid.is_some() { uid } else { wgid });
        let home = if workspace.is_some() {
            "/workspace"
        } else {
            "/tmp"
        };
        let cwd = spec.cwd.clone().unwrap_or_else(|| {
            if workspace.is_some() {
                "/workspace"
            } else {
                "/"
            }
            .to_owned()
        });
        let setup = ProcessSetup {
            argv: spec.command.to_argv(),
            file: spec.command.file(),
            env: self.environment(home, &Env::default(), &spec.env),
            cwd,
            uid,
            gid,
        };
        let cgroup = self.run_cgroup(&spec.limits).await?;
        let (out_r, out_w) = spawn::pipe()?;
        let (err_r, err_w) = spawn::pipe()?;
        let (in_r, in_w) = match &spec.stdin {
            _ if spec.stdin_pipe => {
                let (r, w) = spawn::pipe()?;
                (r, Some(w))
            }
            Some(_) => {
                let (r, w) = spawn::pipe()?;
                (r, Some(w))
            }
            None => (self.null_stdio()?.stdin, None),
        };
        let fs_ = CellFs {
            hostname: "cell",
            network: spec.network,
            workspace: workspace.as_ref().map(|w| w.path.as_path()),
            // The descriptor stays open (held by `workspace`) until the cell is cloned.
            workspace_userns: workspace
                .as_ref()
                .and_then(|w| w.userns.as_ref())
                .map(|f| std::os::fd::AsRawFd::as_raw_fd(f.as_ref())),
            binds: &binds,
            uid,
            gid,
            id_base: self.id_base(),
            tmp_bytes: self.options().tmp_bytes,
        };
        let started_at = self.now();
        let clock_start = Instant::now();
        let stdio = Stdio {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        };
        let process = match self.launch_fresh(&cgroup, &fs_, &setup, stdio, None).await {
            Ok(p) => p,
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || cgroup.destroy()).await;
                return Err(e);
            }
        };
        aura_metrics::global().inc(&aura_metrics::CELL_STARTS, &["oneshot"]);
        let pid = process.pid;
        let (tx, rx) = mpsc::channel(64);
        let stop = Arc::new(Notify::new());
        let kill = Arc::new(Notify::new());
        let out = spawn::async_reader(out_r)?;
        let err = spawn::async_reader(err_r)?;
        let (in_w, stdin_pipe) = match in_w {
            Some(w) if spec.stdin_pipe => (None, Some(spawn::async_writer(w)?)),
            other => (other, None),
        };
        let stdin_task = match (in_w, spec.stdin) {
            (Some(w), Some(bytes)) => {
                let mut w = spawn::async_writer(w)?;
                Some(tokio::spawn(async move {
                    // The command may exit without reading; a broken pipe is not an error.
                    let _ = w.write_all(&bytes).await;
                }))
            }
            _ => None,
        };
        let limit = spec.output_limit;
        let grace = self.options().stop_grace;
        let timeout = spec.timeout;
        let stop2 = stop.clone();
        let kill2 = kill.clone();
        let cgroup_view = cgroup.clone();
        let swept_dir = workspace.map(|w| w.path);
        // The task holds what the sweep reports to, not the runtime (a runtime dropped
        // while a run goes on must still be dropped, and clean up).
        let (events, clock) = (self.inner.events.clone(), self.inner.opts.clock.clone());
        let done = tokio::spawn(async move {
            let pumps = async {
                tokio::join!(
                    pump(out, Channel::Stdout, limit, tx.clone()),
                    pump(err, Channel::Stderr, limit, tx)
                )
            };
            let waiter = async {
                let mut timed_out = false;
                let deadline = async {
                    match timeout {
                        Some(t) => tokio::time::sleep(t).await,
                        None => std::future::pending().await,
                    }
                };
                let exit = tokio::select! {
                    r = process.wait() => r,
                    () = deadline => {
                        timed_out = true;
                        kill_now(&process, &cgroup).await
                    }
                    () = stop2.notified() => terminate(&process, &cgroup, grace).await,
                    () = kill2.notified() => kill_now(&process, &cgroup).await,
                };
                (exit, timed_out)
            };
            let ((exit, timed_out), (stdout, stderr)) = tokio::join!(waiter, pumps);
            if let Some(t) = stdin_task {
                t.abort();
            }
            let exit = exit?;
            // The command was process 1 of its cell: with it gone, nothing of the cell
            // runs, and what it left in the workspace can be swept before anyone hears
            // of the outcome.
            if let Some(ws) = &swept_dir {
                crate::runtime::sweep_logged(&events, clock.as_ref(), ws, "a run").await;
            }
            let usage = cgroup.usage();
            // The cgroup is this run's alone, so any OOM kill in it is this run's.
            let oom_killed = usage.oom_kills > 0;
            tokio::task::spawn_blocking(move || cgroup.destroy())
                .await
                .map_err(|e| {
                    Error::io(
                        "cgroup clean-up panicked",
                        std::io::Error::other(e.to_string()),
                    )
                })??;
            Ok(RunOutcome {
                status: ExitStatus::from_ended(exit.ended),
                oom_killed,
                timed_out,
                stdout: stdout.bytes,
                stderr: stderr.bytes,
                stdout_truncated: stdout.truncated,
                stderr_truncated: stderr.truncated,
                usage,
                started_at,
                duration: clock_start.elapsed(),
                pid,
            })
        });
        Ok(Running {
            pid,
            cgroup: cgroup_view,
            output: rx,
            stop,
            kill,
            done,
            stdin: stdin_pipe,
        })
    }
}

/// Stops a one-shot cell: SIGTERM to every process in it, then SIGKILL to process 1 (which
/// takes the whole pid namespace with it) after the grace period.
async fn terminate(
    process: &spawn::Process,
    cgroup: &crate::cgroup::Cgroup,
    grace: Duration,
) -> Result<spawn::Exit> {
    // Process 1 of a pid namespace ignores signals it has no handler for, so signal every
    // process: well-behaved children stop, and a shell at the top follows them.
    cgroup.signal_all(libc::SIGTERM);
    match tokio::time::timeout(grace, process.wait()).await {
        Ok(r) => r,
        Err(_) => {
            process.signal(libc::SIGKILL);
            process.wait().await
        }
    }
}

/// Kills every process of the run's cell now. Killing process 1 ends its pid namespace;
/// the cgroup-wide signal also reaches anything that left the namespace's view.
async fn kill_now(process: &spawn::Process, cgroup: &crate::cgroup::Cgroup) -> Result<spawn::Exit> {
    process.signal(libc::SIGKILL);
    cgroup.signal_all(libc::SIGKILL);
    process.wait().await
}

/// Reads one output stream to its end: captures up to `limit` bytes and forwards every
/// chunk to the reader, if there still is one.
async fn pump(
    mut r: tokio::net::unix::pipe::Receiver,
    channel: Channel,
    limit: usize,
    tx: mpsc::Sender<Output>,
) -> Capture {
    let mut capture = Capture::new(limit);
    let mut buf = vec![0u8; 16 * 1024];
    let mut forward = true;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                capture.push(&buf[..n]);
                if forward
                    && tx
                        .send(Output {
                            channel,
                            data: buf[..n].to_vec(),
                        })
                        .await
                        .is_err()
                {
                    forward = false;
                }
            }
        }
    }
    capture
}
