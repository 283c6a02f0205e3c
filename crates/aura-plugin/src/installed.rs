//! The plugins a node has installed, and the publishers it trusts, in its data directory:
//!
//! ```text
//! <home>/plugins/publishers.json        {"format": "aura-plugin-publishers/v1",
//!                                        "publishers": [{"key": "<hex>", "name": "..."}]}
//! <home>/plugins/installed/<name>/      plugin.json + plugin.wasm, as verified
//! ```
//!
//! [`Installed::install`] opens a package completely (signature, trusted publisher, the
//! component's size and SHA-256, see [`crate::package::open`]) and writes the bytes it
//! verified, never the source files again, into a fresh directory that is renamed into
//! place: a refused package changes nothing, and a reader never sees half a plugin.
//! Trust is revocable: a package whose publisher is no longer trusted is refused again
//! each time it is opened ([`Installed::open_all`], at a node's start), so it never runs.

use std::path::{Path, PathBuf};

use aura_core::sign::PublicKey;
use serde::{Deserialize, Serialize};

use crate::package::{self, COMPONENT_FILE, MANIFEST_FILE, PackageError, VerifiedPackage};

/// The format of `publishers.json`.
pub const PUBLISHERS_FORMAT: &str = "aura-plugin-publishers/v1";
const PUBLISHERS_FILE: &str = "publishers.json";
const INSTALLED_DIR: &str = "installed";
/// The most publishers a node may trust (the file is read whole).
const MAX_PUBLISHERS: usize = 1024;

/// Why the node's plugins could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a list of trusted publishers: {reason}")]
    Publishers { path: PathBuf, reason: String },
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("a plugin named `{0}` is already installed")]
    Exists(String),
    #[error("no plugin named `{0}` is installed")]
    NotInstalled(String),
    #[error("`{0}` is not a plugin name")]
    BadName(String),
    #[error("a publisher's name must be 1 to 64 printable characters")]
    BadPublisherName,
}

/// An installed plugin's name and its package as opened now, or why it was refused.
pub type Opened = (String, Result<VerifiedPackage, PackageError>);

/// A publisher the node trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    pub key: PublicKey,
    /// What the operator calls it.
    pub name: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishersFile {
    format: String,
    publishers: Vec<Publisher>,
}

