//! Shared helpers for aura-model's tests: small real model files written by the tests,
//! a data directory, keys, and a ledger.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aura_core::door::{ManualClock, SeededEntropy};
use aura_core::keystore::Signer;
use aura_core::{NodeId, Timestamp};
use aura_model::gguf::write::{Meta, TensorSpec, gguf};
use aura_model::import::{self, Context, Options};
use aura_model::safetensors::write::safetensors;
use aura_model::{Installed, Registry, SignedLicense, no_progress};
use aura_store::SqliteStore;
use aura_store::sqlite::Options as StoreOptions;

pub(crate) const T0: u64 = 1_800_000_000;

pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) registry: Registry,
    pub(crate) node_key: Arc<Signer>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) entropy: SeededEntropy,
}

impl World {
    pub(crate) fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(&dir.path().join("home"));
        World {
            dir,
            registry,
            node_key: Arc::new(key("node", 1)),
            clock: Arc::new(ManualClock::new(Timestamp::from_secs(T0))),
            entropy: SeededEntropy::new(42),
        }
    }

    pub(crate) fn node(&self) -> NodeId {
        self.node_key.public_key().node_id()
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub(crate) fn src(&self) -> PathBuf {
        let p = self.dir.path().join("src");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub(crate) fn ctx<'a>(&'a self, signer: &'a Signer) -> Context<'a> {
        Context {
            signer,
            clock: self.clock.as_ref(),
            entropy: &self.entropy,
        }
    }

    /// Imports `source` signed by `signer`, with the publisher's own license for this node.
    pub(crate) fn import_as(
        &self,
        source: &Path,
        options: &Options,
        signer: &Signer,
    ) -> Result<(Installed, SignedLicense), aura_model::ImportError> {
        let plan = import::plan(source, options)?;
        self.registry
            .import(&plan, options, &self.ctx(signer), self.node(), &no_progress)
    }

    /// Imports `source` signed by the node's own key.
    pub(crate) fn import(&self, source: &Path, options: &Options) -> Installed {
        self.import_as(source, options, &self.node_key.clone())
            .unwrap()
            .0
    }

    pub(crate) fn store(&self) -> SqliteStore {
        SqliteStore::open(
            self.dir.path().join("ledger.db"),
            self.node_key.clone(),
            self.clock.clone(),
            StoreOptions::default(),
        )
        .unwrap()
    }
}

pub(crate) fn key(name: &str, seed: u64) -> Signer {
    Signer::ephemeral(name, &SeededEntropy::new(seed)).unwrap()
}

/// A small Llama-shaped GGUF file: real header, real tensor layout, arbitrary weights.
pub(crate) fn tiny_gguf(seed: u8) -> Vec<u8> {
    gguf(
        &[
            ("general.architecture", Meta::Str("llama".into())),
            ("general.name", Meta::Str("tiny".into())),
            ("general.license", Meta::Str("apache-2.0".into())),
            ("general.file_type", Meta::U32(3)),
        ],
        &[
            TensorSpec {
                name: "token_embd.weight".into(),
                dims: vec![64, 16],
                ggml_type: 3,
            },
            TensorSpec {
                name: "blk.0.attn_norm.weight".into(),
                dims: vec![64],
                ggml_type: 0,
            },
            TensorSpec {
                name: "output_norm.weight".into(),
                dims: vec![64],
                ggml_type: 0,
            },
        ],
        seed,
    )
}

pub(crate) fn write_gguf(dir: &Path, name: &str, seed: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, tiny_gguf(seed)).unwrap();
    p
}

/// A dense safetensors model directory with two shards, an index, config and tokenizer.
pub(crate) fn dense_dir(root: &Path) -> PathBuf {
    let dir = root.join("dense-model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type":"llama","hidden_size":8}"#,
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), r#"{"model":{"type":"BPE"}}"#).unwrap();
    std::fs::write(dir.join("README.md"), "not part of the package").unwrap();
    std::fs::write(
        dir.join("model-00001-of-00002.safetensors"),
        safetensors(
            &[
                ("model.embed_tokens.weight", "BF16", vec![16, 8]),
                ("model.layers.0.self_attn.q_proj.weight", "BF16", vec![8, 8]),
            ],
            1,
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("model-00002-of-00002.safetensors"),
        safetensors(&[("model.norm.weight", "F32", vec![8])], 2),
    )
    .unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"metadata":{},"weight_map":{
            "model.embed_tokens.weight":"model-00001-of-00002.safetensors",
            "model.layers.0.self_attn.q_proj.weight":"model-00001-of-00002.safetensors",
            "model.norm.weight":"model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    dir
}

/// Mixtral-style expert tensors for `experts` over two layers.
pub(crate) fn expert_tensors(experts: &[u32]) -> Vec<(String, &'static str, Vec<u64>)> {
    let mut out = Vec::new();
    for layer in 0..2 {
        for e in experts {
            for w in ["w1", "w2", "w3"] {
                out.push((
                    format!("model.layers.{layer}.block_sparse_moe.experts.{e}.{w}.weight"),
                    "BF16",
                    vec![4, 4],
                ));
            }
        }
    }
    out
}

fn write_st(path: &Path, tensors: &[(String, &'static str, Vec<u64>)], seed: u8) {
    let specs: Vec<(&str, &str, Vec<u64>)> = tensors
        .iter()
        .map(|(n, d, s)| (n.as_str(), *d, s.clone()))
        .collect();
    std::fs::write(path, safetensors(&specs, seed)).unwrap();
}

/// A Mixtral-style model directory with 4 experts: the shared weights and experts
/// `local` in the model's own shards.
pub(crate) fn moe_dir(root: &Path, name: &str, local: &[u32]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type":"mixtral","num_local_experts":4,"num_experts_per_tok":2}"#,
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), r#"{"model":{"type":"BPE"}}"#).unwrap();
    let mut shared: Vec<(String, &'static str, Vec<u64>)> = vec![
        ("model.embed_tokens.weight".into(), "BF16", vec![16, 4]),
        (
            "model.layers.0.block_sparse_moe.gate.weight".into(),
            "BF16",
            vec![4, 4],
        ),
        (
            "model.layers.1.block_sparse_moe.gate.weight".into(),
            "BF16",
            vec![4, 4],
        ),
    ];
    if local.is_empty() {
        write_st(&dir.join("model.safetensors"), &shared, 3);
    } else {
        write_st(&dir.join("model-00001-of-00002.safetensors"), &shared, 3);
        write_st(
            &dir.join("model-00002-of-00002.safetensors"),
            &expert_tensors(local),
            4,
        );
        shared.clear();
    }
    dir
}

/// A directory holding only the weights of `experts`, for an expert pack.
pub(crate) fn pack_dir(root: &Path, name: &str, experts: &[u32], seed: u8) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write_st(
        &dir.join("experts.safetensors"),
        &expert_tensors(experts),
        seed,
    );
    dir
}

/// Makes a read-only package file writable so a test can damage it.
pub(crate) fn writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
