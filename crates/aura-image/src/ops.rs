//! The element-wise and normalising operations of the networks, and sliced attention, on
//! NHWC activations. Every reduction has one fixed order written out in the code (Rust
//! never reassociates or fuses float operations), so results do not depend on threads or
//! on how the compiler vectorises; `exp` and `erf` are this module's own polynomials for
//! the same reason (and for speed: the platform's `expf` would dominate attention).

use rayon::prelude::*;

use crate::kernels::{self, ColsA, KernelVariant, PackedB, RowsA};

/// How a network computes: which micro-kernel runs (the thread pool is the caller's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub(crate) variant: KernelVariant,
}

/// Defines `$name(variant, args...)`: the body compiled three times, for AVX-512, for
/// AVX2 and for the baseline, and chosen by the kernel variant. The body is the same
/// scalar code in every copy (Rust never fuses or reorders float operations), so the
/// copies differ only in vector width, never in results; the wider ones only make the
/// compiler's vectorisation of `exp` and friends wider.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        pub(crate) fn $name(variant: KernelVariant, $($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma,f16c")]
            fn wide512($($arg: $ty),*) {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            fn wide256($($arg: $ty),*) {
                body($($arg),*)
            }
            match variant {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the variant is only `Avx512` when the CPU has these features
                // (`KernelVariant::detect` and `is_supported`).
                KernelVariant::Avx512 => unsafe { wide512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for AVX2.
                KernelVariant::Avx2 => unsafe { wide256($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}

/// An element-wise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    Silu,
    Gelu,
    QuickGelu,
}

multiversion! {
    /// Applies `act` to every value of `x`.
    fn activate_chunk(x: &mut [f32], act: Activation) {
        match act {
            Activation::Silu => x.iter_mut().for_each(|v| *v = silu(*v)),
            Activation::Gelu => x.iter_mut().for_each(|v| *v = gelu(*v)),
            Activation::QuickGelu => x.iter_mut().for_each(|v| *v = quick_gelu(*v)),
        }
    }
}

/// Applies `act` to every value, in parallel (each value on its own: order is irrelevant).
pub(crate) fn activate(ctx: Ctx, x: &mut [f32], act: Activation) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| activate_chunk(ctx.variant, c, act));
}

multiversion! {
    /// GEGLU on rows of `2 * half` values: `out = a * gelu(b)` for each row `[a, b]`.
    fn geglu_rows(p: &[f32], out: &mut [f32], half: usize) {
        for (o, row) in out.chunks_exact_mut(half).zip(p.chunks_exact(2 * half)) {
            let (a, b) = row.split_at(half);
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = a * gelu(b);
            }
        }
    }
}

/// GEGLU of `rows` rows of `2 * half` values.
pub(crate) fn geglu(ctx: Ctx, p: &[f32], half: usize) -> Vec<f32> {
    let rows = p.len() / (2 * half).max(1);
    let mut out = vec![0.0f32; rows * half];
    let per = (CHUNK / (2 * half).max(1)).max(1);
    out.par_chunks_mut(per * half)
        .zip(p.par_chunks(per * 2 * half))
        .for_each(|(o, p)| geglu_rows(ctx.variant, p, o, half));
    out
}

/// `n` images of `h x w` pixels with `c` channels, NHWC (a sequence of tokens is an image
/// of one row: `h = 1`, `w` tokens).
#[derive(Clone, Debug, Default)]
pub(crate) struct Act {
    pub(crate) data: Vec<f32>,
    pub(crate) n: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
}

impl Act {
    pub(crate) fn new(data: Vec<f32>, n: usize, h: usize, w: usize, c: usize) -> Self {
        debug_assert_eq!(data.len(), n * h * w * c);
        Self { data, n, h, w, c }
    }

    /// Pixels (or tokens) over the whole batch.
    pub(crate) fn rows(&self) -> usize {
        self.n * self.h * self.w
    }

    pub(crate) fn with_data(&self, data: Vec<f32>, c: usize) -> Self {
        Self::new(data, self.n, self.h, self.w, c)
    }
}

/// Elements per parallel task of an element-wise operation.
const CHUNK: usize = 1 << 14;

