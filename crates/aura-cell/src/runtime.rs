//! The cell runtime: allocates and frees long-lived cells, starts, stops and waits for
//! their executables, keeps their logs, and cleans up after itself and after a crashed
//! predecessor.
//!
//! A long-lived cell is a cgroup plus namespaces held by a process 1 (the in-cell init in
//! `hold` mode) that reaps orphans and dies with the runtime. An executable joins the
//! cell's namespaces and cgroup through the [`crate::child::Join`] path; the runtime is
//! its parent (`CLONE_PARENT`), so it learns its exit status and resource usage directly.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use aura_core::Timestamp;
use aura_core::door::{Clock, SystemClock};
use serde::Serialize;
use tokio::sync::{Mutex, broadcast, watch};

use crate::cgroup::{self, Cgroup, Spares, Tree, Usage, Version};
use crate::child::{Finish, Fresh, Join};
use crate::error::{Error, Result};
use crate::logs::{Channel, EventLog, LineSplitter, LogLimits, LogStore};
use crate::rootfs::{self, CellFs, ResolvedBind};
use crate::seccomp::{self, SockFilter};
use crate::spawn::{self, Ended, Process, Spawner, cstring};
use crate::spec::{CellName, CellSpec, Env, ExecutableName, ExecutableSpec, ID_COUNT};
use crate::template::Templates;

/// Instance names of short-lived runtimes, `<prefix><pid>[-<n>]`: whichever runtime starts
/// next removes what such a runtime left if its process is gone.
pub(crate) const EPHEMERAL_PREFIXES: &[&str] = &["cli-", "test-"];

/// The default `PATH` inside a cell.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How to run cells.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the runtime keeps its state: logs, the staging directory, its lock. Created
    /// with mode 0700. The node uses `<home>/cells`.
    pub state_dir: PathBuf,
    /// The name under which this runtime's cgroups live (`aura/<instance>`); by default
    /// derived from `state_dir`, so two nodes on one host never clean up each other's
    /// cells.
    pub instance: Option<String>,
    /// cgroup v1 or v2; detected by default.
    pub cgroups: cgroup::Mode,
    /// The first host uid and gid that cell ids map to; cell ids 0-65535 become
    /// `id_base..id_base+65536`. None of them may be a real user of the host.
    pub id_base: u32,
    /// Between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
    /// Bounds on each executable's kept output.
    pub log_limits: LogLimits,
    /// The size of each cell's private /tmp (its pages count against the memory limit).
    pub tmp_bytes: u64,
    /// Host paths no cell may ever mount, whoever asks: a workspace or bind source at,
    /// inside or above one of them is refused. The node puts its home here (its keys,
    /// database and configuration); the state directory is always protected.
    pub protected: Vec<PathBuf>,
    /// The node's workspaces root, which may lie inside a protected path (by default it
    /// is `<home>/workspaces`): cells may mount what is inside it. It must not itself hold
    /// a protected path.
    pub workspaces_root: Option<PathBuf>,
    /// Start executables in long-lived cells from a thread that enters the cell's
    /// namespaces and clones them straight in (the default), instead of through an
    /// intermediate process that joins the cell first (one more fork of the runtime).
    pub join_thread: bool,
    /// Spare cgroups for one-shot runs kept ready ahead of need (made in the background,
    /// each used by one run only); 0 makes every run's cgroup on its way to starting.
    pub spare_cgroups: usize,
    /// Clone cells from pre-built root templates (the default), instead of building each
    /// cell's root from scratch; see the crate's `template` module. Cells with extra binds,
    /// and every cell where a template cannot be built, take the from-scratch path anyway.
    pub root_template: bool,
    pub clock: Arc<dyn Clock>,
}

impl Options {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Options {
            state_dir: state_dir.into(),
            instance: None,
            cgroups: cgroup::Mode::Auto,
            id_base: 1_000_000_000,
            stop_grace: Duration::from_secs(5),
            log_limits: LogLimits::default(),
            tmp_bytes: 256 * 1024 * 1024,
            protected: Vec::new(),
            workspaces_root: None,
            root_template: true,
            spare_cgroups: 2,
            join_thread: true,
            clock: Arc::new(SystemClock),
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    pub(crate) fn from_ended(e: Ended) -> Self {
        match e {
            Ended::Exited(c) => ExitStatus::Exited(c),
            Ended::Signaled(s) => ExitStatus::Signaled(s),
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exited with code {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
        }
    }
}

/// The conventional name of a signal.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => "signal",
    }
}

/// How an executable ended, with its own resource usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    pub status: ExitStatus,
    /// Killed by the kernel's OOM killer because the cell hit its memory limit.
    pub oom_killed: bool,
    pub exited_at: Timestamp,
    /// CPU time of the process and the children it waited for.
    pub cpu_time: Duration,
    /// Peak resident memory of the largest of those processes.
    pub max_rss_bytes: u64,
}

/// An executable, as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutableInfo {
    pub name: ExecutableName,
    pub cell: CellName,
    /// The host pid.
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub argv: Vec<String>,
    pub description: String,
    pub started_at: Timestamp,
    pub exit: Option<ExitInfo>,
}

/// A cell, as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CellInfo {
    pub spec: CellSpec,
    /// Whom the cell belongs to, as the surface that allocated it said (the HTTP API puts
    /// the namespace here); `None` for cells of the local operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub cgroup_v2: bool,
    /// The host pid of the cell's process 1.
    pub init_pid: i32,
    pub allocated_at: Timestamp,
    pub executables: Vec<ExecutableInfo>,
    pub usage: Usage,
}

