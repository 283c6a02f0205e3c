//! The cell benchmarks (issue: cells). Needs root and bubblewrap (`bwrap`).
//!
//! - One-shot: create a fully hardened cell (cgroup, every namespace, root file system,
//!   masked /proc, seccomp, no capabilities), execute /bin/true in it, wait, free it;
//!   beside `bwrap --unshare-all --ro-bind / / /bin/true` (Debian's bubblewrap), timed
//!   the same way (spawn to reaped), alternating the two so that both see the same noise.
//! - The same one-shot cell the way every cell was made before root templates and spare
//!   cgroups (`Options::root_template` false, `Options::spare_cgroups` 0): its whole root
//!   built in the child, its cgroup made on the way; in the same rounds, so the two paths
//!   see the same noise.
//! - The same one-shot cell with a workspace of 200 small files mounted at /workspace, as
//!   every `cmd.run` has (the workspace belongs to the cells' root, as a node's do), so
//!   that the cost of the workspace (its mount and the sweep after the run) shows.
//! - Executables started per second inside one long-lived cell (start /bin/true, wait),
//!   cloned by the join thread and, in alternating halves, through an intermediate process
//!   (`Options::join_thread` false, the old path), beside plain spawning of /bin/true on
//!   the host (`std::process::Command`, which uses posix_spawn): the ceiling with no
//!   sandbox at all.

use std::time::{Duration, Instant};

use aura_cell::{
    CellName, CellSpec, Command, ExecutableName, ExecutableSpec, Options, RunSpec, Runtime,
};

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// One-shot cells to create (and as many bwrap runs)
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// Executables to start in the long-lived cell
    #[arg(long, default_value_t = 500)]
    executables: usize,
    /// Executables running at once in the long-lived cell benchmark
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The bubblewrap binary
    #[arg(long, default_value = "bwrap")]
    bwrap: String,
}

