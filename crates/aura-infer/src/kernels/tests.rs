//! Kernel tests: every SIMD variant equals the scalar reference bit for bit on random
//! data, and the reference equals a plain f64 dot product of the dequantized values up to
//! float rounding.

use half::f16;
use proptest::prelude::*;

use super::*;

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

/// Random quantized weight blocks: scales are finite f16 in a realistic range.
fn blocks(nb: usize, bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut w = vec![0u8; nb * bytes];
    for blk in w.chunks_exact_mut(bytes) {
        for b in blk.iter_mut() {
            *b = next() as u8;
        }
        let scale = f16::from_f32(((next() % 2000) as f32 - 1000.0) / 20000.0);
        blk[0..2].copy_from_slice(&scale.to_bits().to_le_bytes());
        if bytes == Q4_1_BYTES {
            let min = f16::from_f32(((next() % 2000) as f32 - 1000.0) / 5000.0);
            blk[2..4].copy_from_slice(&min.to_bits().to_le_bytes());
        }
    }
    w
}

fn dequant(w: &[u8], bytes: usize, k: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(k);
    for blk in w.chunks_exact(bytes) {
        let d = f64::from(f16_at(blk, 0));
        match bytes {
            Q4_0_BYTES | Q4_1_BYTES => {
                let (qs, m) = if bytes == Q4_1_BYTES {
                    (&blk[4..20], f64::from(f16_at(blk, 2)))
                } else {
                    (&blk[2..18], 0.0)
                };
                let off = if bytes == Q4_0_BYTES { 8.0 } else { 0.0 };
                let lo = qs.iter().map(|q| f64::from(q & 15));
                let hi = qs.iter().map(|q| f64::from(q >> 4));
                out.extend(lo.chain(hi).map(|q| (q - off) * d + m));
            }
            _ => out.extend(blk[2..].iter().map(|q| f64::from(*q as i8) * d)),
        }
    }
    out
}

fn check_quantized(nb: usize, seed: u64, xs: &[f32]) {
    let k = nb * BLOCK;
    let mut x = QuantizedRow::default();
    x.quantize(&xs[..k]);
    let xq: Vec<f64> =
        x.qs.iter()
            .enumerate()
            .map(|(i, q)| f64::from(*q) * f64::from(x.d[i / BLOCK]))
            .collect();
    type Dot = fn(KernelVariant, &[u8], &QuantizedRow) -> f32;
    let formats: [(usize, Dot); 3] = [
        (Q4_0_BYTES, dot_q4_0),
        (Q4_1_BYTES, dot_q4_1),
        (Q8_0_BYTES, dot_q8_0),
    ];
    for (bytes, dot) in formats {
        let ggml = blocks(nb, bytes, seed);
        let w = planar_from_ggml(bytes, &ggml);
        let reference = dot(KernelVariant::Scalar, &w, &x);
        for v in variants() {
            let got = dot(v, &w, &x);
            assert_eq!(
                got.to_bits(),
                reference.to_bits(),
                "{v:?} differs from scalar: format {bytes} bytes, {nb} blocks, seed {seed}"
            );
        }
        let exact: f64 = dequant(&ggml, bytes, k)
            .iter()
            .zip(&xq)
            .map(|(a, b)| a * b)
            .sum();
        let magnitude: f64 = dequant(&ggml, bytes, k)
            .iter()
            .zip(&xq)
            .map(|(a, b)| (a * b).abs())
            .sum();
        assert!(
            (f64::from(reference) - exact).abs() <= 1e-5 * magnitude + 1e-6,
            "reference {reference} far from exact {exact} (format {bytes}, {nb} blocks)"
        );
    }
}

