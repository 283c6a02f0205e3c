//! Canonical JSON: the JSON Canonicalization Scheme of RFC 8785 (JCS), the one JSON form of
//! anything Aura hashes or signs.
//!
//! [`to_vec`] writes any `Serialize` value (a `serde_json::Value` too) as JCS:
//!
//! - no whitespace;
//! - object members sorted by their names compared as arrays of UTF-16 code units
//!   (RFC 8785 §3.2.3), whatever order the value was built or parsed in, so the output does
//!   not depend on serde_json's `preserve_order` feature or on a map's iteration order;
//!   a name that appears twice in one object is an error;
//! - strings escaped minimally (§3.2.2.2): `\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r`, other
//!   control characters below U+0020 as `\u00xx` in lowercase hex, everything else
//!   (including U+007F, U+2028 and `/`) written as its UTF-8 bytes;
//! - floating-point numbers as ECMAScript's `Number.prototype.toString` writes them
//!   (§3.2.2.3): the shortest digits that round-trip, in plain notation from 1e-6 up to
//!   1e21 and in exponent notation (`1e+21`, `1.5e-7`) outside it; `-0` is `0`; NaN and the
//!   infinities are errors.
//!
//! **Integers** are written with all their digits. For integers of magnitude up to 2^53
//! this is exactly RFC 8785. Beyond it RFC 8785, which reads every number as an IEEE 754
//! double, would round the value to the nearest double and print that (2^53 + 1 becomes
//! `9007199254740992`); Aura writes the exact integer instead (`9007199254740993`), because
//! its records carry 64-bit counts and sizes that must read back unchanged. Such numbers
//! are outside I-JSON (RFC 7493 §2.2), so a verifier that reads JSON numbers as doubles
//! cannot reproduce them; one that reads integers exactly (Python's `json`, serde_json,
//! JavaScript with a BigInt-aware parser) can. Aura's own formats keep their numbers within
//! 2^53 in practice; the rule only decides what happens when one is not.
//!
//! **Why fractions are formatted rather than refused.** Aura's own hashed formats hold only
//! integers, but mission records also hold values that come from outside (a reasoner's tool
//! arguments, a tool's result), which may hold fractions like `0.5`. Refusing them would
//! make such a mission unrecordable; RFC 8785's number form is fully specified and, read
//! back by a correctly rounding parser (serde_json with `float_roundtrip`, which this crate
//! turns on), gives the same double and so the same canonical text again.
//!
//! The vectors in `docs/canonical-json-vectors.json` (RFC 8785's own examples and Aura's)
//! are checked by this module's tests.

use std::cmp::Ordering;
use std::fmt::Display;
use std::io::Write as _;

use serde::ser::{self, Serialize};

/// How deep arrays and objects may nest. serde_json reads at most 128 levels, so nothing
/// deeper could be read back; the bound keeps a hostile value from exhausting the stack.
pub const MAX_DEPTH: usize = 256;

/// Why a value has no canonical JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the number {0} has no JSON form (canonical JSON has no NaN or infinity)")]
    NotFinite(String),
    #[error("an object member's name is not a string")]
    KeyNotString,
    #[error("the member `{0}` appears twice in one object")]
    DuplicateKey(String),
    #[error("the value nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("{0} cannot be written as canonical JSON")]
    Unsupported(&'static str),
    #[error("{0}")]
    Custom(String),
}

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}

/// The canonical JSON bytes of `value`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(128);
    value.serialize(Writer {
        out: &mut out,
        depth: 0,
    })?;
    Ok(out)
}

/// The canonical JSON text of `value`.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    // The writer emits only ASCII punctuation, digits and the UTF-8 of Rust strings.
    String::from_utf8(to_vec(value)?).map_err(|_| Error::Unsupported("invalid UTF-8"))
}

/// Why JSON text could not be canonicalised.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalizeError {
    #[error("not valid JSON")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Canonical(#[from] Error),
}

/// Reads JSON text and writes it canonically. (A name repeated within one object keeps its
/// last value, as serde_json reads it; I-JSON forbids such text anyway.)
pub fn canonicalize(json: &[u8]) -> Result<Vec<u8>, CanonicalizeError> {
    let value: serde_json::Value = serde_json::from_slice(json)?;
    Ok(to_vec(&value)?)
}

