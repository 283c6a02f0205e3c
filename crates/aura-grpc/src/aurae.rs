//! Aurae v0's services over the cell runtime: `aurae.cells.v0.CellService`,
//! `aurae.observe.v0.ObserveService`, `aurae.discovery.v0.DiscoveryService`, and the
//! standard `grpc.health.v1.Health`.

use aura_cell::{
    CellName, CellSpec, Channel, Command, CpuMax, ExecutableName, ExecutableSpec, Limits,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::proto::aurae::cells::v0 as cells;
use crate::proto::aurae::discovery::v0 as discovery;
use crate::proto::aurae::observe::v0 as observe;
use crate::proto::grpc::health::v1 as health;
use crate::shared::{Shared, Stream, down, status, stream};

/// Aurae's cell spec as Aura's. Aura always gives a cell its own pid namespace, so
/// `isolate_process` asks for nothing more; `isolate_network` false shares the host's
/// network, as it does in Aurae.
pub(crate) fn cell_spec(cell: Option<cells::Cell>) -> Result<CellSpec, aura_cell::Error> {
    let cell =
        cell.ok_or_else(|| aura_cell::Error::InvalidArgument("the request has no cell".into()))?;
    let mut spec = CellSpec::new(CellName::new(&cell.name)?);
    let mut limits = Limits::default();
    if let Some(cpu) = cell.cpu {
        limits.cpu_weight = cpu.weight;
        // A period without a quota limits nothing (the kernel's `max PERIOD`).
        if let Some(quota) = Limits::signed("cpu.max", cpu.max)? {
            limits.cpu_max = Some(CpuMax {
                quota_us: quota,
                period_us: cpu.period.unwrap_or(CpuMax::DEFAULT_PERIOD_US),
            });
        }
    }
    if let Some(cpuset) = cell.cpuset {
        limits.cpuset_cpus = cpuset.cpus;
        limits.cpuset_mems = cpuset.mems;
    }
    if let Some(m) = cell.memory {
        limits.memory_min = Limits::signed("memory.min", m.min)?;
        limits.memory_low = Limits::signed("memory.low", m.low)?;
        limits.memory_high = Limits::signed("memory.high", m.high)?;
        limits.memory_max = Limits::signed("memory.max", m.max)?;
    }
    spec.limits = limits;
    spec.network = !cell.isolate_network;
    Ok(spec)
}

/// Aura's cell spec in Aurae's terms (for List).
pub(crate) fn v0_cell(spec: &CellSpec) -> cells::Cell {
    let l = &spec.limits;
    let signed = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    cells::Cell {
        name: spec.name.to_string(),
        cpu: Some(cells::CpuController {
            weight: l.cpu_weight,
            max: signed(l.cpu_max.map(|m| m.quota_us)),
            period: l.cpu_max.map(|m| m.period_us),
        }),
        cpuset: Some(cells::CpusetController {
            cpus: l.cpuset_cpus.clone(),
            mems: l.cpuset_mems.clone(),
        }),
        memory: Some(cells::MemoryController {
            min: signed(l.memory_min),
            low: signed(l.memory_low),
            high: signed(l.memory_high),
            max: signed(l.memory_max),
        }),
        isolate_process: true,
        isolate_network: !spec.network,
    }
}

fn v0_tree(tree: &aura_cell::CellTree) -> cells::CellGraphNode {
    cells::CellGraphNode {
        cell: Some(v0_cell(&tree.cell.spec)),
        children: tree.children.iter().map(v0_tree).collect(),
    }
}

fn cell_name(name: Option<String>) -> Result<CellName, Status> {
    // Aurae runs executables without a cell in its own root; an Aura node runs nothing
    // outside a cell.
    let name = name.ok_or_else(|| {
        Status::invalid_argument(
            "cell_name is required: an Aura node runs executables only in cells",
        )
    })?;
    CellName::new(&name).map_err(|e| status(&e))
}

/// `aurae.cells.v0.CellService`.
#[derive(Debug, Clone)]
pub struct CellService(pub(crate) Shared);

#[tonic::async_trait]
impl cells::cell_service_server::CellService for CellService {
    async fn allocate(
        &self,
        req: Request<cells::CellServiceAllocateRequest>,
    ) -> Result<Response<cells::CellServiceAllocateResponse>, Status> {
        let spec = cell_spec(req.into_inner().cell).map_err(|e| status(&e))?;
        let name = spec.name.to_string();
        let allocated = self.0.rt.allocate(spec).await.map_err(|e| status(&e))?;
        Ok(Response::new(cells::CellServiceAllocateResponse {
            cell_name: name,
            cgroup_v2: allocated.cgroup_v2,
        }))
    }

    async fn free(
        &self,
        req: Request<cells::CellServiceFreeRequest>,
    ) -> Result<Response<cells::CellServiceFreeResponse>, Status> {
        let name = CellName::new(&req.into_inner().cell_name).map_err(|e| status(&e))?;
        self.0.rt.free(&name).await.map_err(|e| status(&e))?;
        Ok(Response::new(cells::CellServiceFreeResponse {}))
    }

    async fn start(
        &self,
        req: Request<cells::CellServiceStartRequest>,
    ) -> Result<Response<cells::CellServiceStartResponse>, Status> {
        let req = req.into_inner();
        let cell = cell_name(req.cell_name)?;
        let exe = req
            .executable
            .ok_or_else(|| Status::invalid_argument("the request has no executable"))?;
        let name = ExecutableName::new(&exe.name).map_err(|e| status(&e))?;
        let mut spec = ExecutableSpec::new(name, Command::shell(exe.command));
        spec.description = exe.description;
        spec.uid = req.uid;
        spec.gid = req.gid;
        let started = self
            .0
            .rt
            .start_executable(&cell, spec)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(cells::CellServiceStartResponse {
            pid: started.pid,
            uid: started.uid,
            gid: started.gid,
        }))
    }

    async fn stop(
        &self,
        req: Request<cells::CellServiceStopRequest>,
    ) -> Result<Response<cells::CellServiceStopResponse>, Status> {
        let req = req.into_inner();
        let cell = cell_name(req.cell_name)?;
        let name = ExecutableName::new(&req.executable_name).map_err(|e| status(&e))?;
        self.0
            .rt
            .stop(&cell, &name, None)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(cells::CellServiceStopResponse {}))
    }

    async fn list(
        &self,
        _req: Request<cells::CellServiceListRequest>,
    ) -> Result<Response<cells::CellServiceListResponse>, Status> {
        let trees = self.0.rt.list().await;
        Ok(Response::new(cells::CellServiceListResponse {
            cells: trees.iter().map(v0_tree).collect(),
        }))
    }
}

