//! Control groups: cgroup v2 where the host has the unified hierarchy with controllers,
//! the v1 hierarchies (memory, cpu, cpuacct, cpuset, pids) where that is what it has.
//!
//! Which one is detected at run time from `/proc/self/mountinfo`. Every cell of a runtime
//! lives under `<hierarchy>/aura/<instance>/`, so that a runtime can find and remove what
//! a crashed predecessor left behind without touching anyone else's cgroups:
//!
//! ```text
//! aura/<instance>/_run-<n>            a one-shot run: limits and processes
//! aura/<instance>/<cell>              a long-lived cell: its limits
//! aura/<instance>/<cell>/_procs       ... and its processes (v2 forbids processes in a
//!                                     cgroup whose controllers are delegated to children)
//! aura/<instance>/<cell>/<child>/...  a nested cell, inside its parent's limits
//! ```
//!
//! Names that start with `_` can never collide with cell names, which are `[a-zA-Z0-9-]`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::spec::Limits;

/// Which cgroup interface a runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Version {
    V1,
    V2,
}

/// The cgroup interface to use: detect it, or insist on one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Auto,
    V1,
    V2,
}

/// The v1 controllers Aura uses. cpuacct is optional: without it CPU time is not reported.
const V1_REQUIRED: [&str; 4] = ["memory", "pids", "cpu", "cpuset"];
const V1_OPTIONAL: [&str; 1] = ["cpuacct"];
/// The v2 controllers Aura enables; cpuset is optional.
const V2_REQUIRED: [&str; 3] = ["memory", "pids", "cpu"];

/// Where the host's cgroups are, and which interface to use.
#[derive(Debug, Clone)]
pub(crate) struct Hierarchies {
    pub(crate) version: Version,
    /// v2: the unified mount point. Unused on v1.
    v2_root: PathBuf,
    /// v2: the controllers available at the root.
    v2_controllers: Vec<String>,
    /// v1: controller name -> mount point (co-mounted controllers share one).
    v1: BTreeMap<String, PathBuf>,
}

/// One mount of a cgroup file system, from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    mount_point: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

/// Unescapes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let mount_point = PathBuf::from(unescape(pre[4]));
        match post[0] {
            "cgroup2" => out.push(CgroupMount {
                mount_point,
                v2: true,
                controllers: Vec::new(),
            }),
            "cgroup" => {
                let controllers = post[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(str::to_owned)
                    .collect();
                out.push(CgroupMount {
                    mount_point,
                    v2: false,
                    controllers,
                });
            }
            _ => {}
        }
    }
    out
}

