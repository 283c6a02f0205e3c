//! A hardened reader for GGUF file headers (versions 2 and 3, little-endian).
//!
//! Import reads a GGUF file's header to learn the model's architecture and quantisation
//! and where every tensor lives; nothing else in Aura trusts these bytes before the file's
//! SHA-256 has been matched against a signed manifest. The reader still treats the file
//! as hostile: every length is checked before it is used, the header may not exceed
//! [`Limits::max_header_bytes`] (read through a budget, so a lying length cannot make it
//! allocate or read more), counts are capped, arithmetic is checked, nested arrays are
//! refused, and every tensor must lie inside the file, aligned, without overlapping
//! another. It never panics (`fuzz/fuzz_targets/gguf_header.rs`).
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! "GGUF" u32 version u64 tensor_count u64 kv_count
//! kv_count ×  (string key, u32 type, value)        string = u64 length + UTF-8 bytes
//! tensor_count × (string name, u32 n_dims, n_dims × u64 dim, u32 ggml type, u64 offset)
//! padding to `general.alignment` (default 32), then the tensor data; offsets are
//! relative to the start of the data.
//! ```

use std::collections::HashSet;
use std::io::Read;

/// Caps on what a header may declare. The defaults fit every public model we know of
/// with room to spare (SmolLM2's header is 1.8 MB; large vocabularies reach ~10 MB).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: u64,
    pub max_tensors: u64,
    pub max_kv: u64,
    pub max_string: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024 * 1024,
            max_tensors: 65_536,
            max_kv: 65_536,
            max_string: 16 * 1024 * 1024,
        }
    }
}

/// Metadata strings longer than this are kept only as their length: nothing Aura reads
/// from metadata is long, and the header's big strings (chat templates) are not needed.
const KEPT_STRING_LEN: usize = 1024;
const MAX_TENSOR_NAME: usize = 256;
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value. Integers are widened; arrays are summarised.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// A string longer than Aura keeps: only its length.
    LongStr(u64),
    Array {
        element_type: u32,
        len: u64,
    },
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(v) => Some(*v),
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
}

/// One tensor's place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    /// Dimensions as GGUF lists them (innermost first).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub length: u64,
}

impl Tensor {
    pub fn type_name(&self) -> &'static str {
        ggml_type(self.ggml_type).map_or("unknown", |t| t.name)
    }
}

/// A parsed, checked header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    pub alignment: u64,
    /// Where tensor data starts (absolute, aligned).
    pub data_offset: u64,
    pub metadata: Vec<(String, Value)>,
    /// In file order.
    pub tensors: Vec<Tensor>,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// The quantisation named by `general.file_type`, else the type holding most bytes.
    pub fn quantization(&self) -> String {
        if let Some(name) = self
            .get("general.file_type")
            .and_then(Value::as_u64)
            .and_then(file_type_name)
        {
            return name.to_owned();
        }
        let mut bytes: Vec<(&'static str, u64)> = Vec::new();
        for t in &self.tensors {
            let name = t.type_name();
            match bytes.iter_mut().find(|(n, _)| *n == name) {
                Some((_, b)) => *b = b.saturating_add(t.length),
                None => bytes.push((name, t.length)),
            }
        }
        bytes
            .iter()
            .max_by_key(|(_, b)| *b)
            .map_or_else(|| "unknown".to_owned(), |(n, _)| (*n).to_owned())
    }
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a GGUF file (it does not start with \"GGUF\")")]
    NotGguf,
    #[error("{reason} (at byte {offset})")]
    Malformed { offset: u64, reason: String },
    #[error("cannot read the file")]
    Io(#[source] std::io::Error),
}

/// Block size (elements) and bytes per block of each ggml tensor type Aura knows.
#[derive(Debug, Clone, Copy)]
pub struct GgmlType {
    pub name: &'static str,
    pub block: u64,
    pub bytes: u64,
}

/// The ggml tensor types, by their number in the file format. Types removed from ggml
/// (4, 5, 31-33) and unknown numbers are refused: a tensor whose size cannot be computed
/// cannot be bounds-checked.
pub fn ggml_type(id: u32) -> Option<GgmlType> {
    let (name, block, bytes) = match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    };
    Some(GgmlType { name, block, bytes })
}

/// The name of a `general.file_type` (llama.cpp's "ftype": the quantisation mix).
pub fn file_type_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

