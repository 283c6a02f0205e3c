//! Signed statements: the one way identity facts are signed and checked.
//!
//! A statement's signer signs `Domain::Statement`'s tag, the statement kind, a NUL byte and
//! the statement's canonical encoding. The kind keeps a credential from being passed off as
//! an approval even if the two encodings happened to coincide.

use std::fmt;

use aura_core::encoding::{DecodeError, Decoder, Encoder};
use aura_core::hash::{Domain, Hash};
use aura_core::keystore::Signer;
use aura_core::sign::BadSignature;
use aura_core::{PublicKey, Signature};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A statement that can be signed.
pub trait Statement: Sized + Clone + fmt::Debug + Serialize + DeserializeOwned {
    /// Names the kind of statement in the signed message, e.g. `credential/v1`: the
    /// kind of the current version.
    const KIND: &'static str;

    /// The kind this statement is signed under: [`Statement::KIND`], unless the statement
    /// is of an older version that it still reads (an approval of version 1).
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    /// The canonical encoding of the statement's fields.
    fn encode(&self, e: &mut Encoder);

    /// Decodes what [`Statement::encode`] wrote.
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError>;

    /// The key whose signature makes this statement valid (the issuer, or the approver).
    fn signer(&self) -> &PublicKey;

    /// The canonical encoding as bytes.
    fn to_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        self.encode(&mut e);
        e.finish()
    }

    /// The bytes the signer signs.
    fn signing_message(&self) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(Domain::Statement.tag());
        msg.extend_from_slice(self.kind().as_bytes());
        msg.push(0);
        msg.extend_from_slice(&self.to_bytes());
        msg
    }

    /// A stable digest of the statement (not of its signature).
    fn digest(&self) -> Hash {
        Hash::tagged(Domain::Statement, &self.signing_message())
    }
}

/// A statement and its signature. On the wire (JSON) it is
/// `{"statement": {...}, "signature": "<hex>"}`; the signature covers the canonical
/// encoding, so any field changed in transit makes it fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "T: Statement")]
pub struct Signed<T: Statement> {
    pub statement: T,
    pub signature: Signature,
}

/// A signed statement that does not hold up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadStatement {
    #[error("it is signed by key {found}, but names {declared} as its signer")]
    WrongSigner { declared: String, found: String },
    #[error("its signer {0} is not a trusted issuer")]
    UntrustedIssuer(String),
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
}

impl<T: Statement> Signed<T> {
    /// Signs `statement` with `signer`, which must be the key the statement names.
    pub fn sign(statement: T, signer: &Signer) -> Result<Self, BadStatement> {
        if signer.public_key() != *statement.signer() {
            return Err(BadStatement::WrongSigner {
                declared: statement.signer().fingerprint(),
                found: signer.public_key().fingerprint(),
            });
        }
        let signature = signer.sign(&statement.signing_message());
        Ok(Signed {
            statement,
            signature,
        })
    }

    /// Checks the signature against the key the statement names (trust is the caller's
    /// next question; see [`TrustSet`]).
    pub fn verify_signature(&self) -> Result<(), BadStatement> {
        self.statement
            .signer()
            .verify(&self.statement.signing_message(), &self.signature)?;
        Ok(())
    }

    /// Canonical encoding of statement and signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        self.statement.encode(&mut e);
        e.raw(&self.signature.0);
        e.finish()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new(bytes);
        let statement = T::decode(&mut d)?;
        let signature = Signature(d.array("signature")?);
        d.finish()?;
        Ok(Signed {
            statement,
            signature,
        })
    }
}

/// The issuers a node trusts: its own key and any organisation keys configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustSet {
    keys: Vec<PublicKey>,
}

impl TrustSet {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut keys: Vec<PublicKey> = keys.into_iter().collect();
        keys.sort_by_key(PublicKey::to_bytes);
        keys.dedup();
        TrustSet { keys }
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Signature valid and signer trusted.
    pub fn check<T: Statement>(&self, s: &Signed<T>) -> Result<(), BadStatement> {
        if !self.contains(s.statement.signer()) {
            return Err(BadStatement::UntrustedIssuer(
                s.statement.signer().fingerprint(),
            ));
        }
        s.verify_signature()
    }
}

// Encoding helpers shared by the statements.

/// Writes a string whose length its type bounds well below 64 KiB (names, namespaces, tool
/// names, reasons), with a u16 length prefix.
pub(crate) fn put_str(e: &mut Encoder, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    e.u16(len).raw(&s.as_bytes()[..usize::from(len)]);
}

pub(crate) fn get_str(d: &mut Decoder<'_>, field: &'static str) -> Result<String, DecodeError> {
    let at = d.position();
    let bytes = d.bytes16(field)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError {
        offset: at,
        kind: aura_core::encoding::DecodeErrorKind::Invalid {
            field,
            reason: "is not valid UTF-8",
        },
    })
}

pub(crate) fn put_key(e: &mut Encoder, key: &PublicKey) {
    e.raw(&key.to_bytes());
}

pub(crate) fn get_key(d: &mut Decoder<'_>, field: &'static str) -> Result<PublicKey, DecodeError> {
    let at = d.position();
    let bytes: [u8; 32] = d.array(field)?;
    PublicKey::from_bytes(&bytes).map_err(|_| DecodeError {
        offset: at,
        kind: aura_core::encoding::DecodeErrorKind::Invalid {
            field,
            reason: "is not an ed25519 key",
        },
    })
}
