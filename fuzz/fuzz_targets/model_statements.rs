//! Fuzzes the decoders of signed manifests, licenses, receipts and settlement statements
//! (binary and JSON forms): any input fails cleanly, and whatever decodes re-encodes to
//! the same bytes.
#![no_main]

use aura_core::encoding::{Decoder, Encoder};
use aura_core::signed::Statement;
use aura_model::license::SignedLicense;
use aura_model::manifest::{Manifest, SignedManifest};
use aura_model::receipt::SignedReceipt;
use aura_model::settle::SignedStatement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(data);
    if let Ok(m) = <Manifest as Statement>::decode(&mut d)
        && d.finish().is_ok()
    {
        let mut e = Encoder::new();
        Statement::encode(&m, &mut e);
        assert_eq!(e.finish(), data, "a decoded manifest encodes to its bytes");
    }
    let _ = SignedManifest::from_bytes(data);
    if let Ok(l) = SignedLicense::from_bytes(data) {
        assert_eq!(l.to_bytes().expect("a decoded license encodes"), data);
    }
    if let Ok(r) = SignedReceipt::from_bytes(data) {
        assert_eq!(r.to_bytes().expect("a decoded receipt encodes"), data);
    }
    if let Ok(s) = SignedStatement::from_bytes(data) {
        assert_eq!(s.to_bytes().expect("a decoded statement encodes"), data);
    }
    let _ = SignedLicense::from_json(data);
    let _ = SignedReceipt::from_json(data);
    let _ = SignedStatement::from_json(data);
});
