//! Adam with decoupled weight decay and global-norm gradient clipping, element-wise in
//! fixed-size chunks (so the thread count changes nothing) and with the gradient norm
//! summed in one fixed order.
#![forbid(unsafe_code)]

use rayon::prelude::*;

use crate::tiny::layers::Param;

const CHUNK: usize = 1 << 14;

/// The optimiser's state for the trainable parameters of a model, in visiting order.
#[derive(Debug, Default)]
pub(crate) struct Adam {
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// β₁ᵗ and β₂ᵗ, kept as running products (no `powi`, whose rounding is the C
    /// library's business).
    b1t: f32,
    b2t: f32,
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) eps: f32,
    pub(crate) weight_decay: f32,
    pub(crate) clip: f32,
}

impl Adam {
    pub(crate) fn new(weight_decay: f32, clip: f32) -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            clip,
            b1t: 1.0,
            b2t: 1.0,
            ..Self::default()
        }
    }

    /// The global L2 norm of the trainable gradients, in f64, tensor by tensor in order.
    pub(crate) fn grad_norm(params: &[&mut Param]) -> f64 {
        let mut s = 0.0f64;
        for p in params.iter().filter(|p| p.trainable) {
            for &g in &p.g {
                s += f64::from(g) * f64::from(g);
            }
        }
        s.sqrt()
    }

    /// One update of every trainable parameter with learning rate `lr`; zeroes the
    /// gradients. Returns the gradient norm before clipping.
    pub(crate) fn step(&mut self, mut params: Vec<&mut Param>, lr: f32) -> f64 {
        let norm = Self::grad_norm(&params);
        let clip = if self.clip > 0.0 && norm > f64::from(self.clip) {
            (f64::from(self.clip) / norm) as f32
        } else {
            1.0
        };
        self.b1t *= self.beta1;
        self.b2t *= self.beta2;
        let bc1 = 1.0 - self.b1t;
        let bc2 = 1.0 - self.b2t;
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let mut slot = 0;
        for p in params.iter_mut() {
            if !p.trainable {
                p.g.fill(0.0);
                continue;
            }
            if self.m.len() <= slot {
                self.m.push(vec![0.0; p.w.len()]);
                self.v.push(vec![0.0; p.w.len()]);
            }
            let (m, v) = (&mut self.m[slot], &mut self.v[slot]);
            slot += 1;
            p.w.par_chunks_mut(CHUNK)
                .zip(p.g.par_chunks_mut(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .for_each(|((w, g), (m, v))| {
                    for i in 0..w.len() {
                        let gi = g[i] * clip;
                        m[i] = b1 * m[i] + (1.0 - b1) * gi;
                        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                        let update = (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                        w[i] -= lr * (update + wd * w[i]);
                        g[i] = 0.0;
                    }
                });
        }
        norm
    }
}

/// Learning rate at `step` of `steps`: linear warm-up, then cosine decay to `floor × peak`.
pub(crate) fn learning_rate(
    step: usize,
    steps: usize,
    peak: f32,
    warmup: usize,
    floor: f32,
) -> f32 {
    if step < warmup {
        return peak * (step + 1) as f32 / warmup as f32;
    }
    let span = steps.saturating_sub(warmup).max(1);
    let progress = (step - warmup) as f64 / span as f64;
    let (_, c) = crate::tiny::math::sin_cos(std::f64::consts::PI * progress.min(1.0));
    let cos = ((1.0 + c) / 2.0) as f32;
    peak * (floor + (1.0 - floor) * cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_minimises_a_quadratic_and_clips() {
        let mut p = Param::new(&[3], vec![1.0, -2.0, 3.0]);
        let mut adam = Adam::new(0.0, 1.0);
        for _ in 0..2000 {
            for (g, w) in p.g.iter_mut().zip(&p.w) {
                *g = 2.0 * (w - 0.5);
            }
            adam.step(vec![&mut p], 0.01);
        }
        assert!(p.w.iter().all(|w| (w - 0.5).abs() < 1e-2), "{:?}", p.w);
        assert!(p.g.iter().all(|g| *g == 0.0), "gradients are zeroed");
        let mut frozen = Param::new(&[1], vec![1.0]);
        frozen.trainable = false;
        frozen.g[0] = 5.0;
        adam.step(vec![&mut frozen], 0.1);
        assert_eq!(frozen.w, [1.0]);
        assert!(learning_rate(0, 100, 1.0, 10, 0.1) < learning_rate(9, 100, 1.0, 10, 0.1));
        assert!((learning_rate(99, 100, 1.0, 10, 0.1) - 0.1).abs() < 1e-3);
    }
}