/// `a += b`, value by value.
pub(crate) fn add_inplace(a: &mut [f32], b: &[f32]) {
    debug_assert_eq!(a.len(), b.len());
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x += y));
}

/// `e^x` to about 2 ulp, with plain multiplies and adds only (so every build computes the
/// same bits) and no library call (so it vectorises). Inputs below -87 give 0-ish
/// subnormal-free results; above 88 they saturate at `f32::MAX`-ish.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round to nearest through the float adder (2^23 + 2^22 shifts the fraction out),
    // which is exact for |v| < 2^22 and needs no rounding instruction.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // exp(r) on |r| <= ln2/2: Taylor terms to r^7, Horner form.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// The error function to about 1.5e-7 (Abramowitz and Stegun 7.1.26), plain arithmetic.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let s = if x < 0.0 { -1.0 } else { 1.0 };
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let y = 1.0
        - (((((1.061_405_4 * t - 1.453_152_1) * t) + 1.421_413_8) * t - 0.284_496_72) * t
            + 0.254_829_6)
            * t
            * exp(-a * a);
    s * y
}

/// GELU with the exact (erf) form, as PyTorch's default.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// CLIP's `quick_gelu`: `x * sigmoid(1.702 x)`.
#[inline(always)]
pub(crate) fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + exp(-1.702 * x))
}

/// SiLU (swish): `x * sigmoid(x)`.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// The sum of `x` in a fixed order: 16 lanes (value `i` into lane `i % 16`, in order),
/// folded pairwise.
#[inline(always)]
pub(crate) fn lane_sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    for (l, v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += v;
    }
    fold16(lanes)
}

#[inline(always)]
fn fold16(l: [f32; 16]) -> f32 {
    let mut w = 16;
    let mut l = l;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            l[i] += l[i + w];
        }
    }
    l[0]
}

/// Pixels whose sums one task adds up: a fixed number, so the order of every sum is
/// the same at any thread count.
const GN_BLOCK: usize = 256;

multiversion! {
    /// `y = (v - mean) * scale + shift` per channel (then SiLU), over whole pixels.
    fn norm_apply(x: &mut [f32], mean: &[f32], scale: &[f32], shift: &[f32], then_silu: bool) {
        let c = mean.len();
        for px in x.chunks_exact_mut(c) {
            for (((v, &m), &a), &b) in px.iter_mut().zip(mean).zip(scale).zip(shift) {
                let y = (*v - m) * a + b;
                *v = if then_silu { silu(y) } else { y };
            }
        }
    }
}

/// Group normalisation of NHWC activations (optionally followed by SiLU), in place.
/// Each (image, group)'s mean and variance are sums in f64 over blocks of
/// [`GN_BLOCK`] pixels (pixel order within a block, then block order).
pub(crate) fn group_norm(
    ctx: Ctx,
    x: &mut Act,
    groups: usize,
    eps: f32,
    gamma: &[f32],
    beta: &[f32],
    then_silu: bool,
) {
    let (n, c, hw) = (x.n, x.c, x.h * x.w);
    let cg = c / groups;
    /// Sums of `f(image * groups + group, value)` per (image, group).
    fn block_sums(x: &Act, groups: usize, f: impl Fn(usize, f32) -> f64 + Sync) -> Vec<f64> {
        let (n, c, hw) = (x.n, x.c, x.h * x.w);
        let (cg, blocks) = (c / groups, hw.div_ceil(GN_BLOCK));
        let parts: Vec<Vec<f64>> = (0..n * blocks)
            .into_par_iter()
            .map(|t| {
                let (b, k) = (t / blocks, t % blocks);
                let p0 = b * hw + k * GN_BLOCK;
                let p1 = b * hw + ((k + 1) * GN_BLOCK).min(hw);
                let mut s = vec![0.0f64; groups];
                for px in x.data[p0 * c..p1 * c].chunks_exact(c) {
                    for (g, (sg, vals)) in s.iter_mut().zip(px.chunks_exact(cg)).enumerate() {
                        for &v in vals {
                            *sg += f(b * groups + g, v);
                        }
                    }
                }
                s
            })
            .collect();
        let mut total = vec![0.0f64; n * groups];
        for (t, part) in parts.iter().enumerate() {
            let b = t / blocks;
            for (g, v) in part.iter().enumerate() {
                total[b * groups + g] += v;
            }
        }
        total
    }
    let count = (hw * cg) as f64;
    let mean: Vec<f64> = block_sums(x, groups, |_, v| f64::from(v))
        .iter()
        .map(|s| s / count)
        .collect();
    let var: Vec<f64> = block_sums(x, groups, |bg, v| {
        let d = f64::from(v) - mean[bg];
        d * d
    })
    .iter()
    .map(|s| s / count)
    .collect();
    // Per image: each channel's mean, scale (1/std * gamma) and shift (beta).
    let mut means = vec![0.0f32; n * c];
    let mut scales = vec![0.0f32; n * c];
    for b in 0..n {
        for ch in 0..c {
            let bg = b * groups + ch / cg;
            means[b * c + ch] = mean[bg] as f32;
            scales[b * c + ch] = (1.0 / (var[bg] + f64::from(eps)).sqrt()) as f32 * gamma[ch];
        }
    }
    let rows = (CHUNK / c).max(1);
    for b in 0..n {
        let img = &mut x.data[b * hw * c..(b + 1) * hw * c];
        let (m, a) = (&means[b * c..(b + 1) * c], &scales[b * c..(b + 1) * c]);
        img.par_chunks_mut(rows * c)
            .for_each(|chunk| norm_apply(ctx.variant, chunk, m, a, beta, then_silu));
    }
}

