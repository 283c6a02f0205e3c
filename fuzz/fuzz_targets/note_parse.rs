//! Fuzzes the C2SP text formats: signed notes, checkpoint texts, witness add-checkpoint
//! requests and verifier keys. Any input fails cleanly or parses to something that
//! encodes back to the same bytes; verifying a parsed note never panics.
#![no_main]

use aura_core::PublicKey;
use aura_ledger::note::{Note, TreeHead, VerifierKey, open_checkpoint};
use aura_ledger::witness::AddCheckpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The node key of the vectors (docs/ledger-vectors.json).
    let key: PublicKey =
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c".parse().expect("valid key");
    if let Ok(note) = Note::parse(data) {
        assert_eq!(note.encode().as_bytes(), data, "parse then encode must be the identity");
        if let Ok(head) = TreeHead::parse(note.text()) {
            assert_eq!(head.text(), note.text(), "a checkpoint text must round-trip");
        }
        let _ = note.verify(&VerifierKey::aura_node(key));
        let _ = open_checkpoint(data, &key);
    }
    if let Ok(request) = AddCheckpoint::parse(data) {
        assert_eq!(request.encode().as_bytes(), data, "a request must round-trip");
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(vkey) = VerifierKey::parse(text)
    {
        assert_eq!(VerifierKey::parse(&vkey.to_string()), Ok(vkey));
    }
});
