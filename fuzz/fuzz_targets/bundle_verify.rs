//! Fuzzes bundle reading and verification end to end: never panics, whatever the bytes.
//! The target trusts the key named in the bundle's own header, so that the fuzzer gets
//! past the key check into frames, chains, trees and signatures.
#![no_main]

use aura_ledger::bundle::{BundleReader, verify_bundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = BundleReader::new(data) else { return };
    let key = reader.header_key();
    let _ = verify_bundle(data, &key);
});
