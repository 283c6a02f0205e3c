//! all-MiniLM-L6-v2 embeddings (from the PyPI wheel via `scripts/fetch-models.sh`): unit
//! vectors, similar sentences closer than dissimilar ones, values matching an independent
//! NumPy implementation of the same encoder, identical at any thread count.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::PathBuf;

use aura_infer::{EmbeddingModel, LoadOptions, ModelFiles};

fn minilm() -> ModelFiles {
    let cache = std::env::var_os("AURA_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/aura/models")
        });
    let dir = cache.join("minilm");
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is missing in {}: run scripts/fetch-models.sh (or set AURA_MODEL_CACHE)",
        dir.display()
    );
    ModelFiles::Safetensors {
        config: dir.join("config.json"),
        tokenizer: dir.join("tokenizer.json"),
        tokenizer_config: None,
        weights: vec![dir.join("model.safetensors")],
    }
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn embeddings_are_unit_vectors_that_rank_similar_sentences_closer() {
    let model = EmbeddingModel::load(&minilm(), &LoadOptions::default()).unwrap();
    assert_eq!(model.dimension(), 384);
    let texts: Vec<String> = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "hello world",
    ]
    .map(String::from)
    .to_vec();
    let e = model.embed(&texts).unwrap();
    // The first components for "hello world" from an independent NumPy (f64)
    // implementation of the same encoder over the same weights and token ids
    // [101, 7592, 2088, 102].
    let reference = [
        -0.0344773, 0.0310232, 0.006735, 0.026109, -0.039362, -0.1603025, 0.066924, -0.0064415,
    ];
    for (got, want) in e.vectors[3].iter().zip(reference) {
        assert!(
            (got - want).abs() < 2e-6,
            "{:?} vs {reference:?}",
            &e.vectors[3][..8]
        );
    }
    for v in &e.vectors {
        assert!((cos(v, v) - 1.0).abs() < 1e-5);
    }
    assert_eq!(e.token_counts[3], 4, "[CLS] hello world [SEP]");
    assert!(cos(&e.vectors[0], &e.vectors[1]) > cos(&e.vectors[0], &e.vectors[2]) + 0.2);
}

#[test]
fn embeddings_are_identical_at_any_thread_count() {
    let texts = vec![
        "Deterministic inference, bit for bit.".to_owned(),
        "many words ".repeat(300),
    ];
    let one = EmbeddingModel::load(
        &minilm(),
        &LoadOptions {
            threads: Some(1),
            ..LoadOptions::default()
        },
    )
    .unwrap()
    .embed(&texts)
    .unwrap();
    // Long input is truncated to the model card's 256 word pieces.
    assert_eq!(one.token_counts[1], 256);
    for n in [2, 4] {
        let other = EmbeddingModel::load(
            &minilm(),
            &LoadOptions {
                threads: Some(n),
                ..LoadOptions::default()
            },
        )
        .unwrap()
        .embed(&texts)
        .unwrap();
        assert_eq!(other, one, "{n} threads");
    }
}

#[test]
fn a_decoder_or_a_gguf_is_not_an_embedding_model() {
    let ModelFiles::Safetensors {
        tokenizer, weights, ..
    } = minilm()
    else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let files = ModelFiles::Safetensors {
        config: dir.path().join("config.json"),
        tokenizer,
        tokenizer_config: None,
        weights,
    };
    assert!(
        EmbeddingModel::load(&files, &LoadOptions::default())
            .unwrap_err()
            .to_string()
            .contains("bert")
    );
    let gguf = ModelFiles::Gguf(dir.path().join("x.gguf"));
    assert!(EmbeddingModel::load(&gguf, &LoadOptions::default()).is_err());
}
