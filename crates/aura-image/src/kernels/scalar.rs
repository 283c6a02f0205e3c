//! The portable reference micro-kernel: one `f32::mul_add` per term, in order.

use super::{MR, NR};

/// See the contract on `micro` in the parent module.
///
/// # Safety
/// `c` points to an `MR x NR` tile with row stride `ldc` that the caller lets this
/// function read and write.
pub(super) unsafe fn kernel(
    kc: usize,
    a: &[f32],
    b: impl Fn(usize) -> f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    for r in 0..MR {
        for j in 0..NR {
            // SAFETY: inside the tile, as the caller guarantees.
            let at = unsafe { c.add(r * ldc + j) };
            // SAFETY: as above.
            let mut acc = unsafe { at.read() };
            for kk in 0..kc {
                acc = a[kk * MR + r].mul_add(b(kk * ldb + j), acc);
            }
            // SAFETY: as above.
            unsafe { at.write(acc) };
        }
    }
}
