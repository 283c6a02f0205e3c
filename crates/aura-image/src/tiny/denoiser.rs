//! The latent denoiser: a residual MLP over the whole 8×8 latent, conditioned on the text
//! embedding and the noise level through adaptive layer norms (DiT's adaLN-Zero), that
//! predicts the velocity `v = α ε − σ x₀`.
//!
//! Why not a UNet: at 8×8 a UNet has two or three levels, every 3×3 convolution costs as
//! much as a dense layer of the same width over a few positions, and what the model must
//! learn (which of 3,786 images a name means) is global, not local. A residual MLP of the
//! same width has the whole latent in view from its first layer and runs as a handful of
//! large matrix products, about three times cheaper per sample on a CPU.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use super::layers::{self, Linear, LinearCache, Param, Visit};
use super::math::{self, Gaussian};

/// The denoiser's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiserConfig {
    /// Numbers in a latent.
    pub latent: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width inside each block's MLP.
    pub ff: usize,
    /// Residual blocks.
    pub blocks: usize,
    /// Length of the text embedding.
    pub text: usize,
    /// Length of the sinusoidal noise-level embedding.
    pub time: usize,
    /// Whether the text embedding is also projected into the residual stream at its start
    /// (besides conditioning every block's normalisation), a direct path from the prompt
    /// to the picture's content. Left out of the JSON when false, so weight files from
    /// before it keep their bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub text_input: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub(crate) modulation: Linear,
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
}

/// The denoiser.
#[derive(Clone, Debug)]
pub struct Denoiser {
    pub(crate) config: DenoiserConfig,
    pub(crate) time1: Linear,
    pub(crate) time2: Linear,
    pub(crate) text1: Linear,
    pub(crate) text2: Linear,
    pub(crate) input: Linear,
    pub(crate) text_input: Option<Linear>,
    pub(crate) blocks: Vec<Block>,
    pub(crate) out_modulation: Linear,
    pub(crate) output: Linear,
}

/// The sinusoidal embedding of noise levels `t` in [0, 1] (as in DDPM, frequencies from 1
/// to 1/10000 of `1000 t`).
pub(crate) fn time_embedding(t: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0.0; t.len() * dim];
    for (row, &t) in out.chunks_exact_mut(dim).zip(t) {
        for i in 0..half {
            let freq = f64::from(math::exp(-LN_10000 * i as f32 / half as f32));
            let angle = (1000.0 * f64::from(t) * freq).rem_euclid(std::f64::consts::TAU);
            let (s, c) = math::sin_cos(angle);
            row[i] = s as f32;
            row[half + i] = c as f32;
        }
    }
    out
}

/// `ln 10000`.
const LN_10000: f32 = 9.210_340_4;

/// What the backward pass needs from a block.
#[derive(Debug)]
struct BlockCache {
    xhat: Vec<f32>,
    rstd: Vec<f32>,
    modulation: Vec<f32>,
    fc1: LinearCache,
    act_in: Vec<f32>,
    fc2: LinearCache,
    f2: Vec<f32>,
}

