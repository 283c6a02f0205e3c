//! The scalar reference kernels: portable Rust that defines, operation by operation, the
//! sums every SIMD variant must reproduce bit for bit (see the parent module). Rows are
//! planar (see the parent module).

use super::{BLOCK, QuantizedRow, f16_at, hsum8, hsum32};

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
    let (scales, mins) = (nb * 16, nb * 18);
    let mut lanes = [0.0f32; 8];
    for b in 0..nb {
        let raw = nibble_dot(&w[b * 16..(b + 1) * 16], &x.qs[b * BLOCK..(b + 1) * BLOCK]);
        let lane = &mut lanes[b % 8];
        let dw = f16_at(w, scales + 2 * b);
        if with_min {
            let mw = f16_at(w, mins + 2 * b);
            *lane += raw as f32 * (dw * x.d[b]);
            *lane += mw * x.s[b];
        } else {
            let isum = raw - 8 * x.qsum[b];
            *lane += isum as f32 * (dw * x.d[b]);
        }
    }
    hsum8(&lanes)
}

/// Q8_0 weights (value = d * q, q signed) against a quantized activation.
pub fn dot_q8_0(w: &[u8], x: &QuantizedRow) -> f32 {
    let nb = x.len() / BLOCK;
    let scales = nb * 32;
    let mut lanes = [0.0f32; 8];
    for b in 0..nb {
        let mut isum = 0i32;
        for j in 0..BLOCK {
            isum += i32::from(w[b * 32 + j] as i8) * i32::from(x.qs[b * BLOCK + j]);
        }
        let lane = &mut lanes[b % 8];
        *lane += isum as f32 * (f16_at(w, scales + 2 * b) * x.d[b]);
    }
    hsum8(&lanes)
}

/// f32 dot product, 32 lanes, no fused multiply-add.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 32];
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let lane = &mut lanes[i % 32];
        *lane += x * y;
    }
    hsum32(&lanes)
}
