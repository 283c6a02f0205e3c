//! Licenses: an owner's signed permission for a node to run a package.
//!
//! A license is signed by the package's publisher (or, for an expert pack, by that pack's
//! owner, who published it). It names one package by digest, the node it is for (or any
//! node), a validity window, a token allowance, a price per 1,000 tokens in a named
//! currency unit (an integer: money is never a float), and the uses it permits. It is
//! signed as a statement of kind [`KIND`] (an [`aura_core::signed::Signed`] license); the
//! JSON file form (`aura-license/v1`: `{"format", "license", "signature"}`) carries the
//! fields and the signature, which covers their canonical encoding:
//!
//! ```text
//! u8   version = 1
//! [16] id
//! [32] licensor                 Ed25519 public key
//! [32] package                  package digest
//! str  package_name             for people; 1-64 of [a-z0-9._-]
//! u8   licensee                 0 any node | 1 followed by [16] node id
//! u64  not_before, u64 not_after  ns since the epoch, inclusive
//! u8   allowance                0 unlimited | 1 followed by u64 tokens
//! u64  price_per_1000_tokens
//! str  currency                 1-32 of [a-z0-9._-], e.g. `usd-micro`
//! u32  uses                     bit 0 inference, 1 embeddings, 2 commercial
//! u64  issued_at
//! ```
//!
//! [`SignedLicense::check`] answers whether a license lets this node run this package now,
//! for this use and this many more tokens, with a distinct error for each defect;
//! [`Licenses`] keeps installed licenses under `<home>/licenses/` and picks the one to use.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use aura_core::door::{Clock, Entropy};
use aura_core::encoding::{DecodeError, Decoder, Encoder};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::signed::{self, Issuer, Signed, Statement};
use aura_core::{NodeId, PublicKey, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{
    get_key, get_str, get_time, invalid_at, is_simple_name, put_key, put_str, unknown_version,
};
use crate::manifest::SignedManifest;

aura_core::typed_id!(
    /// A license.
    LicenseId,
    "lic"
);

pub const VERSION: u8 = 1;
/// The statement kind a licensor signs.
pub const KIND: &str = "model-license/v1";
/// The JSON file format name.
pub const FILE_FORMAT: &str = "aura-license/v1";
const MAX_CURRENCY: usize = 32;
/// The largest license file Aura reads.
pub const MAX_FILE: u64 = 64 * 1024;

/// The currency unit of licenses that cost nothing (a publisher's own license).
pub const NO_CURRENCY: &str = "none";

/// What a license permits, as a set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Uses(u32);

impl Uses {
    pub const INFERENCE: Uses = Uses(1);
    pub const EMBEDDINGS: Uses = Uses(2);
    pub const COMMERCIAL: Uses = Uses(4);
    pub const ALL: Uses = Uses(7);
    const NAMES: [(Uses, &'static str); 3] = [
        (Uses::INFERENCE, "inference"),
        (Uses::EMBEDDINGS, "embeddings"),
        (Uses::COMMERCIAL, "commercial"),
    ];

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub fn from_bits(bits: u32) -> Option<Uses> {
        (bits & !Uses::ALL.0 == 0).then_some(Uses(bits))
    }

    pub fn contains(self, other: Uses) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Uses) -> Uses {
        Uses(self.0 | other.0)
    }

    pub fn names(self) -> Vec<&'static str> {
        Uses::NAMES
            .iter()
            .filter(|(u, _)| self.contains(*u))
            .map(|(_, n)| *n)
            .collect()
    }

    /// Parses `inference,embeddings` (or `all`).
    pub fn parse(s: &str) -> Result<Uses, String> {
        let mut out = Uses::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out = Uses::ALL;
                continue;
            }
            let (u, _) = Uses::NAMES
                .iter()
                .find(|(_, n)| *n == part)
                .ok_or_else(|| {
                    format!("unknown use `{part}`: use inference, embeddings, commercial or all")
                })?;
            out = out.union(*u);
        }
        if out.is_empty() {
            return Err("name at least one use".into());
        }
        Ok(out)
    }
}

