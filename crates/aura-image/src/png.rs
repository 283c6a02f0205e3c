//! A deterministic PNG encoder: the same pixels always give the same bytes, whatever the
//! version of any compression library, because the compressor is this file's own.
//!
//! # Encoding (version 1)
//!
//! - 8-bit RGB, no interlacing; chunks IHDR, one IDAT, IEND and nothing else (no time,
//!   no text, no gamma); [`with_text`] adds one `iTXt` chunk after IHDR for a caller
//!   that records provenance in the file.
//! - Each row's filter is the one (of PNG's five, in the order None, Sub, Up, Average,
//!   Paeth) whose filtered bytes have the smallest sum of absolute values taken as signed
//!   bytes; ties go to the earlier filter.
//! - The zlib stream is one deflate block with the fixed Huffman codes. Matches are found
//!   greedily with a hash of three bytes and at most 64 candidates per position, newest
//!   first, keeping the first longest (length 3 to 258, distance up to 32,768).

/// An 8-bit RGB image, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

/// Encodes `img` as PNG bytes (see the module documentation for the exact encoding).
pub fn encode_png(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width as usize, img.height as usize);
    debug_assert_eq!(img.pixels.len(), w * h * 3);
    let stride = w * 3;
    let mut raw = Vec::with_capacity(h * (stride + 1));
    let zero = vec![0u8; stride];
    let mut candidates: [Vec<u8>; 5] = Default::default();
    for y in 0..h {
        let row = &img.pixels[y * stride..(y + 1) * stride];
        let prev = if y > 0 {
            &img.pixels[(y - 1) * stride..y * stride]
        } else {
            &zero[..]
        };
        let mut best = 0;
        let mut best_cost = u64::MAX;
        for (f, out) in candidates.iter_mut().enumerate() {
            out.clear();
            for i in 0..stride {
                let a = if i >= 3 { row[i - 3] } else { 0 };
                let b = prev[i];
                let c = if i >= 3 { prev[i - 3] } else { 0 };
                let p = match f {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                    _ => paeth(a, b, c),
                };
                out.push(row[i].wrapping_sub(p));
            }
            let cost: u64 = out
                .iter()
                .map(|&v| u64::from((v as i8).unsigned_abs()))
                .sum();
            if cost < best_cost {
                best_cost = cost;
                best = f;
            }
        }
        raw.push(best as u8);
        raw.extend_from_slice(&candidates[best]);
    }
    let mut png = Vec::new();
    png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&img.width.to_be_bytes());
    ihdr.extend_from_slice(&img.height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib(&raw));
    chunk(&mut png, b"IEND", &[]);
    png
}

/// The signature and IHDR chunk every PNG of ours starts with.
const HEAD: usize = 8 + 4 + 4 + 13 + 4;

/// `png` with an `iTXt` chunk (uncompressed UTF-8 text, no language tag) holding `text`
/// under `keyword`, placed right after IHDR; None if `png` does not start with a PNG
/// signature and IHDR, or the keyword is not 1-79 printable Latin-1 characters without
/// leading, trailing or double spaces (PNG's rule). The pixels' encoding is untouched, so
/// the result is as deterministic as its inputs.
pub fn with_text(png: &[u8], keyword: &str, text: &str) -> Option<Vec<u8>> {
    let keyword_ok = (1..=79).contains(&keyword.len())
        && keyword.bytes().all(|b| (32..=126).contains(&b))
        && !keyword.starts_with(' ')
        && !keyword.ends_with(' ')
        && !keyword.contains("  ");
    if !keyword_ok
        || png.len() < HEAD
        || &png[..8] != b"\x89PNG\r\n\x1a\n"
        || &png[12..16] != b"IHDR"
    {
        return None;
    }
    let mut data = Vec::with_capacity(keyword.len() + 5 + text.len());
    data.extend_from_slice(keyword.as_bytes());
    // Null separator, compression flag 0, method 0, empty language tag, empty
    // translated keyword.
    data.extend_from_slice(&[0, 0, 0, 0, 0]);
    data.extend_from_slice(text.as_bytes());
    let mut out = Vec::with_capacity(png.len() + data.len() + 12);
    out.extend_from_slice(&png[..HEAD]);
    chunk(&mut out, b"iTXt", &data);
    out.extend_from_slice(&png[HEAD..]);
    Some(out)
}

