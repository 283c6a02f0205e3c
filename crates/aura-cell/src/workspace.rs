//! Workspaces: the directories cells write to, created and owned so that nothing a cell
//! leaves there is a privilege on the host, and bounded so that a cell cannot fill the
//! disk that holds the ledger.
//!
//! - [`Workspaces`] creates a node's workspaces at `<root>/<namespace>/<name>`, mode 0700,
//!   owned by the host uid that a cell's root maps to (never the host's root), each an
//!   ext4 file system in a sparse image file of the quota's size (`<root>/.images/...`),
//!   loop-mounted `nosuid,nodev`: a cell that writes past its quota gets `ENOSPC` in its
//!   own workspace, and the node's disk keeps its space.
//! - [`sweep`] strips setuid and setgid bits and removes device nodes from what a cell
//!   left, without following a single symbolic link, after every run.
//! - [`HostPaths`] is the allowlist of host paths an operator may bind into cells
//!   (`[cells] host_binds` in aura.toml); the runtime's own guard
//!   ([`crate::Options::protected`]) keeps the node's home, keys and database out of every
//!   cell whatever the allowlist says.
//!
//! Why image files rather than project quotas or tmpfs: project quotas need a file system
//! created and mounted for them (ext4 with `-O quota,project` and `prjquota`, or XFS),
//! which a default install does not have; a tmpfs would put workspaces in memory and lose
//! them on reboot. A loop-mounted image works on any Linux with loop devices and
//! e2fsprogs, costs about 40 ms once per workspace (mkfs and mount), and nothing per run.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::spec::{Bind, ID_COUNT};

/// How deep a sweep descends. Deeper directories are made inaccessible (mode 000) rather
/// than left unswept: the walk holds one descriptor per level.
pub const MAX_SWEEP_DEPTH: usize = 256;

/// The smallest quota: below this ext4 has no room for its own metadata.
pub const MIN_QUOTA: u64 = 4 * 1024 * 1024;

/// What a [`sweep`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Swept {
    /// Files whose setuid or setgid bit was cleared.
    pub privileges_stripped: u64,
    /// Device nodes removed.
    pub devices_removed: u64,
    /// Directories nested deeper than [`MAX_SWEEP_DEPTH`], closed with mode 000.
    pub closed_too_deep: u64,
    /// Entries whose owner was moved into the cells' id range (adopting an old workspace).
    pub reowned: u64,
}

impl Swept {
    pub fn changed(&self) -> bool {
        *self != Swept::default()
    }
}

/// What a walk does to each entry.
#[derive(Debug, Clone, Copy)]
struct Fix {
    /// Host ids below 65536 become `base + id` (a workspace from before cells mapped
    /// onto their own ids, whose files kept the ids cells had inside).
    shift_ids: Option<u32>,
}

/// Strips setuid and setgid bits from regular files and removes block and character
/// devices beneath `dir`, never following a symbolic link and never leaving the file
/// system `dir` is on. Directories keep their setgid bit (it only picks new files' group).
///
/// Cells cannot create device nodes (they have no `CAP_MKNOD` outside their user
/// namespace) and the workspace is mounted `nosuid,nodev` in the cell and, for a node's
/// workspace, on the host too; the sweep makes sure nothing of the kind outlives the run
/// even where a workspace is reached some other way.
pub fn sweep(dir: &Path) -> Result<Swept> {
    walk(dir, Fix { shift_ids: None })
}

fn walk(dir: &Path, fix: Fix) -> Result<Swept> {
    let io_err = |e: rustix::io::Errno| {
        Error::io(
            format!("cannot sweep the workspace {}", dir.display()),
            e.into(),
        )
    };
    let root = rfs::openat(
        rfs::CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err)?;
    let st = rfs::fstat(&root).map_err(io_err)?;
    let mut out = Swept::default();
    if let Some(base) = fix.shift_ids
        && let Some((uid, gid)) = shifted(base, st.st_uid, st.st_gid)
    {
        rfs::fchown(
            &root,
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
        )
        .map_err(io_err)?;
        out.reowned += 1;
    }
    let dev = st.st_dev;
    let mut stack = vec![Frame::open(root).map_err(io_err)?];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.pop() else {
            stack.pop();
            continue;
        };
        let depth = stack.len();
        let parent = &stack[depth - 1].fd;
        if let Some(child) = visit(parent, &name, dev, depth, fix, &mut out).map_err(io_err)? {
            stack.push(child);
        }
    }
    Ok(out)
}

