//! Signed statements: the one rule for what a signer signs, and [`Signed<T>`], the one
//! type that carries a statement with its signature.
//!
//! Everything Aura signs with an Ed25519 key other than a ledger checkpoint is a
//! [`Statement`]: credentials, execution tokens and approvals (aura-identity), model
//! manifests, licenses, receipts and settlement statements (aura-model). Each has a
//! canonical binary encoding (big-endian, length-prefixed, see [`crate::encoding`]) and a
//! kind naming its format and version, like `credential/v1`. The signer signs
//!
//! ```text
//! "aura/statement/v1\0" || kind || 0x00 || encoding
//! ```
//!
//! (the first part is [`Domain::Statement`]'s tag). The kind keeps one kind of statement
//! from being passed off as another even if two encodings happened to coincide; a format
//! that changes its encoding changes its kind (an approval of version 1 is signed as
//! `approval/v1`, one of version 2 as `approval/v2`). Signatures are checked with the strict
//! rules of RFC 8032 (`verify_strict`: no malleable or small-order signatures).
//!
//! The binary form of a signed statement is its encoding followed by the 64-byte signature;
//! its JSON form is `{"<field>": {…}, "signature": "<128 hex digits>"}` where the field is
//! `statement` unless the format named it otherwise first (receipts say `receipt`,
//! licenses `license`), with a `format` member too for statements kept as files of their
//! own (licenses: `"format": "aura-license/v1"`). The signature covers the binary encoding, never the JSON, so the
//! JSON may be re-serialised freely; [`Signed::to_json`] writes it as RFC 8785 canonical
//! JSON all the same, so that equal statements give equal bytes wherever they are stored.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::{DecodeError, Decoder, Encoder};
use crate::hash::{Domain, Hash};
use crate::id::NodeId;
use crate::jcs;
use crate::keystore::Signer;
use crate::sign::{BadSignature, PublicKey, Signature};

/// The bytes a signer signs for a statement of `kind` whose canonical encoding is
/// `encoding`: `Domain::Statement`'s tag, the kind, a NUL byte, the encoding.
pub fn signing_message(kind: &str, encoding: &[u8]) -> Vec<u8> {
    let tag = Domain::Statement.tag();
    let mut msg = Vec::with_capacity(tag.len() + kind.len() + 1 + encoding.len());
    msg.extend_from_slice(tag);
    msg.extend_from_slice(kind.as_bytes());
    msg.push(0);
    msg.extend_from_slice(encoding);
    msg
}

/// Whose key must sign a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer<'a> {
    /// The statement names the key itself (a credential's issuer, an approval's approver,
    /// a manifest's publisher, a license's licensor).
    Key(&'a PublicKey),
    /// The statement names a node; the key is that node's, the one its id derives from
    /// (receipts and settlement statements).
    Node(NodeId),
}

impl Issuer<'_> {
    /// Whether `key` is the key this names.
    pub fn admits(&self, key: &PublicKey) -> bool {
        match self {
            Issuer::Key(k) => *k == key,
            Issuer::Node(n) => key.node_id() == *n,
        }
    }

    /// The key, when the statement names one.
    pub fn key(&self) -> Option<&PublicKey> {
        match self {
            Issuer::Key(k) => Some(k),
            Issuer::Node(_) => None,
        }
    }
}

impl fmt::Display for Issuer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Issuer::Key(k) => write!(f, "key {}", k.fingerprint()),
            Issuer::Node(n) => write!(f, "node {n}"),
        }
    }
}

/// A statement breaks a rule of its format that its encoding cannot express (a count out
/// of range, lists out of order).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Something that can be signed.
pub trait Statement: Sized {
    /// The kind of the current version of the format, e.g. `credential/v1`.
    const KIND: &'static str;

    /// The name of the statement beside its signature in the JSON form.
    const FIELD: &'static str = "statement";

    /// For a statement kept as a file of its own (a license), the name of the file format,
    /// carried in the JSON form as a `format` member and required when reading it.
    const FORMAT: Option<&'static str> = None;

    /// The kind this statement is signed under: [`Statement::KIND`], unless the statement
    /// is of an older version that is still read (an approval of version 1).
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    /// Whose key must sign it.
    fn issuer(&self) -> Issuer<'_>;

    /// The format's rules beyond what the encoding expresses. Checked before a statement
    /// is encoded, so that nothing invalid is ever signed or written.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }

