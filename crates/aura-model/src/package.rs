//! Installed model packages: finding them, verifying them, and handing verified files to
//! the engine.
//!
//! ```text
//! <home>/models/                  0700
//!   <name>/                       one directory per package, named as its manifest names it
//!     manifest.aura               the signed manifest (encoding, then the 64-byte signature)
//!     files/<path>                the files the manifest lists, read-only (0444)
//!   .staging-<hex>/               an import in progress (removed when it ends)
//! ```
//!
//! Nothing else may be in a package directory. [`Packages::verify`] re-reads the manifest,
//! checks its signature, lists the directory and hashes every file (streamed, in parallel
//! across files), then names every defect it found: a missing, extra, truncated, grown,
//! modified, swapped or misplaced file, a symbolic link, an edited or unsigned manifest.
//! Only a package that passed comes back as a [`VerifiedPackage`], and [`Verified`] (the
//! only source of [`ModelFiles`] for the engine) is built only from verified packages.
//!
//! [`VerifyCache`] lets a long-running node skip rehashing an unchanged package: it
//! remembers, per package, the digest and each file's device, inode, size, modification
//! and change times as they were when hashing ended (taken from the open file, and
//! compared with the same values taken before hashing, so a file that changed during
//! verification is never cached). A later check lists the directory and stats every file
//! again; any difference at all means a full verification. Writing to a file through the
//! file system always changes its change time, which no user can set back. What the cache
//! cannot see is a change made beneath the file system (writing the raw block device);
//! `aura model verify` and a node restart always hash in full, and callers can bound a
//! cache entry's age.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use aura_core::Timestamp;
use aura_core::hash::Hash;
use rayon::prelude::*;
use serde::Serialize;

use crate::hashing::{Progress, hash_reader};
use crate::manifest::{
    FileRole, Format, MAX_ENCODED, Manifest, ManifestError, PackageKind, SignedManifest,
};

/// The signed manifest's file name inside a package directory.
pub const MANIFEST_FILE: &str = "manifest.aura";
/// The directory holding the package's files.
pub const FILES_DIR: &str = "files";
/// How deep a package's file tree may go.
const MAX_DEPTH: usize = 16;
/// The file that marks a diffusers folder, and an image package.
pub const DIFFUSERS_INDEX: &str = "model_index.json";
/// Digest prefixes shorter than this are not accepted as references.
pub const MIN_DIGEST_PREFIX: usize = 8;

/// The files the engine loads, all verified. The same shape as the engine's input, so
/// the node converts one into the other without looking inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFiles {
    Gguf(PathBuf),
    Safetensors {
        config: PathBuf,
        tokenizer: PathBuf,
        weights: Vec<PathBuf>,
    },
    /// An image model as a diffusers folder: the package's `files/` directory, which
    /// holds exactly the files its manifest lists (`model_index.json`, `unet/`, `vae/`,
    /// `text_encoder/`, `tokenizer/`, …), each verified.
    Diffusers(PathBuf),
}

