//! The keystore: Ed25519 keys in files under the data directory.
//!
//! A key file is a small JSON document (format `aura-key/v1`) holding the public key in
//! clear and the secret either in clear or sealed with a passphrase (Argon2id, then
//! XChaCha20-Poly1305 with the key's name and public key as associated data). Files are
//! created with mode 0600 and never overwritten; a file that anyone but its owner can
//! read is refused, because a secret others could have copied is no longer a secret.
//!
//! The only way to use a secret is through a [`Signer`], which signs and reports its
//! public key but has no method that returns the secret.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::door::Entropy;
use crate::sign::{PublicKey, Signature};

/// The node's own key.
pub const NODE_KEY: &str = "node";

const FORMAT: &str = "aura-key/v1";
const KEY_FILE_SUFFIX: &str = ".key";

/// Argon2id cost: OWASP's recommended minimum (19 MiB, 2 passes, 1 lane). Recorded in each
/// file, so it can be raised later without breaking old files.
const ARGON2_M_COST_KIB: u32 = 19 * 1024;
const ARGON2_T_COST: u32 = 2;
const ARGON2_P_COST: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no key named `{name}` (looked for {})", path.display())]
    NotFound { name: String, path: PathBuf },
    #[error("a key named `{name}` already exists at {}", path.display())]
    AlreadyExists { name: String, path: PathBuf },
    #[error(
        "key file {} is accessible by other users (mode {mode:04o}); refusing to use it",
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {} is a symbolic link or not a regular file; refusing to use it", path.display())]
    NotARegularFile { path: PathBuf },
    #[error("wrong passphrase for key `{name}` (or the key file was altered)")]
    WrongPassphrase { name: String },
    #[error("key `{name}` is encrypted and needs a passphrase")]
    PassphraseRequired { name: String },
    #[error("key file {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "invalid key name `{0}`: use 1-63 of a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A one-line suggestion for the person at the terminal, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::NotFound { name, .. } if name == NODE_KEY => {
                Some("run `aura init` to create this node's key".into())
            }
            Error::NotFound { name, .. } => Some(format!("create it with `aura key new {name}`")),
            Error::Permissions { path, .. } => Some(format!(
                "if no one else could have read it, run `chmod 600 {}`; otherwise make a new key",
                path.display()
            )),
            Error::WrongPassphrase { .. } | Error::PassphraseRequired { .. } => {
                Some("set AURA_PASSPHRASE, pass --passphrase-file, or type it when asked".into())
            }
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// A validated key name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName(String);

