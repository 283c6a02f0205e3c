//! The Stable Diffusion VAE (`AutoencoderKL`): the encoder for image-to-image and the
//! decoder, whole or in overlapping tiles blended linearly across their seams so that
//! large images decode in bounded memory.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ops::{self, Act, Ctx};
use crate::rng::AuraRng;
use crate::unet::{Attention, ResBlock};
use crate::weights::{Conv2d, Loader, Norm};

/// The shape of a VAE (diffusers' `AutoencoderKL` config).
#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    /// Channels of each level (128, 256, 512, 512).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level (the decoder has one more).
    pub layers_per_block: usize,
    /// Latent channels (4).
    pub latent_channels: usize,
    /// Group norm groups (32).
    pub norm_groups: usize,
    /// What latents are multiplied by after encoding (0.18215 for SD 1/2, 0.13025 XL).
    pub scaling_factor: f32,
}

impl VaeConfig {
    /// The VAE of SD 1.x and 2.x.
    pub fn sd() -> Self {
        Self {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_groups: 32,
            scaling_factor: 0.18215,
        }
    }

    /// Reads diffusers' `vae/config.json`.
    pub fn from_diffusers_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::model(format!("vae config.json: {e}")))?;
        let int = |k: &str, d: usize| v.get(k).and_then(Value::as_u64).map_or(d, |x| x as usize);
        let blocks = v
            .get("block_out_channels")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect()
            })
            .unwrap_or_else(|| Self::sd().block_out_channels);
        let cfg = Self {
            block_out_channels: blocks,
            layers_per_block: int("layers_per_block", 2),
            latent_channels: int("latent_channels", 4),
            norm_groups: int("norm_num_groups", 32),
            scaling_factor: v
                .get("scaling_factor")
                .and_then(Value::as_f64)
                .unwrap_or(0.18215) as f32,
        };
        cfg.check()?;
        Ok(cfg)
    }

    pub(crate) fn check(&self) -> Result<()> {
        let ok = !self.block_out_channels.is_empty()
            && self.block_out_channels.len() <= 6
            && self.layers_per_block >= 1
            && self.layers_per_block <= 8
            && self.latent_channels >= 1
            && self.norm_groups >= 1
            && self
                .block_out_channels
                .iter()
                .all(|&c| (1..=4096).contains(&c) && c.is_multiple_of(self.norm_groups))
            && self.scaling_factor.is_finite()
            && self.scaling_factor > 0.0;
        if ok {
            Ok(())
        } else {
            Err(Error::model(format!("unsupported vae shape {self:?}")))
        }
    }

    /// Pixels per latent pixel (8 for four levels).
    pub fn factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// Tiles for decoding, in latent pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaeTiling {
    /// Side of a tile (latent pixels).
    pub tile: usize,
    /// Overlap between neighbouring tiles (latent pixels), blended linearly.
    pub overlap: usize,
}

impl Default for VaeTiling {
    /// 64-pixel tiles (512 image pixels) overlapping by 16 (128 image pixels).
    fn default() -> Self {
        Self {
            tile: 64,
            overlap: 16,
        }
    }
}

#[derive(Debug)]
struct MidBlock {
    res: [ResBlock; 2],
    norm: Norm,
    attn: Attention,
    groups: usize,
}

impl MidBlock {
    fn load(l: &mut Loader<'_>, c: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            res: [
                l.sub("resnets.0", |l| ResBlock::load(l, c, c, None, groups, 1e-6))?,
                l.sub("resnets.1", |l| ResBlock::load(l, c, c, None, groups, 1e-6))?,
            ],
            norm: l.norm("attentions.0.group_norm", c, 1e-6)?,
            attn: l.sub("attentions.0", |l| Attention::load(l, c, c, 1, true))?,
            groups,
        })
    }

    fn forward(&self, ctx: Ctx, x: &Act) -> Act {
        let x = self.res[0].forward(ctx, x, None);
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
        let mut a = self.attn.forward(ctx, &h.data, x.n, x.h * x.w, None);
        ops::add_inplace(&mut a, &x.data);
        self.res[1].forward(ctx, &x.with_data(a, x.c), None)
    }
}

#[derive(Debug)]
struct Encoder {
    conv_in: Conv2d,
    levels: Vec<(Vec<ResBlock>, Option<Conv2d>)>,
    mid: MidBlock,
    norm_out: Norm,
    conv_out: Conv2d,
    quant: Conv2d,
}

#[derive(Debug)]
struct Decoder {
    post_quant: Conv2d,
    conv_in: Conv2d,
    mid: MidBlock,
    levels: Vec<(Vec<ResBlock>, Option<Conv2d>)>,
    norm_out: Norm,
    conv_out: Conv2d,
}

/// A loaded VAE.
#[derive(Debug)]
pub(crate) struct Vae {
    pub(crate) cfg: VaeConfig,
    encoder: Option<Encoder>,
    decoder: Decoder,
}

