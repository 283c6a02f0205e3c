//! The ground truth the prompt cache stands on: feeding a sequence in chunks, split
//! anywhere, gives the same logits and the same KV state bit for bit as feeding it at
//! once, and the first `n` positions of a cache are exactly the cache of the first `n`
//! tokens. Checked on small random models (dense and mixture of experts, f32 and Q8_0
//! weights) at 1 and 2 threads, over random split points (proptest), with sizes that take
//! both the sequential and the parallel paths of the matrix products and the attention.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::kernels::KernelVariant;
use crate::matrix::{Format, quantize_q8_0};

const DIM: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const FFN: usize = 96;
const VOCAB: usize = 50;
const EXPERTS: usize = 4;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    fn matrix(&mut self, rows: usize, cols: usize, format: Format) -> Matrix {
        let data: Vec<f32> = (0..rows * cols).map(|_| self.next() * 0.4).collect();
        match format {
            Format::F32 => Matrix::from_f32(rows, cols, data).unwrap(),
            f => Matrix::from_blocks(rows, cols, f, &quantize_q8_0(&data)).unwrap(),
        }
    }

    fn norm(&mut self) -> Vec<f32> {
        (0..DIM).map(|_| 1.0 + self.next() * 0.2).collect()
    }
}

/// A random two-layer model; `moe` gives it four experts, two per token.
fn model(moe: bool, format: Format, seed: u64) -> Transformer {
    let mut r = Rng(seed | 1);
    let config = Config {
        architecture: if moe { "mixtral" } else { "llama" }.into(),
        n_layer: 2,
        dim: DIM,
        n_head: HEADS,
        n_kv_head: KV_HEADS,
        head_dim: HEAD_DIM,
        ffn_dim: FFN,
        vocab: VOCAB,
        eps: 1e-5,
        rope_theta: 10000.0,
        context_length: 512,
        n_expert: if moe { EXPERTS } else { 0 },
        n_expert_used: if moe { 2 } else { 0 },
    };
    let swiglu = |r: &mut Rng| {
        (
            r.matrix(FFN, DIM, format),
            r.matrix(FFN, DIM, format),
            r.matrix(DIM, FFN, format),
        )
    };
    let layers = (0..2)
        .map(|_| {
            let ffn = if moe {
                Ffn::Moe {
                    router: r.matrix(EXPERTS, DIM, Format::F32),
                    experts: (0..EXPERTS)
                        .map(|_| {
                            let (gate, up, down) = swiglu(&mut r);
                            Expert { gate, up, down }
                        })
                        .collect(),
                    top_k: 2,
                }
            } else {
                let (gate, up, down) = swiglu(&mut r);
                Ffn::Dense { gate, up, down }
            };
            Layer {
                attn_norm: r.norm(),
                wq: r.matrix(HEADS * HEAD_DIM, DIM, format),
                wk: r.matrix(KV_HEADS * HEAD_DIM, DIM, format),
                wv: r.matrix(KV_HEADS * HEAD_DIM, DIM, format),
                wo: r.matrix(DIM, HEADS * HEAD_DIM, format),
                bq: None,
                bk: Some((0..KV_HEADS * HEAD_DIM).map(|_| r.next() * 0.1).collect()),
                bv: None,
                ffn_norm: r.norm(),
                ffn,
            }
        })
        .collect();
    let embed = r.matrix(VOCAB, DIM, Format::F32);
    let norm = r.norm();
    Transformer::new(config, embed, layers, norm, None).unwrap()
}

fn compute(threads: usize) -> Compute {
    Compute {
        variant: KernelVariant::detect(),
        pool: Some(Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap(),
        )),
    }
}

/// Feeds `tokens` in the chunks that `cuts` (sorted positions inside it) make; returns the
/// last chunk's logits and the cache.
fn feed(t: &Transformer, cx: &Compute, tokens: &[u32], cuts: &[usize]) -> (Vec<f32>, KvCache) {
    let mut cache = t.new_cache();
    let mut logits = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&tokens.len())) {
        if end > start {
            logits = cx.install(|| t.forward(cx, &tokens[start..end], &mut cache).unwrap());
            start = end;
        }
    }
    (logits, cache)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every claim of the module documentation, for one model, sequence and set of cuts.
fn check(t: &Transformer, tokens: &[u32], cuts: &[usize]) {
    let one = compute(1);
    let (whole_logits, whole) = feed(t, &one, tokens, &[]);
    for cx in [&one, &compute(2)] {
        let (logits, cache) = feed(t, cx, tokens, cuts);
        assert_eq!(bits(&logits), bits(&whole_logits), "logits, cuts {cuts:?}");
        assert_eq!(cache.digest(), whole.digest(), "state, cuts {cuts:?}");
        assert_eq!(cache.expert_tokens, whole.expert_tokens);
    }
    for &n in cuts {
        // The first n positions of the whole cache are the cache of the first n tokens...
        let prefix = whole.prefix(n);
        let (_, fresh) = feed(t, &one, &tokens[..n], &[]);
        assert_eq!(prefix.digest(), fresh.digest(), "prefix of {n}");
        assert_eq!(prefix.expert_tokens, fresh.expert_tokens, "prefix of {n}");
        // ...and continuing from the copy gives what feeding everything at once gave.
        let mut resumed = prefix;
        let logits = one.install(|| t.forward(&one, &tokens[n..], &mut resumed).unwrap());
        assert_eq!(bits(&logits), bits(&whole_logits), "resumed at {n}");
        assert_eq!(resumed.digest(), whole.digest(), "resumed at {n}");
        assert_eq!(resumed.expert_tokens, whole.expert_tokens);
    }
}

fn sequence(len: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng(seed | 1);
    (0..len)
        .map(|_| ((r.next() + 0.5) * VOCAB as f32) as u32 % VOCAB as u32)
        .collect()
}

#[test]
fn chunked_prefill_equals_one_prefill_on_every_model_kind() {
    // 48 tokens at once take the parallel attention and matrix paths; chunks of one to
    // three tokens take the sequential ones.
    let tokens = sequence(48, 7);
    let cuts = [1, 2, 5, 17, 18, 30, 47];
    for moe in [false, true] {
        for format in [Format::F32, Format::Q8_0] {
            check(&model(moe, format, 11), &tokens, &cuts);
        }
    }
}

#[test]
fn a_prefix_copy_does_not_share_memory_with_its_original() {
    let t = model(false, Format::F32, 3);
    let cx = compute(1);
    let tokens = sequence(10, 5);
    let (_, whole) = feed(&t, &cx, &tokens, &[]);
    let before = whole.digest();
    let mut copy = whole.prefix(4);
    cx.install(|| t.forward(&cx, &[1, 2, 3], &mut copy).unwrap());
    assert_eq!(
        whole.digest(),
        before,
        "extending a copy wrote its original"
    );
    assert_eq!((copy.len, whole.len), (7, 10));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_split_of_a_prompt_gives_identical_logits_and_state(
        len in 2usize..64,
        seed in any::<u64>(),
        raw_cuts in proptest::collection::vec(1usize..64, 1..4),
        moe in any::<bool>(),
        q8 in any::<bool>(),
    ) {
        let tokens = sequence(len, seed);
        let mut cuts: Vec<usize> = raw_cuts.into_iter().map(|c| 1 + c % (len - 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let format = if q8 { Format::Q8_0 } else { Format::F32 };
        check(&model(moe, format, seed ^ 0x5eed), &tokens, &cuts);
    }
}
