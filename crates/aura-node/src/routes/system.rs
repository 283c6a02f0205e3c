//! `GET /v1/system`: what the node's machine is doing, for the UI's resource monitor: CPU
//! use (from `/proc/stat`), memory (from `/proc/meminfo`), the node process's own memory,
//! and, where `nvidia-smi` exists, each GPU's utilisation and memory.
//!
//! CPU use is the share of non-idle time between two readings of `/proc/stat`: the node
//! keeps the previous reading, so each call reports the use since the call before it (or
//! over a short sample on the first call). GPU readings are cached for a second and
//! `nvidia-smi` gets two seconds to answer, so a slow or hung driver never holds a request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::require;
use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct SystemView {
    cpu: CpuView,
    memory: MemoryView,
    /// The node process's resident memory, in bytes.
    process_rss_bytes: Option<u64>,
    /// One per GPU `nvidia-smi` reports; empty where there is none.
    gpus: Vec<GpuView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CpuView {
    /// Logical CPUs.
    cores: usize,
    /// Share of time not idle since the previous reading, 0-100, over all cores.
    utilization_percent: Option<f64>,
    /// The 1, 5 and 15 minute load averages.
    load_average: Option<[f64; 3]>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MemoryView {
    total_bytes: Option<u64>,
    available_bytes: Option<u64>,
    used_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct GpuView {
    index: u32,
    name: String,
    utilization_percent: Option<f64>,
    memory_used_bytes: Option<u64>,
    memory_total_bytes: Option<u64>,
}

/// The previous `/proc/stat` reading: (busy, total) jiffies.
static LAST_CPU: Mutex<Option<(u64, u64)>> = Mutex::new(None);
/// The latest GPU reading and when it was taken.
static LAST_GPU: Mutex<Option<(Instant, Vec<GpuView>)>> = Mutex::new(None);

/// The machine's CPU, memory and GPU use now.
#[utoipa::path(get, path = "/v1/system", tag = "node",
    responses((status = 200, body = SystemView), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
async fn system(
    State(_state): State<AppState>,
    caller: Caller,
) -> Result<Json<SystemView>, ApiError> {
    // Those who may run work on the node (operators and agents) may see its load.
    require(&caller, &[Role::Operator, Role::Agent])?;
    let utilization_percent = cpu_utilization().await;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo_field(&meminfo, "MemTotal:");
    let available = meminfo_field(&meminfo, "MemAvailable:");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Ok(Json(SystemView {
        cpu: CpuView {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            utilization_percent,
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| load_average(&s)),
        },
        memory: MemoryView {
            total_bytes: total,
            available_bytes: available,
            used_bytes: total.zip(available).map(|(t, a)| t.saturating_sub(a)),
        },
        process_rss_bytes: meminfo_field(&status, "VmRSS:"),
        gpus: gpus().await,
    }))
}

/// Reads the `cpu` line of `/proc/stat` as (busy, total) jiffies.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

async fn cpu_utilization() -> Option<f64> {
    let read = || {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| cpu_times(&s))
    };
    let previous = *LAST_CPU.lock().unwrap_or_else(|e| e.into_inner());
    let previous = match previous {
        Some(p) => p,
        None => {
            let first = read()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            first
        }
    };
    let now = read()?;
    *LAST_CPU.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
    utilization(previous, now)
}

/// The busy share between two readings, in percent; `None` when no time passed.
#[allow(
    clippy::cast_precision_loss,
    reason = "jiffy counts are far below 2^52"
)]
fn utilization(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let busy = after.0.saturating_sub(before.0);
    let total = after.1.saturating_sub(before.1);
    (total > 0).then(|| (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

/// A `Name:   123 kB` field of `/proc/meminfo` or `/proc/self/status`, in bytes.
fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
    let mut parts = rest.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    Some(match parts.next() {
        Some("kB") => n.saturating_mul(1024),
        _ => n,
    })
}

fn load_average(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

async fn gpus() -> Vec<GpuView> {
    {
        let last = LAST_GPU.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, gpus)) = last.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return gpus.clone();
        }
    }
    let read = tokio::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,utilization.gpu,memory.used,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let gpus = match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok(out)) if out.status.success() => {
            parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
        }
        // No nvidia-smi (the usual case), a failing driver or a hung one: no GPUs to show.
        _ => Vec::new(),
    };
    *LAST_GPU.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), gpus.clone()));
    gpus
}

/// Parses `nvidia-smi --format=csv,noheader,nounits` lines: index, name, utilisation
/// (percent), memory used and total (MiB). Fields a GPU cannot report (`[N/A]`) are `None`.
fn parse_nvidia_smi(text: &str) -> Vec<GpuView> {
    let mib = |s: &str| {
        s.trim()
            .parse::<u64>()
            .ok()
            .map(|m| m.saturating_mul(1 << 20))
    };
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != 5 {
                return None;
            }
            Some(GpuView {
                index: f[0].parse().ok()?,
                name: f[1].to_owned(),
                utilization_percent: f[2].parse().ok(),
                memory_used_bytes: mib(f[3]),
                memory_total_bytes: mib(f[4]),
            })
        })
        .collect()
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(system))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_times(stat), Some((150, 1000)));
        assert_eq!(cpu_times("intr 1 2 3"), None);
        assert_eq!(utilization((150, 1000), (250, 1200)), Some(50.0));
        assert_eq!(utilization((150, 1000), (150, 1000)), None);
        let meminfo = "MemTotal:       24683772 kB\nMemFree: 1 kB\nMemAvailable:   21298344 kB\n";
        assert_eq!(meminfo_field(meminfo, "MemTotal:"), Some(24_683_772 * 1024));
        assert_eq!(
            meminfo_field(meminfo, "MemAvailable:"),
            Some(21_298_344 * 1024)
        );
        assert_eq!(meminfo_field(meminfo, "Nope:"), None);
        assert_eq!(
            load_average("5.82 4.78 2.60 7/173 9185"),
            Some([5.82, 4.78, 2.60])
        );
        assert_eq!(load_average("garbage"), None);
    }

    #[test]
    fn nvidia_smi_lines_parse_and_unknown_fields_are_none() {
        let out = "0, NVIDIA H100 80GB HBM3, 37, 1024, 81559\n1, NVIDIA H100 80GB HBM3, [N/A], [N/A], 81559\nnot a gpu line\n";
        let g = parse_nvidia_smi(out);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(g[0].utilization_percent, Some(37.0));
        assert_eq!(g[0].memory_used_bytes, Some(1024 << 20));
        assert_eq!(g[1].utilization_percent, None);
        assert_eq!(g[1].memory_used_bytes, None);
        assert_eq!(g[1].memory_total_bytes, Some(81559 << 20));
    }
}
