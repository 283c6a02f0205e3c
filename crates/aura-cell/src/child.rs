//! What runs in a freshly cloned child, between `clone3` and `execve`.
//!
//! The parent is multi-threaded (tokio), so the child may only make system calls: no
//! allocation, no locks, no formatting. Everything it needs (paths, file contents, argv
//! arrays, the seccomp program) is prepared by the parent in a [`Fresh`] or [`Join`] plan
//! before cloning, and the child walks it. A failure is reported to the parent as an
//! 8-byte record (the [`Stage`] that failed and the errno) on the error pipe, and the
//! child exits with 127; success is the error pipe closing when `execve` succeeds.
//!
//! Three plans:
//!
//! - [`Template`]: a root template (see `template.rs`). The child is born in a new mount
//!   namespace, builds the parts of a cell's root that every cell shares (the system
//!   directories, /dev, the empty mount points), `pivot_root`s into it and becomes the
//!   init in `hold` mode, which stays, idle, so that its mount namespace keeps its mounts.
//! - [`Fresh`]: a new cell. The child is born in new mount, pid, uts, ipc, net (unless
//!   the cell has the network) namespaces, as host root. It joins its cgroup, builds the
//!   root file system on a tmpfs, mounts a fresh `/proc` with Docker's masked and
//!   read-only paths, `pivot_root`s into it and detaches the old root, names itself, brings
//!   up loopback, and then, only then, enters the cell's user namespace and gives up
//!   everything ([`finish`]). On a template ([`Fresh::on_template`]) the child is cloned
//!   from a thread inside the template's mount namespace, so its new mount namespace is a
//!   copy of the template (a handful of private mounts, not the host's): it skips the
//!   root, the system directories and the `pivot_root`, and adds only what is its own
//!   (/etc, /tmp, /proc and its masks, the workspace).
//! - [`Join`]: an executable in an existing cell. Where the runtime's join thread runs
//!   (see `spawn.rs`), that thread enters the cell's namespaces and clones the executable
//!   straight into them ([`run_join_direct`]). Otherwise an intermediate child makes itself
//!   non-dumpable, joins the cell's cgroup and namespaces (held open by the runtime), and
//!   clones the real child with `CLONE_PARENT`, so that the runtime is its parent and can
//!   wait for it; the intermediate reports the pid and exits. The real child then runs
//!   [`finish`].
//!
//! Because the mount, pid, uts, ipc and net namespaces are owned by the host's user
//! namespace, not the cell's, nothing inside the cell can change them even before its
//! capabilities are dropped: the cell's root can neither remount, nor unmount a mask,
//! nor rename the host.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use libc::c_char;

use crate::seccomp::{SockFilter, SockFprog};
use crate::sys;

/// The step of the set-up that failed, as reported on the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    /// Not a failure: the intermediate's report of the real child's pid.
    Pid = 0,
    SignalReset = 1,
    CgroupJoin = 2,
    CgroupNamespace = 3,
    MakePrivate = 4,
    RootTmpfs = 5,
    EnterRoot = 6,
    Mkdir = 7,
    Symlink = 8,
    WriteFile = 9,
    DeviceNode = 10,
    BindSource = 11,
    BindTarget = 12,
    BindClone = 13,
    BindAttributes = 14,
    BindMove = 15,
    WorkspaceIdmap = 16,
    Tmpfs = 17,
    Proc = 18,
    DevNull = 19,
    ProcMask = 20,
    ProcReadonly = 21,
    PivotRoot = 22,
    DetachOldRoot = 23,
    RootReadonly = 24,
    Hostname = 25,
    Loopback = 26,
    Dumpable = 27,
    Setns = 28,
    CloneChild = 29,
    UserNamespace = 30,
    Groups = 31,
    Gid = 32,
    Bounding = 33,
    Securebits = 34,
    Uid = 35,
    Capabilities = 36,
    Ambient = 37,
    NoNewPrivs = 38,
    Rlimits = 39,
    ParentDeath = 40,
    Descriptors = 41,
    Cwd = 42,
    Seccomp = 43,
    ExecInit = 44,
    EtcReadonly = 45,
    /// Reported by the in-cell init: the command itself could not be executed.
    Exec = 1000,
}

