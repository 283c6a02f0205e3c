//! The seccomp filter every process in a cell runs under, built once per runtime as a
//! classic BPF program.
//!
//! It is a denylist, like Docker's default profile turned inside out: everything is
//! allowed except the system calls below, which fail with EPERM (clone3 fails with ENOSYS
//! so that libc falls back to clone, whose flags the filter can inspect). Beyond Docker's
//! list (which denies most of these only to processes without capabilities; a cell has
//! none) it also denies io_uring, whose operations bypass seccomp entirely. System calls
//! of another architecture (i386 or x32 on x86_64) kill the process.
//!
//! The program is written out by hand rather than through a library so that its exact
//! shape is visible here and can be run through the small interpreter in the tests.

/// A classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SockFprog {
    pub len: u16,
    pub filter: *const SockFilter,
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

pub(crate) const RET_ALLOW: u32 = 0x7fff_0000;
pub(crate) const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub(crate) const RET_ERRNO: u32 = 0x0005_0000;

// Offsets into struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// The low 32 bits of the first argument (little-endian).
const OFF_ARG0_LO: u32 = 16;

#[cfg(target_arch = "x86_64")]
pub(crate) const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
pub(crate) const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// x32 system calls on x86_64 carry this bit; the filter kills them.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Namespace-creating clone flags: creating namespaces (above all user namespaces, the
/// door to most kernel attack surface) is for the runtime, not for the cell.
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// `personality` values Docker allows: the default, UNAME26 and ADDR_NO_RANDOMIZE
/// combinations, and the query. Anything else (e.g. READ_IMPLIES_EXEC) is refused.
const PERSONALITY_ALLOWED: [u32; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// One denied system call and why.
#[derive(Debug, Clone, Copy)]
pub struct Denied {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub why: &'static str,
}

macro_rules! denied {
    ($($name:ident: $why:literal),* $(,)?) => {
        &[$(Denied { name: stringify!($name), nr: paste_sys!($name), why: $why }),*]
    };
}

// Three legacy x86_64 calls libc does not name; their numbers are fixed in the ABI.
macro_rules! paste_sys {
    (mount) => {
        libc::SYS_mount
    };
    (umount2) => {
        libc::SYS_umount2
    };
    (pivot_root) => {
        libc::SYS_pivot_root
    };
    (chroot) => {
        libc::SYS_chroot
    };
    (open_tree) => {
        libc::SYS_open_tree
    };
    (move_mount) => {
        libc::SYS_move_mount
    };
    (fsopen) => {
        libc::SYS_fsopen
    };
    (fsconfig) => {
        libc::SYS_fsconfig
    };
    (fsmount) => {
        libc::SYS_fsmount
    };
    (fspick) => {
        libc::SYS_fspick
    };
    (mount_setattr) => {
        libc::SYS_mount_setattr
    };
    (unshare) => {
        libc::SYS_unshare
    };
    (setns) => {
        libc::SYS_setns
    };
    (ptrace) => {
        libc::SYS_ptrace
    };
    (process_vm_readv) => {
        libc::SYS_process_vm_readv
    };
    (process_vm_writev) => {
        libc::SYS_process_vm_writev
    };
    (process_madvise) => {
        libc::SYS_process_madvise
    };
    (pidfd_getfd) => {
        libc::SYS_pidfd_getfd
    };
    (kcmp) => {
        libc::SYS_kcmp
    };
    (perf_event_open) => {
        libc::SYS_perf_event_open
    };
    (bpf) => {
        libc::SYS_bpf
    };
    (kexec_load) => {
        libc::SYS_kexec_load
    };
    (kexec_file_load) => {
        libc::SYS_kexec_file_load
    };
    (init_module) => {
        libc::SYS_init_module
    };
    (finit_module) => {
        libc::SYS_finit_module
    };
    (delete_module) => {
        libc::SYS_delete_module
    };
    (reboot) => {
        libc::SYS_reboot
    };
    (swapon) => {
        libc::SYS_swapon
    };
    (swapoff) => {
        libc::SYS_swapoff
    };
    (acct) => {
        libc::SYS_acct
    };
    (syslog) => {
        libc::SYS_syslog
    };
    (quotactl) => {
        libc::SYS_quotactl
    };
    (keyctl) => {
        libc::SYS_keyctl
    };
    (add_key) => {
        libc::SYS_add_key
    };
    (request_key) => {
        libc::SYS_request_key
    };
    (settimeofday) => {
        libc::SYS_settimeofday
    };
    (clock_settime) => {
        libc::SYS_clock_settime
    };
    (clock_adjtime) => {
        libc::SYS_clock_adjtime
    };
    (adjtimex) => {
        libc::SYS_adjtimex
    };
    (open_by_handle_at) => {
        libc::SYS_open_by_handle_at
    };
    (name_to_handle_at) => {
        libc::SYS_name_to_handle_at
    };
    (userfaultfd) => {
        libc::SYS_userfaultfd
    };
    (io_uring_setup) => {
        libc::SYS_io_uring_setup
    };
    (io_uring_enter) => {
        libc::SYS_io_uring_enter
    };
    (io_uring_register) => {
        libc::SYS_io_uring_register
    };
    (fanotify_init) => {
        libc::SYS_fanotify_init
    };
    (mbind) => {
        libc::SYS_mbind
    };
    (set_mempolicy) => {
        libc::SYS_set_mempolicy
    };
    (migrate_pages) => {
        libc::SYS_migrate_pages
    };
    (move_pages) => {
        libc::SYS_move_pages
    };
    (vhangup) => {
        libc::SYS_vhangup
    };
    (sethostname) => {
        libc::SYS_sethostname
    };
    (setdomainname) => {
        libc::SYS_setdomainname
    };
    (lookup_dcookie) => {
        libc::SYS_lookup_dcookie
    };
    (nfsservctl) => {
        libc::SYS_nfsservctl
    };
    (iopl) => {
        libc::SYS_iopl
    };
    (ioperm) => {
        libc::SYS_ioperm
    };
    (uselib) => {
        libc::SYS_uselib
    };
    (_sysctl) => {
        libc::SYS__sysctl
    };
    (create_module) => {
        174
    };
    (get_kernel_syms) => {
        177
    };
    (query_module) => {
        178
    };
    (ustat) => {
        libc::SYS_ustat
    };
    (sysfs) => {
        libc::SYS_sysfs
    };
}

/// The system calls denied on every architecture.
pub const DENIED_COMMON: &[Denied] = denied![
    mount: "file system layout belongs to the runtime",
    umount2: "would uncover masked or hidden paths",
    pivot_root: "file system layout belongs to the runtime",
    chroot: "no use inside a cell; a classic step in escapes",
    open_tree: "new mount API",
    move_mount: "new mount API",
    fsopen: "new mount API",
    fsconfig: "new mount API",
    fsmount: "new mount API",
    fspick: "new mount API",
    mount_setattr: "could remount read-only paths writable",
    unshare: "new namespaces (user namespaces above all) widen kernel attack surface",
    setns: "joining other namespaces",
    ptrace: "inspecting or controlling other processes",
    process_vm_readv: "reading another process's memory",
    process_vm_writev: "writing another process's memory",
    process_madvise: "acting on another process's memory",
    pidfd_getfd: "stealing another process's file descriptors",
    kcmp: "kernel pointer comparisons leak layout",
    perf_event_open: "kernel profiling; a frequent source of exploits",
    bpf: "loading programs into the kernel",
    kexec_load: "replacing the running kernel",
    kexec_file_load: "replacing the running kernel",
    init_module: "loading kernel modules",
    finit_module: "loading kernel modules",
    delete_module: "unloading kernel modules",
    reboot: "rebooting the host",
    swapon: "host swap configuration",
    swapoff: "host swap configuration",
    acct: "host process accounting",
    syslog: "the kernel log leaks addresses",
    quotactl: "file system quotas",
    keyctl: "the kernel keyring is not namespaced",
    add_key: "the kernel keyring is not namespaced",
    request_key: "the kernel keyring is not namespaced",
    settimeofday: "the clock is not namespaced",
    clock_settime: "the clock is not namespaced",
    clock_adjtime: "the clock is not namespaced",
    adjtimex: "the clock is not namespaced",
    open_by_handle_at: "opens files by handle, bypassing the mount namespace (Shocker)",
    name_to_handle_at: "pairs with open_by_handle_at",
    userfaultfd: "widens kernel race windows for exploits",
    io_uring_setup: "io_uring operations are not filtered by seccomp",
    io_uring_enter: "io_uring operations are not filtered by seccomp",
    io_uring_register: "io_uring operations are not filtered by seccomp",
    fanotify_init: "watching the whole file system",
    mbind: "NUMA policy affects the host",
    set_mempolicy: "NUMA policy affects the host",
    migrate_pages: "moving other processes' pages",
    move_pages: "moving other processes' pages",
    vhangup: "terminal control",
    sethostname: "the runtime names the cell",
    setdomainname: "the runtime names the cell",
];

/// Legacy system calls that exist only on x86_64.
#[cfg(target_arch = "x86_64")]
pub const DENIED_ARCH: &[Denied] = denied![
    lookup_dcookie: "kernel profiling",
    nfsservctl: "removed kernel NFS control",
    iopl: "direct hardware port access",
    ioperm: "direct hardware port access",
    uselib: "legacy library loading",
    _sysctl: "legacy sysctl interface",
    create_module: "legacy module loading",
    get_kernel_syms: "legacy module loading",
    query_module: "legacy module loading",
    ustat: "legacy file system statistics",
    sysfs: "legacy file system type query",
];

#[cfg(target_arch = "aarch64")]
pub const DENIED_ARCH: &[Denied] = denied![
    lookup_dcookie: "kernel profiling",
    nfsservctl: "removed kernel NFS control",
];

fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Builds the filter program.
pub fn program() -> Vec<SockFilter> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    let mut p = vec![
        // A system call of another architecture: kill.
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        // x32 system calls share the architecture tag but set this bit.
        p.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(stmt(BPF_RET_K, RET_KILL_PROCESS));
    }
    // clone3 passes its flags in memory, where BPF cannot look: pretend it does not exist
    // so that libc uses clone, whose flags are in a register.
    p.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    p.push(stmt(BPF_RET_K, enosys));
    // clone with namespace flags: EPERM; a plain fork or thread: allowed.
    p.push(jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 4));
    p.push(stmt(BPF_LD_W_ABS, OFF_ARG0_LO));
    p.push(jump(BPF_JSET_K, CLONE_NS_FLAGS, 0, 1));
    p.push(stmt(BPF_RET_K, eperm));
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    // personality: only the harmless values.
    let n = PERSONALITY_ALLOWED.len() as u8;
    p.push(jump(BPF_JEQ_K, libc::SYS_personality as u32, 0, n + 3));
    p.push(stmt(BPF_LD_W_ABS, OFF_ARG0_LO));
    for (i, v) in PERSONALITY_ALLOWED.iter().enumerate() {
        // On a match jump to the ALLOW after the EPERM at the end of this block.
        let to_allow = (n - 1 - i as u8) + 1;
        p.push(jump(BPF_JEQ_K, *v, to_allow, 0));
    }
    p.push(stmt(BPF_RET_K, eperm));
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    // Everything on the lists: EPERM.
    for d in DENIED_COMMON.iter().chain(DENIED_ARCH) {
        p.push(jump(BPF_JEQ_K, d.nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, eperm));
    }
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p
}

