//! Dot-product kernels: quantized (Q4_0, Q4_1, Q8_0) and f32, in a scalar reference and
//! AVX2 and AVX-512 variants selected at run time.
//!
//! # The reduction order is part of the format, not of the instruction set
//!
//! Every variant computes exactly the same sum in exactly the same order, so that results
//! are identical bit for bit whichever variant runs (a property test checks each SIMD
//! variant against the scalar reference on random data, bit for bit):
//!
//! - **Quantized** (`dot_q*`): the activation is quantized to 8 bits per block of 32
//!   ([`QuantizedRow`]). For each block `b` the integer dot product is exact (an `i32`).
//!   Blocks are folded into 8 float lanes, block `b` into lane `b % 8`, each lane updated
//!   as `lane = lane + (isum as f32) * (dw * dx)` (and, for Q4_1, then
//!   `lane = lane + mw * sx`), with separate multiplies and adds, never a fused
//!   multiply-add. The 8 lanes are summed as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
//! - **f32** (`dot_f32`): 32 lanes, element `i` into lane `i % 32`, `lane = lane + x*w`
//!   (no FMA); the lanes are folded as `(g0+g1)+(g2+g3)` over the four groups of 8, then
//!   the 8-lane tree above.
//!
//! # Weight layout
//!
//! Quantized rows are stored *planar*, repacked at load time from ggml's interleaved
//! blocks: first every block's quantized values, then every block's f16 scale, then
//! (Q4_1) every block's f16 minimum. The bytes and values are ggml's; only their order
//! changes, so eight blocks' scales are one vector load. [`planar_from_ggml`] converts.
//!
//! A dot product is never split across threads: callers parallelise over output rows
//! only, so the thread count cannot change any result.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod simd;

use half::f16;

/// Elements per quantization block (all supported formats).
pub const BLOCK: usize = 32;
/// Bytes per Q4_0 block: an f16 scale and 16 bytes of nibbles.
pub const Q4_0_BYTES: usize = 18;
/// Bytes per Q4_1 block: an f16 scale, an f16 minimum and 16 bytes of nibbles.
pub const Q4_1_BYTES: usize = 20;
/// Bytes per Q8_0 block: an f16 scale and 32 signed bytes.
pub const Q8_0_BYTES: usize = 34;

/// Which implementation of the kernels runs. Results are identical across variants (see
/// the module documentation); the variant is still part of the runtime fingerprint, so a
/// receipt says exactly what ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelVariant {
    /// Portable Rust, the reference.
    Scalar,
    /// AVX2 + FMA-free float, F16C for scale conversion.
    Avx2,
    /// AVX-512 VL + VNNI (256-bit vectors, `vpdpbusd` for the integer dot products).
    Avx512,
}

impl KernelVariant {
    /// The best variant this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    /// Whether this CPU can run the variant.
    pub fn is_supported(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => matches!(Self::detect(), Self::Avx2 | Self::Avx512),
            Self::Avx512 => Self::detect() == Self::Avx512,
        }
    }

    /// The lowercase name used in fingerprints and options.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// Parses a name as [`KernelVariant::name`] writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "scalar" => Some(Self::Scalar),
            "avx2" => Some(Self::Avx2),
            "avx512" => Some(Self::Avx512),
            _ => None,
        }
    }
}

/// An activation row quantized to 8 bits per value, in blocks of 32 (the partner of
/// every quantized weight format). Stored as separate arrays so SIMD code can load eight
/// blocks' scales at once.
#[derive(Clone, Debug, Default)]
pub struct QuantizedRow {
    /// The quantized values, `k` of them.
    pub qs: Vec<i8>,
    /// Per block: the scale `d` (value = q * d).
    pub d: Vec<f32>,
    /// Per block: the sum of the block's quantized values.
    pub qsum: Vec<i32>,
    /// Per block: `d * qsum`, the block's sum as a float (for Q4_1's minimum term).
    pub s: Vec<f32>,
}

