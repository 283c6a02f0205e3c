//! Aura's own cell service, `aura.cells.v1.Cells`: Aurae's v0 plus exit statuses,
//! waiting, logs by name with history, argv and environment, and resource usage.

use std::path::PathBuf;
use std::time::Duration;

use aura_cell::{
    Bind, CellName, CellSpec, Channel, Command, CpuMax, Env, ExecutableName, ExecutableSpec,
    ExitStatus, Limits,
};
use tonic::{Request, Response, Status};

use crate::proto::aura::cells::v1 as pb;
use crate::shared::{Shared, Stream, status, stream};

fn cell(name: &str) -> Result<CellName, Status> {
    CellName::new(name).map_err(|e| status(&e))
}

fn exe(name: &str) -> Result<ExecutableName, Status> {
    ExecutableName::new(name).map_err(|e| status(&e))
}

/// Nanoseconds since the epoch, as the wire's signed field.
fn ns(nanos: u64) -> i64 {
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

/// The wire spec as the runtime's (validated by the runtime itself on allocate).
pub(crate) fn cell_spec(spec: pb::CellSpec) -> Result<CellSpec, aura_cell::Error> {
    let mut out = CellSpec::new(CellName::new(&spec.name)?);
    if let Some(l) = spec.limits {
        let quota = Limits::signed("cpu_max_us", l.cpu_max_us)?;
        out.limits = Limits {
            cpu_weight: l.cpu_weight,
            cpu_max: quota.map(|q| CpuMax {
                quota_us: q,
                period_us: l.cpu_period_us.unwrap_or(CpuMax::DEFAULT_PERIOD_US),
            }),
            cpuset_cpus: l.cpuset_cpus,
            cpuset_mems: l.cpuset_mems,
            memory_min: None,
            memory_low: Limits::signed("memory_low", l.memory_low)?,
            memory_high: None,
            memory_max: Limits::signed("memory_max", l.memory_max)?,
            pids_max: Limits::signed("pids_max", l.pids_max)?,
        };
    }
    out.network = spec.network;
    out.workspace = spec.workspace.map(PathBuf::from);
    out.binds = spec
        .binds
        .into_iter()
        .map(|b| Bind {
            source: PathBuf::from(b.source),
            target: (!b.target.is_empty()).then(|| PathBuf::from(b.target)),
            writable: b.writable,
        })
        .collect();
    out.env = Env::parse(&spec.env)?;
    Ok(out)
}

/// Turns what a caller asked for into what the cell may have. A workspace is one of the
/// node's (`NAME` in namespace `default`, or `NAMESPACE/NAME`), made if it does not
/// exist; an absolute path is a host path and must lie in the allowlist, as every bind's
/// source must. The runtime itself refuses the node's home whatever gets through.
pub(crate) async fn grant(
    access: &aura_cell::CellAccess,
    mut spec: CellSpec,
) -> Result<CellSpec, aura_cell::Error> {
    if let Some(ws) = spec.workspace.take() {
        let text = ws.to_string_lossy().into_owned();
        spec.workspace = Some(if ws.is_absolute() {
            access.host_paths.check(&ws)?
        } else {
            let (ns, name) = text.split_once('/').unwrap_or(("default", &text));
            access.workspace(ns, name).await?
        });
    }
    spec.binds = access.binds(std::mem::take(&mut spec.binds))?;
    Ok(spec)
}

fn wire_spec(spec: &CellSpec) -> pb::CellSpec {
    let l = &spec.limits;
    let signed = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    pb::CellSpec {
        name: spec.name.to_string(),
        limits: Some(pb::Limits {
            cpu_weight: l.cpu_weight,
            cpu_max_us: signed(l.cpu_max.map(|m| m.quota_us)),
            cpu_period_us: l.cpu_max.map(|m| m.period_us),
            cpuset_cpus: l.cpuset_cpus.clone(),
            cpuset_mems: l.cpuset_mems.clone(),
            memory_low: signed(l.memory_low),
            memory_max: signed(l.memory_max),
            pids_max: signed(l.pids_max),
        }),
        network: spec.network,
        workspace: spec
            .workspace
            .as_ref()
            .map(|w| w.to_string_lossy().into_owned()),
        binds: spec
            .binds
            .iter()
            .map(|b| pb::Bind {
                source: b.source.to_string_lossy().into_owned(),
                target: b.target().to_string_lossy().into_owned(),
                writable: b.writable,
            })
            .collect(),
        env: spec.env.0.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    }
}

fn exe_spec(spec: pb::ExecutableSpec) -> Result<ExecutableSpec, aura_cell::Error> {
    let command = match spec.command {
        Some(pb::executable_spec::Command::Shell(line)) => Command::shell(line),
        Some(pb::executable_spec::Command::Argv(argv)) => Command::argv(argv.args),
        None => {
            return Err(aura_cell::Error::InvalidArgument(
                "the executable has no command (shell or argv)".into(),
            ));
        }
    };
    let mut out = ExecutableSpec::new(ExecutableName::new(&spec.name)?, command);
    out.env = Env::parse(&spec.env)?;
    out.cwd = spec.cwd;
    out.uid = spec.uid;
    out.gid = spec.gid;
    out.description = spec.description;
    Ok(out)
}

fn usage(u: &aura_cell::Usage) -> pb::Usage {
    pb::Usage {
        cpu_time_us: u.cpu_time_us,
        memory_peak_bytes: u.memory_peak_bytes,
        memory_current_bytes: u.memory_current_bytes,
        pids_current: u.pids_current,
        oom_kills: u.oom_kills,
    }
}

pub(crate) fn exe_info(e: &aura_cell::ExecutableInfo) -> pb::ExecutableInfo {
    let exit = e.exit.as_ref();
    pb::ExecutableInfo {
        name: e.name.to_string(),
        pid: e.pid,
        running: exit.is_none(),
        exit: exit.map(|x| pb::ExitStatus {
            kind: Some(match x.status {
                ExitStatus::Exited(c) => pb::exit_status::Kind::Code(c),
                ExitStatus::Signaled(s) => pb::exit_status::Kind::Signal(s),
            }),
            oom_killed: x.oom_killed,
        }),
        usage: Some(pb::Usage {
            cpu_time_us: exit.map_or(0, |x| {
                u64::try_from(x.cpu_time.as_micros()).unwrap_or(u64::MAX)
            }),
            memory_peak_bytes: exit.map(|x| x.max_rss_bytes),
            ..Default::default()
        }),
        started_at_ns: ns(e.started_at.as_nanos()),
        exited_at_ns: exit.map(|x| ns(x.exited_at.as_nanos())),
        argv: e.argv.clone(),
        description: e.description.clone(),
        uid: e.uid,
        gid: e.gid,
    }
}

fn cell_info(c: &aura_cell::CellInfo) -> pb::CellInfo {
    pb::CellInfo {
        spec: Some(wire_spec(&c.spec)),
        executables: c.executables.iter().map(exe_info).collect(),
        usage: Some(usage(&c.usage)),
        cgroup_v2: c.cgroup_v2,
        init_pid: c.init_pid,
        allocated_at_ns: ns(c.allocated_at.as_nanos()),
    }
}

fn tree(t: &aura_cell::CellTree) -> pb::CellNode {
    pb::CellNode {
        cell: Some(cell_info(&t.cell)),
        children: t.children.iter().map(tree).collect(),
    }
}

fn channel(c: Channel) -> pb::Channel {
    match c {
        Channel::Stdout => pb::Channel::Stdout,
        Channel::Stderr => pb::Channel::Stderr,
    }
}

/// `aura.cells.v1.Cells`.
#[derive(Debug, Clone)]
pub struct Cells(pub(crate) Shared);

#[tonic::async_trait]
impl pb::cells_server::Cells for Cells {
    type LogsStream = Stream<pb::LogLine>;

    async fn allocate(
        &self,
        req: Request<pb::AllocateRequest>,
    ) -> Result<Response<pb::AllocateResponse>, Status> {
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no spec"))?;
        let spec = cell_spec(spec).map_err(|e| status(&e))?;
        let spec = grant(&self.0.cell_access, spec)
            .await
            .map_err(|e| status(&e))?;
        let name = spec.name.to_string();
        let allocated = self.0.rt.allocate(spec).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::AllocateResponse {
            name,
            cgroup_v2: allocated.cgroup_v2,
        }))
    }

    async fn free(
        &self,
        req: Request<pb::FreeRequest>,
    ) -> Result<Response<pb::FreeResponse>, Status> {
        let name = cell(&req.into_inner().name)?;
        self.0.rt.free(&name).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::FreeResponse {}))
    }

    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let req = req.into_inner();
        let name = cell(&req.cell)?;
        let spec = req
            .executable
            .ok_or_else(|| Status::invalid_argument("the request has no executable"))?;
        let spec = exe_spec(spec).map_err(|e| status(&e))?;
        let started = self
            .0
            .rt
            .start_executable(&name, spec)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::StartResponse {
            pid: started.pid,
            uid: started.uid,
            gid: started.gid,
        }))
    }

    async fn stop(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::ExecutableInfo>, Status> {
        let req = req.into_inner();
        let (c, e) = (cell(&req.cell)?, exe(&req.executable)?);
        let grace = req.grace_ms.map(Duration::from_millis);
        let info = self
            .0
            .rt
            .stop(&c, &e, grace)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(exe_info(&info)))
    }

    async fn wait(
        &self,
        req: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let req = req.into_inner();
        let (c, e) = (cell(&req.cell)?, exe(&req.executable)?);
        let timeout = req.timeout_ms.map(Duration::from_millis);
        let mut down = self.0.shutdown.clone();
        let exited = tokio::select! {
            r = self.0.rt.wait(&c, &e, timeout) => r.map_err(|e| status(&e))?,
            () = crate::shared::down(&mut down) => return Err(Status::unavailable("the node is shutting down")),
        };
        Ok(Response::new(pb::WaitResponse {
            exited: exited.as_ref().map(exe_info),
        }))
    }

    async fn inspect(
        &self,
        req: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::CellInfo>, Status> {
        let name = cell(&req.into_inner().name)?;
        let info = self.0.rt.inspect(&name).await.map_err(|e| status(&e))?;
        Ok(Response::new(cell_info(&info)))
    }

    async fn list(
        &self,
        _req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let trees = self.0.rt.list().await;
        Ok(Response::new(pb::ListResponse {
            cells: trees.iter().map(tree).collect(),
        }))
    }

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        let (c, e) = (cell(&req.cell)?, exe(&req.executable)?);
        let want = match pb::Channel::try_from(req.channel) {
            Ok(pb::Channel::Stdout) => Some(Channel::Stdout),
            Ok(pb::Channel::Stderr) => Some(Channel::Stderr),
            Ok(pb::Channel::Unspecified) => None,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "{} is not a channel",
                    req.channel
                )));
            }
        };
        let store = self.0.rt.logs(&c, &e).await.map_err(|e| status(&e))?;
        let mut sub = store.subscribe(req.follow);
        Ok(Response::new(stream(&self.0.shutdown, |tx| async move {
            while let Some(l) = sub.next().await {
                if want.is_some_and(|w| w != l.channel) {
                    continue;
                }
                let line = pb::LogLine {
                    seq: l.seq,
                    channel: channel(l.channel).into(),
                    line: l.line,
                    timestamp_ns: ns(l.timestamp.as_nanos()),
                };
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        })))
    }
}
