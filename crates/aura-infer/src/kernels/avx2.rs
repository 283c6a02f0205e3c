//! The AVX2 kernels (with F16C for scale conversion): `vpmaddubsw` + `vpmaddwd` for the
//! integer part of each block.
#![cfg(target_arch = "x86_64")]

/// Eight i32 partial sums of 32 unsigned bytes of `w` times 32 signed bytes of `x`.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn dot_u8_i8(
    w: std::arch::x86_64::__m256i,
    x: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // The kernels pass nibbles (at most 15) or |q8| (at most 128) against activations in
    // -127..=127, so pairs are at most 2 * 128 * 127 = 32512: no i16 saturation.
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
}

super::simd::simd_kernels!("avx2,f16c", dot_u8_i8);