impl fmt::Display for Uses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl fmt::Debug for Uses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uses({self})")
    }
}

impl Serialize for Uses {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Uses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Uses::parse(&names.join(",")).map_err(serde::de::Error::custom)
    }
}

/// Which node may use a license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Licensee {
    AnyNode,
    Node(NodeId),
}

impl fmt::Display for Licensee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Licensee::AnyNode => f.write_str("any"),
            Licensee::Node(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Licensee {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "any" {
            return Ok(Licensee::AnyNode);
        }
        s.parse()
            .map(Licensee::Node)
            .map_err(|_| format!("`{s}` is not a node id (node_…) or `any`"))
    }
}

impl Serialize for Licensee {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Licensee {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How many tokens a license covers in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    Unlimited,
    Tokens(u64),
}

impl fmt::Display for Allowance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowance::Unlimited => f.write_str("unlimited"),
            Allowance::Tokens(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Allowance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "unlimited" {
            return Ok(Allowance::Unlimited);
        }
        s.replace('_', "")
            .parse()
            .map(Allowance::Tokens)
            .map_err(|_| format!("`{s}` is not a number of tokens or `unlimited`"))
    }
}

impl Serialize for Allowance {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Allowance::Unlimited => s.serialize_str("unlimited"),
            Allowance::Tokens(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Allowance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Allowance::Tokens(n)),
            Raw::S(s) if s == "unlimited" => Ok(Allowance::Unlimited),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "allowance `{s}` is neither a number nor \"unlimited\""
            ))),
        }
    }
}

/// A license's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct License {
    pub id: LicenseId,
    pub licensor: PublicKey,
    pub package: Hash,
    pub package_name: String,
    pub licensee: Licensee,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub allowance: Allowance,
    pub price_per_1000_tokens: u64,
    pub currency: String,
    pub uses: Uses,
    pub issued_at: Timestamp,
}

/// A license's terms break a rule of the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid license: {0}")]
pub struct Invalid(pub String);