/// Layer normalisation over the last dimension (`c` values per row), into a new buffer.
pub(crate) fn layer_norm(x: &[f32], c: usize, eps: f32, gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .for_each(|(o, row)| {
            let mean = lane_sum(row) / c as f32;
            let mut sq = [0.0f32; 16];
            for (i, &v) in row.iter().enumerate() {
                let d = v - mean;
                sq[i % 16] += d * d;
            }
            let var = fold16(sq) / c as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (i, (o, &v)) in o.iter_mut().zip(row).enumerate() {
                *o = (v - mean) * inv * gamma[i] + beta[i];
            }
        });
    out
}

multiversion! {
    /// The unnormalised softmax of each column of `s` (`rows x cols`), in place: each value
    /// becomes `exp((v - column max) * scale)` (a masked score, minus infinity, exactly 0),
    /// and `sums` receives each column's total, summed down the rows in order.
    fn softmax_columns(s: &mut [f32], cols: usize, scale: f32, sums: &mut [f32]) {
        let mut max = vec![f32::NEG_INFINITY; cols];
        for row in s.chunks_exact(cols) {
            for (m, &v) in max.iter_mut().zip(row) {
                *m = m.max(v);
            }
        }
        sums.fill(0.0);
        for row in s.chunks_exact_mut(cols) {
            for ((v, &m), sum) in row.iter_mut().zip(&max).zip(sums.iter_mut()) {
                *v = if *v == f32::NEG_INFINITY { 0.0 } else { exp((*v - m) * scale) };
                *sum += *v;
            }
        }
    }
}

/// Query rows per attention task: bounds the score matrix each task holds
/// (`QUERY_CHUNK x keys` floats) whatever the image size.
const QUERY_CHUNK: usize = 256;

