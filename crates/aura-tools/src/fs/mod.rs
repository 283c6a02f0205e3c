//! The file tools: `fs.read`, `fs.write`, `fs.list` and `fs.delete`, confined to the
//! mission's workspace (see [`beneath`] for how).
//!
//! `fs.write` and `fs.delete` record what they replace or remove in their effect's
//! [`Compensation::RestoreFile`], so a failing mission can put every byte back; for that
//! reason they refuse to replace or remove a file larger than [`Limits::write_bytes`].
//! All file work runs on tokio's blocking threads.

mod beneath;

use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::args::{parse, schema_for};
use crate::call::{Call, Capability, Prepared, Target, ToolDescriptor};
use crate::context::{Limits, ToolContext};
use crate::effect::{Compensation, Effect, ErrorKind, ToolError};
use crate::tool::{Tool, blocking};

pub(crate) use beneath::RelPath;
use beneath::{Opened, Workspace, type_name};

/// How file content is carried in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    // Plain comments rather than doc comments here: with doc comments schemars describes
    // the variants as a `oneOf`, where a plain `enum` is what reasoners read best.
    // UTF-8 text (the default).
    #[default]
    Utf8,
    // Any bytes, as standard base64.
    Base64,
}

impl Encoding {
    fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf8",
            Encoding::Base64 => "base64",
        }
    }
}

/// Arguments of `fs.read`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// The file, relative to the workspace.
    pub path: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Where to start reading, in bytes.
    #[serde(default)]
    pub offset: u64,
    /// Most bytes to return (never more than the node's limit).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// Arguments of `fs.write`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    /// The file, relative to the workspace. It is created or replaced.
    pub path: String,
    /// The new content.
    pub content: String,
    /// How `content` is encoded: `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Create missing parent directories (default true).
    #[serde(default = "yes")]
    pub create_parents: bool,
}

fn yes() -> bool {
    true
}

/// Arguments of `fs.list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// The directory, relative to the workspace (default: the workspace itself).
    #[serde(default = "dot")]
    pub path: String,
}

fn dot() -> String {
    ".".to_owned()
}

/// Arguments of `fs.delete`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    /// The file to remove, relative to the workspace.
    pub path: String,
}

/// A file tool's arguments: each names one path in the workspace.
trait PathArgs: DeserializeOwned + Send + 'static {
    fn path(&self) -> &str;
}

macro_rules! path_args {
    ($($args:ty),*) => {$(
        impl PathArgs for $args {
            fn path(&self) -> &str {
                &self.path
            }
        }
    )*};
}

path_args!(ReadArgs, WriteArgs, ListArgs, DeleteArgs);

/// The most path bytes accepted while preparing, before the mission's own limit is known.
const PREPARE_PATH_LIMIT: usize = 4096;

/// Parses a file tool's arguments and the workspace path they name (at most `limit`
/// bytes): the first step of preparing a call and of executing it.
fn parse_path<A: PathArgs>(
    tool: &str,
    arguments: &serde_json::Value,
    limit: usize,
) -> Result<(A, RelPath), ToolError> {
    let args: A = parse(tool, arguments)?;
    let path = RelPath::parse(tool, args.path(), limit)?;
    Ok((args, path))
}

/// What a file tool's work is handed on its blocking thread: the call's arguments, the
/// path they name (checked against the node's own path limit), and where the workspace
/// is. The workspace is opened by the work itself ([`Job::workspace`]), so that each tool
/// keeps the order of its checks.
struct Job<A> {
    tool: &'static str,
    args: A,
    rel: RelPath,
    /// The path as the tool's results and messages show it.
    shown: String,
    workspace: PathBuf,
    limits: Limits,
}

impl<A> Job<A> {
    /// The mission's workspace, opened so that everything beneath it is resolved with
    /// `openat2` (see [`beneath`]).
    fn workspace(&self) -> Result<Workspace, ToolError> {
        Workspace::open(self.tool, &self.workspace)
    }
}

/// What a file tool's work produced: its result for the reasoner, and how to undo it.
type Done = (serde_json::Value, Option<Compensation>);

