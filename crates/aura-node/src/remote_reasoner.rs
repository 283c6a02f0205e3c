//! A mission's local reasoner on a model this node does not hold: in a cluster, each turn
//! is asked of a live node that holds the model, over the node-to-node channel
//! ([`crate::forward`]), through that node's OpenAI-compatible chat completions, so the
//! serving node runs the model under its license and signs the turn's receipt.
//!
//! [`ClusterModels`] is the `provider = "local"` opener `aura serve` registers on a
//! cluster node: a model the node's host lists opens in process as always; any other gets
//! a [`RemoteReasoner`], which finds a holder at every turn (so a model installed on
//! another node later, or a holder that fails, is followed). The turn is recorded in the
//! mission's record as any turn is, so replay never asks a node again. A turn no live node
//! can serve fails as retryable, and the mission's retry policy decides what follows.

use std::sync::Arc;

use async_trait::async_trait;
use aura_host::ModelHost;
use aura_reasoner::wire::Decoder as _;
use aura_reasoner::wire::openai::{BodyOptions, StreamDecoder, request_body};
use aura_reasoner::{
    DeltaSink, Error, LocalConfig, LocalModels, MaxTokensField, ProviderInfo, Reasoner, Request,
    Turn,
};
use axum::body::Bytes;

use crate::auth::{Caller, Role};
use crate::forward::{ElsewhereError, Routing};

/// The provider name turns carry, as the in-process model's.
const PROVIDER: &str = "local";

/// The `provider = "local"` opener of a cluster node.
pub struct ClusterModels {
    inner: Arc<dyn LocalModels>,
    host: Arc<ModelHost>,
    routing: Routing,
}

impl std::fmt::Debug for ClusterModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterModels").finish_non_exhaustive()
    }
}

impl ClusterModels {
    /// Opens the models `host` holds with `inner` (its own opener), the others through
    /// `routing`.
    pub fn opener(
        inner: Arc<dyn LocalModels>,
        host: Arc<ModelHost>,
        routing: Routing,
    ) -> Arc<dyn LocalModels> {
        Arc::new(ClusterModels {
            inner,
            host,
            routing,
        })
    }
}

impl LocalModels for ClusterModels {
    fn open(&self, config: &LocalConfig) -> Result<Arc<dyn Reasoner>, Error> {
        let model = config.model.to_str().unwrap_or_default().to_owned();
        // Listing hashes files it has not seen; opening would load the model anyway.
        let held = self
            .host
            .list()
            .is_ok_and(|cards| cards.iter().any(|c| c.name == model));
        if held {
            return self.inner.open(config);
        }
        Ok(Arc::new(RemoteReasoner {
            routing: self.routing.clone(),
            model,
            name: config.name.clone(),
            max_tokens: config.max_tokens,
        }))
    }
}

/// A local reasoner whose model another node of the cluster holds.
struct RemoteReasoner {
    routing: Routing,
    /// The package's name, as the holders advertise it.
    model: String,
    /// The name turns carry, when configured.
    name: Option<String>,
    max_tokens: Option<u32>,
}

impl std::fmt::Debug for RemoteReasoner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteReasoner")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Reasoner for RemoteReasoner {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            provider: PROVIDER.to_owned(),
            model: self.name.clone().unwrap_or_else(|| self.model.clone()),
            base_url: None,
        }
    }

    async fn turn(&self, request: &Request, deltas: Option<&DeltaSink<'_>>) -> Result<Turn, Error> {
        let body = request_body(
            request,
            &BodyOptions {
                model: &self.model,
                stream: false,
                max_tokens_field: MaxTokensField::MaxTokens,
                default_max_tokens: self.max_tokens,
            },
        );
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::InvalidRequest(format!("cannot encode the turn: {e}")))?;
        // The node asks for itself: the turn belongs to a mission it runs, already judged
        // by its policy.
        let caller = Caller {
            key: None,
            name: format!(
                "node {} (a mission's reasoner)",
                self.routing.store.node_id()
            ),
            role: Role::Operator,
            namespaces: None,
            agent: None,
        };
        let (status, answer, node) = self
            .routing
            .chat_elsewhere(&self.model, Bytes::from(body), &caller)
            .await
            .map_err(|e| Error::Stream {
                kind: "cluster".into(),
                message: match e {
                    ElsewhereError::NoHolder => format!(
                        "no live node of this cluster holds the model `{}`",
                        self.model
                    ),
                    ElsewhereError::Unavailable(why) => format!(
                        "the nodes holding the model `{}` cannot be reached: {why}",
                        self.model
                    ),
                },
                retryable: true,
            })?;
        if status != 200 {
            return Err(Error::Http {
                status,
                message: format!(
                    "node {node}: {}",
                    aura_reasoner::wire::openai::error_message(&answer)
                        .unwrap_or_else(|| "no error message".into())
                ),
                retry_after: None,
            });
        }
        let mut turn = StreamDecoder::new(&self.model).decode_whole(&answer)?;
        turn.provider = PROVIDER.to_owned();
        if let Some(name) = &self.name {
            turn.model.clone_from(name);
        }
        if let Some(deltas) = deltas {
            aura_reasoner::wire::emit_turn(&turn, &mut |d| deltas(d));
        }
        Ok(turn)
    }
}