impl Stage {
    pub(crate) fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        const ALL: [Stage; 47] = [
            Pid,
            SignalReset,
            CgroupJoin,
            CgroupNamespace,
            MakePrivate,
            RootTmpfs,
            EnterRoot,
            Mkdir,
            Symlink,
            WriteFile,
            DeviceNode,
            BindSource,
            BindTarget,
            BindClone,
            BindAttributes,
            BindMove,
            WorkspaceIdmap,
            Tmpfs,
            Proc,
            DevNull,
            ProcMask,
            ProcReadonly,
            PivotRoot,
            DetachOldRoot,
            RootReadonly,
            Hostname,
            Loopback,
            Dumpable,
            Setns,
            CloneChild,
            UserNamespace,
            Groups,
            Gid,
            Bounding,
            Securebits,
            Uid,
            Capabilities,
            Ambient,
            NoNewPrivs,
            Rlimits,
            ParentDeath,
            Descriptors,
            Cwd,
            Seccomp,
            ExecInit,
            EtcReadonly,
            Exec,
        ];
        ALL.into_iter().find(|s| *s as u32 == v)
    }

    /// The step, for error messages.
    pub(crate) fn describe(self) -> &'static str {
        use Stage::*;
        match self {
            Pid => "reporting the pid",
            SignalReset => "resetting signal handlers",
            CgroupJoin => "joining the cell's cgroup",
            CgroupNamespace => "creating the cgroup namespace",
            MakePrivate => "making mounts private",
            RootTmpfs => "mounting the root tmpfs",
            EnterRoot => "entering the new root",
            Mkdir => "creating a directory in the root",
            Symlink => "creating a symlink in the root",
            WriteFile => "writing a file in /etc",
            DeviceNode => "creating a device node in /dev",
            BindSource => "opening a bind mount's source (is it a real path, free of symlinks?)",
            BindTarget => "opening a bind mount's target (targets may not pass through symlinks)",
            BindClone => "cloning a bind mount",
            BindAttributes => "making a bind mount read-only",
            BindMove => "attaching a bind mount",
            WorkspaceIdmap => {
                "id-mapping the workspace (does its file system support id-mapped mounts?)"
            }
            Tmpfs => "mounting a tmpfs",
            Proc => "mounting /proc",
            DevNull => "checking /dev/null is the null device",
            ProcMask => "masking a /proc path",
            ProcReadonly => "making a /proc path read-only",
            PivotRoot => "pivot_root",
            DetachOldRoot => "detaching the old root",
            RootReadonly => "making the root read-only",
            Hostname => "setting the hostname",
            Loopback => "bringing up loopback",
            Dumpable => "making the process non-dumpable",
            Setns => "joining the cell's namespaces",
            CloneChild => "starting the process in the cell",
            UserNamespace => "entering the cell's user namespace",
            Groups => "clearing supplementary groups",
            Gid => "setting the group id",
            Bounding => "dropping the capability bounding set",
            Securebits => "locking the securebits",
            Uid => "setting the user id",
            Capabilities => "dropping capabilities",
            Ambient => "clearing ambient capabilities",
            NoNewPrivs => "setting no_new_privs",
            Rlimits => "setting resource limits",
            ParentDeath => "setting the parent-death signal",
            Descriptors => "arranging file descriptors",
            Cwd => "changing to the working directory",
            Seccomp => "installing the seccomp filter",
            ExecInit => "executing the in-cell init",
            EtcReadonly => "making /etc read-only",
            Exec => "executing the command",
        }
    }
}

