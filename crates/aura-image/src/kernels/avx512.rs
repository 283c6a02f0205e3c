//! The AVX-512 micro-kernel: a 12 x 32 tile in 24 zmm accumulators, one broadcast of the
//! left-hand value per row and two 16-wide loads (or f16 conversions) of the right-hand
//! panel per term. Written with one named accumulator per register and pointer steps, so
//! the compiler keeps every accumulator in a register (an array of them was spilled to
//! the stack on every term).

use std::arch::x86_64::*;

use super::MR;

macro_rules! body {
    ($kc:expr, $a:expr, $c:expr, $ldc:expr, $b:expr, $ldb:expr, $load:ident) => {{
        let (c, ldc) = ($c, $ldc);
        // SAFETY (whole block): the caller guarantees `kc * MR` values at `a`, `kc * NR`
        // at `b`, and an `MR x NR` tile at `c` with row stride `ldc`.
        unsafe {
            macro_rules! ld {
                ($r:expr) => {
                    (
                        _mm512_loadu_ps(c.add($r * ldc)),
                        _mm512_loadu_ps(c.add($r * ldc + 16)),
                    )
                };
            }
            let (mut c00, mut c01) = ld!(0);
            let (mut c10, mut c11) = ld!(1);
            let (mut c20, mut c21) = ld!(2);
            let (mut c30, mut c31) = ld!(3);
            let (mut c40, mut c41) = ld!(4);
            let (mut c50, mut c51) = ld!(5);
            let (mut c60, mut c61) = ld!(6);
            let (mut c70, mut c71) = ld!(7);
            let (mut c80, mut c81) = ld!(8);
            let (mut c90, mut c91) = ld!(9);
            let (mut ca0, mut ca1) = ld!(10);
            let (mut cb0, mut cb1) = ld!(11);
            let mut ap = $a;
            let mut bp = $b;
            for _ in 0..$kc {
                let (b0, b1) = $load(bp);
                macro_rules! row {
                    ($r:expr, $x0:ident, $x1:ident) => {
                        let av = _mm512_set1_ps(*ap.add($r));
                        $x0 = _mm512_fmadd_ps(av, b0, $x0);
                        $x1 = _mm512_fmadd_ps(av, b1, $x1);
                    };
                }
                row!(0, c00, c01);
                row!(1, c10, c11);
                row!(2, c20, c21);
                row!(3, c30, c31);
                row!(4, c40, c41);
                row!(5, c50, c51);
                row!(6, c60, c61);
                row!(7, c70, c71);
                row!(8, c80, c81);
                row!(9, c90, c91);
                row!(10, ca0, ca1);
                row!(11, cb0, cb1);
                ap = ap.add(MR);
                bp = bp.add($ldb);
            }
            macro_rules! st {
                ($r:expr, $x0:ident, $x1:ident) => {
                    _mm512_storeu_ps(c.add($r * ldc), $x0);
                    _mm512_storeu_ps(c.add($r * ldc + 16), $x1);
                };
            }
            st!(0, c00, c01);
            st!(1, c10, c11);
            st!(2, c20, c21);
            st!(3, c30, c31);
            st!(4, c40, c41);
            st!(5, c50, c51);
            st!(6, c60, c61);
            st!(7, c70, c71);
            st!(8, c80, c81);
            st!(9, c90, c91);
            st!(10, ca0, ca1);
            st!(11, cb0, cb1);
        }
    }};
}

#[inline(always)]
unsafe fn load_f32(p: *const f32) -> (__m512, __m512) {
    // SAFETY: the caller guarantees 32 values at `p`.
    unsafe { (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))) }
}

#[inline(always)]
unsafe fn load_f16(p: *const u16) -> (__m512, __m512) {
    // SAFETY: the caller guarantees 32 f16 values at `p`.
    unsafe {
        (
            _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
            _mm512_cvtph_ps(_mm256_loadu_si256(p.add(16).cast())),
        )
    }
}

/// # Safety
/// The CPU supports avx512f; `a` holds `kc * MR` values, `b` `kc` rows of `NR` values
/// `ldb` apart, and the
/// `MR x NR` tile at `c` with row stride `ldc` is writable.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn kernel_f32(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    body!(kc, a, c, ldc, b, ldb, load_f32);
}

/// # Safety
/// As [`kernel_f32`], with `b` holding `kc * NR` f16 values.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn kernel_f16(
    kc: usize,
    a: *const f32,
    b: *const u16,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    body!(kc, a, c, ldc, b, ldb, load_f16);
}
