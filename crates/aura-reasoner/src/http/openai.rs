//! The OpenAI-compatible provider: chat completions with tool calling, against any base
//! URL (OpenAI, vLLM, llama.cpp's server, Ollama, Aura's own endpoint).

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::retrier::{Attempt, Retrier};
use super::{Http, api_root, endpoint, read_key, secret_header};
use crate::config::OpenAiConfig;
use crate::wire::openai::{self as wire, BodyOptions, StreamDecoder};
use crate::{Context, DeltaSink, Error, ProviderInfo, Reasoner, Request, Turn};

/// See the module documentation.
#[derive(Debug)]
pub struct OpenAi {
    config: OpenAiConfig,
    url: Url,
    root: Url,
    http: Http,
    retrier: Retrier,
}

impl OpenAi {
    pub fn new(config: &OpenAiConfig, context: &Context) -> Result<OpenAi, Error> {
        crate::Config::OpenAi(config.clone()).validate()?;
        let root = api_root(&config.base_url)?;
        let key = match &config.api_key_env {
            Some(env) => Some(read_key(context, env)?),
            None => None,
        };
        Ok(OpenAi {
            url: endpoint(&root, "chat/completions"),
            root,
            http: Http::new(&config.timeouts, context, key)?,
            retrier: Retrier {
                policy: config.retry.clone(),
                total: config.timeouts.total,
                context: context.clone(),
            },
            config: config.clone(),
        })
    }
}

#[async_trait]
impl Reasoner for OpenAi {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            provider: wire::PROVIDER.into(),
            model: self.config.model.clone(),
            base_url: Some(self.root.to_string()),
        }
    }

    async fn turn(&self, request: &Request, deltas: Option<&DeltaSink<'_>>) -> Result<Turn, Error> {
        request.validate().map_err(Error::InvalidRequest)?;
        self.retrier.run(self, request, deltas).await
    }
}

#[async_trait]
impl Attempt for OpenAi {
    async fn attempt(&self, request: &Request, emit: &DeltaSink<'_>) -> Result<Turn, Error> {
        let body = wire::request_body(
            request,
            &BodyOptions {
                model: &self.config.model,
                stream: self.config.stream,
                max_tokens_field: self.config.max_tokens_field,
                default_max_tokens: self.config.max_tokens,
            },
        );
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::InvalidRequest(format!("cannot encode the request: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static(if self.config.stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        if let Some(key) = self.http.key() {
            headers.insert(
                AUTHORIZATION,
                secret_header(&format!("Bearer {}", key.expose()))?,
            );
        }
        let mut emit = |d| emit(d);
        self.http
            .exchange(
                &self.url,
                headers,
                body,
                StreamDecoder::new(&self.config.model),
                &mut emit,
                wire::error_message,
            )
            .await
    }
}
