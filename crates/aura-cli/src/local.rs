//! The node's `provider = "local"` reasoners: models run in this process from installed
//! packages only. Before a model is loaded its every file is hashed and checked against
//! its signed manifest (and so are the expert packs it needs), and this node must hold a
//! license from the package's publisher that allows inference now. Anything less is
//! refused with the reason; a model file given by path is refused too, because the node
//! only runs what it can prove it ran.
//!
//! Every turn is authorised against the license's allowance first and
//! leaves a signed usage receipt in the ledger after (`aura receipts` lists them, `aura
//! settle` prices them): a turn whose receipt cannot be recorded fails, so no usage goes
//! unaccounted.

use std::sync::Arc;

use async_trait::async_trait;
use aura_core::NodeId;
use aura_core::door::{Clock, OsEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_infer::reasoner::LocalReasoner;
use aura_infer::{LoadOptions, Model};
use aura_model::Uses;
use aura_model::{Meter, Outcome, Verified, io_hash};
use aura_reasoner::{
    DeltaSink, Error, LocalConfig, LocalModels, ProviderInfo, Reasoner, Request, Turn,
};
use aura_store::Store;

/// The package the node runs when `aura.toml` names no reasoner and it is installed
/// (`aura model pull smollm2`).
pub(crate) const DEFAULT_MODEL: &str = "smollm2";

/// Opens local reasoners from the packages of one data directory.
#[derive(Debug)]
pub(crate) struct PackagedModels {
    registry: aura_model::Registry,
    metering: Metering,
}

/// Whether a package by this name is installed in `home` (verification happens on open).
pub(crate) fn is_installed(home: &std::path::Path, name: &str) -> bool {
    aura_model::Registry::new(home)
        .packages()
        .resolve(name)
        .is_ok()
}

/// What recording a receipt per turn takes: the ledger, the node's key and the allowance
/// meter (opened from the receipts already in the ledger).
#[derive(Clone)]
pub(crate) struct Metering {
    store: Arc<dyn Store>,
    signer: Arc<Signer>,
    meter: Arc<Meter>,
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering").finish_non_exhaustive()
    }
}

impl Metering {
    /// Opens the meter over `store`, counting every receipt already in the ledger.
    pub(crate) async fn open(store: Arc<dyn Store>, signer: Arc<Signer>) -> anyhow::Result<Self> {
        let meter = Meter::open(&*store)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the usage receipts in the ledger: {e}"))?;
        Ok(Metering {
            store,
            signer,
            meter,
        })
    }

    /// The node whose licenses count and whose key signs the receipts.
    fn node(&self) -> NodeId {
        self.signer.public_key().node_id()
    }
}

impl PackagedModels {
    /// Every turn of the models opened here is licensed and leaves a signed receipt.
    pub(crate) fn new(home: &std::path::Path, metering: Metering) -> Self {
        PackagedModels {
            registry: aura_model::Registry::new(home),
            metering,
        }
    }
}

impl LocalModels for PackagedModels {
    fn open(&self, config: &LocalConfig) -> Result<Arc<dyn Reasoner>, Error> {
        let reference = config.model.to_str().unwrap_or_default();
        if reference.is_empty() || reference.contains('/') {
            return Err(Error::Config(format!(
                "model `{}` is a path; a node runs installed packages only \
                 (name one from `aura model list`, or import the file with `aura model import`)",
                config.model.display()
            )));
        }
        let verified = self
            .registry
            .packages()
            .load(reference, None, &aura_model::no_progress)
            .map_err(|e| Error::Config(format!("model `{reference}`: {e}")))?;
        let licenses = self.registry.licenses();
        let node = self.metering.node();
        // Refused now rather than at the first turn; the zero-token reservation is
        // released at once.
        self.metering
            .meter
            .authorize(
                &verified,
                licenses,
                node,
                SystemClock.now(),
                Uses::INFERENCE,
                0,
            )
            .map_err(|e| Error::Config(format!("model `{reference}`: {e}")))?;
        let files = engine_files(verified.files());
        let model = Model::load(
            &files,
            &LoadOptions {
                threads: config.threads,
                ..LoadOptions::default()
            },
        )
        .map_err(|e| Error::Config(format!("model `{reference}` cannot be loaded: {e}")))?;
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| verified.model().name().to_owned());
        let fingerprint = model.fingerprint();
        let reasoner = LocalReasoner::new(Arc::new(model), name);
        let reasoner = match config.max_tokens {
            Some(n) => reasoner.with_max_tokens(n),
            None => reasoner,
        };
        let max_tokens = u64::from(
            config
                .max_tokens
                .unwrap_or(aura_infer::reasoner::DEFAULT_MAX_TOKENS),
        );
        Ok(Arc::new(MeteredReasoner {
            inner: reasoner,
            verified,
            licenses: licenses.clone(),
            node,
            metering: self.metering.clone(),
            max_tokens,
            runtime: aura_model::Runtime {
                version: format!("{} {}", fingerprint.engine, fingerprint.version),
                backend: fingerprint.backend,
                device: fingerprint.device,
                dtype: fingerprint.dtype,
                kernel: fingerprint.kernel,
            },
        }))
    }
}

/// A local reasoner whose every turn is licensed and leaves a signed receipt.
struct MeteredReasoner {
    inner: LocalReasoner,
    verified: Verified,
    licenses: aura_model::Licenses,
    node: NodeId,
    metering: Metering,
    max_tokens: u64,
    runtime: aura_model::Runtime,
}

impl std::fmt::Debug for MeteredReasoner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredReasoner")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Reasoner for MeteredReasoner {
    fn describe(&self) -> ProviderInfo {
        self.inner.describe()
    }

    async fn turn(&self, request: &Request, deltas: Option<&DeltaSink<'_>>) -> Result<Turn, Error> {
        let input = serde_json::to_vec(request)
            .map_err(|e| Error::InvalidRequest(format!("cannot encode the request: {e}")))?;
        // An upper bound on the tokens the turn counts: a prompt has no more tokens than
        // bytes, and generation stops at the limit.
        let limit = request.max_tokens.map_or(self.max_tokens, u64::from);
        let bound = (input.len() as u64).saturating_add(limit);
        let auth = self
            .metering
            .meter
            .authorize(
                &self.verified,
                &self.licenses,
                self.node,
                SystemClock.now(),
                Uses::INFERENCE,
                bound,
            )
            .map_err(|e| Error::Config(format!("model `{}`: {e}", self.verified.model().name())))?;
        let turn = self.inner.turn(request, deltas).await?;
        let output = serde_json::to_vec(&turn)
            .map_err(|e| Error::InvalidRequest(format!("cannot encode the turn: {e}")))?;
        let outcome = Outcome {
            input_hash: io_hash(&input),
            output_hash: io_hash(&output),
            prompt_tokens: turn.usage.prompt_tokens,
            completion_tokens: turn.usage.completion_tokens,
            expert_tokens: Vec::new(),
            runtime: self.runtime.clone(),
        };
        self.metering
            .meter
            .record(
                &*self.metering.store,
                &self.metering.signer,
                auth,
                outcome,
                &SystemClock,
                &OsEntropy,
            )
            .await
            .map_err(|e| Error::Stream {
                kind: "local".into(),
                message: format!("the usage receipt could not be recorded: {e}"),
                retryable: false,
            })?;
        Ok(turn)
    }
}

/// The verified files, as the engine takes them.
fn engine_files(files: &aura_model::ModelFiles) -> aura_infer::ModelFiles {
    match files {
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
    }
}