/// One thing wrong with a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "defect", rename_all = "kebab-case")]
pub enum Defect {
    ManifestMissing,
    ManifestUnreadable {
        error: String,
    },
    ManifestMalformed {
        error: String,
    },
    /// The manifest decodes but its signature does not verify: edited after signing.
    ManifestSignature {
        publisher: String,
    },
    /// The directory and the manifest disagree about the package's name.
    NameMismatch {
        directory: String,
        manifest: String,
    },
    /// The manifest is not the one that was resolved (replaced while in use).
    ManifestReplaced {
        expected: Hash,
        found: Hash,
    },
    Missing {
        path: String,
    },
    Extra {
        path: String,
    },
    NotRegular {
        path: String,
    },
    Truncated {
        path: String,
        expected: u64,
        found: u64,
    },
    Grown {
        path: String,
        expected: u64,
        found: u64,
    },
    /// Same size, different content: a flipped bit, or any edit in place.
    Modified {
        path: String,
    },
    Swapped {
        a: String,
        b: String,
    },
    /// The file holds what the manifest records for another file.
    Misplaced {
        path: String,
        holds: String,
    },
    ChangedDuringVerification {
        path: String,
    },
    Unreadable {
        path: String,
        error: String,
    },
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::ManifestMissing => write!(f, "the manifest ({MANIFEST_FILE}) is missing"),
            Defect::ManifestUnreadable { error } => write!(f, "cannot read the manifest: {error}"),
            Defect::ManifestMalformed { error } => write!(f, "the manifest is malformed: {error}"),
            Defect::ManifestSignature { publisher } => write!(
                f,
                "the manifest's signature does not verify under its publisher's key {publisher} (it was edited after signing)"
            ),
            Defect::NameMismatch {
                directory,
                manifest,
            } => write!(
                f,
                "the package directory is `{directory}` but its manifest names `{manifest}`"
            ),
            Defect::ManifestReplaced { expected, found } => write!(
                f,
                "the manifest was replaced (digest {} instead of {})",
                found.short(),
                expected.short()
            ),
            Defect::Missing { path } => write!(f, "file `{path}` is missing"),
            Defect::Extra { path } => {
                write!(f, "`{path}` is not part of the package (an extra file)")
            }
            Defect::NotRegular { path } => {
                write!(
                    f,
                    "`{path}` is a symbolic link or special file, not a regular file"
                )
            }
            Defect::Truncated {
                path,
                expected,
                found,
            } => write!(f, "file `{path}` is truncated: {found} of {expected} bytes"),
            Defect::Grown {
                path,
                expected,
                found,
            } => write!(
                f,
                "file `{path}` has {found} bytes, {} more than the {expected} its manifest records",
                found - expected
            ),
            Defect::Modified { path } => write!(
                f,
                "file `{path}` does not match its SHA-256 (its content was changed)"
            ),
            Defect::Swapped { a, b } => write!(f, "files `{a}` and `{b}` are swapped"),
            Defect::Misplaced { path, holds } => {
                write!(f, "file `{path}` holds the content of `{holds}`")
            }
            Defect::ChangedDuringVerification { path } => {
                write!(f, "file `{path}` changed while it was being verified")
            }
            Defect::Unreadable { path, error } => write!(f, "cannot read `{path}`: {error}"),
        }
    }
}

/// A package failed verification; every defect found is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct IntegrityError {
    pub package: String,
    pub defects: Vec<Defect>,
}

impl fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "package `{}` failed verification: ", self.package)?;
        match self.defects.as_slice() {
            [] => f.write_str("no defect recorded"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(f, "{first} (and {} more)", rest.len()),
        }
    }
}

impl IntegrityError {
    fn one(package: &str, defect: Defect) -> Self {
        IntegrityError {
            package: package.to_owned(),
            defects: vec![defect],
        }
    }
}

/// Why a package could not be found, verified or loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no model package `{0}` is installed")]
    NotFound(String),
    #[error("`{reference}` matches several packages: {}", candidates.join(", "))]
    Ambiguous {
        reference: String,
        candidates: Vec<String>,
    },
    #[error(
        "`{0}` is not a package name or a digest prefix of at least {MIN_DIGEST_PREFIX} hex digits"
    )]
    BadReference(String),
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    #[error("package `{0}` is an expert pack; run the model that uses it")]
    NotRunnable(String),
    #[error("model `{model}` needs expert pack `{pack}` ({digest}), which is not installed")]
    MissingPack {
        model: String,
        pack: String,
        digest: String,
    },
    #[error("expert pack `{pack}` does not match what model `{model}` expects: {reason}")]
    PackMismatch {
        model: String,
        pack: String,
        reason: String,
    },
    #[error("package `{name}` lacks what its format needs: {reason}")]
    Incomplete { name: String, reason: String },
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP status an API should answer with: 404 for an unknown model, 409 for a
    /// package that is damaged or inconsistent (the request is fine; the installed state
    /// conflicts with what was signed), 400 for a malformed reference, 500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::NotFound(_) => 404,
            Error::BadReference(_) | Error::Ambiguous { .. } | Error::NotRunnable(_) => 400,
            Error::Integrity(_)
            | Error::MissingPack { .. }
            | Error::PackMismatch { .. }
            | Error::Incomplete { .. } => 409,
            Error::Io { .. } => 500,
        }
    }

    /// A stable machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "model_not_found",
            Error::Ambiguous { .. } | Error::BadReference(_) => "model_reference_invalid",
            Error::Integrity(_) => "package_integrity_failed",
            Error::NotRunnable(_) => "model_not_runnable",
            Error::MissingPack { .. } | Error::PackMismatch { .. } | Error::Incomplete { .. } => {
                "package_incomplete"
            }
            Error::Io { .. } => "package_io_error",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// A package found on disk whose manifest decodes and carries a valid signature. Its
