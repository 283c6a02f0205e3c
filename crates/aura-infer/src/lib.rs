//! `aura-infer`: Aura's inference engine. It loads model files that the package layer
//! (`aura-model`) has already verified and runs them deterministically and fast.
//!
//! It knows nothing of packages, licenses, ledgers or HTTP: it takes paths and requests
//! and returns tokens, text, counts and a [`RuntimeFingerprint`] for the receipt.
//!
//! # Models
//!
//! Llama-family decoders (Llama, Mistral, Qwen2, SmolLM2) and Mixtral-style mixtures of
//! experts, from GGUF (Q4_0, Q4_1, Q8_0 run natively; f32, f16, bf16 and other quantized
//! types run as f32) or from safetensors shards (f32, f16, bf16, run as f32, or as Q8_0
//! with [`LoadOptions::dtype`]). candle reads the files (its GGUF reader and safetensors
//! loader, with their bounds checks); the forward pass runs on this crate's kernels
//! ([`kernels`]: scalar, AVX2, AVX-512 VNNI, chosen at run time).
//!
//! # Determinism
//!
//! The same files, input, sampling parameters, seed and [`RuntimeFingerprint`] give the
//! same token ids bit for bit, at any thread count, streamed or not, alone or beside
//! concurrent requests:
//!
//! - work is split across threads only by output rows (matrix rows, attention heads);
//!   no reduction is ever split, and every reduction has one fixed order, identical in
//!   every kernel variant (so even the variant does not change results; it is still in the
//!   fingerprint);
//! - each request has its own KV cache (fresh, or its own copy of a cached prefix) and
//!   runs its own matrix products: requests are never batched together, and a token's
//!   values do not depend on how the prompt was chunked;
//! - sampling is sequential with ties broken by token id, drawing from a ChaCha20 stream
//!   seeded by the request.
//!
//! # The prompt cache
//!
//! Because a position's state depends only on the token ids up to it, each model keeps
//! the KV state of recent sequences ([`LoadOptions::prompt_cache_bytes`], 256 MiB by
//! default, 0 to disable): a request whose prompt begins with an earlier sequence's tokens
//! (a conversation re-sending its history every turn) prefills only the rest, with
//! results identical bit for bit to a run without the cache. [`Generation::cached_tokens`]
//! says how many prompt tokens were reused; [`Model::prompt_cache_stats`] counts hits,
//! misses and tokens reused.
//!
//! # Use
//!
//! ```no_run
//! use aura_infer::{GenerateRequest, LoadOptions, Model, ModelFiles, Prompt, Sampling};
//! # fn main() -> Result<(), aura_infer::Error> {
//! let model = Model::load(&ModelFiles::Gguf("SmolLM2-135M-Instruct.Q4_1.gguf".into()), &LoadOptions::default())?;
//! let prompt = model.render_chat(&[aura_infer::ChatMessage::new("user", "Hi!")], &[], true)?;
//! let req = GenerateRequest { prompt: Prompt::Text(prompt), max_tokens: 32, ..GenerateRequest::default() };
//! let out = model.generate(&req, &mut |ev| { print!("{}", ev.text); std::ops::ControlFlow::Continue(()) })?;
//! println!("\n{} tokens, finish {:?}, fingerprint {}", out.completion_tokens, out.finish, model.fingerprint());
//! # Ok(()) }
//! ```

mod chat;
mod constraint;
mod embed;
mod error;
mod generate;
pub mod kernels;
mod load;
mod matrix;
mod prompt_cache;
pub mod reasoner;
mod sampling;
mod tokenizer;
mod transformer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use chat::{ChatMessage, ToolCall, ToolCallFunction, ToolDef};
pub use embed::{DEFAULT_MAX_TOKENS as EMBEDDING_MAX_TOKENS, EmbeddingModel, Embeddings};
pub use error::{Error, Result};
pub use generate::{
    Cancel, Constraint, Finish, GenerateRequest, Generation, Prompt, TokenEvent, TokenLogprobs,
    TopLogprob,
};
pub use kernels::KernelVariant;
pub use load::interleave_rotary_rows;
pub use matrix::{Format as WeightFormat, quantize_q8_0};
pub use prompt_cache::{DEFAULT_PROMPT_CACHE_BYTES, PromptCacheStats};
pub use sampling::Sampling;
pub use tokenizer::Tokenizer;