    /// Writes the canonical encoding of a valid statement.
    fn encode(&self, e: &mut Encoder);

    /// Reads what [`Statement::encode`] wrote, refusing anything that does not validate.
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError>;

    /// Reads a canonical encoding that must be the whole of `bytes`.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new(bytes);
        let statement = Self::decode(&mut d)?;
        d.finish()?;
        Ok(statement)
    }

    /// The canonical encoding.
    fn to_bytes(&self) -> Result<Vec<u8>, Invalid> {
        self.validate()?;
        let mut e = Encoder::new();
        self.encode(&mut e);
        Ok(e.finish())
    }

    /// The bytes the signer signs.
    fn signing_message(&self) -> Result<Vec<u8>, Invalid> {
        Ok(signing_message(self.kind(), &self.to_bytes()?))
    }

    /// A stable digest of the statement (not of its signature): the tagged hash of the
    /// signing message.
    fn digest(&self) -> Result<Hash, Invalid> {
        Ok(Hash::tagged(Domain::Statement, &self.signing_message()?))
    }
}

/// A signed statement that does not hold up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("it is signed by key {found}, but names {declared} as its signer")]
    WrongSigner { declared: String, found: String },
    #[error("it names {0} as its signer; check it with that node's key")]
    NoKeyNamed(String),
    #[error("it breaks a rule of its format: {0}")]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
}

/// Why the JSON form of a signed statement was refused.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("not a signed statement in JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the statement breaks a rule of its format: {0}")]
    Invalid(#[from] Invalid),
}

/// A statement and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<T> {
    pub statement: T,
    pub signature: Signature,
}

impl<T: Statement> Signed<T> {
    /// Signs `statement` with `signer`, whose key must be the one the statement names.
    pub fn sign(statement: T, signer: &Signer) -> Result<Self, Error> {
        let key = signer.public_key();
        let issuer = statement.issuer();
        if !issuer.admits(&key) {
            return Err(Error::WrongSigner {
                declared: issuer.to_string(),
                found: key.fingerprint(),
            });
        }
        let signature = signer.sign(&statement.signing_message()?);
        Ok(Signed {
            statement,
            signature,
        })
    }

    /// Checks the signature under `key`, which must be the key the statement names (for a
    /// statement naming a node: that node's key). Whether the key is trusted is the
    /// caller's question.
    pub fn verify(&self, key: &PublicKey) -> Result<(), Error> {
        verify_encoding(
            &self.statement,
            &self.statement.to_bytes()?,
            &self.signature,
            key,
        )
    }

    /// Checks the signature under the key the statement names itself.
    pub fn verify_signature(&self) -> Result<(), Error> {
        match self.statement.issuer() {
            Issuer::Key(key) => self.verify(key),
            other => Err(Error::NoKeyNamed(other.to_string())),
        }
    }

    /// The binary form: the canonical encoding, then the signature.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Invalid> {
        let mut out = self.statement.to_bytes()?;
        out.extend_from_slice(&self.signature.0);
        Ok(out)
    }

    /// Reads a signed statement from the front of `d`.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let statement = T::decode(d)?;
        let signature = Signature(d.array("signature")?);
        Ok(Signed {
            statement,
            signature,
        })
    }

    /// Reads the binary form, which must be the whole of `bytes`. The signature is not
    /// checked here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new(bytes);
        let signed = Self::decode(&mut d)?;
        d.finish()?;
        Ok(signed)
    }
}

impl<T: Statement + Serialize> Signed<T> {
    /// The JSON form, as RFC 8785 canonical JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, jcs::Error> {
        jcs::to_vec(self)
    }
}

impl<T: Statement + DeserializeOwned> Signed<T> {
    /// Reads the JSON form (in any member order), refusing unknown members and statements
    /// that break their format's rules. The signature is not checked here.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        let signed: Signed<T> = serde_json::from_slice(bytes)?;
        signed.statement.validate()?;
        Ok(signed)
    }
}

/// Checks `signature` over `encoding`, the canonical encoding of `statement` exactly as it
/// was read, under `key`, which must be the key the statement names. For callers that keep
/// the bytes they read (a package's manifest) and need not encode the statement again.
pub fn verify_encoding<T: Statement>(
    statement: &T,
    encoding: &[u8],
    signature: &Signature,
    key: &PublicKey,
) -> Result<(), Error> {
    let issuer = statement.issuer();
    if !issuer.admits(key) {
        return Err(Error::WrongSigner {
            declared: issuer.to_string(),
            found: key.fingerprint(),
        });
    }
    key.verify(&signing_message(statement.kind(), encoding), signature)?;
    Ok(())
}