impl License {
    /// The license a publisher gives itself on import: this node, from now on, without
    /// limit, every use, free.
    pub fn own(
        signed: &SignedManifest,
        node: NodeId,
        clock: &dyn Clock,
        entropy: &dyn Entropy,
    ) -> License {
        let now = clock.now();
        License {
            id: LicenseId::generate(clock, entropy),
            licensor: signed.manifest().publisher,
            package: signed.digest,
            package_name: signed.manifest().name.clone(),
            licensee: Licensee::Node(node),
            not_before: signed.manifest().created_at.min(now),
            not_after: Timestamp::from_nanos(u64::MAX),
            allowance: Allowance::Unlimited,
            price_per_1000_tokens: 0,
            currency: NO_CURRENCY.into(),
            uses: Uses::ALL,
            issued_at: now,
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if !is_simple_name(&self.package_name, crate::manifest::MAX_NAME) {
            return Err(Invalid(format!(
                "package name `{}` is not a package name",
                self.package_name
            )));
        }
        if !is_simple_name(&self.currency, MAX_CURRENCY) {
            return Err(Invalid(format!(
                "currency `{}` is not 1-32 of a-z, 0-9, '.', '_' and '-'",
                self.currency
            )));
        }
        if self.not_before > self.not_after {
            return Err(Invalid("it ends before it begins".into()));
        }
        if self.uses.is_empty() || Uses::from_bits(self.uses.bits()).is_none() {
            return Err(Invalid("it permits no known use".into()));
        }
        Ok(())
    }

    fn encode_into(&self, e: &mut Encoder) {
        e.u8(VERSION).raw(self.id.as_bytes());
        put_key(e, &self.licensor);
        e.hash(&self.package);
        put_str(e, &self.package_name);
        match self.licensee {
            Licensee::AnyNode => {
                e.u8(0);
            }
            Licensee::Node(n) => {
                e.u8(1).raw(n.as_bytes());
            }
        }
        e.u64(self.not_before.as_nanos())
            .u64(self.not_after.as_nanos());
        match self.allowance {
            Allowance::Unlimited => {
                e.u8(0);
            }
            Allowance::Tokens(n) => {
                e.u8(1).u64(n);
            }
        }
        e.u64(self.price_per_1000_tokens);
        put_str(e, &self.currency);
        e.u32(self.uses.bits()).u64(self.issued_at.as_nanos());
    }

    fn decode_from(d: &mut Decoder<'_>) -> Result<License, DecodeError> {
        let version = d.u8("version")?;
        if version != VERSION {
            return Err(unknown_version("version", version));
        }
        let id = LicenseId::from_bytes(d.array("id")?);
        let licensor = get_key(d, "licensor")?;
        let package = d.hash("package")?;
        let package_name = get_str(d, "package_name", crate::manifest::MAX_NAME)?;
        let at = d.position();
        let licensee = match d.u8("licensee")? {
            0 => Licensee::AnyNode,
            1 => Licensee::Node(NodeId::from_bytes(d.array("licensee")?)),
            _ => return Err(invalid_at(at, "licensee", "is neither 0 nor 1")),
        };
        let not_before = get_time(d, "not_before")?;
        let not_after = get_time(d, "not_after")?;
        let at = d.position();
        let allowance = match d.u8("allowance")? {
            0 => Allowance::Unlimited,
            1 => Allowance::Tokens(d.u64("allowance")?),
            _ => return Err(invalid_at(at, "allowance", "is neither 0 nor 1")),
        };
        let price_per_1000_tokens = d.u64("price_per_1000_tokens")?;
        let currency = get_str(d, "currency", MAX_CURRENCY)?;
        let at = d.position();
        let uses = Uses::from_bits(d.u32("uses")?)
            .ok_or_else(|| invalid_at(at, "uses", "has unknown bits"))?;
        let issued_at = get_time(d, "issued_at")?;
        let license = License {
            id,
            licensor,
            package,
            package_name,
            licensee,
            not_before,
            not_after,
            allowance,
            price_per_1000_tokens,
            currency,
            uses,
            issued_at,
        };
        license
            .validate()
            .map_err(|_| invalid_at(0, "license", "breaks a rule of the format"))?;
        Ok(license)
    }

    /// Signs the license; `signer` must be the licensor it names.
    pub fn sign(self, signer: &Signer) -> Result<SignedLicense, Invalid> {
        if signer.public_key() != self.licensor {
            return Err(Invalid(format!(
                "the license names licensor {} but key `{}` is {}",
                self.licensor.fingerprint(),
                signer.name(),
                signer.public_key().fingerprint()
            )));
        }
        Signed::sign(self, signer).map_err(|e| Invalid(e.to_string()))
    }
}

impl Statement for License {
    const KIND: &'static str = KIND;
    const FIELD: &'static str = "license";
    const FORMAT: Option<&'static str> = Some(FILE_FORMAT);

    fn issuer(&self) -> Issuer<'_> {
        Issuer::Key(&self.licensor)
    }

    fn validate(&self) -> Result<(), signed::Invalid> {
        License::validate(self).map_err(|e| signed::Invalid(e.0))
    }

    fn encode(&self, e: &mut Encoder) {
        self.encode_into(e);
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        License::decode_from(d)
    }
}

/// A license and its licensor's signature. Its JSON form is the file form,
/// `{"format": "aura-license/v1", "license": {…}, "signature": "<hex>"}`.
pub type SignedLicense = Signed<License>;

/// What a license check is about: the package to run and who may license it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub digest: Hash,
    /// The key whose licenses count: the package's publisher.
    pub owner: PublicKey,
    pub name: &'a str,
}

/// What the node wants to do.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub node: NodeId,
    pub now: Timestamp,
    pub uses: Uses,
    /// An upper bound on the tokens the request will count against the license.
    pub tokens: u64,
}

/// A license that allows the request, and its terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub license: LicenseId,
    pub licensor: PublicKey,
    pub subject: Hash,
    pub price_per_1000_tokens: u64,
    pub currency: String,
    pub allowance: Allowance,
    /// Tokens used under the license before this request.
    pub used: u64,
}

