//! What a cell and an executable are made of, validated.
//!
//! Every value here is checked when it is built ([`CellName::new`], [`Limits::validate`],
//! [`CellSpec::validate`], ...), so the runtime only ever sees specs it can apply: a bad
//! name, a negative or out-of-range limit, a relative path or an oversized command is an
//! [`Error::InvalidArgument`] before anything is allocated.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest name part, as Aurae allows (a DNS label).
pub const MAX_NAME_PART: usize = 63;
/// How deep cells may nest (`a/b/c/...`); cgroup paths and hostnames stay short.
pub const MAX_DEPTH: usize = 8;
/// Cell-side user and group ids run from 0 to this (exclusive); they map onto a range of
/// unprivileged host ids.
pub const ID_COUNT: u32 = 65_536;
/// The most bytes of command line and environment an executable may have.
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;
/// The most arguments or environment entries.
pub const MAX_ARGS: usize = 4096;

fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_NAME_PART
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
}

/// A cell's name: `name` or `parent/child`, each part 1-63 characters of `[a-zA-Z0-9-]`,
/// not starting or ending with `-` (Aurae's rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CellName(String);

impl CellName {
    pub fn new(name: &str) -> Result<Self> {
        let parts: Vec<&str> = name.split('/').collect();
        if name.is_empty() {
            return Err(Error::invalid("the cell name is empty"));
        }
        if parts.len() > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "cell name `{}` nests deeper than {MAX_DEPTH} levels",
                name.escape_debug()
            )));
        }
        if let Some(bad) = parts.iter().find(|p| !valid_part(p)) {
            return Err(Error::invalid(format!(
                "invalid cell name `{}`: `{}` must be 1-{MAX_NAME_PART} letters, digits or '-', not starting or ending with '-'",
                name.escape_debug(),
                bad.escape_debug()
            )));
        }
        Ok(CellName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent cell, for `parent/child`.
    pub fn parent(&self) -> Option<CellName> {
        self.0.rsplit_once('/').map(|(p, _)| CellName(p.to_owned()))
    }

    /// The last part: the cell's own name, used as its hostname.
    pub fn leaf(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    pub fn depth(&self) -> usize {
        self.parts().count()
    }
}

impl fmt::Display for CellName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CellName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        CellName::new(&s)
    }
}

impl From<CellName> for String {
    fn from(n: CellName) -> String {
        n.0
    }
}

/// An executable's name, unique within its cell: 1-63 characters of `[a-zA-Z0-9._-]`, not
/// starting with `-` or `.` (it names the executable's log file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExecutableName(String);

