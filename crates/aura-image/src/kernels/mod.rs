//! The deterministic matrix multiply under every network of the engine (linear layers,
//! convolutions through an implicit im2col, attention), with its scalar, AVX2 and AVX-512
//! micro-kernels chosen at run time.
//!
//! # One order of arithmetic, whatever the blocking, threads or instruction set
//!
//! Every output value is `c = fma(a[K-1], b[K-1], ... fma(a[1], b[1], fma(a[0], b[0], c0)))`:
//! one fused multiply-add per term, in increasing `k`, starting from the bias (or 0). The
//! multiply is blocked for the caches (`KC` terms at a time) and split across threads by
//! output tiles, but a block never starts a fresh partial sum: the micro-kernel loads the
//! running value of `c`, continues the chain and stores it. So the result is the same bit
//! for bit at any thread count, any tile size and in every kernel variant (the scalar one
//! uses `f32::mul_add`, which is the same correctly rounded operation); a test checks the
//! variants against the scalar reference bit for bit, and another checks thread counts.
//! The variant is still part of the runtime fingerprint.
//!
//! # Layouts
//!
//! The right-hand side (weights) is packed once at load time into panels of `NR` columns,
//! `[panel][k][NR]`, zero-padded, as f32 or f16 (f16 is widened to f32 in the
//! micro-kernel, exactly). The left-hand side (activations) is packed per block into
//! micro-panels of `MR` rows, `[k][MR]`, straight from its source: rows of a matrix, or
//! the patches of an image (`Im2col`), so a convolution never materialises its im2col
//! matrix (at 512x512 that matrix alone would be gigabytes).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;

use half::f16;
use rayon::prelude::*;

/// Rows of a packed left-hand micro-panel.
pub(crate) const MR: usize = 12;
/// Columns of a packed right-hand panel.
pub(crate) const NR: usize = 32;
/// Terms of the inner product per block.
const KC: usize = 256;
/// Rows of the left-hand side packed at a time (a multiple of `MR`).
const MC: usize = 8 * MR;

/// Which implementation of the micro-kernel runs. Results are identical across variants
/// (see the module documentation); the variant is still part of the runtime fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelVariant {
    /// Portable Rust (`f32::mul_add`), the reference.
    Scalar,
    /// AVX2 with FMA3 and F16C.
    Avx2,
    /// AVX-512F (512-bit FMA, F16C conversions).
    Avx512,
}

impl KernelVariant {
    /// The best variant this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c");
            if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if avx2 {
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

/// How packed weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightDtype {
    /// 32-bit floats.
    F32,
    /// IEEE half floats, widened exactly to f32 in the micro-kernel.
    F16,
}

impl WeightDtype {
    /// `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }
}

#[derive(Clone)]
enum Panels {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

/// A `k x n` right-hand side packed into panels of [`NR`] columns (`[panel][k][NR]`).
#[derive(Clone)]
pub(crate) struct PackedB {
    pub(crate) k: usize,
    pub(crate) n: usize,
    panels: Panels,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedB({}x{} {})", self.k, self.n, self.dtype().name())
    }
}

impl PackedB {
    /// Packs `b[k][n] = value(k, n)`.
    pub(crate) fn from_fn(
        k: usize,
        n: usize,
        dtype: WeightDtype,
        value: impl Fn(usize, usize) -> f32,
    ) -> Self {
        let np = n.div_ceil(NR);
        let len = np * k * NR;
        let at = |i: usize| {
            let (p, rest) = (i / (k * NR), i % (k * NR));
            let (kk, j) = (rest / NR, rest % NR);
            let col = p * NR + j;
            if col < n { value(kk, col) } else { 0.0 }
        };
        let panels = match dtype {
            WeightDtype::F32 => Panels::F32((0..len).map(at).collect()),
            WeightDtype::F16 => {
                Panels::F16((0..len).map(|i| f16::from_f32(at(i)).to_bits()).collect())
            }
        };
        Self { k, n, panels }
    }

    /// Packs a row-major `n x k` matrix (one row per output: a linear layer's weight, or
    /// attention's keys) as its transpose.
    pub(crate) fn from_nk(w: &[f32], n: usize, k: usize, dtype: WeightDtype) -> Self {
        debug_assert_eq!(w.len(), n * k);
        Self::from_fn(k, n, dtype, |kk, j| w[j * k + kk])
    }