impl Hierarchies {
    /// Finds the host's cgroups and decides which interface to use.
    pub(crate) fn detect(mode: Mode) -> Result<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::io("cannot read /proc/self/mountinfo", e))?;
        Self::from_mounts(&parse_mountinfo(&text), mode, |p| {
            fs::read_to_string(p.join("cgroup.controllers")).ok()
        })
    }

    fn from_mounts(
        mounts: &[CgroupMount],
        mode: Mode,
        read_controllers: impl Fn(&Path) -> Option<String>,
    ) -> Result<Self> {
        // The unified hierarchy with the controllers we need, if any.
        let v2 = mounts.iter().filter(|m| m.v2).find_map(|m| {
            let ctl: Vec<String> = read_controllers(&m.mount_point)?
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            V2_REQUIRED
                .iter()
                .all(|c| ctl.iter().any(|x| x == c))
                .then(|| (m.mount_point.clone(), ctl))
        });
        let mut v1 = BTreeMap::new();
        for m in mounts.iter().filter(|m| !m.v2) {
            for c in &m.controllers {
                if V1_REQUIRED.contains(&c.as_str()) || V1_OPTIONAL.contains(&c.as_str()) {
                    v1.entry(c.clone()).or_insert_with(|| m.mount_point.clone());
                }
            }
        }
        let v1_ok = V1_REQUIRED.iter().all(|c| v1.contains_key(*c));
        let use_v2 = match mode {
            Mode::V2 => true,
            Mode::V1 => false,
            Mode::Auto => v2.is_some() || !v1_ok,
        };
        if use_v2 {
            let Some((root, controllers)) = v2 else {
                return Err(Error::Unsupported {
                    what: "no cgroup v2 hierarchy with the memory, pids and cpu controllers".into(),
                    hint: "mount cgroup2 at /sys/fs/cgroup with those controllers enabled, or use the v1 hierarchies".into(),
                });
            };
            return Ok(Hierarchies {
                version: Version::V2,
                v2_root: root,
                v2_controllers: controllers,
                v1: BTreeMap::new(),
            });
        }
        if !v1_ok {
            let missing: Vec<&str> = V1_REQUIRED
                .iter()
                .copied()
                .filter(|c| !v1.contains_key(*c))
                .collect();
            return Err(Error::Unsupported {
                what: format!(
                    "the cgroup v1 controllers {} are not mounted",
                    missing.join(", ")
                ),
                hint: "mount them under /sys/fs/cgroup, or use cgroup v2".into(),
            });
        }
        Ok(Hierarchies {
            version: Version::V1,
            v2_root: PathBuf::new(),
            v2_controllers: Vec::new(),
            v1,
        })
    }

    /// The distinct hierarchy roots this runtime writes to.
    fn roots(&self) -> Vec<PathBuf> {
        match self.version {
            Version::V2 => vec![self.v2_root.clone()],
            Version::V1 => {
                let mut r: Vec<PathBuf> = self.v1.values().cloned().collect();
                r.sort();
                r.dedup();
                r
            }
        }
    }

    fn v1_root(&self, controller: &str) -> Option<&Path> {
        self.v1.get(controller).map(PathBuf::as_path)
    }

    /// The controllers to enable in v2 `subtree_control`s.
    fn v2_enable(&self) -> String {
        let mut s = String::new();
        for c in ["cpu", "cpuset", "memory", "pids"] {
            if self.v2_controllers.iter().any(|x| x == c) {
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push('+');
                s.push_str(c);
            }
        }
        s
    }
}

/// The cgroups of one runtime instance: `aura/<instance>` in every hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub(crate) h: Hierarchies,
    /// `aura/<instance>`, relative to each hierarchy root.
    base: PathBuf,
}

/// Writes a control file, mapping EINVAL and ERANGE to a bad-argument error.
fn write_ctl(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| {
        if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ERANGE)) {
            Error::invalid(format!(
                "the kernel refused `{}` for {}",
                value.trim(),
                path.file_name()
                    .map(|f| f.to_string_lossy())
                    .unwrap_or_default()
            ))
        } else {
            Error::io(format!("cannot write {}", path.display()), e)
        }
    })
}

fn read_ctl(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read_ctl(path)?.trim().parse().ok()
}

/// A `key value` line from a flat-keyed file like cpu.stat or memory.events.
fn read_key(path: &Path, key: &str) -> Option<u64> {
    read_ctl(path)?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn mkdir(path: &Path) -> Result<bool> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(
            format!("cannot create cgroup {}", path.display()),
            e,
        )),
    }
}

/// Converts a v2 weight (1-10000, default 100) to v1 shares (2-262144, default 1024),
/// the inverse of the conversion runc and systemd use.
pub(crate) fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.saturating_sub(1) * 262_142) / 9_999
}

impl Tree {
    /// Prepares `aura/<instance>` in every hierarchy.
    pub(crate) fn new(h: Hierarchies, instance: &str) -> Result<Self> {
        let tree = Tree {
            h,
            base: Path::new("aura").join(instance),
        };
        match tree.h.version {
            Version::V2 => {
                let root = &tree.h.v2_root;
                let enable = tree.h.v2_enable();
                // The root must delegate the controllers; on most hosts it already does.
                enable_v2(root, &enable)?;
                let aura = root.join("aura");
                mkdir(&aura)?;
                enable_v2(&aura, &enable)?;
                let inst = root.join(&tree.base);
                mkdir(&inst)?;
                enable_v2(&inst, &enable)?;
            }
            Version::V1 => {
                for root in tree.h.roots() {
                    let aura = root.join("aura");
                    mkdir(&aura)?;
                    mkdir(&root.join(&tree.base))?;
                }
                // A new cpuset cgroup starts with no CPUs and no memory nodes, and no task
                // can join it until both are set.
                if let Some(cs) = tree.h.v1_root("cpuset") {
                    inherit_cpuset(&cs.join("aura"))?;
                    inherit_cpuset(&cs.join(&tree.base))?;
                }
            }
        }
        Ok(tree)
    }

