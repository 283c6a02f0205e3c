//! The tiny model's layers with hand-written backward passes: linear maps (with optional
//! LoRA adapters), 3×3 convolutions by im2col, SiLU, layer normalisation and the reshaping
//! of NHWC feature maps.
//!
//! Every reduction runs in one fixed order whatever the thread count: products go through
//! [`super::gemm`], bias gradients and normalisation statistics are sequential loops, and
//! parallel loops only ever split work whose outputs are disjoint (images of a batch,
//! fixed-size chunks of an element-wise map).
#![forbid(unsafe_code)]

use rayon::prelude::*;

use super::gemm::{View, matmul};
use super::math::{self, Gaussian};

/// Elements per task in element-wise maps: a constant, so chunks never depend on threads.
const CHUNK: usize = 1 << 14;

/// A trainable tensor: its values and the gradient of the loss with respect to them.
#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub(crate) shape: Vec<usize>,
    pub(crate) w: Vec<f32>,
    pub(crate) g: Vec<f32>,
    /// Whether training updates it (false for a base model's weights under LoRA).
    pub(crate) trainable: bool,
}

impl Param {
    pub(crate) fn new(shape: &[usize], w: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), w.len());
        Self {
            shape: shape.to_vec(),
            g: vec![0.0; w.len()],
            w,
            trainable: true,
        }
    }

    pub(crate) fn zeros(shape: &[usize]) -> Self {
        Self::new(shape, vec![0.0; shape.iter().product()])
    }

    /// Values drawn from N(0, std²).
    pub(crate) fn normal(shape: &[usize], std: f32, rng: &mut Gaussian) -> Self {
        let mut w = vec![0.0; shape.iter().product()];
        rng.fill(&mut w);
        for x in &mut w {
            *x *= std;
        }
        Self::new(shape, w)
    }
}

/// Something holding named parameters, listed in one fixed order.
pub(crate) trait Visit {
    /// Appends `(name, parameter)` for each parameter, names starting with `prefix`.
    fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>);

    /// The parameters as a list.
    fn param_list(&mut self, prefix: &str) -> Vec<(String, &mut Param)> {
        let mut out = Vec::new();
        self.params(prefix, &mut out);
        out
    }
}

/// A low-rank adapter on a linear map: `y += (alpha / rank) · (x A) B`.
#[derive(Clone, Debug)]
pub(crate) struct Lora {
    pub(crate) a: Param,
    pub(crate) b: Param,
    pub(crate) scale: f32,
}

/// `y = x W + b` over rows, `W` stored `in × out`.
#[derive(Clone, Debug)]
pub(crate) struct Linear {
    pub(crate) w: Param,
    pub(crate) b: Param,
    pub(crate) lora: Option<Lora>,
}

/// What a linear map's backward pass needs from its forward pass.
#[derive(Debug, Default)]
pub(crate) struct LinearCache {
    x: Vec<f32>,
    xa: Vec<f32>,
}

impl Linear {
    /// Weights from N(0, gain²/in), zero bias.
    pub(crate) fn new(inp: usize, out: usize, gain: f32, rng: &mut Gaussian) -> Self {
        Self {
            w: Param::normal(&[inp, out], gain / (inp as f32).sqrt(), rng),
            b: Param::zeros(&[out]),
            lora: None,
        }
    }

    pub(crate) fn inp(&self) -> usize {
        self.w.shape[0]
    }

    pub(crate) fn out(&self) -> usize {
        self.w.shape[1]
    }

