//! What a process inside a cell can see and do (needs root, like every cell test): no
//! privileges, no view of the host, no writes outside its workspace and /tmp, masked
//! /proc paths, no leaked descriptors; in one-shot runs and in long-lived cells alike.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use aura_cell::{CellName, CellSpec, Command, ExecutableName, ExecutableSpec, RunSpec};

#[tokio::test(flavor = "multi_thread")]
async fn root_a_one_shot_cell_has_no_privileges() {
    let c = common::cells().await;
    let report = common::probe(&c.rt, |s| s).await;
    common::assert_locked_down(&report);
    assert_eq!(report["uid"], 0);
    assert_eq!(
        report["groups"],
        serde_json::json!([]),
        "supplementary groups leaked"
    );
    // As another cell user, too.
    let report = common::probe(&c.rt, |s| s.user(1000, 1000)).await;
    common::assert_locked_down(&report);
    assert_eq!(report["euid"], 1000);
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_executables_in_a_long_lived_cell_have_no_privileges() {
    let c = common::cells().await;
    let (bind, path) = common::probe_bind();
    let name = CellName::new("probe").unwrap();
    let mut spec = CellSpec::new(name.clone());
    spec.binds.push(bind);
    c.rt.allocate(spec).await.unwrap();
    let exe = ExecutableName::new("p").unwrap();
    c.rt.start_executable(
        &name,
        ExecutableSpec::new(exe.clone(), Command::argv([path])),
    )
    .await
    .unwrap();
    let info =
        c.rt.wait(&name, &exe, Some(Duration::from_secs(10)))
            .await
            .unwrap()
            .unwrap();
    assert!(info.exit.unwrap().status.success(), "{info:?}");
    let logs = c.rt.logs(&name, &exe).await.unwrap();
    let mut sub = logs.subscribe(true);
    let mut out = String::new();
    while let Some(l) = sub.next().await {
        out.push_str(&l.line);
    }
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    common::assert_locked_down(&report);
    assert_eq!(report["hostname"], "probe");
    c.rt.free(&name).await.unwrap();
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_the_host_is_invisible() {
    let c = common::cells().await;
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    // Processes: only the cell's own.
    let out = c
        .sh("ls -d /proc/[0-9]* | wc -l; hostname; cat /proc/net/dev; cat /proc/self/mountinfo")
        .await;
    assert!(out.success(), "{}", out.stderr_text());
    let text = out.stdout_text();
    let mut lines = text.lines();
    let procs: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(procs <= 4, "the cell sees {procs} processes:\n{text}");
    assert_eq!(lines.next().unwrap(), "cell");
    assert_ne!(host_name.trim(), "cell");
    let rest: Vec<&str> = lines.collect();
    // Network: loopback only.
    let ifaces: Vec<&str> = rest
        .iter()
        .filter_map(|l| l.split_once(':').map(|(i, _)| i.trim()))
        .filter(|i| !i.contains(' ') && !i.is_empty() && !i.starts_with('/') && i.len() < 16)
        .filter(|i| {
            i.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        })
        .collect();
    assert_eq!(ifaces, ["lo"], "{text}");
    // Mounts: only the cell's own layout, none of the host's.
    let allowed = [
        "/",
        "/usr",
        "/etc",
        "/etc/alternatives",
        "/etc/ssl",
        "/dev",
        "/tmp",
        "/proc",
        "/probe",
        "/workspace",
    ];
    for l in rest.iter().filter(|l| l.contains(" - ")) {
        let mount_point = l.split(' ').nth(4).unwrap();
        assert!(
            allowed
                .iter()
                .any(|a| mount_point == *a
                    || (*a != "/" && mount_point.starts_with(&format!("{a}/")))),
            "host mount {mount_point} is visible in the cell:\n{text}"
        );
    }
    // The host's pid 1 and this test's pid are not there.
    // (The marker is split so that it does not appear in the command line itself.)
    let out = c
        .sh(&format!(
            "test -e /proc/{} && echo VIS''IBLE; cat /proc/1/comm",
            std::process::id()
        ))
        .await;
    assert!(
        !out.stdout_text().contains("VISIBLE"),
        "{}",
        out.stdout_text()
    );
    assert_eq!(
        out.stdout_text().trim(),
        "sh",
        "process 1 is the command itself"
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_writes_outside_the_workspace_fail() {
    let c = common::cells().await;
    let ws = c.workspace("ws");
    let script = r#"
        for p in /x /usr/x /usr/bin/x /etc/x /etc/passwd /root/x /dev/x /proc/sys/kernel/hostname /proc/sysrq-trigger; do
            if (echo pwned > "$p") 2>/dev/null; then echo "WROTE $p"; fi
        done
        if (echo ok > /tmp/t) 2>/dev/null; then echo "tmp ok"; fi
        if (echo ok > /workspace/w) 2>/dev/null; then echo "workspace ok"; fi
        if mkdir /workspace/d 2>/dev/null; then echo "mkdir ok"; fi
    "#;
    let out =
        c.rt.run(RunSpec::shell(script).workspace(&ws))
            .await
            .unwrap();
    let text = out.stdout_text();
    assert!(!text.contains("WROTE"), "{text}");
    assert!(
        text.contains("tmp ok") && text.contains("workspace ok") && text.contains("mkdir ok"),
        "{text}"
    );
    // What a cell's root writes belongs to the host uid it maps to, never to root.
    use std::os::unix::fs::MetadataExt as _;
    let base = c.rt.options().id_base;
    let m = std::fs::metadata(ws.join("w")).unwrap();
    assert_eq!((m.uid(), m.gid()), (base, base));
    assert_eq!(std::fs::read_to_string(ws.join("w")).unwrap(), "ok\n");
    // A workspace of an unprivileged host user is written as that user, and only as
    // that user: the id-mapped mount maps nobody else, so the cell's root (which has no
    // capabilities either) cannot create files there at all.
    let ws2 = c.workspace("ws2");
    std::os::unix::fs::chown(&ws2, Some(1234), Some(1234)).unwrap();
    let out =
        c.rt.run(RunSpec::shell("id -u; touch /workspace/f").workspace(&ws2))
            .await
            .unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    assert_eq!(out.stdout_text().trim(), "1234");
    let m = std::fs::metadata(ws2.join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 1234));
    let out =
        c.rt.run(
            RunSpec::shell("chmod 777 /workspace; touch /workspace/as-root")
                .workspace(&ws2)
                .cwd("/")
                .user(0, 0),
        )
        .await
        .unwrap();
    assert!(!out.success(), "a cell's root wrote in a user's workspace");
    assert!(!ws2.join("as-root").exists());
    // A workspace of the host's root is refused: whatever a cell wrote there would be
    // root's.
    let ws3 = c.dir.path().join("rooted");
    std::fs::create_dir(&ws3).unwrap();
    let err =
        c.rt.run(RunSpec::shell("touch /workspace/f").workspace(&ws3))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), aura_cell::ErrorKind::PermissionDenied, "{err}");
    assert!(err.hint().unwrap().contains("chown"), "{err}");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_masked_proc_paths_are_unreadable_and_tunables_read_only() {
    let c = common::cells().await;
    let mut script = String::new();
    for p in aura_cell::masked_paths() {
        let host = format!("/{p}");
        if std::path::Path::new(&host).exists() {
            // A masked file is the null device (reads nothing); a masked directory is empty.
            script.push_str(&format!(
                "if [ -d {host} ]; then echo \"MASK {host} dir $(ls -A {host} | wc -l)\"; else echo \"MASK {host} $(stat -c %t:%T {host}) $(head -c 100 {host} | wc -c)\"; fi\n"
            ));
        }
    }
    script.push_str("cat /proc/sys/kernel/ostype >/dev/null && echo readable\n");
    script.push_str("(echo 1 > /proc/sys/kernel/sysrq) 2>/dev/null || echo sysctl-refused\n");
    script.push_str("grep -E ' /proc/(sys|sysrq-trigger|irq|bus|fs) ' /proc/self/mountinfo | awk '{print \"RO\", $5, $6}'\n");
    script.push_str("echo SYS $(ls /sys 2>/dev/null | wc -l)\n");
    let out = c.sh(&script).await;
    let text = out.stdout_text();
    let mut masked = 0;
    let mut readonly = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[0] {
            "MASK" if parts[2] == "dir" => {
                assert_eq!(parts[3], "0", "{line}");
                masked += 1;
            }
            "MASK" => {
                assert_eq!(parts[2], "1:3", "{line} is not masked by the null device");
                assert_eq!(parts[3], "0", "{line} leaked data");
                masked += 1;
            }
            "RO" => {
                assert!(
                    parts[2].split(',').any(|o| o == "ro"),
                    "{line} is not read-only"
                );
                readonly.push(parts[1].to_owned());
            }
            "SYS" => assert_eq!(parts[1], "0", "/sys must not exist in a cell"),
            _ => {}
        }
    }
    assert!(
        masked >= 2,
        "too few masked paths exist on this host to test: {text}"
    );
    assert!(readonly.iter().any(|p| p == "/proc/sys"), "{text}");
    if std::path::Path::new("/proc/sysrq-trigger").exists() {
        assert!(
            readonly.iter().any(|p| p == "/proc/sysrq-trigger"),
            "{text}"
        );
    }
    assert!(text.contains("readable"), "{text}");
    assert!(text.contains("sysctl-refused"), "{text}");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_the_network_is_granted_only_when_asked() {
    let c = common::cells().await;
    let without = c.sh("cat /proc/net/dev | tail -n +3 | wc -l").await;
    assert_eq!(without.stdout_text().trim(), "1", "only loopback");
    let with =
        c.rt.run(
            RunSpec::shell(
                "cat /proc/net/dev | tail -n +3 | wc -l; test -e /etc/resolv.conf && echo resolv",
            )
            .network(true),
        )
        .await
        .unwrap();
    let host_ifaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    let text = with.stdout_text();
    assert_eq!(text.lines().next().unwrap(), host_ifaces.to_string());
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_exit_codes_signals_output_and_stdin() {
    let c = common::cells().await;
    let out = c.sh("echo out; echo err >&2; exit 7").await;
    assert_eq!(out.code(), 7);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    let out = c.sh("kill -TERM $$; sleep 1").await;
    // Process 1 of a pid namespace ignores signals it has no handler for, even its own;
    // the shell then exits normally.
    assert!(out.success() || out.code() == 128 + libc::SIGTERM);
    let out =
        c.rt.run(RunSpec::argv(["sh", "-c", "sleep 5 & kill -KILL $$"]))
            .await
            .unwrap();
    assert_eq!(
        out.code(),
        0,
        "process 1 survives signals from inside: {:?}",
        out.status
    );
    let out =
        c.rt.run(RunSpec::argv(["cat"]).stdin("fed through stdin"))
            .await
            .unwrap();
    assert_eq!(out.stdout_text(), "fed through stdin");
    let out =
        c.rt.run(RunSpec::shell("head -c 5000 /dev/zero").output_limit(1000))
            .await
            .unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout_truncated);
    // A command that does not exist is an error, not an outcome.
    let err =
        c.rt.run(RunSpec::argv(["no-such-command"]))
            .await
            .unwrap_err();
    assert_eq!(err.kind(), aura_cell::ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("no-such-command"), "{err}");
    // Background children die with the command.
    let out = c.sh("sleep 100 & echo started").await;
    assert_eq!(out.stdout_text(), "started\n");
    // A timeout stops the command.
    let t = std::time::Instant::now();
    let out =
        c.rt.run(RunSpec::shell("sleep 30").timeout(Duration::from_millis(300)))
            .await
            .unwrap();
    assert!(out.timed_out);
    assert!(t.elapsed() < Duration::from_secs(10));
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_a_streamed_run_delivers_output_as_it_comes() {
    let c = common::cells().await;
    let mut running =
        c.rt.spawn(RunSpec::shell("echo one; sleep 0.3; echo two >&2"))
            .await
            .unwrap();
    let first = running.next_output().await.unwrap();
    assert_eq!(first.data, b"one\n");
    assert_eq!(first.channel, aura_cell::Channel::Stdout);
    let second = running.next_output().await.unwrap();
    assert_eq!(second.channel, aura_cell::Channel::Stderr);
    let outcome = running.wait().await.unwrap();
    assert!(outcome.success());
    assert_eq!(outcome.stdout, b"one\n");
    c.finish().await;
}
