//! A hardened reader for safetensors file headers.
//!
//! A safetensors file is an 8-byte little-endian header length `N`, `N` bytes of JSON
//! (an object mapping tensor names to `{"dtype", "shape", "data_offsets": [begin, end]}`,
//! plus an optional `"__metadata__"` object of strings), then the tensor data; offsets are
//! relative to the start of the data.
//!
//! Import reads headers to build a package's tensor→file map and to find which experts
//! live in which shard. The reader treats the file as hostile: the header length is
//! capped before anything is read ([`MAX_HEADER_LEN`]), the JSON is parsed with
//! serde_json's recursion limit, repeated keys and unknown fields are refused, sizes are
//! computed with checked arithmetic and must match the offsets, and the tensors must tile
//! the data exactly (no overlaps, no holes, nothing past the end), as the format requires.
//! It never panics (`fuzz/fuzz_targets/safetensors_header.rs`).

use std::collections::HashSet;
use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The largest header Aura reads (the format's reference implementation uses the same).
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;
const MAX_TENSORS: usize = 1_000_000;
const MAX_DIMS: usize = 8;
const MAX_NAME: usize = 1024;

/// One tensor's place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Absolute byte offset in the file.
    pub offset: u64,
    pub length: u64,
}

/// A parsed, checked header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Where tensor data starts: 8 + the header length.
    pub data_offset: u64,
    pub metadata: Vec<(String, String)>,
    /// Sorted by name.
    pub tensors: Vec<Tensor>,
}

impl Header {
    /// The dtype holding the most bytes (`"none"` for a file without tensors).
    pub fn main_dtype(&self) -> String {
        let mut bytes: Vec<(&str, u64)> = Vec::new();
        for t in &self.tensors {
            match bytes.iter_mut().find(|(n, _)| *n == t.dtype) {
                Some((_, b)) => *b = b.saturating_add(t.length),
                None => bytes.push((&t.dtype, t.length)),
            }
        }
        bytes
            .iter()
            .max_by_key(|(_, b)| *b)
            .map_or_else(|| "none".to_owned(), |(n, _)| (*n).to_owned())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a safetensors file: {0}")]
    Malformed(String),
    #[error("cannot read the file")]
    Io(#[source] std::io::Error),
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Malformed(reason.into())
}

/// Bytes per element of each dtype Aura accepts.
pub fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The header object, read key by key so that a repeated key is an error rather than
/// silently replacing the first.
struct RawHeader {
    metadata: Vec<(String, String)>,
    tensors: Vec<(String, RawTensor)>,
}

struct NoRepeats<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NoRepeats<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NoRepeats<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("key `{key}` is repeated")));
                    }
                    out.push((key, map.next_value()?));
                }
                Ok(NoRepeats(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a safetensors header object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut seen = HashSet::new();
                let mut metadata = None;
                let mut tensors = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("key `{key}` is repeated")));
                    }
                    if key == "__metadata__" {
                        metadata = Some(map.next_value::<NoRepeats<String>>()?.0);
                    } else {
                        if tensors.len() >= MAX_TENSORS {
                            return Err(de::Error::custom("too many tensors"));
                        }
                        tensors.push((key, map.next_value::<RawTensor>()?));
                    }
                }
                Ok(RawHeader {
                    metadata: metadata.unwrap_or_default(),
                    tensors,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses the header of a safetensors file of `file_len` bytes from `reader`
/// (positioned at its start).
pub fn parse(mut reader: impl Read, file_len: u64) -> Result<Header, Error> {
    let mut len = [0u8; 8];
    reader.read_exact(&mut len).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad("the file is shorter than 8 bytes"),
        _ => Error::Io(e),
    })?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_LEN {
        return Err(bad(format!(
            "the header length {n} is more than the {MAX_HEADER_LEN} bytes allowed"
        )));
    }
    let data_offset = 8 + n;
    if data_offset > file_len {
        return Err(bad(format!(
            "the header says it is {n} bytes, but the file is only {file_len} bytes"
        )));
    }
    // `n` is at most 100 MiB here.
    let mut json = vec![0u8; n as usize];
    reader.read_exact(&mut json).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad("the file ends inside its header"),
        _ => Error::Io(e),
    })?;
    let raw: RawHeader =
        serde_json::from_slice(&json).map_err(|e| bad(format!("header JSON: {e}")))?;
    let data_len = file_len - data_offset;

    let mut tensors = Vec::with_capacity(raw.tensors.len());
    for (name, t) in raw.tensors {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(bad(format!(
                "a tensor name is empty or longer than {MAX_NAME} bytes"
            )));
        }
        let size = dtype_size(&t.dtype)
            .ok_or_else(|| bad(format!("tensor `{name}` has unknown dtype `{}`", t.dtype)))?;
        if t.shape.len() > MAX_DIMS {
            return Err(bad(format!(
                "tensor `{name}` has more than {MAX_DIMS} dimensions"
            )));
        }
        let elements = t
            .shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| bad(format!("tensor `{name}` has too many elements")))?;
        let length = elements
            .checked_mul(size)
            .ok_or_else(|| bad(format!("tensor `{name}` is too large")))?;
        let [begin, end] = t.data_offsets;
        if end < begin || end - begin != length {
            return Err(bad(format!(
                "tensor `{name}`'s offsets [{begin}, {end}] do not hold its {length} bytes"
            )));
        }
        if end > data_len {
            return Err(bad(format!(
                "tensor `{name}` ends at {end}, past the {data_len} bytes of data"
            )));
        }
        tensors.push(Tensor {
            name,
            dtype: t.dtype,
            shape: t.shape,
            offset: data_offset + begin,
            length,
        });
    }

    // The tensors must tile the data: sorted by offset, each starts where the last ended,
    // and the last ends at the end of the file.
    tensors.sort_by_key(|t| (t.offset, t.length));
    let mut at = data_offset;
    for t in &tensors {
        if t.offset != at {
            return Err(bad(if t.offset < at {
                format!("tensor `{}` overlaps the tensor before it", t.name)
            } else {
                format!("there are unindexed bytes before tensor `{}`", t.name)
            }));
        }
        at += t.length;
    }
    if at != file_len {
        return Err(bad(format!(
            "{} bytes after the last tensor are not part of any tensor",
            file_len - at
        )));
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Header {
        data_offset,
        metadata: raw.metadata,
        tensors,
    })
}