use matrix::Compute;

/// Files the package layer has verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelFiles {
    /// One GGUF file: weights, hyper-parameters, tokenizer and chat template.
    Gguf(PathBuf),
    /// Hugging Face layout: config.json, tokenizer.json, optionally tokenizer_config.json
    /// (chat template, special tokens), and the weight shards, possibly one per expert
    /// group. A tensor found in two shards is an error.
    Safetensors {
        /// config.json.
        config: PathBuf,
        /// tokenizer.json.
        tokenizer: PathBuf,
        /// tokenizer_config.json, if the model has one.
        tokenizer_config: Option<PathBuf>,
        /// The `.safetensors` shards.
        weights: Vec<PathBuf>,
    },
}

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU (the default and, in this version, the only device with kernels).
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal (the `cuda` feature). Not yet served by this engine's
    /// kernels: loading on it is refused with a clear error.
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

/// How to load a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Threads for this model's work (a pool of its own); None takes rayon's default
    /// (RAYON_NUM_THREADS, or the CPU count). Results do not depend on it.
    pub threads: Option<usize>,
    /// Where to run.
    pub device: Device,
    /// Convert weight matrices to this format at load time (f32 or q8_0); None keeps the
    /// file's format (safetensors run as f32).
    pub dtype: Option<WeightFormat>,
    /// Force a kernel variant (it must be supported by the CPU); None picks the best.
    pub kernel: Option<KernelVariant>,
    /// The most bytes of KV state the model's prompt cache keeps
    /// ([`DEFAULT_PROMPT_CACHE_BYTES`] by default); 0 disables the cache. Results do not
    /// depend on it, only the time to the first token of a prompt that shares a prefix
    /// with an earlier one.
    pub prompt_cache_bytes: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: None,
            device: Device::default(),
            dtype: None,
            kernel: None,
            prompt_cache_bytes: DEFAULT_PROMPT_CACHE_BYTES,
        }
    }
}

/// What a loaded model is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `llama`, `mistral`, `qwen2` or `mixtral`.
    pub architecture: String,
    /// The longest sequence (prompt plus completion) the model accepts.
    pub context_length: usize,
    /// Number of token ids.
    pub vocab_size: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Hidden size.
    pub embedding_length: usize,
    /// Attention heads and key/value heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Experts per layer (0 for dense models).
    pub experts: usize,
    /// Experts each token is routed to.
    pub experts_per_token: usize,
    /// Whether the model carries a chat template.
    pub has_chat_template: bool,
    /// Beginning-of-sequence id.
    pub bos_id: Option<u32>,
    /// Ids that end generation.
    pub eos_ids: Vec<u32>,
    /// Bytes of weights in memory.
    pub weight_bytes: usize,
}

/// Everything about the runtime that could change numerics. Part of every receipt: two
/// runs with equal fingerprints (and equal inputs) give equal tokens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuntimeFingerprint {
    /// Always `aura-infer`.
    pub engine: String,
    /// This crate's version.
    pub version: String,
    /// `cpu`.
    pub backend: String,
    /// The device, e.g. `cpu`.
    pub device: String,
    /// The weights' format as stored and as computed, e.g. `q4_1` or `bf16->f32`.
    pub dtype: String,
    /// The kernel variant (`scalar`, `avx2`, `avx512`).
    pub kernel: String,
}

impl std::fmt::Display for RuntimeFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} {} {} {} {}",
            self.engine, self.version, self.backend, self.device, self.dtype, self.kernel
        )
    }
}