/// Reads through a byte budget: no read goes past `max` bytes from the start, and every
/// error knows its offset.
struct Budget<R> {
    inner: R,
    pos: u64,
    /// The header limit.
    max: u64,
    /// The whole file's length: reading past it means the file is cut short.
    file_len: u64,
}

impl<R: Read> Budget<R> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Malformed {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn ensure(&self, n: u64, what: &str) -> Result<(), Error> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.max && end <= self.file_len => Ok(()),
            Some(end) if end > self.file_len && self.file_len <= self.max => {
                Err(self.err(format!("the file ends inside {what}")))
            }
            _ => Err(self.err(format!(
                "{what} would take the header past its {} byte limit",
                self.max
            ))),
        }
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), Error> {
        self.ensure(buf.len() as u64, what)?;
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.err(format!("the file ends inside {what}")))
            }
            Err(e) => Err(Error::Io(e)),
        }
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), Error> {
        self.ensure(n, what)?;
        let mut scratch = [0u8; 8192];
        while n > 0 {
            let chunk = n.min(scratch.len() as u64) as usize;
            self.fill(&mut scratch[..chunk], what)?;
            n -= chunk as u64;
        }
        Ok(())
    }

    fn u8(&mut self, what: &str) -> Result<u8, Error> {
        let mut b = [0u8; 1];
        self.fill(&mut b, what)?;
        Ok(b[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        self.fill(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &str) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        self.fill(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A string's length, checked against `max` and the budget before any allocation.
    fn string_len(&mut self, max: u64, what: &str) -> Result<u64, Error> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > max {
            return Err(Error::Malformed {
                offset: at,
                reason: format!("{what} is {len} bytes long, more than the {max} allowed"),
            });
        }
        self.ensure(len, what)?;
        Ok(len)
    }

    fn string(&mut self, max: u64, what: &str) -> Result<String, Error> {
        let at = self.pos;
        let len = self.string_len(max, what)?;
        // `len` is within the budget, which is far below usize::MAX on 64-bit targets.
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf, what)?;
        String::from_utf8(buf).map_err(|_| Error::Malformed {
            offset: at,
            reason: format!("{what} is not valid UTF-8"),
        })
    }
}

/// Bytes per element of a scalar metadata type, or `None` for strings and arrays.
fn scalar_size(t: u32) -> Option<u64> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn read_scalar<R: Read>(r: &mut Budget<R>, t: u32, what: &str) -> Result<Value, Error> {
    let at = r.pos;
    Ok(match t {
        0 => Value::Uint(r.u8(what)?.into()),
        1 => Value::Int(i64::from(r.u8(what)? as i8)),
        2 | 3 => {
            let mut b = [0u8; 2];
            r.fill(&mut b, what)?;
            if t == 2 {
                Value::Uint(u16::from_le_bytes(b).into())
            } else {
                Value::Int(i16::from_le_bytes(b).into())
            }
        }
        4 => Value::Uint(r.u32(what)?.into()),
        5 => Value::Int(i64::from(r.u32(what)? as i32)),
        6 => Value::Float(f32::from_bits(r.u32(what)?).into()),
        7 => match r.u8(what)? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            _ => {
                return Err(Error::Malformed {
                    offset: at,
                    reason: format!("{what} is a bool that is neither 0 nor 1"),
                });
            }
        },
        10 => Value::Uint(r.u64(what)?),
        11 => Value::Int(r.u64(what)? as i64),
        12 => Value::Float(f64::from_bits(r.u64(what)?)),
        _ => {
            return Err(Error::Malformed {
                offset: at,
                reason: format!("{what} has unknown value type {t}"),
            });
        }
    })
}