/// One step of building the root file system. Paths are relative to the staging
/// directory, which is the child's working directory while it builds.
#[derive(Debug)]
pub(crate) enum Op {
    Mkdir {
        path: CString,
        mode: u32,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    File {
        path: CString,
        data: Vec<u8>,
    },
    /// A character device node, `major:minor`, mode 0666.
    CharDevice {
        path: CString,
        major: u32,
        minor: u32,
    },
    /// A bind mount of a host path (absolute, symlink-free) with mount attributes.
    Bind {
        source: CString,
        target: CString,
        attr: u64,
        recursive: bool,
    },
    /// A workspace owned by an unprivileged host user: a bind id-mapped through
    /// `userns`, a user namespace that maps only that owner (never the host's root).
    IdmappedBind {
        source: CString,
        target: CString,
        attr: u64,
        userns: RawFd,
    },
    Tmpfs {
        target: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    Proc {
        target: CString,
    },
    /// Bind the fresh `dev/null` over a file (skipped if the file does not exist).
    MaskFile {
        target: CString,
    },
    /// An empty read-only tmpfs over a directory (skipped if it does not exist).
    MaskDir {
        target: CString,
    },
    /// Make a path read-only in place (skipped if it does not exist).
    Readonly {
        target: CString,
    },
    /// Attach a detached mount tree that the parent prepared on the host (`open_tree`
    /// with `OPEN_TREE_CLONE`, attributes already set): how a child cloned from a root
    /// template, which cannot see the host's paths, gets a workspace or a host directory.
    Attach {
        tree: RawFd,
        target: CString,
    },
    /// Make the mount at `target` (only that one, not those beneath) read-only, nosuid
    /// and nodev: a cell's own /etc once its files are written.
    SealMount {
        target: CString,
    },
}

/// What every child does last: enter the cell's user namespace, become the cell's
/// user, give up every privilege, and execute the in-cell init.
#[derive(Debug)]
pub(crate) struct Finish {
    pub userns_fd: RawFd,
    pub uid: u32,
    pub gid: u32,
    pub cap_last: u32,
    pub cwd: CString,
    /// Descriptors to place at 0, 1, 2, 3 (and 4 for `hold`), in that order.
    pub fds: Vec<RawFd>,
    /// The sealed memfd holding the init program.
    pub init_fd: RawFd,
    #[allow(dead_code, reason = "owns the strings argv_ptrs points into")]
    argv: Vec<CString>,
    #[allow(dead_code, reason = "owns the strings envp_ptrs points into")]
    envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    pub filter: std::sync::Arc<Vec<SockFilter>>,
}

impl Finish {
    #[allow(
        clippy::too_many_arguments,
        reason = "a plain record of the child's inputs"
    )]
    pub(crate) fn new(
        userns_fd: RawFd,
        uid: u32,
        gid: u32,
        cap_last: u32,
        cwd: CString,
        fds: Vec<RawFd>,
        init_fd: RawFd,
        argv: Vec<CString>,
        envp: Vec<CString>,
        filter: std::sync::Arc<Vec<SockFilter>>,
    ) -> Self {
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const c_char> = envp.iter().map(|a| a.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Finish {
            userns_fd,
            uid,
            gid,
            cap_last,
            cwd,
            fds,
            init_fd,
            argv,
            envp,
            argv_ptrs,
            envp_ptrs,
            filter,
        }
    }
}

/// A root template's builder.
#[derive(Debug)]
pub(crate) struct Template {
    pub stage: CString,
    pub root_data: CString,
    pub ops: Vec<Op>,
    pub err_fd: RawFd,
    /// The init in `hold` mode, with a lifeline, as a long-lived cell's process 1.
    pub finish: Finish,
}

/// A new cell's process 1.
#[derive(Debug)]
pub(crate) struct Fresh {
    /// v1: open `cgroup.procs` files to write "0" to. v2 clones straight into the cgroup.
    pub cgroup_procs: Vec<RawFd>,
    /// Cloned from inside a root template's mount namespace: the root is already built
    /// and entered, and `ops` add only what is the cell's own.
    pub on_template: bool,
    pub stage: CString,
    pub root_data: CString,
    pub ops: Vec<Op>,
    pub hostname: CString,
    pub loopback: bool,
    pub err_fd: RawFd,
    pub finish: Finish,
}

/// A new executable in an existing cell.
#[derive(Debug)]
pub(crate) struct Join {
    pub cgroup_procs: Vec<RawFd>,
    /// v2: the cgroup directory to clone the real child into.
    pub cgroup_fd: Option<RawFd>,
    /// (namespace fd, CLONE_NEW* type), joined in order; mount last.
    pub namespaces: Vec<(RawFd, libc::c_int)>,
    pub err_fd: RawFd,
    pub finish: Finish,
}

// SAFETY: the raw pointers point into the plan's own CStrings, which move with it; the
// plan is built on one thread and used (read-only) on the spawner thread.
unsafe impl Send for Finish {}

/// Reports a failed stage and exits. Never returns.
fn fail(err_fd: RawFd, stage: Stage, errno: i32) -> ! {
    let mut rec = [0u8; 8];
    rec[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    rec[4..].copy_from_slice(&errno.to_ne_bytes());
    let _ = sys::write_all(err_fd, &rec);
    // SAFETY: _exit is async-signal-safe and does not run destructors or atexit handlers.
    unsafe { libc::_exit(127) }
}

macro_rules! try_stage {
    ($err:expr, $stage:expr, $call:expr) => {
        if let Err(e) = $call {
            fail($err, $stage, e)
        }
    };
}

fn c_ret(ret: libc::c_int) -> Result<(), i32> {
    if ret < 0 { Err(sys::errno()) } else { Ok(()) }
}

const EMPTY: &CStr = c"";
const DOT: &CStr = c".";

/// Resets every standard signal's disposition, so that signals the runtime ignores (Rust
/// ignores SIGPIPE) are not inherited ignored by the cell's programs.
fn reset_signals() -> Result<(), i32> {
    // SAFETY: a zeroed sigaction with SIG_DFL is valid.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = libc::SIG_DFL;
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction is async-signal-safe; sa is valid.
        unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
    }
    Ok(())
}

fn join_cgroup(fds: &[RawFd]) -> Result<(), i32> {
    for &fd in fds {
        sys::write_all(fd, b"0")?;
    }
    Ok(())
}

/// Opens a target path beneath the working directory (the new root) without following
/// any symlink, so that a target can never be redirected out of the cell's root (the
/// CVE-2021-30465 class of races).
fn open_target(path: &CStr) -> Result<RawFd, i32> {
    sys::openat2(
        libc::AT_FDCWD,
        path,
        libc::O_PATH,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
}

/// Clones the tree at `src_fd` and attaches it at `target` with `attr`.
fn attach_clone(
    src_fd: RawFd,
    target: &CStr,
    attr: &sys::MountAttr,
    recursive: bool,
    err: RawFd,
) -> Result<(), (Stage, i32)> {
    let flags = sys::OPEN_TREE_CLONE
        | sys::OPEN_TREE_CLOEXEC
        | libc::AT_EMPTY_PATH as u32
        | if recursive {
            libc::AT_RECURSIVE as u32
        } else {
            0
        };
    let tree = sys::open_tree(src_fd, EMPTY, flags).map_err(|e| (Stage::BindClone, e))?;
    let set_flags = libc::AT_EMPTY_PATH as u32
        | if recursive {
            libc::AT_RECURSIVE as u32
        } else {
            0
        };
    if attr.attr_set != 0 {
        let idmap = attr.attr_set & sys::MOUNT_ATTR_IDMAP != 0;
        if let Err(e) = sys::mount_setattr(tree, EMPTY, set_flags, attr) {
            sys::close(tree);
            return Err((
                if idmap {
                    Stage::WorkspaceIdmap
                } else {
                    Stage::BindAttributes
                },
                e,
            ));
        }
    }
    let t = match open_target(target) {
        Ok(t) => t,
        Err(e) => {
            sys::close(tree);
            return Err((Stage::BindTarget, e));
        }
    };
    let moved = sys::move_mount(
        tree,
        EMPTY,
        t,
        EMPTY,
        sys::MOVE_MOUNT_F_EMPTY_PATH | sys::MOVE_MOUNT_T_EMPTY_PATH,
    );
    sys::close(t);
    sys::close(tree);
    let _ = err;
    moved.map_err(|e| (Stage::BindMove, e))
}

/// `/proc/self/fd/N` in a stack buffer, for the classic mount(2), which takes paths.
struct FdPath([u8; 32]);

impl FdPath {
    fn new(fd: RawFd) -> Self {
        let mut buf = [0u8; 32];
        let prefix = b"/proc/self/fd/";
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 12];
        let mut n = fd.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[prefix.len() + i] = digits[len - 1 - i];
        }
        FdPath(buf)
    }

