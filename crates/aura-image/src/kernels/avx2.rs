//! The AVX2 micro-kernel: the 12 x 32 tile two rows at a time (8 ymm accumulators, four
//! right-hand vectors, one broadcast), in the same fma order as every variant.

use std::arch::x86_64::*;

use super::MR;

macro_rules! body {
    ($kc:expr, $a:expr, $c:expr, $ldc:expr, $load_b:expr) => {{
        for r in (0..MR).step_by(2) {
            let mut acc = [[_mm256_setzero_ps(); 4]; 2];
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    // SAFETY: the caller guarantees the tile lies inside `c`.
                    *x = unsafe { _mm256_loadu_ps($c.add((r + i) * $ldc + 8 * v)) };
                }
            }
            for kk in 0..$kc {
                let b = $load_b(kk);
                for (i, row) in acc.iter_mut().enumerate() {
                    // SAFETY: the caller guarantees `kc * MR` values at `a`.
                    let av = _mm256_set1_ps(unsafe { *$a.add(kk * MR + r + i) });
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = _mm256_fmadd_ps(av, b[v], *x);
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                for (v, x) in row.iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_ps($c.add((r + i) * $ldc + 8 * v), *x) };
                }
            }
        }
    }};
}

/// # Safety
/// The CPU supports avx2, fma and f16c; `a` holds `kc * MR` values, `b` `kc` rows of 32 values `ldb` apart, and
/// the `MR x NR` tile at `c` with row stride `ldc` is writable.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn kernel_f32(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    let load = |kk: usize| {
        // SAFETY: `kc * NR` values at `b`.
        unsafe {
            let p = b.add(kk * ldb);
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        }
    };
    body!(kc, a, c, ldc, load);
}

/// # Safety
/// As [`kernel_f32`], with `b` holding `kc * NR` f16 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn kernel_f16(
    kc: usize,
    a: *const f32,
    b: *const u16,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    let load = |kk: usize| {
        // SAFETY: `kc * NR` f16 values at `b`.
        unsafe {
            let p = b.add(kk * ldb);
            [
                _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(24).cast())),
            ]
        }
    };
    body!(kc, a, c, ldc, load);
}
