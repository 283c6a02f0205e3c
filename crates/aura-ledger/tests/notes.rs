//! Signed notes (c2sp.org/signed-note), checkpoint notes (c2sp.org/tlog-checkpoint) and
//! cosignatures (c2sp.org/tlog-cosignature): checked against the reference
//! implementation's published example (Go's golang.org/x/mod/sumdb/note), the specs'
//! formulas written out here, and tampering.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use aura_core::door::SeededEntropy;
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{PublicKey, Timestamp};
use aura_ledger::note::{
    self, KeyType, Note, NoteError, NoteSignature, TreeHead, VerifierKey, open_checkpoint,
};
use aura_ledger::{Checkpoint, SignedCheckpoint};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The example in the documentation of Go's `golang.org/x/mod/sumdb/note`, the
/// reference implementation: a signer key, its verifier key and a note it signed.
const GO_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const GO_SIGNATURE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";

fn go_signer() -> Signer {
    let b64 = GO_SKEY.splitn(5, '+').nth(4).unwrap();
    let raw = BASE64.decode(b64).unwrap();
    assert_eq!(raw[0], 0x01, "algorithm byte: Ed25519");
    Signer::from_seed_bytes("go", &raw[1..].try_into().unwrap()).unwrap()
}

#[test]
fn the_key_id_is_the_specs_formula() {
    // c2sp.org/signed-note: key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte
    // Ed25519 public key)[:4], big-endian. Written out here byte by byte, and checked
    // against the key id in Go's published verifier key, c74f20a3.
    let key = go_signer().public_key();
    let mut preimage = b"PeterNeumann".to_vec();
    preimage.push(0x0a);
    preimage.push(0x01);
    preimage.extend_from_slice(&key.to_bytes());
    let digest = Hash::sha256(&preimage);
    assert_eq!(hex::encode(&digest.0[..4]), "c74f20a3");
    assert_eq!(
        note::key_id("PeterNeumann", &[0x01], &key.to_bytes()),
        0xc74f20a3
    );
    // The cosignature/v1 key id uses type byte 0x04 (c2sp.org/tlog-cosignature).
    let mut preimage = b"witness.example/w1".to_vec();
    preimage.extend_from_slice(&[0x0a, 0x04]);
    preimage.extend_from_slice(&key.to_bytes());
    let id = u32::from_be_bytes(Hash::sha256(&preimage).0[..4].try_into().unwrap());
    let w = VerifierKey::new("witness.example/w1", KeyType::Cosignature, key).unwrap();
    assert_eq!(w.key_id(), id);
}

#[test]
fn the_reference_implementations_example_note_verifies_and_is_reproduced() {
    let vkey = VerifierKey::parse(GO_VKEY).unwrap();
    assert_eq!(vkey.name, "PeterNeumann");
    assert_eq!(vkey.to_string(), GO_VKEY);
    assert_eq!(vkey.key, go_signer().public_key());
    let msg = format!("{GO_TEXT}\n{GO_SIGNATURE}\n");
    let parsed = Note::parse(msg.as_bytes()).unwrap();
    assert_eq!(parsed.text(), GO_TEXT);
    parsed.verify(&vkey).unwrap();
    assert_eq!(parsed.encode(), msg);
    // Ed25519 is deterministic: signing Go's text with Go's key gives Go's line.
    let sig = note::sign(GO_TEXT, "PeterNeumann", &go_signer()).unwrap();
    assert_eq!(sig.line(), GO_SIGNATURE);
    // Another name, same key: an unknown key, so the note has no verifiable signature.
    let other = VerifierKey::new("PeterNeumann2", KeyType::Ed25519, vkey.key).unwrap();
    assert!(matches!(
        parsed.verify(&other),
        Err(NoteError::Unsigned { .. })
    ));
    // A changed text no longer verifies.
    let changed = msg.replacen("problem,", "problem;", 1);
    assert!(matches!(
        Note::parse(changed.as_bytes()).unwrap().verify(&vkey),
        Err(NoteError::BadSignature { .. })
    ));
}

#[test]
fn verifier_keys_with_a_wrong_id_type_or_size_are_refused() {
    let raw = BASE64
        .decode(GO_VKEY.splitn(3, '+').nth(2).unwrap())
        .unwrap();
    for bad in [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW".to_owned(),
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW".to_owned(),
        "Peter+Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW".to_owned(),
        "PeterNeumann+c74f20a3".to_owned(),
        format!(
            "PeterNeumann+c74f20a3+{}",
            BASE64.encode([&[0x02][..], &raw[1..]].concat())
        ),
        format!("PeterNeumann+c74f20a3+{}", BASE64.encode(&raw[..32])),
    ] {
        assert!(VerifierKey::parse(&bad).is_err(), "{bad}");
    }
}

fn node() -> Signer {
    Signer::ephemeral("node", &SeededEntropy::new(11)).unwrap()
}

fn checkpoint(signer: &Signer, size: u64, seconds: u64) -> SignedCheckpoint {
    Checkpoint {
        node: signer.public_key().node_id(),
        tree_size: size,
        root: Hash::sha256(&size.to_be_bytes()),
        time: Timestamp::from_nanos(seconds * 1_000_000_000 + 123),
    }
    .sign(signer)
}