/// files have not been checked: verify it before use.
#[derive(Debug, Clone)]
pub struct Installed {
    pub name: String,
    pub dir: PathBuf,
    pub signed: SignedManifest,
}

impl Installed {
    pub fn digest(&self) -> Hash {
        self.signed.digest
    }

    pub fn manifest(&self) -> &Manifest {
        self.signed.manifest()
    }
}

/// A package whose every file was just hashed and matched its signed manifest.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    name: String,
    dir: PathBuf,
    signed: SignedManifest,
}

impl VerifiedPackage {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn digest(&self) -> Hash {
        self.signed.digest
    }

    pub fn manifest(&self) -> &Manifest {
        self.signed.manifest()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, rel: &str) -> PathBuf {
        self.dir.join(FILES_DIR).join(rel)
    }

    fn paths_with_role(&self, role: FileRole) -> Vec<PathBuf> {
        self.manifest()
            .files
            .iter()
            .filter(|f| f.role == role)
            .map(|f| self.path_of(&f.path))
            .collect()
    }
}

/// A model ready to load: its package and every expert pack it needs, all verified.
#[derive(Debug, Clone)]
pub struct Verified {
    model: VerifiedPackage,
    packs: Vec<VerifiedPackage>,
    files: ModelFiles,
}

impl Verified {
    pub fn model(&self) -> &VerifiedPackage {
        &self.model
    }

    /// The expert packs, in the order the model's manifest lists them.
    pub fn packs(&self) -> &[VerifiedPackage] {
        &self.packs
    }

    /// What to hand to the engine.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    pub fn digest(&self) -> Hash {
        self.model.digest()
    }
}

/// A file's identity and version as the file system reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stat {
    fn of(m: &fs::Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// What a directory walk found.
#[derive(Debug, Default)]
struct Listing {
    /// Regular files under `files/`, by relative path.
    files: BTreeMap<String, fs::Metadata>,
    /// Every entry (files, directories, anything else), relative to the package root.
    entries: BTreeSet<String>,
    defects: Vec<Defect>,
}

fn walk(root: &Path, rel: &str, depth: usize, out: &mut Listing, wanted_dirs: &BTreeSet<String>) {
    let dir = if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(rel)
    };
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            out.defects.push(Defect::Unreadable {
                path: format!("{FILES_DIR}/{rel}"),
                error: e.to_string(),
            });
            return;
        }
    };
    let mut names: Vec<_> = entries.filter_map(Result::ok).collect();
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        out.entries.insert(format!("{FILES_DIR}/{path}"));
        let meta = match fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(e) => {
                out.defects.push(Defect::Unreadable {
                    path,
                    error: e.to_string(),
                });
                continue;
            }
        };
        let ft = meta.file_type();
        if ft.is_file() {
            out.files.insert(path, meta);
        } else if ft.is_dir() {
            if !wanted_dirs.contains(&path) {
                out.defects.push(Defect::Extra { path });
            } else if depth >= MAX_DEPTH {
                out.defects.push(Defect::Unreadable {
                    path,
                    error: "the directory tree is too deep".into(),
                });
            } else {
                walk(root, &path, depth + 1, out, wanted_dirs);
            }
        } else {
            out.defects.push(Defect::NotRegular { path });
        }
    }
}

/// Every directory a manifest's paths pass through.
fn dirs_of(m: &Manifest) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for f in &m.files {
        let mut at = 0;
        while let Some(i) = f.path[at..].find('/') {
            dirs.insert(f.path[..at + i].to_owned());
            at += i + 1;
        }
    }
    dirs
}