    fn as_ptr(&self) -> *const c_char {
        self.0.as_ptr().cast()
    }
}

/// Mounts a file system of `fstype` on `target` (opened beneath the root, no symlinks).
fn mount_fs(
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), i32> {
    let t = open_target(target)?;
    let path = FdPath::new(t);
    // SAFETY: all pointers are NUL-terminated strings or null.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    let e = sys::errno();
    sys::close(t);
    if r < 0 { Err(e) } else { Ok(()) }
}

/// Mounts a fresh proc (of the child's pid namespace) on `target` with the new mount API,
/// which needs no path: a child on a root template has no /proc (and so no
/// `/proc/self/fd`) until this one.
fn mount_proc(target: &CStr) -> Result<(), i32> {
    let fs = sys::fsopen(c"proc", sys::FSOPEN_CLOEXEC)?;
    let r = (|| {
        sys::fsconfig_cmd(fs, sys::FSCONFIG_CMD_CREATE)?;
        let m = sys::fsmount(
            fs,
            sys::FSMOUNT_CLOEXEC,
            sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV | sys::MOUNT_ATTR_NOEXEC,
        )?;
        let moved = open_target(target).and_then(|t| {
            let r = sys::move_mount(
                m,
                EMPTY,
                t,
                EMPTY,
                sys::MOVE_MOUNT_F_EMPTY_PATH | sys::MOVE_MOUNT_T_EMPTY_PATH,
            );
            sys::close(t);
            r
        });
        sys::close(m);
        moved
    })();
    sys::close(fs);
    r
}

fn ignore_missing(r: Result<(), i32>) -> Result<(), i32> {
    match r {
        Err(libc::ENOENT) => Ok(()),
        other => other,
    }
}

