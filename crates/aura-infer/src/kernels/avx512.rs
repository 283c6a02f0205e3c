//! The AVX-512 kernels (VL + VNNI on 256-bit vectors): `vpdpbusd` computes each block's
//! integer dot product in one instruction per 32 bytes. 256-bit vectors keep the float
//! lanes identical to the AVX2 and scalar order, and avoid the clock penalty some CPUs
//! take on 512-bit arithmetic.
#![cfg(target_arch = "x86_64")]

/// Eight i32 partial sums of one 4-bit block (nibbles as unsigned 0..15) times 32 i8.
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
#[inline]
unsafe fn q4_block(qs: *const u8, x: *const i8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the caller passes 16 readable bytes at `qs` and 32 at `x`.
    let (bytes, xv) = unsafe { (_mm_loadu_si128(qs.cast()), _mm256_loadu_si256(x.cast())) };
    let mask = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(bytes, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    let w = _mm256_set_m128i(hi, lo);
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, xv)
}

/// Eight i32 partial sums of one Q8_0 block (32 i8) times 32 i8.
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
#[inline]
unsafe fn q8_block(qs: *const u8, x: *const i8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the caller passes 32 readable bytes at each pointer.
    let (w, xv) = unsafe { (_mm256_loadu_si256(qs.cast()), _mm256_loadu_si256(x.cast())) };
    let aw = _mm256_sign_epi8(w, w);
    let sx = _mm256_sign_epi8(xv, w);
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx)
}

super::simd::simd_kernels!("avx2,f16c,avx512f,avx512vl,avx512bw,avx512vnni", q4_block, q8_block);
