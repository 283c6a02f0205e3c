//! Signed notes and transparency-log checkpoints in the C2SP formats
//! (c2sp.org/signed-note, c2sp.org/tlog-checkpoint, c2sp.org/tlog-cosignature), the text
//! formats Go's checksum database, Sigsum, Tessera and the public witness network use.
//!
//! A signed note is a text ending in a newline, a blank line, and signature lines
//! `— <key name> <base64(4-byte key id || signature)>`. A checkpoint note's text is
//! `<origin>\n<tree size>\n<base64 root>\n`. Aura publishes its signed checkpoints in
//! this form too, so that existing tools and witnesses can check Aura's tree heads:
//!
//! ```text
//! aura.node/node_67da16fgpbpme3drkjdjjtf5ne
//! 3
//! uChYShC2FFZ1bvznTGfA+TAAyx2Hy/up0SFZF1fcewg=
//!
//! — aura.node/node_67da16fgpbpme3drkjdjjtf5ne <key id 0x01 || Ed25519 over the text>
//! — aura.node/node_67da16fgpbpme3drkjdjjtf5ne <key id 0xff… || time || Aura's checkpoint signature>
//! ```
//!
//! The first signature line is a plain Ed25519 note signature that any signed-note
//! verifier checks with the node's verifier key. The second carries what the note text
//! leaves out, Aura's checkpoint time, with the node's signature over Aura's binary
//! checkpoint, so that the note converts back to the exact 129-byte
//! [`SignedCheckpoint`]; other verifiers ignore it as a signature by an unknown key.
//! docs/ledger.md ("Checkpoints as signed notes") is the specification.
//!
//! Parsing follows Go's `golang.org/x/mod/sumdb/note` (the reference implementation),
//! with two deliberate differences: base64 must be canonical, and every signature by a
//! known key is verified (Go skips a repeated one).

use std::fmt;

use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{NodeId, PublicKey, Signature, Timestamp};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::checkpoint::{Checkpoint, SignedCheckpoint};

/// The largest note accepted: room for 16 post-quantum cosignatures (the least the spec
/// asks verifiers to accept), small enough that a hostile input costs little.
pub const MAX_NOTE_LEN: usize = 64 * 1024;
/// The most signature lines accepted, as Go's implementation.
pub const MAX_SIGNATURES: usize = 100;

/// Signature type of a plain Ed25519 note signature (c2sp.org/signed-note).
pub const TYPE_ED25519: u8 = 0x01;
/// Signature type of a timestamped Ed25519 witness cosignature (c2sp.org/tlog-cosignature).
pub const TYPE_COSIGNATURE: u8 = 0x04;
/// The signature type of Aura's own checkpoint line: 0xff ("no byte assigned") followed
/// by a longer identifier, as the signed-note spec recommends for such types.
pub const TYPE_AURA_CHECKPOINT: &[u8] = b"\xffaura/ledger/checkpoint/v1";

const SIG_PREFIX: &str = "\u{2014} ";
const COSIGNATURE_HEADER: &str = "cosignature/v1\n";
/// A cosignature's timestamp must not exceed 2^63 - 1 (c2sp.org/tlog-cosignature).
const MAX_COSIGNATURE_TIME: u64 = i64::MAX as u64;

/// Why a note or a checkpoint text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the note is {0} bytes, more than the {MAX_NOTE_LEN} allowed")]
    TooLarge(usize),
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("malformed checkpoint text: {0}")]
    MalformedCheckpoint(&'static str),
    #[error("the note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("malformed verifier key: {0}")]
    MalformedKey(&'static str),
    #[error("the checkpoint's origin is `{found}`, expected `{expected}`")]
    WrongOrigin { expected: String, found: String },
    #[error("the signature by {name} does not verify")]
    BadSignature { name: String },
    #[error("the note carries no signature by {name}")]
    Unsigned { name: String },
    #[error("the key name `{0}` is not valid (empty, or with a space or '+')")]
    BadName(String),
}

/// Is `name` a valid key name: non-empty, with no Unicode space and no '+'?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+')
}