/// [`parse`] over a whole file in memory.
pub fn parse_bytes(bytes: &[u8]) -> Result<Header, Error> {
    parse(bytes, bytes.len() as u64)
}

/// Writes small safetensors files for tests and benchmarks.
#[doc(hidden)]
pub mod write {
    /// The bytes of a safetensors file holding these `(name, dtype, shape)` tensors in
    /// order, with data derived from `seed`.
    pub fn safetensors(tensors: &[(&str, &str, Vec<u64>)], seed: u8) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut at = 0u64;
        for (name, dtype, shape) in tensors {
            let len = shape.iter().product::<u64>() * super::dtype_size(dtype).unwrap_or(1);
            header.insert(
                (*name).to_owned(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + len]}),
            );
            at += len;
        }
        let json = serde_json::to_vec(&header).unwrap_or_default();
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        out.extend((0..at).map(|j| (j as u8).wrapping_mul(29).wrapping_add(seed)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::write::safetensors;
    use super::*;
    use proptest::prelude::*;

    fn with_header(json: &str, data: usize) -> Vec<u8> {
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data));
        out
    }

    #[test]
    fn a_written_file_parses_back() {
        let bytes = safetensors(&[("b", "F32", vec![2, 3]), ("a", "BF16", vec![4])], 1);
        let h = parse_bytes(&bytes).unwrap();
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[0].name, "a");
        assert_eq!(h.tensors[0].length, 8);
        assert_eq!(h.tensors[1].offset, h.data_offset);
        assert_eq!(h.main_dtype(), "F32");
    }

    /// Hostile headers, each refused with a reason containing `expect`.
    #[test]
    fn hostile_headers_are_refused() {
        fn check(bytes: &[u8], expect: &str) {
            let err = parse_bytes(bytes).unwrap_err().to_string();
            assert!(err.contains(expect), "expected `{expect}`, got `{err}`");
        }
        check(b"\x01\0", "shorter than 8");
        check(&u64::MAX.to_le_bytes(), "more than the");
        check(&100u64.to_le_bytes(), "only 8 bytes");
        check(&with_header("[1,2]", 0), "header JSON");
        check(
            &with_header(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
            "repeated",
        );
        check(
            &with_header(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#,
                4,
            ),
            "unknown field",
        );
        check(
            &with_header(
                r#"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#,
                4,
            ),
            "unknown dtype",
        );
        check(
            &with_header(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                8,
            ),
            "do not hold",
        );
        check(
            &with_header(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#,
                4,
            ),
            "too many elements",
        );
        check(
            &with_header(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                2,
            ),
            "past the",
        );
        check(
            &with_header(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
                8,
            ),
            "overlaps",
        );
        check(
            &with_header(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                8,
            ),
            "unindexed",
        );
        check(
            &with_header(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                9,
            ),
            "not part of any tensor",
        );
        check(
            &with_header(r#"{"__metadata__":{"k":1}}"#, 0),
            "header JSON",
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        check(
            &with_header(&format!(r#"{{"a":{deep}}}"#), 0),
            "header JSON",
        );
    }

    #[test]
    fn metadata_and_empty_tensors_are_fine() {
        let bytes = with_header(
            r#"{"__metadata__":{"format":"pt"},"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#,
            0,
        );
        let h = parse_bytes(&bytes).unwrap();
        assert_eq!(h.metadata, vec![("format".to_owned(), "pt".to_owned())]);
        assert_eq!(h.tensors[0].length, 0);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_bytes(&bytes);
            let mut framed = (bytes.len() as u64).to_le_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            let _ = parse_bytes(&framed);
        }

        #[test]
        fn mutated_files_never_panic_and_stay_in_bounds(
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = safetensors(&[("x", "F16", vec![3, 2]), ("y", "U8", vec![5])], 3);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let len = cut.index(bytes.len() + 1);
            if let Ok(h) = parse_bytes(&bytes[..len]) {
                for t in &h.tensors {
                    prop_assert!(t.offset + t.length <= len as u64);
                }
            }
        }

        #[test]
        fn generated_files_round_trip(shapes in proptest::collection::vec(proptest::collection::vec(1u64..6, 0..4), 0..8)) {
            let named: Vec<(String, Vec<u64>)> = shapes
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("t{i:02}"), s))
                .collect();
            let specs: Vec<(&str, &str, Vec<u64>)> =
                named.iter().map(|(n, s)| (n.as_str(), "BF16", s.clone())).collect();
            let bytes = safetensors(&specs, 9);
            let h = parse_bytes(&bytes).unwrap();
            prop_assert_eq!(h.tensors.len(), specs.len());
            for (t, (n, s)) in h.tensors.iter().zip(&named) {
                prop_assert_eq!(&t.name, n);
                prop_assert_eq!(&t.shape, s);
            }
        }
    }
}