/// The node's plugin directory (`<home>/plugins`).
#[derive(Debug, Clone)]
pub struct Installed {
    dir: PathBuf,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Installed {
    /// The plugins of the node whose plugin directory is `dir` (nothing is created yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Installed { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Write {
            path: path.to_owned(),
            source,
        }
    }

    /// The publishers the node trusts, in the order they were added.
    pub fn publishers(&self) -> Result<Vec<Publisher>, Error> {
        let path = self.dir.join(PUBLISHERS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::Read { path, source }),
        };
        let bad = |reason: String| Error::Publishers {
            path: path.clone(),
            reason,
        };
        let file: PublishersFile =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if file.format != PUBLISHERS_FORMAT {
            return Err(bad(format!("unknown format `{}`", file.format)));
        }
        if file.publishers.len() > MAX_PUBLISHERS {
            return Err(bad(format!("more than {MAX_PUBLISHERS} publishers")));
        }
        Ok(file.publishers)
    }

    /// The trusted publishers' keys.
    pub fn trusted_keys(&self) -> Result<Vec<PublicKey>, Error> {
        Ok(self.publishers()?.into_iter().map(|p| p.key).collect())
    }

    fn write_publishers(&self, publishers: Vec<Publisher>) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir).map_err(Self::write_err(&self.dir))?;
        let file = PublishersFile {
            format: PUBLISHERS_FORMAT.to_owned(),
            publishers,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| Error::Publishers {
            path: self.dir.join(PUBLISHERS_FILE),
            reason: e.to_string(),
        })?;
        let path = self.dir.join(PUBLISHERS_FILE);
        let tmp = self
            .dir
            .join(format!(".{PUBLISHERS_FILE}.{}", std::process::id()));
        std::fs::write(&tmp, json).map_err(Self::write_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::write_err(&path))
    }

    /// Trusts `key` under `name`. Returns whether it was not trusted before (trusting a
    /// key again renames it).
    pub fn trust(&self, key: PublicKey, name: &str) -> Result<bool, Error> {
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::BadPublisherName);
        }
        let mut publishers = self.publishers()?;
        let fresh = match publishers.iter_mut().find(|p| p.key == key) {
            Some(p) => {
                p.name = name.to_owned();
                false
            }
            None => {
                publishers.push(Publisher {
                    key,
                    name: name.to_owned(),
                });
                true
            }
        };
        self.write_publishers(publishers)?;
        Ok(fresh)
    }

    /// Stops trusting `key`; its plugins stay installed but are refused until it is
    /// trusted again. Returns whether it was trusted.
    pub fn untrust(&self, key: &PublicKey) -> Result<bool, Error> {
        let mut publishers = self.publishers()?;
        let before = publishers.len();
        publishers.retain(|p| &p.key != key);
        if publishers.len() == before {
            return Ok(false);
        }
        self.write_publishers(publishers)?;
        Ok(true)
    }

    fn installed_dir(&self) -> PathBuf {
        self.dir.join(INSTALLED_DIR)
    }

    /// Verifies the package in `source` against the trusted publishers and installs it
    /// under its manifest's name; `replace` allows replacing an installed plugin of that
    /// name. Nothing changes unless every check passes.
    pub fn install(&self, source: &Path, replace: bool) -> Result<VerifiedPackage, Error> {
        let package = package::open(source, &self.trusted_keys()?)?;
        let name = package.manifest.statement.name.clone();
        if !valid_name(&name) {
            return Err(Error::BadName(name));
        }
        let root = self.installed_dir();
        let dest = root.join(&name);
        if dest.exists() && !replace {
            return Err(Error::Exists(name));
        }
        std::fs::create_dir_all(&root).map_err(Self::write_err(&root))?;
        // The verified bytes, into a directory of our own, renamed into place.
        let staging = root.join(format!(".staging-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).map_err(Self::write_err(&staging))?;
        let written = (|| -> Result<(), Error> {
            let json = package
                .manifest
                .to_json()
                .map_err(|e| PackageError::Manifest(e.to_string()))?;
            let m = staging.join(MANIFEST_FILE);
            std::fs::write(&m, json).map_err(Self::write_err(&m))?;
            let c = staging.join(COMPONENT_FILE);
            std::fs::write(&c, &package.component).map_err(Self::write_err(&c))?;
            if dest.exists() {
                let old = root.join(format!(".old-{name}-{}", std::process::id()));
                std::fs::rename(&dest, &old).map_err(Self::write_err(&dest))?;
                let _ = std::fs::remove_dir_all(&old);
            }
            std::fs::rename(&staging, &dest).map_err(Self::write_err(&dest))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        Ok(package)
    }

    /// Removes an installed plugin.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        if !valid_name(name) {
            return Err(Error::BadName(name.to_owned()));
        }
        let dest = self.installed_dir().join(name);
        if !dest.is_dir() {
            return Err(Error::NotInstalled(name.to_owned()));
        }
        std::fs::remove_dir_all(&dest).map_err(Self::write_err(&dest))
    }

    /// Every installed plugin's name, sorted, with its package opened and checked again
    /// against the publishers trusted now: a plugin whose publisher was untrusted, or
    /// whose files were changed since, comes back as the reason it is refused.
    pub fn open_all(&self) -> Result<Vec<Opened>, Error> {
        let root = self.installed_dir();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::Read { path: root, source }),
        };
        let trusted = self.trusted_keys()?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Read {
                path: root.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Staging and replaced directories start with a dot; anything else that is
            // not a plugin name was not put there by `install`.
            if valid_name(&name) && entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| {
                let opened = package::open(&root.join(&name), &trusted).and_then(|p| {
                    if p.manifest.statement.name == name {
                        Ok(p)
                    } else {
                        Err(PackageError::Manifest(format!(
                            "it is installed as `{name}` but names itself `{}`",
                            p.manifest.statement.name
                        )))
                    }
                });
                (name, opened)
            })
            .collect())
    }
}