/// The text of the first uncompressed `iTXt` or `tEXt` chunk under `keyword`, if any
/// (chunks are walked by their lengths; a truncated file ends the walk).
pub fn text_of(png: &[u8], keyword: &str) -> Option<String> {
    let mut at = 8;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().ok()?) as usize;
        let kind = &png[at + 4..at + 8];
        let data = png.get(at + 8..at.checked_add(8 + len)?)?;
        let key = data.split(|&b| b == 0).next()?;
        if key == keyword.as_bytes() {
            match kind {
                b"tEXt" => {
                    return Some(
                        data[key.len() + 1..]
                            .iter()
                            .map(|&b| char::from(b))
                            .collect(),
                    );
                }
                b"iTXt" => {
                    let rest = data.get(key.len() + 1..)?;
                    if rest.first() != Some(&0) {
                        return None;
                    }
                    // Skip the flag, the method, the language tag and the translated
                    // keyword (each of the last two ends with a null).
                    let rest = rest.get(2..)?;
                    let lang = rest.iter().position(|&b| b == 0)?;
                    let rest = rest.get(lang + 1..)?;
                    let translated = rest.iter().position(|&b| b == 0)?;
                    return String::from_utf8(rest.get(translated + 1..)?.to_vec()).ok();
                }
                _ => {}
            }
        }
        if kind == b"IEND" {
            break;
        }
        at += 12 + len;
    }
    None
}

/// `png` without its text chunks under `keyword` (what [`with_text`] added), so that two
/// images that differ only in their provenance compare equal; a file whose chunks do not
/// walk to its end is returned as it is.
pub fn without_text(png: &[u8], keyword: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(png.len());
    if png.len() < 8 {
        return png.to_vec();
    }
    out.extend_from_slice(&png[..8]);
    let mut at = 8;
    while at < png.len() {
        let Some(len) = png
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(|b| u32::from_be_bytes(b) as usize)
        else {
            return png.to_vec();
        };
        let Some(whole) = png.get(at..at.saturating_add(12).saturating_add(len)) else {
            return png.to_vec();
        };
        let kind = &whole[4..8];
        let data = &whole[8..8 + len];
        let key = data.split(|&b| b == 0).next().unwrap_or_default();
        if !((kind == b"iTXt" || kind == b"tEXt") && key == keyword.as_bytes()) {
            out.extend_from_slice(whole);
        }
        at += 12 + len;
    }
    out
}