/// Executes a file tool's call: parses its arguments again under the node's limits (the
/// prepared call was checked against the preparing limit only), runs `work` on a
/// blocking thread, and makes the outcome the call's effect. Every file tool runs through
/// here, so none can forget a step.
async fn run<A: PathArgs>(
    tool: &'static str,
    ctx: &ToolContext,
    prepared: &Prepared,
    work: impl FnOnce(Job<A>) -> Result<Done, ToolError> + Send + 'static,
) -> Effect {
    let arguments = prepared.call.arguments.clone();
    let workspace = ctx.workspace.clone();
    let limits = ctx.limits;
    let result = blocking(tool, move || {
        let (args, rel) = parse_path::<A>(tool, &arguments, limits.path_bytes)?;
        let shown = rel.as_string();
        work(Job {
            tool,
            args,
            rel,
            shown,
            workspace,
            limits,
        })
    })
    .await;
    match result {
        Ok((value, compensation)) => {
            let mut effect = Effect::ok(tool, &prepared.call.id, value);
            effect.compensation = compensation;
            effect
        }
        Err(e) => Effect::failed(tool, &prepared.call.id, e),
    }
}

fn descriptor<A: JsonSchema>(
    name: &str,
    description: &str,
    destructive: bool,
    compensable: bool,
) -> ToolDescriptor {
    ToolDescriptor {
        name: name.to_owned(),
        description: description.to_owned(),
        parameters: schema_for::<A>(),
        destructive,
        compensable,
        needs: Capability::Workspace,
    }
}

fn prepared(call: &Call, path: &RelPath, destructive: bool) -> Prepared {
    Prepared {
        call: call.clone(),
        target: Target::Path {
            path: path.as_string(),
        },
        destructive,
    }
}

fn decode_content(tool: &str, content: &str, encoding: Encoding) -> Result<Vec<u8>, ToolError> {
    match encoding {
        Encoding::Utf8 => Ok(content.as_bytes().to_vec()),
        Encoding::Base64 => STANDARD.decode(content.as_bytes()).map_err(|e| {
            ToolError::new(
                ErrorKind::InvalidArguments,
                format!("{tool}: `content` is not valid base64: {e}"),
            )
        }),
    }
}

/// Reads at most `limit` bytes from the start of `fd`, refusing files that are longer:
/// their content must fit in the effect.
fn read_previous(
    tool: &str,
    fd: &OwnedFd,
    stat: &rfs::Stat,
    limit: u64,
    shown: &str,
) -> Result<Vec<u8>, ToolError> {
    let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
    let too_large = || {
        ToolError::new(
            ErrorKind::TooLarge,
            format!(
                "{tool}: `{shown}` holds more than {limit} bytes, too many to record for undoing the change; refusing"
            ),
        )
    };
    if size > limit {
        return Err(too_large());
    }
    let mut file = File::from(fd.try_clone().map_err(|e| io_error(tool, shown, &e))?);
    let mut bytes = Vec::new();
    file.by_ref()
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(tool, shown, &e))?;
    // The file may have grown since `fstat`.
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

fn io_error(tool: &str, shown: &str, e: &std::io::Error) -> ToolError {
    let text = e.to_string();
    let text = text
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_lowercase();
    ToolError::new(ErrorKind::Io, format!("{tool}: `{shown}`: {text}"))
}

/// Replaces the whole content of the open file with `bytes`.
fn overwrite(tool: &str, fd: &OwnedFd, bytes: &[u8], shown: &str) -> Result<(), ToolError> {
    let file = File::from(fd.try_clone().map_err(|e| io_error(tool, shown, &e))?);
    file.set_len(0).map_err(|e| io_error(tool, shown, &e))?;
    file.write_all_at(bytes, 0)
        .map_err(|e| io_error(tool, shown, &e))
}

/// `fs.read`.
#[derive(Debug)]
pub struct FsRead {
    descriptor: ToolDescriptor,
}

impl FsRead {
    pub const NAME: &'static str = "fs.read";

    pub fn new() -> Self {
        FsRead {
            descriptor: descriptor::<ReadArgs>(
                Self::NAME,
                "Read a file in the mission's workspace, as UTF-8 text or base64; long files are truncated (see `truncated`, and read on with `offset`).",
                false,
                false,
            ),
        }
    }
}

