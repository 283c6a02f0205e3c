//! The AVX2 kernels (with F16C for scale conversion): `vpmaddubsw` + `vpmaddwd` for the
//! integer part of each block.
#![cfg(target_arch = "x86_64")]

/// Eight i32 partial sums of one 4-bit block (nibbles as unsigned 0..15) times 32 i8.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn q4_block(qs: *const u8, x: *const i8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the caller passes 16 readable bytes at `qs` and 32 at `x`.
    let (bytes, xv) = unsafe { (_mm_loadu_si128(qs.cast()), _mm256_loadu_si256(x.cast())) };
    let mask = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(bytes, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
    let w = _mm256_set_m128i(hi, lo);
    // Products are at most 15 * 127, pairs at most 3810: no saturation in i16.
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), _mm256_set1_epi16(1))
}

/// Eight i32 partial sums of one Q8_0 block (32 i8) times 32 i8.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn q8_block(qs: *const u8, x: *const i8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the caller passes 32 readable bytes at each pointer.
    let (w, xv) = unsafe { (_mm256_loadu_si256(qs.cast()), _mm256_loadu_si256(x.cast())) };
    // |w| as unsigned times x with w's sign: pairs at most 128 * 127 * 2, inside i16,
    // because activations are quantized to -127..=127.
    let aw = _mm256_sign_epi8(w, w);
    let sx = _mm256_sign_epi8(xv, w);
    _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
}

super::simd::simd_kernels!("avx2,f16c", q4_block, q8_block);
