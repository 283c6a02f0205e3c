//! Process creation for cells: the spawner thread that performs every `clone3`, the
//! sealed memfd with the in-cell init, the runtime's user namespace, pipes, and waiting
//! for processes through pidfds.
//!
//! All clones happen on one dedicated thread that lives as long as the runtime and blocks
//! every signal. Living long matters because a child's parent-death signal fires when
//! the *thread* that cloned it exits, and tokio's blocking threads come and go; blocking
//! signals matters because a signal handler of the runtime must never run in a child
//! between clone and exec (the child unblocks them just before executing).

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use crate::child::{self, Fresh, Join, Stage};
use crate::error::{Error, Result};
use crate::sys;

/// The in-cell init program, built by build.rs.
static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/aura-cell-init"));

/// A child just cloned.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
}

enum Job {
    Fresh {
        plan: Box<Fresh>,
        flags: u64,
        cgroup_fd: Option<RawFd>,
        reply: oneshot::Sender<Result<Spawned, i32>>,
    },
    Join {
        plan: Box<Join>,
        reply: oneshot::Sender<Result<Spawned, i32>>,
    },
    Userns {
        reply: oneshot::Sender<Result<Spawned, i32>>,
    },
}

/// The handle to the spawner thread. Dropping it ends the thread.
#[derive(Debug)]
pub(crate) struct Spawner {
    tx: std::sync::Mutex<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

fn clone_with(
    flags: u64,
    exit_signal: u64,
    cgroup_fd: Option<RawFd>,
) -> (Result<libc::pid_t, i32>, RawFd) {
    let mut pidfd: RawFd = -1;
    let mut args = sys::CloneArgs {
        flags: flags | sys::CLONE_PIDFD,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal,
        ..Default::default()
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= sys::CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: every caller's child branch runs only async-signal-safe code.
    (unsafe { sys::clone3(&mut args) }, pidfd)
}

fn spawned(r: Result<libc::pid_t, i32>, pidfd: RawFd) -> Result<Spawned, i32> {
    r.map(|pid| Spawned {
        pid,
        // SAFETY: clone3 with CLONE_PIDFD stored a new descriptor that we now own.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
    })
}

fn spawner_loop(rx: &mpsc::Receiver<Job>) {
    // SAFETY: blocking every signal on this thread only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
    while let Ok(job) = rx.recv() {
        match job {
            Job::Fresh {
                plan,
                flags,
                cgroup_fd,
                reply,
            } => {
                let (r, pidfd) = clone_with(flags, libc::SIGCHLD as u64, cgroup_fd);
                if let Ok(0) = r {
                    child::run_fresh(&plan);
                }
                let _ = reply.send(spawned(r, pidfd));
            }
            Job::Join { plan, reply } => {
                let (r, pidfd) = clone_with(0, libc::SIGCHLD as u64, None);
                if let Ok(0) = r {
                    child::run_join(&plan);
                }
                let _ = reply.send(spawned(r, pidfd));
            }
            Job::Userns { reply } => {
                let (r, pidfd) = clone_with(libc::CLONE_NEWUSER as u64, libc::SIGCHLD as u64, None);
                if let Ok(0) = r {
                    // Wait, doing nothing, until the parent has written our id maps, taken
                    // a handle on the namespace and killed us. (Not a pipe's end-of-file:
                    // a concurrent clone elsewhere in the process could hold its write end.)
                    loop {
                        // SAFETY: pause is async-signal-safe.
                        unsafe { libc::pause() };
                    }
                }
                let _ = reply.send(spawned(r, pidfd));
            }
        }
    }
}

impl Spawner {
    pub(crate) fn start() -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("aura-cell-spawner".into())
            .spawn(move || spawner_loop(&rx))
            .map_err(|e| Error::io("cannot start the cell spawner thread", e))?;
        Ok(Spawner {
            tx: std::sync::Mutex::new(tx),
        })
    }

    async fn submit(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<Spawned, i32>>,
    ) -> Result<Spawned> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| Error::ShutDown)?;
        rx.await
            .map_err(|_| Error::ShutDown)?
            .map_err(|e| Error::Setup {
                step: "clone3",
                source: std::io::Error::from_raw_os_error(e),
            })
    }

    pub(crate) async fn fresh(
        &self,
        plan: Box<Fresh>,
        flags: u64,
        cgroup_fd: Option<RawFd>,
    ) -> Result<Spawned> {
        let (reply, rx) = oneshot::channel();
        self.submit(
            Job::Fresh {
                plan,
                flags,
                cgroup_fd,
                reply,
            },
            rx,
        )
        .await
    }

    pub(crate) async fn join(&self, plan: Box<Join>) -> Result<Spawned> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Join { plan, reply }, rx).await
    }

    /// Creates the user namespace every cell enters: cell ids `0..count` map to host ids
    /// `base..base+count`, none of which is the host's root. Returns a descriptor that
    /// keeps the namespace alive.
    pub(crate) async fn user_namespace(&self, base: u32, count: u32) -> Result<OwnedFd> {
        let map = format!("0 {base} {count}\n");
        self.user_namespace_with(&map, &map).await
    }

    /// A user namespace with these `uid_map` and `gid_map` lines (for id-mapped mounts).
    pub(crate) async fn user_namespace_with(
        &self,
        uid_map: &str,
        gid_map: &str,
    ) -> Result<OwnedFd> {
        let (reply, rx) = oneshot::channel();
        let child = Process::new(self.submit(Job::Userns { reply }, rx).await?)?;
        let proc = format!("/proc/{}", child.pid);
        let result = (|| {
            std::fs::write(format!("{proc}/uid_map"), uid_map)
                .map_err(|e| Error::io("cannot write the cells' uid map", e))?;
            std::fs::write(format!("{proc}/gid_map"), gid_map)
                .map_err(|e| Error::io("cannot write the cells' gid map", e))?;
            let ns = std::fs::File::open(format!("{proc}/ns/user"))
                .map_err(|e| Error::io("cannot open the cells' user namespace", e))?;
            Ok(OwnedFd::from(ns))
        })();
        child.signal(libc::SIGKILL);
        let _ = child.wait().await;
        result
    }
}