impl ExecutableName {
    pub fn new(name: &str) -> Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_PART
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with(['-', '.']);
        if ok {
            Ok(ExecutableName(name.to_owned()))
        } else {
            Err(Error::invalid(format!(
                "invalid executable name `{}`: use 1-{MAX_NAME_PART} letters, digits, '.', '_' or '-', not starting with '-' or '.'",
                name.escape_debug()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecutableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ExecutableName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        ExecutableName::new(&s)
    }
}

impl From<ExecutableName> for String {
    fn from(n: ExecutableName) -> String {
        n.0
    }
}

/// CPU bandwidth: at most `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuMax {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuMax {
    /// The default period the kernel uses, 100 ms.
    pub const DEFAULT_PERIOD_US: u64 = 100_000;

    /// A share of one CPU (0.5 = half a CPU), over the default period.
    pub fn cpus(cpus: f64) -> Result<Self> {
        if !cpus.is_finite() || cpus <= 0.0 || cpus > 4096.0 {
            return Err(Error::invalid(format!(
                "--cpus must be a number of CPUs above 0, not {cpus}"
            )));
        }
        let quota = (cpus * Self::DEFAULT_PERIOD_US as f64).round() as u64;
        Ok(CpuMax {
            quota_us: quota.max(1_000),
            period_us: Self::DEFAULT_PERIOD_US,
        })
    }
}

/// Resource limits, applied through cgroup controllers (v2, or the v1 hierarchies).
/// `None` leaves the kernel's default (unlimited, or the parent's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Relative CPU weight, 1-10000 (cgroup v2's scale; converted to shares on v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max: Option<CpuMax>,
    /// CPUs the cell may run on, as a list like `0-3,6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes, as a list like `0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,
    /// Bytes of memory protected from reclaim (v2 only; ignored on v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_min: Option<u64>,
    /// Bytes of memory protected from reclaim when possible (v1: the soft limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_low: Option<u64>,
    /// Bytes above which the cell is throttled and reclaimed (v2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<u64>,
    /// Hard memory limit in bytes; exceeding it gets the cell OOM-killed. Swap is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    /// The most processes and threads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
}

/// The smallest memory limit accepted: below this not even a shell starts.
pub const MIN_MEMORY_MAX: u64 = 1024 * 1024;

impl Limits {
    /// Converts Aurae's signed fields, refusing negatives.
    pub fn signed(field: &str, value: Option<i64>) -> Result<Option<u64>> {
        match value {
            None => Ok(None),
            Some(v) if v < 0 => Err(Error::invalid(format!(
                "{field} must not be negative (got {v})"
            ))),
            Some(v) => Ok(Some(v.unsigned_abs())),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(w) = self.cpu_weight
            && !(1..=10_000).contains(&w)
        {
            return Err(Error::invalid(format!(
                "cpu weight must be 1-10000 (got {w})"
            )));
        }
        if let Some(m) = self.cpu_max {
            if !(1_000..=1_000_000).contains(&m.period_us) {
                return Err(Error::invalid(format!(
                    "cpu period must be 1000-1000000 µs (got {})",
                    m.period_us
                )));
            }
            if m.quota_us < 1_000 {
                return Err(Error::invalid(format!(
                    "cpu max must be at least 1000 µs per period (got {})",
                    m.quota_us
                )));
            }
        }
        for (what, list) in [
            ("cpuset cpus", &self.cpuset_cpus),
            ("cpuset mems", &self.cpuset_mems),
        ] {
            if let Some(l) = list {
                validate_id_list(what, l)?;
            }
        }
        if let Some(m) = self.memory_max
            && m < MIN_MEMORY_MAX
        {
            return Err(Error::invalid(format!(
                "memory max must be at least {MIN_MEMORY_MAX} bytes (got {m})"
            )));
        }
        for (what, v) in [
            ("memory min", self.memory_min),
            ("memory low", self.memory_low),
            ("memory high", self.memory_high),
            ("memory max", self.memory_max),
        ] {
            if let Some(v) = v
                && v > i64::MAX as u64
            {
                return Err(Error::invalid(format!("{what} is too large ({v})")));
            }
        }
        if let Some(p) = self.pids_max
            && (p == 0 || p > 4_194_304)
        {
            return Err(Error::invalid(format!(
                "pids max must be 1-4194304 (got {p})"
            )));
        }
        Ok(())
    }
}

/// Checks a cpuset list like `0-3,6`: numbers and ranges, ascending within a range.
fn validate_id_list(what: &str, list: &str) -> Result<()> {
    let bad = || {
        Error::invalid(format!(
            "{what} must be a list like `0-3,6`, not `{}`",
            list.escape_debug()
        ))
    };
    if list.is_empty() || list.len() > 256 {
        return Err(bad());
    }
    for item in list.split(',') {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        if a > b || b > 65_535 {
            return Err(bad());
        }
    }
    Ok(())
}

/// A host path mounted into the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// An absolute host path (file or directory).
    pub source: PathBuf,
    /// An absolute path inside the cell; the same as `source` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
    /// Mounted read-write; read-only otherwise.
    #[serde(default)]
    pub writable: bool,
}

/// Cell paths that binds may not land on or under: Aura mounts its own file systems
/// there, and `/workspace` and `/tmp` are writable by the cell, so a bind target under
/// them could be raced with a symlink (the CVE-2021-30465 class).
const RESERVED_TARGETS: &[&str] = &["/proc", "/dev", "/tmp", "/workspace", "/etc"];

impl Bind {
    pub fn target(&self) -> &Path {
        self.target.as_deref().unwrap_or(&self.source)
    }

