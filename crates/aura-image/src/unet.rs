//! The Stable Diffusion UNet (SD 1.x, 2.x, XL and their Turbo variants) on NHWC
//! activations, with diffusers' structure and names: resnet blocks with a timestep
//! embedding, spatial transformers (self-attention, cross-attention to the text, GEGLU
//! feed-forward), and SDXL's added time and pooled-text embedding.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ops::{self, Act, Ctx};
use crate::weights::{Conv2d, Linear, Loader, Norm};

/// The shape of a UNet (diffusers' `UNet2DConditionModel` config, the fields that matter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnetConfig {
    /// Latent channels in (4).
    pub in_channels: usize,
    /// Latent channels out (4).
    pub out_channels: usize,
    /// Channels of each resolution level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down level (up levels have one more).
    pub layers_per_block: usize,
    /// Transformer blocks of each down level's attention (0: a level without attention).
    pub transformer_depth: Vec<usize>,
    /// Transformer blocks of the middle block.
    pub mid_transformer_depth: usize,
    /// Attention heads of each level.
    pub heads: Vec<usize>,
    /// Width of the text context.
    pub cross_attention_dim: usize,
    /// Whether `proj_in`/`proj_out` are linear layers (SD 2, XL) or 1x1 convolutions.
    pub use_linear_projection: bool,
    /// Group norm groups (32).
    pub norm_groups: usize,
    /// SDXL's added conditioning: width of each time id's embedding (256) and of the
    /// added embedding's input (2816 = 6 * 256 + 1280).
    pub addition: Option<(usize, usize)>,
}

impl UnetConfig {
    /// Stable Diffusion 1.x.
    pub fn sd15() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            transformer_depth: vec![1, 1, 1, 0],
            mid_transformer_depth: 1,
            heads: vec![8, 8, 8, 8],
            cross_attention_dim: 768,
            use_linear_projection: false,
            norm_groups: 32,
            addition: None,
        }
    }

    /// Reads diffusers' `unet/config.json`.
    pub fn from_diffusers_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::model(format!("unet config.json: {e}")))?;
        let bad = |m: &str| Error::model(format!("unet config.json: {m}"));
        let int = |k: &str, d: usize| v.get(k).and_then(Value::as_u64).map_or(d, |x| x as usize);
        let blocks: Vec<usize> = v
            .get("block_out_channels")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("block_out_channels is missing"))?
            .iter()
            .map(|x| {
                x.as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| bad("block_out_channels must be numbers"))
            })
            .collect::<Result<_>>()?;
        let nb = blocks.len();
        // An int or a per-level list.
        let per_level = |k: &str| -> Option<Vec<usize>> {
            match v.get(k)? {
                Value::Number(n) => Some(vec![n.as_u64()? as usize; nb]),
                Value::Array(a) => a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect(),
                _ => None,
            }
        };
        let down_types: Vec<String> = v
            .get("down_block_types")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_else(|| {
                let mut t = vec!["CrossAttnDownBlock2D".to_owned(); nb];
                t[nb - 1] = "DownBlock2D".into();
                t
            });
        if down_types.len() != nb {
            return Err(bad(
                "down_block_types and block_out_channels differ in length",
            ));
        }
        let layers = per_level("transformer_layers_per_block").unwrap_or_else(|| vec![1; nb]);
        let transformer_depth: Vec<usize> = down_types
            .iter()
            .zip(&layers)
            .map(|(t, &d)| if t.starts_with("CrossAttn") { d } else { 0 })
            .collect();
        // diffusers' `attention_head_dim` is, for these models, the number of heads (a
        // naming accident it keeps for compatibility); `num_attention_heads` wins when set.
        let heads = per_level("num_attention_heads")
            .or_else(|| per_level("attention_head_dim"))
            .unwrap_or_else(|| vec![8; nb]);
        let mid_type = v
            .get("mid_block_type")
            .and_then(Value::as_str)
            .unwrap_or("UNetMidBlock2DCrossAttn");
        let addition = match v.get("addition_embed_type").and_then(Value::as_str) {
            None => None,
            Some("text_time") => Some((
                int("addition_time_embed_dim", 256),
                v.get("projection_class_embeddings_input_dim")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("projection_class_embeddings_input_dim is missing"))?
                    as usize,
            )),
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "unet addition_embed_type {other}"
                )));
            }
        };
        let cfg = Self {
            in_channels: int("in_channels", 4),
            out_channels: int("out_channels", 4),
            layers_per_block: int("layers_per_block", 2),
            mid_transformer_depth: if mid_type == "UNetMidBlock2DCrossAttn" {
                *layers.last().unwrap_or(&1)
            } else {
                0
            },
            heads,
            cross_attention_dim: int("cross_attention_dim", 768),
            use_linear_projection: v
                .get("use_linear_projection")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            norm_groups: int("norm_num_groups", 32),
            addition,
            block_out_channels: blocks,
            transformer_depth,
        };
        cfg.check()?;
        Ok(cfg)
    }

    pub(crate) fn check(&self) -> Result<()> {
        let nb = self.block_out_channels.len();
        let ok = (1..=8).contains(&nb)
            && self.transformer_depth.len() == nb
            && self.heads.len() == nb
            && self.layers_per_block >= 1
            && self.layers_per_block <= 8
            && self.norm_groups >= 1
            && self.in_channels >= 1
            && self.out_channels >= 1
            && self
                .block_out_channels
                .iter()
                .all(|&c| c >= 1 && c % self.norm_groups == 0 && c <= 8192)
            && self
                .block_out_channels
                .iter()
                .zip(&self.heads)
                .all(|(&c, &h)| h >= 1 && c % h == 0);
        if ok {
            Ok(())
        } else {
            Err(Error::model(format!("unsupported unet shape {self:?}")))
        }
    }

    /// The channels of the first level.
    fn c0(&self) -> usize {
        self.block_out_channels[0]
    }
}

