//! The scalar reference kernels: portable Rust that defines, operation by operation, the
//! sums every SIMD variant must reproduce bit for bit (see the parent module).

use super::{BLOCK, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QuantizedRow, f16_at, hsum8, hsum32};

/// The exact integer dot product of one 4-bit block (16 bytes, low nibbles are elements
/// 0..16, high nibbles 16..32) with 32 activation values, nibbles taken as 0..15.
#[inline(always)]
fn nibble_dot(qs: &[u8], x: &[i8]) -> i32 {
    let mut sum = 0i32;
    for j in 0..16 {
        let lo = i32::from(qs[j] & 0x0f);
        let hi = i32::from(qs[j] >> 4);
        sum += lo * i32::from(x[j]) + hi * i32::from(x[j + 16]);
    }
    sum
}

/// Q4_0 (`with_min == false`: value = d * (q - 8)) or Q4_1 (`with_min == true`:
/// value = d * q + m) weights against a quantized activation.
pub fn dot_q4(w: &[u8], x: &QuantizedRow, with_min: bool) -> f32 {
    let nb = x.len() / BLOCK;
    let bytes = if with_min { Q4_1_BYTES } else { Q4_0_BYTES };
    let qs_at = if with_min { 4 } else { 2 };
    let mut lanes = [0.0f32; 8];
    for b in 0..nb {
        let blk = &w[b * bytes..(b + 1) * bytes];
        let xs = &x.qs[b * BLOCK..(b + 1) * BLOCK];
        let raw = nibble_dot(&blk[qs_at..qs_at + 16], xs);
        let lane = &mut lanes[b % 8];
        let dw = f16_at(blk, 0);
        if with_min {
            let mw = f16_at(blk, 2);
            *lane = *lane + raw as f32 * (dw * x.d[b]);
            *lane = *lane + mw * x.s[b];
        } else {
            let isum = raw - 8 * x.qsum[b];
            *lane = *lane + isum as f32 * (dw * x.d[b]);
        }
    }
    hsum8(&lanes)
}

/// Q8_0 weights (value = d * q, q signed) against a quantized activation.
pub fn dot_q8_0(w: &[u8], x: &QuantizedRow) -> f32 {
    let nb = x.len() / BLOCK;
    let mut lanes = [0.0f32; 8];
    for b in 0..nb {
        let blk = &w[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
        let xs = &x.qs[b * BLOCK..(b + 1) * BLOCK];
        let mut isum = 0i32;
        for j in 0..BLOCK {
            isum += i32::from(blk[2 + j] as i8) * i32::from(xs[j]);
        }
        let lane = &mut lanes[b % 8];
        *lane = *lane + isum as f32 * (f16_at(blk, 0) * x.d[b]);
    }
    hsum8(&lanes)
}

/// f32 dot product, 32 lanes, no fused multiply-add.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 32];
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let lane = &mut lanes[i % 32];
        *lane = *lane + x * y;
    }
    hsum32(&lanes)
}
