//! `aura cell allocate|start|stop|free|list|logs`: long-lived cells on a running node,
//! through its gRPC socket (Aura's own `aura.cells.v1` API) with mTLS, as the client in an
//! Aurae-format client config (`<home>/pki/clients/admin.toml` unless `--client-config`).

use std::path::PathBuf;

use aura_grpc::ClientConfig;
use aura_grpc::proto::aura::cells::v1 as pb;
use pb::cells_client::CellsClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

/// Which node to talk to, and as whom.
#[derive(Debug, clap::Args)]
pub(crate) struct Connect {
    /// An Aurae-format client config [default: <home>/pki/clients/admin.toml]
    #[arg(long, value_name = "FILE")]
    client_config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AllocateArgs {
    /// The cell's name: `name` or `parent/child` (the parent must exist)
    name: String,
    /// Memory limit in bytes (suffixes K, M, G: 512M)
    #[arg(long, value_name = "BYTES", value_parser = super::cell::parse_bytes)]
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
    /// A host directory mounted read-write at /workspace
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// An environment variable for every executable (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    #[command(flatten)]
    connect: Connect,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// The cell to start it in
    cell: String,
    /// The executable's name, unique among the cell's running executables
    name: String,
    /// An environment variable (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The working directory inside the cell
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// The command and its arguments (PATH is searched inside the cell)
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
    #[command(flatten)]
    connect: Connect,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StopArgs {
    cell: String,
    name: String,
    /// Seconds between SIGTERM and SIGKILL [default: the node's]
    #[arg(long, value_name = "S", value_parser = super::cell::parse_seconds)]
    grace: Option<std::time::Duration>,
    #[command(flatten)]
    connect: Connect,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FreeArgs {
    /// The cell (its children and executables go with it)
    name: String,
    #[command(flatten)]
    connect: Connect,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    connect: Connect,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    cell: String,
    name: String,
    /// Keep printing new lines until the executable exits
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only standard output
    #[arg(long, conflicts_with = "stderr")]
    stdout: bool,
    /// Only standard error
    #[arg(long)]
    stderr: bool,
    #[command(flatten)]
    connect: Connect,
}

async fn client(home: &Home, connect: &Connect) -> anyhow::Result<CellsClient<Channel>> {
    let path = connect.client_config.clone().unwrap_or_else(|| {
        super::pki::pki(home)
            .client(aura_grpc::pki::DEFAULT_CLIENT)
            .config
    });
    if connect.client_config.is_none() && !path.exists() {
        return Err(hinted(
            format!("no client config at {}", path.display()),
            "run `aura pki init` (then `aura serve`), or pass --client-config FILE",
        ));
    }
    let config = ClientConfig::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let channel = config.connect().await.map_err(|e| {
        hinted(
            e.to_string(),
            "is the node running (`aura serve` as root, after `aura pki init`)?",
        )
    })?;
    Ok(CellsClient::new(channel))
}

/// A gRPC status as one line and a hint.
fn status(s: &tonic::Status) -> anyhow::Error {
    let message = s.message().to_owned();
    match s.code() {
        tonic::Code::PermissionDenied => hinted(
            message,
            "use a client with a role that allows this: `aura pki client NAME --role admin`",
        ),
        tonic::Code::NotFound => hinted(message, "list cells with `aura cell list`"),
        tonic::Code::InvalidArgument => hinted(message, "see `aura cell --help`"),
        tonic::Code::Unavailable | tonic::Code::Unknown => hinted(
            format!("the node refused or dropped the call: {message}"),
            "check the node is running and that this client's certificate is valid and from its CA",
        ),
        _ => anyhow::anyhow!(message),
    }
}

#[derive(Serialize)]
struct Allocated {
    name: String,
    cgroup_v2: bool,
}

pub(crate) async fn allocate(home: &Home, out: &Output, args: AllocateArgs) -> anyhow::Result<()> {
    let cpu_max_us = match args.cpus {
        Some(cpus) => Some(
            aura_cell::CpuMax::cpus(cpus)
                .map_err(|e| hinted(e.to_string(), "see `aura cell allocate --help`"))?
                .quota_us,
        ),
        None => None,
    };
    let signed = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    let workspace = match args.workspace {
        Some(w) => Some(
            std::path::absolute(&w)
                .map_err(|e| anyhow::anyhow!("cannot resolve {}: {e}", w.display()))?
                .to_string_lossy()
                .into_owned(),
        ),
        None => None,
    };
    let spec = pb::CellSpec {
        name: args.name,
        limits: Some(pb::Limits {
            cpu_max_us: cpu_max_us.map(|q| i64::try_from(q).unwrap_or(i64::MAX)),
            memory_max: signed(args.memory),
            pids_max: signed(args.pids),
            ..Default::default()
        }),
        network: args.network,
        workspace,
        binds: Vec::new(),
        env: args.env,
    };
    let mut c = client(home, &args.connect).await?;
    let r = c
        .allocate(pb::AllocateRequest { spec: Some(spec) })
        .await
        .map_err(|s| status(&s))?
        .into_inner();
    let done = Allocated {
        name: r.name,
        cgroup_v2: r.cgroup_v2,
    };
    out.print(&done, || format!("allocated cell {}", done.name))
}

#[derive(Serialize)]
struct Started {
    cell: String,
    name: String,
    pid: i32,
}

pub(crate) async fn start(home: &Home, out: &Output, args: StartArgs) -> anyhow::Result<()> {
    let mut c = client(home, &args.connect).await?;
    let r = c
        .start(pb::StartRequest {
            cell: args.cell.clone(),
            executable: Some(pb::ExecutableSpec {
                name: args.name.clone(),
                command: Some(pb::executable_spec::Command::Argv(pb::Argv {
                    args: args.command,
                })),
                env: args.env,
                cwd: args.cwd,
                ..Default::default()
            }),
        })
        .await
        .map_err(|s| status(&s))?
        .into_inner();
    let done = Started {
        cell: args.cell,
        name: args.name,
        pid: r.pid,
    };
    out.print(&done, || {
        format!(
            "started {} in cell {} (pid {})",
            done.name, done.cell, done.pid
        )
    })
}

/// How an executable ended, or that it runs, for people and for `--json`.
#[derive(Serialize)]
struct Executable {
    name: String,
    pid: i32,
    running: bool,
    exit_code: Option<i32>,
    signal: Option<i32>,
    oom_killed: bool,
    cpu_time_us: u64,
    memory_peak_bytes: Option<u64>,
    argv: Vec<String>,
}

impl Executable {
    fn from(e: &pb::ExecutableInfo) -> Self {
        let exit = e.exit.as_ref();
        let kind = exit.and_then(|x| x.kind);
        let usage = e.usage.unwrap_or_default();
        Executable {
            name: e.name.clone(),
            pid: e.pid,
            running: e.running,
            exit_code: match kind {
                Some(pb::exit_status::Kind::Code(c)) => Some(c),
                _ => None,
            },
            signal: match kind {
                Some(pb::exit_status::Kind::Signal(s)) => Some(s),
                _ => None,
            },
            oom_killed: exit.is_some_and(|x| x.oom_killed),
            cpu_time_us: usage.cpu_time_us,
            memory_peak_bytes: usage.memory_peak_bytes,
            argv: e.argv.clone(),
        }
    }

    fn state(&self) -> String {
        match (self.running, self.exit_code, self.signal) {
            (true, _, _) => "running".into(),
            (_, Some(c), _) => format!("exited with code {c}"),
            (_, _, Some(s)) => format!(
                "killed by signal {s} ({}){}",
                aura_cell::signal_name(s),
                if self.oom_killed {
                    ", out of memory"
                } else {
                    ""
                }
            ),
            _ => "ended".into(),
        }
    }
}

pub(crate) async fn stop(home: &Home, out: &Output, args: StopArgs) -> anyhow::Result<()> {
    let mut c = client(home, &args.connect).await?;
    let info = c
        .stop(pb::StopRequest {
            cell: args.cell.clone(),
            executable: args.name,
            grace_ms: args
                .grace
                .map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
        })
        .await
        .map_err(|s| status(&s))?
        .into_inner();
    let exe = Executable::from(&info);
    out.print(&exe, || {
        format!(
            "stopped {} in cell {}: {}",
            exe.name,
            args.cell,
            exe.state()
        )
    })
}

#[derive(Serialize)]
struct Freed {
    name: String,
}

pub(crate) async fn free(home: &Home, out: &Output, args: FreeArgs) -> anyhow::Result<()> {
    let mut c = client(home, &args.connect).await?;
    c.free(pb::FreeRequest {
        name: args.name.clone(),
    })
    .await
    .map_err(|s| status(&s))?;
    let done = Freed { name: args.name };
    out.print(&done, || format!("freed cell {}", done.name))
}

#[derive(Serialize)]
struct Cell {
    name: String,
    cpu_time_us: u64,
    memory_peak_bytes: Option<u64>,
    executables: Vec<Executable>,
    children: Vec<Cell>,
}

fn cell(node: &pb::CellNode) -> Cell {
    let info = node.cell.clone().unwrap_or_default();
    let usage = info.usage.unwrap_or_default();
    Cell {
        name: info.spec.map(|s| s.name).unwrap_or_default(),
        cpu_time_us: usage.cpu_time_us,
        memory_peak_bytes: usage.memory_peak_bytes,
        executables: info.executables.iter().map(Executable::from).collect(),
        children: node.children.iter().map(cell).collect(),
    }
}

fn describe(c: &Cell, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let memory = c
        .memory_peak_bytes
        .map(|b| format!(", memory peak {} KiB", b / 1024))
        .unwrap_or_default();
    out.push_str(&format!(
        "{pad}{}  (cpu {} ms{memory})\n",
        c.name,
        c.cpu_time_us / 1000
    ));
    for e in &c.executables {
        out.push_str(&format!(
            "{pad}  - {} pid {}: {}  [{}]\n",
            e.name,
            e.pid,
            e.state(),
            e.argv.join(" ")
        ));
    }
    for child in &c.children {
        describe(child, depth + 1, out);
    }
}

pub(crate) async fn list(home: &Home, out: &Output, args: ListArgs) -> anyhow::Result<()> {
    let mut c = client(home, &args.connect).await?;
    let listed = c
        .list(pb::ListRequest {})
        .await
        .map_err(|s| status(&s))?
        .into_inner();
    let cells: Vec<Cell> = listed.cells.iter().map(cell).collect();
    out.print(&cells, || {
        if cells.is_empty() {
            return "no cells".into();
        }
        let mut text = String::new();
        for c in &cells {
            describe(c, 0, &mut text);
        }
        text
    })
}

#[derive(Serialize)]
struct Line {
    seq: u64,
    channel: &'static str,
    timestamp_ns: i64,
    line: String,
}

pub(crate) async fn logs(home: &Home, out: &Output, args: LogsArgs) -> anyhow::Result<()> {
    let channel = if args.stdout {
        pb::Channel::Stdout
    } else if args.stderr {
        pb::Channel::Stderr
    } else {
        pb::Channel::Unspecified
    };
    let mut c = client(home, &args.connect).await?;
    let mut stream = c
        .logs(pb::LogsRequest {
            cell: args.cell,
            executable: args.name,
            follow: args.follow,
            channel: channel.into(),
        })
        .await
        .map_err(|s| status(&s))?
        .into_inner();
    while let Some(l) = stream.message().await.map_err(|s| status(&s))? {
        let line = Line {
            seq: l.seq,
            channel: match l.channel() {
                pb::Channel::Stderr => "stderr",
                _ => "stdout",
            },
            timestamp_ns: l.timestamp_ns,
            line: l.line,
        };
        if out.is_json() {
            out.line(&line, String::new)?;
        } else if line.channel == "stderr" {
            eprintln!("{}", line.line);
        } else {
            out.line(&line, || line.line.clone())?;
        }
    }
    Ok(())
}
