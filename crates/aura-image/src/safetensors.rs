//! A reader of safetensors files that reads one tensor at a time with positioned reads,
//! instead of mapping the file: a mapped checkpoint's pages count in the process's
//! resident memory while it is read, which would add the whole file (2 to 7 GB) to the
//! peak of every load, and a mapped file changed underneath is undefined behaviour.
//!
//! The format: an 8-byte little-endian header length `n`, `n` bytes of JSON mapping each
//! tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to
//! the end of the header; an optional `__metadata__` object of strings), then the data,
//! little-endian. Files are untrusted: every size is checked (header at most 100 MB, each
//! tensor's bytes equal to its element count times its width and inside the file), and a
//! bad file is an error, never a panic.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Largest header accepted (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// A tensor's element type, as far as weights go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    F16,
    Bf16,
    F32,
    F64,
    /// Any other type the format allows (integers, booleans, fp8...): listed, never read
    /// as weights. The value is the width in bytes.
    Other(usize),
}

impl Dtype {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F16" => Self::F16,
            "BF16" => Self::Bf16,
            "F32" => Self::F32,
            "F64" => Self::F64,
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => Self::Other(1),
            "I16" | "U16" => Self::Other(2),
            "I32" | "U32" => Self::Other(4),
            "I64" | "U64" => Self::Other(8),
            _ => return None,
        })
    }

    fn width(self) -> usize {
        match self {
            Self::F16 | Self::Bf16 => 2,
            Self::F32 => 4,
            Self::F64 => 8,
            Self::Other(w) => w,
        }
    }

    /// The name used in fingerprints.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::Other(_) => "other",
        }
    }
}

/// One tensor's entry in the header.
#[derive(Clone, Debug)]
pub(crate) struct Info {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    begin: u64,
    end: u64,
}

/// An open safetensors file and its parsed header.
#[derive(Debug)]
pub(crate) struct SafeFile {
    path: PathBuf,
    file: std::fs::File,
    data_start: u64,
    tensors: BTreeMap<String, Info>,
}

impl SafeFile {
    /// Opens `path` and checks its header against the file's size.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let bad = |m: String| Error::model(format!("{}: {m}", path.display()));
        let mut n = [0u8; 8];
        file.read_exact(&mut n)
            .map_err(|_| bad("too short to be a safetensors file".into()))?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER || n.saturating_add(8) > len {
            return Err(bad(format!(
                "a header of {n} bytes does not fit a file of {len}"
            )));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(io)?;
        let tensors = parse_header(&header, len - 8 - n).map_err(bad)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            data_start: 8 + n,
            tensors,
        })
    }

    /// Every tensor's name and header entry, sorted by name.
    pub(crate) fn tensors(&self) -> &BTreeMap<String, Info> {
        &self.tensors
    }

    /// Reads a floating-point tensor as f32 (f16, bf16 and f64 are converted; f16 and
    /// bf16 exactly).
    pub(crate) fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::model(format!("{}: no tensor {name}", self.path.display())))?;
        let width = info.dtype.width();
        if matches!(info.dtype, Dtype::Other(_)) {
            return Err(Error::model(format!(
                "{}: {name} is not floating point",
                self.path.display()
            )));
        }
        let mut bytes = vec![0u8; (info.end - info.begin) as usize];
        self.file
            .read_exact_at(&mut bytes, self.data_start + info.begin)
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        let data = match info.dtype {
            Dtype::F16 => bytes
                .chunks_exact(width)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::Bf16 => bytes
                .chunks_exact(width)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F32 => bytes
                .chunks_exact(width)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            _ => bytes
                .chunks_exact(width)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
        };
        Ok((info.shape.clone(), data))
    }
}