    pub(crate) fn version(&self) -> Version {
        self.h.version
    }

    /// The instance directory in every hierarchy.
    fn instance_dirs(&self) -> Vec<PathBuf> {
        self.h.roots().iter().map(|r| r.join(&self.base)).collect()
    }

    /// Creates the cgroup `rel` (relative to the instance) with `limits`; a long-lived cell
    /// gets its `_procs` leaf. On error nothing is left behind.
    pub(crate) fn create(&self, rel: &Path, limits: &Limits, leaf: bool) -> Result<Cgroup> {
        self.make(rel, Some(limits), leaf)
    }

    /// Creates a spare one-shot cgroup ahead of need: made and prepared (what does not
    /// depend on limits), its limits applied when a run takes it ([`Cgroup::limit`]).
    pub(crate) fn create_spare(&self, rel: &Path) -> Result<Cgroup> {
        self.make(rel, None, false)
    }

    fn make(&self, rel: &Path, limits: Option<&Limits>, leaf: bool) -> Result<Cgroup> {
        let cg = Cgroup {
            version: self.h.version,
            dirs: self
                .h
                .roots()
                .iter()
                .map(|r| r.join(&self.base).join(rel))
                .collect(),
            v1: self
                .h
                .v1
                .iter()
                .map(|(c, r)| (c.clone(), r.join(&self.base).join(rel)))
                .collect(),
            leaf,
            enable: self.h.v2_enable(),
            depth: rel.components().count(),
        };
        let mut made = Vec::new();
        let result = (|| {
            for d in &cg.dirs {
                if !mkdir(d)? {
                    return Err(Error::io(
                        format!("cgroup {} already exists", d.display()),
                        io::Error::from_raw_os_error(libc::EEXIST),
                    ));
                }
                made.push(d.clone());
            }
            cg.prepare()?;
            if let Some(l) = limits {
                cg.limit(l)?;
            }
            if leaf {
                if cg.version == Version::V2 {
                    enable_v2(&cg.dirs[0], &cg.enable)?;
                }
                for d in &cg.dirs {
                    mkdir(&d.join("_procs"))?;
                    made.push(d.join("_procs"));
                }
                if let Some(cs) = cg.v1.get("cpuset") {
                    inherit_cpuset(&cs.join("_procs"))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            for d in made.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            return Err(e);
        }
        Ok(cg)
    }

    /// Removes everything under the instance: kills every process in it and deletes every
    /// cgroup. Used at start-up (a crashed predecessor's leftovers) and at shutdown.
    pub(crate) fn sweep(&self) -> Result<usize> {
        let mut removed = 0;
        for d in self.instance_dirs() {
            removed += sweep_children(&d)?;
        }
        Ok(removed)
    }

    /// Removes the instance directories themselves (after a sweep).
    pub(crate) fn remove_instance(&self) {
        for d in self.instance_dirs() {
            let _ = remove_dir_waiting(&d, Duration::from_secs(2));
        }
    }

    /// Sweeps the instances of dead processes named `<prefix><pid>` or
    /// `<prefix><pid>-<anything>` (ephemeral runtimes such as `aura cell run` and the
    /// tests name themselves so); returns how many were removed.
    pub(crate) fn sweep_dead_instances(&self, prefix: &str) -> usize {
        let mut n = 0;
        for root in self.h.roots() {
            let Ok(rd) = fs::read_dir(root.join("aura")) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name
                    .strip_prefix(prefix)
                    .and_then(|p| p.split('-').next())
                    .and_then(|p| p.parse::<i32>().ok())
                else {
                    continue;
                };
                // SAFETY: kill with signal 0 only checks whether the process exists.
                let alive = unsafe { libc::kill(pid, 0) } == 0 || sys_errno() == libc::EPERM;
                if !alive {
                    let _ = sweep_children(&e.path());
                    if remove_dir_waiting(&e.path(), Duration::from_secs(1)).is_ok() {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Whether anything is left under the instance (for leak tests).
    pub(crate) fn leftovers(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in self.instance_dirs() {
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        out.push(e.path());
                    }
                }
            }
        }
        out
    }
}

fn sys_errno() -> i32 {
    crate::sys::errno()
}

fn enable_v2(dir: &Path, enable: &str) -> Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let current = read_ctl(&path).unwrap_or_default();
    for c in enable.split_whitespace() {
        let name = &c[1..];
        if current.split_whitespace().any(|x| x == name) {
            continue;
        }
        write_ctl(&path, c)?;
    }
    Ok(())
}

/// Copies a v1 cpuset cgroup's parent's CPUs and memory nodes into it, if it has none.
fn inherit_cpuset(dir: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let mine = read_ctl(&dir.join(f)).unwrap_or_default();
        if mine.trim().is_empty() {
            let theirs = read_ctl(&parent.join(f)).unwrap_or_default();
            write_ctl(&dir.join(f), theirs.trim())?;
        }
    }
    Ok(())
}

/// Kills every process in `dir` and below, then removes every cgroup below `dir` (not
/// `dir` itself). Returns how many cgroups were removed.
fn sweep_children(dir: &Path) -> Result<usize> {
    if !dir.exists() {
        return Ok(0);
    }
    kill_tree(dir);
    let mut removed = 0;
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(0);
    };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            removed += sweep_children(&e.path())?;
            remove_dir_waiting(&e.path(), Duration::from_secs(5))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// SIGKILLs every process in `dir` and its descendants (v2 `cgroup.kill` where there is
/// one, which also covers processes forked meanwhile).
fn kill_tree(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..50 {
        let mut any = false;
        visit_procs(dir, &mut |pid| {
            any = true;
            // SAFETY: sending SIGKILL to a pid read from the cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        if !any {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn visit_procs(dir: &Path, f: &mut dyn FnMut(i32)) {
    if let Some(text) = read_ctl(&dir.join("cgroup.procs")) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            f(pid);
        }
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                visit_procs(&e.path(), f);
            }
        }
    }
}

/// Removes an empty cgroup directory, waiting for exiting processes to leave it.
fn remove_dir_waiting(dir: &Path, patience: Duration) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < patience => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Error::io(
                    format!("cannot remove cgroup {}", dir.display()),
                    e,
                ));
            }
        }
    }
}