#[test]
fn an_aura_checkpoint_note_is_a_standard_checkpoint_and_converts_back_exactly() {
    let signer = node();
    let key = signer.public_key();
    let cp = checkpoint(&signer, 20852163, 1_790_000_000);
    let n = note::checkpoint_note(&cp, &signer).unwrap();
    let text = n.text().to_owned();
    let head = TreeHead::parse(&text).unwrap();
    assert_eq!(head.origin, format!("aura.node/{}", key.node_id()));
    assert_eq!(
        (head.size, head.root, head.extensions.len()),
        (20852163, cp.checkpoint.root, 0)
    );
    // A plain signed-note verifier with the node's verifier key accepts it, ignoring
    // Aura's own line (a key it does not know).
    let vkey = VerifierKey::parse(&VerifierKey::aura_node(key).to_string()).unwrap();
    Note::parse(n.encode().as_bytes())
        .unwrap()
        .verify(&vkey)
        .unwrap();
    // Aura reads the exact binary checkpoint back, time and signature included.
    let opened = open_checkpoint(n.encode().as_bytes(), &key).unwrap();
    assert_eq!(opened.checkpoint, Some(cp));
    assert_eq!(opened.head, head);
}

#[test]
fn every_byte_of_a_checkpoint_note_is_protected() {
    let signer = node();
    let key = signer.public_key();
    let cp = checkpoint(&signer, 37, 1_790_000_000);
    let bytes = note::checkpoint_note(&cp, &signer)
        .unwrap()
        .encode()
        .into_bytes();
    for i in 0..bytes.len() {
        for delta in [0x01u8, 0x20] {
            let mut b = bytes.clone();
            b[i] ^= delta;
            if let Ok(opened) = open_checkpoint(&b, &key) {
                // Only a change that leaves Aura's line unreadable as Aura's line (its
                // name or key id) can pass, and then nothing it said was believed.
                assert_eq!(opened.head.size, 37, "byte {i}");
                assert_eq!(opened.head.root, cp.checkpoint.root, "byte {i}");
                assert_eq!(opened.checkpoint, None, "byte {i} changed the checkpoint");
            }
        }
    }
    // Another node's key: another origin.
    let other = Signer::ephemeral("node", &SeededEntropy::new(12)).unwrap();
    assert!(matches!(
        open_checkpoint(&bytes, &other.public_key()),
        Err(NoteError::WrongOrigin { .. })
    ));
}

#[test]
fn cosignatures_follow_tlog_cosignature_v1() {
    let signer = node();
    let witness = Signer::ephemeral("witness", &SeededEntropy::new(13)).unwrap();
    let cp = checkpoint(&signer, 5, 1_790_000_000);
    let mut n = note::checkpoint_note(&cp, &signer).unwrap();
    let sig = note::cosign(n.text(), 1_790_000_100, "witness.example/w1", &witness).unwrap();
    // The signed message, per the spec: two header lines, then the checkpoint text.
    let message = format!("cosignature/v1\ntime 1790000100\n{}", n.text());
    assert_eq!(sig.signature[..8], 1_790_000_100u64.to_be_bytes());
    witness
        .public_key()
        .verify(
            message.as_bytes(),
            &aura_core::Signature(sig.signature[8..].try_into().unwrap()),
        )
        .unwrap();
    n.add_signature(sig);
    let w = VerifierKey::new(
        "witness.example/w1",
        KeyType::Cosignature,
        witness.public_key(),
    )
    .unwrap();
    let parsed = Note::parse(n.encode().as_bytes()).unwrap();
    assert_eq!(parsed.verify(&w).unwrap(), Some(1_790_000_100));
    // The node's own verification ignores the cosignature.
    open_checkpoint(n.encode().as_bytes(), &signer.public_key()).unwrap();
    // A cosignature moved to another checkpoint does not verify.
    let other = note::checkpoint_note(&checkpoint(&signer, 6, 1_790_000_001), &signer).unwrap();
    let moved = NoteSignature::parse_line(&parsed.signatures[2].line()).unwrap();
    assert!(w.verify(other.text(), &moved).is_err());
    // A time over 2^63 - 1 is refused.
    assert!(note::cosign(n.text(), 1 << 63, "w", &witness).is_err());
}

#[test]
fn a_note_over_the_size_limit_or_with_too_many_signatures_is_refused() {
    let key = PublicKey::from_bytes(&node().public_key().to_bytes()).unwrap();
    let line = NoteSignature {
        name: "x".into(),
        key_id: 1,
        signature: vec![0; 64],
    }
    .line();
    let many = format!("t\n\n{}", format!("{line}\n").repeat(101));
    assert!(matches!(
        Note::parse(many.as_bytes()),
        Err(NoteError::TooManySignatures)
    ));
    let huge = format!("{}\n\n{line}\n", "a".repeat(note::MAX_NOTE_LEN));
    assert!(matches!(
        Note::parse(huge.as_bytes()),
        Err(NoteError::TooLarge(_))
    ));
    assert!(open_checkpoint(huge.as_bytes(), &key).is_err());
}
