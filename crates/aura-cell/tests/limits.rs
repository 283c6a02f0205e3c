//! Resource limits (needs root): a fork bomb stops at pids.max while the host stays
//! responsive, a memory hog is OOM-killed and reported as such, a CPU limit throttles
//! (measured), a cpuset pins.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::{Duration, Instant};

use aura_cell::{
    CellName, CellSpec, Command, ExecutableName, ExecutableSpec, ExitStatus, Limits, RunSpec,
};

#[tokio::test(flavor = "multi_thread")]
async fn root_a_fork_bomb_stops_at_pids_max_and_the_host_stays_responsive() {
    let c = common::cells().await;
    let limit = 64;
    let running =
        c.rt.spawn(
            // dash exits when a fork fails, so process 1 is a sleep, not part of the bomb.
            RunSpec::shell(
                "(bomb() { while :; do bomb & done; }; bomb) 2>/dev/null & exec sleep 10",
            )
            .pids_max(limit)
            .timeout(Duration::from_secs(3)),
        )
        .await
        .unwrap();
    let mut peak = 0;
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        peak = peak.max(running.usage().pids_current.unwrap_or(0));
        // The host can still start processes, promptly.
        let t = Instant::now();
        let ok = std::process::Command::new("/bin/true")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcome = running.wait().await.unwrap();
    println!("fork bomb: peak {peak} processes (limit {limit}); slowest host spawn {slowest:?}");
    assert!(
        peak <= limit,
        "the cell had {peak} processes, above pids.max {limit}"
    );
    assert!(
        peak >= limit / 2,
        "the bomb never got going ({peak} processes)"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "the host was unresponsive for {slowest:?}"
    );
    assert!(outcome.timed_out);
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_a_memory_hog_is_oom_killed_and_reported() {
    let c = common::cells().await;
    // tail keeps the whole "line" of /dev/zero in memory: it grows until the limit.
    let out =
        c.rt.run(RunSpec::argv(["tail", "/dev/zero"]).memory_max(32 << 20))
            .await
            .unwrap();
    assert_eq!(out.status, ExitStatus::Signaled(libc::SIGKILL), "{out:?}");
    assert!(out.oom_killed, "{out:?}");
    assert!(out.usage.oom_kills >= 1);
    let peak = out.usage.memory_peak_bytes.unwrap();
    assert!(peak <= 32 << 20 && peak > 16 << 20, "peak {peak}");
    // A command that stays under the limit is not reported as OOM.
    let out =
        c.rt.run(RunSpec::shell("head -c 1000000 /dev/zero | wc -c").memory_max(32 << 20))
            .await
            .unwrap();
    assert!(out.success() && !out.oom_killed, "{out:?}");
    // An ordinary SIGKILL is not an OOM either.
    let out =
        c.rt.run(
            RunSpec::shell("sleep 30")
                .timeout(Duration::from_millis(200))
                .memory_max(32 << 20),
        )
        .await
        .unwrap();
    assert!(!out.oom_killed, "{out:?}");

    // In a long-lived cell: nested, with the limit on the parent.
    let parent = CellName::new("limited").unwrap();
    let mut spec = CellSpec::new(parent.clone());
    spec.limits.memory_max = Some(32 << 20);
    c.rt.allocate(spec).await.unwrap();
    let child = CellName::new("limited/inner").unwrap();
    c.rt.allocate(CellSpec::new(child.clone())).await.unwrap();
    let exe = ExecutableName::new("hog").unwrap();
    c.rt.start_executable(
        &child,
        ExecutableSpec::new(exe.clone(), Command::argv(["tail", "/dev/zero"])),
    )
    .await
    .unwrap();
    let info =
        c.rt.wait(&child, &exe, Some(Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap();
    let exit = info.exit.unwrap();
    assert_eq!(exit.status, ExitStatus::Signaled(libc::SIGKILL));
    assert!(exit.oom_killed, "{info:?}");
    c.rt.free(&parent).await.unwrap();
    c.finish().await;
}

/// CPU time per wall-clock time of a busy loop that runs for `secs`.
async fn busy_share(c: &common::Cells, limits: Limits, secs: f64) -> f64 {
    let out = c
        .rt
        .run(RunSpec::shell(format!("timeout {secs} sh -c 'while :; do :; done'")).limits(limits))
        .await
        .unwrap();
    assert_eq!(out.code(), 124, "{out:?}");
    out.usage.cpu_time_us as f64 / 1e6 / out.duration.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn root_a_cpu_limit_throttles() {
    let c = common::cells().await;
    let limited = Limits {
        cpu_max: Some(aura_cell::CpuMax::cpus(0.2).unwrap()),
        ..Limits::default()
    };
    let throttled = busy_share(&c, limited, 1.5).await;
    let free = busy_share(&c, Limits::default(), 1.0).await;
    println!("cpu share: {throttled:.3} with cpu max 0.2, {free:.3} without");
    // The quota is a hard cap: 20 ms per 100 ms period, whatever else the host does.
    assert!(throttled <= 0.26, "a 0.2-CPU cell used {throttled:.3} CPUs");
    assert!(
        throttled >= 0.05,
        "the busy loop barely ran ({throttled:.3})"
    );
    assert!(
        free > throttled,
        "without a limit the loop got only {free:.3}"
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_a_cpuset_pins_and_weights_apply() {
    let c = common::cells().await;
    let limits = Limits {
        cpuset_cpus: Some("0".into()),
        cpu_weight: Some(50),
        ..Limits::default()
    };
    let out =
        c.rt.run(RunSpec::argv(["nproc"]).limits(limits))
            .await
            .unwrap();
    assert_eq!(out.stdout_text().trim(), "1");
    // A CPU the host does not have is refused, and nothing is left behind.
    let bad = Limits {
        cpuset_cpus: Some("999".into()),
        ..Limits::default()
    };
    let err =
        c.rt.run(RunSpec::argv(["true"]).limits(bad))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), aura_cell::ErrorKind::InvalidArgument, "{err}");
    assert!(c.rt.leftover_cgroups().is_empty());
    c.finish().await;
}
