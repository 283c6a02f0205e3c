//! The tiny VAE: 64×64 RGB images to 8×8 latents and back, all 3×3 convolutions.
//!
//! The encoder first folds 2×2 pixels into channels (space to depth) and the decoder ends
//! by unfolding them (depth to space), so no convolution runs at full resolution: that is
//! most of what makes training it on two CPU cores take minutes rather than hours, at the
//! cost of a little sharpness.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use super::layers::{self, Conv, Param, Shape, Visit};
use super::math::{self, Gaussian};

/// Image side in pixels.
pub const IMAGE: usize = 64;
/// Latent side.
pub const LATENT: usize = 8;

/// The VAE's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// Latent channels.
    pub latent_channels: usize,
    /// Channels at 32×32, 16×16 and 8×8.
    pub channels: [usize; 3],
}

impl VaeConfig {
    /// Numbers per latent.
    pub fn latent_len(&self) -> usize {
        LATENT * LATENT * self.latent_channels
    }
}

/// One step of a sequence of layers.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Conv(Conv),
    Silu,
    Up2,
    S2d,
    D2s,
}

/// What an op's backward pass needs.
#[derive(Debug)]
pub(crate) enum Saved {
    Col(Vec<f32>),
    Input(Vec<f32>),
    Nothing,
}

/// A straight sequence of layers.
#[derive(Clone, Debug)]
pub(crate) struct Seq(pub(crate) Vec<Op>);

impl Seq {
    /// Runs the layers; keeps what the backward pass needs when `train`.
    pub(crate) fn forward(
        &self,
        mut x: Vec<f32>,
        mut s: Shape,
        train: bool,
    ) -> (Vec<f32>, Vec<(Shape, Saved)>) {
        let mut saved = Vec::new();
        for op in &self.0 {
            let input = s;
            let keep;
            (x, s, keep) = match op {
                Op::Conv(c) => {
                    let (y, col) = c.forward(&x, s);
                    (y, c.out_shape(s), Saved::Col(col))
                }
                Op::Silu => {
                    if train {
                        let inp = layers::silu(&mut x);
                        (x, s, Saved::Input(inp))
                    } else {
                        layers::silu_inplace(&mut x);
                        (x, s, Saved::Nothing)
                    }
                }
                Op::Up2 => (
                    layers::up2(&x, s),
                    Shape {
                        h: 2 * s.h,
                        w: 2 * s.w,
                        ..s
                    },
                    Saved::Nothing,
                ),
                Op::S2d => (
                    layers::s2d(&x, s),
                    Shape {
                        h: s.h / 2,
                        w: s.w / 2,
                        c: 4 * s.c,
                        ..s
                    },
                    Saved::Nothing,
                ),
                Op::D2s => (
                    layers::d2s(&x, s),
                    Shape {
                        h: 2 * s.h,
                        w: 2 * s.w,
                        c: s.c / 4,
                        ..s
                    },
                    Saved::Nothing,
                ),
            };
            if train {
                saved.push((input, keep));
            }
        }
        (x, saved)
    }

    /// Accumulates gradients; returns the input's gradient when `need_dx`.
    pub(crate) fn backward(
        &mut self,
        saved: Vec<(Shape, Saved)>,
        mut dy: Vec<f32>,
        need_dx: bool,
    ) -> Option<Vec<f32>> {
        // Layers before the first convolution have no parameters: without `need_dx` the
        // backward pass stops at that convolution.
        let first = self
            .0
            .iter()
            .position(|op| matches!(op, Op::Conv(_)))
            .unwrap_or(0);
        for (i, (op, (s, keep))) in self.0.iter_mut().zip(saved).enumerate().rev() {
            let want = need_dx || i > first;
            dy = match (op, keep) {
                (Op::Conv(c), Saved::Col(col)) => c.backward(&col, &dy, s, want)?,
                (Op::Silu, Saved::Input(x)) => {
                    layers::silu_backward(&x, &mut dy);
                    dy
                }
                (Op::Up2, _) => layers::up2_backward(&dy, s),
                // Space to depth and back are permutations: each one's adjoint is the other.
                (Op::S2d, _) => layers::d2s(
                    &dy,
                    Shape {
                        h: s.h / 2,
                        w: s.w / 2,
                        c: 4 * s.c,
                        ..s
                    },
                ),
                (Op::D2s, _) => layers::s2d(
                    &dy,
                    Shape {
                        h: 2 * s.h,
                        w: 2 * s.w,
                        c: s.c / 4,
                        ..s
                    },
                ),
                _ => unreachable!("saved state matches its op"),
            };
        }
        need_dx.then_some(dy)
    }
}

impl Visit for Seq {
    fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        for (i, op) in self.0.iter_mut().enumerate() {
            if let Op::Conv(c) = op {
                c.params(&format!("{prefix}.{i}"), out);
            }
        }
    }
}

/// The VAE.
#[derive(Clone, Debug)]
pub struct Vae {
    pub(crate) config: VaeConfig,
    pub(crate) encoder: Seq,
    pub(crate) decoder: Seq,
}