/// Why a license does not allow a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("no license for `{package}` is installed{}", if *unreadable > 0 { format!(" ({unreadable} license files could not be read)") } else { String::new() })]
    NoLicense { package: String, unreadable: usize },
    #[error("license {license} has a bad signature (it was altered or forged)")]
    BadSignature { license: LicenseId },
    #[error("license {license} is for package {licensed}, not {package}")]
    NotForPackage {
        license: LicenseId,
        licensed: String,
        package: String,
    },
    #[error(
        "license {license} is signed by {licensor}, who does not own the package (its owner is {owner})"
    )]
    WrongLicensor {
        license: LicenseId,
        licensor: String,
        owner: String,
    },
    #[error("license {license} is for {licensee}, not this node ({node})")]
    WrongNode {
        license: LicenseId,
        licensee: NodeId,
        node: NodeId,
    },
    #[error("license {license} is not valid until {not_before}")]
    NotYetValid {
        license: LicenseId,
        not_before: Timestamp,
    },
    #[error("license {license} expired at {not_after}")]
    Expired {
        license: LicenseId,
        not_after: Timestamp,
    },
    #[error("license {license} does not permit {wanted} (it permits {permitted})")]
    UseNotPermitted {
        license: LicenseId,
        wanted: Uses,
        permitted: Uses,
    },
    #[error(
        "license {license}'s allowance is used up: {used} of {allowance} tokens used, {requested} more requested"
    )]
    AllowanceUsedUp {
        license: LicenseId,
        allowance: u64,
        used: u64,
        requested: u64,
    },
}

impl LicenseError {
    /// Every license refusal is HTTP 403: the request is understood and refused for lack
    /// of permission. (Damaged packages are 409; see `package::Error::http_status`.)
    pub fn http_status(&self) -> u16 {
        403
    }

    /// A stable machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            LicenseError::NoLicense { .. } => "license_missing",
            LicenseError::BadSignature { .. } => "license_bad_signature",
            LicenseError::NotForPackage { .. } => "license_wrong_package",
            LicenseError::WrongLicensor { .. } => "license_wrong_licensor",
            LicenseError::WrongNode { .. } => "license_wrong_node",
            LicenseError::NotYetValid { .. } => "license_not_yet_valid",
            LicenseError::Expired { .. } => "license_expired",
            LicenseError::UseNotPermitted { .. } => "license_use_not_permitted",
            LicenseError::AllowanceUsedUp { .. } => "license_allowance_used_up",
        }
    }

    /// How far a license got through the checks: when several licenses fail, the one
    /// that got furthest says most about what the user can do.
    fn stage(&self) -> u8 {
        match self {
            LicenseError::NoLicense { .. } => 0,
            LicenseError::BadSignature { .. } | LicenseError::NotForPackage { .. } => 1,
            LicenseError::WrongLicensor { .. } => 2,
            LicenseError::WrongNode { .. } => 3,
            LicenseError::NotYetValid { .. } | LicenseError::Expired { .. } => 4,
            LicenseError::UseNotPermitted { .. } => 5,
            LicenseError::AllowanceUsedUp { .. } => 6,
        }
    }

    /// A suggestion for the person who sees this.
    pub fn hint(&self) -> &'static str {
        match self {
            LicenseError::NoLicense { .. } => {
                "ask the model's owner for a license, then `aura license install FILE`"
            }
            LicenseError::BadSignature { .. } => {
                "the license file was changed; install an unaltered copy from the owner"
            }
            LicenseError::NotForPackage { .. } | LicenseError::WrongLicensor { .. } => {
                "this license does not cover the installed package; ask its owner for one that does"
            }
            LicenseError::WrongNode { .. } => {
                "ask the owner for a license for this node's id (`aura key show`)"
            }
            LicenseError::NotYetValid { .. } => {
                "wait until the license starts, or ask for one that starts now"
            }
            LicenseError::Expired { .. } => "ask the owner to renew the license",
            LicenseError::UseNotPermitted { .. } => {
                "ask the owner for a license that permits this use"
            }
            LicenseError::AllowanceUsedUp { .. } => {
                "ask the owner for a further license with a new allowance"
            }
        }
    }
}

