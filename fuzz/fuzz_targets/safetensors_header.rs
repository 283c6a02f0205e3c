//! Fuzzes the safetensors header reader: any input either fails cleanly or yields
//! tensors that tile the data exactly, each as long as its dtype and shape say.
#![no_main]

use aura_model::safetensors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = safetensors::parse_bytes(data) {
        let mut ranges: Vec<(u64, u64)> = h
            .tensors
            .iter()
            .map(|t| {
                let elements: u64 = t.shape.iter().product();
                let size = safetensors::dtype_size(&t.dtype).expect("a known dtype");
                assert_eq!(elements * size, t.length);
                (t.offset, t.offset + t.length)
            })
            .collect();
        ranges.sort_unstable();
        let mut at = h.data_offset;
        for (start, end) in ranges {
            assert_eq!(start, at, "a hole or an overlap");
            at = end;
        }
        assert_eq!(at, data.len() as u64);
    }
});