/// The cells as a tree (children nested under their parents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CellTree {
    pub cell: CellInfo,
    pub children: Vec<CellTree>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Allocated {
    pub cgroup_v2: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Started {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// A signal the runtime saw end a process (Aurae's POSIX signal stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignalEvent {
    pub cell: CellName,
    pub executable: ExecutableName,
    pub pid: i32,
    pub signal: i32,
}

#[derive(Debug)]
pub(crate) struct Exe {
    pub(crate) name: ExecutableName,
    pub(crate) cell: CellName,
    spec: ExecutableSpec,
    argv: Vec<String>,
    pub(crate) pid: i32,
    uid: u32,
    gid: u32,
    started_at: Timestamp,
    process: Arc<Process>,
    pub(crate) status: watch::Receiver<Option<ExitInfo>>,
    pub(crate) logs: Arc<LogStore>,
}

impl Exe {
    fn info(&self) -> ExecutableInfo {
        ExecutableInfo {
            name: self.name.clone(),
            cell: self.cell.clone(),
            pid: self.pid,
            uid: self.uid,
            gid: self.gid,
            argv: self.argv.clone(),
            description: self.spec.description.clone(),
            started_at: self.started_at,
            exit: *self.status.borrow(),
        }
    }

    fn running(&self) -> bool {
        self.status.borrow().is_none()
    }

    /// Signals the executable and its process group.
    fn signal(&self, sig: i32) {
        if self.running() {
            self.process.signal(sig);
            // The executable leads its own session and process group; signal the group
            // so that its children stop too.
            // SAFETY: kill with a negative pid signals the group, which cannot be reused
            // while its leader is our unreaped child.
            unsafe { libc::kill(-self.pid, sig) };
        }
    }

    async fn wait(&self, timeout: Option<Duration>) -> Option<ExitInfo> {
        let mut rx = self.status.clone();
        let fut = rx.wait_for(|s| s.is_some());
        let r = match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.ok()?,
            None => fut.await,
        };
        r.ok().and_then(|s| *s)
    }
}

#[derive(Debug)]
pub(crate) struct CellEntry {
    spec: CellSpec,
    owner: Option<String>,
    cgroup: Cgroup,
    init: Arc<Process>,
    /// Closing it tells the init to end the cell; dropping the entry closes it.
    lifeline: StdMutex<Option<OwnedFd>>,
    /// (namespace, type), in the order an executable joins them.
    namespaces: Vec<(OwnedFd, libc::c_int)>,
    /// v2: the `_procs` cgroup directory, for CLONE_INTO_CGROUP.
    cgroup_dir: Option<OwnedFd>,
    /// v1: the `_procs` cgroups' `cgroup.procs` files, open for writing, which an
    /// executable writes "0" to (opened once, not for every executable).
    procs_files: Vec<OwnedFd>,
    workspace: Option<PathBuf>,
    default_ids: (u32, u32),
    allocated_at: Timestamp,
    exes: StdMutex<BTreeMap<ExecutableName, Arc<Exe>>>,
}