    /// Packs `b[k][j] = src[j * stride + k]` for `rows` rows of `k` values `stride` apart,
    /// as a matrix of `n >= rows` columns (the rest zero): attention's queries, as the
    /// transpose they are multiplied by.
    pub(crate) fn from_rows_transposed(
        src: &[f32],
        rows: usize,
        n: usize,
        k: usize,
        stride: usize,
    ) -> Self {
        let np = n.div_ceil(NR);
        let mut out = vec![0.0f32; np * k * NR];
        for j in 0..rows.min(n) {
            let row = &src[j * stride..j * stride + k];
            let base = (j / NR) * k * NR + j % NR;
            for (kk, &v) in row.iter().enumerate() {
                out[base + kk * NR] = v;
            }
        }
        Self {
            k,
            n,
            panels: Panels::F32(out),
        }
    }

    pub(crate) fn dtype(&self) -> WeightDtype {
        match self.panels {
            Panels::F32(_) => WeightDtype::F32,
            Panels::F16(_) => WeightDtype::F16,
        }
    }

    /// Bytes held.
    pub(crate) fn size_bytes(&self) -> usize {
        match &self.panels {
            Panels::F32(v) => v.len() * 4,
            Panels::F16(v) => v.len() * 2,
        }
    }

    /// The value at `(k, n)` (tests, LoRA checks).
    #[cfg(test)]
    pub(crate) fn get(&self, kk: usize, j: usize) -> f32 {
        let i = (j / NR) * self.k * NR + kk * NR + j % NR;
        match &self.panels {
            Panels::F32(v) => v[i],
            Panels::F16(v) => f16::from_bits(v[i]).to_f32(),
        }
    }
}

/// A left-hand side that packs itself: `rows x k`.
pub(crate) trait PackA: Sync {
    /// The inner dimension.
    fn k(&self) -> usize;
    /// The number of rows.
    fn rows(&self) -> usize;
    /// Writes rows `r0..r0 + MR` (rows past the end as zeros), columns `k0..k0 + kc`, into
    /// `out[kk * MR + r]`.
    fn pack_panel(&self, r0: usize, k0: usize, kc: usize, out: &mut [f32]);
}

/// A row-major matrix with rows of `k` values (`lda` apart).
pub(crate) struct RowsA<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) k: usize,
    pub(crate) lda: usize,
}

impl PackA for RowsA<'_> {
    fn k(&self) -> usize {
        self.k
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn pack_panel(&self, r0: usize, k0: usize, kc: usize, out: &mut [f32]) {
        for r in 0..MR {
            let row = r0 + r;
            if row < self.rows {
                let src = &self.data[row * self.lda + k0..row * self.lda + k0 + kc];
                for (kk, &v) in src.iter().enumerate() {
                    out[kk * MR + r] = v;
                }
            } else {
                for kk in 0..kc {
                    out[kk * MR + r] = 0.0;
                }
            }
        }
    }
}

/// The transpose of `k` rows of `rows` values `stride` apart: row `r` of this matrix is
/// value `r` of every stored row (attention's values, transposed).
pub(crate) struct ColsA<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
}

impl PackA for ColsA<'_> {
    fn k(&self) -> usize {
        self.k
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn pack_panel(&self, r0: usize, k0: usize, kc: usize, out: &mut [f32]) {
        let live = MR.min(self.rows.saturating_sub(r0));
        for kk in 0..kc {
            let src = &self.data[(k0 + kk) * self.stride + r0..];
            let dst = &mut out[kk * MR..(kk + 1) * MR];
            dst[..live].copy_from_slice(&src[..live]);
            dst[live..].fill(0.0);
        }
    }
}

/// The patches of a batch of NHWC images under a `kh x kw` kernel: one row per output
/// pixel, `k = (ky * kw + kx) * c + ci`.
pub(crate) struct Im2colA<'a> {
    pub(crate) input: &'a [f32],
    pub(crate) batch: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: usize,
    /// Padding on top and left.
    pub(crate) pad: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl PackA for Im2colA<'_> {
    fn k(&self) -> usize {
        self.kh * self.kw * self.c
    }
    fn rows(&self) -> usize {
        self.batch * self.oh * self.ow
    }
    fn pack_panel(&self, r0: usize, k0: usize, kc: usize, out: &mut [f32]) {
        let k1 = k0 + kc;
        for r in 0..MR {
            let row = r0 + r;
            if row >= self.rows() {
                for kk in 0..kc {
                    out[kk * MR + r] = 0.0;
                }
                continue;
            }
            let (b, pix) = (row / (self.oh * self.ow), row % (self.oh * self.ow));
            let (oy, ox) = (pix / self.ow, pix % self.ow);
            let mut k = k0;
            while k < k1 {
                let tap = k / self.c;
                let ci = k % self.c;
                let (ky, kx) = (tap / self.kw, tap % self.kw);
                let run = (self.c - ci).min(k1 - k);
                let iy = (oy * self.stride + ky).wrapping_sub(self.pad);
                let ix = (ox * self.stride + kx).wrapping_sub(self.pad);
                let dst = (k - k0) * MR + r;
                if iy < self.h && ix < self.w {
                    let at = ((b * self.h + iy) * self.w + ix) * self.c + ci;
                    for (i, &v) in self.input[at..at + run].iter().enumerate() {
                        out[dst + i * MR] = v;
                    }
                } else {
                    for i in 0..run {
                        out[dst + i * MR] = 0.0;
                    }
                }
                k += run;
            }
        }
    }
}

