//! The one matrix multiply under Aura's tiny image model, for the forward pass, the
//! backward pass and sampling alike, deterministic by construction.
//!
//! # The arithmetic is part of the format
//!
//! Every output element is `c = c0 + a[0]·b[0] + a[1]·b[1] + …`, summed strictly in
//! increasing `k`, one separate multiply and one add per term (no fused multiply-add), where
//! `c0` is zero or the element's previous value (`accumulate`). Work is split across threads
//! only by blocks of output rows, and a block of `k` is handed from one pass to the next
//! through the output itself (an f32 store and load, which is exact), so neither the thread
//! count, the blocking nor the instruction set (a portable loop or AVX2, chosen at run time)
//! can change a single bit: a test checks every variant against the naive triple loop, bit
//! for bit. This is what lets training give the same weights at any thread count.
//!
//! The AVX2 tile (6 rows × 16 columns, twelve 256-bit accumulators) runs at about 95
//! GFLOP per CPU-second on the Zen 4 build machines, the portable one (SSE2) at about 32.
//! There is no 512-bit variant: the same tile compiled for AVX-512 ran some fifty times
//! slower on those (virtualised) machines.

use rayon::prelude::*;

/// Rows of a register tile.
const MR: usize = 6;
/// Depth of one pass over `k`.
const KC: usize = 256;
/// Columns per block of B (a packed block, `KC × NB` floats, is half of a 1 MB L2).
const NB: usize = 512;

/// A read-only matrix view with arbitrary strides, so transposes cost nothing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix.
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix view out of bounds");
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (a view, no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.rs + c * self.cs]
    }
}

/// Which implementation of the tile runs; all give identical bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    /// Portable Rust.
    Portable,
    /// 256-bit vectors.
    Avx2,
}

impl Variant {
    /// The fastest variant this CPU runs.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// Every variant this CPU runs (for tests).
    #[cfg(test)]
    pub(crate) fn supported() -> Vec<Self> {
        let best = Self::detect();
        [Self::Portable, Self::Avx2]
            .into_iter()
            .filter(|v| *v as u8 <= best as u8)
            .collect()
    }
}

/// `c (m×n, row-major) = [c +] a (m×k) · b (k×n)`, in the fixed order of the module
/// documentation, on the current rayon pool.
pub(crate) fn matmul(a: View<'_>, b: View<'_>, c: &mut [f32], accumulate: bool) {
    matmul_with(Variant::detect(), a, b, c, accumulate);
}

pub(crate) fn matmul_with(
    variant: Variant,
    a: View<'_>,
    b: View<'_>,
    c: &mut [f32],
    accumulate: bool,
) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!(c.len(), a.rows * b.cols, "output has the wrong size");
    if c.is_empty() {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let (m, n) = (a.rows, b.cols);
    if b.cs != 1 && b.rs == 1 && m < n && m > 2 * MR {
        // A transposed B wider than A is tall (a weight's transpose in a backward pass):
        // compute cᵀ = bᵀ aᵀ instead, so the strided reads of packing fall on the smaller
        // operand. Each element is still c0 + Σₖ a·b in increasing k (products commute
        // exactly), so the result is the same to the bit.
        let mut ct = vec![0.0f32; n * m];
        if accumulate {
            transpose(c, m, n, &mut ct);
        }
        matmul_with(variant, b.t(), a.t(), &mut ct, accumulate);
        transpose(&ct, n, m, c);
        return;
    }
    match variant {
        Variant::Portable => drive::<16>(variant, a, b, c, accumulate, tile_portable),
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => drive::<16>(variant, a, b, c, accumulate, tile_avx2),
        #[cfg(not(target_arch = "x86_64"))]
        Variant::Avx2 => drive::<16>(variant, a, b, c, accumulate, tile_portable),
    }
}

/// `dst (cols × rows) = srcᵀ` for a row-major `rows × cols` source, in 16×16 blocks.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 16;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

type Tile<const NR: usize> = fn(&[f32], &[f32], &mut [[f32; NR]; MR]);

