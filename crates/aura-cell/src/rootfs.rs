//! The cell's root file system, planned on the host before cloning.
//!
//! ```text
//! /            a tmpfs, read-only once built
//! /usr /bin /sbin /lib*   the host's, read-only (symlinks such as Debian's /bin -> usr/bin
//!                         are recreated as symlinks, not bound)
//! /etc         generated: passwd, group, hosts, hostname, nsswitch.conf, the loader
//!              cache; /etc/alternatives read-only; resolv.conf, services, protocols
//!              and /etc/ssl only when the cell has the network
//! /dev         null zero full random urandom tty, fd/std* links, shm -> /tmp
//! /proc        a fresh proc for the cell's pid namespace; Docker's masked paths covered
//!              by the null device or an empty read-only tmpfs, its read-only paths so
//! /tmp         a private tmpfs (charged to the cell's memory limit)
//! /workspace   the workspace, read-write, nosuid and nodev: a plain bind when it belongs
//!              to the cells' ids (a node's workspaces), else an id-mapped bind that maps
//!              only its unprivileged owner (`aura cell run --workspace` on a user's
//!              directory); never a mapping that writes as the host's root
//! ```
//!
//! There is no /sys: a cell has no business with the host's devices or firmware.
//!
//! Two ways to build it: [`plan`] builds all of it in the cell's child (the fallback);
//! [`template_plan`] builds the part every cell shares once, in a root template (see
//! `template.rs`), and [`template_cell_plan`] adds a cell's own part on a copy of it:
//! /etc on a tmpfs of the cell's own, /tmp, /proc and its masks, and the workspace (from a
//! detached tree made on the host, [`cell_trees`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::child::Op;
use crate::error::{Error, Result};
use crate::spawn::cstring;
use crate::sys;

/// The host directories a cell gets read-only by default.
const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Docker's masked /proc files: they leak kernel memory, keys or scheduling details.
const MASKED_FILES: &[&str] = &[
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
];
/// Docker's masked /proc directories.
const MASKED_DIRS: &[&str] = &["proc/acpi", "proc/asound", "proc/scsi"];
/// Docker's read-only /proc paths: kernel tunables and triggers.
const READONLY: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// The masked and read-only /proc paths, for tests and documentation.
pub fn masked_paths() -> impl Iterator<Item = &'static str> {
    MASKED_FILES.iter().chain(MASKED_DIRS).copied()
}

pub fn readonly_paths() -> impl Iterator<Item = &'static str> {
    READONLY.iter().copied()
}

#[derive(Debug, Clone)]
enum SystemEntry {
    Dir(&'static str),
    Symlink(&'static str, PathBuf),
}

/// What the host offers every cell, read once when the runtime starts.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    system: Vec<SystemEntry>,
    ld_cache: Option<Vec<u8>>,
    alternatives: bool,
    ssl: bool,
    services: Option<Vec<u8>>,
    protocols: Option<Vec<u8>>,
}

impl Base {
    pub(crate) fn from_host() -> Self {
        let mut system = Vec::new();
        for name in SYSTEM_DIRS {
            let p = Path::new("/").join(name);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(t) = std::fs::read_link(&p) {
                        system.push(SystemEntry::Symlink(name, t));
                    }
                }
                Ok(m) if m.is_dir() => system.push(SystemEntry::Dir(name)),
                _ => {}
            }
        }
        Base {
            system,
            ld_cache: std::fs::read("/etc/ld.so.cache").ok(),
            alternatives: Path::new("/etc/alternatives").is_dir(),
            ssl: Path::new("/etc/ssl").is_dir(),
            services: std::fs::read("/etc/services").ok(),
            protocols: std::fs::read("/etc/protocols").ok(),
        }
    }

    fn symlink_names(&self) -> impl Iterator<Item = &str> {
        self.system.iter().filter_map(|e| match e {
            SystemEntry::Symlink(n, _) => Some(*n),
            SystemEntry::Dir(_) => None,
        })
    }
}

/// A bind with its source resolved on the host.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedBind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub writable: bool,
    pub dir: bool,
}

/// Resolves a bind's source to a canonical, existing host path.
pub(crate) fn resolve_bind(b: &crate::spec::Bind) -> Result<ResolvedBind> {
    let source = std::fs::canonicalize(&b.source).map_err(|e| {
        Error::invalid(format!(
            "bind source {} cannot be used: {e}",
            b.source.display()
        ))
    })?;
    let meta = std::fs::metadata(&source)
        .map_err(|e| Error::invalid(format!("bind source {}: {e}", source.display())))?;
    Ok(ResolvedBind {
        source,
        target: b.target().to_owned(),
        writable: b.writable,
        dir: meta.is_dir(),
    })
}

