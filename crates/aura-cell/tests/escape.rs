//! The escape regression suite (needs root): one test per class of container escape
//! that has hit real runtimes, each named for the CVE class it guards against.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::time::Duration;

use aura_cell::{
    Bind, CellName, CellSpec, Command, ErrorKind, ExecutableName, ExecutableSpec, RunSpec,
};

fn exe(name: &str) -> ExecutableName {
    ExecutableName::new(name).unwrap()
}

async fn output(c: &common::Cells, cell: &CellName, name: &str, cmd: Command) -> (String, i32) {
    let e = exe(name);
    c.rt.start_executable(cell, ExecutableSpec::new(e.clone(), cmd))
        .await
        .unwrap();
    let info =
        c.rt.wait(cell, &e, Some(Duration::from_secs(20)))
            .await
            .unwrap()
            .unwrap();
    let logs = c.rt.logs(cell, &e).await.unwrap();
    let mut sub = logs.subscribe(true);
    let mut text = String::new();
    while let Some(l) = sub.next().await {
        text.push_str(&l.line);
        text.push('\n');
    }
    (text, info.exit.unwrap().status.code())
}

fn digest(path: &std::path::Path) -> aura_core::Hash {
    aura_core::Hash::sha256(&std::fs::read(path).unwrap())
}

/// CVE-2019-5736 class: a cell makes the runtime execute itself inside the cell (through
/// `/proc/self/exe`), then overwrites the runtime's binary through `/proc/<pid>/exe`.
/// In Aura the only program that ever executes inside a cell is the sealed init memfd,
/// so `/proc/self/exe` leads there, and it cannot be written.
#[tokio::test(flavor = "multi_thread")]
async fn root_cve_2019_5736_the_runtime_cannot_be_overwritten_through_proc_self_exe() {
    let c = common::cells().await;
    let me = std::env::current_exe().unwrap();
    let before = digest(&me);
    let ws = c.workspace("ws");
    let evil = ws.join("evil");
    std::fs::write(&evil, "#!/proc/self/exe\n").unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();

    // A script whose interpreter is /proc/self/exe runs the in-cell init, which refuses
    // an unknown mode with exit code 2 (the runtime would have printed its own usage).
    let out =
        c.rt.run(RunSpec::argv(["/workspace/evil"]).workspace(&ws))
            .await
            .unwrap();
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let out =
        c.rt.run(RunSpec::argv(["/proc/self/exe"]).workspace(&ws))
            .await
            .unwrap();
    assert_eq!(out.code(), 2, "{out:?}");

    // In a long-lived cell, with a process 1 and other executables to aim at.
    let cell = CellName::new("victim").unwrap();
    let mut spec = CellSpec::new(cell.clone());
    spec.workspace = Some(ws.clone());
    c.rt.allocate(spec).await.unwrap();
    c.rt.start_executable(
        &cell,
        ExecutableSpec::new(exe("sleeper"), Command::shell("sleep 30")),
    )
    .await
    .unwrap();
    let (_, code) = output(&c, &cell, "evil", Command::argv(["/workspace/evil"])).await;
    assert_eq!(code, 2);
    let attack = r#"
        readlink /proc/1/exe || echo "pid1-exe-hidden"
        for p in /proc/[0-9]*; do readlink $p/exe; done
        for target in /proc/1/exe /proc/self/exe /proc/[0-9]*/exe; do
            if (printf 'pwned' > "$target") 2>/dev/null; then echo "WROTE $target"; fi
            if (printf 'pwned' >> "$target") 2>/dev/null; then echo "APPENDED $target"; fi
        done
    "#;
    let (text, _) = output(&c, &cell, "attack", Command::shell(attack)).await;
    assert!(
        !text.contains("WROTE") && !text.contains("APPENDED"),
        "{text}"
    );
    // Process 1 (the init) is not dumpable: its executable is not even visible.
    assert!(text.contains("pid1-exe-hidden"), "{text}");
    let me_str = me.display().to_string();
    assert!(
        !text.contains(&me_str),
        "the runtime's binary is visible in the cell:\n{text}"
    );

    // From the host: no process of the cell runs the runtime's binary.
    let info = c.rt.inspect(&cell).await.unwrap();
    for pid in std::iter::once(info.init_pid).chain(info.executables.iter().map(|e| e.pid)) {
        if let Ok(target) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            assert_ne!(target, me, "pid {pid} runs the runtime's binary");
            if pid == info.init_pid {
                assert!(
                    target.display().to_string().contains("aura-cell-init"),
                    "{target:?}"
                );
            }
        }
    }
    assert_eq!(digest(&me), before, "the runtime's binary changed");
    c.rt.free(&cell).await.unwrap();
    c.finish().await;
}

