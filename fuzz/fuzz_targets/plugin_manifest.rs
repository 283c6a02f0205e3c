//! Fuzzes the plugin manifest's readers (aura-plugin, without its runtime): the canonical
//! binary decoder and the signed JSON form of `plugin.json` never panic, and whatever the
//! binary decoder accepts encodes back to exactly the same bytes (one encoding per
//! manifest).
#![no_main]

use aura_core::signed::{Signed, Statement as _};
use aura_plugin::PluginManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = PluginManifest::from_bytes(data) {
        assert_eq!(m.to_bytes().ok().as_deref(), Some(data), "not canonical");
    }
    if let Ok(signed) = Signed::<PluginManifest>::from_json(data) {
        let _ = signed.verify_signature();
    }
});
