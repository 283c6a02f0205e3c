//! The portable reference micro-kernel: one `f32::mul_add` per term, in order.

use super::{MR, NR};

/// See the contract on `micro` in the parent module.
pub(super) fn kernel(kc: usize, a: &[f32], b: impl Fn(usize) -> f32, c: &mut [f32], ldc: usize) {
    for r in 0..MR {
        for j in 0..NR {
            let mut acc = c[r * ldc + j];
            for kk in 0..kc {
                acc = a[kk * MR + r].mul_add(b(kk * NR + j), acc);
            }
            c[r * ldc + j] = acc;
        }
    }
}