impl Denoiser {
    /// A freshly initialised denoiser; modulations and the output start at zero, so every
    /// block starts as the identity (adaLN-Zero).
    pub fn new(config: DenoiserConfig, rng: &mut Gaussian) -> Self {
        let h = config.hidden;
        let zero = |i, o| {
            let mut l = Linear::new(i, o, 0.0, &mut Gaussian::zeros());
            l.w.w.fill(0.0);
            l
        };
        Self {
            config,
            time1: Linear::new(config.time, h, 1.0, rng),
            time2: Linear::new(h, h, 1.7, rng),
            text1: Linear::new(config.text, h, 1.0, rng),
            text2: Linear::new(h, h, 1.7, rng),
            input: Linear::new(config.latent, h, 1.0, rng),
            text_input: config
                .text_input
                .then(|| Linear::new(config.text, h, 1.0, rng)),
            blocks: (0..config.blocks)
                .map(|_| Block {
                    modulation: zero(h, 3 * h),
                    fc1: Linear::new(h, config.ff, 1.0, rng),
                    fc2: Linear::new(config.ff, h, 1.0, rng),
                })
                .collect(),
            out_modulation: zero(h, 2 * h),
            output: zero(h, config.latent),
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> DenoiserConfig {
        self.config
    }

    /// The conditioning vector for a batch: `silu(time(t) + text(e))`.
    fn condition(&self, t: &[f32], text: &[f32]) -> Vec<f32> {
        let n = t.len();
        let te = time_embedding(t, self.config.time);
        let mut a = self.time1.forward(&te, n);
        layers::silu_inplace(&mut a);
        let mut c = self.time2.forward(&a, n);
        let mut b = self.text1.forward(text, n);
        layers::silu_inplace(&mut b);
        let tb = self.text2.forward(&b, n);
        for (c, t) in c.iter_mut().zip(&tb) {
            *c += t;
        }
        layers::silu_inplace(&mut c);
        c
    }

    /// Predicts `v` for `n` noisy latents at noise levels `t` with text embeddings `text`
    /// (`n × text`; a zero row is the unconditional prompt).
    pub fn forward(&self, z: &[f32], t: &[f32], text: &[f32]) -> Vec<f32> {
        let n = t.len();
        let hd = self.config.hidden;
        let cond = self.condition(t, text);
        let mut h = self.input.forward(z, n);
        if let Some(ti) = &self.text_input {
            add(&mut h, &ti.forward(text, n));
        }
        for b in &self.blocks {
            let (xhat, _) = layers::layer_norm(&h, hd);
            let m = b.modulation.forward(&cond, n);
            let u = modulate(&xhat, &m, hd, 3);
            let mut f1 = b.fc1.forward(&u, n);
            layers::silu_inplace(&mut f1);
            let f2 = b.fc2.forward(&f1, n);
            gate_add(&mut h, &f2, &m, hd);
        }
        let (xhat, _) = layers::layer_norm(&h, hd);
        let m = self.out_modulation.forward(&cond, n);
        let u = modulate(&xhat, &m, hd, 2);
        self.output.forward(&u, n)
    }

    /// One training step's forward and backward pass: `loss = Σᵢ wᵢ · mean((v̂ᵢ − vᵢ)²) / n`.
    /// Accumulates the gradients; returns the unweighted mean squared error.
    pub(crate) fn train_step(
        &mut self,
        z: &[f32],
        t: &[f32],
        text: &[f32],
        target: &[f32],
        weight: &[f32],
    ) -> f64 {
        let n = t.len();
        let hd = self.config.hidden;
        let d = self.config.latent;
        // Conditioning.
        let te = time_embedding(t, self.config.time);
        let (mut a, c_t1) = self.time1.forward_train(te, n);
        let a_in = layers::silu(&mut a);
        let (tc, c_t2) = self.time2.forward_train(a, n);
        let (mut b, c_x1) = self.text1.forward_train(text.to_vec(), n);
        let b_in = layers::silu(&mut b);
        let (xc, c_x2) = self.text2.forward_train(b, n);
        let mut cond: Vec<f32> = tc.iter().zip(&xc).map(|(a, b)| a + b).collect();
        let cond_in = layers::silu(&mut cond);
        // Trunk.
        let (mut h, c_in) = self.input.forward_train(z.to_vec(), n);
        let c_ti = match &self.text_input {
            Some(ti) => {
                let (y, c) = ti.forward_train(text.to_vec(), n);
                add(&mut h, &y);
                Some(c)
            }
            None => None,
        };
        let mut caches = Vec::with_capacity(self.blocks.len());
        let mut mod_caches = Vec::with_capacity(self.blocks.len());
        for blk in &self.blocks {
            let (xhat, rstd) = layers::layer_norm(&h, hd);
            let (m, c_m) = blk.modulation.forward_train(cond.clone(), n);
            let u = modulate(&xhat, &m, hd, 3);
            let (mut f1, c1) = blk.fc1.forward_train(u, n);
            let act_in = layers::silu(&mut f1);
            let (f2, c2) = blk.fc2.forward_train(f1, n);
            gate_add(&mut h, &f2, &m, hd);
            caches.push(BlockCache {
                xhat,
                rstd,
                modulation: m,
                fc1: c1,
                act_in,
                fc2: c2,
                f2,
            });
            mod_caches.push(c_m);
        }
        let (xhat, rstd) = layers::layer_norm(&h, hd);
        let (m, c_om) = self.out_modulation.forward_train(cond, n);
        let u = modulate(&xhat, &m, hd, 2);
        let (v, c_out) = self.output.forward_train(u, n);
        // Loss.
        let mut mse = 0.0f64;
        let mut dv = vec![0.0; v.len()];
        for (i, ((dv, v), y)) in dv
            .chunks_exact_mut(d)
            .zip(v.chunks_exact(d))
            .zip(target.chunks_exact(d))
            .enumerate()
        {
            let k = 2.0 * weight[i] / (n * d) as f32;
            for ((g, v), y) in dv.iter_mut().zip(v).zip(y) {
                let e = v - y;
                mse += f64::from(e * e);
                *g = k * e;
            }
        }
        // Backward through the head.
        let du = self.output.backward(&c_out, &dv, n);
        let (dxhat, dm) = modulate_backward(&xhat, &m, &du, hd, 2);
        let mut dcond = self.out_modulation.backward(&c_om, &dm, n);
        let mut dh = layers::layer_norm_backward(&xhat, &rstd, &dxhat, hd);
        // Backward through the blocks.
        for ((blk, c), c_m) in self.blocks.iter_mut().zip(caches).zip(mod_caches).rev() {
            // h_out = h_in + gate ⊙ f2.
            let mut df2 = vec![0.0; dh.len()];
            let mut dm = vec![0.0; n * 3 * hd];
            for r in 0..n {
                for j in 0..hd {
                    let g = dh[r * hd + j];
                    df2[r * hd + j] = g * c.modulation[r * 3 * hd + 2 * hd + j];
                    dm[r * 3 * hd + 2 * hd + j] = g * c.f2[r * hd + j];
                }
            }
            let mut df1 = blk.fc2.backward(&c.fc2, &df2, n);
            layers::silu_backward(&c.act_in, &mut df1);
            let du = blk.fc1.backward(&c.fc1, &df1, n);
            let (dxhat, dms) = modulate_backward(&c.xhat, &c.modulation, &du, hd, 3);
            for r in 0..n {
                dm[r * 3 * hd..r * 3 * hd + 2 * hd]
                    .copy_from_slice(&dms[r * 3 * hd..r * 3 * hd + 2 * hd]);
            }
            let dc = blk.modulation.backward(&c_m, &dm, n);
            for (a, b) in dcond.iter_mut().zip(&dc) {
                *a += b;
            }
            let dln = layers::layer_norm_backward(&c.xhat, &c.rstd, &dxhat, hd);
            for (a, b) in dh.iter_mut().zip(&dln) {
                *a += b;
            }
        }
        self.input.backward(&c_in, &dh, n);
        if let (Some(ti), Some(c)) = (&mut self.text_input, &c_ti) {
            ti.backward(c, &dh, n);
        }
        // Backward through the conditioning.
        layers::silu_backward(&cond_in, &mut dcond);
        let mut db = self.text2.backward(&c_x2, &dcond, n);
        layers::silu_backward(&b_in, &mut db);
        self.text1.backward(&c_x1, &db, n);
        let mut da = self.time2.backward(&c_t2, &dcond, n);
        layers::silu_backward(&a_in, &mut da);
        self.time1.backward(&c_t1, &da, n);
        mse / (n * d) as f64
    }

    /// Every linear map, in the fixed order used for names.
    pub(crate) fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out: Vec<(String, &mut Linear)> = vec![
            ("time1".into(), &mut self.time1),
            ("time2".into(), &mut self.time2),
            ("text1".into(), &mut self.text1),
            ("text2".into(), &mut self.text2),
            ("input".into(), &mut self.input),
        ];
        if let Some(ti) = &mut self.text_input {
            out.push(("text_input".into(), ti));
        }
        for (i, b) in self.blocks.iter_mut().enumerate() {
            out.push((format!("blocks.{i}.modulation"), &mut b.modulation));
            out.push((format!("blocks.{i}.fc1"), &mut b.fc1));
            out.push((format!("blocks.{i}.fc2"), &mut b.fc2));
        }
        out.push(("out_modulation".into(), &mut self.out_modulation));
        out.push(("output".into(), &mut self.output));
        out
    }
}

impl Visit for Denoiser {
    fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        for (name, l) in self.linears_mut() {
            l.params(&format!("{prefix}{name}"), out);
        }
    }
}