/// CVE-2024-21626 class: a descriptor of the runtime (there, to the host's cgroup file
/// system) leaks into the cell, and a working directory under `/proc/self/fd/N` walks out
/// through it. Aura closes every descriptor but the three standard ones before executing,
/// and changes directory inside the cell after that.
#[tokio::test(flavor = "multi_thread")]
async fn root_cve_2024_21626_no_descriptor_leaks_and_no_cwd_through_proc_self_fd() {
    let c = common::cells().await;
    // One-shot runs and executables in long-lived cells (where the runtime holds
    // namespace and cgroup descriptors): nothing but 0, 1, 2.
    let report = common::probe(&c.rt, |s| s).await;
    common::assert_locked_down(&report);
    let (bind, path) = common::probe_bind();
    let cell = CellName::new("fds").unwrap();
    let mut spec = CellSpec::new(cell.clone());
    spec.binds.push(bind);
    c.rt.allocate(spec).await.unwrap();
    let (text, code) = output(&c, &cell, "probe", Command::argv([path])).await;
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    common::assert_locked_down(&report);

    for fd in 0..12 {
        let cwd = format!("/proc/self/fd/{fd}");
        // A one-shot run whose working directory is a descriptor: refused or harmless.
        match c
            .rt
            .run(RunSpec::shell("pwd; ls / | head -3").cwd(&cwd))
            .await
        {
            Err(e) => assert!(e.to_string().contains("working directory"), "{e}"),
            Ok(out) => {
                let text = out.stdout_text();
                assert!(
                    !text.contains("/sys/fs/cgroup") && !text.contains("cells"),
                    "{cwd}: {text}"
                );
            }
        }
        let mut spec = ExecutableSpec::new(exe(&format!("cwd{fd}")), Command::shell("pwd"));
        spec.cwd = Some(cwd.clone());
        if let Ok(_started) = c.rt.start_executable(&cell, spec).await {
            let info =
                c.rt.wait(
                    &cell,
                    &exe(&format!("cwd{fd}")),
                    Some(Duration::from_secs(10)),
                )
                .await
                .unwrap();
            let logs = c.rt.logs(&cell, &exe(&format!("cwd{fd}"))).await.unwrap();
            let lines = logs.history(0);
            panic!("started with cwd {cwd}: {info:?} {lines:?}");
        }
    }
    c.rt.free(&cell).await.unwrap();
    c.finish().await;
}

