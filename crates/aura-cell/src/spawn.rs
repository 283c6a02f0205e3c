//! Process creation for cells: the spawner thread that performs every `clone3`, the
//! sealed memfd with the in-cell init, the runtime's user namespace, pipes, and waiting
//! for processes through pidfds.
//!
//! All clones happen on two dedicated threads that live as long as the runtime and block
//! every signal: one in the host's mount namespace, and one that moves into a root
//! template's mount namespace before each clone, so that a cell cloned there gets a copy
//! of the template (see `template.rs`) instead of the host's mounts. Living long matters because a child's parent-death signal fires when
//! the *thread* that cloned it exits, and tokio's blocking threads come and go; blocking
//! signals matters because a signal handler of the runtime must never run in a child
//! between clone and exec (the child unblocks them just before executing).

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use crate::child::{self, Fresh, Join, Stage, Template};
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

/// What [`Spawner::join`] started.
#[derive(Debug)]
pub(crate) enum Joined {
    Direct(Spawned),
    Intermediate(Spawned),
}

enum Job {
    Fresh {
        plan: Box<Fresh>,
        flags: u64,
        cgroup_fd: Option<RawFd>,
        /// On the template thread: the template's mount namespace, entered before the
        /// clone.
        template: Option<RawFd>,
        reply: oneshot::Sender<Result<Spawned, i32>>,
    },
    Template {
        plan: Box<Template>,
        reply: oneshot::Sender<Result<Spawned, i32>>,
    },
    /// On the join thread.
    Join {
        plan: Box<Join>,
        reply: oneshot::Sender<Result<Spawned, i32>>,
    },
    /// Through an intermediate process, on the host thread.
    JoinVia {
        plan: Box<Join>,
        reply: oneshot::Sender<Result<Spawned, i32>>,
    },
    Userns {
        reply: oneshot::Sender<Result<Spawned, i32>>,
    },
}

