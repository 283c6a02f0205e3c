//! Long-lived cells end to end (needs root): allocate, start, logs with history, stop,
//! wait, the tree, free; bad specs refused with nothing allocated; and nothing left
//! behind after a free, after the runtime is killed and restarted, or after a shutdown.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::io::BufRead as _;
use std::time::Duration;

use aura_cell::{
    CellName, CellSpec, Command, ErrorKind, ExecutableName, ExecutableSpec, ExitStatus, Limits,
    Runtime,
};

fn cell(name: &str) -> CellName {
    CellName::new(name).unwrap()
}

fn exe(name: &str) -> ExecutableName {
    ExecutableName::new(name).unwrap()
}

fn shell(name: &str, line: &str) -> ExecutableSpec {
    ExecutableSpec::new(exe(name), Command::shell(line))
}

#[tokio::test(flavor = "multi_thread")]
async fn root_a_cell_from_allocate_to_free() {
    let c = common::cells().await;
    let web = cell("web");
    let mut spec = CellSpec::new(web.clone());
    spec.limits = Limits {
        memory_max: Some(128 << 20),
        pids_max: Some(100),
        ..Limits::default()
    };
    spec.env = aura_cell::Env::parse(["GREETING=hello"]).unwrap();
    let allocated = c.rt.allocate(spec).await.unwrap();
    assert_eq!(
        allocated.cgroup_v2,
        c.rt.cgroup_version() == aura_cell::CgroupVersion::V2
    );

    // Output written before anyone listens is kept: a late subscriber gets the history.
    let started =
        c.rt.start_executable(
            &web,
            shell(
                "greeter",
                "echo $GREETING; echo warning >&2; sleep 0.2; echo bye",
            ),
        )
        .await
        .unwrap();
    assert!(started.pid > 0);
    let info =
        c.rt.wait(&web, &exe("greeter"), Some(Duration::from_secs(10)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(info.exit.unwrap().status, ExitStatus::Exited(0));
    let logs = c.rt.logs(&web, &exe("greeter")).await.unwrap();
    let mut sub = logs.subscribe(true);
    let mut lines = Vec::new();
    while let Some(l) = sub.next().await {
        lines.push((l.channel.as_str(), l.line));
    }
    // Each stream keeps its order; the two pipes may interleave either way.
    let of = |ch: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|(c, _)| *c == ch)
            .map(|(_, l)| l.clone())
            .collect()
    };
    assert_eq!(of("stdout"), ["hello", "bye"]);
    assert_eq!(of("stderr"), ["warning"]);

    // A follower sees new lines as they come, after the history.
    c.rt.start_executable(
        &web,
        shell("ticker", "for i in 1 2 3; do echo tick $i; sleep 0.1; done"),
    )
    .await
    .unwrap();
    let logs = c.rt.logs(&web, &exe("ticker")).await.unwrap();
    let mut sub = logs.subscribe(true);
    let mut ticks = Vec::new();
    while let Some(l) = sub.next().await {
        ticks.push(l.line);
    }
    assert_eq!(ticks, ["tick 1", "tick 2", "tick 3"]);

    // Stop: SIGTERM first (a handler runs), SIGKILL when it is ignored.
    c.rt.start_executable(
        &web,
        shell(
            "polite",
            "trap 'echo leaving; exit 0' TERM; while :; do sleep 0.05; done",
        ),
    )
    .await
    .unwrap();
    c.rt.start_executable(
        &web,
        shell("stubborn", "trap '' TERM; while :; do sleep 0.05; done"),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let polite =
        c.rt.stop(&web, &exe("polite"), Some(Duration::from_secs(5)))
            .await
            .unwrap();
    assert_eq!(polite.exit.unwrap().status, ExitStatus::Exited(0));
    let t = std::time::Instant::now();
    let stubborn =
        c.rt.stop(&web, &exe("stubborn"), Some(Duration::from_millis(300)))
            .await
            .unwrap();
    assert_eq!(
        stubborn.exit.unwrap().status,
        ExitStatus::Signaled(libc::SIGKILL)
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    let history = c.rt.logs(&web, &exe("polite")).await.unwrap().history(0);
    assert!(history.iter().any(|l| l.line == "leaving"), "{history:?}");

    // Wait with a timeout that passes first.
    c.rt.start_executable(&web, shell("long", "sleep 30"))
        .await
        .unwrap();
    assert!(
        c.rt.wait(&web, &exe("long"), Some(Duration::from_millis(100)))
            .await
            .unwrap()
            .is_none()
    );

    // The tree, with usage and executables.
    let child = cell("web/worker");
    c.rt.allocate(CellSpec::new(child.clone())).await.unwrap();
    c.rt.allocate(CellSpec::new(cell("db"))).await.unwrap();
    let tree = c.rt.list().await;
    let names: Vec<&str> = tree.iter().map(|t| t.cell.spec.name.as_str()).collect();
    assert_eq!(names, ["db", "web"]);
    let web_node = &tree[1];
    assert_eq!(web_node.children.len(), 1);
    assert_eq!(web_node.children[0].cell.spec.name, child);
    assert_eq!(web_node.cell.executables.len(), 5);
    let info = c.rt.inspect(&web).await.unwrap();
    assert!(info.usage.cpu_time_us > 0 || c.rt.cgroup_version() == aura_cell::CgroupVersion::V1);
    assert!(info.usage.memory_peak_bytes.unwrap() > 0);

    // Free the parent: its child and the still-running executable go with it.
    let t = std::time::Instant::now();
    c.rt.free(&web).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    let names: Vec<String> =
        c.rt.list()
            .await
            .iter()
            .map(|t| t.cell.spec.name.to_string())
            .collect();
    assert_eq!(names, ["db"]);
    assert_eq!(
        c.rt.inspect(&child).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        c.rt.logs(&web, &exe("greeter")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    c.rt.free(&cell("db")).await.unwrap();
    assert!(
        c.rt.leftover_cgroups().is_empty(),
        "{:?}",
        c.rt.leftover_cgroups()
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_bad_specs_are_refused_and_allocate_nothing() {
    let c = common::cells().await;
    let ws = c.workspace("ws");
    // Names and limits fail before anything else.
    assert_eq!(
        CellName::new("bad name").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        ExecutableName::new("").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let check = |spec: CellSpec, kind: ErrorKind| {
        let rt = c.rt.clone();
        async move {
            let name = spec.name.clone();
            let err = rt.allocate(spec).await.unwrap_err();
            assert_eq!(err.kind(), kind, "{name}: {err}");
            assert!(rt.list().await.is_empty());
            assert!(
                rt.leftover_cgroups().is_empty(),
                "{:?}",
                rt.leftover_cgroups()
            );
        }
    };
    let with = |f: &dyn Fn(&mut CellSpec)| {
        let mut s = CellSpec::new(cell("x"));
        f(&mut s);
        s
    };
    check(
        with(&|s| s.limits.cpu_weight = Some(0)),
        ErrorKind::InvalidArgument,
    )
    .await;
    check(
        with(&|s| s.limits.memory_max = Some(10)),
        ErrorKind::InvalidArgument,
    )
    .await;
    check(
        with(&|s| s.limits.pids_max = Some(0)),
        ErrorKind::InvalidArgument,
    )
    .await;
    check(
        with(&|s| s.limits.cpuset_cpus = Some("4096".into())),
        ErrorKind::InvalidArgument,
    )
    .await;
    check(
        with(&|s| s.workspace = Some("relative".into())),
        ErrorKind::InvalidArgument,
    )
    .await;
    check(
        with(&|s| s.workspace = Some(ws.join("missing"))),
        ErrorKind::InvalidArgument,
    )
    .await;
    check(CellSpec::new(cell("nobody/child")), ErrorKind::NotFound).await;

    // Duplicates.
    c.rt.allocate(CellSpec::new(cell("one"))).await.unwrap();
    let err = c.rt.allocate(CellSpec::new(cell("one"))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    c.rt.start_executable(&cell("one"), shell("job", "sleep 30"))
        .await
        .unwrap();
    let err =
        c.rt.start_executable(&cell("one"), shell("job", "true"))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    // Unknown cells and executables.
    let err =
        c.rt.start_executable(&cell("two"), shell("job", "true"))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err =
        c.rt.stop(&cell("one"), &exe("nope"), None)
            .await
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = c.rt.free(&cell("two")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // A command that cannot be executed, a bad user: refused, nothing started.
    let err =
        c.rt.start_executable(
            &cell("one"),
            ExecutableSpec::new(exe("ghost"), Command::argv(["/nonexistent"])),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let mut spec = shell("big-uid", "true");
    spec.uid = Some(70_000);
    assert_eq!(
        c.rt.start_executable(&cell("one"), spec)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    let info = c.rt.inspect(&cell("one")).await.unwrap();
    assert_eq!(info.executables.len(), 1, "{:?}", info.executables);
    // Once exited, a name may be used again.
    c.rt.stop(&cell("one"), &exe("job"), Some(Duration::from_millis(100)))
        .await
        .unwrap();
    c.rt.start_executable(&cell("one"), shell("job", "true"))
        .await
        .unwrap();
    c.rt.free(&cell("one")).await.unwrap();
    c.finish().await;
}

/// Invoked as a child process by the test below: starts a runtime, allocates cells with
/// running executables and a one-shot run, reports "ready", and waits to be killed.
async fn act_as_node(state: &str) {
    let mut opts = common::options(std::path::Path::new(state));
    opts.instance = Some("restart-test".into());
    let rt = Runtime::start(opts).await.unwrap();
    for name in ["alpha", "beta"] {
        rt.allocate(CellSpec::new(cell(name))).await.unwrap();
        rt.start_executable(&cell(name), shell("sleeper", "sleep 300"))
            .await
            .unwrap();
    }
    rt.allocate(CellSpec::new(cell("alpha/nested")))
        .await
        .unwrap();
    let running = rt
        .spawn(aura_cell::RunSpec::shell("sleep 300"))
        .await
        .unwrap();
    let mut pids: Vec<i32> = rt
        .list()
        .await
        .iter()
        .flat_map(|t| {
            let mut v = vec![t.cell.init_pid];
            v.extend(t.cell.executables.iter().map(|e| e.pid));
            v
        })
        .collect();
    pids.push(running.pid());
    println!(
        "ready {}",
        pids.iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_a_killed_runtime_leaves_nothing_after_restart() {
    if let Ok(state) = std::env::var("AURA_CELL_TEST_NODE") {
        act_as_node(&state).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounts_before = common::host_mounts();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "root_a_killed_runtime_leaves_nothing_after_restart",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AURA_CELL_TEST_NODE", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let pids = loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the node exited before it was ready"
        );
        // libtest prints "test <name> ... " before the test's own output on the same line.
        if let Some(p) = line.trim().split("ready ").nth(1) {
            break p
                .split(',')
                .map(|p| p.parse::<i32>().unwrap())
                .collect::<Vec<_>>();
        }
    };
    assert_eq!(pids.len(), 5, "two inits, two sleepers, one run");
    // SIGKILL: no clean-up code of the node runs.
    child.kill().unwrap();
    child.wait().unwrap();
    let leftovers: Vec<_> = ["memory", "pids", ""]
        .iter()
        .map(|c| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(c)
                .join("aura/restart-test")
        })
        .filter(|p| p.join("alpha").exists())
        .collect();
    assert!(
        !leftovers.is_empty(),
        "the killed node's cgroups should still be there"
    );

    // The cells' processes die with the runtime (parent-death signal, the init's
    // lifeline), within a moment.
    let gone = |pid: i32| {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    };
    for _ in 0..100 {
        if pids.iter().all(|p| gone(*p)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // A new runtime of the same instance removes everything the dead one left.
    let mut opts = common::options(dir.path());
    opts.instance = Some("restart-test".into());
    let rt = Runtime::start(opts).await.unwrap();
    assert!(
        rt.leftover_cgroups().is_empty(),
        "{:?}",
        rt.leftover_cgroups()
    );
    for p in &pids {
        assert!(
            gone(*p),
            "process {p} of the killed node survived the restart"
        );
    }
    assert!(rt.list().await.is_empty());
    rt.shutdown().await;
    for l in &leftovers {
        assert!(!l.exists(), "{} is still there", l.display());
    }
    assert_eq!(common::host_mounts(), mounts_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn root_a_dropped_runtime_cleans_up_and_a_second_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = common::options(dir.path());
    let rt = Runtime::start(opts.clone()).await.unwrap();
    // The state directory is locked.
    let err = Runtime::start(opts).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    rt.allocate(CellSpec::new(cell("left"))).await.unwrap();
    rt.start_executable(&cell("left"), shell("s", "sleep 300"))
        .await
        .unwrap();
    let instance_dirs: Vec<_> = ["memory", "pids", ""]
        .iter()
        .map(|c| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(c)
                .join("aura")
                .join(rt.instance())
        })
        .filter(|p| p.exists())
        .collect();
    assert!(!instance_dirs.is_empty());
    let pid = rt.inspect(&cell("left")).await.unwrap().init_pid;
    drop(rt);
    for d in &instance_dirs {
        assert!(!d.exists(), "{} survived the drop", d.display());
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/exe")).exists()
            || std::fs::read_link(format!("/proc/{pid}/exe")).is_err()
    );
}
