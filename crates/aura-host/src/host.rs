//! [`ModelHost`]: the model packages installed in a data directory, each verified and
//! licensed before it is loaded, loaded once and shared; the metered requests on them
//! (chat, completions, embeddings), each authorised against its license first and
//! leaving a signed receipt after; and the cancel flags that stop a generation when its
//! caller goes away or the node stops.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aura_core::door::{Clock, OsEntropy, SystemClock};
use aura_core::hash::Hash;
use aura_infer::reasoner::{ChatOptions, ChatOutcome, LocalReasoner};
use aura_infer::{
    Cancel, EmbeddingModel, Embeddings, GenerateRequest, Generation, LoadOptions, Model, Prompt,
    TokenEvent,
};
use aura_model::{Authorization, Outcome, ReceiptId, Uses, Verified, io_hash};
use aura_reasoner::{DeltaSink, Request};

use crate::error::{ChatError, ModelError};
use crate::metering::Metering;

/// The package the node runs when `aura.toml` names no reasoner and it is installed
/// (`aura model pull smollm2`).
pub const DEFAULT_MODEL: &str = "smollm2";

/// How long a package's verification is trusted while its files look unchanged; after
/// that its files are hashed again.
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// Architectures served as text encoders (`/v1/embeddings`) rather than generators.
const ENCODER_ARCHITECTURES: &[&str] = &["bert"];

/// Whether a package of this architecture is served as a text encoder.
fn is_encoder(architecture: &str) -> bool {
    ENCODER_ARCHITECTURES.contains(&architecture)
}

/// The loaded-model key of `name` with the LoRA `lora` of its package merged in.
pub(crate) fn variant_key(name: &str, lora: Option<&str>) -> String {
    match lora {
        // `#` is in no package or file name, so keys never collide.
        Some(l) => format!("{name}#{l}"),
        None => name.to_owned(),
    }
}

/// What a license must allow for a package of this architecture.
fn uses_of(architecture: &str) -> Uses {
    if is_encoder(architecture) {
        Uses::EMBEDDINGS
    } else {
        Uses::INFERENCE
    }
}

/// Whether a package by this name is installed in `home` (verification happens on
/// open).
pub fn is_installed(home: &Path, name: &str) -> bool {
    aura_model::Registry::new(home)
        .packages()
        .resolve(name)
        .is_ok()
}

/// Cancels a request's generation when dropped: when the request's future is dropped
/// (its caller went away), or when it ends.
pub(crate) struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What a loaded package runs as.
#[derive(Debug)]
pub enum Engine {
    /// A text generator (chat and completions).
    Generator(LocalReasoner),
    /// A text encoder (embeddings).
    Encoder(Arc<EmbeddingModel>),
    /// An image model (the Images API), on the engine its architecture picks.
    Image(crate::image_engine::ImageEngine),
}

/// One loaded package.
#[derive(Debug)]
pub struct Served {
    name: String,
    /// The LoRA of the package merged into this copy, by name.
    pub(crate) lora: Option<String>,
    pub(crate) verified: Verified,
    pub(crate) engine: Engine,
    pub(crate) runtime: aura_model::Runtime,
}

