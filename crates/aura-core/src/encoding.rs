//! The canonical binary encoding's primitives.
//!
//! Aura's signed and hashed structures (ledger entries, checkpoints, proofs, statements)
//! are encoded with these few rules so that another implementation can reproduce every
//! byte (docs/ledger.md):
//!
//! - integers are fixed-width, big-endian;
//! - byte strings and UTF-8 strings carry a big-endian length prefix whose width the
//!   structure fixes (u8, u16 or u32);
//! - fixed-size values (hashes, ids, keys, signatures) are written raw;
//! - there are no optional fields without an explicit tag byte, no padding and no maps.
//!
//! Decoding never panics: every read is bounds-checked and reports where it failed.

use std::fmt;

use crate::hash::Hash;

/// Builds a canonical encoding.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
}

/// A value is too long for the length prefix its field allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` is {len} bytes, more than the {max} its encoding allows")]
pub struct TooLong {
    pub field: &'static str,
    pub len: usize,
    pub max: usize,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Fixed-size bytes, written raw.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    pub fn hash(&mut self, v: &Hash) -> &mut Self {
        self.raw(&v.0)
    }

    /// Bytes with a u8 length prefix.
    pub fn bytes8(&mut self, field: &'static str, v: &[u8]) -> Result<&mut Self, TooLong> {
        let len = u8::try_from(v.len()).map_err(|_| TooLong {
            field,
            len: v.len(),
            max: 255,
        })?;
        self.u8(len);
        Ok(self.raw(v))
    }

    /// Bytes with a u16 length prefix.
    pub fn bytes16(&mut self, field: &'static str, v: &[u8]) -> Result<&mut Self, TooLong> {
        let len = u16::try_from(v.len()).map_err(|_| TooLong {
            field,
            len: v.len(),
            max: u16::MAX as usize,
        })?;
        self.u16(len);
        Ok(self.raw(v))
    }

    /// Bytes with a u32 length prefix.
    pub fn bytes32(&mut self, field: &'static str, v: &[u8]) -> Result<&mut Self, TooLong> {
        let len = u32::try_from(v.len()).map_err(|_| TooLong {
            field,
            len: v.len(),
            max: u32::MAX as usize,
        })?;
        self.u32(len);
        Ok(self.raw(v))
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Why decoding failed, and at which byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct DecodeError {
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input ended inside `field`.
    Truncated { field: &'static str },
    /// Bytes were left over after the structure ended.
    TrailingBytes { count: usize },
    /// A version or tag byte this implementation does not know.
    UnknownVersion { field: &'static str, value: u64 },
    /// A field whose value is out of its allowed range or shape.
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::Truncated { field } => write!(f, "input ends inside `{field}`"),
            DecodeErrorKind::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the end")
            }
            DecodeErrorKind::UnknownVersion { field, value } => {
                write!(f, "unknown `{field}` {value}")
            }
            DecodeErrorKind::Invalid { field, reason } => write!(f, "`{field}` {reason}"),
        }
    }
}

/// Reads a canonical encoding, bounds-checked.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Decoder { input, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    pub fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset: self.pos,
            kind,
        }
    }

    pub fn invalid(&self, field: &'static str, reason: &'static str) -> DecodeError {
        self.error(DecodeErrorKind::Invalid { field, reason })
    }

    pub fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.error(DecodeErrorKind::Truncated { field }));
        }
        let out = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    pub fn hash(&mut self, field: &'static str) -> Result<Hash, DecodeError> {
        Ok(Hash(self.array(field)?))
    }

    pub fn bytes8(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u8(field)? as usize;
        self.take(field, len)
    }

    pub fn bytes16(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(field)? as usize;
        self.take(field, len)
    }

    /// Bytes with a u32 length prefix, refusing lengths above `max` before reading them.
    pub fn bytes32(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError {
                offset: start,
                kind: DecodeErrorKind::Invalid {
                    field,
                    reason: "is longer than allowed",
                },
            });
        }
        self.take(field, len)
    }

    /// A UTF-8 string with a u8 length prefix.
    pub fn str8(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        let bytes = self.bytes8(field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError {
            offset: start,
            kind: DecodeErrorKind::Invalid {
                field,
                reason: "is not valid UTF-8",
            },
        })
    }

    /// Fails unless the whole input was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.error(DecodeErrorKind::TrailingBytes { count })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian() {
        let mut e = Encoder::new();
        e.u8(1)
            .u16(0x0203)
            .u32(0x0405_0607)
            .u64(0x0809_0a0b_0c0d_0e0f);
        assert_eq!(e.finish(), (1u8..=15).collect::<Vec<_>>());
    }

    #[test]
    fn length_prefixed_round_trip() {
        let mut e = Encoder::new();
        e.bytes8("a", b"hi")
            .unwrap()
            .bytes16("b", b"there")
            .unwrap();
        e.bytes32("c", b"!").unwrap();
        let buf = e.finish();
        let mut d = Decoder::new(&buf);
        assert_eq!(d.bytes8("a").unwrap(), b"hi");
        assert_eq!(d.bytes16("b").unwrap(), b"there");
        assert_eq!(d.bytes32("c", 10).unwrap(), b"!");
        d.finish().unwrap();
    }

    #[test]
    fn too_long_for_prefix_is_refused() {
        let long = vec![0u8; 256];
        assert!(Encoder::new().bytes8("kind", &long).is_err());
    }

    #[test]
    fn truncation_and_trailing_bytes_are_errors_with_offsets() {
        let mut d = Decoder::new(&[0, 5, 1]);
        let err = d.bytes16("body").unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::Truncated { field: "body" });
        assert_eq!(err.offset, 2);

        let d = Decoder::new(&[1, 2]);
        assert_eq!(
            d.finish().unwrap_err().kind,
            DecodeErrorKind::TrailingBytes { count: 2 }
        );
    }

    #[test]
    fn oversized_length_is_refused_before_reading() {
        let mut d = Decoder::new(&[0xff, 0xff, 0xff, 0xff]);
        let err = d.bytes32("body", 1024).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::Invalid { field: "body", .. }
        ));
    }
}