/// Orders member names as RFC 8785 §3.2.3 does: by UTF-16 code units.
pub fn compare_names(a: &str, b: &str) -> Ordering {
    // UTF-8 byte order equals code point order, which differs from UTF-16 order only where
    // a character above U+FFFF meets one in U+E000..=U+FFFF; ASCII names take the fast way.
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// Writes `s` as a JSON string with RFC 8785's minimal escaping.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes a finite double as ECMAScript's `Number.prototype.toString` does (ECMA-262,
/// Number::toString, radix 10), which RFC 8785 §3.2.2.3 adopts.
fn write_f64(out: &mut Vec<u8>, v: f64) -> Result<(), Error> {
    if !v.is_finite() {
        return Err(Error::NotFinite(v.to_string()));
    }
    if v == 0.0 {
        // Both zeros.
        out.push(b'0');
        return Ok(());
    }
    if v < 0.0 {
        out.push(b'-');
    }
    let (digits, n) = shortest_digits(v.abs());
    let k = digits.len() as i32;
    if k <= n && n <= 21 {
        out.extend_from_slice(&digits);
        out.extend(std::iter::repeat_n(b'0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.extend_from_slice(&digits[..n as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-n) as usize));
        out.extend_from_slice(&digits);
    } else {
        out.push(digits[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = n - 1;
        // `write!` to a Vec cannot fail.
        let _ = write!(
            out,
            "e{}{}",
            if e < 0 { '-' } else { '+' },
            e.unsigned_abs()
        );
    }
    Ok(())
}

/// The digits `s` and exponent `n` of ECMA-262's Number::toString for a finite positive
/// double `v`: the fewest digits that read back as `v` (value = 0.s × 10^n), and of those
/// the closest to `v`, and of two equally close the one whose last digit is even.
fn shortest_digits(v: f64) -> (Vec<u8>, i32) {
    // Rust's exponent form gives the fewest digits that read back as `v`, the closest
    // such; it does not promise the even choice between two equally close ones.
    let (digits, exp) = split_sci(&format!("{v:e}"));
    // Two k-digit decimals can both read back as one double only where doubles are
    // farther apart than k-digit decimals, which takes k of 16 or more.
    if digits.len() < 16 {
        return (digits, exp + 1);
    }
    // Two candidates are equally close exactly when `v`'s full decimal expansion (a
    // double has at most 767 significant digits, so 800 shows all of them) is one digit
    // longer than the shortest and ends in 5, midway between the two.
    let (exact, exact_exp) = split_sci(&format!("{v:.800e}"));
    let exact_len = exact.iter().rposition(|d| *d != b'0').map_or(0, |i| i + 1);
    if exact_exp != exp || exact_len != digits.len() + 1 || exact[exact_len - 1] != b'5' {
        return (digits, exp + 1);
    }
    let low = exact[..digits.len()].to_vec();
    let mut high = low.clone();
    for d in high.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            break;
        }
    }
    let reads_back = |ds: &[u8]| {
        let text = format!("0.{}e{}", String::from_utf8_lossy(ds), exp + 1);
        text.parse::<f64>() == Ok(v)
    };
    let even = |ds: &[u8]| ds.last().is_some_and(|d| (d - b'0').is_multiple_of(2));
    for candidate in [low, high] {
        if candidate.first() != Some(&b'0') && even(&candidate) && reads_back(&candidate) {
            return (candidate, exp + 1);
        }
    }
    (digits, exp + 1)
}

/// Splits Rust's exponent form `d.ddde±x` into its digits and its exponent.
fn split_sci(sci: &str) -> (Vec<u8>, i32) {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    (
        mantissa.bytes().filter(u8::is_ascii_digit).collect(),
        exp.parse().unwrap_or(0),
    )
}

fn write_int(out: &mut Vec<u8>, v: impl Display) {
    // `write!` to a Vec cannot fail.
    let _ = write!(out, "{v}");
}

/// The serializer: writes one value at `depth` into `out`.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
}

impl<'a> Writer<'a> {
    fn deeper(&self) -> Result<usize, Error> {
        if self.depth >= MAX_DEPTH {
            Err(Error::TooDeep)
        } else {
            Ok(self.depth + 1)
        }
    }

    fn seq(self, close: &'static [u8]) -> Result<Seq<'a>, Error> {
        let depth = self.deeper()?;
        self.out.push(b'[');
        Ok(Seq {
            out: self.out,
            depth,
            first: true,
            close,
        })
    }

    fn object(self, close: &'static [u8]) -> Result<Object<'a>, Error> {
        let depth = self.deeper()?;
        Ok(Object {
            out: self.out,
            depth,
            members: Vec::new(),
            key: None,
            close,
        })
    }

    /// Opens `{"variant":` for an externally tagged enum variant with content.
    fn variant(self, variant: &str) -> Result<Writer<'a>, Error> {
        let depth = self.deeper()?;
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        Ok(Writer {
            out: self.out,
            depth,
        })
    }
}

/// The serde_json type names of raw JSON and arbitrary-precision numbers: their content is
/// text the serializer cannot see through, so it is refused rather than misread.
const RAW_VALUE: &str = "$serde_json::private::RawValue";
const NUMBER: &str = "$serde_json::private::Number";

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        write_int(self.out, v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        // Canonical JSON numbers are doubles; an f32 is one exactly.
        write_f64(self.out, f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        write_f64(self.out, v)
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        // As serde_json writes bytes: an array of numbers.
        let mut seq = self.seq(b"]")?;
        for b in v {
            ser::SerializeSeq::serialize_element(&mut seq, b)?;
        }
        ser::SerializeSeq::end(seq)
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        match name {
            RAW_VALUE => Err(Error::Unsupported("raw JSON text")),
            NUMBER => Err(Error::Unsupported("an arbitrary-precision number")),
            _ => value.serialize(self),
        }
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let Writer { out, depth } = self.variant(variant)?;
        value.serialize(Writer {
            out: &mut *out,
            depth,
        })?;
        out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>, Error> {
        self.seq(b"]")
    }

    fn serialize_tuple(self, _len: usize) -> Result<Seq<'a>, Error> {
        self.seq(b"]")
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Seq<'a>, Error> {
        self.seq(b"]")
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Seq<'a>, Error> {
        self.variant(variant)?.seq(b"]}")
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Object<'a>, Error> {
        self.object(b"}")
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Object<'a>, Error> {
        self.object(b"}")
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Object<'a>, Error> {
        self.variant(variant)?.object(b"}}")
    }
}

/// An array being written: elements go straight to the output in order.
struct Seq<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
    first: bool,
    close: &'static [u8],
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        value.serialize(Writer {
            out: self.out,
            depth: self.depth,
        })
    }

    fn close(self) -> Result<(), Error> {
        self.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for Seq<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// An object being written: members are collected with their values already written, then
/// sorted by name and emitted when the object ends.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
    members: Vec<(String, Vec<u8>)>,
    key: Option<String>,
    close: &'static [u8],
}

impl Object<'_> {
    fn member<T: Serialize + ?Sized>(&mut self, name: String, value: &T) -> Result<(), Error> {
        let mut buf = Vec::new();
        value.serialize(Writer {
            out: &mut buf,
            depth: self.depth,
        })?;
        self.members.push((name, buf));
        Ok(())
    }

    fn close(mut self) -> Result<(), Error> {
        self.members.sort_by(|a, b| compare_names(&a.0, &b.0));
        if let Some(w) = self.members.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::DuplicateKey(w[0].0.clone()));
        }
        self.out.push(b'{');
        for (i, (name, value)) in self.members.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_str(self.out, name);
            self.out.push(b':');
            self.out.extend_from_slice(value);
        }
        self.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(key.serialize(NameWriter)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let name = self
            .key
            .take()
            .ok_or(Error::Custom("a map value came without its key".into()))?;
        self.member(name, value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.member(key.to_owned(), value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Object<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.member(key.to_owned(), value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// Turns a map key into a member name: strings as they are, and (as serde_json does)
/// integers and characters as their text. Anything else is refused.
struct NameWriter;

impl ser::Serializer for NameWriter {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = ser::Impossible<String, Error>;
    type SerializeTuple = ser::Impossible<String, Error>;
    type SerializeTupleStruct = ser::Impossible<String, Error>;
    type SerializeTupleVariant = ser::Impossible<String, Error>;
    type SerializeMap = ser::Impossible<String, Error>;
    type SerializeStruct = ser::Impossible<String, Error>;
    type SerializeStructVariant = ser::Impossible<String, Error>;

    fn serialize_str(self, v: &str) -> Result<String, Error> {
        Ok(v.to_owned())
    }

    fn serialize_char(self, v: char) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_i8(self, v: i8) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_i16(self, v: i16) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_i32(self, v: i32) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_i64(self, v: i64) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_i128(self, v: i128) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_u8(self, v: u8) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_u16(self, v: u16) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_u32(self, v: u32) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_u64(self, v: u64) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_u128(self, v: u128) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, Error> {
        Ok(variant.to_owned())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, Error> {
        value.serialize(self)
    }

    fn serialize_bool(self, _v: bool) -> Result<String, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_f32(self, _v: f32) -> Result<String, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_f64(self, _v: f64) -> Result<String, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<String, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_none(self) -> Result<String, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_unit(self) -> Result<String, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(Error::KeyNotString)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(Error::KeyNotString)
    }
}
