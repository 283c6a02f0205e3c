//! Aura's seeded random generator for images: a ChaCha20 stream turned into standard
//! normal `f32` values by Box-Muller in `f64`, in one fixed order.
//!
//! # The stream (version 1)
//!
//! - The ChaCha20 key is the seed as 8 little-endian bytes followed by 24 zero bytes; the
//!   stream id (ChaCha's nonce) is the `stream` argument (0 unless a caller asks for
//!   another), and the word position starts at 0. `next_u64` reads the ChaCha20 output as
//!   `rand_chacha` does (little-endian 64-bit words in order).
//! - A uniform draw is `((next_u64 >> 11) + 0.5) / 2^53`: 53 random bits, never 0 or 1.
//! - Normals come in pairs from two uniforms `u1`, `u2`:
//!   `r = sqrt(-2 ln u1)`, `z0 = r cos(2 pi u2)`, `z1 = r sin(2 pi u2)`, computed in `f64`
//!   and rounded to `f32`; `z0` is emitted before `z1`. A pair half used by one call is
//!   finished by the next, so filling 3 values then 5 gives the same 8 values as filling 8.
//!
//! Nothing in this stream depends on threads, vector width or the order requests run in.
//! `ln`, `cos` and `sin` come from the platform's `f64` math library; their last-bit
//! differences between libraries almost never survive rounding to `f32`, and the unit
//! tests pin the first values of a seed so a change would be seen.
//!
//! candle's own random tensors are never used: its CPU generator cannot be seeded.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// A seeded generator of uniform and standard normal values (see the module documentation
/// for the exact stream, which is part of Aura's reproducibility promise).
#[derive(Clone, Debug)]
pub struct AuraRng {
    chacha: ChaCha20Rng,
    /// The second value of a Box-Muller pair not yet handed out.
    spare: Option<f32>,
}

impl AuraRng {
    /// The generator for `seed`, stream 0.
    pub fn new(seed: u64) -> Self {
        Self::with_stream(seed, 0)
    }

    /// The generator for `seed` on an independent `stream` (for example one stream per
    /// image of a batch, so that image `i` does not depend on how many came before it).
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let mut chacha = ChaCha20Rng::from_seed(key);
        chacha.set_stream(stream);
        Self {
            chacha,
            spare: None,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.chacha.next_u64()
    }

    /// A uniform value in the open interval (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// The next standard normal value.
    pub fn normal(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (z0, z1) = self.pair();
        self.spare = Some(z1);
        z0
    }

    /// Fills `out` with the next standard normal values, in order.
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        let mut i = 0;
        if let Some(z) = self.spare.take()
            && let Some(o) = out.first_mut()
        {
            *o = z;
            i = 1;
        }
        while i + 1 < out.len() {
            let (z0, z1) = self.pair();
            out[i] = z0;
            out[i + 1] = z1;
            i += 2;
        }
        if i < out.len() {
            out[i] = self.normal();
        }
    }

    /// `n` standard normal values.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        let mut v = vec![0.0; n];
        self.fill_normal(&mut v);
        v
    }

    fn pair(&mut self) -> (f32, f32) {
        let u1 = self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        ((r * theta.cos()) as f32, (r * theta.sin()) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first values of seed 42 (stream 0), pinned: a change here changes every image
    /// Aura has ever made from a seed, so it must be a new stream version. The values were
    /// checked against an independent implementation (Python's `cryptography` ChaCha20
    /// keystream with the same key, Box-Muller in Python floats).
    #[test]
    fn seed_42_test_vector() {
        let mut r = AuraRng::new(42);
        let got: Vec<u32> = r.normal_vec(6).iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            got,
            PINNED_42,
            "values: {:?}",
            AuraRng::new(42).normal_vec(6)
        );
    }

    // -0.35500953, -1.273099, 0.49511394, 0.68150145, -0.40797672, 0.40719262
    const PINNED_42: [u32; 6] = [
        3199583183, 3215127784, 1056800659, 1060009697, 3201360467, 1053850509,
    ];

    #[test]
    fn splitting_a_fill_does_not_change_the_values() {
        let whole = AuraRng::new(7).normal_vec(11);
        let mut r = AuraRng::new(7);
        let mut parts = r.normal_vec(3);
        parts.push(r.normal());
        parts.extend(r.normal_vec(7));
        assert_eq!(whole, parts);
    }

    #[test]
    fn seeds_and_streams_differ() {
        let a = AuraRng::new(1).normal_vec(8);
        assert_ne!(a, AuraRng::new(2).normal_vec(8));
        assert_ne!(a, AuraRng::with_stream(1, 1).normal_vec(8));
        assert_eq!(a, AuraRng::with_stream(1, 0).normal_vec(8));
    }

    #[test]
    fn normals_have_unit_variance() {
        let v = AuraRng::new(3).normal_vec(200_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn uniform_is_open() {
        let mut r = AuraRng::new(0);
        for _ in 0..10_000 {
            let u = r.uniform();
            assert!(u > 0.0 && u < 1.0);
        }
    }
}
