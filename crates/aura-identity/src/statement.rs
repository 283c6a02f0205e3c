//! Trust in signed statements: which issuers a node trusts, and why a signed statement
//! does not hold up. The statements themselves are [`aura_core::signed`]'s: one trait, one
//! `Signed<T>`, one rule for what a signer signs (`Domain::Statement`'s tag, the kind, a NUL
//! byte, the canonical encoding), shared with aura-model's manifests, licenses and
//! receipts.

use aura_core::PublicKey;
use aura_core::encoding::{DecodeError, Decoder, Encoder};
use aura_core::sign::BadSignature;
use aura_core::signed::{self, Signed, Statement};

/// A signed statement that does not hold up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadStatement {
    #[error("it is signed by key {found}, but names {declared} as its signer")]
    WrongSigner { declared: String, found: String },
    #[error("its signer {0} is not a trusted issuer")]
    UntrustedIssuer(String),
    #[error("it breaks a rule of its format: {0}")]
    Invalid(String),
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
}

impl From<signed::Error> for BadStatement {
    fn from(e: signed::Error) -> Self {
        match e {
            signed::Error::WrongSigner { declared, found } => {
                BadStatement::WrongSigner { declared, found }
            }
            signed::Error::BadSignature(b) => BadStatement::BadSignature(b),
            signed::Error::Invalid(i) => BadStatement::Invalid(i.0),
            // Identity statements name their signer's key, so this does not arise; it
            // fails closed all the same.
            signed::Error::NoKeyNamed(who) => BadStatement::UntrustedIssuer(who),
        }
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
        let issuer = s.statement.issuer();
        let Some(key) = issuer.key().filter(|k| self.contains(k)) else {
            let who = issuer
                .key()
                .map_or_else(|| issuer.to_string(), PublicKey::fingerprint);
            return Err(BadStatement::UntrustedIssuer(who));
        };
        Ok(s.verify(key)?)
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
