//! The package manifest: what a model package holds, signed by its publisher.
//!
//! A manifest names the package, its architecture and quantisation, every file (relative
//! path, size, SHA-256, role), every tensor (which file, dtype, shape, byte range), for a
//! mixture-of-experts model which experts live in which file, and the expert packs
//! published separately that the model needs (each by digest and owner key).
//!
//! The **package digest** is `SHA-256("aura/model/package/v1\0" || encoding)`; licenses
//! and receipts name a package by it. The publisher signs the encoding as a statement of
//! kind [`KIND`] (see [`aura_core::signed`]). The format is specified in docs/models.md.
//!
//! ```text
//! u8   version = 1
//! str  name                      1-64 of [a-z0-9._-]
//! u8   kind                      0 model, 1 expert pack
//! u8   format                    1 gguf, 2 safetensors
//! str  architecture, str quantization, str license
//! [32] publisher                 Ed25519 public key
//! u64  created_at                ns since the epoch
//! u32  files      × (str path, u64 size, [32] sha256, u8 role)
//! u32  tensors    × (str name, u32 file, str dtype, u8 n, n × u64 shape, u64 offset, u64 length)
//! u8   has_experts; if 1: u32 count, u32 per_token, u8 layout,
//!                         u32 placements × (u32 file, u32 n, n × u32 expert)
//! u32  expert packs × (str name, [32] digest, [32] owner, u32 n, n × u32 expert)
//! ```
//!
//! `str` is a u16 length and UTF-8 bytes. Files are sorted by path, tensors by name,
//! placements by file, packs by digest, expert lists ascending; all are unique. A decoder
//! refuses anything else, so every manifest has exactly one encoding.

use std::collections::BTreeSet;
use std::fmt;

use aura_core::encoding::{DecodeError, Decoder, Encoder};
use aura_core::hash::{Domain, Hash};
use aura_core::keystore::Signer;
use aura_core::signed::{self, Issuer, Signed, Statement};
use aura_core::{PublicKey, Signature, Timestamp};
use serde::Serialize;

use crate::codec::{
    get_count, get_key, get_signature, get_str, get_time, invalid_at, is_simple_name, put_count,
    put_key, put_str, unknown_version,
};

pub const VERSION: u8 = 1;
/// The statement kind a publisher signs.
pub const KIND: &str = "model-manifest/v1";

pub const MAX_FILES: usize = 4096;
pub const MAX_TENSORS: usize = 1_000_000;
pub const MAX_EXPERTS: u32 = 4096;
pub const MAX_PACKS: usize = 256;
pub const MAX_NAME: usize = 64;
pub const MAX_PATH: usize = 512;
const MAX_TEXT: usize = 128;
const MAX_TENSOR_NAME: usize = 1024;
const MAX_DTYPE: usize = 32;
const MAX_DIMS: usize = 8;
/// The largest signed manifest Aura reads (a million tensors fit).
pub const MAX_ENCODED: usize = 256 * 1024 * 1024;

/// What a package is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageKind {
    /// A model that can be run (possibly needing expert packs).
    Model,
    /// Expert weights of a mixture-of-experts model, published on their own.
    ExpertPack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Gguf,
    Safetensors,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Gguf => "gguf",
            Format::Safetensors => "safetensors",
        })
    }
}

/// What a file is for, so the loader can hand the right files to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileRole {
    Weights,
    Config,
    Tokenizer,
    /// `model.safetensors.index.json`.
    Index,
    /// Other small files kept with the model (generation config, tokenizer config).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Relative path inside the package's `files/` directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: Hash,
    pub role: FileRole,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorEntry {
    pub name: String,
    /// Index into [`Manifest::files`].
    pub file: u32,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Absolute byte offset in the file.
    pub offset: u64,
    pub length: u64,
}

/// How expert weights are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpertLayout {
    /// One tensor per expert (`…experts.E.w1.weight`): experts can live in different files.
    Split,
    /// All experts of a layer stacked in one tensor (GGUF `ffn_*_exps`).
    Stacked,
}

/// Which experts have weights in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub file: u32,
    pub experts: Vec<u32>,
}

/// A mixture-of-experts model's experts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Experts {
    /// Experts per layer in the whole model.
    pub count: u32,
    /// Experts each token is routed to (0 if unknown).
    pub per_token: u32,
    pub layout: ExpertLayout,
    /// Experts with weights in this package's own files.
    pub placement: Vec<Placement>,
}

