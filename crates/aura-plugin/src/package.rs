//! A plugin package: a directory holding `plugin.json` (the publisher's signed manifest,
//! format `aura-plugin/v1`) and `plugin.wasm` (the WebAssembly component it names by
//! SHA-256). [`pack`] makes one; [`open`] checks one completely before anything runs:
//! sizes, the manifest's rules, the signature, that the publisher is one the node trusts,
//! and the component's size and hash.

use std::path::{Path, PathBuf};

use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::sign::PublicKey;
use aura_core::signed::{Signed, Statement as _};

use crate::manifest::{MAX_COMPONENT, PluginManifest};

/// The manifest's file in a package.
pub const MANIFEST_FILE: &str = "plugin.json";
/// The component's file in a package.
pub const COMPONENT_FILE: &str = "plugin.wasm";
const MAX_MANIFEST: u64 = 1 << 20;

/// Why a package was refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
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
    #[error("{path} is {size} bytes, more than the {max} a package may hold")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{MANIFEST_FILE} is not a plugin manifest: {0}")]
    Manifest(String),
    #[error("the manifest's signature does not hold: {0}")]
    Signature(String),
    /// The CLI adds the hint (`aura plugin trust <key>`); a Display is one line.
    #[error("the publisher {0} is not trusted by this node")]
    Untrusted(String),
    #[error(
        "{COMPONENT_FILE} is not the component the manifest names (sha-256 {found}, size {size})"
    )]
    Tampered { found: String, size: u64 },
}

/// A package whose every check passed: its manifest and component bytes.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    pub manifest: Signed<PluginManifest>,
    pub component: Vec<u8>,
    /// The manifest's digest (the hash of its signing message): what the ledger names.
    pub digest: Hash,
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, PackageError> {
    let read = |source| PackageError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(read)?;
    if !meta.is_file() {
        return Err(read(std::io::Error::other("not a regular file")));
    }
    let too_large = |size| PackageError::TooLarge {
        path: path.to_owned(),
        size,
        max,
    };
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    // Read through one handle, at most one byte past the limit: a file swapped or grown
    // after the check above cannot make the node read more than `max`.
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max + 1), &mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Opens and checks the package in `dir`; `trusted` are the publisher keys the node
/// accepts.
pub fn open(dir: &Path, trusted: &[PublicKey]) -> Result<VerifiedPackage, PackageError> {
    let json = read_bounded(&dir.join(MANIFEST_FILE), MAX_MANIFEST)?;
    let manifest = Signed::<PluginManifest>::from_json(&json)
        .map_err(|e| PackageError::Manifest(e.to_string()))?;
    manifest
        .verify_signature()
        .map_err(|e| PackageError::Signature(e.to_string()))?;
    let publisher = &manifest.statement.publisher;
    if !trusted.contains(publisher) {
        return Err(PackageError::Untrusted(publisher.to_hex()));
    }
    let component = read_bounded(&dir.join(COMPONENT_FILE), MAX_COMPONENT)?;
    let found = Hash::sha256(&component);
    if found != manifest.statement.component_sha256
        || component.len() as u64 != manifest.statement.component_size
    {
        return Err(PackageError::Tampered {
            found: found.to_hex(),
            size: component.len() as u64,
        });
    }
    let digest = manifest
        .statement
        .digest()
        .map_err(|e| PackageError::Manifest(e.to_string()))?;
    Ok(VerifiedPackage {
        manifest,
        component,
        digest,
    })
}

/// Writes a package of `component` into `out` (created if missing), its manifest filled
/// in with the component's hash and size and signed by `publisher`, whose key must be the
/// manifest's publisher.
pub fn pack(
    component: &[u8],
    mut manifest: PluginManifest,
    publisher: &Signer,
    out: &Path,
) -> Result<Signed<PluginManifest>, PackageError> {
    manifest.component_sha256 = Hash::sha256(component);
    manifest.component_size = component.len() as u64;
    let signed =
        Signed::sign(manifest, publisher).map_err(|e| PackageError::Signature(e.to_string()))?;
    let json = signed
        .to_json()
        .map_err(|e| PackageError::Manifest(e.to_string()))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|source| PackageError::Write { path, source })
    };
    std::fs::create_dir_all(out).map_err(|source| PackageError::Write {
        path: out.to_owned(),
        source,
    })?;
    write(COMPONENT_FILE, component)?;
    write(MANIFEST_FILE, &json)?;
    Ok(signed)
}
