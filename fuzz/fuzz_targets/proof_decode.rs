//! Fuzzes the proof decoder and verifier: any input either fails cleanly or decodes to a
//! proof that re-encodes to the same bytes; verifying it never panics.
#![no_main]

use aura_core::PublicKey;
use aura_ledger::proof::Proof;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = Proof::decode(data) else { return };
    assert_eq!(proof.encode(), data, "decode then encode must be the identity");
    // The key from the vectors; a random proof must not verify, and must not panic.
    let key: PublicKey =
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c".parse().expect("valid key");
    let _ = match &proof {
        Proof::Inclusion(p) => p.verify(&key).is_ok(),
        Proof::Consistency(p) => p.verify(&key).is_ok(),
    };
});
