//! The image routes' output formats beside PNG: baseline JPEG and lossless WebP, each
//! carrying the same text record (the receipt id and parameters) that a PNG carries in its
//! `iTXt` chunk ([`crate::png::with_text`]).
//!
//! Both encoders are pure Rust and run only scalar code (jpeg-encoder's `simd` feature is
//! off), so, as for Aura's PNG encoder, the same pixels and options give the same bytes on
//! every machine; the receipt hashes those bytes.
//!
//! - **JPEG** (jpeg-encoder): baseline, quality 1-100 (OpenAI's `output_compression`; below
//!   90 the chroma is subsampled 2x2, as jpeg-encoder chooses), JFIF. The record is a comment
//!   (`COM`) segment right after the JFIF header: the keyword, a zero byte, then the UTF-8
//!   text (as a PNG `iTXt` chunk starts), at most 65,533 bytes in all.
//! - **WebP** (image-webp): lossless VP8L, so the pixels decode exactly; the record is the
//!   file's XMP chunk, one `rdf:Description` whose element `aura:<keyword>` holds the text,
//!   XML-escaped.

use crate::png::RgbImage;

/// Which file an image is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aura's deterministic PNG encoder ([`crate::png`]).
    #[default]
    Png,
    /// Baseline JPEG at `quality` (1-100).
    Jpeg { quality: u8 },
    /// Lossless WebP.
    Webp,
}

impl OutputFormat {
    /// The format OpenAI's `output_format` names, with its `output_compression` (0-100,
    /// default 100; JPEG's quality, at least 1; WebP is lossless and takes only 100). A
    /// refusal names the field at fault and why.
    pub fn parse(name: &str, compression: Option<u8>) -> Result<Self, (&'static str, String)> {
        let compression = compression.unwrap_or(100);
        if compression > 100 {
            return Err(("output_compression", "must be between 0 and 100".into()));
        }
        match name {
            "png" | "webp" if compression != 100 => Err((
                "output_compression",
                format!(
                    "applies to jpeg; {name} is written lossless here (leave it out or set 100)"
                ),
            )),
            "png" => Ok(Self::Png),
            "webp" => Ok(Self::Webp),
            "jpeg" | "jpg" => Ok(Self::Jpeg {
                quality: compression.max(1),
            }),
            other => Err((
                "output_format",
                format!("`{other}` is not png, jpeg or webp"),
            )),
        }
    }

    /// Its name in OpenAI's `output_format`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg { .. } => "jpeg",
            Self::Webp => "webp",
        }
    }

    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg { .. } => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }
}

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("the record is {0} bytes; a JPEG comment holds at most 65,533")]
    RecordTooLong(usize),
    #[error("the keyword must be 1 to 79 ASCII letters")]
    Keyword,
    #[error("the pixels are not width x height x 3 bytes")]
    Shape,
    #[error("the {0} encoder failed: {1}")]
    Encoder(&'static str, String),
}

/// Writes `img` as `format` with `text` filed under `keyword`.
pub fn encode(
    img: &RgbImage,
    format: OutputFormat,
    keyword: &str,
    text: &str,
) -> Result<Vec<u8>, EncodeError> {
    if keyword.is_empty() || keyword.len() > 79 || !keyword.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return Err(EncodeError::Keyword);
    }
    let (w, h) = (img.width, img.height);
    if img.pixels.len() as u64 != u64::from(w) * u64::from(h) * 3 {
        return Err(EncodeError::Shape);
    }
    match format {
        OutputFormat::Png => crate::png::with_text(&crate::png::encode_png(img), keyword, text)
            .ok_or_else(|| EncodeError::Encoder("png", "no header".into())),
        OutputFormat::Jpeg { quality } => jpeg(img, quality, keyword, text),
        OutputFormat::Webp => webp(img, keyword, text),
    }
}