/// `u = x̂ ⊙ (1 + scale) + shift`, where row r of `m` is `[scale | shift | …]` in `parts`
/// blocks of `d`.
fn modulate(xhat: &[f32], m: &[f32], d: usize, parts: usize) -> Vec<f32> {
    let mut u = vec![0.0; xhat.len()];
    for ((u, x), m) in u
        .chunks_exact_mut(d)
        .zip(xhat.chunks_exact(d))
        .zip(m.chunks_exact(parts * d))
    {
        for j in 0..d {
            u[j] = x[j] * (1.0 + m[j]) + m[d + j];
        }
    }
    u
}

/// Gradients of [`modulate`]: (d x̂, d m) with the gate part of `d m` left zero.
fn modulate_backward(
    xhat: &[f32],
    m: &[f32],
    du: &[f32],
    d: usize,
    parts: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0; xhat.len()];
    let mut dm = vec![0.0; m.len()];
    for (((dx, dm), (x, m)), g) in dx
        .chunks_exact_mut(d)
        .zip(dm.chunks_exact_mut(parts * d))
        .zip(xhat.chunks_exact(d).zip(m.chunks_exact(parts * d)))
        .zip(du.chunks_exact(d))
    {
        for j in 0..d {
            dx[j] = g[j] * (1.0 + m[j]);
            dm[j] = g[j] * x[j];
            dm[d + j] = g[j];
        }
    }
    (dx, dm)
}

