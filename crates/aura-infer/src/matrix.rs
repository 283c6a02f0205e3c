//! Weight matrices in their stored format and the deterministic matrix multiply that uses
//! the kernels: work is split across threads by output rows only, so every output value
//! is computed by exactly one dot product in the fixed order of `kernels`.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::{
    self, BLOCK, KernelVariant, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QuantizedRow,
};

/// The storage format of a weight matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// 32-bit floats.
    F32,
    /// ggml Q4_0 blocks.
    Q4_0,
    /// ggml Q4_1 blocks.
    Q4_1,
    /// ggml Q8_0 blocks.
    Q8_0,
}

impl Format {
    /// The name used in fingerprints.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q8_0 => "q8_0",
        }
    }

    fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4 * BLOCK,
            Self::Q4_0 => Q4_0_BYTES,
            Self::Q4_1 => Q4_1_BYTES,
            Self::Q8_0 => Q8_0_BYTES,
        }
    }
}

/// A `rows × cols` weight matrix, row-major; each row is one output feature.
#[derive(Clone)]
pub(crate) struct Matrix {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) format: Format,
    /// f32 rows, when `format == F32`.
    f32s: Vec<f32>,
    /// Quantized blocks, otherwise.
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Matrix({}x{} {})",
            self.rows,
            self.cols,
            self.format.name()
        )
    }
}

/// How a model computes: which kernels and on which threads.
#[derive(Clone, Debug)]
pub(crate) struct Compute {
    pub(crate) variant: KernelVariant,
    /// A dedicated pool when the caller fixed a thread count; otherwise rayon's global
    /// pool (sized by RAYON_NUM_THREADS or the CPU count).
    pub(crate) pool: Option<std::sync::Arc<rayon::ThreadPool>>,
}

impl Compute {
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    pub(crate) fn threads(&self) -> usize {
        match &self.pool {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }
}

/// Output rows per parallel task: enough work to amortise scheduling, small enough to
/// balance two to sixteen threads on the matrices of small models.
const ROWS_PER_TASK: usize = 16;

impl Matrix {
    pub(crate) fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::model(format!(
                "matrix of {rows}x{cols} has {} values",
                data.len()
            )));
        }
        Ok(Self {
            rows,
            cols,
            format: Format::F32,
            f32s: data,
            bytes: Vec::new(),
        })
    }

    pub(crate) fn from_blocks(
        rows: usize,
        cols: usize,
        format: Format,
        bytes: &[u8],
    ) -> Result<Self> {
        if format == Format::F32 {
            return Err(Error::model("f32 matrix given as blocks"));
        }
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::model(format!(
                "a {} matrix needs a row length that is a multiple of {BLOCK}, got {cols}",
                format.name()
            )));
        }
        let want = rows
            .checked_mul(cols / BLOCK)
            .and_then(|b| b.checked_mul(format.block_bytes()));
        if want != Some(bytes.len()) {
            return Err(Error::model(format!(
                "{} matrix of {rows}x{cols} has {} bytes",
                format.name(),
                bytes.len()
            )));
        }
        // Repack each row from ggml's interleaved blocks into the kernels' planar layout.
        let rb = cols / BLOCK * format.block_bytes();
        let mut planar = Vec::with_capacity(bytes.len());
        for row in bytes.chunks_exact(rb.max(1)) {
            planar.extend_from_slice(&kernels::planar_from_ggml(format.block_bytes(), row));
        }
        Ok(Self {
            rows,
            cols,
            format,
            f32s: Vec::new(),
            bytes: planar,
        })
    }

    /// Builds a matrix from rows already in the planar layout (split and permuted rows).
    fn from_planar(rows: usize, cols: usize, format: Format, bytes: Vec<u8>) -> Self {
        Self {
            rows,
            cols,
            format,
            f32s: Vec::new(),
            bytes,
        }
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.format.block_bytes()
    }

    /// Reorders the rows: row `i` of the result is row `order[i]` of `self`.
    pub(crate) fn permute_rows(&mut self, order: &[usize]) {
        debug_assert_eq!(order.len(), self.rows);
        if self.format == Format::F32 {
            let old = std::mem::take(&mut self.f32s);
            self.f32s = order
                .iter()
                .flat_map(|&r| &old[r * self.cols..(r + 1) * self.cols])
                .copied()
                .collect();
        } else {
            let rb = self.row_bytes();
            let old = std::mem::take(&mut self.bytes);
            self.bytes = order
                .iter()
                .flat_map(|&r| &old[r * rb..(r + 1) * rb])
                .copied()
                .collect();
        }
    }

    /// Splits the matrix into `parts` matrices of `rows / parts` consecutive rows (used for
    /// experts stored stacked in one tensor).
    pub(crate) fn split_rows(self, parts: usize) -> Result<Vec<Matrix>> {
        if parts == 0 || !self.rows.is_multiple_of(parts) {
            return Err(Error::model(format!(
                "cannot split {} rows into {parts} parts",
                self.rows
            )));
        }
        let rows = self.rows / parts;
        (0..parts)
            .map(|p| match self.format {
                Format::F32 => Matrix::from_f32(
                    rows,
                    self.cols,
                    self.f32s[p * rows * self.cols..(p + 1) * rows * self.cols].to_vec(),
                ),
                format => {
                    let rb = self.row_bytes();
                    Ok(Matrix::from_planar(
                        rows,
                        self.cols,
                        format,
                        self.bytes[p * rows * rb..(p + 1) * rows * rb].to_vec(),
                    ))
                }
            })
            .collect()
    }

    /// Writes row `r`, dequantized, into `out` (used for embedding look-ups).
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        match self.format {
            Format::F32 => out.copy_from_slice(&self.f32s[r * self.cols..(r + 1) * self.cols]),
            format => {
                let rb = self.row_bytes();
                dequantize_row(format, &self.bytes[r * rb..(r + 1) * rb], out);
            }
        }
    }

    /// `out[t][r] = dot(row r, xs[t])` for `t` tokens: `xs` is `t × cols`, `out` is
    /// `t × rows`. Parallel over rows; each value is one kernel call.
    pub(crate) fn matmul(&self, cx: &Compute, xs: &[f32], t: usize, out: &mut [f32]) {
        debug_assert_eq!(xs.len(), t * self.cols);
        debug_assert_eq!(out.len(), t * self.rows);
        let variant = cx.variant;
        let quantized: Vec<QuantizedRow> = if self.format == Format::F32 {
            Vec::new()
        } else {
            xs.chunks_exact(self.cols)
                .map(|x| {
                    let mut q = QuantizedRow::default();
                    q.quantize(x);
                    q
                })
                .collect()
        };
        let rb = self.row_bytes();
        // Compute row-major by weight row (each task owns a contiguous slice), then
        // transpose: the transposition is cheap next to the dot products.
        let mut by_row = vec![0.0f32; t * self.rows];
        let task = |(chunk_index, chunk): (usize, &mut [f32])| {
            let first = chunk_index * ROWS_PER_TASK;
            for (i, outs) in chunk.chunks_exact_mut(t).enumerate() {
                let r = first + i;
                match self.format {
                    Format::F32 => {
                        let w = &self.f32s[r * self.cols..(r + 1) * self.cols];
                        kernels::dot_f32_many(variant, w, xs, outs);
                    }
                    format => {
                        let w = &self.bytes[r * rb..(r + 1) * rb];
                        let q = match format {
                            Format::Q4_0 => kernels::QuantFormat::Q4_0,
                            Format::Q4_1 => kernels::QuantFormat::Q4_1,
                            _ => kernels::QuantFormat::Q8_0,
                        };
                        kernels::dot_many(variant, q, w, &quantized, outs);
                    }
                }
            }
        };
        if self.rows * self.cols * t < 32 * 1024 || cx.threads() == 1 {
            // Too small to be worth waking other threads.
            by_row
                .chunks_mut(ROWS_PER_TASK * t)
                .enumerate()
                .for_each(task);
        } else {
            cx.install(|| {
                by_row
                    .par_chunks_mut(ROWS_PER_TASK * t)
                    .enumerate()
                    .for_each(task);
            });
        }
        for r in 0..self.rows {
            for tt in 0..t {
                out[tt * self.rows + r] = by_row[r * t + tt];
            }
        }
    }

    /// Size of the weights in bytes.
    pub(crate) fn size_bytes(&self) -> usize {
        self.f32s.len() * 4 + self.bytes.len()
    }
}