impl QuantizedRow {
    /// Quantizes `x` (its length a multiple of 32) into `self`, reusing the buffers.
    ///
    /// One implementation for all variants (the cost is linear in `k`, so it does not need
    /// SIMD), which keeps the quantized activations identical everywhere. Rounding is half
    /// away from zero (`f32::round`).
    pub fn quantize(&mut self, x: &[f32]) {
        debug_assert!(x.len().is_multiple_of(BLOCK));
        let nb = x.len() / BLOCK;
        self.qs.clear();
        self.qs.resize(x.len(), 0);
        self.d.clear();
        self.qsum.clear();
        self.s.clear();
        for (block, out) in x.chunks_exact(BLOCK).zip(self.qs.chunks_exact_mut(BLOCK)) {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (o, v) in out.iter_mut().zip(block) {
                // NaN and infinities in the activations saturate rather than wrap.
                let q = round_half_away((v * id).clamp(-127.0, 127.0)) as i8;
                *o = q;
                sum += i32::from(q);
            }
            self.d.push(d);
            self.qsum.push(sum);
            self.s.push(d * sum as f32);
        }
        debug_assert_eq!(self.d.len(), nb);
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.qs.len()
    }

    /// Whether the row is empty.
    pub fn is_empty(&self) -> bool {
        self.qs.is_empty()
    }
}

/// Bytes of quantized values per block (the part before the scales in a planar row).
pub(crate) fn qs_bytes(block_bytes: usize) -> usize {
    match block_bytes {
        Q4_0_BYTES => 16,
        Q4_1_BYTES => 16,
        _ => 32,
    }
}

/// Repacks one row of ggml blocks (`block_bytes` each: Q4_0, Q4_1 or Q8_0) into the
/// planar layout the kernels read: all quantized values, then all scales, then (Q4_1)
/// all minimums.
pub fn planar_from_ggml(block_bytes: usize, ggml: &[u8]) -> Vec<u8> {
    let nb = ggml.len() / block_bytes;
    let qs = qs_bytes(block_bytes);
    let head = block_bytes - qs; // 2 (scale) or 4 (scale + minimum)
    let mut out = vec![0u8; ggml.len()];
    for (b, blk) in ggml.chunks_exact(block_bytes).enumerate() {
        out[b * qs..(b + 1) * qs].copy_from_slice(&blk[head..]);
        out[nb * qs + 2 * b..nb * qs + 2 * b + 2].copy_from_slice(&blk[0..2]);
        if head == 4 {
            out[nb * (qs + 2) + 2 * b..nb * (qs + 2) + 2 * b + 2].copy_from_slice(&blk[2..4]);
        }
    }
    out
}