fn read_manifest(dir: &Path, name: &str) -> Result<(SignedManifest, Stat), IntegrityError> {
    let path = dir.join(MANIFEST_FILE);
    let fail = |d| IntegrityError::one(name, d);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(Defect::ManifestMissing));
        }
        Err(e) => {
            return Err(fail(Defect::ManifestUnreadable {
                error: e.to_string(),
            }));
        }
    };
    if !meta.file_type().is_file() {
        return Err(fail(Defect::NotRegular {
            path: MANIFEST_FILE.into(),
        }));
    }
    if meta.len() > (MAX_ENCODED + 64) as u64 {
        return Err(fail(Defect::ManifestMalformed {
            error: format!("it is larger than {MAX_ENCODED} bytes"),
        }));
    }
    let bytes = fs::read(&path).map_err(|e| {
        fail(Defect::ManifestUnreadable {
            error: e.to_string(),
        })
    })?;
    let signed = SignedManifest::from_bytes(&bytes).map_err(|e| {
        fail(match e {
            ManifestError::Malformed(d) => Defect::ManifestMalformed {
                error: d.to_string(),
            },
            ManifestError::BadSignature(publisher) => Defect::ManifestSignature { publisher },
        })
    })?;
    if signed.manifest().name != name {
        let manifest = signed.manifest().name.clone();
        return Err(fail(Defect::NameMismatch {
            directory: name.to_owned(),
            manifest,
        }));
    }
    Ok((signed, Stat::of(&meta)))
}

/// What a full verification saw, for the cache.
#[derive(Debug, Clone)]
struct Seen {
    manifest: Stat,
    entries: BTreeSet<String>,
    files: Vec<(PathBuf, Stat)>,
}

/// The installed packages under one directory (`<home>/models`).
#[derive(Debug, Clone)]
pub struct Packages {
    root: PathBuf,
}

/// One line of a listing: a package, or a directory that does not hold a readable one.
#[derive(Debug)]
pub struct Listed {
    pub name: String,
    pub dir: PathBuf,
    pub package: Result<Installed, IntegrityError>,
}