impl<T: Statement + Serialize> Serialize for Signed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("Signed", 2 + usize::from(T::FORMAT.is_some()))?;
        if let Some(format) = T::FORMAT {
            out.serialize_field("format", format)?;
        }
        out.serialize_field(T::FIELD, &self.statement)?;
        out.serialize_field("signature", &self.signature)?;
        out.end()
    }
}

impl<'de, T: Statement + Deserialize<'de>> Deserialize<'de> for Signed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SignedVisitor<T>(PhantomData<T>);

        impl<'de, T: Statement + Deserialize<'de>> Visitor<'de> for SignedVisitor<T> {
            type Value = Signed<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an object with `{}` and `signature`", T::FIELD)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Signed<T>, A::Error> {
                let mut statement = None;
                let mut signature = None;
                let mut format: Option<String> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "format" && T::FORMAT.is_some() {
                        if format.is_some() {
                            return Err(de::Error::duplicate_field("format"));
                        }
                        format = Some(map.next_value()?);
                    } else if key == T::FIELD {
                        if statement.is_some() {
                            return Err(de::Error::duplicate_field(T::FIELD));
                        }
                        statement = Some(map.next_value()?);
                    } else if key == "signature" {
                        if signature.is_some() {
                            return Err(de::Error::duplicate_field("signature"));
                        }
                        signature = Some(map.next_value()?);
                    } else {
                        return Err(de::Error::custom(format!(
                            "unknown field `{key}`, expected `{}` or `signature`",
                            T::FIELD
                        )));
                    }
                }
                if let Some(want) = T::FORMAT {
                    match format {
                        None => return Err(de::Error::missing_field("format")),
                        Some(f) if f != want => {
                            return Err(de::Error::custom(format!(
                                "unknown format `{f}` (this build reads `{want}`)"
                            )));
                        }
                        Some(_) => {}
                    }
                }
                Ok(Signed {
                    statement: statement.ok_or_else(|| de::Error::missing_field(T::FIELD))?,
                    signature: signature.ok_or_else(|| de::Error::missing_field("signature"))?,
                })
            }
        }

        d.deserialize_map(SignedVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::SeededEntropy;
    use crate::encoding::DecodeErrorKind;

    /// A statement for the tests: a note by a key, or a tally by a node.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Note {
        text: String,
        by: PublicKey,
    }

    impl Statement for Note {
        const KIND: &'static str = "test-note/v1";

        fn issuer(&self) -> Issuer<'_> {
            Issuer::Key(&self.by)
        }

        fn validate(&self) -> Result<(), Invalid> {
            if self.text.len() > 16 {
                return Err(Invalid("the text is longer than 16 bytes".into()));
            }
            Ok(())
        }

        fn encode(&self, e: &mut Encoder) {
            e.u8(self.text.len() as u8)
                .raw(self.text.as_bytes())
                .raw(&self.by.to_bytes());
        }

        fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            let n = d.u8("text length")?;
            let text = String::from_utf8(d.take("text", n.into())?.to_vec())
                .map_err(|_| d.invalid("text", "is not UTF-8"))?;
            let by = PublicKey::from_bytes(&d.array("by")?)
                .map_err(|_| d.invalid("by", "is not a key"))?;
            let note = Note { text, by };
            note.validate().map_err(|_| {
                d.error(DecodeErrorKind::Invalid {
                    field: "text",
                    reason: "too long",
                })
            })?;
            Ok(note)
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Tally {
        node: NodeId,
        n: u64,
    }

    impl Statement for Tally {
        const KIND: &'static str = "test-tally/v1";
        const FIELD: &'static str = "tally";

        fn issuer(&self) -> Issuer<'_> {
            Issuer::Node(self.node)
        }

        fn encode(&self, e: &mut Encoder) {
            e.raw(self.node.as_bytes()).u64(self.n);
        }

        fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
            Ok(Tally {
                node: NodeId::from_bytes(d.array("node")?),
                n: d.u64("n")?,
            })
        }
    }

    fn key(seed: u64) -> Signer {
        Signer::ephemeral("k", &SeededEntropy::new(seed)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_signing_message_is_tag_kind_nul_encoding() {
        let msg = signing_message("model-license/v1", b"xyz");
        assert_eq!(msg, b"aura/statement/v1\0model-license/v1\0xyz");
        assert_ne!(msg, signing_message("inference-receipt/v1", b"xyz"));
    }

    #[test]
    fn signing_verifying_and_both_forms() {
        let k = key(1);
        let note = Note {
            text: "hello".into(),
            by: k.public_key(),
        };
        let signed = Signed::sign(note.clone(), &k).unwrap();
        signed.verify_signature().unwrap();
        signed.verify(&k.public_key()).unwrap();
        let bytes = signed.to_bytes().unwrap();
        assert_eq!(Signed::<Note>::from_bytes(&bytes).unwrap(), signed);
        let json = signed.to_json().unwrap();
        assert!(
            json.starts_with(b"{\"signature\":\""),
            "{}",
            String::from_utf8_lossy(&json)
        );
        assert_eq!(Signed::<Note>::from_json(&json).unwrap(), signed);
        // Another key is not the signer the note names.
        let other = key(2);
        assert!(matches!(
            Signed::sign(note, &other),
            Err(Error::WrongSigner { .. })
        ));
        assert!(matches!(
            signed.verify(&other.public_key()),
            Err(Error::WrongSigner { .. })
        ));
    }

    #[test]
    fn an_invalid_statement_is_never_signed_or_written() {
        let k = key(1);
        let long = Note {
            text: "x".repeat(17),
            by: k.public_key(),
        };
        assert!(matches!(
            Signed::sign(long.clone(), &k),
            Err(Error::Invalid(_))
        ));
        let forged = Signed {
            statement: long,
            signature: Signature([0; 64]),
        };
        assert!(forged.to_bytes().is_err());
        assert!(matches!(forged.verify_signature(), Err(Error::Invalid(_))));
        let json = serde_json::to_vec(&forged).unwrap();
        assert!(matches!(
            Signed::<Note>::from_json(&json),
            Err(JsonError::Invalid(_))
        ));
    }

    #[test]
    fn any_change_is_detected() {
        let k = key(1);
        let signed = Signed::sign(
            Note {
                text: "hello".into(),
                by: k.public_key(),
            },
            &k,
        )
        .unwrap();
        let mut edited = signed.clone();
        edited.statement.text = "hellp".into();
        assert!(matches!(
            edited.verify_signature(),
            Err(Error::BadSignature(_))
        ));
        let bytes = signed.to_bytes().unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            if let Ok(t) = Signed::<Note>::from_bytes(&b) {
                assert!(t.verify_signature().is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn a_statement_naming_a_node_is_checked_with_that_nodes_key() {
        let k = key(3);
        let tally = Tally {
            node: k.public_key().node_id(),
            n: 7,
        };
        let signed = Signed::sign(tally.clone(), &k).unwrap();
        signed.verify(&k.public_key()).unwrap();
        assert!(matches!(
            signed.verify_signature(),
            Err(Error::NoKeyNamed(_))
        ));
        assert!(matches!(
            signed.verify(&key(4).public_key()),
            Err(Error::WrongSigner { .. })
        ));
        assert!(Signed::sign(tally, &key(4)).is_err());
        // Its JSON form names it as its format does.
        let json = String::from_utf8(signed.to_json().unwrap()).unwrap();
        assert!(json.contains("\"tally\":{\"n\":7,"), "{json}");
    }

    #[test]
    fn the_json_form_refuses_unknown_missing_and_repeated_members() {
        let k = key(1);
        let signed = Signed::sign(
            Note {
                text: "hi".into(),
                by: k.public_key(),
            },
            &k,
        )
        .unwrap();
        let v = serde_json::to_value(&signed).unwrap();
        let sig = v["signature"].clone();
        let st = v["statement"].clone();
        let cases = [
            serde_json::json!({"statement": st, "signature": sig, "extra": 1}),
            serde_json::json!({"statement": st}),
            serde_json::json!({"signature": sig}),
            serde_json::json!({"note": st, "signature": sig}),
        ];
        for c in cases {
            assert!(
                Signed::<Note>::from_json(&serde_json::to_vec(&c).unwrap()).is_err(),
                "{c}"
            );
        }
        let twice = format!("{{\"statement\":{st},\"statement\":{st},\"signature\":{sig}}}");
        assert!(Signed::<Note>::from_json(twice.as_bytes()).is_err());
    }
}