/// One cell's cgroup in every hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Cgroup {
    pub(crate) version: Version,
    /// The cell's directory in each distinct hierarchy.
    dirs: Vec<PathBuf>,
    /// v1: controller -> the cell's directory in that controller's hierarchy.
    v1: BTreeMap<String, PathBuf>,
    /// Whether processes live in `_procs` below the cell's directory.
    leaf: bool,
    enable: String,
    /// How many cell levels deep this cgroup is (1 for a top-level cell).
    depth: usize,
}

/// Resource usage of a cell, from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// CPU time used by every process of the cell, in microseconds.
    pub cpu_time_us: u64,
    /// The most memory the cell has used, in bytes (where the kernel reports it).
    pub memory_peak_bytes: Option<u64>,
    pub memory_current_bytes: Option<u64>,
    pub pids_current: Option<u64>,
    /// How many times the kernel's OOM killer killed a process of the cell.
    pub oom_kills: u64,
}

impl Cgroup {
    /// Where processes go, per hierarchy.
    fn proc_dirs(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| {
                if self.leaf {
                    d.join("_procs")
                } else {
                    d.clone()
                }
            })
            .collect()
    }

    /// v2: the directory to clone into (CLONE_INTO_CGROUP). v1: none.
    pub(crate) fn v2_target(&self) -> Option<PathBuf> {
        (self.version == Version::V2).then(|| self.proc_dirs().remove(0))
    }

    /// v1: the `cgroup.procs` files a process writes "0" to, to join the cell.
    pub(crate) fn v1_procs_files(&self) -> Vec<PathBuf> {
        if self.version == Version::V2 {
            return Vec::new();
        }
        self.proc_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    fn ctl(&self, controller: &str, file: &str) -> Option<PathBuf> {
        match self.version {
            Version::V2 => Some(self.dirs[0].join(file)),
            Version::V1 => self.v1.get(controller).map(|d| d.join(file)),
        }
    }

    /// What every cgroup gets whatever its limits: no swap (a memory limit must mean what
    /// it says), and on v1 the parent's CPUs and memory nodes (a new cpuset cgroup has
    /// none, and no task can join it until both are set).
    fn prepare(&self) -> Result<()> {
        match self.version {
            Version::V2 => {
                let swap = self.dirs[0].join("memory.swap.max");
                if swap.exists() {
                    write_ctl(&swap, "0")?;
                }
            }
            Version::V1 => {
                if let Some(cs) = self.v1.get("cpuset") {
                    inherit_one(cs, "cpuset.cpus")?;
                    inherit_one(cs, "cpuset.mems")?;
                }
                if let Some(mem) = self.v1.get("memory") {
                    let swappiness = mem.join("memory.swappiness");
                    if swappiness.exists() {
                        // Older kernels refuse this under some parents; it is best effort.
                        let _ = fs::write(&swappiness, "0");
                    }
                }
            }
        }
        Ok(())
    }

    /// Prepares the cgroup and applies `l` (tests; [`Tree::create`] does both).
    #[cfg(test)]
    fn apply(&self, l: &Limits) -> Result<()> {
        self.prepare()?;
        self.limit(l)
    }

    /// Writes the limits that are set (after [`Cgroup::prepare`]).
    pub(crate) fn limit(&self, l: &Limits) -> Result<()> {
        match self.version {
            Version::V2 => {
                let d = &self.dirs[0];
                if let Some(w) = l.cpu_weight {
                    write_ctl(&d.join("cpu.weight"), &w.to_string())?;
                }
                if let Some(m) = l.cpu_max {
                    write_ctl(
                        &d.join("cpu.max"),
                        &format!("{} {}", m.quota_us, m.period_us),
                    )?;
                }
                if l.cpuset_cpus.is_some() || l.cpuset_mems.is_some() {
                    if !self.enable.contains("cpuset") {
                        return Err(Error::Unsupported {
                            what: "the cpuset controller is not available".into(),
                            hint: "enable cpuset in the root cgroup's subtree_control, or drop the cpuset limit".into(),
                        });
                    }
                    if let Some(c) = &l.cpuset_cpus {
                        write_ctl(&d.join("cpuset.cpus"), c)?;
                    }
                    if let Some(m) = &l.cpuset_mems {
                        write_ctl(&d.join("cpuset.mems"), m)?;
                    }
                }
                for (file, v) in [
                    ("memory.min", l.memory_min),
                    ("memory.low", l.memory_low),
                    ("memory.high", l.memory_high),
                    ("memory.max", l.memory_max),
                ] {
                    if let Some(v) = v {
                        write_ctl(&d.join(file), &v.to_string())?;
                    }
                }
                if let Some(p) = l.pids_max {
                    write_ctl(&d.join("pids.max"), &p.to_string())?;
                }
            }
            Version::V1 => {
                let dir = |c: &str| self.v1.get(c).cloned();
                if let Some(cpu) = dir("cpu") {
                    if let Some(w) = l.cpu_weight {
                        write_ctl(&cpu.join("cpu.shares"), &weight_to_shares(w).to_string())?;
                    }
                    if let Some(m) = l.cpu_max {
                        write_ctl(&cpu.join("cpu.cfs_period_us"), &m.period_us.to_string())?;
                        write_ctl(&cpu.join("cpu.cfs_quota_us"), &m.quota_us.to_string())?;
                    }
                }
                if let Some(cs) = dir("cpuset") {
                    if let Some(c) = &l.cpuset_cpus {
                        write_ctl(&cs.join("cpuset.cpus"), c)?;
                    }
                    if let Some(m) = &l.cpuset_mems {
                        write_ctl(&cs.join("cpuset.mems"), m)?;
                    }
                }
                if let Some(mem) = dir("memory") {
                    if let Some(v) = l.memory_low {
                        write_ctl(&mem.join("memory.soft_limit_in_bytes"), &v.to_string())?;
                    }
                    if let Some(v) = l.memory_max {
                        write_ctl(&mem.join("memory.limit_in_bytes"), &v.to_string())?;
                        // With swap accounting, forbid swap too; without it there is no
                        // file, and the host has no swap to account.
                        let memsw = mem.join("memory.memsw.limit_in_bytes");
                        if memsw.exists() {
                            write_ctl(&memsw, &v.to_string())?;
                        }
                    }
                }
                if let (Some(p), Some(pids)) = (l.pids_max, dir("pids")) {
                    write_ctl(&pids.join("pids.max"), &p.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// The cell's directory in each hierarchy.
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// How many OOM kills the cell has seen.
    fn own_oom_kills(&self) -> u64 {
        self.oom_kills_at(0)
    }

    /// OOM kills counted `up` levels above the cell (0: the cell itself).
    fn oom_kills_at(&self, up: usize) -> u64 {
        let climb = |p: &Path| {
            let mut d = p.to_owned();
            for _ in 0..up {
                d.pop();
            }
            d
        };
        match self.version {
            Version::V2 => {
                read_key(&climb(&self.dirs[0]).join("memory.events"), "oom_kill").unwrap_or(0)
            }
            Version::V1 => self
                .v1
                .get("memory")
                .and_then(|d| read_key(&climb(d).join("memory.oom_control"), "oom_kill"))
                .unwrap_or(0),
        }
    }

    /// OOM kills of the cell and of every enclosing cell: a limit on a parent cell kills
    /// a process of its child, and the kernel counts it at the parent.
    ///
    /// On v1 the kernel counts a kill only in the victim's own cgroup, which for a
    /// long-lived cell is its `_procs` leaf; on v2 counts propagate upwards. Summing the
    /// leaf, the cell and its ancestors covers both.
    pub(crate) fn oom_kills(&self) -> u64 {
        let leaf = if self.leaf { self.leaf_oom_kills() } else { 0 };
        leaf + (0..self.depth.max(1))
            .map(|up| self.oom_kills_at(up))
            .sum::<u64>()
    }

    fn leaf_oom_kills(&self) -> u64 {
        match self.version {
            Version::V2 => {
                read_key(&self.dirs[0].join("_procs/memory.events"), "oom_kill").unwrap_or(0)
            }
            Version::V1 => self
                .v1
                .get("memory")
                .and_then(|d| read_key(&d.join("_procs/memory.oom_control"), "oom_kill"))
                .unwrap_or(0),
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        match self.version {
            Version::V2 => {
                let d = &self.dirs[0];
                Usage {
                    cpu_time_us: read_key(&d.join("cpu.stat"), "usage_usec").unwrap_or(0),
                    memory_peak_bytes: read_u64(&d.join("memory.peak")),
                    memory_current_bytes: read_u64(&d.join("memory.current")),
                    pids_current: read_u64(&d.join("pids.current")),
                    oom_kills: self.own_oom_kills(),
                }
            }
            Version::V1 => Usage {
                cpu_time_us: self
                    .ctl("cpuacct", "cpuacct.usage")
                    .and_then(|p| read_u64(&p))
                    .map(|ns| ns / 1000)
                    .unwrap_or(0),
                memory_peak_bytes: self
                    .ctl("memory", "memory.max_usage_in_bytes")
                    .and_then(|p| read_u64(&p)),
                memory_current_bytes: self
                    .ctl("memory", "memory.usage_in_bytes")
                    .and_then(|p| read_u64(&p)),
                pids_current: self.ctl("pids", "pids.current").and_then(|p| read_u64(&p)),
                oom_kills: self.own_oom_kills(),
            },
        }
    }

    /// The host pids of every process in the cell (its own processes, not children cells').
    pub(crate) fn pids(&self) -> Vec<i32> {
        let dir = match self.version {
            Version::V2 => self.proc_dirs().remove(0),
            Version::V1 => {
                let base = self
                    .v1
                    .get("pids")
                    .cloned()
                    .unwrap_or_else(|| self.dirs[0].clone());
                if self.leaf { base.join("_procs") } else { base }
            }
        };
        read_ctl(&dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Sends `signal` to every process of the cell.
    pub(crate) fn signal_all(&self, signal: i32) {
        for pid in self.pids() {
            // SAFETY: signalling a pid read from the cell's cgroup.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Kills everything left in the cell (and its children) and removes its cgroups.
    pub(crate) fn destroy(&self) -> Result<()> {
        // Fast path: a cgroup with no process and no child cgroup left (a one-shot run
        // whose process 1 has been reaped, a freed cell) goes with one rmdir, which the
        // kernel refuses (EBUSY, ENOTEMPTY) while anything is still in it. Whatever it
        // refuses takes the full path below: kill everything, remove the children, wait.
        let left: Vec<&PathBuf> = self
            .dirs
            .iter()
            .filter(|d| match fs::remove_dir(d) {
                Ok(()) => false,
                Err(e) => e.kind() != io::ErrorKind::NotFound,
            })
            .collect();
        for d in &left {
            kill_tree(d);
        }
        for d in left {
            sweep_children(d)?;
            remove_dir_waiting(d, Duration::from_secs(5))?;
        }
        Ok(())
    }
}

/// Spare one-shot cgroups, made ahead of need on a blocking thread, so that a run does not
/// wait for cgroupfs on its way to starting (a v1 host makes five directories and writes
/// four files for each). A spare is used once, by one run, and removed with it: it is
/// never reused, so a run's usage and OOM kills are its own.
#[derive(Debug, Default)]
pub(crate) struct Spares {
    state: std::sync::Mutex<SpareState>,
}

#[derive(Debug, Default)]
struct SpareState {
    ready: Vec<Cgroup>,
    /// The names (relative to the instance) of spares being made now.
    making: Vec<PathBuf>,
    /// The runtime shut down: no more spares.
    closed: bool,
}

impl Spares {
    fn state(&self) -> std::sync::MutexGuard<'_, SpareState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A spare, if one is ready.
    pub(crate) fn take(&self) -> Option<Cgroup> {
        self.state().ready.pop()
    }

    /// Names the spares to make now so that `target` are ready or being made; the caller
    /// makes each and hands it to [`Spares::made`].
    pub(crate) fn reserve(&self, target: usize, mut name: impl FnMut() -> PathBuf) -> Vec<PathBuf> {
        let mut s = self.state();
        if s.closed {
            return Vec::new();
        }
        let n = target.saturating_sub(s.ready.len() + s.making.len());
        let names: Vec<PathBuf> = (0..n).map(|_| name()).collect();
        s.making.extend(names.iter().cloned());
        names
    }

    /// The spare `rel` was made (or could not be): kept, or removed if the runtime shut
    /// down meanwhile. Blocks while it removes one.
    pub(crate) fn made(&self, rel: &Path, r: Result<Cgroup>) {
        let doomed = {
            let mut s = self.state();
            s.making.retain(|m| m != rel);
            match r {
                Ok(cg) if !s.closed => {
                    s.ready.push(cg);
                    None
                }
                Ok(cg) => Some(cg),
                Err(_) => None,
            }
        };
        if let Some(cg) = doomed {
            let _ = cg.destroy();
        }
    }

    /// Refuses further spares and hands over those ready, for removal.
    pub(crate) fn close(&self) -> Vec<Cgroup> {
        let mut s = self.state();
        s.closed = true;
        std::mem::take(&mut s.ready)
    }

    /// Spares ready now.
    pub(crate) fn ready(&self) -> usize {
        self.state().ready.len()
    }

    /// Spares being made now.
    pub(crate) fn making(&self) -> usize {
        self.state().making.len()
    }

    /// Whether the cgroup directory `dir` (directly under the instance) is a spare, ready
    /// or being made: not a leftover. A spare a run took is no longer one.
    pub(crate) fn is_spare(&self, dir: &Path) -> bool {
        let s = self.state();
        s.ready.iter().any(|c| c.dirs().iter().any(|d| d == dir))
            || dir
                .file_name()
                .is_some_and(|n| s.making.iter().any(|m| m.as_os_str() == n))
    }
}

fn inherit_one(dir: &Path, file: &str) -> Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    let theirs = read_ctl(&parent.join(file)).unwrap_or_default();
    write_ctl(&dir.join(file), theirs.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
29 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
31 25 0:28 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
32 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const PURE_V2: &str = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const COMOUNTED_V1: &str = "\
26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
29 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";

    fn detect(info: &str, mode: Mode, v2_controllers: &str) -> Result<Hierarchies> {
        let c = v2_controllers.to_owned();
        Hierarchies::from_mounts(&parse_mountinfo(info), mode, move |_| Some(c.clone()))
    }

    #[test]
    fn a_hybrid_host_with_an_empty_unified_hierarchy_uses_v1() {
        let h = detect(HYBRID, Mode::Auto, "").unwrap();
        assert_eq!(h.version, Version::V1);
        assert_eq!(
            h.v1_root("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            h.v1_root("cpuacct").unwrap(),
            Path::new("/sys/fs/cgroup/cpuacct")
        );
        assert_eq!(h.roots().len(), 5);
        assert!(detect(HYBRID, Mode::V2, "").is_err());
    }

    #[test]
    fn a_pure_v2_host_uses_v2() {
        let h = detect(
            PURE_V2,
            Mode::Auto,
            "cpuset cpu io memory hugetlb pids rdma misc",
        )
        .unwrap();
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.roots(), vec![PathBuf::from("/sys/fs/cgroup")]);
        assert_eq!(h.v2_enable(), "+cpu +cpuset +memory +pids");
        // Without cpuset, the rest still works.
        let h = detect(PURE_V2, Mode::Auto, "cpu memory pids").unwrap();
        assert_eq!(h.v2_enable(), "+cpu +memory +pids");
        // Without memory, it does not.
        assert!(detect(PURE_V2, Mode::Auto, "cpu pids").is_err());
        assert!(detect(PURE_V2, Mode::V1, "cpu memory pids").is_err());
    }

    #[test]
    fn co_mounted_v1_controllers_share_a_root() {
        let h = detect(COMOUNTED_V1, Mode::Auto, "").unwrap();
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.v1_root("cpu"), h.v1_root("cpuacct"));
        assert_eq!(h.roots().len(), 4);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"\04"), r"\04");
    }

    #[test]
    fn weights_convert_like_runc() {
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10_000), 262_144);
        let hundred = weight_to_shares(100);
        assert!((2500..2700).contains(&hundred), "{hundred}");
    }

    /// A v2 tree built in a temporary directory that mimics cgroupfs files: checks which
    /// files a cell's limits are written to (the parts of v2 that can run without a v2
    /// host).
    #[test]
    fn v2_limits_land_in_the_right_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        let h = Hierarchies {
            version: Version::V2,
            v2_root: root.to_owned(),
            v2_controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
            v1: BTreeMap::new(),
        };
        let cg = Cgroup {
            version: Version::V2,
            dirs: vec![root.join("cell")],
            v1: BTreeMap::new(),
            leaf: true,
            enable: h.v2_enable(),
            depth: 1,
        };
        fs::create_dir(root.join("cell")).unwrap();
        fs::write(root.join("cell/memory.swap.max"), "max").unwrap();
        let limits = Limits {
            cpu_weight: Some(200),
            cpu_max: Some(crate::spec::CpuMax {
                quota_us: 50_000,
                period_us: 100_000,
            }),
            memory_max: Some(64 << 20),
            memory_low: Some(1 << 20),
            pids_max: Some(32),
            ..Limits::default()
        };
        cg.apply(&limits).unwrap();
        let read = |f: &str| fs::read_to_string(root.join("cell").join(f)).unwrap();
        assert_eq!(read("cpu.weight"), "200");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.low"), (1u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "32");
        assert_eq!(cg.v2_target().unwrap(), root.join("cell/_procs"));
        assert!(cg.v1_procs_files().is_empty());
        // A cpuset limit without the cpuset controller fails closed.
        let err = cg
            .apply(&Limits {
                cpuset_cpus: Some("0".into()),
                ..Limits::default()
            })
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }));
        // Usage reads the v2 files.
        fs::write(
            root.join("cell/cpu.stat"),
            "usage_usec 1234\nuser_usec 1000\n",
        )
        .unwrap();
        fs::write(root.join("cell/memory.peak"), "4096\n").unwrap();
        fs::write(
            root.join("cell/memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        let u = cg.usage();
        assert_eq!(u.cpu_time_us, 1234);
        assert_eq!(u.memory_peak_bytes, Some(4096));
        assert_eq!(u.oom_kills, 1);
    }
}