/// A directory being walked: its descriptor and the names still to visit.
struct Frame {
    fd: OwnedFd,
    names: Vec<CString>,
}

impl Frame {
    fn open(fd: OwnedFd) -> rustix::io::Result<Frame> {
        let mut names = Vec::new();
        for entry in rfs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        Ok(Frame { fd, names })
    }
}

/// Host ids after shifting ids below 65536 into the cells' range; `None` if unchanged.
fn shifted(base: u32, uid: u32, gid: u32) -> Option<(u32, u32)> {
    let shift = |id: u32| if id < ID_COUNT { base + id } else { id };
    let (u, g) = (shift(uid), shift(gid));
    (u != uid || g != gid).then_some((u, g))
}

/// Handles one entry; returns the frame to descend into for a directory.
fn visit(
    parent: &OwnedFd,
    name: &CStr,
    dev: u64,
    depth: usize,
    fix: Fix,
    out: &mut Swept,
) -> rustix::io::Result<Option<Frame>> {
    let st = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        // Removed meanwhile (a long-lived cell may still be working): nothing to do.
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    if st.st_dev != dev {
        return Ok(None);
    }
    if let Some(base) = fix.shift_ids
        && let Some((uid, gid)) = shifted(base, st.st_uid, st.st_gid)
    {
        rfs::chownat(
            parent,
            name,
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        out.reowned += 1;
    }
    match FileType::from_raw_mode(st.st_mode) {
        FileType::CharacterDevice | FileType::BlockDevice => {
            match rfs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) => out.devices_removed += 1,
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
            Ok(None)
        }
        FileType::RegularFile if st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 => {
            // Opened without following links, then checked to be the file just looked at,
            // so a concurrent swap cannot turn this into a chmod of something else.
            let fd = match rfs::openat(
                parent,
                name,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => return Ok(None),
                Err(e) => return Err(e),
            };
            let now = rfs::fstat(&fd)?;
            if now.st_ino == st.st_ino
                && now.st_dev == st.st_dev
                && FileType::from_raw_mode(now.st_mode) == FileType::RegularFile
            {
                let mode = now.st_mode & 0o1777;
                rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
                out.privileges_stripped += 1;
            }
            Ok(None)
        }
        FileType::Directory => {
            let fd = match rfs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(
                    rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR,
                ) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let now = rfs::fstat(&fd)?;
            if now.st_ino != st.st_ino || now.st_dev != dev {
                return Ok(None);
            }
            if depth >= MAX_SWEEP_DEPTH {
                rfs::fchmod(&fd, Mode::empty())?;
                out.closed_too_deep += 1;
                return Ok(None);
            }
            Frame::open(fd).map(Some)
        }
        _ => Ok(None),
    }
}

/// The host paths an operator may bind into cells, each canonical (symbolic links
/// resolved). Empty means none.
#[derive(Debug, Clone, Default)]
pub struct HostPaths {
    allowed: Vec<PathBuf>,
}

/// Refuses relative paths and `..`: an allowlist or a request names host paths exactly.
fn plain_absolute(what: &str, p: &Path) -> Result<()> {
    if !p.is_absolute() {
        return Err(Error::invalid(format!(
            "{what} {} is not an absolute path",
            p.display()
        )));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(format!(
            "{what} {} contains `..`",
            p.display()
        )));
    }
    Ok(())
}