/// One loaded model, shared by concurrent requests (`Send + Sync`; every request keeps
/// its own state).
pub struct Model {
    transformer: transformer::Transformer,
    tokenizer: Tokenizer,
    template: Option<chat::ChatTemplate>,
    compute: Compute,
    info: ModelInfo,
    fingerprint: RuntimeFingerprint,
    /// The vocabulary as constrained decoding walks it, built on first use.
    constraint_vocab: std::sync::OnceLock<std::sync::Arc<constraint::Vocab>>,
    /// Recent sequences' KV state, shared by this model's requests.
    prompt_cache: prompt_cache::PromptCache,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("info", &self.info)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Model {
    /// Loads a model from verified files.
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Model> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(_) = opts.device {
            return Err(Error::Options(
                "the cuda device has no kernels in this engine yet; use the cpu".into(),
            ));
        }
        let variant = match opts.kernel {
            Some(v) if !v.is_supported() => {
                return Err(Error::Options(format!(
                    "this cpu cannot run the {} kernels",
                    v.name()
                )));
            }
            Some(v) => v,
            None => KernelVariant::detect(),
        };
        if let Some(f) = opts.dtype
            && !matches!(f, WeightFormat::F32 | WeightFormat::Q8_0)
        {
            return Err(Error::Options(format!(
                "weights can be converted to f32 or q8_0 at load, not {}",
                f.name()
            )));
        }
        // The model always runs on a pool of its own, so a request's forward pass runs on
        // a worker thread and its parallel loops do not bounce between the caller and the
        // pool. Without a thread count, it takes rayon's default (RAYON_NUM_THREADS or
        // the CPU count).
        let threads = match opts.threads {
            Some(0) => return Err(Error::Options("threads must be at least 1".into())),
            Some(n) => n,
            None => rayon::current_num_threads(),
        };
        let pool = Some(std::sync::Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("aura-infer-{i}"))
                .build()
                .map_err(|e| Error::Options(format!("cannot start {threads} threads: {e}")))?,
        ));
        let loaded = match files {
            ModelFiles::Gguf(path) => load::load_gguf(path, opts.dtype)?,
            ModelFiles::Safetensors {
                config,
                tokenizer,
                tokenizer_config,
                weights,
            } => {
                if weights.is_empty() {
                    return Err(Error::model("no weight shards given"));
                }
                load::load_safetensors(
                    config,
                    tokenizer,
                    tokenizer_config.as_deref(),
                    weights,
                    opts.dtype,
                )?
            }
        };
        let c = &loaded.transformer.config;
        if loaded.tokenizer.vocab_size() > c.vocab {
            return Err(Error::model(format!(
                "the tokenizer has {} ids but the model only {}",
                loaded.tokenizer.vocab_size(),
                c.vocab
            )));
        }
        let info = ModelInfo {
            architecture: c.architecture.clone(),
            context_length: c.context_length,
            vocab_size: c.vocab,
            layers: c.n_layer,
            embedding_length: c.dim,
            heads: c.n_head,
            kv_heads: c.n_kv_head,
            experts: c.n_expert,
            experts_per_token: c.n_expert_used,
            has_chat_template: loaded.template.is_some(),
            bos_id: loaded.tokenizer.bos_id(),
            eos_ids: loaded.tokenizer.eos_ids().to_vec(),
            weight_bytes: loaded.transformer.size_bytes(),
        };
        let computed = computed_format(&loaded.transformer);
        let dtype = if computed == loaded.source_dtype {
            computed
        } else {
            format!("{}->{computed}", loaded.source_dtype)
        };
        let fingerprint = RuntimeFingerprint {
            engine: "aura-infer".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            backend: "cpu".into(),
            device: "cpu".into(),
            dtype,
            kernel: variant.name().into(),
        };
        Ok(Model {
            transformer: loaded.transformer,
            tokenizer: loaded.tokenizer,
            template: loaded.template,
            compute: Compute { variant, pool },
            info,
            fingerprint,
            constraint_vocab: std::sync::OnceLock::new(),
            prompt_cache: prompt_cache::PromptCache::new(opts.prompt_cache_bytes),
        })
    }

    /// Each token's text on its own (None for special tokens and for tokens that are not
    /// whole UTF-8 text by themselves), sorted for constrained decoding; built once, then
    /// shared.
    pub(crate) fn constraint_vocab(&self) -> std::sync::Arc<constraint::Vocab> {
        self.constraint_vocab
            .get_or_init(|| {
                let special = self.tokenizer.special_ids();
                std::sync::Arc::new(constraint::Vocab::new(
                    (0..self.info.vocab_size as u32)
                        .map(|id| {
                            if special.contains(&id) {
                                return None;
                            }
                            self.tokenizer
                                .decode(&[id])
                                .ok()
                                .filter(|t| !t.contains('\u{FFFD}'))
                        })
                        .collect(),
                ))
            })
            .clone()
    }

    /// What the model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The runtime fingerprint for receipts.
    pub fn fingerprint(&self) -> RuntimeFingerprint {
        self.fingerprint.clone()
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Threads this model's work runs on.
    pub fn threads(&self) -> usize {
        self.compute.threads()
    }

    /// Renders a conversation with the model's own chat template.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolDef],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.template.as_ref().ok_or_else(|| {
            Error::Template(
                "the model carries no chat template; send a plain completion prompt".into(),
            )
        })?;
        template.render(messages, tools, add_generation_prompt)
    }

    /// Whether the model's chat template renders tool descriptions (it mentions `tools`).
    /// When it does not, [`Model::render_chat`] ignores the tools it is given.
    pub fn chat_template_handles_tools(&self) -> bool {
        self.template
            .as_ref()
            .is_some_and(chat::ChatTemplate::handles_tools)
    }

    /// A fresh sequence on this model: feed it tokens, read the next token's logits.
    /// [`Model::generate`] is built on it; tests and benchmarks use it directly.
    pub fn session(&self) -> Session<'_> {
        Session {
            model: self,
            cache: self.transformer.new_cache(),
            tokens: Vec::new(),
        }
    }

    /// A sequence for `prompt` that starts from the longest prefix of it found in the
    /// prompt cache (at most all but its last token), or fresh. [`Session::position`]
    /// says how many tokens it starts with; feed it `&prompt[session.position()..]`. The
    /// logits and state that follow are bit-identical to a fresh session's.
    pub fn session_for(&self, prompt: &[u32]) -> Session<'_> {
        match self.prompt_cache.lookup(prompt) {
            Some(cache) => Session {
                model: self,
                tokens: prompt[..cache.len].to_vec(),
                cache,
            },
            None => self.session(),
        }
    }

    /// Keeps a finished sequence's state in the prompt cache, for later prompts that
    /// begin with its tokens (a no-op when the cache is disabled or the state is larger
    /// than its budget).
    pub fn remember(&self, session: Session<'_>) {
        debug_assert!(std::ptr::eq(session.model, self));
        if std::ptr::eq(session.model, self) {
            self.prompt_cache.insert(session.tokens, session.cache);
        }
    }

    /// What the prompt cache has done since the model was loaded.
    pub fn prompt_cache_stats(&self) -> PromptCacheStats {
        self.prompt_cache.stats()
    }

    /// Empties the prompt cache (the counters stay).
    pub fn clear_prompt_cache(&self) {
        self.prompt_cache.clear();
    }
}