/// Everything cell-specific about the root file system.
#[derive(Debug)]
pub(crate) struct CellFs<'a> {
    pub hostname: &'a str,
    pub network: bool,
    pub workspace: Option<&'a Path>,
    /// The user namespace of the workspace's id-mapped mount; `None` for a plain bind.
    pub workspace_userns: Option<std::os::fd::RawFd>,
    pub binds: &'a [ResolvedBind],
    /// The cell user's ids, for /etc/passwd.
    pub uid: u32,
    pub gid: u32,
    /// The host id cell root maps to (owner of /tmp).
    pub id_base: u32,
    pub tmp_bytes: u64,
}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_owned()
}

fn c(p: impl AsRef<Path>) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt as _;
    cstring(p.as_ref().as_os_str().as_bytes())
}

/// Checks binds against the layout: none may land in a system directory, pass through a
/// recreated symlink, or nest inside another bind.
fn check_binds(base: &Base, binds: &[ResolvedBind]) -> Result<()> {
    let symlinks: Vec<&str> = base.symlink_names().collect();
    for (i, b) in binds.iter().enumerate() {
        let first = rel(&b.target)
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        if SYSTEM_DIRS.contains(&first.as_str()) {
            let why = if symlinks.contains(&first.as_str()) {
                "passes through the symlink"
            } else {
                "is inside the read-only"
            };
            return Err(Error::invalid(format!(
                "bind target {} {why} /{first}",
                b.target.display()
            )));
        }
        for (j, other) in binds.iter().enumerate() {
            if i != j && b.target.starts_with(&other.target) {
                return Err(Error::invalid(format!(
                    "bind target {} is inside another bind's target {}",
                    b.target.display(),
                    other.target.display()
                )));
            }
        }
    }
    Ok(())
}

const RO_BIND: u64 = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;

fn mkdir(ops: &mut Vec<Op>, p: &str) -> Result<()> {
    ops.push(Op::Mkdir {
        path: c(p)?,
        mode: 0o755,
    });
    Ok(())
}

/// The host's system directories, read-only, and its symlinks among them.
fn system_ops(base: &Base, ops: &mut Vec<Op>) -> Result<()> {
    for e in &base.system {
        match e {
            SystemEntry::Dir(name) => {
                mkdir(ops, name)?;
                ops.push(Op::Bind {
                    source: c(Path::new("/").join(name))?,
                    target: c(name)?,
                    attr: RO_BIND,
                    recursive: true,
                });
            }
            SystemEntry::Symlink(name, target) => ops.push(Op::Symlink {
                target: c(target)?,
                path: c(name)?,
            }),
        }
    }
    Ok(())
}

