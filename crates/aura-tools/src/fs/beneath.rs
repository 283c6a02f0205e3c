//! Confinement to the workspace: every path is resolved by the kernel beneath a directory
//! descriptor opened once per call.
//!
//! Paths are checked twice. First lexically ([`RelPath::parse`]): no absolute paths, no
//! `..`, no NUL bytes, bounded length. Then by the kernel: each open goes through
//! `openat2(2)` relative to the workspace descriptor with
//!
//! - `RESOLVE_BENEATH`: resolution may never leave the directory, whatever the path or
//!   the links in it say; the kernel checks this atomically during the walk, so a
//!   directory swapped for a symbolic link mid-call cannot redirect it;
//! - `RESOLVE_NO_SYMLINKS` (which implies `RESOLVE_NO_MAGICLINKS`): no symbolic link is
//!   followed at all, not even one that stays inside. This is a deliberate choice:
//!   following in-workspace links would make what a path names depend on links an agent
//!   can create and swap, and would make exact compensation (restoring "the file at this
//!   path") ambiguous. Commands that need links run in a cell.
//!
//! Final components are opened with `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY` and checked with
//! `fstat` on the open descriptor, so a FIFO cannot block a call and a device or socket is
//! refused before a byte is read or written. Created parent directories are made one
//! component at a time with `mkdirat` beneath the descriptor of the directory above.
//!
//! Where `openat2` is missing (Linux before 5.6, or a seccomp filter that hides it) every
//! file call fails closed with [`ErrorKind::Unavailable`].

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::effect::{ErrorKind, ToolError};

/// Longest single path component, as on Linux file systems.
const MAX_COMPONENT: usize = 255;

/// How often an open is retried when the kernel reports that a rename raced with the
/// resolution (`EAGAIN` under `RESOLVE_BENEATH`).
const RACE_RETRIES: usize = 16;

/// A workspace-relative path that passed the lexical checks: its normal components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelPath {
    components: Vec<String>,
}

impl RelPath {
    /// Checks and normalises `raw` (`a//./b/` becomes `a/b`; an empty path or `.` is the
    /// workspace itself). `tool` prefixes the error messages.
    pub(crate) fn parse(tool: &str, raw: &str, max_len: usize) -> Result<RelPath, ToolError> {
        let invalid = |why: String| ToolError::new(ErrorKind::InvalidArguments, why);
        if raw.contains('\0') {
            return Err(invalid(format!("{tool}: the path contains a NUL byte")));
        }
        if raw.len() > max_len {
            return Err(ToolError::new(
                ErrorKind::TooLarge,
                format!(
                    "{tool}: the path is {} bytes long; the limit is {max_len}",
                    raw.len()
                ),
            ));
        }
        if raw.starts_with('/') {
            return Err(ToolError::new(
                ErrorKind::Confinement,
                format!(
                    "{tool}: `{raw}` is an absolute path; paths are relative to the mission's workspace"
                ),
            ));
        }
        let mut components = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(ToolError::new(
                        ErrorKind::Confinement,
                        format!(
                            "{tool}: `{raw}` contains `..`; paths may not climb out of a directory"
                        ),
                    ));
                }
                name if name.len() > MAX_COMPONENT => {
                    return Err(invalid(format!(
                        "{tool}: a component of `{raw}` is longer than {MAX_COMPONENT} bytes"
                    )));
                }
                name => components.push(name.to_owned()),
            }
        }
        Ok(RelPath { components })
    }

    /// Whether this is the workspace itself.
    pub(crate) fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The normalised text: components joined by `/`, or `.` for the workspace.
    pub(crate) fn as_string(&self) -> String {
        if self.components.is_empty() {
            ".".to_owned()
        } else {
            self.components.join("/")
        }
    }

    /// The parent path and the last component; `None` for the workspace itself.
    pub(crate) fn split_last(&self) -> Option<(RelPath, &str)> {
        let (last, parent) = self.components.split_last()?;
        Some((
            RelPath {
                components: parent.to_vec(),
            },
            last.as_str(),
        ))
    }

    fn joined_for_kernel(&self) -> String {
        if self.components.is_empty() {
            ".".to_owned()
        } else {
            self.components.join("/")
        }
    }
}

/// The resolution rules every open uses.
fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// An open workspace: a directory descriptor every path of one call is resolved beneath.
#[derive(Debug)]
pub(crate) struct Workspace {
    root: OwnedFd,
    tool: String,
    /// The workspace's owner, when it is not who runs the node: what the tools create
    /// is given to it, so that the cells working there (whose root is that owner) can
    /// change it, and nothing in a workspace belongs to the host's root.
    owner: Option<(rfs::Uid, rfs::Gid)>,
}

/// Whether a file exists, and if it does, its descriptor and status.
pub(crate) enum Opened {
    Existing(OwnedFd, rfs::Stat),
    Created(OwnedFd),
}