impl CellEntry {
    fn exes(&self) -> Vec<Arc<Exe>> {
        self.exes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn info(&self, v2: bool) -> CellInfo {
        CellInfo {
            spec: self.spec.clone(),
            owner: self.owner.clone(),
            cgroup_v2: v2,
            init_pid: self.init.pid,
            allocated_at: self.allocated_at,
            executables: self.exes().iter().map(|e| e.info()).collect(),
            usage: self.cgroup.usage(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) opts: Options,
    instance: String,
    pub(crate) tree: Tree,
    spawner: Spawner,
    userns: OwnedFd,
    init_fd: OwnedFd,
    devnull: OwnedFd,
    filter: Arc<Vec<SockFilter>>,
    base: rootfs::Base,
    templates: Templates,
    spares: Spares,
    cap_last: u32,
    stage: CString,
    cells: Mutex<BTreeMap<CellName, Arc<CellEntry>>>,
    pids: StdMutex<HashMap<i32, Arc<Exe>>>,
    /// Canonical [`Options::protected`] paths, the state directory among them.
    protected: Vec<PathBuf>,
    /// Canonical [`Options::workspaces_root`].
    workspaces_root: Option<PathBuf>,
    /// User namespaces for id-mapped workspaces, by the owner (uid, gid) they map.
    idmaps: StdMutex<HashMap<(u32, u32), Arc<OwnedFd>>>,
    pub(crate) events: Arc<EventLog>,
    signals: broadcast::Sender<SignalEvent>,
    run_counter: AtomicU64,
    shut_down: AtomicBool,
    _lock: fs::File,
}

/// The cell runtime. Cheap to clone; every clone is the same runtime.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

/// What a process needs besides its command.
pub(crate) struct ProcessSetup {
    pub(crate) argv: Vec<String>,
    pub(crate) file: String,
    pub(crate) env: Env,
    pub(crate) cwd: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The three standard descriptors a process gets (the child's ends).
pub(crate) struct Stdio {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// A cell's process 1 (and a root template's keeper): the init in `hold` mode.
fn hold_setup() -> ProcessSetup {
    ProcessSetup {
        argv: vec!["aura-cell-init".into(), "hold".into()],
        file: String::new(),
        env: Env::default(),
        cwd: "/".into(),
        uid: 0,
        gid: 0,
    }
}

fn instance_for(state_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let canonical = fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    let h = aura_core::Hash::sha256(canonical.as_os_str().as_bytes()).to_hex();
    format!("h{}", &h[..12])
}

fn valid_instance(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn read_cap_last() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// How a workspace is mounted into a cell, and the ids a cell runs as by default.
#[derive(Debug)]
pub(crate) struct Workspace {
    pub(crate) path: PathBuf,
    /// The user namespace of an id-mapped mount (a directory of an unprivileged host
    /// user); `None` for a plain bind (a directory of the cells' own ids).
    pub(crate) userns: Option<Arc<OwnedFd>>,
    /// Cell-side (uid, gid) of the workspace's owner.
    pub(crate) ids: (u32, u32),
}

/// A path's canonical form; for a path that does not exist (yet), its deepest existing
/// ancestor's canonical form with the rest appended, so that a later canonical path
/// inside it compares as inside.
fn canonical_or_given(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(c) = fs::canonicalize(cur) {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return p.to_owned(),
        }
    }
}

impl Runtime {
    /// Starts a runtime: checks the host (root, kernel features, cgroups), takes the
    /// state directory's lock, and removes whatever a previous runtime of the same
    /// instance left behind (processes, cgroups). Blocks briefly; call it at start-up.
    pub async fn start(opts: Options) -> Result<Runtime> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Unsupported {
                what: "cells need root".into(),
                hint: "run aura as root (cells map their users onto unprivileged host ids)".into(),
            });
        }
        let missing = crate::sys::missing_syscalls();
        if !missing.is_empty() {
            return Err(Error::Unsupported {
                what: format!("the kernel lacks {}", missing.join(", ")),
                hint: "cells need Linux 5.12 or later".into(),
            });
        }
        if opts.id_base == 0 || opts.id_base.checked_add(ID_COUNT).is_none() {
            return Err(Error::invalid(
                "id_base must leave room for 65536 ids and not be 0",
            ));
        }
        let instance = match &opts.instance {
            Some(i) if valid_instance(i) => i.clone(),
            Some(i) => {
                return Err(Error::invalid(format!(
                    "invalid cell runtime instance `{i}`"
                )));
            }
            None => instance_for(&opts.state_dir),
        };
        fs::create_dir_all(&opts.state_dir)
            .map_err(|e| Error::io(format!("cannot create {}", opts.state_dir.display()), e))?;
        fs::set_permissions(&opts.state_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("cannot restrict {}", opts.state_dir.display()), e))?;
        let lock = lock_state(&opts.state_dir)?;
        let mut protected: Vec<PathBuf> = opts
            .protected
            .iter()
            .map(|p| canonical_or_given(p))
            .collect();
        protected.push(canonical_or_given(&opts.state_dir));
        let workspaces_root = opts.workspaces_root.as_deref().map(canonical_or_given);
        if let Some(w) = &workspaces_root
            && let Some(p) = protected.iter().find(|p| p.starts_with(w))
        {
            return Err(Error::invalid(format!(
                "the workspaces root {} holds {}, which cells must never see; give workspaces a directory of their own",
                w.display(),
                p.display()
            )));
        }

        let h = cgroup::Hierarchies::detect(opts.cgroups)?;
        let tree = Tree::new(h, &instance)?;
        // Crash clean-up: a previous runtime of this instance (or a dead `aura cell run`)
        // may have left processes and cgroups. Mounts need no clean-up: every mount of a
        // cell lives in the cell's own mount namespace and dies with it.
        let swept = tree.sweep()?;
        let dead = EPHEMERAL_PREFIXES
            .iter()
            .map(|p| tree.sweep_dead_instances(p))
            .sum::<usize>();
        let logs = opts.state_dir.join("logs");
        if logs.exists() {
            let _ = fs::remove_dir_all(&logs);
        }
        let stage_dir = opts.state_dir.join("root");
        match fs::create_dir(&stage_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::io(
                    format!("cannot create {}", stage_dir.display()),
                    e,
                ));
            }
        }
        let stage = cstring(stage_dir.as_os_str().as_encoded_bytes())?;

        let spawner = Spawner::start(opts.root_template, opts.join_thread)?;
        let userns = spawner.user_namespace(opts.id_base, ID_COUNT).await?;
        let init_fd = spawn::init_memfd()?;
        let devnull = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| Error::io("cannot open /dev/null", e))?;
        let (signals, _) = broadcast::channel(256);
        let rt = Runtime {
            inner: Arc::new(Inner {
                instance,
                tree,
                spawner,
                userns,
                init_fd,
                devnull: devnull.into(),
                filter: Arc::new(seccomp::program()),
                base: rootfs::Base::from_host(),
                templates: Templates::default(),
                spares: Spares::default(),
                cap_last: read_cap_last(),
                stage,
                cells: Mutex::new(BTreeMap::new()),
                pids: StdMutex::new(HashMap::new()),
                protected,
                workspaces_root,
                idmaps: StdMutex::new(HashMap::new()),
                events: Arc::new(EventLog::new(1_000)),
                signals,
                run_counter: AtomicU64::new(0),
                shut_down: AtomicBool::new(false),
                _lock: lock,
                opts,
            }),
        };
        rt.event(format!(
            "cell runtime started: instance {}, cgroup {}, {swept} leftover cgroups removed{}",
            rt.inner.instance,
            match rt.cgroup_version() {
                Version::V1 => "v1",
                Version::V2 => "v2",
            },
            if dead > 0 {
                format!(", {dead} dead `cell run` instances removed")
            } else {
                String::new()
            }
        ));
        Ok(rt)
    }

    pub fn cgroup_version(&self) -> Version {
        self.inner.tree.version()
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.opts.clock.now()
    }

    /// Adds a line to the runtime's own log ([`Runtime::events`]); the surfaces that serve
    /// the runtime use it to record whom they refused.
    pub fn event(&self, line: String) {
        self.inner.events.record(self.now(), line);
    }

    /// The runtime's own log.
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    /// Signals that ended executables, as they happen.
    pub fn signals(&self) -> broadcast::Receiver<SignalEvent> {
        self.inner.signals.subscribe()
    }

    fn check_running(&self) -> Result<()> {
        if self.inner.shut_down.load(Ordering::SeqCst) {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Cgroups left under this runtime's instance (for leak checks): empty when every
    /// cell has been freed. Spare cgroups ready for the next runs are not leftovers.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        self.inner
            .tree
            .leftovers()
            .into_iter()
            .filter(|p| !self.inner.spares.is_spare(p))
            .collect()
    }

    /// The cgroup for a one-shot run with `limits`: a spare if one is ready (made ahead,
    /// in the background), else made now; either way the spares are topped up.
    pub(crate) async fn run_cgroup(&self, limits: &crate::spec::Limits) -> Result<Cgroup> {
        let spare = self.inner.spares.take();
        self.refill_spares();
        match spare {
            Some(cg) => match cg.limit(limits) {
                Ok(()) => Ok(cg),
                Err(e) => {
                    let _ = tokio::task::spawn_blocking(move || cg.destroy()).await;
                    Err(e)
                }
            },
            None => {
                let rel = PathBuf::from(format!("_run-{}", self.next_run_id()));
                self.inner.tree.create(&rel, limits, false)
            }
        }
    }

    /// Starts making spare cgroups in the background up to [`Options::spare_cgroups`].
    fn refill_spares(&self) {
        let names = self
            .inner
            .spares
            .reserve(self.inner.opts.spare_cgroups, || {
                PathBuf::from(format!("_spare-{}", self.next_run_id()))
            });
        for rel in names {
            // The task holds the runtime for the moment it takes, so that a runtime dropped
            // meanwhile sweeps the spare with the rest.
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || {
                let r = inner.tree.create_spare(&rel);
                inner.spares.made(&rel, r);
            });
        }
    }

    /// How many spare cgroups are ready now (for tests and benchmarks).
    pub fn spare_cgroups(&self) -> usize {
        self.inner.spares.ready()
    }

    /// Refuses a host path that would show a cell the node's own files: one at, inside or
    /// above a protected path, unless it lies inside the workspaces root.
    pub(crate) fn guard(&self, what: &str, p: &Path) -> Result<()> {
        if let Some(w) = &self.inner.workspaces_root
            && p.starts_with(w)
            && p != w.as_path()
        {
            return Ok(());
        }
        if let Some(q) = self
            .inner
            .protected
            .iter()
            .find(|q| crate::workspace::overlaps(p, q))
        {
            return Err(Error::Forbidden {
                what: format!(
                    "{what} {} would show a cell {}, which holds the node's keys, database or state",
                    p.display(),
                    q.display()
                ),
                hint: "the node's home is never mountable into a cell; use a workspace, or a directory outside it".into(),
            });
        }
        Ok(())
    }

    /// Binds with their sources resolved and guarded.
    pub(crate) fn resolve_binds(&self, binds: &[crate::spec::Bind]) -> Result<Vec<ResolvedBind>> {
        binds
            .iter()
            .map(|b| {
                let r = rootfs::resolve_bind(b)?;
                self.guard("the bind source", &r.source)?;
                Ok(r)
            })
            .collect()
    }

    /// Resolves a workspace and decides how to mount it. A directory of the cells' own
    /// ids (a node's workspace) is bound as it is: a cell's root owns it, as host uid
    /// `id_base`. A directory of an unprivileged host user is bound id-mapped so that its
    /// owner, and only its owner, appears inside (the cell runs as that user). A
    /// directory of the host's root is refused: whatever mapping let a cell write there
    /// would leave files, setuid ones included, that belong to the host's root.
    pub(crate) async fn workspace(&self, ws: Option<&Path>) -> Result<Option<Workspace>> {
        let Some(ws) = ws else { return Ok(None) };
        let path = fs::canonicalize(ws).map_err(|e| {
            Error::invalid(format!("workspace {} cannot be used: {e}", ws.display()))
        })?;
        let meta = fs::metadata(&path)
            .map_err(|e| Error::invalid(format!("workspace {}: {e}", ws.display())))?;
        if !meta.is_dir() {
            return Err(Error::invalid(format!(
                "workspace {} is not a directory",
                ws.display()
            )));
        }
        self.guard("the workspace", &path)?;
        let base = self.inner.opts.id_base;
        let cell_id = |id: u32| id.checked_sub(base).filter(|i| *i < ID_COUNT);
        let (uid, gid) = (meta.uid(), meta.gid());
        if let Some(cu) = cell_id(uid) {
            let cg = cell_id(gid).unwrap_or(cu);
            return Ok(Some(Workspace {
                path,
                userns: None,
                ids: (cu, cg),
            }));
        }
        if uid == 0 || gid == 0 {
            return Err(Error::Forbidden {
                what: format!(
                    "the workspace {} belongs to root: what a cell wrote there would be root's on the host",
                    ws.display()
                ),
                hint: format!(
                    "give it to the cells (`chown -R {base}:{base} DIR`: a cell's root is host uid {base}) or to an unprivileged user"
                ),
            });
        }
        if uid >= ID_COUNT || gid >= ID_COUNT {
            return Err(Error::invalid(format!(
                "the workspace {} belongs to uid {uid}, gid {gid}; a cell's ids go up to {} only",
                ws.display(),
                ID_COUNT - 1
            )));
        }
        let userns = self.idmap(uid, gid).await?;
        Ok(Some(Workspace {
            path,
            userns: Some(userns),
            ids: (uid, gid),
        }))
    }

    /// The user namespace for an id-mapped workspace of `uid:gid`: it maps that one
    /// user and group (cell-side the same numbers, host-side `id_base` plus them) and
    /// nothing else, so a cell can write there only as the owner.
    async fn idmap(&self, uid: u32, gid: u32) -> Result<Arc<OwnedFd>> {
        if let Some(fd) = self
            .inner
            .idmaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(uid, gid))
        {
            return Ok(fd.clone());
        }
        let base = self.inner.opts.id_base;
        let fd = self
            .inner
            .spawner
            .user_namespace_with(
                &format!("{uid} {} 1\n", base + uid),
                &format!("{gid} {} 1\n", base + gid),
            )
            .await?;
        Ok(self
            .inner
            .idmaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((uid, gid))
            .or_insert_with(|| Arc::new(fd))
            .clone())
    }

    /// The process's default environment, the cell's, then the executable's own.
    pub(crate) fn environment(&self, home: &str, cell: &Env, own: &Env) -> Env {
        let mut env = Env::default();
        env.set("PATH", DEFAULT_PATH);
        env.set("HOME", home);
        env.merged(cell).merged(own)
    }

    fn finish(&self, p: &ProcessSetup, fds: Vec<RawFd>, hold: bool) -> Result<Finish> {
        let mut argv = vec![cstring("aura-cell-init")?];
        if hold {
            argv.push(cstring("hold")?);
        } else {
            argv.push(cstring("exec")?);
            argv.push(cstring(p.file.as_str())?);
            for a in &p.argv {
                argv.push(cstring(a.as_str())?);
            }
        }
        let envp = p
            .env
            .0
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Finish::new(
            self.inner.userns.as_raw_fd(),
            p.uid,
            p.gid,
            self.inner.cap_last,
            cstring(p.cwd.as_str())?,
            fds,
            self.inner.init_fd.as_raw_fd(),
            argv,
            envp,
            self.inner.filter.clone(),
        ))
    }

    /// The mount namespace of the root template `fs_` can be cloned from, if any (built
    /// on first use); `None`: build its root from scratch.
    async fn template_for(&self, fs_: &CellFs<'_>) -> Option<RawFd> {
        if !self.inner.opts.root_template || !fs_.binds.is_empty() {
            return None;
        }
        let variant = rootfs::Variant {
            workspace: fs_.workspace.is_some(),
        };
        let inner = &self.inner;
        let build = || async move {
            let stdio = self.null_stdio()?;
            crate::template::build(
                &inner.spawner,
                &inner.base,
                &inner.stage,
                variant,
                [stdio.stdin, stdio.stdout, stdio.stderr],
                |fds| self.finish(&hold_setup(), fds, true),
            )
            .await
        };
        inner
            .templates
            .get(variant, build, |e| {
                inner.events.record(
                    inner.opts.clock.now(),
                    format!("no root template (cells are built from scratch): {e}"),
                );
            })
            .await
    }

    /// How many root templates this runtime has built (for tests and benchmarks).
    pub fn root_templates(&self) -> usize {
        self.inner.templates.built()
    }

    /// Starts a new cell's process 1: either the command itself (a one-shot run) or the
    /// init in `hold` mode (a long-lived cell, with `lifeline`).
    pub(crate) async fn launch_fresh(
        &self,
        cgroup: &Cgroup,
        fs_: &CellFs<'_>,
        p: &ProcessSetup,
        stdio: Stdio,
        lifeline: Option<OwnedFd>,
    ) -> Result<Process> {
        self.check_running()?;
        let template = self.template_for(fs_).await;
        // A cell on a template gets host directories as detached trees made here; the
        // child holds its own copies of the descriptors, so ours go after the clone.
        let (ops, trees) = match template {
            Some(_) => {
                let (trees, owned) = rootfs::cell_trees(&self.inner.base, fs_)?;
                (
                    rootfs::template_cell_plan(&self.inner.base, fs_, &trees)?,
                    owned,
                )
            }
            None => (rootfs::plan(&self.inner.base, fs_)?, Vec::new()),
        };
        let procs: Vec<fs::File> = cgroup
            .v1_procs_files()
            .iter()
            .map(|f| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(f)
                    .map_err(|e| Error::io(format!("cannot open {}", f.display()), e))
            })
            .collect::<Result<_>>()?;
        let cgroup_dir = match cgroup.v2_target() {
            Some(d) => Some(open_dir(&d)?),
            None => None,
        };
        let (err_r, err_w) = spawn::pipe()?;
        let mut fds = vec![
            stdio.stdin.as_raw_fd(),
            stdio.stdout.as_raw_fd(),
            stdio.stderr.as_raw_fd(),
            err_w.as_raw_fd(),
        ];
        if let Some(l) = &lifeline {
            fds.push(l.as_raw_fd());
        }
        let finish = self.finish(p, fds, lifeline.is_some())?;
        let plan = Box::new(Fresh {
            cgroup_procs: procs.iter().map(|f| f.as_raw_fd()).collect(),
            on_template: template.is_some(),
            stage: self.inner.stage.clone(),
            root_data: cstring("mode=0755,size=16m")?,
            ops,
            hostname: cstring(fs_.hostname)?,
            loopback: !fs_.network,
            err_fd: err_w.as_raw_fd(),
            finish,
        });
        let mut flags =
            (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC)
                as u64;
        if !fs_.network {
            flags |= libc::CLONE_NEWNET as u64;
        }
        let spawned = self
            .inner
            .spawner
            .fresh(
                plan,
                flags,
                cgroup_dir.as_ref().map(|d| d.as_raw_fd()),
                template,
            )
            .await?;
        // The child has its copies; ours must close so that end-of-file can be seen.
        drop((err_w, stdio, lifeline, procs, cgroup_dir, trees));
        let process = Process::new(spawned)?;
        let report = spawn::read_report(err_r).await?;
        if let Some(e) = report.error(&p.argv.join(" ")) {
            let _ = process.wait().await;
            return Err(e);
        }
        Ok(process)
    }

    /// Allocates a long-lived cell.
    pub async fn allocate(&self, spec: CellSpec) -> Result<Allocated> {
        self.allocate_owned(spec, None).await
    }

    /// Allocates a long-lived cell tagged with its owner (see [`CellInfo::owner`]).
    pub async fn allocate_owned(&self, spec: CellSpec, owner: Option<String>) -> Result<Allocated> {
        self.check_running()?;
        spec.validate()?;
        let mut cells = self.inner.cells.lock().await;
        if cells.contains_key(&spec.name) {
            return Err(Error::CellExists(spec.name.to_string()));
        }
        if let Some(parent) = spec.name.parent()
            && !cells.contains_key(&parent)
        {
            return Err(Error::CellNotFound(parent.to_string()));
        }
        let workspace = self.workspace(spec.workspace.as_deref()).await?;
        let binds = self.resolve_binds(&spec.binds)?;
        let rel: PathBuf = spec.name.parts().collect();
        let cgroup = self.inner.tree.create(&rel, &spec.limits, true)?;
        let result = self
            .allocate_in(&spec, owner, &cgroup, workspace, &binds)
            .await;
        match result {
            Ok(entry) => {
                cells.insert(spec.name.clone(), Arc::new(entry));
                drop(cells);
                self.event(format!("allocated cell {}", spec.name));
                Ok(Allocated {
                    cgroup_v2: self.cgroup_version() == Version::V2,
                })
            }
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || cgroup.destroy()).await;
                self.event(format!("allocating cell {} failed: {e}", spec.name));
                Err(e)
            }
        }
    }

    async fn allocate_in(
        &self,
        spec: &CellSpec,
        owner: Option<String>,
        cgroup: &Cgroup,
        workspace: Option<Workspace>,
        binds: &[ResolvedBind],
    ) -> Result<CellEntry> {
        let default_ids = workspace.as_ref().map_or((0, 0), |w| w.ids);
        // Opened before the cell's process 1 exists, so that a failure leaves nothing.
        let procs_files: Vec<OwnedFd> = cgroup
            .v1_procs_files()
            .iter()
            .map(|f| {
                fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(f)
                    .map(OwnedFd::from)
                    .map_err(|e| Error::io(format!("cannot open {}", f.display()), e))
            })
            .collect::<Result<_>>()?;
        let fs_ = CellFs {
            hostname: spec.name.leaf(),
            network: spec.network,
            workspace: workspace.as_ref().map(|w| w.path.as_path()),
            // The descriptor stays open (held by `workspace`) until the cell is cloned.
            workspace_userns: workspace
                .as_ref()
                .and_then(|w| w.userns.as_ref())
                .map(|f| f.as_raw_fd()),
            binds,
            uid: default_ids.0,
            gid: default_ids.1,
            id_base: self.inner.opts.id_base,
            tmp_bytes: self.inner.opts.tmp_bytes,
        };
        let (life_r, life_w) = spawn::pipe()?;
        let setup = hold_setup();
        let stdio = self.null_stdio()?;
        let init = self
            .launch_fresh(cgroup, &fs_, &setup, stdio, Some(life_r))
            .await?;
        let mut kinds = vec![
            ("cgroup", libc::CLONE_NEWCGROUP),
            ("ipc", libc::CLONE_NEWIPC),
            ("uts", libc::CLONE_NEWUTS),
        ];
        if !spec.network {
            kinds.push(("net", libc::CLONE_NEWNET));
        }
        kinds.push(("pid", libc::CLONE_NEWPID));
        kinds.push(("mnt", libc::CLONE_NEWNS));
        let mut namespaces = Vec::new();
        for (name, kind) in kinds {
            let path = format!("/proc/{}/ns/{name}", init.pid);
            match fs::File::open(&path) {
                Ok(f) => namespaces.push((OwnedFd::from(f), kind)),
                Err(e) => {
                    init.signal(libc::SIGKILL);
                    let _ = init.wait().await;
                    return Err(Error::io(format!("cannot open {path}"), e));
                }
            }
        }
        let cgroup_dir = match cgroup.v2_target() {
            Some(d) => Some(open_dir(&d)?),
            None => None,
        };
        Ok(CellEntry {
            spec: spec.clone(),
            owner,
            cgroup: cgroup.clone(),
            init: Arc::new(init),
            lifeline: StdMutex::new(Some(life_w)),
            namespaces,
            cgroup_dir,
            procs_files,
            workspace: workspace.map(|w| w.path),
            default_ids,
            allocated_at: self.now(),
            exes: StdMutex::new(BTreeMap::new()),
        })
    }

    pub(crate) fn null_stdio(&self) -> Result<Stdio> {
        let dup = || {
            self.inner
                .devnull
                .try_clone()
                .map_err(|e| Error::io("cannot duplicate /dev/null", e))
        };
        Ok(Stdio {
            stdin: dup()?,
            stdout: dup()?,
            stderr: dup()?,
        })
    }

    async fn cell(&self, name: &CellName) -> Result<Arc<CellEntry>> {
        self.inner
            .cells
            .lock()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CellNotFound(name.to_string()))
    }

    /// Starts an executable in a cell.
    pub async fn start_executable(
        &self,
        cell_name: &CellName,
        spec: ExecutableSpec,
    ) -> Result<Started> {
        self.check_running()?;
        spec.validate()?;
        let cell = self.cell(cell_name).await?;
        {
            let exes = cell.exes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = exes.get(&spec.name)
                && old.running()
            {
                return Err(Error::ExecutableExists {
                    cell: cell_name.to_string(),
                    executable: spec.name.to_string(),
                });
            }
        }
        let uid = spec.uid.unwrap_or(cell.default_ids.0);
        let gid = spec
            .gid
            .unwrap_or(if spec.uid.is_some() && spec.gid.is_none() {
                uid
            } else {
                cell.default_ids.1
            });
        let home = if cell.workspace.is_some() {
            "/workspace"
        } else {
            "/tmp"
        };
        let cwd = spec.cwd.clone().unwrap_or_else(|| {
            if cell.workspace.is_some() {
                "/workspace"
            } else {
                "/"
            }
            .to_owned()
        });
        let setup = ProcessSetup {
            argv: spec.command.to_argv(),
            file: spec.command.file(),
            env: self.environment(home, &cell.spec.env, &spec.env),
            cwd,
            uid,
            gid,
        };
        let (out_r, out_w) = spawn::pipe()?;
        let (err_r, err_w) = spawn::pipe()?;
        let stdio = Stdio {
            stdin: self
                .inner
                .devnull
                .try_clone()
                .map_err(|e| Error::io("cannot duplicate /dev/null", e))?,
            stdout: out_w,
            stderr: err_w,
        };
        let oom_before = cell.cgroup.oom_kills();
        let process = self.launch_join(&cell, &setup, stdio).await?;
        aura_metrics::global().inc(&aura_metrics::CELL_STARTS, &["executable"]);
        let started_at = self.now();
        let log_path = self
            .inner
            .opts
            .state_dir
            .join("logs")
            .join(cell_name.as_str())
            .join(format!("{}.log", spec.name));
        let logs = Arc::new(
            LogStore::new(Some(log_path), self.inner.opts.log_limits)
                .map_err(|e| Error::io("cannot create the executable's log", e))?,
        );
        let (status_tx, status_rx) = watch::channel(None);
        let process = Arc::new(process);
        let exe = Arc::new(Exe {
            name: spec.name.clone(),
            cell: cell_name.clone(),
            argv: setup.argv.clone(),
            spec,
            pid: process.pid,
            uid,
            gid,
            started_at,
            process: process.clone(),
            status: status_rx,
            logs: logs.clone(),
        });
        // Output readers: lines into the store until both pipes close.
        let clock = self.inner.opts.clock.clone();
        let out = spawn::async_reader(out_r)?;
        let err = spawn::async_reader(err_r)?;
        tokio::spawn(async move {
            tokio::join!(
                pump_lines(out, Channel::Stdout, &logs, clock.as_ref()),
                pump_lines(err, Channel::Stderr, &logs, clock.as_ref())
            );
            logs.close();
        });
        // The exit monitor.
        // The monitor holds what it reports to, not the runtime: a runtime dropped while
        // executables run must still be dropped (and clean up).
        let events = self.inner.events.clone();
        let signals = self.inner.signals.clone();
        let clock = self.inner.opts.clock.clone();
        let cgroup = cell.cgroup.clone();
        let workspace = cell.workspace.clone();
        let (cname, ename, pid) = (cell_name.clone(), exe.name.clone(), exe.pid);
        tokio::spawn(async move {
            let exit = match process.wait().await {
                Ok(e) => e,
                Err(e) => {
                    events.record(clock.now(), format!("cannot wait for {cname}/{ename}: {e}"));
                    return;
                }
            };
            // Swept before anyone hears of the exit, so what an executable left is inert
            // by the time its caller looks.
            if let Some(ws) = &workspace {
                sweep_logged(&events, clock.as_ref(), ws, &format!("{cname}/{ename}")).await;
            }
            let status = ExitStatus::from_ended(exit.ended);
            let oom_killed =
                status == ExitStatus::Signaled(libc::SIGKILL) && cgroup.oom_kills() > oom_before;
            let _ = status_tx.send(Some(ExitInfo {
                status,
                oom_killed,
                exited_at: clock.now(),
                cpu_time: exit.cpu_time,
                max_rss_bytes: exit.max_rss,
            }));
            if let ExitStatus::Signaled(signal) = status {
                let _ = signals.send(SignalEvent {
                    cell: cname.clone(),
                    executable: ename.clone(),
                    pid,
                    signal,
                });
            }
            events.record(
                clock.now(),
                format!(
                    "executable {ename} (pid {pid}) in cell {cname} {status}{}",
                    if oom_killed { ", out of memory" } else { "" }
                ),
            );
        });
        {
            let mut exes = cell.exes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = exes.insert(exe.name.clone(), exe.clone()) {
                self.pids().remove(&old.pid);
            }
        }
        self.pids().insert(exe.pid, exe.clone());
        self.event(format!(
            "started executable {} (pid {}) in cell {cell_name}",
            exe.name, exe.pid
        ));
        Ok(Started {
            pid: exe.pid,
            uid,
            gid,
        })
    }

    fn pids(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<Exe>>> {
        self.inner.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn launch_join(
        &self,
        cell: &CellEntry,
        p: &ProcessSetup,
        stdio: Stdio,
    ) -> Result<Process> {
        let (err_r, err_w) = spawn::pipe()?;
        let fds = vec![
            stdio.stdin.as_raw_fd(),
            stdio.stdout.as_raw_fd(),
            stdio.stderr.as_raw_fd(),
            err_w.as_raw_fd(),
        ];
        let plan = Box::new(Join {
            cgroup_procs: cell.procs_files.iter().map(|f| f.as_raw_fd()).collect(),
            cgroup_fd: cell.cgroup_dir.as_ref().map(|d| d.as_raw_fd()),
            namespaces: cell
                .namespaces
                .iter()
                .map(|(f, k)| (f.as_raw_fd(), *k))
                .collect(),
            err_fd: err_w.as_raw_fd(),
            finish: self.finish(p, fds, false)?,
        });
        let joined = self.inner.spawner.join(plan).await?;
        drop((err_w, stdio));
        let report = match joined {
            spawn::Joined::Direct(s) => {
                let process = Process::new(s)?;
                let report = spawn::read_report(err_r).await?;
                if let Some(e) = report.error(&p.argv.join(" ")) {
                    let _ = process.wait().await;
                    return Err(e);
                }
                return Ok(process);
            }
            spawn::Joined::Intermediate(s) => {
                let intermediate = Process::new(s)?;
                let report = spawn::read_report(err_r).await?;
                let _ = intermediate.wait().await;
                report
            }
        };
        let child = match report.pid {
            Some(pid) => Some(Process::adopt(pid)?),
            None => None,
        };
        if let Some(e) = report.error(&p.argv.join(" ")) {
            if let Some(c) = child {
                let _ = c.wait().await;
            }
            return Err(e);
        }
        child.ok_or_else(|| Error::Setup {
            step: "starting the process in the cell",
            source: std::io::Error::from_raw_os_error(libc::EPROTO),
        })
    }

    async fn executable(&self, cell: &CellName, name: &ExecutableName) -> Result<Arc<Exe>> {
        let c = self.cell(cell).await?;
        let exes = c.exes.lock().unwrap_or_else(|e| e.into_inner());
        exes.get(name)
            .cloned()
            .ok_or_else(|| Error::ExecutableNotFound {
                cell: cell.to_string(),
                executable: name.to_string(),
            })
    }

    /// Stops an executable: SIGTERM to it and its process group, then SIGKILL after the
    /// grace period. Returns how it ended.
    pub async fn stop(
        &self,
        cell: &CellName,
        name: &ExecutableName,
        grace: Option<Duration>,
    ) -> Result<ExecutableInfo> {
        let exe = self.executable(cell, name).await?;
        stop_exe(&exe, grace.unwrap_or(self.inner.opts.stop_grace)).await;
        self.event(format!("stopped executable {name} in cell {cell}"));
        Ok(exe.info())
    }

    /// Waits for an executable to exit; `None` if the timeout passed first.
    pub async fn wait(
        &self,
        cell: &CellName,
        name: &ExecutableName,
        timeout: Option<Duration>,
    ) -> Result<Option<ExecutableInfo>> {
        let exe = self.executable(cell, name).await?;
        Ok(exe.wait(timeout).await.map(|_| exe.info()))
    }

    /// An executable's log store (history and live lines).
    pub async fn logs(&self, cell: &CellName, name: &ExecutableName) -> Result<Arc<LogStore>> {
        Ok(self.executable(cell, name).await?.logs.clone())
    }

    pub async fn executable_info(
        &self,
        cell: &CellName,
        name: &ExecutableName,
    ) -> Result<ExecutableInfo> {
        Ok(self.executable(cell, name).await?.info())
    }

    /// The executable with this host pid (Aurae addresses output streams by pid).
    pub fn by_pid(&self, pid: i32) -> Result<(ExecutableInfo, Arc<LogStore>)> {
        let pids = self.pids();
        let exe = pids.get(&pid).ok_or(Error::ProcessNotFound(pid))?;
        Ok((exe.info(), exe.logs.clone()))
    }

    pub async fn inspect(&self, name: &CellName) -> Result<CellInfo> {
        let v2 = self.cgroup_version() == Version::V2;
        Ok(self.cell(name).await?.info(v2))
    }

    /// Every cell, as a tree.
    pub async fn list(&self) -> Vec<CellTree> {
        let v2 = self.cgroup_version() == Version::V2;
        let cells = self.inner.cells.lock().await;
        fn children(
            cells: &BTreeMap<CellName, Arc<CellEntry>>,
            parent: Option<&CellName>,
            v2: bool,
        ) -> Vec<CellTree> {
            cells
                .iter()
                .filter(|(n, _)| n.parent().as_ref() == parent)
                .map(|(n, c)| CellTree {
                    cell: c.info(v2),
                    children: children(cells, Some(n), v2),
                })
                .collect()
        }
        children(&cells, None, v2)
    }

    /// Frees a cell and its children: stops every executable (SIGTERM, grace, SIGKILL),
    /// ends the cell's process 1, and removes its cgroups and logs.
    pub async fn free(&self, name: &CellName) -> Result<()> {
        let mut cells = self.inner.cells.lock().await;
        if !cells.contains_key(name) {
            return Err(Error::CellNotFound(name.to_string()));
        }
        // Deepest first, so that a parent's cgroup is empty when it goes.
        let mut doomed: Vec<CellName> = cells
            .keys()
            .filter(|n| *n == name || n.as_str().starts_with(&format!("{name}/")))
            .cloned()
            .collect();
        doomed.sort_by_key(|n| std::cmp::Reverse(n.depth()));
        let mut first_err = None;
        for n in doomed {
            if let Some(entry) = cells.remove(&n)
                && let Err(e) = self.destroy(&n, &entry).await
            {
                first_err.get_or_insert(e);
            }
        }
        drop(cells);
        self.event(format!("freed cell {name}"));
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn destroy(&self, name: &CellName, entry: &CellEntry) -> Result<()> {
        let exes = entry.exes();
        let grace = self.inner.opts.stop_grace;
        futures_join_all(exes.iter().map(|e| stop_exe(e, grace))).await;
        {
            let mut pids = self.pids();
            for e in &exes {
                pids.remove(&e.pid);
            }
        }
        // Closing the lifeline ends the init; SIGKILL makes sure. Process 1's death takes
        // every remaining process of the cell's pid namespace with it.
        entry
            .lifeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        entry.init.signal(libc::SIGKILL);
        let _ = entry.init.wait().await;
        if let Some(ws) = &entry.workspace {
            sweep_logged(
                &self.inner.events,
                self.inner.opts.clock.as_ref(),
                ws,
                &format!("cell {name}"),
            )
            .await;
        }
        let cgroup = entry.cgroup.clone();
        tokio::task::spawn_blocking(move || cgroup.destroy())
            .await
            .map_err(|e| {
                Error::io(
                    "cgroup clean-up panicked",
                    std::io::Error::other(e.to_string()),
                )
            })??;
        let logs = self.inner.opts.state_dir.join("logs").join(name.as_str());
        let _ = fs::remove_dir_all(logs);
        Ok(())
    }

    /// Frees every cell and removes the runtime's cgroups. The runtime refuses new work
    /// afterwards.
    pub async fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        // No spare may be made once the sweep below has run: refuse new ones, and wait
        // (briefly) for those being made, which remove themselves.
        drop(self.inner.spares.close());
        for _ in 0..5_000 {
            if self.inner.spares.making() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let top: Vec<CellName> = {
            let cells = self.inner.cells.lock().await;
            cells
                .keys()
                .filter(|n| n.parent().is_none())
                .cloned()
                .collect()
        };
        for n in top {
            let _ = self.free(&n).await;
        }
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = inner.tree.sweep();
            inner.tree.remove_instance();
        })
        .await;
        self.event("cell runtime shut down".into());
    }

    pub(crate) fn next_run_id(&self) -> u64 {
        self.inner.run_counter.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn id_base(&self) -> u32 {
        self.inner.opts.id_base
    }
}

impl Drop for Inner {
    /// A runtime dropped without `shutdown` still leaves nothing behind: its cells'
    /// processes are killed and its cgroups removed.
    fn drop(&mut self) {
        let _ = self.tree.sweep();
        self.tree.remove_instance();
    }
}

/// Waits for all the futures (a tiny join_all, to avoid a dependency for one use).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    for f in set {
        f.await;
    }
}

