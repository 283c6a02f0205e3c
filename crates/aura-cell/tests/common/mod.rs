//! Shared helpers for the cell tests: a runtime in a throwaway state directory (its own
//! cgroup instance, so tests run in parallel), the probe program, and leak checks.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use aura_cell::{Bind, Options, RunOutcome, RunSpec, Runtime};

pub(crate) struct Cells {
    pub(crate) rt: Runtime,
    pub(crate) dir: tempfile::TempDir,
    mounts_before: usize,
}

/// Mount points in this (the host's) mount namespace, but for loop-mounted file systems:
/// the workspace tests mount workspace images on the host while other tests run, and
/// check their own clean-up.
pub(crate) fn host_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| !l.contains(" - ext4 /dev/loop"))
        .count()
}

pub(crate) fn options(dir: &Path) -> Options {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut opts = Options::new(dir.join("cells"));
    // `test-<pid>-<n>`: if this process dies mid-test, the next runtime cleans up.
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    opts.instance = Some(format!("test-{}-{n}", std::process::id()));
    opts.stop_grace = Duration::from_millis(500);
    opts.tmp_bytes = 64 << 20;
    opts
}

pub(crate) async fn cells() -> Cells {
    cells_with(|o| o).await
}

/// A runtime with options changed by `f`.
pub(crate) async fn cells_with(f: impl FnOnce(Options) -> Options) -> Cells {
    let dir = tempfile::tempdir().unwrap();
    let mounts_before = host_mounts();
    let rt = Runtime::start(f(options(dir.path()))).await.unwrap();
    Cells {
        rt,
        dir,
        mounts_before,
    }
}

impl Cells {
    /// A fresh directory for a workspace, as a node makes them: mode 0700, belonging to
    /// the host uid a cell's root maps to.
    pub(crate) fn workspace(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        let base = self.rt.options().id_base;
        std::os::unix::fs::chown(&p, Some(base), Some(base)).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        p
    }

    /// Runs a shell line and returns the outcome, panicking on set-up errors.
    pub(crate) async fn sh(&self, line: &str) -> RunOutcome {
        self.rt.run(RunSpec::shell(line)).await.unwrap()
    }

    /// Shuts the runtime down and checks nothing is left: no cgroups (so no processes),
    /// no mounts in the host's namespace.
    pub(crate) async fn finish(self) {
        self.rt.shutdown().await;
        assert!(
            self.rt.leftover_cgroups().is_empty(),
            "{:?}",
            self.rt.leftover_cgroups()
        );
        assert_eq!(
            host_mounts(),
            self.mounts_before,
            "a mount leaked into the host"
        );
    }
}

/// The probe program, and a bind that makes it visible at /probe.
pub(crate) fn probe_bind() -> (Bind, String) {
    let exe = Path::new(env!("CARGO_BIN_EXE_aura-cell-probe"));
    let bind = Bind {
        source: exe.parent().unwrap().to_owned(),
        target: Some("/probe".into()),
        writable: false,
    };
    let path = format!("/probe/{}", exe.file_name().unwrap().to_string_lossy());
    (bind, path)
}

/// Runs the probe in a one-shot cell and parses its report.
pub(crate) async fn probe(
    rt: &Runtime,
    spec: impl FnOnce(RunSpec) -> RunSpec,
) -> serde_json::Value {
    let (bind, path) = probe_bind();
    let out = rt
        .run(spec(RunSpec::argv([path]).bind(bind)))
        .await
        .unwrap();
    assert!(
        out.success(),
        "probe failed: {:?} {}",
        out.status,
        out.stderr_text()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts the probe found a fully locked-down process.
pub(crate) fn assert_locked_down(report: &serde_json::Value) {
    let status = &report["status"];
    assert_eq!(status["NoNewPrivs"], "1", "{report}");
    assert_eq!(status["Seccomp"], "2", "{report}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status[cap], "0000000000000000", "{cap}: {report}");
    }
    let eperm = libc::EPERM;
    let sys = &report["syscalls"];
    for name in [
        "mount",
        "umount2",
        "chroot",
        "pivot_root",
        "open_tree",
        "unshare_user",
        "unshare_mount",
        "unshare_net",
        "setns",
        "ptrace_attach",
        "process_vm_readv",
        "bpf",
        "keyctl",
        "add_key",
        "kexec_load",
        "init_module",
        "finit_module",
        "open_by_handle_at",
        "perf_event_open",
        "io_uring_setup",
        "userfaultfd",
        "personality_exec",
        "sethostname",
        "clone_newuser",
        "clone_newns",
        "clone_newpid",
    ] {
        assert_eq!(
            sys[name], eperm,
            "{name} was not refused with EPERM: {report}"
        );
    }
    assert_eq!(sys["clone3"], libc::ENOSYS, "{report}");
    assert_eq!(sys["fork"], 0, "an ordinary fork must work: {report}");
    assert_eq!(report["rlimit_core"], serde_json::json!([0, 0]), "{report}");
    // Only stdin, stdout, stderr and the probe's own directory handle may be open.
    let fds = report["fds"].as_object().unwrap();
    for (fd, target) in fds {
        let target = target.as_str().unwrap();
        let ok = matches!(fd.as_str(), "0" | "1" | "2")
            || target.starts_with("/proc/") && target.ends_with("/fd");
        assert!(
            ok,
            "descriptor {fd} -> {target} leaked into the cell: {report}"
        );
    }
}