/// The generated files of a cell's /etc, by name.
fn etc_files(base: &Base, cell: &CellFs<'_>) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();
    let home = if cell.workspace.is_some() {
        "/workspace"
    } else {
        "/tmp"
    };
    let mut passwd = format!("root:x:0:0:root:{home}:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    if cell.uid != 0 && cell.uid != 65_534 {
        passwd.push_str(&format!(
            "user:x:{}:{}:user:{home}:/bin/sh\n",
            cell.uid, cell.gid
        ));
    }
    if cell.gid != 0 && cell.gid != 65_534 {
        group.push_str(&format!("user:x:{}:\n", cell.gid));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    files.push(("passwd", passwd.into_bytes()));
    files.push(("group", group.into_bytes()));
    files.push(("hostname", format!("{}\n", cell.hostname).into_bytes()));
    files.push((
        "hosts",
        format!(
            "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            cell.hostname
        )
        .into_bytes(),
    ));
    files.push((
        "nsswitch.conf",
        b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n".to_vec(),
    ));
    if let Some(cache) = &base.ld_cache {
        files.push(("ld.so.cache", cache.clone()));
    }
    if cell.network {
        // Read now, not at start-up: the host's resolver configuration may change.
        if let Ok(resolv) = std::fs::read("/etc/resolv.conf") {
            files.push(("resolv.conf", resolv));
        }
        if let Some(s) = &base.services {
            files.push(("services", s.clone()));
        }
        if let Some(p) = &base.protocols {
            files.push(("protocols", p.clone()));
        }
    }
    files
}

fn etc_file_ops(files: Vec<(&'static str, Vec<u8>)>, ops: &mut Vec<Op>) -> Result<()> {
    for (name, data) in files {
        ops.push(Op::File {
            path: c(Path::new("etc").join(name))?,
            data,
        });
    }
    Ok(())
}

/// /dev: fresh nodes made by the runtime itself, never the host's or the cell's.
fn dev_ops(ops: &mut Vec<Op>) -> Result<()> {
    mkdir(ops, "dev")?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        ops.push(Op::CharDevice {
            path: c(Path::new("dev").join(name))?,
            major,
            minor,
        });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("shm", "/tmp"),
    ] {
        ops.push(Op::Symlink {
            target: c(target)?,
            path: c(Path::new("dev").join(name))?,
        });
    }
    Ok(())
}

fn tmp_op(cell: &CellFs<'_>) -> Result<Op> {
    Ok(Op::Tmpfs {
        target: c("tmp")?,
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: cstring(format!(
            "mode=1777,size={},uid={},gid={}",
            cell.tmp_bytes, cell.id_base, cell.id_base
        ))?,
    })
}

/// A fresh /proc with Docker's masked and read-only paths.
fn proc_ops(ops: &mut Vec<Op>) -> Result<()> {
    ops.push(Op::Proc { target: c("proc")? });
    proc_masks(ops)
}

/// Docker's masked and read-only paths, on a /proc mounted before.
fn proc_masks(ops: &mut Vec<Op>) -> Result<()> {
    for m in MASKED_FILES {
        ops.push(Op::MaskFile { target: c(m)? });
    }
    for m in MASKED_DIRS {
        ops.push(Op::MaskDir { target: c(m)? });
    }
    for r in READONLY {
        ops.push(Op::Readonly { target: c(r)? });
    }
    Ok(())
}

/// The operations that build a cell's root from scratch, in order (the fallback where
/// no root template serves the cell).
pub(crate) fn plan(base: &Base, cell: &CellFs<'_>) -> Result<Vec<Op>> {
    check_binds(base, cell.binds)?;
    let mut ops = Vec::new();
    system_ops(base, &mut ops)?;

    // /etc, generated.
    mkdir(&mut ops, "etc")?;
    etc_file_ops(etc_files(base, cell), &mut ops)?;
    if base.alternatives {
        mkdir(&mut ops, "etc/alternatives")?;
        ops.push(Op::Bind {
            source: c("/etc/alternatives")?,
            target: c("etc/alternatives")?,
            attr: RO_BIND,
            recursive: false,
        });
    }
    if cell.network && base.ssl {
        mkdir(&mut ops, "etc/ssl")?;
        ops.push(Op::Bind {
            source: c("/etc/ssl")?,
            target: c("etc/ssl")?,
            attr: RO_BIND,
            recursive: true,
        });
    }

    dev_ops(&mut ops)?;
    mkdir(&mut ops, "tmp")?;
    ops.push(tmp_op(cell)?);
    mkdir(&mut ops, "root")?;
    mkdir(&mut ops, "proc")?;
    proc_ops(&mut ops)?;

    if let Some(ws) = cell.workspace {
        mkdir(&mut ops, "workspace")?;
        let attr = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
        ops.push(match cell.workspace_userns {
            Some(userns) => Op::IdmappedBind {
                source: c(ws)?,
                target: c("workspace")?,
                attr,
                userns,
            },
            None => Op::Bind {
                source: c(ws)?,
                target: c("workspace")?,
                attr,
                recursive: false,
            },
        });
    }

    // `root` (the cell's /root) was made above; a bind under it (a Python installed in
    // /root/.pyenv, say) must not make it again.
    let mut made = BTreeSet::from([PathBuf::from("root")]);
    for b in cell.binds {
        let target = rel(&b.target);
        let mut so_far = PathBuf::new();
        let parts: Vec<_> = target.components().collect();
        for (i, part) in parts.iter().enumerate() {
            so_far.push(part);
            let last = i + 1 == parts.len();
            if !made.insert(so_far.clone()) && !last {
                continue;
            }
            if last && !b.dir {
                ops.push(Op::File {
                    path: c(&so_far)?,
                    data: Vec::new(),
                });
            } else {
                ops.push(Op::Mkdir {
                    path: c(&so_far)?,
                    mode: 0o755,
                });
            }
        }
        let mut attr = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
        if !b.writable {
            attr |= sys::MOUNT_ATTR_RDONLY;
        }
        ops.push(Op::Bind {
            source: c(&b.source)?,
            target: c(&target)?,
            attr,
            recursive: true,
        });
    }
    Ok(ops)
}

/// Which root template a cell can use: the templates differ only in their empty mount
/// points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Variant {
    pub workspace: bool,
}