impl Served {
    /// The package's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signed package digest receipts name.
    pub fn digest(&self) -> Hash {
        self.verified.digest()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The generator, or why this package is not one.
    pub fn generator(&self) -> Result<&LocalReasoner, ModelError> {
        match &self.engine {
            Engine::Generator(g) => Ok(g),
            Engine::Image(_) => Err(crate::image_engine::not_text(&self.name)),
            Engine::Encoder(_) => Err(ModelError::new(
                400,
                "model_not_generative",
                format!(
                    "model `{}` is a text encoder; use it with /v1/embeddings",
                    self.name
                ),
            )),
        }
    }

    /// The encoder, or why this package is not one.
    pub fn encoder(&self) -> Result<&Arc<EmbeddingModel>, ModelError> {
        match &self.engine {
            Engine::Encoder(e) => Ok(e),
            Engine::Image(_) => Err(crate::image_engine::not_text(&self.name)),
            Engine::Generator(_) => Err(ModelError::new(
                400,
                "model_not_encoder",
                format!(
                    "model `{}` generates text; /v1/embeddings needs a text encoder such as all-MiniLM-L6-v2",
                    self.name
                ),
            )),
        }
    }

    /// The runtime fingerprint receipts carry.
    pub fn runtime(&self) -> &aura_model::Runtime {
        &self.runtime
    }
}

/// One line of [`ModelHost::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCard {
    pub name: String,
    pub digest: Hash,
    pub architecture: String,
    /// Whether it generates text (else it encodes text, or makes images).
    pub generator: bool,
    /// Whether it makes images (the Images API).
    pub image: bool,
    pub created_at: aura_core::Timestamp,
    /// The publisher's public key, hex.
    pub publisher: String,
}

/// A request authorised against a license: what [`ModelHost::record`] settles.
#[derive(Debug)]
pub struct Admitted {
    served: Arc<Served>,
    auth: Authorization,
    /// The request's `model.request` span, opened when it was admitted (a child of the
    /// caller's span: a kernel step or an HTTP request) and closed with its receipt.
    span: tracing::Span,
    started: std::time::Instant,
}

impl Admitted {
    pub fn served(&self) -> &Arc<Served> {
        &self.served
    }
}

/// What a completed request measured, for its receipt.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// The request as the engine read it (hashed into the receipt).
    pub input: Vec<u8>,
    /// The answer as the caller received it (hashed into the receipt).
    pub output: Vec<u8>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub expert_tokens: Vec<u64>,
}

/// The models of one data directory, loaded on first use and shared.
pub struct ModelHost {
    registry: aura_model::Registry,
    metering: Metering,
    pub(crate) threads: Option<usize>,
    /// Each text model's prompt-cache budget in bytes (0: none).
    prompt_cache_bytes: usize,
    loaded: Mutex<BTreeMap<String, Arc<Served>>>,
    /// Held while a model loads, so two first requests load it once.
    loading: Mutex<()>,
    /// Above every request's own flag: set when the node stops.
    pub(crate) stopping: Cancel,
    /// Packages whose files were hashed and matched, remembered while their files stay
    /// as they were (the listing and loading share it).
    verified: aura_model::VerifyCache,
}

impl std::fmt::Debug for ModelHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded: Vec<String> = self
            .loaded
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("ModelHost")
            .field("root", &self.registry.packages().root())
            .field("loaded", &loaded)
            .finish_non_exhaustive()
    }
}

impl ModelHost {
    /// Serves the packages installed in `home`, metered by `metering`; models run on
    /// `threads` threads (all cores when `None`; results do not depend on it).
    pub fn new(home: &Path, metering: Metering, threads: Option<usize>) -> Self {
        ModelHost {
            registry: aura_model::Registry::new(home),
            metering,
            threads,
            prompt_cache_bytes: aura_infer::DEFAULT_PROMPT_CACHE_BYTES,
            loaded: Mutex::new(BTreeMap::new()),
            loading: Mutex::new(()),
            stopping: Cancel::new(),
            verified: aura_model::VerifyCache::new(VERIFIED_FOR, Arc::new(SystemClock)),
        }
    }

    /// Gives each text model loaded from now on a prompt cache of `bytes`
    /// ([`aura_infer::DEFAULT_PROMPT_CACHE_BYTES`] unless set; 0 disables it): the KV state
    /// of recent prompts, so that a conversation re-sending its history prefills only what
    /// is new. Results and receipts are the same with and without it.
    pub fn with_prompt_cache(mut self, bytes: usize) -> Self {
        self.prompt_cache_bytes = bytes;
        self
    }