fn jpeg(img: &RgbImage, quality: u8, keyword: &str, text: &str) -> Result<Vec<u8>, EncodeError> {
    let payload_len = keyword.len() + 1 + text.len();
    if payload_len > 65_533 {
        return Err(EncodeError::RecordTooLong(payload_len));
    }
    let (w, h) = (
        u16::try_from(img.width).map_err(|_| EncodeError::Shape)?,
        u16::try_from(img.height).map_err(|_| EncodeError::Shape)?,
    );
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(&img.pixels, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| EncodeError::Encoder("jpeg", e.to_string()))?;
    // After SOI and the JFIF APP0 segment (JFIF asks for APP0 first).
    let at = jfif_end(&out).ok_or_else(|| EncodeError::Encoder("jpeg", "no JFIF header".into()))?;
    let mut segment = Vec::with_capacity(4 + payload_len);
    segment.extend_from_slice(&[0xFF, 0xFE]);
    segment.extend_from_slice(&((payload_len + 2) as u16).to_be_bytes());
    segment.extend_from_slice(keyword.as_bytes());
    segment.push(0);
    segment.extend_from_slice(text.as_bytes());
    out.splice(at..at, segment);
    Ok(out)
}

/// Where the JFIF APP0 segment after SOI ends (or, without one, where SOI ends).
fn jfif_end(jpeg: &[u8]) -> Option<usize> {
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    if jpeg.get(2..4)? == [0xFF, 0xE0] {
        let len = usize::from(u16::from_be_bytes([*jpeg.get(4)?, *jpeg.get(5)?]));
        return (4 + len <= jpeg.len()).then_some(4 + len);
    }
    Some(2)
}

