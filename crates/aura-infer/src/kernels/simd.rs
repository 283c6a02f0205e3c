//! The body of the x86 SIMD kernels, written once and instantiated per instruction set
//! (`avx2.rs`, `avx512.rs`), which differ only in how one block's integer dot product is
//! computed. The float work follows the reference order exactly (see the parent module).

/// Expands to `dot_q4`, `dot_q8_0` and `dot_f32` compiled for `$features`, using
/// `$q4_block` / `$q8_block` (each `unsafe fn(*const u8, *const i8) -> __m256i`, giving
/// eight `i32` partial sums of one block) for the integer part.
macro_rules! simd_kernels {
    ($features:literal, $q4_block:ident, $q8_block:ident) => {
        use std::arch::x86_64::*;

        use super::{BLOCK, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QuantizedRow, hsum8, hsum32};

        /// Sums the eight `i32` lanes of `v` (integer addition is exact, so any order).
        #[target_feature(enable = $features)]
        #[inline]
        fn hsum_i32(v: __m256i) -> i32 {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            _mm_cvtsi128_si32(s)
        }

        /// Eight vectors of eight partial sums → one vector whose lane `i` is the total of
        /// vector `i`.
        #[target_feature(enable = $features)]
        #[inline]
        fn reduce8(v: &[__m256i; 8]) -> __m256i {
            let h01 = _mm256_hadd_epi32(v[0], v[1]);
            let h23 = _mm256_hadd_epi32(v[2], v[3]);
            let h45 = _mm256_hadd_epi32(v[4], v[5]);
            let h67 = _mm256_hadd_epi32(v[6], v[7]);
            let h0123 = _mm256_hadd_epi32(h01, h23);
            let h4567 = _mm256_hadd_epi32(h45, h67);
            let lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
            let hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
            _mm256_add_epi32(lo, hi)
        }

        /// Loads the f16 at byte `off` of eight consecutive blocks `stride` bytes apart.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn gather_f16(w: *const u8, stride: usize, off: usize) -> __m256 {
            let mut h = [0u16; 8];
            for (i, v) in h.iter_mut().enumerate() {
                // SAFETY: the caller guarantees eight whole blocks at `w`.
                *v = unsafe { std::ptr::read_unaligned(w.add(i * stride + off).cast::<u16>()) };
            }
            // SAFETY: `h` holds eight u16.
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h.as_ptr().cast()) })
        }

        /// # Safety
        /// The CPU must support `$features`; `w` must hold `x.len() / 32` blocks.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_q4(w: &[u8], x: &QuantizedRow, with_min: bool) -> f32 {
            let nb = x.len() / BLOCK;
            assert!(w.len() >= nb * if with_min { Q4_1_BYTES } else { Q4_0_BYTES });
            let bytes = if with_min { Q4_1_BYTES } else { Q4_0_BYTES };
            let qs_at = if with_min { 4 } else { 2 };
            let wp = w.as_ptr();
            let xp = x.qs.as_ptr();
            let mut acc = _mm256_setzero_ps();
            let groups = nb / 8;
            for g in 0..groups {
                let b0 = g * 8;
                let mut parts = [_mm256_setzero_si256(); 8];
                for (i, p) in parts.iter_mut().enumerate() {
                    let b = b0 + i;
                    // SAFETY: block `b` < nb lies inside `w` and `x.qs` (asserted above).
                    *p = unsafe { $q4_block(wp.add(b * bytes + qs_at), xp.add(b * BLOCK)) };
                }
                let mut sums = reduce8(&parts);
                if !with_min {
                    // SAFETY: blocks b0..b0+8 exist, so qsum has eight entries there.
                    let qsum = unsafe { _mm256_loadu_si256(x.qsum.as_ptr().add(b0).cast()) };
                    sums = _mm256_sub_epi32(sums, _mm256_slli_epi32(qsum, 3));
                }
                // SAFETY: as above, for the scales of eight whole blocks.
                let (dw, dx) = unsafe {
                    (gather_f16(wp.add(b0 * bytes), bytes, 0), _mm256_loadu_ps(x.d.as_ptr().add(b0)))
                };
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, dx));
                acc = _mm256_add_ps(acc, t);
                if with_min {
                    // SAFETY: as above.
                    let (mw, sx) = unsafe {
                        (gather_f16(wp.add(b0 * bytes), bytes, 2), _mm256_loadu_ps(x.s.as_ptr().add(b0)))
                    };
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(mw, sx));
                }
            }
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds eight f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            for b in groups * 8..nb {
                let blk = &w[b * bytes..(b + 1) * bytes];
                // SAFETY: block `b` < nb lies inside `w` and `x.qs`.
                let raw = hsum_i32(unsafe { $q4_block(wp.add(b * bytes + qs_at), xp.add(b * BLOCK)) });
                let lane = &mut lanes[b % 8];
                let dw = super::f16_at(blk, 0);
                if with_min {
                    let mw = super::f16_at(blk, 2);
                    *lane = *lane + raw as f32 * (dw * x.d[b]);
                    *lane = *lane + mw * x.s[b];
                } else {
                    let isum = raw - 8 * x.qsum[b];
                    *lane = *lane + isum as f32 * (dw * x.d[b]);
                }
            }
            hsum8(&lanes)
        }

        /// # Safety
        /// The CPU must support `$features`; `w` must hold `x.len() / 32` blocks.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_q8_0(w: &[u8], x: &QuantizedRow) -> f32 {
            let nb = x.len() / BLOCK;
            assert!(w.len() >= nb * Q8_0_BYTES);
            let wp = w.as_ptr();
            let xp = x.qs.as_ptr();
            let mut acc = _mm256_setzero_ps();
            let groups = nb / 8;
            for g in 0..groups {
                let b0 = g * 8;
                let mut parts = [_mm256_setzero_si256(); 8];
                for (i, p) in parts.iter_mut().enumerate() {
                    let b = b0 + i;
                    // SAFETY: block `b` < nb lies inside `w` and `x.qs`.
                    *p = unsafe { $q8_block(wp.add(b * Q8_0_BYTES + 2), xp.add(b * BLOCK)) };
                }
                let sums = reduce8(&parts);
                // SAFETY: eight whole blocks from b0.
                let (dw, dx) = unsafe {
                    (gather_f16(wp.add(b0 * Q8_0_BYTES), Q8_0_BYTES, 0), _mm256_loadu_ps(x.d.as_ptr().add(b0)))
                };
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, dx));
                acc = _mm256_add_ps(acc, t);
            }
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds eight f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            for b in groups * 8..nb {
                // SAFETY: block `b` < nb lies inside `w` and `x.qs`.
                let isum = hsum_i32(unsafe { $q8_block(wp.add(b * Q8_0_BYTES + 2), xp.add(b * BLOCK)) });
                let lane = &mut lanes[b % 8];
                *lane = *lane + isum as f32 * (super::f16_at(w, b * Q8_0_BYTES) * x.d[b]);
            }
            hsum8(&lanes)
        }

        /// # Safety
        /// The CPU must support `$features`.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
            let n = a.len().min(b.len());
            let (ap, bp) = (a.as_ptr(), b.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let full = n / 32 * 32;
            let mut i = 0;
            while i < full {
                for (g, lane) in acc.iter_mut().enumerate() {
                    // SAFETY: i + 8g + 8 <= full <= n.
                    let (x, y) = unsafe {
                        (_mm256_loadu_ps(ap.add(i + 8 * g)), _mm256_loadu_ps(bp.add(i + 8 * g)))
                    };
                    *lane = _mm256_add_ps(*lane, _mm256_mul_ps(x, y));
                }
                i += 32;
            }
            let mut lanes = [0.0f32; 32];
            for (g, lane) in acc.iter().enumerate() {
                // SAFETY: `lanes` has room for four groups of eight.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * g), *lane) };
            }
            for j in full..n {
                let lane = &mut lanes[j % 32];
                *lane = *lane + a[j] * b[j];
            }
            hsum32(&lanes)
        }
    };
}

pub(super) use simd_kernels;
