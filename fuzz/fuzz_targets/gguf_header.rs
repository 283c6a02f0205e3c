//! Fuzzes the GGUF header reader: any input either fails cleanly or yields tensors that
//! all lie inside the input, aligned and without overlapping.
#![no_main]

use aura_model::gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = gguf::parse_bytes(data) {
        assert!(h.data_offset <= data.len() as u64);
        let mut ranges: Vec<(u64, u64)> = h
            .tensors
            .iter()
            .map(|t| (t.offset, t.offset + t.length))
            .collect();
        ranges.sort_unstable();
        for r in &ranges {
            assert!(r.0 >= h.data_offset && r.1 <= data.len() as u64);
            assert_eq!((r.0 - h.data_offset) % h.alignment, 0);
        }
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "tensors overlap");
        }
    }
});
