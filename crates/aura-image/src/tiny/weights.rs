//! The tiny model's weight files: safetensors written in one canonical byte layout, so a
//! file's SHA-256 names its contents (the same tensors and metadata always give the same
//! bytes), and read back through the `safetensors` crate's checked parser.
//!
//! # Canonical layout (format `aura-tiny-weights/v1`)
//!
//! - An 8-byte little-endian header length, the header, then the tensor data.
//! - The header is compact JSON (no whitespace) whose keys are in byte order:
//!   `__metadata__` first (a map of strings, keys in byte order), then every tensor as
//!   `{"dtype":"F32","shape":[…],"data_offsets":[begin,end]}`; the header is padded with
//!   spaces to a multiple of 8 bytes.
//! - Tensor data follows in the same order as the header, little-endian f32, contiguous.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};

use super::Error;

/// Largest weight file read (the default model is a few tens of megabytes).
pub(crate) const MAX_BYTES: usize = 512 << 20;

/// One named tensor.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

/// Tensors by name.
pub(crate) type Tensors = BTreeMap<String, Tensor>;
/// A file's `__metadata__`.
pub(crate) type Metadata = BTreeMap<String, String>;

/// Writes tensors and metadata in the canonical layout.
pub(crate) fn write(
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut header = String::from("{");
    let mut first = true;
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":{");
        let items: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json(k), json(v)))
            .collect();
        header.push_str(&items.join(","));
        header.push('}');
        first = false;
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        if !first {
            header.push(',');
        }
        first = false;
        let shape: Vec<String> = t.shape.iter().map(ToString::to_string).collect();
        let end = offset + 4 * t.data.len();
        header.push_str(&format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json(name),
            shape.join(",")
        ));
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for t in tensors.values() {
        for v in &t.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Reads a weight file (any valid safetensors with f32 or f16 tensors).
pub(crate) fn read(bytes: &[u8]) -> Result<(Tensors, Metadata), Error> {
    if bytes.len() > MAX_BYTES {
        return Err(Error::Weights(format!(
            "file is larger than {MAX_BYTES} bytes"
        )));
    }
    let bad = |e: safetensors::SafeTensorError| Error::Weights(e.to_string());
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => view
                .data()
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::Weights(format!(
                    "tensor {name} has dtype {other:?}; only F32 and F16 load"
                )));
            }
        };
        tensors.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((tensors, metadata))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn sample() -> (BTreeMap<String, Tensor>, BTreeMap<String, String>) {
        let mut t = BTreeMap::new();
        t.insert(
            "b".to_owned(),
            Tensor {
                shape: vec![2],
                data: vec![1.0, -2.5],
            },
        );
        t.insert(
            "a.x".to_owned(),
            Tensor {
                shape: vec![1, 3],
                data: vec![0.5, 0.25, f32::MIN_POSITIVE],
            },
        );
        let mut m = BTreeMap::new();
        m.insert("format".to_owned(), "aura-tiny-weights/v1".to_owned());
        m.insert("config".to_owned(), "{\"q\":\"\\\"\"}".to_owned());
        (t, m)
    }

    #[test]
    fn canonical_bytes_round_trip_and_are_pinned() {
        let (t, m) = sample();
        let bytes = write(&t, &m);
        assert_eq!(bytes.len() % 4, 0);
        let (t2, m2) = read(&bytes).unwrap();
        assert_eq!((t2.clone(), m2.clone()), (t, m));
        assert_eq!(
            write(&t2, &m2),
            bytes,
            "re-writing what was read gives the same bytes"
        );
        // A test vector for the layout (documented in the module).
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
        assert_eq!(
            header.trim_end(),
            r#"{"__metadata__":{"config":"{\"q\":\"\\\"\"}","format":"aura-tiny-weights/v1"},"a.x":{"dtype":"F32","shape":[1,3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#
        );
    }

    #[test]
    fn malformed_files_are_refused_with_an_error() {
        let (t, m) = sample();
        let bytes = write(&t, &m);
        for cut in [0, 7, 8, 20, bytes.len() - 1] {
            assert!(read(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut huge = bytes;
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read(&huge).is_err());
    }
}