/// The many-token kernels equal the one-token kernel for every token.
fn check_many(nb: usize, tokens: usize, seed: u64, xs: &[f32]) {
    let k = nb * BLOCK;
    let rows: Vec<QuantizedRow> = (0..tokens)
        .map(|j| {
            let mut q = QuantizedRow::default();
            q.quantize(&xs[j * k..(j + 1) * k]);
            q
        })
        .collect();
    for (bytes, format) in [
        (Q4_0_BYTES, QuantFormat::Q4_0),
        (Q4_1_BYTES, QuantFormat::Q4_1),
        (Q8_0_BYTES, QuantFormat::Q8_0),
    ] {
        let w = planar_from_ggml(bytes, &blocks(nb, bytes, seed));
        let single: Vec<u32> = rows
            .iter()
            .map(|x| {
                match format {
                    QuantFormat::Q4_0 => dot_q4_0(KernelVariant::Scalar, &w, x),
                    QuantFormat::Q4_1 => dot_q4_1(KernelVariant::Scalar, &w, x),
                    QuantFormat::Q8_0 => dot_q8_0(KernelVariant::Scalar, &w, x),
                }
                .to_bits()
            })
            .collect();
        for v in variants() {
            let mut out = vec![0.0f32; tokens];
            dot_many(v, format, &w, &rows, &mut out);
            let got: Vec<u32> = out.iter().map(|f| f.to_bits()).collect();
            assert_eq!(
                got, single,
                "{v:?} {format:?}, {nb} blocks, {tokens} tokens"
            );
        }
    }
    let w: Vec<f32> = xs[..k].iter().rev().copied().collect();
    let flat = &xs[..k * tokens];
    let single: Vec<u32> = flat
        .chunks_exact(k)
        .map(|x| dot_f32(KernelVariant::Scalar, &w, x).to_bits())
        .collect();
    for v in variants() {
        let mut out = vec![0.0f32; tokens];
        dot_f32_many(v, &w, flat, &mut out);
        assert_eq!(
            out.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
            single,
            "{v:?} f32"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn quantized_kernels_match_the_reference_bit_for_bit(
        nb in 1usize..40,
        seed in any::<u64>(),
        xs in proptest::collection::vec(-8.0f32..8.0, 40 * BLOCK),
    ) {
        check_quantized(nb, seed, &xs);
    }

    #[test]
    fn many_token_kernels_match_the_one_token_reference(
        nb in 1usize..20,
        tokens in 1usize..10,
        seed in any::<u64>(),
        xs in proptest::collection::vec(-8.0f32..8.0, 20 * BLOCK * 10),
    ) {
        check_many(nb, tokens, seed, &xs);
    }

    #[test]
    fn f32_kernels_match_the_reference_bit_for_bit(
        ab in proptest::collection::vec((-4.0f32..4.0, -4.0f32..4.0), 0..300),
    ) {
        let (a, b): (Vec<f32>, Vec<f32>) = ab.into_iter().unzip();
        let reference = dot_f32(KernelVariant::Scalar, &a, &b);
        for v in variants() {
            prop_assert_eq!(dot_f32(v, &a, &b).to_bits(), reference.to_bits(), "{:?}", v);
        }
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        let magnitude: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y).abs()).sum();
        prop_assert!((f64::from(reference) - exact).abs() <= 1e-5 * magnitude + 1e-6);
    }
}

#[test]
fn quantizing_zeros_and_non_finite_values_does_not_panic() {
    let mut x = QuantizedRow::default();
    x.quantize(&[0.0; 64]);
    assert!(x.qs.iter().all(|q| *q == 0) && x.d == [0.0, 0.0]);
    let mut odd = vec![1.0f32; 32];
    odd[3] = f32::NAN;
    odd[4] = f32::INFINITY;
    x.quantize(&odd);
    assert_eq!(x.qs.len(), 32);
}

#[test]
fn this_machine_runs_a_simd_variant() {
    // The development machine and CI have AVX2; if detection silently fell back to the
    // scalar kernels, the benchmark figures would be meaningless.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        assert_ne!(KernelVariant::detect(), KernelVariant::Scalar);
    }
}

proptest! {
    #[test]
    fn fast_rounding_equals_f32_round(x in -127.0f32..=127.0) {
        prop_assert_eq!(round_half_away(x), x.round() as i32);
    }
}

#[test]
fn fast_rounding_handles_halves_and_nan() {
    for (x, want) in [
        (0.5, 1),
        (-0.5, -1),
        (1.5, 2),
        (-2.5, -3),
        (0.49999997, 0),
        (126.5, 127),
        (f32::NAN, 0),
    ] {
        assert_eq!(round_half_away(x), want, "{x}");
    }
}