/// Dequantizes one planar row into `out` (`out.len()` values).
pub(crate) fn dequantize_row(format: Format, row: &[u8], out: &mut [f32]) {
    let nb = out.len() / BLOCK;
    let qs = kernels::qs_bytes(format.block_bytes());
    for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
        let d = kernels::f16_at(row, nb * qs + 2 * b);
        let q = &row[b * qs..(b + 1) * qs];
        match format {
            Format::Q4_0 | Format::Q4_1 => {
                let (m, off) = if format == Format::Q4_1 {
                    (kernels::f16_at(row, nb * (qs + 2) + 2 * b), 0.0)
                } else {
                    (0.0, 8.0)
                };
                for j in 0..16 {
                    o[j] = (f32::from(q[j] & 15) - off) * d + m;
                    o[j + 16] = (f32::from(q[j] >> 4) - off) * d + m;
                }
            }
            Format::Q8_0 => {
                for (v, q) in o.iter_mut().zip(q) {
                    *v = f32::from(*q as i8) * d;
                }
            }
            Format::F32 => {}
        }
    }
}

/// Quantizes f32 rows to Q8_0 (used for the dtype override and to write test models):
/// per block `d = amax / 127` stored as f16, `q = round(x / d)`.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / BLOCK * Q8_0_BYTES);
    for block in values.chunks(BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = half::f16::from_f32(amax / 127.0);
        let df = d.to_f32();
        let id = if df > 0.0 { 1.0 / df } else { 0.0 };
        out.extend_from_slice(&d.to_bits().to_le_bytes());
        for j in 0..BLOCK {
            let v = block.get(j).copied().unwrap_or(0.0);
            out.push((v * id).round().clamp(-127.0, 127.0) as i8 as u8);
        }
    }
    out
}