/// The handle to the spawner threads. Dropping it ends them.
#[derive(Debug)]
pub(crate) struct Spawner {
    tx: std::sync::Mutex<mpsc::Sender<Job>>,
    /// The join thread (see [`join_loop`]); `None` where it could not start, and then
    /// executables join their cells through an intermediate process.
    join_tx: Option<std::sync::Mutex<mpsc::Sender<Job>>>,
    /// Set by the join thread if it could not return to the host's namespaces; from then
    /// on joins take the intermediate path.
    join_broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The template thread; `None` where it could not get a file-system context of its
    /// own (then no template is used, and every cell is built from scratch).
    template_tx: Option<std::sync::Mutex<mpsc::Sender<Job>>>,
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
                template,
                reply,
            } => {
                if let Some(ns) = template {
                    // SAFETY: setns on the template's namespace descriptor, which the
                    // runtime holds; this thread has a file-system context of its own, so
                    // only it moves.
                    if unsafe { libc::setns(ns, libc::CLONE_NEWNS) } < 0 {
                        let _ = reply.send(Err(sys::errno()));
                        continue;
                    }
                }
                let (r, pidfd) = clone_with(flags, libc::SIGCHLD as u64, cgroup_fd);
                if let Ok(0) = r {
                    child::run_fresh(&plan);
                }
                let _ = reply.send(spawned(r, pidfd));
            }
            Job::Template { plan, reply } => {
                let (r, pidfd) = clone_with(libc::CLONE_NEWNS as u64, libc::SIGCHLD as u64, None);
                if let Ok(0) = r {
                    child::run_template(&plan);
                }
                let _ = reply.send(spawned(r, pidfd));
            }
            Job::JoinVia { plan, reply } | Job::Join { plan, reply } => {
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

/// The namespace types an executable joins, in the order they are entered (mount last:
/// it moves the thread's root), with their names under `/proc/<pid>/ns`.
const JOINED: [(libc::c_int, &str); 6] = [
    (libc::CLONE_NEWCGROUP, "cgroup"),
    (libc::CLONE_NEWIPC, "ipc"),
    (libc::CLONE_NEWUTS, "uts"),
    (libc::CLONE_NEWNET, "net"),
    (libc::CLONE_NEWPID, "pid_for_children"),
    (libc::CLONE_NEWNS, "mnt"),
];

/// Moves the calling thread into `cell`'s namespaces, and into the host's (`host`, in
/// [`JOINED`]'s order) for the types the cell shares with the host (the network, for a
/// cell that has it).
fn enter(cell: &[(RawFd, libc::c_int)], host: &[OwnedFd]) -> Result<(), i32> {
    for ((kind, _), h) in JOINED.iter().zip(host) {
        let fd = cell
            .iter()
            .find(|(_, k)| k == kind)
            .map_or(h.as_raw_fd(), |(fd, _)| *fd);
        // SAFETY: setns on a namespace descriptor that the runtime (or this thread) holds.
        if unsafe { libc::setns(fd, *kind) } < 0 {
            return Err(sys::errno());
        }
    }
    Ok(())
}

/// The join thread: for each executable, enters the cell's namespaces (all but the user
/// namespace, which the child enters itself, single-threaded as the kernel requires),
/// clones the executable straight into them (and, on v2, into the cell's cgroup), and
/// returns to the host's namespaces, so that it never keeps a freed cell's namespaces
/// (and their mounts) alive. A pid namespace entered by a thread applies to the
/// children it clones, which is why this saves the intermediate process a join needs
/// otherwise.
fn join_loop(rx: &mpsc::Receiver<Job>, host: &[OwnedFd], broken: &std::sync::atomic::AtomicBool) {
    // SAFETY: blocking every signal on this thread only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
    while let Ok(job) = rx.recv() {
        let Job::Join { plan, reply } = job else {
            continue;
        };
        if let Err(e) = enter(&plan.namespaces, host) {
            let _ = reply.send(Err(e));
        } else {
            let (r, pidfd) = clone_with(0, libc::SIGCHLD as u64, plan.cgroup_fd);
            if let Ok(0) = r {
                child::run_join_direct(&plan);
            }
            let _ = reply.send(spawned(r, pidfd));
        }
        if enter(&[], host).is_err() {
            // Stuck in some cell's namespaces (which it would keep alive): hand further
            // joins to the intermediate path. The thread stays, as the parent its
            // executables' parent-death signal watches; joins already queued are still
            // right, since `enter` sets every namespace type.
            broken.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Starts the join thread, if it can have namespaces of its own: a file-system context
/// of its own (for the mount namespace) and descriptors of the host's namespaces to
/// return to.
fn start_join_thread(
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::sync::Mutex<mpsc::Sender<Job>>> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("aura-cell-join-spawner".into())
        .spawn(move || {
            // SAFETY: unshare with CLONE_FS affects this thread only.
            let ok = unsafe { libc::unshare(libc::CLONE_FS) } == 0;
            let host: Option<Vec<OwnedFd>> = ok
                .then(|| {
                    JOINED
                        .iter()
                        .map(|(_, name)| {
                            std::fs::File::open(format!("/proc/thread-self/ns/{name}"))
                                .map(OwnedFd::from)
                                .ok()
                        })
                        .collect()
                })
                .flatten();
            let _ = ready_tx.send(host.is_some());
            if let Some(host) = host {
                join_loop(&rx, &host, &broken);
            }
        })
        .ok()?;
    ready_rx
        .recv()
        .unwrap_or(false)
        .then(|| std::sync::Mutex::new(tx))
}

impl Spawner {
    /// Starts the spawner threads. `templates`: also the thread that clones cells from
    /// root templates; `join`: also the join thread.
    pub(crate) fn start(templates: bool, join: bool) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("aura-cell-spawner".into())
            .spawn(move || spawner_loop(&rx))
            .map_err(|e| Error::io("cannot start the cell spawner thread", e))?;
        let template_tx = if templates {
            let (ttx, trx) = mpsc::channel();
            let (ready_tx, ready_rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("aura-cell-template-spawner".into())
                .spawn(move || {
                    // Threads share one file-system context (root, working directory,
                    // mount namespace); setns into a mount namespace needs one of our own,
                    // so that moving this thread moves nothing else of the runtime.
                    // SAFETY: unshare with CLONE_FS affects this thread only.
                    let ok = unsafe { libc::unshare(libc::CLONE_FS) } == 0;
                    let _ = ready_tx.send(ok);
                    if ok {
                        spawner_loop(&trx);
                    }
                })
                .map_err(|e| Error::io("cannot start the cell template spawner thread", e))?;
            ready_rx
                .recv()
                .unwrap_or(false)
                .then(|| std::sync::Mutex::new(ttx))
        } else {
            None
        };
        let join_broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        Ok(Spawner {
            tx: std::sync::Mutex::new(tx),
            join_tx: if join {
                start_join_thread(join_broken.clone())
            } else {
                None
            },
            join_broken,
            template_tx,
        })
    }

    /// Whether cells can be cloned from root templates.
    pub(crate) fn has_template_thread(&self) -> bool {
        self.template_tx.is_some()
    }

    async fn submit(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<Spawned, i32>>,
    ) -> Result<Spawned> {
        let on_template = matches!(
            job,
            Job::Fresh {
                template: Some(_),
                ..
            }
        );
        let tx = match (&self.template_tx, on_template) {
            (Some(t), true) => t,
            (None, true) => return Err(Error::ShutDown),
            (_, false) => match (&self.join_tx, &job) {
                (Some(j), Job::Join { .. }) => j,
                _ => &self.tx,
            },
        };
        tx.lock()
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

    /// Clones a new cell's process 1; `template`: from that root template's mount
    /// namespace (the plan must be made for it).
    pub(crate) async fn fresh(
        &self,
        plan: Box<Fresh>,
        flags: u64,
        cgroup_fd: Option<RawFd>,
        template: Option<RawFd>,
    ) -> Result<Spawned> {
        let (reply, rx) = oneshot::channel();
        self.submit(
            Job::Fresh {
                plan,
                flags,
                cgroup_fd,
                template,
                reply,
            },
            rx,
        )
        .await
    }

    /// Clones a root template's builder.
    pub(crate) async fn template(&self, plan: Box<Template>) -> Result<Spawned> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Template { plan, reply }, rx).await
    }

    /// Starts an executable in a cell. `Direct`: the executable itself (the join thread
    /// cloned it into the cell); `Intermediate`: a process that joins the cell, clones the
    /// executable and reports its pid on the error pipe.
    pub(crate) async fn join(&self, plan: Box<Join>) -> Result<Joined> {
        let (reply, rx) = oneshot::channel();
        let direct =
            self.join_tx.is_some() && !self.join_broken.load(std::sync::atomic::Ordering::SeqCst);
        let job = if direct {
            Job::Join { plan, reply }
        } else {
            Job::JoinVia { plan, reply }
        };
        let s = self.submit(job, rx).await?;
        Ok(if direct {
            Joined::Direct(s)
        } else {
            Joined::Intermediate(s)
        })
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

    /// Kills the process and reaps it, blocking (for a process that cannot linger: it
    /// holds no handler for SIGKILL). For clean-up in `Drop`.
    pub(crate) fn kill_and_reap(&self) {
        self.signal(libc::SIGKILL);
        let fd = self.fd.get_ref().as_raw_fd();
        for _ in 0..1000 {
            match sys::waitid_pidfd(fd) {
                Ok(None) | Err(libc::EINTR) => std::thread::sleep(Duration::from_millis(1)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
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
