//! Elementary functions and the seeded Gaussian stream of the tiny model, written out in
//! IEEE additions, multiplications, divisions and square roots only, so training and
//! sampling give the same bits on every platform (the C library's `exp`, `log`, `sin` and
//! `cos` differ between versions and systems; these do not).
#![forbid(unsafe_code)]

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// `e^x` in f32 to about 2 ulp for x in [-87, 88]: `x = n ln2 + r`, a degree-6
/// polynomial for `e^r`, then `2^n` built from its bits.
pub(crate) fn exp(x: f32) -> f32 {
    // Clamped rather than branched on, so that loops over it vectorise: below -87 the
    // result is e^-87 (about 1.6e-38) instead of a smaller number or zero, above 88 it is
    // e^88 instead of infinity; a NaN stays a NaN.
    let x = x.clamp(-87.0, 88.0);
    // Round to the nearest integer (ties to even) by the 1.5·2²³ trick: IEEE addition in
    // the default rounding mode, and no call into the C library's `rintf`.
    const MAGIC: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    // Cody and Waite: ln 2 split in a part exact in f32 and a small remainder.
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The logistic function.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Natural logarithm in f64 (for the Gaussian stream): `x = m 2^e` with `m` in
/// [sqrt(1/2), sqrt(2)), then `ln m = 2 atanh((m-1)/(m+1))` by its series.
pub(crate) fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if e == -1023 {
        // Subnormal inputs never occur here (uniforms are at least 2^-53); treat them as
        // the smallest normal rather than carrying a second path.
        return -708.396_418_532_264_1;
    }
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    // |s| < 0.172: 12 odd terms reach below 1e-17.
    for _ in 0..12 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * std::f64::consts::LN_2
}

/// `(sin x, cos x)` for `x` in `[0, 2π]` in f64, by reduction to `[-π/4, π/4]` and Taylor
/// series.
pub(crate) fn sin_cos(x: f64) -> (f64, f64) {
    use std::f64::consts::FRAC_PI_2;
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let q = (x / FRAC_PI_2 + MAGIC) - MAGIC;
    let r = x - q * FRAC_PI_2;
    let r2 = r * r;
    let mut s = 0.0;
    let mut c = 0.0;
    let mut ts = r;
    let mut tc = 1.0;
    for i in 0..11 {
        s += ts;
        c += tc;
        let a = (2 * i + 2) as f64;
        ts *= -r2 / (a * (a + 1.0));
        tc *= -r2 / ((a - 1.0) * a);
    }
    match (q as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// A stream of standard normal numbers from ChaCha20 (the seed's 32 bytes) by the
/// Box-Muller transform on this module's functions: the same seed gives the same numbers
/// on every platform.
#[derive(Debug, Clone)]
pub struct Gaussian {
    rng: ChaCha20Rng,
    spare: Option<f32>,
    /// A stream of zeros (see [`Gaussian::zeros`]).
    zeros: bool,
}

impl Gaussian {
    /// A stream seeded by `seed` and a `stream` number (independent streams for the data
    /// order, the noise of each training step, and sampling).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&stream.to_le_bytes());
        key[16..].copy_from_slice(b"aura-image/tiny\0");
        Self {
            rng: ChaCha20Rng::from_seed(key),
            spare: None,
            zeros: false,
        }
    }

    /// A stream of zeros from [`Self::normal`] and [`Self::fill`]: builds a model's shape
    /// without drawing weights that are about to be loaded.
    pub(crate) fn zeros() -> Self {
        Self {
            zeros: true,
            ..Self::new(0, 0)
        }
    }

    /// A uniform number in (0, 1], 53 bits.
    pub fn uniform(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.rng.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// One standard normal number.
    pub fn normal(&mut self) -> f32 {
        if self.zeros {
            return 0.0;
        }
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * ln(u1)).sqrt();
        let (s, c) = sin_cos(std::f64::consts::TAU * u2);
        self.spare = Some((r * s) as f32);
        (r * c) as f32
    }

    /// Fills `out` with standard normal numbers.
    pub fn fill(&mut self, out: &mut [f32]) {
        for o in out {
            *o = self.normal();
        }
    }

    /// A permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_match_the_standard_library_closely() {
        let mut x = -87.0f32;
        while x < 87.9 {
            let (got, want) = (exp(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 4e-7,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        for i in 1..10_000 {
            let v = i as f64 * 0.731 + 1e-9 * i as f64;
            assert!((ln(v) - v.ln()).abs() < 1e-13, "ln({v})");
            let a = (i as f64 * 0.000_628) % std::f64::consts::TAU;
            let (s, c) = sin_cos(a);
            assert!(
                (s - a.sin()).abs() < 1e-14 && (c - a.cos()).abs() < 1e-14,
                "{a}"
            );
        }
        assert!((ln(2f64.powi(-53)) - 2f64.powi(-53).ln()).abs() < 1e-12);
    }

    #[test]
    fn gaussian_stream_is_standard_normal_and_fixed_by_its_seed() {
        let mut g = Gaussian::new(7, 1);
        let xs: Vec<f32> = (0..200_000).map(|_| g.normal()).collect();
        let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "{mean} {var}"
        );
        // The stream is part of the training recipe: pin its first values.
        let mut g = Gaussian::new(42, 0);
        let first: Vec<u32> = (0..4).map(|_| g.normal().to_bits()).collect();
        let mut h = Gaussian::new(42, 0);
        assert_eq!(
            first,
            (0..4).map(|_| h.normal().to_bits()).collect::<Vec<_>>()
        );
        assert_ne!(first, {
            let mut o = Gaussian::new(42, 1);
            (0..4).map(|_| o.normal().to_bits()).collect::<Vec<_>>()
        });
        let p = Gaussian::new(1, 2).permutation(10);
        let mut sorted = p;
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