    pub(crate) fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let (i, o) = (self.inp(), self.out());
        let mut y = vec![0.0; rows * o];
        matmul(
            View::new(x, rows, i),
            View::new(&self.w.w, i, o),
            &mut y,
            false,
        );
        add_rows(&mut y, &self.b.w);
        if let Some(l) = &self.lora {
            let r = l.a.shape[1];
            let mut xa = vec![0.0; rows * r];
            matmul(
                View::new(x, rows, i),
                View::new(&l.a.w, i, r),
                &mut xa,
                false,
            );
            scale(&mut xa, l.scale);
            matmul(
                View::new(&xa, rows, r),
                View::new(&l.b.w, r, o),
                &mut y,
                true,
            );
        }
        y
    }

    /// The forward pass, keeping what the backward pass needs.
    pub(crate) fn forward_train(&self, x: Vec<f32>, rows: usize) -> (Vec<f32>, LinearCache) {
        let y = self.forward(&x, rows);
        let xa = match &self.lora {
            Some(l) => {
                let r = l.a.shape[1];
                let mut xa = vec![0.0; rows * r];
                matmul(
                    View::new(&x, rows, self.inp()),
                    View::new(&l.a.w, self.inp(), r),
                    &mut xa,
                    false,
                );
                scale(&mut xa, l.scale);
                xa
            }
            None => Vec::new(),
        };
        (y, LinearCache { x, xa })
    }

    /// Accumulates the parameters' gradients and returns the input's gradient.
    pub(crate) fn backward(&mut self, cache: &LinearCache, dy: &[f32], rows: usize) -> Vec<f32> {
        let (i, o) = (self.inp(), self.out());
        if self.w.trainable {
            matmul(
                View::new(&cache.x, rows, i).t(),
                View::new(dy, rows, o),
                &mut self.w.g,
                true,
            );
        }
        if self.b.trainable {
            sum_rows_into(dy, &mut self.b.g);
        }
        let mut dx = vec![0.0; rows * i];
        matmul(
            View::new(dy, rows, o),
            View::new(&self.w.w, i, o).t(),
            &mut dx,
            false,
        );
        if let Some(l) = &mut self.lora {
            let r = l.a.shape[1];
            // y += vB with v = s·xA: dB += vᵀ dy; du = s·(dy Bᵀ) for u = xA; dA += xᵀ du;
            // dx += du Aᵀ.
            if l.b.trainable {
                matmul(
                    View::new(&cache.xa, rows, r).t(),
                    View::new(dy, rows, o),
                    &mut l.b.g,
                    true,
                );
            }
            let mut dxa = vec![0.0; rows * r];
            matmul(
                View::new(dy, rows, o),
                View::new(&l.b.w, r, o).t(),
                &mut dxa,
                false,
            );
            scale(&mut dxa, l.scale);
            if l.a.trainable {
                matmul(
                    View::new(&cache.x, rows, i).t(),
                    View::new(&dxa, rows, r),
                    &mut l.a.g,
                    true,
                );
            }
            matmul(
                View::new(&dxa, rows, r),
                View::new(&l.a.w, i, r).t(),
                &mut dx,
                true,
            );
        }
        dx
    }
}

impl Visit for Linear {
    fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        out.push((format!("{prefix}.weight"), &mut self.w));
        out.push((format!("{prefix}.bias"), &mut self.b));
        if let Some(l) = &mut self.lora {
            out.push((format!("{prefix}.lora_a"), &mut l.a));
            out.push((format!("{prefix}.lora_b"), &mut l.b));
        }
    }
}

/// The shape of an NHWC batch of feature maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) n: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
}

impl Shape {
    pub(crate) fn len(self) -> usize {
        self.n * self.h * self.w * self.c
    }
    fn image(self) -> usize {
        self.h * self.w * self.c
    }
}

/// A 3×3 convolution with padding 1 and stride 1 or 2 (output `ceil(h/stride)`), weights
/// stored `(ky, kx, cin) × cout`.
#[derive(Clone, Debug)]
pub(crate) struct Conv {
    pub(crate) w: Param,
    pub(crate) b: Param,
    pub(crate) stride: usize,
}