/// CVE-2021-30465 class: a symlink swapped into a bind mount's path during set-up sends
/// the mount outside the container. Aura refuses bind targets in places the cell can
/// write, resolves targets beneath the new root without following symlinks, and opens
/// sources without following symlinks, so a swap makes set-up fail rather than mount
/// something else.
#[tokio::test(flavor = "multi_thread")]
async fn root_cve_2021_30465_a_symlink_race_cannot_redirect_a_bind_mount() {
    let c = common::cells().await;
    let ws = c.workspace("ws");
    // Targets the cell could have prepared are refused before anything is allocated.
    for target in [
        "/workspace/data",
        "/tmp/data",
        "/proc/x",
        "/dev/x",
        "/etc/x",
        "/bin/x",
    ] {
        let mut spec = CellSpec::new(CellName::new("bad").unwrap());
        spec.workspace = Some(ws.clone());
        spec.binds.push(Bind {
            source: ws.clone(),
            target: Some(target.into()),
            writable: false,
        });
        let err = c.rt.allocate(spec).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{target}: {err}");
    }
    assert!(c.rt.list().await.is_empty());
    assert!(c.rt.leftover_cgroups().is_empty());

    // A cell fills its workspace with symlinks named like the places Aura mounts on; a
    // later cell with the same workspace is unaffected.
    let out = c
        .rt
        .run(RunSpec::shell("for d in proc tmp dev etc usr workspace root; do ln -s / /workspace/$d; done; ln -s /etc /workspace/..x").workspace(&ws))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr_text());

    // Meanwhile the host flips a bind source's parent between a directory and a symlink
    // to the host's /etc. Every cell either refuses to start (the swap was seen) or
    // mounts the real directory; none ever sees /etc.
    let base = c.dir.path().join("race");
    let real = base.join("real");
    std::fs::create_dir_all(real.join("data")).unwrap();
    std::fs::write(real.join("data/marker"), "real").unwrap();
    let link = base.join("flip");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flipper = {
        let (stop, flipped, link, real, base) = (
            stop.clone(),
            flipped.clone(),
            link.clone(),
            real.clone(),
            base.clone(),
        );
        std::thread::spawn(move || {
            let evil = base.join("evil");
            std::os::unix::fs::symlink("/etc", &evil).unwrap();
            let tmp = base.join("tmp");
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Atomically repoint `flip` at /etc, then back at the real directory.
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink("/etc", &tmp).unwrap();
                std::fs::rename(&tmp, &link).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(500));
                std::os::unix::fs::symlink(&real, &tmp).unwrap();
                std::fs::rename(&tmp, &link).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
                flips += 1;
                flipped.store(flips, std::sync::atomic::Ordering::Relaxed);
            }
            flips
        })
    };
    let (mut mounted, mut refused, mut redirected_by_user) = (0, 0, 0);
    // At least 40 runs across at least 20 flips, and until some runs mounted the real
    // directory: on a loaded machine the flipper may be descheduled for a while with the
    // link on /etc, when every run is (rightly) refused.
    let started = std::time::Instant::now();
    for run in 0.. {
        let enough =
            run >= 40 && mounted >= 3 && flipped.load(std::sync::atomic::Ordering::Relaxed) >= 20;
        if enough || started.elapsed() > std::time::Duration::from_secs(60) {
            break;
        }
        let spec =
            RunSpec::shell("cat /data/marker 2>/dev/null || (test -e /data/passwd && echo ETC)")
                .workspace(&ws)
                .bind(Bind {
                    source: link.join("data"),
                    target: Some("/data".into()),
                    writable: false,
                });
        match c.rt.run(spec).await {
            Ok(out) => {
                let text = out.stdout_text();
                if text.contains("real") {
                    mounted += 1;
                } else {
                    // The host path named by the caller resolved to /etc/data, which
                    // does not exist: the caller's own path, not a redirect by the cell.
                    assert!(
                        !text.contains("ETC"),
                        "a bind was redirected to the host's /etc"
                    );
                    redirected_by_user += 1;
                }
                // /tmp is still the cell's private tmpfs despite the workspace's symlinks.
            }
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::InvalidArgument | ErrorKind::Internal),
                    "{e}"
                );
                refused += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    println!(
        "{flips} flips: {mounted} mounted the real directory, {refused} refused, {redirected_by_user} resolved elsewhere"
    );
    assert!(mounted > 0, "the race made every run fail");
    // The cell's /tmp and /proc are its own, not the workspace's symlinks.
    let out =
        c.rt.run(RunSpec::shell("echo x > /tmp/mine && stat -c %F /tmp /proc").workspace(&ws))
            .await
            .unwrap();
    assert_eq!(
        out.stdout_text(),
        "directory\ndirectory\n",
        "{}",
        out.stderr_text()
    );
    assert!(!std::path::Path::new("/mine").exists());
    c.finish().await;
}

/// CVE-2025-31133 class: the container swaps the `/dev/null` the runtime uses to mask
/// /proc paths for a symlink to something writable (core_pattern). Aura masks with a
/// null device it creates itself before any process of the cell exists, checks it is
/// the null device (1:3) before using it, and the cell's /dev is read-only.
#[tokio::test(flavor = "multi_thread")]
async fn root_cve_2025_31133_dev_null_cannot_be_swapped_to_unmask_proc() {
    let c = common::cells().await;
    let cell = CellName::new("nullswap").unwrap();
    c.rt.allocate(CellSpec::new(cell.clone())).await.unwrap();
    let attack = r#"
        rm -f /dev/null 2>/dev/null && echo REMOVED
        ln -sf /proc/sys/kernel/core_pattern /dev/null 2>/dev/null && echo LINKED
        mv /dev/zero /dev/null 2>/dev/null && echo MOVED
        stat -c '%F %t:%T' /dev/null
    "#;
    let (text, _) = output(&c, &cell, "swap", Command::shell(attack)).await;
    assert!(
        !text.contains("REMOVED") && !text.contains("LINKED") && !text.contains("MOVED"),
        "{text}"
    );
    assert!(text.contains("character special file 1:3"), "{text}");
    // Executables started afterwards still see every mask in place.
    let check = "stat -c '%t:%T' /proc/keys /proc/timer_list 2>/dev/null; (echo '|/tmp/x' > /proc/sys/kernel/core_pattern) 2>/dev/null && echo UNMASKED";
    let (text, _) = output(&c, &cell, "after", Command::shell(check)).await;
    assert!(!text.contains("UNMASKED"), "{text}");
    for line in text.lines() {
        assert_eq!(line, "1:3", "{text}");
    }
    assert!(
        !std::fs::read_to_string("/proc/sys/kernel/core_pattern")
            .unwrap()
            .contains("/tmp/x")
    );
    c.rt.free(&cell).await.unwrap();
    c.finish().await;
}

