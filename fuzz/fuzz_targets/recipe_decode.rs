//! Fuzzes procedural memory's recipe decoder (aura-kernel's `Recipe::decode`): it never
//! panics, a recipe it accepts decodes again from its canonical encoding to the same
//! encoding (one encoding per recipe), and expands with every parameter given.
#![no_main]

use std::collections::BTreeMap;

use aura_kernel::Recipe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Recipe::decode(data) {
        let canonical = r.canonical().expect("an accepted recipe encodes");
        let again = Recipe::decode(&canonical).expect("a canonical recipe decodes");
        assert_eq!(again.canonical().ok(), Some(canonical), "not canonical");
        let args: BTreeMap<String, String> =
            r.params.iter().map(|p| (p.clone(), "v".to_owned())).collect();
        assert_eq!(r.expand("c", &args).map(|c| c.len()).ok(), Some(r.calls.len()));
    }
});