impl Conv {
    pub(crate) fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        gain: f32,
        rng: &mut Gaussian,
    ) -> Self {
        Self {
            w: Param::normal(&[9 * cin, cout], gain / ((9 * cin) as f32).sqrt(), rng),
            b: Param::zeros(&[cout]),
            stride,
        }
    }

    fn cin(&self) -> usize {
        self.w.shape[0] / 9
    }

    pub(crate) fn cout(&self) -> usize {
        self.w.shape[1]
    }

    pub(crate) fn out_shape(&self, s: Shape) -> Shape {
        Shape {
            n: s.n,
            h: s.h.div_ceil(self.stride),
            w: s.w.div_ceil(self.stride),
            c: self.cout(),
        }
    }

    /// Returns the output and the im2col matrix (kept for the backward pass).
    pub(crate) fn forward(&self, x: &[f32], s: Shape) -> (Vec<f32>, Vec<f32>) {
        debug_assert_eq!(s.c, self.cin());
        let o = self.out_shape(s);
        let k = 9 * s.c;
        let mut col = vec![0.0f32; o.n * o.h * o.w * k];
        col.par_chunks_mut(o.h * o.w * k)
            .zip(x.par_chunks(s.image()))
            .for_each(|(col, x)| im2col(x, s, o, self.stride, col));
        let mut y = vec![0.0f32; o.len()];
        matmul(
            View::new(&col, o.n * o.h * o.w, k),
            View::new(&self.w.w, k, o.c),
            &mut y,
            false,
        );
        add_rows(&mut y, &self.b.w);
        (y, col)
    }

    /// Accumulates the parameters' gradients; returns the input's gradient if asked.
    pub(crate) fn backward(
        &mut self,
        col: &[f32],
        dy: &[f32],
        s: Shape,
        need_dx: bool,
    ) -> Option<Vec<f32>> {
        let o = self.out_shape(s);
        let (rows, k) = (o.n * o.h * o.w, 9 * s.c);
        if self.w.trainable {
            matmul(
                View::new(col, rows, k).t(),
                View::new(dy, rows, o.c),
                &mut self.w.g,
                true,
            );
        }
        if self.b.trainable {
            sum_rows_into(dy, &mut self.b.g);
        }
        if !need_dx {
            return None;
        }
        let mut dcol = vec![0.0f32; rows * k];
        matmul(
            View::new(dy, rows, o.c),
            View::new(&self.w.w, k, o.c).t(),
            &mut dcol,
            false,
        );
        let mut dx = vec![0.0f32; s.len()];
        dx.par_chunks_mut(s.image())
            .zip(dcol.par_chunks(o.h * o.w * k))
            .for_each(|(dx, dcol)| col2im(dcol, s, o, self.stride, dx));
        Some(dx)
    }
}

impl Visit for Conv {
    fn params<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, &'a mut Param)>) {
        out.push((format!("{prefix}.weight"), &mut self.w));
        out.push((format!("{prefix}.bias"), &mut self.b));
    }
}