    pub fn validate(&self) -> Result<()> {
        check_abs_path("bind source", &self.source)?;
        let target = self.target();
        check_abs_path("bind target", target)?;
        if target == Path::new("/") {
            return Err(Error::invalid("a bind cannot replace the cell's root"));
        }
        for r in RESERVED_TARGETS {
            if target.starts_with(r) {
                return Err(Error::invalid(format!(
                    "bind target {} is reserved: Aura mounts {r} itself",
                    target.display()
                )));
            }
        }
        Ok(())
    }
}

/// An absolute, normal path: no `..`, no `.`, valid UTF-8 is not required but NUL is refused.
fn check_abs_path(what: &str, p: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    if !p.is_absolute() {
        return Err(Error::invalid(format!(
            "{what} {} must be an absolute path",
            p.display()
        )));
    }
    if p.as_os_str().as_bytes().contains(&0) || p.as_os_str().len() > 4095 {
        return Err(Error::invalid(format!("{what} is not a valid path")));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(Error::invalid(format!(
            "{what} {} must not contain `.` or `..`",
            p.display()
        )));
    }
    Ok(())
}

/// Environment variables, checked: names are non-empty without `=` or NUL; values have no NUL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Env(pub Vec<(String, String)>);

impl Env {
    /// Parses `KEY=VALUE` items.
    pub fn parse<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Result<Self> {
        let mut out = Vec::new();
        for item in items {
            let item = item.as_ref();
            let (k, v) = item.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "environment entry `{}` must look like KEY=VALUE",
                    item.escape_debug()
                ))
            })?;
            out.push((k.to_owned(), v.to_owned()));
        }
        let env = Env(out);
        env.validate()?;
        Ok(env)
    }

    pub fn validate(&self) -> Result<()> {
        if self.0.len() > MAX_ARGS {
            return Err(Error::invalid("too many environment variables"));
        }
        for (k, v) in &self.0 {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                return Err(Error::invalid(format!(
                    "invalid environment variable `{}`",
                    k.escape_debug()
                )));
            }
        }
        Ok(())
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_owned(), value.to_owned()));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `self` with `over`'s variables taking precedence.
    pub fn merged(&self, over: &Env) -> Env {
        let mut out = self.clone();
        for (k, v) in &over.0 {
            out.set(k, v);
        }
        out
    }

    pub(crate) fn bytes(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
    }
}

/// A cell: its name, limits, network, file system and environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSpec {
    pub name: CellName,
    #[serde(default)]
    pub limits: Limits,
    /// Share the host's network namespace. Without it the cell has its own network
    /// namespace with only a loopback interface.
    #[serde(default)]
    pub network: bool,
    /// A host directory mounted read-write (nosuid, nodev) at `/workspace`: one of the
    /// cells' ids (a node's workspace, whose owner is a cell's root), or an unprivileged
    /// user's (id-mapped for that user alone); never the host root's (see
    /// [`crate::RunSpec::workspace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
    /// Extra host paths mounted into the cell (read-only unless `writable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<Bind>,
    /// Variables every executable starts with (after Aura's defaults, before its own).
    #[serde(default, skip_serializing_if = "is_empty_env")]
    pub env: Env,
}

fn is_empty_env(e: &Env) -> bool {
    e.0.is_empty()
}

impl CellSpec {
    pub fn new(name: CellName) -> Self {
        CellSpec {
            name,
            limits: Limits::default(),
            network: false,
            workspace: None,
            binds: Vec::new(),
            env: Env::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.limits.validate()?;
        if let Some(w) = &self.workspace {
            check_abs_path("workspace", w)?;
        }
        if self.binds.len() > 64 {
            return Err(Error::invalid("a cell may have at most 64 binds"));
        }
        for b in &self.binds {
            b.validate()?;
        }
        self.env.validate()
    }
}

/// What to run: a shell command line (`sh -c COMMAND`, as Aurae runs its executables) or
/// an argv run directly, with `PATH` searched inside the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

impl Command {
    pub fn shell(line: impl Into<String>) -> Self {
        Command::Shell(line.into())
    }

    pub fn argv<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> Self {
        Command::Argv(args.into_iter().map(Into::into).collect())
    }

    /// The argv the cell executes.
    pub fn to_argv(&self) -> Vec<String> {
        match self {
            Command::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
            Command::Argv(a) => a.clone(),
        }
    }