/// Parses and checks a header; `data_len` is the number of bytes after it.
fn parse_header(
    header: &[u8],
    data_len: u64,
) -> std::result::Result<BTreeMap<String, Info>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| format!("unreadable header: {e}"))?;
    let obj = v.as_object().ok_or("the header is not a JSON object")?;
    let mut out = BTreeMap::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |m: &str| format!("tensor {name}: {m}");
        let dtype = entry
            .get("dtype")
            .and_then(serde_json::Value::as_str)
            .and_then(Dtype::parse)
            .ok_or_else(|| bad("unknown dtype"))?;
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("the shape must be a list of sizes"))?;
        let offsets = entry
            .get("data_offsets")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| bad("no data_offsets"))?;
        let (begin, end) = match offsets.as_slice() {
            [b, e] => (
                b.as_u64().ok_or_else(|| bad("bad offset"))?,
                e.as_u64().ok_or_else(|| bad("bad offset"))?,
            ),
            _ => return Err(bad("data_offsets must be two numbers")),
        };
        let elements = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .ok_or_else(|| bad("too many elements"))?;
        let bytes = elements
            .checked_mul(dtype.width() as u64)
            .ok_or_else(|| bad("too many bytes"))?;
        if end < begin || end - begin != bytes || end > data_len {
            return Err(bad(&format!(
                "offsets {begin}..{end} do not hold {bytes} bytes inside {data_len}"
            )));
        }
        out.insert(
            name.clone(),
            Info {
                dtype,
                shape,
                begin,
                end,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    fn open_bytes(b: &[u8]) -> Result<SafeFile> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("t.safetensors");
        std::fs::write(&p, b).unwrap_or_else(|e| panic!("{e}"));
        SafeFile::open(&p)
    }

    #[test]
    fn reads_every_float_type_exactly() {
        let mut data = Vec::new();
        data.extend_from_slice(&half::f16::from_f32(1.5).to_le_bytes());
        data.extend_from_slice(&half::bf16::from_f32(-2.0).to_le_bytes());
        data.extend_from_slice(&0.25f32.to_le_bytes());
        data.extend_from_slice(&8.0f64.to_le_bytes());
        data.extend_from_slice(&7i64.to_le_bytes());
        let h = r#"{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[2,4]},"c":{"dtype":"F32","shape":[1,1],"data_offsets":[4,8]},"d":{"dtype":"F64","shape":[],"data_offsets":[8,16]},"e":{"dtype":"I64","shape":[1],"data_offsets":[16,24]},"__metadata__":{"format":"pt"}}"#;
        let f = open_bytes(&file_bytes(h, &data)).unwrap_or_else(|e| panic!("{e}"));
        let get = |n: &str| f.read_f32(n).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get("a"), (vec![1], vec![1.5]));
        assert_eq!(get("b"), (vec![1], vec![-2.0]));
        assert_eq!(get("c"), (vec![1, 1], vec![0.25]));
        assert_eq!(get("d"), (vec![], vec![8.0]));
        assert!(f.read_f32("e").is_err(), "integers are not weights");
        assert!(f.read_f32("zz").is_err());
        assert_eq!(f.tensors().len(), 5);
    }

    #[test]
    fn damaged_headers_are_errors() {
        let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert!(open_bytes(&file_bytes(ok, &[0; 8])).is_ok());
        for (h, data) in [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0u8; 4][..],
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8][..],
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                &[0; 8][..],
            ),
            (
                r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8][..],
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
                &[0; 8][..],
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                &[0; 8][..],
            ),
            (r#"["not an object"]"#, &[][..]),
            ("{", &[][..]),
        ] {
            assert!(open_bytes(&file_bytes(h, data)).is_err(), "{h}");
        }
        // A header length beyond the file, and files too short to hold one.
        let mut b = file_bytes(ok, &[0; 8]);
        b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(open_bytes(&b).is_err());
        assert!(open_bytes(&[1, 2, 3]).is_err());
        assert!(open_bytes(&[]).is_err());
    }

    #[test]
    fn arbitrary_headers_never_panic() {
        // A cheap deterministic fuzz of the header parser: byte flips and truncations of a
        // valid header, against several data lengths.
        let valid = br#"{"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}"#;
        let mut state = 1u64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let mut b = valid.to_vec();
            let i = (state >> 33) as usize % b.len();
            b[i] = (state >> 17) as u8;
            let cut = (state >> 45) as usize % (b.len() + 1);
            b.truncate(cut.max(i));
            let _ = parse_header(&b, (state >> 60) * 4);
        }
    }
}