impl KeyName {
    pub fn new(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(KeyName(name.to_owned()))
        } else {
            Err(Error::InvalidName(name.to_owned()))
        }
    }

    pub fn node() -> Self {
        KeyName(NODE_KEY.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A passphrase, wiped from memory when dropped.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(s: String) -> Self {
        Passphrase(Zeroizing::new(s))
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Signs with a secret key it never reveals.
pub struct Signer {
    name: KeyName,
    secret: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name.as_str())
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A key that lives only in memory, for tests, benchmarks and throwaway nodes. It is
    /// never written anywhere.
    pub fn ephemeral(name: &str, entropy: &dyn Entropy) -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        entropy.fill(seed.as_mut());
        Ok(Signer::from_seed(KeyName::new(name)?, &seed))
    }

    /// A signer for an existing 32-byte Ed25519 seed (RFC 8032's private key), for
    /// importing a key or reproducing published test vectors. The seed is copied in and
    /// can never be read back out.
    pub fn from_seed_bytes(name: &str, seed: &[u8; 32]) -> Result<Self, Error> {
        Ok(Signer::from_seed(KeyName::new(name)?, seed))
    }

    fn from_seed(name: KeyName, seed: &[u8; 32]) -> Self {
        let secret = SigningKey::from_bytes(seed);
        let public = PublicKey::from_dalek(secret.verifying_key());
        Signer {
            name,
            secret,
            public,
        }
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.secret.sign(message).to_bytes())
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// Facts about a stored key, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub public_key: PublicKey,
    pub key_id: String,
    pub encrypted: bool,
    pub path: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    name: String,
    algorithm: String,
    public_key: PublicKey,
    secret: SecretField,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum SecretField {
    /// The 32-byte Ed25519 seed in hex.
    Plain { seed: String },
    /// The seed sealed with a passphrase.
    Argon2idXchacha20poly1305 {
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
        salt: String,
        nonce: String,
        ciphertext: String,
    },
}

impl Drop for SecretField {
    fn drop(&mut self) {
        if let SecretField::Plain { seed } = self {
            seed.zeroize();
        }
    }
}

/// Key files in one directory (`<home>/keys`).
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    /// The keystore in `dir`; nothing is read or created yet.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Keystore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, name: &KeyName) -> PathBuf {
        self.dir.join(format!("{}{KEY_FILE_SUFFIX}", name.as_str()))
    }

    /// Creates a new key and writes it with mode 0600, refusing to replace an existing
    /// one. With a passphrase the secret is sealed at rest.
    pub fn create(
        &self,
        name: &KeyName,
        passphrase: Option<&Passphrase>,
        entropy: &dyn Entropy,
    ) -> Result<PublicKey, Error> {
        let path = self.path_of(name);
        if path.symlink_metadata().is_ok() {
            return Err(Error::AlreadyExists {
                name: name.to_string(),
                path,
            });
        }
        ensure_private_dir(&self.dir)?;

        let mut seed = Zeroizing::new([0u8; 32]);
        entropy.fill(seed.as_mut());
        let signer = Signer::from_seed(name.clone(), &seed);
        let public_key = signer.public_key();

        let secret = match passphrase {
            None => SecretField::Plain {
                seed: hex::encode(seed.as_ref()),
            },
            Some(pass) => {
                let salt: [u8; 16] = entropy_array(entropy);
                let nonce: [u8; 24] = entropy_array(entropy);
                let key = derive_key(pass, &salt, ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST)
                    .map_err(|reason| Error::Corrupt {
                        path: path.clone(),
                        reason,
                    })?;
                let cipher = XChaCha20Poly1305::new(key.as_ref().into());
                let aad = associated_data(name, &public_key);
                let ciphertext = cipher
                    .encrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: seed.as_ref(),
                            aad: &aad,
                        },
                    )
                    .map_err(|_| Error::Corrupt {
                        path: path.clone(),
                        reason: "encryption failed".into(),
                    })?;
                SecretField::Argon2idXchacha20poly1305 {
                    m_cost_kib: ARGON2_M_COST_KIB,
                    t_cost: ARGON2_T_COST,
                    p_cost: ARGON2_P_COST,
                    salt: hex::encode(salt),
                    nonce: hex::encode(nonce),
                    ciphertext: hex::encode(ciphertext),
                }
            }
        };
        let file = KeyFile {
            format: FORMAT.into(),
            name: name.to_string(),
            algorithm: "ed25519".into(),
            public_key,
            secret,
        };
        let mut json =
            Zeroizing::new(
                serde_json::to_vec_pretty(&file).map_err(|e| Error::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            );
        json.push(b'\n');
        write_new_private_file(&path, &json)?;
        Ok(public_key)
    }

    /// The public key of `name`. The file's permissions are checked even though only
    /// the public half is read: a loose file means the secret may be compromised.
    pub fn public_key(&self, name: &KeyName) -> Result<PublicKey, Error> {
        let (file, _) = self.read(name)?;
        Ok(file.public_key)
    }

    pub fn is_encrypted(&self, name: &KeyName) -> Result<bool, Error> {
        let (file, _) = self.read(name)?;
        Ok(matches!(
            file.secret,
            SecretField::Argon2idXchacha20poly1305 { .. }
        ))
    }

    /// Unseals `name` into a [`Signer`].
    pub fn signer(&self, name: &KeyName, passphrase: Option<&Passphrase>) -> Result<Signer, Error> {
        let (file, path) = self.read(name)?;
        let corrupt = |reason: &str| Error::Corrupt {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        let mut seed = Zeroizing::new([0u8; 32]);
        match &file.secret {
            SecretField::Plain { seed: hex_seed } => {
                hex::decode_to_slice(hex_seed, seed.as_mut()).map_err(|_| corrupt("bad seed"))?;
            }
            SecretField::Argon2idXchacha20poly1305 {
                m_cost_kib,
                t_cost,
                p_cost,
                salt,
                nonce,
                ciphertext,
            } => {
                let pass = passphrase.ok_or_else(|| Error::PassphraseRequired {
                    name: name.to_string(),
                })?;
                let salt = hex::decode(salt).map_err(|_| corrupt("bad salt"))?;
                let nonce: [u8; 24] = hex::decode(nonce)
                    .ok()
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(|| corrupt("bad nonce"))?;
                let ciphertext = hex::decode(ciphertext).map_err(|_| corrupt("bad ciphertext"))?;
                // Refuse absurd costs a tampered file could use to stall us.
                if *m_cost_kib > 4 * 1024 * 1024 || *t_cost > 64 || *p_cost > 64 {
                    return Err(corrupt("argon2 parameters out of range"));
                }
                let key = derive_key(pass, &salt, *m_cost_kib, *t_cost, *p_cost)
                    .map_err(|reason| corrupt(&reason))?;
                let cipher = XChaCha20Poly1305::new(key.as_ref().into());
                let aad = associated_data(name, &file.public_key);
                let plain = Zeroizing::new(
                    cipher
                        .decrypt(
                            XNonce::from_slice(&nonce),
                            Payload {
                                msg: &ciphertext,
                                aad: &aad,
                            },
                        )
                        .map_err(|_| Error::WrongPassphrase {
                            name: name.to_string(),
                        })?,
                );
                if plain.len() != 32 {
                    return Err(corrupt("sealed seed has the wrong length"));
                }
                seed.copy_from_slice(&plain);
            }
        }
        let signer = Signer::from_seed(name.clone(), &seed);
        if signer.public_key() != file.public_key {
            return Err(corrupt("the secret does not match the recorded public key"));
        }
        Ok(signer)
    }

    /// Every key in the store, sorted by name.
    pub fn list(&self) -> Result<Vec<KeyInfo>, Error> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir))?;
            let file_name = entry.file_name();
            let Some(stem) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(KEY_FILE_SUFFIX))
            else {
                continue;
            };
            let Ok(name) = KeyName::new(stem) else {
                continue;
            };
            let (file, path) = self.read(&name)?;
            out.push(KeyInfo {
                name: name.to_string(),
                key_id: file.public_key.key_id(),
                public_key: file.public_key,
                encrypted: matches!(file.secret, SecretField::Argon2idXchacha20poly1305 { .. }),
                path,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, name: &KeyName) -> Result<(KeyFile, PathBuf), Error> {
        let path = self.path_of(name);
        let meta = match path.symlink_metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    name: name.to_string(),
                    path,
                });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if !meta.file_type().is_file() {
            return Err(Error::NotARegularFile { path });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::Permissions { path, mode });
        }
        let bytes = Zeroizing::new(fs::read(&path).map_err(io_err(&path))?);
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if file.format != FORMAT {
            return Err(Error::Corrupt {
                path,
                reason: format!("unknown format `{}`", file.format),
            });
        }
        if file.algorithm != "ed25519" {
            return Err(Error::Corrupt {
                path,
                reason: format!("unsupported algorithm `{}`", file.algorithm),
            });
        }
        if file.name != name.as_str() {
            return Err(Error::Corrupt {
                path,
                reason: format!("the file is for key `{}`", file.name),
            });
        }
        Ok((file, path))
    }
}

