//! Sentence embeddings with a BERT-family encoder (all-MiniLM-L6-v2 and its kin): the
//! encoder runs on the engine's f32 kernels, then mean pooling over the tokens and L2
//! normalisation, as the sentence-transformers model card specifies. Deterministic like
//! the decoder: work is split only across heads and output rows.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::kernels;
use crate::matrix::{Compute, Matrix};
use crate::{LoadOptions, ModelFiles, RuntimeFingerprint, Tokenizer};

/// Word pieces per text beyond which the input is truncated (the model card's
/// `max_seq_length` for all-MiniLM-L6-v2).
pub const DEFAULT_MAX_TOKENS: usize = 256;

struct Linear {
    w: Matrix,
    b: Vec<f32>,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct EncoderLayer {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    ffn_norm: Norm,
}

/// Embeddings of a batch of texts.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// One unit-length vector per text.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens each text was encoded to (special tokens included), after truncation.
    pub token_counts: Vec<u32>,
}

/// A loaded BERT-family encoder.
pub struct EmbeddingModel {
    tokenizer: Tokenizer,
    word: Matrix,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<EncoderLayer>,
    dim: usize,
    heads: usize,
    eps: f32,
    max_tokens: usize,
    compute: Compute,
    fingerprint: RuntimeFingerprint,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("dim", &self.dim)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl EmbeddingModel {
    /// Loads an encoder from safetensors files (config.json, tokenizer.json, weights).
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let ModelFiles::Safetensors {
            config,
            tokenizer,
            weights,
            ..
        } = files
        else {
            return Err(Error::Unsupported(
                "embedding models load from safetensors".into(),
            ));
        };
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| Error::Io {
                path: p.to_owned(),
                source,
            })
        };
        let cfg: Value = serde_json::from_slice(&read(config)?)
            .map_err(|e| Error::model(format!("config.json: {e}")))?;
        if cfg.get("model_type").and_then(Value::as_str) != Some("bert") {
            return Err(Error::Unsupported(
                "embedding models must be BERT-family (model_type bert)".into(),
            ));
        }
        let get = |k: &str| {
            cfg.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| Error::model(format!("config.json lacks {k}")))
        };
        let (dim, heads, n_layer, ffn) = (
            get("hidden_size")?,
            get("num_attention_heads")?,
            get("num_hidden_layers")?,
            get("intermediate_size")?,
        );
        let max_pos = get("max_position_embeddings")?;
        if dim == 0
            || heads == 0
            || !dim.is_multiple_of(heads)
            || n_layer == 0
            || n_layer > 256
            || max_pos == 0
        {
            return Err(Error::model("inconsistent encoder dimensions"));
        }
        if cfg
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu")
            != "gelu"
        {
            return Err(Error::Unsupported("only the gelu activation runs".into()));
        }
        let eps = cfg
            .get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-12) as f32;
        let mut w = Weights(HashMap::new());
        for p in weights {
            let part = candle_core::safetensors::load(p, &Device::Cpu).map_err(|e| {
                Error::model(format!(
                    "{}: {}",
                    p.display(),
                    e.to_string().lines().next().unwrap_or_default()
                ))
            })?;
            for (name, t) in part {
                // Hugging Face exports sometimes prefix every name with the model's name.
                let name = name.strip_prefix("bert.").unwrap_or(&name).to_owned();
                if w.0.insert(name.clone(), t).is_some() {
                    return Err(Error::model(format!(
                        "tensor {name} appears in more than one shard"
                    )));
                }
            }
        }
        let vocab = get("vocab_size")?;
        let word = Matrix::from_f32(
            vocab,
            dim,
            w.take("embeddings.word_embeddings.weight", &[vocab, dim])?,
        )?;
        let position = w.take("embeddings.position_embeddings.weight", &[max_pos, dim])?;
        let types = get("type_vocab_size").unwrap_or(2).max(1);
        let token_type =
            w.take("embeddings.token_type_embeddings.weight", &[types, dim])?[..dim].to_vec();
        let emb_norm = w.norm("embeddings.LayerNorm", dim)?;
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let p = |s: &str| format!("encoder.layer.{i}.{s}");
            layers.push(EncoderLayer {
                q: w.linear(&p("attention.self.query"), dim, dim)?,
                k: w.linear(&p("attention.self.key"), dim, dim)?,
                v: w.linear(&p("attention.self.value"), dim, dim)?,
                out: w.linear(&p("attention.output.dense"), dim, dim)?,
                attn_norm: w.norm(&p("attention.output.LayerNorm"), dim)?,
                up: w.linear(&p("intermediate.dense"), ffn, dim)?,
                down: w.linear(&p("output.dense"), dim, ffn)?,
                ffn_norm: w.norm(&p("output.LayerNorm"), dim)?,
            });
        }
        let tok_bytes = read(tokenizer)?;
        let tokenizer = Tokenizer::from_json_bytes(&tok_bytes, None, Vec::new(), false)?;
        let variant = match opts.kernel {
            Some(v) if !v.is_supported() => {
                return Err(Error::Options(format!(
                    "this cpu cannot run the {} kernels",
                    v.name()
                )));
            }
            Some(v) => v,
            None => kernels::KernelVariant::detect(),
        };
        let threads = opts
            .threads
            .unwrap_or_else(rayon::current_num_threads)
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("aura-embed-{i}"))
            .build()
            .map_err(|e| Error::Options(format!("cannot start {threads} threads: {e}")))?;
        let fingerprint = RuntimeFingerprint {
            engine: "aura-infer".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            backend: "cpu".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            kernel: variant.name().into(),
        };
        Ok(Self {
            tokenizer,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            dim,
            heads,
            eps,
            max_tokens: DEFAULT_MAX_TOKENS.min(max_pos),
            compute: Compute {
                variant,
                pool: Some(std::sync::Arc::new(pool)),
            },
            fingerprint,
        })
    }

    /// Length of each vector.
    pub fn dimension(&self) -> usize {
        self.dim
    }

    /// The runtime fingerprint for receipts.
    pub fn fingerprint(&self) -> RuntimeFingerprint {
        self.fingerprint.clone()
    }

    /// The encoder's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embeds each text (truncated to 256 word pieces): unit-length vectors.
    pub fn embed(&self, texts: &[String]) -> Result<Embeddings> {
        let mut out = Embeddings {
            vectors: Vec::with_capacity(texts.len()),
            token_counts: Vec::with_capacity(texts.len()),
        };
        for text in texts {
            let enc = self
                .tokenizer
                .hf()
                .encode_fast(text.as_str(), true)
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            let mut ids = enc.get_ids().to_vec();
            if ids.len() > self.max_tokens {
                // Keep the closing [SEP] as truncation in the reference implementation does.
                let last = ids[ids.len() - 1];
                ids.truncate(self.max_tokens);
                ids[self.max_tokens - 1] = last;
            }
            if ids.is_empty() {
                return Err(Error::InvalidRequest("a text encoded to no tokens".into()));
            }
            let v = self.compute.install(|| self.encode(&ids))?;
            out.token_counts.push(ids.len() as u32);
            out.vectors.push(v);
        }
        Ok(out)
    }

    fn encode(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let (d, t) = (self.dim, ids.len());
        let cx = &self.compute;
        let mut x = vec![0.0f32; t * d];
        for (pos, (row, &id)) in x.chunks_exact_mut(d).zip(ids).enumerate() {
            if id as usize >= self.word.rows {
                return Err(Error::InvalidRequest(format!(
                    "token id {id} is outside the vocabulary"
                )));
            }
            self.word.row_into(id as usize, row);
            for ((r, p), ty) in row
                .iter_mut()
                .zip(&self.position[pos * d..(pos + 1) * d])
                .zip(&self.token_type)
            {
                *r = *r + p + ty;
            }
        }
        layer_norm(&mut x, &self.emb_norm, self.eps);
        let hd = d / self.heads;
        let scale = 1.0 / (hd as f32).sqrt();
        for l in &self.layers {
            let q = l.q.apply(cx, &x, t);
            let k = l.k.apply(cx, &x, t);
            let v = l.v.apply(cx, &x, t);
            let mut ctx = vec![0.0f32; t * d];
            // Bidirectional attention, one task per (token, head); no padding (one text
            // per pass), so no mask.
            let variant = cx.variant;
            ctx.par_chunks_exact_mut(hd)
                .enumerate()
                .for_each(|(index, o)| {
                    let (ti, h) = (index / self.heads, index % self.heads);
                    let qv = &q[ti * d + h * hd..][..hd];
                    let mut scores: Vec<f32> = (0..t)
                        .map(|s| kernels::dot_f32(variant, qv, &k[s * d + h * hd..][..hd]) * scale)
                        .collect();
                    let max = scores.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                    let mut sum = 0.0f32;
                    for s in &mut scores {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    for (s, p) in scores.iter().enumerate() {
                        let p = p / sum;
                        for (oi, vi) in o.iter_mut().zip(&v[s * d + h * hd..][..hd]) {
                            *oi += p * vi;
                        }
                    }
                });
            let attn = l.out.apply(cx, &ctx, t);
            for (a, b) in x.iter_mut().zip(&attn) {
                *a += b;
            }
            layer_norm(&mut x, &l.attn_norm, self.eps);
            let mut hidden = l.up.apply(cx, &x, t);
            for h in &mut hidden {
                *h = gelu(*h);
            }
            let down = l.down.apply(cx, &hidden, t);
            for (a, b) in x.iter_mut().zip(&down) {
                *a += b;
            }
            layer_norm(&mut x, &l.ffn_norm, self.eps);
        }
        // Mean pooling over the tokens, then unit length.
        let mut pooled = vec![0.0f32; d];
        for row in x.chunks_exact(d) {
            for (p, v) in pooled.iter_mut().zip(row) {
                *p += v;
            }
        }
        for p in &mut pooled {
            *p /= t as f32;
        }
        let norm = kernels::dot_f32(cx.variant, &pooled, &pooled)
            .sqrt()
            .max(1e-12);
        for p in &mut pooled {
            *p /= norm;
        }
        Ok(pooled)
    }
}