impl Packages {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Packages { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Every package directory, sorted by name, damaged ones included.
    pub fn list(&self) -> Result<Vec<Listed>, Error> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.root)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let dir = entry.path();
            let package = read_manifest(&dir, &name).map(|(signed, _)| Installed {
                name: name.clone(),
                dir: dir.clone(),
                signed,
            });
            out.push(Listed { name, dir, package });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A package by name, or by a prefix of its digest (at least
    /// [`MIN_DIGEST_PREFIX`] hex digits). Its manifest is read and its signature checked;
    /// its files are not.
    pub fn resolve(&self, reference: &str) -> Result<Installed, Error> {
        if crate::codec::is_simple_name(reference, crate::manifest::MAX_NAME) {
            let dir = self.dir_of(reference);
            if dir.is_dir() {
                let (signed, _) = read_manifest(&dir, reference)?;
                return Ok(Installed {
                    name: reference.to_owned(),
                    dir,
                    signed,
                });
            }
        }
        let hex_ok = reference.len() >= MIN_DIGEST_PREFIX
            && reference.len() <= 64
            && reference.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok {
            return if crate::codec::is_simple_name(reference, crate::manifest::MAX_NAME) {
                Err(Error::NotFound(reference.to_owned()))
            } else {
                Err(Error::BadReference(reference.to_owned()))
            };
        }
        let prefix = reference.to_ascii_lowercase();
        let mut found: Vec<Installed> = self
            .list()?
            .into_iter()
            .filter_map(|l| l.package.ok())
            .filter(|p| p.digest().to_hex().starts_with(&prefix))
            .collect();
        match found.len() {
            0 => Err(Error::NotFound(reference.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(Error::Ambiguous {
                reference: reference.to_owned(),
                candidates: found.into_iter().map(|p| p.name).collect(),
            }),
        }
    }

    /// The installed package with exactly this digest.
    pub fn by_digest(&self, digest: &Hash) -> Result<Option<Installed>, Error> {
        Ok(self
            .list()?
            .into_iter()
            .filter_map(|l| l.package.ok())
            .find(|p| p.digest() == *digest))
    }

    /// Hashes every file of `package` and checks everything against its signed manifest,
    /// read again from disk. `progress` hears bytes hashed.
    pub fn verify(
        &self,
        package: &Installed,
        progress: Progress<'_>,
    ) -> Result<VerifiedPackage, IntegrityError> {
        verify_dir(
            &package.dir,
            &package.name,
            Some(package.digest()),
            progress,
        )
        .map(|(v, _)| v)
    }

    /// Verifies the package named `name` from scratch (for `aura model verify`).
    pub fn verify_name(
        &self,
        name: &str,
        progress: Progress<'_>,
    ) -> Result<VerifiedPackage, IntegrityError> {
        verify_dir(&self.dir_of(name), name, None, progress).map(|(v, _)| v)
    }

    /// Resolves `reference`, verifies it and every expert pack it needs (with `cache`
    /// where given), and returns what the engine may load. Nothing is returned unless
    /// every file of every package involved matched its signed manifest.
    pub fn load(
        &self,
        reference: &str,
        cache: Option<&VerifyCache>,
        progress: Progress<'_>,
    ) -> Result<Verified, Error> {
        let installed = self.resolve(reference)?;
        if installed.manifest().kind != PackageKind::Model {
            return Err(Error::NotRunnable(installed.name));
        }
        let verify = |p: &Installed| -> Result<VerifiedPackage, IntegrityError> {
            match cache {
                Some(c) => c.verify(p, progress),
                None => self.verify(p, progress),
            }
        };
        let model = verify(&installed)?;
        let mut packs = Vec::new();
        for r in &model.manifest().expert_packs {
            let missing = || Error::MissingPack {
                model: model.name.clone(),
                pack: r.name.clone(),
                digest: r.digest.to_hex(),
            };
            let pack = self.by_digest(&r.digest)?.ok_or_else(missing)?;
            let pack = verify(&pack)?;
            let mismatch = |reason: String| Error::PackMismatch {
                model: model.name.clone(),
                pack: pack.name.clone(),
                reason,
            };
            let m = pack.manifest();
            if m.kind != PackageKind::ExpertPack {
                return Err(mismatch("it is not an expert pack".into()));
            }
            if m.publisher != r.owner {
                return Err(mismatch(format!(
                    "it is published by {}, not by the owner {} the model names",
                    m.publisher.fingerprint(),
                    r.owner.fingerprint()
                )));
            }
            let held: Vec<u32> = m
                .experts
                .as_ref()
                .map(|x| x.local().into_iter().collect())
                .unwrap_or_default();
            if held != r.experts {
                return Err(mismatch(format!(
                    "it holds experts {held:?}, the model expects {:?}",
                    r.experts
                )));
            }
            packs.push(pack);
        }
        let files = model_files(&model, &packs)?;
        Ok(Verified {
            model,
            packs,
            files,
        })
    }
}

fn model_files(model: &VerifiedPackage, packs: &[VerifiedPackage]) -> Result<ModelFiles, Error> {
    let incomplete = |reason: &str| Error::Incomplete {
        name: model.name.clone(),
        reason: reason.to_owned(),
    };
    let weights = model.paths_with_role(FileRole::Weights);
    if model
        .manifest()
        .files
        .iter()
        .any(|f| f.path == DIFFUSERS_INDEX && f.role == FileRole::Config)
    {
        if !packs.is_empty() || weights.is_empty() {
            return Err(incomplete(
                "an image package holds its own weights and needs no expert packs",
            ));
        }
        return Ok(ModelFiles::Diffusers(model.dir.join(FILES_DIR)));
    }
    match model.manifest().format {
        Format::Gguf => match weights.as_slice() {
            [one] if packs.is_empty() => Ok(ModelFiles::Gguf(one.clone())),
            _ => Err(incomplete("a GGUF package holds exactly one weights file")),
        },
        Format::Safetensors => {
            let one = |role| {
                let mut v = model.paths_with_role(role);
                (v.len() == 1).then(|| v.remove(0))
            };
            let config = one(FileRole::Config).ok_or_else(|| incomplete("one config.json"))?;
            let tokenizer =
                one(FileRole::Tokenizer).ok_or_else(|| incomplete("one tokenizer.json"))?;
            let mut all = weights;
            for p in packs {
                all.extend(p.paths_with_role(FileRole::Weights));
            }
            if all.is_empty() {
                return Err(incomplete("at least one .safetensors file"));
            }
            Ok(ModelFiles::Safetensors {
                config,
                tokenizer,
                weights: all,
            })
        }
    }
}

/// The result of hashing one file: bytes read, digest, its stat before and after.
struct Hashed {
    read: u64,
    hash: Hash,
    before: Stat,
    after: Stat,
}

fn hash_one(path: &Path, limit: u64, progress: Progress<'_>) -> std::io::Result<Hashed> {
    let file = File::open(path)?;
    let before = Stat::of(&file.metadata()?);
    let (read, hash) = hash_reader(&file, limit, progress)?;
    let after = Stat::of(&file.metadata()?);
    Ok(Hashed {
        read,
        hash,
        before,
        after,
    })
}

fn verify_dir(
    dir: &Path,
    name: &str,
    expected_digest: Option<Hash>,
    progress: Progress<'_>,
) -> Result<(VerifiedPackage, Seen), IntegrityError> {
    let (signed, manifest_stat) = read_manifest(dir, name)?;
    if let Some(expected) = expected_digest
        && expected != signed.digest
    {
        return Err(IntegrityError::one(
            name,
            Defect::ManifestReplaced {
                expected,
                found: signed.digest,
            },
        ));
    }
    let m = signed.manifest();
    let mut listing = Listing::default();

    // The package root holds the manifest and the files directory, nothing else.
    match fs::read_dir(dir) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                listing.entries.insert(n.clone());
                if n != MANIFEST_FILE && n != FILES_DIR {
                    listing.defects.push(Defect::Extra { path: n });
                }
            }
        }
        Err(e) => {
            return Err(IntegrityError::one(
                name,
                Defect::Unreadable {
                    path: ".".into(),
                    error: e.to_string(),
                },
            ));
        }
    }
    let files_root = dir.join(FILES_DIR);
    match fs::symlink_metadata(&files_root) {
        Ok(meta) if meta.file_type().is_dir() => {
            walk(&files_root, "", 0, &mut listing, &dirs_of(m));
        }
        Ok(_) => listing.defects.push(Defect::NotRegular {
            path: FILES_DIR.into(),
        }),
        Err(_) => {}
    }

