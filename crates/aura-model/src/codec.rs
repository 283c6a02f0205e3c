//! Encoding helpers shared by the manifest, license, receipt and statement formats. What
//! a signer signs, and how a signed document is carried, is `aura_core::signed`'s one rule
//! for every statement Aura signs.

use aura_core::encoding::{DecodeError, DecodeErrorKind, Decoder, Encoder};
use aura_core::{PublicKey, Signature, Timestamp};

/// Writes a string with a u16 length prefix. Callers validate lengths when a value is
/// built, so the clamp below never cuts a valid value; it only keeps a bug from writing a
/// prefix that disagrees with the bytes.
pub(crate) fn put_str(e: &mut Encoder, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    e.u16(len).raw(&s.as_bytes()[..usize::from(len)]);
}

/// Reads a UTF-8 string with a u16 length prefix, refusing more than `max` bytes.
pub(crate) fn get_str(
    d: &mut Decoder<'_>,
    field: &'static str,
    max: usize,
) -> Result<String, DecodeError> {
    let at = d.position();
    let bytes = d.bytes16(field)?;
    if bytes.len() > max {
        return Err(invalid_at(at, field, "is longer than allowed"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid_at(at, field, "is not valid UTF-8"))
}

pub(crate) fn put_key(e: &mut Encoder, key: &PublicKey) {
    e.raw(&key.to_bytes());
}

pub(crate) fn get_key(d: &mut Decoder<'_>, field: &'static str) -> Result<PublicKey, DecodeError> {
    let at = d.position();
    let bytes: [u8; 32] = d.array(field)?;
    PublicKey::from_bytes(&bytes).map_err(|_| invalid_at(at, field, "is not an ed25519 key"))
}

pub(crate) fn get_time(d: &mut Decoder<'_>, field: &'static str) -> Result<Timestamp, DecodeError> {
    Ok(Timestamp::from_nanos(d.u64(field)?))
}

pub(crate) fn get_signature(d: &mut Decoder<'_>) -> Result<Signature, DecodeError> {
    Ok(Signature(d.array("signature")?))
}

/// Reads a u32 count and refuses one above `max`, before anything is allocated for it.
pub(crate) fn get_count(
    d: &mut Decoder<'_>,
    field: &'static str,
    max: usize,
) -> Result<usize, DecodeError> {
    let at = d.position();
    let n = d.u32(field)? as usize;
    if n > max {
        return Err(invalid_at(at, field, "has more items than allowed"));
    }
    Ok(n)
}

/// Writes a count that the value's validation has bounded far below `u32::MAX`.
pub(crate) fn put_count(e: &mut Encoder, n: usize) {
    e.u32(u32::try_from(n).unwrap_or(u32::MAX));
}

pub(crate) fn invalid_at(offset: usize, field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError {
        offset,
        kind: DecodeErrorKind::Invalid { field, reason },
    }
}

pub(crate) fn unknown_version(field: &'static str, value: u8) -> DecodeError {
    DecodeError {
        offset: 0,
        kind: DecodeErrorKind::UnknownVersion {
            field,
            value: value.into(),
        },
    }
}

/// Whether `s` is a short lowercase name: 1-64 of `[a-z0-9._-]`, starting with a letter
/// or digit. Package names and currency units use this shape, so they are safe as file
/// names and unambiguous on the command line.
pub(crate) fn is_simple_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_are_bounded() {
        let mut e = Encoder::new();
        put_str(&mut e, "hello");
        let bytes = e.finish();
        assert_eq!(get_str(&mut Decoder::new(&bytes), "s", 5).unwrap(), "hello");
        assert!(get_str(&mut Decoder::new(&bytes), "s", 4).is_err());
        assert!(get_str(&mut Decoder::new(&[0, 1, 0xff]), "s", 4).is_err());
    }

    #[test]
    fn simple_names() {
        for good in ["smollm2", "a", "mix-8x7b.q4_1", "usd-micro"] {
            assert!(is_simple_name(good, 64), "{good}");
        }
        for bad in ["", "Smol", "-x", ".x", "a b", "a/b", &"x".repeat(65)] {
            assert!(!is_simple_name(bad, 64), "{bad}");
        }
    }
}