/// SIGTERM, the grace period, then SIGKILL.
async fn stop_exe(exe: &Exe, grace: Duration) {
    if !exe.running() {
        return;
    }
    exe.signal(libc::SIGTERM);
    if exe.wait(Some(grace)).await.is_none() {
        exe.signal(libc::SIGKILL);
        let _ = exe.wait(Some(Duration::from_secs(30))).await;
    }
}

/// Reads a pipe to its end, pushing complete lines into the store.
async fn pump_lines(
    mut r: tokio::net::unix::pipe::Receiver,
    channel: Channel,
    logs: &LogStore,
    clock: &dyn Clock,
) {
    use tokio::io::AsyncReadExt as _;
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = Vec::new();
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                splitter.push(&buf[..n], &mut lines);
                let now = clock.now();
                for l in lines.drain(..) {
                    logs.push(channel, now, l);
                }
            }
        }
    }
    splitter.finish(&mut lines);
    let now = clock.now();
    for l in lines.drain(..) {
        logs.push(channel, now, l);
    }
}

pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
}

/// Takes the state directory's lock, so that two runtimes never share (and clean up) one
/// instance.
fn lock_state(dir: &Path) -> Result<fs::File> {
    let path = dir.join("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    // SAFETY: flock on our descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        return Err(Error::Busy(dir.display().to_string()));
    }
    Ok(f)
}

/// Sweeps `ws` on a blocking thread and logs what changed or why it could not.
pub(crate) async fn sweep_logged(events: &EventLog, clock: &dyn Clock, ws: &Path, after: &str) {
    let dir = ws.to_owned();
    let result = tokio::task::spawn_blocking(move || crate::workspace::sweep(&dir)).await;
    let line = match result {
        Ok(Ok(s)) if !s.changed() => return,
        Ok(Ok(s)) => format!(
            "swept {} after {after}: {} setuid or setgid bits cleared, {} device nodes removed, {} directories too deep closed",
            ws.display(),
            s.privileges_stripped,
            s.devices_removed,
            s.closed_too_deep
        ),
        Ok(Err(e)) => format!("cannot sweep {} after {after}: {e}", ws.display()),
        Err(e) => format!("sweeping {} after {after} panicked: {e}", ws.display()),
    };
    events.record(clock.now(), line);
}