    let listed: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    for path in listing.files.keys() {
        if !listed.contains(path.as_str()) {
            listing.defects.push(Defect::Extra { path: path.clone() });
        }
    }
    let not_regular: BTreeSet<String> = listing
        .defects
        .iter()
        .filter_map(|d| match d {
            Defect::NotRegular { path } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let mut present = Vec::new();
    for f in &m.files {
        match listing.files.get(&f.path) {
            Some(meta) => present.push((f, meta.len())),
            None if not_regular.contains(&f.path) => {}
            None => listing.defects.push(Defect::Missing {
                path: f.path.clone(),
            }),
        }
    }

    // Hash every file that is there, whatever its size, so that swapped files of
    // different sizes are recognised as swapped.
    let results: Vec<(usize, std::io::Result<Hashed>)> = present
        .par_iter()
        .enumerate()
        .map(|(i, (f, size))| {
            let limit = f.size.max(*size);
            (i, hash_one(&files_root.join(&f.path), limit, progress))
        })
        .collect();

    let by_hash: HashMap<Hash, &str> = m
        .files
        .iter()
        .map(|f| (f.sha256, f.path.as_str()))
        .collect();
    let mut actual: HashMap<&str, Hash> = HashMap::new();
    let mut stats = Vec::new();
    let mut mismatched = Vec::new();
    for (i, r) in results {
        let (f, _) = present[i];
        match r {
            Err(e) => listing.defects.push(Defect::Unreadable {
                path: f.path.clone(),
                error: e.to_string(),
            }),
            Ok(h) if h.before != h.after => {
                listing.defects.push(Defect::ChangedDuringVerification {
                    path: f.path.clone(),
                });
            }
            Ok(h) => {
                actual.insert(&f.path, h.hash);
                if h.read == f.size && h.hash == f.sha256 {
                    stats.push((files_root.join(&f.path), h.after));
                } else {
                    mismatched.push((f, h.read, h.hash));
                }
            }
        }
    }
    for (f, read, hash) in &mismatched {
        let other = by_hash.get(hash).copied().filter(|p| *p != f.path);
        let defect = match other {
            Some(other) if actual.get(other) == Some(&f.sha256) => {
                if f.path.as_str() < other {
                    Some(Defect::Swapped {
                        a: f.path.clone(),
                        b: other.to_owned(),
                    })
                } else {
                    None // reported from the other file's side
                }
            }
            Some(other) => Some(Defect::Misplaced {
                path: f.path.clone(),
                holds: other.to_owned(),
            }),
            None if *read < f.size => Some(Defect::Truncated {
                path: f.path.clone(),
                expected: f.size,
                found: *read,
            }),
            None if *read > f.size => Some(Defect::Grown {
                path: f.path.clone(),
                expected: f.size,
                found: *read,
            }),
            None => Some(Defect::Modified {
                path: f.path.clone(),
            }),
        };
        listing.defects.extend(defect);
    }

    if !listing.defects.is_empty() {
        return Err(IntegrityError {
            package: name.to_owned(),
            defects: listing.defects,
        });
    }
    let seen = Seen {
        manifest: manifest_stat,
        entries: listing.entries,
        files: stats,
    };
    Ok((
        VerifiedPackage {
            name: name.to_owned(),
            dir: dir.to_owned(),
            signed,
        },
        seen,
    ))
}

/// Looks again at a package verified before: the same manifest file, the same directory
/// entries, every file with the same identity, size and times.
fn unchanged(dir: &Path, seen: &Seen, m: &Manifest) -> bool {
    let Ok(meta) = fs::symlink_metadata(dir.join(MANIFEST_FILE)) else {
        return false;
    };
    if !meta.file_type().is_file() || Stat::of(&meta) != seen.manifest {
        return false;
    }
    let mut listing = Listing::default();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            listing
                .entries
                .insert(e.file_name().to_string_lossy().into_owned());
        }
    } else {
        return false;
    }
    walk(&dir.join(FILES_DIR), "", 0, &mut listing, &dirs_of(m));
    if !listing.defects.is_empty() || listing.entries != seen.entries {
        return false;
    }
    seen.files.iter().all(|(path, stat)| {
        fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && Stat::of(&m) == *stat)
    })
}

