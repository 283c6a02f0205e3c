//! The fast paths of cell creation and their fallbacks (needs root, like every cell
//! test): a cell cloned from a root template is as locked down as one whose root is
//! built from scratch and sees the same root; executables cloned by the join thread land
//! where those started through an intermediate process do; spare cgroups are made ahead,
//! used once and never outlive the runtime.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::PathBuf;

use std::time::Duration;

use aura_cell::{CellName, CellSpec, Command, ExecutableName, ExecutableSpec, RunSpec, Runtime};

/// A workspace holding a copy of the probe, so that the probe runs in a cell without
/// binds (a bind takes the cell off the template).
fn probe_workspace(c: &common::Cells) -> PathBuf {
    let ws = c.workspace("probe-ws");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_aura-cell-probe"));
    let copy = ws.join("probe");
    std::fs::copy(&exe, &copy).unwrap();
    let base = c.rt.options().id_base;
    std::os::unix::fs::chown(&copy, Some(base), Some(base)).unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn root_a_cell_on_a_template_is_locked_down() {
    let c = common::cells().await;
    let ws = probe_workspace(&c);
    let out =
        c.rt.run(RunSpec::argv(["/workspace/probe"]).workspace(&ws))
            .await
            .unwrap();
    assert!(
        out.success(),
        "probe failed: {:?} {}",
        out.status,
        out.stderr_text()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    common::assert_locked_down(&report);
    assert_eq!(c.rt.root_templates(), 1, "the cell did not use a template");
    c.finish().await;
}

/// What a cell sees of its root: every entry's type, mode and owner, the generated
/// files, and every mount point with its options (sorted, so that mount order does not
/// count).
const VIEW: &str = r#"
for f in / /* /etc /etc/* /dev/* /tmp; do stat -c '%n %F %a %u %g' "$f"; done
cat /etc/passwd /etc/group /etc/hosts /etc/hostname /etc/nsswitch.conf | md5sum
id; hostname; pwd
awk '{print "MOUNT", $5, $6}' /proc/self/mountinfo | sort
(echo x > /etc/x) 2>/dev/null && echo "WROTE /etc/x"
(echo x > /x) 2>/dev/null && echo "WROTE /x"
true
"#;

async fn view(rt: &Runtime, ws: Option<&std::path::Path>) -> String {
    let mut spec = RunSpec::shell(VIEW);
    if let Some(ws) = ws {
        spec = spec.workspace(ws);
    }
    let out = rt.run(spec).await.unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    out.stdout_text()
}

/// The one difference a template makes: /etc is a mount of its own (read-only).
fn without_etc_mount(text: &str) -> (String, Option<String>) {
    let mut etc = None;
    let mut rest = String::new();
    for l in text.lines() {
        if l.starts_with("MOUNT /etc ") {
            etc = Some(l.to_owned());
        } else {
            rest.push_str(l);
            rest.push('\n');
        }
    }
    (rest, etc)
}

#[tokio::test(flavor = "multi_thread")]
async fn root_a_template_gives_the_same_root_as_one_built_from_scratch() {
    let fast = common::cells().await;
    let slow = common::cells_with(|mut o| {
        o.root_template = false;
        o
    })
    .await;
    let ws_fast = fast.workspace("ws");
    let ws_slow = slow.workspace("ws");
    for with_ws in [false, true] {
        let a = view(&fast.rt, with_ws.then_some(ws_fast.as_path())).await;
        let b = view(&slow.rt, with_ws.then_some(ws_slow.as_path())).await;
        assert!(!a.contains("WROTE") && !b.contains("WROTE"), "{a}\n{b}");
        let (a_rest, a_etc) = without_etc_mount(&a);
        let (b_rest, b_etc) = without_etc_mount(&b);
        assert_eq!(a_rest, b_rest, "workspace: {with_ws}");
        assert!(b_etc.is_none(), "{b}");
        let etc = a_etc.unwrap_or_else(|| panic!("no /etc mount on a template:\n{a}"));
        let opts = etc.split(' ').nth(2).unwrap();
        for o in ["ro", "nosuid", "nodev"] {
            assert!(opts.split(',').any(|x| x == o), "{etc}");
        }
        assert_eq!(a_rest.contains("MOUNT /workspace "), with_ws, "{a}");
    }
    assert_eq!(fast.rt.root_templates(), 2, "one template per variant");
    assert_eq!(slow.rt.root_templates(), 0);
    fast.finish().await;
    slow.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_cells_with_binds_are_built_from_scratch() {
    let c = common::cells().await;
    let (bind, _) = common::probe_bind();
    let out =
        c.rt.run(
            RunSpec::shell(
                "grep -c ' /etc ' /proc/self/mountinfo; ls /probe >/dev/null && echo bound",
            )
            .bind(bind),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "0\nbound\n", "{}", out.stderr_text());
    assert_eq!(c.rt.root_templates(), 0);
    c.finish().await;
}

/// Cells on a template share its read-only root but nothing they own: one cell's /tmp
/// and /etc are not another's, in one-shot runs and long-lived cells alike.
#[tokio::test(flavor = "multi_thread")]
async fn root_cells_on_one_template_share_nothing_they_own() {
    let c = common::cells().await;
    let name = CellName::new("keeper").unwrap();
    c.rt.allocate(CellSpec::new(name.clone())).await.unwrap();
    let exe = ExecutableName::new("w").unwrap();
    c.rt.start_executable(
        &name,
        ExecutableSpec::new(
            exe.clone(),
            Command::shell("echo mine > /tmp/mark; cat /etc/hostname"),
        ),
    )
    .await
    .unwrap();
    let info =
        c.rt.wait(&name, &exe, Some(Duration::from_secs(10)))
            .await
            .unwrap()
            .unwrap();
    assert!(info.exit.unwrap().status.success(), "{info:?}");
    let out = c
        .sh("test -e /tmp/mark && echo SHARED; cat /etc/hostname")
        .await;
    assert_eq!(out.stdout_text(), "cell\n", "{}", out.stderr_text());
    assert_eq!(c.rt.root_templates(), 1);
    c.rt.free(&name).await.unwrap();
    c.finish().await;
}

/// Runs a shell line as an executable of `cell` and returns its stdout.
async fn exec_output(rt: &Runtime, cell: &CellName, name: &str, line: &str) -> String {
    let exe = ExecutableName::new(name).unwrap();
    rt.start_executable(cell, ExecutableSpec::new(exe.clone(), Command::shell(line)))
        .await
        .unwrap();
    let info = rt
        .wait(cell, &exe, Some(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    assert!(info.exit.unwrap().status.success(), "{info:?}");
    let logs = rt.logs(cell, &exe).await.unwrap();
    let mut sub = logs.subscribe(true);
    let mut out = String::new();
    while let Some(l) = sub.next().await {
        out.push_str(&l.line);
        out.push('\n');
    }
    out
}

/// Where an executable finds itself: the cell's hostname, user, privileges, cgroup,
/// mounts and descriptors, and its namespaces (which must be its cell's process 1's).
const WHERE: &str = r#"
hostname; id
grep -E '^(NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status | tr -d '\t ' 
cat /proc/self/cgroup
awk '{print "MOUNT", $5, $6}' /proc/self/mountinfo | sort
ls /proc/self/fd | tr '\n' ' '; echo
for ns in cgroup ipc mnt net pid uts; do echo "NS $(readlink /proc/self/ns/$ns)"; done
test -e /proc/$PPID_HOST && echo "HOST PID VISIBLE"
true
"#;

#[tokio::test(flavor = "multi_thread")]
async fn root_executables_land_in_their_cell_with_or_without_the_join_thread() {
    let mut views = Vec::new();
    for join_thread in [true, false] {
        let c = common::cells_with(|mut o| {
            o.join_thread = join_thread;
            o
        })
        .await;
        let name = CellName::new("joiner").unwrap();
        c.rt.allocate(CellSpec::new(name.clone())).await.unwrap();
        let script = WHERE.replace("$PPID_HOST", &std::process::id().to_string());
        let text = exec_output(&c.rt, &name, "e1", &script).await;
        assert!(text.starts_with("joiner\n"), "{text}");
        for l in [
            "NoNewPrivs:1\n",
            "Seccomp:2\n",
            "CapEff:0000000000000000\n",
            "CapBnd:0000000000000000\n",
        ] {
            assert!(text.contains(l), "{l}: {text}");
        }
        // The same namespaces as the cell's process 1 (seen from the host, which may look).
        let init = c.rt.inspect(&name).await.unwrap().init_pid;
        for ns in ["cgroup", "ipc", "mnt", "net", "pid", "uts"] {
            let theirs = std::fs::read_link(format!("/proc/{init}/ns/{ns}")).unwrap();
            let line = format!("NS {}\n", theirs.display());
            assert!(text.contains(&line), "{ns}: {line} {text}");
        }
        assert!(!text.contains("HOST PID VISIBLE"), "{text}");
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("NS "))
            .map(|l| format!("{l}\n"))
            .collect();
        // A second one, to see the thread came back from the first cell in between.
        let again = exec_output(&c.rt, &name, "e2", "hostname").await;
        assert_eq!(again, "joiner\n");
        c.rt.free(&name).await.unwrap();
        views.push(text);
        c.finish().await;
    }
    assert_eq!(views[0], views[1], "the two ways in differ");
}

/// The join thread returns to the host's namespaces after each executable: executables
/// of two cells, one of them with the host's network, each see their own.
#[tokio::test(flavor = "multi_thread")]
async fn root_the_join_thread_keeps_cells_apart() {
    let c = common::cells().await;
    let isolated = CellName::new("isolated").unwrap();
    let networked = CellName::new("networked").unwrap();
    c.rt.allocate(CellSpec::new(isolated.clone()))
        .await
        .unwrap();
    let mut spec = CellSpec::new(networked.clone());
    spec.network = true;
    c.rt.allocate(spec).await.unwrap();
    let count = "hostname; tail -n +3 /proc/net/dev | wc -l";
    let host_ifaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    for _ in 0..2 {
        let a = exec_output(&c.rt, &isolated, "a", count).await;
        assert_eq!(a, "isolated\n1\n");
        let b = exec_output(&c.rt, &networked, "b", count).await;
        assert_eq!(b, format!("networked\n{host_ifaces}\n"));
    }
    c.rt.free(&isolated).await.unwrap();
    c.rt.free(&networked).await.unwrap();
    c.finish().await;
}

/// The runtime's instance directories in the host's cgroup hierarchies.
fn instance_dirs(rt: &Runtime) -> Vec<PathBuf> {
    ["memory", "pids", ""]
        .iter()
        .map(|c| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(c)
                .join("aura")
                .join(rt.instance())
        })
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

fn spares_on_disk(rt: &Runtime) -> usize {
    let dirs = instance_dirs(rt);
    let Some(d) = dirs.first() else { return 0 };
    std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("_spare-"))
        .count()
}

async fn wait_for_spares(rt: &Runtime, n: usize) {
    for _ in 0..500 {
        if rt.spare_cgroups() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} spare cgroups, not {n}", rt.spare_cgroups());
}

#[tokio::test(flavor = "multi_thread")]
async fn root_spare_cgroups_are_made_ahead_used_once_and_removed() {
    let c = common::cells().await;
    assert_eq!(c.rt.spare_cgroups(), 0, "spares are made on demand");
    assert!(c.sh("true").await.success());
    wait_for_spares(&c.rt, 2).await;
    assert_eq!(spares_on_disk(&c.rt), 2);
    assert!(
        c.rt.leftover_cgroups().is_empty(),
        "{:?}",
        c.rt.leftover_cgroups()
    );
    // A run on a spare gets its limits, and its usage is its own: a memory hog under a
    // 32 MiB limit is OOM-killed, and the next run on the next spare counts no OOM kill.
    let hog =
        c.rt.run(
            // tail keeps the whole "line" of /dev/zero in memory: it grows until the limit.
            RunSpec::argv(["tail", "/dev/zero"]).memory_max(32 << 20),
        )
        .await
        .unwrap();
    assert!(hog.oom_killed, "{hog:?}");
    let calm = c.sh("true").await;
    assert!(calm.success() && !calm.oom_killed, "{calm:?}");
    assert_eq!(calm.usage.oom_kills, 0);
    wait_for_spares(&c.rt, 2).await;
    // Each spare was used once and removed with its run.
    assert_eq!(spares_on_disk(&c.rt), 2);
    assert!(c.rt.leftover_cgroups().is_empty());
    let dirs = instance_dirs(&c.rt);
    c.finish().await;
    for d in dirs {
        assert!(!d.exists(), "{} outlived the runtime", d.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn root_without_spare_cgroups_each_run_makes_its_own() {
    let c = common::cells_with(|mut o| {
        o.spare_cgroups = 0;
        o
    })
    .await;
    for _ in 0..2 {
        assert!(c.sh("true").await.success());
    }
    assert_eq!(c.rt.spare_cgroups(), 0);
    assert_eq!(spares_on_disk(&c.rt), 0);
    c.finish().await;
}