/// One image's im2col rows: row `(oy, ox)`, columns `(ky, kx, c)`, zero outside.
fn im2col(x: &[f32], s: Shape, o: Shape, stride: usize, col: &mut [f32]) {
    let c = s.c;
    for oy in 0..o.h {
        for ox in 0..o.w {
            let row = &mut col[(oy * o.w + ox) * 9 * c..][..9 * c];
            for ky in 0..3 {
                for kx in 0..3 {
                    let dst = &mut row[(ky * 3 + kx) * c..][..c];
                    let (iy, ix) = (
                        (oy * stride + ky) as isize - 1,
                        (ox * stride + kx) as isize - 1,
                    );
                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                        dst.fill(0.0);
                    } else {
                        let at = (iy as usize * s.w + ix as usize) * c;
                        dst.copy_from_slice(&x[at..at + c]);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`] for one image, summing in row order.
fn col2im(dcol: &[f32], s: Shape, o: Shape, stride: usize, dx: &mut [f32]) {
    let c = s.c;
    for oy in 0..o.h {
        for ox in 0..o.w {
            let row = &dcol[(oy * o.w + ox) * 9 * c..][..9 * c];
            for ky in 0..3 {
                for kx in 0..3 {
                    let (iy, ix) = (
                        (oy * stride + ky) as isize - 1,
                        (ox * stride + kx) as isize - 1,
                    );
                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                        continue;
                    }
                    let at = (iy as usize * s.w + ix as usize) * c;
                    for (d, g) in dx[at..at + c]
                        .iter_mut()
                        .zip(&row[(ky * 3 + kx) * c..][..c])
                    {
                        *d += g;
                    }
                }
            }
        }
    }
}

/// `y[r] += b` for every row.
pub(crate) fn add_rows(y: &mut [f32], b: &[f32]) {
    for row in y.chunks_exact_mut(b.len()) {
        for (v, b) in row.iter_mut().zip(b) {
            *v += b;
        }
    }
}

/// `g += Σ_r y[r]`, rows in order.
pub(crate) fn sum_rows_into(y: &[f32], g: &mut [f32]) {
    for row in y.chunks_exact(g.len()) {
        for (g, v) in g.iter_mut().zip(row) {
            *g += v;
        }
    }
}

pub(crate) fn scale(x: &mut [f32], s: f32) {
    for v in x {
        *v *= s;
    }
}

/// SiLU in place, returning the input (for the backward pass).
pub(crate) fn silu(x: &mut [f32]) -> Vec<f32> {
    let input = x.to_vec();
    x.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            *v *= math::sigmoid(*v);
        }
    });
    input
}

/// SiLU without keeping the input.
pub(crate) fn silu_inplace(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            *v *= math::sigmoid(*v);
        }
    });
}

/// `dy ← dy · silu'(x)`.
pub(crate) fn silu_backward(x: &[f32], dy: &mut [f32]) {
    dy.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(d, x)| {
            for (d, &x) in d.iter_mut().zip(x) {
                let s = math::sigmoid(x);
                *d *= s * (1.0 + x * (1.0 - s));
            }
        });
}

const LN_EPS: f32 = 1e-5;

/// Layer normalisation of each row (no affine part), returning `x̂` and `1/σ` per row.
pub(crate) fn layer_norm(x: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / d;
    let mut y = vec![0.0; x.len()];
    let mut rstd = vec![0.0; rows];
    for ((row, out), r) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(&mut rstd) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        *r = 1.0 / (var + LN_EPS).sqrt();
        for (o, v) in out.iter_mut().zip(row) {
            *o = (v - mean) * *r;
        }
    }
    (y, rstd)
}

/// The input's gradient of [`layer_norm`] from its outputs.
pub(crate) fn layer_norm_backward(xhat: &[f32], rstd: &[f32], dy: &[f32], d: usize) -> Vec<f32> {
    let mut dx = vec![0.0; dy.len()];
    for (((xh, g), out), r) in xhat
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(rstd)
    {
        let mg = g.iter().sum::<f32>() / d as f32;
        let mgx = g.iter().zip(xh).map(|(g, x)| g * x).sum::<f32>() / d as f32;
        for ((o, g), x) in out.iter_mut().zip(g).zip(xh) {
            *o = r * (g - mg - x * mgx);
        }
    }
    dx
}

/// Nearest-neighbour upsampling by 2.
pub(crate) fn up2(x: &[f32], s: Shape) -> Vec<f32> {
    let (h2, w2) = (2 * s.h, 2 * s.w);
    let mut y = vec![0.0; x.len() * 4];
    y.par_chunks_mut(h2 * w2 * s.c)
        .zip(x.par_chunks(s.image()))
        .for_each(|(y, x)| {
            for yy in 0..h2 {
                for xx in 0..w2 {
                    let src = ((yy / 2) * s.w + xx / 2) * s.c;
                    y[(yy * w2 + xx) * s.c..][..s.c].copy_from_slice(&x[src..src + s.c]);
                }
            }
        });
    y
}

/// The adjoint of [`up2`] (`s` is the input's shape): each input's four copies, summed in
/// row-major order.
pub(crate) fn up2_backward(dy: &[f32], s: Shape) -> Vec<f32> {
    let w2 = 2 * s.w;
    let mut dx = vec![0.0; s.len()];
    dx.par_chunks_mut(s.image())
        .zip(dy.par_chunks(s.image() * 4))
        .for_each(|(dx, dy)| {
            for y in 0..s.h {
                for x in 0..s.w {
                    let out = &mut dx[(y * s.w + x) * s.c..][..s.c];
                    for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let at = ((2 * y + a) * w2 + 2 * x + b) * s.c;
                        for (o, g) in out.iter_mut().zip(&dy[at..at + s.c]) {
                            *o += g;
                        }
                    }
                }
            }
        });
    dx
}

/// Space to depth by 2: `(h, w, c)` → `(h/2, w/2, 4c)`, channel `(a·2 + b)·c + ch`.
pub(crate) fn s2d(x: &[f32], s: Shape) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    let (h, w) = (s.h / 2, s.w / 2);
    for n in 0..s.n {
        for yy in 0..h {
            for xx in 0..w {
                for (q, (a, b)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    let src = ((n * s.h + 2 * yy + a) * s.w + 2 * xx + b) * s.c;
                    let dst = ((n * h + yy) * w + xx) * 4 * s.c + q * s.c;
                    y[dst..dst + s.c].copy_from_slice(&x[src..src + s.c]);
                }
            }
        }
    }
    y
}

/// Depth to space by 2, the inverse of [`s2d`] (`s` is the input's shape, `c` = 4 × out).
pub(crate) fn d2s(x: &[f32], s: Shape) -> Vec<f32> {
    let c = s.c / 4;
    let (h, w) = (s.h * 2, s.w * 2);
    let mut y = vec![0.0; x.len()];
    for n in 0..s.n {
        for yy in 0..s.h {
            for xx in 0..s.w {
                for (q, (a, b)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    let src = ((n * s.h + yy) * s.w + xx) * s.c + q * c;
                    let dst = ((n * h + 2 * yy + a) * w + 2 * xx + b) * c;
                    y[dst..dst + c].copy_from_slice(&x[src..src + c]);
                }
            }
        }
    }
    y
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    type Forward<'a> = dyn Fn(&[f32]) -> Vec<f32> + 'a;
    type Backward<'a> = dyn Fn(&[f32], &[f32]) -> Vec<f32> + 'a;

    /// Checks a backward pass against central finite differences of `loss = Σ y·r`.
    pub(crate) fn check_grad(name: &str, x: &[f32], f: &Forward<'_>, df: &Backward<'_>) {
        let y = f(x);
        let r: Vec<f32> = {
            let mut g = Gaussian::new(99, 0);
            (0..y.len()).map(|_| g.normal()).collect()
        };
        let dx = df(x, &r);
        let loss = |x: &[f32]| -> f64 {
            f(x).iter()
                .zip(&r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let step = 1e-2f32;
        for i in (0..x.len()).step_by((x.len() / 13).max(1)) {
            let mut xp = x.to_vec();
            xp[i] += step;
            let mut xm = x.to_vec();
            xm[i] -= step;
            let num = (loss(&xp) - loss(&xm)) / (2.0 * f64::from(step));
            let got = f64::from(dx[i]);
            assert!(
                (num - got).abs() < 2e-2 * (1.0 + num.abs()),
                "{name}: d/dx[{i}] numeric {num}, backward {got}"
            );
        }
    }

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut g = Gaussian::new(seed, 5);
        (0..n).map(|_| g.normal()).collect()
    }

    #[test]
    fn backward_passes_match_finite_differences() {
        let mut rng = Gaussian::new(1, 1);
        // Linear with LoRA, input gradient.
        let mut lin = Linear::new(7, 5, 1.0, &mut rng);
        lin.lora = Some(Lora {
            a: Param::normal(&[7, 2], 0.5, &mut rng),
            b: Param::normal(&[2, 5], 0.5, &mut rng),
            scale: 0.7,
        });
        let x = rand(3 * 7, 2);
        let l = lin.clone();
        check_grad("linear dx", &x, &|x| l.forward(x, 3), &|x, r| {
            let mut l = l.clone();
            let (_, c) = l.forward_train(x.to_vec(), 3);
            l.backward(&c, r, 3)
        });
        // Linear weight, bias and LoRA gradients.
        for which in 0..4 {
            let base = lin.clone();
            let get = move |l: &Linear| -> Vec<f32> {
                match which {
                    0 => l.w.w.clone(),
                    1 => l.b.w.clone(),
                    2 => l.lora.as_ref().unwrap().a.w.clone(),
                    _ => l.lora.as_ref().unwrap().b.w.clone(),
                }
            };
            let set = move |l: &mut Linear, v: &[f32]| match which {
                0 => l.w.w = v.to_vec(),
                1 => l.b.w = v.to_vec(),
                2 => l.lora.as_mut().unwrap().a.w = v.to_vec(),
                _ => l.lora.as_mut().unwrap().b.w = v.to_vec(),
            };
            let xx = x.clone();
            check_grad(
                &format!("linear param {which}"),
                &get(&base),
                &|p| {
                    let mut l = base.clone();
                    set(&mut l, p);
                    l.forward(&xx, 3)
                },
                &|p, r| {
                    let mut l = base.clone();
                    set(&mut l, p);
                    let (_, c) = l.forward_train(xx.clone(), 3);
                    l.backward(&c, r, 3);
                    match which {
                        0 => l.w.g.clone(),
                        1 => l.b.g.clone(),
                        2 => l.lora.as_ref().unwrap().a.g.clone(),
                        _ => l.lora.as_ref().unwrap().b.g.clone(),
                    }
                },
            );
        }
        // Convolutions, stride 1 and 2, odd sizes.
        for stride in [1, 2] {
            let s = Shape {
                n: 2,
                h: 5,
                w: 4,
                c: 3,
            };
            let conv = Conv::new(3, 4, stride, 1.0, &mut rng);
            let x = rand(s.len(), 3);
            let c = conv.clone();
            check_grad(
                &format!("conv{stride} dx"),
                &x,
                &|x| c.forward(x, s).0,
                &|x, r| {
                    let mut c = c.clone();
                    let (_, col) = c.forward(x, s);
                    c.backward(&col, r, s, true).unwrap()
                },
            );
            let c = conv.clone();
            let xx = x.clone();
            check_grad(
                &format!("conv{stride} dw"),
                &conv.w.w,
                &|w| {
                    let mut c = c.clone();
                    c.w.w = w.to_vec();
                    c.forward(&xx, s).0
                },
                &|w, r| {
                    let mut c = c.clone();
                    c.w.w = w.to_vec();
                    let (_, col) = c.forward(&xx, s);
                    c.backward(&col, r, s, false);
                    c.w.g
                },
            );
        }
        let x = rand(40, 4);
        check_grad(
            "silu",
            &x,
            &|x| {
                let mut y = x.to_vec();
                silu(&mut y);
                y
            },
            &|x, r| {
                let mut d = r.to_vec();
                silu_backward(x, &mut d);
                d
            },
        );
        check_grad("layer norm", &x, &|x| layer_norm(x, 8).0, &|x, r| {
            let (y, rs) = layer_norm(x, 8);
            layer_norm_backward(&y, &rs, r, 8)
        });
        let s = Shape {
            n: 2,
            h: 3,
            w: 2,
            c: 2,
        };
        let x = rand(s.len(), 6);
        check_grad("up2", &x, &|x| up2(x, s), &|_, r| up2_backward(r, s));
        let s4 = Shape {
            n: 2,
            h: 4,
            w: 2,
            c: 3,
        };
        let x = rand(s4.len(), 7);
        let back = d2s(
            &s2d(&x, s4),
            Shape {
                n: 2,
                h: 2,
                w: 1,
                c: 12,
            },
        );
        assert_eq!(back, x, "depth to space inverts space to depth");
    }
}