/// A resnet block (the UNet's, with a timestep embedding, and the VAE's, without).
#[derive(Debug)]
pub(crate) struct ResBlock {
    norm1: Norm,
    conv1: Conv2d,
    temb: Option<Linear>,
    norm2: Norm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    groups: usize,
}

impl ResBlock {
    /// A resnet block; `temb` is the width of the timestep embedding (None in the VAE).
    pub(crate) fn load(
        l: &mut Loader<'_>,
        cin: usize,
        cout: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(Self {
            norm1: l.norm("norm1", cin, eps)?,
            conv1: l.conv("conv1", cin, cout, 3, 1, 1)?,
            temb: temb
                .map(|t| l.linear("time_emb_proj", t, cout, true))
                .transpose()?,
            norm2: l.norm("norm2", cout, eps)?,
            conv2: l.conv("conv2", cout, cout, 3, 1, 1)?,
            shortcut: if cin != cout {
                Some(l.conv("conv_shortcut", cin, cout, 1, 1, 0)?)
            } else {
                None
            },
            groups,
        })
    }

    /// `emb` holds each image's SiLU'd timestep embedding (`n x width`).
    pub(crate) fn forward(&self, ctx: Ctx, x: &Act, emb: Option<&[f32]>) -> Act {
        let mut h = x.clone();
        ops::group_norm(
            ctx,
            &mut h,
            self.groups,
            self.norm1.eps,
            &self.norm1.gamma,
            &self.norm1.beta,
            true,
        );
        let mut h = self.conv1.forward(ctx, &h);
        if let (Some(proj), Some(emb)) = (&self.temb, emb) {
            let t = proj.forward(ctx, emb, x.n);
            let (hw, c) = (h.h * h.w, h.c);
            for b in 0..h.n {
                let tb = &t[b * c..(b + 1) * c];
                for px in h.data[b * hw * c..(b + 1) * hw * c].chunks_exact_mut(c) {
                    px.iter_mut().zip(tb).for_each(|(v, a)| *v += a);
                }
            }
        }
        ops::group_norm(
            ctx,
            &mut h,
            self.groups,
            self.norm2.eps,
            &self.norm2.gamma,
            &self.norm2.beta,
            true,
        );
        let mut h = self.conv2.forward(ctx, &h);
        match &self.shortcut {
            Some(s) => ops::add_inplace(&mut h.data, &s.forward(ctx, x).data),
            None => ops::add_inplace(&mut h.data, &x.data),
        }
        h
    }
}