/// The encoder's weights by name, taken one by one.
struct Weights(HashMap<String, Tensor>);

impl Weights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self
            .0
            .remove(name)
            .ok_or_else(|| Error::model(format!("no shard holds tensor {name}")))?;
        if t.dims() != shape {
            return Err(Error::model(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    fn linear(&mut self, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        Ok(Linear {
            w: Matrix::from_f32(
                rows,
                cols,
                self.take(&format!("{name}.weight"), &[rows, cols])?,
            )?,
            b: self.take(&format!("{name}.bias"), &[rows])?,
        })
    }

    fn norm(&mut self, name: &str, dim: usize) -> Result<Norm> {
        Ok(Norm {
            w: self.take(&format!("{name}.weight"), &[dim])?,
            b: self.take(&format!("{name}.bias"), &[dim])?,
        })
    }
}

impl Linear {
    fn apply(&self, cx: &Compute, x: &[f32], t: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; t * self.w.rows];
        self.w.matmul(cx, x, t, &mut out);
        for row in out.chunks_exact_mut(self.w.rows) {
            for (o, b) in row.iter_mut().zip(&self.b) {
                *o += b;
            }
        }
        out
    }
}

/// Layer normalisation of each row in place (sums taken sequentially).
fn layer_norm(x: &mut [f32], n: &Norm, eps: f32) {
    let d = n.w.len();
    for row in x.chunks_exact_mut(d) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&n.w).zip(&n.b) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

/// The exact (erf) GELU that BERT uses.
fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
}

/// The error function to about 1e-7 (Abramowitz and Stegun 7.1.26), enough for f32
/// activations; std has no erf.
fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}