fn entropy_array<const N: usize>(entropy: &dyn Entropy) -> [u8; N] {
    let mut out = [0u8; N];
    entropy.fill(&mut out);
    out
}

fn associated_data(name: &KeyName, public_key: &PublicKey) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(FORMAT.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&public_key.to_bytes());
    aad
}

fn derive_key(
    pass: &Passphrase,
    salt: &[u8],
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let params =
        argon2::Params::new(m_cost_kib, t_cost, p_cost, Some(32)).map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass.as_bytes(), salt, key.as_mut())
        .map_err(|e| e.to_string())?;
    Ok(key)
}

/// Creates `dir` with mode 0700 if missing; refuses one others can enter.
fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            if meta.mode() & 0o077 != 0 {
                return Err(Error::Permissions {
                    path: dir.to_owned(),
                    mode: meta.mode() & 0o7777,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Writes `bytes` to `path` with mode 0600, durably, failing if `path` exists. The file
/// appears whole or not at all: it is written under a temporary name, then linked.
fn write_new_private_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("key.partial");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let result = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    // link() fails if the target exists, so a concurrent creator cannot be overwritten.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            return Err(Error::AlreadyExists {
                name,
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io_err(path)(e)),
    }
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(parent))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::SeededEntropy;

    fn store() -> (tempfile::TempDir, Keystore) {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::new(dir.path().join("keys"));
        (dir, ks)
    }

    #[test]
    fn plain_key_round_trip_and_mode() {
        let (_d, ks) = store();
        let e = SeededEntropy::new(1);
        let pk = ks.create(&KeyName::node(), None, &e).unwrap();
        let path = ks.path_of(&KeyName::node());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(ks.dir()).unwrap().mode() & 0o777, 0o700);
        let signer = ks.signer(&KeyName::node(), None).unwrap();
        assert_eq!(signer.public_key(), pk);
        let sig = signer.sign(b"hello");
        pk.verify(b"hello", &sig).unwrap();
        assert!(pk.verify(b"hellp", &sig).is_err());
    }

    #[test]
    fn never_overwrites() {
        let (_d, ks) = store();
        let e = SeededEntropy::new(1);
        ks.create(&KeyName::node(), None, &e).unwrap();
        let err = ks.create(&KeyName::node(), None, &e).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    }

    #[test]
    fn encrypted_key_needs_the_right_passphrase() {
        let (_d, ks) = store();
        let e = SeededEntropy::new(2);
        let name = KeyName::new("ops").unwrap();
        let pass = Passphrase::new("correct horse".into());
        let pk = ks.create(&name, Some(&pass), &e).unwrap();
        assert!(ks.is_encrypted(&name).unwrap());
        assert!(matches!(
            ks.signer(&name, None),
            Err(Error::PassphraseRequired { .. })
        ));
        let wrong = Passphrase::new("battery staple".into());
        assert!(matches!(
            ks.signer(&name, Some(&wrong)),
            Err(Error::WrongPassphrase { .. })
        ));
        assert_eq!(ks.signer(&name, Some(&pass)).unwrap().public_key(), pk);
        // The secret never appears in clear in the file.
        let text = fs::read_to_string(ks.path_of(&name)).unwrap();
        assert!(!text.contains("\"seed\""));
    }

    #[test]
    fn loose_permissions_are_refused() {
        let (_d, ks) = store();
        let e = SeededEntropy::new(3);
        ks.create(&KeyName::node(), None, &e).unwrap();
        let path = ks.path_of(&KeyName::node());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = ks.signer(&KeyName::node(), None).unwrap_err();
        assert!(
            matches!(err, Error::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.hint().unwrap().contains("chmod 600"));
        assert!(ks.public_key(&KeyName::node()).is_err());
    }

    #[test]
    fn a_swapped_public_key_is_detected() {
        let (_d, ks) = store();
        let e = SeededEntropy::new(4);
        ks.create(&KeyName::node(), None, &e).unwrap();
        let other = Signer::ephemeral("x", &e).unwrap().public_key();
        let path = ks.path_of(&KeyName::node());
        let mut file: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        file["public_key"] = serde_json::Value::String(other.to_hex());
        fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        assert!(matches!(
            ks.signer(&KeyName::node(), None),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", "Node", "../x", "a b", "-x", &"x".repeat(64)] {
            assert!(KeyName::new(bad).is_err(), "{bad:?}");
        }
        for good in ["node", "ops-1", "a_b", "9"] {
            assert!(KeyName::new(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn list_shows_public_facts_only() {
        let (_d, ks) = store();
        let e = SeededEntropy::new(5);
        ks.create(&KeyName::node(), None, &e).unwrap();
        ks.create(
            &KeyName::new("b").unwrap(),
            Some(&Passphrase::new("p".into())),
            &e,
        )
        .unwrap();
        let keys = ks.list().unwrap();
        assert_eq!(
            keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["b", "node"]
        );
        assert!(keys[0].encrypted && !keys[1].encrypted);
    }
}
