//! The CLIP text encoder (OpenAI CLIP ViT-L/14's for SD 1.x and SDXL, OpenCLIP ViT-H and
//! ViT-bigG's for SD 2.x and SDXL) with Hugging Face's names: token and position
//! embeddings, pre-norm transformer layers with causal self-attention, a final layer norm
//! and, for SDXL's second encoder, the pooled text projection.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ops::{self, Ctx};
use crate::unet::Attention;
use crate::weights::{Linear, Loader, Norm};

/// The MLP's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact GELU (OpenCLIP).
    Gelu,
}

/// The shape of a CLIP text encoder (Hugging Face's `CLIPTextConfig`, the fields that
/// matter).
#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    /// Token ids.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Positions (77).
    pub max_positions: usize,
    /// The MLP's activation.
    pub activation: ClipActivation,
    /// Width of the pooled projection (`text_projection`), when the model has one.
    pub projection_dim: Option<usize>,
}

impl ClipConfig {
    /// OpenAI CLIP ViT-L/14's text encoder (SD 1.x; SDXL's first encoder).
    pub fn vit_l() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            heads: 12,
            layers: 12,
            max_positions: 77,
            activation: ClipActivation::QuickGelu,
            projection_dim: None,
        }
    }

    /// Reads Hugging Face's `text_encoder/config.json`. `with_projection`: whether the
    /// model is a `CLIPTextModelWithProjection` (its config has no field saying so).
    pub fn from_hf_json(text: &str, with_projection: bool) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::model(format!("text encoder config.json: {e}")))?;
        let int = |k: &str, d: usize| v.get(k).and_then(Value::as_u64).map_or(d, |x| x as usize);
        let activation = match v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("quick_gelu")
        {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            other => {
                return Err(Error::Unsupported(format!(
                    "text encoder activation {other}"
                )));
            }
        };
        let cfg = Self {
            vocab_size: int("vocab_size", 49408),
            hidden_size: int("hidden_size", 768),
            intermediate_size: int("intermediate_size", 3072),
            heads: int("num_attention_heads", 12),
            layers: int("num_hidden_layers", 12),
            max_positions: int("max_position_embeddings", 77),
            activation,
            projection_dim: with_projection.then(|| int("projection_dim", 768)),
        };
        cfg.check()?;
        Ok(cfg)
    }

    pub(crate) fn check(&self) -> Result<()> {
        let ok = self.vocab_size >= 1
            && self.vocab_size <= 1 << 20
            && self.hidden_size >= 1
            && self.hidden_size <= 8192
            && self.heads >= 1
            && self.hidden_size.is_multiple_of(self.heads)
            && self.layers >= 1
            && self.layers <= 128
            && self.max_positions >= 2
            && self.max_positions <= 4096
            && self.intermediate_size >= 1;
        if ok {
            Ok(())
        } else {
            Err(Error::model(format!(
                "unsupported text encoder shape {self:?}"
            )))
        }
    }
}

#[derive(Debug)]
struct Layer {
    ln1: Norm,
    attn: Attention,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// A loaded text encoder.
#[derive(Debug)]
pub(crate) struct TextEncoder {
    pub(crate) cfg: ClipConfig,
    token_embedding: Vec<f32>,
    position_embedding: Vec<f32>,
    layers: Vec<Layer>,
    final_ln: Norm,
    projection: Option<Linear>,
}

/// What one encoding produced, for `n` prompts of `t` tokens.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// The last layer's states after the final layer norm (`n x t x hidden`).
    pub(crate) last: Vec<f32>,
    /// The states entering the last layer, without the final norm (SDXL's context).
    pub(crate) penultimate: Vec<f32>,
    /// The final-normed state at each prompt's end token, projected when the model has a
    /// projection (`n x width`).
    pub(crate) pooled: Vec<f32>,
}