/// Whether a license's signature verifies under the licensor it names.
pub fn verify_signature(signed: &SignedLicense) -> Result<(), LicenseError> {
    signed
        .verify_signature()
        .map_err(|_| LicenseError::BadSignature {
            license: signed.statement.id,
        })
}

/// Checks, in order: signature, package, licensor, node, validity window, use,
/// allowance (`used` tokens so far plus the request's). The first failure is the answer.
pub fn check(
    signed: &SignedLicense,
    subject: &Subject<'_>,
    request: &Request,
    used: u64,
) -> Result<Grant, LicenseError> {
    let l = &signed.statement;
    verify_signature(signed)?;
    if l.package != subject.digest {
        return Err(LicenseError::NotForPackage {
            license: l.id,
            licensed: format!("{} ({})", l.package_name, l.package.short()),
            package: format!("{} ({})", subject.name, subject.digest.short()),
        });
    }
    if l.licensor != subject.owner {
        return Err(LicenseError::WrongLicensor {
            license: l.id,
            licensor: l.licensor.fingerprint(),
            owner: subject.owner.fingerprint(),
        });
    }
    if let Licensee::Node(n) = l.licensee
        && n != request.node
    {
        return Err(LicenseError::WrongNode {
            license: l.id,
            licensee: n,
            node: request.node,
        });
    }
    if request.now < l.not_before {
        return Err(LicenseError::NotYetValid {
            license: l.id,
            not_before: l.not_before,
        });
    }
    if request.now > l.not_after {
        return Err(LicenseError::Expired {
            license: l.id,
            not_after: l.not_after,
        });
    }
    if !l.uses.contains(request.uses) {
        return Err(LicenseError::UseNotPermitted {
            license: l.id,
            wanted: request.uses,
            permitted: l.uses,
        });
    }
    if let Allowance::Tokens(allowance) = l.allowance
        && used
            .checked_add(request.tokens)
            .is_none_or(|total| total > allowance)
    {
        return Err(LicenseError::AllowanceUsedUp {
            license: l.id,
            allowance,
            used,
            requested: request.tokens,
        });
    }
    Ok(Grant {
        license: l.id,
        licensor: l.licensor,
        subject: l.package,
        price_per_1000_tokens: l.price_per_1000_tokens,
        currency: l.currency.clone(),
        allowance: l.allowance,
        used,
    })
}

/// The file form, pretty-printed for people: the JSON form with the members in the order
/// `format`, `license`, `signature` and the license's fields in declaration order. (Not
/// hashed or signed: the signature covers the binary encoding. Written from structs, not
/// maps, so the bytes do not depend on serde_json's features.)
pub fn to_file(signed: &SignedLicense) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(signed)?;
    s.push('\n');
    Ok(s)
}

/// Reads the file form (or any JSON form of a signed license). The signature is not
/// checked here (see [`verify_signature`]); the fields are.
pub fn from_file(text: &[u8]) -> Result<SignedLicense, String> {
    if text.len() as u64 > MAX_FILE {
        return Err(format!("it is larger than {MAX_FILE} bytes"));
    }
    SignedLicense::from_json(text).map_err(|e| e.to_string())
}