/// The key id of a key: the first four bytes, big-endian, of
/// `SHA-256(key name || 0x0A || signature type || public key)`.
pub fn key_id(name: &str, signature_type: &[u8], key: &[u8]) -> u32 {
    let mut data = Vec::with_capacity(name.len() + 1 + signature_type.len() + key.len());
    data.extend_from_slice(name.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(signature_type);
    data.extend_from_slice(key);
    let h = Hash::sha256(&data);
    u32::from_be_bytes([h.0[0], h.0[1], h.0[2], h.0[3]])
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// The signature bytes after the key id; their meaning depends on the key's type.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses one signature line, without its final newline.
    pub fn parse_line(line: &str) -> Result<NoteSignature, NoteError> {
        let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
            "a signature line does not start with `— `",
        ))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::Malformed("a signature line has no signature"))?;
        if !valid_name(name) {
            return Err(NoteError::Malformed(
                "a signature line's key name is not valid",
            ));
        }
        let raw = BASE64
            .decode(b64)
            .map_err(|_| NoteError::Malformed("a signature is not canonical base64"))?;
        if raw.len() < 5 {
            return Err(NoteError::Malformed("a signature is shorter than 5 bytes"));
        }
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            signature: raw[4..].to_vec(),
        })
    }

    /// The line, without its final newline.
    pub fn line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}", self.name, BASE64.encode(raw))
    }
}