impl Experts {
    /// Every expert with weights in this package.
    pub fn local(&self) -> BTreeSet<u32> {
        self.placement
            .iter()
            .flat_map(|p| p.experts.iter().copied())
            .collect()
    }
}

/// An expert pack this model needs, published separately by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpertPackRef {
    pub name: String,
    pub digest: Hash,
    pub owner: PublicKey,
    pub experts: Vec<u32>,
}

/// A package's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub name: String,
    pub kind: PackageKind,
    pub format: Format,
    pub architecture: String,
    pub quantization: String,
    /// The model's license as its publisher states it (an SPDX id like `Apache-2.0`);
    /// informational. What a node may do is decided by signed licenses.
    pub license: String,
    pub publisher: PublicKey,
    pub created_at: Timestamp,
    pub files: Vec<FileEntry>,
    pub tensors: Vec<TensorEntry>,
    pub experts: Option<Experts>,
    pub expert_packs: Vec<ExpertPackRef>,
}

/// A manifest that breaks a rule of the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid manifest: {0}")]
pub struct Invalid(pub String);

/// Whether `path` is a safe relative path: `/`-separated components of
/// `[A-Za-z0-9._-]`, none empty, `.` or `..`, none starting with a dot.
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH
        && path.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

fn strictly_ascending<T: Ord>(items: &[T]) -> bool {
    items.windows(2).all(|w| w[0] < w[1])
}

