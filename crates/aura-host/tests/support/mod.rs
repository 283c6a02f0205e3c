//! A data directory with a tiny random-weight Llama installed as a signed package (the
//! same model `aura-infer/tests/tiny.rs` writes, as GGUF with a chat template), licensed
//! to the node by its import, and a ledger: a real host over a real package, so no
//! downloaded model is needed.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::Path;
use std::sync::Arc;

use aura_core::door::{OsEntropy, SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_host::{Metering, ModelHost};
use aura_model::import::{self, Context, Options};
use aura_model::{Registry, no_progress};
use aura_store::SqliteStore;
use aura_store::sqlite::Options as StoreOptions;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};

const DIM: usize = 128;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = DIM / HEADS;
const FFN: usize = 256;
const LAYERS: usize = 2;
/// 256 byte tokens, then `<s>` (256) and `</s>` (257).
const VOCAB: usize = 258;
const EOS: usize = 257;
/// Long enough that a generation left running would run for minutes.
pub(crate) const CONTEXT: usize = 65_536;

/// GPT-2's byte-to-character mapping for byte-level BPE vocabularies.
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                let c = char::from_u32(next).unwrap();
                next += 1;
                c
            }
        })
        .collect()
}

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    v.push("<s>".into());
    v.push("</s>".into());
    v
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Writes a dense tiny Llama as f32 GGUF. Its end-of-sequence row of the output matrix is
/// zero, so greedy decoding (whose other logits are random) never ends a generation early:
/// a generation runs to its token limit unless it is stopped.
pub(crate) fn write_tiny_gguf(path: &Path, seed: u64) {
    use gguf_file::Value as V;
    let mut r = Rng(seed);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut put = |name: String, shape: &[usize], values: Vec<f32>| {
        let t = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
        tensors.push((name, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    };
    put(
        "token_embd.weight".into(),
        &[VOCAB, DIM],
        r.vec(VOCAB * DIM, 1.0),
    );
    let mut output = r.vec(VOCAB * DIM, 0.2);
    output[EOS * DIM..(EOS + 1) * DIM].fill(0.0);
    put("output.weight".into(), &[VOCAB, DIM], output);
    let norm = |r: &mut Rng| -> Vec<f32> { r.vec(DIM, 0.2).into_iter().map(|x| 1.0 + x).collect() };
    put("output_norm.weight".into(), &[DIM], norm(&mut r));
    for i in 0..LAYERS {
        let g = |x: &str| format!("blk.{i}.{x}");
        put(g("attn_norm.weight"), &[DIM], norm(&mut r));
        put(g("ffn_norm.weight"), &[DIM], norm(&mut r));
        put(
            g("attn_q.weight"),
            &[HEADS * HEAD_DIM, DIM],
            r.vec(DIM * DIM, 0.15),
        );
        put(
            g("attn_k.weight"),
            &[KV_HEADS * HEAD_DIM, DIM],
            r.vec(KV_HEADS * HEAD_DIM * DIM, 0.15),
        );
        put(
            g("attn_v.weight"),
            &[KV_HEADS * HEAD_DIM, DIM],
            r.vec(KV_HEADS * HEAD_DIM * DIM, 0.15),
        );
        put(g("attn_output.weight"), &[DIM, DIM], r.vec(DIM * DIM, 0.15));
        put(g("ffn_gate.weight"), &[FFN, DIM], r.vec(FFN * DIM, 0.15));
        put(g("ffn_up.weight"), &[FFN, DIM], r.vec(FFN * DIM, 0.15));
        put(g("ffn_down.weight"), &[DIM, FFN], r.vec(DIM * FFN, 0.15));
    }
    let arch = "llama";
    let meta: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch.into())),
        ("general.name".into(), V::String("tiny".into())),
        ("general.license".into(), V::String("apache-2.0".into())),
        (format!("{arch}.block_count"), V::U32(LAYERS as u32)),
        (format!("{arch}.context_length"), V::U32(CONTEXT as u32)),
        (format!("{arch}.embedding_length"), V::U32(DIM as u32)),
        (format!("{arch}.feed_forward_length"), V::U32(FFN as u32)),
        (format!("{arch}.attention.head_count"), V::U32(HEADS as u32)),
        (format!("{arch}.attention.head_count_kv"), V::U32(KV_HEADS as u32)),
        (format!("{arch}.attention.layer_norm_rms_epsilon"), V::F32(1e-5)),
        (format!("{arch}.rope.freq_base"), V::F32(10000.0)),
        (format!("{arch}.rope.dimension_count"), V::U32(HEAD_DIM as u32)),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            V::Array(vocab().into_iter().map(V::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            V::Array((0..VOCAB).map(|i| V::I32(if i >= 256 { 3 } else { 1 })).collect()),
        ),
        ("tokenizer.ggml.merges".into(), V::Array(vec![])),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(256)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(EOS as u32)),
        (
            "tokenizer.chat_template".into(),
            V::String(
                "{% for m in messages %}<s>{{ m.role }}: {{ m.content | trim }}\n{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}".into(),
            ),
        ),
    ];
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

/// A node's data directory with the tiny model installed as `tiny` and its ledger.
pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) signer: Arc<Signer>,
    pub(crate) store: Arc<SqliteStore>,
}

impl World {
    pub(crate) fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1)).unwrap());
        let gguf = dir.path().join("tiny.gguf");
        write_tiny_gguf(&gguf, 7);
        let options = Options {
            name: Some("tiny".into()),
            ..Options::default()
        };
        let plan = import::plan(&gguf, &options).unwrap();
        // Signed by the node itself, whose import gives it the publisher's own license.
        Registry::new(&dir.path().join("home"))
            .import(
                &plan,
                &options,
                &Context {
                    signer: &signer,
                    clock: &SystemClock,
                    entropy: &OsEntropy,
                },
                signer.public_key().node_id(),
                &no_progress,
            )
            .unwrap();
        let store = Arc::new(
            SqliteStore::open(
                dir.path().join("ledger.db"),
                signer.clone(),
                Arc::new(SystemClock),
                StoreOptions::default(),
            )
            .unwrap(),
        );
        World { dir, signer, store }
    }

    /// A host over this directory, models on one thread.
    pub(crate) async fn host(&self) -> Arc<ModelHost> {
        let metering = Metering::open(self.store.clone(), self.signer.clone())
            .await
            .unwrap();
        Arc::new(ModelHost::new(
            &self.dir.path().join("home"),
            metering,
            Some(1),
        ))
    }

    /// [`World::host`] with each text model's prompt cache given `bytes` (0: none).
    pub(crate) async fn host_with_prompt_cache(&self, bytes: usize) -> Arc<ModelHost> {
        let metering = Metering::open(self.store.clone(), self.signer.clone())
            .await
            .unwrap();
        Arc::new(
            ModelHost::new(&self.dir.path().join("home"), metering, Some(1))
                .with_prompt_cache(bytes),
        )
    }

    /// How many usage receipts the ledger holds.
    pub(crate) async fn receipts(&self) -> u64 {
        aura_model::Meter::open(&*self.store)
            .await
            .unwrap()
            .receipts()
    }
}