impl Variant {
    pub(crate) fn index(self) -> usize {
        usize::from(self.workspace)
    }
}

/// The operations that build a root template: everything of a cell's root that is the
/// same for every cell (the system directories, /dev), and the empty directories the
/// cell's own mounts go on. The template's root is read-only and shared by every cell
/// cloned from it, so nothing a cell owns may live in it.
/// `system` holds a detached tree of each system directory ([`system_trees`]), in order.
pub(crate) fn template_plan(
    base: &Base,
    variant: Variant,
    system: &[std::os::fd::RawFd],
) -> Result<Vec<Op>> {
    let mut ops = Vec::new();
    let mut trees = system.iter();
    for e in &base.system {
        match e {
            SystemEntry::Dir(name) => {
                let tree = trees
                    .next()
                    .ok_or_else(|| Error::invalid("a system directory has no tree"))?;
                mkdir(&mut ops, name)?;
                ops.push(Op::Attach {
                    tree: *tree,
                    target: c(name)?,
                });
            }
            SystemEntry::Symlink(name, target) => ops.push(Op::Symlink {
                target: c(target)?,
                path: c(name)?,
            }),
        }
    }
    mkdir(&mut ops, "etc")?;
    dev_ops(&mut ops)?;
    for d in ["tmp", "root", "proc"] {
        mkdir(&mut ops, d)?;
    }
    if variant.workspace {
        mkdir(&mut ops, "workspace")?;
    }
    Ok(ops)
}

/// A detached copy of the host directory `path` (canonical, symlink-free), with mount
/// attributes `attr` (and, with `userns`, id-mapped through it), private, ready for
/// [`Op::Attach`] in a child's mount namespace.
pub(crate) fn detached_tree(
    path: &Path,
    attr: u64,
    recursive: bool,
    userns: Option<std::os::fd::RawFd>,
) -> Result<std::os::fd::OwnedFd> {
    use crate::child::Stage;
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let setup = |stage: Stage, errno: i32| Error::Setup {
        step: stage.describe(),
        source: std::io::Error::from_raw_os_error(errno),
    };
    let mut flags = libc::O_PATH;
    if userns.is_some() {
        flags |= libc::O_DIRECTORY;
    }
    // Refusing symlinks makes a swapped path component fail instead of redirecting it.
    let src = sys::openat2(libc::AT_FDCWD, &c(path)?, flags, sys::RESOLVE_NO_SYMLINKS)
        .map_err(|e| setup(Stage::BindSource, e))?;
    // SAFETY: openat2 returned a new descriptor that we now own.
    let src = unsafe { OwnedFd::from_raw_fd(src) };
    let rec = if recursive {
        libc::AT_RECURSIVE as u32
    } else {
        0
    };
    let empty = c"";
    let tree = sys::open_tree(
        std::os::fd::AsRawFd::as_raw_fd(&src),
        empty,
        sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32 | rec,
    )
    .map_err(|e| setup(Stage::BindClone, e))?;
    // SAFETY: open_tree returned a new descriptor that we now own.
    let tree = unsafe { OwnedFd::from_raw_fd(tree) };
    let mut a = sys::MountAttr {
        attr_set: attr,
        propagation: libc::MS_PRIVATE,
        ..Default::default()
    };
    if let Some(ns) = userns {
        a.attr_set |= sys::MOUNT_ATTR_IDMAP;
        a.userns_fd = ns as u64;
    }
    sys::mount_setattr(
        std::os::fd::AsRawFd::as_raw_fd(&tree),
        empty,
        libc::AT_EMPTY_PATH as u32 | rec,
        &a,
    )
    .map_err(|e| {
        setup(
            if userns.is_some() {
                Stage::WorkspaceIdmap
            } else {
                Stage::BindAttributes
            },
            e,
        )
    })?;
    Ok(tree)
}

/// Detached trees of the host's system directories, in [`Base`]'s order, for a template.
pub(crate) fn system_trees(base: &Base) -> Result<Vec<std::os::fd::OwnedFd>> {
    base.system
        .iter()
        .filter_map(|e| match e {
            SystemEntry::Dir(name) => Some(detached_tree(
                &Path::new("/").join(name),
                RO_BIND,
                true,
                None,
            )),
            SystemEntry::Symlink(..) => None,
        })
        .collect()
}