fn drive<const NR: usize>(
    variant: Variant,
    a: View<'_>,
    b: View<'_>,
    c: &mut [f32],
    accumulate: bool,
    tile: Tile<NR>,
) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m <= 2 * MR && b.cs == 1 {
        // A few rows (sampling one image): stream B once instead of packing it.
        match variant {
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => rows_avx2(a, b, c, accumulate),
            _ => rows_body(a, b, c, accumulate),
        }
        return;
    }
    // Row blocks: a few per thread so uneven blocks balance; the blocking never changes
    // a result, so it may depend on the thread count.
    let threads = rayon::current_num_threads().max(1);
    let mb = m.div_ceil(threads * 3).div_ceil(MR).clamp(1, 16) * MR;
    let parallel = m * n * k >= 1 << 16 && m > mb;
    let mut bpack = vec![0.0f32; KC * NB.div_ceil(NR) * NR];
    for c0 in (0..n).step_by(NB) {
        let nc = NB.min(n - c0);
        let panels = nc.div_ceil(NR);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            // Pack this block of B once, shared by every row block.
            let packed = &mut bpack[..panels * kc * NR];
            let pack = |(p, dst): (usize, &mut [f32])| pack_b::<NR>(b, k0, kc, c0 + p * NR, dst);
            if parallel {
                packed.par_chunks_mut(kc * NR).enumerate().for_each(pack);
            } else {
                packed.chunks_mut(kc * NR).enumerate().for_each(pack);
            }
            let packed = &bpack[..panels * kc * NR];
            let load = accumulate || k0 > 0;
            let body = |(blk, rows): (usize, &mut [f32])| {
                block::<NR>(a, packed, rows, n, blk * mb, (c0, nc), (k0, kc), load, tile);
            };
            if parallel {
                c.par_chunks_mut(mb * n).enumerate().for_each(body);
            } else {
                c.chunks_mut(mb * n).enumerate().for_each(body);
            }
        }
    }
}

/// Packs columns `col..col+NR` of rows `k0..k0+kc` of B, row-major `kc × NR`, zero-padded.
fn pack_b<const NR: usize>(b: View<'_>, k0: usize, kc: usize, col: usize, dst: &mut [f32]) {
    let width = NR.min(b.cols - col);
    if b.cs == 1 {
        for (kk, d) in dst.chunks_exact_mut(NR).enumerate() {
            let at = (k0 + kk) * b.rs + col;
            d[..width].copy_from_slice(&b.data[at..at + width]);
            d[width..].fill(0.0);
        }
    } else {
        // A transposed operand: read each column along its contiguous run.
        dst.fill(0.0);
        for j in 0..width {
            let base = (col + j) * b.cs + k0 * b.rs;
            let src = b.data[base..].iter().step_by(b.rs).take(kc);
            for (d, &v) in dst.chunks_exact_mut(NR).zip(src) {
                d[j] = v;
            }
        }
    }
}

/// One block of output rows (starting at `row0`) against one packed block of B.
#[allow(
    clippy::too_many_arguments,
    reason = "the blocking's coordinates, passed flat"
)]
fn block<const NR: usize>(
    a: View<'_>,
    bpack: &[f32],
    c: &mut [f32],
    n: usize,
    row0: usize,
    (c0, nc): (usize, usize),
    (k0, kc): (usize, usize),
    load: bool,
    tile: Tile<NR>,
) {
    let rows = c.len() / n;
    let slivers = rows.div_ceil(MR);
    let panels = nc.div_ceil(NR);
    let mut apack = vec![0.0f32; kc * MR];
    for s in 0..slivers {
        // Pack A: this sliver's rows, k-major kc × MR, zero-padded.
        let height = MR.min(rows - s * MR);
        if a.rs == 1 {
            // A transposed operand: the sliver's rows are contiguous for each k.
            for (kk, d) in apack.chunks_exact_mut(MR).enumerate() {
                let at = (k0 + kk) * a.cs + row0 + s * MR;
                d[..height].copy_from_slice(&a.data[at..at + height]);
                d[height..].fill(0.0);
            }
        } else if a.cs == 1 && height == MR {
            // Row-major A, a full sliver: read its rows side by side, write in order.
            let base = (row0 + s * MR) * a.rs + k0;
            let rows: [&[f32]; MR] = std::array::from_fn(|r| &a.data[base + r * a.rs..][..kc]);
            let (dst, _) = apack.as_chunks_mut::<MR>();
            for (kk, d) in dst.iter_mut().enumerate() {
                for (x, row) in d.iter_mut().zip(&rows) {
                    *x = row[kk];
                }
            }
        } else {
            apack.fill(0.0);
            for r in 0..height {
                let base = (row0 + s * MR + r) * a.rs + k0 * a.cs;
                let src = a.data[base..].iter().step_by(a.cs).take(kc);
                for (d, &v) in apack.chunks_exact_mut(MR).zip(src) {
                    d[r] = v;
                }
            }
        }
        for p in 0..panels {
            let bp = &bpack[p * kc * NR..(p + 1) * kc * NR];
            let mut acc = [[0.0f32; NR]; MR];
            let col = c0 + p * NR;
            let width = NR.min(n - col);
            // Full-width rows move as fixed-size arrays (inlined vector moves, not calls).
            if load {
                for (r, acc_row) in acc.iter_mut().enumerate().take(height) {
                    let at = (s * MR + r) * n + col;
                    if width == NR {
                        if let Some(src) = c[at..].first_chunk::<NR>() {
                            *acc_row = *src;
                        }
                    } else {
                        acc_row[..width].copy_from_slice(&c[at..at + width]);
                    }
                }
            }
            tile(&apack, bp, &mut acc);
            for (r, acc_row) in acc.iter().enumerate().take(height) {
                let at = (s * MR + r) * n + col;
                if width == NR {
                    if let Some(dst) = c[at..].first_chunk_mut::<NR>() {
                        *dst = *acc_row;
                    }
                } else {
                    c[at..at + width].copy_from_slice(&acc_row[..width]);
                }
            }
        }
    }
}