impl Workspace {
    /// Opens the workspace directory. The workspace path itself comes from the node's
    /// configuration and is trusted; everything beneath it is not.
    pub(crate) fn open(tool: &str, path: &Path) -> Result<Workspace, ToolError> {
        let root = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            ToolError::new(
                ErrorKind::Unavailable,
                format!(
                    "{tool}: the mission's workspace {} cannot be opened: {}",
                    path.display(),
                    describe(e)
                ),
            )
        })?;
        let owner = rfs::fstat(&root).ok().and_then(|st| {
            (st.st_uid != rustix::process::geteuid().as_raw())
                .then(|| (rfs::Uid::from_raw(st.st_uid), rfs::Gid::from_raw(st.st_gid)))
        });
        Ok(Workspace {
            root,
            tool: tool.to_owned(),
            owner,
        })
    }

    /// Gives what a tool just created to the workspace's owner (see [`Workspace::owner`]).
    fn give_to_owner(&self, fd: impl AsFd, shown: &str) -> Result<(), ToolError> {
        match self.owner {
            Some((uid, gid)) => {
                rfs::fchown(fd, Some(uid), Some(gid)).map_err(|e| self.error(e, shown))
            }
            None => Ok(()),
        }
    }

    /// `openat2` beneath `dir`, retrying when a concurrent rename made the kernel give up.
    fn openat2_raw(
        dir: impl AsFd,
        path: &str,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, Errno> {
        let dir = dir.as_fd();
        let mut tries = 0;
        loop {
            match rfs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, resolve_flags()) {
                Err(Errno::AGAIN | Errno::INTR) if tries < RACE_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    /// [`Workspace::openat2_raw`] with errors described for `shown`.
    fn openat2(
        &self,
        dir: impl AsFd,
        path: &str,
        flags: OFlags,
        mode: Mode,
        shown: &str,
    ) -> Result<OwnedFd, ToolError> {
        Self::openat2_raw(dir, path, flags, mode).map_err(|e| self.error(e, shown))
    }

    /// Turns an errno from resolving `shown` into a tool error.
    pub(crate) fn error(&self, e: Errno, shown: &str) -> ToolError {
        let tool = &self.tool;
        match e {
            Errno::XDEV => ToolError::new(
                ErrorKind::Confinement,
                format!("{tool}: `{shown}` leads outside the workspace"),
            ),
            Errno::LOOP => ToolError::new(
                ErrorKind::Confinement,
                format!(
                    "{tool}: `{shown}` passes through a symbolic link; links are not followed in the workspace"
                ),
            ),
            Errno::NOENT => ToolError::new(
                ErrorKind::NotFound,
                format!("{tool}: `{shown}` does not exist"),
            ),
            Errno::NOTDIR => ToolError::new(
                ErrorKind::WrongType,
                format!("{tool}: a component of `{shown}` is not a directory"),
            ),
            Errno::ISDIR => ToolError::new(
                ErrorKind::WrongType,
                format!("{tool}: `{shown}` is a directory"),
            ),
            Errno::NOSYS => ToolError::new(
                ErrorKind::Unavailable,
                format!(
                    "{tool}: this kernel has no openat2 (Linux 5.6 or later is needed); refusing file access rather than resolving paths unsafely"
                ),
            ),
            Errno::NAMETOOLONG => ToolError::new(
                ErrorKind::TooLarge,
                format!("{tool}: `{shown}` is too long"),
            ),
            other => ToolError::new(
                ErrorKind::Io,
                format!("{tool}: `{shown}`: {}", describe(other)),
            ),
        }
    }

    /// Opens the directory `rel` for use as the base of further `*at` calls.
    pub(crate) fn dir(&self, rel: &RelPath) -> Result<OwnedFd, ToolError> {
        let shown = rel.as_string();
        self.openat2(
            &self.root,
            &rel.joined_for_kernel(),
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
            &shown,
        )
    }

    /// Opens the directory `rel` for reading its entries.
    pub(crate) fn dir_for_listing(&self, rel: &RelPath) -> Result<OwnedFd, ToolError> {
        let shown = rel.as_string();
        self.openat2(
            &self.root,
            &rel.joined_for_kernel(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            &shown,
        )
    }

    /// Opens the directory `rel`, creating missing directories one component at a time
    /// (each `mkdirat` beneath the descriptor of the directory above). Returns the
    /// descriptor and the paths of the directories it created, outermost first.
    pub(crate) fn dir_creating(&self, rel: &RelPath) -> Result<(OwnedFd, Vec<String>), ToolError> {
        let mut created = Vec::new();
        let mut current: Option<OwnedFd> = None;
        let mut walked: Vec<String> = Vec::new();
        for name in &rel.components {
            walked.push(name.clone());
            let shown = walked.join("/");
            let base = match &current {
                Some(fd) => fd.as_fd(),
                None => self.root.as_fd(),
            };
            let next = match self.openat2(
                base,
                name,
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
                &shown,
            ) {
                Ok(fd) => fd,
                Err(e) if e.kind == ErrorKind::NotFound => {
                    match rfs::mkdirat(base, name.as_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            created.push(shown.clone());
                            if let Some((uid, gid)) = self.owner {
                                // Not following a link someone may have put there since.
                                rfs::chownat(
                                    base,
                                    name.as_str(),
                                    Some(uid),
                                    Some(gid),
                                    rfs::AtFlags::SYMLINK_NOFOLLOW,
                                )
                                .map_err(|e| self.error(e, &shown))?;
                            }
                        }
                        // Someone else made it in the meantime: use theirs, but it is not
                        // ours to remove when compensating.
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.error(e, &shown)),
                    }
                    self.openat2(
                        base,
                        name,
                        OFlags::PATH | OFlags::DIRECTORY,
                        Mode::empty(),
                        &shown,
                    )?
                }
                Err(e) => return Err(e),
            };
            current = Some(next);
        }
        let fd = match current {
            Some(fd) => fd,
            None => self.dir(rel)?,
        };
        Ok((fd, created))
    }

    /// Opens the existing regular file `name` in `dir` with `access` (read-only or
    /// read-write). Anything but a regular file is refused.
    pub(crate) fn open_file(
        &self,
        dir: impl AsFd,
        name: &str,
        access: OFlags,
        shown: &str,
    ) -> Result<(OwnedFd, rfs::Stat), ToolError> {
        let fd = self.openat2(
            dir,
            name,
            access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
            shown,
        )?;
        let stat = rfs::fstat(&fd).map_err(|e| self.error(e, shown))?;
        self.require_regular(&stat, shown)?;
        Ok((fd, stat))
    }

    /// Opens `name` in `dir` read-write, creating it (mode 0644 before the umask) if it
    /// does not exist.
    pub(crate) fn open_or_create(
        &self,
        dir: impl AsFd,
        name: &str,
        shown: &str,
    ) -> Result<Opened, ToolError> {
        let dir = dir.as_fd();
        loop {
            match Self::openat2_raw(
                dir,
                name,
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o644),
            ) {
                Ok(fd) => {
                    self.give_to_owner(&fd, shown)?;
                    return Ok(Opened::Created(fd));
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(self.error(e, shown)),
            }
            match self.open_file(dir, name, OFlags::RDWR, shown) {
                Ok((fd, stat)) => return Ok(Opened::Existing(fd, stat)),
                // Removed between the two opens: try to create it again.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn require_regular(&self, stat: &rfs::Stat, shown: &str) -> Result<(), ToolError> {
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind == FileType::RegularFile {
            return Ok(());
        }
        Err(ToolError::new(
            ErrorKind::WrongType,
            format!(
                "{}: `{shown}` is {}, not a regular file",
                self.tool,
                type_phrase(kind)
            ),
        ))
    }
}

/// A lowercase description of an errno, e.g. `permission denied`.
pub(crate) fn describe(e: Errno) -> String {
    std::io::Error::from_raw_os_error(e.raw_os_error())
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_lowercase()
}

/// A phrase for a file type, for error messages.
pub(crate) fn type_phrase(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

/// The short name of a file type in listings.
pub(crate) fn type_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn lexical_checks() {
        let check = |raw: &str, expect: Result<&str, ErrorKind>| {
            let got = RelPath::parse("t", raw, 64).map(|p| p.as_string());
            match expect {
                Ok(norm) => assert_eq!(got.as_deref(), Ok(norm), "{raw:?}"),
                Err(kind) => assert_eq!(got.map_err(|e| e.kind), Err(kind), "{raw:?}"),
            }
        };
        check("a", Ok("a"));
        check("a//./b/", Ok("a/b"));
        check("", Ok("."));
        check(".", Ok("."));
        check("./", Ok("."));
        check("..", Err(ErrorKind::Confinement));
        check("a/../b", Err(ErrorKind::Confinement));
        check("a/..", Err(ErrorKind::Confinement));
        check("/etc/passwd", Err(ErrorKind::Confinement));
        check("//etc", Err(ErrorKind::Confinement));
        check("a\0b", Err(ErrorKind::InvalidArguments));
        check(&"x".repeat(65), Err(ErrorKind::TooLarge));
        check("...", Ok("..."));
        check("a/.b", Ok("a/.b"));
        assert!(RelPath::parse("t", &"x".repeat(256), 4096).is_err());
    }

    /// Where the kernel has no openat2, file access fails closed with a clear reason
    /// instead of falling back to resolving paths in user space.
    #[test]
    fn a_missing_openat2_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open("fs.read", dir.path()).unwrap();
        let e = ws.error(Errno::NOSYS, "a");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(
            e.message.starts_with("fs.read: this kernel has no openat2"),
            "{e}"
        );
        assert_eq!(ws.error(Errno::XDEV, "a").kind, ErrorKind::Confinement);
        assert_eq!(ws.error(Errno::LOOP, "a").kind, ErrorKind::Confinement);
    }

    #[test]
    fn errno_descriptions_are_lowercase_lines() {
        assert_eq!(describe(Errno::ACCESS), "permission denied");
        assert_eq!(describe(Errno::EXIST), "file exists");
    }
}
