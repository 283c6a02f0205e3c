//! The kernels against a plain reference, bit for bit: every variant this CPU runs, f32
//! and f16 weights, odd shapes, several thread counts, and convolutions through im2col.

use super::*;

/// Each value as one fma chain from the bias, in increasing k: the contract.
fn reference(a: &[f32], m: usize, k: usize, b: &PackedB, bias: Option<&[f32]>) -> Vec<f32> {
    let n = b.n;
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[j]);
            for kk in 0..k {
                acc = a[i * k + kk].mul_add(b.get(kk, j), acc);
            }
            c[i * n + j] = acc;
        }
    }
    c
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    // Values of varied magnitude so rounding differences would show.
    (0..n)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40503));
            ((x >> 8) as f32 / (1 << 24) as f32 - 0.5) * (1.0 + (x % 7) as f32)
        })
        .collect()
}

fn variants() -> Vec<KernelVariant> {
    [
        KernelVariant::Scalar,
        KernelVariant::Avx2,
        KernelVariant::Avx512,
    ]
    .into_iter()
    .filter(|v| v.is_supported())
    .collect()
}

#[test]
fn every_variant_matches_the_reference_bit_for_bit() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (13, 33, 7),
        (12, 32, 256),
        (30, 70, 300),
        (97, 65, 520),
        (5, 3, 1000),
    ] {
        let a = values(m * k, 1);
        let bias = values(n, 3);
        for dtype in [WeightDtype::F32, WeightDtype::F16] {
            let w = values(n * k, 2);
            let b = PackedB::from_nk(&w, n, k, dtype);
            for with_bias in [false, true] {
                let bias = with_bias.then_some(&bias[..]);
                let want = reference(&a, m, k, &b, bias);
                for v in variants() {
                    for parallel in [false, true] {
                        let mut c = vec![f32::NAN; m * n];
                        gemm(
                            v,
                            &RowsA {
                                data: &a,
                                rows: m,
                                k,
                                lda: k,
                            },
                            &b,
                            bias,
                            &mut c,
                            parallel,
                        );
                        let same = c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{v:?} {dtype:?} m={m} n={n} k={k} bias={with_bias}");
                    }
                }
            }
        }
    }
}

#[test]
fn thread_counts_do_not_change_the_result() {
    let (m, n, k) = (300, 200, 700);
    let a = values(m * k, 4);
    let b = PackedB::from_nk(&values(n * k, 5), n, k, WeightDtype::F32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut c = vec![0.0; m * n];
        pool.install(|| {
            gemm(
                KernelVariant::detect(),
                &RowsA {
                    data: &a,
                    rows: m,
                    k,
                    lda: k,
                },
                &b,
                None,
                &mut c,
                true,
            );
        });
        c
    };
    let one = run(1);
    for t in [2, 3, 4, 7] {
        assert!(
            run(t)
                .iter()
                .zip(&one)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{t} threads"
        );
    }
}

#[test]
fn im2col_convolution_matches_a_direct_convolution() {
    // NHWC input, 3x3 kernel, stride 1 and 2, padding 1; the direct loop sums in the
    // packed k order (ky, kx, ci) so it must agree bit for bit.
    let (batch, h, w, c, co) = (2, 7, 5, 3, 10);
    let input = values(batch * h * w * c, 6);
    let weight = values(co * c * 9, 7); // [co][ci][ky][kx], PyTorch's layout
    let b = PackedB::from_fn(9 * c, co, WeightDtype::F32, |k, j| {
        let (tap, ci) = (k / c, k % c);
        weight[((j * c + ci) * 3 + tap / 3) * 3 + tap % 3]
    });
    for stride in [1, 2] {
        let (oh, ow) = ((h + 2 - 3) / stride + 1, (w + 2 - 3) / stride + 1);
        let a = Im2colA {
            input: &input,
            batch,
            h,
            w,
            c,
            kh: 3,
            kw: 3,
            stride,
            pad: 1,
            oh,
            ow,
        };
        let mut got = vec![0.0; batch * oh * ow * co];
        gemm(KernelVariant::detect(), &a, &b, None, &mut got, true);
        for bi in 0..batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    for j in 0..co {
                        let mut acc = 0.0f32;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                for ci in 0..c {
                                    let (iy, ix) = (
                                        (oy * stride + ky) as isize - 1,
                                        (ox * stride + kx) as isize - 1,
                                    );
                                    let v = if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < h
                                        && (ix as usize) < w
                                    {
                                        input[((bi * h + iy as usize) * w + ix as usize) * c + ci]
                                    } else {
                                        0.0
                                    };
                                    acc = v.mul_add(weight[((j * c + ci) * 3 + ky) * 3 + kx], acc);
                                }
                            }
                        }
                        let g = got[((bi * oh + oy) * ow + ox) * co + j];
                        assert_eq!(
                            g.to_bits(),
                            acc.to_bits(),
                            "stride {stride} at {bi},{oy},{ox},{j}"
                        );
                    }
                }
            }
        }
    }
}

/// Throughput on SD-like shapes (run by hand: `cargo test -p aura-image gemm_speed --
/// --ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a check"]
fn gemm_speed() {
    for &(m, n, k, dtype) in &[
        (4096, 320, 2880, WeightDtype::F16),
        (4096, 320, 2880, WeightDtype::F32),
        (1024, 640, 5760, WeightDtype::F16),
        (256, 1280, 11520, WeightDtype::F16),
        (64, 1280, 11520, WeightDtype::F16),
    ] {
        let a = values(m * k, 1);
        let b = PackedB::from_nk(&values(n * k, 2), n, k, dtype);
        let mut c = vec![0.0; m * n];
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let cpu0 = cpu_seconds();
            let t = std::time::Instant::now();
            let reps = 3;
            for _ in 0..reps {
                pool.install(|| {
                    gemm(
                        KernelVariant::detect(),
                        &RowsA {
                            data: &a,
                            rows: m,
                            k,
                            lda: k,
                        },
                        &b,
                        None,
                        &mut c,
                        true,
                    );
                });
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let cpu = (cpu_seconds() - cpu0) / reps as f64;
            println!(
                "m={m} n={n} k={k} {dtype:?} threads={threads}: {:.1} ms, {:.1} GFLOP/s wall, {:.1} GFLOP per cpu-second",
                s * 1e3,
                2.0 * (m * n * k) as f64 / s / 1e9,
                2.0 * (m * n * k) as f64 / cpu / 1e9
            );
        }
    }
}

/// CPU time of this process (user + system) from /proc, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

#[test]
fn in_place_right_hand_sides_and_transposed_left_hand_sides_match_the_reference() {
    // `gemm_rows` reads a row-major k x n matrix without packing; `ColsA` packs the
    // transpose of strided rows (attention's values). Same contract, bit for bit.
    for &(m, n, k, stride) in &[(40, 256, 300, 320), (13, 32, 5, 13), (64, 96, 1000, 70)] {
        let src = values(k * stride, 9);
        let b = values(k * n, 10);
        let packed = PackedB::from_fn(k, n, WeightDtype::F32, |kk, j| b[kk * n + j]);
        let a_t: Vec<f32> = (0..m * k).map(|i| src[(i % k) * stride + i / k]).collect();
        let want = reference(&a_t, m, k, &packed, None);
        for v in variants() {
            let mut c = vec![f32::NAN; m * n];
            let a = ColsA {
                data: &src,
                rows: m,
                k,
                stride,
            };
            gemm_rows(v, &a, &b, k, n, &mut c, true);
            assert!(
                c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{v:?} m={m} n={n} k={k}"
            );
        }
    }
}