/// `a += b`.
fn add(a: &mut [f32], b: &[f32]) {
    for (a, b) in a.iter_mut().zip(b) {
        *a += b;
    }
}

/// `h += gate ⊙ f`, the gate being the third part of each row of `m`.
fn gate_add(h: &mut [f32], f: &[f32], m: &[f32], d: usize) {
    for ((h, f), m) in h
        .chunks_exact_mut(d)
        .zip(f.chunks_exact(d))
        .zip(m.chunks_exact(3 * d))
    {
        for j in 0..d {
            h[j] += m[2 * d + j] * f[j];
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use crate::tiny::layers::tests::check_grad;

    #[test]
    fn denoiser_gradients_match_finite_differences() {
        let config = DenoiserConfig {
            latent: 6,
            hidden: 8,
            ff: 12,
            blocks: 2,
            text: 5,
            time: 4,
            text_input: true,
        };
        let mut rng = Gaussian::new(3, 0);
        let mut net = Denoiser::new(config, &mut rng);
        // Give the zero-initialised parts values so every path carries gradient.
        let mut g = Gaussian::new(4, 0);
        for (_, p) in net.param_list("") {
            for w in &mut p.w {
                *w += 0.3 * g.normal();
            }
        }
        let n = 3;
        let t = vec![0.1, 0.5, 0.9];
        let text: Vec<f32> = (0..n * 5).map(|_| g.normal()).collect();
        let z: Vec<f32> = (0..n * 6).map(|_| g.normal()).collect();
        let weight = vec![1.0, 0.5, 2.0];
        // The loss's gradient with respect to each parameter tensor, one at a time.
        let names: Vec<String> = net.param_list("").into_iter().map(|(n, _)| n).collect();
        for name in &names {
            let get = |net: &mut Denoiser| {
                net.param_list("")
                    .into_iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| p.w.clone())
                    .unwrap()
            };
            let set = |net: &mut Denoiser, v: &[f32]| {
                for (n, p) in net.param_list("") {
                    if &n == name {
                        p.w = v.to_vec();
                    }
                }
            };
            let base = net.clone();
            let p0 = get(&mut net.clone());
            let (zz, tt, xx, ww) = (z.clone(), t.clone(), text.clone(), weight.clone());
            // loss(p) with target zero is Σ w mean(v²)/n; check_grad differentiates Σ y·r,
            // so express the loss as a one-element output.
            check_grad(
                name,
                &p0,
                &|p| {
                    let mut m = base.clone();
                    set(&mut m, p);
                    let v = m.forward(&zz, &tt, &xx);
                    let mut s = 0.0f32;
                    for (i, row) in v.chunks_exact(6).enumerate() {
                        s += ww[i] * row.iter().map(|x| x * x).sum::<f32>() / (n * 6) as f32;
                    }
                    vec![s]
                },
                &|p, r| {
                    let mut m = base.clone();
                    set(&mut m, p);
                    for (_, q) in m.param_list("") {
                        q.g.fill(0.0);
                    }
                    m.train_step(&zz, &tt, &xx, &vec![0.0; n * 6], &ww);
                    let p = m
                        .param_list("")
                        .into_iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, p)| p.g.clone())
                        .unwrap();
                    p.iter().map(|x| x * r[0]).collect()
                },
            );
        }
    }
}
