//! The body of the x86 SIMD kernels, written once and instantiated per instruction set
//! (`avx2.rs`, `avx512.rs`), which differ only in how one block's integer dot product is
//! computed. The float work follows the reference order exactly (see the parent module).

/// Expands to `dot_q4`, `dot_q8_0`, `dot_many` and `dot_f32` compiled for `$features`,
/// using `$dot_u8_i8` (`fn(__m256i, __m256i) -> __m256i`: eight `i32` partial sums of 32
/// unsigned-by-signed byte products) for the integer part.
macro_rules! simd_kernels {
    ($features:literal, $dot_u8_i8:ident) => {
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
        unsafe fn x32x8<T: Copy, const FULL: bool>(p: *const T, n: usize) -> __m256i {
            if FULL || n == 8 {
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

        /// One group of up to eight Q4 blocks (from `b0`; `FULL` means exactly eight, which
        /// lets the compiler unroll everything) of one weight row against `N` activation
        /// rows, added into `acc`. `MIN` selects Q4_1 (else Q4_0).
        ///
        /// # Safety
        /// The CPU must support `$features`; blocks `b0..b0 + n` exist in `w` (a planar
        /// row of `nb` blocks) and in every activation row.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q4_group<const N: usize, const MIN: bool, const FULL: bool>(
            wp: *const u8,
            nb: usize,
            b0: usize,
            n: usize,
            xs: &[&QuantizedRow; N],
            acc: &mut [__m256; N],
        ) {
            let n = if FULL { 8 } else { n };
            let mask = _mm_set1_epi8(0x0f);
            let mut wv = [_mm256_setzero_si256(); 8];
            for (i, v) in wv.iter_mut().enumerate().take(n) {
                // SAFETY: block b0 + i < nb: its 16 bytes lie inside the row.
                let bytes = unsafe { _mm_loadu_si128(wp.add((b0 + i) * 16).cast()) };
                let lo = _mm_and_si128(bytes, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
                *v = _mm256_set_m128i(hi, lo);
            }
            // Missing blocks of a final partial group contribute +0.0 to their lanes,
            // which leaves those lanes' bits unchanged (a lane is never -0.0).
            // SAFETY: n blocks from b0 exist, so n scales and minimums do.
            let dw = unsafe { f16x8(wp.add(nb * 16 + 2 * b0), n) };
            let mw = if MIN {
                // SAFETY: as above.
                unsafe { f16x8(wp.add(nb * 18 + 2 * b0), n) }
            } else {
                _mm256_setzero_ps()
            };
            for j in 0..N {
                let x = xs[j];
                let xp = x.qs.as_ptr();
                let mut parts = [_mm256_setzero_si256(); 8];
                for (i, p) in parts.iter_mut().enumerate().take(n) {
                    // SAFETY: block b0 + i < nb: its 32 values lie inside `x.qs`.
                    let xv = unsafe { _mm256_loadu_si256(xp.add((b0 + i) * BLOCK).cast()) };
                    *p = $dot_u8_i8(wv[i], xv);
                }
                let mut sums = reduce8(&parts);
                // SAFETY: n blocks from b0 exist in the activation's arrays.
                let dx = unsafe { _mm256_castsi256_ps(x32x8::<_, FULL>(x.d.as_ptr().add(b0), n)) };
                if !MIN {
                    // SAFETY: as above.
                    let qsum = unsafe { x32x8::<_, FULL>(x.qsum.as_ptr().add(b0), n) };
                    sums = _mm256_sub_epi32(sums, _mm256_slli_epi32(qsum, 3));
                }
                let mut a = _mm256_add_ps(
                    acc[j],
                    _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, dx)),
                );
                if MIN {
                    // SAFETY: as above.
                    let sx =
                        unsafe { _mm256_castsi256_ps(x32x8::<_, FULL>(x.s.as_ptr().add(b0), n)) };
                    a = _mm256_add_ps(a, _mm256_mul_ps(mw, sx));
                }
                acc[j] = a;
            }
        }

        /// One weight row against `N` activation rows (tokens): the weights of each group
        /// of eight blocks are unpacked once and used for every token, which is what
        /// makes prompt processing faster than one token at a time. Each token's result
        /// is computed exactly as alone.
        ///
        /// # Safety
        /// The CPU must support `$features`.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn dot_q4_n<const N: usize, const MIN: bool>(
            w: &[u8],
            xs: [&QuantizedRow; N],
        ) -> [f32; N] {
            let nb = xs[0].len() / BLOCK;
            assert!(w.len() >= nb * if MIN { Q4_1_BYTES } else { Q4_0_BYTES });
            for x in xs {
                assert!(
                    x.len() == nb * BLOCK
                        && x.d.len() >= nb
                        && x.s.len() >= nb
                        && x.qsum.len() >= nb
                );
            }
            let wp = w.as_ptr();
            let mut acc = [_mm256_setzero_ps(); N];
            let full = nb / 8 * 8;
            let mut b0 = 0;
            while b0 < full {
                // SAFETY: blocks b0..b0 + 8 exist (asserted above).
                unsafe { q4_group::<N, MIN, true>(wp, nb, b0, 8, &xs, &mut acc) };
                b0 += 8;
            }
            if full < nb {
                // SAFETY: blocks full..nb exist.
                unsafe { q4_group::<N, MIN, false>(wp, nb, full, nb - full, &xs, &mut acc) };
            }
            let mut out = [0.0f32; N];
            for (o, a) in out.iter_mut().zip(acc) {
                *o = hsum8_ps(a);
            }
            out
        }

        /// One group of up to eight Q8_0 blocks against `N` activation rows, as
        /// [`q4_group`].
        ///
        /// # Safety
        /// As [`q4_group`].
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn q8_group<const N: usize, const FULL: bool>(
            wp: *const u8,
            nb: usize,
            b0: usize,
            n: usize,
            xs: &[&QuantizedRow; N],
            acc: &mut [__m256; N],
        ) {
            let n = if FULL { 8 } else { n };
            let mut wv = [_mm256_setzero_si256(); 8];
            let mut aw = [_mm256_setzero_si256(); 8];
            for i in 0..n {
                // SAFETY: block b0 + i < nb: its 32 bytes lie inside the row.
                wv[i] = unsafe { _mm256_loadu_si256(wp.add((b0 + i) * 32).cast()) };
                // |w| as unsigned; the sign moves to the activation below. Pairs stay
                // inside i16 because activations are quantized to -127..=127.
                aw[i] = _mm256_sign_epi8(wv[i], wv[i]);
            }
            // SAFETY: n scales from b0 exist.
            let dw = unsafe { f16x8(wp.add(nb * 32 + 2 * b0), n) };
            for j in 0..N {
                let x = xs[j];
                let xp = x.qs.as_ptr();
                let mut parts = [_mm256_setzero_si256(); 8];
                for (i, p) in parts.iter_mut().enumerate().take(n) {
                    // SAFETY: block b0 + i < nb: its 32 values lie inside `x.qs`.
                    let xv = unsafe { _mm256_loadu_si256(xp.add((b0 + i) * BLOCK).cast()) };
                    *p = $dot_u8_i8(aw[i], _mm256_sign_epi8(xv, wv[i]));
                }
                let sums = reduce8(&parts);
                // SAFETY: n blocks from b0 exist in the activation's arrays.
                let dx = unsafe { _mm256_castsi256_ps(x32x8::<_, FULL>(x.d.as_ptr().add(b0), n)) };
                acc[j] = _mm256_add_ps(
                    acc[j],
                    _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, dx)),
                );
            }
        }

        /// Q8_0 weights against `N` activation rows, as [`dot_q4_n`].
        ///
        /// # Safety
        /// The CPU must support `$features`.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn dot_q8_n<const N: usize>(w: &[u8], xs: [&QuantizedRow; N]) -> [f32; N] {
            let nb = xs[0].len() / BLOCK;
            assert!(w.len() >= nb * Q8_0_BYTES);
            for x in xs {
                assert!(x.len() == nb * BLOCK && x.d.len() >= nb);
            }
            let wp = w.as_ptr();
            let mut acc = [_mm256_setzero_ps(); N];
            let full = nb / 8 * 8;
            let mut b0 = 0;
            while b0 < full {
                // SAFETY: blocks b0..b0 + 8 exist (asserted above).
                unsafe { q8_group::<N, true>(wp, nb, b0, 8, &xs, &mut acc) };
                b0 += 8;
            }
            if full < nb {
                // SAFETY: blocks full..nb exist.
                unsafe { q8_group::<N, false>(wp, nb, full, nb - full, &xs, &mut acc) };
            }
            let mut out = [0.0f32; N];
            for (o, a) in out.iter_mut().zip(acc) {
                *o = hsum8_ps(a);
            }
            out
        }

        /// # Safety
        /// The CPU must support `$features`; `w` must be a planar row of `x.len() / 32`
        /// blocks.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_q4(w: &[u8], x: &QuantizedRow, with_min: bool) -> f32 {
            // SAFETY: the caller guarantees the features.
            unsafe {
                if with_min {
                    dot_q4_n::<1, true>(w, [x])[0]
                } else {
                    dot_q4_n::<1, false>(w, [x])[0]
                }
            }
        }

        /// # Safety
        /// The CPU must support `$features`; `w` must be a planar row of `x.len() / 32`
        /// blocks.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_q8_0(w: &[u8], x: &QuantizedRow) -> f32 {
            // SAFETY: the caller guarantees the features.
            unsafe { dot_q8_n::<1>(w, [x])[0] }
        }

        /// One row against many tokens: `out[j] = dot(w, xs[j])`, four tokens at a time.
        ///
        /// # Safety
        /// The CPU must support `$features`; `format` is 0 (Q4_0), 1 (Q4_1) or 2 (Q8_0).
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_many(format: u8, w: &[u8], xs: &[QuantizedRow], out: &mut [f32]) {
            let mut xc = xs.chunks_exact(4);
            let mut oc = out.chunks_exact_mut(4);
            for (x, o) in (&mut xc).zip(&mut oc) {
                let four = [&x[0], &x[1], &x[2], &x[3]];
                // SAFETY: the caller guarantees the features.
                let r = unsafe {
                    match format {
                        2 => dot_q8_n::<4>(w, four),
                        1 => dot_q4_n::<4, true>(w, four),
                        _ => dot_q4_n::<4, false>(w, four),
                    }
                };
                o.copy_from_slice(&r);
            }
            for (x, o) in xc.remainder().iter().zip(oc.into_remainder()) {
                // SAFETY: as above.
                *o = unsafe {
                    match format {
                        2 => dot_q8_n::<1>(w, [x])[0],
                        1 => dot_q4_n::<1, true>(w, [x])[0],
                        _ => dot_q4_n::<1, false>(w, [x])[0],
                    }
                };
            }
        }

        /// One f32 row against `N` activation rows, each exactly as [`dot_f32`] alone.
        ///
        /// # Safety
        /// The CPU must support `$features`.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn dot_f32_n<const N: usize>(w: &[f32], xs: [&[f32]; N]) -> [f32; N] {
            let n = w.len();
            for x in xs {
                assert_eq!(x.len(), n);
            }
            let full = n / 32 * 32;
            let wp = w.as_ptr();
            let mut acc = [[_mm256_setzero_ps(); 4]; N];
            let mut i = 0;
            while i < full {
                let mut wv = [_mm256_setzero_ps(); 4];
                for (g, v) in wv.iter_mut().enumerate() {
                    // SAFETY: i + 8g + 8 <= full <= n.
                    *v = unsafe { _mm256_loadu_ps(wp.add(i + 8 * g)) };
                }
                for (x, a) in xs.iter().zip(acc.iter_mut()) {
                    for (g, lane) in a.iter_mut().enumerate() {
                        // SAFETY: as above; x has n values.
                        let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(i + 8 * g)) };
                        *lane = _mm256_add_ps(*lane, _mm256_mul_ps(wv[g], xv));
                    }
                }
                i += 32;
            }
            let mut out = [0.0f32; N];
            for ((o, a), x) in out.iter_mut().zip(acc).zip(xs) {
                let mut lanes = [0.0f32; 32];
                for (g, lane) in a.iter().enumerate() {
                    // SAFETY: `lanes` has room for four groups of eight.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * g), *lane) };
                }
                for j in full..n {
                    let lane = &mut lanes[j % 32];
                    *lane += w[j] * x[j];
                }
                *o = hsum32(&lanes);
            }
            out
        }

        /// `out[j] = dot_f32(w, xs[j * k..(j + 1) * k])`, four tokens at a time.
        ///
        /// # Safety
        /// The CPU must support `$features`.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn dot_f32_many(w: &[f32], xs: &[f32], out: &mut [f32]) {
            let k = w.len();
            let mut xc = xs.chunks_exact(4 * k);
            let mut oc = out.chunks_exact_mut(4);
            for (x, o) in (&mut xc).zip(&mut oc) {
                let four = [&x[..k], &x[k..2 * k], &x[2 * k..3 * k], &x[3 * k..]];
                // SAFETY: the caller guarantees the features.
                o.copy_from_slice(&unsafe { dot_f32_n::<4>(w, four) });
            }
            for (x, o) in xc.remainder().chunks_exact(k).zip(oc.into_remainder()) {
                // SAFETY: as above.
                *o = unsafe { dot_f32_n::<1>(w, [x])[0] };
            }
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
                        (
                            _mm256_loadu_ps(ap.add(i + 8 * g)),
                            _mm256_loadu_ps(bp.add(i + 8 * g)),
                        )
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
                *lane += a[j] * b[j];
            }
            hsum32(&lanes)
        }
    };
}

pub(super) use simd_kernels;