fn read_value<R: Read>(
    r: &mut Budget<R>,
    t: u32,
    limits: &Limits,
    what: &str,
) -> Result<Value, Error> {
    match t {
        8 => {
            let len = r.string_len(limits.max_string, what)?;
            if len as usize <= KEPT_STRING_LEN {
                let at = r.pos;
                let mut buf = vec![0u8; len as usize];
                r.fill(&mut buf, what)?;
                String::from_utf8(buf)
                    .map(Value::Str)
                    .map_err(|_| Error::Malformed {
                        offset: at,
                        reason: format!("{what} is not valid UTF-8"),
                    })
            } else {
                r.skip(len, what)?;
                Ok(Value::LongStr(len))
            }
        }
        9 => {
            let at = r.pos;
            let element_type = r.u32(what)?;
            let len = r.u64(what)?;
            if element_type == 8 {
                // Each string has at least its 8-byte length: refuse counts the budget
                // could never hold before looping over them.
                r.ensure(len.saturating_mul(8), what)?;
                for _ in 0..len {
                    let n = r.string_len(limits.max_string, what)?;
                    r.skip(n, what)?;
                }
            } else if let Some(size) = scalar_size(element_type) {
                let bytes = len
                    .checked_mul(size)
                    .ok_or_else(|| r.err("array too large"))?;
                if element_type == 7 {
                    r.ensure(bytes, what)?;
                    for _ in 0..len {
                        read_scalar(r, 7, what)?;
                    }
                } else {
                    r.skip(bytes, what)?;
                }
            } else if element_type == 9 {
                return Err(Error::Malformed {
                    offset: at,
                    reason: format!("{what} is an array of arrays, which Aura does not read"),
                });
            } else {
                return Err(Error::Malformed {
                    offset: at,
                    reason: format!("{what} is an array of unknown type {element_type}"),
                });
            }
            Ok(Value::Array { element_type, len })
        }
        _ => read_scalar(r, t, what),
    }
}

/// Parses the header of a GGUF file of `file_len` bytes from `reader` (positioned at its
/// start), with the default [`Limits`].
pub fn parse(reader: impl Read, file_len: u64) -> Result<Header, Error> {
    parse_with(reader, file_len, &Limits::default())
}

/// [`parse`] over bytes in memory (the whole file, or at least its header when
/// `file_len` says how long the whole file is).
pub fn parse_bytes(bytes: &[u8]) -> Result<Header, Error> {
    parse(bytes, bytes.len() as u64)
}

