//! Stdio MCP servers inside a hardened cell (aura-cell): the server is process 1 of a
//! fresh cell with the host paths it needs bound read-only, the workspace and network
//! only when the registration grants them, and cgroup limits; the client talks to it over
//! its stdin and stdout, and its stderr is kept (the last few KiB) to explain a crash.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aura_cell::{Bind, Channel, RunSpec, Runtime, Stopper};
use tokio::io::AsyncWriteExt as _;

use crate::client::{Client, CloseReason, Error, Options};

/// How much of a server's stderr is kept for error messages.
const STDERR_TAIL: usize = 2048;

/// What to run, and what the cell may see.
#[derive(Debug, Clone, Default)]
pub struct StdioSpec {
    /// The program (an absolute path inside the cell) and its arguments.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Host paths bound read-only at the same place inside the cell (an interpreter's
    /// prefix, the server's own files). `/usr`, `/bin` and `/lib` are always there.
    pub binds: Vec<PathBuf>,
    /// A directory mounted read-write at `/workspace`, the working directory.
    pub workspace: Option<PathBuf>,
    /// Share the host's network; otherwise the cell has loopback only.
    pub network: bool,
    pub memory_max: Option<u64>,
    pub pids_max: Option<u64>,
}

/// The cell a server runs in. Dropping it kills the cell.
#[derive(Debug)]
pub struct CellProcess {
    stopper: Stopper,
    /// The cell's process 1 as the host sees it.
    pub pid: i32,
}

impl Drop for CellProcess {
    fn drop(&mut self) {
        self.stopper.kill();
    }
}

/// Starts the server in a fresh cell and completes the MCP handshake with it.
pub async fn launch(
    runtime: &Runtime,
    spec: &StdioSpec,
    options: Options,
) -> Result<(Client, CellProcess), Error> {
    if spec.argv.is_empty() {
        return Err(Error::Start("the server's command is empty".into()));
    }
    let mut run = RunSpec::argv(spec.argv.clone())
        .network(spec.network)
        .stdin_pipe()
        // What is captured for the run's outcome, beside the stream; the client reads
        // the stream.
        .output_limit(STDERR_TAIL);
    if let Some(ws) = &spec.workspace {
        run = run.workspace(ws);
    }
    for (k, v) in &spec.env {
        run = run.env(k, v);
    }
    for path in &spec.binds {
        run = run.bind(Bind {
            source: path.clone(),
            target: None,
            writable: false,
        });
    }
    if let Some(m) = spec.memory_max {
        run = run.memory_max(m);
    }
    if let Some(p) = spec.pids_max {
        run = run.pids_max(p);
    }
    let mut running = runtime
        .spawn(run)
        .await
        .map_err(|e| Error::Start(format!("cannot start its cell: {}", chain(&e))))?;
    let stdin = running
        .take_stdin()
        .ok_or_else(|| Error::Start("the cell has no stdin pipe".into()))?;
    let process = CellProcess {
        stopper: running.stopper(),
        pid: running.pid(),
    };
    let (mut to_client, from_server) = tokio::io::duplex(64 * 1024);
    let reason: CloseReason = Arc::new(Mutex::new(None));
    let reason2 = reason.clone();
    tokio::spawn(async move {
        let mut tail: Vec<u8> = Vec::new();
        let mut forward = true;
        while let Some(out) = running.next_output().await {
            match out.channel {
                Channel::Stdout => {
                    if forward && to_client.write_all(&out.data).await.is_err() {
                        // The client is gone; keep draining so the server never blocks.
                        forward = false;
                    }
                }
                Channel::Stderr => {
                    tail.extend_from_slice(&out.data);
                    if tail.len() > STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
        }
        // Both streams ended: the server is exiting. Say how, before the client sees the
        // end of its stream.
        let how = match running.wait().await {
            Ok(o) => match o.status {
                aura_cell::ExitStatus::Exited(code) => {
                    format!("the server exited with code {code}")
                }
                aura_cell::ExitStatus::Signaled(sig) => {
                    format!("the server was killed by signal {sig}")
                }
            },
            Err(e) => format!("the server's cell failed: {}", chain(&e)),
        };
        let stderr = String::from_utf8_lossy(&tail).trim().to_owned();
        let message = if stderr.is_empty() {
            how
        } else {
            let last = stderr.lines().last().unwrap_or_default().to_owned();
            format!("{how}; its stderr ends: {last}")
        };
        if let Ok(mut r) = reason2.lock() {
            *r = Some(message);
        }
        drop(to_client);
    });
    let client = Client::connect(from_server, stdin, options, Some(reason)).await?;
    Ok((client, process))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