/// The text filed under `keyword` in a JPEG's comment segments (None when there is none).
pub fn jpeg_text(jpeg: &[u8], keyword: &str) -> Option<String> {
    let mut at = 2;
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    // Segments up to the start of scan: marker, then a length that counts itself.
    while let Some(&[0xFF, marker, hi, lo]) = jpeg.get(at..at + 4) {
        if marker == 0xDA {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let body = jpeg.get(at + 4..at + 2 + len)?;
        if marker == 0xFE
            && let Some(rest) = body.strip_prefix(keyword.as_bytes())
            && let Some(text) = rest.strip_prefix(&[0])
        {
            return String::from_utf8(text.to_vec()).ok();
        }
        at += 2 + len;
    }
    None
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn webp(img: &RgbImage, keyword: &str, text: &str) -> Result<Vec<u8>, EncodeError> {
    let xmp = format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?><x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\"><rdf:Description rdf:about=\"\" xmlns:aura=\"urn:aura:image:1\"><aura:{keyword}>{}</aura:{keyword}></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end=\"r\"?>",
        xml_escape(text)
    );
    let mut out = Vec::new();
    let mut encoder = image_webp::WebPEncoder::new(&mut out);
    encoder.set_xmp_metadata(xmp.into_bytes());
    encoder
        .encode(
            &img.pixels,
            img.width,
            img.height,
            image_webp::ColorType::Rgb8,
        )
        .map_err(|e| EncodeError::Encoder("webp", e.to_string()))?;
    Ok(out)
}

/// The text filed under `keyword` in a WebP's XMP chunk (None when there is none).
pub fn webp_text(webp: &[u8], keyword: &str) -> Option<String> {
    if webp.get(..4)? != b"RIFF" || webp.get(8..12)? != b"WEBP" {
        return None;
    }
    let mut at = 12;
    while let Some(head) = webp.get(at..at + 8) {
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let body = webp.get(at + 8..(at + 8).checked_add(len)?)?;
        if &head[..4] == b"XMP " {
            let xmp = std::str::from_utf8(body).ok()?;
            let open = format!("<aura:{keyword}>");
            let start = xmp.find(&open)? + open.len();
            let end = start + xmp[start..].find(&format!("</aura:{keyword}>"))?;
            return Some(xml_unescape(&xmp[start..end]));
        }
        // Chunks are padded to an even length.
        at += 8 + len + (len & 1);
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn picture() -> RgbImage {
        let (width, height) = (37, 21);
        let pixels = (0..width * height * 3)
            .map(|i| ((i * 7919) % 251) as u8)
            .collect();
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    const RECORD: &str = r#"{"receipt":"r-1","parameters":{"prompt_sha256":"<&>\"'"}}"#;

    #[test]
    fn webp_is_lossless_and_carries_the_record() {
        let img = picture();
        let bytes = encode(&img, OutputFormat::Webp, "aura", RECORD).unwrap();
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(webp_text(&bytes, "aura").as_deref(), Some(RECORD));
        let mut decoder =
            image_webp::WebPDecoder::new(std::io::Cursor::new(bytes.as_slice())).unwrap();
        let (w, h) = decoder.dimensions();
        assert_eq!((w, h), (img.width, img.height));
        assert!(!decoder.has_alpha());
        let mut pixels = vec![0; decoder.output_buffer_size().unwrap()];
        decoder.read_image(&mut pixels).unwrap();
        assert_eq!(pixels, img.pixels, "lossless: the same pixels back");
    }

    #[test]
    fn jpeg_is_a_jfif_file_with_the_record_in_a_comment() {
        let img = picture();
        let bytes = encode(&img, OutputFormat::Jpeg { quality: 80 }, "aura", RECORD).unwrap();
        assert_eq!(&bytes[..4], [0xFF, 0xD8, 0xFF, 0xE0]);
        assert_eq!(&bytes[bytes.len() - 2..], [0xFF, 0xD9]);
        assert_eq!(jpeg_text(&bytes, "aura").as_deref(), Some(RECORD));
        assert_eq!(jpeg_text(&bytes, "other"), None);
        // A lower quality is a smaller file.
        let small = encode(&img, OutputFormat::Jpeg { quality: 10 }, "aura", RECORD).unwrap();
        assert!(small.len() < bytes.len());
    }

    #[test]
    fn the_same_pixels_give_the_same_bytes() {
        let img = picture();
        for format in [
            OutputFormat::Png,
            OutputFormat::Jpeg { quality: 100 },
            OutputFormat::Webp,
        ] {
            assert_eq!(
                encode(&img, format, "aura", RECORD).unwrap(),
                encode(&img, format, "aura", RECORD).unwrap()
            );
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(OutputFormat::parse("gif", None).is_err());
        assert!(OutputFormat::parse("jpeg", Some(101)).is_err());
        assert!(OutputFormat::parse("webp", Some(50)).is_err());
        assert!(OutputFormat::parse("png", Some(80)).is_err());
        assert_eq!(
            OutputFormat::parse("jpeg", Some(0)).unwrap(),
            OutputFormat::Jpeg { quality: 1 }
        );
        assert_eq!(
            OutputFormat::parse("jpeg", None).unwrap(),
            OutputFormat::Jpeg { quality: 100 }
        );
        let img = picture();
        let long = "x".repeat(70_000);
        assert!(matches!(
            encode(&img, OutputFormat::Jpeg { quality: 90 }, "aura", &long),
            Err(EncodeError::RecordTooLong(_))
        ));
        assert!(matches!(
            encode(&img, OutputFormat::Webp, "no spaces", "x"),
            Err(EncodeError::Keyword)
        ));
        let bad = RgbImage {
            width: 4,
            height: 4,
            pixels: vec![0; 5],
        };
        assert!(matches!(
            encode(&bad, OutputFormat::Webp, "aura", "x"),
            Err(EncodeError::Shape)
        ));
    }

    #[test]
    fn reading_hostile_files_never_panics() {
        for bytes in [
            &b""[..],
            &[0xFF, 0xD8],
            &[0xFF, 0xD8, 0xFF, 0xFE, 0xFF, 0xFF, b'a'],
            &[0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x00],
            b"RIFF\0\0\0\0WEBPXMP \xff\xff\xff\xff",
            b"RIFF\0\0\0\0WEBPXMP \x04\0\0\0<aur",
        ] {
            assert_eq!(jpeg_text(bytes, "aura"), None);
            assert_eq!(webp_text(bytes, "aura"), None);
        }
    }
}
