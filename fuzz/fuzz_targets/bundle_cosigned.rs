//! Fuzzes verification of bundles with cosignatures (version 3) and of tree heads known
//! from elsewhere: never panics, whatever the frames say. Like `bundle_verify` it trusts
//! the key in the bundle's own header, and it trusts the witness of the vectors, so the
//! fuzzer reaches cosignature lines, their checks, and the cut-back and fork checks.
#![no_main]

use aura_core::hash::Hash;
use aura_ledger::bundle::{BundleReader, Expect, verify_bundle_with};
use aura_ledger::note::VerifierKey;
use aura_ledger::verify::KnownHead;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = BundleReader::new(data) else { return };
    let key = reader.header_key();
    let witness = VerifierKey::parse(
        "witness.example/w1+24b5d9fe+BP0XJDhaoMdbZPt4zWAvodmR/ev3axPFjtcC6sg16fYY",
    );
    let expect = Expect {
        witnesses: vec![witness.expect("the vectors' witness key")],
        heads: vec![KnownHead {
            tree_size: (data.len() % 7) as u64,
            root: Hash::sha256(data),
            source: "a head from the fuzzer".into(),
        }],
    };
    let _ = verify_bundle_with(data, &key, &expect);
});