/// One right-hand panel of `kc` terms: `NR` values per term, `ldb` apart.
#[derive(Clone, Copy)]
enum BPanel<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

/// The micro-kernel's contract, shared by every variant: for the `MR x NR` tile at `c`
/// (row stride `ldc`), `c[r][j] = fma chain over kk in 0..kc of a[kk * MR + r] *
/// b[kk * ldb + j]`, continued from the tile's current values.
///
/// # Safety
/// `c` points to an `MR x NR` tile with row stride `ldc` that this call may read and
/// write and no one else touches meanwhile.
unsafe fn micro(
    variant: KernelVariant,
    kc: usize,
    a: &[f32],
    b: BPanel<'_>,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    debug_assert!(a.len() >= kc * MR);
    let blen = |len: usize| kc == 0 || len > (kc - 1) * ldb + NR - 1;
    match (variant, b) {
        #[cfg(target_arch = "x86_64")]
        (KernelVariant::Avx512, BPanel::F32(b)) => {
            debug_assert!(blen(b.len()));
            // SAFETY: `Avx512` is only chosen when the CPU reports avx512f, avx2, fma and
            // f16c (see `KernelVariant::detect` and `is_supported`); `a` and `b` hold the
            // values the kernel reads (by construction in `gemm`), `c` as the caller
            // guarantees.
            unsafe { avx512::kernel_f32(kc, a.as_ptr(), b.as_ptr(), ldb, c, ldc) }
        }
        #[cfg(target_arch = "x86_64")]
        (KernelVariant::Avx512, BPanel::F16(b)) => {
            debug_assert!(blen(b.len()));
            // SAFETY: as above.
            unsafe { avx512::kernel_f16(kc, a.as_ptr(), b.as_ptr(), ldb, c, ldc) }
        }
        #[cfg(target_arch = "x86_64")]
        (KernelVariant::Avx2, BPanel::F32(b)) => {
            debug_assert!(blen(b.len()));
            // SAFETY: `Avx2` is only chosen when the CPU reports avx2, fma and f16c.
            unsafe { avx2::kernel_f32(kc, a.as_ptr(), b.as_ptr(), ldb, c, ldc) }
        }
        #[cfg(target_arch = "x86_64")]
        (KernelVariant::Avx2, BPanel::F16(b)) => {
            debug_assert!(blen(b.len()));
            // SAFETY: as above.
            unsafe { avx2::kernel_f16(kc, a.as_ptr(), b.as_ptr(), ldb, c, ldc) }
        }
        // SAFETY (both): as the caller guarantees for `c`.
        (_, BPanel::F32(b)) => unsafe { scalar::kernel(kc, a, |i| b[i], ldb, c, ldc) },
        (_, BPanel::F16(b)) => unsafe {
            scalar::kernel(kc, a, |i| f16::from_bits(b[i]).to_f32(), ldb, c, ldc);
        },
    }
}

/// The right-hand side of a product.
#[derive(Clone, Copy)]
enum BRef<'a> {
    /// Packed panels.
    Packed(&'a PackedB),
    /// A row-major `k x n` matrix read in place (`n` a multiple of `NR`).
    Rows { data: &'a [f32], k: usize, n: usize },
}

impl BRef<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Self::Packed(b) => (b.k, b.n),
            Self::Rows { k, n, .. } => (*k, *n),
        }
    }

    /// Panel `p`'s terms `k0..k0 + kc`, and the distance between terms.
    fn panel(&self, p: usize, k0: usize, kc: usize) -> (BPanel<'_>, usize) {
        match self {
            Self::Packed(b) => {
                let at = p * b.k * NR + k0 * NR;
                let panel = match &b.panels {
                    Panels::F32(v) => BPanel::F32(&v[at..at + kc * NR]),
                    Panels::F16(v) => BPanel::F16(&v[at..at + kc * NR]),
                };
                (panel, NR)
            }
            Self::Rows { data, n, .. } => {
                let at = k0 * n + p * NR;
                (BPanel::F32(&data[at..at + (kc - 1) * n + NR]), *n)
            }
        }
    }
}