fn summary(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = Options::new(dir.path().join("cells"));
    opts.instance = Some(format!("cli-{}", std::process::id()));
    let rt = Runtime::start(opts).await?;
    let mut old_opts = Options::new(dir.path().join("cells-old"));
    old_opts.instance = Some(format!("cli-{}-old", std::process::id()));
    old_opts.root_template = false;
    old_opts.spare_cgroups = 0;
    old_opts.join_thread = false;
    let old = Runtime::start(old_opts).await?;
    println!("load average before: {}", crate::load_average());
    println!();

    // Warm up both (page cache, the kernel's namespace caches).
    for _ in 0..10 {
        rt.run(RunSpec::argv(["/bin/true"])).await?;
        old.run(RunSpec::argv(["/bin/true"])).await?;
        bwrap_once(&args.bwrap)?;
    }
    anyhow::ensure!(
        rt.root_templates() == 1,
        "the cells did not use a root template (see the runtime's events)"
    );
    let ws = workspace(dir.path(), rt.options().id_base)?;
    let mut aura = Vec::with_capacity(args.runs);
    let mut scratch = Vec::with_capacity(args.runs);
    let mut with_ws = Vec::with_capacity(args.runs);
    let mut peer = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        let out = rt.run(RunSpec::argv(["/bin/true"])).await?;
        aura.push(t.elapsed());
        anyhow::ensure!(
            out.success(),
            "/bin/true failed in a cell: {:?}",
            out.status
        );
        let t = Instant::now();
        let out = old.run(RunSpec::argv(["/bin/true"])).await?;
        scratch.push(t.elapsed());
        anyhow::ensure!(
            out.success(),
            "/bin/true failed in a cell built from scratch: {:?}",
            out.status
        );
        let t = Instant::now();
        let out = rt.run(RunSpec::argv(["/bin/true"]).workspace(&ws)).await?;
        with_ws.push(t.elapsed());
        anyhow::ensure!(
            out.success(),
            "/bin/true failed in a cell with a workspace: {:?} {}",
            out.status,
            out.stderr_text()
        );
        peer.push(bwrap_once(&args.bwrap)?);
    }
    let (a50, a99) = summary(aura);
    let (s50, s99) = summary(scratch);
    let (w50, w99) = summary(with_ws);
    let (b50, b99) = summary(peer);
    println!(
        "| create a hardened cell, exec /bin/true, wait, free ({} runs) | p50 | p99 |",
        args.runs
    );
    println!("|---|---:|---:|");
    println!(
        "| Aura one-shot cell | {} | {} |",
        fmt_duration(a50),
        fmt_duration(a99)
    );
    println!(
        "| Aura one-shot cell, root built from scratch, no spare cgroups (the old path) | {} | {} |",
        fmt_duration(s50),
        fmt_duration(s99)
    );
    println!(
        "| Aura one-shot cell with a 200-file workspace (cmd.run) | {} | {} |",
        fmt_duration(w50),
        fmt_duration(w99)
    );
    println!(
        "| bwrap --unshare-all --ro-bind / / /bin/true | {} | {} |",
        fmt_duration(b50),
        fmt_duration(b99)
    );
    println!(
        "| Aura / bwrap | {:.2} | {:.2} |",
        a50.as_secs_f64() / b50.as_secs_f64(),
        a99.as_secs_f64() / b99.as_secs_f64()
    );
    println!();

    // Executables per second in one long-lived cell: the join thread, and the old path
    // (an intermediate process per executable), in alternating halves.
    let half = args.executables.div_ceil(2);
    let (mut new_time, mut old_time) = (Duration::ZERO, Duration::ZERO);
    let (mut latencies, mut old_latencies) = (Vec::new(), Vec::new());
    for round in 0..2 {
        let (t, l) = executables(&rt, &format!("bench{round}"), half, args.concurrency).await?;
        new_time += t;
        latencies.extend(l);
        let (t, l) = executables(&old, &format!("bench{round}"), half, args.concurrency).await?;
        old_time += t;
        old_latencies.extend(l);
    }
    old.shutdown().await;
    let rate = (2 * half) as f64 / new_time.as_secs_f64();
    let old_rate = (2 * half) as f64 / old_time.as_secs_f64();

    let host_start = Instant::now();
    let host_runs = args.executables;
    let mut handles = Vec::new();
    let per = host_runs.div_ceil(args.concurrency);
    for _ in 0..args.concurrency {
        handles.push(std::thread::spawn(move || -> std::io::Result<()> {
            for _ in 0..per {
                std::process::Command::new("/bin/true").status()?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a host spawner panicked"))??;
    }
    let host_rate = (per * args.concurrency) as f64 / host_start.elapsed().as_secs_f64();
    let (l50, l99) = summary(latencies);
    let (o50, o99) = summary(old_latencies);
    println!(
        "| executables in one long-lived cell ({} x /bin/true, {} at once) | per second | start-to-exit p50 | p99 |",
        args.executables, args.concurrency
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| Aura cell (join namespaces, exec via init) | {rate:.0} | {} | {} |",
        fmt_duration(l50),
        fmt_duration(l99)
    );
    println!(
        "| Aura cell, through an intermediate process (the old path) | {old_rate:.0} | {} | {} |",
        fmt_duration(o50),
        fmt_duration(o99)
    );
    println!("| plain fork+exec on the host (no sandbox) | {host_rate:.0} | | |");
    println!("| Aura / plain | {:.2} | | |", rate / host_rate);
    println!();
    println!("load average after: {}", crate::load_average());
    rt.shutdown().await;
    Ok(())
}

/// Starts `n` executables of /bin/true in a fresh long-lived cell, `concurrency` at once,
/// each waited for; returns the time they took and each one's start-to-exit latency.
async fn executables(
    rt: &Runtime,
    name: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let cell = CellName::new(name)?;
    rt.allocate(CellSpec::new(cell.clone())).await?;
    let start = Instant::now();
    let mut next = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    let mut latencies = Vec::with_capacity(n);
    while next < n || !tasks.is_empty() {
        while next < n && tasks.len() < concurrency {
            let rt = rt.clone();
            let cell = cell.clone();
            let name = ExecutableName::new(&format!("e{next}"))?;
            next += 1;
            tasks.spawn(async move {
                let t = Instant::now();
                rt.start_executable(
                    &cell,
                    ExecutableSpec::new(name.clone(), Command::argv(["/bin/true"])),
                )
                .await?;
                let info = rt.wait(&cell, &name, Some(Duration::from_secs(30))).await?;
                anyhow::ensure!(
                    info.and_then(|i| i.exit)
                        .is_some_and(|e| e.status.success()),
                    "/bin/true failed in the cell"
                );
                Ok::<_, anyhow::Error>(t.elapsed())
            });
        }
        if let Some(r) = tasks.join_next().await {
            latencies.push(r??);
        }
    }
    let elapsed = start.elapsed();
    rt.free(&cell).await?;
    Ok((elapsed, latencies))
}

/// A workspace as a node makes them (0700, the cells' root's), with 200 small files in
/// ten directories for the sweep after each run to walk.
fn workspace(dir: &std::path::Path, id_base: u32) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let ws = dir.join("workspace");
    for d in 0..10 {
        let sub = ws.join(format!("d{d}"));
        std::fs::create_dir_all(&sub)?;
        for f in 0..20 {
            std::fs::write(sub.join(format!("f{f}")), b"x")?;
        }
    }
    for entry in std::fs::read_dir(&ws)? {
        let sub = entry?.path();
        for f in std::fs::read_dir(&sub)? {
            std::os::unix::fs::chown(f?.path(), Some(id_base), Some(id_base))?;
        }
        std::os::unix::fs::chown(&sub, Some(id_base), Some(id_base))?;
    }
    std::os::unix::fs::chown(&ws, Some(id_base), Some(id_base))?;
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o700))?;
    Ok(ws)
}

fn bwrap_once(bwrap: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let status = std::process::Command::new(bwrap)
        .args(["--unshare-all", "--ro-bind", "/", "/", "/bin/true"])
        .status()
        .map_err(|e| {
            anyhow::anyhow!("cannot run {bwrap} ({e}); install bubblewrap (scripts/setup-cells.sh)")
        })?;
    let d = t.elapsed();
    anyhow::ensure!(status.success(), "bwrap failed: {status}");
    Ok(d)
}
