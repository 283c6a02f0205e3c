//! The AVX-512 kernels (VL + VNNI on 256-bit vectors): `vpdpbusd` computes each block's
//! integer dot product in one instruction per 32 bytes. 256-bit vectors keep the float
//! lanes identical to the AVX2 and scalar order, and avoid the clock penalty some CPUs
//! take on 512-bit arithmetic.
#![cfg(target_arch = "x86_64")]

/// Eight i32 partial sums of 32 unsigned bytes of `w` times 32 signed bytes of `x`.
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
#[inline]
fn dot_u8_i8(
    w: std::arch::x86_64::__m256i,
    x: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x)
}

super::simd::simd_kernels!("avx2,f16c,avx512f,avx512vl,avx512bw,avx512vnni", dot_u8_i8);