impl Manifest {
    /// Checks every rule a decoder enforces, so that a manifest built in memory encodes
    /// to bytes that decode back to it.
    pub fn validate(&self) -> Result<(), Invalid> {
        let fail = |s: String| Err(Invalid(s));
        if !is_simple_name(&self.name, MAX_NAME) {
            return fail(format!(
                "name `{}` is not 1-64 of a-z, 0-9, '.', '_' and '-'",
                self.name
            ));
        }
        for (what, v) in [
            ("architecture", &self.architecture),
            ("quantization", &self.quantization),
            ("license", &self.license),
        ] {
            if v.len() > MAX_TEXT || v.chars().any(char::is_control) {
                return fail(format!("{what} is too long or has control characters"));
            }
        }
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return fail(format!("a package holds 1 to {MAX_FILES} files"));
        }
        for f in &self.files {
            if !is_safe_path(&f.path) {
                return fail(format!(
                    "file path `{}` is not a safe relative path",
                    f.path
                ));
            }
        }
        if !strictly_ascending(&self.files.iter().map(|f| &f.path).collect::<Vec<_>>()) {
            return fail("files are not sorted by path, or a path repeats".into());
        }
        if self.tensors.len() > MAX_TENSORS {
            return fail(format!("more than {MAX_TENSORS} tensors"));
        }
        if !strictly_ascending(&self.tensors.iter().map(|t| &t.name).collect::<Vec<_>>()) {
            return fail("tensors are not sorted by name, or a name repeats".into());
        }
        for t in &self.tensors {
            if t.name.is_empty() || t.name.len() > MAX_TENSOR_NAME {
                return fail("a tensor name is empty or too long".into());
            }
            if t.dtype.is_empty() || t.dtype.len() > MAX_DTYPE || t.shape.len() > MAX_DIMS {
                return fail(format!("tensor `{}` has a bad dtype or shape", t.name));
            }
            let Some(file) = self.files.get(t.file as usize) else {
                return fail(format!(
                    "tensor `{}` names a file that is not listed",
                    t.name
                ));
            };
            if t.offset
                .checked_add(t.length)
                .is_none_or(|end| end > file.size)
            {
                return fail(format!("tensor `{}` lies outside its file", t.name));
            }
        }
        if let Some(x) = &self.experts {
            if x.count == 0 || x.count > MAX_EXPERTS || x.per_token > x.count {
                return fail("expert count out of range".into());
            }
            if !strictly_ascending(&x.placement.iter().map(|p| p.file).collect::<Vec<_>>()) {
                return fail("expert placements are not sorted by file".into());
            }
            for p in &x.placement {
                if p.file as usize >= self.files.len()
                    || p.experts.is_empty()
                    || !strictly_ascending(&p.experts)
                    || p.experts.iter().any(|e| *e >= x.count)
                {
                    return fail("an expert placement is out of range or unsorted".into());
                }
            }
        }
        if self.expert_packs.len() > MAX_PACKS {
            return fail(format!("more than {MAX_PACKS} expert packs"));
        }
        if !strictly_ascending(
            &self
                .expert_packs
                .iter()
                .map(|p| p.digest)
                .collect::<Vec<_>>(),
        ) {
            return fail("expert packs are not sorted by digest, or one repeats".into());
        }
        if !self.expert_packs.is_empty() {
            let Some(x) = &self.experts else {
                return fail("expert packs are listed but the model has no experts".into());
            };
            if self.kind != PackageKind::Model {
                return fail("only a model may refer to expert packs".into());
            }
            let mut seen = x.local();
            for p in &self.expert_packs {
                if !is_simple_name(&p.name, MAX_NAME)
                    || p.experts.is_empty()
                    || !strictly_ascending(&p.experts)
                {
                    return fail(format!("expert pack `{}` is malformed", p.name));
                }
                for e in &p.experts {
                    if *e >= x.count || !seen.insert(*e) {
                        return fail(format!(
                            "expert {e} is out of range or provided twice (pack `{}`)",
                            p.name
                        ));
                    }
                }
            }
        }
        if self.kind == PackageKind::ExpertPack
            && self.experts.as_ref().is_none_or(|x| x.placement.is_empty())
        {
            return fail("an expert pack must hold experts".into());
        }
        Ok(())
    }

    fn encode_into(&self, e: &mut Encoder) {
        e.u8(VERSION);
        put_str(e, &self.name);
        e.u8(match self.kind {
            PackageKind::Model => 0,
            PackageKind::ExpertPack => 1,
        });
        e.u8(match self.format {
            Format::Gguf => 1,
            Format::Safetensors => 2,
        });
        put_str(e, &self.architecture);
        put_str(e, &self.quantization);
        put_str(e, &self.license);
        put_key(e, &self.publisher);
        e.u64(self.created_at.as_nanos());
        put_count(e, self.files.len());
        for f in &self.files {
            put_str(e, &f.path);
            e.u64(f.size).hash(&f.sha256).u8(match f.role {
                FileRole::Weights => 0,
                FileRole::Config => 1,
                FileRole::Tokenizer => 2,
                FileRole::Index => 3,
                FileRole::Other => 4,
            });
        }
        put_count(e, self.tensors.len());
        for t in &self.tensors {
            put_str(e, &t.name);
            e.u32(t.file);
            put_str(e, &t.dtype);
            e.u8(t.shape.len() as u8);
            for d in &t.shape {
                e.u64(*d);
            }
            e.u64(t.offset).u64(t.length);
        }
        match &self.experts {
            None => {
                e.u8(0);
            }
            Some(x) => {
                e.u8(1).u32(x.count).u32(x.per_token).u8(match x.layout {
                    ExpertLayout::Split => 0,
                    ExpertLayout::Stacked => 1,
                });
                put_count(e, x.placement.len());
                for p in &x.placement {
                    e.u32(p.file);
                    put_count(e, p.experts.len());
                    for ex in &p.experts {
                        e.u32(*ex);
                    }
                }
            }
        }
        put_count(e, self.expert_packs.len());
        for p in &self.expert_packs {
            put_str(e, &p.name);
            e.hash(&p.digest);
            put_key(e, &p.owner);
            put_count(e, p.experts.len());
            for ex in &p.experts {
                e.u32(*ex);
            }
        }
    }

    fn decode_from(d: &mut Decoder<'_>) -> Result<Manifest, DecodeError> {
        let version = d.u8("version")?;
        if version != VERSION {
            return Err(unknown_version("version", version));
        }
        let name = get_str(d, "name", MAX_NAME)?;
        let at = d.position();
        let kind = match d.u8("kind")? {
            0 => PackageKind::Model,
            1 => PackageKind::ExpertPack,
            _ => return Err(invalid_at(at, "kind", "is not a known package kind")),
        };
        let at = d.position();
        let format = match d.u8("format")? {
            1 => Format::Gguf,
            2 => Format::Safetensors,
            _ => return Err(invalid_at(at, "format", "is not a known format")),
        };
        let architecture = get_str(d, "architecture", MAX_TEXT)?;
        let quantization = get_str(d, "quantization", MAX_TEXT)?;
        let license = get_str(d, "license", MAX_TEXT)?;
        let publisher = get_key(d, "publisher")?;
        let created_at = get_time(d, "created_at")?;
        let n = get_count(d, "files", MAX_FILES)?;
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let path = get_str(d, "file path", MAX_PATH)?;
            let size = d.u64("file size")?;
            let sha256 = d.hash("file sha256")?;
            let at = d.position();
            let role = match d.u8("file role")? {
                0 => FileRole::Weights,
                1 => FileRole::Config,
                2 => FileRole::Tokenizer,
                3 => FileRole::Index,
                4 => FileRole::Other,
                _ => return Err(invalid_at(at, "file role", "is not a known role")),
            };
            files.push(FileEntry {
                path,
                size,
                sha256,
                role,
            });
        }
        let n = get_count(d, "tensors", MAX_TENSORS)?;
        // Each tensor takes at least 31 bytes: refuse counts the input cannot hold before
        // reserving memory for them.
        if n.saturating_mul(31) > d.remaining() {
            return Err(d.invalid("tensors", "count exceeds the input"));
        }
        let mut tensors = Vec::with_capacity(n);
        for _ in 0..n {
            let name = get_str(d, "tensor name", MAX_TENSOR_NAME)?;
            let file = d.u32("tensor file")?;
            let dtype = get_str(d, "tensor dtype", MAX_DTYPE)?;
            let at = d.position();
            let dims = d.u8("tensor dims")? as usize;
            if dims > MAX_DIMS {
                return Err(invalid_at(at, "tensor dims", "has too many dimensions"));
            }
            let mut shape = Vec::with_capacity(dims);
            for _ in 0..dims {
                shape.push(d.u64("tensor shape")?);
            }
            let offset = d.u64("tensor offset")?;
            let length = d.u64("tensor length")?;
            tensors.push(TensorEntry {
                name,
                file,
                dtype,
                shape,
                offset,
                length,
            });
        }
        let at = d.position();
        let experts = match d.u8("has_experts")? {
            0 => None,
            1 => {
                let count = d.u32("expert count")?;
                let per_token = d.u32("experts per token")?;
                let at = d.position();
                let layout = match d.u8("expert layout")? {
                    0 => ExpertLayout::Split,
                    1 => ExpertLayout::Stacked,
                    _ => return Err(invalid_at(at, "expert layout", "is not a known layout")),
                };
                let n = get_count(d, "placements", MAX_FILES)?;
                let mut placement = Vec::with_capacity(n);
                for _ in 0..n {
                    let file = d.u32("placement file")?;
                    let experts = get_experts(d)?;
                    placement.push(Placement { file, experts });
                }
                Some(Experts {
                    count,
                    per_token,
                    layout,
                    placement,
                })
            }
            _ => return Err(invalid_at(at, "has_experts", "is neither 0 nor 1")),
        };
        let n = get_count(d, "expert packs", MAX_PACKS)?;
        let mut expert_packs = Vec::with_capacity(n);
        for _ in 0..n {
            let name = get_str(d, "pack name", MAX_NAME)?;
            let digest = d.hash("pack digest")?;
            let owner = get_key(d, "pack owner")?;
            let experts = get_experts(d)?;
            expert_packs.push(ExpertPackRef {
                name,
                digest,
                owner,
                experts,
            });
        }
        Ok(Manifest {
            name,
            kind,
            format,
            architecture,
            quantization,
            license,
            publisher,
            created_at,
            files,
            tensors,
            experts,
            expert_packs,
        })
    }

    /// The package digest of a canonical encoding.
    pub fn digest_of(encoding: &[u8]) -> Hash {
        Hash::tagged(Domain::ModelPackage, encoding)
    }

    /// Signs the manifest with the publisher's key, which must be the one it names.
    pub fn sign(self, signer: &Signer) -> Result<SignedManifest, Invalid> {
        if signer.public_key() != self.publisher {
            return Err(Invalid(format!(
                "the manifest names publisher {} but key `{}` is {}",
                self.publisher.fingerprint(),
                signer.name(),
                signer.public_key().fingerprint()
            )));
        }
        let signed = Signed::sign(self, signer).map_err(|e| Invalid(e.to_string()))?;
        let encoding = signed
            .statement
            .to_bytes()
            .map_err(|e| Invalid(e.to_string()))?;
        Ok(SignedManifest {
            digest: Manifest::digest_of(&encoding),
            signed,
            encoding,
        })
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

impl Statement for Manifest {
    const KIND: &'static str = KIND;

    fn issuer(&self) -> Issuer<'_> {
        Issuer::Key(&self.publisher)
    }

    fn validate(&self) -> Result<(), signed::Invalid> {
        Manifest::validate(self).map_err(|e| signed::Invalid(e.0))
    }

    fn encode(&self, e: &mut Encoder) {
        self.encode_into(e);
    }

    /// Decodes exactly one canonical manifest encoding.
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let m = Manifest::decode_from(d)?;
        Manifest::validate(&m)
            .map_err(|_| invalid_at(0, "manifest", "breaks a rule of the format"))?;
        Ok(m)
    }
}