impl HostPaths {
    /// Canonicalises every entry; an entry that does not exist, or is `/`, is an error.
    pub fn new<I, P>(paths: I) -> Result<HostPaths>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let mut allowed = Vec::new();
        for p in paths {
            let p = p.as_ref();
            plain_absolute("the allowed host path", p)?;
            let c = std::fs::canonicalize(p).map_err(|e| {
                Error::io(
                    format!("the allowed host path {} cannot be used", p.display()),
                    e,
                )
            })?;
            if c == Path::new("/") {
                return Err(Error::invalid(
                    "`/` cannot be an allowed host path: it holds everything, the node's keys included",
                ));
            }
            allowed.push(c);
        }
        Ok(HostPaths { allowed })
    }

    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
    }

    pub fn allowed(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// The canonical form of `source` if it lies at or under an allowed path; refused
    /// otherwise (relative, with `..`, missing, or outside the list).
    pub fn check(&self, source: &Path) -> Result<PathBuf> {
        plain_absolute("the host path", source)?;
        let c = std::fs::canonicalize(source).map_err(|e| {
            Error::invalid(format!(
                "the host path {} cannot be used: {e}",
                source.display()
            ))
        })?;
        if self.allowed.iter().any(|a| c.starts_with(a)) {
            return Ok(c);
        }
        Err(Error::Forbidden {
            what: format!(
                "the host path {} is not in the allowlist of host paths cells may bind",
                source.display()
            ),
            hint: if self.allowed.is_empty() {
                "list the directories operators may bind under [cells] host_binds in aura.toml"
                    .into()
            } else {
                format!(
                    "allowed: {}; change [cells] host_binds in aura.toml to allow more",
                    self.allowed
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        })
    }
}

/// How a node keeps its workspaces.
#[derive(Debug, Clone)]
pub struct WorkspaceOptions {
    /// `<root>/<namespace>/<name>`; images under `<root>/.images/<namespace>/`.
    pub root: PathBuf,
    /// The host uid and gid workspaces belong to: the ids a cell's root maps to
    /// ([`crate::Options::id_base`]), so that a cell's root owns its workspace and nothing
    /// it writes belongs to the host's root. `None` (a node without cells, not root):
    /// whoever runs the node.
    pub owner: Option<(u32, u32)>,
    /// Each workspace's size limit in bytes; `None` for none. Needs root, loop devices and
    /// `mkfs.ext4`.
    pub quota: Option<u64>,
}

/// A node's workspaces.
#[derive(Debug)]
pub struct Workspaces {
    opts: WorkspaceOptions,
    /// Creating and mounting are serialised: two missions starting in one workspace must
    /// not both format its image.
    lock: Mutex<()>,
}

/// A workspace name: 1-63 of `a-z`, `0-9`, `-` and `_` (the kernel's rule for missions).
pub fn is_workspace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A namespace: 1-63 of `a-z`, `0-9` and `-`, starting with a letter or digit (the
/// identity crate's rule, repeated here because this crate does not depend on it).
pub fn is_namespace(ns: &str) -> bool {
    let b = ns.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

fn geteuid() -> u32 {
    rustix::process::geteuid().as_raw()
}

impl Workspaces {
    /// Checks the options (a quota needs root and an owner); creates nothing yet.
    pub fn new(opts: WorkspaceOptions) -> Result<Workspaces> {
        plain_absolute("the workspaces root", &opts.root)?;
        if let Some(q) = opts.quota {
            if q < MIN_QUOTA {
                return Err(Error::invalid(format!(
                    "a workspace quota must be at least {MIN_QUOTA} bytes (got {q})"
                )));
            }
            if opts.owner.is_none() || geteuid() != 0 {
                return Err(Error::Unsupported {
                    what: "workspace quotas need root (they are loop-mounted file systems)"
                        .into(),
                    hint: "run the node as root, or set [cells] workspace_quota = \"unlimited\" in aura.toml"
                        .into(),
                });
            }
        }
        Ok(Workspaces {
            opts,
            lock: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.opts.root
    }

    pub fn quota(&self) -> Option<u64> {
        self.opts.quota
    }

    pub fn owner(&self) -> Option<(u32, u32)> {
        self.opts.owner
    }

    /// Where a workspace lives (without creating it).
    pub fn path(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        if !is_namespace(namespace) {
            return Err(Error::invalid(format!(
                "`{}` is not a namespace",
                namespace.escape_debug()
            )));
        }
        if !is_workspace_name(name) {
            return Err(Error::invalid(format!(
                "`{}` is not a workspace name: use 1-63 of a-z, 0-9, '-' and '_' (a name, not a path)",
                name.escape_debug()
            )));
        }
        Ok(self.opts.root.join(namespace).join(name))
    }

    /// The namespace and name of a workspace directory, if `dir` is one of ours.
    pub fn parse(&self, dir: &Path) -> Option<(String, String)> {
        let rel = dir.strip_prefix(&self.opts.root).ok()?;
        let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
        match parts.as_slice() {
            [ns, name] if is_namespace(ns) && is_workspace_name(name) => {
                Some(((*ns).to_owned(), (*name).to_owned()))
            }
            _ => None,
        }
    }

    /// Makes the workspace ready and returns its path: created (0700, owned by the
    /// cells' root), its image made and mounted when there is a quota, or, if it was
    /// already there, mounted again after a reboot. Cheap when it is ready (two `stat`s).
    /// Blocking: call it from a blocking thread.
    pub fn ensure(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let dir = self.path(namespace, name)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let ns_dir = self.opts.root.join(namespace);
        if self.opts.quota.is_some() && is_mount_point(&dir, &ns_dir) {
            return Ok(dir);
        }
        make_private_dir(&self.opts.root, false)?;
        make_private_dir(&ns_dir, true)?;
        match self.opts.quota {
            Some(quota) => self.ensure_image(namespace, name, &dir, quota)?,
            None => self.ensure_plain(&dir)?,
        }
        Ok(dir)
    }

    /// [`Workspaces::ensure`] for a path that must be one of this node's workspaces.
    pub fn ensure_dir(&self, dir: &Path) -> Result<()> {
        let (ns, name) = self.parse(dir).ok_or_else(|| {
            Error::invalid(format!(
                "{} is not a workspace of this node (under {})",
                dir.display(),
                self.opts.root.display()
            ))
        })?;
        self.ensure(&ns, &name).map(|_| ())
    }

    fn ensure_plain(&self, dir: &Path) -> Result<()> {
        match std::fs::create_dir(dir) {
            Ok(()) => {
                set_mode(dir, 0o700)?;
                if let Some((uid, gid)) = self.opts.owner {
                    chown(dir, uid, gid)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.adopt(dir),
            Err(e) => Err(Error::io(format!("cannot create {}", dir.display()), e)),
        }
    }

    /// Brings a workspace made before cells owned their workspaces (or filled by hand)
    /// up to date, where there is no quota: mode 0700, its files moved into the cells' ids
    /// (a file a cell's uid 1000 wrote was host uid 1000; it is now `base + 1000`, and
    /// root's files are the cells' root's), setuid bits and devices swept.
    fn adopt(&self, dir: &Path) -> Result<()> {
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
        if !meta.is_dir() {
            return Err(Error::invalid(format!(
                "the workspace {} is not a directory",
                dir.display()
            )));
        }
        if meta.mode() & 0o7777 != 0o700 {
            set_mode(dir, 0o700)?;
        }
        if let Some((uid, _)) = self.opts.owner
            && meta.uid() != uid
        {
            let base = uid;
            walk(
                dir,
                Fix {
                    shift_ids: Some(base),
                },
            )?;
            sweep(dir)?;
        }
        Ok(())
    }

    fn image_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.opts
            .root
            .join(".images")
            .join(namespace)
            .join(format!("{name}.img"))
    }

    fn ensure_image(&self, namespace: &str, name: &str, dir: &Path, quota: u64) -> Result<()> {
        let image = self.image_path(namespace, name);
        let (uid, gid) = self.opts.owner.unwrap_or((0, 0));
        if !image.exists() {
            let images = self.opts.root.join(".images");
            make_private_dir(&images, true)?;
            make_private_dir(&images.join(namespace), true)?;
            let tmp = image.with_extension("img.tmp");
            make_image(&tmp, quota, uid, gid)?;
            // A directory with files already (an operator filled it before the mission,
            // or it is from before quotas) has them copied into its file system, so that
            // they are neither hidden under the mount nor exempt from the quota.
            let imported = if dir_has_entries(dir) {
                let staging = image.with_extension("import");
                if let Err(e) = self.import(dir, &tmp, &staging, quota) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
                true
            } else {
                false
            };
            std::fs::rename(&tmp, &image)
                .map_err(|e| Error::io(format!("cannot rename {}", tmp.display()), e))?;
            if imported {
                // The files live in the image now. (A crash before this leaves them in
                // both places; the mount then hides the old copies, losing nothing.)
                let old = image.with_extension("imported");
                let _ = std::fs::remove_dir_all(&old);
                std::fs::rename(dir, &old)
                    .map_err(|e| Error::io(format!("cannot move {} aside", dir.display()), e))?;
                let _ = std::fs::remove_dir_all(&old);
            }
        }
        match std::fs::create_dir(dir) {
            Ok(()) => set_mode(dir, 0o700)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("cannot create {}", dir.display()), e)),
        }
        mount_image(&image, dir)?;
        // The new file system's root is the workspace: private to the cells' root. Its
        // lost+found is root's, and no use to anyone here (fsck makes it again).
        set_mode(dir, 0o700)?;
        chown(dir, uid, gid)?;
        let _ = std::fs::remove_dir(dir.join("lost+found"));
        Ok(())
    }

    /// Copies `dir`'s files into the new image `image` (mounted at `staging` meanwhile),
    /// moving them into the cells' ids and sweeping them as [`Workspaces::adopt`] does.
    fn import(&self, dir: &Path, image: &Path, staging: &Path, quota: u64) -> Result<()> {
        let _ = std::fs::remove_dir(staging);
        std::fs::create_dir(staging)
            .map_err(|e| Error::io(format!("cannot create {}", staging.display()), e))?;
        let result = mount_image(image, staging).and_then(|()| {
            let _ = std::fs::remove_dir(staging.join("lost+found"));
            let mut source = dir.as_os_str().to_owned();
            source.push("/.");
            run_tool(
                Command::new("cp")
                    .args(["-a", "--"])
                    .arg(&source)
                    .arg(staging)
                    .env("LC_ALL", "C"),
                "copy the workspace's files into its file system",
            )
            .map_err(|e| match std::error::Error::source(&e) {
                Some(s) if s.to_string().contains("No space left") => Error::Unsupported {
                    what: format!(
                        "the workspace {} holds more than its quota of {quota} bytes",
                        dir.display()
                    ),
                    hint:
                        "raise [cells] workspace_quota in aura.toml, or make the workspace smaller"
                            .into(),
                },
                _ => e,
            })?;
            if let Some((uid, _)) = self.opts.owner {
                walk(
                    staging,
                    Fix {
                        shift_ids: Some(uid),
                    },
                )?;
            }
            sweep(staging).map(|_| ())
        });
        let _ = rustix::mount::unmount(staging, rustix::mount::UnmountFlags::empty());
        let _ = std::fs::remove_dir(staging);
        result
    }

    /// Unmounts every workspace file system under the root (for tests and tools: a node
    /// leaves them mounted when it stops, and the next [`Workspaces::ensure`] of a
    /// workspace mounts it again). Returns how many.
    pub fn release_all(&self) -> usize {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for m in mounts_under(&self.opts.root) {
            if rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH).is_ok() {
                n += 1;
            }
        }
        n
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("cannot set the mode of {}", p.display()), e))
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .map_err(|e| Error::io(format!("cannot give {} to uid {uid}", p.display()), e))
}

/// Creates `p` if missing; `private` also makes it 0700 (the root of a node's own
/// directories may be one the operator chose, and keeps its mode).
fn make_private_dir(p: &Path, private: bool) -> Result<()> {
    match std::fs::create_dir(p) {
        Ok(()) => set_mode(p, 0o700),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if private {
                let m = std::fs::symlink_metadata(p)
                    .map_err(|e| Error::io(format!("cannot read {}", p.display()), e))?;
                if !m.is_dir() {
                    return Err(Error::invalid(format!(
                        "{} is not a directory",
                        p.display()
                    )));
                }
                if m.mode() & 0o777 != 0o700 {
                    set_mode(p, 0o700)?;
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::io(format!("cannot create {}", p.display()), e))?;
            set_mode(p, 0o700)
        }
        Err(e) => Err(Error::io(format!("cannot create {}", p.display()), e)),
    }
}

fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Whether `dir` is a mount point: it exists and lies on another device than `parent`.
fn is_mount_point(dir: &Path, parent: &Path) -> bool {
    match (std::fs::symlink_metadata(dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.is_dir() && d.dev() != p.dev(),
        _ => false,
    }
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::Unsupported {
                what: format!("workspace quotas need `{program}`, which is not installed"),
                hint: "install e2fsprogs and util-linux, or set [cells] workspace_quota = \"unlimited\" in aura.toml"
                    .into(),
            }
        } else {
            Error::io(format!("cannot run {program} to {what}"), e)
        }
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = stderr.lines().last().unwrap_or("").trim().to_owned();
    Err(Error::io(
        format!("cannot {what}: {program} failed"),
        io::Error::other(if detail.is_empty() {
            out.status.to_string()
        } else {
            detail
        }),
    ))
}

/// A sparse image of `quota` bytes at `path` with an empty ext4 file system whose root
/// belongs to `uid:gid`. The caller makes it under a temporary name and renames it, so a
/// crash never leaves a half-made image where a workspace's should be.
fn make_image(path: &Path, quota: u64, uid: u32, gid: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    f.set_len(quota)
        .map_err(|e| Error::io(format!("cannot size {}", path.display()), e))?;
    drop(f);
    let made = run_tool(
        Command::new("mkfs.ext4")
            .arg("-q")
            .arg("-F")
            // No blocks reserved for root: the whole quota is the workspace's.
            .args(["-m", "0"])
            .arg("-E")
            .arg(format!("root_owner={uid}:{gid}"))
            .arg(path)
            .env("LC_ALL", "C"),
        "format a workspace image",
    );
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

fn mount_image(image: &Path, dir: &Path) -> Result<()> {
    run_tool(
        Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"])
            .arg(image)
            .arg(dir)
            .env("LC_ALL", "C"),
        "mount a workspace image",
    )
}

/// Mount points strictly under `root`, deepest first, from /proc/self/mountinfo.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if let Some(point) = line.split(' ').nth(4) {
            let point = PathBuf::from(unescape_mountinfo(point));
            if point.starts_with(root) && point != root {
                found.insert(point);
            }
        }
    }
    let mut v: Vec<PathBuf> = found.into_iter().collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
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

/// Whether `a` and `b` overlap: one is the other or lies inside it.
pub(crate) fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// A descriptor-relative helper for tests and tools: the file type at `name` in `dir`.
#[cfg(test)]
fn kind_of(dir: impl std::os::fd::AsFd, name: &str) -> FileType {
    FileType::from_raw_mode(
        rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|s| s.st_mode)
            .unwrap_or(0),
    )
}

/// What the cell surfaces (aura-node's HTTP API and aura-grpc's cell services) let callers
/// reach of the host: the node's workspaces, and the host paths an operator for all
/// namespaces may bind. It lives here, below both surfaces, so each applies the same rules.
#[derive(Debug, Clone, Default)]
pub struct CellAccess {
    /// Where cells' workspaces are made (`<root>/<namespace>/<name>`); without it a
    /// request naming a workspace is refused.
    pub workspaces: Option<Arc<Workspaces>>,
    /// The allowlist of host paths (`[cells] host_binds`); empty: no binds at all.
    pub host_paths: HostPaths,
}

impl CellAccess {
    /// Makes the workspace `name` of `namespace` ready (on a blocking thread) and returns
    /// its path.
    pub async fn workspace(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let Some(workspaces) = self.workspaces.clone() else {
            return Err(Error::Unsupported {
                what: "this node keeps no workspaces for cells".into(),
                hint: "allocate the cell without a workspace".into(),
            });
        };
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        tokio::task::spawn_blocking(move || workspaces.ensure(&ns, &name))
            .await
            .map_err(|e| Error::Io {
                context: "preparing the workspace panicked".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// The binds with their sources checked against the allowlist (and made canonical).
    pub fn binds(&self, binds: Vec<Bind>) -> Result<Vec<Bind>> {
        binds
            .into_iter()
            .map(|b| {
                let source = self.host_paths.check(&b.source)?;
                Ok(Bind { source, ..b })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_and_namespaces() {
        for (n, ok) in [
            ("ws", true),
            ("a_b-1", true),
            ("", false),
            ("..", false),
            ("a/b", false),
            ("/etc", false),
            ("A", false),
            (&"x".repeat(64), false),
        ] {
            assert_eq!(is_workspace_name(n), ok, "{n:?}");
        }
        assert!(is_namespace("team-a"));
        assert!(!is_namespace("-a"));
        assert!(!is_namespace(".images"));
    }

    #[test]
    fn paths_are_names_under_the_root_never_paths() {
        let w = Workspaces::new(WorkspaceOptions {
            root: "/srv/ws".into(),
            owner: None,
            quota: None,
        })
        .unwrap();
        assert_eq!(
            w.path("team-a", "build").unwrap(),
            Path::new("/srv/ws/team-a/build")
        );
        for (ns, name) in [
            ("team-a", "../b"),
            ("team-a", "/etc"),
            ("..", "x"),
            ("team-a", ""),
        ] {
            assert!(w.path(ns, name).is_err(), "{ns} {name}");
        }
        assert_eq!(
            w.parse(Path::new("/srv/ws/team-a/build")),
            Some(("team-a".into(), "build".into()))
        );
        assert_eq!(w.parse(Path::new("/srv/ws/team-a")), None);
        assert_eq!(w.parse(Path::new("/srv/other/team-a/b")), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn overlap_is_either_way() {
        assert!(overlaps(Path::new("/a/b"), Path::new("/a")));
        assert!(overlaps(Path::new("/a"), Path::new("/a/b")));
        assert!(overlaps(Path::new("/a"), Path::new("/a")));
        assert!(!overlaps(Path::new("/ab"), Path::new("/a")));
    }

    #[test]
    fn the_allowlist_is_canonical_and_refuses_what_is_outside() {
        let d = tempfile::tempdir().unwrap();
        let allowed = d.path().join("data");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(d.path().join("secret")).unwrap();
        // A link inside the allowed tree that leads out of it.
        symlink(d.path().join("secret"), allowed.join("out")).unwrap();
        let hp = HostPaths::new([&allowed]).unwrap();
        assert!(hp.check(&allowed.join("sub")).is_ok());
        assert!(hp.check(&allowed).is_ok());
        let e = hp.check(&allowed.join("out")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::PermissionDenied, "{e}");
        assert!(hp.check(&allowed.join("sub/../../secret")).is_err());
        assert!(hp.check(Path::new("relative")).is_err());
        assert!(hp.check(&d.path().join("secret")).is_err());
        assert!(HostPaths::new(["/"]).is_err());
        assert!(HostPaths::new(["rel"]).is_err());
        assert!(HostPaths::default().check(&allowed).is_err());
    }

    #[test]
    fn a_sweep_never_follows_links_out() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(ws.join("deep/er")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let victim = outside.join("tool");
        std::fs::write(&victim, "x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o4755)).unwrap();
        symlink(&outside, ws.join("link")).unwrap();
        symlink(&victim, ws.join("deep/er/file-link")).unwrap();
        let mine = ws.join("deep/er/suid");
        std::fs::write(&mine, "x").unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o6755)).unwrap();
        let gdir = ws.join("shared");
        std::fs::create_dir(&gdir).unwrap();
        std::fs::set_permissions(&gdir, std::fs::Permissions::from_mode(0o2775)).unwrap();

        let swept = sweep(&ws).unwrap();
        assert_eq!(swept.privileges_stripped, 1, "{swept:?}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&mine), 0o755);
        assert_eq!(mode(&victim), 0o4755, "a file outside was changed");
        assert_eq!(mode(&gdir), 0o2775, "directories keep setgid");
        let root = rfs::openat(rfs::CWD, &ws, OFlags::PATH, Mode::empty()).unwrap();
        assert_eq!(kind_of(&root, "link"), FileType::Symlink);
        assert!(!sweep(&ws).unwrap().changed());
    }

    #[test]
    fn root_a_sweep_removes_device_nodes() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path();
        let dev = CString::new(ws.join("null").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: mknod with a valid path; needs root (the tests run as root).
        let r = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(r, 0, "mknod needs root");
        std::fs::write(ws.join("plain"), "x").unwrap();
        let swept = sweep(ws).unwrap();
        assert_eq!(swept.devices_removed, 1);
        assert!(!ws.join("null").exists());
        assert!(ws.join("plain").exists());
    }

    #[test]
    fn a_sweep_closes_what_nests_too_deep() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        let mut p = ws.clone();
        for _ in 0..MAX_SWEEP_DEPTH + 2 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        let swept = sweep(&ws).unwrap();
        assert_eq!(swept.closed_too_deep, 1, "{swept:?}");
    }

    #[test]
    fn ids_shift_into_the_cells_range() {
        assert_eq!(
            shifted(1_000_000_000, 0, 0),
            Some((1_000_000_000, 1_000_000_000))
        );
        assert_eq!(
            shifted(1_000_000_000, 1000, 70_000),
            Some((1_000_001_000, 70_000))
        );
        assert_eq!(shifted(1_000_000_000, 1_000_000_000, 1_000_000_000), None);
    }
}