/// Multi-head attention with diffusers' names (`to_q`, `to_k`, `to_v`, `to_out.0`).
#[derive(Debug)]
pub(crate) struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    /// `bias`: whether q, k, v carry biases (the VAE's do, the UNet's do not).
    pub(crate) fn load(
        l: &mut Loader<'_>,
        dim: usize,
        ctx_dim: usize,
        heads: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            q: l.linear("to_q", dim, dim, bias)?,
            k: l.linear("to_k", ctx_dim, dim, bias)?,
            v: l.linear("to_v", ctx_dim, dim, bias)?,
            out: l.linear("to_out.0", dim, dim, true)?,
            heads,
        })
    }

    /// CLIP's self-attention (`q_proj`, `k_proj`, `v_proj`, `out_proj`, all with biases).
    pub(crate) fn load_clip(l: &mut Loader<'_>, dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: l.linear("q_proj", dim, dim, true)?,
            k: l.linear("k_proj", dim, dim, true)?,
            v: l.linear("v_proj", dim, dim, true)?,
            out: l.linear("out_proj", dim, dim, true)?,
            heads,
        })
    }

    /// Causal self-attention over `n` sequences of `t` tokens (the text encoder).
    pub(crate) fn forward_causal(&self, ctx: Ctx, x: &[f32], n: usize, t: usize) -> Vec<f32> {
        let dim = self.q.out();
        let q = self.q.forward(ctx, x, n * t);
        let k = self.k.forward(ctx, x, n * t);
        let v = self.v.forward(ctx, x, n * t);
        let o = ops::attention(ctx, &q, &k, &v, n, t, t, self.heads, dim / self.heads, true);
        self.out.forward(ctx, &o, n * t)
    }

    /// `x`: `n x t x dim`; `context`: `n x tc x ctx_dim` (None: self-attention).
    pub(crate) fn forward(
        &self,
        ctx: Ctx,
        x: &[f32],
        n: usize,
        t: usize,
        context: Option<(&[f32], usize)>,
    ) -> Vec<f32> {
        let dim = self.q.out();
        let q = self.q.forward(ctx, x, n * t);
        let (src, tc) = context.unwrap_or((x, t));
        let k = self.k.forward(ctx, src, n * tc);
        let v = self.v.forward(ctx, src, n * tc);
        let o = ops::attention(
            ctx,
            &q,
            &k,
            &v,
            n,
            t,
            tc,
            self.heads,
            dim / self.heads,
            false,
        );
        self.out.forward(ctx, &o, n * t)
    }
}

#[derive(Debug)]
struct TransformerBlock {
    norm1: Norm,
    attn1: Attention,
    norm2: Norm,
    attn2: Attention,
    norm3: Norm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn load(l: &mut Loader<'_>, dim: usize, ctx_dim: usize, heads: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            norm1: l.norm("norm1", dim, 1e-5)?,
            attn1: l.sub("attn1", |l| Attention::load(l, dim, dim, heads, false))?,
            norm2: l.norm("norm2", dim, 1e-5)?,
            attn2: l.sub("attn2", |l| Attention::load(l, dim, ctx_dim, heads, false))?,
            norm3: l.norm("norm3", dim, 1e-5)?,
            ff_in: l.linear("ff.net.0.proj", dim, 2 * inner, true)?,
            ff_out: l.linear("ff.net.2", inner, dim, true)?,
        })
    }

    fn forward(&self, ctx: Ctx, x: &mut [f32], n: usize, t: usize, context: &[f32], tc: usize) {
        let dim = self.ff_out.out();
        let h = ops::layer_norm(x, dim, self.norm1.eps, &self.norm1.gamma, &self.norm1.beta);
        ops::add_inplace(x, &self.attn1.forward(ctx, &h, n, t, None));
        let h = ops::layer_norm(x, dim, self.norm2.eps, &self.norm2.gamma, &self.norm2.beta);
        ops::add_inplace(x, &self.attn2.forward(ctx, &h, n, t, Some((context, tc))));
        let h = ops::layer_norm(x, dim, self.norm3.eps, &self.norm3.gamma, &self.norm3.beta);
        // GEGLU: the projection's first half times GELU of its second half.
        let p = self.ff_in.forward(ctx, &h, n * t);
        let g = ops::geglu(ctx, &p, p.len() / (n * t) / 2);
        ops::add_inplace(x, &self.ff_out.forward(ctx, &g, n * t));
    }
}

