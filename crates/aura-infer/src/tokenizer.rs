//! The tokenizer: Hugging Face `tokenizers` (pure Rust, fancy-regex), built from a
//! tokenizer.json or from the byte-level BPE vocabulary a GGUF file carries.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Text to token ids and back. Decoding what was encoded gives the text back.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Token ids that end generation.
    eos: Vec<u32>,
    bos: Option<u32>,
    add_bos: bool,
    vocab_size: usize,
    /// Token id → its string form (for grammar engines and logprobs).
    pieces: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("eos", &self.eos)
            .field("bos", &self.bos)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a tokenizer.json.
    pub fn from_json_bytes(
        bytes: &[u8],
        bos: Option<u32>,
        eos: Vec<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer(one_line(&*e)))?;
        Ok(Self::wrap(inner, bos, eos, add_bos))
    }

    fn wrap(
        mut inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Vec<u32>,
        add_bos: bool,
    ) -> Self {
        // Requests are never padded, and truncation is the caller's decision: a
        // tokenizer.json's own settings for either (MiniLM's pads to 128) are dropped.
        inner.with_padding(None);
        let _ = inner.with_truncation(None);
        let vocab_size = inner.get_vocab_size(true);
        let mut pieces = vec![String::new(); vocab_size];
        for (piece, id) in inner.get_vocab(true) {
            if let Some(p) = pieces.get_mut(id as usize) {
                *p = piece;
            }
        }
        Self {
            inner,
            eos,
            bos,
            add_bos,
            vocab_size,
            pieces,
        }
    }

    /// Builds the tokenizer a GGUF file describes (`tokenizer.ggml.*`). Supports the
    /// byte-level BPE model (`gpt2`) with the pre-tokenizers of SmolLM2, GPT-2, Llama 3
    /// and Qwen2.
    pub(crate) fn from_gguf(meta: &GgufTokenizerMeta) -> Result<Self> {
        if meta.model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "gguf tokenizer model '{}' (only byte-level BPE, 'gpt2', is built from gguf; ship a tokenizer.json instead)",
                meta.model
            )));
        }
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
        let pre = match meta.pre.as_str() {
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            "gpt2" | "default" | "" => byte_level(true),
            "llama3" | "llama-bpe" | "qwen2" => {
                let digits = if meta.pre == "qwen2" {
                    r"\p{N}"
                } else {
                    r"\p{N}{1,3}"
                };
                let pattern = format!(
                    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|{digits}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
                );
                json!({"type": "Sequence", "pretokenizers": [split(&pattern), byte_level(false)]})
            }
            other => {
                return Err(Error::Unsupported(format!("gguf pre-tokenizer '{other}'")));
            }
        };
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        for (id, token) in meta.tokens.iter().enumerate() {
            vocab.insert(token.clone(), json!(id));
            // Types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
            let ty = meta.types.get(id).copied().unwrap_or(1);
            if ty == 3 || ty == 4 {
                added.push(
                    json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": ty == 3}),
                );
            }
        }
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": Value::Object(vocab), "merges": meta.merges},
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Tokenizer(one_line(&*e)))?;
        Ok(Self::wrap(inner, meta.bos, meta.eos.clone(), meta.add_bos))
    }

    /// Encodes text. With `add_special`, a beginning-of-sequence token is prepended where
    /// the model asks for one. Special tokens written in the text (e.g. `<|im_start|>`)
    /// become their ids, as chat templates expect.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(one_line(&*e)))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special
            && self.add_bos
            && let Some(bos) = self.bos
            && enc.get_ids().first() != Some(&bos)
        {
            ids.push(bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the vocabulary"
            )));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(one_line(&*e)))
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Token ids that end generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// The beginning-of-sequence id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The string form of a token as the vocabulary stores it (byte-level BPE pieces use
    /// the GPT-2 byte-to-character mapping).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The id of a token given in its vocabulary form (e.g. `<|im_end|>`).
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// Ids of special (control) tokens, which constrained decoding never emits.
    pub fn special_ids(&self) -> std::collections::HashSet<u32> {
        let mut ids: std::collections::HashSet<u32> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        ids.extend(self.eos.iter().copied());
        ids.extend(self.bos);
        ids
    }

    /// The underlying `tokenizers` tokenizer (for grammar engines that build a token trie).
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// What a GGUF file says about its tokenizer.
#[derive(Debug, Default)]
pub(crate) struct GgufTokenizerMeta {
    pub(crate) model: String,
    pub(crate) pre: String,
    pub(crate) tokens: Vec<String>,
    pub(crate) types: Vec<i32>,
    pub(crate) merges: Vec<String>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Vec<u32>,
    pub(crate) add_bos: bool,
}

fn one_line(e: &(dyn std::error::Error + Send + Sync)) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("tokenizer error")
        .to_owned()
}

/// Parses the ids of a tokenizer.json's added tokens by content (used to find EOS ids
/// named in tokenizer_config.json).
pub(crate) fn added_token_ids(tokenizer_json: &Value) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    if let Some(list) = tokenizer_json.get("added_tokens").and_then(Value::as_array) {
        for t in list {
            if let (Some(c), Some(id)) = (
                t.get("content").and_then(Value::as_str),
                t.get("id").and_then(Value::as_u64),
            ) {
                out.insert(c.to_owned(), id as u32);
            }
        }
    }
    out
}