/// Why a PNG could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// Decodes a PNG (any non-interlaced 8-bit image: grey, grey with alpha, RGB, RGBA or
/// palette; 16-bit samples keep their high byte) into 8-bit RGB, alpha dropped. Images of
/// more than `max_pixels` are refused before their data is inflated. The file is
/// untrusted input: every length and index is checked, and nothing panics.
pub fn decode_png(png: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    use std::io::Read as _;
    let fail = |s: &str| Err(DecodeError(s.to_owned()));
    if png.len() < 8 || &png[..8] != b"\x89PNG\r\n\x1a\n" {
        return fail("it is not a PNG file (no PNG signature)");
    }
    let mut at = 8;
    let mut header: Option<(u32, u32, u8, u8, u8)> = None;
    let mut palette: Vec<u8> = Vec::new();
    let mut idat = Vec::new();
    let mut ended = false;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]) as usize;
        let Some(data) = png.get(at + 8..at.saturating_add(8).saturating_add(len)) else {
            return fail("a chunk runs past the end of the file");
        };
        match &png[at + 4..at + 8] {
            b"IHDR" if data.len() == 13 => {
                let w = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let h = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
                if data[10] != 0 || data[11] != 0 {
                    return fail("its compression or filter method is unknown");
                }
                if data[12] != 0 {
                    return fail("it is interlaced; save it without interlacing");
                }
                header = Some((w, h, data[8], data[9], data[12]));
            }
            b"PLTE" => palette = data.to_vec(),
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => {
                ended = true;
                break;
            }
            _ => {}
        }
        at += 12 + len;
    }
    let Some((w, h, depth, color, _)) = header else {
        return fail("it has no image header");
    };
    if !ended {
        return fail("it is truncated (no IEND chunk)");
    }
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > max_pixels {
        return Err(DecodeError(format!(
            "it is {w}x{h}; at most {max_pixels} pixels are accepted"
        )));
    }
    let channels: usize = match (color, depth) {
        (0, 8 | 16) => 1,
        (2, 8 | 16) => 3,
        (3, 8) => 1,
        (4, 8 | 16) => 2,
        (6, 8 | 16) => 4,
        _ => {
            return fail(
                "its colour type or bit depth is not supported (use 8-bit RGB, RGBA, grey or palette)",
            );
        }
    };
    let bytes_per_sample = usize::from(depth / 8);
    let bpp = channels * bytes_per_sample;
    let stride = w as usize * bpp;
    let expected = (stride + 1) * h as usize;
    let mut raw = Vec::with_capacity(expected);
    flate2::read::ZlibDecoder::new(&idat[..])
        .take(expected as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|_| DecodeError("its image data does not inflate".into()))?;
    if raw.len() != expected {
        return fail("its image data is not the size its header says");
    }
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(w as usize * h as usize * 3);
    for row in raw.chunks_exact_mut(stride + 1) {
        let (filter, line) = row.split_at_mut(1);
        for i in 0..stride {
            let a = if i >= bpp { line[i - bpp] } else { 0 };
            let b = prev[i];
            let c = if i >= bpp { prev[i - bpp] } else { 0 };
            let p = match filter[0] {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => paeth(a, b, c),
                _ => return fail("a row has an unknown filter"),
            };
            line[i] = line[i].wrapping_add(p);
        }
        for px in line.chunks_exact(bpp) {
            let sample = |k: usize| px[k * bytes_per_sample];
            match (color, channels) {
                (3, _) => {
                    let i = usize::from(px[0]) * 3;
                    let Some(rgb) = palette.get(i..i + 3) else {
                        return fail("a pixel names a palette entry that does not exist");
                    };
                    pixels.extend_from_slice(rgb);
                }
                (_, 1 | 2) => pixels.extend_from_slice(&[sample(0); 3]),
                _ => pixels.extend_from_slice(&[sample(0), sample(1), sample(2)]),
            }
        }
        prev.copy_from_slice(line);
    }
    Ok(RgbImage {
        width: w,
        height: h,
        pixels,
    })
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// Writes bits least significant first, as deflate wants.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, which deflate stores most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let rev = code.reverse_bits() >> (32 - len);
        self.put(rev, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

fn literal(bits: &mut Bits, sym: u32) {
    match sym {
        0..=143 => bits.code(0x30 + sym, 8),
        144..=255 => bits.code(0x190 + sym - 144, 9),
        256..=279 => bits.code(sym - 256, 7),
        _ => bits.code(0xC0 + sym - 280, 8),
    }
}

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

fn zlib(data: &[u8]) -> Vec<u8> {
    const WINDOW: usize = 32768;
    const HASH: usize = 1 << 15;
    const CHAIN: usize = 64;
    let mut bits = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // final block
    bits.put(1, 2); // fixed Huffman codes
    let mut head = vec![usize::MAX; HASH];
    let mut prev = vec![usize::MAX; data.len()];
    let hash = |i: usize| {
        let v = u32::from(data[i]) | u32::from(data[i + 1]) << 8 | u32::from(data[i + 2]) << 16;
        (v.wrapping_mul(2_654_435_761) >> 17) as usize & (HASH - 1)
    };
    let insert = |head: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        if i + 2 < data.len() {
            let h = hash(i);
            prev[i] = head[h];
            head[h] = i;
        }
    };
    let mut i = 0;
    while i < data.len() {
        let mut best_len = 0;
        let mut best_dist = 0;
        if i + 2 < data.len() {
            let mut cand = head[hash(i)];
            let mut tries = 0;
            let max = 258.min(data.len() - i);
            while cand != usize::MAX && i - cand <= WINDOW && tries < CHAIN {
                let l = data[cand..]
                    .iter()
                    .zip(&data[i..i + max])
                    .take_while(|(a, b)| a == b)
                    .count();
                if l > best_len {
                    best_len = l;
                    best_dist = i - cand;
                    if l == max {
                        break;
                    }
                }
                cand = prev[cand];
                tries += 1;
            }
        }
        if best_len >= 3 {
            let li = LEN_BASE
                .iter()
                .rposition(|&b| usize::from(b) <= best_len)
                .unwrap_or(0);
            literal(&mut bits, 257 + li as u32);
            bits.put(
                (best_len - usize::from(LEN_BASE[li])) as u32,
                u32::from(LEN_EXTRA[li]),
            );
            let di = DIST_BASE
                .iter()
                .rposition(|&b| usize::from(b) <= best_dist)
                .unwrap_or(0);
            bits.code(di as u32, 5);
            bits.put(
                (best_dist - usize::from(DIST_BASE[di])) as u32,
                u32::from(DIST_EXTRA[di]),
            );
            for j in i..i + best_len {
                insert(&mut head, &mut prev, j);
            }
            i += best_len;
        } else {
            literal(&mut bits, u32::from(data[i]));
            insert(&mut head, &mut prev, i);
            i += 1;
        }
    }
    literal(&mut bits, 256);
    let mut out = bits.finish();
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn image(w: u32, h: u32, seed: u32) -> RgbImage {
        let pixels = (0..w * h * 3)
            .map(|i| {
                let (x, y) = ((i / 3) % w, (i / 3) / w);
                // Smooth gradients with some noise: exercises every filter and matches.
                ((x * 3 + y * 5 + (i % 3) * 40) as u8)
                    .wrapping_add(((i.wrapping_mul(seed)) >> 7) as u8 & 7)
            })
            .collect();
        RgbImage {
            width: w,
            height: h,
            pixels,
        }
    }

    /// Decodes a PNG of ours with an independent inflater and PNG's unfiltering rules.
    fn decode(png: &[u8]) -> RgbImage {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut at = 8;
        let (mut w, mut h, mut idat) = (0, 0, Vec::new());
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let kind = &png[at + 4..at + 8];
            let data = &png[at + 8..at + 8 + len];
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc, crc32(&png[at + 4..at + 8 + len]), "crc of {kind:?}");
            match kind {
                b"IHDR" => {
                    w = u32::from_be_bytes(data[..4].try_into().unwrap());
                    h = u32::from_be_bytes(data[4..8].try_into().unwrap());
                    assert_eq!(&data[8..], &[8, 2, 0, 0, 0]);
                }
                b"IDAT" => idat.extend_from_slice(data),
                b"IEND" => {}
                // Ancillary text, which `with_text` adds.
                b"iTXt" => {}
                other => panic!("unexpected chunk {other:?}"),
            }
            at += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..])
            .read_to_end(&mut raw)
            .unwrap();
        let stride = w as usize * 3;
        let mut pixels = vec![0u8; stride * h as usize];
        for y in 0..h as usize {
            let f = raw[y * (stride + 1)];
            for i in 0..stride {
                let x = raw[y * (stride + 1) + 1 + i];
                let a = if i >= 3 {
                    pixels[y * stride + i - 3]
                } else {
                    0
                };
                let b = if y > 0 {
                    pixels[(y - 1) * stride + i]
                } else {
                    0
                };
                let c = if i >= 3 && y > 0 {
                    pixels[(y - 1) * stride + i - 3]
                } else {
                    0
                };
                let p = match f {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                    4 => paeth(a, b, c),
                    _ => panic!("filter {f}"),
                };
                pixels[y * stride + i] = x.wrapping_add(p);
            }
        }
        RgbImage {
            width: w,
            height: h,
            pixels,
        }
    }

    #[test]
    fn pngs_decode_to_their_pixels() {
        for (w, h) in [(1, 1), (7, 3), (64, 64), (300, 17)] {
            for seed in [0, 12345] {
                let img = image(w, h, seed);
                let png = encode_png(&img);
                assert_eq!(decode(&png), img, "{w}x{h}");
                assert_eq!(png, encode_png(&img), "same pixels, same bytes");
            }
        }
        // A flat image compresses to almost nothing (long matches are used).
        let flat = RgbImage {
            width: 256,
            height: 256,
            pixels: vec![200; 256 * 256 * 3],
        };
        assert!(encode_png(&flat).len() < 2000);
        assert_eq!(decode(&encode_png(&flat)), flat);
    }

    /// The bytes of one small image, pinned: a change in the encoder changes every PNG's
    /// digest in every receipt, so it must be deliberate (a new encoding version).
    #[test]
    fn encoding_test_vector() {
        use sha2::{Digest, Sha256};
        let png = encode_png(&image(16, 8, 7));
        let digest = hex::encode(Sha256::digest(&png));
        assert_eq!(
            digest,
            "3d3acfbdc4790f28beaa0135411c17c0c4620978a8598704fa2ba49101b6a459",
            "len {}",
            png.len()
        );
    }

    #[test]
    fn a_text_chunk_keeps_the_pixels_and_reads_back() {
        let img = image(9, 7, 3);
        let png = encode_png(&img);
        let tagged =
            with_text(&png, "aura", "{\"receipt\":\"rcpt_x\",\"prompt\":\"café\"}").unwrap();
        assert_eq!(decode(&tagged), img);
        assert_eq!(
            text_of(&tagged, "aura").as_deref(),
            Some("{\"receipt\":\"rcpt_x\",\"prompt\":\"café\"}")
        );
        assert_eq!(text_of(&png, "aura"), None);
        assert_eq!(without_text(&tagged, "aura"), png);
        assert_eq!(without_text(&tagged, "other"), tagged);
        assert_eq!(text_of(&tagged, "other"), None);
        assert!(with_text(&png, "", "x").is_none());
        assert!(with_text(b"not a png", "aura", "x").is_none());
        // Truncated files end the walk rather than panic.
        for cut in 0..tagged.len() {
            let _ = text_of(&tagged[..cut], "aura");
        }
    }

    #[test]
    fn our_pngs_decode_back_and_bad_files_are_errors() {
        for (w, h) in [(1, 1), (9, 7), (64, 33)] {
            let img = image(w, h, 5);
            let png = with_text(&encode_png(&img), "aura", "x").unwrap();
            assert_eq!(decode_png(&png, 1 << 20).unwrap(), img);
            assert!(decode_png(&png, u64::from(w * h) - 1).is_err() || w * h == 1);
            // Every truncation and a flipped byte anywhere are errors or images, never a
            // panic.
            for cut in 0..png.len() {
                assert!(decode_png(&png[..cut], 1 << 20).is_err());
            }
            for i in 8..png.len() {
                let mut bad = png.clone();
                bad[i] ^= 0x55;
                let _ = decode_png(&bad, 1 << 20);
            }
        }
        assert_eq!(
            decode_png(b"GIF89a", 10).unwrap_err().to_string(),
            "it is not a PNG file (no PNG signature)"
        );
    }

    #[test]
    fn crc_and_adler_match_known_values() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }
}