/// diffusers' `Transformer2DModel`: norm, project in, transformer blocks, project out,
/// plus the input.
#[derive(Debug)]
struct SpatialTransformer {
    norm: Norm,
    proj_in: Linear,
    blocks: Vec<TransformerBlock>,
    proj_out: Linear,
    groups: usize,
}

impl SpatialTransformer {
    fn load(
        l: &mut Loader<'_>,
        c: usize,
        depth: usize,
        heads: usize,
        cfg: &UnetConfig,
    ) -> Result<Self> {
        // A 1x1 convolution on NHWC rows is a linear layer; the loader accepts both shapes.
        Ok(Self {
            norm: l.norm("norm", c, 1e-6)?,
            proj_in: l.linear("proj_in", c, c, true)?,
            blocks: (0..depth)
                .map(|i| {
                    l.sub(&format!("transformer_blocks.{i}"), |l| {
                        TransformerBlock::load(l, c, cfg.cross_attention_dim, heads)
                    })
                })
                .collect::<Result<_>>()?,
            proj_out: l.linear("proj_out", c, c, true)?,
            groups: cfg.norm_groups,
        })
    }

    fn forward(&self, ctx: Ctx, x: &Act, context: &[f32], tc: usize) -> Act {
        let mut h = x.clone();
        ops::group_norm(
            ctx,
            &mut h,
            self.groups,
            self.norm.eps,
            &self.norm.gamma,
            &self.norm.beta,
            false,
        );
        let t = x.h * x.w;
        let mut h = self.proj_in.forward(ctx, &h.data, x.rows());
        for b in &self.blocks {
            b.forward(ctx, &mut h, x.n, t, context, tc);
        }
        let mut out = self.proj_out.forward(ctx, &h, x.rows());
        ops::add_inplace(&mut out, &x.data);
        x.with_data(out, x.c)
    }
}

#[derive(Debug)]
struct Level {
    resnets: Vec<ResBlock>,
    attentions: Vec<SpatialTransformer>,
    /// Downsampler (down path) or upsampler conv (up path).
    sampler: Option<Conv2d>,
}

/// A loaded UNet.
#[derive(Debug)]
pub(crate) struct Unet {
    pub(crate) cfg: UnetConfig,
    time_1: Linear,
    time_2: Linear,
    add: Option<(Linear, Linear)>,
    conv_in: Conv2d,
    down: Vec<Level>,
    mid_res: [ResBlock; 2],
    mid_attn: Option<SpatialTransformer>,
    up: Vec<Level>,
    norm_out: Norm,
    conv_out: Conv2d,
}

/// SDXL's extra conditioning for one image: the pooled text embedding and the six time
/// ids (original size, crop top-left, target size).
#[derive(Clone, Debug)]
pub(crate) struct Added {
    pub(crate) text_embeds: Vec<f32>,
    pub(crate) time_ids: [f32; 6],
}