    /// Stops every generation in flight at its next token (their requests fail with 503
    /// `stopping` and leave no receipt) and refuses new ones: for a node that is stopping,
    /// so that no generation holds it up.
    pub fn shutdown(&self) {
        self.stopping.cancel();
    }

    /// A flag for one request's generation, cancelled when the returned guard is dropped
    /// or the host stops; refused once the host is stopping.
    pub(crate) fn request_cancel(&self) -> Result<(Cancel, CancelOnDrop), ModelError> {
        if self.stopping.is_cancelled() {
            return Err(ModelError::stopping());
        }
        let cancel = self.stopping.child();
        Ok((cancel.clone(), CancelOnDrop(cancel)))
    }

    /// The most tokens a context holds: what a generation can produce at most, whatever
    /// its limit says.
    fn context_of(generator: &LocalReasoner) -> u64 {
        generator.model().info().context_length as u64
    }

    /// [`ModelHost::list`] on a blocking thread.
    pub async fn list_async(self: &Arc<Self>) -> Result<Vec<ModelCard>, ModelError> {
        let host = self.clone();
        tokio::task::spawn_blocking(move || host.list())
            .await
            .map_err(|e| ModelError::internal(format!("the listing thread failed: {e}")))?
    }

    /// The installed packages that are models and can be served, by name. A package
    /// whose manifest or any file does not match (its files are hashed the first time and
    /// again whenever they change) is left out: `aura model list` and `aura model verify`
    /// show it with the reason. Hashes files it has not seen: call it from a blocking
    /// thread in async code.
    pub fn list(&self) -> Result<Vec<ModelCard>, ModelError> {
        let listed = self.registry.packages().list()?;
        Ok(listed
            .into_iter()
            .filter_map(|l| l.package.ok())
            .filter(|p| p.manifest().kind == aura_model::manifest::PackageKind::Model)
            .filter(|p| self.verified.verify(p, &aura_model::no_progress).is_ok())
            .map(|p| {
                let m = p.manifest();
                ModelCard {
                    name: p.name.clone(),
                    digest: p.digest(),
                    generator: !is_encoder(&m.architecture)
                        && !crate::image_engine::is_image(&m.architecture),
                    image: crate::image_engine::is_image(&m.architecture),
                    architecture: m.architecture.clone(),
                    created_at: m.created_at,
                    publisher: m.publisher.to_string(),
                }
            })
            .collect())
    }

    /// The model named `name`, loaded (and verified and license-checked) on first use,
    /// reloaded if its installed package changed since. Blocks while it loads: call it
    /// from a blocking thread in async code ([`ModelHost::open`]).
    pub fn open_blocking(&self, name: &str) -> Result<Arc<Served>, ModelError> {
        self.open_with(name, self.threads)
    }

    /// [`ModelHost::open_blocking`], loading on `threads` threads if this call loads the
    /// model (a reasoner's configured `threads`); a model already loaded is shared as it is,
    /// since results do not depend on the thread count.
    pub(crate) fn open_with(
        &self,
        name: &str,
        threads: Option<usize>,
    ) -> Result<Arc<Served>, ModelError> {
        self.open_variant(name, None, threads)
    }

