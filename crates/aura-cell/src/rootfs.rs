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

/// The operations that build the root, in order.
pub(crate) fn plan(base: &Base, cell: &CellFs<'_>) -> Result<Vec<Op>> {
    check_binds(base, cell.binds)?;
    let mut ops = Vec::new();
    let ro_bind = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    let mkdir = |ops: &mut Vec<Op>, p: &str| -> Result<()> {
        ops.push(Op::Mkdir {
            path: c(p)?,
            mode: 0o755,
        });
        Ok(())
    };

    for e in &base.system {
        match e {
            SystemEntry::Dir(name) => {
                mkdir(&mut ops, name)?;
                ops.push(Op::Bind {
                    source: c(Path::new("/").join(name))?,
                    target: c(name)?,
                    attr: ro_bind,
                    recursive: true,
                });
            }
            SystemEntry::Symlink(name, target) => ops.push(Op::Symlink {
                target: c(target)?,
                path: c(name)?,
            }),
        }
    }

    // /etc, generated.
    mkdir(&mut ops, "etc")?;
    let file = |ops: &mut Vec<Op>, name: &str, data: Vec<u8>| -> Result<()> {
        ops.push(Op::File {
            path: c(Path::new("etc").join(name))?,
            data,
        });
        Ok(())
    };
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
    file(&mut ops, "passwd", passwd.into_bytes())?;
    file(&mut ops, "group", group.into_bytes())?;
    file(
        &mut ops,
        "hostname",
        format!("{}\n", cell.hostname).into_bytes(),
    )?;
    file(
        &mut ops,
        "hosts",
        format!(
            "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            cell.hostname
        )
        .into_bytes(),
    )?;
    file(
        &mut ops,
        "nsswitch.conf",
        b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n".to_vec(),
    )?;
    if let Some(cache) = &base.ld_cache {
        file(&mut ops, "ld.so.cache", cache.clone())?;
    }
    if base.alternatives {
        mkdir(&mut ops, "etc/alternatives")?;
        ops.push(Op::Bind {
            source: c("/etc/alternatives")?,
            target: c("etc/alternatives")?,
            attr: ro_bind,
            recursive: false,
        });
    }
    if cell.network {
        // Read now, not at start-up: the host's resolver configuration may change.
        if let Ok(resolv) = std::fs::read("/etc/resolv.conf") {
            file(&mut ops, "resolv.conf", resolv)?;
        }
        if let Some(s) = &base.services {
            file(&mut ops, "services", s.clone())?;
        }
        if let Some(p) = &base.protocols {
            file(&mut ops, "protocols", p.clone())?;
        }
        if base.ssl {
            mkdir(&mut ops, "etc/ssl")?;
            ops.push(Op::Bind {
                source: c("/etc/ssl")?,
                target: c("etc/ssl")?,
                attr: ro_bind,
                recursive: true,
            });
        }
    }

    // /dev: fresh nodes made by the runtime itself, never the host's or the cell's.
    mkdir(&mut ops, "dev")?;
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

    mkdir(&mut ops, "tmp")?;
    ops.push(Op::Tmpfs {
        target: c("tmp")?,
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: cstring(format!(
            "mode=1777,size={},uid={},gid={}",
            cell.tmp_bytes, cell.id_base, cell.id_base
        ))?,
    });

    mkdir(&mut ops, "root")?;
    mkdir(&mut ops, "proc")?;
    ops.push(Op::Proc { target: c("proc")? });
    for m in MASKED_FILES {
        ops.push(Op::MaskFile { target: c(m)? });
    }
    for m in MASKED_DIRS {
        ops.push(Op::MaskDir { target: c(m)? });
    }
    for r in READONLY {
        ops.push(Op::Readonly { target: c(r)? });
    }

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