fn computed_format(t: &transformer::Transformer) -> String {
    // The layers' q projection stands for the model's compute format (the embedding may
    // differ, as in SmolLM2's Q4_1 file whose embedding is Q8_0).
    t.layers
        .first()
        .map_or(t.embed.format, |l| l.wq.format)
        .name()
        .to_owned()
}

/// One sequence in progress: its token ids, KV cache and expert counts.
#[derive(Debug)]
pub struct Session<'m> {
    model: &'m Model,
    cache: transformer::KvCache,
    /// The ids fed so far (`cache.len` of them), the prompt cache's key.
    tokens: Vec<u32>,
}

impl Session<'_> {
    /// Runs `tokens` after those already fed and returns the logits for the next token.
    /// Chunking does not change any value: feeding `[a, b]` or `[a]` then `[b]` gives
    /// identical logits.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let m = self.model;
        let logits = m
            .compute
            .install(|| m.transformer.forward(&m.compute, tokens, &mut self.cache))?;
        // The forward pass checks everything before it extends the cache, so on error
        // neither the cache nor the ids changed.
        self.tokens.extend_from_slice(tokens);
        Ok(logits)
    }

    /// The token ids fed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// SHA-256 over the sequence's state (every layer's keys and values, bit for bit, and
    /// the expert routing): equal digests mean equal states, whatever way they were built.
    pub fn state_digest(&self) -> [u8; 32] {
        self.cache.digest()
    }

    /// Tokens fed so far.
    pub fn position(&self) -> usize {
        self.cache.len
    }

    /// Tokens each expert served so far (summed over layers); empty for dense models.
    pub fn expert_tokens(&self) -> &[u64] {
        &self.cache.expert_tokens
    }
}
