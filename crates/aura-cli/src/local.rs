//! The node's `provider = "local"` reasoners: models run in this process from installed
//! packages only. Before a model is loaded its every file is hashed and checked against
//! its signed manifest (and so are the expert packs it needs), and this node must hold a
//! license from the package's publisher that allows inference now. Anything less is
//! refused with the reason; a model file given by path is refused too, because the node
//! only runs what it can prove it ran.

use std::sync::Arc;

use aura_core::NodeId;
use aura_core::door::{Clock, SystemClock};
use aura_infer::reasoner::LocalReasoner;
use aura_infer::{LoadOptions, Model};
use aura_model::license::{Request, Subject, Uses};
use aura_reasoner::{Error, LocalConfig, LocalModels, Reasoner};

/// The package the node runs when `aura.toml` names no reasoner and it is installed
/// (`aura model pull smollm2`).
pub(crate) const DEFAULT_MODEL: &str = "smollm2";

/// Opens local reasoners from the packages of one data directory.
#[derive(Debug)]
pub(crate) struct PackagedModels {
    registry: aura_model::Registry,
    node: NodeId,
}

impl PackagedModels {
    pub(crate) fn new(home: &std::path::Path, node: NodeId) -> Self {
        PackagedModels {
            registry: aura_model::Registry::new(home),
            node,
        }
    }

    /// Whether a package by this name is installed (verification happens on open).
    pub(crate) fn is_installed(&self, name: &str) -> bool {
        self.registry.packages().resolve(name).is_ok()
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
        let request = Request {
            node: self.node,
            now: SystemClock.now(),
            uses: Uses::INFERENCE,
            tokens: 0,
        };
        let packages = std::iter::once(verified.model()).chain(verified.packs());
        for package in packages {
            let subject = Subject {
                digest: package.digest(),
                owner: package.manifest().publisher,
                name: package.name(),
            };
            licenses
                .find(&subject, &request, &|_| 0)
                .map_err(|e| Error::Config(format!("model `{reference}`: {e}")))?;
        }
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
        let reasoner = LocalReasoner::new(Arc::new(model), name);
        Ok(Arc::new(match config.max_tokens {
            Some(n) => reasoner.with_max_tokens(n),
            None => reasoner,
        }))
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