/// The detached trees a cell on a template needs (its descriptors, owned, and the same
/// as raw descriptors for the plan).
pub(crate) fn cell_trees(
    base: &Base,
    cell: &CellFs<'_>,
) -> Result<(Trees, Vec<std::os::fd::OwnedFd>)> {
    use std::os::fd::AsRawFd as _;
    let mut owned = Vec::new();
    let mut trees = Trees::default();
    if base.alternatives {
        let t = detached_tree(Path::new("/etc/alternatives"), RO_BIND, false, None)?;
        trees.alternatives = Some(t.as_raw_fd());
        owned.push(t);
    }
    if cell.network && base.ssl {
        let t = detached_tree(Path::new("/etc/ssl"), RO_BIND, true, None)?;
        trees.ssl = Some(t.as_raw_fd());
        owned.push(t);
    }
    if let Some(ws) = cell.workspace {
        let t = detached_tree(
            ws,
            sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
            false,
            cell.workspace_userns,
        )?;
        trees.workspace = Some(t.as_raw_fd());
        owned.push(t);
    }
    Ok((trees, owned))
}

/// Host directories for a cell on a template, as detached mount trees the parent made
/// (a child cloned from a template cannot see the host's paths).
#[derive(Debug, Default)]
pub(crate) struct Trees {
    pub alternatives: Option<std::os::fd::RawFd>,
    pub ssl: Option<std::os::fd::RawFd>,
    pub workspace: Option<std::os::fd::RawFd>,
}