/// A parsed signed note: its text and its signature lines, in order, none yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// A note with `text` (which must end in a newline and hold no control character but
    /// newlines) and no signatures yet.
    pub fn new(text: String) -> Result<Note, NoteError> {
        check_chars(&text)?;
        if !text.ends_with('\n') {
            return Err(NoteError::Malformed("the text does not end in a newline"));
        }
        Ok(Note {
            text,
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note. Nothing is verified: see [`Note::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge(bytes.len()));
        }
        let msg = std::str::from_utf8(bytes)
            .map_err(|_| NoteError::Malformed("the note is not UTF-8"))?;
        check_chars(msg)?;
        // The text is separated from the signatures by the last empty line.
        let split = msg
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, sigs) = (&msg[..=split], &msg[split + 2..]);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed(
                "the signatures do not end in a newline",
            ));
        }
        let lines: Vec<&str> = sigs[..sigs.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let signatures = lines
            .into_iter()
            .map(NoteSignature::parse_line)
            .collect::<Result<_, _>>()?;
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, with its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The note as bytes: text, blank line, signature lines.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1 + 128 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
            out.push('\n');
        }
        out
    }

    /// Adds a signature line, replacing an earlier one by the same key.
    pub fn add_signature(&mut self, sig: NoteSignature) {
        self.signatures
            .retain(|s| !(s.name == sig.name && s.key_id == sig.key_id));
        self.signatures.push(sig);
    }

    /// The signatures by `key`: those with its name and key id.
    pub fn signatures_by<'a>(
        &'a self,
        key: &'a VerifierKey,
    ) -> impl Iterator<Item = &'a NoteSignature> + 'a {
        self.signatures
            .iter()
            .filter(move |s| s.name == key.name && s.key_id == key.key_id())
    }

    /// Checks the note as a signed-note verifier trusting `key` does: every signature by
    /// the key must verify, and there must be at least one. Signatures by other keys
    /// are ignored. For a cosigner key, returns the latest cosignature time.
    pub fn verify(&self, key: &VerifierKey) -> Result<Option<u64>, NoteError> {
        let mut seen = false;
        let mut latest = None;
        for sig in self.signatures_by(key) {
            let time = key.verify(&self.text, sig)?;
            latest = latest.max(time);
            seen = true;
        }
        if seen {
            Ok(latest)
        } else {
            Err(NoteError::Unsigned {
                name: key.name.clone(),
            })
        }
    }
}

fn check_chars(s: &str) -> Result<(), NoteError> {
    if s.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed(
            "it holds a control character other than newline",
        ));
    }
    Ok(())
}

/// What kind of signatures a verifier key checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Plain Ed25519 note signatures (type 0x01): a log's key.
    Ed25519,
    /// Timestamped Ed25519 cosignatures (type 0x04): a witness's key.
    Cosignature,
}

impl KeyType {
    pub fn byte(self) -> u8 {
        match self {
            KeyType::Ed25519 => TYPE_ED25519,
            KeyType::Cosignature => TYPE_COSIGNATURE,
        }
    }
}

/// A named public key that checks note signatures: a log's key or a witness's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub kind: KeyType,
    pub key: PublicKey,
}

impl VerifierKey {
    pub fn new(name: &str, kind: KeyType, key: PublicKey) -> Result<VerifierKey, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadName(name.to_owned()));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            kind,
            key,
        })
    }

    /// The key of an Aura node's checkpoint notes: named by the node's origin.
    pub fn aura_node(key: PublicKey) -> VerifierKey {
        VerifierKey {
            name: origin(&key.node_id()),
            kind: KeyType::Ed25519,
            key,
        }
    }

    pub fn key_id(&self) -> u32 {
        key_id(&self.name, &[self.kind.byte()], &self.key.to_bytes())
    }

    /// Parses a verifier key, `<name>+<8 hex digits of key id>+<base64(type || key)>`,
    /// checking that the key id is the key's.
    pub fn parse(vkey: &str) -> Result<VerifierKey, NoteError> {
        let vkey = vkey.trim();
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey(
                "expected <name>+<key id>+<base64 key>",
            ));
        };
        if !valid_name(name) {
            return Err(NoteError::MalformedKey("the name is not valid"));
        }
        if id.len() != 8 {
            return Err(NoteError::MalformedKey("the key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id, 16)
            .map_err(|_| NoteError::MalformedKey("the key id is not 8 hex digits"))?;
        let raw = BASE64
            .decode(b64)
            .map_err(|_| NoteError::MalformedKey("the key is not base64"))?;
        let (kind, key) = match raw.split_first() {
            Some((&TYPE_ED25519, key)) => (KeyType::Ed25519, key),
            Some((&TYPE_COSIGNATURE, key)) => (KeyType::Cosignature, key),
            _ => {
                return Err(NoteError::MalformedKey(
                    "only Ed25519 (0x01) and cosignature/v1 (0x04) keys are supported",
                ));
            }
        };
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::MalformedKey("the Ed25519 key is not 32 bytes"))?;
        let key = PublicKey::from_bytes(&key)
            .map_err(|_| NoteError::MalformedKey("the Ed25519 key is not a curve point"))?;
        let parsed = VerifierKey {
            name: name.to_owned(),
            kind,
            key,
        };
        if parsed.key_id() != id {
            return Err(NoteError::MalformedKey(
                "the key id does not match the name and key",
            ));
        }
        Ok(parsed)
    }

    /// Checks one signature by this key over `text`. Returns the time of a cosignature.
    pub fn verify(&self, text: &str, sig: &NoteSignature) -> Result<Option<u64>, NoteError> {
        let bad = || NoteError::BadSignature {
            name: self.name.clone(),
        };
        if sig.name != self.name || sig.key_id != self.key_id() {
            return Err(bad());
        }
        match self.kind {
            KeyType::Ed25519 => {
                let s: [u8; 64] = sig.signature.as_slice().try_into().map_err(|_| bad())?;
                self.key
                    .verify(text.as_bytes(), &Signature(s))
                    .map_err(|_| bad())?;
                Ok(None)
            }
            KeyType::Cosignature => {
                if sig.signature.len() != 8 + 64 {
                    return Err(bad());
                }
                let (time, s) = sig.signature.split_at(8);
                let time = u64::from_be_bytes(time.try_into().map_err(|_| bad())?);
                let s: [u8; 64] = s.try_into().map_err(|_| bad())?;
                if time > MAX_COSIGNATURE_TIME {
                    return Err(bad());
                }
                self.key
                    .verify(&cosignature_message(text, time), &Signature(s))
                    .map_err(|_| bad())?;
                Ok(Some(time))
            }
        }
    }
}

impl fmt::Display for VerifierKey {
    /// The verifier key text, `<name>+<key id>+<base64(type || key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![self.kind.byte()];
        raw.extend_from_slice(&self.key.to_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id(),
            BASE64.encode(raw)
        )
    }
}

/// Signs `text` as a plain Ed25519 note signature by `signer` under `name`.
pub fn sign(text: &str, name: &str, signer: &Signer) -> Result<NoteSignature, NoteError> {
    let key = VerifierKey::new(name, KeyType::Ed25519, signer.public_key())?;
    Ok(NoteSignature {
        name: key.name.clone(),
        key_id: key.key_id(),
        signature: signer.sign(text.as_bytes()).0.to_vec(),
    })
}

/// The message a cosigner signs: `cosignature/v1\ntime <t>\n` then the checkpoint text.
pub fn cosignature_message(text: &str, time: u64) -> Vec<u8> {
    format!("{COSIGNATURE_HEADER}time {time}\n{text}").into_bytes()
}

/// A cosignature/v1 over a checkpoint's `text` at `time` (seconds since the epoch) by
/// `signer`, a witness named `name`.
pub fn cosign(
    text: &str,
    time: u64,
    name: &str,
    signer: &Signer,
) -> Result<NoteSignature, NoteError> {
    let key = VerifierKey::new(name, KeyType::Cosignature, signer.public_key())?;
    if time > MAX_COSIGNATURE_TIME {
        return Err(NoteError::Malformed("a cosignature time is over 2^63 - 1"));
    }
    let mut signature = time.to_be_bytes().to_vec();
    signature.extend_from_slice(&signer.sign(&cosignature_message(text, time)).0);
    Ok(NoteSignature {
        name: key.name.clone(),
        key_id: key.key_id(),
        signature,
    })
}

/// The text of a checkpoint note (c2sp.org/tlog-checkpoint): origin, tree size, root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Optional further lines; Aura writes none.
    pub extensions: Vec<String>,
}

impl TreeHead {
    pub fn new(origin: String, size: u64, root: Hash) -> TreeHead {
        TreeHead {
            origin,
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// Parses a checkpoint text: at least three non-empty lines, each ending in a newline.
    pub fn parse(text: &str) -> Result<TreeHead, NoteError> {
        let bad = NoteError::MalformedCheckpoint;
        let body = text
            .strip_suffix('\n')
            .ok_or(bad("it does not end in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("it has fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(bad("the origin is empty"));
        }
        let canonical = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size = size.parse::<u64>().ok().filter(|_| canonical).ok_or(bad(
            "the tree size is not a decimal number without leading zeros",
        ))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|r| Hash::from_slice(&r))
            .ok_or(bad("the root hash is not 32 bytes of canonical base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("an extension line is empty"));
        }
        Ok(TreeHead {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The checkpoint text.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root.0)
        );
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }
}

/// The origin line of an Aura node's checkpoints: `aura.node/<node id>`. The node id is
/// derived from the node's key, so no two nodes share an origin, and it needs no host
/// name (most nodes have none); the `aura.node/` prefix keeps it apart from real host
/// names and says what kind of log it is.
pub fn origin(node: &NodeId) -> String {
    format!("aura.node/{node}")
}

/// The checkpoint text of an Aura checkpoint (its time is not part of it).
pub fn checkpoint_text(cp: &Checkpoint) -> String {
    TreeHead::new(origin(&cp.node), cp.tree_size, cp.root).text()
}

fn aura_line_key_id(name: &str, key: &PublicKey) -> u32 {
    key_id(name, TYPE_AURA_CHECKPOINT, &key.to_bytes())
}

/// Publishes a signed checkpoint as a signed note, signed by the node's `signer`: the
/// standard Ed25519 line, then Aura's line carrying the time and the binary signature.
pub fn checkpoint_note(cp: &SignedCheckpoint, signer: &Signer) -> Result<Note, NoteError> {
    let key = VerifierKey::aura_node(signer.public_key());
    if key.key.node_id() != cp.checkpoint.node {
        return Err(NoteError::WrongOrigin {
            expected: origin(&cp.checkpoint.node),
            found: key.name,
        });
    }
    let mut note = Note::new(checkpoint_text(&cp.checkpoint))?;
    note.signatures.push(sign(note.text(), &key.name, signer)?);
    let mut aura = cp.checkpoint.time.as_nanos().to_be_bytes().to_vec();
    aura.extend_from_slice(&cp.signature.0);
    note.signatures.push(NoteSignature {
        key_id: aura_line_key_id(&key.name, &key.key),
        name: key.name,
        signature: aura,
    });
    Ok(note)
}

/// A checkpoint note verified under an Aura node's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub head: TreeHead,
    /// Aura's binary checkpoint, when the note carries Aura's line (the time is there).
    pub checkpoint: Option<SignedCheckpoint>,
    pub note: Note,
}

/// Opens a checkpoint note of the Aura node with `key`: the text must be a checkpoint
/// with the node's origin and no extension lines; the node's Ed25519 note signature must
/// verify; Aura's line, if there, must carry a valid binary signature of the same tree
/// head. Other signatures (cosignatures) are left for the caller.
pub fn open_checkpoint(bytes: &[u8], key: &PublicKey) -> Result<VerifiedCheckpoint, NoteError> {
    let note = Note::parse(bytes)?;
    let head = TreeHead::parse(note.text())?;
    let vkey = VerifierKey::aura_node(*key);
    if head.origin != vkey.name {
        return Err(NoteError::WrongOrigin {
            expected: vkey.name,
            found: head.origin,
        });
    }
    if !head.extensions.is_empty() {
        return Err(NoteError::MalformedCheckpoint(
            "an Aura checkpoint has no extension lines",
        ));
    }
    note.verify(&vkey)?;
    let aura_id = aura_line_key_id(&vkey.name, key);
    let mut checkpoint = None;
    for sig in &note.signatures {
        if sig.name != vkey.name || sig.key_id != aura_id {
            continue;
        }
        let bad = || NoteError::BadSignature {
            name: vkey.name.clone(),
        };
        if sig.signature.len() != 8 + 64 {
            return Err(bad());
        }
        let (time, s) = sig.signature.split_at(8);
        let cp = SignedCheckpoint {
            checkpoint: Checkpoint {
                node: key.node_id(),
                tree_size: head.size,
                root: head.root,
                time: Timestamp::from_nanos(u64::from_be_bytes(
                    time.try_into().map_err(|_| bad())?,
                )),
            },
            signature: Signature(s.try_into().map_err(|_| bad())?),
        };
        cp.verify(key).map_err(|_| bad())?;
        checkpoint = Some(cp);
    }
    Ok(VerifiedCheckpoint {
        head,
        checkpoint,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("example.com/log"));
        for bad in ["", "a b", "a+b", "a\u{a0}b", "a\tb"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn checkpoint_text_round_trips_and_refuses_non_canonical_forms() {
        let head = TreeHead::new("example.com/log".into(), 20852163, Hash::sha256(b"x"));
        assert_eq!(TreeHead::parse(&head.text()).unwrap(), head);
        let root = BASE64.encode(Hash::sha256(b"x").0);
        for bad in [
            format!("o\n01\n{root}\n"),
            format!("o\n\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n1\n{root}"),
            format!("o\n1\n{}\n", BASE64.encode([0u8; 31])),
            format!("\n1\n{root}\n"),
            format!("o\n1\n{root}\n\n"),
            "o\n1\n".to_owned(),
            format!("o\n18446744073709551616\n{root}\n"),
        ] {
            assert!(TreeHead::parse(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            TreeHead::parse(&format!("o\n0\n{root}\next\n"))
                .unwrap()
                .extensions,
            vec!["ext".to_owned()]
        );
    }

    #[test]
    fn malformed_notes_are_refused() {
        for bad in [
            &b"text\n"[..],
            b"text\n\n",
            b"text\n\n\xe2\x80\x94 name AAAAAAA=",
            b"text\n\n-- name AAAAAAAA\n",
            b"text\n\n\xe2\x80\x94 name AAAA\n",
            b"text\n\n\xe2\x80\x94 na+me AAAAAAAA\n",
            b"text\n\n\xe2\x80\x94 name AAAAAAA\n",
            b"te\x01xt\n\n\xe2\x80\x94 name AAAAAAAA\n",
            b"text\n\n\xe2\x80\x94 name AAAAAAAA\n\n",
            b"\xff\n\n\xe2\x80\x94 name AAAAAAAA\n",
        ] {
            assert!(
                Note::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let ok = "text\n\n\u{2014} name AAAAAAAA\n";
        assert_eq!(Note::parse(ok.as_bytes()).unwrap().encode(), ok);
    }
}