impl Unet {
    pub(crate) fn load(l: &mut Loader<'_>, cfg: &UnetConfig) -> Result<Self> {
        cfg.check()?;
        let (c0, g) = (cfg.c0(), cfg.norm_groups);
        let temb = 4 * c0;
        let nb = cfg.block_out_channels.len();
        let time_1 = l.linear("time_embedding.linear_1", c0, temb, true)?;
        let time_2 = l.linear("time_embedding.linear_2", temb, temb, true)?;
        let add = match cfg.addition {
            Some((_, input)) => Some((
                l.linear("add_embedding.linear_1", input, temb, true)?,
                l.linear("add_embedding.linear_2", temb, temb, true)?,
            )),
            None => None,
        };
        let conv_in = l.conv("conv_in", cfg.in_channels, c0, 3, 1, 1)?;
        // Channels of every activation the down path keeps for the up path.
        let mut skips = vec![c0];
        let mut down = Vec::with_capacity(nb);
        let mut ch = c0;
        for i in 0..nb {
            let out = cfg.block_out_channels[i];
            let mut level = Level {
                resnets: vec![],
                attentions: vec![],
                sampler: None,
            };
            for j in 0..cfg.layers_per_block {
                let p = format!("down_blocks.{i}.resnets.{j}");
                level
                    .resnets
                    .push(l.sub(&p, |l| ResBlock::load(l, ch, out, Some(temb), g, 1e-5))?);
                ch = out;
                if cfg.transformer_depth[i] > 0 {
                    let p = format!("down_blocks.{i}.attentions.{j}");
                    level.attentions.push(l.sub(&p, |l| {
                        SpatialTransformer::load(
                            l,
                            out,
                            cfg.transformer_depth[i],
                            cfg.heads[i],
                            cfg,
                        )
                    })?);
                }
                skips.push(ch);
            }
            if i + 1 < nb {
                level.sampler = Some(l.conv(
                    &format!("down_blocks.{i}.downsamplers.0.conv"),
                    ch,
                    ch,
                    3,
                    2,
                    1,
                )?);
                skips.push(ch);
            }
            down.push(level);
        }
        let top = cfg.block_out_channels[nb - 1];
        let mid_res = [
            l.sub("mid_block.resnets.0", |l| {
                ResBlock::load(l, top, top, Some(temb), g, 1e-5)
            })?,
            l.sub("mid_block.resnets.1", |l| {
                ResBlock::load(l, top, top, Some(temb), g, 1e-5)
            })?,
        ];
        let mid_attn = if cfg.mid_transformer_depth > 0 {
            Some(l.sub("mid_block.attentions.0", |l| {
                SpatialTransformer::load(l, top, cfg.mid_transformer_depth, cfg.heads[nb - 1], cfg)
            })?)
        } else {
            None
        };
        let mut up = Vec::with_capacity(nb);
        for i in 0..nb {
            let lvl = nb - 1 - i;
            let out = cfg.block_out_channels[lvl];
            let mut level = Level {
                resnets: vec![],
                attentions: vec![],
                sampler: None,
            };
            for j in 0..=cfg.layers_per_block {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::model("unet skip connections do not add up"))?;
                let p = format!("up_blocks.{i}.resnets.{j}");
                level.resnets.push(l.sub(&p, |l| {
                    ResBlock::load(l, ch + skip, out, Some(temb), g, 1e-5)
                })?);
                ch = out;
                if cfg.transformer_depth[lvl] > 0 {
                    let p = format!("up_blocks.{i}.attentions.{j}");
                    level.attentions.push(l.sub(&p, |l| {
                        SpatialTransformer::load(
                            l,
                            out,
                            cfg.transformer_depth[lvl],
                            cfg.heads[lvl],
                            cfg,
                        )
                    })?);
                }
            }
            if i + 1 < nb {
                level.sampler =
                    Some(l.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), ch, ch, 3, 1, 1)?);
            }
            up.push(level);
        }
        Ok(Self {
            cfg: cfg.clone(),
            time_1,
            time_2,
            add,
            conv_in,
            down,
            mid_res,
            mid_attn,
            up,
            norm_out: l.norm("conv_norm_out", c0, 1e-5)?,
            conv_out: l.conv("conv_out", c0, cfg.out_channels, 3, 1, 1)?,
        })
    }

    /// The UNet's output (noise or v) for `n` latents at timestep `t`, each with its text
    /// context (`n x tc x cross_attention_dim`) and, for SDXL, its added conditioning.
    pub(crate) fn forward(
        &self,
        ctx: Ctx,
        latent: &Act,
        t: f64,
        context: &[f32],
        tc: usize,
        added: Option<&[Added]>,
    ) -> Result<Act> {
        let n = latent.n;
        let c0 = self.cfg.c0();
        let temb_in: Vec<f32> = (0..n)
            .flat_map(|_| ops::timestep_embedding(t, c0))
            .collect();
        let mut h = self.time_1.forward(ctx, &temb_in, n);
        ops::activate(ctx, &mut h, ops::Activation::Silu);
        let mut emb = self.time_2.forward(ctx, &h, n);
        match (&self.add, self.cfg.addition, added) {
            (Some((l1, l2)), Some((tdim, input)), Some(added)) => {
                if added.len() != n {
                    return Err(Error::request("one added conditioning per image is needed"));
                }
                let mut x = Vec::with_capacity(n * input);
                for a in added {
                    x.extend_from_slice(&a.text_embeds);
                    for id in a.time_ids {
                        x.extend(ops::timestep_embedding(f64::from(id), tdim));
                    }
                }
                if x.len() != n * input {
                    return Err(Error::request(format!(
                        "the added conditioning has {} values per image, the unet expects {input}",
                        x.len() / n.max(1)
                    )));
                }
                let mut a = l1.forward(ctx, &x, n);
                ops::activate(ctx, &mut a, ops::Activation::Silu);
                ops::add_inplace(&mut emb, &l2.forward(ctx, &a, n));
            }
            (None, _, None) => {}
            (Some(_), ..) => {
                return Err(Error::request(
                    "this unet needs the pooled text embedding and time ids",
                ));
            }
            (None, ..) => return Err(Error::request("this unet takes no added conditioning")),
        }
        // Every resnet applies SiLU to the embedding before its projection: do it once.
        ops::activate(ctx, &mut emb, ops::Activation::Silu);
        let emb = Some(&emb[..]);

        let mut x = self.conv_in.forward(ctx, latent);
        let mut skips = vec![x.clone()];
        for level in &self.down {
            for (j, r) in level.resnets.iter().enumerate() {
                x = r.forward(ctx, &x, emb);
                if let Some(a) = level.attentions.get(j) {
                    x = a.forward(ctx, &x, context, tc);
                }
                skips.push(x.clone());
            }
            if let Some(s) = &level.sampler {
                x = s.forward(ctx, &x);
                skips.push(x.clone());
            }
        }
        x = self.mid_res[0].forward(ctx, &x, emb);
        if let Some(a) = &self.mid_attn {
            x = a.forward(ctx, &x, context, tc);
        }
        x = self.mid_res[1].forward(ctx, &x, emb);
        for level in &self.up {
            for (j, r) in level.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::model("unet skip connections do not add up"))?;
                x = r.forward(ctx, &ops::concat_channels(&x, &skip), emb);
                if let Some(a) = level.attentions.get(j) {
                    x = a.forward(ctx, &x, context, tc);
                }
            }
            if let Some(s) = &level.sampler {
                // Up to the size of the activation it meets next (twice this one's unless
                // a side was odd on the way down).
                let (h, w) = skips.last().map_or((2 * x.h, 2 * x.w), |s| (s.h, s.w));
                x = s.forward(ctx, &ops::upsample_to(&x, h, w));
            }
        }
        ops::group_norm(
            ctx,
            &mut x,
            self.cfg.norm_groups,
            self.norm_out.eps,
            &self.norm_out.gamma,
            &self.norm_out.beta,
            true,
        );
        Ok(self.conv_out.forward(ctx, &x))
    }
}