/// Every denied system call, for documentation and tests.
pub fn denied() -> impl Iterator<Item = &'static Denied> {
    DENIED_COMMON.iter().chain(DENIED_ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program over a seccomp_data (nr, arch, arg0), supporting the
    /// instructions `program` uses; panics on anything else or on a jump out of bounds.
    fn run(p: &[SockFilter], nr: u32, arch: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&arg0.to_le_bytes());
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                BPF_RET_K => return i.k,
                BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                    let taken = match i.code {
                        BPF_JEQ_K => acc == i.k,
                        BPF_JGE_K => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += 1 + usize::from(if taken { i.jt } else { i.jf });
                }
                c => panic!("unexpected instruction {c:#x}"),
            }
            assert!(pc < p.len(), "jumped past the end");
        }
    }

    fn check(nr: libc::c_long, arg0: u64, expect: u32) {
        let p = program();
        assert_eq!(
            run(&p, nr as u32, AUDIT_ARCH, arg0),
            expect,
            "syscall {nr} arg0 {arg0:#x}"
        );
    }

    #[test]
    fn the_filter_allows_ordinary_calls_and_denies_the_list() {
        let eperm = RET_ERRNO | libc::EPERM as u32;
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_execve,
            libc::SYS_openat,
        ] {
            check(nr, 0, RET_ALLOW);
        }
        for d in denied() {
            check(d.nr, 0, eperm);
        }
        check(libc::SYS_clone3, 0, RET_ERRNO | libc::ENOSYS as u32);
        // fork and threads are fine; namespaces are not.
        check(libc::SYS_clone, libc::SIGCHLD as u64, RET_ALLOW);
        check(
            libc::SYS_clone,
            (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64,
            RET_ALLOW,
        );
        for flag in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWPID,
        ] {
            check(libc::SYS_clone, (flag | libc::SIGCHLD) as u64, eperm);
        }
        for v in PERSONALITY_ALLOWED {
            check(libc::SYS_personality, u64::from(v), RET_ALLOW);
        }
        check(libc::SYS_personality, 0x0040_0000, eperm); // READ_IMPLIES_EXEC
    }

    #[test]
    fn foreign_architectures_are_killed() {
        let p = program();
        assert_eq!(run(&p, 1, 0x4000_0003, 0), RET_KILL_PROCESS); // i386
        #[cfg(target_arch = "x86_64")]
        assert_eq!(run(&p, 0x4000_0001, AUDIT_ARCH, 0), RET_KILL_PROCESS); // x32 write
    }

    #[test]
    fn the_list_covers_what_the_issue_names() {
        let names: Vec<&str> = denied().map(|d| d.name).collect();
        for must in [
            "mount",
            "ptrace",
            "kexec_load",
            "bpf",
            "keyctl",
            "unshare",
            "setns",
        ] {
            assert!(names.contains(&must), "{must} is not denied");
        }
        assert!(program().len() < 4096);
    }
}