/// Scaled dot-product attention of `n` sequences, `heads` heads of `dh` values, in slices
/// of [`QUERY_CHUNK`] queries: `q` is `n x tq x (heads * dh)`, `k` and `v` are
/// `n x tk x (heads * dh)`. Returns `n x tq x (heads * dh)`. With `causal`, query `i`
/// sees keys `0..=i` (the text encoder).
///
/// Each slice is computed transposed: scores `S^T = K Q^T` (keys by queries), a softmax
/// down each column, then `O^T = V^T S^T` read straight from the scores, so the narrow
/// head width is the product's row count (padded to 12) rather than its column count
/// (padded to 32), and the scores are never copied.
#[allow(
    clippy::too_many_arguments,
    reason = "the shapes of one attention call"
)]
pub(crate) fn attention(
    ctx: Ctx,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    tq: usize,
    tk: usize,
    heads: usize,
    dh: usize,
    causal: bool,
) -> Vec<f32> {
    let stride = heads * dh;
    let scale = 1.0 / (dh as f32).sqrt();
    let chunks = tq.div_ceil(QUERY_CHUNK);
    let parts: Vec<Vec<f32>> = (0..n * heads * chunks)
        .into_par_iter()
        .map(|t| {
            let (bh, ci) = (t / chunks, t % chunks);
            let (b, h) = (bh / heads, bh % heads);
            let r0 = ci * QUERY_CHUNK;
            let rows = QUERY_CHUNK.min(tq - r0);
            let cols = rows.next_multiple_of(kernels::NR);
            let qt = PackedB::from_rows_transposed(
                &q[(b * tq + r0) * stride + h * dh..],
                rows,
                cols,
                dh,
                stride,
            );
            let keys = RowsA {
                data: &k[b * tk * stride + h * dh..],
                rows: tk,
                k: dh,
                lda: stride,
            };
            let mut st = vec![0.0f32; tk * cols];
            kernels::gemm(ctx.variant, &keys, &qt, None, &mut st, false);
            if causal {
                for (t, row) in st.chunks_exact_mut(cols).enumerate() {
                    for (j, x) in row.iter_mut().enumerate() {
                        if t > r0 + j {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            let mut sums = vec![0.0f32; cols];
            softmax_columns(ctx.variant, &mut st, cols, scale, &mut sums);
            let values = ColsA {
                data: &v[b * tk * stride + h * dh..],
                rows: dh,
                k: tk,
                stride,
            };
            let mut ot = vec![0.0f32; dh * cols];
            kernels::gemm_rows(ctx.variant, &values, &st, tk, cols, &mut ot, false);
            let mut o = vec![0.0f32; rows * dh];
            for (j, orow) in o.chunks_exact_mut(dh).enumerate() {
                let inv = 1.0 / sums[j];
                for (d, x) in orow.iter_mut().enumerate() {
                    *x = ot[d * cols + j] * inv;
                }
            }
            o
        })
        .collect();
    let mut out = vec![0.0f32; n * tq * stride];
    for (t, o) in parts.iter().enumerate() {
        let (bh, ci) = (t / chunks, t % chunks);
        let (b, h) = (bh / heads, bh % heads);
        let r0 = ci * QUERY_CHUNK;
        for (i, row) in o.chunks_exact(dh).enumerate() {
            let at = (b * tq + r0 + i) * stride + h * dh;
            out[at..at + dh].copy_from_slice(row);
        }
    }
    out
}

/// Nearest-neighbour upsampling by 2 in both directions.
pub(crate) fn upsample2x(x: &Act) -> Act {
    upsample_to(x, 2 * x.h, 2 * x.w)
}

/// Nearest-neighbour resizing to `h2 x w2` (PyTorch's `nearest`: output pixel `y` takes
/// input pixel `floor(y * h / h2)`), which the UNet needs when a side was odd on the way
/// down.
pub(crate) fn upsample_to(x: &Act, h2: usize, w2: usize) -> Act {
    let c = x.c;
    let mut out = vec![0.0f32; x.n * h2 * w2 * c];
    out.par_chunks_mut(w2 * c).enumerate().for_each(|(row, o)| {
        let (b, y) = (row / h2, row % h2);
        let sy = y * x.h / h2;
        let src = &x.data[(b * x.h + sy) * x.w * c..(b * x.h + sy + 1) * x.w * c];
        for (xo, px) in o.chunks_exact_mut(c).enumerate() {
            let sx = xo * x.w / w2;
            px.copy_from_slice(&src[sx * c..(sx + 1) * c]);
        }
    });
    Act::new(out, x.n, h2, w2, c)
}

/// Concatenates the channels of `a` and `b` (same images and sizes).
pub(crate) fn concat_channels(a: &Act, b: &Act) -> Act {
    let c = a.c + b.c;
    let mut out = vec![0.0f32; a.rows() * c];
    out.par_chunks_mut(c * 64).enumerate().for_each(|(i, o)| {
        for (p, px) in o.chunks_exact_mut(c).enumerate() {
            let r = i * 64 + p;
            px[..a.c].copy_from_slice(&a.data[r * a.c..(r + 1) * a.c]);
            px[a.c..].copy_from_slice(&b.data[r * b.c..(r + 1) * b.c]);
        }
    });
    Act::new(out, a.n, a.h, a.w, c)
}

/// The sinusoidal embedding of a diffusion timestep (diffusers' `get_timestep_embedding`
/// with `flip_sin_to_cos = true`, shift 0): `[cos(t f_i)..., sin(t f_i)...]` with
/// `f_i = 10000^(-i / half)`, computed in f64 and rounded once.
pub(crate) fn timestep_embedding(t: f64, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0.0f32; dim];
    for i in 0..half {
        let f = (-(10000f64.ln()) * i as f64 / half as f64).exp();
        out[i] = (t * f).cos() as f32;
        out[half + i] = (t * f).sin() as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = f64::from(x).exp();
            let rel = ((f64::from(exp(x)) - want) / want).abs();
            worst = worst.max(rel);
            x += 0.001_37;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(f32::NEG_INFINITY) >= 0.0);
    }

    #[test]
    fn erf_and_gelu_are_accurate() {
        for i in -400..=400 {
            let x = i as f32 / 100.0;
            // erf through a high-precision series in f64 for reference.
            let xf = f64::from(x);
            let mut term = xf;
            let mut sum = xf;
            for n in 1..200 {
                term *= -xf * xf / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            let want = sum * 2.0 / std::f64::consts::PI.sqrt();
            assert!((f64::from(erf(x)) - want).abs() < 5e-7, "erf({x})");
        }
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
    }

    #[test]
    fn attention_matches_a_plain_computation() {
        let (n, tq, tk, heads, dh) = (2, 300, 77, 3, 8);
        let stride = heads * dh;
        let val = |i: usize, s: usize| (((i * 7919 + s * 104729) % 1000) as f32 / 500.0) - 1.0;
        let q: Vec<f32> = (0..n * tq * stride).map(|i| val(i, 1)).collect();
        let k: Vec<f32> = (0..n * tk * stride).map(|i| val(i, 2)).collect();
        let v: Vec<f32> = (0..n * tk * stride).map(|i| val(i, 3)).collect();
        let ctx = Ctx {
            variant: KernelVariant::detect(),
        };
        let got = attention(ctx, &q, &k, &v, n, tq, tk, heads, dh, false);
        for b in 0..n {
            for h in 0..heads {
                for i in (0..tq).step_by(37) {
                    let qi = &q[(b * tq + i) * stride + h * dh..][..dh];
                    let scores: Vec<f64> = (0..tk)
                        .map(|j| {
                            let kj = &k[(b * tk + j) * stride + h * dh..][..dh];
                            qi.iter()
                                .zip(kj)
                                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                                .sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..dh {
                        let want: f64 = (0..tk)
                            .map(|j| e[j] / z * f64::from(v[(b * tk + j) * stride + h * dh + d]))
                            .sum();
                        let g = f64::from(got[(b * tq + i) * stride + h * dh + d]);
                        assert!(
                            (g - want).abs() < 1e-5,
                            "b{b} h{h} i{i} d{d}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn group_norm_normalises_each_group() {
        // One block of pixels and several (the sums are blocked by GN_BLOCK pixels).
        for (n, h, w, c, groups) in [(2, 3, 5, 8, 4), (1, 20, 30, 8, 2)] {
            let data: Vec<f32> = (0..n * h * w * c)
                .map(|i| ((i * 37) % 11) as f32 - 3.0 + (i % 5) as f32 * 0.01)
                .collect();
            let mut x = Act::new(data, n, h, w, c);
            let ctx = Ctx {
                variant: KernelVariant::detect(),
            };
            group_norm(
                ctx,
                &mut x,
                groups,
                1e-6,
                &vec![1.0; c],
                &vec![0.0; c],
                false,
            );
            let cg = c / groups;
            for b in 0..n {
                for g in 0..groups {
                    let vals: Vec<f64> = (0..h * w)
                        .flat_map(|p| (0..cg).map(move |j| (p, j)))
                        .map(|(p, j)| f64::from(x.data[(b * h * w + p) * c + g * cg + j]))
                        .collect();
                    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                    let var =
                        vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
                    assert!(
                        mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                        "{mean} {var}"
                    );
                }
            }
        }
    }
}