impl Vae {
    /// Loads the decoder, and the encoder too when `encoder` is set (image-to-image).
    pub(crate) fn load(l: &mut Loader<'_>, cfg: &VaeConfig, encoder: bool) -> Result<Self> {
        cfg.check()?;
        let (g, z) = (cfg.norm_groups, cfg.latent_channels);
        let ch = &cfg.block_out_channels;
        let nb = ch.len();
        let encoder = if encoder {
            let (conv_in, levels, mid, norm_out, conv_out) = l.sub("encoder", |l| {
                let conv_in = l.conv("conv_in", 3, ch[0], 3, 1, 1)?;
                let mut levels = Vec::new();
                let mut c = ch[0];
                for (i, &out) in ch.iter().enumerate() {
                    let mut res = Vec::new();
                    for j in 0..cfg.layers_per_block {
                        res.push(l.sub(&format!("down_blocks.{i}.resnets.{j}"), |l| {
                            ResBlock::load(l, c, out, None, g, 1e-6)
                        })?);
                        c = out;
                    }
                    let down = if i + 1 < nb {
                        Some(l.conv(
                            &format!("down_blocks.{i}.downsamplers.0.conv"),
                            c,
                            c,
                            3,
                            2,
                            0,
                        )?)
                    } else {
                        None
                    };
                    levels.push((res, down));
                }
                let mid = l.sub("mid_block", |l| MidBlock::load(l, c, g))?;
                Ok((
                    conv_in,
                    levels,
                    mid,
                    l.norm("conv_norm_out", c, 1e-6)?,
                    l.conv("conv_out", c, 2 * z, 3, 1, 1)?,
                ))
            })?;
            let quant = l.conv("quant_conv", 2 * z, 2 * z, 1, 1, 0)?;
            Some(Encoder {
                conv_in,
                levels,
                mid,
                norm_out,
                conv_out,
                quant,
            })
        } else {
            None
        };
        let post_quant = l.conv("post_quant_conv", z, z, 1, 1, 0)?;
        let decoder = l.sub("decoder", |l| {
            let top = ch[nb - 1];
            let conv_in = l.conv("conv_in", z, top, 3, 1, 1)?;
            let mid = l.sub("mid_block", |l| MidBlock::load(l, top, g))?;
            let mut levels = Vec::new();
            let mut c = top;
            for i in 0..nb {
                let out = ch[nb - 1 - i];
                let mut res = Vec::new();
                for j in 0..=cfg.layers_per_block {
                    res.push(l.sub(&format!("up_blocks.{i}.resnets.{j}"), |l| {
                        ResBlock::load(l, c, out, None, g, 1e-6)
                    })?);
                    c = out;
                }
                let up = if i + 1 < nb {
                    Some(l.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), c, c, 3, 1, 1)?)
                } else {
                    None
                };
                levels.push((res, up));
            }
            Ok(Decoder {
                post_quant,
                conv_in,
                mid,
                levels,
                norm_out: l.norm("conv_norm_out", c, 1e-6)?,
                conv_out: l.conv("conv_out", c, 3, 3, 1, 1)?,
            })
        })?;
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            decoder,
        })
    }

    /// Whether the encoder is loaded.
    pub(crate) fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// Encodes images (NHWC, values in -1..1) to scaled latents, sampling the latent
    /// distribution with `rng` (Aura's, so image-to-image replays exactly).
    pub(crate) fn encode(&self, ctx: Ctx, image: &Act, rng: &mut AuraRng) -> Result<Act> {
        let e = self
            .encoder
            .as_ref()
            .ok_or_else(|| Error::request("this model was loaded without the vae encoder"))?;
        let f = self.cfg.factor();
        if !image.h.is_multiple_of(f) || !image.w.is_multiple_of(f) {
            return Err(Error::request(format!(
                "image sides must be multiples of {f}"
            )));
        }
        let mut x = e.conv_in.forward(ctx, image);
        for (res, down) in &e.levels {
            for r in res {
                x = r.forward(ctx, &x, None);
            }
            if let Some(d) = down {
                // Pad one row and column at the bottom and right, stride 2, no other padding.
                let (oh, ow) = (x.h / 2, x.w / 2);
                x = d.forward_sized(ctx, &x, 0, oh, ow);
            }
        }
        x = e.mid.forward(ctx, &x);
        ops::group_norm(
            ctx,
            &mut x,
            self.cfg.norm_groups,
            e.norm_out.eps,
            &e.norm_out.gamma,
            &e.norm_out.beta,
            true,
        );
        let x = e.conv_out.forward(ctx, &x);
        let moments = e.quant.forward(ctx, &x);
        let z = self.cfg.latent_channels;
        let mut out = Vec::with_capacity(moments.rows() * z);
        let mut noise = vec![0.0f32; z];
        for px in moments.data.chunks_exact(2 * z) {
            rng.fill_normal(&mut noise);
            for i in 0..z {
                let logvar = px[z + i].clamp(-30.0, 20.0);
                let std = ops::exp(0.5 * logvar);
                out.push((px[i] + std * noise[i]) * self.cfg.scaling_factor);
            }
        }
        Ok(moments.with_data(out, z))
    }

    /// Decodes scaled latents to images (NHWC, values in -1..1), whole.
    pub(crate) fn decode(&self, ctx: Ctx, latent: &Act) -> Act {
        let d = &self.decoder;
        let inv = 1.0 / self.cfg.scaling_factor;
        let z = latent.with_data(latent.data.iter().map(|v| v * inv).collect(), latent.c);
        let z = d.post_quant.forward(ctx, &z);
        let mut x = d.conv_in.forward(ctx, &z);
        x = d.mid.forward(ctx, &x);
        for (res, up) in &d.levels {
            for r in res {
                x = r.forward(ctx, &x, None);
            }
            if let Some(u) = up {
                x = u.forward(ctx, &ops::upsample2x(&x));
            }
        }
        ops::group_norm(
            ctx,
            &mut x,
            self.cfg.norm_groups,
            d.norm_out.eps,
            &d.norm_out.gamma,
            &d.norm_out.beta,
            true,
        );
        d.conv_out.forward(ctx, &x)
    }

    /// Decodes in overlapping tiles (one image at a time), blending each overlap with
    /// linear weights. The tiles depend only on the latent's size and `tiling`, never on
    /// threads, so the result is as reproducible as a whole decode (though not equal to
    /// it: each tile normalises over itself).
    pub(crate) fn decode_tiled(&self, ctx: Ctx, latent: &Act, tiling: VaeTiling) -> Result<Act> {
        if tiling.tile < 8 || tiling.overlap * 2 > tiling.tile {
            return Err(Error::request(
                "vae tiles must be at least 8 latent pixels, overlapping by at most half",
            ));
        }
        let f = self.cfg.factor();
        let (lh, lw, lc) = (latent.h, latent.w, latent.c);
        let starts = |len: usize| -> Vec<usize> {
            if len <= tiling.tile {
                return vec![0];
            }
            let step = tiling.tile - tiling.overlap;
            let mut v: Vec<usize> = (0..)
                .map(|i| i * step)
                .take_while(|&s| s + tiling.tile < len)
                .collect();
            v.push(len - tiling.tile);
            v.dedup();
            v
        };
        let (ys, xs) = (starts(lh), starts(lw));
        let (oh, ow) = (lh * f, lw * f);
        let mut out = vec![0.0f32; latent.n * oh * ow * 3];
        let mut weight = vec![0.0f32; oh * ow];
        for b in 0..latent.n {
            weight.iter_mut().for_each(|w| *w = 0.0);
            for &y0 in &ys {
                for &x0 in &xs {
                    let (th, tw) = (tiling.tile.min(lh), tiling.tile.min(lw));
                    let mut tile = Vec::with_capacity(th * tw * lc);
                    for y in y0..y0 + th {
                        let row = ((b * lh + y) * lw + x0) * lc;
                        tile.extend_from_slice(&latent.data[row..row + tw * lc]);
                    }
                    let img = self.decode(ctx, &Act::new(tile, 1, th, tw, lc));
                    // Linear ramps over the overlap on every side that has a neighbour.
                    let ramp = |i: usize, len: usize, has_before: bool, has_after: bool| -> f32 {
                        let o = (tiling.overlap * f) as f32;
                        let mut w = 1.0f32;
                        if has_before && o > 0.0 {
                            w = w.min((i as f32 + 0.5) / o);
                        }
                        if has_after && o > 0.0 {
                            w = w.min((len as f32 - i as f32 - 0.5) / o);
                        }
                        w.clamp(0.0, 1.0)
                    };
                    let (ih, iw) = (th * f, tw * f);
                    for y in 0..ih {
                        let wy = ramp(y, ih, y0 > 0, y0 + th < lh);
                        for x in 0..iw {
                            let wx = ramp(x, iw, x0 > 0, x0 + tw < lw);
                            let w = wy * wx;
                            let (gy, gx) = (y0 * f + y, x0 * f + x);
                            weight[gy * ow + gx] += w;
                            let o = ((b * oh + gy) * ow + gx) * 3;
                            let s = (y * iw + x) * 3;
                            for c in 0..3 {
                                out[o + c] += w * img.data[s + c];
                            }
                        }
                    }
                }
            }
            for (p, &w) in weight.iter().enumerate() {
                let o = (b * oh * ow + p) * 3;
                for c in 0..3 {
                    out[o + c] /= w;
                }
            }
        }
        Ok(Act::new(out, latent.n, oh, ow, 3))
    }
}