/// `aurae.observe.v0.ObserveService`.
#[derive(Debug, Clone)]
pub struct ObserveService(pub(crate) Shared);

/// A line as Aurae sends it: the timestamp in whole seconds since the epoch.
fn log_item(channel: &str, line: String, timestamp_ns: u64) -> observe::LogItem {
    observe::LogItem {
        channel: channel.to_owned(),
        line,
        timestamp: i64::try_from(timestamp_ns / 1_000_000_000).unwrap_or(i64::MAX),
    }
}

#[tonic::async_trait]
impl observe::observe_service_server::ObserveService for ObserveService {
    type GetAuraeDaemonLogStreamStream = Stream<observe::GetAuraeDaemonLogStreamResponse>;
    type GetSubProcessStreamStream = Stream<observe::GetSubProcessStreamResponse>;
    type GetPosixSignalsStreamStream = Stream<observe::GetPosixSignalsStreamResponse>;

    async fn get_aurae_daemon_log_stream(
        &self,
        _req: Request<observe::GetAuraeDaemonLogStreamRequest>,
    ) -> Result<Response<Self::GetAuraeDaemonLogStreamStream>, Status> {
        let (history, mut live) = self.0.rt.events().subscribe();
        let item = |e: aura_cell::DaemonEvent| observe::GetAuraeDaemonLogStreamResponse {
            item: Some(log_item("daemon", e.line, e.timestamp.as_nanos())),
        };
        Ok(Response::new(stream(&self.0.shutdown, |tx| async move {
            for e in history {
                if tx.send(Ok(item(e))).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(e) => {
                        if tx.send(Ok(item(e))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })))
    }

    async fn get_sub_process_stream(
        &self,
        req: Request<observe::GetSubProcessStreamRequest>,
    ) -> Result<Response<Self::GetSubProcessStreamStream>, Status> {
        let req = req.into_inner();
        let want = match observe::LogChannelType::try_from(req.channel_type) {
            Ok(observe::LogChannelType::Stdout) => Some(Channel::Stdout),
            Ok(observe::LogChannelType::Stderr) => Some(Channel::Stderr),
            Ok(observe::LogChannelType::Unspecified) => None,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "{} is not a log channel type",
                    req.channel_type
                )));
            }
        };
        let (_, store) = self.0.rt.by_pid(req.process_id).map_err(|e| status(&e))?;
        // History first, then follow: unlike Aurae, a late subscriber misses nothing.
        let mut sub = store.subscribe(true);
        Ok(Response::new(stream(&self.0.shutdown, |tx| async move {
            while let Some(l) = sub.next().await {
                if want.is_some_and(|w| w != l.channel) {
                    continue;
                }
                let item = observe::GetSubProcessStreamResponse {
                    item: Some(log_item(l.channel.as_str(), l.line, l.timestamp.as_nanos())),
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
        })))
    }

    async fn get_posix_signals_stream(
        &self,
        req: Request<observe::GetPosixSignalsStreamRequest>,
    ) -> Result<Response<Self::GetPosixSignalsStreamStream>, Status> {
        let cell = match req.into_inner().workload {
            None => None,
            Some(w) => match observe::WorkloadType::try_from(w.workload_type) {
                Ok(observe::WorkloadType::Unspecified) if w.id.is_empty() => None,
                Ok(observe::WorkloadType::Cell) if w.id.is_empty() => None,
                Ok(observe::WorkloadType::Cell) => {
                    Some(CellName::new(&w.id).map_err(|e| status(&e))?)
                }
                _ => {
                    return Err(Status::invalid_argument(
                        "only cells are workloads on an Aura node (WORKLOAD_TYPE_CELL)",
                    ));
                }
            },
        };
        let mut signals = self.0.rt.signals();
        Ok(Response::new(stream(&self.0.shutdown, |tx| async move {
            loop {
                match signals.recv().await {
                    Ok(s) => {
                        if cell.as_ref().is_some_and(|c| *c != s.cell) {
                            continue;
                        }
                        let item = observe::GetPosixSignalsStreamResponse {
                            signal: Some(observe::Signal {
                                signal: s.signal,
                                process_id: s.pid,
                            }),
                        };
                        if tx.send(Ok(item)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })))
    }
}

/// `aurae.discovery.v0.DiscoveryService`.
#[derive(Debug, Clone)]
pub struct DiscoveryService;

#[tonic::async_trait]
impl discovery::discovery_service_server::DiscoveryService for DiscoveryService {
    async fn discover(
        &self,
        _req: Request<discovery::DiscoverRequest>,
    ) -> Result<Response<discovery::DiscoverResponse>, Status> {
        Ok(Response::new(discovery::DiscoverResponse {
            healthy: true,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}

/// The services `grpc.health.v1.Health` reports on (and `""`, the server as a whole).
pub(crate) const SERVICES: &[&str] = &[
    "",
    "aurae.cells.v0.CellService",
    "aurae.observe.v0.ObserveService",
    "aurae.discovery.v0.DiscoveryService",
    "aura.cells.v1.Cells",
    "grpc.health.v1.Health",
];

/// `grpc.health.v1.Health`: every service is SERVING while the server runs.
#[derive(Debug, Clone)]
pub struct HealthService(pub(crate) Shared);

fn serving(service: &str) -> Result<health::HealthCheckResponse, Status> {
    if SERVICES.contains(&service) {
        Ok(health::HealthCheckResponse {
            status: health::health_check_response::ServingStatus::Serving.into(),
        })
    } else {
        Err(Status::not_found(format!("no service `{service}` here")))
    }
}

#[tonic::async_trait]
impl health::health_server::Health for HealthService {
    type WatchStream = Stream<health::HealthCheckResponse>;

    async fn check(
        &self,
        req: Request<health::HealthCheckRequest>,
    ) -> Result<Response<health::HealthCheckResponse>, Status> {
        serving(&req.into_inner().service).map(Response::new)
    }

    async fn watch(
        &self,
        req: Request<health::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let first = serving(&req.into_inner().service);
        let mut shutdown = self.0.shutdown.clone();
        // The stream's own task ends it at shutdown; NOT_SERVING goes out first.
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let known = first.is_ok();
            if tx.send(first).await.is_err() || !known {
                return;
            }
            tokio::select! {
                () = down(&mut shutdown) => {
                    let _ = tx
                        .send(Ok(health::HealthCheckResponse {
                            status: health::health_check_response::ServingStatus::NotServing.into(),
                        }))
                        .await;
                }
                () = tx.closed() => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