pub fn parse_with(reader: impl Read, file_len: u64, limits: &Limits) -> Result<Header, Error> {
    let mut r = Budget {
        inner: reader,
        pos: 0,
        max: limits.max_header_bytes,
        file_len,
    };
    let mut magic = [0u8; 4];
    if r.fill(&mut magic, "the magic number").is_err() || &magic != b"GGUF" {
        return Err(Error::NotGguf);
    }
    let version = r.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => return Err(r.err("GGUF version 1 is obsolete; convert the file with a current tool")),
        v if v.swap_bytes() <= 3 => {
            return Err(r.err("this is a big-endian GGUF file; Aura reads little-endian ones"));
        }
        v => return Err(r.err(format!("unknown GGUF version {v}"))),
    }
    let tensor_count = r.u64("the tensor count")?;
    if tensor_count > limits.max_tensors {
        return Err(r.err(format!(
            "the header declares {tensor_count} tensors, more than the {} allowed",
            limits.max_tensors
        )));
    }
    let kv_count = r.u64("the metadata count")?;
    if kv_count > limits.max_kv {
        return Err(r.err(format!(
            "the header declares {kv_count} metadata entries, more than the {} allowed",
            limits.max_kv
        )));
    }

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(kv_count.min(1024) as usize);
    let mut keys = HashSet::new();
    for _ in 0..kv_count {
        let at = r.pos;
        let key = r.string(u64::from(u16::MAX), "a metadata key")?;
        if key.is_empty() || !keys.insert(key.clone()) {
            return Err(Error::Malformed {
                offset: at,
                reason: format!("metadata key `{key}` is empty or repeated"),
            });
        }
        let t = r.u32("a metadata value type")?;
        let value = read_value(&mut r, t, limits, "a metadata value")?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::Uint(a))) if a.is_power_of_two() && *a <= 1 << 20 => *a,
        Some(_) => return Err(r.err("`general.alignment` is not a power of two up to 1 MiB")),
    };

    let mut tensors = Vec::with_capacity(tensor_count.min(4096) as usize);
    let mut names = HashSet::new();
    for _ in 0..tensor_count {
        let at = r.pos;
        let name = r.string(MAX_TENSOR_NAME as u64, "a tensor name")?;
        if name.is_empty() || !names.insert(name.clone()) {
            return Err(Error::Malformed {
                offset: at,
                reason: format!("tensor name `{name}` is empty or repeated"),
            });
        }
        let n_dims = r.u32("a tensor's dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(r.err(format!(
                "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64("a tensor dimension")?);
        }
        let ggml = r.u32("a tensor type")?;
        let offset = r.u64("a tensor offset")?;
        tensors.push((at, name, dims, ggml, offset));
    }

    let header_end = r.pos;
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .filter(|d| *d <= file_len)
        .ok_or_else(|| r.err("the file ends before its tensor data starts"))?;

    let mut out = Vec::with_capacity(tensors.len());
    for (at, name, dims, ggml, offset) in tensors {
        let bad = |reason: String| Error::Malformed { offset: at, reason };
        let Some(ty) = ggml_type(ggml) else {
            return Err(bad(format!("tensor `{name}` has unknown ggml type {ggml}")));
        };
        if dims.contains(&0) {
            return Err(bad(format!("tensor `{name}` has a zero dimension")));
        }
        if dims[0] % ty.block != 0 {
            return Err(bad(format!(
                "tensor `{name}`'s first dimension {} is not a multiple of the {} block of {}",
                dims[0], ty.name, ty.block
            )));
        }
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| bad(format!("tensor `{name}` has too many elements")))?;
        let length = (elements / ty.block)
            .checked_mul(ty.bytes)
            .ok_or_else(|| bad(format!("tensor `{name}` is too large")))?;
        if offset % alignment != 0 {
            return Err(bad(format!(
                "tensor `{name}`'s offset {offset} is not aligned to {alignment}"
            )));
        }
        let start = data_offset
            .checked_add(offset)
            .filter(|s| s.checked_add(length).is_some_and(|end| end <= file_len))
            .ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` ({length} bytes at data offset {offset}) lies beyond the end of the file"
                ))
            })?;
        out.push(Tensor {
            name,
            dims,
            ggml_type: ggml,
            offset: start,
            length,
        });
    }

    // No two tensors may share bytes: a file that aliases tensors means something other
    // than what its names say.
    let mut by_offset: Vec<&Tensor> = out.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].length > pair[1].offset {
            return Err(Error::Malformed {
                offset: header_end,
                reason: format!("tensors `{}` and `{}` overlap", pair[0].name, pair[1].name),
            });
        }
    }

    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        tensors: out,
    })
}

/// Writes a small GGUF file (version 3) for tests and benchmarks: string and u32
/// metadata, and F32 or Q4_1 tensors whose data is filled from `fill`. Real model files
/// come from elsewhere; this exists so that tests can make valid and invalid files.
#[doc(hidden)]
pub mod write {
    /// A metadata value for [`gguf`].
    #[derive(Debug, Clone)]
    pub enum Meta {
        Str(String),
        U32(u32),
    }

    /// A tensor for [`gguf`]: name, dims, ggml type (0 = F32, 3 = Q4_1).
    #[derive(Debug, Clone)]
    pub struct TensorSpec {
        pub name: String,
        pub dims: Vec<u64>,
        pub ggml_type: u32,
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// The bytes of a GGUF file with this metadata and these tensors, each tensor's data
    /// a run of bytes derived from `seed`.
    pub fn gguf(meta: &[(&str, Meta)], tensors: &[TensorSpec], seed: u8) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in meta {
            put_str(&mut out, k);
            match v {
                Meta::Str(s) => {
                    out.extend_from_slice(&8u32.to_le_bytes());
                    put_str(&mut out, s);
                }
                Meta::U32(n) => {
                    out.extend_from_slice(&4u32.to_le_bytes());
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
        let mut offset = 0u64;
        let mut sizes = Vec::new();
        for t in tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            let ty = super::ggml_type(t.ggml_type).unwrap_or(super::GgmlType {
                name: "F32",
                block: 1,
                bytes: 4,
            });
            let size = t.dims.iter().product::<u64>() / ty.block * ty.bytes;
            sizes.push(size);
            offset = (offset + size).next_multiple_of(32);
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        for (i, size) in sizes.iter().enumerate() {
            let start = out.len();
            out.extend((0..*size).map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed)));
            if i + 1 < sizes.len() {
                while (out.len() - start) % 32 != 0 {
                    out.push(0);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::write::{Meta, TensorSpec, gguf};
    use super::*;
    use proptest::prelude::*;

    fn tiny() -> Vec<u8> {
        gguf(
            &[
                ("general.architecture", Meta::Str("llama".into())),
                ("general.file_type", Meta::U32(3)),
            ],
            &[
                TensorSpec {
                    name: "token_embd.weight".into(),
                    dims: vec![32, 4],
                    ggml_type: 3,
                },
                TensorSpec {
                    name: "output_norm.weight".into(),
                    dims: vec![8],
                    ggml_type: 0,
                },
            ],
            7,
        )
    }

    #[test]
    fn a_written_file_parses_back() {
        let bytes = tiny();
        let h = parse_bytes(&bytes).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.quantization(), "Q4_1");
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[0].length, 4 * 20);
        assert_eq!(h.tensors[0].offset, h.data_offset);
        assert_eq!(h.tensors[1].offset, h.data_offset + 96);
        assert_eq!(h.tensors[1].length, 32);
        assert_eq!(h.tensors[1].offset + 32, bytes.len() as u64);
    }

    /// One table of hostile headers: each is refused with a reason containing `expect`.
    #[test]
    fn hostile_headers_are_refused() {
        fn check(bytes: &[u8], expect: &str) {
            let err = parse_bytes(bytes).unwrap_err().to_string();
            assert!(err.contains(expect), "expected `{expect}`, got `{err}`");
        }
        let good = tiny();
        check(b"GGU", "not a GGUF file");
        check(b"GGML\x03\0\0\0", "not a GGUF file");
        let mut v1 = good.clone();
        v1[4] = 1;
        check(&v1, "obsolete");
        let mut be = good.clone();
        be[4..8].copy_from_slice(&3u32.to_be_bytes());
        check(&be, "big-endian");
        let mut many = good.clone();
        many[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        check(&many, "tensors, more than");
        let mut kvs = good.clone();
        kvs[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        check(&kvs, "metadata entries");
        // The first key's length says 2^60 bytes.
        let mut long_key = good.clone();
        long_key[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
        check(&long_key, "more than the 65535 allowed");
        // Cut inside the tensor infos: the data offset would be past the end.
        check(&good[..good.len() / 2], "ends");
        // Shrinking the file so the last tensor no longer fits.
        check(&good[..good.len() - 1], "beyond the end of the file");
    }

    #[test]
    fn unknown_types_overlaps_and_misalignment_are_refused() {
        let spec = |name: &str, ggml_type| TensorSpec {
            name: name.into(),
            dims: vec![32],
            ggml_type,
        };
        let unknown = gguf(&[], &[spec("a", 4)], 0);
        assert!(
            parse_bytes(&unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown ggml type 4")
        );
        // Rewrite the second tensor's offset to overlap the first.
        let mut two = gguf(&[], &[spec("a", 0), spec("b", 0)], 0);
        parse_bytes(&two).unwrap();
        let pos = two
            .windows(9)
            .position(|w| w == b"\x01\0\0\0\0\0\0\0b")
            .unwrap();
        // Layout after the name: u32 n_dims, u64 dim, u32 type, u64 offset.
        let offset_at = pos + 9 + 4 + 8 + 4;
        two[offset_at..offset_at + 8].copy_from_slice(&32u64.to_le_bytes());
        let err = parse_bytes(&two).unwrap_err().to_string();
        assert!(err.contains("overlap"), "{err}");
        two[offset_at..offset_at + 8].copy_from_slice(&129u64.to_le_bytes());
        let err = parse_bytes(&two).unwrap_err().to_string();
        assert!(err.contains("not aligned"), "{err}");
    }

    #[test]
    fn the_header_budget_holds_against_lying_lengths() {
        let limits = Limits {
            max_header_bytes: 64,
            ..Limits::default()
        };
        let bytes = tiny();
        let err = parse_with(&bytes[..], bytes.len() as u64, &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("byte limit"), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_bytes(&bytes);
            let mut with_magic = b"GGUF\x03\0\0\0".to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = parse_bytes(&with_magic);
        }

        #[test]
        fn mutated_files_never_panic_and_stay_in_bounds(
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = tiny();
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
        fn generated_files_round_trip(
            dims in proptest::collection::vec((1u64..4, 1u64..5), 1..6),
            quantized in any::<bool>(),
        ) {
            let specs: Vec<TensorSpec> = dims
                .iter()
                .enumerate()
                .map(|(i, (a, b))| TensorSpec {
                    name: format!("t{i}"),
                    dims: vec![a * 32, *b],
                    ggml_type: if quantized { 3 } else { 0 },
                })
                .collect();
            let bytes = gguf(&[("general.architecture", Meta::Str("x".into()))], &specs, 1);
            let h = parse_bytes(&bytes).unwrap();
            prop_assert_eq!(h.tensors.len(), specs.len());
            for (t, s) in h.tensors.iter().zip(&specs) {
                prop_assert_eq!(&t.name, &s.name);
                prop_assert_eq!(&t.dims, &s.dims);
            }
        }
    }
}