fn run_op(op: &Op, devnull: &mut RawFd, err: RawFd) -> Result<(), (Stage, i32)> {
    let nosym = sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS;
    match op {
        Op::Mkdir { path, mode } => {
            // SAFETY: path is NUL-terminated.
            c_ret(unsafe { libc::mkdirat(libc::AT_FDCWD, path.as_ptr(), *mode) })
                .map_err(|e| (Stage::Mkdir, e))
        }
        Op::Symlink { target, path } => {
            // SAFETY: both are NUL-terminated.
            c_ret(unsafe { libc::symlinkat(target.as_ptr(), libc::AT_FDCWD, path.as_ptr()) })
                .map_err(|e| (Stage::Symlink, e))
        }
        Op::File { path, data } => {
            // SAFETY: path is NUL-terminated; O_EXCL|O_NOFOLLOW creates a new file only.
            let fd = unsafe {
                libc::openat(
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd < 0 {
                return Err((Stage::WriteFile, sys::errno()));
            }
            let r = sys::write_all(fd, data);
            sys::close(fd);
            r.map_err(|e| (Stage::WriteFile, e))
        }
        Op::CharDevice { path, major, minor } => {
            let dev = libc::makedev(*major, *minor);
            // SAFETY: path is NUL-terminated.
            c_ret(unsafe {
                libc::mknodat(libc::AT_FDCWD, path.as_ptr(), libc::S_IFCHR | 0o666, dev)
            })
            .map_err(|e| (Stage::DeviceNode, e))?;
            // mknod applies the umask; the node must be usable by the cell's users.
            // SAFETY: path is NUL-terminated.
            c_ret(unsafe { libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), 0o666, 0) })
                .map_err(|e| (Stage::DeviceNode, e))
        }
        Op::Bind {
            source,
            target,
            attr,
            recursive,
        } => {
            // Sources are canonical host paths; refusing symlinks makes a swapped path
            // component fail instead of redirecting the bind.
            let src = sys::openat2(
                libc::AT_FDCWD,
                source,
                libc::O_PATH,
                sys::RESOLVE_NO_SYMLINKS,
            )
            .map_err(|e| (Stage::BindSource, e))?;
            let a = sys::MountAttr {
                attr_set: *attr,
                propagation: libc::MS_PRIVATE,
                ..Default::default()
            };
            let r = attach_clone(src, target, &a, *recursive, err);
            sys::close(src);
            r
        }
        Op::IdmappedBind {
            source,
            target,
            attr,
            userns,
        } => {
            let src = sys::openat2(
                libc::AT_FDCWD,
                source,
                libc::O_PATH | libc::O_DIRECTORY,
                sys::RESOLVE_NO_SYMLINKS,
            )
            .map_err(|e| (Stage::BindSource, e))?;
            let a = sys::MountAttr {
                attr_set: *attr | sys::MOUNT_ATTR_IDMAP,
                propagation: libc::MS_PRIVATE,
                userns_fd: *userns as u64,
                ..Default::default()
            };
            let r = attach_clone(src, target, &a, false, err);
            sys::close(src);
            r
        }
        Op::Tmpfs {
            target,
            flags,
            data,
        } => mount_fs(target, c"tmpfs", *flags, Some(data)).map_err(|e| (Stage::Tmpfs, e)),
        Op::Proc { target } => mount_proc(target).map_err(|e| (Stage::Proc, e)),
        Op::MaskFile { target } => {
            if *devnull < 0 {
                // The null device we created ourselves a moment ago; check it is one
                // anyway, so that a mask can never be a bind of something else (the
                // CVE-2025-31133 class).
                let fd = sys::openat2(libc::AT_FDCWD, c"dev/null", libc::O_PATH, nosym)
                    .map_err(|e| (Stage::DevNull, e))?;
                if !is_null_device(fd) {
                    sys::close(fd);
                    return Err((Stage::DevNull, libc::EINVAL));
                }
                *devnull = fd;
            }
            let a = sys::MountAttr {
                attr_set: sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
                propagation: libc::MS_PRIVATE,
                ..Default::default()
            };
            match attach_clone(*devnull, target, &a, false, err) {
                Err((Stage::BindTarget, libc::ENOENT)) => Ok(()),
                Err((_, e)) => Err((Stage::ProcMask, e)),
                Ok(()) => Ok(()),
            }
        }
        Op::MaskDir { target } => ignore_missing(mount_fs(
            target,
            c"tmpfs",
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"size=4k,mode=0555"),
        ))
        .map_err(|e| (Stage::ProcMask, e)),
        Op::Readonly { target } => {
            let src = match open_target(target) {
                Ok(fd) => fd,
                Err(libc::ENOENT) => return Ok(()),
                Err(e) => return Err((Stage::ProcReadonly, e)),
            };
            let a = sys::MountAttr {
                attr_set: sys::MOUNT_ATTR_RDONLY
                    | sys::MOUNT_ATTR_NOSUID
                    | sys::MOUNT_ATTR_NODEV
                    | sys::MOUNT_ATTR_NOEXEC,
                propagation: libc::MS_PRIVATE,
                ..Default::default()
            };
            let r = attach_clone(src, target, &a, true, err);
            sys::close(src);
            r.map_err(|(_, e)| (Stage::ProcReadonly, e))
        }
        Op::Attach { tree, target } => {
            let t = open_target(target).map_err(|e| (Stage::BindTarget, e))?;
            let moved = sys::move_mount(
                *tree,
                EMPTY,
                t,
                EMPTY,
                sys::MOVE_MOUNT_F_EMPTY_PATH | sys::MOVE_MOUNT_T_EMPTY_PATH,
            );
            sys::close(t);
            // Closed at once: an attached tree stays, and the descriptor must not linger
            // until the init's exec.
            sys::close(*tree);
            moved.map_err(|e| (Stage::BindMove, e))
        }
        Op::SealMount { target } => {
            let t = open_target(target).map_err(|e| (Stage::EtcReadonly, e))?;
            let a = sys::MountAttr {
                attr_set: sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
                ..Default::default()
            };
            let r = sys::mount_setattr(t, EMPTY, libc::AT_EMPTY_PATH as u32, &a);
            sys::close(t);
            r.map_err(|e| (Stage::EtcReadonly, e))
        }
    }
}

