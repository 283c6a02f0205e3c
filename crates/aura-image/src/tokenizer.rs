//! CLIP's byte-level BPE tokenizer (the one every Stable Diffusion text encoder uses),
//! read from OpenCLIP's `bpe_simple_vocab_16e6.txt.gz` or from a diffusers folder's
//! `tokenizer/vocab.json` and `merges.txt`.
//!
//! Text is cleaned as OpenCLIP's `lower` cleaner does without `ftfy`: runs of whitespace
//! become one space, the ends are trimmed, and the text is lowercased; `ftfy`'s repairs of
//! broken Unicode and HTML unescaping are not applied (prompts rarely need them).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use regex::Regex;

use crate::error::{Error, Result};

/// Tokens in a CLIP prompt, start and end tokens included.
pub const CONTEXT_LENGTH: usize = 77;

/// A CLIP BPE tokenizer.
#[derive(Clone, Debug)]
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), u32>,
    byte_encoder: Vec<char>,
    pattern: Regex,
    bos: u32,
    eos: u32,
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(u32::from('¡')..=u32::from('¬'))
        .chain(u32::from('®')..=u32::from('ÿ'))
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec!['\0'; 256];
    for (b, c) in bs.iter().zip(&cs) {
        out[*b as usize] = char::from_u32(*c).unwrap_or('\0');
    }
    out
}

/// The printable characters in the order OpenCLIP lists them (its first 256 ids).
fn byte_chars_in_vocab_order() -> Vec<char> {
    let enc = bytes_to_unicode();
    let mut bs: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(u32::from('¡')..=u32::from('¬'))
        .chain(u32::from('®')..=u32::from('ÿ'))
        .collect();
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
        }
    }
    bs.iter().map(|&b| enc[b as usize]).collect()
}

const PATTERN: &str = r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

impl ClipTokenizer {
    /// Reads OpenCLIP's gzipped merges file (`bpe_simple_vocab_16e6.txt.gz`).
    pub fn from_bpe_gz(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::from_bpe_text(&text)
    }

    /// Builds the tokenizer from the merges text (a header line, then one merge per line),
    /// exactly as OpenCLIP's `SimpleTokenizer` does: 256 byte tokens, the same with `</w>`,
    /// the first 48,894 merges, then the start and end tokens (49,408 ids).
    pub fn from_bpe_text(text: &str) -> Result<Self> {
        const MERGES: usize = 49152 - 256 - 2;
        let lines: Vec<&str> = text.split('\n').skip(1).take(MERGES).collect();
        let merges = parse_merges(&lines)?;
        if merges.len() != MERGES {
            return Err(Error::Tokenizer(format!(
                "the bpe file has {} merges, expected {MERGES}",
                merges.len()
            )));
        }
        let mut vocab: Vec<String> = byte_chars_in_vocab_order()
            .iter()
            .map(char::to_string)
            .collect();
        let with_end: Vec<String> = vocab.iter().map(|v| format!("{v}</w>")).collect();
        vocab.extend(with_end);
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<|startoftext|>".into());
        vocab.push("<|endoftext|>".into());
        let encoder = vocab
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, i as u32))
            .collect();
        Self::build(encoder, merges)
    }

    /// Reads a diffusers folder's `vocab.json` (token to id) and `merges.txt`.
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| Error::Io {
                path: p.to_owned(),
                source,
            })
        };
        let encoder: HashMap<String, u32> = serde_json::from_str(&read(vocab)?)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", vocab.display())))?;
        let text = read(merges)?;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#version"))
            .collect();
        let merges = parse_merges(&lines)?;
        Self::build(encoder, merges)
    }

    fn build(encoder: HashMap<String, u32>, merges: Vec<(String, String)>) -> Result<Self> {
        let id = |t: &str| {
            encoder
                .get(t)
                .copied()
                .ok_or_else(|| Error::Tokenizer(format!("the vocabulary lacks {t}")))
        };
        let (bos, eos) = (id("<|startoftext|>")?, id("<|endoftext|>")?);
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i as u32))
            .collect();
        let pattern = Regex::new(PATTERN).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Self {
            encoder,
            ranks,
            byte_encoder: bytes_to_unicode(),
            pattern,
            bos,
            eos,
        })
    }

    /// The start-of-text id.
    pub fn bos(&self) -> u32 {
        self.bos
    }

    /// The end-of-text id.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// The number of ids.
    pub fn vocab_size(&self) -> usize {
        self.encoder.len()
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.encoder.get(token).copied()
    }

    /// The ids of `text`, without start or end tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let clean = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let mut ids = Vec::new();
        for m in self.pattern.find_iter(&clean) {
            let piece = m.as_str();
            if let Some(&id) = self.encoder.get(piece)
                && (piece == "<|startoftext|>" || piece == "<|endoftext|>")
            {
                ids.push(id);
                continue;
            }
            let chars: String = piece
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            for tok in self.bpe(&chars) {
                // Every byte and every merge result is in the vocabulary by construction;
                // a vocabulary file missing one loses that piece rather than failing.
                if let Some(&id) = self.encoder.get(&tok) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// `[start] + ids(text)[..75] + [end]`, padded with `pad` to [`CONTEXT_LENGTH`].
    pub fn encode_padded(&self, text: &str, pad: u32) -> Vec<u32> {
        let mut ids = vec![self.bos];
        ids.extend(self.encode(text).into_iter().take(CONTEXT_LENGTH - 2));
        ids.push(self.eos);
        ids.resize(CONTEXT_LENGTH, pad);
        ids
    }

    fn bpe(&self, token: &str) -> Vec<String> {
        let chars: Vec<char> = token.chars().collect();
        let Some((&last, rest)) = chars.split_last() else {
            return vec![];
        };
        let mut word: Vec<String> = rest.iter().map(char::to_string).collect();
        word.push(format!("{last}</w>"));
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|p| {
                    self.ranks
                        .get(&(p[0].clone(), p[1].clone()))
                        .map(|&r| (r, p[0].clone(), p[1].clone()))
                })
                .min();
            let Some((_, first, second)) = best else {
                break;
            };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }
}

fn parse_merges(lines: &[&str]) -> Result<Vec<(String, String)>> {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(b), None) => Ok((a.to_owned(), b.to_owned())),
                _ => Err(Error::Tokenizer(format!("bad merge line {l:?}"))),
            }
        })
        .collect()
}