/// A pipe, both ends close-on-exec.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(Error::io(
            "cannot create a pipe",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 returned two new descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(crate) fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    // SAFETY: fcntl on our descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(Error::io(
            "cannot make a pipe non-blocking",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The reading end of a pipe, for tokio.
pub(crate) fn async_reader(fd: OwnedFd) -> Result<tokio::net::unix::pipe::Receiver> {
    set_nonblocking(&fd)?;
    tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd)
        .map_err(|e| Error::io("cannot watch a pipe", e))
}

/// The writing end of a pipe, for tokio.
pub(crate) fn async_writer(fd: OwnedFd) -> Result<tokio::net::unix::pipe::Sender> {
    set_nonblocking(&fd)?;
    tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(fd)
        .map_err(|e| Error::io("cannot watch a pipe", e))
}

/// What the error pipe said.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// The real child's pid, for the join path.
    pub pid: Option<libc::pid_t>,
    /// The stage that failed and its errno.
    pub failure: Option<(Stage, i32)>,
}

impl Report {
    /// The error for a failed report.
    pub(crate) fn error(&self, command: &str) -> Option<Error> {
        let (stage, errno) = self.failure?;
        let source = std::io::Error::from_raw_os_error(errno);
        Some(match stage {
            Stage::Exec => Error::Exec {
                command: command.to_owned(),
                source,
            },
            s => Error::Setup {
                step: s.describe(),
                source,
            },
        })
    }
}

/// Reads the error pipe to its end: closed with nothing on it means the command is
/// running.
pub(crate) async fn read_report(fd: OwnedFd) -> Result<Report> {
    use tokio::io::AsyncReadExt as _;
    let mut r = async_reader(fd)?;
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)
        .await
        .map_err(|e| Error::io("cannot read the cell's set-up report", e))?;
    let mut report = Report::default();
    for rec in buf.chunks_exact(8) {
        let stage = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let value = i32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]);
        match Stage::from_u32(stage) {
            Some(Stage::Pid) => report.pid = Some(value),
            Some(s) => report.failure = Some((s, value)),
            None => report.failure = Some((Stage::ExecInit, libc::EPROTO)),
        }
    }
    Ok(report)
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Exited(i32),
    Signaled(i32),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Exit {
    pub ended: Ended,
    pub cpu_time: Duration,
    /// Peak resident memory in bytes.
    pub max_rss: u64,
}

/// A child of the runtime, waited for through its pidfd.
#[derive(Debug)]
pub(crate) struct Process {
    pub pid: libc::pid_t,
    fd: AsyncFd<OwnedFd>,
}