/// Whether `fd` is the null character device (1:3).
pub(crate) fn is_null_device(fd: RawFd) -> bool {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on our descriptor.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return false;
    }
    st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && libc::major(st.st_rdev) == 1
        && libc::minor(st.st_rdev) == 3
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn loopback_up() -> Result<(), i32> {
    // SAFETY: socket takes integers.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(sys::errno());
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: req is a valid ifreq-sized buffer.
    let mut r = unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req as *mut IfReq) };
    if r == 0 {
        req.flags |= libc::IFF_UP as libc::c_short;
        // SAFETY: as above.
        r = unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &mut req as *mut IfReq) };
    }
    let e = sys::errno();
    sys::close(s);
    if r < 0 { Err(e) } else { Ok(()) }
}

/// Runs the root's ops in order (paths relative to the working directory, the new root).
fn run_ops(ops: &[Op], err: RawFd) {
    let mut devnull = -1;
    for op in ops {
        if let Err((stage, e)) = run_op(op, &mut devnull, err) {
            fail(err, stage, e);
        }
    }
    if devnull >= 0 {
        sys::close(devnull);
    }
}

/// Builds a root from scratch in a new mount namespace, a copy of the host's: every
/// mount made private, a tmpfs at `stage` with `ops` applied, `pivot_root` into it, the
/// host's file system detached, the root made read-only.
fn build_root(stage: &CStr, root_data: &CStr, ops: &[Op], err: RawFd) {
    // Nothing we mount may propagate back to the host.
    // SAFETY: all pointers are NUL-terminated strings or null.
    try_stage!(
        err,
        Stage::MakePrivate,
        c_ret(unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })
    );
    // SAFETY: as above.
    try_stage!(
        err,
        Stage::RootTmpfs,
        c_ret(unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                stage.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID,
                root_data.as_ptr().cast(),
            )
        })
    );
    // SAFETY: chdir into the new root; from here on paths are relative to it.
    try_stage!(
        err,
        Stage::EnterRoot,
        c_ret(unsafe { libc::chdir(stage.as_ptr()) })
    );
    run_ops(ops, err);
    // pivot_root(".", "."), then detach the old root that now lies beneath: the host's
    // file system is gone from this mount namespace (no chroot that could be escaped).
    // SAFETY: both paths are ".".
    try_stage!(
        err,
        Stage::PivotRoot,
        sys::check(unsafe { libc::syscall(libc::SYS_pivot_root, DOT.as_ptr(), DOT.as_ptr()) })
            .map(drop)
    );
    // SAFETY: "." is NUL-terminated.
    try_stage!(
        err,
        Stage::DetachOldRoot,
        c_ret(unsafe { libc::umount2(DOT.as_ptr(), libc::MNT_DETACH) })
    );
    // SAFETY: "/" is NUL-terminated.
    try_stage!(
        err,
        Stage::DetachOldRoot,
        c_ret(unsafe { libc::chdir(c"/".as_ptr()) })
    );
    let ro = sys::MountAttr {
        attr_set: sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID,
        ..Default::default()
    };
    try_stage!(
        err,
        Stage::RootReadonly,
        sys::mount_setattr(libc::AT_FDCWD, c"/", 0, &ro)
    );
}

/// A root template's builder: builds the shared part of a cell's root, then gives up
/// every privilege and becomes the init in `hold` mode ([`finish`]), which closes the
/// error pipe (ready) and stays, idle, until the runtime closes its lifeline or dies: a
/// mount namespace keeps its mounts only while a task is in it. Never returns.
pub(crate) fn run_template(p: &Template) -> ! {
    let err = p.err_fd;
    try_stage!(err, Stage::SignalReset, reset_signals());
    build_root(&p.stage, &p.root_data, &p.ops, err);
    finish(&p.finish, err)
}