/// `x.round()` (half away from zero) for |x| <= 127 without a libm call (the baseline
/// x86-64 target has no rounding instruction, and this runs for every activation value).
/// NaN gives 0.
#[inline(always)]
fn round_half_away(x: f32) -> i32 {
    let t = x as i32; // truncates toward zero; NaN becomes 0
    let frac = x - t as f32; // exact for |x| < 2^23
    if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// Reads a little-endian f16 at `bytes[at..at + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// The fixed 8-lane summation tree shared by every variant.
#[inline(always)]
pub(crate) fn hsum8(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// Folds 32 f32 lanes (four groups of 8) the way every variant does.
#[inline(always)]
pub(crate) fn hsum32(l: &[f32; 32]) -> f32 {
    let mut eight = [0.0f32; 8];
    for (j, e) in eight.iter_mut().enumerate() {
        *e = (l[j] + l[8 + j]) + (l[16 + j] + l[24 + j]);
    }
    hsum8(&eight)
}

/// Dot product of a planar Q4_0 weight row (`x.len() / 32` blocks) with a quantized activation.
#[inline]
pub fn dot_q4_0(variant: KernelVariant, w: &[u8], x: &QuantizedRow) -> f32 {
    debug_assert_eq!(w.len(), x.len() / BLOCK * Q4_0_BYTES);
    match variant {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a variant other than Scalar is only constructed after runtime detection
        // (see `LoadOptions` validation), so the CPU has the features the kernel enables.
        KernelVariant::Avx2 => unsafe { avx2::dot_q4(w, x, false) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        KernelVariant::Avx512 => unsafe { avx512::dot_q4(w, x, false) },
        _ => scalar::dot_q4(w, x, false),
    }
}

/// Dot product of a planar Q4_1 weight row with a quantized activation.
#[inline]
pub fn dot_q4_1(variant: KernelVariant, w: &[u8], x: &QuantizedRow) -> f32 {
    debug_assert_eq!(w.len(), x.len() / BLOCK * Q4_1_BYTES);
    match variant {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx2 => unsafe { avx2::dot_q4(w, x, true) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx512 => unsafe { avx512::dot_q4(w, x, true) },
        _ => scalar::dot_q4(w, x, true),
    }
}

/// Dot product of a planar Q8_0 weight row with a quantized activation.
#[inline]
pub fn dot_q8_0(variant: KernelVariant, w: &[u8], x: &QuantizedRow) -> f32 {
    debug_assert_eq!(w.len(), x.len() / BLOCK * Q8_0_BYTES);
    match variant {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx2 => unsafe { avx2::dot_q8_0(w, x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx512 => unsafe { avx512::dot_q8_0(w, x) },
        _ => scalar::dot_q8_0(w, x),
    }
}

/// Dot product of two f32 vectors of equal length.
#[inline]
pub fn dot_f32(variant: KernelVariant, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match variant {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx2 => unsafe { avx2::dot_f32(a, b) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx512 => unsafe { avx512::dot_f32(a, b) },
        _ => scalar::dot_f32(a, b),
    }
}

/// Quantized weight formats the kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantFormat {
    /// ggml Q4_0.
    Q4_0,
    /// ggml Q4_1.
    Q4_1,
    /// ggml Q8_0.
    Q8_0,
}

/// One planar weight row against many quantized activation rows (tokens):
/// `out[j] = dot(w, xs[j])`, each value bit-identical to the single-row kernel.
pub fn dot_many(
    variant: KernelVariant,
    format: QuantFormat,
    w: &[u8],
    xs: &[QuantizedRow],
    out: &mut [f32],
) {
    debug_assert_eq!(xs.len(), out.len());
    let code = match format {
        QuantFormat::Q4_0 => 0,
        QuantFormat::Q4_1 => 1,
        QuantFormat::Q8_0 => 2,
    };
    match variant {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx2 => unsafe { avx2::dot_many(code, w, xs, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx512 => unsafe { avx512::dot_many(code, w, xs, out) },
        _ => {
            for (x, o) in xs.iter().zip(out) {
                *o = match format {
                    QuantFormat::Q8_0 => scalar::dot_q8_0(w, x),
                    f => scalar::dot_q4(w, x, f == QuantFormat::Q4_1),
                };
            }
        }
    }
}

/// One f32 weight row against many activation rows stored one after another in `xs`
/// (`out.len()` rows of `w.len()` values), each value bit-identical to [`dot_f32`].
pub fn dot_f32_many(variant: KernelVariant, w: &[f32], xs: &[f32], out: &mut [f32]) {
    debug_assert_eq!(xs.len(), w.len() * out.len());
    match variant {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx2 => unsafe { avx2::dot_f32_many(w, xs, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dot_q4_0`.
        KernelVariant::Avx512 => unsafe { avx512::dot_f32_many(w, xs, out) },
        _ => {
            for (x, o) in xs.chunks_exact(w.len().max(1)).zip(out) {
                *o = scalar::dot_f32(w, x);
            }
        }
    }
}

/// The scalar reference kernels, public so tests and benchmarks can compare against them.
pub mod reference {
    pub use super::scalar::{dot_f32, dot_q4, dot_q8_0};
}

#[cfg(test)]
mod tests;
