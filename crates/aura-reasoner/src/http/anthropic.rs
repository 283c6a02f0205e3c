//! The Anthropic provider: the Messages API with tool use.

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::retrier::{Attempt, Retrier};
use super::{Http, api_root, endpoint, read_key, secret_header};
use crate::config::AnthropicConfig;
use crate::wire::anthropic::{self as wire, StreamDecoder};
use crate::{Context, DeltaSink, Error, ProviderInfo, Reasoner, Request, Turn};

/// See the module documentation.
#[derive(Debug)]
pub struct Anthropic {
    config: AnthropicConfig,
    url: Url,
    version: HeaderValue,
    http: Http,
    retrier: Retrier,
}

impl Anthropic {
    pub fn new(config: &AnthropicConfig, context: &Context) -> Result<Anthropic, Error> {
        crate::Config::Anthropic(config.clone()).validate()?;
        // Anthropic's root is the host; its paths start with /v1. A base URL that already
        // ends in /v1 is taken as the API root itself.
        let mut root = api_root(&config.base_url)?;
        if !root.path().ends_with("/v1") {
            root = endpoint(&root, "v1");
        }
        let version = HeaderValue::from_str(&config.version)
            .map_err(|_| Error::Config("version is not a valid header value".into()))?;
        let key = read_key(context, &config.api_key_env)?;
        Ok(Anthropic {
            url: endpoint(&root, "messages"),
            version,
            http: Http::new(&config.timeouts, context, Some(key))?,
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
impl Reasoner for Anthropic {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            provider: wire::PROVIDER.into(),
            model: self.config.model.clone(),
            base_url: Some(self.config.base_url.trim().to_owned()),
        }
    }

    async fn turn(&self, request: &Request, deltas: Option<&DeltaSink<'_>>) -> Result<Turn, Error> {
        request.validate().map_err(Error::InvalidRequest)?;
        self.retrier.run(self, request, deltas).await
    }
}

#[async_trait]
impl Attempt for Anthropic {
    async fn attempt(&self, request: &Request, emit: &DeltaSink<'_>) -> Result<Turn, Error> {
        let body = wire::request_body(
            request,
            &self.config.model,
            self.config.max_tokens,
            self.config.stream,
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
        headers.insert("anthropic-version", self.version.clone());
        if let Some(key) = self.http.key() {
            headers.insert("x-api-key", secret_header(key.expose())?);
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
