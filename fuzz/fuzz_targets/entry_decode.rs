//! Fuzzes the entry decoder: any input either fails cleanly or decodes to an entry that
//! re-encodes to exactly the same bytes.
#![no_main]

use aura_ledger::entry::Entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::decode(data) {
        let again = entry.encode().expect("a decoded entry re-encodes");
        assert_eq!(again, data, "decode then encode must be the identity");
    }
});