impl Default for FsRead {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Tool for FsRead {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let (_, path) = parse_path::<ReadArgs>(Self::NAME, &call.arguments, PREPARE_PATH_LIMIT)?;
        Ok(prepared(call, &path, false))
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        run(Self::NAME, ctx, prepared, |job: Job<ReadArgs>| {
            let ws = job.workspace()?;
            let Job {
                tool,
                args,
                rel,
                shown,
                limits,
                ..
            } = job;
            let Some((parent, name)) = rel.split_last() else {
                return Err(ToolError::new(
                    ErrorKind::WrongType,
                    format!("{tool}: `.` is the workspace directory; use fs.list"),
                ));
            };
            let dir = ws.dir(&parent)?;
            let (fd, stat) = ws.open_file(&dir, name, OFlags::RDONLY, &shown)?;
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            let max = args
                .max_bytes
                .map_or(limits.read_bytes, |m| m.min(limits.read_bytes));
            let file = File::from(fd);
            let mut bytes = vec![0u8; usize::try_from(max.min(size.saturating_sub(args.offset))).unwrap_or(0)];
            let mut filled = 0;
            while filled < bytes.len() {
                let n = file
                    .read_at(&mut bytes[filled..], args.offset.saturating_add(filled as u64))
                    .map_err(|e| io_error(tool, &shown, &e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            bytes.truncate(filled);
            let end = args.offset.saturating_add(filled as u64);
            let truncated = end < size;
            let content = match args.encoding {
                Encoding::Base64 => STANDARD.encode(&bytes),
                Encoding::Utf8 => match std::str::from_utf8(&bytes) {
                    Ok(text) => text.to_owned(),
                    // A character cut in two by the limit: stop before it.
                    Err(e) if e.error_len().is_none() && truncated => {
                        bytes.truncate(e.valid_up_to());
                        String::from_utf8_lossy(&bytes).into_owned()
                    }
                    Err(_) => {
                        return Err(ToolError::new(
                            ErrorKind::InvalidArguments,
                            format!(
                                "{tool}: `{shown}` is not UTF-8 text; read it with \"encoding\": \"base64\""
                            ),
                        ));
                    }
                },
            };
            let value = json!({
                "path": shown,
                "size": size,
                "offset": args.offset,
                "bytes": bytes.len(),
                "encoding": args.encoding.as_str(),
                "content": content,
                "truncated": truncated,
            });
            Ok((value, None))
        })
        .await
    }
}

/// `fs.write`.
#[derive(Debug)]
pub struct FsWrite {
    descriptor: ToolDescriptor,
}

impl FsWrite {
    pub const NAME: &'static str = "fs.write";

    pub fn new() -> Self {
        FsWrite {
            descriptor: descriptor::<WriteArgs>(
                Self::NAME,
                "Create or replace a file in the mission's workspace with the given content (UTF-8 text, or base64 for bytes). Undone by restoring the previous content.",
                false,
                true,
            ),
        }
    }
}

impl Default for FsWrite {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Tool for FsWrite {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let (args, path) =
            parse_path::<WriteArgs>(Self::NAME, &call.arguments, PREPARE_PATH_LIMIT)?;
        decode_content(Self::NAME, &args.content, args.encoding)?;
        if path.is_root() {
            return Err(root_refused(Self::NAME));
        }
        // Not destructive: the effect keeps the previous bytes, so compensation restores
        // an overwritten file exactly. Deleting is what policy treats as destructive.
        Ok(prepared(call, &path, false))
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        run(Self::NAME, ctx, prepared, |job: Job<WriteArgs>| {
            let Job {
                tool, args, limits, ..
            } = &job;
            let bytes = decode_content(tool, &args.content, args.encoding)?;
            if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limits.write_bytes {
                return Err(ToolError::new(
                    ErrorKind::TooLarge,
                    format!(
                        "{tool}: the content is {} bytes; the limit is {}",
                        bytes.len(),
                        limits.write_bytes
                    ),
                ));
            }
            let ws = job.workspace()?;
            let (value, compensation) =
                write_file(&ws, tool, &job.rel, &bytes, args.create_parents, limits)?;
            Ok((value, Some(compensation)))
        })
        .await
    }

    async fn compensate(
        &self,
        ctx: &ToolContext,
        compensation: &Compensation,
    ) -> Result<(), ToolError> {
        restore(Self::NAME, ctx, compensation).await
    }
}

fn root_refused(tool: &str) -> ToolError {
    ToolError::new(
        ErrorKind::WrongType,
        format!("{tool}: the path names the workspace directory itself, not a file"),
    )
}

/// Writes `bytes` to `rel`, returning the result value and the compensation. If the
/// write fails after something changed, the change is undone before reporting.
fn write_file(
    ws: &Workspace,
    tool: &str,
    rel: &RelPath,
    bytes: &[u8],
    create_parents: bool,
    limits: &Limits,
) -> Result<(serde_json::Value, Compensation), ToolError> {
    let shown = rel.as_string();
    let Some((parent, name)) = rel.split_last() else {
        return Err(root_refused(tool));
    };
    let (dir, created_dirs) = if create_parents {
        ws.dir_creating(&parent)?
    } else {
        (ws.dir(&parent)?, Vec::new())
    };
    let (fd, previous) = match ws.open_or_create(&dir, name, &shown) {
        Ok(Opened::Created(fd)) => (fd, None),
        Ok(Opened::Existing(fd, stat)) => {
            // The file is rewritten in place, which would also change every other name
            // of the same inode, and those may lie outside the workspace.
            if stat.st_nlink > 1 {
                return Err(ToolError::new(
                    ErrorKind::Confinement,
                    format!(
                        "{tool}: `{shown}` has other hard links, which writing it would change too; refusing"
                    ),
                ));
            }
            let previous = read_previous(tool, &fd, &stat, limits.write_bytes, &shown)?;
            (fd, Some(previous))
        }
        Err(e) => {
            remove_dirs(ws, &created_dirs);
            return Err(e);
        }
    };
    let compensation = Compensation::RestoreFile {
        path: shown.clone(),
        previous: previous.clone(),
        created_dirs,
        mode: None,
    };
    if let Err(e) = overwrite(tool, &fd, bytes, &shown) {
        drop(fd);
        let undone = restore_blocking(ws, tool, &compensation, limits);
        let note = if undone.is_ok() {
            "; the file was put back as it was"
        } else {
            "; putting the file back failed too"
        };
        return Err(ToolError::new(e.kind, format!("{}{note}", e.message)));
    }
    let value = json!({
        "path": shown,
        "bytes": bytes.len(),
        "created": previous.is_none(),
    });
    Ok((value, compensation))
}

/// Removes directories a call created, innermost first, leaving any that are no longer
/// empty. Best effort: used when undoing.
fn remove_dirs(ws: &Workspace, created_dirs: &[String]) {
    for dir in created_dirs.iter().rev() {
        let Ok(rel) = RelPath::parse("fs", dir, usize::MAX) else {
            continue;
        };
        let Some((parent, name)) = rel.split_last() else {
            continue;
        };
        if let Ok(parent_fd) = ws.dir(&parent) {
            let _ignored = rfs::unlinkat(&parent_fd, name, AtFlags::REMOVEDIR);
        }
    }
}

/// Applies a [`Compensation::RestoreFile`] beneath the workspace. Idempotent.
fn restore_blocking(
    ws: &Workspace,
    tool: &str,
    compensation: &Compensation,
    limits: &Limits,
) -> Result<(), ToolError> {
    let Compensation::RestoreFile {
        path,
        previous,
        created_dirs,
        mode,
    } = compensation
    else {
        return Err(ToolError::new(
            ErrorKind::InvalidArguments,
            format!("{tool}: this compensation is not a file restoration"),
        ));
    };
    let rel = RelPath::parse(tool, path, limits.path_bytes.max(PREPARE_PATH_LIMIT))?;
    let shown = rel.as_string();
    let Some((parent, name)) = rel.split_last() else {
        return Err(root_refused(tool));
    };
    for dir in created_dirs {
        RelPath::parse(tool, dir, usize::MAX)?;
    }
    match previous {
        None => {
            match ws.dir(&parent) {
                Ok(dir) => {
                    // Only a regular file (or nothing) is removed: a directory or link
                    // found at the path now was not made by the call being undone.
                    match ws.open_file(&dir, name, OFlags::RDONLY, &shown) {
                        Ok(_) => match rfs::unlinkat(&dir, name, AtFlags::empty()) {
                            Ok(()) | Err(Errno::NOENT) => {}
                            Err(e) => return Err(ws.error(e, &shown)),
                        },
                        Err(e) if e.kind == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            remove_dirs(ws, created_dirs);
            Ok(())
        }
        Some(bytes) => {
            let (dir, _) = ws.dir_creating(&parent)?;
            match ws.open_or_create(&dir, name, &shown)? {
                Opened::Created(fd) => {
                    if let Some(mode) = mode {
                        rfs::fchmod(&fd, Mode::from_raw_mode(*mode & 0o7777))
                            .map_err(|e| ws.error(e, &shown))?;
                    }
                    overwrite(tool, &fd, bytes, &shown)
                }
                Opened::Existing(fd, _) => overwrite(tool, &fd, bytes, &shown),
            }
        }
    }
}

async fn restore(
    tool: &'static str,
    ctx: &ToolContext,
    compensation: &Compensation,
) -> Result<(), ToolError> {
    let workspace = ctx.workspace.clone();
    let limits = ctx.limits;
    let compensation = compensation.clone();
    blocking(tool, move || {
        let ws = Workspace::open(tool, &workspace)?;
        restore_blocking(&ws, tool, &compensation, &limits)
    })
    .await
}

/// `fs.list`.
#[derive(Debug)]
pub struct FsList {
    descriptor: ToolDescriptor,
}

impl FsList {
    pub const NAME: &'static str = "fs.list";

    pub fn new() -> Self {
        FsList {
            descriptor: descriptor::<ListArgs>(
                Self::NAME,
                "List a directory in the mission's workspace: each entry's name, type (file, dir, symlink, other) and size.",
                false,
                false,
            ),
        }
    }
}

impl Default for FsList {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Tool for FsList {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let (_, path) = parse_path::<ListArgs>(Self::NAME, &call.arguments, PREPARE_PATH_LIMIT)?;
        Ok(prepared(call, &path, false))
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        run(Self::NAME, ctx, prepared, |job: Job<ListArgs>| {
            let ws = job.workspace()?;
            let dir = ws.dir_for_listing(&job.rel)?;
            let value = list(&ws, &dir, &job.shown, job.limits.list_entries)?;
            Ok((value, None))
        })
        .await
    }
}

fn list(
    ws: &Workspace,
    dir: &OwnedFd,
    shown: &str,
    max: usize,
) -> Result<serde_json::Value, ToolError> {
    let reader = rfs::Dir::read_from(dir.as_fd()).map_err(|e| ws.error(e, shown))?;
    let mut entries = Vec::new();
    let mut truncated = false;
    for entry in reader {
        let entry = entry.map_err(|e| ws.error(e, shown))?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if entries.len() == max {
            truncated = true;
            break;
        }
        // The entry may vanish between reading the directory and looking at it.
        let stat = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(ws.error(e, shown)),
        };
        let kind = FileType::from_raw_mode(stat.st_mode);
        let mut item = json!({
            "name": name.to_string_lossy(),
            "type": type_name(kind),
        });
        if kind != FileType::Directory {
            item["size"] = json!(u64::try_from(stat.st_size).unwrap_or(0));
        }
        entries.push(item);
    }
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(json!({ "path": shown, "entries": entries, "truncated": truncated }))
}

/// `fs.delete`.
#[derive(Debug)]
pub struct FsDelete {
    descriptor: ToolDescriptor,
}

impl FsDelete {
    pub const NAME: &'static str = "fs.delete";

    pub fn new() -> Self {
        FsDelete {
            descriptor: descriptor::<DeleteArgs>(
                Self::NAME,
                "Remove a file from the mission's workspace. Undone by recreating it with the same content.",
                true,
                true,
            ),
        }
    }
}

impl Default for FsDelete {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Tool for FsDelete {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    fn prepare(&self, call: &Call) -> Result<Prepared, ToolError> {
        let (_, path) = parse_path::<DeleteArgs>(Self::NAME, &call.arguments, PREPARE_PATH_LIMIT)?;
        if path.is_root() {
            return Err(root_refused(Self::NAME));
        }
        Ok(prepared(call, &path, true))
    }

    async fn execute(&self, ctx: &ToolContext, prepared: &Prepared) -> Effect {
        run(Self::NAME, ctx, prepared, |job: Job<DeleteArgs>| {
            let Job {
                tool,
                ref rel,
                ref shown,
                limits,
                ..
            } = job;
            let Some((parent, name)) = rel.split_last() else {
                return Err(root_refused(tool));
            };
            let ws = job.workspace()?;
            let dir = ws.dir(&parent)?;
            let (fd, stat) = ws.open_file(&dir, name, OFlags::RDONLY, shown)?;
            let previous = read_previous(tool, &fd, &stat, limits.write_bytes, shown)?;
            rfs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| ws.error(e, shown))?;
            let value = json!({ "path": shown, "bytes": previous.len() });
            let compensation = Compensation::RestoreFile {
                path: shown.clone(),
                previous: Some(previous),
                created_dirs: Vec::new(),
                mode: Some(stat.st_mode & 0o7777),
            };
            Ok((value, Some(compensation)))
        })
        .await
    }

    async fn compensate(
        &self,
        ctx: &ToolContext,
        compensation: &Compensation,
    ) -> Result<(), ToolError> {
        restore(Self::NAME, ctx, compensation).await
    }
}

/// The four file tools, ready to register.
pub(crate) fn all() -> Vec<Arc<dyn Tool>> {
    vec![
        Arc::new(FsRead::new()),
        Arc::new(FsWrite::new()),
        Arc::new(FsList::new()),
        Arc::new(FsDelete::new()),
    ]
}