/// Mount, unshare, ptrace, bpf and keyctl (and the rest of the seccomp list) are refused,
/// in one-shot runs and in long-lived cells, and the usual tools fail too.
#[tokio::test(flavor = "multi_thread")]
async fn root_mount_unshare_ptrace_bpf_and_keyctl_are_blocked() {
    let c = common::cells().await;
    let report = common::probe(&c.rt, |s| s).await;
    common::assert_locked_down(&report);
    let out = c
        .sh("unshare -U true 2>/dev/null && echo UNSHARED; unshare -rm true 2>/dev/null && echo UNSHARED2; mount -t tmpfs x /tmp 2>/dev/null && echo MOUNTED; umount /proc 2>/dev/null && echo UNMOUNTED; echo done")
        .await;
    assert_eq!(out.stdout_text(), "done\n", "{}", out.stdout_text());
    c.finish().await;
}

/// Runs `file -u` as an unprivileged host user (nobody, uid 65534) through setpriv, as
/// any local user could, and returns what it prints: `id -u` prints the effective uid.
fn effective_uid_as_nobody(file: &std::path::Path) -> String {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(file)
        .arg("-u")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes `p` and every directory above it reachable by anyone, so that the test can try
/// what a local user could do if a workspace were within reach (a node's are 0700).
fn reachable(p: &std::path::Path) {
    let mut dir = Some(p);
    while let Some(d) = dir {
        if d == std::path::Path::new("/") || d == std::env::temp_dir() {
            break;
        }
        let mode = std::fs::metadata(d).unwrap().permissions().mode();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
        dir = d.parent();
    }
}

/// Root in a cell was root on the workspace's files: the workspace was an id-mapped bind
/// that kept host owners, so a cell's root wrote as the host's root, and a mission's
/// `cp /usr/bin/id /workspace/suid && chmod 4755 /workspace/suid` left a setuid-root
/// program on the host for any local user who could reach it. Now a workspace of the
/// host's root is refused, a cell's root writes as an unprivileged host uid, and setuid
/// bits are swept when the run ends: run by an unprivileged user, the planted program
/// never has euid 0.
#[tokio::test(flavor = "multi_thread")]
async fn root_a_setuid_binary_planted_through_a_cell_gives_no_privileges_on_the_host() {
    let c = common::cells().await;
    let plant =
        "cp /usr/bin/id /workspace/suid && chmod 4755 /workspace/suid && touch /workspace/made";

    // The control: a setuid-root copy made on the host does give euid 0 to nobody here,
    // so this test can see the escape when there is one.
    let control_dir = c.dir.path().join("control");
    std::fs::create_dir(&control_dir).unwrap();
    let control = control_dir.join("suid");
    std::fs::copy("/usr/bin/id", &control).unwrap();
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o4755)).unwrap();
    reachable(&control_dir);
    assert_eq!(effective_uid_as_nobody(&control), "0", "setuid works here");

    // A workspace of the host's root, as the node used to make them: refused, or at
    // least nothing in it may end up the host root's.
    let rooted = c.dir.path().join("rooted");
    std::fs::create_dir(&rooted).unwrap();
    reachable(&rooted);
    match c.rt.run(RunSpec::shell(plant).workspace(&rooted)).await {
        Err(e) => assert!(e.to_string().contains("belongs to root"), "{e}"),
        Ok(out) => {
            let suid = rooted.join("suid");
            if suid.exists() {
                assert_ne!(
                    effective_uid_as_nobody(&suid),
                    "0",
                    "a cell planted a setuid-root program: {out:?}"
                );
            }
        }
    }

    // A workspace of the cells' own ids, as a node makes them now (but reachable).
    let base = c.rt.options().id_base;
    let ws = c.workspace("ws");
    reachable(&ws);
    let out =
        c.rt.run(RunSpec::shell(plant).workspace(&ws))
            .await
            .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    for f in ["suid", "made"] {
        let m = std::fs::metadata(ws.join(f)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (base, base),
            "{f} is not the cells' root's"
        );
    }
    let m = std::fs::metadata(ws.join("suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755, "the setuid bit was not swept");
    assert_ne!(effective_uid_as_nobody(&ws.join("suid")), "0");

    // In a long-lived cell the bit lives until the executable ends; even then the file
    // belongs to an unprivileged uid, so it raises nobody above that uid.
    std::fs::remove_file(ws.join("suid")).unwrap();
    let cell = CellName::new("planter").unwrap();
    let mut spec = CellSpec::new(cell.clone());
    spec.workspace = Some(ws.clone());
    c.rt.allocate(spec).await.unwrap();
    c.rt.start_executable(
        &cell,
        ExecutableSpec::new(
            exe("plant"),
            Command::shell(format!(
                "{plant} && touch /workspace/planted && exec sleep 30"
            )),
        ),
    )
    .await
    .unwrap();
    let planted = ws.join("planted");
    for _ in 0..200 {
        if planted.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let m = std::fs::metadata(ws.join("suid")).unwrap();
    assert_eq!(m.uid(), base);
    assert_eq!(effective_uid_as_nobody(&ws.join("suid")), base.to_string());
    c.rt.free(&cell).await.unwrap();
    let m = std::fs::metadata(ws.join("suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755, "freeing the cell swept nothing");
    c.finish().await;
}

/// A namespace-scoped operator allocated a cell whose workspace was the node's home and
/// read `keys/node.key` from it. Whatever a surface lets through, the runtime never
/// mounts the node's home (its keys, database and configuration): not as a workspace,
/// not as a bind, not from above, not through a symbolic link; only its workspaces
/// root, inside it, may be mounted.
#[tokio::test(flavor = "multi_thread")]
async fn root_the_nodes_home_is_never_mountable_into_a_cell() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("keys")).unwrap();
    std::fs::write(home.join("keys/node.key"), "secret").unwrap();
    std::fs::create_dir_all(home.join("workspaces/team-a/ws")).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(home.join("keys"), outside.join("keys-link")).unwrap();
    let mut opts = common::options(dir.path());
    opts.protected = vec![home.clone()];
    opts.workspaces_root = Some(home.join("workspaces"));
    let rt = aura_cell::Runtime::start(opts).await.unwrap();
    let base = rt.options().id_base;
    let ws = home.join("workspaces/team-a/ws");
    std::os::unix::fs::chown(&ws, Some(base), Some(base)).unwrap();
    let bind = |source: std::path::PathBuf| Bind {
        source,
        target: Some("/data".into()),
        writable: false,
    };

    for (what, spec) in [
        (
            "the home as workspace",
            RunSpec::shell("cat /workspace/keys/node.key").workspace(&home),
        ),
        (
            "the keys as workspace",
            RunSpec::shell("cat /workspace/node.key").workspace(home.join("keys")),
        ),
        (
            "the keys as a bind",
            RunSpec::shell("cat /data/node.key").bind(bind(home.join("keys"))),
        ),
        (
            "the root above the home",
            RunSpec::shell("true").bind(bind("/".into())),
        ),
        (
            "a link into the keys",
            RunSpec::shell("cat /data/node.key").bind(bind(outside.join("keys-link"))),
        ),
        (
            "the workspaces root, beside the keys",
            RunSpec::shell("true").bind(bind(home.join("workspaces"))),
        ),
    ] {
        let err = rt.run(spec).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{what}: {err}");
    }
    let mut spec = CellSpec::new(CellName::new("thief").unwrap());
    spec.workspace = Some(home.clone());
    let err = rt.allocate(spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(rt.list().await.is_empty());

    // A workspace inside the workspaces root is fine.
    let out = rt
        .run(RunSpec::shell("touch ok").workspace(&ws))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    rt.shutdown().await;

    // A workspaces root that holds the home is refused when the runtime starts.
    let mut opts = common::options(dir.path());
    opts.state_dir = dir.path().join("cells2");
    opts.protected = vec![home.clone()];
    opts.workspaces_root = Some(dir.path().to_owned());
    let err = aura_cell::Runtime::start(opts).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}
