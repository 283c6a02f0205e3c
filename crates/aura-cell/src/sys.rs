//! Thin wrappers over the Linux system calls the sandbox needs that `libc` does not wrap
//! (clone3, pidfds, the new mount API, openat2, close_range), and the kernel ABI
//! constants that go with them.
//!
//! Every function here is a single system call and allocates nothing, so the forked child
//! (which must stay async-signal-safe until it executes) may call them. They return
//! `Err(errno)` rather than `io::Error` for the same reason.

use std::ffi::CStr;
use std::os::fd::RawFd;

/// The calling thread's errno.
pub(crate) fn errno() -> i32 {
    // SAFETY: __errno_location returns the thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// Turns a raw system call result into `Ok(value)` or `Err(errno)`.
pub(crate) fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

// clone3 (linux/sched.h).
pub(crate) const CLONE_PIDFD: u64 = 0x0000_1000;
pub(crate) const CLONE_PARENT: u64 = 0x0000_8000;
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args`, version 2 (88 bytes, with `cgroup`).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// clone3 without a new stack: returns twice, like fork, with 0 in the child.
///
/// # Safety
/// In the child only async-signal-safe code may run until it executes or exits: the
/// parent may be multi-threaded and its locks may be held by threads that do not exist in
/// the child.
pub(crate) unsafe fn clone3(args: &mut CloneArgs) -> Result<libc::pid_t, i32> {
    // SAFETY: args is a valid clone_args of the size we pass.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    check(ret).map(|p| p as libc::pid_t)
}

pub(crate) fn pidfd_open(pid: libc::pid_t) -> Result<RawFd, i32> {
    // SAFETY: pidfd_open takes a pid and flags.
    check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) }).map(|fd| fd as RawFd)
}

pub(crate) fn pidfd_send_signal(pidfd: RawFd, signal: i32) -> Result<(), i32> {
    // SAFETY: no siginfo, no flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

/// How a process ended, with its resource usage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reaped {
    /// `CLD_EXITED`, `CLD_KILLED` or `CLD_DUMPED`.
    pub code: i32,
    /// The exit status or the signal number.
    pub status: i32,
    pub rusage: libc::rusage,
}

const P_PIDFD: libc::idtype_t = 3;

/// Reaps the process behind `pidfd` if it has exited (`Ok(None)` if not yet).
pub(crate) fn waitid_pidfd(pidfd: RawFd) -> Result<Option<Reaped>, i32> {
    // SAFETY: zeroed siginfo and rusage are valid out-parameters.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    // The raw system call takes a fifth argument, the rusage, that glibc's waitid hides.
    // SAFETY: valid pointers to the out-parameters.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_waitid,
            P_PIDFD,
            pidfd,
            &mut info as *mut libc::siginfo_t,
            libc::WEXITED | libc::WNOHANG,
            &mut rusage as *mut libc::rusage,
        )
    };
    check(ret)?;
    // SAFETY: si_pid is valid for SIGCHLD siginfo; zero means nothing was reaped.
    let pid = unsafe { info.si_pid() };
    if pid == 0 {
        return Ok(None);
    }
    // SAFETY: as above, si_status is valid for SIGCHLD siginfo.
    let status = unsafe { info.si_status() };
    Ok(Some(Reaped {
        code: info.si_code,
        status,
        rusage,
    }))
}

// The new mount API (linux/mount.h).
pub(crate) const OPEN_TREE_CLONE: u32 = 1;
pub(crate) const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
pub(crate) const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x0000_0004;
pub(crate) const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x0000_0040;
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
pub(crate) const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

pub(crate) fn open_tree(dirfd: RawFd, path: &CStr, flags: u32) -> Result<RawFd, i32> {
    // SAFETY: path is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })
        .map(|fd| fd as RawFd)
}

pub(crate) fn mount_setattr(
    dirfd: RawFd,
    path: &CStr,
    flags: u32,
    attr: &MountAttr,
) -> Result<(), i32> {
    // SAFETY: path is NUL-terminated and attr is a valid mount_attr of the size we pass.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

pub(crate) fn move_mount(
    from_dirfd: RawFd,
    from_path: &CStr,
    to_dirfd: RawFd,
    to_path: &CStr,
    flags: u32,
) -> Result<(), i32> {
    // SAFETY: both paths are NUL-terminated.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from_dirfd,
            from_path.as_ptr(),
            to_dirfd,
            to_path.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub(crate) const FSOPEN_CLOEXEC: u32 = 0x1;
pub(crate) const FSCONFIG_CMD_CREATE: u32 = 6;
pub(crate) const FSMOUNT_CLOEXEC: u32 = 0x1;

pub(crate) fn fsopen(fstype: &CStr, flags: u32) -> Result<RawFd, i32> {
    // SAFETY: fstype is NUL-terminated.
    check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), flags) }).map(|fd| fd as RawFd)
}

/// `fsconfig` with a command and no key or value (`FSCONFIG_CMD_CREATE`).
pub(crate) fn fsconfig_cmd(fs: RawFd, cmd: u32) -> Result<(), i32> {
    // SAFETY: no key, no value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            cmd,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })
    .map(drop)
}

pub(crate) fn fsmount(fs: RawFd, flags: u32, attr_flags: u64) -> Result<RawFd, i32> {
    // SAFETY: integers.
    check(unsafe { libc::syscall(libc::SYS_fsmount, fs, flags, attr_flags) }).map(|fd| fd as RawFd)
}

// openat2 (linux/openat2.h).
pub(crate) const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub(crate) const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub(crate) const RESOLVE_BENEATH: u64 = 0x08;

/// `struct open_how`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub(crate) fn openat2(dirfd: RawFd, path: &CStr, flags: i32, resolve: u64) -> Result<RawFd, i32> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: path is NUL-terminated; how is a valid open_how of the size we pass.
    check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })
    .map(|fd| fd as RawFd)
}

pub(crate) fn close_range(first: u32, last: u32, flags: u32) -> Result<(), i32> {
    // SAFETY: close_range takes integers.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) }).map(drop)
}

pub(crate) fn close(fd: RawFd) {
    // SAFETY: closing a descriptor we own; errors (EBADF) are irrelevant here.
    unsafe { libc::close(fd) };
}

/// Writes all of `buf`, retrying on EINTR; async-signal-safe.
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: buf is a live slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n.unsigned_abs()..];
    }
    Ok(())
}

/// Probes that the kernel has every system call the sandbox relies on, so that a missing
/// one is reported up front instead of as a confusing failure inside a cell. Each is
/// called with arguments that make it fail harmlessly; only ENOSYS counts as missing.
pub(crate) fn missing_syscalls() -> Vec<&'static str> {
    let mut missing = Vec::new();
    let probes: [(&'static str, libc::c_long, [libc::c_long; 3]); 8] = [
        ("fsopen (Linux 5.2)", libc::SYS_fsopen, [0, -1, 0]),
        ("clone3 (Linux 5.3)", libc::SYS_clone3, [0, 0, 0]),
        ("pidfd_open (Linux 5.3)", libc::SYS_pidfd_open, [-1, 0, 0]),
        ("open_tree (Linux 5.2)", libc::SYS_open_tree, [-1, 0, 0]),
        ("move_mount (Linux 5.2)", libc::SYS_move_mount, [-1, 0, -1]),
        ("openat2 (Linux 5.6)", libc::SYS_openat2, [-1, 0, 0]),
        (
            "close_range (Linux 5.9)",
            libc::SYS_close_range,
            [u32::MAX as libc::c_long, 0, 0],
        ),
        (
            "mount_setattr (Linux 5.12)",
            libc::SYS_mount_setattr,
            [-1, 0, 0],
        ),
    ];
    for (name, nr, [a, b, c]) in probes {
        // SAFETY: every probe passes invalid descriptors or sizes, so nothing happens.
        let ret = unsafe { libc::syscall(nr, a, b, c, 0, 0) };
        if ret < 0 && errno() == libc::ENOSYS {
            missing.push(name);
        }
    }
    missing
}
