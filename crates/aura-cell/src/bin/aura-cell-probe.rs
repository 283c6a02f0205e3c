//! `aura-cell-probe`: reports, as JSON, what a process is allowed to do where it runs.
//!
//! Run it inside a cell (bind its directory read-only) to audit the sandbox: its
//! capability sets, no_new_privs and seccomp mode, the result of every dangerous system
//! call it tries (mount, unshare, setns, ptrace, bpf, keyctl, kexec, module loading,
//! namespace-creating clones, io_uring, ...), its open file descriptors, ids, hostname
//! and core-dump limit. Every probe is harmless if it fails, and the ones that could
//! change something are built to fail even where they are allowed (bad arguments), with
//! the exception of the clone and unshare probes, whose effects end with the probe.
//! The cell tests run it; it is not used by Aura itself.

use std::collections::BTreeMap;
use std::ffi::CString;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// 0 if the call succeeded, else its errno.
fn outcome(ret: libc::c_long) -> i32 {
    if ret < 0 { errno() } else { 0 }
}

fn probe_syscalls() -> BTreeMap<&'static str, i32> {
    let mut out = BTreeMap::new();
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let (none, tmp, tmpfs, proc_) = (c("none"), c("/tmp"), c("tmpfs"), c("/proc"));
    // SAFETY (for every probe below): the arguments are valid or deliberately invalid
    // pointers to live data; none of these calls can corrupt this process's memory.
    unsafe {
        out.insert(
            "mount",
            outcome(libc::mount(
                none.as_ptr(),
                tmp.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ) as _),
        );
        out.insert(
            "umount2",
            outcome(libc::umount2(proc_.as_ptr(), libc::MNT_DETACH) as _),
        );
        out.insert("chroot", outcome(libc::chroot(tmp.as_ptr()) as _));
        out.insert(
            "pivot_root",
            outcome(libc::syscall(
                libc::SYS_pivot_root,
                tmp.as_ptr(),
                tmp.as_ptr(),
            )),
        );
        out.insert(
            "open_tree",
            outcome(libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                tmp.as_ptr(),
                1,
            )),
        );
        out.insert(
            "unshare_user",
            outcome(libc::unshare(libc::CLONE_NEWUSER) as _),
        );
        out.insert(
            "unshare_mount",
            outcome(libc::unshare(libc::CLONE_NEWNS) as _),
        );
        out.insert(
            "unshare_net",
            outcome(libc::unshare(libc::CLONE_NEWNET) as _),
        );
        let ns = c("/proc/1/ns/mnt");
        let fd = libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        out.insert("setns", outcome(libc::setns(fd, 0) as _));
        if fd >= 0 {
            libc::close(fd);
        }
        out.insert(
            "ptrace_attach",
            outcome(libc::ptrace(libc::PTRACE_ATTACH, 1, 0, 0) as _),
        );
        out.insert(
            "process_vm_readv",
            outcome(libc::syscall(libc::SYS_process_vm_readv, 1, 0, 0, 0, 0, 0)),
        );
        out.insert("bpf", outcome(libc::syscall(libc::SYS_bpf, 5, 0, 0)));
        // KEYCTL_GET_KEYRING_ID of the session keyring: allowed to anyone without seccomp.
        out.insert("keyctl", outcome(libc::syscall(libc::SYS_keyctl, 0, -3, 0)));
        out.insert(
            "add_key",
            outcome(libc::syscall(libc::SYS_add_key, 0, 0, 0, 0, 0)),
        );
        out.insert(
            "kexec_load",
            outcome(libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0)),
        );
        out.insert(
            "init_module",
            outcome(libc::syscall(libc::SYS_init_module, 0, 0, 0)),
        );
        out.insert(
            "finit_module",
            outcome(libc::syscall(libc::SYS_finit_module, -1, 0, 0)),
        );
        out.insert(
            "open_by_handle_at",
            outcome(libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0)),
        );
        out.insert(
            "perf_event_open",
            outcome(libc::syscall(libc::SYS_perf_event_open, 0, 0, -1, -1, 0)),
        );
        out.insert(
            "io_uring_setup",
            outcome(libc::syscall(libc::SYS_io_uring_setup, 1, 0)),
        );
        out.insert(
            "userfaultfd",
            outcome(libc::syscall(libc::SYS_userfaultfd, 0)),
        );
        out.insert(
            "personality_exec",
            outcome(libc::syscall(libc::SYS_personality, 0x0040_0000)),
        );
        let host = c("x");
        out.insert(
            "sethostname",
            outcome(libc::sethostname(host.as_ptr(), 1) as _),
        );
        out.insert("clone3", outcome(libc::syscall(libc::SYS_clone3, 0, 0)));
        for (name, flag) in [
            ("clone_newuser", libc::CLONE_NEWUSER),
            ("clone_newns", libc::CLONE_NEWNS),
            ("clone_newpid", libc::CLONE_NEWPID),
        ] {
            let pid = libc::syscall(
                libc::SYS_clone,
                (flag | libc::SIGCHLD) as libc::c_long,
                0,
                0,
                0,
                0,
            );
            if pid == 0 {
                libc::_exit(0);
            }
            let r = outcome(pid);
            if pid > 0 {
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
            out.insert(name, r);
        }
        // A plain fork must still work.
        let pid = libc::fork();
        if pid == 0 {
            libc::_exit(0);
        }
        out.insert("fork", if pid < 0 { errno() } else { 0 });
        if pid > 0 {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    out
}

fn status_fields() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| {
            matches!(
                *k,
                "NoNewPrivs" | "Seccomp" | "CapInh" | "CapPrm" | "CapEff" | "CapBnd" | "CapAmb"
            )
        })
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

fn fds() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        for e in rd.flatten() {
            let target = std::fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.insert(e.file_name().to_string_lossy().into_owned(), target);
        }
    }
    out
}

fn main() {
    let mut core = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut core) };
    // SAFETY: plain getters.
    let (uid, gid, euid) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
    let mut groups = [0 as libc::gid_t; 64];
    // SAFETY: groups has room for 64 entries.
    let n = unsafe { libc::getgroups(64, groups.as_mut_ptr()) };
    let report = serde_json::json!({
        "status": status_fields(),
        "fds": fds(),
        "uid": uid,
        "euid": euid,
        "gid": gid,
        "groups": groups[..n.max(0) as usize].to_vec(),
        "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
        "rlimit_core": [core.rlim_cur, core.rlim_max],
        "syscalls": probe_syscalls(),
    });
    println!("{report}");
}
