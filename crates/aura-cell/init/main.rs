//! `aura-cell-init`: the only program Aura itself runs inside a cell.
//!
//! It is a tiny freestanding binary (no libc, no allocator, about a kilobyte) that
//! `build.rs` compiles with the same `rustc` and that the runtime executes from a sealed
//! memfd. It exists so that no process inside a cell ever has the `aura` binary as its
//! executable: the runtime's forked child sets up the sandbox, then executes this program,
//! and only this program executes the user's command. A `#!/proc/self/exe` script or an
//! ELF whose interpreter is `/proc/self/exe` therefore reaches a sealed, read-only copy of
//! this program, never the runtime (the CVE-2019-5736 class of escapes).
//!
//! Two modes, chosen by `argv[1]`:
//!
//! - `exec FILE ARGV0 ARGS...`: replace ourselves with the command, searching `PATH` from
//!   our environment when FILE has no slash. File descriptor 3 is the runtime's error pipe:
//!   it is marked close-on-exec, so a successful exec closes it; on failure we write an
//!   error record (stage, errno) to it and exit with 127.
//! - `hold`: stay as process 1 of a long-lived cell's pid namespace, reaping orphans.
//!   File descriptor 3 is the readiness pipe (closed at once), 4 the lifeline: when the
//!   runtime closes it or dies, we exit, and the kernel kills everything in the cell.
//!
//! By the time this runs, every capability is gone, no_new_privs is set and the seccomp
//! filter is installed; this program needs none of them.

#![no_std]
#![no_main]

use core::arch::global_asm;

#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor rbp, rbp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call aura_init_main",
    "ud2",
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, #0",
    "mov x30, #0",
    "mov x0, sp",
    "bl aura_init_main",
    "brk #0",
);

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const CLOSE: usize = 3;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const EXECVE: usize = 59;
    pub const WAIT4: usize = 61;
    pub const FCNTL: usize = 72;
    pub const PRCTL: usize = 157;
    pub const EXIT_GROUP: usize = 231;
    pub const PPOLL: usize = 271;
    pub const SIGNALFD4: usize = 289;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const READ: usize = 63;
    pub const WRITE: usize = 64;
    pub const CLOSE: usize = 57;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const EXECVE: usize = 221;
    pub const WAIT4: usize = 260;
    pub const FCNTL: usize = 25;
    pub const PRCTL: usize = 167;
    pub const EXIT_GROUP: usize = 94;
    pub const PPOLL: usize = 73;
    pub const SIGNALFD4: usize = 74;
}

#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: usize, a: usize, b: usize, c: usize, d: usize, e: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for syscall `n`.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d, in("r8") e,
            out("rcx") _, out("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall(n: usize, a: usize, b: usize, c: usize, d: usize, e: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for syscall `n`.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a as isize => ret,
            in("x1") b, in("x2") c, in("x3") d, in("x4") e,
            options(nostack),
        );
    }
    ret
}

/// The error pipe's stage number for "the command could not be executed"; the runtime
/// knows it as `child::Stage::Exec`.
const STAGE_EXEC: u32 = 1000;
const ENOENT: isize = 2;
const EACCES: isize = 13;
const EINTR: isize = 4;
const F_SETFD: usize = 2;
const FD_CLOEXEC: usize = 1;
const PR_SET_DUMPABLE: usize = 4;
const SIGCHLD: usize = 17;
const WNOHANG: usize = 1;
const POLLIN: i16 = 1;
const O_NONBLOCK: usize = 0o4000;
const O_CLOEXEC: usize = 0o2000000;

fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group takes one integer and does not return.
        unsafe { syscall(nr::EXIT_GROUP, code, 0, 0, 0, 0) };
    }
}

/// Reports a failed exec to the runtime as an 8-byte record: stage, then errno.
fn report(stage: u32, errno: isize) {
    let mut rec = [0u8; 8];
    let e = errno as i32;
    let s = stage.to_ne_bytes();
    let n = e.to_ne_bytes();
    let mut i = 0;
    while i < 4 {
        rec[i] = s[i];
        rec[i + 4] = n[i];
        i += 1;
    }
    // SAFETY: writes 8 bytes from a live buffer.
    unsafe { syscall(nr::WRITE, 3, rec.as_ptr() as usize, 8, 0, 0) };
}