/// The new cell's process 1. Never returns.
pub(crate) fn run_fresh(p: &Fresh) -> ! {
    let err = p.err_fd;
    try_stage!(err, Stage::SignalReset, reset_signals());
    // Join the cgroup before creating the cgroup namespace, so that the namespace is
    // rooted at the cell's own cgroup.
    try_stage!(err, Stage::CgroupJoin, join_cgroup(&p.cgroup_procs));
    // SAFETY: unshare takes flags.
    try_stage!(
        err,
        Stage::CgroupNamespace,
        c_ret(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) })
    );
    if p.on_template {
        // The root is the template's, already entered (the spawner thread's root and
        // working directory, inherited); the ops add the cell's own mounts to it.
        // SAFETY: "/" is NUL-terminated.
        try_stage!(
            err,
            Stage::EnterRoot,
            c_ret(unsafe { libc::chdir(c"/".as_ptr()) })
        );
        run_ops(&p.ops, err);
    } else {
        build_root(&p.stage, &p.root_data, &p.ops, err);
    }
    let name = p.hostname.as_bytes();
    // SAFETY: name is a live slice.
    try_stage!(
        err,
        Stage::Hostname,
        c_ret(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
    );
    if p.loopback {
        try_stage!(err, Stage::Loopback, loopback_up());
    }
    finish(&p.finish, err)
}