/// The operations that finish a cell's root on a template, in order: its own /etc (a
/// small tmpfs, sealed read-only once written), /tmp, /proc with its masks, and the
/// workspace. Cells with extra binds do not use templates (their targets would need
/// directories in the shared root).
pub(crate) fn template_cell_plan(base: &Base, cell: &CellFs<'_>, trees: &Trees) -> Result<Vec<Op>> {
    if !cell.binds.is_empty() {
        return Err(Error::invalid(
            "a cell with binds cannot use a root template",
        ));
    }
    // /proc first: the classic mounts below name their targets through /proc/self/fd,
    // and the template has no /proc of its own.
    let mut ops = vec![Op::Proc { target: c("proc")? }];
    let files = etc_files(base, cell);
    let bytes: usize = files.iter().map(|(_, d)| d.len()).sum();
    ops.push(Op::Tmpfs {
        target: c("etc")?,
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: cstring(format!("mode=0755,size={}", (2 * bytes).max(1 << 20)))?,
    });
    etc_file_ops(files, &mut ops)?;
    for (name, tree) in [
        ("etc/alternatives", trees.alternatives),
        ("etc/ssl", trees.ssl),
    ] {
        if let Some(tree) = tree {
            mkdir(&mut ops, name)?;
            ops.push(Op::Attach {
                tree,
                target: c(name)?,
            });
        }
    }
    ops.push(Op::SealMount { target: c("etc")? });
    ops.push(tmp_op(cell)?);
    proc_masks(&mut ops)?;
    if let Some(tree) = trees.workspace {
        ops.push(Op::Attach {
            tree,
            target: c("workspace")?,
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> Base {
        Base {
            system: vec![
                SystemEntry::Dir("usr"),
                SystemEntry::Symlink("bin", "usr/bin".into()),
                SystemEntry::Symlink("lib", "usr/lib".into()),
                SystemEntry::Symlink("lib64", "usr/lib64".into()),
            ],
            ld_cache: None,
            alternatives: true,
            ssl: true,
            services: None,
            protocols: None,
        }
    }

    fn cell(binds: &[ResolvedBind], network: bool) -> Result<Vec<Op>> {
        plan(
            &debian(),
            &CellFs {
                hostname: "web",
                network,
                workspace: Some(Path::new("/srv/ws")),
                workspace_userns: None,
                binds,
                uid: 0,
                gid: 0,
                id_base: 1_000_000,
                tmp_bytes: 1 << 20,
            },
        )
    }

    fn bind(target: &str) -> ResolvedBind {
        ResolvedBind {
            source: "/opt/data".into(),
            target: target.into(),
            writable: false,
            dir: true,
        }
    }

    /// Regression: a bind under /root failed to start its cell with EEXIST, because the
    /// bind made /root again after the layout had made it.
    #[test]
    fn binds_under_root_do_not_make_root_twice() {
        let ops = cell(&[bind("/root/.pyenv/x"), bind("/root/.cache/y")], false).unwrap();
        let mut dirs = std::collections::BTreeSet::new();
        for op in &ops {
            if let Op::Mkdir { path, .. } = op {
                assert!(dirs.insert(path.clone()), "{path:?} is made twice");
            }
        }
        assert!(dirs.contains(&c("root/.pyenv/x").unwrap()));
    }

    #[test]
    fn symlinked_system_dirs_are_recreated_not_bound() {
        let ops = cell(&[], false).unwrap();
        let text = format!("{ops:?}");
        assert!(
            text.contains(r#"Symlink { target: "usr/bin", path: "bin" }"#),
            "{text}"
        );
        assert!(text.contains(r#"Bind { source: "/usr", target: "usr""#));
        assert!(!text.contains("resolv.conf"), "no resolver without network");
        assert!(
            text.contains(
                r#"Bind { source: "/srv/ws", target: "workspace", attr: 6, recursive: false }"#
            ),
            "{text}"
        );
        assert!(text.contains("proc/kcore"));
        let with_net = format!("{:?}", cell(&[], true).unwrap());
        assert!(with_net.contains("etc/ssl"));
    }

    /// A cell on a template writes its /etc on a tmpfs of its own and seals it before
    /// anything else is mounted, attaches only the trees the parent made, and refuses
    /// binds (their targets would need directories in the shared, read-only root).
    #[test]
    fn a_cell_on_a_template_adds_only_its_own_mounts() {
        let base = debian();
        let fs_ = |binds: &'static [ResolvedBind], network: bool| CellFs {
            hostname: "web",
            network,
            workspace: Some(Path::new("/srv/ws")),
            workspace_userns: None,
            binds,
            uid: 0,
            gid: 0,
            id_base: 1_000_000,
            tmp_bytes: 1 << 20,
        };
        let trees = Trees {
            alternatives: Some(7),
            ssl: None,
            workspace: Some(9),
        };
        let ops = template_cell_plan(&base, &fs_(&[], false), &trees).unwrap();
        let text: Vec<String> = ops.iter().map(|o| format!("{o:?}")).collect();
        assert_eq!(text[0], r#"Proc { target: "proc" }"#, "{text:?}");
        assert!(text[1].starts_with(r#"Tmpfs { target: "etc""#), "{text:?}");
        let masks = text.iter().position(|t| t.contains("proc/keys")).unwrap();
        assert!(masks > 1, "{text:?}");
        let seal = text
            .iter()
            .position(|t| t == r#"SealMount { target: "etc" }"#)
            .unwrap();
        let last_etc = text.iter().rposition(|t| t.contains(r#""etc/"#)).unwrap();
        assert!(seal > last_etc, "{text:?}");
        assert!(text.contains(&r#"Attach { tree: 7, target: "etc/alternatives" }"#.to_owned()));
        assert_eq!(
            text.last().unwrap(),
            r#"Attach { tree: 9, target: "workspace" }"#
        );
        assert!(
            !text
                .iter()
                .any(|t| t.starts_with("Bind") || t.starts_with("Mkdir { path: \"usr"))
        );
        assert!(text.iter().any(|t| t.contains("proc/kcore")));
        static BINDS: std::sync::LazyLock<Vec<ResolvedBind>> =
            std::sync::LazyLock::new(|| vec![bind("/opt/x")]);
        assert!(template_cell_plan(&base, &fs_(&BINDS, false), &trees).is_err());
        // The template itself: system directories from trees, no /etc files, and the
        // workspace mount point only in its variant.
        let t = format!(
            "{:?}",
            template_plan(&base, Variant { workspace: false }, &[3]).unwrap()
        );
        assert!(t.contains(r#"Attach { tree: 3, target: "usr" }"#), "{t}");
        assert!(!t.contains("passwd") && !t.contains("workspace"), "{t}");
        let t = format!(
            "{:?}",
            template_plan(&base, Variant { workspace: true }, &[3]).unwrap()
        );
        assert!(t.contains(r#"Mkdir { path: "workspace""#), "{t}");
        assert!(template_plan(&base, Variant { workspace: true }, &[]).is_err());
    }

    #[test]
    fn binds_may_not_land_in_system_dirs_or_nest() {
        assert!(cell(&[bind("/opt/x")], false).is_ok());
        let err = cell(&[bind("/bin/tool")], false).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        let err = cell(&[bind("/usr/local/x")], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("read-only"), "{err}");
        assert!(cell(&[bind("/opt/x"), bind("/opt/x/y")], false).is_err());
    }
}