impl TextEncoder {
    pub(crate) fn load(l: &mut Loader<'_>, cfg: &ClipConfig) -> Result<Self> {
        cfg.check()?;
        let d = cfg.hidden_size;
        let token_embedding = l.tensor(
            "text_model.embeddings.token_embedding.weight",
            &[cfg.vocab_size, d],
        )?;
        let position_embedding = l.tensor(
            "text_model.embeddings.position_embedding.weight",
            &[cfg.max_positions, d],
        )?;
        let layers = (0..cfg.layers)
            .map(|i| {
                l.sub(&format!("text_model.encoder.layers.{i}"), |l| {
                    Ok(Layer {
                        ln1: l.norm("layer_norm1", d, 1e-5)?,
                        attn: l.sub("self_attn", |l| Attention::load_clip(l, d, cfg.heads))?,
                        ln2: l.norm("layer_norm2", d, 1e-5)?,
                        fc1: l.linear("mlp.fc1", d, cfg.intermediate_size, true)?,
                        fc2: l.linear("mlp.fc2", cfg.intermediate_size, d, true)?,
                    })
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            token_embedding,
            position_embedding,
            layers,
            final_ln: l.norm("text_model.final_layer_norm", d, 1e-5)?,
            projection: cfg
                .projection_dim
                .map(|p| l.linear("text_projection", d, p, false))
                .transpose()?,
        })
    }

    /// Encodes `n` token sequences of equal length; `eos` marks where each is pooled (its
    /// first occurrence, else the last position).
    pub(crate) fn encode(&self, ctx: Ctx, tokens: &[Vec<u32>], eos: u32) -> Result<Encoded> {
        let d = self.cfg.hidden_size;
        let n = tokens.len();
        let t = tokens.first().map_or(0, Vec::len);
        if t == 0 || t > self.cfg.max_positions || tokens.iter().any(|s| s.len() != t) {
            return Err(Error::request(format!(
                "token sequences must all have between 1 and {} tokens",
                self.cfg.max_positions
            )));
        }
        let mut x = Vec::with_capacity(n * t * d);
        for seq in tokens {
            for (p, &id) in seq.iter().enumerate() {
                let id = id as usize;
                if id >= self.cfg.vocab_size {
                    return Err(Error::request(format!(
                        "token id {id} is outside the vocabulary"
                    )));
                }
                let (te, pe) = (
                    &self.token_embedding[id * d..(id + 1) * d],
                    &self.position_embedding[p * d..(p + 1) * d],
                );
                x.extend(te.iter().zip(pe).map(|(a, b)| a + b));
            }
        }
        let mut penultimate = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            if i + 1 == self.layers.len() {
                penultimate = x.clone();
            }
            let h = ops::layer_norm(&x, d, layer.ln1.eps, &layer.ln1.gamma, &layer.ln1.beta);
            ops::add_inplace(&mut x, &layer.attn.forward_causal(ctx, &h, n, t));
            let h = ops::layer_norm(&x, d, layer.ln2.eps, &layer.ln2.gamma, &layer.ln2.beta);
            let mut h = layer.fc1.forward(ctx, &h, n * t);
            match self.cfg.activation {
                ClipActivation::QuickGelu => ops::activate(ctx, &mut h, ops::Activation::QuickGelu),
                ClipActivation::Gelu => ops::activate(ctx, &mut h, ops::Activation::Gelu),
            }
            ops::add_inplace(&mut x, &layer.fc2.forward(ctx, &h, n * t));
        }
        let last = ops::layer_norm(
            &x,
            d,
            self.final_ln.eps,
            &self.final_ln.gamma,
            &self.final_ln.beta,
        );
        let mut pooled = Vec::with_capacity(n * d);
        for (b, seq) in tokens.iter().enumerate() {
            let p = seq.iter().position(|&id| id == eos).unwrap_or(t - 1);
            pooled.extend_from_slice(&last[(b * t + p) * d..(b * t + p + 1) * d]);
        }
        let pooled = match &self.projection {
            Some(proj) => proj.forward(ctx, &pooled, n),
            None => pooled,
        };
        Ok(Encoded {
            last,
            penultimate,
            pooled,
        })
    }
}