fn get_experts(d: &mut Decoder<'_>) -> Result<Vec<u32>, DecodeError> {
    let n = get_count(d, "experts", MAX_EXPERTS as usize)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(d.u32("expert")?);
    }
    Ok(out)
}

/// A manifest with its publisher's signature, as stored in a package (`manifest.aura`:
/// the encoding followed by the 64-byte signature), with the encoding exactly as it was
/// read or signed and the package digest over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    pub signed: Signed<Manifest>,
    /// The canonical encoding the signature and the digest cover.
    pub encoding: Vec<u8>,
    pub digest: Hash,
}

/// Why stored manifest bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is malformed: {0}")]
    Malformed(#[from] DecodeError),
    #[error("the manifest's signature does not verify under its publisher's key {0}")]
    BadSignature(String),
}

impl SignedManifest {
    pub fn manifest(&self) -> &Manifest {
        &self.signed.statement
    }

    pub fn signature(&self) -> &Signature {
        &self.signed.signature
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.encoding.clone();
        out.extend_from_slice(&self.signed.signature.0);
        out
    }

    /// Decodes and checks the signature: a manifest that decodes but whose signature does
    /// not verify under the key it names was edited after signing.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedManifest, ManifestError> {
        if bytes.len() < Signature::LEN {
            return Err(DecodeError {
                offset: 0,
                kind: aura_core::encoding::DecodeErrorKind::Truncated { field: "manifest" },
            }
            .into());
        }
        let (encoding, sig) = bytes.split_at(bytes.len() - Signature::LEN);
        let manifest = Manifest::from_bytes(encoding)?;
        let signature = get_signature(&mut Decoder::new(sig))?;
        // Checked over the bytes as read: the digest covers them too.
        signed::verify_encoding(&manifest, encoding, &signature, &manifest.publisher)
            .map_err(|_| ManifestError::BadSignature(manifest.publisher.fingerprint()))?;
        Ok(SignedManifest {
            digest: Manifest::digest_of(encoding),
            signed: Signed {
                statement: manifest,
                signature,
            },
            encoding: encoding.to_vec(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aura_core::door::SeededEntropy;
    use proptest::prelude::*;

    pub(crate) fn signer(seed: u64) -> Signer {
        Signer::ephemeral("publisher", &SeededEntropy::new(seed)).unwrap()
    }

    pub(crate) fn sample(publisher: PublicKey) -> Manifest {
        Manifest {
            name: "mix".into(),
            kind: PackageKind::Model,
            format: Format::Safetensors,
            architecture: "mixtral".into(),
            quantization: "BF16".into(),
            license: "Apache-2.0".into(),
            publisher,
            created_at: Timestamp::from_secs(1_800_000_000),
            files: vec![
                FileEntry {
                    path: "config.json".into(),
                    size: 10,
                    sha256: Hash::sha256(b"c"),
                    role: FileRole::Config,
                },
                FileEntry {
                    path: "model-00001.safetensors".into(),
                    size: 1000,
                    sha256: Hash::sha256(b"w"),
                    role: FileRole::Weights,
                },
            ],
            tensors: vec![TensorEntry {
                name: "model.layers.0.block_sparse_moe.experts.0.w1.weight".into(),
                file: 1,
                dtype: "BF16".into(),
                shape: vec![4, 4],
                offset: 100,
                length: 32,
            }],
            experts: Some(Experts {
                count: 4,
                per_token: 2,
                layout: ExpertLayout::Split,
                placement: vec![Placement {
                    file: 1,
                    experts: vec![0, 1],
                }],
            }),
            expert_packs: vec![ExpertPackRef {
                name: "mix-experts".into(),
                digest: Hash::sha256(b"pack"),
                owner: publisher,
                experts: vec![2, 3],
            }],
        }
    }

    #[test]
    fn sign_store_load_round_trip() {
        let s = signer(1);
        let signed = sample(s.public_key()).sign(&s).unwrap();
        let back = SignedManifest::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.digest, Manifest::digest_of(&signed.encoding));
    }

    #[test]
    fn signing_with_another_key_is_refused() {
        let m = sample(signer(1).public_key());
        assert!(m.sign(&signer(2)).is_err());
    }

    #[test]
    fn an_edited_manifest_fails_its_signature() {
        let s = signer(1);
        let signed = sample(s.public_key()).sign(&s).unwrap();
        let mut bytes = signed.to_bytes();
        // The last byte of the created_at time: still decodes, no longer verifies.
        let at = 1 + 2 + 3 + 2 + 2 + 7 + 2 + 4 + 2 + 10 + 32 + 7;
        bytes[at] ^= 1;
        assert!(matches!(
            SignedManifest::from_bytes(&bytes),
            Err(ManifestError::BadSignature(_))
        ));
    }

    /// The rules `validate` enforces, one case each.
    #[test]
    fn invalid_manifests_are_refused() {
        fn check(edit: impl Fn(&mut Manifest), expect: &str) {
            let mut m = sample(signer(1).public_key());
            edit(&mut m);
            let err = m.to_bytes().unwrap_err().to_string();
            assert!(err.contains(expect), "expected `{expect}`, got `{err}`");
        }
        check(|m| m.name = "Bad".into(), "name");
        check(|m| m.files[0].path = "../x".into(), "safe relative path");
        check(
            |m| m.files[0].path = "a/.hidden".into(),
            "safe relative path",
        );
        check(|m| m.files.swap(0, 1), "sorted");
        check(|m| m.files.clear(), "1 to");
        check(|m| m.tensors[0].file = 9, "not listed");
        check(|m| m.tensors[0].offset = 990, "outside its file");
        check(|m| m.expert_packs[0].experts = vec![1, 2], "provided twice");
        check(|m| m.expert_packs[0].experts = vec![7], "out of range");
        check(|m| m.experts = None, "no experts");
        check(|m| m.license = "x\n".into(), "control");
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (
            "[a-z][a-z0-9._-]{0,20}",
            proptest::collection::btree_map(
                "[a-z]{1,8}(/[a-z0-9]{1,8})?",
                (200u64..1 << 40, any::<[u8; 32]>()),
                1..6,
            ),
            proptest::collection::btree_map(
                "[a-z.0-9]{1,30}",
                (proptest::collection::vec(1u64..100, 0..4), 0u64..100),
                0..8,
            ),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(|(name, files, tensors, moe, t)| {
                let publisher = signer(3).public_key();
                let files: Vec<FileEntry> = files
                    .into_iter()
                    .map(|(path, (size, h))| FileEntry {
                        path,
                        size,
                        sha256: Hash(h),
                        role: FileRole::Weights,
                    })
                    .collect();
                let tensors = tensors
                    .into_iter()
                    .map(|(name, (shape, offset))| TensorEntry {
                        name,
                        file: 0,
                        dtype: "F16".into(),
                        shape,
                        offset,
                        length: 1,
                    })
                    .collect();
                Manifest {
                    name,
                    kind: PackageKind::Model,
                    format: Format::Gguf,
                    architecture: "llama".into(),
                    quantization: "Q4_1".into(),
                    license: String::new(),
                    publisher,
                    created_at: Timestamp::from_nanos(t),
                    files,
                    tensors,
                    experts: moe.then(|| Experts {
                        count: 8,
                        per_token: 2,
                        layout: ExpertLayout::Stacked,
                        placement: vec![Placement {
                            file: 0,
                            experts: (0..8).collect(),
                        }],
                    }),
                    expert_packs: Vec::new(),
                }
            })
    }

    proptest! {
        #[test]
        fn valid_manifests_round_trip(m in arb_manifest()) {
            let bytes = m.to_bytes().unwrap();
            prop_assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Manifest::from_bytes(&bytes);
            let _ = SignedManifest::from_bytes(&bytes);
        }

        #[test]
        fn any_flipped_bit_is_refused(m in arb_manifest(), at in any::<proptest::sample::Index>(), bit in 0u8..8) {
            let s = signer(3);
            let signed = m.sign(&s).unwrap();
            let mut bytes = signed.to_bytes();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(SignedManifest::from_bytes(&bytes).is_err());
        }
    }
}