/// Remembers verified packages for a running node; see the module documentation for
/// what it checks before trusting a remembered verification.
#[derive(Debug)]
pub struct VerifyCache {
    max_age: Duration,
    clock: std::sync::Arc<dyn aura_core::door::Clock>,
    entries: Mutex<HashMap<PathBuf, (Timestamp, Seen, VerifiedPackage)>>,
}

impl VerifyCache {
    /// A cache whose entries are trusted for at most `max_age` after their full
    /// verification.
    pub fn new(max_age: Duration, clock: std::sync::Arc<dyn aura_core::door::Clock>) -> Self {
        VerifyCache {
            max_age,
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The remembered verification of `package` if nothing about it changed, else a full
    /// verification (remembered if it passes).
    pub fn verify(
        &self,
        package: &Installed,
        progress: Progress<'_>,
    ) -> Result<VerifiedPackage, IntegrityError> {
        let now = self.clock.now();
        let remembered = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.get(&package.dir).cloned()
        };
        if let Some((at, seen, verified)) = remembered
            && verified.digest() == package.digest()
            && now.since(at) <= self.max_age
            && now >= at
            && unchanged(&package.dir, &seen, verified.manifest())
        {
            return Ok(verified);
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&package.dir);
        drop(entries);
        let (verified, seen) = verify_dir(
            &package.dir,
            &package.name,
            Some(package.digest()),
            progress,
        )?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(package.dir.clone(), (now, seen, verified.clone()));
        Ok(verified)
    }

    /// Forgets everything (after an import or removal, say).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