impl Vae {
    /// A freshly initialised VAE.
    pub fn new(config: VaeConfig, rng: &mut Gaussian) -> Self {
        let [c0, c1, c2] = config.channels;
        let l = config.latent_channels;
        // SiLU halves the variance of a unit Gaussian roughly; a gain of 1.7 keeps the
        // activations' scale through the stack.
        let g = 1.7;
        let conv = |i, o, s, g, rng: &mut Gaussian| Op::Conv(Conv::new(i, o, s, g, rng));
        let encoder = Seq(vec![
            Op::S2d,
            conv(12, c0, 1, 1.0, rng),
            Op::Silu,
            conv(c0, c1, 2, g, rng),
            Op::Silu,
            conv(c1, c1, 1, g, rng),
            Op::Silu,
            conv(c1, c2, 2, g, rng),
            Op::Silu,
            conv(c2, c2, 1, g, rng),
            Op::Silu,
            conv(c2, 2 * l, 1, 0.3, rng),
        ]);
        let decoder = Seq(vec![
            conv(l, c2, 1, 1.0, rng),
            Op::Silu,
            conv(c2, c2, 1, g, rng),
            Op::Silu,
            Op::Up2,
            conv(c2, c1, 1, g, rng),
            Op::Silu,
            conv(c1, c1, 1, g, rng),
            Op::Silu,
            Op::Up2,
            conv(c1, c0, 1, g, rng),
            Op::Silu,
            conv(c0, 12, 1, 0.5, rng),
            Op::D2s,
        ]);
        Self {
            config,
            encoder,
            decoder,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> VaeConfig {
        self.config
    }

    fn image_shape(n: usize) -> Shape {
        Shape {
            n,
            h: IMAGE,
            w: IMAGE,
            c: 3,
        }
    }

    pub(crate) fn latent_shape(&self, n: usize) -> Shape {
        Shape {
            n,
            h: LATENT,
            w: LATENT,
            c: self.config.latent_channels,
        }
    }

    /// Encodes `n` images (NHWC, values in [-1, 1]) to the posterior means and log-variances,
    /// each `n × latent_len`.
    pub fn encode(&self, images: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
        let (y, _) = self
            .encoder
            .forward(images.to_vec(), Self::image_shape(n), false);
        split_moments(&y, self.config.latent_channels)
    }

    /// Decodes `n` latents (NHWC `8×8×latent_channels`) to images in about [-1, 1].
    pub fn decode(&self, latents: &[f32], n: usize) -> Vec<f32> {
        self.decoder
            .forward(latents.to_vec(), self.latent_shape(n), false)
            .0
    }

    /// One training step's forward and backward pass on `n` images: accumulates the
    /// gradients and returns (mean absolute pixel error, mean KL per latent number).
    pub(crate) fn train_step(
        &mut self,
        images: &[f32],
        n: usize,
        kl_weight: f32,
        noise: &[f32],
    ) -> (f64, f64) {
        let l = self.config.latent_channels;
        let (y, enc_saved) = self
            .encoder
            .forward(images.to_vec(), Self::image_shape(n), true);
        let (mean, logvar) = split_moments(&y, l);
        let mut z = vec![0.0; mean.len()];
        let mut std = vec![0.0; mean.len()];
        for i in 0..z.len() {
            std[i] = math::exp(0.5 * logvar[i]);
            z[i] = mean[i] + std[i] * noise[i];
        }
        let (out, dec_saved) = self.decoder.forward(z, self.latent_shape(n), true);
        // L1 reconstruction: its gradient is the sign over the number of pixels.
        let count = out.len() as f32;
        let mut l1 = 0.0f64;
        let mut dout = vec![0.0; out.len()];
        for ((d, o), x) in dout.iter_mut().zip(&out).zip(images) {
            let e = o - x;
            l1 += f64::from(e.abs());
            *d = if e > 0.0 {
                1.0 / count
            } else if e < 0.0 {
                -1.0 / count
            } else {
                0.0
            };
        }
        let dz = self
            .decoder
            .backward(dec_saved, dout, true)
            .unwrap_or_default();
        // KL(N(μ, σ²) ‖ N(0, 1)) per latent number, averaged.
        let lat = mean.len() as f32;
        let mut kl = 0.0f64;
        let mut dy = vec![0.0; y.len()];
        for i in 0..mean.len() {
            let var = std[i] * std[i];
            kl += 0.5 * f64::from(mean[i] * mean[i] + var - 1.0 - logvar[i]);
            let dmean = dz[i] + kl_weight * mean[i] / lat;
            let (row, ch) = (i / l, i % l);
            let raw = y[row * 2 * l + l + ch];
            let dlogvar = if (-30.0..=20.0).contains(&raw) {
                dz[i] * noise[i] * 0.5 * std[i] + kl_weight * 0.5 * (var - 1.0) / lat
            } else {
                0.0
            };
            dy[row * 2 * l + ch] = dmean;
            dy[row * 2 * l + l + ch] = dlogvar;
        }
        self.encoder.backward(enc_saved, dy, false);
        (l1 / f64::from(count), kl / f64::from(lat))
    }
}

/// Splits the encoder's `2L` channels into means and log-variances (clamped, as in Stable
/// Diffusion's VAE, so a wild value cannot overflow `exp`).
fn split_moments(y: &[f32], l: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = y.len() / (2 * l);
    let mut mean = Vec::with_capacity(rows * l);
    let mut logvar = Vec::with_capacity(rows * l);
    for row in y.chunks_exact(2 * l) {
        mean.extend_from_slice(&row[..l]);
        logvar.extend(row[l..].iter().map(|v| v.clamp(-30.0, 20.0)));
    }
    (mean, logvar)
}

impl Visit for Vae {
    fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        self.encoder.params(&format!("{prefix}encoder"), out);
        self.decoder.params(&format!("{prefix}decoder"), out);
    }
}