thread_local! {
    static PACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A raw pointer to the output that tasks share; each task writes only its own tile.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks of one `gemm` call write disjoint tiles of the output (see `gemm`), and
// the call returns only after every task has finished.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// `c (rows x b.n, row-major) = a * b + bias`, each value one fma chain (module docs).
/// With `parallel`, tiles run on the current rayon pool; the result does not change.
pub(crate) fn gemm(
    variant: KernelVariant,
    a: &dyn PackA,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
    parallel: bool,
) {
    gemm_ref(variant, a, BRef::Packed(b), bias, c, parallel);
}

/// `c (rows x n) = a * b` for a row-major `k x n` right-hand side read in place, with
/// `n` a multiple of [`NR`] (attention's probabilities).
pub(crate) fn gemm_rows(
    variant: KernelVariant,
    a: &dyn PackA,
    b: &[f32],
    k: usize,
    n: usize,
    c: &mut [f32],
    parallel: bool,
) {
    assert!(n.is_multiple_of(NR) && b.len() == k * n, "gemm_rows: shape");
    gemm_ref(variant, a, BRef::Rows { data: b, k, n }, None, c, parallel);
}

fn gemm_ref(
    variant: KernelVariant,
    a: &dyn PackA,
    b: BRef<'_>,
    bias: Option<&[f32]>,
    c: &mut [f32],
    parallel: bool,
) {
    let (k, n) = b.dims();
    let m = a.rows();
    assert_eq!(a.k(), k, "gemm: inner dimensions differ");
    assert_eq!(c.len(), m * n, "gemm: output size");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n, "gemm: bias size");
        for row in c.chunks_exact_mut(n.max(1)) {
            row.copy_from_slice(bias);
        }
    } else {
        c.fill(0.0);
    }
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let np = n.div_ceil(NR);
    let m_tiles = m.div_ceil(MC);
    // Split columns too when there are few row tiles, so small products still use every
    // thread. Tiles change nothing in the result, only who computes what.
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let want = 4 * threads;
    let n_split = if m_tiles >= want {
        1
    } else {
        want.div_ceil(m_tiles).min(np)
    };
    let panels_per = np.div_ceil(n_split);
    let n_tiles = np.div_ceil(panels_per);
    let out = OutPtr(c.as_mut_ptr());
    let task = |t: usize| {
        let (mt, nt) = (t / n_tiles, t % n_tiles);
        let r0 = mt * MC;
        let rows = MC.min(m - r0);
        let p0 = nt * panels_per;
        let p1 = (p0 + panels_per).min(np);
        PACK.with(|buf| {
            let mut buf = buf.borrow_mut();
            let need = MC * KC;
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            let mut tile = [0.0f32; MR * NR];
            let mut k0 = 0;
            while k0 < k {
                let kc = KC.min(k - k0);
                let panels = rows.div_ceil(MR);
                for ip in 0..panels {
                    a.pack_panel(
                        r0 + ip * MR,
                        k0,
                        kc,
                        &mut buf[ip * kc * MR..(ip + 1) * kc * MR],
                    );
                }
                for p in p0..p1 {
                    let (bp, ldb) = b.panel(p, k0, kc);
                    let col = p * NR;
                    let cols = NR.min(n - col);
                    for ip in 0..panels {
                        let row = r0 + ip * MR;
                        let mrows = MR.min(m - row);
                        let ap = &buf[ip * kc * MR..(ip + 1) * kc * MR];
                        if mrows == MR && cols == NR {
                            // SAFETY: this task alone owns rows r0..r0+rows and columns
                            // p0*NR..p1*NR of `c`, and the full tile lies inside `c`.
                            unsafe { micro(variant, kc, ap, bp, ldb, out.at(row * n + col), n) };
                        } else {
                            for r in 0..mrows {
                                // SAFETY: as above; the row segment lies inside `c`.
                                let src = unsafe {
                                    std::slice::from_raw_parts(out.at((row + r) * n + col), cols)
                                };
                                tile[r * NR..r * NR + cols].copy_from_slice(src);
                            }
                            // SAFETY: `tile` is this task's own MR x NR buffer.
                            unsafe { micro(variant, kc, ap, bp, ldb, tile.as_mut_ptr(), NR) };
                            for r in 0..mrows {
                                // SAFETY: as above.
                                let dst = unsafe {
                                    std::slice::from_raw_parts_mut(
                                        out.at((row + r) * n + col),
                                        cols,
                                    )
                                };
                                dst.copy_from_slice(&tile[r * NR..r * NR + cols]);
                            }
                        }
                    }
                }
                k0 += kc;
            }
        });
    };
    let tasks = m_tiles * n_tiles;
    if parallel && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

#[cfg(test)]
mod tests;