impl Process {
    pub(crate) fn new(s: Spawned) -> Result<Self> {
        Ok(Process {
            pid: s.pid,
            // SAFETY: the OwnedFd is a valid pidfd that the AsyncFd owns for its lifetime.
            fd: unsafe { AsyncFd::register_with_interest(s.pidfd, tokio::io::Interest::READABLE) }
                .map_err(|e| Error::io("cannot watch a process", e.into()))?,
        })
    }

    /// Adopts a child by pid (it must be our child, so its pid cannot be reused before we
    /// reap it).
    pub(crate) fn adopt(pid: libc::pid_t) -> Result<Self> {
        let fd = sys::pidfd_open(pid)
            .map_err(|e| Error::io("cannot open a pidfd", std::io::Error::from_raw_os_error(e)))?;
        // SAFETY: pidfd_open returned a new descriptor that we own.
        Self::new(Spawned {
            pid,
            pidfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn signal(&self, sig: i32) {
        let _ = sys::pidfd_send_signal(self.fd.get_ref().as_raw_fd(), sig);
    }

    /// Waits for the process to exit and reaps it.
    pub(crate) async fn wait(&self) -> Result<Exit> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| Error::io("cannot wait for a process", e))?;
            match sys::waitid_pidfd(self.fd.get_ref().as_raw_fd()) {
                Ok(Some(r)) => {
                    let ended = if r.code == libc::CLD_EXITED {
                        Ended::Exited(r.status)
                    } else {
                        Ended::Signaled(r.status)
                    };
                    let tv = |t: libc::timeval| {
                        Duration::from_secs(t.tv_sec.max(0) as u64)
                            + Duration::from_micros(t.tv_usec.max(0) as u64)
                    };
                    return Ok(Exit {
                        ended,
                        cpu_time: tv(r.rusage.ru_utime) + tv(r.rusage.ru_stime),
                        max_rss: (r.rusage.ru_maxrss.max(0) as u64) * 1024,
                    });
                }
                Ok(None) => guard.clear_ready(),
                Err(libc::EINTR) => {}
                Err(e) => {
                    return Err(Error::io(
                        "cannot reap a process",
                        std::io::Error::from_raw_os_error(e),
                    ));
                }
            }
        }
    }
}

/// The in-cell init in a sealed memfd: nothing can change it once written, and a cell
/// that reaches it through `/proc/<pid>/exe` finds only this copy.
pub(crate) fn init_memfd() -> Result<OwnedFd> {
    const MFD_CLOEXEC: libc::c_uint = 0x1;
    const MFD_ALLOW_SEALING: libc::c_uint = 0x2;
    const MFD_EXEC: libc::c_uint = 0x10;
    let name = c"aura-cell-init";
    // SAFETY: name is NUL-terminated.
    let mut fd =
        unsafe { libc::memfd_create(name.as_ptr(), MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC) };
    if fd < 0 && sys::errno() == libc::EINVAL {
        // Kernels before 6.3 do not know MFD_EXEC; their memfds are executable anyway.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), MFD_CLOEXEC | MFD_ALLOW_SEALING) };
    }
    if fd < 0 {
        return Err(Error::io(
            "cannot create the init memfd",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: memfd_create returned a new descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    sys::write_all(fd.as_raw_fd(), INIT_BINARY).map_err(|e| {
        Error::io(
            "cannot write the init memfd",
            std::io::Error::from_raw_os_error(e),
        )
    })?;
    // SAFETY: fchmod on our descriptor: readable and executable, never writable.
    unsafe { libc::fchmod(fd.as_raw_fd(), 0o555) };
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(Error::io(
            "cannot seal the init memfd",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// A C string from Rust text that was validated to hold no NUL.
pub(crate) fn cstring(s: impl Into<Vec<u8>>) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid("a string contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_memfd_is_sealed_and_executable() {
        let fd = init_memfd().unwrap();
        // SAFETY: fcntl on our descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert!(seals & libc::F_SEAL_WRITE != 0);
        let r = sys::write_all(fd.as_raw_fd(), b"x");
        assert_eq!(r, Err(libc::EPERM));
        assert!(INIT_BINARY.starts_with(b"\x7fELF"));
        assert!(
            INIT_BINARY.len() < 64 * 1024,
            "the init grew to {} bytes",
            INIT_BINARY.len()
        );
    }
}