    /// [`ModelHost::open_with`] for the copy of `name` with its package's LoRA `lora`
    /// merged in (image models), each copy loaded once and kept beside the plain one.
    pub(crate) fn open_variant(
        &self,
        name: &str,
        lora: Option<&str>,
        threads: Option<usize>,
    ) -> Result<Arc<Served>, ModelError> {
        let key = variant_key(name, lora);
        if name.is_empty() || name.contains('/') {
            return Err(ModelError::new(
                404,
                "model_not_found",
                format!(
                    "model `{name}` is not an installed package; a node runs installed packages only \
                     (see `aura model list`, or import the file with `aura model import`)"
                ),
            ));
        }
        // The manifest is small and its signature cheap: read it every time, so a
        // removed or replaced package is never served from memory.
        let installed = self.registry.packages().resolve(name)?;
        let current = |host: &Self| {
            host.loaded
                .lock()
                .ok()
                .and_then(|m| m.get(&key).cloned())
                .filter(|s| s.verified.model().digest() == installed.digest())
                // Files changed on disk since they were verified: load again, which hashes
                // them again (and refuses them if they no longer match).
                .filter(|_| {
                    host.verified
                        .verify(&installed, &aura_model::no_progress)
                        .is_ok()
                })
        };
        if let Some(served) = current(self) {
            self.check_license(&served)?;
            return Ok(served);
        }
        let _loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(served) = current(self) {
            self.check_license(&served)?;
            return Ok(served);
        }
        let served = Arc::new(self.load(name, lora, threads)?);
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.insert(key, served.clone());
        }
        Ok(served)
    }

    /// [`ModelHost::open_blocking`] on a blocking thread.
    pub async fn open(self: &Arc<Self>, name: &str) -> Result<Arc<Served>, ModelError> {
        let host = self.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || host.open_blocking(&name))
            .await
            .map_err(|e| ModelError::internal(format!("the loading thread failed: {e}")))?
    }

    fn uses(served: &Served) -> Uses {
        match served.engine {
            Engine::Generator(_) | Engine::Image(_) => Uses::INFERENCE,
            Engine::Encoder(_) => Uses::EMBEDDINGS,
        }
    }

    /// Refuses now, rather than at the first request, a model this node may not run.
    fn check_license(&self, served: &Served) -> Result<(), ModelError> {
        // A zero-token reservation, released at once.
        self.authorize(&served.verified, &served.name, Self::uses(served), 0)
            .map(drop)
    }

    /// Reserves `tokens` of the allowance of a license this node holds for `verified`.
    fn authorize(
        &self,
        verified: &Verified,
        name: &str,
        uses: Uses,
        tokens: u64,
    ) -> Result<Authorization, ModelError> {
        self.metering
            .meter
            .authorize(
                verified,
                self.registry.licenses(),
                self.metering.node(),
                SystemClock.now(),
                uses,
                tokens,
            )
            .map_err(|e| ModelError::new(e.http_status(), e.code(), format!("model `{name}`: {e}")))
    }

    /// Authorises a request of at most `bound` tokens on `served` against its license.
    pub fn admit(&self, served: &Arc<Served>, bound: u64) -> Result<Admitted, ModelError> {
        let auth = self.authorize(&served.verified, &served.name, Self::uses(served), bound)?;
        let span = tracing::info_span!(
            "model.request",
            model = %served.name,
            receipt = tracing::field::Empty,
            prompt_tokens = tracing::field::Empty,
            completion_tokens = tracing::field::Empty,
            cached_tokens = tracing::field::Empty,
        );
        Ok(Admitted {
            served: served.clone(),
            auth,
            span,
            started: std::time::Instant::now(),
        })
    }

    /// Signs the completed request's receipt (under `id` when one was promised, as in a
    /// streamed response's headers), appends it to the ledger and counts it.
    pub async fn record(
        &self,
        admitted: Admitted,
        measured: Measured,
        id: Option<ReceiptId>,
    ) -> Result<ReceiptId, ModelError> {
        let outcome = Outcome {
            input_hash: io_hash(&measured.input),
            output_hash: io_hash(&measured.output),
            prompt_tokens: measured.prompt_tokens,
            completion_tokens: measured.completion_tokens,
            expert_tokens: measured.expert_tokens,
            runtime: admitted.served.runtime.clone(),
        };
        let span = admitted.span.clone();
        let (model, started) = (admitted.served.name.clone(), admitted.started);
        let (prompt, completion) = (outcome.prompt_tokens, outcome.completion_tokens);
        let id = id.unwrap_or_else(|| ReceiptId::generate(&SystemClock, &OsEntropy));
        let (signed, _) = self
            .metering
            .meter
            .record_as(
                &*self.metering.store,
                &self.metering.signer,
                id,
                admitted.auth,
                outcome,
                &SystemClock,
            )
            .await
            .map_err(|e| {
                ModelError::internal(format!("the usage receipt could not be recorded: {e}"))
            })?;
        // Counted once the receipt is in the ledger, so `/metrics` agrees with it.
        let metrics = aura_metrics::global();
        metrics.inc(&aura_metrics::MODEL_RECEIPTS, &[&model]);
        metrics.add(
            &aura_metrics::MODEL_TOKENS,
            &[&model, "prompt"],
            prompt as f64,
        );
        metrics.add(
            &aura_metrics::MODEL_TOKENS,
            &[&model, "completion"],
            completion as f64,
        );
        metrics.observe(
            &aura_metrics::MODEL_REQUEST_SECONDS,
            &[&model],
            started.elapsed().as_secs_f64(),
        );
        span.record("receipt", tracing::field::display(signed.statement.id));
        span.record("prompt_tokens", prompt);
        span.record("completion_tokens", completion);
        Ok(signed.statement.id)
    }

    /// Counts how much of a recorded generation's prompt came from the model's prompt
    /// cache (after its receipt is in the ledger, like the other model metrics). Not in
    /// the receipt: the cache changes no result, so receipts are the same with and
    /// without it.
    fn count_prompt_cache(model: &str, prompt_tokens: u64, cached_tokens: u32) {
        let cached = u64::from(cached_tokens);
        let metrics = aura_metrics::global();
        metrics.inc(
            &aura_metrics::MODEL_PROMPT_CACHE_LOOKUPS,
            &[model, if cached > 0 { "hit" } else { "miss" }],
        );
        metrics.add(
            &aura_metrics::MODEL_PROMPT_CACHE_TOKENS,
            &[model, "cached"],
            cached as f64,
        );
        metrics.add(
            &aura_metrics::MODEL_PROMPT_CACHE_TOKENS,
            &[model, "computed"],
            prompt_tokens.saturating_sub(cached) as f64,
        );
    }

    /// A fresh receipt id, to promise before the request completes.
    pub fn new_receipt_id() -> ReceiptId {
        ReceiptId::generate(&SystemClock, &OsEntropy)
    }

    fn load(
        &self,
        name: &str,
        lora: Option<&str>,
        threads: Option<usize>,
    ) -> Result<Served, ModelError> {
        let verified =
            self.registry
                .packages()
                .load(name, Some(&self.verified), &aura_model::no_progress)?;
        let architecture = &verified.model().manifest().architecture;
        let encoder = is_encoder(architecture);
        // The license first: an unlicensed model is never loaded.
        self.authorize(&verified, name, uses_of(architecture), 0)?;
        if crate::image_engine::is_image(architecture) {
            let (engine, runtime) =
                crate::image_engine::ImageEngine::load(name, &verified, lora, threads)?;
            return Ok(Served {
                name: name.to_owned(),
                lora: lora.map(str::to_owned),
                verified,
                engine: Engine::Image(engine),
                runtime,
            });
        }
        if let Some(l) = lora {
            return Err(ModelError::invalid(format!(
                "lora: `{l}` given for model `{name}`, which takes no LoRA"
            )));
        }
        let files = engine_files(verified.files())?;
        let options = LoadOptions {
            threads,
            prompt_cache_bytes: self.prompt_cache_bytes,
            ..LoadOptions::default()
        };
        let cannot = |e: aura_infer::Error| {
            ModelError::new(
                409,
                "model_not_loadable",
                format!("model `{name}` cannot be loaded: {e}"),
            )
        };
        let (engine, fingerprint) = if encoder {
            let model = EmbeddingModel::load(&files, &options).map_err(cannot)?;
            let fingerprint = model.fingerprint();
            (Engine::Encoder(Arc::new(model)), fingerprint)
        } else {
            let model = Model::load(&files, &options).map_err(cannot)?;
            let fingerprint = model.fingerprint();
            (
                Engine::Generator(LocalReasoner::new(Arc::new(model), name)),
                fingerprint,
            )
        };
        Ok(Served {
            name: name.to_owned(),
            lora: None,
            verified,
            engine,
            runtime: aura_model::Runtime {
                version: format!("{} {}", fingerprint.engine, fingerprint.version),
                backend: fingerprint.backend,
                device: fingerprint.device,
                dtype: fingerprint.dtype,
                kernel: fingerprint.kernel,
            },
        })
    }

    /// Answers a chat request on a generator, metered: authorised before, a receipt
    /// after. The receipt's input is the request as the reasoner read it and its output
    /// the answer.
    pub async fn chat(
        &self,
        served: &Arc<Served>,
        request: &Request,
        options: &ChatOptions,
        deltas: Option<&DeltaSink<'_>>,
        receipt: Option<ReceiptId>,
    ) -> Result<(ChatOutcome, ReceiptId), ChatError> {
        let generator = served.generator()?;
        let (cancel, _cancel_on_drop) = self.request_cancel()?;
        let input = aura_core::jcs::to_vec(&(request, options))
            .map_err(|e| ModelError::invalid(format!("cannot encode the request: {e}")))?;
        // An upper bound on the tokens the request counts: a prompt has no more tokens
        // than bytes, and generation stops at the limit or at the context's end.
        let limit = request
            .max_tokens
            .map_or(u64::from(generator.max_tokens()), u64::from)
            .min(Self::context_of(generator));
        let admitted = self.admit(served, (input.len() as u64).saturating_add(limit))?;
        let outcome = generator
            .chat_until(request, options, deltas, &cancel)
            .await
            .map_err(ChatError::Reasoner)?;
        if cancel.is_cancelled() {
            // Only the host stopping gets here (a dropped request never returns): the
            // answer is cut short, so it is not an answer; nothing is recorded.
            return Err(ModelError::stopping().into());
        }
        let output = aura_core::jcs::to_vec(&outcome.turn)
            .map_err(|e| ModelError::internal(format!("cannot encode the turn: {e}")))?;
        admitted
            .span
            .record("cached_tokens", u64::from(outcome.cached_tokens));
        let id = self
            .record(
                admitted,
                Measured {
                    input,
                    output,
                    prompt_tokens: outcome.turn.usage.prompt_tokens,
                    completion_tokens: outcome.turn.usage.completion_tokens,
                    expert_tokens: outcome.expert_tokens.clone(),
                },
                receipt,
            )
            .await?;
        Self::count_prompt_cache(
            served.name(),
            outcome.turn.usage.prompt_tokens,
            outcome.cached_tokens,
        );
        Ok((outcome, id))
    }

    /// Continues a prompt on a generator, metered, sending each step to `events` as it
    /// comes; a closed `events` channel (the caller went away) cancels the generation.
    pub async fn complete(
        &self,
        served: &Arc<Served>,
        request: GenerateRequest,
        events: Option<tokio::sync::mpsc::UnboundedSender<TokenEvent>>,
        receipt: Option<ReceiptId>,
    ) -> Result<(Generation, ReceiptId), ModelError> {
        let generator = served.generator()?;
        let model = generator.model().clone();
        let (cancel, _cancel_on_drop) = self.request_cancel()?;
        let input = aura_core::jcs::to_vec(&request)
            .map_err(|e| ModelError::invalid(format!("cannot encode the request: {e}")))?;
        let prompt_bound = match &request.prompt {
            Prompt::Text(t) => t.len() as u64,
            Prompt::Tokens(t) => t.len() as u64,
        };
        let admitted = self.admit(
            served,
            prompt_bound
                .saturating_add(u64::from(request.max_tokens).min(Self::context_of(generator))),
        )?;
        let stop = cancel.clone();
        let generation = tokio::task::spawn_blocking(move || {
            model.generate_until(
                &request,
                &mut |event| match &events {
                    Some(tx) if tx.send(event.clone()).is_err() => ControlFlow::Break(()),
                    _ => ControlFlow::Continue(()),
                },
                &stop,
            )
        })
        .await
        .map_err(|e| ModelError::internal(format!("the generating thread failed: {e}")))?
        .map_err(|e| ModelError::invalid(e.to_string()))?;
        if generation.finish == aura_infer::Finish::Cancelled && self.stopping.is_cancelled() {
            return Err(ModelError::stopping());
        }
        if generation.finish == aura_infer::Finish::Cancelled {
            // Nobody received the answer; the reservation is released unrecorded.
            return Err(ModelError::new(499, "cancelled", "the caller went away"));
        }
        let output = aura_core::jcs::to_vec(&(&generation.tokens, &generation.text))
            .map_err(|e| ModelError::internal(format!("cannot encode the answer: {e}")))?;
        admitted
            .span
            .record("cached_tokens", u64::from(generation.cached_tokens));
        let id = self
            .record(
                admitted,
                Measured {
                    input,
                    output,
                    prompt_tokens: u64::from(generation.prompt_tokens),
                    completion_tokens: u64::from(generation.completion_tokens),
                    expert_tokens: generation.expert_tokens.clone(),
                },
                receipt,
            )
            .await?;
        Self::count_prompt_cache(
            served.name(),
            u64::from(generation.prompt_tokens),
            generation.cached_tokens,
        );
        Ok((generation, id))
    }

    /// Embeds `texts` on an encoder, metered.
    pub async fn embed(
        &self,
        served: &Arc<Served>,
        texts: Vec<String>,
    ) -> Result<(Embeddings, ReceiptId), ModelError> {
        let encoder = served.encoder()?.clone();
        if self.stopping.is_cancelled() {
            return Err(ModelError::stopping());
        }
        let input = aura_core::jcs::to_vec(&texts)
            .map_err(|e| ModelError::invalid(format!("cannot encode the input: {e}")))?;
        let bound = texts.iter().map(|t| t.len() as u64 + 2).sum::<u64>();
        let admitted = self.admit(served, bound)?;
        let embeddings = tokio::task::spawn_blocking(move || encoder.embed(&texts))
            .await
            .map_err(|e| ModelError::internal(format!("the embedding thread failed: {e}")))?
            .map_err(|e| ModelError::invalid(e.to_string()))?;
        let mut output =
            Vec::with_capacity(embeddings.vectors.iter().map(Vec::len).sum::<usize>() * 4);
        for v in &embeddings.vectors {
            for x in v {
                output.extend_from_slice(&x.to_le_bytes());
            }
        }
        let id = self
            .record(
                admitted,
                Measured {
                    input,
                    output,
                    prompt_tokens: embeddings.token_counts.iter().map(|&n| u64::from(n)).sum(),
                    completion_tokens: 0,
                    expert_tokens: Vec::new(),
                },
                None,
            )
            .await?;
        Ok((embeddings, id))
    }
}

/// The verified files, as the text engine takes them.
fn engine_files(files: &aura_model::ModelFiles) -> Result<aura_infer::ModelFiles, ModelError> {
    Ok(match files {
        aura_model::ModelFiles::Diffusers(_) => {
            return Err(ModelError::new(
                409,
                "model_not_loadable",
                "an image package's files are not a text model's; its architecture names no image engine",
            ));
        }
        aura_model::ModelFiles::Gguf(path) => aura_infer::ModelFiles::Gguf(path.clone()),
        aura_model::ModelFiles::Safetensors {
            config,
            tokenizer,
            weights,
        } => aura_infer::ModelFiles::Safetensors {
            config: config.clone(),
            tokenizer: tokenizer.clone(),
            // Packages do not carry tokenizer_config.json: only verified files are read.
            tokenizer_config: None,
            weights: weights.clone(),
        },
    })
}