    /// The file to execute: `/bin/sh` for a shell line, else argv[0].
    pub(crate) fn file(&self) -> String {
        match self {
            Command::Shell(_) => "/bin/sh".into(),
            Command::Argv(a) => a.first().cloned().unwrap_or_default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let args = self.to_argv();
        if args.is_empty() || args[0].is_empty() {
            return Err(Error::invalid("the command is empty"));
        }
        if let Command::Shell(line) = self
            && line.trim().is_empty()
        {
            return Err(Error::invalid("the command is empty"));
        }
        if args.len() > MAX_ARGS {
            return Err(Error::invalid("the command has too many arguments"));
        }
        if args.iter().any(|a| a.contains('\0')) {
            return Err(Error::invalid("the command contains a NUL byte"));
        }
        if self.bytes() > MAX_COMMAND_BYTES {
            return Err(Error::invalid(format!(
                "the command is longer than {MAX_COMMAND_BYTES} bytes"
            )));
        }
        Ok(())
    }

    pub(crate) fn bytes(&self) -> usize {
        self.to_argv().iter().map(|a| a.len() + 1).sum()
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Shell(line) => f.write_str(line),
            Command::Argv(a) => f.write_str(&a.join(" ")),
        }
    }
}

/// An executable started inside a long-lived cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutableSpec {
    pub name: ExecutableName,
    pub command: Command,
    #[serde(default, skip_serializing_if = "is_empty_env")]
    pub env: Env,
    /// The working directory inside the cell; `/workspace` if the cell has one, else `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The cell-side user id; the workspace's owner by default (else 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl ExecutableSpec {
    pub fn new(name: ExecutableName, command: Command) -> Self {
        ExecutableSpec {
            name,
            command,
            env: Env::default(),
            cwd: None,
            uid: None,
            gid: None,
            description: String::new(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.command.validate()?;
        self.env.validate()?;
        validate_process(self.cwd.as_deref(), self.uid, self.gid)?;
        if self.command.bytes() + self.env.bytes() > MAX_COMMAND_BYTES {
            return Err(Error::invalid(format!(
                "the command and environment are longer than {MAX_COMMAND_BYTES} bytes"
            )));
        }
        if self.description.len() > 4096 {
            return Err(Error::invalid("the description is longer than 4096 bytes"));
        }
        Ok(())
    }
}

pub(crate) fn validate_process(
    cwd: Option<&str>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<()> {
    if let Some(c) = cwd {
        check_abs_path("working directory", Path::new(c))?;
    }
    for (what, id) in [("uid", uid), ("gid", gid)] {
        if let Some(id) = id
            && id >= ID_COUNT
        {
            return Err(Error::invalid(format!(
                "{what} {id} is outside the cell's id range 0-{}",
                ID_COUNT - 1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(name: &str, ok: bool) {
        assert_eq!(CellName::new(name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn cell_names_follow_aurae() {
        for (name, ok) in [
            ("a", true),
            ("web-1", true),
            ("parent/child", true),
            ("a/b/c/d/e/f/g/h", true),
            ("a/b/c/d/e/f/g/h/i", false),
            (&"x".repeat(63), true),
            (&"x".repeat(64), false),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("a_b", false),
            ("a/", false),
            ("/a", false),
            ("a//b", false),
            ("a.b", false),
            ("..", false),
            ("ä", false),
            ("a b", false),
        ] {
            check_name(name, ok);
        }
        let n = CellName::new("p/q/r").unwrap();
        assert_eq!(n.parent().unwrap().as_str(), "p/q");
        assert_eq!(n.leaf(), "r");
        assert!(CellName::new("p").unwrap().parent().is_none());
    }

    #[test]
    fn executable_names() {
        for (name, ok) in [
            ("job", true),
            ("job_1.v2", true),
            ("", false),
            (".hidden", false),
            ("-x", false),
            ("a/b", false),
            ("a b", false),
        ] {
            assert_eq!(ExecutableName::new(name).is_ok(), ok, "{name:?}");
        }
    }

    fn check_limits(l: &Limits, ok: bool) {
        assert_eq!(l.validate().is_ok(), ok, "{l:?}");
    }

    #[test]
    fn limits_are_range_checked() {
        let d = Limits::default;
        check_limits(&d(), true);
        check_limits(
            &Limits {
                cpu_weight: Some(0),
                ..d()
            },
            false,
        );
        check_limits(
            &Limits {
                cpu_weight: Some(10_001),
                ..d()
            },
            false,
        );
        check_limits(
            &Limits {
                cpu_weight: Some(100),
                ..d()
            },
            true,
        );
        check_limits(
            &Limits {
                cpu_max: Some(CpuMax {
                    quota_us: 50_000,
                    period_us: 100_000,
                }),
                ..d()
            },
            true,
        );
        check_limits(
            &Limits {
                cpu_max: Some(CpuMax {
                    quota_us: 10,
                    period_us: 100_000,
                }),
                ..d()
            },
            false,
        );
        check_limits(
            &Limits {
                cpu_max: Some(CpuMax {
                    quota_us: 5000,
                    period_us: 10,
                }),
                ..d()
            },
            false,
        );
        check_limits(
            &Limits {
                cpuset_cpus: Some("0-1,3".into()),
                ..d()
            },
            true,
        );
        check_limits(
            &Limits {
                cpuset_cpus: Some("1-0".into()),
                ..d()
            },
            false,
        );
        check_limits(
            &Limits {
                cpuset_cpus: Some("a".into()),
                ..d()
            },
            false,
        );
        check_limits(
            &Limits {
                cpuset_mems: Some("".into()),
                ..d()
            },
            false,
        );
        check_limits(
            &Limits {
                memory_max: Some(1000),
                ..d()
            },
            false,
        );
        check_limits(
            &Limits {
                memory_max: Some(64 << 20),
                ..d()
            },
            true,
        );
        check_limits(
            &Limits {
                pids_max: Some(0),
                ..d()
            },
            false,
        );
        check_limits(
            &Limits {
                pids_max: Some(64),
                ..d()
            },
            true,
        );
        assert!(Limits::signed("memory max", Some(-1)).is_err());
        assert_eq!(Limits::signed("memory max", Some(5)).unwrap(), Some(5));
    }

    #[test]
    fn binds_and_paths() {
        let b = |s: &str, t: Option<&str>| Bind {
            source: s.into(),
            target: t.map(Into::into),
            writable: false,
        };
        assert!(b("/opt/tools", None).validate().is_ok());
        assert!(b("/opt/tools", Some("/tools")).validate().is_ok());
        assert!(b("relative", None).validate().is_err());
        assert!(b("/opt/../etc", None).validate().is_err());
        assert!(b("/data", Some("/workspace/data")).validate().is_err());
        assert!(b("/data", Some("/tmp/x")).validate().is_err());
        assert!(b("/data", Some("/proc/sys")).validate().is_err());
        assert!(b("/data", Some("/")).validate().is_err());
    }

    #[test]
    fn commands_and_env() {
        assert!(Command::shell("echo hi").validate().is_ok());
        assert!(Command::shell("  ").validate().is_err());
        assert!(Command::argv(Vec::<String>::new()).validate().is_err());
        assert!(Command::argv(["a\0b"]).validate().is_err());
        assert!(
            Command::shell("x".repeat(MAX_COMMAND_BYTES + 1))
                .validate()
                .is_err()
        );
        assert_eq!(Command::shell("ls").to_argv(), ["sh", "-c", "ls"]);
        assert!(Env::parse(["A=1", "B="]).is_ok());
        assert!(Env::parse(["A"]).is_err());
        assert!(Env::parse(["=1"]).is_err());
        let mut e = Env::parse(["A=1"]).unwrap();
        e.set("A", "2");
        assert_eq!(e.get("A"), Some("2"));
        assert!(validate_process(Some("rel"), None, None).is_err());
        assert!(validate_process(None, Some(ID_COUNT), None).is_err());
        assert!(validate_process(Some("/workspace"), Some(1000), Some(1000)).is_ok());
    }

    #[test]
    fn cpus_convert_to_a_quota() {
        assert_eq!(
            CpuMax::cpus(0.5).unwrap(),
            CpuMax {
                quota_us: 50_000,
                period_us: 100_000
            }
        );
        assert!(CpuMax::cpus(0.0).is_err());
        assert!(CpuMax::cpus(f64::NAN).is_err());
    }

    proptest::proptest! {
        #[test]
        fn names_never_panic(s in ".{0,200}") {
            let _ = CellName::new(&s);
            let _ = ExecutableName::new(&s);
            let _ = Env::parse([s.as_str()]);
        }

        #[test]
        fn valid_names_round_trip(parts in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..5)) {
            let name = parts.join("/");
            let n = CellName::new(&name).unwrap();
            proptest::prop_assert_eq!(n.as_str(), name.as_str());
            proptest::prop_assert_eq!(n.depth(), parts.len());
        }
    }
}