/// The length of a NUL-terminated string.
///
/// # Safety
/// `p` points to a NUL-terminated string.
unsafe fn c_len(p: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the string is NUL-terminated, so every byte read up to it is in bounds. The
    // read is volatile so that the optimiser does not replace the loop with a call to
    // libc's strlen, which this program does not have.
    while unsafe { core::ptr::read_volatile(p.add(n)) } != 0 {
        n += 1;
    }
    n
}

/// Whether the NUL-terminated `s` starts with `prefix`.
///
/// # Safety
/// `s` points to a NUL-terminated string.
unsafe fn starts_with(s: *const u8, prefix: &[u8]) -> bool {
    let mut i = 0;
    while i < prefix.len() {
        // SAFETY: we stop at the first mismatch, so we never read past the NUL.
        if unsafe { *s.add(i) } != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `exec FILE ARGV...`: runs the command in place of this process.
///
/// # Safety
/// `argv` and `envp` are the NULL-terminated arrays the kernel gave us.
unsafe fn exec_mode(argv: *const *const u8, argc: usize, envp: *const *const u8) -> ! {
    // SAFETY: fcntl on our own descriptor.
    unsafe { syscall(nr::FCNTL, 3, F_SETFD, FD_CLOEXEC, 0, 0) };
    if argc < 4 {
        report(STAGE_EXEC, 22); // EINVAL: the runtime always passes a command
        exit(127);
    }
    // SAFETY: argc >= 4, so argv[2] and argv[3..] exist.
    let file = unsafe { *argv.add(2) };
    let args = unsafe { argv.add(3) };
    // SAFETY: file is NUL-terminated.
    let file_len = unsafe { c_len(file) };
    let mut has_slash = false;
    let mut i = 0;
    while i < file_len {
        // SAFETY: i < file_len.
        if unsafe { *file.add(i) } == b'/' {
            has_slash = true;
        }
        i += 1;
    }
    if has_slash || file_len == 0 {
        // SAFETY: every pointer comes from the kernel's argument block.
        let r = unsafe { syscall(nr::EXECVE, file as usize, args as usize, envp as usize, 0, 0) };
        report(STAGE_EXEC, -r);
        exit(127);
    }

    // Search PATH, as execvp does: remember EACCES if any candidate was not executable,
    // so that "permission denied" is not hidden behind a later "not found".
    let mut path: *const u8 = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\0"
        .as_ptr();
    let mut e = envp;
    // SAFETY: envp is NULL-terminated.
    while !unsafe { *e }.is_null() {
        // SAFETY: each entry is NUL-terminated.
        if unsafe { starts_with(*e, b"PATH=") } {
            // SAFETY: the entry is at least 5 bytes long.
            path = unsafe { (*e).add(5) };
            break;
        }
        // SAFETY: still within the NULL-terminated array.
        e = unsafe { e.add(1) };
    }
    let mut buf = [0u8; 4096];
    let mut best = ENOENT;
    let mut p = path;
    loop {
        let mut len = 0;
        // SAFETY: PATH is NUL-terminated; we stop at ':' or NUL.
        while unsafe { *p.add(len) } != 0 && unsafe { *p.add(len) } != b':' {
            len += 1;
        }
        if len + 1 + file_len + 1 <= buf.len() {
            let mut o = 0;
            let mut k = 0;
            while k < len {
                // SAFETY: k < len, within this PATH element.
                buf[o] = unsafe { *p.add(k) };
                o += 1;
                k += 1;
            }
            if len == 0 {
                buf[o] = b'.';
                o += 1;
            }
            buf[o] = b'/';
            o += 1;
            k = 0;
            while k < file_len {
                // SAFETY: k < file_len.
                buf[o] = unsafe { *file.add(k) };
                o += 1;
                k += 1;
            }
            buf[o] = 0;
            // SAFETY: buf is NUL-terminated; args and envp come from the kernel.
            let r =
                unsafe { syscall(nr::EXECVE, buf.as_ptr() as usize, args as usize, envp as usize, 0, 0) };
            if -r == EACCES {
                best = EACCES;
            } else if best != EACCES && -r != ENOENT && -r != 20 {
                // Anything but "not found" / "not a directory" is the real answer.
                best = -r;
            }
        }
        // SAFETY: p + len is ':' or the NUL.
        if unsafe { *p.add(len) } == 0 {
            break;
        }
        // SAFETY: skip the ':'; the string continues.
        p = unsafe { p.add(len + 1) };
    }
    report(STAGE_EXEC, best);
    exit(127);
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

/// `hold`: process 1 of a long-lived cell.
fn hold_mode() -> ! {
    // Other processes in the cell run as the same user; a non-dumpable process 1 cannot
    // be read or written through /proc by them.
    // SAFETY: prctl with integer arguments.
    unsafe { syscall(nr::PRCTL, PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let mask: u64 = 1 << (SIGCHLD - 1);
    // SAFETY: blocks SIGCHLD so that it is only seen through the signalfd.
    unsafe { syscall(nr::RT_SIGPROCMASK, 0, &mask as *const u64 as usize, 0, 8, 0) };
    // SAFETY: a new signalfd for the mask above.
    let sfd = unsafe {
        syscall(nr::SIGNALFD4, usize::MAX, &mask as *const u64 as usize, 8, O_NONBLOCK | O_CLOEXEC, 0)
    };
    if sfd < 0 {
        exit(126);
    }
    // Ready: closing the readiness pipe tells the runtime we are running.
    // SAFETY: closes our own descriptor.
    unsafe { syscall(nr::CLOSE, 3, 0, 0, 0, 0) };
    let mut buf = [0u8; 128];
    loop {
        let mut fds = [
            PollFd { fd: 4, events: POLLIN, revents: 0 },
            PollFd { fd: sfd as i32, events: POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd structures, no timeout, no signal mask.
        let r = unsafe { syscall(nr::PPOLL, fds.as_mut_ptr() as usize, 2, 0, 0, 8) };
        if r < 0 && -r != EINTR {
            exit(125);
        }
        if fds[0].revents != 0 {
            // The runtime closed the lifeline (or died): leave, and the kernel ends the cell.
            // SAFETY: reads into a live buffer.
            let n = unsafe { syscall(nr::READ, 4, buf.as_mut_ptr() as usize, buf.len(), 0, 0) };
            if n <= 0 {
                exit(0);
            }
        }
        if fds[1].revents != 0 {
            // SAFETY: drains the signalfd into a live buffer.
            unsafe { syscall(nr::READ, sfd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0) };
            // Reap every child that has exited; orphans of the cell's commands land here.
            // SAFETY: wait4 with null status and rusage pointers.
            while unsafe { syscall(nr::WAIT4, usize::MAX, 0, WNOHANG, 0, 0) } > 0 {}
        }
    }
}

/// The entry point: `sp` is the initial stack pointer (argc, argv..., NULL, envp..., NULL).
///
/// # Safety
/// Called once, from `_start`, with the stack the kernel set up.
#[unsafe(no_mangle)]
unsafe extern "C" fn aura_init_main(sp: *const usize) -> ! {
    // SAFETY: the kernel's initial stack layout.
    let argc = unsafe { *sp };
    let argv = unsafe { sp.add(1) } as *const *const u8;
    let envp = unsafe { argv.add(argc + 1) };
    if argc >= 2 {
        // SAFETY: argv[1] exists.
        let mode = unsafe { *argv.add(1) };
        // SAFETY: mode is NUL-terminated.
        if unsafe { starts_with(mode, b"exec\0") } {
            // SAFETY: argv/envp come from the kernel.
            unsafe { exec_mode(argv, argc, envp) };
        }
        if unsafe { starts_with(mode, b"hold\0") } {
            hold_mode();
        }
    }
    exit(2);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    exit(126);
}

// The compiler may emit calls to these; without libc we provide them. Volatile accesses
// keep the optimiser from turning the loops back into calls to themselves.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both ranges are valid for n bytes.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
        i += 1;
    }
    dst
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) < (src as usize) {
        // SAFETY: forwards copy is correct when dst is below src.
        unsafe { memcpy(dst, src, n) }
    } else {
        let mut i = n;
        while i > 0 {
            i -= 1;
            // SAFETY: the caller guarantees both ranges are valid for n bytes.
            unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
        }
        dst
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees the range is valid for n bytes.
        unsafe { core::ptr::write_volatile(dst.add(i), c as u8) };
        i += 1;
    }
    dst
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both ranges are valid for n bytes.
        let (x, y) = unsafe { (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i))) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// The precompiled `core` refers to the unwinding personality routine even though this
/// program aborts on panic and never unwinds.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
