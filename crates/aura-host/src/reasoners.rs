//! The missions' `provider = "local"` reasoners on the host's models
//! ([`ModelHost::reasoners`] is the [`LocalModels`] opener a program registers): the same
//! loaded copy the APIs serve, every turn licensed and leaving a signed receipt.

use std::sync::Arc;

use async_trait::async_trait;
use aura_infer::reasoner::ChatOptions;
use aura_reasoner::{
    DeltaSink, Error as ReasonerError, LocalConfig, LocalModels, ProviderInfo, Reasoner, Request,
    Turn,
};

use crate::error::ChatError;
use crate::host::{ModelHost, Served};

impl ModelHost {
    /// Opens the node's `provider = "local"` reasoners on this host's models.
    pub fn reasoners(self: &Arc<Self>) -> Arc<dyn LocalModels> {
        Arc::new(Reasoners(self.clone()))
    }
}

/// [`LocalModels`] over a [`ModelHost`].
#[derive(Debug)]
struct Reasoners(Arc<ModelHost>);

impl LocalModels for Reasoners {
    fn open(&self, config: &LocalConfig) -> Result<Arc<dyn Reasoner>, ReasonerError> {
        let reference = config.model.to_str().unwrap_or_default();
        let served = self
            .0
            .open_with(reference, config.threads.or(self.0.threads))
            .map_err(|e| ReasonerError::Config(e.message))?;
        served
            .generator()
            .map_err(|e| ReasonerError::Config(e.message))?;
        Ok(Arc::new(MeteredReasoner {
            host: self.0.clone(),
            served,
            name: config.name.clone(),
            max_tokens: config.max_tokens,
        }))
    }
}

/// A mission's local reasoner: every turn licensed, and leaving a signed receipt.
struct MeteredReasoner {
    host: Arc<ModelHost>,
    served: Arc<Served>,
    /// The name turns carry, when configured (else the package's).
    name: Option<String>,
    /// The configured token limit of a turn whose request sets none.
    max_tokens: Option<u32>,
}

impl std::fmt::Debug for MeteredReasoner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredReasoner")
            .field("model", &self.served.name())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Reasoner for MeteredReasoner {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            provider: aura_infer::reasoner::PROVIDER.to_owned(),
            model: self
                .name
                .clone()
                .unwrap_or_else(|| self.served.name().to_owned()),
            base_url: None,
        }
    }

    async fn turn(
        &self,
        request: &Request,
        deltas: Option<&DeltaSink<'_>>,
    ) -> Result<Turn, ReasonerError> {
        let mut request = request.clone();
        if request.max_tokens.is_none() {
            request.max_tokens = self.max_tokens;
        }
        let (outcome, _) = self
            .host
            .chat(
                &self.served,
                &request,
                &ChatOptions::default(),
                deltas,
                None,
            )
            .await
            .map_err(|e| match e {
                ChatError::Reasoner(e) => e,
                ChatError::Host(e) if e.status == 500 => ReasonerError::Stream {
                    kind: "local".into(),
                    message: e.message,
                    retryable: false,
                },
                // The node is stopping: the turn is asked again after it restarts.
                ChatError::Host(e) if e.status == 503 => ReasonerError::Stream {
                    kind: "local".into(),
                    message: e.message,
                    retryable: true,
                },
                ChatError::Host(e) => ReasonerError::Config(e.message),
            })?;
        let mut turn = outcome.turn;
        if let Some(name) = &self.name {
            turn.model.clone_from(name);
        }
        Ok(turn)
    }
}