/// An executable cloned straight into its cell's namespaces by the join thread (see
/// `spawn.rs`): it joins the cell's cgroup (v1; on v2 it was cloned into it) and runs
/// [`finish`]. Never returns.
pub(crate) fn run_join_direct(p: &Join) -> ! {
    let err = p.err_fd;
    // Until it executes, this is a copy of the runtime inside the cell's pid namespace;
    // non-dumpable, the cell's processes cannot read or trace it through /proc.
    // SAFETY: prctl with integers.
    try_stage!(
        err,
        Stage::Dumpable,
        c_ret(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
    );
    try_stage!(err, Stage::SignalReset, reset_signals());
    try_stage!(err, Stage::CgroupJoin, join_cgroup(&p.cgroup_procs));
    finish(&p.finish, err)
}

/// The intermediate child of [`Join`]: joins the cell and clones the real child. Never
/// returns.
pub(crate) fn run_join(p: &Join) -> ! {
    let err = p.err_fd;
    try_stage!(err, Stage::SignalReset, reset_signals());
    // Until the real child executes, it is a copy of the runtime inside the cell's pid
    // namespace; non-dumpable, the cell's processes cannot read or trace it through /proc.
    // SAFETY: prctl with integers.
    try_stage!(
        err,
        Stage::Dumpable,
        c_ret(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
    );
    try_stage!(err, Stage::CgroupJoin, join_cgroup(&p.cgroup_procs));
    for &(fd, kind) in &p.namespaces {
        // SAFETY: setns on a namespace descriptor the runtime holds.
        try_stage!(err, Stage::Setns, c_ret(unsafe { libc::setns(fd, kind) }));
    }
    let mut args = sys::CloneArgs {
        flags: sys::CLONE_PARENT,
        ..Default::default()
    };
    if let Some(fd) = p.cgroup_fd {
        args.flags |= sys::CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: the child below only makes system calls until it executes.
    match unsafe { sys::clone3(&mut args) } {
        Err(e) => fail(err, Stage::CloneChild, e),
        Ok(0) => finish(&p.finish, err),
        Ok(pid) => {
            let mut rec = [0u8; 8];
            rec[..4].copy_from_slice(&(Stage::Pid as u32).to_ne_bytes());
            rec[4..].copy_from_slice(&pid.to_ne_bytes());
            let _ = sys::write_all(err, &rec);
            // SAFETY: _exit runs no destructors.
            unsafe { libc::_exit(0) }
        }
    }
}

const SECBITS_LOCKED_NOROOT: libc::c_ulong = 0x01 | 0x02 | 0x20 | 0x40 | 0x80;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Enters the user namespace, drops every privilege, arranges descriptors, installs the
/// seccomp filter and executes the init. Never returns.
fn finish(f: &Finish, err: RawFd) -> ! {
    // SAFETY: setns on the runtime's user namespace descriptor.
    try_stage!(
        err,
        Stage::UserNamespace,
        c_ret(unsafe { libc::setns(f.userns_fd, libc::CLONE_NEWUSER) })
    );
    // Credentials change through raw system calls: glibc's wrappers would try to change
    // every thread of what they believe is still a multi-threaded process, taking locks
    // that another thread of the runtime may have held at the moment of the clone.
    // SAFETY: setgroups with an empty list.
    try_stage!(
        err,
        Stage::Groups,
        sys::check(unsafe {
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
        })
        .map(drop)
    );
    // SAFETY: integers.
    try_stage!(
        err,
        Stage::Gid,
        sys::check(unsafe { libc::syscall(libc::SYS_setresgid, f.gid, f.gid, f.gid) }).map(drop)
    );
    for cap in 0..=f.cap_last {
        // SAFETY: integers.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 && sys::errno() != libc::EINVAL {
            fail(err, Stage::Bounding, sys::errno());
        }
    }
    // SAFETY: integers. With NOROOT locked, even uid 0 gains nothing from execve.
    try_stage!(
        err,
        Stage::Securebits,
        c_ret(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECBITS_LOCKED_NOROOT, 0, 0, 0) })
    );
    // SAFETY: integers.
    try_stage!(
        err,
        Stage::Uid,
        sys::check(unsafe { libc::syscall(libc::SYS_setresuid, f.uid, f.uid, f.uid) }).map(drop)
    );
    let header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a v3 header and two data words.
    try_stage!(
        err,
        Stage::Capabilities,
        sys::check(unsafe {
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr())
        })
        .map(drop)
    );
    // SAFETY: integers.
    try_stage!(
        err,
        Stage::Ambient,
        c_ret(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        })
    );
    // SAFETY: integers.
    try_stage!(
        err,
        Stage::NoNewPrivs,
        c_ret(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    );
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit.
    try_stage!(
        err,
        Stage::Rlimits,
        c_ret(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) })
    );
    // A session and process group of its own: stopping the process can reach its
    // children, and nothing of the runtime's terminal session reaches the cell.
    // SAFETY: setsid has no arguments; it fails only if we already lead a group.
    unsafe { libc::setsid() };
    // If the runtime dies, so does the cell (set after the credential changes, which
    // clear it).
    // SAFETY: integers.
    try_stage!(
        err,
        Stage::ParentDeath,
        c_ret(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })
    );

    // Descriptors: copy everything we keep above any target number, then into place, then
    // close everything else, so that no descriptor of the runtime leaks into the cell.
    let mut tmp = [-1 as RawFd; 8];
    let n = f.fds.len().min(6);
    for (slot, &fd) in tmp.iter_mut().zip(&f.fds[..n]) {
        // SAFETY: fcntl on descriptors the plan owns.
        let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) };
        if d < 0 {
            fail(err, Stage::Descriptors, sys::errno());
        }
        *slot = d;
    }
    // SAFETY: as above.
    let init_tmp = unsafe { libc::fcntl(f.init_fd, libc::F_DUPFD_CLOEXEC, 64) };
    if init_tmp < 0 {
        fail(err, Stage::Descriptors, sys::errno());
    }
    // The error pipe is at 3 from here on (in every plan, fds[3] is the error pipe).
    for (i, &t) in tmp.iter().enumerate().take(n) {
        // SAFETY: dup3 onto a small number; the old descriptor there, if any, is closed.
        if unsafe { libc::dup3(t, i as RawFd, 0) } < 0 {
            fail(err, Stage::Descriptors, sys::errno());
        }
    }
    let err = 3;
    let init = n as RawFd;
    // SAFETY: as above; the init memfd stays close-on-exec.
    if unsafe { libc::dup3(init_tmp, init, libc::O_CLOEXEC) } < 0 {
        fail(err, Stage::Descriptors, sys::errno());
    }
    try_stage!(
        err,
        Stage::Descriptors,
        sys::close_range(init as u32 + 1, u32::MAX, 0)
    );

    // SAFETY: cwd is NUL-terminated.
    try_stage!(
        err,
        Stage::Cwd,
        c_ret(unsafe { libc::chdir(f.cwd.as_ptr()) })
    );

    let prog = SockFprog {
        len: f.filter.len() as u16,
        filter: f.filter.as_ptr(),
    };
    // SAFETY: prog points to the filter, which lives as long as the plan.
    try_stage!(
        err,
        Stage::Seccomp,
        sys::check(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const SockFprog,
            )
        })
        .map(drop)
    );
    // Unblock signals for the program (the spawner thread blocks them all).
    // SAFETY: an empty set.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set pointers.
    unsafe {
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    // SAFETY: argv and envp are NULL-terminated arrays of NUL-terminated strings.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            init,
            EMPTY.as_ptr(),
            f.argv_ptrs.as_ptr(),
            f.envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    fail(err, Stage::ExecInit, sys::errno())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths_are_formatted_without_allocating() {
        let p = FdPath::new(1234);
        let s = CStr::from_bytes_until_nul(&p.0).unwrap();
        assert_eq!(s.to_str().unwrap(), "/proc/self/fd/1234");
        let p = FdPath::new(0);
        assert_eq!(
            CStr::from_bytes_until_nul(&p.0).unwrap().to_str().unwrap(),
            "/proc/self/fd/0"
        );
    }

    #[test]
    fn stages_round_trip() {
        for v in 0..2000 {
            if let Some(s) = Stage::from_u32(v) {
                assert_eq!(s as u32, v);
                assert!(!s.describe().is_empty());
            }
        }
        assert_eq!(Stage::from_u32(1000), Some(Stage::Exec));
    }

    #[test]
    fn only_the_null_device_passes_the_mask_check() {
        use std::os::fd::AsRawFd as _;
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(is_null_device(null.as_raw_fd()));
        let zero = std::fs::File::open("/dev/zero").unwrap();
        assert!(!is_null_device(zero.as_raw_fd()));
        let file = tempfile::tempfile().unwrap();
        assert!(!is_null_device(file.as_raw_fd()));
    }
}