/// Why the license store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("license {0} is already installed with different terms")]
    Conflict(LicenseId),
    #[error("the license does not verify: {0}")]
    Refused(#[from] LicenseError),
    #[error("{}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("no license {0} is installed")]
    NotFound(LicenseId),
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One installed license file.
#[derive(Debug)]
pub struct Installed {
    pub path: PathBuf,
    pub license: Result<SignedLicense, String>,
}

/// Installed licenses, one JSON file each in `<home>/licenses/` (`<id>.license`).
#[derive(Debug, Clone)]
pub struct Licenses {
    dir: PathBuf,
}

impl Licenses {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Licenses { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, id: LicenseId) -> PathBuf {
        self.dir.join(format!("{id}.license"))
    }

    /// Installs a license after checking its signature. Installing the same license twice
    /// is fine; a different license with the same id is refused.
    pub fn install(&self, signed: &SignedLicense) -> Result<PathBuf, StoreError> {
        verify_signature(signed)?;
        if !self.dir.exists() {
            fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err(&self.dir))?;
        }
        let id = signed.statement.id;
        let path = self.path_of(id);
        let json = to_file(signed).map_err(|e| StoreError::Unreadable {
            path: path.clone(),
            reason: format!("cannot write the license as JSON: {e}"),
        })?;
        match fs::read(&path) {
            Ok(existing) => {
                return match from_file(&existing) {
                    Ok(e) if e == *signed => Ok(path),
                    _ => Err(StoreError::Conflict(id)),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        let tmp = self.dir.join(format!(".{id}.partial"));
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(json.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        drop(f);
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        linked.map_err(io_err(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(path)
    }

    /// Every installed license file, readable or not, sorted by file name.
    pub fn list(&self) -> Result<Vec<Installed>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".license") || name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let license = read_limited(&path).and_then(|b| from_file(&b));
            out.push(Installed { path, license });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    pub fn get(&self, id: LicenseId) -> Result<SignedLicense, StoreError> {
        let path = self.path_of(id);
        if !path.exists() {
            return Err(StoreError::NotFound(id));
        }
        let bytes = read_limited(&path).map_err(|reason| StoreError::Unreadable {
            path: path.clone(),
            reason,
        })?;
        from_file(&bytes).map_err(|reason| StoreError::Unreadable { path, reason })
    }

    /// Picks the license to use for `subject`: among the installed licenses for its
    /// digest, the cheapest that allows the request (then the one ending soonest, then by
    /// id). When none does, the refusal of the license that got furthest through the
    /// checks. `used` says how many tokens each license has counted so far.
    pub fn find(
        &self,
        subject: &Subject<'_>,
        request: &Request,
        used: &dyn Fn(LicenseId) -> u64,
    ) -> Result<Grant, LicenseError> {
        let listed = self.list().map_err(|_| LicenseError::NoLicense {
            package: subject.name.to_owned(),
            unreadable: 1,
        })?;
        let unreadable = listed.iter().filter(|l| l.license.is_err()).count();
        let mut candidates: Vec<SignedLicense> = listed
            .into_iter()
            .filter_map(|l| l.license.ok())
            // Licenses naming the package only by name are candidates too, so that a
            // package whose digest changed (a re-signed manifest) is refused as "not the
            // licensed package" rather than "no license".
            .filter(|l| {
                l.statement.package == subject.digest || l.statement.package_name == subject.name
            })
            .collect();
        if candidates.is_empty() {
            return Err(LicenseError::NoLicense {
                package: subject.name.to_owned(),
                unreadable,
            });
        }
        candidates.sort_by(|a, b| {
            let key = |l: &License| (l.price_per_1000_tokens, l.not_after, l.id);
            key(&a.statement).cmp(&key(&b.statement))
        });
        let mut best: Option<LicenseError> = None;
        for c in &candidates {
            match check(c, subject, request, used(c.statement.id)) {
                Ok(grant) => return Ok(grant),
                Err(e) => {
                    if best.as_ref().is_none_or(|b| e.stage() > b.stage()) {
                        best = Some(e);
                    }
                }
            }
        }
        Err(best.unwrap_or(LicenseError::NoLicense {
            package: subject.name.to_owned(),
            unreadable,
        }))
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    fs::read(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aura_core::door::SeededEntropy;
    use proptest::prelude::*;

    fn key(seed: u64) -> Signer {
        Signer::ephemeral("owner", &SeededEntropy::new(seed)).unwrap()
    }

    fn terms(licensor: PublicKey) -> License {
        License {
            id: LicenseId::from_bytes([7; 16]),
            licensor,
            package: Hash::sha256(b"package"),
            package_name: "smollm2".into(),
            licensee: Licensee::Node(NodeId::from_bytes([1; 16])),
            not_before: Timestamp::from_secs(1_000),
            not_after: Timestamp::from_secs(2_000),
            allowance: Allowance::Tokens(100),
            price_per_1000_tokens: 250,
            currency: "usd-micro".into(),
            uses: Uses::INFERENCE,
            issued_at: Timestamp::from_secs(900),
        }
    }

    #[test]
    fn json_and_binary_forms_round_trip() {
        let k = key(1);
        let signed = terms(k.public_key()).sign(&k).unwrap();
        let file = to_file(&signed).unwrap();
        assert_eq!(from_file(file.as_bytes()).unwrap(), signed);
        // The canonical JSON form is the file form without the whitespace: either reads.
        let json = signed.to_json().unwrap();
        assert!(json.starts_with(br#"{"format":"aura-license/v1","license":{"allowance""#));
        assert_eq!(from_file(&json).unwrap(), signed);
        let bytes = signed.to_bytes().unwrap();
        assert_eq!(SignedLicense::from_bytes(&bytes).unwrap(), signed);
        verify_signature(&signed).unwrap();
    }

    /// A license file must say which format it is in.
    #[test]
    fn a_file_of_another_format_is_refused() {
        let k = key(1);
        let signed = terms(k.public_key()).sign(&k).unwrap();
        let file = to_file(&signed).unwrap();
        let other = file.replace("aura-license/v1", "aura-license/v9");
        assert!(
            from_file(other.as_bytes())
                .unwrap_err()
                .contains("aura-license/v9")
        );
        let none = file.replace("\"format\": \"aura-license/v1\",", "");
        assert_ne!(none, file);
        assert!(from_file(none.as_bytes()).unwrap_err().contains("format"));
    }

    #[test]
    fn uses_parse_and_print() {
        assert_eq!(
            Uses::parse("inference, commercial").unwrap().to_string(),
            "inference,commercial"
        );
        assert_eq!(Uses::parse("all").unwrap(), Uses::ALL);
        assert!(Uses::parse("mining").is_err());
        assert!(Uses::parse("").is_err());
    }

    fn arb_license() -> impl Strategy<Value = License> {
        (
            any::<[u8; 16]>(),
            any::<[u8; 32]>(),
            "[a-z][a-z0-9._-]{0,30}",
            proptest::option::of(any::<[u8; 16]>()),
            (any::<u64>(), any::<u64>()),
            proptest::option::of(any::<u64>()),
            any::<u64>(),
            "[a-z0-9][a-z0-9-]{0,20}",
            1u32..8,
            any::<u64>(),
        )
            .prop_map(
                |(id, pkg, name, node, (a, b), allowance, price, currency, uses, issued)| License {
                    id: LicenseId::from_bytes(id),
                    licensor: key(5).public_key(),
                    package: Hash(pkg),
                    package_name: name,
                    licensee: node
                        .map_or(Licensee::AnyNode, |n| Licensee::Node(NodeId::from_bytes(n))),
                    not_before: Timestamp::from_nanos(a.min(b)),
                    not_after: Timestamp::from_nanos(a.max(b)),
                    allowance: allowance.map_or(Allowance::Unlimited, Allowance::Tokens),
                    price_per_1000_tokens: price,
                    currency,
                    uses: Uses::from_bits(uses).unwrap(),
                    issued_at: Timestamp::from_nanos(issued),
                },
            )
    }

    proptest! {
        #[test]
        fn licenses_round_trip(l in arb_license()) {
            let k = key(5);
            let signed = l.sign(&k).unwrap();
            let bytes = signed.to_bytes().unwrap();
            prop_assert_eq!(&SignedLicense::from_bytes(&bytes).unwrap(), &signed);
            prop_assert_eq!(&from_file(to_file(&signed).unwrap().as_bytes()).unwrap(), &signed);
            prop_assert_eq!(&SignedLicense::from_json(&signed.to_json().unwrap()).unwrap(), &signed);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SignedLicense::from_bytes(&bytes);
            let _ = SignedLicense::from_json(&bytes);
        }

        #[test]
        fn any_flipped_bit_breaks_the_license(l in arb_license(), at in any::<proptest::sample::Index>(), bit in 0u8..8) {
            let k = key(5);
            let signed = l.sign(&k).unwrap();
            let mut bytes = signed.to_bytes().unwrap();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(tampered) = SignedLicense::from_bytes(&bytes) {
                prop_assert!(verify_signature(&tampered).is_err());
            }
        }
    }
}