/// Few output rows: `c[i][j] = c[i][j] + a[i][kk] * b[kk][j]` for kk in order, the same
/// sums as the tile, each row of `c` the accumulator.
#[inline(always)]
fn rows_body(a: View<'_>, b: View<'_>, c: &mut [f32], accumulate: bool) {
    let n = b.cols;
    if !accumulate {
        c.fill(0.0);
    }
    for kk in 0..a.cols {
        let brow = &b.data[kk * b.rs..kk * b.rs + n];
        for (i, crow) in c.chunks_exact_mut(n).enumerate() {
            let x = a.at(i, kk);
            for (o, &y) in crow.iter_mut().zip(brow) {
                *o += x * y;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn rows_avx2(a: View<'_>, b: View<'_>, c: &mut [f32], accumulate: bool) {
    #[target_feature(enable = "avx2")]
    fn inner(a: View<'_>, b: View<'_>, c: &mut [f32], accumulate: bool) {
        rows_body(a, b, c, accumulate);
    }
    #[allow(unsafe_code, reason = "calling a target-feature function")]
    // SAFETY: this variant is only chosen after `is_x86_feature_detected!("avx2")`.
    unsafe {
        inner(a, b, c, accumulate);
    }
}

/// The register tile: `acc[r][j] = acc[r][j] + a[kk][r] * b[kk][j]` for kk in order.
#[inline(always)]
fn tile_body<const NR: usize>(a: &[f32], b: &[f32], out: &mut [[f32; NR]; MR]) {
    // Fixed-size chunks let the compiler keep the whole tile in registers.
    let mut acc = *out;
    let (a, _) = a.as_chunks::<MR>();
    let (b, _) = b.as_chunks::<NR>();
    for (ak, bk) in a.iter().zip(b) {
        for (acc_row, &x) in acc.iter_mut().zip(ak) {
            for (o, &y) in acc_row.iter_mut().zip(bk) {
                *o += x * y;
            }
        }
    }
    *out = acc;
}

fn tile_portable(a: &[f32], b: &[f32], out: &mut [[f32; 16]; MR]) {
    tile_body::<16>(a, b, out);
}

#[cfg(target_arch = "x86_64")]
fn tile_avx2(a: &[f32], b: &[f32], out: &mut [[f32; 16]; MR]) {
    #[target_feature(enable = "avx2")]
    fn inner(a: &[f32], b: &[f32], out: &mut [[f32; 16]; MR]) {
        tile_body::<16>(a, b, out);
    }
    #[allow(unsafe_code, reason = "calling a target-feature function")]
    // SAFETY: this variant is only chosen after `is_x86_feature_detected!("avx2")`; the
    // function itself is safe Rust compiled with wider vectors.
    unsafe {
        inner(a, b, out);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    /// The definition: sequential in k, separate multiply and add.
    fn naive(a: View<'_>, b: View<'_>, c: &mut [f32], accumulate: bool) {
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = if accumulate { c[i * b.cols + j] } else { 0.0 };
                for kk in 0..a.cols {
                    s += a.at(i, kk) * b.at(kk, j);
                }
                c[i * b.cols + j] = s;
            }
        }
    }

    fn noise(len: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_variant_and_thread_count_matches_the_naive_loop_bit_for_bit() {
        // Shapes around every blocking edge: MR, NR, KC and NB, transposed or not (which
        // also takes the transposed-product path for a wide transposed B).
        let shapes = [
            (1, 1, 1),
            (7, 17, 3),
            (13, 40, 300),
            (6, 257, 513),
            (100, 33, 600),
            (20, 530, 300),
        ];
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            for transpose in [false, true] {
                let ad = noise(m * k, si as u32);
                let bd = noise(k * n, 100 + si as u32);
                let a = if transpose {
                    View::new(&ad, k, m).t()
                } else {
                    View::new(&ad, m, k)
                };
                let b = if transpose {
                    View::new(&bd, n, k).t()
                } else {
                    View::new(&bd, k, n)
                };
                for accumulate in [false, true] {
                    let init = noise(m * n, 7);
                    let mut want = init.clone();
                    naive(a, b, &mut want, accumulate);
                    for v in Variant::supported() {
                        for threads in [1, 3] {
                            let pool = rayon::ThreadPoolBuilder::new()
                                .num_threads(threads)
                                .build()
                                .unwrap();
                            let mut got = init.clone();
                            pool.install(|| matmul_with(v, a, b, &mut got, accumulate));
                            let same = got
                                .iter()
                                .zip(&want)
                                .all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(same, "{v:?} {threads} threads, shape {m}x{n}x{k}");
                        }
                    }
                }
            }
        }
    }
}
