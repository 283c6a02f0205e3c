//! The body of the x86 SIMD kernels, written once and instantiated per instruction set
//! (`avx2.rs`, `avx512.rs`), which differ only in how one block's integer dot product is
//! computed. The float work follows the reference order exactly (see the parent module).

/// Expands to `dot_q4`, `dot_q8_0` and `dot_f32` compiled for `$features`, using
/// `$q4_block` / `$q8_block` (each `unsafe fn(*const u8, *const i8) -> __m256i`, giving
/// eight `i32` partial sums of one block) for the integer part.
macro_rules! simd_kernels {
    ($features:literal, $q4_block:ident, $q8_block:ident) => {
        use std::arch::x86_64::*;

        use super::{BLOCK, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QuantizedRow, hsum32};

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

        /// Eight f16 at `p` (or `n < 8` of them, zero-padded) as f32.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn f16x8(p: *const u8, n: usize) -> __m256 {
            if n == 8 {
                // SAFETY: the caller guarantees 16 readable bytes.
                return _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) });
            }
            let mut h = [0u8; 16];
            // SAFETY: the caller guarantees 2n readable bytes; `h` has room for them.
            unsafe { std::ptr::copy_nonoverlapping(p, h.as_mut_ptr(), 2 * n) };
            // SAFETY: `h` holds 16 bytes.
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h.as_ptr().cast()) })
        }

        /// Eight 32-bit values at `p` (or `n < 8`, zero-padded), as raw integer bits.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn x32x8<T: Copy>(p: *const T, n: usize) -> __m256i {
            if n == 8 {
                // SAFETY: the caller guarantees eight readable values.
                return unsafe { _mm256_loadu_si256(p.cast()) };
            }
            let mut h = [0u32; 8];
            // SAFETY: the caller guarantees n readable 4-byte values.
            unsafe { std::ptr::copy_nonoverlapping(p.cast::<u32>(), h.as_mut_ptr(), n) };
            // SAFETY: `h` holds eight u32.
            unsafe { _mm256_loadu_si256(h.as_ptr().cast()) }
        }

        /// The fixed 8-lane tree `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
        #[target_feature(enable = $features)]
        #[inline]
        fn hsum8_ps(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        }

        /// # Safety
        /// The CPU must support `$features`; `w` must be a planar row of `x.len() / 32`
        /// blocks.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_q4(w: &[u8], x: &QuantizedRow, with_min: bool) -> f32 {
            let nb = x.len() / BLOCK;
            assert!(w.len() >= nb * if with_min { Q4_1_BYTES } else { Q4_0_BYTES });
            assert!(x.d.len() >= nb && x.s.len() >= nb && x.qsum.len() >= nb);
            let wp = w.as_ptr();
            let xp = x.qs.as_ptr();
            let mut acc = _mm256_setzero_ps();
            let mut b0 = 0;
            while b0 < nb {
                let n = (nb - b0).min(8);
                let mut parts = [_mm256_setzero_si256(); 8];
                if n == 8 {
                    for (i, p) in parts.iter_mut().enumerate() {
                        // SAFETY: block b0 + i < nb lies inside `w` and `x.qs`.
                        *p = unsafe { $q4_block(wp.add((b0 + i) * 16), xp.add((b0 + i) * BLOCK)) };
                    }
                } else {
                    for (i, p) in parts.iter_mut().enumerate().take(n) {
                        // SAFETY: as above.
                        *p = unsafe { $q4_block(wp.add((b0 + i) * 16), xp.add((b0 + i) * BLOCK)) };
                    }
                }
                let mut sums = reduce8(&parts);
                // Missing blocks of a final partial group contribute +0.0 to their lanes,
                // which leaves those lanes' bits unchanged (a lane is never -0.0).
                // SAFETY: n blocks from b0 exist, so n scales, minimums and sums do.
                let (dw, dx) = unsafe { (f16x8(wp.add(nb * 16 + 2 * b0), n), _mm256_castsi256_ps(x32x8(x.d.as_ptr().add(b0), n))) };
                if !with_min {
                    // SAFETY: as above.
                    let qsum = unsafe { x32x8(x.qsum.as_ptr().add(b0), n) };
                    sums = _mm256_sub_epi32(sums, _mm256_slli_epi32(qsum, 3));
                }
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, dx));
                acc = _mm256_add_ps(acc, t);
                if with_min {
                    // SAFETY: as above.
                    let (mw, sx) = unsafe { (f16x8(wp.add(nb * 18 + 2 * b0), n), _mm256_castsi256_ps(x32x8(x.s.as_ptr().add(b0), n))) };
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(mw, sx));
                }
                b0 += 8;
            }
            hsum8_ps(acc)
        }

        /// # Safety
        /// The CPU must support `$features`; `w` must be a planar row of `x.len() / 32`
        /// blocks.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_q8_0(w: &[u8], x: &QuantizedRow) -> f32 {
            let nb = x.len() / BLOCK;
            assert!(w.len() >= nb * Q8_0_BYTES && x.d.len() >= nb);
            let wp = w.as_ptr();
            let xp = x.qs.as_ptr();
            let mut acc = _mm256_setzero_ps();
            let mut b0 = 0;
            while b0 < nb {
                let n = (nb - b0).min(8);
                let mut parts = [_mm256_setzero_si256(); 8];
                if n == 8 {
                    for (i, p) in parts.iter_mut().enumerate() {
                        // SAFETY: block b0 + i < nb lies inside `w` and `x.qs`.
                        *p = unsafe { $q8_block(wp.add((b0 + i) * 32), xp.add((b0 + i) * BLOCK)) };
                    }
                } else {
                    for (i, p) in parts.iter_mut().enumerate().take(n) {
                        // SAFETY: as above.
                        *p = unsafe { $q8_block(wp.add((b0 + i) * 32), xp.add((b0 + i) * BLOCK)) };
                    }
                }
                let sums = reduce8(&parts);
                // SAFETY: n blocks from b0 exist.
                let (dw, dx) = unsafe { (f16x8(wp.add(nb * 32 + 2 * b0), n), _mm256_castsi256_ps(x32x8(x.d.as_ptr().add(b0), n))) };
                let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, dx));
                acc = _mm256_add_ps(acc, t);
                b0 += 8;
            }
            hsum8_ps(acc)
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
